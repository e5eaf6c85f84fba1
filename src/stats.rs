//! Counters of what the layer decided.

use std::sync::atomic::{AtomicU64, Ordering};

/// A snapshot of the counters of a [`StickyUpgradeLayer`](crate::StickyUpgradeLayer),
/// from [`StickyUpgradeLayer::stats`](crate::StickyUpgradeLayer::stats).
///
/// Counters only grow, from the moment the layer was built; `active` is the
/// number of sockets tracked by the layer's [`Drain`](crate::Drain) right now.
/// Export them to your metrics system by polling.
///
/// # Example
///
/// ```
/// use tower_sticky_upgrade::StickyUpgradeLayer;
///
/// let layer = StickyUpgradeLayer::new();
/// let stats = layer.stats();
/// assert_eq!(stats.upgrades, 0);
/// assert_eq!(stats.issued + stats.kept + stats.migrated, 0);
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// Upgrade requests seen (HTTP/1.1 and extended CONNECT), refused ones included.
    /// Built without the `http2` feature, HTTP/2 and HTTP/3 `CONNECT` requests
    /// refused for their `Origin` count here too (see `refused_origin`).
    pub upgrades: u64,
    /// Upgrades that got a new session id. Counted when the layer decides,
    /// before the app answers: an upgrade the app then refuses (no `101`, so
    /// no cookie sent) is counted here too, as in `kept` and `migrated`.
    pub issued: u64,
    /// Upgrades whose valid cookie named this node or carried no node tag, or
    /// any valid cookie when this layer has no node id.
    pub kept: u64,
    /// Upgrades whose valid cookie named another node.
    pub migrated: u64,
    /// Upgrades that carried an affinity cookie the layer rejected (bad shape,
    /// bytes outside cookie-octets, an id the generator would not make, bad
    /// signature, too long); each such upgrade counts once.
    pub invalid_cookies: u64,
    /// Upgrades answered `503` because draining had started.
    pub refused_draining: u64,
    /// Upgrades answered `403` because of their `Origin`. Built without the
    /// `http2` feature, this includes HTTP/2 and HTTP/3 `CONNECT` requests
    /// refused for it (the layer cannot tell which are WebSockets).
    pub refused_origin: u64,
    /// Sockets tracked by the drain right now, as [`Drain::active`](crate::Drain::active)
    /// counts them (upgrades whose response is not out yet included).
    pub active: usize,
}

/// One counter per outcome: every upgrade bumps exactly one, so `upgrades` is
/// their sum and costs no atomic operation of its own on the request path.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) issued: AtomicU64,
    pub(crate) kept: AtomicU64,
    pub(crate) migrated: AtomicU64,
    pub(crate) invalid_cookies: AtomicU64,
    pub(crate) refused_draining: AtomicU64,
    pub(crate) refused_origin: AtomicU64,
}

impl Counters {
    #[inline]
    pub(crate) fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn snapshot(&self, active: usize) -> Stats {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let (issued, kept, migrated) = (get(&self.issued), get(&self.kept), get(&self.migrated));
        let refused_draining = get(&self.refused_draining);
        let refused_origin = get(&self.refused_origin);
        Stats {
            upgrades: issued + kept + migrated + refused_draining + refused_origin,
            issued,
            kept,
            migrated,
            invalid_cookies: get(&self.invalid_cookies),
            refused_draining,
            refused_origin,
            active,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;

    use http::header::{CONNECTION, COOKIE, ORIGIN, UPGRADE};
    use http::{Request, Response, StatusCode};
    use tower::{service_fn, Layer, ServiceExt};

    use crate::{IdGenerator, StickyUpgradeLayer, UuidV4};

    fn upgrade() -> http::request::Builder {
        Request::get("/ws")
            .header(CONNECTION, "upgrade")
            .header(UPGRADE, "websocket")
    }

    #[tokio::test]
    async fn every_upgrade_counts_once_and_plain_requests_not_at_all() {
        let layer = StickyUpgradeLayer::builder()
            .node_id("a")
            .allowed_origins(["https://ok.example"])
            .build()
            .unwrap();
        let svc = layer.layer(service_fn(|_: Request<()>| async {
            let mut res = Response::new(());
            *res.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
            Ok::<_, Infallible>(res)
        }));
        let id = UuidV4.generate();
        let requests = [
            Request::get("/").body(()).unwrap(),
            upgrade().body(()).unwrap(),
            upgrade()
                .header(COOKIE, format!("WS_SESSION_ID={id}.a"))
                .body(())
                .unwrap(),
            upgrade()
                .header(COOKIE, format!("WS_SESSION_ID={id}.b"))
                .body(())
                .unwrap(),
            upgrade()
                .header(COOKIE, "WS_SESSION_ID=forged")
                .body(())
                .unwrap(),
            upgrade()
                .header(ORIGIN, "https://evil.example")
                .body(())
                .unwrap(),
        ];
        for req in requests {
            svc.clone().oneshot(req).await.unwrap();
        }
        layer.drain().start();
        let res = svc.oneshot(upgrade().body(()).unwrap()).await.unwrap();
        assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);

        let stats = layer.stats();
        assert_eq!(stats.upgrades, 6);
        assert_eq!((stats.issued, stats.kept, stats.migrated), (2, 1, 1));
        assert_eq!((stats.refused_origin, stats.refused_draining), (1, 1));
        assert_eq!(stats.invalid_cookies, 1);
    }
}
