//! [`StickyUpgrade`], the service made by [`StickyUpgradeLayer`].

use std::sync::Arc;
use std::task::{Context, Poll};

use http::{HeaderMap, Request, Response, Version};
use tower_service::Service;

use crate::affinity::Affinity;
use crate::future::{Reject, ResponseFuture, SetCookie};
use crate::layer::{Refresh, Shared};
use crate::stats::Counters;
use crate::upgrade::UpgradeKind;
use crate::{upgrade, Drain, Stats, StickySession, StickyUpgradeLayer};

/// Middleware that gives upgrade requests a [`StickySession`] and sets the
/// affinity cookie on successful upgrades. Made by [`StickyUpgradeLayer`]; see
/// the [crate docs](crate) for the behaviour and an example.
///
/// # Example
///
/// ```
/// use tower::service_fn;
/// use tower_sticky_upgrade::{StickyUpgrade, StickyUpgradeLayer};
/// # async fn handle(_: http::Request<()>) -> Result<http::Response<()>, std::convert::Infallible> {
/// #     Ok(http::Response::new(()))
/// # }
///
/// let svc = StickyUpgrade::new(service_fn(handle), StickyUpgradeLayer::new());
/// assert!(!svc.drain().is_draining());
/// ```
#[derive(Debug, Clone)]
pub struct StickyUpgrade<S> {
    inner: S,
    layer: StickyUpgradeLayer,
}

impl<S> StickyUpgrade<S> {
    /// Wraps `inner` with the configuration of `layer`.
    pub fn new(inner: S, layer: StickyUpgradeLayer) -> Self {
        Self { inner, layer }
    }

    /// A [`StickyUpgradeLayer`] with the defaults; same as [`StickyUpgradeLayer::new`].
    pub fn layer() -> StickyUpgradeLayer {
        StickyUpgradeLayer::new()
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Unwraps the inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }

    /// The drain controller of the layer.
    pub fn drain(&self) -> &Drain {
        self.layer.drain()
    }

    /// A snapshot of the layer's counters.
    pub fn stats(&self) -> Stats {
        self.layer.stats()
    }
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for StickyUpgrade<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    ResBody: Default,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    /// Inlined so that a plain request costs its caller one header lookup
    /// and nothing else; upgrades are decided out of line.
    #[inline]
    fn call(&mut self, mut req: Request<ReqBody>) -> Self::Future {
        let shared = &self.layer.shared;
        let kind = upgrade::detect(
            req.method(),
            req.headers(),
            req.extensions(),
            &shared.config.protocols,
        );
        match kind {
            None => ResponseFuture::inner(self.inner.call(req), None),
            Some(kind) => match upgrade(shared, kind, &mut req) {
                Ok(set_cookie) => ResponseFuture::inner(self.inner.call(req), set_cookie),
                Err(reject) => ResponseFuture::reject(reject),
            },
        }
    }
}

/// Gives an upgrade request its session; what to set on the response.
#[inline(never)]
fn upgrade<B>(
    shared: &Arc<Shared>,
    kind: UpgradeKind,
    req: &mut Request<B>,
) -> Result<Option<SetCookie>, Reject> {
    let (session, set_cookie) = decide(shared, kind, req.headers(), req.version())?;
    req.extensions_mut().insert(session);
    Ok(set_cookie)
}

/// Decides the session of an upgrade request and renders its cookie, or
/// refuses the upgrade. Not generic, so compiled once whatever the services
/// and bodies, and the request is not moved around.
fn decide(
    shared: &Arc<Shared>,
    kind: UpgradeKind,
    headers: &HeaderMap,
    version: Version,
) -> Result<(StickySession, Option<SetCookie>), Reject> {
    let config = &shared.config;
    let counters = &shared.counters;

    if let Some(origins) = &config.origins {
        if !origins.allows(headers) {
            Counters::bump(&counters.rejected_origin);
            tracing::debug!(origin = ?headers.get(http::header::ORIGIN), "upgrade refused: origin not allowed");
            return Err(Reject::Forbidden);
        }
    }
    if let Some(retry_after) = &config.refuse_while_draining {
        if shared.drain.is_draining() {
            Counters::bump(&counters.refused_draining);
            tracing::debug!("upgrade refused: draining");
            return Err(Reject::Draining {
                retry_after: retry_after.clone(),
                // `Connection` is a connection-specific field that HTTP/2 and
                // HTTP/3 forbid.
                close_connection: version <= Version::HTTP_11,
            });
        }
    }

    let scan = config.cookie.scan(headers, &config.codec);
    if scan.invalid {
        Counters::bump(&counters.invalid_cookies);
    }
    let (id, affinity, changed) = match scan.valid {
        None => (config.codec.generator.generate(), Affinity::Issued, true),
        Some(cookie) => {
            let affinity = match (cookie.node, config.codec.node) {
                (Some(from), Some(here)) if from != here => Affinity::Migrated { from },
                _ => Affinity::Kept,
            };
            // Re-tag a value from a node-less setup (or the reverse) and
            // re-sign one signed with a retired key.
            let changed = cookie.node != config.codec.node || cookie.stale_key;
            (cookie.id, affinity, changed)
        }
    };
    Counters::bump(match affinity {
        Affinity::Issued => &counters.issued,
        Affinity::Kept => &counters.kept,
        Affinity::Migrated { .. } => &counters.migrated,
    });
    tracing::debug!(
        session = %id,
        affinity = affinity.as_str(),
        from = affinity.migrated_from().map(|n| n.as_str()),
        invalid_cookie = scan.invalid,
        "upgrade request"
    );

    let emit = changed || config.refresh == Refresh::EveryUpgrade;
    // Rendered now, while the configuration is at hand, so the response
    // future needs no reference to it (no reference count to bump and drop).
    let set_cookie = if emit {
        SetCookie::render(kind, &id, config)
    } else {
        None
    };
    Ok((StickySession::new(id, affinity, shared.clone()), set_cookie))
}
