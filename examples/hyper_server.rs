//! The WebSocket echo server of `server.rs` (without its demo page, pings and
//! signing), on plain hyper 1 + hyper-util + tokio-tungstenite instead of
//! axum: the layer is a tower layer, so any tower-based stack gets affinity
//! and draining the same way.
//!
//! Run with
//!
//! ```sh
//! cargo run --example hyper_server -- --listen 127.0.0.1:3000 --node node-1 --insecure
//! ```
//!
//! It speaks HTTP/1.1 and HTTP/2 (h2c, prior knowledge) on one port; WebSockets
//! work over both: the RFC 6455 `Upgrade` handshake, answered `101`, and the
//! RFC 8441 extended CONNECT, answered `200`. The affinity cookie is set on
//! either answer by the layer.
//!
//! - `GET /ws`: welcome JSON `{"affinity":…,"node":…,"session":…}` (plus
//!   `"from"` when migrated), then echo of messages up to 64 KiB; close code
//!   `1001` when drained. A client that does not take a whole message within
//!   10 s is dropped.
//! - `GET /ws-health`: `200 ok`, or `503 draining`.
//!
//! A client gets `--header-read-timeout` (30 s, hyper's default, which needs
//! the timer set here) to send its first request, HTTP/1 or HTTP/2, and each
//! later HTTP/1 request head. hyper also counts an idle keep-alive
//! connection's wait for its next request against it: behind a balancer that
//! reuses connections, set it above the balancer's idle timeout (ALB's
//! `idle_timeout`), or the balancer may send a request on a connection this
//! server is closing.
//!
//! On SIGTERM or Ctrl-C: the [`Drain`] starts (health `503`, new upgrades
//! `503` + `Retry-After`, sockets closed over the spread after the close
//! delay), the process waits for the sockets and the close delay, or for the
//! drain timeout, then
//! hyper-util's `GracefulShutdown` lets the remaining HTTP connections finish,
//! and it exits with status 0. A second signal exits at once (status 1).

use std::convert::Infallible;
use std::io::Write as _;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use http::{header, HeaderMap, HeaderValue, Method, Request, Response, StatusCode, Version};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;
use tower::ServiceBuilder;
use tower_sticky_upgrade::{
    Drain, DrainGuard, DrainOutcome, HealthService, StickySession, StickyUpgradeLayer,
};

/// How long a socket waits for the client's answer to our close frame.
const CLOSE_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long HTTP connections get to finish once the sockets are drained.
const HTTP_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a send may wait for the client to take the whole message: a
/// client that sends but never reads would otherwise hold its task, and the
/// drain's close frame, for ever.
const SEND_TIMEOUT: Duration = Duration::from_secs(10);
/// The largest message (and frame) the echo takes, instead of tungstenite's
/// 64 MiB: a larger one ends the socket.
const MAX_MESSAGE: usize = 64 << 10;
/// The largest value of a flag in seconds: a day.
const MAX_SECONDS: f64 = 86_400.0;

const USAGE: &str = "\
usage: hyper_server [OPTIONS]

  --listen ADDR          address to bind (default 127.0.0.1:3000; port 0 picks one)
  --node NAME            node id carried in the cookie (default node-1)
  --cookie-name NAME     affinity cookie name (default WS_SESSION_ID)
  --close-delay SECS     wait after the drain starts before closing any socket, so
                         the balancer sees the failing health check first (default 0)
  --close-spread SECS    window over which open sockets are closed when draining (default 10)
  --drain-timeout SECS   longest wait for sockets to close before exiting (default 25)
  --retry-after SECS     Retry-After of upgrades refused while draining (default 5)
  --header-read-timeout SECS
                         longest wait for a connection's first request and for each
                         HTTP/1 request head, idle keep-alive included: keep it above
                         the load balancer's idle timeout (default 30)
  --insecure             omit the Secure cookie attribute
  -h, --help             print this help

Every SECS is at most 86400 (a day); fractions are allowed (0.5).
";

struct Options {
    listen: String,
    node: String,
    cookie_name: String,
    close_delay: Duration,
    close_spread: Duration,
    drain_timeout: Duration,
    retry_after: Duration,
    header_read_timeout: Duration,
    insecure: bool,
}

fn parse_args(args: impl IntoIterator<Item = String>) -> Result<Option<Options>, String> {
    let mut opts = Options {
        listen: "127.0.0.1:3000".to_owned(),
        node: "node-1".to_owned(),
        cookie_name: tower_sticky_upgrade::DEFAULT_COOKIE_NAME.to_owned(),
        close_delay: Duration::ZERO,
        close_spread: Duration::from_secs(10),
        // With the 2 s for plain HTTP after it, the exit comes before
        // Kubernetes' default 30 s grace period runs out.
        drain_timeout: Duration::from_secs(25),
        retry_after: Duration::from_secs(5),
        header_read_timeout: Duration::from_secs(30),
        insecure: false,
    };
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f.to_owned(), Some(v.to_owned())),
            _ => (arg, None),
        };
        let mut value = || {
            inline
                .clone()
                .or_else(|| args.next())
                .ok_or_else(|| format!("{flag} needs a value"))
        };
        match flag.as_str() {
            "-h" | "--help" => return Ok(None),
            "--listen" => opts.listen = value()?,
            "--node" => opts.node = value()?,
            "--cookie-name" => opts.cookie_name = value()?,
            "--close-delay" => opts.close_delay = seconds(&flag, &value()?)?,
            "--close-spread" => opts.close_spread = seconds(&flag, &value()?)?,
            "--drain-timeout" => opts.drain_timeout = seconds(&flag, &value()?)?,
            "--retry-after" => opts.retry_after = seconds(&flag, &value()?)?,
            "--header-read-timeout" => {
                opts.header_read_timeout = seconds(&flag, &value()?)?;
                if opts.header_read_timeout.is_zero() {
                    return Err(format!("{flag}: must be more than 0"));
                }
            }
            "--insecure" if inline.is_none() => opts.insecure = true,
            other => return Err(format!("unknown argument `{other}`")),
        }
    }
    Ok(Some(opts))
}

/// Seconds from 0 to [`MAX_SECONDS`], fractions allowed (`0.5`).
fn seconds(flag: &str, value: &str) -> Result<Duration, String> {
    value
        .parse::<f64>()
        .ok()
        .filter(|s| *s <= MAX_SECONDS)
        .and_then(|s| Duration::try_from_secs_f64(s).ok())
        .ok_or_else(|| {
            format!("{flag}: `{value}` is not a number of seconds from 0 to {MAX_SECONDS} (e.g. 10 or 0.5)")
        })
}

fn main() -> ExitCode {
    let opts = match parse_args(std::env::args().skip(1)) {
        Ok(Some(opts)) => opts,
        Ok(None) => {
            print!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("hyper_server: {e}\nrun `hyper_server --help` for the options");
            return ExitCode::from(2);
        }
    };
    let needed = opts
        .close_delay
        .saturating_add(opts.close_spread)
        .saturating_add(CLOSE_HANDSHAKE_TIMEOUT);
    if needed >= opts.drain_timeout {
        eprintln!(
            "hyper_server: warning: --close-delay + --close-spread + {CLOSE_HANDSHAKE_TIMEOUT:?} \
             for a close handshake is {needed:?}, not below --drain-timeout {:?}: the last sockets \
             may be cut without a close frame",
            opts.drain_timeout
        );
    }
    let drain = Drain::builder()
        .close_delay(opts.close_delay)
        .close_spread(opts.close_spread)
        .build();
    let layer = StickyUpgradeLayer::builder()
        .node_id(opts.node.as_str())
        .cookie_name(opts.cookie_name.as_str())
        .secure(!opts.insecure)
        .retry_after(opts.retry_after)
        .drain(drain.clone())
        .build();
    let layer = match layer {
        Ok(layer) => layer,
        Err(e) => {
            eprintln!("hyper_server: invalid configuration: {e}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("hyper_server: cannot start the tokio runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let code = runtime.block_on(run(opts, layer, drain));
    // Sockets still open after the drain deadline are cut here.
    runtime.shutdown_timeout(Duration::from_millis(100));
    code
}

async fn run(opts: Options, layer: StickyUpgradeLayer, drain: Drain) -> ExitCode {
    let node: Arc<str> = opts.node.as_str().into();
    let health = drain.health_service();
    let app = {
        let node = node.clone();
        ServiceBuilder::new()
            .layer(layer)
            .service(tower::service_fn(move |req| {
                std::future::ready(route(req, &node, &health))
            }))
    };

    // Listen for signals before announcing the address, so that a SIGTERM sent
    // right after the `listening on` line is never missed.
    let mut signals = match Signals::new() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("[{node}] cannot listen for signals: {e}");
            return ExitCode::FAILURE;
        }
    };
    let listener = match tokio::net::TcpListener::bind(&opts.listen).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("[{node}] cannot listen on {}: {e}", opts.listen);
            return ExitCode::FAILURE;
        }
    };
    let addr = match listener.local_addr() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("[{node}] no local address: {e}");
            return ExitCode::FAILURE;
        }
    };
    {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "listening on http://{addr}");
        let _ = out.flush();
    }

    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder.http2().enable_connect_protocol();
    // Without a timer hyper enforces no header read timeout at all.
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(opts.header_read_timeout);
    let header_read_timeout = opts.header_read_timeout;
    let graceful = GracefulShutdown::new();
    let (stop_accepting, mut accept_stopped) = tokio::sync::oneshot::channel::<()>();
    let accept_loop = {
        let node = node.clone();
        // The loop owns the GracefulShutdown while accepting and hands it back.
        tokio::spawn(async move {
            loop {
                let (stream, _) = tokio::select! {
                    accepted = listener.accept() => match accepted {
                        Ok(conn) => conn,
                        Err(e) => {
                            // Out of file descriptors and the like: back off.
                            eprintln!("[{node}] accept failed: {e}");
                            tokio::time::sleep(Duration::from_millis(100)).await;
                            continue;
                        }
                    },
                    _ = &mut accept_stopped => break,
                };
                // Small WebSocket frames must not wait for a delayed ACK.
                let _ = stream.set_nodelay(true);
                let first_request = Arc::new(tokio::sync::Notify::new());
                let seen = first_request.clone();
                let service = tower::ServiceExt::map_request(app.clone(), move |req| {
                    seen.notify_one();
                    req
                });
                let conn = builder
                    .serve_connection_with_upgrades(
                        TokioIo::new(stream),
                        TowerToHyperService::new(service),
                    )
                    .into_owned();
                let conn = graceful.watch(conn);
                tokio::spawn(async move {
                    tokio::pin!(conn);
                    // hyper's header timer starts once the connection is
                    // known to be HTTP/1, and HTTP/2 has none: until its
                    // first request, a connection is bounded here.
                    tokio::select! {
                        _ = &mut conn => return,
                        () = first_request.notified() => {}
                        () = tokio::time::sleep(header_read_timeout) => return,
                    }
                    let _ = conn.await;
                });
            }
            graceful
        })
    };

    // Keep accepting while draining: the health check must be seen failing and
    // reconnecting clients must get 503 + Retry-After, not a refused connection.
    signals.next().await;
    drain.start();
    eprintln!(
        "[{node}] draining: {} open sockets, close delay {:?}, close spread {:?}, deadline {:?}",
        drain.active(),
        drain.close_delay(),
        drain.close_spread(),
        opts.drain_timeout
    );
    // A second signal stops waiting, and skips the wait for HTTP below.
    tokio::select! {
        outcome = drain.wait(opts.drain_timeout) => match outcome {
            DrainOutcome::Drained => eprintln!("[{node}] drained: every socket closed"),
            DrainOutcome::TimedOut { still_open } => eprintln!(
                "[{node}] drain timed out after {:?}: {still_open} sockets still open, closing them",
                opts.drain_timeout
            ),
        },
        () = signals.next() => {
            eprintln!("[{node}] second signal: exiting now with {} sockets open", drain.active());
            return ExitCode::FAILURE;
        }
    }

    // Stop accepting, then let HTTP connections finish: hyper-util's
    // GracefulShutdown closes idle keep-alive connections and waits for
    // requests in flight (HTTP/1.1 sockets left it when they upgraded).
    let _ = stop_accepting.send(());
    match accept_loop.await {
        Ok(graceful) => tokio::select! {
            stopped = tokio::time::timeout(HTTP_SHUTDOWN_TIMEOUT, graceful.shutdown()) => {
                if stopped.is_err() {
                    eprintln!(
                        "[{node}] HTTP connections still open after {HTTP_SHUTDOWN_TIMEOUT:?}; exiting"
                    );
                }
            }
            () = signals.next() => {
                eprintln!("[{node}] another signal: exiting now");
                return ExitCode::FAILURE;
            }
        },
        Err(e) => eprintln!("[{node}] accept loop failed: {e}"),
    }
    eprintln!("[{node}] bye");
    ExitCode::SUCCESS
}

/// SIGTERM or Ctrl-C (SIGINT), as a stream.
struct Signals {
    #[cfg(unix)]
    term: tokio::signal::unix::Signal,
    #[cfg(unix)]
    int: tokio::signal::unix::Signal,
}

impl Signals {
    /// On Unix, registers the handlers now, so that a signal arriving before
    /// `next` is first awaited is still delivered to it. Elsewhere, Ctrl-C is
    /// listened for only while `next` is awaited.
    fn new() -> std::io::Result<Self> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            Ok(Self {
                term: signal(SignalKind::terminate())?,
                int: signal(SignalKind::interrupt())?,
            })
        }
        #[cfg(not(unix))]
        Ok(Self {})
    }

    async fn next(&mut self) {
        #[cfg(unix)]
        tokio::select! {
            _ = self.term.recv() => {}
            _ = self.int.recv() => {}
        }
        #[cfg(not(unix))]
        let _ = tokio::signal::ctrl_c().await;
    }
}

fn route(
    req: Request<Incoming>,
    node: &Arc<str>,
    health: &HealthService,
) -> Result<Response<String>, Infallible> {
    Ok(match req.uri().path() {
        "/ws" => websocket(req, node.clone()),
        "/ws-health" => health.response(),
        _ => text(StatusCode::NOT_FOUND, "not found"),
    })
}

fn text(status: StatusCode, body: &str) -> Response<String> {
    let mut res = Response::new(body.to_owned());
    *res.status_mut() = status;
    res
}

/// Checks the WebSocket handshake (RFC 6455 over HTTP/1.1, RFC 8441 over
/// HTTP/2), answers it, and serves the socket in a task once hyper hands it over.
fn websocket(mut req: Request<Incoming>, node: Arc<str>) -> Response<String> {
    let headers = req.headers();
    if headers.get(header::SEC_WEBSOCKET_VERSION) != Some(&HeaderValue::from_static("13")) {
        let mut res = text(StatusCode::UPGRADE_REQUIRED, "WebSocket version 13 only");
        res.headers_mut().insert(
            header::SEC_WEBSOCKET_VERSION,
            HeaderValue::from_static("13"),
        );
        return res;
    }
    let res = if req.version() == Version::HTTP_2 {
        let protocol = req.extensions().get::<hyper::ext::Protocol>();
        let websocket = protocol.is_some_and(|p| p.as_str().eq_ignore_ascii_case("websocket"));
        if req.method() != Method::CONNECT || !websocket {
            return text(
                StatusCode::BAD_REQUEST,
                "expected an extended CONNECT for websocket",
            );
        }
        // RFC 8441: a 2xx accepts; there is no key to answer.
        Response::new(String::new())
    } else {
        let Some(key) = websocket_key(req.method(), headers) else {
            return text(StatusCode::BAD_REQUEST, "not a WebSocket handshake");
        };
        let mut res = text(StatusCode::SWITCHING_PROTOCOLS, "");
        let h = res.headers_mut();
        h.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        h.insert(header::SEC_WEBSOCKET_ACCEPT, key);
        res
    };

    // The layer tags every upgrade it lets through; without a session it
    // judged this no upgrade, and the socket could not be drained anyway.
    let Some(session) = req.extensions().get::<StickySession>().cloned() else {
        return text(StatusCode::BAD_REQUEST, "not a WebSocket upgrade");
    };
    // Count the socket from now on, so a drain never misses one mid-upgrade.
    let guard = session.guard();
    let on_upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        match on_upgrade.await {
            Ok(upgraded) => {
                let config = WebSocketConfig::default()
                    .max_message_size(Some(MAX_MESSAGE))
                    .max_frame_size(Some(MAX_MESSAGE));
                let io = TokioIo::new(upgraded);
                let ws = WebSocketStream::from_raw_socket(io, Role::Server, Some(config)).await;
                serve_socket(ws, session, guard, &node).await;
            }
            Err(e) => eprintln!("[{node}] upgrade failed: {e}"),
        }
    });
    res
}

/// `Sec-WebSocket-Accept` for a valid HTTP/1.1 handshake: GET,
/// `Connection: upgrade`, `Upgrade: websocket` and a 16-byte base64 key.
fn websocket_key(method: &Method, headers: &HeaderMap) -> Option<HeaderValue> {
    let has_token = |name, token: &str| {
        headers.get_all(name).iter().any(|v| {
            v.to_str()
                .is_ok_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
        })
    };
    if method != Method::GET
        || !has_token(header::CONNECTION, "upgrade")
        || !has_token(header::UPGRADE, "websocket")
    {
        return None;
    }
    let key = headers.get(header::SEC_WEBSOCKET_KEY)?;
    // 16 random bytes in base64 are 24 characters ending in "==".
    if key.len() != 24 || !key.as_bytes().ends_with(b"==") {
        return None;
    }
    HeaderValue::from_str(&derive_accept_key(key.as_bytes())).ok()
}

fn welcome(node: &str, session: &StickySession) -> String {
    let mut welcome = serde_json::json!({
        "node": node,
        "session": session.id().as_str(),
        "affinity": session.affinity().as_str(),
    });
    if let Some(from) = session.affinity().migrated_from() {
        welcome["from"] = from.as_str().into();
    }
    welcome.to_string()
}

async fn serve_socket<S>(
    mut ws: WebSocketStream<S>,
    session: StickySession,
    guard: DrainGuard,
    node: &str,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let id = session.id();
    eprintln!("[{node}] socket open: session {id} {}", session.affinity());
    if !send(&mut ws, Message::text(welcome(node, &session))).await {
        return;
    }
    // Made once, outside the loop: re-made for every message it would still
    // resolve at the same instant, but box a new timer each time.
    let reason = {
        let closing = guard.closing();
        tokio::pin!(closing);
        loop {
            tokio::select! {
                () = &mut closing => {
                    let close = CloseFrame { code: CloseCode::Away, reason: "going away".into() };
                    // Send it and finish the close handshake, bounded: read
                    // until the client's close frame (tungstenite then ends
                    // the stream).
                    let _ = tokio::time::timeout(CLOSE_HANDSHAKE_TIMEOUT, async {
                        if ws.send(Message::Close(Some(close))).await.is_ok() {
                            while let Some(Ok(_)) = ws.next().await {}
                        }
                    })
                    .await;
                    break "drained (1001)";
                }
                msg = ws.next() => match msg {
                    Some(Ok(msg @ (Message::Text(_) | Message::Binary(_)))) => {
                        if !send(&mut ws, msg).await {
                            break "send failed or timed out";
                        }
                    }
                    // tungstenite answers pings and close frames itself, but only
                    // sends the close answer when polled again: read on (bounded)
                    // rather than drop the socket and leave the client with 1006.
                    Some(Ok(Message::Close(_))) => {
                        let _ = tokio::time::timeout(CLOSE_HANDSHAKE_TIMEOUT, ws.next()).await;
                        break "closed by client";
                    }
                    Some(Ok(_)) => {}
                    // A message over MAX_MESSAGE lands here too (tungstenite
                    // sends no 1009 for it).
                    Some(Err(_)) => break "error",
                    None => break "gone",
                },
            }
        }
    };
    eprintln!("[{node}] socket closed: session {id}: {reason}");
    drop(guard);
}

/// Sends `msg` within [`SEND_TIMEOUT`]: `false` if the socket failed or the
/// client did not take the whole message in time.
async fn send<S>(ws: &mut WebSocketStream<S>, msg: Message) -> bool
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    matches!(
        tokio::time::timeout(SEND_TIMEOUT, ws.send(msg)).await,
        Ok(Ok(()))
    )
}
