//! The floor: the operations on `http` types that any layer doing this job
//! must perform, and nothing else. Measured beside the layer so that its
//! overhead can be split into "work the `http` API and the allocator impose"
//! and "work the layer chose to do".
//!
//! [`Floor`] is **not** a correct implementation and must never be used as
//! one: it detects an upgrade by the presence of `Upgrade` and `Connection`
//! alone, takes the last 36 bytes of the `Cookie` line as the session id when
//! the line ends with `NAME=` and 36 more bytes, and checks nothing. What it
//! keeps is every step a correct layer cannot skip:
//!
//! - a test for `Upgrade` on every request: one pass over all field names (the
//!   layer makes the same pass up to 28 fields and a hashed lookup above; no
//!   reference into the request leaves `call`, which spares a copy of it; see
//!   `may_upgrade` in `src/upgrade.rs`), and the request moved through one
//!   more `call` and one more response future, which hands a plain request's
//!   answer through as the inner future gives it;
//! - on an upgrade, lookups of `Connection` and `Cookie`;
//! - an id for a new session from the same generator as the layer's default;
//! - the `Set-Cookie` value rendered into one exactly sized buffer and turned
//!   into a `HeaderValue` (which validates every byte; skipping that needs
//!   `unsafe`);
//! - a session value of the same size as `StickySession`, with a reference
//!   count bumped, boxed into the request's extensions (how an app reads it);
//! - on a `101`, one `Set-Cookie` entry appended to the response.

use std::future::Future;
use std::mem::size_of;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use http::header::{Entry, CONNECTION, COOKIE, SET_COOKIE, UPGRADE};
use http::{HeaderValue, Request, Response, StatusCode};
use tower::Service;
use tower_sticky_upgrade::{IdGenerator, StickySession, UuidV4, DEFAULT_COOKIE_NAME};

/// The attributes the layer renders by default.
const SUFFIX: &str = "; Path=/; Secure; HttpOnly; SameSite=Lax";
/// A hyphenated UUID.
const ID_LEN: usize = 36;
/// A `StickySession` is an inline id and node tag plus one `Arc`.
const SESSION_BYTES: usize = size_of::<StickySession>() - size_of::<Arc<()>>();

/// What [`Floor`] puts in the extensions: as large as a `StickySession`.
/// Nothing reads it; its size and its reference count are what cost.
#[derive(Clone)]
#[allow(dead_code)]
pub struct FloorSession {
    pub id: [u8; SESSION_BYTES],
    pub shared: Arc<()>,
}

/// See the module docs.
pub struct Floor<S> {
    inner: S,
    shared: Arc<()>,
}

impl<S> Floor<S> {
    pub fn new(inner: S) -> Self {
        Self {
            inner,
            shared: Arc::new(()),
        }
    }
}

impl<S, B> Service<Request<B>> for Floor<S>
where
    S: Service<Request<B>, Response = Response<()>>,
{
    type Response = Response<()>;
    type Error = S::Error;
    type Future = FloorFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        if req.headers().keys().any(|name| name == UPGRADE) {
            floor_upgrade(&mut self.inner, &self.shared, req)
        } else {
            FloorFuture {
                future: self.inner.call(req),
                set_cookie: None,
            }
        }
    }
}

/// The upgrade half of [`Floor::call`], out of line like the layer's.
#[inline(never)]
fn floor_upgrade<S, B>(
    inner: &mut S,
    shared: &Arc<()>,
    mut req: Request<B>,
) -> FloorFuture<S::Future>
where
    S: Service<Request<B>, Response = Response<()>>,
{
    let headers = req.headers();
    if headers.get(UPGRADE).is_none() || headers.get(CONNECTION).is_none() {
        return FloorFuture {
            future: inner.call(req),
            set_cookie: None,
        };
    }
    let kept = headers.get(COOKIE).and_then(|line| {
        let line = line.as_bytes();
        let at = line.len().checked_sub(ID_LEN)?;
        line[..at]
            .ends_with(b"=")
            .then(|| &line[at..])
            .filter(|_| line[..at - 1].ends_with(DEFAULT_COOKIE_NAME.as_bytes()))
    });
    let mut id = [0; SESSION_BYTES];
    match kept {
        Some(kept) => id[..ID_LEN].copy_from_slice(kept),
        None => id[..ID_LEN].copy_from_slice(UuidV4.generate().as_str().as_bytes()),
    }
    let id_text = &id[..ID_LEN];
    let mut value = Vec::with_capacity(DEFAULT_COOKIE_NAME.len() + 1 + ID_LEN + SUFFIX.len());
    value.extend_from_slice(DEFAULT_COOKIE_NAME.as_bytes());
    value.push(b'=');
    value.extend_from_slice(id_text);
    value.extend_from_slice(SUFFIX.as_bytes());
    let set_cookie = HeaderValue::from_maybe_shared(bytes::Bytes::from(value)).ok();
    req.extensions_mut().insert(FloorSession {
        id,
        shared: shared.clone(),
    });
    FloorFuture {
        future: inner.call(req),
        set_cookie,
    }
}

pin_project_lite::pin_project! {
    /// The response future of [`Floor`].
    pub struct FloorFuture<F> {
        #[pin]
        future: F,
        set_cookie: Option<HeaderValue>,
    }
}

impl<F, E> Future for FloorFuture<F>
where
    F: Future<Output = Result<Response<()>, E>>,
{
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        if this.set_cookie.is_none() {
            return this.future.poll(cx);
        }
        let mut res = ready!(this.future.poll(cx))?;
        if let Some(value) = this.set_cookie.take() {
            if res.status() == StatusCode::SWITCHING_PROTOCOLS {
                match res.headers_mut().entry(SET_COOKIE) {
                    Entry::Occupied(mut lines) => lines.append(value),
                    Entry::Vacant(slot) => {
                        slot.insert(value);
                    }
                }
            }
        }
        Poll::Ready(Ok(res))
    }
}
