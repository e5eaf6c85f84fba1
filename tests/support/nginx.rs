//! nginx in front of three nodes, configured by a shipped file of `deploy/`
//! (`nginx.conf`, `nginx-node-tags.conf`), for `tests/e2e_nginx.rs` and
//! `tests/e2e_nginx_node_tags.rs`.
//!
//! Declared from a test file after `lb` (it builds on its helpers):
//!
//! ```ignore
//! mod support;
//! #[path = "support/lb.rs"]
//! mod lb;
//! #[path = "support/nginx.rs"]
//! mod nginx;
//! ```
#![allow(dead_code)]

use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Arc;
use std::time::Duration;

use tokio_rustls::rustls;

use crate::lb::{
    deploy_path, deploy_text, replace_once, Cluster, NodeOptions, OutputLog, SiteCert, TempDir,
};
use crate::support::Server;

/// The addresses the nginx files of `deploy/` ship with: the listen address
/// once, each node's address in one or more `server` lines.
const SHIPPED_LISTEN: &str = "listen 127.0.0.1:8080;";
const SHIPPED_SERVERS: [&str; 3] = [
    "server 127.0.0.1:3001 ",
    "server 127.0.0.1:3002 ",
    "server 127.0.0.1:3003 ",
];

/// `deploy/{file}` as shipped, and its path.
pub fn shipped_config(file: &str) -> (PathBuf, String) {
    (deploy_path(file), deploy_text(file))
}

/// `deploy/{file}` with its listen port and its three upstream addresses
/// replaced, and nothing else: nginx reads no environment variables, so this
/// is the only way to run a shipped file on free ports. Panics when the
/// listen address is not found exactly once, a node's address not at all,
/// or an address is left in another form, so that the test keeps testing
/// the shipped text rather than silently running something else.
pub fn shipped_config_on(file: &str, frontend_port: u16, node_ports: [u16; 3]) -> String {
    let (path, shipped) = shipped_config(file);
    let listen = format!("listen 127.0.0.1:{frontend_port};");
    let mut config = replace_once(file, &shipped, SHIPPED_LISTEN, &listen);
    for (from, port) in SHIPPED_SERVERS.iter().zip(node_ports) {
        assert!(
            shipped.contains(from),
            "{} has no `{from}`: update tests/support/nginx.rs with the file",
            path.display()
        );
        config = config.replace(from, &format!("server 127.0.0.1:{port} "));
    }
    for port in [8080, 3001, 3002, 3003] {
        // A shipped address, not a rewritten port that starts with it.
        let address = format!("127.0.0.1:{port}");
        let left = config
            .match_indices(&address)
            .any(|(at, _)| !config[at + address.len()..].starts_with(|c: char| c.is_ascii_digit()));
        assert!(
            !left,
            "{} names {address} in a form the test does not rewrite: \
             update tests/support/nginx.rs with the file",
            path.display()
        );
    }
    config
}

/// The commented TLS example of the nginx files of `deploy/`, line by line,
/// as shipped.
const SHIPPED_TLS_EXAMPLE: [&str; 4] = [
    "        #     listen 443 ssl;\n",
    "        #     ssl_certificate     /etc/nginx/tls/fullchain.pem;\n",
    "        #     ssl_certificate_key /etc/nginx/tls/privkey.pem;\n",
    "        #     ssl_protocols       TLSv1.2 TLSv1.3;\n",
];

/// [`shipped_config_on`] with the file's commented TLS example in place of
/// its plain `listen` ("terminate TLS here instead"): nginx serves TLS on
/// `frontend_port` with `cert`, and plain HTTP nowhere. Panics unless the
/// example is there once, as shipped. The readiness check's client speaks
/// TLS 1.3 only, which nginx 1.22 offers only with the example's
/// `ssl_protocols`.
pub fn shipped_tls_config_on(
    file: &str,
    frontend_port: u16,
    node_ports: [u16; 3],
    cert: &SiteCert,
) -> String {
    let mut config = shipped_config_on(file, frontend_port, node_ports);
    let plain = format!("        listen 127.0.0.1:{frontend_port};\n");
    let uncommented = [
        format!("        listen 127.0.0.1:{frontend_port} ssl;\n"),
        format!("        ssl_certificate     {};\n", cert.cert.display()),
        format!("        ssl_certificate_key {};\n", cert.key.display()),
        "        ssl_protocols       TLSv1.2 TLSv1.3;\n".to_owned(),
    ];
    for (from, to) in [(plain.as_str(), "")].into_iter().chain(
        SHIPPED_TLS_EXAMPLE
            .iter()
            .copied()
            .zip(uncommented.iter().map(String::as_str)),
    ) {
        config = replace_once(file, &config, from, to);
    }
    config
}

/// The `fail_timeout` of the `server` lines of `deploy/{file}`. Panics unless
/// every `server` line has one and they are all the same, so that a test
/// that waits for it waits as long as the shipped file says.
pub fn fail_timeout(file: &str) -> Duration {
    let (path, shipped) = shipped_config(file);
    let servers = shipped
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with("server ") && l.ends_with(';'))
        .count();
    let values: Vec<&str> = shipped
        .split("fail_timeout=")
        .skip(1)
        .map(|rest| {
            rest.split(|c: char| !c.is_ascii_alphanumeric())
                .next()
                .unwrap_or_default()
        })
        .collect();
    assert!(
        servers > 0 && values.len() == servers && values.iter().all(|v| *v == values[0]),
        "{}: every `server` line must have the same `fail_timeout=` ({servers} lines, \
         values {values:?})",
        path.display()
    );
    let secs = values[0]
        .strip_suffix('s')
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| {
            panic!(
                "{}: fail_timeout={} is not in seconds",
                path.display(),
                values[0]
            )
        });
    Duration::from_secs(secs)
}

/// Three nodes ([`Cluster::NODES`]) behind nginx running `deploy/{file}`;
/// shows the nodes' output if the test fails.
pub struct NginxCluster {
    /// `nodes[i]` is `Cluster::NODES[i]`.
    pub nodes: Vec<Server>,
    pub node_log: OutputLog,
    pub nginx: Nginx,
}

impl NginxCluster {
    /// Starts the nodes with `options`, then nginx, and waits until it
    /// proxies to a node.
    pub fn start(bin: &Path, file: &str, options: NodeOptions) -> NginxCluster {
        Self::start_full(bin, file, options, None)
    }

    /// Like [`NginxCluster::start`], with the file's commented TLS example
    /// in place of its plain `listen` (see [`shipped_tls_config_on`]),
    /// serving `cert` on `Nginx::frontend`.
    pub fn start_with_tls(
        bin: &Path,
        file: &str,
        options: NodeOptions,
        cert: &SiteCert,
    ) -> NginxCluster {
        Self::start_full(bin, file, options, Some(cert))
    }

    fn start_full(
        bin: &Path,
        file: &str,
        options: NodeOptions,
        cert: Option<&SiteCert>,
    ) -> NginxCluster {
        let node_log = OutputLog::default();
        let nodes = crate::lb::start_nodes(Cluster::NODES, options, &node_log);
        let ports = crate::lb::ports(&nodes);
        let port = crate::lb::free_port();
        let mut nginx = match cert {
            None => Nginx::start(bin, file, port, ports),
            Some(cert) => Nginx::start_tls(bin, file, port, ports, cert),
        };
        nginx.wait_ready(Duration::from_secs(20));
        NginxCluster {
            nodes,
            node_log,
            nginx,
        }
    }

    /// nginx's `ws://127.0.0.1:PORT/ws`.
    pub fn ws_url(&self) -> String {
        format!("ws://{}/ws", self.nginx.frontend)
    }
}

impl Drop for NginxCluster {
    fn drop(&mut self) {
        self.node_log.report_if_failing("nodes' output");
    }
}

/// nginx in the foreground (`-g 'daemon off;'`) with its prefix, pid file and
/// config in a temp dir and its error log on stderr, so it needs neither
/// `/run` nor `/var/log/nginx`. Killed (with its workers) on drop.
pub struct Nginx {
    child: Child,
    log: OutputLog,
    /// Plain HTTP, or TLS if started with it.
    pub frontend: SocketAddr,
    /// Trusts the certificate, if started with TLS.
    tls: Option<Arc<rustls::ClientConfig>>,
    /// The prefix (config, pid file), removed when nginx is gone.
    dir: TempDir,
}

impl Nginx {
    /// Writes [`shipped_config_on`] to a temp prefix dir, checks it with
    /// `nginx -t` (panics with nginx's output if it fails) and starts nginx.
    pub fn start(bin: &Path, file: &str, frontend_port: u16, node_ports: [u16; 3]) -> Nginx {
        let config = shipped_config_on(file, frontend_port, node_ports);
        Self::start_with_config(bin, file, frontend_port, config, None)
    }

    /// Like [`Nginx::start`], on [`shipped_tls_config_on`].
    pub fn start_tls(
        bin: &Path,
        file: &str,
        frontend_port: u16,
        node_ports: [u16; 3],
        cert: &SiteCert,
    ) -> Nginx {
        let config = shipped_tls_config_on(file, frontend_port, node_ports, cert);
        let tls = cert.client_config(&[b"http/1.1"]);
        Self::start_with_config(bin, file, frontend_port, config, Some(tls))
    }

    fn start_with_config(
        bin: &Path,
        file: &str,
        frontend_port: u16,
        config: String,
        tls: Option<Arc<rustls::ClientConfig>>,
    ) -> Nginx {
        let dir = TempDir::new("nginx");
        let conf = dir.path().join("nginx.conf");
        std::fs::write(&conf, config).unwrap_or_else(|e| panic!("write {}: {e}", conf.display()));

        let check = Self::command(bin, dir.path(), &conf)
            .arg("-t")
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("run {} -t: {e}", bin.display()));
        assert!(
            check.status.success(),
            "nginx -t rejects deploy/{file} (ports rewritten): {}\n{}",
            check.status,
            Self::output_text(&check)
        );

        let (child, log) = OutputLog::spawn(
            Self::command(bin, dir.path(), &conf)
                // Its own process group: the workers outlive a killed master,
                // and drop ends them through the group.
                .process_group(0),
            bin,
        );
        Nginx {
            child,
            log,
            frontend: SocketAddr::from(([127, 0, 0, 1], frontend_port)),
            tls,
            dir,
        }
    }

    /// `nginx -p DIR/ -c DIR/nginx.conf [-e stderr] -g 'daemon off;'`: the
    /// prefix holds the relative `pid nginx.pid` of the deploy file, which
    /// logs to stderr itself. `-e stderr` (nginx 1.19.5 and later) also keeps
    /// nginx from opening its compiled-in error log before it reads the
    /// config; older versions only print an alert when they cannot.
    fn command(bin: &Path, prefix: &Path, conf: &Path) -> Command {
        let mut prefix = prefix.as_os_str().to_owned();
        prefix.push("/");
        let mut cmd = Command::new(bin);
        cmd.arg("-p").arg(prefix).arg("-c").arg(conf);
        if version(bin) >= (1, 19, 5) {
            cmd.args(["-e", "stderr"]);
        }
        cmd.args(["-g", "daemon off;"]);
        cmd
    }

    fn output_text(out: &Output) -> String {
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    }

    /// Panics (with nginx's output) if it has exited.
    pub fn assert_running(&mut self) {
        crate::lb::assert_child_running("nginx", &mut self.child, &self.log);
    }

    /// Waits until `GET /ws-health` through nginx (over TLS if started with
    /// it) answers `200`: a worker accepts and proxies to a node. Bounded by
    /// `timeout`.
    pub fn wait_ready(&mut self, timeout: Duration) {
        let frontend = self.frontend;
        let probe = || match &self.tls {
            Some(tls) => crate::lb::https_get_status(frontend, tls, "/ws-health"),
            None => crate::lb::http_get_status(frontend, "/ws-health"),
        };
        crate::lb::wait_proxy_ready_with("nginx", &mut self.child, &self.log, timeout, probe);
    }

    /// nginx's output so far (its error log, at `notice`).
    pub fn log(&self) -> Vec<String> {
        self.log.lines()
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // SIGTERM is nginx's fast shutdown: the master ends its workers and
        // exits. Then SIGKILL to the group (its id is the master's pid,
        // `process_group(0)`) for anything left, if the master did not exit.
        let pid = self.child.id();
        crate::lb::terminate(&mut self.child, Duration::from_secs(5));
        let _ = Command::new("sh")
            .args(["-c", &format!("kill -KILL -{pid}")])
            .stderr(Stdio::null())
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.log.report_if_failing("nginx's output");
    }
}

/// nginx's version from `nginx -v` (`nginx version: nginx/1.22.1` on
/// stderr); panics when it cannot be read.
pub fn version(bin: &Path) -> (u32, u32, u32) {
    let out = Command::new(bin)
        .arg("-v")
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("run {} -v: {e}", bin.display()));
    let text = Nginx::output_text(&out);
    let parsed = text
        .split_once("nginx/")
        .map(|(_, v)| v.split_whitespace().next().unwrap_or_default())
        .map(|v| v.split('.').map(str::parse::<u32>).collect::<Vec<_>>());
    match parsed.as_deref() {
        Some([Ok(major), Ok(minor), Ok(patch)]) => (*major, *minor, *patch),
        _ => panic!("no version in `{} -v`: {text:?}", bin.display()),
    }
}
