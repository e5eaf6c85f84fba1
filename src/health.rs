//! A health check that turns `503` when draining starts.

use std::convert::Infallible;
use std::task::{Context, Poll};

use http::header::{CACHE_CONTROL, CONTENT_TYPE};
use http::{HeaderValue, Request, Response, StatusCode};
use tower_service::Service;

use crate::Drain;

/// Answers `200 ok` while serving and `503 draining` once the [`Drain`] started,
/// for load-balancer health checks (AWS ALB target group health checks,
/// HAProxy `option httpchk`).
///
/// A plain tower `Service` for any request body: use it as an axum route
/// service or call it from a hyper service. The body is a `String`, which is an
/// `http_body::Body`.
///
/// # Example
///
/// ```
/// use http::{Request, StatusCode};
/// use tower::ServiceExt;
/// use tower_sticky_upgrade::Drain;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let drain = Drain::new();
/// let health = drain.health_service();
///
/// let res = health.clone().oneshot(Request::new(())).await.unwrap();
/// assert_eq!(res.status(), StatusCode::OK);
///
/// drain.start();
/// let res = health.oneshot(Request::new(())).await.unwrap();
/// assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
/// assert_eq!(res.into_body(), "draining");
/// # }
/// ```
///
/// With axum:
///
/// ```
/// use axum::Router;
/// use tower_sticky_upgrade::Drain;
///
/// let drain = Drain::new();
/// let app: Router = Router::new().route_service("/ws-health", drain.health_service());
/// # let _ = app;
/// ```
#[derive(Debug, Clone)]
pub struct HealthService {
    drain: Drain,
}

impl HealthService {
    /// A health check for `drain`; same as [`Drain::health_service`].
    ///
    /// ```
    /// use http::StatusCode;
    /// use tower_sticky_upgrade::{Drain, HealthService};
    ///
    /// let drain = Drain::new();
    /// let health = HealthService::new(drain.clone());
    /// assert_eq!(health.response().status(), StatusCode::OK);
    /// drain.start();
    /// assert_eq!(health.response().status(), StatusCode::SERVICE_UNAVAILABLE);
    /// ```
    #[must_use]
    pub fn new(drain: Drain) -> Self {
        Self { drain }
    }

    /// The answer right now: what the service answers to any request.
    ///
    /// ```
    /// use http::header;
    /// use tower_sticky_upgrade::Drain;
    ///
    /// let drain = Drain::new();
    /// let res = drain.health_service().response();
    /// assert_eq!((res.status().as_u16(), res.body().as_str()), (200, "ok"));
    /// assert_eq!(res.headers()[header::CACHE_CONTROL], "no-store");
    ///
    /// drain.start();
    /// let res = drain.health_service().response();
    /// assert_eq!((res.status().as_u16(), res.body().as_str()), (503, "draining"));
    /// ```
    pub fn response(&self) -> Response<String> {
        let (status, body) = if self.drain.is_draining() {
            (StatusCode::SERVICE_UNAVAILABLE, "draining")
        } else {
            (StatusCode::OK, "ok")
        };
        let mut res = Response::new(body.to_owned());
        *res.status_mut() = status;
        let headers = res.headers_mut();
        headers.insert(
            CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
        res
    }
}

impl<B> Service<Request<B>> for HealthService {
    type Response = Response<String>;
    type Error = Infallible;
    type Future = std::future::Ready<Result<Response<String>, Infallible>>;

    #[inline]
    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _req: Request<B>) -> Self::Future {
        std::future::ready(Ok(self.response()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tower::ServiceExt;

    #[tokio::test]
    async fn flips_from_200_to_503_at_start() {
        let drain = Drain::new();
        let health = drain.health_service();
        let ok = health.clone().oneshot(Request::new(())).await.unwrap();
        assert_eq!(ok.status(), StatusCode::OK);
        assert_eq!(ok.into_body(), "ok");
        drain.start();
        let res = health.oneshot(Request::new(())).await.unwrap();
        assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(res.headers()[CACHE_CONTROL], "no-store");
    }
}
