//! A WebSocket echo server with session affinity and graceful draining, on axum.
//!
//! Run with
//!
//! ```sh
//! cargo run --example server
//! # then open http://127.0.0.1:3000/ (or connect to ws://127.0.0.1:3000/ws);
//! # over plain http:// from another host: --listen 0.0.0.0:3000 --insecure
//! ```
//!
//! Three nodes behind HAProxy: see `deploy/README.md`.
//!
//! - `GET /ws`: WebSocket. The first frame is a JSON welcome,
//!   `{"affinity":"issued","node":"node-1","session":"…"}` (`"kept"`, or
//!   `"migrated"` with `"from":"node-2"`; serde_json writes the keys sorted);
//!   every later text or binary frame, up to 64 KiB, is echoed back. When
//!   draining reaches this socket it gets close code `1001`. A client that
//!   does not take a whole message within `--send-timeout`, or with
//!   `--ping-interval` answers nothing for two to three intervals, is
//!   dropped.
//! - `GET /ws-health`: `200 ok` while serving, `503 draining` while draining.
//! - `GET /`: a demo page; `/?auto=1` connects, reconnects once, and writes
//!   `{"first":WELCOME,"second":WELCOME}` into `<pre id="result">`.
//!
//! On SIGTERM or Ctrl-C the server drains: the health check turns `503`, new
//! upgrades get `503` + `Retry-After`, open sockets are closed over the close
//! spread once the close delay is over, and the process exits (status 0) when
//! the last socket is gone and the close delay is over, or when the drain
//! timeout passes. The listener stays
//! open while draining so that the load balancer sees the failing health check
//! and clients see `Retry-After`. A second signal exits at once (status 1).
//!
//! `axum::serve` sets no limit on how long a client may take to send its
//! request head; behind a load balancer that is the balancer's job, and
//! `examples/hyper_server.rs` shows hyper's `header_read_timeout`.

use std::io::Write as _;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Router};
use tower_sticky_upgrade::{Drain, DrainGuard, DrainOutcome, StickySession, StickyUpgradeLayer};

/// How long a socket waits for the client's answer to our close frame.
const CLOSE_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long plain HTTP connections get to finish once the sockets are drained.
const HTTP_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(2);
/// The largest message (and frame) the echo takes, instead of tungstenite's
/// 64 MiB: a larger one ends the socket.
const MAX_MESSAGE: usize = 64 << 10;
/// The largest value of a flag in seconds: a day.
const MAX_SECONDS: f64 = 86_400.0;

const USAGE: &str = "\
usage: server [OPTIONS]

  --listen ADDR          address to bind (default 127.0.0.1:3000; port 0 picks one)
  --node NAME            node id carried in the cookie (default node-1; A-Z a-z 0-9 - _)
  --cookie-name NAME     affinity cookie name (default WS_SESSION_ID)
  --close-delay SECS     wait after the drain starts before closing any socket, so
                         the balancer sees the failing health check first (default 0)
  --close-spread SECS    window over which open sockets are closed when draining (default 10)
  --drain-timeout SECS   longest wait for sockets to close before exiting (default 25)
  --retry-after SECS     Retry-After of upgrades refused while draining (default 5)
  --ping-interval SECS   send a ping this often, 0 = never (default 0); keep it
                         below the load balancer's idle timeout; a client that
                         sends nothing, not even a pong, for two to three intervals
                         is dropped
  --send-timeout SECS    drop a client that does not take a whole message within this
                         long (default 10)
  --insecure             omit the Secure cookie attribute (plain http:// in browsers)
  --signing-key-file PATH
                         sign cookie values with the key in PATH (feature `signed`;
                         >= 32 bytes, one trailing LF or CRLF ignored); repeat to rotate:
                         the first key given signs, all verify
  --signing-key KEY      the same with the key itself, which `ps` shows to anyone on
                         the host: for trying it out, use a file in production
  -h, --help             print this help

Every SECS is at most 86400 (a day); fractions are allowed (0.5).
";

#[derive(Debug)]
struct Options {
    listen: String,
    node: String,
    cookie_name: String,
    close_delay: Duration,
    close_spread: Duration,
    drain_timeout: Duration,
    retry_after: Duration,
    ping_interval: Duration,
    send_timeout: Duration,
    insecure: bool,
    signing_keys: Vec<String>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:3000".to_owned(),
            node: "node-1".to_owned(),
            cookie_name: tower_sticky_upgrade::DEFAULT_COOKIE_NAME.to_owned(),
            close_delay: Duration::ZERO,
            close_spread: Duration::from_secs(10),
            // With the 2 s for plain HTTP after it, the exit comes before
            // Kubernetes' default 30 s grace period runs out.
            drain_timeout: Duration::from_secs(25),
            retry_after: Duration::from_secs(5),
            ping_interval: Duration::ZERO,
            send_timeout: Duration::from_secs(10),
            insecure: false,
            signing_keys: Vec::new(),
        }
    }
}

enum Parsed {
    Run(Options),
    Help,
}

fn parse_args(args: impl IntoIterator<Item = String>) -> Result<Parsed, String> {
    let mut opts = Options::default();
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        // Accept both `--flag value` and `--flag=value`.
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f.to_owned(), Some(v.to_owned())),
            _ => (arg, None),
        };
        let mut value = |name: &str| -> Result<String, String> {
            inline
                .clone()
                .or_else(|| args.next())
                .ok_or_else(|| format!("{name} needs a value"))
        };
        match flag.as_str() {
            "-h" | "--help" => return Ok(Parsed::Help),
            "--listen" => opts.listen = value("--listen")?,
            "--node" => opts.node = value("--node")?,
            "--cookie-name" => opts.cookie_name = value("--cookie-name")?,
            "--close-delay" => {
                opts.close_delay = seconds("--close-delay", &value("--close-delay")?)?
            }
            "--close-spread" => {
                opts.close_spread = seconds("--close-spread", &value("--close-spread")?)?
            }
            "--drain-timeout" => {
                opts.drain_timeout = seconds("--drain-timeout", &value("--drain-timeout")?)?
            }
            "--retry-after" => {
                opts.retry_after = seconds("--retry-after", &value("--retry-after")?)?
            }
            "--ping-interval" => {
                opts.ping_interval = seconds("--ping-interval", &value("--ping-interval")?)?
            }
            "--send-timeout" => {
                opts.send_timeout = seconds("--send-timeout", &value("--send-timeout")?)?;
                if opts.send_timeout.is_zero() {
                    return Err("--send-timeout: must be more than 0".to_owned());
                }
            }
            "--insecure" if inline.is_none() => opts.insecure = true,
            "--signing-key" if cfg!(feature = "signed") => {
                opts.signing_keys.push(value("--signing-key")?);
            }
            "--signing-key-file" if cfg!(feature = "signed") => {
                opts.signing_keys
                    .push(key_file(&value("--signing-key-file")?)?);
            }
            "--signing-key" | "--signing-key-file" => {
                return Err(format!(
                    "{flag} needs the `signed` feature: \
                     cargo run --example server --features signed -- …"
                ))
            }
            other => return Err(format!("unknown argument `{other}`")),
        }
    }
    Ok(Parsed::Run(opts))
}

/// A signing key from a file (a mounted secret, say), so that it is not on
/// the command line for `ps` to show; one trailing newline (`\n` or `\r\n`) is
/// not part of it.
fn key_file(path: &str) -> Result<String, String> {
    let key = std::fs::read_to_string(path)
        .map_err(|e| format!("--signing-key-file: cannot read `{path}`: {e}"))?;
    let key = key
        .strip_suffix("\r\n")
        .or_else(|| key.strip_suffix('\n'))
        .unwrap_or(&key);
    Ok(key.to_owned())
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

fn build_layer(opts: &Options, drain: Drain) -> Result<StickyUpgradeLayer, String> {
    let builder = StickyUpgradeLayer::builder()
        .node_id(opts.node.as_str())
        .cookie_name(opts.cookie_name.as_str())
        .secure(!opts.insecure)
        .retry_after(opts.retry_after)
        .drain(drain);
    #[cfg(feature = "signed")]
    let builder = if opts.signing_keys.is_empty() {
        builder
    } else {
        builder.signing_keys(&opts.signing_keys)
    };
    builder.build().map_err(|e| e.to_string())
}

#[derive(Debug)]
struct AppState {
    node: String,
    ping_interval: Duration,
    send_timeout: Duration,
}

fn main() -> ExitCode {
    let opts = match parse_args(std::env::args().skip(1)) {
        Ok(Parsed::Run(opts)) => opts,
        Ok(Parsed::Help) => {
            print!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("server: {e}\nrun `server --help` for the options");
            return ExitCode::from(2);
        }
    };
    let needed = opts
        .close_delay
        .saturating_add(opts.close_spread)
        .saturating_add(CLOSE_HANDSHAKE_TIMEOUT);
    if needed >= opts.drain_timeout {
        eprintln!(
            "server: warning: --close-delay + --close-spread + {CLOSE_HANDSHAKE_TIMEOUT:?} \
             for a close handshake is {needed:?}, not below --drain-timeout {:?}: the last \
             sockets may be cut without a close frame",
            opts.drain_timeout
        );
    }
    let drain = Drain::builder()
        .close_delay(opts.close_delay)
        .close_spread(opts.close_spread)
        .build();
    let layer = match build_layer(&opts, drain.clone()) {
        Ok(layer) => layer,
        Err(e) => {
            eprintln!("server: invalid configuration: {e}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("server: cannot start the tokio runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let code = runtime.block_on(run(opts, layer, drain));
    // Sockets still open after the drain deadline are cut here, without waiting.
    runtime.shutdown_timeout(Duration::from_millis(100));
    code
}

async fn run(opts: Options, layer: StickyUpgradeLayer, drain: Drain) -> ExitCode {
    let node = opts.node.clone();
    let state = Arc::new(AppState {
        node: opts.node.clone(),
        ping_interval: opts.ping_interval,
        send_timeout: opts.send_timeout,
    });
    let app = Router::new()
        .route("/", get(page))
        .route("/ws", get(ws))
        .route_service("/ws-health", drain.health_service())
        .with_state(state)
        .layer(layer.clone());

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

    let (stop_http, http_stopped) = tokio::sync::oneshot::channel::<()>();
    // Small WebSocket frames (the welcome, echoes, the 1001 close) must not
    // wait for the peer's delayed ACK (Nagle's algorithm).
    let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
        let _ = tcp.set_nodelay(true);
    });
    let server = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                let _ = http_stopped.await;
            })
            .await
    });

    signals.next().await;
    drain.start();
    eprintln!(
        "[{node}] draining: {} open sockets, close delay {:?}, close spread {:?}, deadline {:?}",
        drain.active(),
        drain.close_delay(),
        drain.close_spread(),
        opts.drain_timeout
    );
    // Keep accepting while draining: health checks must see the 503, and
    // reconnecting clients must get 503 + Retry-After rather than a refused
    // connection. A second signal stops waiting, and skips the wait for
    // plain HTTP below: the operator asked to exit now.
    let mut code = tokio::select! {
        outcome = drain.wait(opts.drain_timeout) => {
            match outcome {
                DrainOutcome::Drained => eprintln!("[{node}] drained: every socket closed"),
                DrainOutcome::TimedOut { still_open } => eprintln!(
                    "[{node}] drain timed out after {:?}: {still_open} sockets still open, closing them",
                    opts.drain_timeout
                ),
            }
            ExitCode::SUCCESS
        }
        () = signals.next() => {
            eprintln!("[{node}] second signal: exiting now with {} sockets open", drain.active());
            ExitCode::FAILURE
        }
    };

    if code == ExitCode::SUCCESS {
        // axum does not track upgraded connections (those are counted by the
        // drain), so this only waits for plain HTTP requests in flight; a
        // further signal cuts the wait short.
        let _ = stop_http.send(());
        tokio::select! {
            stopped = tokio::time::timeout(HTTP_SHUTDOWN_TIMEOUT, server) => match stopped {
                Ok(Ok(Ok(()))) => {}
                Ok(Ok(Err(e))) => eprintln!("[{node}] server error: {e}"),
                Ok(Err(e)) => eprintln!("[{node}] server task failed: {e}"),
                Err(_) => eprintln!(
                    "[{node}] HTTP connections still open after {HTTP_SHUTDOWN_TIMEOUT:?}; exiting"
                ),
            },
            () = signals.next() => {
                eprintln!("[{node}] another signal: exiting now");
                code = ExitCode::FAILURE;
            }
        }
    }
    // What the layer decided, for the operator's log (and the tests).
    let stats = layer.stats();
    eprintln!(
        "[{node}] upgrades: {} issued, {} kept, {} migrated, {} refused while draining",
        stats.issued, stats.kept, stats.migrated, stats.refused_draining
    );
    eprintln!("[{node}] bye");
    code
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

async fn ws(
    upgrade: WebSocketUpgrade,
    State(state): State<Arc<AppState>>,
    session: Option<Extension<StickySession>>,
) -> Response {
    // The layer tags every upgrade it lets through. Without a session it
    // judged this no upgrade (axum's check is looser: it takes `Connection:
    // notupgrade`), and the socket could not be drained: the client's error.
    let Some(Extension(session)) = session else {
        return (StatusCode::BAD_REQUEST, "not a WebSocket upgrade").into_response();
    };
    // Counted before the 101 goes out, so a drain that starts now still waits
    // for (and closes) this socket.
    let guard = session.guard();
    upgrade
        .max_message_size(MAX_MESSAGE)
        .max_frame_size(MAX_MESSAGE)
        .on_upgrade(move |socket| serve_socket(socket, session, guard, state))
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

async fn serve_socket(
    mut socket: WebSocket,
    session: StickySession,
    guard: DrainGuard,
    state: Arc<AppState>,
) {
    let node = &state.node;
    let id = session.id();
    eprintln!(
        "[{node}] socket open: session {id} {}",
        match session.affinity().migrated_from() {
            Some(from) => format!("migrated from {from}"),
            None => session.affinity().to_string(),
        }
    );
    let limit = state.send_timeout;
    if !send(
        &mut socket,
        Message::Text(welcome(node, &session).into()),
        limit,
    )
    .await
    {
        return;
    }
    let mut ping = (!state.ping_interval.is_zero()).then(|| {
        let start = tokio::time::Instant::now() + state.ping_interval;
        tokio::time::interval_at(start, state.ping_interval)
    });
    // When the client last sent anything (a pong included).
    let mut heard = tokio::time::Instant::now();
    // Made once, outside the loop: re-made for every message it would still
    // resolve at the same instant, but box a new timer each time.
    let reason = {
        let closing = guard.closing();
        tokio::pin!(closing);
        loop {
            tokio::select! {
                // In this order: a frame that is waiting (a pong, say) is read
                // before the ping timer judges the client.
                biased;
                () = &mut closing => {
                    let close = CloseFrame { code: 1001, reason: "going away".into() };
                    // Send it and finish the close handshake, bounded: wait
                    // for the client's close frame, ignoring anything sent
                    // before it.
                    let _ = tokio::time::timeout(CLOSE_HANDSHAKE_TIMEOUT, async {
                        if socket.send(Message::Close(Some(close))).await.is_ok() {
                            while let Some(Ok(msg)) = socket.recv().await {
                                if matches!(msg, Message::Close(_)) {
                                    break;
                                }
                            }
                        }
                    })
                    .await;
                    break "drained (1001)";
                }
                msg = socket.recv() => match msg {
                    Some(Ok(msg @ (Message::Text(_) | Message::Binary(_)))) => {
                        if !send(&mut socket, msg, limit).await {
                            break "send failed or timed out";
                        }
                        // It sent a message and took our answer.
                        heard = tokio::time::Instant::now();
                    }
                    // Pings are answered by the library; pongs need nothing.
                    Some(Ok(Message::Ping(_) | Message::Pong(_))) => {
                        heard = tokio::time::Instant::now();
                    }
                    Some(Ok(Message::Close(_))) => {
                        // The library has queued our answer to the close; reading
                        // on sends it, then reports the end of the stream.
                        // Dropping the socket now would leave the client with 1006.
                        let _ = tokio::time::timeout(CLOSE_HANDSHAKE_TIMEOUT, socket.recv()).await;
                        break "closed by client";
                    }
                    // A message over MAX_MESSAGE lands here too (tungstenite
                    // sends no 1009 for it).
                    Some(Err(_)) => break "error",
                    None => break "gone",
                },
                () = next_tick(ping.as_mut()) => {
                    // Nothing for two intervals, not even the pong to the last
                    // ping: the client is gone (or its network is). A ping
                    // goes out each interval, so that is two to three
                    // intervals after it went quiet.
                    if heard.elapsed() > 2 * state.ping_interval {
                        break "no answer to pings";
                    }
                    if !send(&mut socket, Message::Ping(Default::default()), limit).await {
                        break "ping failed";
                    }
                }
            }
        }
    };
    eprintln!("[{node}] socket closed: session {id}: {reason}");
    drop(guard);
}

/// Sends `msg` within `limit`: `false` if the socket failed or the client
/// did not take the whole message in time (a client that sends but never reads would
/// otherwise hold the task, and the drain's close frame, for ever).
async fn send(socket: &mut WebSocket, msg: Message, limit: Duration) -> bool {
    matches!(
        tokio::time::timeout(limit, socket.send(msg)).await,
        Ok(Ok(()))
    )
}

/// The next ping time, or never without pings.
async fn next_tick(interval: Option<&mut tokio::time::Interval>) {
    match interval {
        Some(interval) => {
            interval.tick().await;
        }
        None => std::future::pending().await,
    }
}

async fn page() -> Html<&'static str> {
    Html(PAGE)
}

const PAGE: &str = r#"<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>tower-sticky-upgrade demo</title>
<style>
  body { font: 15px/1.4 system-ui, sans-serif; margin: 2rem; max-width: 50rem; }
  dl { display: grid; grid-template-columns: 8rem 1fr; gap: .2rem 1rem; }
  dt { font-weight: 600; }
  dd { margin: 0; font-family: ui-monospace, monospace; }
  #log { background: #f4f4f4; padding: .5rem; height: 16rem; overflow: auto; font-size: 13px; }
  #result:empty { display: none; }
</style>
</head>
<body>
<h1>WebSocket session affinity</h1>
<dl>
  <dt>status</dt><dd id="status">connecting</dd>
  <dt>node</dt><dd id="node">-</dd>
  <dt>session</dt><dd id="session">-</dd>
  <dt>affinity</dt><dd id="affinity">-</dd>
</dl>
<p>
  <button id="reconnect">Reconnect</button>
  <input id="text" value="hello" aria-label="message">
  <button id="send">Send</button>
</p>
<pre id="log"></pre>
<pre id="result"></pre>
<script>
"use strict";
const url = (location.protocol === "https:" ? "wss://" : "ws://") + location.host + "/ws";
const auto = new URLSearchParams(location.search).get("auto") === "1";
const $ = (id) => document.getElementById(id);
const results = {};
let socket = null;
let retries = 0;

function log(line) {
  const el = $("log");
  el.textContent += new Date().toISOString().slice(11, 23) + " " + line + "\n";
  el.scrollTop = el.scrollHeight;
}

function finish(result, title) {
  $("result").textContent = JSON.stringify(result);
  document.title = title;
}

function connect() {
  const ws = new WebSocket(url);
  socket = ws;
  let welcomed = false;
  $("status").textContent = "connecting";
  ws.onopen = () => { $("status").textContent = "open"; log("open " + url); };
  ws.onmessage = (event) => {
    if (welcomed) { log("echo: " + event.data); return; }
    welcomed = true;
    retries = 0;
    let welcome;
    try { welcome = JSON.parse(event.data); } catch (e) {
      log("bad welcome: " + event.data);
      if (auto) finish({ error: "bad welcome: " + event.data }, "error");
      return;
    }
    $("node").textContent = welcome.node;
    $("session").textContent = welcome.session;
    $("affinity").textContent = welcome.affinity + (welcome.from ? " from " + welcome.from : "");
    log("welcome: " + event.data);
    if (!auto) return;
    if (!results.first) {
      results.first = welcome;
      ws.close(1000, "reconnect");
    } else if (!results.second) {
      results.second = welcome;
      finish(results, "done");
    }
  };
  ws.onerror = () => log("error");
  ws.onclose = (event) => {
    $("status").textContent = "closed " + event.code;
    log("closed: code " + event.code + (event.reason ? " (" + event.reason + ")" : ""));
    if (socket !== ws) return; // replaced by the reconnect button
    if (auto) {
      if (results.first && !results.second && event.code === 1000) connect();
      else if (!results.second) finish({ error: "closed with code " + event.code, partial: results }, "error");
      return;
    }
    // 1001: the node is draining; come back (the load balancer picks a live
    // node) after a short random delay so that clients do not all arrive at once.
    if ((event.code === 1001 || event.code === 1006) && retries < 5) {
      retries += 1;
      const delay = 500 + Math.random() * 1500;
      log("reconnecting in " + Math.round(delay) + " ms");
      setTimeout(connect, delay);
    }
  };
}

$("reconnect").onclick = () => {
  const old = socket;
  retries = 0;
  connect();
  if (old) old.close(1000, "reconnect");
};
$("send").onclick = () => {
  if (socket && socket.readyState === WebSocket.OPEN) { socket.send($("text").value); log("sent: " + $("text").value); }
};
connect();
</script>
</body>
</html>
"#;
