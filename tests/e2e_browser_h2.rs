//! End to end with a real browser over HTTP/2: headless Chromium, and in
//! twin tests Firefox, opens its WebSockets with extended CONNECT (RFC 8441)
//! over HTTP/2, so the affinity cookie travels on a `200`, not a `101`.
//!
//! Browsers speak HTTP/2 only over TLS, and send WebSockets over it only
//! once the server's SETTINGS allow extended CONNECT. So the server here is
//! in this process: axum behind the layer, served by hyper-util with
//! `enable_connect_protocol`, over TLS with a certificate made at start
//! (Chromium runs with `--ignore-certificate-errors`, Firefox's session
//! accepts insecure certificates; both with a throwaway profile).
//!
//! The page connects, closes, reconnects and keeps the second socket open;
//! the test then starts the drain. It checks that:
//! - both sockets were extended CONNECTs over HTTP/2 (the welcome says so);
//! - the first was issued and the second kept the same session, so the
//!   browser stored the cookie from the `200` and sent it back;
//! - the stored cookie has the default attributes (`Secure`, `HttpOnly`,
//!   `SameSite=Lax`, `Path=/`, no `Max-Age`: a session cookie) and the
//!   node's tag;
//! - the drain closes the open socket with 1001, a new socket is then refused,
//!   and the drain ends with no socket left.
//!
//! A second scenario sets every cookie attribute a host can
//! ([`keeps_a_cookie_with_every_attribute`]): the browser keeps the cookie,
//! sends it back, and stores it with them. A third opens the socket on
//! another site than the page, `[::1]` (so it needs IPv6 loopback), with
//! three `SameSite` and `Partitioned` settings, over whichever protocol the
//! browser picks, with third-party cookies allowed, blocked and (Firefox's
//! default) partitioned
//! ([`cross_site_sessions_follow_the_third_party_cookie_policy`]).
//!
//! Needs `chromium` and `firefox` (`bash .ci/install-e2e.sh`). Without one
//! of them its tests pass with a loud `SKIPPED` line, except under
//! `CI=true`, where they fail. `E2E_CHROMIUM` and `E2E_FIREFOX` pick the
//! executables.
#![cfg(feature = "http2")]

#[macro_use]
#[path = "support/browser.rs"]
mod browser;
#[path = "support/lb.rs"]
mod lb;
mod support;

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::http::{Method, Version};
use axum::response::{Html, IntoResponse};
use axum::routing::{any, get};
use axum::{Extension, Router};
use browser::{AnyDriver, Driver, Launched, ThirdPartyCookies};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use serde_json::{json, Value};
use tokio_rustls::rustls;
use tower_sticky_upgrade::{
    Drain, DrainGuard, DrainOutcome, SameSite, StickySession, StickyUpgradeLayer,
    DEFAULT_COOKIE_NAME,
};

/// Bound on each phase of the page's run.
const PAGE_TIMEOUT: Duration = Duration::from_secs(20);
/// Bound on the server's wait for the browser's answer to a close frame.
const CLOSE_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
const NODE: &str = "h2-node";

/// Connects (to `/ws` on its own host, or to the URL in its `ws` query
/// parameter), closes; reconnects and stays open until the server closes;
/// then tries once more. Writes `{"welcomes":[..],"closeCode":N,"refused":bool}`
/// into `#result`, and its phase into the title: `open` (second socket up),
/// `done`, or `error`.
const PAGE: &str = r#"<!doctype html>
<html><head><meta charset="utf-8"><title>loading</title></head>
<body><pre id="result"></pre>
<script>
"use strict";
const url = new URLSearchParams(location.search).get("ws") || "wss://" + location.host + "/ws";
const result = { welcomes: [], closeCode: null, refused: null };
const show = (phase) => {
  document.getElementById("result").textContent = JSON.stringify(result);
  document.title = phase;
};
function connect() {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url);
    ws.onmessage = (e) => resolve({ ws, welcome: JSON.parse(e.data) });
    ws.onclose = (e) => reject(new Error("closed before the welcome: " + e.code));
  });
}
(async () => {
  try {
    const first = await connect();
    result.welcomes.push(first.welcome);
    await new Promise((closed) => { first.ws.onclose = closed; first.ws.close(1000); });
    const second = await connect();
    result.welcomes.push(second.welcome);
    second.ws.onclose = async (e) => {
      result.closeCode = e.code;
      try { (await connect()).ws.close(); result.refused = false; }
      catch (_) { result.refused = true; }
      show("done");
    };
    show("open");
  } catch (e) {
    result.error = String(e);
    show("error");
  }
})();
</script></body></html>"#;

in_each_browser!(
    keeps_the_cookie_from_the_200_of_an_extended_connect,
    keeps_a_cookie_with_every_attribute,
    cross_site_sessions_follow_the_third_party_cookie_policy,
);

/// Serves the app ([`serve_tls`]) with a layer tagging `NODE` and a drain
/// without a close spread, and runs [`scenario`] in `browser`.
fn keeps_the_cookie_from_the_200_of_an_extended_connect(browser: lb::Tool) {
    let drain = Drain::with_close_spread(Duration::ZERO);
    let layer = StickyUpgradeLayer::builder()
        .node_id(NODE)
        .drain(drain.clone())
        .build()
        .expect("layer");
    in_browser("", browser, layer, async |driver, url, layer| {
        scenario(driver, browser, &url, &layer, layer.drain()).await;
    });
}

/// A cookie with every attribute a host can set, beside the defaults
/// (`Secure`, `HttpOnly`, `Path=/`): a `__Host-` name, `Max-Age` and
/// `Expires`, `SameSite=Strict` and `Partitioned`. The browser must accept
/// it (a `__Host-` cookie that broke the prefix's rules would be dropped),
/// send it back (the second socket is `kept`), and store it with those
/// attributes: host-only, expiring `Max-Age` from now. (`Expires` is sent
/// for old clients; browsers go by `Max-Age` when both are there. `Domain`
/// cannot go with `__Host-`, nor on an IP address.)
fn keeps_a_cookie_with_every_attribute(browser: lb::Tool) {
    const NAME: &str = "__Host-WS";
    const MAX_AGE: Duration = Duration::from_secs(3600);
    let layer = StickyUpgradeLayer::builder()
        .cookie_name(NAME)
        .node_id(NODE)
        .max_age(MAX_AGE)
        .expires(true)
        .same_site(SameSite::Strict)
        .partitioned(true)
        .build()
        .expect("layer");
    in_browser(
        ", every attribute",
        browser,
        layer,
        async |driver, url, layer| {
            let page = driver.open(&url).await.expect("open the page");
            let set_after = SystemTime::now();
            let result = wait_for_title(driver, &page, "open").await;
            issued_then_kept(&result, browser);
            let cookie = driver.stored_cookie(NAME).await;
            lb::report(&format!(
                "browser h2 ({browser:?}), every attribute: stored cookie {cookie}"
            ));
            assert_eq!(
                (
                    &cookie["secure"],
                    &cookie["httpOnly"],
                    &cookie["sameSite"],
                    &cookie["path"],
                    &cookie["domain"],
                    &cookie["session"]
                ),
                (
                    &json!(true),
                    &json!(true),
                    &json!("Strict"),
                    &json!("/"),
                    &json!("127.0.0.1"),
                    &json!(false)
                ),
                "{cookie}"
            );
            // Max-Age from the response, which came after `set_after` and within
            // the page's timeout of it.
            let expires = cookie["expires"].as_f64().expect("an expiry");
            let earliest = (set_after + MAX_AGE)
                .duration_since(UNIX_EPOCH)
                .expect("after 1970")
                .as_secs_f64();
            let latest = earliest + PAGE_TIMEOUT.as_secs_f64();
            // Browsers may round the expiry down to the second.
            assert!(
                (earliest - 1.0..=latest).contains(&expires),
                "expiry {expires}: Max-Age {MAX_AGE:?} from between {earliest} and {latest}"
            );
            // Chromium reports the partition of a partitioned cookie: here, the
            // page's own site. Firefox's BiDi reports none for a cookie of the
            // top-level site.
            if matches!(browser, lb::Tool::Chromium) {
                assert_eq!(
                    cookie["partitionKey"]["topLevelSite"], "https://127.0.0.1",
                    "partitioned: {cookie}"
                );
            }
            let stats = layer.stats();
            assert_eq!((stats.issued, stats.kept), (1, 1), "{stats:?}");
        },
    );
}

/// The cookies of [`cross_site_sessions_follow_the_third_party_cookie_policy`]:
/// name, `SameSite` and `Partitioned`. Each has a name of its own, so none
/// sees another's cookie.
const CROSS_SITE: [(&str, SameSite, bool); 3] = [
    ("WS_LAX", SameSite::Lax, false),
    ("WS_NONE", SameSite::None, false),
    ("WS_NONE_PARTITIONED", SameSite::None, true),
];

/// Whether the reconnect of a cross-site socket keeps its session, for each
/// cookie of [`CROSS_SITE`] in order, under each third-party cookie policy
/// tried in `browser` (Chromium 156, Firefox 153 ESR). A `Lax` cookie never
/// comes back; `None` alone does unless third-party cookies are blocked;
/// `None` with `Partitioned` does in Chromium even then, in Firefox not.
/// With neither setting touched, Chromium 156's fresh profile blocks
/// third-party cookies and Firefox 153's partitions them. So in each browser
/// one row differs from what the untouched profile does (Chromium's
/// `Allowed`, Firefox's `Blocked`), which shows the setting is read.
fn cross_site_kept(browser: lb::Tool) -> &'static [(ThirdPartyCookies, [bool; 3])] {
    use ThirdPartyCookies::{Allowed, Blocked, Partitioned};
    match browser {
        lb::Tool::Chromium => &[
            (Allowed, [false, true, true]),
            (Blocked, [false, false, true]),
        ],
        lb::Tool::Firefox => &[
            (Allowed, [false, true, true]),
            (Partitioned, [false, true, true]),
            (Blocked, [false, false, false]),
        ],
        other => panic!("{other:?} is not a browser"),
    }
}

/// A page on one site (`https://127.0.0.1:P/`) opens its WebSocket on
/// another (`wss://[::1]:Q/ws`: another host, so another site), where the
/// affinity cookie is a third-party cookie, and then opens it again: the
/// reconnect is `kept` or `issued` anew as [`cross_site_kept`] says, for
/// each cookie of [`CROSS_SITE`], in a browser started afresh for each
/// third-party cookie policy it names.
fn cross_site_sessions_follow_the_third_party_cookie_policy(browser: lb::Tool) {
    for &(policy, kept) in cross_site_kept(browser) {
        let page_layer = StickyUpgradeLayer::builder().build().expect("layer");
        in_browser_with(
            &format!(", cross-site, third-party cookies {policy:?}"),
            browser,
            policy,
            page_layer,
            async |driver, url, _| {
                for ((name, same_site, partitioned), kept) in CROSS_SITE.into_iter().zip(kept) {
                    let layer = StickyUpgradeLayer::builder()
                        .cookie_name(name)
                        .node_id(NODE)
                        .same_site(same_site)
                        .partitioned(partitioned)
                        .build()
                        .expect("layer");
                    let socket = serve_tls_on(layer.clone(), "[::1]:0").await;
                    let page = driver
                        .open(&format!("{url}?ws=wss://{socket}/ws"))
                        .await
                        .expect("open the page");
                    let result = wait_for_title(driver, &page, "open").await;
                    let welcomes = result["welcomes"].as_array().expect("welcomes");
                    assert_eq!(welcomes.len(), 2, "{name}: {result}");
                    let (first, second) = (&welcomes[0], &welcomes[1]);
                    assert_eq!(first["affinity"], "issued", "{name}, fresh: {first}");
                    let (affinity, same_session) = if kept {
                        ("kept", true)
                    } else {
                        ("issued", false)
                    };
                    assert!(
                        second["affinity"] == affinity
                            && (second["session"] == first["session"]) == same_session,
                        "{browser:?}, third-party cookies {policy:?}, a cross-site socket with \
                         {name}: {affinity} expected, got {second} after {first}"
                    );
                    lb::report(&format!(
                        "browser h2 ({browser:?}), cross-site, third-party cookies {policy:?}, \
                         {name}: the reconnect was {affinity} ({} {})",
                        second["method"], second["version"]
                    ));
                    let stats = layer.stats();
                    assert_eq!(
                        (stats.issued, stats.kept),
                        if kept { (1, 1) } else { (2, 0) },
                        "{name}: {stats:?}"
                    );
                    driver.close_tab(&page).await.expect("close the tab");
                }
            },
        );
    }
}

/// Starts `browser`, serves the app ([`serve_tls`]) with `layer`, and runs
/// `scenario` with a driver connected to the browser, the page's URL and the
/// layer, on a runtime of its own; then closes the browser. `what` names
/// the test in a skip notice.
fn in_browser(
    what: &str,
    browser: lb::Tool,
    layer: StickyUpgradeLayer,
    scenario: impl AsyncFnOnce(&mut AnyDriver, String, StickyUpgradeLayer),
) {
    let policy = ThirdPartyCookies::BrowserDefault;
    in_browser_with(what, browser, policy, layer, scenario);
}

/// [`in_browser`], with the browser's third-party cookie policy set.
fn in_browser_with(
    what: &str,
    browser: lb::Tool,
    cookies: ThirdPartyCookies,
    layer: StickyUpgradeLayer,
    scenario: impl AsyncFnOnce(&mut AnyDriver, String, StickyUpgradeLayer),
) {
    let test = format!("e2e_browser_h2 ({browser:?}{what})");
    let Some([bin]) = lb::tools_or_skip(&test, [browser]) else {
        return;
    };
    // Before the runtime: it waits (blocking, bounded) for the browser to
    // listen.
    let launched = Launched::with_third_party_cookies(browser, &bin, cookies);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    runtime.block_on(async {
        let addr = serve_tls(layer.clone()).await;
        let mut driver = launched.connect().await;
        scenario(&mut driver, format!("https://{addr}/"), layer).await;
        driver.close_browser().await;
    });
}

/// The page's run in `browser`, which `driver` drives, with the checks of
/// the module docs.
async fn scenario(
    driver: &mut impl Driver,
    browser: lb::Tool,
    url: &str,
    layer: &StickyUpgradeLayer,
    drain: &Drain,
) {
    let started = Instant::now();
    let page = driver.open(url).await.expect("open the page");
    let result = wait_for_title(driver, &page, "open").await;

    let (first, second) = issued_then_kept(&result, browser);
    for welcome in [first, second] {
        assert_eq!(
            (welcome["version"].as_str(), welcome["method"].as_str()),
            (Some("HTTP/2"), Some("CONNECT")),
            "{browser:?} should open its WebSockets with extended CONNECT over HTTP/2: {welcome}"
        );
    }

    // The cookie as the browser stored it, with the layer's default attributes.
    let cookie = driver.stored_cookie(DEFAULT_COOKIE_NAME).await;
    lb::report(&format!("browser h2 ({browser:?}): stored cookie {cookie}"));
    let session = first["session"].as_str().expect("session");
    assert_eq!(
        cookie["value"],
        format!("{session}.{NODE}"),
        "the value carries the session and this node's tag: {cookie}"
    );
    assert_eq!(
        (
            &cookie["secure"],
            &cookie["httpOnly"],
            &cookie["sameSite"],
            &cookie["path"],
            &cookie["session"]
        ),
        (
            &json!(true),
            &json!(true),
            &json!("Lax"),
            &json!("/"),
            &json!(true)
        ),
        "{cookie}"
    );

    // Drain: the open socket gets 1001, a new one is refused, none is left.
    // The first socket's handler may still be finishing its close handshake.
    let since = Instant::now();
    while drain.active() != 1 {
        assert!(
            since.elapsed() < PAGE_TIMEOUT,
            "{} sockets counted, expected the second one only",
            drain.active()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(drain.start());
    let result = wait_for_title(driver, &page, "done").await;
    assert_eq!(result["closeCode"], 1001, "{result}");
    assert_eq!(
        result["refused"], true,
        "a new socket while draining: {result}"
    );
    assert_eq!(
        drain.wait(Duration::from_secs(10)).await,
        DrainOutcome::Drained
    );
    let stats = layer.stats();
    assert_eq!(
        (
            stats.issued,
            stats.kept,
            stats.refused_draining,
            stats.active
        ),
        (1, 1, 1, 0),
        "{stats:?}"
    );
    lb::report(&format!(
        "browser h2 ({browser:?}): issued, kept, drained with 1001 and refused in {:?}",
        started.elapsed()
    ));
}

/// The two welcomes of the page's `result`, after checking that the first
/// was `issued` and the second `kept` the same session: the browser sent
/// the cookie back.
fn issued_then_kept(result: &Value, browser: lb::Tool) -> (&Value, &Value) {
    let welcomes = result["welcomes"].as_array().expect("welcomes");
    assert_eq!(welcomes.len(), 2, "{result}");
    let (first, second) = (&welcomes[0], &welcomes[1]);
    assert_eq!(first["affinity"], "issued", "fresh profile: {first}");
    assert_eq!(
        (&second["affinity"], &second["session"]),
        (&json!("kept"), &first["session"]),
        "{browser:?} should send the cookie back: {first} then {second}"
    );
    (first, second)
}

/// Waits (bounded) until the page's title is `phase`, and returns the page's
/// result. Fails on `error`.
async fn wait_for_title(driver: &mut impl Driver, page: &str, phase: &str) -> Value {
    match driver
        .wait_for_title(page, &[phase, "error"], PAGE_TIMEOUT)
        .await
    {
        Ok(title) if title == phase => page_result(driver, page).await,
        Ok(_) => panic!(
            "the page reported an error: {}",
            page_result(driver, page).await
        ),
        Err(title) => panic!(
            "the page did not reach {phase:?} within {PAGE_TIMEOUT:?} (title {title:?}): {}",
            page_result(driver, page).await
        ),
    }
}

/// The page's `#result`, parsed (or as text if it is not JSON yet).
async fn page_result(driver: &mut impl Driver, page: &str) -> Value {
    let text = driver
        .eval(page, "document.getElementById('result').textContent")
        .await
        .expect("read the result");
    serde_json::from_str(text.as_str().unwrap_or_default()).unwrap_or(text)
}

/// Serves the app over TLS (ALPN `h2`, then `http/1.1`) on 127.0.0.1 with
/// extended CONNECT enabled; returns the address. The accept loop ends with
/// the runtime.
async fn serve_tls(layer: StickyUpgradeLayer) -> std::net::SocketAddr {
    serve_tls_on(layer, "127.0.0.1:0").await
}

/// [`serve_tls`] on `bind`; the certificate names 127.0.0.1 and ::1.
async fn serve_tls_on(layer: StickyUpgradeLayer, bind: &str) -> std::net::SocketAddr {
    let cert = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned(), "::1".to_owned()])
        .expect("self-signed certificate");
    let key = rustls::pki_types::PrivatePkcs8KeyDer::from(cert.signing_key.serialize_der());
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut tls = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_no_client_auth()
        .with_single_cert(vec![cert.cert.der().clone()], key.into())
        .expect("TLS certificate");
    tls.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));

    let app = Router::new()
        .route("/", get(|| async { Html(PAGE) }))
        .route("/ws", any(ws))
        .layer(layer);
    let listener = tokio::net::TcpListener::bind(bind)
        .await
        .unwrap_or_else(|e| panic!("bind {bind}: {e}"));
    let addr = listener.local_addr().expect("local addr");
    tokio::spawn(async move {
        loop {
            // An accept error ends the loop (and the test then fails on its
            // page timeout) rather than spinning on it.
            let Ok((tcp, _)) = listener.accept().await else {
                break;
            };
            let (acceptor, app) = (acceptor.clone(), app.clone());
            tokio::spawn(async move {
                let Ok(stream) = acceptor.accept(tcp).await else {
                    return;
                };
                let mut builder = auto::Builder::new(TokioExecutor::new());
                builder.http2().enable_connect_protocol();
                let _ = builder
                    .serve_connection_with_upgrades(
                        TokioIo::new(stream),
                        TowerToHyperService::new(app),
                    )
                    .await;
            });
        }
    });
    addr
}

/// The WebSocket route: a welcome naming the request's version and method
/// and the layer's decision, then nothing until the client closes or the
/// drain reaches the socket (close code 1001).
async fn ws(
    upgrade: WebSocketUpgrade,
    Extension(session): Extension<StickySession>,
    method: Method,
    version: Version,
) -> impl IntoResponse {
    let version = match version {
        Version::HTTP_11 => "HTTP/1.1",
        Version::HTTP_2 => "HTTP/2",
        _ => "other",
    };
    let welcome = json!({
        "version": version,
        "method": method.as_str(),
        "affinity": session.affinity().as_str(),
        "session": session.id().as_str(),
    })
    .to_string();
    let guard = session.guard();
    upgrade.on_upgrade(move |socket| serve_socket(socket, welcome, guard))
}

async fn serve_socket(mut socket: WebSocket, welcome: String, guard: DrainGuard) {
    if socket.send(Message::text(welcome)).await.is_err() {
        return;
    }
    tokio::select! {
        () = guard.closing() => {
            let close = CloseFrame { code: 1001, reason: "going away".into() };
            if socket.send(Message::Close(Some(close))).await.is_ok() {
                // The browser's answer ends the close handshake.
                let _ = tokio::time::timeout(CLOSE_HANDSHAKE_TIMEOUT, socket.recv()).await;
            }
        }
        _ = socket.recv() => {
            // The client closed or went away (the page sends no messages):
            // reading on sends the library's answer to a close frame.
            let _ = tokio::time::timeout(CLOSE_HANDSHAKE_TIMEOUT, socket.recv()).await;
        }
    }
    // `guard` drops here: the drain counts the socket until it is closed.
}
