//! Helpers shared by the tests that run the example binaries
//! (`mod support;` from a test file).
#![allow(dead_code)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, ChildStderr, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// The crate features this test binary was built with, so the example is built
/// with the same ones (and cargo does not rebuild the library for a new set).
fn features() -> Vec<&'static str> {
    let mut f = Vec::new();
    if cfg!(feature = "axum") {
        f.push("axum");
    }
    if cfg!(feature = "signed") {
        f.push("signed");
    }
    f
}

/// Whether `key` is one of the variables cargo sets, to this package's
/// values, when it runs the package's tests (`OUT_DIR` only if the package
/// has a build script).
fn is_package_var(key: &str) -> bool {
    const PREFIXES: [&str; 3] = ["CARGO_PKG_", "CARGO_MANIFEST_", "CARGO_BIN_EXE_"];
    PREFIXES.iter().any(|prefix| key.starts_with(prefix)) || key == "OUT_DIR"
}

/// Builds `examples/<name>.rs` (a no-op when fresh) and returns its executable.
pub fn example_bin(name: &str) -> PathBuf {
    static CACHE: OnceLock<Mutex<HashMap<String, PathBuf>>> = OnceLock::new();
    let cache = CACHE.get_or_init(Default::default);
    let mut cache = cache.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(path) = cache.get(name) {
        return path.clone();
    }
    let mut cmd = Command::new(env!("CARGO"));
    // Cargo runs this test with the package's own variables set (its name,
    // version, manifest directory). ring's build script asks to be run again
    // when any of those (or `OUT_DIR`) change, so passing them on would
    // rebuild ring, and the TLS crates above it, here and again at the next
    // `cargo test`.
    for (key, _) in std::env::vars_os() {
        if is_package_var(&key.to_string_lossy()) {
            cmd.env_remove(&key);
        }
    }
    cmd.args(["build", "--example", name, "--message-format=json"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stderr(Stdio::inherit());
    if cfg!(not(feature = "http2")) {
        cmd.arg("--no-default-features");
    }
    let features = features();
    if !features.is_empty() {
        cmd.arg("--features").arg(features.join(","));
    }
    let out = cmd.output().expect("run cargo build");
    assert!(out.status.success(), "cargo build --example {name} failed");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let marker = format!("\"name\":\"{name}\"");
    let path = stdout
        .lines()
        .filter(|l| l.contains("\"kind\":[\"example\"]") && l.contains(&marker))
        .find_map(|l| {
            let start = l.find("\"executable\":\"")? + "\"executable\":\"".len();
            let end = start + l[start..].find('"')?;
            Some(PathBuf::from(&l[start..end]))
        })
        .unwrap_or_else(|| panic!("no executable for example {name} in cargo output"));
    cache.insert(name.to_owned(), path.clone());
    path
}

/// A running example server; killed when dropped.
pub struct Server {
    pub child: Child,
    /// The address from its `listening on http://ADDR` line.
    pub addr: SocketAddr,
    /// Every later stdout line.
    pub lines: mpsc::Receiver<String>,
}

impl Server {
    /// Starts `examples/<example>.rs` with `args` (see
    /// [`on_loopback`](Self::on_loopback) for a free port) and waits up to 60 s for its `listening on` line.
    /// Its stderr goes to the test's.
    pub fn start(example: &str, args: &[&str]) -> Server {
        Self::spawn(example, args, None)
    }

    /// [`start`](Self::start) with `--listen 127.0.0.1:0` before `args`.
    pub fn on_loopback(example: &str, args: &[&str]) -> Server {
        let mut all = vec!["--listen", "127.0.0.1:0"];
        all.extend_from_slice(args);
        Self::start(example, &all)
    }

    /// Like [`start`](Self::start), but hands the child's stderr to `capture`
    /// (a log collector, say) instead of the test's output.
    pub fn start_capturing(
        example: &str,
        args: &[&str],
        capture: impl FnOnce(ChildStderr),
    ) -> Server {
        Self::spawn(example, args, Some(Box::new(capture)))
    }

    fn spawn(
        example: &str,
        args: &[&str],
        capture: Option<Box<dyn FnOnce(ChildStderr) + '_>>,
    ) -> Server {
        let bin = example_bin(example);
        let mut child = Command::new(&bin)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(if capture.is_some() {
                Stdio::piped()
            } else {
                Stdio::inherit()
            })
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", bin.display()));
        if let (Some(capture), Some(stderr)) = (capture, child.stderr.take()) {
            capture(stderr);
        }
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let deadline = Instant::now() + Duration::from_secs(60);
        let addr = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) => {
                    if let Some(addr) = line.strip_prefix("listening on http://") {
                        break addr.trim().parse().expect("address in listening line");
                    }
                }
                Err(e) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!("{example} {args:?} did not print its listening line: {e}");
                }
            }
        };
        Server {
            child,
            addr,
            lines: rx,
        }
    }

    /// `ws://ADDR/ws`.
    pub fn ws_url(&self) -> String {
        format!("ws://{}/ws", self.addr)
    }

    /// Sends SIGTERM.
    pub fn sigterm(&self) {
        signal(self.child.id(), "TERM");
    }

    /// Waits up to `timeout` for the process to exit.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Sends signal `sig` (e.g. `"TERM"`) to `pid` with the shell's `kill`
/// builtin, so no separate `kill` program (procps) is needed.
pub fn signal(pid: u32, sig: &str) {
    let status = Command::new("sh")
        .args(["-c", &format!("kill -{sig} {pid}")])
        .status()
        .expect("run sh -c kill");
    assert!(status.success(), "kill -{sig} {pid} failed");
}
