//! [`StickyUpgrade`], the service made by [`StickyUpgradeLayer`].

use std::sync::Arc;
use std::task::{Context, Poll};

use http::{HeaderMap, Request, Response, Version};
use tower_service::Service;

use crate::affinity::Affinity;
use crate::future::{Accepted, Reject, ResponseFuture, SetCookie};
use crate::layer::{Refresh, Shared};
use crate::stats::Counters;
use crate::upgrade::UpgradeKind;
use crate::{upgrade, Drain, Stats, StickySession, StickyUpgradeLayer};

/// Middleware that gives upgrade requests a [`StickySession`] and sets the
/// affinity cookie on successful upgrades. Made by [`StickyUpgradeLayer`]; see
/// the [crate docs](crate) for the behaviour and an example.
///
/// # Response body
///
/// The inner service's response body must implement [`Default`]: the layer
/// answers refused upgrades (`503` while draining, `403` for a disallowed
/// `Origin`) itself, with an empty body of that type, marked with a
/// [`Refusal`](crate::Refusal) in the response extensions so that a layer
/// outside can give it a body. axum's `Body`, `String`
/// and http-body-util's `Full`, `Empty` and `BoxBody` do; `Either`
/// and hyper's `Incoming` (a proxied response) do not: box them
/// (`http_body_util::BodyExt::boxed`) or map them into a body that does.
/// Otherwise `StickyUpgrade<S>` is not a [`Service`], and the compiler's
/// error need not mention `Default` at all: it may only say that
/// ``StickyUpgrade<…>: Service<_>`` is not satisfied, or that ``the method
/// `oneshot` exists … but its trait bounds were not satisfied``.
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
    ///
    /// ```
    /// use tower::service_fn;
    /// use tower_sticky_upgrade::{StickyUpgrade, StickyUpgradeLayer};
    /// # use std::convert::Infallible;
    /// # async fn handle(_: http::Request<()>) -> Result<http::Response<()>, Infallible> {
    /// #     Ok(http::Response::new(()))
    /// # }
    ///
    /// let layer = StickyUpgradeLayer::new();
    /// let svc = StickyUpgrade::new(service_fn(handle), layer.clone());
    /// layer.drain().start(); // the service shares the layer's drain
    /// assert!(svc.drain().is_draining());
    /// ```
    pub fn new(inner: S, layer: StickyUpgradeLayer) -> Self {
        Self { inner, layer }
    }

    /// A [`StickyUpgradeLayer`] with the defaults; same as [`StickyUpgradeLayer::new`].
    ///
    /// Each call makes a new layer with a [`Drain`] of its own: keep the layer
    /// you wrap the app with (or its [`drain`](StickyUpgradeLayer::drain)) to
    /// start draining, since a drain started on another layer does not reach it.
    ///
    /// `S` is not used, but must be named:
    ///
    /// ```
    /// use tower_sticky_upgrade::{StickyUpgrade, DEFAULT_COOKIE_NAME};
    ///
    /// let layer = StickyUpgrade::<()>::layer();
    /// assert_eq!(layer.cookie_name(), DEFAULT_COOKIE_NAME);
    /// assert!(!layer.drain().is_draining());
    /// ```
    #[must_use]
    pub fn layer() -> StickyUpgradeLayer {
        StickyUpgradeLayer::new()
    }

    /// The inner service.
    ///
    /// ```
    /// use tower_sticky_upgrade::{StickyUpgrade, StickyUpgradeLayer};
    ///
    /// // The accessors need no `Service`: a stand-in for a handler with state.
    /// struct Handler {
    ///     hits: u32,
    /// }
    ///
    /// let svc = StickyUpgrade::new(Handler { hits: 3 }, StickyUpgradeLayer::new());
    /// assert_eq!(svc.get_ref().hits, 3);
    /// ```
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    ///
    /// ```
    /// use tower_sticky_upgrade::{StickyUpgrade, StickyUpgradeLayer};
    ///
    /// // The accessors need no `Service`: a stand-in for a handler with state.
    /// struct Handler {
    ///     hits: u32,
    /// }
    ///
    /// let mut svc = StickyUpgrade::new(Handler { hits: 0 }, StickyUpgradeLayer::new());
    /// svc.get_mut().hits += 1;
    /// assert_eq!(svc.get_ref().hits, 1);
    /// ```
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Unwraps the inner service.
    ///
    /// ```
    /// use tower_sticky_upgrade::{StickyUpgrade, StickyUpgradeLayer};
    ///
    /// // The accessors need no `Service`: a stand-in for a handler with state.
    /// struct Handler {
    ///     hits: u32,
    /// }
    ///
    /// let svc = StickyUpgrade::new(Handler { hits: 7 }, StickyUpgradeLayer::new());
    /// let handler: Handler = svc.into_inner();
    /// assert_eq!(handler.hits, 7);
    /// ```
    pub fn into_inner(self) -> S {
        self.inner
    }

    /// The drain controller of the layer.
    ///
    /// ```
    /// use tower::{service_fn, ServiceBuilder};
    /// use tower_sticky_upgrade::StickyUpgradeLayer;
    /// # use std::convert::Infallible;
    /// # async fn handle(_: http::Request<()>) -> Result<http::Response<()>, Infallible> {
    /// #     Ok(http::Response::new(()))
    /// # }
    ///
    /// let svc = ServiceBuilder::new()
    ///     .layer(StickyUpgradeLayer::new())
    ///     .service(service_fn(handle));
    /// let drain = svc.drain().clone(); // for the shutdown signal
    /// drain.start();
    /// assert!(svc.drain().is_draining());
    /// ```
    pub fn drain(&self) -> &Drain {
        self.layer.drain()
    }

    /// A snapshot of the layer's counters.
    ///
    /// ```
    /// use http::{header, Request, Response};
    /// use tower::{service_fn, Service, ServiceExt};
    /// use tower_sticky_upgrade::{StickyUpgrade, StickyUpgradeLayer};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let accept = service_fn(|_: Request<()>| async {
    ///     let res = Response::builder().status(101).body(()).unwrap();
    ///     Ok::<_, std::convert::Infallible>(res)
    /// });
    /// let mut svc = StickyUpgrade::new(accept, StickyUpgradeLayer::new());
    /// let upgrade = Request::get("/ws")
    ///     .header(header::CONNECTION, "upgrade")
    ///     .header(header::UPGRADE, "websocket")
    ///     .body(())
    ///     .unwrap();
    /// svc.ready().await.unwrap().call(upgrade).await.unwrap();
    /// svc.ready().await.unwrap().call(Request::new(())).await.unwrap(); // not counted
    /// let stats = svc.stats();
    /// assert_eq!((stats.upgrades, stats.issued), (1, 1));
    /// # }
    /// ```
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

    /// Inlined so that a plain request costs its caller a short check of the
    /// field names (see `upgrade::may_upgrade`) and nothing else; anything
    /// that might be an upgrade is handled out of line.
    #[inline]
    fn call(&mut self, req: Request<ReqBody>) -> Self::Future {
        if upgrade::may_upgrade(req.method(), req.headers()) {
            call_maybe_upgrade(&mut self.inner, &self.layer.shared, req)
        } else {
            ResponseFuture::plain(self.inner.call(req))
        }
    }
}

/// [`StickyUpgrade::call`] for a request that might ask to upgrade, which may
/// still turn out not to. Takes the request by value, so that `call` passes no
/// reference into it to a function that is not inlined: that would make the
/// compiler copy every request, plain ones included, before moving it on.
#[inline(never)]
fn call_maybe_upgrade<S, ReqBody, ResBody>(
    inner: &mut S,
    shared: &Arc<Shared>,
    mut req: Request<ReqBody>,
) -> ResponseFuture<S::Future>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
{
    // Without the `http2` feature an extended CONNECT (a browser's WebSocket
    // over HTTP/2) cannot be told from another CONNECT, so it passes
    // untagged; the Origin allow-list still applies to it.
    #[cfg(not(feature = "http2"))]
    if req.method() == http::Method::CONNECT && req.version() >= Version::HTTP_2 {
        if let Err(reject) = check_origin(shared, req.headers()) {
            return ResponseFuture::reject(reject);
        }
    }
    let kind = upgrade::detect(
        req.method(),
        req.version(),
        req.headers(),
        req.extensions(),
        &shared.config.protocols,
    );
    match kind {
        None => ResponseFuture::plain(inner.call(req)),
        Some(kind) => match upgrade(shared, kind, &mut req) {
            Ok(accepted) => ResponseFuture::upgrade(inner.call(req), accepted),
            Err(reject) => ResponseFuture::reject(reject),
        },
    }
}

/// Gives an upgrade request its session; what to do on the response.
#[inline(never)]
fn upgrade<B>(
    shared: &Arc<Shared>,
    kind: UpgradeKind,
    req: &mut Request<B>,
) -> Result<Accepted, Reject> {
    let (session, accepted) = decide(shared, kind, req.headers(), req.version())?;
    req.extensions_mut().insert(session);
    Ok(accepted)
}

/// Refuses (`403`, counted) an upgrade whose `Origin` the allow-list does not admit.
fn check_origin(shared: &Shared, headers: &HeaderMap) -> Result<(), Reject> {
    if let Some(origins) = &shared.config.origins {
        if !origins.allows(headers) {
            Counters::bump(&shared.counters.refused_origin);
            tracing::debug!(origin = ?headers.get(http::header::ORIGIN), "upgrade refused: origin not allowed");
            return Err(Reject::Forbidden);
        }
    }
    Ok(())
}

/// Decides the session of an upgrade request and renders its cookie, or
/// refuses the upgrade. Not generic, so compiled once whatever the services
/// and bodies, and the request is not moved around.
fn decide(
    shared: &Arc<Shared>,
    kind: UpgradeKind,
    headers: &HeaderMap,
    version: Version,
) -> Result<(StickySession, Accepted), Reject> {
    let config = &shared.config;
    let counters = &shared.counters;

    check_origin(shared, headers)?;
    // Counted before the drain check and until the response is out, so that a
    // drain starting now either refuses this upgrade or waits for its socket.
    let handshake = shared.drain.handshake();
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
    // `None` from `id()` cannot happen; it would count as no cookie.
    let kept = scan.valid.and_then(|cookie| Some((cookie.id()?, cookie)));
    let (id, affinity, unchanged) = match kept {
        None => (config.codec.ids.generate(), Affinity::Issued, None),
        Some((id, cookie)) => {
            let here = config.codec.node.as_ref();
            let same_node = cookie.has_node(here);
            let affinity = match (cookie.node(), here) {
                (Some(from), Some(_)) if !same_node => Affinity::Migrated { from },
                _ => Affinity::Kept,
            };
            // Re-tag a value from a node-less setup (or the reverse), re-sign
            // one signed with a retired key, and drop a signature this layer
            // does not check; anything else is what this layer would write,
            // and is sent back as it came.
            let unchanged = same_node && !cookie.rewrite;
            (id, affinity, unchanged.then_some(cookie.value))
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

    let emit = unchanged.is_none() || config.refresh == Refresh::EveryUpgrade;
    // Rendered now, while the configuration is at hand, so the response
    // future needs no reference to it (no reference count to bump and drop).
    let set_cookie = if emit {
        SetCookie::render(kind, &id, unchanged, config)
    } else {
        None
    };
    let accepted = Accepted {
        set_cookie,
        _handshake: handshake,
    };
    Ok((StickySession::new(id, affinity, shared.clone()), accepted))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Affinity, BuildError, Refresh, SessionId, StickyUpgradeBuilder};
    use http::header::{CONNECTION, COOKIE, RETRY_AFTER, SET_COOKIE, UPGRADE};
    use http::{HeaderValue, StatusCode};
    use std::convert::Infallible;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex};
    use tower::{service_fn, ServiceExt};

    /// What the inner service saw.
    #[derive(Default)]
    struct Seen {
        calls: AtomicUsize,
        session: Mutex<Option<StickySession>>,
    }

    /// An inner service answering every request with `status`, recording the
    /// session it was given; `extra` is added to its response headers.
    fn inner(
        seen: Arc<Seen>,
        status: StatusCode,
        extra: &'static [(&'static str, &'static str)],
    ) -> impl tower_service::Service<
        Request<()>,
        Response = Response<()>,
        Error = Infallible,
        Future = impl std::future::Future<Output = Result<Response<()>, Infallible>>,
    > + Clone {
        service_fn(move |req: Request<()>| {
            let seen = seen.clone();
            async move {
                seen.calls.fetch_add(1, Ordering::SeqCst);
                *seen.session.lock().unwrap() = req.extensions().get::<StickySession>().cloned();
                let mut res = Response::new(());
                *res.status_mut() = status;
                for (k, v) in extra {
                    res.headers_mut().append(*k, HeaderValue::from_static(v));
                }
                Ok(res)
            }
        })
    }

    fn upgrade(cookie: Option<&str>) -> Request<()> {
        let mut req = Request::get("/ws")
            .header(CONNECTION, "upgrade")
            .header(UPGRADE, "websocket")
            .body(())
            .unwrap();
        if let Some(c) = cookie {
            req.headers_mut()
                .insert(COOKIE, HeaderValue::from_str(c).unwrap());
        }
        req
    }

    /// An HTTP/2 extended CONNECT for `websocket`, as hyper hands it over.
    #[cfg(feature = "http2")]
    fn extended_connect() -> Request<()> {
        let mut req = Request::builder()
            .method(http::Method::CONNECT)
            .version(http::Version::HTTP_2)
            .body(())
            .unwrap();
        req.extensions_mut()
            .insert(hyper::ext::Protocol::from_static("websocket"));
        req
    }

    fn layer(builder: StickyUpgradeBuilder) -> StickyUpgradeLayer {
        builder.build().unwrap()
    }

    async fn call(layer: &StickyUpgradeLayer, seen: &Arc<Seen>, req: Request<()>) -> Response<()> {
        call_answering(layer, seen, StatusCode::SWITCHING_PROTOCOLS, &[], req).await
    }

    /// `req` through the layer to an inner service answering `status` with
    /// the `extra` headers (see [`inner`]).
    async fn call_answering(
        layer: &StickyUpgradeLayer,
        seen: &Arc<Seen>,
        status: StatusCode,
        extra: &'static [(&'static str, &'static str)],
        req: Request<()>,
    ) -> Response<()> {
        let svc = StickyUpgrade::new(inner(seen.clone(), status, extra), layer.clone());
        svc.oneshot(req).await.unwrap()
    }

    fn set_cookies(res: &Response<()>) -> Vec<String> {
        res.headers()
            .get_all(SET_COOKIE)
            .iter()
            .map(|v| v.to_str().unwrap().to_owned())
            .collect()
    }

    /// `NAME=VALUE` of the affinity cookie a response set.
    fn pair(res: &Response<()>) -> String {
        let all = set_cookies(res);
        assert_eq!(all.len(), 1, "{all:?}");
        all[0].split(';').next().unwrap().to_owned()
    }

    fn session(seen: &Seen) -> StickySession {
        seen.session.lock().unwrap().clone().expect("a session")
    }

    #[tokio::test]
    async fn plain_request_passes_untouched() {
        let seen = Arc::new(Seen::default());
        let l = layer(StickyUpgradeLayer::builder());
        let req = Request::get("/").header(COOKIE, "a=1").body(()).unwrap();
        let res = call(&l, &seen, req).await;
        assert!(res.headers().get(SET_COOKIE).is_none());
        assert!(seen.session.lock().unwrap().is_none());
        assert_eq!(l.stats().upgrades, 0);
    }

    /// Requests with as many distinct fields as the scan limit and around it,
    /// `Upgrade` last: the same answers on both sides of the limit.
    #[tokio::test]
    async fn requests_around_the_scan_limit_get_the_same_answers() {
        let limit = crate::upgrade::SCAN_LIMIT;
        for fields in [2, 8, limit - 1, limit, limit + 1, 64, 99] {
            let seen = Arc::new(Seen::default());
            let l = layer(StickyUpgradeLayer::builder());
            let mut plain = Request::get("/").body(()).unwrap();
            let mut up = Request::get("/ws").body(()).unwrap();
            // The upgrade has `Connection` and `Upgrade` among its `fields`.
            for i in 0..fields {
                let name = http::HeaderName::try_from(format!("x-field-{i}")).unwrap();
                plain
                    .headers_mut()
                    .insert(name.clone(), HeaderValue::from_static("v"));
                if i < fields - 2 {
                    up.headers_mut().insert(name, HeaderValue::from_static("v"));
                }
            }
            up.headers_mut()
                .insert(CONNECTION, HeaderValue::from_static("upgrade"));
            up.headers_mut()
                .insert(UPGRADE, HeaderValue::from_static("websocket"));
            assert_eq!(plain.headers().keys_len(), fields);
            assert_eq!(up.headers().keys_len(), fields);

            let res = call(&l, &seen, plain).await;
            assert!(res.headers().get(SET_COOKIE).is_none(), "{fields}");
            assert!(seen.session.lock().unwrap().is_none(), "{fields}");
            let res = call(&l, &seen, up).await;
            assert_eq!(session(&seen).affinity(), Affinity::Issued, "{fields}");
            assert_eq!(set_cookies(&res).len(), 1, "{fields}");
            assert_eq!(l.stats().upgrades, 1, "{fields}");
        }
    }

    #[tokio::test]
    async fn first_upgrade_is_issued_and_gets_the_cookie() {
        let seen = Arc::new(Seen::default());
        let l = layer(StickyUpgradeLayer::builder());
        let res = call(&l, &seen, upgrade(None)).await;
        let s = session(&seen);
        assert_eq!(s.affinity(), Affinity::Issued);
        assert_eq!(
            set_cookies(&res),
            [format!(
                "WS_SESSION_ID={}; Path=/; Secure; HttpOnly; SameSite=Lax",
                s.id()
            )]
        );
        let stats = l.stats();
        assert_eq!((stats.upgrades, stats.issued), (1, 1));
    }

    #[tokio::test]
    async fn reconnect_with_the_cookie_is_kept() {
        let seen = Arc::new(Seen::default());
        let l = layer(StickyUpgradeLayer::builder().node_id("n1"));
        let first = call(&l, &seen, upgrade(None)).await;
        let id = *session(&seen).id();
        let res = call(&l, &seen, upgrade(Some(&pair(&first)))).await;
        let s = session(&seen);
        assert_eq!((s.affinity(), *s.id()), (Affinity::Kept, id));
        assert_eq!(s.node().map(|n| n.as_str()), Some("n1"));
        // Refreshed on every upgrade by default, with the same value.
        assert_eq!(pair(&res), pair(&first));
        assert_eq!(l.stats().kept, 1);
    }

    #[tokio::test]
    async fn cookie_from_another_node_is_migrated_and_retagged() {
        let seen = Arc::new(Seen::default());
        let a = layer(StickyUpgradeLayer::builder().node_id("a"));
        let b = layer(StickyUpgradeLayer::builder().node_id("b"));
        let from_a = call(&a, &seen, upgrade(None)).await;
        let id = *session(&seen).id();
        let res = call(&b, &seen, upgrade(Some(&pair(&from_a)))).await;
        let s = session(&seen);
        assert_eq!(s.id(), &id);
        assert_eq!(
            s.affinity(),
            Affinity::Migrated {
                from: crate::NodeId::new("a").unwrap()
            }
        );
        assert_eq!(pair(&res), format!("WS_SESSION_ID={id}.b"));
        assert_eq!(b.stats().migrated, 1);
    }

    #[tokio::test]
    async fn untagged_cookie_on_tagged_node_is_kept_and_retagged_even_on_change_only() {
        let seen = Arc::new(Seen::default());
        let plain = layer(StickyUpgradeLayer::builder());
        let tagged = layer(
            StickyUpgradeLayer::builder()
                .node_id("n")
                .refresh(Refresh::OnChange),
        );
        let first = call(&plain, &seen, upgrade(None)).await;
        let id = *session(&seen).id();
        let res = call(&tagged, &seen, upgrade(Some(&pair(&first)))).await;
        assert_eq!(session(&seen).affinity(), Affinity::Kept);
        assert_eq!(pair(&res), format!("WS_SESSION_ID={id}.n"));
    }

    #[tokio::test]
    async fn refresh_on_change_skips_unchanged_cookie() {
        let seen = Arc::new(Seen::default());
        let l = layer(StickyUpgradeLayer::builder().refresh(Refresh::OnChange));
        let first = call(&l, &seen, upgrade(None)).await;
        assert_eq!(
            set_cookies(&first).len(),
            1,
            "issued cookies are always set"
        );
        let res = call(&l, &seen, upgrade(Some(&pair(&first)))).await;
        assert_eq!(session(&seen).affinity(), Affinity::Kept);
        assert!(set_cookies(&res).is_empty());
    }

    #[tokio::test]
    async fn invalid_cookie_issues_a_new_id_and_is_counted() {
        let seen = Arc::new(Seen::default());
        let l = layer(StickyUpgradeLayer::builder());
        let res = call(&l, &seen, upgrade(Some("WS_SESSION_ID=forged-by-client"))).await;
        let s = session(&seen);
        assert_eq!(s.affinity(), Affinity::Issued);
        assert_ne!(s.id().as_str(), "forged-by-client");
        assert_eq!(set_cookies(&res).len(), 1);
        assert_eq!(l.stats().invalid_cookies, 1);
    }

    #[tokio::test]
    async fn rejected_handshakes_get_no_cookie() {
        let l = layer(StickyUpgradeLayer::builder());
        for status in [400, 403, 426, 500, 503] {
            let seen = Arc::new(Seen::default());
            let status = StatusCode::from_u16(status).unwrap();
            let res = call_answering(&l, &seen, status, &[], upgrade(None)).await;
            assert_eq!(res.status(), status);
            assert!(set_cookies(&res).is_empty(), "{status}");
        }
    }

    #[tokio::test]
    async fn other_cookies_of_the_inner_service_are_kept() {
        let seen = Arc::new(Seen::default());
        let l = layer(StickyUpgradeLayer::builder());
        let extra = &[("set-cookie", "theme=dark"), ("set-cookie", "lang=en")];
        let res = call_answering(
            &l,
            &seen,
            StatusCode::SWITCHING_PROTOCOLS,
            extra,
            upgrade(None),
        )
        .await;
        let all = set_cookies(&res);
        assert_eq!(all.len(), 3, "{all:?}");
        assert_eq!(&all[..2], ["theme=dark", "lang=en"]);
        assert!(all[2].starts_with("WS_SESSION_ID="));
    }

    #[tokio::test]
    async fn affinity_cookie_set_by_the_inner_service_is_left_alone() {
        let seen = Arc::new(Seen::default());
        let l = layer(StickyUpgradeLayer::builder());
        let extra = &[("set-cookie", "WS_SESSION_ID=mine; Path=/")];
        let res = call_answering(
            &l,
            &seen,
            StatusCode::SWITCHING_PROTOCOLS,
            extra,
            upgrade(None),
        )
        .await;
        assert_eq!(set_cookies(&res), ["WS_SESSION_ID=mine; Path=/"]);
    }

    #[tokio::test]
    async fn draining_refuses_upgrades_without_calling_the_inner_service() {
        let seen = Arc::new(Seen::default());
        let l = layer(StickyUpgradeLayer::builder().retry_after(std::time::Duration::from_secs(7)));
        l.drain().start();
        let res = call(&l, &seen, upgrade(None)).await;
        assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(res.headers()[RETRY_AFTER], "7");
        assert_eq!(res.headers()[CONNECTION], "close");
        assert_eq!(seen.calls.load(Ordering::SeqCst), 0);
        assert_eq!(l.stats().refused_draining, 1);

        // Ordinary requests still pass.
        let res = call(&l, &seen, Request::get("/").body(()).unwrap()).await;
        assert_eq!(res.status(), StatusCode::SWITCHING_PROTOCOLS);
        assert_eq!(seen.calls.load(Ordering::SeqCst), 1);
    }

    #[cfg(feature = "http2")]
    #[tokio::test]
    async fn draining_refusal_of_extended_connect_has_no_connection_header() {
        let seen = Arc::new(Seen::default());
        let l = layer(StickyUpgradeLayer::builder());
        l.drain().start();
        let req = extended_connect();
        let res = call(&l, &seen, req).await;
        assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert!(res.headers().get(CONNECTION).is_none());
    }

    #[cfg(feature = "http2")]
    #[tokio::test]
    async fn extended_connect_gets_the_cookie_on_200() {
        let seen = Arc::new(Seen::default());
        let l = layer(StickyUpgradeLayer::builder());
        let req = extended_connect();
        let res = call_answering(&l, &seen, StatusCode::OK, &[], req).await;
        assert_eq!(session(&seen).affinity(), Affinity::Issued);
        assert_eq!(set_cookies(&res).len(), 1);
    }

    #[tokio::test]
    async fn draining_pass_through_when_configured() {
        let seen = Arc::new(Seen::default());
        let l = layer(StickyUpgradeLayer::builder().refuse_while_draining(false));
        l.drain().start();
        let res = call(&l, &seen, upgrade(None)).await;
        assert_eq!(res.status(), StatusCode::SWITCHING_PROTOCOLS);
        assert!(session(&seen).is_draining());
    }

    #[tokio::test]
    async fn disallowed_origin_is_refused_before_the_inner_service() {
        let seen = Arc::new(Seen::default());
        let l = layer(StickyUpgradeLayer::builder().allowed_origins(["https://app.example"]));
        let mut req = upgrade(None);
        req.headers_mut().insert(
            http::header::ORIGIN,
            HeaderValue::from_static("https://evil.example"),
        );
        let res = call(&l, &seen, req).await;
        assert_eq!(res.status(), StatusCode::FORBIDDEN);
        assert_eq!(seen.calls.load(Ordering::SeqCst), 0);
        assert_eq!(l.stats().refused_origin, 1);

        let mut ok = upgrade(None);
        ok.headers_mut().insert(
            http::header::ORIGIN,
            HeaderValue::from_static("https://app.example"),
        );
        assert_eq!(
            call(&l, &seen, ok).await.status(),
            StatusCode::SWITCHING_PROTOCOLS
        );
    }

    #[tokio::test]
    async fn custom_id_generator_is_used_and_validates_ids() {
        let seen = Arc::new(Seen::default());
        let l = layer(
            StickyUpgradeLayer::builder().id_generator(|| SessionId::new("fixed-id").unwrap()),
        );
        let res = call(&l, &seen, upgrade(Some("WS_SESSION_ID=other-id"))).await;
        // A closure generator accepts any well-formed id.
        assert_eq!(session(&seen).id().as_str(), "other-id");
        assert_eq!(pair(&res), "WS_SESSION_ID=other-id");
        call(&l, &seen, upgrade(None)).await;
        assert_eq!(session(&seen).id().as_str(), "fixed-id");
    }

    #[tokio::test]
    async fn guard_from_session_is_counted_by_the_layer_drain() {
        let seen = Arc::new(Seen::default());
        let l = layer(StickyUpgradeLayer::builder());
        call(&l, &seen, upgrade(None)).await;
        let guard = session(&seen).guard();
        assert_eq!(l.stats().active, 1);
        drop(guard);
        assert_eq!(l.drain().active(), 0);
    }

    /// An upgrade counts in `Drain::active` from the layer's decision until its
    /// response is out, whatever the answer, and no longer.
    #[tokio::test]
    async fn an_upgrade_counts_for_draining_until_its_response_is_out() {
        let l = layer(StickyUpgradeLayer::builder());
        for status in [StatusCode::SWITCHING_PROTOCOLS, StatusCode::BAD_REQUEST] {
            let drain = l.drain().clone();
            let svc = StickyUpgrade::new(
                service_fn(move |_: Request<()>| {
                    let during = drain.active();
                    async move {
                        let mut res = Response::new(());
                        *res.status_mut() = status;
                        // What the handler saw, sent back in a header.
                        res.headers_mut().insert("x-active", during.into());
                        Ok::<_, Infallible>(res)
                    }
                }),
                l.clone(),
            );
            let res = svc.oneshot(upgrade(None)).await.unwrap();
            assert_eq!(res.headers()["x-active"], "1", "{status}");
            assert_eq!(l.drain().active(), 0, "{status}");
        }
        // A plain request is never counted.
        let drain = l.drain().clone();
        let svc = StickyUpgrade::new(
            service_fn(move |_: Request<()>| {
                let during = drain.active();
                async move { Ok::<_, Infallible>(Response::new(during)) }
            }),
            l.clone(),
        );
        let res = svc.oneshot(Request::new(())).await.unwrap();
        assert_eq!(*res.body(), 0);
    }

    #[tokio::test]
    async fn an_upgrade_stops_counting_when_its_future_is_dropped_or_fails() {
        let l = layer(StickyUpgradeLayer::builder());
        let mut svc = StickyUpgrade::new(
            service_fn(|req: Request<()>| async move {
                match req.uri().path() {
                    "/fail" => Err("inner service failed"),
                    "/panic" => panic!("inner service panicked"),
                    "/pending" => std::future::pending().await,
                    _ => Ok(Response::new(())),
                }
            }),
            l.clone(),
        );
        let to = |path: &'static str| {
            let mut req = upgrade(None);
            *req.uri_mut() = http::Uri::from_static(path);
            req
        };
        let unpolled = svc.call(upgrade(None));
        assert_eq!(l.drain().active(), 1);
        drop(unpolled); // the client went away before the answer
        assert_eq!(l.drain().active(), 0);

        // Polled, still waiting on the service, then dropped (a timeout).
        let mut waiting = Box::pin(svc.call(to("/pending")));
        assert!(futures_util::poll!(waiting.as_mut()).is_pending());
        assert_eq!(l.drain().active(), 1);
        drop(waiting);
        assert_eq!(l.drain().active(), 0);

        assert!(svc.call(to("/fail")).await.is_err());
        assert_eq!(l.drain().active(), 0);

        // A panic in the service unwinds through the response future.
        let panicking = svc.call(to("/panic"));
        assert!(tokio::spawn(panicking).await.unwrap_err().is_panic());
        assert_eq!(l.drain().active(), 0);
    }

    #[tokio::test]
    async fn an_upgrade_refused_while_draining_is_not_counted() {
        let seen = Arc::new(Seen::default());
        let l = layer(StickyUpgradeLayer::builder());
        l.drain().start();
        let res = call(&l, &seen, upgrade(None)).await;
        assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(l.drain().active(), 0);
    }

    /// An inner service that answers `poll_ready` with a fixed readiness.
    struct Readiness(Poll<Result<(), &'static str>>);

    impl tower_service::Service<Request<()>> for Readiness {
        type Response = Response<()>;
        type Error = &'static str;
        type Future = std::future::Ready<Result<Response<()>, &'static str>>;

        fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
            self.0
        }

        fn call(&mut self, _req: Request<()>) -> Self::Future {
            std::future::ready(Ok(Response::new(())))
        }
    }

    /// The layer adds no readiness of its own: it is ready only when the inner
    /// service is, and passes on its error. Backpressure inside the layer (a
    /// `ConcurrencyLimit`, a `Buffer` that is full) depends on it, and a
    /// service that failed must not be called as if it were ready.
    #[tokio::test]
    async fn poll_ready_is_the_inner_services() {
        for readiness in [
            Poll::Pending,
            Poll::Ready(Err("inner service failed")),
            Poll::Ready(Ok(())),
        ] {
            let mut svc = StickyUpgrade::new(Readiness(readiness), StickyUpgradeLayer::new());
            let seen = std::future::poll_fn(|cx| Poll::Ready(svc.poll_ready(cx))).await;
            assert_eq!(seen, readiness, "the inner service said {readiness:?}");
        }
    }

    #[test]
    fn service_is_send_sync_and_clone_when_inner_is() {
        fn check<T: Send + Sync + Clone>(_: &T) {}
        let svc = StickyUpgrade::new(
            inner(Arc::default(), StatusCode::OK, &[]),
            StickyUpgradeLayer::new(),
        );
        check(&svc);
        fn check_session<T: Send + Sync + Clone>() {}
        check_session::<StickySession>();
        let _: Result<StickyUpgradeLayer, BuildError> = StickyUpgradeLayer::builder().build();
    }
}
