//! [`Refusal`], the mark on the responses the layer makes itself.

use std::fmt;

/// Why the layer refused an upgrade: set in the extensions of every response
/// the layer makes itself, which are only ever these refusals. Its responses
/// have an empty body (the body type's [`Default`]); a later layer that finds
/// this mark can give them a body, log them or count them, and tell them
/// apart from a `403` or a `503` of the app.
///
/// - [`Refusal::Draining`]: `503 Service Unavailable` with `Retry-After`
///   (and `Connection: close` on HTTP/1), while a [`Drain`](crate::Drain)
///   runs and the layer refuses new upgrades (the default).
/// - [`Refusal::OriginNotAllowed`]: `403 Forbidden`, for an `Origin` that is
///   not in [`allowed_origins`](crate::StickyUpgradeBuilder::allowed_origins)
///   (or none, with `require_origin(true)`).
///
/// The inner service never sees a refused request. The `503 draining` of a
/// [`HealthService`](crate::HealthService) is not one of these refusals and
/// carries no mark.
///
/// # Example
///
/// A body that says why, for clients that show it:
///
/// ```
/// use http::{Request, Response};
/// use tower::{service_fn, Service, ServiceBuilder, ServiceExt};
/// use tower_sticky_upgrade::{Refusal, StickyUpgradeLayer};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let sticky = StickyUpgradeLayer::new();
/// let mut svc = ServiceBuilder::new()
///     .map_response(|mut res: Response<String>| {
///         if let Some(refusal) = res.extensions().get::<Refusal>() {
///             *res.body_mut() = format!("upgrade refused: {refusal}\n");
///         }
///         res
///     })
///     .layer(sticky.clone())
///     .service(service_fn(|_: Request<()>| async {
///         Ok::<_, std::convert::Infallible>(Response::new(String::from("hello")))
///     }));
///
/// sticky.drain().start();
/// let upgrade = Request::get("/ws")
///     .header("connection", "upgrade")
///     .header("upgrade", "websocket")
///     .body(())
///     .unwrap();
/// let res = svc.ready().await.unwrap().call(upgrade).await.unwrap();
/// assert_eq!(res.status(), 503);
/// assert_eq!(res.extensions().get(), Some(&Refusal::Draining));
/// assert_eq!(res.body(), "upgrade refused: draining\n");
///
/// // Plain requests are still served, and carry no mark.
/// let res = svc.ready().await.unwrap().call(Request::new(())).await.unwrap();
/// assert_eq!(res.extensions().get::<Refusal>(), None);
/// assert_eq!(res.body(), "hello");
/// # }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Refusal {
    /// Refused while draining: `503` with `Retry-After`.
    Draining,
    /// Refused for its `Origin` (or for having none): `403`.
    OriginNotAllowed,
}

impl Refusal {
    /// A short lower-case reason, as [`Display`](fmt::Display) writes it:
    /// `draining` or `origin not allowed`.
    ///
    /// ```
    /// use tower_sticky_upgrade::Refusal;
    ///
    /// assert_eq!(Refusal::Draining.as_str(), "draining");
    /// assert_eq!(Refusal::OriginNotAllowed.to_string(), "origin not allowed");
    /// ```
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Draining => "draining",
            Self::OriginNotAllowed => "origin not allowed",
        }
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
