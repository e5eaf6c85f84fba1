//! Envoy in front of three nodes, configured by the shipped
//! `deploy/envoy.yaml`, for `tests/e2e_envoy.rs` and `tests/e2e_browser.rs`.
//!
//! Declared from a test file after `lb` (it builds on its helpers):
//!
//! ```ignore
//! mod support;
//! #[path = "support/lb.rs"]
//! mod lb;
//! #[path = "support/envoy.rs"]
//! mod envoy;
//! ```
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::lb::{
    deploy_text, line_once, replace_once, Cluster, NodeOptions, OutputLog, SiteCert, TempDir,
};
use crate::support::Server;

pub const FILE: &str = "envoy.yaml";

/// The ports the shipped file names, each once: the listener's, the admin
/// interface's and the three nodes'.
const SHIPPED_LISTENER: &str = "port_value: 8080 }";
const SHIPPED_ADMIN: &str = "port_value: 9901 }";
const SHIPPED_NODES: [&str; 3] = [
    "port_value: 3001 }",
    "port_value: 3002 }",
    "port_value: 3003 }",
];
/// The health check's spacing in the shipped file, which
/// [`Variant::SpacedChecks`] rewrites.
const SHIPPED_SPACING: [&str; 2] = [
    "          interval: 0.5s\n",
    "          no_traffic_interval: 0.5s\n",
];

/// The WebSocket upgrade of the shipped file, after which
/// [`Variant::AllowConnect`] allows extended CONNECT.
const SHIPPED_UPGRADES: &str =
    "                upgrade_configs:\n                  - upgrade_type: websocket\n";

/// What the test changes in the shipped file beyond its ports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Variant {
    /// Nothing.
    Shipped,
    /// The health check's `interval` and `no_traffic_interval` set to a
    /// minute: after the first checks, which pass, Envoy keeps every node in
    /// service for as long as a test takes, as it would for a moment after a
    /// drain starts.
    SpacedChecks,
    /// WebSockets over HTTP/2 allowed (`allow_connect`), which the file's
    /// comments advise against.
    AllowConnect,
}

/// The shipped file with only its ports replaced, and what `variant` says.
pub fn shipped_config_on(
    frontend_port: u16,
    admin_port: u16,
    node_ports: [u16; 3],
    variant: Variant,
) -> String {
    let mut text = deploy_text(FILE);
    text = replace_once(
        FILE,
        &text,
        SHIPPED_LISTENER,
        &format!("port_value: {frontend_port} }}"),
    );
    text = replace_once(
        FILE,
        &text,
        SHIPPED_ADMIN,
        &format!("port_value: {admin_port} }}"),
    );
    for (from, port) in SHIPPED_NODES.iter().zip(node_ports) {
        text = replace_once(FILE, &text, from, &format!("port_value: {port} }}"));
    }
    match variant {
        Variant::Shipped => {}
        Variant::SpacedChecks => {
            for from in SHIPPED_SPACING {
                text = replace_once(FILE, &text, from, &from.replace("0.5s", "60s"));
            }
        }
        Variant::AllowConnect => {
            let allowed = format!(
                "{SHIPPED_UPGRADES}                http2_protocol_options:\n                  \
                 allow_connect: true\n"
            );
            text = replace_once(FILE, &text, SHIPPED_UPGRADES, &allowed);
        }
    }
    text
}

/// The shipped file's commented TLS example: its first and last lines, the
/// plain filter chain it replaces, and its certificate's paths.
const TLS_EXAMPLE: [&str; 2] = ["        # - transport_socket:", "        #   filters:"];
const PLAIN_CHAIN: &str = "        - filters:";
const EXAMPLE_FILES: [&str; 2] = ["/etc/envoy/tls/fullchain.pem", "/etc/envoy/tls/privkey.pem"];
/// Where the test adds an access log: after the connection manager's
/// `stat_prefix`.
const STAT_PREFIX: &str = "                stat_prefix: ws_in\n";

/// `text` (the shipped file, ports rewritten) with its commented TLS example
/// in place of the plain filter chain, serving `cert`, and an access log at
/// `access_log` (Envoy's default format: `"GET /ws HTTP/1.1" 101`).
fn with_tls(text: &str, cert: &SiteCert, access_log: &Path) -> String {
    let lines: Vec<&str> = text.lines().collect();
    let find = |wanted: &str| line_once(FILE, &lines, wanted);
    let (first, last) = (find(TLS_EXAMPLE[0]), find(TLS_EXAMPLE[1]));
    assert_eq!(
        lines.get(last + 1).copied(),
        Some(PLAIN_CHAIN),
        "deploy/{FILE}: the TLS example no longer stands before the plain filter chain"
    );
    let example = lines[first..=last].iter().map(|l| {
        l.strip_prefix("        # ")
            .map(|rest| format!("        {rest}"))
            .unwrap_or_else(|| panic!("deploy/{FILE}: `{l}` in the TLS example"))
    });
    let mut out: Vec<String> = lines[..first].iter().map(|l| l.to_string()).collect();
    out.extend(example);
    out.extend(lines[last + 2..].iter().map(|l| l.to_string()));
    let mut text = out.join("\n") + "\n";
    for (from, to) in EXAMPLE_FILES.iter().zip([&cert.cert, &cert.key]) {
        text = replace_once(FILE, &text, from, &to.display().to_string());
    }
    let log = format!(
        "{STAT_PREFIX}                access_log:\n                  - name: \
         envoy.access_loggers.file\n                    typed_config:\n                      \
         \"@type\": type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog\n\
         \x20                     path: \"{}\"\n",
        access_log.display()
    );
    replace_once(FILE, &text, STAT_PREFIX, &log)
}

/// The shipped health check's `interval` and `timeout` (in `s`), so that a
/// test waits as long as the file says. Panics unless each is in the
/// `health_checks` block once.
pub fn health_check() -> (Duration, Duration) {
    let text = deploy_text(FILE);
    let block = text
        .split_once("health_checks:")
        .map(|(_, rest)| {
            rest.split_once("http_health_check:")
                .map_or(rest, |(b, _)| b)
        })
        .unwrap_or_else(|| panic!("deploy/{FILE} has no `health_checks`"));
    let value = |key: &str| {
        let lines: Vec<&str> = block
            .lines()
            .filter_map(|l| l.trim().trim_start_matches("- ").strip_prefix(key))
            .collect();
        let [value] = lines[..] else {
            panic!("deploy/{FILE}'s health check must have one `{key}`, found {lines:?}");
        };
        value
            .trim()
            .strip_suffix('s')
            .and_then(|s| s.parse::<f64>().ok())
            .map(Duration::from_secs_f64)
            .unwrap_or_else(|| panic!("deploy/{FILE}: `{key} {value}` is not in seconds"))
    };
    (value("interval:"), value("timeout:"))
}

/// Three nodes ([`Cluster::NODES`]) behind Envoy running the shipped file;
/// shows the nodes' output if the test fails.
pub struct EnvoyCluster {
    /// `nodes[i]` is `Cluster::NODES[i]`.
    pub nodes: Vec<Server>,
    pub node_log: OutputLog,
    pub envoy: Envoy,
    bin: std::path::PathBuf,
    variant: Variant,
}

impl EnvoyCluster {
    /// Starts the nodes with `options`, then Envoy, and waits until it
    /// proxies to every node.
    pub fn start(bin: &Path, options: NodeOptions, variant: Variant) -> EnvoyCluster {
        Self::start_full(bin, options, variant, None)
    }

    /// Like [`EnvoyCluster::start`] with the shipped file, with its
    /// commented TLS example in place of the plain filter chain (see
    /// [`with_tls`]), serving `cert` on `Envoy::frontend`.
    pub fn start_with_tls(bin: &Path, options: NodeOptions, cert: &SiteCert) -> EnvoyCluster {
        Self::start_full(bin, options, Variant::Shipped, Some(cert))
    }

    fn start_full(
        bin: &Path,
        options: NodeOptions,
        variant: Variant,
        cert: Option<&SiteCert>,
    ) -> EnvoyCluster {
        let node_log = OutputLog::default();
        let nodes = crate::lb::start_nodes(Cluster::NODES, options, &node_log);
        let envoy = Envoy::start_full(
            bin,
            crate::lb::free_port(),
            crate::lb::ports(&nodes),
            variant,
            cert,
        );
        EnvoyCluster {
            nodes,
            node_log,
            envoy,
            bin: bin.to_owned(),
            variant,
        }
    }

    /// Stops Envoy and starts a new one on the same port, with the same
    /// file: nothing of the old process's state is kept.
    pub async fn restart_envoy(&mut self) {
        self.envoy.assert_plain("restart_envoy");
        let port = self.envoy.frontend.port();
        self.envoy.stop();
        let frontend = self.envoy.frontend.to_string();
        crate::lb::wait_until_bindable(&frontend, Duration::from_secs(10)).await;
        self.envoy = Envoy::start(&self.bin, port, crate::lb::ports(&self.nodes), self.variant);
    }

    /// Another Envoy in front of the same nodes, on a port of its own, with
    /// `variant`. Waits until it proxies to every node.
    pub fn start_another_envoy(&self, variant: Variant) -> Envoy {
        self.envoy.assert_plain("start_another_envoy");
        Envoy::start(
            &self.bin,
            crate::lb::free_port(),
            crate::lb::ports(&self.nodes),
            variant,
        )
    }

    /// Envoy's `ws://127.0.0.1:PORT/ws`.
    pub fn ws_url(&self) -> String {
        format!("ws://{}/ws", self.envoy.frontend)
    }

    /// Envoy's `h2c://127.0.0.1:PORT/ws`: WebSockets over cleartext HTTP/2.
    pub fn h2_url(&self) -> String {
        format!("h2c://{}/ws", self.envoy.frontend)
    }
}

impl Drop for EnvoyCluster {
    fn drop(&mut self) {
        self.node_log.report_if_failing("nodes' output");
    }
}

/// Envoy with its config in a temp dir, its log on stderr, hot restart off
/// (so that several can run at once), one worker. Stopped on drop.
pub struct Envoy {
    child: Child,
    log: OutputLog,
    pub frontend: SocketAddr,
    /// The admin interface (stats).
    pub admin: SocketAddr,
    /// The access log, with TLS.
    access_log: Option<std::path::PathBuf>,
    dir: TempDir,
}

impl Envoy {
    /// Writes [`shipped_config_on`] to a temp dir, starts Envoy on it and
    /// waits until it proxies to every node (each has passed its first
    /// health check). Panics with Envoy's output if it fails to start.
    pub fn start(bin: &Path, frontend_port: u16, node_ports: [u16; 3], variant: Variant) -> Envoy {
        Self::start_full(bin, frontend_port, node_ports, variant, None)
    }

    fn start_full(
        bin: &Path,
        frontend_port: u16,
        node_ports: [u16; 3],
        variant: Variant,
        cert: Option<&SiteCert>,
    ) -> Envoy {
        let dir = TempDir::new("envoy");
        let config = dir.path().join(FILE);
        let admin_port = crate::lb::free_port();
        let mut text = shipped_config_on(frontend_port, admin_port, node_ports, variant);
        let access_log = cert.map(|cert| {
            let path = dir.path().join("access.log");
            text = with_tls(&text, cert, &path);
            path
        });
        std::fs::write(&config, text).unwrap_or_else(|e| panic!("write {}: {e}", config.display()));
        let (child, log) = OutputLog::spawn(
            Command::new(bin)
                .arg("-c")
                .arg(&config)
                // One worker: up to three Envoys run at once here, on 2 cores.
                .args(["--disable-hot-restart", "--concurrency", "1"])
                // The access log (with TLS) written every 100 ms, not 10 s.
                .args(["--file-flush-interval-msec", "100"])
                .args(["--log-level", "info"])
                .current_dir(dir.path()),
            bin,
        );
        let local = |port| SocketAddr::from(([127, 0, 0, 1], port));
        let mut envoy = Envoy {
            child,
            log,
            frontend: local(frontend_port),
            admin: local(admin_port),
            access_log,
            dir,
        };
        envoy.wait_ready(node_ports.len(), Duration::from_secs(30));
        envoy
    }

    /// Waits until `GET /ws-health` through Envoy answers `200` (with TLS:
    /// until Envoy accepts connections) and the
    /// admin interface reports `healthy` hosts in the cluster.
    fn wait_ready(&mut self, hosts: usize, timeout: Duration) {
        let (frontend, admin, tls) = (self.frontend, self.admin, self.access_log.is_some());
        let probe = || {
            let status = if tls {
                TcpStream::connect_timeout(&frontend, Duration::from_secs(2)).map(|_| 200)?
            } else {
                http_get(frontend, "/ws-health")?.0
            };
            let healthy = healthy_hosts(admin)?;
            Ok(if healthy == hosts { status } else { 0 })
        };
        crate::lb::wait_proxy_ready_with("envoy", &mut self.child, &self.log, timeout, probe);
    }

    /// The counter `name` of Envoy's stats (`cluster.ws_nodes.upstream_rq_retry`,
    /// say), or `None` while Envoy does not report it (it makes some, such
    /// as `cluster.ws_nodes.retry.upstream_rq_503`, when first counted).
    pub fn stat(&self, name: &str) -> Option<u64> {
        let (status, body) = http_get(self.admin, &format!("/stats?filter=^{name}$"))
            .unwrap_or_else(|e| panic!("Envoy's admin interface at {}: {e}", self.admin));
        assert_eq!(
            status, 200,
            "GET /stats from Envoy's admin interface: {body}"
        );
        body.lines().find_map(|l| {
            l.strip_prefix(name)?
                .strip_prefix(": ")?
                .trim()
                .parse()
                .ok()
        })
    }

    fn assert_plain(&self, what: &str) {
        assert!(
            self.access_log.is_none(),
            "{what} starts an Envoy without TLS: not for a cluster started with it"
        );
    }

    /// The lines of the access log so far (kept only with TLS; Envoy writes
    /// a line when a request ends, for a WebSocket when it closes, and
    /// flushes its log every 100 ms here).
    pub fn access_log(&self) -> Vec<String> {
        let path = self
            .access_log
            .as_ref()
            .expect("Envoy keeps an access log only when started with TLS");
        match std::fs::read_to_string(path) {
            Ok(text) => text.lines().map(str::to_owned).collect(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => panic!("read {}: {e}", path.display()),
        }
    }

    /// Envoy's output so far.
    pub fn log(&self) -> Vec<String> {
        self.log.lines()
    }

    /// SIGTERM (Envoy exits at once), then SIGKILL if it is still running
    /// ([`crate::lb::stop`]: never a reused pid, and a second call does
    /// nothing).
    pub fn stop(&mut self) {
        crate::lb::stop(&mut self.child, Duration::from_secs(5));
    }
}

impl Drop for Envoy {
    fn drop(&mut self) {
        self.stop();
        self.log.report_if_failing("envoy's output");
    }
}

/// How many hosts of the cluster `ws_nodes` Envoy's admin interface at
/// `admin` reports `healthy`.
fn healthy_hosts(admin: SocketAddr) -> std::io::Result<usize> {
    let (_, body) = http_get(admin, "/clusters")?;
    Ok(body
        .lines()
        .filter(|l| l.starts_with("ws_nodes::") && l.ends_with("::health_flags::healthy"))
        .count())
}

/// `GET path` over HTTP/1.1 to `addr`, the connection closed after it:
/// the status and the body. Envoy answers `426` to HTTP/1.0 (it does not
/// accept it unless told to). Bounded by 2 s per step.
fn http_get(addr: SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
    let mut sock = crate::lb::connect_bounded(addr)?;
    write!(
        sock,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut answer = Vec::new();
    sock.take(1 << 20).read_to_end(&mut answer)?;
    let answer = String::from_utf8_lossy(&answer).into_owned();
    let (head, body) = answer.split_once("\r\n\r\n").unwrap_or((&answer, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("not an HTTP answer: {head:?}")))?;
    Ok((status, body.to_owned()))
}

/// Envoy's version from `envoy --version` (`envoy  version:
/// 9e55…/1.40.0/Clean/RELEASE/BoringSSL`); panics when it cannot be read.
pub fn version(bin: &Path) -> String {
    let out = Command::new(bin)
        .arg("--version")
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("run {} --version: {e}", bin.display()));
    let text = String::from_utf8_lossy(&out.stdout);
    text.split_once("version:")
        .and_then(|(_, v)| v.trim().split('/').nth(1))
        .filter(|v| !v.is_empty())
        .map(str::to_owned)
        .unwrap_or_else(|| panic!("no version in `{} --version`: {text:?}", bin.display()))
}
