//! The response future of [`StickyUpgrade`](crate::StickyUpgrade).
//!
//! The future of a `StickyUpgrade<S>` is `ResponseFuture<S::Future>`, so code
//! generic over the inner service can name it:
//!
//! ```
//! use http::{Request, Response};
//! use tower::{service_fn, Service};
//! use tower_sticky_upgrade::{future::ResponseFuture, StickyUpgrade, StickyUpgradeLayer};
//!
//! fn call<S>(svc: &mut StickyUpgrade<S>, req: Request<()>) -> ResponseFuture<S::Future>
//! where
//!     S: Service<Request<()>, Response = Response<()>>,
//! {
//!     svc.call(req)
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let ok = service_fn(|_: Request<()>| async { Ok::<_, ()>(Response::new(())) });
//! let mut svc = StickyUpgrade::new(ok, StickyUpgradeLayer::new());
//! let res = call(&mut svc, Request::new(())).await.unwrap();
//! assert_eq!(res.status(), 200);
//! # }
//! ```

use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use http::header::{Entry, CONNECTION, RETRY_AFTER, SET_COOKIE};
use http::{HeaderValue, Response, StatusCode};
use pin_project_lite::pin_project;

use crate::affinity::SessionId;
use crate::cookie::sets_cookie_named;
use crate::drain::Handshake;
use crate::layer::Config;
use crate::refusal::Refusal;
use crate::upgrade::UpgradeKind;

pin_project! {
    /// Response future of [`StickyUpgrade`](crate::StickyUpgrade): the inner
    /// service's future, plus setting the affinity cookie on a successful
    /// upgrade, or the layer's own refusal.
    ///
    /// You do not build one yourself; it is named so that services can be
    /// stored in structs and `impl Trait` is not needed.
    ///
    /// # Example
    ///
    /// ```
    /// use std::convert::Infallible;
    /// use http::{Request, Response};
    /// use tower::{service_fn, Service, ServiceExt};
    /// use tower_sticky_upgrade::{future::ResponseFuture, StickyUpgradeLayer};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let mut svc = tower::ServiceBuilder::new()
    ///     .layer(StickyUpgradeLayer::new())
    ///     .service(service_fn(|_: Request<()>| async {
    ///         Ok::<_, Infallible>(Response::new(()))
    ///     }));
    /// let future: ResponseFuture<_> = svc.ready().await.unwrap().call(Request::new(()));
    /// assert_eq!(future.await.unwrap().status(), 200);
    /// # }
    /// ```
    pub struct ResponseFuture<F> {
        #[pin]
        state: State<F>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<F> {
        // Plain requests, and upgrades, in variants of their own: a plain
        // request's future then neither checks for nor drops an upgrade's state.
        Plain {
            #[pin]
            future: F,
        },
        Upgrade {
            #[pin]
            future: F,
            accepted: Option<Accepted>,
        },
        Reject {
            reject: Option<Reject>,
        },
    }
}

/// What an upgrade the layer let through leaves to its response.
pub(crate) struct Accepted {
    /// The affinity cookie, unless it is not to be re-sent.
    pub(crate) set_cookie: Option<SetCookie>,
    /// Keeps a drain waiting until the response is out, by when the handler
    /// holds its own guard for the socket (see `Drain::handshake`).
    pub(crate) _handshake: Handshake,
}

/// What to add to the response of an accepted upgrade. Kept small: it is part
/// of every response future, plain requests included.
pub(crate) struct SetCookie {
    /// `NAME=VALUE; attributes`.
    value: HeaderValue,
    /// The length of `NAME` at the start of `value` (at most 256 bytes).
    name_len: u16,
    kind: UpgradeKind,
}

/// An upgrade the layer answers itself.
#[derive(Debug)]
pub(crate) enum Reject {
    /// `Origin` not allowed: `403`.
    Forbidden,
    /// Draining: `503` with `Retry-After`, and `Connection: close` on HTTP/1.
    Draining {
        retry_after: HeaderValue,
        close_connection: bool,
    },
}

impl<F> ResponseFuture<F> {
    pub(crate) fn plain(future: F) -> Self {
        Self {
            state: State::Plain { future },
        }
    }

    pub(crate) fn upgrade(future: F, accepted: Accepted) -> Self {
        Self {
            state: State::Upgrade {
                future,
                accepted: Some(accepted),
            },
        }
    }

    pub(crate) fn reject(reject: Reject) -> Self {
        Self {
            state: State::Reject {
                reject: Some(reject),
            },
        }
    }
}

impl<F, B, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<B>, E>>,
    B: Default,
{
    type Output = Result<Response<B>, E>;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().state.project() {
            // The inner future's poll as it is, without unpacking its answer.
            StateProj::Plain { future } => future.poll(cx),
            StateProj::Upgrade { future, accepted } => {
                let result = ready!(future.poll(cx));
                // The response is out, an error included: the handshake no
                // longer counts for draining.
                let set_cookie = accepted.take().and_then(|accepted| accepted.set_cookie);
                let mut res = result?;
                if let Some(set_cookie) = set_cookie {
                    set_cookie.apply(&mut res);
                }
                Poll::Ready(Ok(res))
            }
            StateProj::Reject { reject } => {
                let reject = reject
                    .take()
                    .expect("ResponseFuture polled after completion");
                Poll::Ready(Ok(reject.into_response()))
            }
        }
    }
}

impl<F> std::fmt::Debug for ResponseFuture<F> {
    /// Says what the future is doing, which is what someone looking at a
    /// stuck request wants to know; the inner future need not be `Debug`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = match &self.state {
            State::Plain { .. } => "plain request",
            State::Upgrade { accepted, .. } => match accepted {
                Some(Accepted {
                    set_cookie: Some(_),
                    ..
                }) => "upgrade, cookie to set",
                Some(_) => "upgrade, cookie not re-sent",
                None => "upgrade, done",
            },
            State::Reject { reject } => match reject {
                Some(Reject::Forbidden) => "refusing: origin not allowed",
                Some(Reject::Draining { .. }) => "refusing: draining",
                None => "refused, done",
            },
        };
        f.debug_struct("ResponseFuture")
            .field("state", &format_args!("{state}"))
            .finish_non_exhaustive()
    }
}

impl SetCookie {
    /// Renders the cookie for `id`, re-sending `sent` as is when the client's
    /// value is still the one this layer would write; `None` (logged) only if
    /// the header value could not be built, which the build-time checks rule out.
    #[inline]
    pub(crate) fn render(
        kind: UpgradeKind,
        id: &SessionId,
        sent: Option<&[u8]>,
        config: &Config,
    ) -> Option<Self> {
        let cookie = &config.cookie;
        let value = cookie.render(&config.codec, id, sent);
        let name_len = u16::try_from(cookie.name.len()).ok();
        match value.zip(name_len) {
            Some((value, name_len)) => Some(Self {
                value,
                name_len,
                kind,
            }),
            None => {
                tracing::error!(session = %id, "could not render the affinity cookie");
                None
            }
        }
    }

    fn name(&self) -> &[u8] {
        let name_len = usize::from(self.name_len);
        self.value.as_bytes().get(..name_len).unwrap_or_default()
    }

    /// The session id in the value (`NAME=ID[.NODE][.SIGNATURE]; …`), for the
    /// logs; only computed when they are enabled.
    fn session(&self) -> &str {
        let value = self.value.as_bytes();
        let after = value
            .get(usize::from(self.name_len) + 1..)
            .unwrap_or_default();
        let end = after
            .iter()
            .position(|&b| b == b'.' || b == b';')
            .unwrap_or(after.len());
        std::str::from_utf8(&after[..end]).unwrap_or_default()
    }

    #[inline]
    fn apply<B>(self, res: &mut Response<B>) {
        if !self.kind.is_success(res.status()) {
            tracing::debug!(
                status = res.status().as_u16(),
                session = self.session(),
                "upgrade refused by the service: no affinity cookie"
            );
            return;
        }
        // One lookup both checks for the service's own cookie and appends.
        match res.headers_mut().entry(SET_COOKIE) {
            Entry::Occupied(mut lines) => {
                let name = self.name();
                if lines
                    .iter()
                    .any(|line| sets_cookie_named(line.as_bytes(), name))
                {
                    tracing::debug!(
                        session = self.session(),
                        "the service set the affinity cookie itself: left as is"
                    );
                    return;
                }
                lines.append(self.value);
            }
            Entry::Vacant(slot) => {
                slot.insert(self.value);
            }
        }
    }
}

impl Reject {
    /// The response, marked with its [`Refusal`] for the layers outside.
    fn into_response<B: Default>(self) -> Response<B> {
        let mut res = Response::new(B::default());
        let refusal = match self {
            Self::Forbidden => {
                *res.status_mut() = StatusCode::FORBIDDEN;
                Refusal::OriginNotAllowed
            }
            Self::Draining {
                retry_after,
                close_connection,
            } => {
                *res.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
                res.headers_mut().insert(RETRY_AFTER, retry_after);
                if close_connection {
                    res.headers_mut()
                        .insert(CONNECTION, HeaderValue::from_static("close"));
                }
                Refusal::Draining
            }
        };
        res.extensions_mut().insert(refusal);
        res
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::StickyUpgradeLayer;

    #[test]
    fn set_cookie_reads_name_and_session_back_from_its_value() {
        let id = SessionId::new("abc-1").unwrap();
        for layer in [
            StickyUpgradeLayer::new(),
            StickyUpgradeLayer::builder().node_id("n1").build().unwrap(),
        ] {
            let set_cookie =
                SetCookie::render(UpgradeKind::Http1, &id, None, &layer.shared.config).unwrap();
            assert_eq!(set_cookie.name(), b"WS_SESSION_ID");
            assert_eq!(set_cookie.session(), "abc-1");
        }
    }

    #[test]
    fn refusals_are_marked_with_why() {
        let forbidden: Response<()> = Reject::Forbidden.into_response();
        assert_eq!(forbidden.status(), StatusCode::FORBIDDEN);
        assert_eq!(
            forbidden.extensions().get(),
            Some(&Refusal::OriginNotAllowed)
        );
        for close_connection in [false, true] {
            let draining: Response<()> = Reject::Draining {
                retry_after: HeaderValue::from_static("5"),
                close_connection,
            }
            .into_response();
            assert_eq!(draining.status(), StatusCode::SERVICE_UNAVAILABLE);
            assert_eq!(draining.extensions().get(), Some(&Refusal::Draining));
            assert_eq!(draining.headers()[RETRY_AFTER], "5");
            assert_eq!(
                draining.headers().contains_key(CONNECTION),
                close_connection
            );
        }
    }

    #[test]
    fn debug_says_what_the_future_is_doing() {
        let plain = ResponseFuture::plain(std::future::pending::<()>());
        assert_eq!(
            format!("{plain:?}"),
            "ResponseFuture { state: plain request, .. }"
        );
        let refusing = ResponseFuture::<std::future::Pending<()>>::reject(Reject::Forbidden);
        assert_eq!(
            format!("{refusing:?}"),
            "ResponseFuture { state: refusing: origin not allowed, .. }"
        );
    }
}
