//! A WebSocket-like request and an inner service answering it, shared by the
//! measurements that compare a bare service with the layer around it: the
//! benchmarks `benches/overhead.rs` and `benches/instructions.rs`, and the
//! allocation test (`tests/alloc.rs`). Include it with
//!
//! ```ignore
//! #[path = "support/handshake_fixture.rs"]
//! mod fixture;
//! ```
//!
//! Every service here answers at once, so [`call_once`] polls with a no-op
//! waker and no runtime is needed.
#![allow(dead_code)]

use std::convert::Infallible;
use std::future::{ready, Future, Ready};
use std::pin::pin;
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};

use http::header::{CONNECTION, COOKIE, UPGRADE};
use http::{HeaderValue, Request, Response, StatusCode};
use tower::Service;
use tower_sticky_upgrade::{Refresh, StickySession, StickyUpgradeLayer, DEFAULT_COOKIE_NAME};

/// Stands in for hyper's `OnUpgrade`, which hyper puts in the extensions of
/// every upgrade request before the service sees it. With it, the extension
/// map exists before the layer inserts its `StickySession`, as in production:
/// `Extensions::insert` then boxes the session but does not allocate the map
/// (two more allocations, see `tests/alloc.rs`).
#[derive(Clone)]
pub struct OnUpgradeStandIn;

/// Cookies a browser typically sends along: analytics, preferences, CSRF.
pub const OTHER_COOKIES: &str =
    "_ga=GA1.2.1234567890.1700000000; theme=dark; lang=en-GB; csrftoken=Zm9vYmFyYmF6cXV4cXV1eA";

/// A `Cookie` line: [`OTHER_COOKIES`], then the affinity cookie with `value`
/// if there is one.
pub fn cookie_line(value: Option<&str>) -> HeaderValue {
    let line = match value {
        Some(value) => format!("{OTHER_COOKIES}; {DEFAULT_COOKIE_NAME}={value}"),
        None => OTHER_COOKIES.to_owned(),
    };
    HeaderValue::from_str(&line).expect("valid cookie line")
}

/// The layer configurations the measurements compare.
pub struct Layers {
    /// The defaults.
    pub defaults: StickyUpgradeLayer,
    /// With the node id `node-1`.
    pub nodes: StickyUpgradeLayer,
    /// With `Refresh::OnChange`: a kept cookie is not sent again.
    pub on_change: StickyUpgradeLayer,
}

impl Layers {
    pub fn new() -> Self {
        Self {
            defaults: StickyUpgradeLayer::new(),
            nodes: StickyUpgradeLayer::builder()
                .node_id("node-1")
                .build()
                .expect("valid configuration"),
            on_change: StickyUpgradeLayer::builder()
                .refresh(Refresh::OnChange)
                .build()
                .expect("valid configuration"),
        }
    }
}

/// The inner service: answers like a WebSocket handshake would, and reads the
/// session like an app would. See [`respond`].
pub fn handshake(req: Request<()>) -> Ready<Result<Response<()>, Infallible>> {
    let session = req.extensions().get::<StickySession>().map(|s| *s.id());
    std::hint::black_box(session);
    ready(Ok(respond(&req)))
}

/// `101` with `Connection`, `Upgrade` and `Sec-WebSocket-Accept` to an
/// upgrade, `200` to anything else. The accept value is the fixed one of RFC
/// 6455's example: a real server hashes the key, which costs the same with or
/// without the layer and would only blur the difference.
pub fn respond(req: &Request<()>) -> Response<()> {
    let mut res = Response::new(());
    if req.headers().contains_key(UPGRADE) {
        *res.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        let h = res.headers_mut();
        h.insert(CONNECTION, HeaderValue::from_static("upgrade"));
        h.insert(UPGRADE, HeaderValue::from_static("websocket"));
        h.insert(
            "sec-websocket-accept",
            HeaderValue::from_static("s3pPLMBiTxaQ9kYGzzhZRbK+xOo="),
        );
    }
    res
}

/// A request as a server would hand it over: `GET /api/items`, or a WebSocket
/// handshake to `/ws`. `cookie` is the whole `Cookie` line. With
/// `hyper_extension`, [`OnUpgradeStandIn`] is in its extensions (hyper puts
/// `OnUpgrade` there on upgrade requests only).
pub fn request(upgrade: bool, cookie: &HeaderValue, hyper_extension: bool) -> Request<()> {
    let mut req = Request::new(());
    *req.uri_mut() = http::Uri::from_static(if upgrade { "/ws" } else { "/api/items" });
    let h = req.headers_mut();
    h.insert("host", HeaderValue::from_static("example.com"));
    h.insert(
        "user-agent",
        HeaderValue::from_static("Mozilla/5.0 (bench)"),
    );
    h.insert(COOKIE, cookie.clone());
    if upgrade {
        h.insert(CONNECTION, HeaderValue::from_static("Upgrade"));
        h.insert(UPGRADE, HeaderValue::from_static("websocket"));
        h.insert(
            "sec-websocket-key",
            HeaderValue::from_static("dGhlIHNhbXBsZSBub25jZQ=="),
        );
        h.insert("sec-websocket-version", HeaderValue::from_static("13"));
        h.insert("origin", HeaderValue::from_static("https://example.com"));
    }
    if hyper_extension {
        req.extensions_mut().insert(OnUpgradeStandIn);
    }
    req
}

/// Fields browsers and balancers add to a request, beyond the fixture's
/// `host`, `user-agent` and `cookie`.
pub const MORE_FIELDS: [&str; 37] = [
    "accept",
    "accept-encoding",
    "accept-language",
    "cache-control",
    "pragma",
    "referer",
    "sec-ch-ua",
    "sec-ch-ua-mobile",
    "sec-ch-ua-platform",
    "sec-fetch-dest",
    "sec-fetch-mode",
    "sec-fetch-site",
    "priority",
    "x-forwarded-for",
    "x-forwarded-proto",
    "x-forwarded-port",
    "x-amzn-trace-id",
    "x-request-id",
    "dnt",
    "te",
    "traceparent",
    "tracestate",
    "baggage",
    "x-real-ip",
    "via",
    "forwarded",
    "x-forwarded-host",
    "x-b3-traceid",
    "x-b3-spanid",
    "x-b3-sampled",
    "x-correlation-id",
    "x-client-version",
    "x-csrf-token",
    "if-none-match",
    "if-modified-since",
    "authorization",
    "content-type",
];

/// Adds the first `n` of [`MORE_FIELDS`] to `req`.
pub fn add_fields(req: &mut Request<()>, n: usize) {
    assert!(
        n <= MORE_FIELDS.len(),
        "at most {} more fields",
        MORE_FIELDS.len()
    );
    for name in &MORE_FIELDS[..n] {
        req.headers_mut()
            .insert(*name, HeaderValue::from_static("a typical value"));
    }
}

/// A waker that does nothing: every future here is ready on its first poll.
/// Made once, outside any measurement (`Waker::noop` needs Rust 1.85).
pub fn noop_waker() -> Waker {
    struct Noop;
    impl Wake for Noop {
        fn wake(self: Arc<Self>) {}
    }
    Waker::from(Arc::new(Noop))
}

/// `poll_ready`, `call`, and one poll of the future.
///
/// # Panics
///
/// If the service is not ready, fails, or does not answer at once.
pub fn call_once<S>(svc: &mut S, req: Request<()>, waker: &Waker) -> Response<()>
where
    S: Service<Request<()>, Response = Response<()>>,
    S::Error: std::fmt::Debug,
{
    let mut cx = Context::from_waker(waker);
    match svc.poll_ready(&mut cx) {
        Poll::Ready(Ok(())) => {}
        _ => panic!("the services here are always ready"),
    }
    match pin!(svc.call(req)).poll(&mut cx) {
        Poll::Ready(res) => res.expect("the services here do not fail"),
        Poll::Pending => panic!("the services here answer at once"),
    }
}
