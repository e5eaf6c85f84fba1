//! A real hyper server with an RFC 6455 WebSocket handler behind
//! `StickyUpgradeLayer`, and real clients, for the integration tests
//! (`mod harness;` from a test file).
//!
//! The server listens on 127.0.0.1:0 and speaks HTTP/1.1 and HTTP/2 (prior
//! knowledge, extended CONNECT enabled). Its inner service:
//! - `/ws`: checks the WebSocket handshake itself (RFC 6455 over HTTP/1.1,
//!   RFC 8441 over HTTP/2), takes a drain guard, answers `101` (or `200`) and
//!   serves the socket: a welcome text with node, session id and affinity,
//!   then echo, and on `guard.closing()` a Close frame with code 1001;
//! - `/ws-health`: the drain's health check;
//! - anything else: `200 plain`.
//!
//! Every call of the inner service is counted and reported as an [`Event`].
#![allow(dead_code)]

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::header::{
    CONNECTION, COOKIE, HOST, SEC_WEBSOCKET_ACCEPT, SEC_WEBSOCKET_KEY, SEC_WEBSOCKET_VERSION,
    SET_COOKIE, UPGRADE,
};
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, Version};
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper::client::conn::http2::SendRequest;
use hyper::upgrade::{OnUpgrade, Upgraded};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, Semaphore};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role};
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use tower::{service_fn, ServiceBuilder};
use tower_sticky_upgrade::{DrainGuard, SessionId, StickySession, StickyUpgradeLayer};

/// The bound on any single wait in these tests: generous, so that only a hang
/// (a bug) reaches it, never a slow machine.
pub const LONG: Duration = Duration::from_secs(30);

/// Awaits `fut`, failing the test if it takes longer than [`LONG`].
pub async fn within<F: Future>(what: &str, fut: F) -> F::Output {
    match tokio::time::timeout(LONG, fut).await {
        Ok(out) => out,
        Err(_) => panic!("timed out after {LONG:?}: {what}"),
    }
}

/// What the server did, in order.
#[derive(Debug)]
pub enum Event {
    /// The inner service was called (the layer let the request through).
    Called {
        method: Method,
        path: String,
        session: Option<StickySession>,
    },
    /// A socket task was told to close and is sending Close 1001.
    CloseSent {
        id: SessionId,
        /// `DrainGuard::close_at` when the signal came.
        close_at: Option<Instant>,
    },
    /// A socket task ended and dropped its guard.
    SocketGone { id: SessionId },
}

/// How the server's socket tasks behave.
#[derive(Debug, Clone)]
pub struct Options {
    /// How long a socket task waits for the client's Close reply after sending
    /// its own before it drops the socket. `None`: until the client replies or
    /// goes away, keeping its guard (and so the drain) waiting meanwhile.
    pub close_handshake: Option<Duration>,
    /// When set, the handler of `/ws` waits for a permit of this semaphore
    /// after the `Called` event and before it looks at the handshake: a
    /// handler that is slow to answer (routing, authentication), for tests
    /// that act while an upgrade is between the layer and its `101`.
    pub gate: Option<Arc<Semaphore>>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            close_handshake: Some(Duration::from_secs(5)),
            gate: None,
        }
    }
}

struct State {
    layer: StickyUpgradeLayer,
    options: Options,
    calls: AtomicUsize,
    events: mpsc::UnboundedSender<Event>,
}

impl State {
    fn report(&self, event: Event) {
        // The test may have stopped listening; that is fine.
        let _ = self.events.send(event);
    }
}

/// A running server; stops accepting when dropped.
pub struct Node {
    pub addr: SocketAddr,
    pub layer: StickyUpgradeLayer,
    pub events: mpsc::UnboundedReceiver<Event>,
    state: Arc<State>,
    accept: JoinHandle<()>,
}

impl Drop for Node {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

impl Node {
    /// Serves `layer` around the WebSocket handler with the default options.
    pub async fn start(layer: StickyUpgradeLayer) -> Node {
        Self::start_with(layer, Options::default()).await
    }

    pub async fn start_with(layer: StickyUpgradeLayer, options: Options) -> Node {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("local addr");
        let (tx, events) = mpsc::unbounded_channel();
        let state = Arc::new(State {
            layer: layer.clone(),
            options,
            calls: AtomicUsize::new(0),
            events: tx,
        });
        let svc = {
            let state = Arc::clone(&state);
            ServiceBuilder::new()
                .layer(layer.clone())
                .service(service_fn(move |req| handle(Arc::clone(&state), req)))
        };
        let accept = tokio::spawn(async move {
            let mut builder = auto::Builder::new(TokioExecutor::new());
            builder.http2().enable_connect_protocol();
            let builder = Arc::new(builder);
            loop {
                // An accept error (out of file descriptors) ends the server:
                // the test then fails on its next connect, not in a busy loop.
                let stream = match listener.accept().await {
                    Ok((stream, _)) => stream,
                    Err(e) => {
                        eprintln!("accept failed, server stops: {e}");
                        break;
                    }
                };
                let builder = Arc::clone(&builder);
                let svc = TowerToHyperService::new(svc.clone());
                tokio::spawn(async move {
                    let _ = builder
                        .serve_connection_with_upgrades(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        Node {
            addr,
            layer,
            events,
            state,
            accept,
        }
    }

    /// How many times the inner service was called.
    pub fn calls(&self) -> usize {
        self.state.calls.load(Ordering::SeqCst)
    }

    /// `ws://ADDR/ws` as a client request, with one `Cookie` header line per
    /// entry of `cookies`.
    pub fn ws_request(&self, cookies: &[&str]) -> tungstenite::handshake::client::Request {
        ws_request(self.addr, cookies)
    }

    /// The next event, waiting for it.
    pub async fn next_event(&mut self) -> Event {
        within("next server event", self.events.recv())
            .await
            .expect("the server keeps its sender")
    }

    /// The session the inner service saw on its next call.
    pub async fn next_call(&mut self) -> (String, Option<StickySession>) {
        loop {
            if let Event::Called { path, session, .. } = self.next_event().await {
                return (path, session);
            }
        }
    }

    /// Every event already reported, without waiting.
    pub fn drain_events(&mut self) -> Vec<Event> {
        let mut out = Vec::new();
        while let Ok(event) = self.events.try_recv() {
            out.push(event);
        }
        out
    }
}

fn text(status: StatusCode, body: &str) -> Response<String> {
    let mut res = Response::new(body.to_owned());
    *res.status_mut() = status;
    res
}

async fn handle(
    state: Arc<State>,
    mut req: Request<Incoming>,
) -> Result<Response<String>, Infallible> {
    state.calls.fetch_add(1, Ordering::SeqCst);
    let session = req.extensions().get::<StickySession>().cloned();
    state.report(Event::Called {
        method: req.method().clone(),
        path: req.uri().path().to_owned(),
        session: session.clone(),
    });
    match req.uri().path() {
        "/ws" => {
            if let Some(gate) = &state.options.gate {
                // Closed only if the test dropped the semaphore: carry on.
                let _ = within("the test to open the gate", gate.acquire()).await;
            }
        }
        "/ws-health" => return Ok(state.layer.drain().health_service().response()),
        _ => return Ok(text(StatusCode::OK, "plain")),
    }

    // The answer to the handshake: 101 (or 200 to extended CONNECT), or a refusal.
    let res = if req.method() == Method::CONNECT {
        answer_extended_connect(&req)
    } else {
        answer_rfc6455(req.method(), req.headers())
    };
    if !matches!(
        res.status(),
        StatusCode::SWITCHING_PROTOCOLS | StatusCode::OK
    ) {
        return Ok(res);
    }
    let Some(session) = session else {
        return Ok(text(
            StatusCode::INTERNAL_SERVER_ERROR,
            "upgrade without a StickySession: is the layer missing?",
        ));
    };
    // Taken before answering, so the socket counts in `Drain::active` by the
    // time the client sees the handshake succeed.
    let guard = session.guard();
    let on_upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(serve_upgraded(on_upgrade, session, guard, state));
    Ok(res)
}

/// RFC 6455 §4.2.1: `101` to a valid opening handshake, else the refusal.
fn answer_rfc6455(method: &Method, headers: &HeaderMap) -> Response<String> {
    let has_token = |name, token: &str| {
        headers.get_all(name).iter().any(|v| {
            v.to_str()
                .unwrap_or("")
                .split(',')
                .any(|t| t.trim().eq_ignore_ascii_case(token))
        })
    };
    if method != Method::GET
        || !has_token(CONNECTION, "upgrade")
        || !has_token(UPGRADE, "websocket")
    {
        return text(StatusCode::BAD_REQUEST, "not a websocket handshake");
    }
    if headers.get(SEC_WEBSOCKET_VERSION).map(|v| v.as_bytes()) != Some(b"13") {
        let mut res = text(StatusCode::UPGRADE_REQUIRED, "websocket version 13 only");
        res.headers_mut()
            .insert(SEC_WEBSOCKET_VERSION, HeaderValue::from_static("13"));
        return res;
    }
    let Some(key) = headers
        .get(SEC_WEBSOCKET_KEY)
        .filter(|k| is_nonce(k.as_bytes()))
    else {
        return text(StatusCode::BAD_REQUEST, "bad Sec-WebSocket-Key");
    };
    let accept = derive_accept_key(key.as_bytes());
    let mut res = text(StatusCode::SWITCHING_PROTOCOLS, "");
    let headers = res.headers_mut();
    headers.insert(CONNECTION, HeaderValue::from_static("upgrade"));
    headers.insert(UPGRADE, HeaderValue::from_static("websocket"));
    headers.insert(
        SEC_WEBSOCKET_ACCEPT,
        HeaderValue::from_str(&accept).expect("base64 is a header value"),
    );
    res
}

/// A base64-encoded 16-byte value: 22 alphabet characters and `==`.
fn is_nonce(key: &[u8]) -> bool {
    key.len() == 24
        && key.ends_with(b"==")
        && key[..22]
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/')
}

/// RFC 8441 §4-5: `200` to extended CONNECT with `:protocol websocket` and
/// version 13, else the refusal.
fn answer_extended_connect(req: &Request<Incoming>) -> Response<String> {
    let websocket = req
        .extensions()
        .get::<hyper::ext::Protocol>()
        .is_some_and(|p| p.as_str().eq_ignore_ascii_case("websocket"));
    if !websocket {
        return text(StatusCode::BAD_REQUEST, "not a websocket CONNECT");
    }
    if req
        .headers()
        .get(SEC_WEBSOCKET_VERSION)
        .map(|v| v.as_bytes())
        != Some(b"13")
    {
        return text(StatusCode::BAD_REQUEST, "websocket version 13 only");
    }
    text(StatusCode::OK, "")
}

async fn serve_upgraded(
    on_upgrade: OnUpgrade,
    session: StickySession,
    guard: DrainGuard,
    state: Arc<State>,
) {
    let Ok(upgraded) = on_upgrade.await else {
        return;
    };
    let ws = WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, None).await;
    serve_socket(ws, session, guard, &state).await;
}

/// The welcome text: `{"node":..,"session":..,"affinity":..,"from":..}`.
pub fn welcome_text(session: &StickySession) -> String {
    let quoted = |s: Option<&str>| s.map_or("null".to_owned(), |s| format!("\"{s}\""));
    format!(
        r#"{{"node":{},"session":"{}","affinity":"{}","from":{}}}"#,
        quoted(session.node().map(|n| n.as_str())),
        session.id(),
        session.affinity(),
        quoted(session.affinity().migrated_from().map(|n| n.as_str())),
    )
}

async fn serve_socket<S>(
    mut ws: WebSocketStream<S>,
    session: StickySession,
    guard: DrainGuard,
    state: &State,
) where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let id = *session.id();
    if ws
        .send(Message::text(welcome_text(&session)))
        .await
        .is_err()
    {
        return;
    }
    loop {
        tokio::select! {
            () = guard.closing() => {
                state.report(Event::CloseSent { id, close_at: guard.close_at() });
                let close = CloseFrame { code: CloseCode::Away, reason: "draining".into() };
                if ws.send(Message::Close(Some(close))).await.is_ok() {
                    // The close handshake: wait for the client's Close.
                    let reply = async {
                        while let Some(Ok(msg)) = ws.next().await {
                            if msg.is_close() {
                                break;
                            }
                        }
                    };
                    match state.options.close_handshake {
                        Some(limit) => { let _ = tokio::time::timeout(limit, reply).await; }
                        None => reply.await,
                    }
                }
                break;
            }
            msg = ws.next() => match msg {
                Some(Ok(msg @ (Message::Text(_) | Message::Binary(_)))) => {
                    if ws.send(msg).await.is_err() {
                        break;
                    }
                }
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => break,
                Some(Ok(_)) => {}
            },
        }
    }
    drop(guard);
    state.report(Event::SocketGone { id });
}

// ---------------------------------------------------------------- clients

/// A tokio-tungstenite client socket.
pub type Client = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// The handshake response a tokio-tungstenite client saw.
pub type HandshakeResponse = tungstenite::handshake::client::Response;

/// `ws://ADDR/ws`, with one `Cookie` header line per entry of `cookies`.
pub fn ws_request(addr: SocketAddr, cookies: &[&str]) -> tungstenite::handshake::client::Request {
    let mut req = format!("ws://{addr}/ws")
        .into_client_request()
        .expect("valid ws url");
    for cookie in cookies {
        req.headers_mut().append(
            COOKIE,
            HeaderValue::from_str(cookie).expect("cookie header"),
        );
    }
    req
}

/// Opens a WebSocket; the handshake must succeed.
pub async fn connect(req: tungstenite::handshake::client::Request) -> (Client, HandshakeResponse) {
    within("websocket handshake", tokio_tungstenite::connect_async(req))
        .await
        .expect("websocket handshake accepted")
}

/// Attempts a WebSocket handshake that must be refused; the refusal.
pub async fn refused(req: tungstenite::handshake::client::Request) -> HandshakeResponse {
    match within("websocket handshake", tokio_tungstenite::connect_async(req)).await {
        Err(tungstenite::Error::Http(res)) => *res,
        Err(e) => panic!("expected an HTTP refusal, got {e}"),
        Ok((_, res)) => panic!("expected a refusal, got {}", res.status()),
    }
}

/// The decoded welcome text of a socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Welcome {
    pub node: Option<String>,
    pub session: String,
    pub affinity: String,
    pub from: Option<String>,
}

impl Welcome {
    pub fn parse(text: &str) -> Welcome {
        // Only ever parses `welcome_text`: string or null values, no escapes.
        let field = |name: &str| -> Option<String> {
            let start = text.find(&format!("\"{name}\":"))? + name.len() + 3;
            let rest = &text[start..];
            let rest = rest.strip_prefix('"')?;
            Some(rest[..rest.find('"')?].to_owned())
        };
        Welcome {
            node: field("node"),
            session: field("session").expect("session in welcome"),
            affinity: field("affinity").expect("affinity in welcome"),
            from: field("from"),
        }
    }
}

/// Reads the welcome message, the first message every socket gets.
pub async fn welcome<S>(ws: &mut WebSocketStream<S>) -> Welcome
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let msg = within("welcome message", ws.next())
        .await
        .expect("socket open")
        .expect("welcome message");
    Welcome::parse(msg.to_text().expect("welcome is text"))
}

/// Sends `text` and expects it back.
pub async fn echo<S>(ws: &mut WebSocketStream<S>, text: &str)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    ws.send(Message::text(text.to_owned())).await.expect("send");
    let back = within("echo", ws.next())
        .await
        .expect("socket open")
        .expect("echo");
    assert_eq!(back.to_text().expect("text echo"), text);
}

/// Reads until the server's Close frame and returns it (`None` if the stream
/// ended without one). Data messages before it are skipped.
pub async fn next_close<S>(ws: &mut WebSocketStream<S>) -> Option<CloseFrame>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    loop {
        match ws.next().await {
            Some(Ok(Message::Close(frame))) => return frame,
            Some(Ok(_)) => {}
            Some(Err(_)) | None => return None,
        }
    }
}

/// The `Set-Cookie` line for cookie `name`, if exactly one was sent.
pub fn set_cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    let prefix = format!("{name}=");
    let mut lines = headers
        .get_all(SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .filter(|v| v.starts_with(&prefix));
    let line = lines.next()?;
    assert!(lines.next().is_none(), "two Set-Cookie lines for {name}");
    Some(line)
}

/// `NAME=VALUE` of a `Set-Cookie` line: what a browser sends back.
pub fn cookie_pair(set_cookie: &str) -> &str {
    set_cookie.split(';').next().expect("split yields one item")
}

/// The value of a `Set-Cookie` line.
pub fn cookie_value(set_cookie: &str) -> &str {
    let pair = cookie_pair(set_cookie);
    &pair[pair.find('=').expect("NAME=VALUE") + 1..]
}

/// A plain HTTP/1.1 request with hyper's client; the response with its body.
pub async fn http1(addr: SocketAddr, req: Request<()>) -> Response<Bytes> {
    within("http/1.1 request", async {
        let stream = TcpStream::connect(addr).await.expect("connect");
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .expect("http1 handshake");
        tokio::spawn(conn.with_upgrades());
        let (mut parts, ()) = req.into_parts();
        parts
            .headers
            .entry(HOST)
            .or_insert_with(|| HeaderValue::from_str(&addr.to_string()).expect("host"));
        let req = Request::from_parts(parts, Empty::<Bytes>::new());
        let res = sender.send_request(req).await.expect("response");
        let (parts, body) = res.into_parts();
        let body = body.collect().await.expect("body").to_bytes();
        Response::from_parts(parts, body)
    })
    .await
}

/// `GET path` over HTTP/1.1.
pub async fn get(addr: SocketAddr, path: &str) -> Response<Bytes> {
    http1(addr, Request::get(path).body(()).expect("request")).await
}

// ------------------------------------------------------- HTTP/2 clients

/// An HTTP/2 (prior knowledge) connection to `addr` that knows the server
/// allows extended CONNECT, and the response to the `GET get_path` it sent to
/// learn that.
pub async fn h2_handshake(
    addr: SocketAddr,
    get_path: &str,
) -> (SendRequest<Empty<Bytes>>, Response<Incoming>) {
    within("h2 handshake", async {
        let stream = TcpStream::connect(addr).await.expect("connect");
        let (mut sender, mut conn) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
                .await
                .expect("h2 handshake");
        // The server's SETTINGS (with ENABLE_CONNECT_PROTOCOL) precede any
        // response on the connection, so after one response the client knows.
        let get = Request::get(format!("http://{addr}{get_path}"))
            .version(Version::HTTP_2)
            .body(Empty::new())
            .expect("request");
        let res = tokio::select! {
            res = sender.send_request(get) => res.expect("response"),
            end = &mut conn => panic!("h2 connection ended: {end:?}"),
        };
        assert_eq!(res.version(), Version::HTTP_2);
        assert!(conn.is_extended_connect_protocol_enabled());
        tokio::spawn(conn);
        (sender, res)
    })
    .await
}

/// `CONNECT path` with `:protocol websocket` (RFC 8441), the given
/// `sec-websocket-version`, and one `cookie` field per entry of `cookies`.
pub fn extended_connect(
    addr: SocketAddr,
    path: &str,
    version: &str,
    cookies: &[&str],
) -> Request<Empty<Bytes>> {
    let mut req = Request::builder()
        .method(Method::CONNECT)
        .uri(format!("http://{addr}{path}"))
        .version(Version::HTTP_2)
        .header(SEC_WEBSOCKET_VERSION, version);
    for cookie in cookies {
        req = req.header(COOKIE, *cookie);
    }
    let mut req = req.body(Empty::new()).expect("request");
    req.extensions_mut()
        .insert(hyper::ext::Protocol::from_static("websocket"));
    req
}

/// Sends a request on an HTTP/2 connection.
pub async fn h2_send(
    sender: &mut SendRequest<Empty<Bytes>>,
    req: Request<Empty<Bytes>>,
) -> Response<Incoming> {
    within("h2 request", sender.send_request(req))
        .await
        .expect("response")
}

/// The client WebSocket on the stream of a `200` to extended CONNECT.
pub async fn h2_websocket(res: Response<Incoming>) -> WebSocketStream<TokioIo<Upgraded>> {
    let upgraded = within("h2 upgrade", hyper::upgrade::on(res))
        .await
        .expect("upgraded stream");
    WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Client, None).await
}

// ------------------------------------------------------- raw TCP clients

/// A client speaking bytes, to do what well-behaved clients will not: ignore a
/// Close frame. Completes the RFC 6455 handshake, then returns the socket.
pub async fn raw_upgrade(addr: SocketAddr) -> TcpStream {
    within("raw websocket handshake", async {
        let mut stream = TcpStream::connect(addr).await.expect("connect");
        let req = format!(
            "GET /ws HTTP/1.1\r\nHost: {addr}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
             Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
        );
        stream
            .write_all(req.as_bytes())
            .await
            .expect("write handshake");
        let head = read_head(&mut stream).await;
        assert!(head.starts_with("HTTP/1.1 101"), "{head}");
        // RFC 6455 §1.3's example key and accept value.
        assert!(
            head.to_ascii_lowercase()
                .contains("sec-websocket-accept: s3pplmbitxaq9kygzzhzrbk+xoo="),
            "{head}"
        );
        stream
    })
    .await
}

/// Reads an HTTP response head, byte by byte so nothing after it is consumed.
pub async fn read_head(stream: &mut TcpStream) -> String {
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        assert!(head.len() < 16 * 1024, "response head too long");
        let byte = stream.read_u8().await.expect("response head");
        head.push(byte);
    }
    String::from_utf8(head).expect("ASCII head")
}

/// Reads one unmasked server frame: `(opcode, payload)`.
pub async fn read_frame(stream: &mut TcpStream) -> (u8, Vec<u8>) {
    let b0 = stream.read_u8().await.expect("frame byte 0");
    let b1 = stream.read_u8().await.expect("frame byte 1");
    assert_eq!(b1 & 0x80, 0, "server frames are not masked");
    let len = match b1 & 0x7f {
        126 => u64::from(stream.read_u16().await.expect("length")),
        127 => stream.read_u64().await.expect("length"),
        n => u64::from(n),
    };
    assert!(len < 1 << 20, "frame too long");
    let mut payload = vec![0; len as usize];
    stream.read_exact(&mut payload).await.expect("payload");
    (b0 & 0x0f, payload)
}
