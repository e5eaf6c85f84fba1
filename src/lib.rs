//! Session affinity and graceful draining for WebSocket servers behind load
//! balancers, as one tower layer.
//!
//! A WebSocket stays on one node once upgraded, but every reconnect is a new
//! HTTP request that the load balancer may send anywhere, so in-memory session
//! state diverges between nodes. Load balancers can pin a client to a node by
//! learning an application cookie (AWS ALB `app_cookie` stickiness, HAProxy
//! `stick store-response res.cook(..)`), but only if the backend sets that
//! cookie on the upgrade response. And since hyper stops tracking a connection
//! once it upgrades, deploys cut sockets off unless the app drains them itself.
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
//! Requests that are not upgrades pass through untouched: one header lookup,
//! no allocation.
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
//! (feature `axum`: `StickySession` is then an extractor):
//!
//! ```
//! use axum::{extract::WebSocketUpgrade, extract::ws::{Message, CloseFrame}, response::Response, routing::get, Router};
//! use tower_sticky_upgrade::{StickySession, StickyUpgradeLayer};
//!
//! async fn ws(upgrade: WebSocketUpgrade, session: Option<axum::Extension<StickySession>>) -> Response {
//!     let session = session.map(|s| s.0);
//!     upgrade.on_upgrade(move |mut socket| async move {
//!         let Some(session) = session else { return };
//!         let mut guard = session.guard();
//!         loop {
//!             tokio::select! {
//!                 _ = guard.closing() => {
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
//! 1. call [`Drain::start`]: the layer refuses new upgrades with `503`,
//!    `Retry-After` and `Connection: close`, and the [`HealthService`] answers
//!    `503`;
//! 2. the load balancer sees the failing health check (or the deregistration)
//!    and stops routing new connections here;
//! 3. each [`DrainGuard::closing`] resolves at its place in the close-spread
//!    window; the app sends close code `1001` (going away) and the client
//!    reconnects, landing on a live node with [`Affinity::Migrated`] and the same
//!    session id;
//! 4. the process exits when [`Drain::wait`] reports that every socket is gone,
//!    or when its deadline passes.
//!
//! Choosing the numbers: keep the drain deadline below the balancer's
//! deregistration delay (AWS ALB: 300 s by default, 0 to 3600) and above the
//! close spread plus a close handshake; make the spread long enough that the
//! remaining nodes absorb `open sockets / spread` reconnects per second;
//! make `Retry-After` roughly the time the balancer needs to notice the failing
//! health check (interval × unhealthy threshold). See the README for
//! `axum::serve(..).with_graceful_shutdown` and hyper-util `GracefulShutdown`.
//!
//! # Cookie value and security
//!
//! The value is `ID[.NODE][.SIGNATURE]` in cookie-octets, never percent-encoded
//! (ALB does not support encoded values). Without the `signed` feature a client
//! can choose its own session id (session fixation) or present another node's
//! tag; treat the id as a routing key, not a credential. With feature `signed`
//! and [`StickyUpgradeBuilder::signing_keys`], values are HMAC-SHA256 signed and
//! forged ones are treated as absent. Prefer a `__Host-` name: it cannot be set
//! by a sibling subdomain (cookie tossing).
//!
//! # Features
//!
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
pub mod future;
mod health;
mod layer;
mod origin;
mod service;
#[cfg(feature = "signed")]
mod signed;
mod stats;
mod upgrade;

pub use affinity::{
    Affinity, IdGenerator, InvalidSessionId, NodeId, SessionId, StickySession, UuidV4,
};
pub use cookie::SameSite;
pub use drain::{Drain, DrainGuard, DrainOutcome, DEFAULT_CLOSE_SPREAD};
pub use error::BuildError;
#[cfg(feature = "axum")]
#[cfg_attr(docsrs, doc(cfg(feature = "axum")))]
pub use extract::MissingStickySession;
pub use health::HealthService;
pub use layer::{Refresh, StickyUpgradeBuilder, StickyUpgradeLayer, DEFAULT_RETRY_AFTER};
pub use service::StickyUpgrade;
pub use stats::Stats;

/// The default name of the affinity cookie.
pub const DEFAULT_COOKIE_NAME: &str = "WS_SESSION_ID";
