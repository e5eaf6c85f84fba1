//! End to end with real browsers: headless Chromium and Firefox load the
//! example's demo page through a balancer in front of three nodes, HAProxy
//! (`deploy/haproxy.cfg`) in three scenarios, Traefik (`deploy/traefik.yml`)
//! in two, Envoy (`deploy/envoy.yaml`, its TLS example) in one and nginx (both
//! files) in one. Each scenario runs in both browsers: the tests
//! `chromium::SCENARIO` (driven over the DevTools protocol) and
//! `firefox::SCENARIO` (over WebDriver BiDi), through [`browser::Driver`]. In
//! most, the page opens a WebSocket, reconnects once, and reports both
//! welcomes.
//!
//! Through HAProxy, a `kept` second welcome on the same node with the same
//! session proves that the browser stored the cookie set on the `101`, sent
//! it back, and that HAProxy routed the reconnect by it. The second HAProxy
//! test does the same over HTTPS with HTTP/2 offered, where the browser's
//! WebSockets are extended CONNECTs answered `200`; the third drains the node
//! of two tabs whose sockets share one HTTP/2 connection. Traefik routes by
//! its own cookie, `WS_NODE`; there the nodes keep their default `Secure`
//! cookie, so both cookies are `Secure`, and the browser must keep and return
//! them over plain HTTP to 127.0.0.1, which it treats as secure. Since
//! Traefik balances round-robin, one reconnect can land on the same node by
//! chance, so both Traefik tests load the page three more times. The second
//! runs the static file's commented TLS example, where the page comes over
//! HTTP/2 and, Traefik not allowing extended CONNECT, the WebSockets over
//! HTTP/1.1.
//!
//! Over HTTPS, the nginx test runs each nginx file's commented TLS example in
//! place of its plain `listen`; the page's reconnect is `kept`, or, through
//! `nginx.conf`, which hashes the session id, `migrated` with the session
//! too, and the next page loads stay there.
//!
//! Needs `chromium` or `firefox` and `haproxy`, `traefik`, `envoy` or `nginx`
//! (`bash .ci/install-e2e.sh`). Without one of them a test passes with a loud
//! `SKIPPED` line, except under `CI=true`, where it fails. `E2E_HAPROXY`,
//! `E2E_TRAEFIK`, `E2E_ENVOY`, `E2E_NGINX`, `E2E_CHROMIUM` and `E2E_FIREFOX`
//! pick the executables.

#[macro_use]
#[path = "support/browser.rs"]
mod browser;
#[path = "support/envoy.rs"]
mod envoy;
#[path = "support/lb.rs"]
mod lb;
#[path = "support/nginx.rs"]
mod nginx;
mod support;
#[path = "support/traefik.rs"]
mod traefik;

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use browser::{AnyDriver, Driver, Launched};
use envoy::EnvoyCluster;
use lb::{Cluster, NodeOptions, Welcome};
use nginx::NginxCluster;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_rustls::rustls::pki_types::ServerName;
use traefik::TraefikCluster;

/// Bound on the page's whole run (load, connect, reconnect).
const PAGE_TIMEOUT: Duration = Duration::from_secs(20);
/// Page loads after the first one, through Traefik.
const PAGE_RELOADS: usize = 3;

in_each_browser!(
    sends_the_cookie_from_the_101_back_through_haproxy,
    sends_the_cookie_back_over_http2_through_haproxy_tls,
    tabs_on_one_http2_connection_move_when_their_node_drains,
    sends_both_cookies_from_the_101_back_through_traefik,
    opens_websockets_over_http1_from_an_http2_page_through_traefik_tls,
    opens_websockets_over_http1_from_an_http2_page_through_envoy_tls,
    keeps_its_session_through_nginx_tls,
);

/// Runs a scenario in `browser`: finds `balancer` and the browser (a test
/// without them skips, see [`lb::tools_or_skip`]; `what` names the scenario
/// there), makes `setup` of the balancer's path (its cluster), starts the
/// browser, and runs `scenario` with a driver connected to it and the
/// setup, on [`run`]'s runtime; then closes the browser. The browser goes
/// before the setup, so the balancer never stops under open pages.
fn in_browser<T>(
    what: &str,
    browser: lb::Tool,
    balancer: lb::Tool,
    setup: impl FnOnce(&Path) -> T,
    scenario: impl AsyncFnOnce(&mut AnyDriver, &mut T),
) {
    let test = format!("e2e_browser ({what}, {browser:?})");
    let Some([balancer, bin]) = lb::tools_or_skip(&test, [balancer, browser]) else {
        return;
    };
    let started = Instant::now();
    let mut setup = setup(&balancer);
    let launched = Launched::start(browser, &bin);
    run(started, async {
        let mut driver = launched.connect().await;
        scenario(&mut driver, &mut setup).await;
        driver.close_browser().await;
    });
}

/// Through HAProxy over plain HTTP, with nodes that set their cookie
/// without `Secure` (as `examples/server.rs --insecure` does): the browser
/// stores the cookie from the `101` and sends it back, and HAProxy routes
/// the reconnect by it, to the node it learned it from.
fn sends_the_cookie_from_the_101_back_through_haproxy(browser: lb::Tool) {
    let setup = |haproxy: &Path| Cluster::start(haproxy, NodeOptions::HAPROXY);
    in_browser(
        "haproxy",
        browser,
        lb::Tool::HaProxy,
        setup,
        async |driver, cluster| {
            let origin = format!("http://{}", cluster.frontend);
            let cookie = reconnect_once_through_haproxy(driver, cluster, &origin).await;
            assert_eq!(cookie["secure"], false, "no Secure: {cookie}");
        },
    );
}

/// Over HTTPS, with HTTP/2 offered, as in production: HAProxy's TLS frontend
/// offers ALPN `h2,http/1.1` and allows extended CONNECT, so the browser
/// opens the page's WebSockets over its HTTP/2 connection (RFC 8441), gets the
/// cookie on a `200`, and HAProxy forwards them to the nodes as HTTP/1.1
/// upgrades. That frontend refuses WebSockets over HTTP/1.1 (see
/// [`Cluster::start_with_tls`]), so a page that connects proves they were not.
fn sends_the_cookie_back_over_http2_through_haproxy_tls(browser: lb::Tool) {
    in_browser(
        "haproxy TLS",
        browser,
        lb::Tool::HaProxy,
        tls_cluster,
        async |driver, (cluster, cert)| {
            let tls = cluster.tls_frontend.expect("a TLS frontend");
            // The frontend's guard, without which an HTTP/1.1 WebSocket would
            // pass this test too.
            let status = tls_h1_upgrade_status(tls, cert).await;
            assert_eq!(status, 403, "a WebSocket over HTTP/1.1 to {tls}");
            let origin = format!("https://{tls}");
            let cookie = reconnect_once_through_haproxy(driver, cluster, &origin).await;
            assert_eq!(cookie["secure"], true, "Secure: {cookie}");
        },
    );
}

/// Three tabs of the demo page share the browser's HTTP/2 connection to
/// HAProxy's TLS frontend, each with a WebSocket on it (HAProxy's streams
/// show one client connection): two on one node, the third on another.
/// When the first node drains, it closes its two sockets with `1001`, and
/// their pages reconnect, still on that connection, while the third socket
/// stays open: HAProxy closed only the drained node's streams. Both keep the
/// session on a live node: the first tab back is `migrated` and gets the
/// cookie re-issued with the new node's tag, and the other, which shares the
/// browser's cookies, follows it there (`kept`), unless it came back first
/// too.
fn tabs_on_one_http2_connection_move_when_their_node_drains(browser: lb::Tool) {
    in_browser(
        "haproxy TLS drain",
        browser,
        lb::Tool::HaProxy,
        tls_cluster,
        async |driver, (cluster, _cert)| {
            tabs_move_when_their_node_drains(driver, cluster).await;
        },
    );
}

/// Through Traefik over plain HTTP, with the nodes' default `Secure` cookie,
/// as in production: both cookies, the layer's and Traefik's `WS_NODE`, are
/// then `Secure`, and the browser must keep and return them over plain HTTP
/// to 127.0.0.1, which Chromium and Firefox treat as secure (so the quick
/// start's demo page works in them without `--insecure`).
fn sends_both_cookies_from_the_101_back_through_traefik(browser: lb::Tool) {
    let options = NodeOptions {
        secure_cookie: true,
        ..NodeOptions::TRAEFIK
    };
    let setup = |traefik: &Path| TraefikCluster::start(traefik, options);
    in_browser(
        "traefik",
        browser,
        lb::Tool::Traefik,
        setup,
        async |driver, cluster| {
            let origin = format!("http://{}", cluster.traefik.frontend);
            let (_, first, _, cookie) = reconnect_once(driver, &origin, Reconnect::Kept).await;
            assert_eq!(
                cookie["secure"], true,
                "the layer's cookie, Secure by default: {cookie}"
            );
            stays_with_own_cookie(driver, &origin, &first).await;
        },
    );
}

/// Through Traefik over HTTPS, as `deploy/traefik.yml`'s commented
/// production example sets it up (`web` redirects to `websecure`, which
/// serves TLS; the router names `websecure`): the browser, sent to the plain
/// entry point, lands on HTTPS and gets the page over HTTP/2, but opens the
/// page's WebSockets over HTTP/1.1 (Traefik does not enable extended
/// CONNECT: `tests/e2e_traefik.rs` finds it missing from its SETTINGS over
/// cleartext HTTP/2). Traefik's access log shows both protocols, for every
/// page and every socket. Both cookies come back, `Secure`, and every
/// reconnect is `kept`.
fn opens_websockets_over_http1_from_an_http2_page_through_traefik_tls(browser: lb::Tool) {
    in_browser(
        "traefik TLS",
        browser,
        lb::Tool::Traefik,
        traefik_tls_cluster,
        async |driver, (cluster, _cert)| {
            redirected_to_traefik_tls(driver, cluster).await;
        },
    );
}

/// Through Envoy over HTTPS, with `deploy/envoy.yaml`'s commented TLS
/// example in place of its plain filter chain (its certificate's paths
/// rewritten), offering `h2`: the browser gets the page over HTTP/2 and,
/// since Envoy does not enable extended CONNECT as shipped, opens its
/// WebSockets over HTTP/1.1; Envoy's access log shows both protocols, for
/// every page and every socket. Both cookies come back, `Secure`, and every
/// reconnect is `kept`. (Firefox is reported not to fall back to HTTP/1.1
/// when an extended CONNECT that the SETTINGS allowed fails,
/// kgateway-dev/kgateway#14305: one more reason for the recipe to leave
/// `allow_connect` off.)
fn opens_websockets_over_http1_from_an_http2_page_through_envoy_tls(browser: lb::Tool) {
    let setup = |envoy: &Path| {
        let cert = lb::SiteCert::new();
        let options = NodeOptions {
            secure_cookie: true,
            ..NodeOptions::ENVOY
        };
        (EnvoyCluster::start_with_tls(envoy, options, &cert), cert)
    };
    in_browser(
        "envoy TLS",
        browser,
        lb::Tool::Envoy,
        setup,
        async |driver, (cluster, _cert)| {
            let origin = format!("https://{}", cluster.envoy.frontend);
            let pages = kept_over_h2(driver, &origin, &origin).await;
            let lines = AccessLog {
                balancer: "Envoy",
                h1_socket: "\"GET /ws HTTP/1.1\" 101 ",
                h2_page: "\"GET /?auto=1 HTTP/2\" 200 ",
            };
            lines
                .check(driver, &pages, || cluster.envoy.access_log())
                .await;
        },
    );
}

/// Through nginx over HTTPS, with each shipped file's commented TLS example
/// in place of its plain `listen` (its port and the certificate's paths
/// rewritten), and the nodes' default `Secure` cookie.
/// `nginx-node-tags.conf` routes by the cookie's node tag: the page's
/// reconnect is `kept`. `nginx.conf` hashes the session id: the reconnect
/// keeps the session, `kept` or `migrated` from the issuing node. With
/// either, the next page loads are all `kept` on the reconnect's node.
fn keeps_its_session_through_nginx_tls(browser: lb::Tool) {
    let setup = |nginx: &Path| {
        let cert = lb::SiteCert::new();
        let options = NodeOptions {
            secure_cookie: true,
            ..NodeOptions::NGINX
        };
        let clusters = [
            ("nginx-node-tags.conf", Reconnect::Kept),
            ("nginx.conf", Reconnect::KeptOrMigrated),
        ]
        .map(|(file, expected)| {
            let cluster = NginxCluster::start_with_tls(nginx, file, options, &cert);
            (file, expected, cluster)
        });
        (clusters, cert)
    };
    in_browser(
        "nginx TLS",
        browser,
        lb::Tool::Nginx,
        setup,
        async |driver, (clusters, _cert)| {
            for (file, expected, cluster) in clusters.iter() {
                // Cookies do not tell ports apart: each file starts afresh.
                driver.clear_cookies().await.expect("clear the cookies");
                let origin = format!("https://{}", cluster.nginx.frontend);
                let (page, first, second, cookie) =
                    reconnect_once(driver, &origin, *expected).await;
                assert_eq!(cookie["secure"], true, "{file}, Secure: {cookie}");
                let protocol = page_protocol(driver, &page).await;
                stays_kept(driver, &origin, &second.node, &first.session).await;
                lb::report(&format!(
                    "browser: through nginx over TLS ({file}, page over {protocol}): issued \
                     on {}, reconnected {} on {}, then {} sockets kept",
                    first.node,
                    second.affinity,
                    second.node,
                    2 * PAGE_RELOADS
                ));
            }
        },
    );
}

/// The body of [`tabs_on_one_http2_connection_move_when_their_node_drains`],
/// in the browser `driver` drives, against `cluster` (from [`tls_cluster`]).
async fn tabs_move_when_their_node_drains(driver: &mut impl Driver, cluster: &mut Cluster) {
    let tls = cluster.tls_frontend.expect("a TLS frontend");
    let origin = format!("https://{tls}/");
    let a = driver.open(&origin).await.expect("open the first tab");
    let first = wait_socket(driver, &a, "first tab", |w| w.affinity == "issued").await;
    let b = driver.open(&origin).await.expect("open the second tab");
    let second = wait_socket(driver, &b, "second tab", |w| w.affinity == "kept").await;
    assert_eq!(
        (&second.node, &second.session),
        (&first.node, &first.session),
        "the second tab's socket"
    );
    // The third tab goes without the cookie, so that HAProxy balances it
    // (`leastconn`: away from the node with two sockets); then the
    // cookie comes back for the first two tabs' reconnects.
    let cookie = driver.stored_cookie(lb::COOKIE_NAME).await;
    driver.clear_cookies().await.expect("clear the cookies");
    let c = driver.open(&origin).await.expect("open the third tab");
    let third = wait_socket(driver, &c, "third tab", |w| w.affinity == "issued").await;
    assert_ne!(third.node, first.node, "the third tab's socket: {third:?}");
    driver
        .set_cookie(&cookie)
        .await
        .expect("restore the cookie");

    // The three sockets are streams of one client connection to HAProxy.
    let server_of = |node: &str| lb::Cluster::NODES[cluster.index_of(node).expect("a node")];
    let (server, other) = (server_of(&first.node), server_of(&third.node));
    let before_ok = |streams: &[lb::Stream]| {
        let on = |name: &str| streams.iter().filter(|s| s.server == name).count();
        streams.len() == 3
            && streams.iter().all(|s| s.client == streams[0].client)
            && (on(server), on(other)) == (2, 1)
    };
    let before = streams_once(&cluster.haproxy, before_ok).await;
    assert!(
        before_ok(&before),
        "two WebSockets to {server} and one to {other}, on one client connection, in \
         HAProxy's streams: {before:?}"
    );
    let connection = before[0].client.clone();

    let drained = first.node.clone();
    let index = cluster.index_of(&drained).expect("a node of the cluster");
    cluster.nodes[index].sigterm();
    // The tabs share the browser's cookies: the first to reconnect moves
    // (`migrated`) and gets the cookie re-issued with its new node's tag;
    // a tab reconnecting after that follows it there (`kept`).
    let mut moved = Vec::new();
    for (tab, what) in [(&a, "first tab"), (&b, "second tab")] {
        let w = wait_socket(driver, tab, what, |w| w.node != drained).await;
        assert_eq!(
            w.session, first.session,
            "{what}'s session after the drain: {w:?}"
        );
        // The node closed the socket with `1001` (the page also
        // reconnects after a `1006`, a socket cut without a Close frame).
        let log = page_log(driver, tab).await;
        assert!(
            log.contains("closed: code 1001") && !log.contains("closed: code 1006"),
            "{what}'s socket should have been closed with 1001 only; its log:\n{log}"
        );
        moved.push(w);
    }
    let migrated: Vec<&Welcome> = moved
        .iter()
        .filter(|w| w.affinity == "migrated" && w.from.as_deref() == Some(drained.as_str()))
        .collect();
    assert!(
        !migrated.is_empty()
            && moved.iter().all(|w| migrated.contains(&w)
                || (w.affinity == "kept" && migrated.iter().any(|m| m.node == w.node))),
        "after the drain of {drained}, each tab should be `migrated` from it, or `kept` \
         where the other one moved: {moved:?}"
    );
    // They reconnected on the connection they had, beside the third
    // socket, which stayed open: HAProxy closed only the drained node's
    // streams.
    let after_ok = |streams: &[lb::Stream]| {
        streams.len() == 3
            && streams
                .iter()
                .all(|s| s.client == connection && s.server != server)
            && streams.iter().any(|s| s.server == other)
    };
    let after = streams_once(&cluster.haproxy, after_ok).await;
    assert!(
        after_ok(&after),
        "three WebSockets on the client connection they had ({connection}), none to \
         {server}, one still to {other}, in HAProxy's streams: {after:?}"
    );
    let log = page_log(driver, &c).await;
    assert!(
        log.matches("welcome:").count() == 1 && !log.contains("closed:"),
        "the third tab's socket, on {}, should have stayed open; its log:\n{log}",
        third.node
    );
    let exit = cluster.nodes[index].wait_exit(cluster.options.drain_timeout);
    assert!(
        exit.is_some_and(|status| status.success()),
        "{drained} after SIGTERM: {exit:?}"
    );
    lb::report(&format!(
        "browser: three tabs on one HTTP/2 connection ({connection}): the two of {drained} \
         moved with their session ({moved:?}), the one on {} stayed open",
        third.node
    ));
}

/// The streams of HAProxy's TLS frontend once `ok` holds of them (a request
/// of a page, for its icon say, may be in flight for a moment), or as they
/// are after 5 s.
async fn streams_once(
    haproxy: &lb::HaProxy,
    ok: impl Fn(&[lb::Stream]) -> bool,
) -> Vec<lb::Stream> {
    let since = Instant::now();
    loop {
        let streams = haproxy
            .streams(lb::TLS_FRONTEND)
            .expect("HAProxy admin socket");
        if ok(&streams) || since.elapsed() > Duration::from_secs(5) {
            return streams;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Three nodes with their default `Secure` cookie (as in production behind
/// TLS) behind HAProxy with a TLS frontend, whose certificate is made here;
/// returns the certificate (keep it as long as HAProxy runs: its files are
/// in a temp dir).
fn tls_cluster(haproxy: &Path) -> (Cluster, lb::SiteCert) {
    let cert = lb::SiteCert::new();
    let options = NodeOptions {
        secure_cookie: true,
        ..NodeOptions::HAPROXY
    };
    let cluster = Cluster::start_with_tls(haproxy, options, &cert.combined);
    (cluster, cert)
}

/// The log the demo page in tab `page` keeps of its sockets.
async fn page_log(driver: &mut impl Driver, page: &str) -> String {
    let log = driver
        .eval(page, "document.getElementById('log').textContent")
        .await
        .expect("read the page's log");
    log.as_str().unwrap_or_default().to_owned()
}

/// Polls the demo page in tab `page` (without `?auto=1`, it keeps one socket
/// open and reconnects after a `1001`) until its last welcome satisfies
/// `ok`, and returns it. Bounded by [`PAGE_TIMEOUT`].
async fn wait_socket(
    driver: &mut impl Driver,
    page: &str,
    what: &str,
    ok: impl Fn(&Welcome) -> bool,
) -> Welcome {
    // The page logs each welcome; `null` until there is one (or a page).
    const LAST_WELCOME: &str = "(() => { const log = document.getElementById('log'); \
        const m = log ? [...log.textContent.matchAll(/welcome: (.*)/g)] : []; \
        return m.length ? m[m.length - 1][1] : null; })()";
    let since = Instant::now();
    loop {
        let text = driver
            .eval(page, LAST_WELCOME)
            .await
            .expect("read the page's log");
        if let Some(welcome) = text.as_str().map(|t| Welcome::parse(t).expect("a welcome")) {
            if ok(&welcome) {
                return welcome;
            }
        }
        if since.elapsed() > PAGE_TIMEOUT {
            let log = page_log(driver, page).await;
            panic!("{what}: no such socket within {PAGE_TIMEOUT:?}; the page's log:\n{log}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The status HAProxy answers to an HTTP/1.1 WebSocket handshake for `/ws`
/// over TLS at `addr`, whose certificate is `cert`. Bounded by 5 s.
async fn tls_h1_upgrade_status(addr: SocketAddr, cert: &lb::SiteCert) -> u16 {
    let connector = tokio_rustls::TlsConnector::from(cert.client_config(&[b"http/1.1"]));
    let exchange = async {
        let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let name = ServerName::IpAddress(addr.ip().into());
        let mut tls = connector.connect(name, tcp).await.expect("TLS handshake");
        let request = format!(
            "GET /ws HTTP/1.1\r\nHost: {addr}\r\nConnection: Upgrade\r\n\
             Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
        );
        tls.write_all(request.as_bytes()).await.expect("send");
        // `HTTP/1.1 NNN`: 12 bytes.
        let mut head = [0; 12];
        tls.read_exact(&mut head).await.expect("status line");
        let head = String::from_utf8_lossy(&head).into_owned();
        head.strip_prefix("HTTP/1.1 ")
            .and_then(|code| code.trim().parse().ok())
            .unwrap_or_else(|| panic!("not an HTTP/1.1 status line: {head:?}"))
    };
    tokio::time::timeout(Duration::from_secs(5), exchange)
        .await
        .expect("HAProxy answered within 5 s")
}

/// Three nodes with their default `Secure` cookie behind Traefik running
/// `deploy/traefik.yml`'s commented TLS example, with a certificate made
/// here (keep it as long as Traefik runs).
fn traefik_tls_cluster(traefik: &Path) -> (TraefikCluster, lb::SiteCert) {
    let cert = lb::SiteCert::new();
    let options = NodeOptions {
        secure_cookie: true,
        ..NodeOptions::TRAEFIK
    };
    let cluster = TraefikCluster::start_with_tls(traefik, options, &cert);
    (cluster, cert)
}

/// The body of
/// [`opens_websockets_over_http1_from_an_http2_page_through_traefik_tls`], in
/// the browser `driver` drives.
async fn redirected_to_traefik_tls(driver: &mut impl Driver, cluster: &TraefikCluster) {
    let tls = cluster.traefik.tls_frontend.expect("a TLS entry point");
    // The example's redirect, from the plain entry point.
    let plain = format!("http://{}", cluster.traefik.frontend);
    let origin = format!("https://{tls}");
    let pages = kept_over_h2(driver, &plain, &origin).await;
    let href = driver
        .eval(&pages[0], "location.href")
        .await
        .expect("location.href");
    assert_eq!(
        href.as_str(),
        Some(format!("{origin}/?auto=1").as_str()),
        "{plain}/?auto=1 should redirect to the TLS entry point"
    );
    // Traefik logs a WebSocket with status 0: the connection was handed
    // over after the 101.
    let lines = AccessLog {
        balancer: "Traefik",
        h1_socket: "\"GET /ws HTTP/1.1\" 0 ",
        h2_page: "\"GET /?auto=1 HTTP/2.0\" 200 ",
    };
    lines
        .check(driver, &pages, || cluster.traefik.access_log())
        .await;
}

/// Loads the demo page from `start` (redirected to `origin`, or `origin`
/// itself) with [`reconnect_once`], checks that the page came over HTTP/2
/// and that the layer's cookie is `Secure`, then loads it again from
/// `origin` with [`stays_with_own_cookie`]. Returns the tabs' sessions, the
/// first load's first.
async fn kept_over_h2(driver: &mut impl Driver, start: &str, origin: &str) -> Vec<String> {
    let (page, first, _, cookie) = reconnect_once(driver, start, Reconnect::Kept).await;
    assert_eq!(
        page_protocol(driver, &page).await,
        "h2",
        "the page over HTTPS, with h2 offered"
    );
    assert_eq!(cookie["secure"], true, "Secure: {cookie}");
    let mut pages = vec![page];
    pages.extend(stays_with_own_cookie(driver, origin, &first).await);
    pages
}

/// How a balancer's access log shows a WebSocket over HTTP/1.1 and the demo
/// page over HTTP/2.
struct AccessLog<'a> {
    balancer: &'a str,
    h1_socket: &'a str,
    h2_page: &'a str,
}

impl AccessLog<'_> {
    /// Closes the tabs of `pages` (a request is logged when it ends, a
    /// WebSocket when it closes: each page closed its first socket when it
    /// reconnected, and closing the tab closes the second), then waits (at
    /// most 5 s) for `read` to return a line for each socket, and checks
    /// that every page came over HTTP/2 and every socket over HTTP/1.1.
    async fn check(
        &self,
        driver: &mut impl Driver,
        pages: &[String],
        read: impl Fn() -> Vec<String>,
    ) {
        for page in pages {
            driver.close_tab(page).await.expect("close the tab");
        }
        let (loads, sockets) = (pages.len(), 2 * pages.len());
        let is_socket = |l: &&String| l.contains(" /ws HTTP/");
        let since = Instant::now();
        let log = loop {
            let log = read();
            if log.iter().filter(is_socket).count() >= sockets
                || since.elapsed() > Duration::from_secs(5)
            {
                break log;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let count = |what: &str| log.iter().filter(|l| l.contains(what)).count();
        let (all_sockets, h1_sockets, h2_pages) = (
            log.iter().filter(is_socket).count(),
            count(self.h1_socket),
            count(self.h2_page),
        );
        let balancer = self.balancer;
        assert!(
            all_sockets == sockets && h1_sockets == sockets && h2_pages == loads,
            "{balancer}'s access log should show {loads} pages over HTTP/2 ({}) and {sockets} \
             WebSockets, all over HTTP/1.1 ({}); it shows {h2_pages} pages, and {h1_sockets} \
             such WebSockets of {all_sockets}:\n{}",
            self.h2_page,
            self.h1_socket,
            log.join("\n")
        );
        lb::report(&format!(
            "browser: through {balancer} over TLS, {h2_pages} pages over HTTP/2 and their \
             {h1_sockets} WebSockets over HTTP/1.1, each reconnect kept"
        ));
    }
}

/// The protocol the page in tab `page` was loaded over (`h2`, `http/1.1`).
async fn page_protocol(driver: &mut impl Driver, page: &str) -> String {
    let protocol = driver
        .eval(
            page,
            "performance.getEntriesByType('navigation')[0].nextHopProtocol",
        )
        .await
        .expect("the page's protocol");
    protocol.as_str().unwrap_or_default().to_owned()
}

/// Loads the demo page from `origin` [`PAGE_RELOADS`] more times and checks
/// that both sockets of each load are `kept` on `node` with `session`;
/// returns the tabs' sessions.
async fn stays_kept(
    driver: &mut impl Driver,
    origin: &str,
    node: &str,
    session: &str,
) -> Vec<String> {
    let mut pages = Vec::with_capacity(PAGE_RELOADS);
    for load in 1..=PAGE_RELOADS {
        let (page, a, b) = load_auto_page(driver, origin).await;
        for w in [&a, &b] {
            assert_eq!(
                (w.affinity.as_str(), w.node.as_str(), w.session.as_str()),
                ("kept", node, session),
                "page load {load} after the first, from {origin}: {w:?}"
            );
        }
        pages.push(page);
    }
    pages
}

/// [`stays_kept`] on `first`'s node and session, then checks that the
/// browser holds the balancer's own cookie (Traefik's and Envoy's
/// `WS_NODE`), `Secure` and `HttpOnly`; returns the tabs' sessions. The
/// balancer picks nodes round-robin for the page, its icon and new sockets:
/// one reconnect may land on the same node by chance, a few page loads in a
/// row (two sockets each) do not.
async fn stays_with_own_cookie(
    driver: &mut impl Driver,
    origin: &str,
    first: &Welcome,
) -> Vec<String> {
    let pages = stays_kept(driver, origin, &first.node, &first.session).await;
    let node_cookie = driver.stored_cookie("WS_NODE").await;
    lb::report(&format!(
        "browser: stored the balancer's cookie {node_cookie}"
    ));
    for (attribute, expected) in [("secure", true), ("httpOnly", true)] {
        assert_eq!(
            node_cookie[attribute], expected,
            "{attribute}: {node_cookie}"
        );
    }
    pages
}

/// Runs `scenario` on a current-thread runtime, then reports the time since
/// `started`.
fn run(started: Instant, scenario: impl std::future::Future<Output = ()>) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    runtime.block_on(scenario);
    lb::report(&format!(
        "browser e2e: total {:?} (including the cluster and browser start)",
        started.elapsed()
    ));
}

/// What a page's reconnect must be, after its `issued` first socket.
#[derive(Clone, Copy, Debug)]
enum Reconnect {
    /// `kept` on the first socket's node.
    Kept,
    /// That, or `migrated` from that node to another (a balancer that hashes
    /// the session id puts it on a node of its own choosing).
    KeptOrMigrated,
}

/// Loads the demo page from `origin` (`http://HOST:PORT` or `https://`)
/// with `/?auto=1`, which connects, reconnects once and reports both
/// welcomes. Checks that the first is `issued` and the second keeps the
/// session as `expected` says, and that the browser holds the layer's
/// cookie, with the session, `HttpOnly`, hidden from the page. Returns the
/// tab's session, both welcomes and the cookie, with its attributes.
async fn reconnect_once(
    driver: &mut impl Driver,
    origin: &str,
    expected: Reconnect,
) -> (String, Welcome, Welcome, Value) {
    let (page, first, second) = load_auto_page(driver, origin).await;
    assert_eq!(first.affinity, "issued", "fresh profile: {first:?}");
    let kept = second.affinity == "kept" && second.node == first.node;
    let migrated = second.affinity == "migrated"
        && second.from.as_deref() == Some(first.node.as_str())
        && second.node != first.node;
    assert!(
        second.session == first.session
            && (kept || (matches!(expected, Reconnect::KeptOrMigrated) && migrated)),
        "the reconnect should keep the session ({expected:?}): {first:?} then {second:?}"
    );

    // The browser holds the cookie from the 101 (or the 200 of an extended
    // CONNECT), HttpOnly: the page's script cannot read it.
    let cookie = driver.stored_cookie(lb::COOKIE_NAME).await;
    lb::report(&format!("browser: stored cookie {cookie}"));
    let value = cookie["value"].as_str().expect("cookie value");
    assert!(
        value.starts_with(&first.session),
        "the cookie {value:?} should carry the session {}",
        first.session
    );
    assert_eq!(cookie["httpOnly"], true, "HttpOnly: {cookie}");
    assert_eq!(cookie["path"], "/", "Path: {cookie}");
    let visible = driver
        .eval(&page, "document.cookie")
        .await
        .expect("read document.cookie");
    let visible = visible.as_str().expect("document.cookie is a string");
    assert!(
        !visible.contains(lb::COOKIE_NAME),
        "HttpOnly cookie visible to the page: {visible:?}"
    );
    (page, first, second, cookie)
}

/// [`reconnect_once`] through HAProxy, which must have learned the cookie
/// from the node's `101` (over HTTP/2, HAProxy turns it into the browser's
/// `200`) for the node that set it. Returns the cookie.
async fn reconnect_once_through_haproxy(
    driver: &mut impl Driver,
    cluster: &Cluster,
    origin: &str,
) -> Value {
    let (_, first, _, cookie) = reconnect_once(driver, origin, Reconnect::Kept).await;
    let value = cookie["value"].as_str().expect("cookie value");
    let stuck = cluster.stuck_node(value).expect("HAProxy admin socket");
    assert_eq!(
        stuck,
        Some(first.node.as_str()),
        "HAProxy's stick table for {value:?}"
    );
    cookie
}

/// Opens the demo page from `origin` (`http://HOST:PORT` or `https://`)
/// with `/?auto=1` in a new tab, waits until it has connected and
/// reconnected once, and returns the tab's session and both welcomes. The tab stays open, and its second socket
/// with it, until the browser closes.
async fn load_auto_page(driver: &mut impl Driver, origin: &str) -> (String, Welcome, Welcome) {
    let url = format!("{origin}/?auto=1");
    let page = driver.open(&url).await.expect("open the demo page");

    // The page sets its title to `done` (or `error`) when it has both welcomes.
    let loaded = Instant::now();
    let title = match driver
        .wait_for_title(&page, &["done", "error"], PAGE_TIMEOUT)
        .await
    {
        Ok(title) => title,
        Err(title) => panic!(
            "the page did not finish within {PAGE_TIMEOUT:?} (title {title:?}); its log:\n{}",
            driver
                .eval(&page, "document.getElementById('log').textContent")
                .await
                .unwrap_or_default()
        ),
    };
    let result = driver
        .eval(&page, "document.getElementById('result').textContent")
        .await
        .expect("read the result");
    let result = result.as_str().expect("result text").to_owned();
    lb::report(&format!(
        "browser: page finished in {:?}: {result}",
        loaded.elapsed()
    ));
    assert_eq!(title, "done", "the page reported an error: {result}");

    let result: Value = serde_json::from_str(&result).expect("result is JSON");
    let first = Welcome::from_json(&result["first"]).expect("first welcome");
    let second = Welcome::from_json(&result["second"]).expect("second welcome");
    (page, first, second)
}
