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

use crate::lb::{
    deploy_text, line_once, replace_once, Cluster, NodeOptions, OutputLog, SiteCert, TempDir,
};
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

/// The two shipped files with only the entry point's port, the dynamic
/// file's path (to `routes_path`) and the nodes' ports replaced.
pub fn shipped_configs_on(
    frontend_port: u16,
    routes_path: &Path,
    node_ports: [u16; 3],
) -> (String, String) {
    let mut main = deploy_text(STATIC_FILE);
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
    let mut routes = deploy_text(ROUTES_FILE);
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

/// What the shipped static file's commented TLS example starts and ends
/// with, and the addresses in it, which the TLS setup rewrites.
const EXAMPLE_FIRST_LINE: &str = "    #   web:";
const EXAMPLE_LAST_LINE: &str = "    #       tls: {}";
const EXAMPLE_ADDRESSES: [&str; 2] = ["address: \":80\"", "address: \":443\""];
/// The router's entry point in the shipped dynamic file, and in the TLS
/// setup (the example's comment: "the router's entryPoints then name
/// `websecure`").
const SHIPPED_ROUTER_ENTRY: &str = "entryPoints: [web]";
const TLS_ROUTER_ENTRY: &str = "entryPoints: [websecure]";

/// How [`Traefik::start_tls`] serves TLS.
#[derive(Clone, Debug)]
struct TlsSetup {
    /// Trusts the certificate, for the readiness check.
    client: std::sync::Arc<tokio_rustls::rustls::ClientConfig>,
    /// The `websecure` entry point's port (`web` redirects to it).
    port: u16,
    cert: std::path::PathBuf,
    key: std::path::PathBuf,
    /// Where Traefik writes its access log (common log format).
    access_log: std::path::PathBuf,
}

/// [`shipped_configs_on`] with the static file's commented production
/// example in place of its plain entry point: `web` on `frontend_port`
/// redirects to `websecure`, which serves TLS on `tls.port`, and the router
/// names `websecure`. The test adds only what the example leaves to the
/// reader: the certificate (the dynamic file's default one, since clients
/// reach an IP address and send no server name) and an access log.
fn shipped_tls_configs_on(
    frontend_port: u16,
    routes_path: &Path,
    node_ports: [u16; 3],
    tls: &TlsSetup,
) -> (String, String) {
    let (main, routes) = shipped_configs_on(frontend_port, routes_path, node_ports);
    let lines: Vec<&str> = main.lines().collect();
    let find = |wanted: &str| line_once(STATIC_FILE, &lines, wanted);
    let (first, last) = (find(EXAMPLE_FIRST_LINE), find(EXAMPLE_LAST_LINE));
    let entry_points = find("entryPoints:");
    let plain_address = format!("    address: \"127.0.0.1:{frontend_port}\"");
    let plain_end = find(&plain_address);
    assert!(
        entry_points < first && last < plain_end,
        "deploy/{STATIC_FILE}: the TLS example is no longer a comment of the `web` entry point"
    );
    // The example, uncommented (`    #   web:` is `  web:` under
    // `entryPoints:`), in place of the entry point it comments.
    let example: Vec<String> = lines[first..=last]
        .iter()
        .map(|l| {
            l.strip_prefix("    # ")
                .map(|l| l.to_owned())
                .unwrap_or_else(|| panic!("deploy/{STATIC_FILE}: `{l}` in the TLS example"))
        })
        .collect();
    let mut text = lines[..=entry_points].join("\n");
    text.push('\n');
    text.push_str(&example.join("\n"));
    text.push('\n');
    text.push_str(&lines[plain_end + 1..].join("\n"));
    for (from, port) in EXAMPLE_ADDRESSES.iter().zip([frontend_port, tls.port]) {
        text = replace_once(
            STATIC_FILE,
            &text,
            from,
            &format!("address: \"127.0.0.1:{port}\""),
        );
    }
    text.push_str(&format!(
        "\naccessLog:\n  filePath: \"{}\"\n",
        tls.access_log.display()
    ));
    let mut routes = replace_once(ROUTES_FILE, &routes, SHIPPED_ROUTER_ENTRY, TLS_ROUTER_ENTRY);
    routes.push_str(&format!(
        "\ntls:\n  stores:\n    default:\n      defaultCertificate:\n        \
         certFile: \"{}\"\n        keyFile: \"{}\"\n",
        tls.cert.display(),
        tls.key.display()
    ));
    (text, routes)
}

/// [`shipped_configs_on`], or [`shipped_tls_configs_on`] with `tls`.
fn configs(
    frontend_port: u16,
    routes_path: &Path,
    node_ports: [u16; 3],
    tls: Option<&TlsSetup>,
) -> (String, String) {
    match tls {
        None => shipped_configs_on(frontend_port, routes_path, node_ports),
        Some(tls) => shipped_tls_configs_on(frontend_port, routes_path, node_ports, tls),
    }
}

/// The health check of `deploy/traefik-routes.yml`: its `interval` and its
/// `timeout`. Panics unless both are there once, in `ms` or `s`, so that a
/// test that waits for a check waits as long as the shipped file says.
pub fn health_check() -> (Duration, Duration) {
    let routes = deploy_text(ROUTES_FILE);
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
        Self::start_full(bin, options, None)
    }

    /// Like [`TraefikCluster::start`], with the static file's commented TLS
    /// example in place of its plain entry point (see
    /// [`shipped_tls_configs_on`]), serving `cert`: `Traefik::frontend`
    /// redirects to `Traefik::tls_frontend`.
    pub fn start_with_tls(bin: &Path, options: NodeOptions, cert: &SiteCert) -> TraefikCluster {
        Self::start_full(bin, options, Some(cert))
    }

    fn start_full(bin: &Path, options: NodeOptions, cert: Option<&SiteCert>) -> TraefikCluster {
        let node_log = OutputLog::default();
        let nodes = crate::lb::start_nodes(Cluster::NODES, options, &node_log);
        let ports = crate::lb::ports(&nodes);
        let port = crate::lb::free_port();
        let mut traefik = match cert {
            None => Traefik::start(bin, port, ports),
            Some(cert) => Traefik::start_tls(bin, port, ports, cert),
        };
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
        self.traefik.assert_plain("restart_traefik");
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
        self.traefik.assert_plain("start_another_traefik");
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
    log: OutputLog,
    /// The plain entry point (`web`); with TLS, it redirects to
    /// `tls_frontend`.
    pub frontend: SocketAddr,
    /// The TLS entry point (`websecure`), if started with TLS.
    pub tls_frontend: Option<SocketAddr>,
    tls: Option<TlsSetup>,
    dir: TempDir,
}

impl Traefik {
    /// Writes [`shipped_configs_on`] to a temp dir and starts Traefik on them.
    pub fn start(bin: &Path, frontend_port: u16, node_ports: [u16; 3]) -> Traefik {
        Self::start_full(bin, frontend_port, node_ports, |_| None)
    }

    /// Writes [`shipped_tls_configs_on`] to a temp dir, with `cert` and an
    /// access log there, and starts Traefik on them; its TLS entry point gets
    /// a free port.
    pub fn start_tls(
        bin: &Path,
        frontend_port: u16,
        node_ports: [u16; 3],
        cert: &SiteCert,
    ) -> Traefik {
        Self::start_full(bin, frontend_port, node_ports, |dir| {
            Some(TlsSetup {
                client: cert.client_config(&[b"http/1.1"]),
                port: crate::lb::free_port(),
                cert: cert.cert.clone(),
                key: cert.key.clone(),
                access_log: dir.join("access.log"),
            })
        })
    }

    fn start_full(
        bin: &Path,
        frontend_port: u16,
        node_ports: [u16; 3],
        tls: impl FnOnce(&Path) -> Option<TlsSetup>,
    ) -> Traefik {
        let dir = TempDir::new("traefik");
        let tls = tls(dir.path());
        let main_path = dir.path().join(STATIC_FILE);
        let routes_path = dir.path().join(ROUTES_FILE);
        let (main, routes) = configs(frontend_port, &routes_path, node_ports, tls.as_ref());
        for (path, text) in [(&main_path, main), (&routes_path, routes)] {
            std::fs::write(path, text).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
        }
        let (child, log) = OutputLog::spawn(
            Command::new(bin)
                .arg(format!("--configFile={}", main_path.display()))
                .current_dir(dir.path()),
            bin,
        );
        let local = |port| SocketAddr::from(([127, 0, 0, 1], port));
        Traefik {
            child,
            log,
            frontend: local(frontend_port),
            tls_frontend: tls.as_ref().map(|tls| local(tls.port)),
            tls,
            dir,
        }
    }

    fn assert_plain(&self, what: &str) {
        assert!(
            self.tls.is_none(),
            "{what} starts a Traefik without TLS: not for a cluster started with it"
        );
    }

    /// Rewrites the dynamic file with the nodes at `node_ports`; Traefik
    /// reloads it on its own (`watch: true` in the shipped static file). The
    /// new text is written beside it and renamed over it, so that Traefik
    /// never reads a half-written file.
    pub fn set_node_ports(&self, node_ports: [u16; 3]) {
        let routes_path = self.dir.path().join(ROUTES_FILE);
        let (_, routes) = configs(
            self.frontend.port(),
            &routes_path,
            node_ports,
            self.tls.as_ref(),
        );
        let draft = self.dir.path().join(format!("{ROUTES_FILE}.new"));
        std::fs::write(&draft, routes).unwrap_or_else(|e| panic!("write {}: {e}", draft.display()));
        std::fs::rename(&draft, &routes_path)
            .unwrap_or_else(|e| panic!("rename to {}: {e}", routes_path.display()));
    }

    /// The lines of the access log so far (written only with TLS, by
    /// [`Traefik::start_tls`]; Traefik writes a line when a request ends,
    /// for a WebSocket when it closes).
    pub fn access_log(&self) -> Vec<String> {
        let Some(tls) = &self.tls else {
            panic!("Traefik keeps an access log only when started with TLS");
        };
        match std::fs::read_to_string(&tls.access_log) {
            Ok(text) => text.lines().map(str::to_owned).collect(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => panic!("read {}: {e}", tls.access_log.display()),
        }
    }

    /// Waits until `GET /ws-health` through Traefik (over TLS if started
    /// with it) answers `200`: it has read the dynamic file and proxies to a
    /// node. Bounded by `timeout`.
    pub fn wait_ready(&mut self, timeout: Duration) {
        let probe = || match (&self.tls, self.tls_frontend) {
            (Some(tls), Some(addr)) => crate::lb::https_get_status(addr, &tls.client, "/ws-health"),
            _ => crate::lb::http_get_status(self.frontend, "/ws-health"),
        };
        crate::lb::wait_proxy_ready_with("traefik", &mut self.child, &self.log, timeout, probe);
    }

    /// Traefik's output so far.
    pub fn log(&self) -> Vec<String> {
        self.log.lines()
    }

    /// SIGTERM (Traefik's graceful shutdown, bounded at 5 s here), then
    /// SIGKILL if it is still running. Traefik is one process, with no
    /// workers (it stays in the test's process group, so that a Ctrl-C of
    /// the test run ends it too). [`crate::lb::stop`]: never a reused pid,
    /// and a second call does nothing.
    fn stop(&mut self) {
        crate::lb::stop(&mut self.child, Duration::from_secs(5));
    }
}

impl Drop for Traefik {
    fn drop(&mut self) {
        self.stop();
        self.log.report_if_failing("traefik's output");
        // Never a panic here: read what there is.
        if let (Some(tls), true) = (&self.tls, std::thread::panicking()) {
            let text = std::fs::read_to_string(&tls.access_log).unwrap_or_default();
            let lines: Vec<String> = text.lines().map(str::to_owned).collect();
            crate::lb::report_tail("traefik's access log", &lines);
        }
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
