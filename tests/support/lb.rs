//! A load-balanced cluster for the end-to-end tests: three nodes of
//! `examples/server.rs` behind a real HAProxy configured by
//! `deploy/haproxy.cfg`, and a WebSocket client that keeps cookies.
//!
//! Declared from a test file next to `mod support;` (it builds on
//! `support::Server`):
//!
//! ```ignore
//! mod support;
//! #[path = "support/lb.rs"]
//! mod lb;
//! ```
//!
//! External tools are looked up with [`tools_or_skip`]: `E2E_HAPROXY`,
//! `E2E_CHROMIUM`, `E2E_FIREFOX`, `E2E_NGINX`, `E2E_TRAEFIK` and `E2E_ENVOY`
//! name the executables (set one to `/nonexistent` to see the skip path); without
//! them, `PATH` and the Debian locations are searched (and `/usr/local/bin`
//! for Traefik and Envoy, where `.ci/install-e2e.sh` puts them).
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures_util::StreamExt;
use serde_json::Value;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::header::{COOKIE, RETRY_AFTER, SET_COOKIE};
use tokio_tungstenite::tungstenite::http::{HeaderMap, HeaderValue, StatusCode};
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::WebSocketStream;

use crate::support::Server;

/// The name of the TLS frontend of [`Cluster::start_with_tls`].
pub const TLS_FRONTEND: &str = "ws_in_tls";

/// The affinity cookie the example server sets by default.
pub const COOKIE_NAME: &str = "WS_SESSION_ID";

/// Writes a line straight to the process's stderr. The test harness captures
/// `eprintln!` of passing tests; skip notices and measurements must show in
/// the CI log anyway.
pub fn report(line: &str) {
    let mut err = std::io::stderr().lock();
    let _ = writeln!(err, "e2e: {line}");
}

/// Reports the last lines of a child's output (after a failure).
pub fn report_tail(what: &str, lines: &[String]) {
    const TAIL: usize = 200;
    let skip = lines.len().saturating_sub(TAIL);
    report(&format!(
        "{what} (last {} of {} lines):",
        lines.len() - skip,
        lines.len()
    ));
    for line in &lines[skip..] {
        report(&format!("  {line}"));
    }
}

/// An external program an end-to-end test drives.
#[derive(Debug, Clone, Copy)]
pub enum Tool {
    HaProxy,
    Chromium,
    Firefox,
    Nginx,
    Traefik,
    Envoy,
}

impl Tool {
    fn name(self) -> &'static str {
        match self {
            Tool::HaProxy => "haproxy",
            Tool::Chromium => "chromium",
            Tool::Firefox => "firefox",
            Tool::Nginx => "nginx",
            Tool::Traefik => "traefik",
            Tool::Envoy => "envoy",
        }
    }

    fn env_var(self) -> &'static str {
        match self {
            Tool::HaProxy => "E2E_HAPROXY",
            Tool::Chromium => "E2E_CHROMIUM",
            Tool::Firefox => "E2E_FIREFOX",
            Tool::Nginx => "E2E_NGINX",
            Tool::Traefik => "E2E_TRAEFIK",
            Tool::Envoy => "E2E_ENVOY",
        }
    }

    /// Names on `PATH`, then absolute paths (haproxy and nginx are in
    /// /usr/sbin, which is not on every user's `PATH`).
    fn candidates(self) -> (&'static [&'static str], &'static [&'static str]) {
        match self {
            Tool::HaProxy => (
                &["haproxy"],
                &["/usr/sbin/haproxy", "/usr/local/sbin/haproxy"],
            ),
            Tool::Chromium => (&["chromium", "chromium-browser"], &["/usr/bin/chromium"]),
            // Debian's is the ESR, which also installs `firefox`.
            Tool::Firefox => (&["firefox-esr", "firefox"], &["/usr/bin/firefox-esr"]),
            Tool::Nginx => (&["nginx"], &["/usr/sbin/nginx", "/usr/local/sbin/nginx"]),
            // Where `.ci/install-e2e.sh` puts it.
            Tool::Traefik => (&["traefik"], &["/usr/local/bin/traefik"]),
            Tool::Envoy => (&["envoy"], &["/usr/local/bin/envoy"]),
        }
    }

    fn locate(self) -> Option<PathBuf> {
        if let Some(path) = std::env::var_os(self.env_var()) {
            let path = PathBuf::from(path);
            return is_executable(&path).then_some(path);
        }
        let (names, absolute) = self.candidates();
        let path_var = std::env::var_os("PATH").unwrap_or_default();
        names
            .iter()
            .flat_map(|name| std::env::split_paths(&path_var).map(move |dir| dir.join(name)))
            .chain(absolute.iter().map(PathBuf::from))
            .find(|p| is_executable(p))
    }
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Finds the `tools` that test `test` needs. When one is missing: panics
/// under `CI=true` (CI must run the end-to-end tests), otherwise prints a loud
/// skip notice naming every missing tool and returns `None`.
pub fn tools_or_skip<const N: usize>(test: &str, tools: [Tool; N]) -> Option<[PathBuf; N]> {
    let found = tools.map(Tool::locate);
    let missing: Vec<String> = tools
        .iter()
        .zip(&found)
        .filter(|(_, path)| path.is_none())
        .map(|(tool, _)| match std::env::var_os(tool.env_var()) {
            Some(v) => format!(
                "{} is not executable: {}",
                tool.env_var(),
                Path::new(&v).display()
            ),
            None => format!("{} not installed", tool.name()),
        })
        .collect();
    if missing.is_empty() {
        return Some(found.map(Option::unwrap_or_default));
    }
    let why = missing.join(", ");
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("{test}: {why} and CI=true: run `bash .ci/install-e2e.sh` (in the crate root) before the tests");
    }
    report("");
    report("**************************************************************");
    report(&format!(
        "SKIPPED {test}: {why} (install them with `bash .ci/install-e2e.sh` in the crate root)"
    ));
    report("**************************************************************");
    report("");
    None
}

/// A port that was free a moment ago on 127.0.0.1 (bound to port 0, read, dropped).
pub fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    listener.local_addr().expect("local addr").port()
}

/// A directory under the system temp dir, removed on drop. Short on purpose:
/// it holds a Unix socket, whose path is limited to about 100 bytes.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(label: &str) -> TempDir {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let dir =
            std::env::temp_dir().join(format!("tsu-{label}-{}-{n}-{nanos:x}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
        TempDir(dir)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `deploy/{file}`: a recipe the end-to-end tests run as shipped.
pub fn deploy_path(file: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("deploy")
        .join(file)
}

/// The text of `deploy/{file}`.
pub fn deploy_text(file: &str) -> String {
    let path = deploy_path(file);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

/// `text` (of `deploy/{file}`) with `from` replaced by `to`. Panics unless
/// `from` is there exactly once, so that a test keeps running the shipped
/// text rather than silently something else; the message names the support
/// file that rewrites it (the caller's).
#[track_caller]
pub fn replace_once(file: &str, text: &str, from: &str, to: &str) -> String {
    let found = text.matches(from).count();
    assert_eq!(
        found,
        1,
        "deploy/{file} must contain `{}` exactly once (the test rewrites it), found {found} \
         times: update {} with the file",
        from.trim(),
        std::panic::Location::caller().file()
    );
    text.replacen(from, to, 1)
}

/// The index of the line `wanted` among `lines` (of `deploy/{file}`).
/// Panics unless it is there exactly once, naming the support file that
/// relies on it (the caller's).
#[track_caller]
pub fn line_once(file: &str, lines: &[&str], wanted: &str) -> usize {
    let at: Vec<usize> = (0..lines.len()).filter(|&i| lines[i] == wanted).collect();
    let [i] = at[..] else {
        panic!(
            "deploy/{file} must have the line `{wanted}` once (the test rewrites around it), \
             found it {} times: update {} with the file",
            at.len(),
            std::panic::Location::caller().file()
        );
    };
    i
}

/// Collects a child's output lines on a thread (so its pipe never fills up),
/// to be shown when a test fails.
#[derive(Clone, Default)]
pub struct OutputLog(Arc<Mutex<Vec<String>>>);

impl OutputLog {
    pub fn follow(&self, from: impl Read + Send + 'static) {
        use std::io::BufRead;
        let log = self.clone();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(from).lines() {
                let Ok(line) = line else { break };
                log.0.lock().unwrap_or_else(|e| e.into_inner()).push(line);
            }
        });
    }

    pub fn lines(&self) -> Vec<String> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Spawns `cmd` (running `bin`) with stdin closed and its stdout and
    /// stderr collected into a new log.
    pub fn spawn(cmd: &mut Command, bin: &Path) -> (Child, OutputLog) {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", bin.display()));
        let log = OutputLog::default();
        log.follow(child.stdout.take().expect("piped stdout"));
        log.follow(child.stderr.take().expect("piped stderr"));
        (child, log)
    }

    /// Shows the last lines as `what` ([`report_tail`]) when the test is
    /// failing (the thread is panicking): for the `Drop` of what owns it.
    pub fn report_if_failing(&self, what: &str) {
        if std::thread::panicking() {
            report_tail(what, &self.lines());
        }
    }
}

/// One server line of HAProxy's `show stat`.
#[derive(Debug, Clone)]
pub struct ServerStat {
    pub backend: String,
    pub name: String,
    /// The server id (`sid`), which stick-table entries refer to.
    pub id: String,
    pub addr: String,
    /// `UP`, `DOWN`, `UP 1/2`, `MAINT`, `no check`, ...
    pub status: String,
    /// Requests HAProxy retried after this server failed them (`wretr`).
    pub retries: u64,
    /// Requests HAProxy sent to another server after this one failed them (`wredis`).
    pub redispatches: u64,
}

/// The value of `key` (with its `=`) in a line of HAProxy's admin socket,
/// whose fields are `key=value` words.
fn admin_field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    line.split_whitespace().find_map(|w| w.strip_prefix(key))
}

/// A stream of a frontend, as [`HaProxy::streams`] reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stream {
    /// `127.0.0.1:PORT`: the client connection's address.
    pub client: String,
    /// The server's name, `<none>` before one is chosen.
    pub server: String,
}

/// One entry of a stick table: the learned key and the server it sticks to.
#[derive(Debug, Clone)]
pub struct StickEntry {
    pub key: String,
    pub server_id: String,
}

/// HAProxy in the foreground (`-db`) with `deploy/haproxy.cfg`, killed on drop.
pub struct HaProxy {
    bin: PathBuf,
    child: Child,
    log: OutputLog,
    stats_socket: PathBuf,
    /// The frontends the test added (see [`HaProxy::start`]).
    frontends: String,
    /// Run as a master process with workers (`-W`; systemd runs `-Ws`).
    master_worker: bool,
    /// The ports it was started with (a master reloads with them).
    frontend_port: u16,
    node_ports: [u16; 3],
    _dir: TempDir,
}

/// What a reload of HAProxy left behind, serving the connections it had
/// until they end ([`HaProxy::reload`]).
pub enum Former {
    /// The old process of a standalone reload (`-sf`).
    Process(HaProxy),
    /// The old worker of a master process, by pid: the master reports on it.
    Worker(u32),
}

impl Former {
    /// `old process` or `old worker`, for messages.
    pub fn name(&self) -> &'static str {
        match self {
            Former::Process(_) => "old process",
            Former::Worker(_) => "old worker",
        }
    }
}

impl HaProxy {
    /// Runs `bin -f deploy/haproxy.cfg -f <tests.cfg> -db` with the port
    /// placeholders of the deploy file set in the environment.
    ///
    /// The second file adds an admin socket in a temp dir, so the test can
    /// read HAProxy's own view (server states, the stick table) instead of
    /// guessing it from the outside, and then `frontends`: more frontends
    /// onto the deploy file's backend (see [`Cluster`]). Everything else is
    /// the deploy file as is.
    pub fn start(bin: &Path, frontend_port: u16, node_ports: [u16; 3], frontends: &str) -> HaProxy {
        Self::spawn(bin, frontend_port, node_ports, frontends, &[])
    }

    /// Like [`HaProxy::start`], as a master process (`-W`) that runs the
    /// proxy in a worker, as systemd's `haproxy.service` does (with `-Ws`).
    pub fn start_master_worker(
        bin: &Path,
        frontend_port: u16,
        node_ports: [u16; 3],
        frontends: &str,
    ) -> HaProxy {
        Self::spawn(bin, frontend_port, node_ports, frontends, &["-W"])
    }

    /// A soft reload, as after a change of the files. Standalone, a new
    /// process with the same files (and `frontends`) binds the same ports,
    /// then tells this one (`-sf PID`) to stop listening and to serve the
    /// connections it has until they end (or `hard-stop-after`). A master
    /// process does the same with a new worker on `SIGUSR2` (systemd's
    /// `reload`), handing it the listening sockets; this waits (bounded)
    /// until the master says the new worker loaded. Returns what serves the
    /// old connections.
    pub fn reload(&mut self, frontend_port: u16, node_ports: [u16; 3]) -> Former {
        if self.master_worker {
            // The master re-reads the files with the environment it was
            // started with: it cannot follow nodes that moved since.
            assert_eq!(
                (frontend_port, node_ports),
                (self.frontend_port, self.node_ports),
                "a master process reloads with the ports it was started with"
            );
            let worker = self
                .current_worker()
                .expect("a worker of the master process");
            let log = self.log.clone();
            let loaded = move || {
                log.lines()
                    .iter()
                    .filter(|l| l.contains("Loading success."))
                    .count()
            };
            let before = loaded();
            crate::support::signal(self.child.id(), "USR2");
            let deadline = Instant::now() + Duration::from_secs(20);
            while loaded() == before {
                self.assert_running();
                assert!(
                    Instant::now() < deadline,
                    "HAProxy's master did not reload within 20 s:\n{}",
                    self.log().join("\n")
                );
                std::thread::sleep(Duration::from_millis(20));
            }
            return Former::Worker(worker);
        }
        let old_pid = self.child.id().to_string();
        let new = Self::spawn(
            &self.bin,
            frontend_port,
            node_ports,
            &self.frontends,
            &["-sf", &old_pid],
        );
        Former::Process(std::mem::replace(self, new))
    }

    /// The pid of the master's newest worker, from its `New worker (PID)
    /// forked` lines.
    fn current_worker(&self) -> Option<u32> {
        self.log().iter().rev().find_map(|l| {
            let (_, rest) = l.split_once("New worker (")?;
            rest.split_once(") forked")?.0.parse().ok()
        })
    }

    /// Whether the process or worker `former` left by a reload has stopped
    /// its frontend (it says so in its log).
    pub fn former_stopped_listening(&self, former: &Former) -> bool {
        match former {
            Former::Process(old) => old.log().iter().any(|l| l.contains("Proxy ws_in stopped")),
            Former::Worker(pid) => {
                let line = format!("({pid}) : Proxy ws_in stopped");
                self.log().iter().any(|l| l.contains(&line))
            }
        }
    }

    /// Waits (bounded, polling) for `former` to exit; whether it exited
    /// cleanly, or `None` if it still runs after `timeout`. A worker gone
    /// without its exit in the master's log counts as not clean.
    pub async fn former_exit(&self, former: &mut Former, timeout: Duration) -> Option<bool> {
        match former {
            Former::Process(old) => old.wait_exit(timeout).await.map(|s| s.success()),
            Former::Worker(pid) => {
                // The master reports the exit (with its code) once it has
                // reaped the worker; until then the worker is in /proc.
                let line = format!("Former worker ({pid}) exited with code ");
                let proc_dir = PathBuf::from(format!("/proc/{pid}"));
                let deadline = Instant::now() + timeout;
                loop {
                    let code = self.log().iter().find_map(|l| {
                        let (_, code) = l.split_once(&line)?;
                        Some(code.split_whitespace().next() == Some("0"))
                    });
                    if code.is_some() {
                        return code;
                    }
                    if Instant::now() >= deadline {
                        // Gone, though its exit is not in the log yet.
                        return (!proc_dir.exists()).then_some(false);
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        }
    }

    fn spawn(
        bin: &Path,
        frontend_port: u16,
        node_ports: [u16; 3],
        frontends: &str,
        args: &[&str],
    ) -> HaProxy {
        let cfg = deploy_path("haproxy.cfg");
        assert!(cfg.is_file(), "{} is missing", cfg.display());
        let dir = TempDir::new("haproxy");
        let stats_socket = dir.path().join("admin.sock");
        let extra = dir.path().join("tests.cfg");
        std::fs::write(
            &extra,
            format!(
                "# Added by the end-to-end tests.\nglobal\n    stats socket {} mode 600 level admin\n{frontends}",
                stats_socket.display()
            ),
        )
        .expect("write tests.cfg");
        let (child, log) = OutputLog::spawn(
            Command::new(bin)
                .arg("-f")
                .arg(&cfg)
                .arg("-f")
                .arg(&extra)
                .arg("-db")
                .args(args)
                .env("FRONTEND_PORT", frontend_port.to_string())
                .env("NODE1_PORT", node_ports[0].to_string())
                .env("NODE2_PORT", node_ports[1].to_string())
                .env("NODE3_PORT", node_ports[2].to_string()),
            bin,
        );
        HaProxy {
            bin: bin.to_owned(),
            child,
            log,
            stats_socket,
            frontends: frontends.to_owned(),
            master_worker: args.contains(&"-W"),
            frontend_port,
            node_ports,
            _dir: dir,
        }
    }

    /// Panics (with HAProxy's output) if it has exited.
    pub fn assert_running(&mut self) {
        assert_child_running("haproxy", &mut self.child, &self.log);
    }

    /// Sends one command to the admin socket and returns the answer.
    pub fn command(&self, cmd: &str) -> std::io::Result<String> {
        let mut sock = UnixStream::connect(&self.stats_socket)?;
        sock.set_read_timeout(Some(Duration::from_secs(5)))?;
        sock.write_all(cmd.as_bytes())?;
        sock.write_all(b"\n")?;
        let mut out = String::new();
        // Without interactive mode HAProxy closes the socket after answering.
        sock.read_to_string(&mut out)?;
        Ok(out)
    }

    /// The server lines of `show stat`.
    pub fn servers(&self) -> std::io::Result<Vec<ServerStat>> {
        let csv = self.command("show stat")?;
        let mut lines = csv.lines();
        let header: Vec<&str> = lines
            .next()
            .unwrap_or_default()
            .trim_start_matches("# ")
            .split(',')
            .collect();
        let col = |name: &str| header.iter().position(|h| *h == name);
        let (Some(px), Some(sv), Some(status)) = (col("pxname"), col("svname"), col("status"))
        else {
            return Err(std::io::Error::other(format!(
                "unexpected show stat: {csv}"
            )));
        };
        let (sid, addr) = (col("sid"), col("addr"));
        let (wretr, wredis) = (col("wretr"), col("wredis"));
        let number = |f: &[&str], c: Option<usize>| {
            c.and_then(|c| f.get(c))
                .and_then(|v| v.parse().ok())
                .unwrap_or(0)
        };
        Ok(lines
            .map(|l| l.split(',').collect::<Vec<_>>())
            .filter(|f| f.len() > status)
            .filter(|f| f[sv] != "FRONTEND" && f[sv] != "BACKEND")
            .map(|f| ServerStat {
                backend: f[px].to_owned(),
                name: f[sv].to_owned(),
                id: sid.and_then(|c| f.get(c)).unwrap_or(&"").to_string(),
                addr: addr.and_then(|a| f.get(a)).unwrap_or(&"").to_string(),
                status: f[status].to_owned(),
                retries: number(&f, wretr),
                redispatches: number(&f, wredis),
            })
            .collect())
    }

    /// The streams (requests, and WebSockets once upgraded) of the frontend
    /// `frontend` at this moment, from `show sess`: for each, the client's
    /// address and port, which over HTTP/2 all streams of one client
    /// connection share, and the server it went to.
    pub fn streams(&self, frontend: &str) -> std::io::Result<Vec<Stream>> {
        let fe = format!("fe={frontend}");
        Ok(self
            .command("show sess")?
            .lines()
            .filter(|line| line.split_whitespace().any(|w| w == fe))
            .map(|line| Stream {
                client: admin_field(line, "src=").unwrap_or_default().to_owned(),
                server: admin_field(line, "srv=").unwrap_or_default().to_owned(),
            })
            .collect())
    }

    /// The server that forwards to `127.0.0.1:port`.
    pub fn server_for_port(&self, port: u16) -> std::io::Result<Option<ServerStat>> {
        let suffix = format!(":{port}");
        Ok(self
            .servers()?
            .into_iter()
            .find(|s| s.addr.ends_with(&suffix)))
    }

    /// Waits until HAProxy's health checks report every server `UP`, and the
    /// frontend accepts connections. Bounded by `timeout`.
    pub fn wait_ready(&mut self, frontend: SocketAddr, expect_servers: usize, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            self.assert_running();
            let last = match self.servers() {
                Ok(servers)
                    if servers.len() >= expect_servers
                        && servers.iter().all(|s| s.status == "UP")
                        && TcpStream::connect_timeout(&frontend, Duration::from_secs(1))
                            .is_ok() =>
                {
                    return;
                }
                Ok(servers) => format!("{servers:?}"),
                Err(e) => e.to_string(),
            };
            assert!(
                Instant::now() < deadline,
                "haproxy not ready within {timeout:?}: {last}\n{}",
                self.log.lines().join("\n")
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Every entry of every stick table.
    pub fn stick_entries(&self) -> std::io::Result<Vec<StickEntry>> {
        let tables: Vec<String> = self
            .command("show table")?
            .lines()
            .filter_map(|l| l.strip_prefix("# table: "))
            .filter_map(|l| l.split(',').next())
            .map(str::to_owned)
            .collect();
        let mut entries = Vec::new();
        for table in tables {
            for line in self.command(&format!("show table {table}"))?.lines() {
                let field = |name: &str| admin_field(line, name).map(str::to_owned);
                if let (Some(key), Some(server_id)) = (field("key="), field("server_id=")) {
                    entries.push(StickEntry { key, server_id });
                }
            }
        }
        Ok(entries)
    }

    pub fn log(&self) -> Vec<String> {
        self.log.lines()
    }

    /// Waits (bounded, polling) for HAProxy to exit on its own; its status,
    /// or `None` if it still runs after `timeout`.
    pub async fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        wait_child_exit(&mut self.child, timeout).await.0
    }

    /// Kills HAProxy and waits for it to exit. A master process gets
    /// `SIGTERM` first (bounded at 5 s), which stops its workers too.
    fn stop(&mut self) {
        if self.master_worker {
            terminate(&mut self.child, Duration::from_secs(5));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for HaProxy {
    fn drop(&mut self) {
        self.stop();
        self.log.report_if_failing("haproxy's output");
    }
}

/// Asks `child` to stop with `SIGTERM` and waits up to `grace` for it to
/// exit; the caller kills what is left. Only a child still running (not
/// reaped: `try_wait` found it), so never a reused pid. Never panics: it
/// runs in `Drop` (unlike `support::signal`).
pub fn terminate(child: &mut Child, grace: Duration) {
    if !matches!(child.try_wait(), Ok(None)) {
        return;
    }
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .stderr(Stdio::null())
        .status();
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline && matches!(child.try_wait(), Ok(None)) {
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// [`terminate`], then `SIGKILL` for whatever is left, and reaps `child`.
/// Calling it again does nothing: `Child` keeps the status it reaped, and
/// neither signals nor waits for a reaped child again.
pub fn stop(child: &mut Child, grace: Duration) {
    terminate(child, grace);
    let _ = child.kill();
    let _ = child.wait();
}

/// Polls `child` every 20 ms until it exits, bounded by `timeout`; returns
/// its status (`None` if it still runs) and how long after the call it was
/// seen gone.
pub async fn wait_child_exit(
    child: &mut Child,
    timeout: Duration,
) -> (Option<std::process::ExitStatus>, Duration) {
    let start = Instant::now();
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return (Some(status), start.elapsed());
        }
        if start.elapsed() >= timeout {
            return (None, start.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Starts `examples/server.rs` like [`Server::start`], but with its stderr
/// (a line per socket opened and closed: hundreds here) collected into `log`
/// instead of flooding the test output; [`Cluster`] shows it on failure.
pub fn start_node(args: &[&str], log: &OutputLog) -> Server {
    Server::start_capturing("server", args, |stderr| log.follow(stderr))
}

/// The knobs the cluster's nodes are started with.
#[derive(Debug, Clone, Copy)]
pub struct NodeOptions {
    pub close_delay: Duration,
    pub close_spread: Duration,
    pub drain_timeout: Duration,
    pub retry_after: Duration,
    /// The nodes' default, a `Secure` affinity cookie; `false` adds
    /// `--insecure`. The clients of `talk` ignore the attribute; a browser
    /// over plain HTTP returns a `Secure` cookie only to 127.0.0.1 or
    /// localhost.
    pub secure_cookie: bool,
}

impl NodeOptions {
    /// Nodes behind `deploy/haproxy.cfg`.
    pub const HAPROXY: NodeOptions = NodeOptions {
        // HAProxy takes a node out after `inter 500ms fall 2`: about a second.
        close_delay: Duration::from_millis(1500),
        close_spread: Duration::from_secs(1),
        drain_timeout: Duration::from_secs(10),
        retry_after: Duration::from_secs(1),
        secure_cookie: false,
    };

    /// Nodes behind the nginx files of `deploy/`. nginx has no active health
    /// checks (deploy/README.md), so there is nothing to wait for before
    /// closing: close delay 0. The reconnects then meet the draining node's
    /// 503, which nginx must retry elsewhere.
    pub const NGINX: NodeOptions = NodeOptions {
        close_delay: Duration::ZERO,
        close_spread: Duration::from_secs(1),
        drain_timeout: Duration::from_secs(10),
        retry_after: Duration::from_secs(1),
        secure_cookie: false,
    };

    /// Nodes behind `deploy/envoy.yaml`, whose health check takes a node
    /// out within `interval + timeout` (500 ms + 500 ms), as Traefik's does.
    pub const ENVOY: NodeOptions = NodeOptions::TRAEFIK;

    /// Nodes behind `deploy/traefik.yml`. Traefik takes a node out after one
    /// failed check, within `interval + timeout` of the drain (500 ms + 500
    /// ms in `traefik-routes.yml`; `tests/e2e_traefik.rs` checks that the
    /// close delay is longer), and does not retry a `503` elsewhere: sockets
    /// closed sooner would reconnect to the draining node and be refused.
    pub const TRAEFIK: NodeOptions = NodeOptions {
        close_delay: Duration::from_millis(1500),
        close_spread: Duration::from_secs(1),
        drain_timeout: Duration::from_secs(10),
        retry_after: Duration::from_secs(1),
        secure_cookie: false,
    };
}

/// The arguments of node `node` listening on `listen` (plain http: with
/// `--insecure` unless `options.secure_cookie`).
fn node_args(node: &str, listen: &str, options: NodeOptions) -> Vec<String> {
    let secs = |d: Duration| d.as_secs_f64().to_string();
    let mut args = [
        "--listen",
        listen,
        "--node",
        node,
        "--close-delay",
        &secs(options.close_delay),
        "--close-spread",
        &secs(options.close_spread),
        "--drain-timeout",
        &secs(options.drain_timeout),
        "--retry-after",
        &secs(options.retry_after),
    ]
    .map(str::to_owned)
    .to_vec();
    if !options.secure_cookie {
        args.push("--insecure".to_owned());
    }
    args
}

/// Starts node `node` on `listen` (see [`node_args`]), its stderr collected
/// into `log`.
pub fn start_named_node(node: &str, listen: &str, options: NodeOptions, log: &OutputLog) -> Server {
    let args = node_args(node, listen, options);
    start_node(&args.iter().map(String::as_str).collect::<Vec<_>>(), log)
}

/// Starts three nodes named `names` (for example [`Cluster::NODES`]) on
/// 127.0.0.1 port 0, their stderr collected into `log`.
pub fn start_nodes(names: [&str; 3], options: NodeOptions, log: &OutputLog) -> Vec<Server> {
    names
        .iter()
        .map(|node| start_named_node(node, "127.0.0.1:0", options, log))
        .collect()
}

/// Three example-server nodes behind HAProxy, at its servers `n1`, `n2` and
/// `n3` ([`Cluster::NODES`]).
///
/// The deploy file's frontend serves HTTP/1.1, and cleartext HTTP/2 to
/// clients that open with HTTP/2's preface ([`Cluster::h2_url`]). When the
/// test asks ([`Cluster::start_with_tls`]), HAProxy also gets a second
/// frontend onto the same backend, TLS with ALPN `h2,http/1.1` as the deploy
/// file's comment advises. Clients over HTTP/2 open their WebSockets with
/// extended CONNECT (RFC 8441), which HAProxy turns into HTTP/1.1 upgrades to
/// the nodes.
pub struct Cluster {
    /// `nodes[i]` runs with `--node names[i]`, at HAProxy's server
    /// `Cluster::NODES[i]`.
    pub nodes: Vec<Server>,
    /// The nodes' `--node` names: [`Cluster::NODES`] unless the test chose
    /// others ([`Cluster::start_named`]).
    pub names: [&'static str; 3],
    pub haproxy: HaProxy,
    /// HAProxy's frontend on 127.0.0.1, the deploy file's.
    pub frontend: SocketAddr,
    /// HAProxy's TLS frontend, if the test asked for one.
    pub tls_frontend: Option<SocketAddr>,
    pub options: NodeOptions,
    /// The nodes' stderr, interleaved (each line starts with `[nX]`).
    pub node_log: OutputLog,
}

impl Cluster {
    /// The names of the servers in `deploy/haproxy.cfg`, and of the nodes
    /// unless the test chose others.
    pub const NODES: [&'static str; 3] = ["n1", "n2", "n3"];

    /// The index of node `name` in [`Cluster::NODES`] (and in a cluster's
    /// nodes, started in that order); panics for another name.
    pub fn node_index(name: &str) -> usize {
        Self::NODES
            .iter()
            .position(|n| *n == name)
            .unwrap_or_else(|| panic!("{name} is not one of {:?}", Self::NODES))
    }

    /// Starts the nodes (plain http, so `--insecure`) named after HAProxy's
    /// servers, as `deploy/haproxy.cfg` asks, then HAProxy, and waits until
    /// its health checks see every node up.
    pub fn start(haproxy: &Path, options: NodeOptions) -> Cluster {
        Self::start_full(haproxy, options, Self::NODES, None, false)
    }

    /// Like [`Cluster::start`], with HAProxy as a master process and its
    /// worker ([`HaProxy::start_master_worker`]).
    pub fn start_master_worker(haproxy: &Path, options: NodeOptions) -> Cluster {
        Self::start_full(haproxy, options, Self::NODES, None, true)
    }

    /// Like [`Cluster::start`], with the nodes named `names` instead (a name
    /// that is not a server's leaves the routing to HAProxy's stick table).
    pub fn start_named(haproxy: &Path, options: NodeOptions, names: [&'static str; 3]) -> Cluster {
        Self::start_full(haproxy, options, names, None, false)
    }

    /// Like [`Cluster::start`], and HAProxy also serves TLS with the
    /// certificate and key in `pem` (one file, as HAProxy's `crt` takes
    /// them), at [`Cluster::tls_frontend`]. That frontend answers `403` to
    /// a request for `/ws` that is not HTTP/2, so that a browser's WebSocket
    /// that opens through it is known to be an extended CONNECT.
    pub fn start_with_tls(haproxy: &Path, options: NodeOptions, pem: &Path) -> Cluster {
        Self::start_full(haproxy, options, Self::NODES, Some(pem), false)
    }

    fn start_full(
        haproxy: &Path,
        options: NodeOptions,
        names: [&'static str; 3],
        pem: Option<&Path>,
        master_worker: bool,
    ) -> Cluster {
        let node_log = OutputLog::default();
        let nodes = start_nodes(names, options, &node_log);
        let local = |port| SocketAddr::from(([127, 0, 0, 1], port));
        let frontend = local(free_port());
        let tls_frontend = pem.map(|pem| (local(free_port()), pem));
        let frontends = tls_frontend.map_or_else(String::new, |(addr, pem)| {
            format!(
                "\nfrontend {TLS_FRONTEND}\n    bind \"{addr}\" ssl crt \"{}\" alpn h2,http/1.1\n    \
                 http-request deny deny_status 403 if {{ path /ws }} !{{ req.ver 2.0 }}\n    \
                 default_backend ws_nodes\n",
                pem.display()
            )
        });
        let tls_frontend = tls_frontend.map(|(addr, _)| addr);
        let start = if master_worker {
            HaProxy::start_master_worker
        } else {
            HaProxy::start
        };
        let mut haproxy = start(haproxy, frontend.port(), ports(&nodes), &frontends);
        haproxy.wait_ready(frontend, nodes.len(), Duration::from_secs(20));
        Cluster {
            nodes,
            names,
            haproxy,
            frontend,
            tls_frontend,
            options,
            node_log,
        }
    }

    /// Starts a new process for `nodes[index]` (its old one must have
    /// exited), as a deploy brings a node back: same name, new port, as a new
    /// container would get. Points HAProxy's server of that name at it through
    /// the admin socket, as service discovery would, and waits (bounded) until
    /// the health checks see every node up.
    pub fn replace_node(&mut self, index: usize) {
        let (name, server) = (self.names[index], Self::NODES[index]);
        assert!(
            matches!(self.nodes[index].child.try_wait(), Ok(Some(_))),
            "{name} must have exited before it is replaced"
        );
        let node = start_named_node(name, "127.0.0.1:0", self.options, &self.node_log);
        let port = node.addr.port();
        let answer = self
            .haproxy
            .command(&format!(
                "set server ws_nodes/{server} addr 127.0.0.1 port {port}"
            ))
            .expect("HAProxy admin socket");
        // Port 0 may hand out the old port again: HAProxy then has nothing
        // to change.
        assert!(
            answer.contains("changed from") || answer.contains("no need to change the port"),
            "HAProxy did not take {name}'s new port {port}: {answer:?}"
        );
        self.nodes[index] = node;
        self.haproxy
            .wait_ready(self.frontend, self.nodes.len(), Duration::from_secs(20));
    }

    /// Kills HAProxy and starts it again on the same frontend port, pointed
    /// at the nodes' current ports, as a restart of the balancer does: its
    /// stick table starts empty. Waits (bounded) until the health checks see
    /// every node up.
    pub fn restart_haproxy(&mut self) {
        // The old process must be gone before the new one binds the frontend.
        self.haproxy.stop();
        let bin = self.haproxy.bin.clone();
        let frontends = std::mem::take(&mut self.haproxy.frontends);
        let start = if self.haproxy.master_worker {
            HaProxy::start_master_worker
        } else {
            HaProxy::start
        };
        self.haproxy = start(&bin, self.frontend.port(), ports(&self.nodes), &frontends);
        self.haproxy
            .wait_ready(self.frontend, self.nodes.len(), Duration::from_secs(20));
    }

    /// Reloads HAProxy softly ([`HaProxy::reload`]), its nodes where they
    /// are, and waits (bounded) until the new process's health checks see
    /// every node up. Returns the old process or worker, which still serves
    /// the connections it had.
    pub fn reload_haproxy(&mut self) -> Former {
        let old = self
            .haproxy
            .reload(self.frontend.port(), ports(&self.nodes));
        self.haproxy
            .wait_ready(self.frontend, self.nodes.len(), Duration::from_secs(20));
        old
    }

    /// Another HAProxy with the same files on a frontend port of its own,
    /// pointed at the same nodes, sharing nothing with the first; waits
    /// (bounded) until its health checks see every node up.
    pub fn start_another_haproxy(&self) -> (HaProxy, SocketAddr) {
        let frontend = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let mut other = HaProxy::start(&self.haproxy.bin, frontend.port(), ports(&self.nodes), "");
        other.wait_ready(frontend, self.nodes.len(), Duration::from_secs(20));
        (other, frontend)
    }

    /// Runs an admin-socket command that answers nothing when it succeeds
    /// (`disable health ws_nodes/n1`, say); panics on any answer.
    pub fn admin(&self, command: &str) {
        let answer = self.haproxy.command(command).expect("HAProxy admin socket");
        assert!(
            answer.trim().is_empty(),
            "HAProxy refused `{command}`: {answer:?}"
        );
    }

    /// HAProxy's view of its server named `name` (of `deploy/haproxy.cfg`'s
    /// backend).
    pub fn server(&self, name: &str) -> ServerStat {
        self.haproxy
            .servers()
            .expect("show stat")
            .into_iter()
            .find(|s| s.backend == "ws_nodes" && s.name == name)
            .unwrap_or_else(|| panic!("no HAProxy server {name}"))
    }

    /// HAProxy's view of its server `name` now, which must still be in
    /// service (not `DOWN` nor in maintenance: the test paused its checks),
    /// and how many requests HAProxy sent elsewhere after it failed them
    /// since `before`.
    pub fn server_in_service(&self, name: &str, before: &ServerStat) -> (ServerStat, u64) {
        let after = self.server(name);
        assert!(
            !after.status.starts_with("DOWN") && !after.status.starts_with("MAINT"),
            "{name} must still be in service in HAProxy, its checks paused: {after:?}"
        );
        let redispatched = after.redispatches - before.redispatches;
        (after, redispatched)
    }

    /// The index in `nodes` of the node named `name`.
    pub fn index_of(&self, name: &str) -> Option<usize> {
        self.names.iter().position(|n| *n == name)
    }

    /// Which node HAProxy's stick table sends `cookie_value` to, if it has
    /// an entry for it.
    pub fn stuck_node(&self, cookie_value: &str) -> std::io::Result<Option<&'static str>> {
        let Some(entry) = self
            .haproxy
            .stick_entries()?
            .into_iter()
            .find(|e| e.key == cookie_value)
        else {
            return Ok(None);
        };
        let servers = self.haproxy.servers()?;
        let Some(server) = servers.iter().find(|s| s.id == entry.server_id) else {
            return Ok(None);
        };
        Ok(self
            .nodes
            .iter()
            .position(|n| server.addr.ends_with(&format!(":{}", n.addr.port())))
            .map(|i| self.names[i]))
    }

    /// The frontend's `ws://127.0.0.1:PORT/ws`.
    pub fn ws_url(&self) -> String {
        format!("ws://{}/ws", self.frontend)
    }

    /// The frontend's `h2c://127.0.0.1:PORT/ws`: WebSockets over cleartext
    /// HTTP/2 (see [`connect`]). HAProxy tells an HTTP/2 client by its
    /// preface on the same port.
    pub fn h2_url(&self) -> String {
        format!("h2c://{}/ws", self.frontend)
    }
}

/// The ports of three nodes (of a [`Cluster`], or behind nginx).
pub fn ports(nodes: &[Server]) -> [u16; 3] {
    [0, 1, 2].map(|i| nodes[i].addr.port())
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.node_log.report_if_failing("nodes' output");
    }
}

/// The first message of every socket: which node answered and what the layer
/// decided about the session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Welcome {
    pub node: String,
    pub session: String,
    /// `issued`, `kept` or `migrated`.
    pub affinity: String,
    /// The node that issued the cookie, when `migrated`.
    pub from: Option<String>,
}

impl Welcome {
    pub fn parse(text: &str) -> Result<Welcome, String> {
        let v: Value =
            serde_json::from_str(text).map_err(|e| format!("welcome is not JSON ({e}): {text}"))?;
        Welcome::from_json(&v)
    }

    pub fn from_json(v: &Value) -> Result<Welcome, String> {
        let field = |name: &str| {
            v.get(name)
                .and_then(Value::as_str)
                .map(str::to_owned)
                .ok_or_else(|| format!("welcome without string {name:?}: {v}"))
        };
        Ok(Welcome {
            node: field("node")?,
            session: field("session")?,
            affinity: field("affinity")?,
            from: v.get("from").and_then(Value::as_str).map(str::to_owned),
        })
    }
}

/// The cookies a client got from `Set-Cookie`, sent back on the next request
/// (name and value only, as a browser does for a path-`/` cookie on the same host).
#[derive(Debug, Clone, Default)]
pub struct CookieJar(Vec<(String, String)>);

impl CookieJar {
    /// A jar holding one cookie, as if a node had set it.
    pub fn with(name: &str, value: &str) -> CookieJar {
        CookieJar(vec![(name.to_owned(), value.to_owned())])
    }

    pub fn store(&mut self, headers: &HeaderMap) {
        for set in headers.get_all(SET_COOKIE) {
            let Ok(set) = set.to_str() else { continue };
            let pair = set.split(';').next().unwrap_or_default().trim();
            let Some((name, value)) = pair.split_once('=') else {
                continue;
            };
            match self.0.iter_mut().find(|(n, _)| n == name) {
                Some(slot) => slot.1 = value.to_owned(),
                None => self.0.push((name.to_owned(), value.to_owned())),
            }
        }
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    fn header(&self) -> Option<HeaderValue> {
        if self.0.is_empty() {
            return None;
        }
        let joined = self
            .0
            .iter()
            .map(|(n, v)| format!("{n}={v}"))
            .collect::<Vec<_>>()
            .join("; ");
        HeaderValue::from_str(&joined).ok()
    }
}

/// A client's WebSocket, over HTTP/1.1 or over an HTTP/2 stream ([`connect`]).
pub type Ws = WebSocketStream<Io>;

/// The transport under a [`Ws`]: a TCP connection, or one HTTP/2 stream.
pub type Io = Box<dyn AsyncIo>;

/// What a WebSocket needs of its transport.
pub trait AsyncIo: AsyncRead + AsyncWrite + Send + Unpin {}

impl<T: AsyncRead + AsyncWrite + Send + Unpin> AsyncIo for T {}

/// Why a connection attempt did not give a socket.
#[derive(Debug)]
pub enum ConnectError {
    /// An HTTP answer instead of `101`, with its `Retry-After` in seconds.
    Refused {
        status: StatusCode,
        retry_after: Option<u64>,
    },
    /// Over HTTP/2: the server's SETTINGS did not enable extended CONNECT
    /// (RFC 8441) within this long, so no WebSocket was tried.
    NoExtendedConnect(Duration),
    Other(String),
}

/// Bound on each step of [`connect`].
const CONNECT_STEP: Duration = Duration::from_secs(5);

/// How long an HTTP/2 client of [`connect`] waits for the server's SETTINGS
/// to enable extended CONNECT (loopback: they come within milliseconds).
const SETTINGS_WAIT: Duration = Duration::from_secs(2);

/// Opens `url` sending the jar's cookies, stores the `Set-Cookie`s of the
/// answer and reads the welcome. Bounded by 5 s per step.
///
/// `ws://HOST:PORT/PATH` is an HTTP/1.1 upgrade, answered `101`.
/// `h2c://HOST:PORT/PATH` (this module's own scheme) is a WebSocket over
/// HTTP/2 (RFC 8441): an extended CONNECT with `:protocol websocket`,
/// answered `200`, as a browser sends on an HTTP/2 connection over TLS; here
/// over cleartext, on a new connection for each socket (a browser shares one
/// among the sockets and requests of a host).
pub async fn connect(url: &str, jar: &mut CookieJar) -> Result<(Ws, Welcome), ConnectError> {
    let answer = match url.strip_prefix("h2c://") {
        Some(rest) => tokio::time::timeout(CONNECT_STEP, handshake_h2(rest, jar)).await,
        None => tokio::time::timeout(CONNECT_STEP, handshake_h1(url, jar)).await,
    };
    let mut ws = match answer {
        Err(_) => {
            return Err(ConnectError::Other(format!(
                "handshake took over {CONNECT_STEP:?}"
            )))
        }
        Ok(answer) => answer?,
    };
    let welcome = match tokio::time::timeout(CONNECT_STEP, next_text(&mut ws)).await {
        Err(_) => Err(format!("no welcome within {CONNECT_STEP:?}")),
        Ok(Ok(text)) => Welcome::parse(&text),
        Ok(Err(e)) => Err(format!("before the welcome: {e:?}")),
    };
    welcome.map(|w| (ws, w)).map_err(ConnectError::Other)
}

/// The `Retry-After` of a refusal, in seconds.
fn retry_after(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok())
}

/// An HTTP/1.1 upgrade to `url` (`ws://HOST:PORT/PATH`; no TLS).
async fn handshake_h1(url: &str, jar: &mut CookieJar) -> Result<Ws, ConnectError> {
    let other = |e: &dyn std::fmt::Display| ConnectError::Other(e.to_string());
    let mut request = url.into_client_request().map_err(|e| other(&e))?;
    if let Some(cookie) = jar.header() {
        request.headers_mut().insert(COOKIE, cookie);
    }
    let uri = request.uri();
    let authority = match (uri.scheme_str(), uri.authority()) {
        (Some("ws"), Some(authority)) if authority.port().is_some() => authority.to_string(),
        _ => {
            return Err(ConnectError::Other(format!(
                "{url}: lb::connect takes ws:// or h2c://, with a port"
            )))
        }
    };
    let tcp = tokio::net::TcpStream::connect(&authority)
        .await
        .map_err(|e| other(&e))?;
    tcp.set_nodelay(true).map_err(|e| other(&e))?;
    let io: Io = Box::new(tcp);
    match tokio_tungstenite::client_async_with_config(request, io, None).await {
        Err(WsError::Http(response)) => Err(ConnectError::Refused {
            status: response.status(),
            retry_after: retry_after(response.headers()),
        }),
        Err(e) => Err(other(&e)),
        Ok((ws, response)) => {
            jar.store(response.headers());
            Ok(ws)
        }
    }
}

/// A WebSocket over HTTP/2 (RFC 8441) to `authority_path` (`HOST:PORT/PATH`),
/// on a connection of its own.
async fn handshake_h2(authority_path: &str, jar: &mut CookieJar) -> Result<Ws, ConnectError> {
    use http_body_util::Empty;
    use hyper_util::rt::{TokioExecutor, TokioIo};
    use tokio_tungstenite::tungstenite::http::{Method, Request};
    use tokio_tungstenite::tungstenite::protocol::Role;

    let other = |e: &dyn std::fmt::Display| ConnectError::Other(e.to_string());
    let (authority, path) = authority_path
        .split_once('/')
        .map_or((authority_path, ""), |(a, p)| (a, p));
    let tcp = tokio::net::TcpStream::connect(authority)
        .await
        .map_err(|e| other(&e))?;
    tcp.set_nodelay(true).map_err(|e| other(&e))?;
    let (mut sender, mut conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
            .await
            .map_err(|e| other(&e))?;
    // A client may send an extended CONNECT only once the server's SETTINGS
    // enabled it (browsers otherwise open an HTTP/1.1 connection for the
    // WebSocket). They are the server's first frame, and a task of hyper's
    // applies them: look every millisecond until they enabled it. Nothing
    // tells when SETTINGS without it came, so that case ends at a bound.
    let deadline = tokio::time::Instant::now() + SETTINGS_WAIT;
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    while !conn.is_extended_connect_protocol_enabled() {
        if tokio::time::Instant::now() >= deadline {
            return Err(ConnectError::NoExtendedConnect(SETTINGS_WAIT));
        }
        tokio::select! {
            ended = &mut conn => {
                return Err(ConnectError::Other(format!("HTTP/2 connection ended: {ended:?}")));
            }
            _ = tick.tick() => {}
        }
    }
    tokio::spawn(conn);
    let mut connect = Request::builder()
        .method(Method::CONNECT)
        .uri(format!("http://{authority}/{path}"))
        .header("sec-websocket-version", "13")
        .body(Empty::<bytes::Bytes>::new())
        .map_err(|e| other(&e))?;
    if let Some(cookie) = jar.header() {
        connect.headers_mut().insert(COOKIE, cookie);
    }
    connect
        .extensions_mut()
        .insert(hyper::ext::Protocol::from_static("websocket"));
    let response = sender
        .send_request(connect)
        .await
        .map_err(|e| ConnectError::Other(format!("extended CONNECT: {e}")))?;
    if response.status() != StatusCode::OK {
        return Err(ConnectError::Refused {
            status: response.status(),
            retry_after: retry_after(response.headers()),
        });
    }
    jar.store(response.headers());
    let stream = hyper::upgrade::on(response)
        .await
        .map_err(|e| ConnectError::Other(format!("the HTTP/2 stream: {e}")))?;
    // hyper starts shutting the connection down once its last request
    // handle is dropped: the socket keeps one for as long as it lives.
    let io: Io = Box::new(H2Stream {
        io: TokioIo::new(stream),
        _connection: sender,
    });
    Ok(WebSocketStream::from_raw_socket(io, Role::Client, None).await)
}

/// An HTTP/2 stream carrying a WebSocket, and a handle to its connection.
struct H2Stream {
    io: hyper_util::rt::TokioIo<hyper::upgrade::Upgraded>,
    _connection: hyper::client::conn::http2::SendRequest<http_body_util::Empty<bytes::Bytes>>,
}

impl AsyncRead for H2Stream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl AsyncWrite for H2Stream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// What ended a wait for a text frame other than a text frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Interrupted {
    /// A Close frame, with its code (`None` when it had no payload).
    Closed(Option<u16>),
    /// The stream ended or failed without a Close frame.
    Dropped(String),
    Unexpected(String),
}

/// The next text frame, skipping pings and pongs (tungstenite answers pings itself).
pub async fn next_text(ws: &mut Ws) -> Result<String, Interrupted> {
    loop {
        match ws.next().await {
            Some(Ok(Message::Text(t))) => return Ok(t.as_str().to_owned()),
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
            Some(Ok(Message::Close(frame))) => {
                return Err(Interrupted::Closed(frame.map(|f| u16::from(f.code))));
            }
            Some(Ok(other)) => return Err(Interrupted::Unexpected(format!("{other:?}"))),
            Some(Err(e)) => return Err(Interrupted::Dropped(e.to_string())),
            None => return Err(Interrupted::Dropped("end of stream".into())),
        }
    }
}

/// After a Close frame came in: lets tungstenite send its reply and waits
/// (bounded) for the server to end the connection.
pub async fn finish_close(ws: &mut Ws) {
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        while let Some(Ok(_)) = ws.next().await {}
    })
    .await;
}

/// Closes a socket from the client side, waiting (bounded) for the handshake.
pub async fn close(mut ws: Ws) {
    let _ = tokio::time::timeout(Duration::from_secs(2), ws.close(None)).await;
    finish_close(&mut ws).await;
}

/// Median and maximum of `samples` (sorts them).
pub fn median_max(samples: &mut [Duration]) -> Option<(Duration, Duration)> {
    samples.sort();
    let max = *samples.last()?;
    let mid = samples.len() / 2;
    let median = if samples.len() % 2 == 0 {
        (samples[mid - 1] + samples[mid]) / 2
    } else {
        samples[mid]
    };
    Some((median, max))
}

/// `GET path` over HTTP/1.0 to `addr`; the status code. Bounded by 2 s per
/// step.
pub fn http_get_status(addr: SocketAddr, path: &str) -> std::io::Result<u16> {
    get_status(&mut connect_bounded(addr)?, addr, path)
}

/// A connection to `addr` whose connect, reads and writes each give up
/// after 2 s.
pub fn connect_bounded(addr: SocketAddr) -> std::io::Result<TcpStream> {
    let step = Duration::from_secs(2);
    let sock = TcpStream::connect_timeout(&addr, step)?;
    sock.set_read_timeout(Some(step))?;
    sock.set_write_timeout(Some(step))?;
    Ok(sock)
}

/// [`http_get_status`] over TLS, trusting what `tls` trusts (see
/// [`SiteCert::client_config`]).
pub fn https_get_status(
    addr: SocketAddr,
    tls: &Arc<rustls::ClientConfig>,
    path: &str,
) -> std::io::Result<u16> {
    let sock = connect_bounded(addr)?;
    let name = ServerName::IpAddress(addr.ip().into());
    let session =
        rustls::ClientConnection::new(Arc::clone(tls), name).map_err(std::io::Error::other)?;
    get_status(&mut rustls::StreamOwned::new(session, sock), addr, path)
}

/// Sends `GET path` over HTTP/1.0 on `sock` (connected to `addr`) and reads
/// the status code.
fn get_status(sock: &mut impl ReadWrite, addr: SocketAddr, path: &str) -> std::io::Result<u16> {
    write!(sock, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n")?;
    sock.flush()?;
    let mut head = [0u8; 64];
    let mut read = 0;
    // The status line fits in the first bytes; read until its end or EOF.
    while read < head.len() {
        let n = sock.read(&mut head[read..])?;
        if n == 0 || head[..read + n].contains(&b'\n') {
            read += n;
            break;
        }
        read += n;
    }
    let line = String::from_utf8_lossy(&head[..read]);
    line.split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("not an HTTP status line: {line:?}")))
}

trait ReadWrite: Read + Write {}
impl<T: Read + Write> ReadWrite for T {}

/// A self-signed certificate for `127.0.0.1`, made when a test starts, with
/// its files in a temp dir kept as long as this value lives.
pub struct SiteCert {
    pub der: CertificateDer<'static>,
    /// The certificate, PEM.
    pub cert: PathBuf,
    /// Its private key, PEM.
    pub key: PathBuf,
    /// Both in one file, as HAProxy's `crt` takes them.
    pub combined: PathBuf,
    _dir: TempDir,
}

impl SiteCert {
    pub fn new() -> SiteCert {
        let dir = TempDir::new("tls");
        let made = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()])
            .expect("self-signed certificate");
        let (cert_pem, key_pem) = (made.cert.pem(), made.signing_key.serialize_pem());
        let [cert, key, combined] =
            ["site.crt", "site.key", "site.pem"].map(|name| dir.path().join(name));
        for (path, text) in [
            (&cert, cert_pem.clone()),
            (&key, key_pem.clone()),
            (&combined, cert_pem + &key_pem),
        ] {
            std::fs::write(path, text).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
        }
        SiteCert {
            der: made.cert.der().clone(),
            cert,
            key,
            combined,
            _dir: dir,
        }
    }

    /// A client configuration (rustls, on ring) that trusts this
    /// certificate alone and offers `alpn`. It speaks TLS 1.3 only: the
    /// dev-dependency leaves out rustls' `tls12` feature.
    pub fn client_config(&self, alpn: &[&[u8]]) -> Arc<rustls::ClientConfig> {
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(self.der.clone())
            .expect("trust the test's certificate");
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("TLS versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Arc::new(config)
    }
}

/// How many upgrades node `node` refused while draining, from the stats line
/// `examples/server.rs` prints before it exits (`[n1] upgrades: 3 issued, 4
/// kept, 1 migrated, 2 refused while draining`); panics without one.
pub fn refused_while_draining(log: &OutputLog, node: &str) -> u64 {
    log.lines()
        .iter()
        .find_map(|l| {
            let rest = l.strip_prefix(&format!("[{node}] upgrades: "))?;
            let (_, refused) = rest.split_once(" migrated, ")?;
            refused
                .strip_suffix(" refused while draining")?
                .parse::<u64>()
                .ok()
        })
        .unwrap_or_else(|| panic!("no `upgrades:` line from {node}"))
}

/// Panics, with the output in `log`, if the `what` process `child` has exited.
pub fn assert_child_running(what: &str, child: &mut Child, log: &OutputLog) {
    if let Ok(Some(status)) = child.try_wait() {
        panic!("{what} exited with {status}:\n{}", log.lines().join("\n"));
    }
}

/// Waits until `GET /ws-health` through the proxy `what` (the process
/// `child`, its output in `log`) at `frontend` answers `200`: it proxies to a
/// node. Panics if the process exits, or after `timeout`.
pub fn wait_proxy_ready(
    what: &str,
    child: &mut Child,
    log: &OutputLog,
    frontend: SocketAddr,
    timeout: Duration,
) {
    wait_proxy_ready_with(what, child, log, timeout, || {
        http_get_status(frontend, "/ws-health")
    });
}

/// [`wait_proxy_ready`] with `probe` for the status of `/ws-health` (over
/// TLS, say).
pub fn wait_proxy_ready_with(
    what: &str,
    child: &mut Child,
    log: &OutputLog,
    timeout: Duration,
    probe: impl Fn() -> std::io::Result<u16>,
) {
    let deadline = Instant::now() + timeout;
    loop {
        assert_child_running(what, child, log);
        let last = match probe() {
            Ok(200) => return,
            Ok(status) => format!("status {status}"),
            Err(e) => e.to_string(),
        };
        assert!(
            Instant::now() < deadline,
            "{what} not ready within {timeout:?}: {last}\n{}",
            log.lines().join("\n")
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Waits, at most `timeout`, until `addr` can be bound, so that restarting a
/// node (or a balancer) on the port its old process left does not fail on a
/// socket that briefly holds the port (an outgoing connection given it as its
/// ephemeral port). Listening sockets set `SO_REUSEADDR`, so the old process's
/// `TIME_WAIT` connections do not count. Not bindable by then: panics, saying
/// why, before the restart is tried.
pub async fn wait_until_bindable(addr: &str, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    loop {
        match tokio::net::TcpListener::bind(addr).await {
            Ok(_) => return,
            Err(e) if Instant::now() >= deadline => {
                panic!("{addr} still cannot be bound after {timeout:?}: {e}")
            }
            Err(e) => {
                report(&format!("{addr} not bindable yet ({e}); waiting"));
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
}
