//! Session affinity and graceful draining for WebSocket servers behind load
//! balancers, as one tower layer.
//!
//! A WebSocket stays on one node once upgraded, but every reconnect is a new
//! HTTP request that the load balancer may send anywhere, so in-memory session
//! state diverges between nodes. Load balancers can pin a client to a node by
//! learning an application cookie (AWS ALB `app_cookie` stickiness, HAProxy
//! `stick store-response res.cook(..)`), or by routing on the node it names
//! (HAProxy `use-server`), but only if the backend sets that cookie on the
//! upgrade response. And since hyper stops tracking a connection once it
//! upgrades, deploys cut sockets off unless the app drains them itself.
//!
//! [`StickyUpgradeLayer`] does both jobs:
//!
//! - it detects upgrade requests: HTTP/1.1 `Connection: upgrade` with
//!   `Upgrade: websocket`, and HTTP/2 extended CONNECT (RFC 8441);
//! - it keeps the client's affinity cookie when valid, or issues a new session
//!   id, and tells the app which with a [`StickySession`] in the request
//!   extensions: [`Affinity::Issued`], [`Affinity::Kept`], or
//!   [`Affinity::Migrated`] when the cookie came from another node;
//! - it sets the cookie on the `101 Switching Protocols` response (or the `2xx`
//!   of an extended CONNECT), never on a refused handshake;
//! - it exposes draining: [`Drain::start`] refuses new upgrades with `503`, flips
//!   the [`HealthService`] to `503`, tells each open socket to close over a
//!   spread window, and [`Drain::wait`] waits until they are gone.
//!
//! Requests that are not upgrades pass through untouched: a short inlined
//! check of the field names, no allocation. The inner service's response body
//! must implement `Default`, for the layer's own `503` and `403` answers: see
//! [`StickyUpgrade`'s response body](StickyUpgrade#response-body). Those
//! answers carry a [`Refusal`] in their extensions, for a layer outside to
//! give them a body or log them.
//!
//! # Example
//!
//! ```
//! use std::convert::Infallible;
//! use http::{header, Request, Response, StatusCode};
//! use tower::{service_fn, ServiceBuilder, ServiceExt};
//! use tower_sticky_upgrade::{Affinity, StickySession, StickyUpgradeLayer};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! // Stands in for a WebSocket handler: it accepts every upgrade.
//! async fn ws(req: Request<()>) -> Result<Response<String>, Infallible> {
//!     let session = req.extensions().get::<StickySession>().cloned();
//!     let body = session.map_or("plain".to_owned(), |s| s.affinity().to_string());
//!     let mut res = Response::new(body);
//!     *res.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
//!     Ok(res)
//! }
//!
//! let layer = StickyUpgradeLayer::builder()
//!     .node_id("node-1")
//!     .build()
//!     .expect("valid configuration");
//! let svc = ServiceBuilder::new().layer(layer).service(service_fn(ws));
//!
//! let upgrade = || {
//!     Request::get("/ws")
//!         .header(header::CONNECTION, "Upgrade")
//!         .header(header::UPGRADE, "websocket")
//! };
//!
//! // First connection: no cookie, so a session is issued and the cookie set.
//! let res = svc.clone().oneshot(upgrade().body(()).unwrap()).await.unwrap();
//! assert_eq!(res.body(), "issued");
//! let set_cookie = res.headers()[header::SET_COOKIE].to_str().unwrap();
//! assert!(set_cookie.starts_with("WS_SESSION_ID="));
//! assert!(set_cookie.ends_with("; Path=/; Secure; HttpOnly; SameSite=Lax"));
//!
//! // Reconnect with the cookie: the same session is kept.
//! let cookie = set_cookie.split(';').next().unwrap();
//! let res = svc
//!     .oneshot(upgrade().header(header::COOKIE, cookie).body(()).unwrap())
//!     .await
//!     .unwrap();
//! assert_eq!(res.body(), "kept");
//! # }
//! ```
//!
//! With axum, add the layer to the router and take the session in the handler
//! (with feature `axum`, `StickySession` is an extractor itself). Take the
//! [`DrainGuard`] before answering, so the socket counts for draining from the
//! `101` on:
//!
//! ```
//! use axum::extract::ws::{CloseFrame, Message, WebSocketUpgrade};
//! use axum::response::{IntoResponse, Response};
//! use axum::{http::StatusCode, routing::get, Extension, Router};
//! use tower_sticky_upgrade::{StickySession, StickyUpgradeLayer};
//!
//! async fn ws(upgrade: WebSocketUpgrade, session: Option<Extension<StickySession>>) -> Response {
//!     // No session: the layer judged this no upgrade (axum's own check is
//!     // looser and lets `Connection: notupgrade` through): a client error.
//!     let Some(Extension(session)) = session else {
//!         return (StatusCode::BAD_REQUEST, "not a WebSocket upgrade").into_response();
//!     };
//!     let guard = session.guard();
//!     upgrade.on_upgrade(move |mut socket| async move {
//!         // Once, outside the loop: made per message, it would start a new timer each time.
//!         let closing = guard.closing();
//!         tokio::pin!(closing);
//!         loop {
//!             tokio::select! {
//!                 () = &mut closing => {
//!                     let close = CloseFrame { code: 1001, reason: "going away".into() };
//!                     let _ = socket.send(Message::Close(Some(close))).await;
//!                     break;
//!                 }
//!                 msg = socket.recv() => match msg {
//!                     Some(Ok(msg)) => { let _ = socket.send(msg).await; }
//!                     _ => break,
//!                 },
//!             }
//!         }
//!         // `guard` drops here, with the socket: it no longer counts.
//!     })
//! }
//!
//! let layer = StickyUpgradeLayer::new();
//! let drain = layer.drain().clone(); // `drain.start()` on SIGTERM
//! let app: Router = Router::new()
//!     .route("/ws", get(ws))
//!     .route_service("/ws-health", drain.health_service())
//!     .layer(layer);
//! # let _ = app;
//! ```
//!
//! # Draining on deploy
//!
//! On SIGTERM:
//!
//! 1. call [`Drain::start`]: the layer refuses new upgrades with `503` and
//!    `Retry-After` (and `Connection: close` up to HTTP/1.1), and the
//!    [`HealthService`] answers `503`;
//! 2. the load balancer sees the failing health check (or the deregistration)
//!    and stops routing new connections here;
//! 3. each [`DrainGuard::closing`] resolves at its place in the close-spread
//!    window, which opens after the [close delay](DrainBuilder::close_delay)
//!    (zero by default; set it to the time step 2 takes, so that no client is
//!    closed while the balancer still routes here); the app sends close code
//!    `1001` (going away) and the client reconnects, landing on a live node
//!    with the same session id (as [`Affinity::Migrated`] where the nodes have
//!    a [node id](StickyUpgradeBuilder::node_id), as [`Affinity::Kept`]
//!    without one);
//! 4. the process exits when [`Drain::wait`] reports that every socket is gone
//!    and the close delay is over (an idle node stays up and answers `503`
//!    until the balancer has stopped routing here), or when its deadline passes.
//!
//! With axum, in that order: the server keeps accepting while the sockets
//! drain (so the health check can fail and new upgrades get the `503`), and
//! stops only once the drain is over.
//!
//! ```no_run
//! use std::time::Duration;
//! use axum::{routing::get, Router};
//! use tower_sticky_upgrade::StickyUpgradeLayer;
//!
//! #[tokio::main]
//! async fn main() -> std::io::Result<()> {
//!     let layer = StickyUpgradeLayer::new();
//!     let drain = layer.drain().clone();
//!     let app = Router::new()
//!         .route("/", get(|| async { "a WebSocket route would go here" }))
//!         .route_service("/ws-health", drain.health_service())
//!         .layer(layer);
//!
//!     let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
//!     let (stop_http, http_stopped) = tokio::sync::oneshot::channel::<()>();
//!     let server = tokio::spawn(async move {
//!         let stopped = async move { let _ = http_stopped.await; };
//!         axum::serve(listener, app).with_graceful_shutdown(stopped).await
//!     });
//!
//!     tokio::signal::ctrl_c().await?; // SIGTERM in production
//!     drain.start();
//!     let outcome = drain.wait(Duration::from_secs(25)).await;
//!     eprintln!("drain: {outcome:?}");
//!     let _ = stop_http.send(()); // now stop plain HTTP, for at most 2 s
//!     let _ = tokio::time::timeout(Duration::from_secs(2), server).await;
//!     Ok(())
//! }
//! ```
//!
//! Choosing the numbers: keep the drain deadline below the balancer's
//! deregistration delay (AWS ALB: 300 s by default, 0 to 3600) and above the
//! close delay plus the close spread plus a close handshake; make the spread
//! long enough that the remaining nodes absorb `open sockets / spread`
//! reconnects per second; make `Retry-After` roughly the time the balancer
//! needs to notice the failing health check (interval × unhealthy threshold).
//! This assumes SIGTERM comes no later than the balancer's deregistration, as on
//! Kubernetes; Amazon ECS behind ALB sends it only after `deregistration_delay`,
//! when ALB has cut the sockets already, so start the drain from the
//! deregistration there (the repository's `deploy/README.md` says how).
//! The [README](https://crates.io/crates/tower-sticky-upgrade) shows the order
//! with `axum::serve(..).with_graceful_shutdown` and hyper-util `GracefulShutdown`.
//!
//! # Cookie value and security
//!
//! The value is `ID[.NODE][.SIGNATURE]` in cookie-octets, never percent-encoded
//! (ALB does not support encoded values). It is read from every `Cookie` field
//! in one linear, allocation-free pass; the first valid pair among the first
//! 16 that carry the cookie's name wins, and later ones are not read. A value
//! longer than 130 bytes (the longest signed one), outside cookie-octets, of
//! the wrong shape, or with a bad signature is treated as absent; with no
//! valid pair, a new id is issued.
//!
//! **The id is a routing key, not a credential.** It tells the load balancer
//! where to send a reconnect and lets the app find state it keeps per session.
//! It says nothing about who the client is: authenticate the user separately
//! (the app's own session, a token in the first message) and authorize against
//! that, never against the session id.
//!
//! Threat model, for an app on `app.example.com`:
//!
//! - **Session fixation.** Without signing, a client, or an attacker who can
//!   plant a cookie in a victim's browser, can present any well-formed id (for
//!   the default generator, any lower-case UUID v4) and the layer keeps it. An
//!   attacker who fixes a victim's id can then connect with the same id; if the
//!   app keys state by the id alone, both share it. With feature `signed` and
//!   `StickyUpgradeBuilder::signing_keys`, only values a node holding the key
//!   issued are kept, so ids always come from your generator. A victim can
//!   still be handed the attacker's own valid value; bind state to the
//!   authenticated user to close that too.
//! - **Forged node tags.** Without signing, the `NODE` part is client-chosen,
//!   so [`Affinity::Migrated`] and its `from` are hints for metrics, not facts.
//!   Signing covers the tag.
//! - **Cookie tossing.** A sibling subdomain (`evil.example.com`, a user-content
//!   host, a forgotten staging host) can set a cookie with the same name for
//!   `Domain=example.com`; the browser sends it to `app.example.com` too, often
//!   before yours, and the layer keeps the first valid pair (and, past 16
//!   pairs with its name, reads no more: a flood of them gets the client a
//!   new id). With the default
//!   [`Refresh::EveryUpgrade`] it then sets that value as its own cookie on
//!   the `101`, with your attributes (host-only unless you set a `Domain`,
//!   your `Max-Age`), so the tossed id stays with the victim after the tossed
//!   cookie is gone. Browsers only store a `__Host-` cookie set by the host
//!   itself, over HTTPS, with `Secure`, `Path=/` and no `Domain`, so a sibling
//!   cannot toss one: name the cookie `__Host-…` (the builder enforces the
//!   rules that prefix needs). Signing
//!   alone narrows tossing to values your nodes issued, such as the attacker's
//!   own session; the prefix removes it. The newer `__Host-Http-` prefix adds
//!   `HttpOnly` to these rules, and browsers that know it also refuse such a
//!   cookie from a page script (an XSS).
//! - **Cross-site WebSocket hijacking.** A page elsewhere can open a WebSocket
//!   to your server and the browser may attach your cookies (same-site pages,
//!   such as sibling subdomains, always; `SameSite=None` cookies from anywhere).
//!   [`StickyUpgradeBuilder::allowed_origins`] answers `403` to upgrades from
//!   other origins before the app runs. It is a check against browsers: a
//!   non-browser client can send any `Origin`.
//! - **Replay of a stolen cookie.** Not prevented, signed or not: whoever holds
//!   a valid value can present it from anywhere for as long as the key that
//!   signed it is configured. `HttpOnly` keeps it from page scripts and `Secure`
//!   off plain HTTP (both on by default); rotate keys to retire old values.
//! - **Hostile headers.** Huge or malformed `Cookie`, `Connection` and `Upgrade`
//!   fields cost linear time and no allocation; values are bounded before they
//!   are decoded; nothing is stored per request. With signing, each of the
//!   first 16 pairs that carry the cookie's name costs one HMAC per configured
//!   key, so keep the key list short (two during a rotation).
//!
//! **What signing protects, and what it does not** (feature `signed`). The
//! signature is HMAC-SHA256 over `NAME=ID[.NODE]`, truncated to 128 bits and
//! checked in constant time: ids cannot be chosen, node tags cannot be altered,
//! and a value cannot be moved to a cookie of another name. It does not hide
//! the id (the value is readable), does not expire (there is no timestamp;
//! `Max-Age` binds the browser, not a thief), does not tie a value to a client,
//! and does not separate two apps that share a key and a cookie name (give
//! each app its own key).
//!
//! Keys: at least 32 random bytes from a CSPRNG, the same on every node, kept
//! in a secret store. To rotate, put the new key first and keep the old one
//! second: values signed with the old key are kept and re-issued signed with
//! the new one on their next upgrade (with [`Refresh::OnChange`] too). Drop the
//! old key once those cookies have been replaced or have expired, or at once if
//! it leaked (every client holding one then gets a new id once). Turning
//! signing on gives every client a new id once. Turning it off, or rolling
//! back to a deploy without it, keeps the ids: an unsigned layer reads a
//! signed value's id and node, and re-sends the value unsigned. (A signed
//! value without a node tag reads there as `ID.NODE`, its signature taken for
//! a node: where the unsigned layer has a node id, that upgrade is reported
//! once as [`Affinity::Migrated`] from that "node".)
//!
//! # Features
//!
//! - `http2` (default): detect HTTP/2 extended CONNECT (RFC 8441) through
//!   `hyper::ext::Protocol`. It compiles hyper's HTTP/2 support (`h2`); an app
//!   that serves HTTP/1.1 only can turn it off (`default-features = false`).
//!   Without it, extended CONNECT requests pass untagged (no session, no
//!   cookie, no drain count) and the first one logs a `tracing` warning; the
//!   `Origin` allow-list still applies to every HTTP/2 or HTTP/3 `CONNECT`,
//!   since the layer cannot tell a browser's WebSocket among them.
//! - `axum`: [`StickySession`] and `Option<StickySession>` are axum extractors.
//! - `signed`: HMAC-SHA256 signed values with key rotation.
#![cfg_attr(docsrs, feature(doc_cfg))]
#![deny(unsafe_code)]
#![warn(
    missing_docs,
    missing_debug_implementations,
    unreachable_pub,
    rust_2018_idioms
)]

mod affinity;
mod cookie;
pub mod drain;
mod error;
#[cfg(feature = "axum")]
mod extract;
mod find;
pub mod future;
mod health;
mod layer;
mod origin;
mod refusal;
mod service;
#[cfg(feature = "signed")]
mod signed;
mod stats;
mod upgrade;

pub use affinity::{
    Affinity, IdGenerator, InvalidNodeId, InvalidSessionId, NodeId, SessionId, StickySession,
    UuidV4,
};
pub use cookie::SameSite;
// Inlined: without it docs.rs lists the drain types at the root only as bare
// `pub use` lines, below everything else and without their summaries.
#[doc(inline)]
pub use drain::{
    Drain, DrainBuilder, DrainGuard, DrainOutcome, DEFAULT_CLOSE_SPREAD, MAX_CLOSE_DELAY,
    MAX_CLOSE_SPREAD,
};
pub use error::BuildError;
#[cfg(feature = "axum")]
#[cfg_attr(docsrs, doc(cfg(feature = "axum")))]
pub use extract::MissingStickySession;
pub use health::HealthService;
pub use layer::{
    Refresh, StickyUpgradeBuilder, StickyUpgradeLayer, DEFAULT_RETRY_AFTER, MAX_RETRY_AFTER,
};
pub use refusal::Refusal;
pub use service::StickyUpgrade;
pub use stats::Stats;

/// The default name of the affinity cookie.
///
/// ```
/// use tower_sticky_upgrade::{StickyUpgradeLayer, DEFAULT_COOKIE_NAME};
///
/// assert_eq!(DEFAULT_COOKIE_NAME, "WS_SESSION_ID");
/// assert_eq!(StickyUpgradeLayer::new().cookie_name(), DEFAULT_COOKIE_NAME);
/// ```
pub const DEFAULT_COOKIE_NAME: &str = "WS_SESSION_ID";

/// The README's Rust examples, compiled by `cargo test` so they stay correct.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
