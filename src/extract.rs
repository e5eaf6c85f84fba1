//! Axum extractors for [`StickySession`] (feature `axum`).

use std::fmt;

use axum_core::extract::{FromRequestParts, OptionalFromRequestParts};
use axum_core::response::{IntoResponse, Response};
use http::request::Parts;
use http::StatusCode;

use crate::upgrade::{self, Protocols};
use crate::StickySession;

/// Extracts the [`StickySession`] that [`StickyUpgradeLayer`](crate::StickyUpgradeLayer)
/// put on an upgrade request.
///
/// Use `Option<StickySession>` to never reject. A WebSocket handler also takes
/// axum's `WebSocketUpgrade`, and moves [`StickySession::guard`] into the
/// socket task (the crate docs show one in full); the handler below answers
/// with the session instead, so that the example can run.
///
/// # Example
///
/// ```
/// use axum::body::{to_bytes, Body};
/// use axum::{routing::get, Router};
/// use http::{Request, StatusCode};
/// use tower::ServiceExt;
/// use tower_sticky_upgrade::{StickySession, StickyUpgradeLayer};
///
/// async fn who(session: StickySession) -> String {
///     format!("{} {}", session.affinity(), session.id())
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let app = Router::new()
///     .route("/ws", get(who))
///     .layer(StickyUpgradeLayer::new());
///
/// let upgrade = Request::get("/ws")
///     .header("connection", "upgrade")
///     .header("upgrade", "websocket")
///     .body(Body::empty())
///     .unwrap();
/// let res = app.clone().oneshot(upgrade).await.unwrap();
/// assert_eq!(res.status(), StatusCode::OK);
/// let body = to_bytes(res.into_body(), 1024).await.unwrap();
/// assert!(body.starts_with(b"issued "));
///
/// // Not an upgrade: the layer gave it no session, and the extractor
/// // rejects it with `400`.
/// let plain = Request::get("/ws").body(Body::empty()).unwrap();
/// let res = app.oneshot(plain).await.unwrap();
/// assert_eq!(res.status(), StatusCode::BAD_REQUEST);
/// # }
/// ```
impl<S: Send + Sync> FromRequestParts<S> for StickySession {
    type Rejection = MissingStickySession;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        if let Some(session) = parts.extensions.get::<StickySession>() {
            return Ok(session.clone());
        }
        // Only an upgrade the layer gives a session to with its defaults shows
        // that the layer is missing. Anything else the layer let pass as not an
        // upgrade, and the client is at fault: axum's `WebSocketUpgrade`, for
        // one, accepts `Connection: notupgrade`, which is no upgrade token.
        let is_upgrade = upgrade::detect(
            &parts.method,
            parts.version,
            &parts.headers,
            &parts.extensions,
            &Protocols::default(),
        )
        .is_some();
        Err(MissingStickySession { is_upgrade })
    }
}

/// Extracts `Option<StickySession>`: `None` on a request the layer did not
/// tag as an upgrade, never a rejection.
///
/// # Example
///
/// ```
/// use axum::body::{to_bytes, Body};
/// use axum::{routing::get, Router};
/// use http::Request;
/// use tower::ServiceExt;
/// use tower_sticky_upgrade::{StickySession, StickyUpgradeLayer};
///
/// async fn page(session: Option<StickySession>) -> String {
///     match session {
///         Some(session) => format!("upgrade, {}", session.affinity()),
///         None => "plain request".to_owned(),
///     }
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let app = Router::new()
///     .route("/", get(page))
///     .layer(StickyUpgradeLayer::new());
/// let res = app.oneshot(Request::get("/").body(Body::empty()).unwrap()).await.unwrap();
/// assert_eq!(to_bytes(res.into_body(), 64).await.unwrap(), "plain request");
/// # }
/// ```
impl<S: Send + Sync> OptionalFromRequestParts<S> for StickySession {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        _state: &S,
    ) -> Result<Option<Self>, Self::Rejection> {
        Ok(parts.extensions.get::<StickySession>().cloned())
    }
}

/// Rejection of the [`StickySession`] extractor.
///
/// On a WebSocket upgrade request (`Connection` listing `upgrade` and `Upgrade:
/// websocket`, or an extended CONNECT for `websocket`) it means the layer is
/// missing: a `500` whose body says how to add it. On any other request it is a
/// `400`, since only upgrade requests carry a session; that includes requests
/// that merely look like upgrades: `Connection: notupgrade`, which axum's
/// `WebSocketUpgrade` lets through and the layer rightly does not tag, or an
/// HTTP/1.0 request with upgrade fields, which neither of them accepts.
/// (A layer set to other
/// [`upgrade_protocols`](crate::StickyUpgradeBuilder::upgrade_protocols) is not
/// known here: without it, their upgrades are answered `400` too.)
///
/// # Example
///
/// ```
/// use axum::response::IntoResponse;
/// use axum::extract::FromRequestParts;
/// use http::{Request, StatusCode};
/// use tower_sticky_upgrade::StickySession;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let (mut parts, ()) = Request::get("/ws")
///     .header("connection", "upgrade")
///     .header("upgrade", "websocket")
///     .body(())
///     .unwrap()
///     .into_parts();
/// let rejection = <StickySession as FromRequestParts<()>>::from_request_parts(&mut parts, &())
///     .await
///     .unwrap_err();
/// assert!(rejection.to_string().contains("StickyUpgradeLayer"));
/// assert_eq!(rejection.into_response().status(), StatusCode::INTERNAL_SERVER_ERROR);
/// # }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MissingStickySession {
    is_upgrade: bool,
}

impl MissingStickySession {
    /// The status of the rejection: `500` on an upgrade request (the layer is
    /// missing), `400` otherwise.
    ///
    /// ```
    /// use axum::extract::FromRequestParts;
    /// use http::{Request, StatusCode};
    /// use tower_sticky_upgrade::StickySession;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// // A plain request: no upgrade, so no session, and the client is at fault.
    /// let (mut parts, ()) = Request::get("/ws").body(()).unwrap().into_parts();
    /// let rejection = <StickySession as FromRequestParts<()>>::from_request_parts(&mut parts, &())
    ///     .await
    ///     .unwrap_err();
    /// assert_eq!(rejection.status(), StatusCode::BAD_REQUEST);
    /// # }
    /// ```
    pub fn status(&self) -> StatusCode {
        if self.is_upgrade {
            StatusCode::INTERNAL_SERVER_ERROR
        } else {
            StatusCode::BAD_REQUEST
        }
    }
}

impl fmt::Display for MissingStickySession {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_upgrade {
            f.write_str(
                "missing request extension `StickySession` on a WebSocket upgrade: add \
                 `StickyUpgradeLayer` to the router (`Router::layer(StickyUpgradeLayer::new())`) \
                 so that it covers this route, and keep `websocket` in its `upgrade_protocols`",
            )
        } else {
            f.write_str(
                "not a WebSocket upgrade (`Connection` must list the `upgrade` token): \
                 `StickySession` is only available on upgrade requests",
            )
        }
    }
}

impl std::error::Error for MissingStickySession {}

impl IntoResponse for MissingStickySession {
    fn into_response(self) -> Response {
        (self.status(), self.to_string()).into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::StickyUpgradeLayer;
    use axum::body::Body;
    use axum::routing::get;
    use axum::Router;
    use http::Request;
    use tower::ServiceExt;

    async fn handler(session: Option<StickySession>) -> String {
        session.map_or_else(|| "none".to_owned(), |s| s.affinity().to_string())
    }

    /// A handler that needs the session: the extractor's rejection answers
    /// when there is none.
    async fn needs(session: StickySession) -> String {
        session.id().to_string()
    }

    fn upgrade_req() -> Request<Body> {
        Request::get("/ws")
            .header("connection", "upgrade")
            .header("upgrade", "websocket")
            .body(Body::empty())
            .unwrap()
    }

    async fn body(res: Response) -> String {
        let bytes = axum::body::to_bytes(res.into_body(), 1 << 16)
            .await
            .unwrap();
        String::from_utf8(bytes.to_vec()).unwrap()
    }

    #[tokio::test]
    async fn option_extractor_sees_the_session() {
        let app = Router::new()
            .route("/ws", get(handler))
            .layer(StickyUpgradeLayer::new());
        let res = app.clone().oneshot(upgrade_req()).await.unwrap();
        assert_eq!(body(res).await, "issued");
        let res = app
            .oneshot(Request::get("/ws").body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(body(res).await, "none");
    }

    /// Requests the layer rightly does not tag, and that axum's
    /// `WebSocketUpgrade` may still accept, are the client's error.
    #[tokio::test]
    async fn look_alike_upgrades_are_a_client_error_not_a_missing_layer() {
        let app = Router::new()
            .route("/ws", get(needs))
            .layer(StickyUpgradeLayer::new());
        for (connection, upgrade) in [
            (Some("notupgrade"), "websocket"),
            (Some("keep-alive"), "websocket"),
            (None, "websocket"),
            (Some("upgrade"), "h2c"),
        ] {
            let mut req = Request::get("/ws").header("upgrade", upgrade);
            if let Some(connection) = connection {
                req = req.header("connection", connection);
            }
            let res = app
                .clone()
                .oneshot(req.body(Body::empty()).unwrap())
                .await
                .unwrap();
            assert_eq!(res.status(), StatusCode::BAD_REQUEST, "{connection:?}");
            assert!(body(res).await.contains("not a WebSocket upgrade"));
        }
        // A real upgrade through the layer still gets its session.
        let res = app.oneshot(upgrade_req()).await.unwrap();
        assert_eq!(res.status(), StatusCode::OK);
    }

    #[tokio::test]
    async fn missing_layer_rejection_says_how_to_fix() {
        let app = Router::new().route("/ws", get(needs));
        let res = app.clone().oneshot(upgrade_req()).await.unwrap();
        assert_eq!(res.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert!(body(res).await.contains("StickyUpgradeLayer::new()"));
        let res = app
            .clone()
            .oneshot(Request::get("/ws").body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::BAD_REQUEST);
        // HTTP/1.0 cannot upgrade (RFC 9110 §7.8): the client's error too.
        let mut http10 = upgrade_req();
        *http10.version_mut() = http::Version::HTTP_10;
        let res = app.oneshot(http10).await.unwrap();
        assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    }

    /// A layer told to act on other protocols only (say, a subprotocol by
    /// mistake) leaves WebSocket upgrades untagged: the message names that
    /// cause too.
    #[tokio::test]
    async fn rejection_names_upgrade_protocols_as_a_cause() {
        let layer = StickyUpgradeLayer::builder()
            .upgrade_protocols(["graphql-ws"])
            .build()
            .unwrap();
        let app = Router::new().route("/ws", get(needs)).layer(layer);
        let res = app.oneshot(upgrade_req()).await.unwrap();
        assert_eq!(res.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert!(body(res)
            .await
            .contains("`websocket` in its `upgrade_protocols`"));
    }
}
