//! Contract tests for the example programs: `examples/server.rs` (axum),
//! `examples/hyper_server.rs` and `examples/probe.rs`, run as real processes
//! on 127.0.0.1 port 0. Other tests (HAProxy, browser) and the deploy recipes
//! rely on exactly what is checked here.

mod support;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use http::header::{COOKIE, RETRY_AFTER, SET_COOKIE};
use http::StatusCode;
use serde_json::Value;
use support::Server;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Bound on any single network step of a test.
const STEP: Duration = Duration::from_secs(10);

/// Opens a WebSocket to `url`, sending `cookie` (a `name=value; …` list) if given.
async fn try_connect(
    url: &str,
    cookie: Option<&str>,
) -> Result<(Ws, http::Response<Option<Vec<u8>>>), tungstenite::Error> {
    let mut req = url.into_client_request().expect("valid ws url");
    if let Some(cookie) = cookie {
        req.headers_mut()
            .insert(COOKIE, cookie.parse().expect("valid cookie header"));
    }
    timeout(STEP, tokio_tungstenite::connect_async(req))
        .await
        .expect("WebSocket handshake timed out")
}

async fn connect(url: &str, cookie: Option<&str>) -> (Ws, http::Response<Option<Vec<u8>>>) {
    try_connect(url, cookie)
        .await
        .unwrap_or_else(|e| panic!("connect {url}: {e}"))
}

/// The next data or close frame, skipping pings and pongs.
async fn next_frame(ws: &mut Ws) -> Message {
    let deadline = tokio::time::Instant::now() + STEP;
    loop {
        let msg = tokio::time::timeout_at(deadline, ws.next())
            .await
            .expect("no frame within the time limit")
            .expect("socket ended without a close frame")
            .expect("WebSocket error");
        if !matches!(msg, Message::Ping(_) | Message::Pong(_)) {
            return msg;
        }
    }
}

async fn next_text(ws: &mut Ws) -> String {
    match next_frame(ws).await {
        Message::Text(text) => text.as_str().to_owned(),
        other => panic!("expected a text frame, got {other:?}"),
    }
}

async fn welcome(ws: &mut Ws) -> Value {
    let text = next_text(ws).await;
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("welcome is not JSON ({e}): {text}"))
}

/// Closes from the client side and checks that the server answers the close
/// handshake (a close frame, then the end of the stream) instead of dropping
/// the connection, which browsers report as 1006.
async fn close_cleanly(mut ws: Ws) {
    ws.send(Message::Close(None)).await.expect("send close");
    match next_frame(&mut ws).await {
        Message::Close(_) => {}
        other => panic!("expected the server's close answer, got {other:?}"),
    }
    let end = timeout(STEP, ws.next()).await.expect("stream end");
    assert!(end.is_none(), "{end:?}");
}

/// The `Set-Cookie` field of the response that sets cookie `name`.
fn set_cookie<'a>(res: &'a http::Response<Option<Vec<u8>>>, name: &str) -> Option<&'a str> {
    let prefix = format!("{name}=");
    res.headers()
        .get_all(SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with(&prefix))
}

/// `name=value` of a `Set-Cookie` field.
fn cookie_pair(set_cookie: &str) -> &str {
    set_cookie.split(';').next().unwrap_or_default().trim()
}

/// Lower-cased attributes of a `Set-Cookie` field (`httponly`, `samesite=lax`, …).
fn attributes(set_cookie: &str) -> Vec<String> {
    set_cookie
        .split(';')
        .skip(1)
        .map(|a| a.trim().to_ascii_lowercase())
        .collect()
}

/// A plain HTTP/1.1 GET; returns status, head (lower-cased) and body.
async fn http_get(addr: std::net::SocketAddr, path: &str) -> (u16, String, String) {
    let exchange = async {
        let mut stream = TcpStream::connect(addr).await?;
        let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
        stream.write_all(req.as_bytes()).await?;
        let mut buf = Vec::new();
        stream.read_to_end(&mut buf).await?;
        Ok::<_, std::io::Error>(buf)
    };
    let buf = timeout(STEP, exchange)
        .await
        .expect("HTTP request timed out")
        .unwrap_or_else(|e| panic!("GET {path}: {e}"));
    let text = String::from_utf8_lossy(&buf);
    let (head, body) = text.split_once("\r\n\r\n").expect("HTTP response head");
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status code");
    (status, head.to_ascii_lowercase(), body.to_owned())
}

/// A WebSocket handshake but for `Connection: notupgrade`, which names no
/// upgrade token (axum's `WebSocketUpgrade` matches a substring and accepts it).
const LOOK_ALIKE_UPGRADE: [&str; 4] = [
    "Connection: notupgrade",
    "Upgrade: websocket",
    "Sec-WebSocket-Version: 13",
    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
];

/// Sends `GET /ws` with `fields` (each `Name: value`) and `Connection:
/// close` last; returns the whole answer, lower-cased.
async fn raw_ws_get(addr: std::net::SocketAddr, fields: &[&str]) -> String {
    let exchange = async {
        let mut stream = TcpStream::connect(addr).await?;
        let fields: String = fields.iter().map(|f| format!("{f}\r\n")).collect();
        let req = format!("GET /ws HTTP/1.1\r\nHost: {addr}\r\n{fields}Connection: close\r\n\r\n");
        stream.write_all(req.as_bytes()).await?;
        let mut buf = Vec::new();
        stream.read_to_end(&mut buf).await?;
        Ok::<_, std::io::Error>(String::from_utf8_lossy(&buf).to_ascii_lowercase())
    };
    timeout(STEP, exchange)
        .await
        .expect("timed out")
        .expect("io")
}

/// Sends [`LOOK_ALIKE_UPGRADE`]: the answer must be a 400 without a cookie,
/// never a 5xx.
async fn assert_look_alike_upgrade_is_a_400(addr: std::net::SocketAddr) {
    let res = raw_ws_get(addr, &LOOK_ALIKE_UPGRADE).await;
    assert!(res.starts_with("http/1.1 400"), "{res}");
    assert!(!res.contains("set-cookie"), "{res}");
}

/// Starts `example` with `--close-delay 2` and sends it SIGTERM while idle: it
/// must answer health `503` and stay up until the delay is over, rather than
/// exit and have the balancer's next connection refused; then exit with
/// status 0.
async fn assert_idle_stays_up_for_the_close_delay(example: &str) {
    let server = Server::on_loopback(example, &["--close-delay", "2", "--drain-timeout", "20"]);
    let addr = server.addr;
    let since = Instant::now();
    server.sigterm();
    wait_for_health(addr, 503).await;
    let (status, took) = exit_status(server, Duration::from_secs(15), since).await;
    assert_eq!(status.code(), Some(0));
    // A lower bound, as the drain starts after `since`.
    assert!(
        took >= Duration::from_secs(2),
        "exited during the delay: {took:?}"
    );
}

/// Polls `/ws-health` until it answers `status`, for up to `STEP`.
async fn wait_for_health(addr: std::net::SocketAddr, status: u16) {
    let deadline = Instant::now() + STEP;
    loop {
        let (got, _, _) = http_get(addr, "/ws-health").await;
        if got == status {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "/ws-health still {got}, expected {status}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A second signal while a socket keeps the drain waiting (its close frame
/// goes unanswered) exits at once, with status 1.
async fn assert_second_signal_exits_at_once_with_status_1(example: &str) {
    let args = ["--close-spread", "0", "--drain-timeout", "60"];
    let server = Server::on_loopback(example, &args);
    let (mut ws, _) = connect(&server.ws_url(), None).await;
    welcome(&mut ws).await;
    server.sigterm();
    wait_for_health(server.addr, 503).await;
    let since = Instant::now();
    support::signal(server.child.id(), "INT");
    let (status, took) = exit_status(server, Duration::from_secs(20), since).await;
    assert_eq!(status.code(), Some(1), "{example}");
    assert!(took < Duration::from_secs(5), "{example}: {took:?}");
    drop(ws);
}

/// Messages up to 64 KiB are echoed; a larger one ends the socket
/// (tungstenite's own limit would be 64 MiB).
async fn assert_messages_over_64_kib_end_the_socket(example: &str) {
    let server = Server::on_loopback(example, &[]);
    let (mut ws, _) = connect(&server.ws_url(), None).await;
    welcome(&mut ws).await;
    let fits = "x".repeat(64 << 10);
    ws.send(Message::text(fits.clone())).await.expect("send");
    assert_eq!(next_text(&mut ws).await.len(), fits.len(), "{example}");
    ws.send(Message::text("x".repeat((64 << 10) + 1)))
        .await
        .expect("send");
    let end = timeout(STEP, ws.next()).await.expect("the socket ends");
    assert!(
        !matches!(end, Some(Ok(Message::Text(_) | Message::Binary(_)))),
        "{example}: an oversized message was answered: {end:?}"
    );
}

/// Waits (without blocking the runtime) for the process to exit.
/// Waits up to `within` for the server to exit; its status and the time since
/// `since` (taken just before the signal, so lower bounds on it hold however
/// late this thread gets to run).
async fn exit_status(
    server: Server,
    within: Duration,
    since: Instant,
) -> (std::process::ExitStatus, Duration) {
    tokio::task::spawn_blocking(move || {
        let mut server = server;
        let status = server
            .wait_exit(within)
            .unwrap_or_else(|| panic!("did not exit within {within:?}"));
        (status, since.elapsed())
    })
    .await
    .expect("waiting task")
}

/// Runs an example binary to completion with `args`; returns (code, stdout, stderr).
fn run_to_end(example: &str, args: &[&str], limit: Duration) -> (Option<i32>, String, String) {
    let bin = support::example_bin(example);
    let mut child = Command::new(&bin)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {}: {e}", bin.display()));
    let deadline = Instant::now() + limit;
    loop {
        if let Ok(Some(_)) = child.try_wait() {
            break;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            panic!("{example} {args:?} did not finish within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().expect("collect output");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

mod axum_server {
    use super::*;

    fn start(args: &[&str]) -> Server {
        Server::on_loopback("server", args)
    }

    #[tokio::test]
    async fn prints_its_bound_address_and_answers_health() {
        let server = start(&["--node", "n1"]);
        assert_ne!(server.addr.port(), 0, "the real port, not 0");
        let (status, head, body) = http_get(server.addr, "/ws-health").await;
        assert_eq!(status, 200);
        assert_eq!(body, "ok");
        assert!(head.contains("cache-control: no-store"), "{head}");
    }

    #[tokio::test]
    async fn first_connect_is_issued_with_the_cookie_on_the_101() {
        let server = start(&["--node", "n1", "--insecure"]);
        let (mut ws, res) = connect(&server.ws_url(), None).await;
        assert_eq!(res.status(), StatusCode::SWITCHING_PROTOCOLS);
        let set = set_cookie(&res, "WS_SESSION_ID").expect("Set-Cookie WS_SESSION_ID on the 101");
        let attrs = attributes(set);
        assert!(attrs.iter().any(|a| a == "httponly"), "{set}");
        assert!(attrs.iter().any(|a| a == "samesite=lax"), "{set}");
        assert!(attrs.iter().any(|a| a == "path=/"), "{set}");
        assert!(!attrs.iter().any(|a| a == "secure"), "--insecure: {set}");

        let w = welcome(&mut ws).await;
        assert_eq!(w["node"], "n1", "{w}");
        assert_eq!(w["affinity"], "issued", "{w}");
        let session = w["session"].as_str().expect("session is a string");
        assert!(!session.is_empty());
        assert!(
            cookie_pair(set).contains(session),
            "the cookie carries the session id: {set} / {session}"
        );
        assert!(w.get("from").is_none(), "{w}");
    }

    /// `Connection: notupgrade` is no upgrade token, so the layer gives no
    /// session, yet axum's `WebSocketUpgrade` takes it for one: the example
    /// answers the client's error with a 400, never a 5xx, and no socket.
    #[tokio::test]
    async fn look_alike_upgrade_is_a_400_not_a_5xx() {
        let server = start(&["--insecure"]);
        assert_look_alike_upgrade_is_a_400(server.addr).await;
    }

    #[tokio::test]
    async fn cookie_is_secure_unless_insecure() {
        let server = start(&[]);
        let (mut ws, res) = connect(&server.ws_url(), None).await;
        let set = set_cookie(&res, "WS_SESSION_ID").expect("Set-Cookie on the 101");
        assert!(attributes(set).iter().any(|a| a == "secure"), "{set}");
        // The default node name.
        assert_eq!(welcome(&mut ws).await["node"], "node-1");
    }

    #[tokio::test]
    async fn echoes_text_frames_unchanged() {
        let server = start(&["--insecure"]);
        let (mut ws, _) = connect(&server.ws_url(), None).await;
        welcome(&mut ws).await;
        for text in ["hello", "", "ünïcødé {\"json\": true}", &"x".repeat(60_000)] {
            ws.send(Message::text(text)).await.expect("send");
            assert_eq!(next_text(&mut ws).await, text);
        }
    }

    #[tokio::test]
    async fn reconnect_with_the_cookie_keeps_the_session() {
        let server = start(&["--node", "n1", "--insecure"]);
        let (mut ws, res) = connect(&server.ws_url(), None).await;
        let first = welcome(&mut ws).await;
        let pair = cookie_pair(set_cookie(&res, "WS_SESSION_ID").expect("cookie")).to_owned();
        close_cleanly(ws).await;

        // Other cookies next to it, as a browser behind a balancer sends them.
        let header = format!("lb=abc; {pair}; theme=dark");
        let (mut ws, res) = connect(&server.ws_url(), Some(&header)).await;
        let second = welcome(&mut ws).await;
        assert_eq!(second["affinity"], "kept", "{second}");
        assert_eq!(second["session"], first["session"]);
        assert_eq!(second["node"], "n1");
        // Refreshed on every upgrade, same value.
        let again = set_cookie(&res, "WS_SESSION_ID").expect("cookie refreshed");
        assert_eq!(cookie_pair(again), pair);
    }

    #[tokio::test]
    async fn cookie_from_another_node_is_migrated() {
        let a = start(&["--node", "a", "--insecure"]);
        let b = start(&["--node", "b", "--insecure"]);
        let (mut ws, res) = connect(&a.ws_url(), None).await;
        let on_a = welcome(&mut ws).await;
        let pair = cookie_pair(set_cookie(&res, "WS_SESSION_ID").expect("cookie")).to_owned();

        let (mut ws, res) = connect(&b.ws_url(), Some(&pair)).await;
        let on_b = welcome(&mut ws).await;
        assert_eq!(on_b["affinity"], "migrated", "{on_b}");
        assert_eq!(on_b["from"], "a", "{on_b}");
        assert_eq!(on_b["node"], "b");
        assert_eq!(
            on_b["session"], on_a["session"],
            "the id survives migration"
        );
        // Re-issued with b's tag: presented back to b it is kept.
        let retagged = cookie_pair(set_cookie(&res, "WS_SESSION_ID").expect("cookie")).to_owned();
        assert_ne!(retagged, pair);
        let (mut ws, _) = connect(&b.ws_url(), Some(&retagged)).await;
        assert_eq!(welcome(&mut ws).await["affinity"], "kept");
    }

    #[tokio::test]
    async fn cookie_name_flag_names_the_cookie() {
        let server = start(&["--cookie-name", "APP_WS", "--insecure"]);
        let (mut ws, res) = connect(&server.ws_url(), None).await;
        let set = set_cookie(&res, "APP_WS").expect("Set-Cookie APP_WS");
        assert!(set_cookie(&res, "WS_SESSION_ID").is_none());
        welcome(&mut ws).await;
        let (mut ws, _) = connect(&server.ws_url(), Some(cookie_pair(set))).await;
        assert_eq!(welcome(&mut ws).await["affinity"], "kept");
    }

    #[tokio::test]
    async fn demo_page_is_html_with_the_result_element() {
        let server = start(&[]);
        let (status, head, body) = http_get(server.addr, "/").await;
        assert_eq!(status, 200);
        assert!(head.contains("content-type: text/html"), "{head}");
        assert!(body.contains(r#"id="result""#), "no result element");
        assert!(body.contains("/ws"), "the page connects to /ws");
        // The automated-browser mode the browser tests rely on.
        assert!(body.contains(r#"get("auto") === "1""#));
        assert!(body.contains("results.first") && body.contains("results.second"));
        assert!(body.contains(r#"document.title = title"#));
    }

    #[tokio::test]
    async fn sigterm_drains_then_exits_zero() {
        let server = start(&[
            "--insecure",
            "--close-spread",
            "0.5",
            "--drain-timeout",
            "20",
            "--retry-after",
            "3",
        ]);
        let addr = server.addr;
        let url = server.ws_url();
        let (mut open, _) = connect(&url, None).await;
        welcome(&mut open).await;

        let since = Instant::now();
        server.sigterm();
        // The socket is still open (we have not read its close frame, so the
        // server waits for our answer): the process is alive and draining.
        wait_for_health(addr, 503).await;
        let (_, _, body) = http_get(addr, "/ws-health").await;
        assert_eq!(body, "draining");
        match try_connect(&url, None).await {
            Err(tungstenite::Error::Http(res)) => {
                assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
                assert_eq!(res.headers()[RETRY_AFTER], "3");
                assert!(set_cookie(&res, "WS_SESSION_ID").is_none());
            }
            Err(e) => panic!("expected a 503 answer, got {e}"),
            Ok(_) => panic!("upgrade accepted while draining"),
        }

        match next_frame(&mut open).await {
            Message::Close(Some(frame)) => {
                assert_eq!(frame.code, CloseCode::Away, "{frame:?}");
                assert_eq!(u16::from(frame.code), 1001);
            }
            other => panic!("expected close 1001, got {other:?}"),
        }
        // Reading on answers the close; then the stream ends.
        let end = timeout(STEP, open.next()).await.expect("stream end");
        assert!(matches!(end, None | Some(Err(_))), "{end:?}");

        let (status, took) = exit_status(server, Duration::from_secs(20), since).await;
        assert!(status.success(), "{status}");
        assert_eq!(status.code(), Some(0));
        assert!(took < Duration::from_secs(10), "exited after {took:?}");
    }

    #[tokio::test]
    async fn sigterm_when_idle_exits_zero_at_once() {
        let server = start(&["--drain-timeout", "30"]);
        let since = Instant::now();
        server.sigterm();
        let (status, took) = exit_status(server, Duration::from_secs(10), since).await;
        assert_eq!(status.code(), Some(0));
        assert!(
            took < Duration::from_secs(5),
            "no socket to wait for: {took:?}"
        );
    }

    #[tokio::test]
    async fn sigterm_when_idle_stays_up_for_the_close_delay() {
        assert_idle_stays_up_for_the_close_delay("server").await;
    }

    #[tokio::test]
    async fn drain_timeout_bounds_the_exit_when_a_client_ignores_close() {
        let server = start(&["--close-spread", "0", "--drain-timeout", "1.5"]);
        let (mut ws, _) = connect(&server.ws_url(), None).await;
        welcome(&mut ws).await;
        let since = Instant::now();
        server.sigterm();
        // Never read: the server's close frame goes unanswered.
        let (status, took) = exit_status(server, Duration::from_secs(15), since).await;
        assert_eq!(status.code(), Some(0));
        assert!(
            took >= Duration::from_millis(1400),
            "must wait for the drain timeout: {took:?}"
        );
        assert!(took < Duration::from_secs(5), "{took:?}");
        drop(ws);
    }

    #[tokio::test]
    async fn second_signal_exits_at_once_with_status_1() {
        assert_second_signal_exits_at_once_with_status_1("server").await;
    }

    #[tokio::test]
    async fn close_spread_staggers_the_close_frames() {
        let server = start(&["--close-spread", "2", "--drain-timeout", "20"]);
        let url = server.ws_url();
        // The drain spaces guards by the golden ratio: the first closes at the
        // start, the second about 0.618 × 2 s later.
        let (mut first, _) = connect(&url, None).await;
        welcome(&mut first).await;
        let (mut second, _) = connect(&url, None).await;
        welcome(&mut second).await;
        let since = Instant::now();
        server.sigterm();
        let a = next_frame(&mut first).await;
        let first_at = since.elapsed();
        let b = next_frame(&mut second).await;
        let second_at = since.elapsed();
        for frame in [&a, &b] {
            assert!(
                matches!(frame, Message::Close(Some(f)) if f.code == CloseCode::Away),
                "{frame:?}"
            );
        }
        // Slot 1 closes 1.236 s after the drain starts, which is after the
        // signal was sent: a lower bound that no scheduling delay can break.
        assert!(
            second_at >= Duration::from_millis(1200),
            "the second socket closes later in the window: {second_at:?}"
        );
        assert!(first_at < second_at, "{first_at:?} then {second_at:?}");
        drop((first, second));
        let (status, _) = exit_status(server, Duration::from_secs(20), since).await;
        assert_eq!(status.code(), Some(0));
    }

    #[tokio::test]
    async fn close_delay_fails_health_first_and_closes_after_it() {
        let server = start(&[
            "--close-delay",
            "1.5",
            "--close-spread",
            "0",
            "--drain-timeout",
            "20",
        ]);
        let addr = server.addr;
        let (mut ws, _) = connect(&server.ws_url(), None).await;
        welcome(&mut ws).await;
        let since = Instant::now();
        server.sigterm();
        // Health fails (and upgrades are refused) from the start of the drain…
        wait_for_health(addr, 503).await;
        // …while the socket is told to close only once the delay is over: a
        // lower bound, as the drain starts after `since`.
        let frame = next_frame(&mut ws).await;
        let closed_at = since.elapsed();
        assert!(
            matches!(&frame, Message::Close(Some(f)) if f.code == CloseCode::Away),
            "{frame:?}"
        );
        assert!(
            closed_at >= Duration::from_millis(1500),
            "closed during the delay: {closed_at:?}"
        );
        drop(ws);
        let (status, _) = exit_status(server, Duration::from_secs(20), since).await;
        assert_eq!(status.code(), Some(0));
    }

    /// The warning is printed exactly when delay + spread + the 5 s close
    /// handshake reach the drain timeout.
    #[tokio::test]
    async fn warns_when_the_drain_timeout_leaves_no_room_for_delay_and_spread() {
        for (timeout_secs, warns) in [("25", true), ("26", false)] {
            let args = [
                "--listen",
                "127.0.0.1:0",
                "--close-delay",
                "10",
                "--close-spread",
                "10",
                "--drain-timeout",
                timeout_secs,
            ];
            let (tx, rx) = std::sync::mpsc::channel();
            let server = Server::start_capturing("server", &args, move |mut stderr| {
                std::thread::spawn(move || {
                    let mut text = String::new();
                    let _ = std::io::Read::read_to_string(&mut stderr, &mut text);
                    let _ = tx.send(text);
                });
            });
            let since = Instant::now();
            server.sigterm();
            let (status, _) = exit_status(server, Duration::from_secs(20), since).await;
            assert_eq!(status.code(), Some(0));
            let stderr = rx
                .recv_timeout(Duration::from_secs(10))
                .expect("stderr ends with the process");
            assert_eq!(
                stderr.contains("server: warning: --close-delay + --close-spread"),
                warns,
                "--drain-timeout {timeout_secs}: {stderr}"
            );
        }
    }

    #[tokio::test]
    async fn ping_interval_sends_pings() {
        let server = start(&["--ping-interval", "0.2"]);
        // Before connecting: the server's interval starts when it sends the
        // welcome, so this lower bound holds however late the test runs.
        let started = Instant::now();
        let (mut ws, _) = connect(&server.ws_url(), None).await;
        welcome(&mut ws).await;
        let frame = timeout(STEP, ws.next())
            .await
            .expect("a ping within the time limit")
            .expect("stream open")
            .expect("ws");
        assert!(matches!(frame, Message::Ping(_)), "{frame:?}");
        assert!(
            started.elapsed() >= Duration::from_millis(200),
            "{:?}",
            started.elapsed()
        );
        // Pings are off by default: nothing but the echo arrives.
        let quiet = start(&[]);
        let (mut ws, _) = connect(&quiet.ws_url(), None).await;
        welcome(&mut ws).await;
        let nothing = timeout(Duration::from_millis(600), ws.next()).await;
        assert!(nothing.is_err(), "unexpected frame {nothing:?}");
    }

    /// A client that stops answering (here: it never reads, so it sends no
    /// pong) is dropped two to three ping intervals after its last frame,
    /// while one that reads, and so answers each ping, stays.
    #[tokio::test]
    async fn ping_interval_drops_a_client_that_answers_nothing() {
        let server = start(&["--ping-interval", "0.5"]);
        let (mut alive, _) = connect(&server.ws_url(), None).await;
        welcome(&mut alive).await;
        let (mut silent, _) = connect(&server.ws_url(), None).await;
        welcome(&mut silent).await;
        // Six intervals, reading (and so answering pings) on one socket only.
        let mut pings = 0;
        let until = tokio::time::Instant::now() + Duration::from_secs(3);
        while let Ok(frame) = tokio::time::timeout_at(until, alive.next()).await {
            match frame.expect("stream open").expect("ws") {
                Message::Ping(_) => pings += 1,
                other => panic!("unexpected frame {other:?}"),
            }
        }
        assert!(pings >= 3, "{pings} pings in 3 s at 0.5 s");
        // The silent one finds its pings, then the end: no close frame, since
        // a client that answers nothing would not read one.
        let end = timeout(STEP, async {
            loop {
                match silent.next().await {
                    Some(Ok(Message::Ping(_))) => {}
                    other => break other,
                }
            }
        })
        .await
        .expect("the silent socket ends within the time limit");
        assert!(
            !matches!(end, Some(Ok(_))),
            "expected the end of the stream, got {end:?}"
        );
        // The answering one is still served.
        alive.send(Message::text("still here")).await.expect("send");
        assert_eq!(next_text(&mut alive).await, "still here");
    }

    /// A client that sends but never reads fills the TCP buffers until the
    /// echo's send blocks. `--send-timeout` then drops it, so a drain started
    /// afterwards is over at once, instead of waiting out `--drain-timeout`
    /// for a socket whose task is stuck in a send and never sees the drain.
    #[tokio::test]
    async fn send_timeout_drops_a_client_that_never_reads() {
        let server = start(&[
            "--send-timeout",
            "0.5",
            "--close-spread",
            "0",
            "--drain-timeout",
            "30",
        ]);
        let (mut ws, _) = connect(&server.ws_url(), None).await;
        welcome(&mut ws).await;
        let chunk = vec![7u8; 60 << 10];
        let mut sent = 0;
        // Loopback buffers take some megabytes; 4,000 chunks are 240 MiB.
        let blocked = loop {
            if sent == 4_000 {
                break false;
            }
            match timeout(
                Duration::from_secs(2),
                ws.send(Message::binary(chunk.clone())),
            )
            .await
            {
                Ok(Ok(())) => sent += 1,
                // Blocked, or the server has already dropped the socket.
                Err(_) | Ok(Err(_)) => break true,
            }
        };
        assert!(blocked, "{sent} chunks sent and never blocked");
        // Past the send timeout: the socket is gone, so the drain has
        // nothing to wait for.
        tokio::time::sleep(Duration::from_secs(1)).await;
        let since = Instant::now();
        server.sigterm();
        let (status, took) = exit_status(server, Duration::from_secs(40), since).await;
        assert_eq!(status.code(), Some(0));
        assert!(
            took < Duration::from_secs(10),
            "the drain waited for the stuck socket: {took:?}"
        );
        drop(ws);
    }

    #[tokio::test]
    async fn messages_over_64_kib_end_the_socket() {
        assert_messages_over_64_kib_end_the_socket("server").await;
    }

    #[test]
    fn bad_flags_exit_with_status_2() {
        for args in [
            &["--bogus"][..],
            &["--listen"],
            &["--close-spread", "soon"],
            &["--close-delay", "-1"],
            &["--drain-timeout", "-1"],
            &["--drain-timeout", "86401"],
            &["--ping-interval", "1e19"],
            &["--send-timeout", "0"],
            &["--node", "has space"],
            &["--cookie-name", "bad;name"],
            &["--retry-after", "0"],
        ] {
            let (code, stdout, stderr) = run_to_end("server", args, Duration::from_secs(60));
            assert_eq!(code, Some(2), "{args:?}: {stderr}");
            assert!(stdout.is_empty(), "{args:?} printed {stdout}");
            assert!(stderr.starts_with("server: "), "{args:?}: {stderr}");
        }
        let (code, stdout, _) = run_to_end("server", &["--help"], Duration::from_secs(60));
        assert_eq!(code, Some(0));
        assert!(stdout.contains("--close-spread"));
        assert!(stdout.contains("--close-delay"));
        for args in [
            &["--nope"][..],
            &["--close-delay", "-1"],
            &["--drain-timeout", "1e19"],
            &["--header-read-timeout", "0"],
        ] {
            let (code, _, stderr) = run_to_end("hyper_server", args, Duration::from_secs(60));
            assert_eq!(code, Some(2), "{args:?}: {stderr}");
            assert!(stderr.starts_with("hyper_server: "), "{args:?}: {stderr}");
        }
    }

    #[cfg(feature = "signed")]
    #[tokio::test]
    async fn signing_key_rejects_cookies_signed_with_another_key() {
        const K1: &str = "0123456789abcdef0123456789abcdef-one";
        const K2: &str = "0123456789abcdef0123456789abcdef-two";
        let one = start(&["--node", "n", "--insecure", "--signing-key", K1]);
        let two = start(&["--node", "n", "--insecure", "--signing-key", K2]);
        let (mut ws, res) = connect(&one.ws_url(), None).await;
        let first = welcome(&mut ws).await;
        let pair = cookie_pair(set_cookie(&res, "WS_SESSION_ID").expect("cookie")).to_owned();

        let (mut ws, _) = connect(&one.ws_url(), Some(&pair)).await;
        assert_eq!(welcome(&mut ws).await["affinity"], "kept");
        // Same node name, other key: the signature does not verify.
        let (mut ws, _) = connect(&two.ws_url(), Some(&pair)).await;
        let other = welcome(&mut ws).await;
        assert_eq!(other["affinity"], "issued", "{other}");
        assert_ne!(other["session"], first["session"]);
    }

    /// A key read from a file (with the newline an editor or `echo` leaves)
    /// is the same key as on the command line: a cookie signed by one node
    /// verifies on the other. An unreadable file is a usage error.
    #[cfg(feature = "signed")]
    #[tokio::test]
    async fn signing_key_file_is_the_key_without_its_line_ending() {
        const KEY: &str = "0123456789abcdef0123456789abcdef-file";
        let path = std::env::temp_dir().join(format!(
            "tower-sticky-upgrade-key-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        std::fs::write(&path, format!("{KEY}\n")).expect("write the key file");
        let file = path.to_str().expect("UTF-8 temp path");
        let from_file = start(&["--node", "n", "--insecure", "--signing-key-file", file]);
        // A file saved with Windows line endings gives the same key.
        let crlf_path = path.with_extension("crlf");
        std::fs::write(&crlf_path, format!("{KEY}\r\n")).expect("write the key file");
        let crlf_file = crlf_path.to_str().expect("UTF-8 temp path");
        let from_crlf = start(&["--node", "n", "--insecure", "--signing-key-file", crlf_file]);
        std::fs::remove_file(&crlf_path).expect("remove the key file");
        let inline = start(&["--node", "n", "--insecure", "--signing-key", KEY]);
        let other = start(&[
            "--node",
            "n",
            "--insecure",
            "--signing-key",
            &format!("{KEY}\n"),
        ]);
        std::fs::remove_file(&path).expect("remove the key file");

        let (mut ws, res) = connect(&from_file.ws_url(), None).await;
        let first = welcome(&mut ws).await;
        let pair = cookie_pair(set_cookie(&res, "WS_SESSION_ID").expect("cookie")).to_owned();
        let (mut ws, _) = connect(&inline.ws_url(), Some(&pair)).await;
        let second = welcome(&mut ws).await;
        assert_eq!(second["affinity"], "kept", "{second}");
        assert_eq!(second["session"], first["session"]);
        let (mut ws, _) = connect(&from_crlf.ws_url(), Some(&pair)).await;
        let third = welcome(&mut ws).await;
        assert_eq!(third["affinity"], "kept", "{third}");
        assert_eq!(third["session"], first["session"]);
        // The newline is trimmed, not ignored by the signer: a key that keeps
        // it does not verify the cookie.
        let (mut ws, _) = connect(&other.ws_url(), Some(&pair)).await;
        assert_eq!(welcome(&mut ws).await["affinity"], "issued");

        let missing = path.with_extension("missing");
        let args = [
            "--signing-key-file",
            missing.to_str().expect("UTF-8 temp path"),
        ];
        let (code, _, stderr) = run_to_end("server", &args, Duration::from_secs(60));
        assert_eq!(code, Some(2), "{stderr}");
        assert!(
            stderr.contains("--signing-key-file: cannot read"),
            "{stderr}"
        );
    }
}

mod hyper_server {
    use super::*;

    fn start(args: &[&str]) -> Server {
        Server::on_loopback("hyper_server", args)
    }

    #[tokio::test]
    async fn welcome_cookie_echo_and_kept_over_http1() {
        let server = start(&["--node", "h1", "--insecure"]);
        let (status, _, body) = http_get(server.addr, "/ws-health").await;
        assert_eq!((status, body.as_str()), (200, "ok"));

        let (mut ws, res) = connect(&server.ws_url(), None).await;
        assert_eq!(res.status(), StatusCode::SWITCHING_PROTOCOLS);
        let set = set_cookie(&res, "WS_SESSION_ID").expect("Set-Cookie on the 101");
        let attrs = attributes(set);
        assert!(attrs.iter().any(|a| a == "httponly") && attrs.iter().any(|a| a == "samesite=lax"));
        assert!(!attrs.iter().any(|a| a == "secure"), "--insecure: {set}");
        let first = welcome(&mut ws).await;
        assert_eq!(first["node"], "h1");
        assert_eq!(first["affinity"], "issued");
        ws.send(Message::text("ping?")).await.expect("send");
        assert_eq!(next_text(&mut ws).await, "ping?");
        ws.send(Message::binary(vec![0u8, 1, 2]))
            .await
            .expect("send");
        assert_eq!(next_frame(&mut ws).await, Message::binary(vec![0u8, 1, 2]));
        close_cleanly(ws).await;

        let (mut ws, _) = connect(&server.ws_url(), Some(cookie_pair(set))).await;
        let second = welcome(&mut ws).await;
        assert_eq!(second["affinity"], "kept");
        assert_eq!(second["session"], first["session"]);
    }

    /// `Connection: notupgrade` is no upgrade token: a 400, never a 5xx.
    #[tokio::test]
    async fn look_alike_upgrade_is_a_400_not_a_5xx() {
        let server = start(&["--insecure"]);
        assert_look_alike_upgrade_is_a_400(server.addr).await;
    }

    #[tokio::test]
    async fn refused_handshake_gets_no_cookie() {
        let server = start(&["--insecure"]);
        // An upgrade without Sec-WebSocket-Key: the app refuses it.
        let fields = [
            "Connection: Upgrade",
            "Upgrade: websocket",
            "Sec-WebSocket-Version: 13",
        ];
        let res = raw_ws_get(server.addr, &fields).await;
        assert!(res.starts_with("http/1.1 400"), "{res}");
        assert!(!res.contains("set-cookie"), "{res}");
    }

    // Without the `http2` feature the layer does not see extended CONNECT.
    #[cfg(feature = "http2")]
    #[tokio::test]
    async fn extended_connect_over_http2_gets_the_cookie_on_the_200() {
        use bytes::Bytes;
        use http_body_util::{BodyExt, Empty};
        use hyper_util::rt::{TokioExecutor, TokioIo};
        use tokio_tungstenite::tungstenite::protocol::Role;

        let server = start(&["--node", "h2", "--insecure"]);
        let tcp = TcpStream::connect(server.addr).await.expect("connect");
        let (mut sender, conn) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
                .await
                .expect("h2c handshake");
        tokio::spawn(conn);

        // A plain request first: by its answer the server's SETTINGS (which
        // enable extended CONNECT) have arrived.
        let health = http::Request::get(format!("http://{}/ws-health", server.addr))
            .body(Empty::<Bytes>::new())
            .expect("request");
        let res = timeout(STEP, sender.send_request(health))
            .await
            .expect("timed out")
            .expect("GET /ws-health over h2");
        assert_eq!(res.status(), StatusCode::OK);
        assert_eq!(res.version(), http::Version::HTTP_2);
        let body = res.into_body().collect().await.expect("body").to_bytes();
        assert_eq!(&body[..], b"ok");

        let mut req = http::Request::connect(format!("http://{}/ws", server.addr))
            .header("sec-websocket-version", "13")
            .body(Empty::<Bytes>::new())
            .expect("request");
        req.extensions_mut()
            .insert(hyper::ext::Protocol::from_static("websocket"));
        let res = timeout(STEP, sender.send_request(req))
            .await
            .expect("timed out")
            .expect("extended CONNECT");
        assert_eq!(res.status(), StatusCode::OK);
        let set = res
            .headers()
            .get(SET_COOKIE)
            .and_then(|v| v.to_str().ok())
            .expect("Set-Cookie on the 200")
            .to_owned();
        assert!(set.starts_with("WS_SESSION_ID="), "{set}");
        let upgraded = timeout(STEP, hyper::upgrade::on(res))
            .await
            .expect("timed out")
            .expect("h2 stream");
        let mut ws =
            WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Client, None).await;
        let text = timeout(STEP, ws.next())
            .await
            .expect("timed out")
            .expect("welcome frame")
            .expect("ws");
        let w: Value = serde_json::from_str(text.to_text().expect("text")).expect("json");
        assert_eq!(w["node"], "h2");
        assert_eq!(w["affinity"], "issued");
        assert!(set.contains(w["session"].as_str().expect("session")));
        ws.send(Message::text("over h2")).await.expect("send");
        let echo = timeout(STEP, ws.next()).await.expect("timed out");
        assert_eq!(echo.expect("echo").expect("ws"), Message::text("over h2"));
    }

    #[tokio::test]
    async fn sigterm_sends_1001_refuses_upgrades_and_exits_zero() {
        let server = start(&[
            "--close-delay",
            "0.5",
            "--close-spread",
            "0",
            "--drain-timeout",
            "20",
            "--retry-after",
            "2",
        ]);
        let url = server.ws_url();
        let (mut open, _) = connect(&url, None).await;
        welcome(&mut open).await;
        let since = Instant::now();
        server.sigterm();
        wait_for_health(server.addr, 503).await;
        match try_connect(&url, None).await {
            Err(tungstenite::Error::Http(res)) => {
                assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
                assert_eq!(res.headers()[RETRY_AFTER], "2");
            }
            Err(e) => panic!("expected a 503 answer, got {e}"),
            Ok(_) => panic!("upgrade accepted while draining"),
        }
        match next_frame(&mut open).await {
            Message::Close(Some(frame)) => assert_eq!(frame.code, CloseCode::Away),
            other => panic!("expected close 1001, got {other:?}"),
        }
        // After the close delay: a lower bound, as the drain starts after `since`.
        let closed_at = since.elapsed();
        assert!(closed_at >= Duration::from_millis(500), "{closed_at:?}");
        let end = timeout(STEP, open.next()).await.expect("stream end");
        assert!(matches!(end, None | Some(Err(_))), "{end:?}");
        let (status, took) = exit_status(server, Duration::from_secs(20), since).await;
        assert_eq!(status.code(), Some(0));
        assert!(took < Duration::from_secs(10), "{took:?}");
    }

    #[tokio::test]
    async fn sigterm_when_idle_stays_up_for_the_close_delay() {
        assert_idle_stays_up_for_the_close_delay("hyper_server").await;
    }

    #[tokio::test]
    async fn second_signal_exits_at_once_with_status_1() {
        assert_second_signal_exits_at_once_with_status_1("hyper_server").await;
    }

    #[tokio::test]
    async fn messages_over_64_kib_end_the_socket() {
        assert_messages_over_64_kib_end_the_socket("hyper_server").await;
    }

    /// A client that never finishes its request head, or sends nothing at
    /// all (before hyper knows the protocol, its own timer is not running),
    /// is cut off after `--header-read-timeout`, not held for ever.
    #[tokio::test]
    async fn header_read_timeout_ends_a_slow_or_silent_client() {
        let server = start(&["--header-read-timeout", "0.5"]);
        for sent in [&b"GET /ws-health HTTP/1.1\r\nHost: x\r\n"[..], b""] {
            let mut stream = TcpStream::connect(server.addr).await.expect("connect");
            let since = Instant::now();
            stream.write_all(sent).await.expect("write");
            let mut buf = Vec::new();
            timeout(STEP, stream.read_to_end(&mut buf))
                .await
                .expect("the connection ends within the time limit")
                .expect("read");
            let took = since.elapsed();
            assert!(took >= Duration::from_millis(400), "{took:?}");
            let answer = String::from_utf8_lossy(&buf);
            assert!(!answer.contains("200 OK"), "{answer}");
        }
    }

    /// HTTP/2 has no header read timeout in hyper. A client that stops
    /// inside the connection preface, or completes it and its SETTINGS and
    /// then sends no request, is cut off by the first-request bound after
    /// `--header-read-timeout` all the same.
    #[tokio::test]
    async fn header_read_timeout_ends_an_http2_client_that_sends_no_request() {
        const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
        // An empty SETTINGS frame: length 0, type 4, no flags, stream 0.
        const SETTINGS: &[u8] = &[0, 0, 0, 4, 0, 0, 0, 0, 0];
        let server = start(&["--header-read-timeout", "0.5"]);
        let partial = &PREFACE[..16];
        let whole = [PREFACE, SETTINGS].concat();
        for sent in [partial, &whole[..]] {
            let mut stream = TcpStream::connect(server.addr).await.expect("connect");
            let since = Instant::now();
            stream.write_all(sent).await.expect("write");
            let mut buf = Vec::new();
            timeout(STEP, stream.read_to_end(&mut buf))
                .await
                .unwrap_or_else(|_| panic!("{sent:?}: still open after {STEP:?}"))
                .expect("read");
            let took = since.elapsed();
            assert!(took >= Duration::from_millis(400), "{sent:?}: {took:?}");
            if sent.len() > PREFACE.len() {
                // Served as HTTP/2: the server's SETTINGS came first.
                assert_eq!(buf.get(3), Some(&4), "{buf:?}");
            }
        }

        // A real HTTP/2 client: the handshake completes, no request follows.
        let tcp = TcpStream::connect(server.addr).await.expect("connect");
        let since = Instant::now();
        let (_sender, conn) =
            hyper::client::conn::http2::handshake::<_, _, http_body_util::Empty<bytes::Bytes>>(
                hyper_util::rt::TokioExecutor::new(),
                hyper_util::rt::TokioIo::new(tcp),
            )
            .await
            .expect("h2c handshake");
        // The connection's future ends when the server closes the socket.
        let _ = timeout(STEP, conn)
            .await
            .expect("the idle HTTP/2 connection ends within the time limit");
        let took = since.elapsed();
        assert!(took >= Duration::from_millis(400), "{took:?}");
    }
}

mod probe {
    use super::*;
    use std::net::SocketAddr;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    /// Runs the probe with `args` off the async runtime.
    async fn probe(args: Vec<String>) -> (Option<i32>, String, String) {
        tokio::task::spawn_blocking(move || {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            run_to_end("probe", &args, Duration::from_secs(120))
        })
        .await
        .expect("probe task")
    }

    /// Table rows: lines that start with a right-aligned connection number.
    fn rows(stdout: &str) -> Vec<&str> {
        stdout
            .lines()
            .filter(|l| {
                l.split_whitespace()
                    .next()
                    .is_some_and(|n| n.parse::<usize>().is_ok())
            })
            .collect()
    }

    /// A load balancer without stickiness: each TCP connection goes to the
    /// next backend in turn. Dropped with the returned task.
    async fn round_robin(backends: Vec<SocketAddr>) -> (SocketAddr, tokio::task::JoinHandle<()>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind proxy");
        let addr = listener.local_addr().expect("proxy addr");
        let next = Arc::new(AtomicUsize::new(0));
        let task = tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                let backend = backends[next.fetch_add(1, Ordering::Relaxed) % backends.len()];
                tokio::spawn(async move {
                    if let Ok(mut server) = TcpStream::connect(backend).await {
                        let _ = timeout(
                            Duration::from_secs(30),
                            tokio::io::copy_bidirectional(&mut client, &mut server),
                        )
                        .await;
                    }
                });
            }
        });
        (addr, task)
    }

    #[tokio::test]
    async fn full_stickiness_against_one_server_exits_zero() {
        let server = Server::on_loopback("server", &["--node", "solo"]);
        let args = vec![
            server.ws_url(),
            "-n".into(),
            "8".into(),
            "--min-sticky".into(),
            "100".into(),
        ];
        let (code, stdout, stderr) = probe(args).await;
        assert_eq!(code, Some(0), "{stdout}\n{stderr}");
        let rows = rows(&stdout);
        assert_eq!(rows.len(), 8, "{stdout}");
        assert!(
            rows[0].contains("solo") && rows[0].contains("issued"),
            "{}",
            rows[0]
        );
        assert!(
            rows[1..]
                .iter()
                .all(|r| r.contains("solo") && r.contains("kept")),
            "{stdout}"
        );
        assert!(
            stdout.contains("stickiness: 100.0% (7 of 7 reconnections on node solo"),
            "{stdout}"
        );
        assert!(stdout.contains("OK: stickiness"), "{stdout}");
        // The cookie is `Secure` (no `--insecure`), which browsers keep over
        // ws:// from a loopback host: no warning.
        assert!(!stdout.contains("warning"), "{stdout}");
    }

    #[tokio::test]
    async fn round_robin_without_stickiness_fails_min_sticky() {
        let a = Server::on_loopback("server", &["--node", "a", "--insecure"]);
        let b = Server::on_loopback("server", &["--node", "b", "--insecure"]);
        let (proxy, task) = round_robin(vec![a.addr, b.addr]).await;
        let args = vec![format!("ws://{proxy}/ws"), "-n".into(), "6".into()];
        let (code, stdout, stderr) = probe(args).await;
        task.abort();
        assert_eq!(code, Some(1), "{stdout}\n{stderr}");
        let rows = rows(&stdout);
        assert_eq!(rows.len(), 6, "{stdout}");
        // a, b, a, b, …: every reconnection migrates, and only those back on a count.
        assert!(
            rows[0].contains(" a ") && rows[0].contains("issued"),
            "{stdout}"
        );
        assert!(
            rows[1].contains(" b ") && rows[1].contains("migrated from a"),
            "{stdout}"
        );
        assert!(
            rows[2].contains(" a ") && rows[2].contains("migrated from b"),
            "{stdout}"
        );
        assert!(stdout.contains("stickiness: 40.0% (2 of 5"), "{stdout}");
        assert!(stdout.contains("same session: 100.0% (5 of 5)"), "{stdout}");
        assert!(stdout.contains("FAIL: stickiness 40.0%"), "{stdout}");
    }

    #[tokio::test]
    async fn lower_min_sticky_passes_the_same_routing() {
        let a = Server::on_loopback("server", &["--node", "a"]);
        let b = Server::on_loopback("server", &["--node", "b"]);
        let (proxy, task) = round_robin(vec![a.addr, b.addr]).await;
        let args = vec![
            format!("ws://{proxy}/ws"),
            "-n".into(),
            "6".into(),
            "--min-sticky".into(),
            "40".into(),
        ];
        let (code, stdout, stderr) = probe(args).await;
        task.abort();
        assert_eq!(code, Some(0), "{stdout}\n{stderr}");
    }

    #[tokio::test]
    async fn unreachable_server_fails_with_a_clear_error() {
        // A port that was just free: nothing listens there.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let args = vec![format!("ws://127.0.0.1:{port}/ws"), "-n".into(), "3".into()];
        let (code, stdout, stderr) = probe(args).await;
        assert_eq!(code, Some(1), "{stdout}\n{stderr}");
        assert!(stderr.contains("connection 1 failed"), "{stderr}");
        assert!(stdout.contains("error: handshake failed"), "{stdout}");
    }

    #[tokio::test]
    async fn bad_arguments_exit_2() {
        for args in [
            vec![],
            vec!["http://127.0.0.1/ws"],
            vec!["ws://127.0.0.1/ws", "-n", "1"],
            vec!["ws://127.0.0.1/ws", "--min-sticky", "150"],
            vec!["ws://127.0.0.1/ws", "--frobnicate"],
            vec!["ws://127.0.0.1/ws", "-n", "1000000000000000000"],
            vec!["ws://127.0.0.1/ws", "--timeout", "1e19"],
        ] {
            let (code, _, stderr) = probe(args.iter().map(|s| s.to_string()).collect()).await;
            assert_eq!(code, Some(2), "{args:?}: {stderr}");
            assert!(stderr.starts_with("probe: "), "{stderr}");
        }
    }
}
