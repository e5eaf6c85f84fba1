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
    pub upgrades: u64,
    /// Upgrades that got a new session id.
    pub issued: u64,
    /// Upgrades whose valid cookie named this node (or no node is configured).
    pub kept: u64,
    /// Upgrades whose valid cookie named another node.
    pub migrated: u64,
    /// Upgrades that carried an affinity cookie the layer rejected (bad shape,
    /// bad signature, too long, not UTF-8); each such upgrade counts once.
    pub invalid_cookies: u64,
    /// Upgrades answered `503` because draining had started.
    pub refused_draining: u64,
    /// Upgrades answered `403` because of their `Origin`.
    pub rejected_origin: u64,
    /// Sockets tracked by the drain right now.
    pub active: usize,
}

#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) upgrades: AtomicU64,
    pub(crate) issued: AtomicU64,
    pub(crate) kept: AtomicU64,
    pub(crate) migrated: AtomicU64,
    pub(crate) invalid_cookies: AtomicU64,
    pub(crate) refused_draining: AtomicU64,
    pub(crate) rejected_origin: AtomicU64,
}

impl Counters {
    #[inline]
    pub(crate) fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn snapshot(&self, active: usize) -> Stats {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        Stats {
            upgrades: get(&self.upgrades),
            issued: get(&self.issued),
            kept: get(&self.kept),
            migrated: get(&self.migrated),
            invalid_cookies: get(&self.invalid_cookies),
            refused_draining: get(&self.refused_draining),
            rejected_origin: get(&self.rejected_origin),
            active,
        }
    }
}
