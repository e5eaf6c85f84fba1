//! Traefik v3 in front of three nodes, configured by the shipped
//! `deploy/traefik.yml` (static) and `deploy/traefik-routes.yml` (dynamic),
//! for `tests/e2e_traefik.rs`.
//!
//! Declared from a test file after `lb` (it builds on its helpers):
//!
//! ```ignore
//! mod support;
//! #[path = "support/lb.rs"]
//! mod lb;
//! #[path = "support/traefik.rs"]
//! mod traefik;
//! ```
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::lb::{Cluster, NodeOptions, OutputLog, TempDir};
use crate::support::Server;

/// The static file, which names the dynamic one.
pub const STATIC_FILE: &str = "traefik.yml";
pub const ROUTES_FILE: &str = "traefik-routes.yml";

/// What the shipped files hold that the test rewrites: the entry point's
/// address, the path of the dynamic file (relative to the repository root,
/// where the recipe says to run Traefik) and the nodes' URLs.
const SHIPPED_ADDRESS: &str = "address: \"127.0.0.1:8080\"";
const SHIPPED_ROUTES_PATH: &str = "filename: deploy/traefik-routes.yml";
const SHIPPED_SERVERS: [&str; 3] = [
    "url: \"http://127.0.0.1:3001\"",
    "url: \"http://127.0.0.1:3002\"",
    "url: \"http://127.0.0.1:3003\"",
];

/// The text of `deploy/{file}`.
fn shipped(file: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("deploy")
        .join(file);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

/// `text` (of `deploy/{file}`) with `from` replaced by `to`; panics unless
/// `from` is there exactly once, so that the test keeps running the shipped
/// text rather than silently something else.
fn replace_once(file: &str, text: &str, from: &str, to: &str) -> String {
    let found = text.matches(from).count();
    assert_eq!(
        found, 1,
        "deploy/{file} must contain `{from}` exactly once (the test rewrites it), \
         found {found} times: update tests/support/traefik.rs with the file"
    );
    text.replacen(from, to, 1)
}

/// The two shipped files with only the entry point's port, the dynamic
/// file's path (to `routes_path`) and the nodes' ports replaced.
pub fn shipped_configs_on(
    frontend_port: u16,
    routes_path: &Path,
    node_ports: [u16; 3],
) -> (String, String) {
    let mut main = shipped(STATIC_FILE);
    main = replace_once(
        STATIC_FILE,
        &main,
        SHIPPED_ADDRESS,
        &format!("address: \"127.0.0.1:{frontend_port}\""),
    );
    main = replace_once(
        STATIC_FILE,
        &main,
        SHIPPED_ROUTES_PATH,
        &format!("filename: {}", routes_path.display()),
    );
    let mut routes = shipped(ROUTES_FILE);
    for (from, port) in SHIPPED_SERVERS.iter().zip(node_ports) {
        routes = replace_once(
            ROUTES_FILE,
            &routes,
            from,
            &format!("url: \"http://127.0.0.1:{port}\""),
        );
    }
    for text in [&main, &routes] {
        for port in [8080, 3001, 3002, 3003] {
            assert!(
                !text.contains(&format!("127.0.0.1:{port}\"")),
                "a deploy/traefik*.yml file names 127.0.0.1:{port} in a form the test does not \
                 rewrite: update tests/support/traefik.rs with the file"
            );
        }
    }
    (main, routes)
}

/// The health check of `deploy/traefik-routes.yml`: its `interval` and its
/// `timeout`. Panics unless both are there once, in `ms` or `s`, so that a
/// test that waits for a check waits as long as the shipped file says.
pub fn health_check() -> (Duration, Duration) {
    let routes = shipped(ROUTES_FILE);
    let value = |key: &str| {
        let lines: Vec<&str> = routes
            .lines()
            .filter_map(|l| l.trim().strip_prefix(key))
            .collect();
        let [value] = lines[..] else {
            panic!("deploy/{ROUTES_FILE} must have one `{key}`, found {lines:?}");
        };
        let value = value.trim().trim_matches('"');
        let parsed = match value.strip_suffix("ms") {
            Some(ms) => ms.parse().ok().map(Duration::from_millis),
            None => value
                .strip_suffix('s')
                .and_then(|s| s.parse().ok())
                .map(Duration::from_secs),
        };
        parsed.unwrap_or_else(|| panic!("deploy/{ROUTES_FILE}: `{key} {value}` is not in ms or s"))
    };
    (value("interval:"), value("timeout:"))
}

/// Three nodes ([`Cluster::NODES`]) behind Traefik running the shipped files;
/// shows the nodes' output if the test fails.
pub struct TraefikCluster {
    /// `nodes[i]` is `Cluster::NODES[i]`.
    pub nodes: Vec<Server>,
    pub node_log: OutputLog,
    pub traefik: Traefik,
    bin: std::path::PathBuf,
}

impl TraefikCluster {
    /// Starts the nodes with `options`, then Traefik, and waits until it
    /// proxies to a node.
    pub fn start(bin: &Path, options: NodeOptions) -> TraefikCluster {
        let node_log = OutputLog::default();
        let nodes = crate::lb::start_nodes(Cluster::NODES, options, &node_log);
        let ports = crate::lb::ports(&nodes);
        let mut traefik = Traefik::start(bin, crate::lb::free_port(), ports);
        traefik.wait_ready(Duration::from_secs(30));
        TraefikCluster {
            nodes,
            node_log,
            traefik,
            bin: bin.to_owned(),
        }
    }

    /// Stops Traefik and starts a new one on the same port, with the same
    /// files: nothing of the old process's state is kept.
    pub async fn restart_traefik(&mut self) {
        let port = self.traefik.frontend.port();
        self.traefik.stop();
        let frontend = self.traefik.frontend.to_string();
        crate::lb::wait_until_bindable(&frontend, Duration::from_secs(10)).await;
        let mut traefik = Traefik::start(&self.bin, port, crate::lb::ports(&self.nodes));
        traefik.wait_ready(Duration::from_secs(30));
        self.traefik = traefik;
    }

    /// Traefik's `ws://127.0.0.1:PORT/ws`.
    pub fn ws_url(&self) -> String {
        format!("ws://{}/ws", self.traefik.frontend)
    }

    /// Another Traefik with the same files, on a port of its own, as a
    /// second instance behind a DNS name or a network load balancer would
    /// run; it shares nothing with the first. Waits until it proxies.
    pub fn start_another_traefik(&self) -> Traefik {
        let ports = crate::lb::ports(&self.nodes);
        let mut other = Traefik::start(&self.bin, crate::lb::free_port(), ports);
        other.wait_ready(Duration::from_secs(30));
        other
    }

    /// Puts `node` (a new process) in place of `nodes[index]` and points
    /// Traefik at its address, by rewriting the dynamic file, which Traefik
    /// watches, as a provider does when a pod comes back with a new IP.
    pub fn replace_node(&mut self, index: usize, node: Server) {
        self.nodes[index] = node;
        self.traefik.set_node_ports(crate::lb::ports(&self.nodes));
    }
}

impl Drop for TraefikCluster {
    fn drop(&mut self) {
        self.node_log.report_if_failing("nodes' output");
    }
}

/// Traefik with both files in a temp dir, run from there, its log on stdout.
/// Stopped on drop.
pub struct Traefik {
    child: Child,
    /// Set by [`Traefik::stop`], which runs once.
    stopped: bool,
    log: OutputLog,
    pub frontend: SocketAddr,
    dir: TempDir,
}

impl Traefik {
    /// Writes [`shipped_configs_on`] to a temp dir and starts Traefik on them.
    pub fn start(bin: &Path, frontend_port: u16, node_ports: [u16; 3]) -> Traefik {
        let dir = TempDir::new("traefik");
        let main_path = dir.path().join(STATIC_FILE);
        let routes_path = dir.path().join(ROUTES_FILE);
        let (main, routes) = shipped_configs_on(frontend_port, &routes_path, node_ports);
        for (path, text) in [(&main_path, main), (&routes_path, routes)] {
            std::fs::write(path, text).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
        }
        let (child, log) = OutputLog::spawn(
            Command::new(bin)
                .arg(format!("--configFile={}", main_path.display()))
                .current_dir(dir.path()),
            bin,
        );
        Traefik {
            child,
            stopped: false,
            log,
            frontend: SocketAddr::from(([127, 0, 0, 1], frontend_port)),
            dir,
        }
    }

    /// Rewrites the dynamic file with the nodes at `node_ports`; Traefik
    /// reloads it on its own (`watch: true` in the shipped static file). The
    /// new text is written beside it and renamed over it, so that Traefik
    /// never reads a half-written file.
    pub fn set_node_ports(&self, node_ports: [u16; 3]) {
        let routes_path = self.dir.path().join(ROUTES_FILE);
        let (_, routes) = shipped_configs_on(self.frontend.port(), &routes_path, node_ports);
        let draft = self.dir.path().join(format!("{ROUTES_FILE}.new"));
        std::fs::write(&draft, routes).unwrap_or_else(|e| panic!("write {}: {e}", draft.display()));
        std::fs::rename(&draft, &routes_path)
            .unwrap_or_else(|e| panic!("rename to {}: {e}", routes_path.display()));
    }

    /// Waits until `GET /ws-health` through Traefik answers `200`: it has
    /// read the dynamic file and proxies to a node. Bounded by `timeout`.
    pub fn wait_ready(&mut self, timeout: Duration) {
        crate::lb::wait_proxy_ready(
            "traefik",
            &mut self.child,
            &self.log,
            self.frontend,
            timeout,
        );
    }

    /// Traefik's output so far.
    pub fn log(&self) -> Vec<String> {
        self.log.lines()
    }

    /// SIGTERM (Traefik's graceful shutdown, bounded at 5 s here), then
    /// SIGKILL if it is still running. Traefik is one process, with no
    /// workers (it stays in the test's process group, so that a Ctrl-C of
    /// the test run ends it too). [`crate::lb::terminate`] signals only a
    /// process that has not been reaped, so never a reused pid;
    /// `Child::kill` checks that itself.
    fn stop(&mut self) {
        if std::mem::replace(&mut self.stopped, true) {
            return;
        }
        crate::lb::terminate(&mut self.child, Duration::from_secs(5));
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Traefik {
    fn drop(&mut self) {
        self.stop();
        self.log.report_if_failing("traefik's output");
    }
}

/// Traefik's version from `traefik version` (`Version:      3.7.15`);
/// panics when it cannot be read.
pub fn version(bin: &Path) -> String {
    let out = Command::new(bin)
        .arg("version")
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("run {} version: {e}", bin.display()));
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .find_map(|l| l.strip_prefix("Version:"))
        .map(|v| v.trim().to_owned())
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| panic!("no version in `{} version`: {text:?}", bin.display()))
}
