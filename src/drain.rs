//! Draining upgraded sockets on deploy.
//!
//! hyper and axum stop tracking a connection once it is upgraded, so their
//! graceful shutdown cannot wait for WebSockets. A [`Drain`] fills that gap:
//! every upgraded socket holds a [`DrainGuard`], and on shutdown the app calls
//! [`Drain::start`], which
//!
//! 1. makes the [`StickyUpgrade`](crate::StickyUpgrade) layer refuse new upgrades
//!    with `503` and `Retry-After`, and the [`HealthService`]
//!    answer `503`, so the load balancer stops routing here;
//! 2. tells each guard to close its socket, one after another over the
//!    [close spread](DrainBuilder::close_spread) window, so that clients do not
//!    all reconnect in the same second; the app sends close code `1001` (going away).
//!    With a [close delay](DrainBuilder::close_delay), the window opens only
//!    once the balancer has had time to see the failing health check, so that
//!    clients closed early do not come straight back to this node;
//! 3. lets the app wait for the last guard to drop, with
//!    [`closed`](Drain::closed), or, before exiting, with [`wait`](Drain::wait),
//!    which has a deadline and also waits out the close delay.
//!
//! # Runtime
//!
//! [`Drain::start`], [`Drain::guard`], [`Drain::closed`], the health check
//! and dropping guards work from any thread and on any executor: `start()`
//! can be called from a signal-handling thread outside the runtime.
//! [`DrainGuard::closing`] (while it waits for its close time) and
//! [`Drain::wait`] use Tokio timers: they need a Tokio runtime with timers
//! enabled, and panic without one.
//!
//! # How it works
//!
//! The controller is an atomic count of live guards (and of upgrades the layer
//! let through whose response is not out yet, so that a drain starting during
//! a handshake waits for its socket), the instant draining started, and two
//! `tokio::sync::Notify`s (one for the start, one for the last guard leaving,
//! used only while someone waits for it): no registry, no lock while serving,
//! nothing allocated per socket. A guard is 24 bytes and the future of
//! [`DrainGuard::closing`] 88 bytes. Each guard gets a fixed offset in the
//! spread window from a golden-ratio sequence over its creation order, which
//! spaces any run of guards evenly however many there are. Once draining
//! starts, each socket still waiting for its turn holds one boxed timer until
//! it closes.
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//! use tower_sticky_upgrade::{Drain, DrainOutcome};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() {
//! let drain = Drain::with_close_spread(Duration::from_secs(2));
//! let guard = drain.guard(); // normally taken from a `StickySession`
//! let socket = tokio::spawn(async move {
//!     guard.closing().await;
//!     // send Close 1001 on the socket here, then drop the guard
//! });
//!
//! drain.start();
//! assert!(drain.is_draining());
//! assert_eq!(drain.wait(Duration::from_secs(30)).await, DrainOutcome::Drained);
//! assert_eq!(drain.active(), 0);
//! socket.await.unwrap();
//! # }
//! ```

use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

use crate::HealthService;

/// The close spread of [`Drain::new`]: open sockets are told to close over 10 seconds.
///
/// ```
/// use std::time::Duration;
/// use tower_sticky_upgrade::{Drain, DEFAULT_CLOSE_SPREAD};
///
/// assert_eq!(DEFAULT_CLOSE_SPREAD, Duration::from_secs(10));
/// assert_eq!(Drain::new().close_spread(), DEFAULT_CLOSE_SPREAD);
/// ```
pub const DEFAULT_CLOSE_SPREAD: Duration = Duration::from_secs(10);

/// The longest close spread: [`DrainBuilder::close_spread`] (and so
/// [`Drain::with_close_spread`]) caps the window here.
/// A day is far beyond any deregistration delay or grace period (AWS ALB allows
/// at most an hour), and keeps every close time representable.
///
/// ```
/// use std::time::Duration;
/// use tower_sticky_upgrade::{Drain, MAX_CLOSE_SPREAD};
///
/// let week = Duration::from_secs(7 * 24 * 60 * 60);
/// assert_eq!(Drain::with_close_spread(week).close_spread(), MAX_CLOSE_SPREAD);
/// assert_eq!(MAX_CLOSE_SPREAD, Duration::from_secs(24 * 60 * 60));
/// ```
pub const MAX_CLOSE_SPREAD: Duration = Duration::from_secs(24 * 60 * 60);

/// The longest close delay: [`DrainBuilder::close_delay`] caps the delay here,
/// for the same reasons as [`MAX_CLOSE_SPREAD`].
///
/// ```
/// use std::time::Duration;
/// use tower_sticky_upgrade::{Drain, MAX_CLOSE_DELAY};
///
/// let week = Duration::from_secs(7 * 24 * 60 * 60);
/// assert_eq!(Drain::builder().close_delay(week).build().close_delay(), MAX_CLOSE_DELAY);
/// assert_eq!(MAX_CLOSE_DELAY, Duration::from_secs(24 * 60 * 60));
/// ```
pub const MAX_CLOSE_DELAY: Duration = Duration::from_secs(24 * 60 * 60);

/// The drain controller, shared by the layer, the health check and the app.
///
/// Cloning is cheap and every clone controls the same drain. See the
/// [module docs](crate::drain) for the sequence on shutdown.
///
/// # Example
///
/// ```
/// use tower_sticky_upgrade::{Drain, StickyUpgradeLayer};
///
/// let drain = Drain::new();
/// let layer = StickyUpgradeLayer::builder().drain(drain.clone()).build().unwrap();
/// assert!(!layer.drain().is_draining());
/// drain.start();
/// assert!(layer.drain().is_draining());
/// ```
#[derive(Clone)]
pub struct Drain {
    inner: Arc<Inner>,
}

struct Inner {
    /// When draining started: set once, by the first `start()`.
    started: OnceLock<Instant>,
    /// Set right after `started` by every `start()` call, with sequentially
    /// consistent ordering: the flag every "is it draining?" reads (one plain
    /// load on x86-64). Paired
    /// with `active` so that an upgrade counted before it is let through is
    /// always seen by `closed()` (see `Drain::handshake`).
    draining: AtomicBool,
    /// Wakes the guards waiting for the start.
    start_signal: Notify,
    /// Live guards, and upgrades let through whose response is not out yet.
    active: AtomicUsize,
    /// Wakes `closed()` when `active` drops to zero.
    all_closed: Notify,
    /// How many `closed()` futures are waiting. Waking them takes a lock
    /// (`Notify::notify_waiters`), so `leave` only does it when there are any:
    /// on a node that is not draining, the count of every upgrade that ends
    /// without a guard (a refused handshake, or one in a benchmark) drops to
    /// zero, and nobody is waiting.
    waiting: AtomicUsize,
    /// From the start of draining to the opening of the spread window.
    close_delay: Duration,
    close_spread: Duration,
    next_slot: AtomicU64,
}

/// The result of [`Drain::wait`].
///
/// # Example
///
/// ```
/// use std::time::Duration;
/// use tower_sticky_upgrade::{Drain, DrainOutcome};
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() {
/// let drain = Drain::new();
/// let stubborn = drain.guard(); // a socket that never closes
/// drain.start();
/// let outcome = drain.wait(Duration::from_secs(1)).await;
/// assert_eq!(outcome, DrainOutcome::TimedOut { still_open: 1 });
/// drop(stubborn);
/// # }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DrainOutcome {
    /// Every tracked socket closed in the time given and, if draining had
    /// started, the close delay was over.
    Drained,
    /// The time given ran out before the drain was done: sockets were still
    /// open, or the [close delay](DrainBuilder::close_delay) was not over yet
    /// (`still_open` may then be 0).
    TimedOut {
        /// How many tracked sockets were open when the time ran out.
        still_open: usize,
    },
}

impl Drain {
    /// A drain that spreads closes over [`DEFAULT_CLOSE_SPREAD`] from the
    /// moment it starts.
    ///
    /// ```
    /// use std::time::Duration;
    /// use tower_sticky_upgrade::{Drain, DEFAULT_CLOSE_SPREAD};
    ///
    /// let drain = Drain::new();
    /// assert!(!drain.is_draining());
    /// assert_eq!(drain.active(), 0);
    /// assert_eq!(drain.close_delay(), Duration::ZERO);
    /// assert_eq!(drain.close_spread(), DEFAULT_CLOSE_SPREAD);
    /// ```
    #[must_use]
    pub fn new() -> Self {
        Self::builder().build()
    }

    /// A builder, to set a [close delay](DrainBuilder::close_delay) as well as
    /// the [close spread](DrainBuilder::close_spread).
    ///
    /// ```
    /// use std::time::Duration;
    /// use tower_sticky_upgrade::Drain;
    ///
    /// let drain = Drain::builder()
    ///     .close_delay(Duration::from_secs(10))
    ///     .close_spread(Duration::from_secs(20))
    ///     .build();
    /// assert_eq!(drain.close_delay(), Duration::from_secs(10));
    /// assert_eq!(drain.close_spread(), Duration::from_secs(20));
    /// ```
    pub fn builder() -> DrainBuilder {
        DrainBuilder {
            close_delay: Duration::ZERO,
            close_spread: DEFAULT_CLOSE_SPREAD,
        }
    }

    /// A drain that spreads the close signals of open sockets over `window`
    /// from the moment it [starts](Self::start), with no close delay; the same
    /// as `Drain::builder().close_spread(window).build()` (see
    /// [`DrainBuilder::close_spread`]).
    ///
    /// ```
    /// use std::time::Duration;
    /// use tower_sticky_upgrade::{Drain, MAX_CLOSE_SPREAD};
    ///
    /// let drain = Drain::with_close_spread(Duration::from_secs(30));
    /// assert_eq!(drain.close_spread(), Duration::from_secs(30));
    /// assert_eq!(drain.close_delay(), Duration::ZERO);
    /// assert_eq!(Drain::with_close_spread(Duration::MAX).close_spread(), MAX_CLOSE_SPREAD);
    /// ```
    #[must_use]
    pub fn with_close_spread(window: Duration) -> Self {
        Self::builder().close_spread(window).build()
    }

    /// How long after [`start`](Self::start) the first socket is told to close.
    ///
    /// ```
    /// use std::time::Duration;
    /// use tokio::time::Instant;
    /// use tower_sticky_upgrade::Drain;
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() {
    /// let drain = Drain::builder().close_delay(Duration::from_secs(8)).build();
    /// assert_eq!(drain.close_delay(), Duration::from_secs(8));
    ///
    /// let first = drain.guard();
    /// let started = Instant::now();
    /// drain.start();
    /// assert_eq!(first.close_at(), Some(started + drain.close_delay()));
    /// # }
    /// ```
    pub fn close_delay(&self) -> Duration {
        self.inner.close_delay
    }

    /// The window close signals are spread over, once the close delay is over.
    ///
    /// ```
    /// use std::time::Duration;
    /// use tokio::time::Instant;
    /// use tower_sticky_upgrade::Drain;
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() {
    /// let drain = Drain::with_close_spread(Duration::from_secs(20));
    /// let guards: Vec<_> = (0..100).map(|_| drain.guard()).collect();
    /// let started = Instant::now();
    /// drain.start();
    /// let times: Vec<Instant> = guards.iter().map(|g| g.close_at().unwrap()).collect();
    /// let window = started..started + drain.close_spread();
    /// assert!(times.iter().all(|at| window.contains(at)));
    /// // Spread over the window, not all at once.
    /// let (first, last) = (times.iter().min().unwrap(), times.iter().max().unwrap());
    /// assert!(*last - *first >= Duration::from_secs(15));
    /// # }
    /// ```
    pub fn close_spread(&self) -> Duration {
        self.inner.close_spread
    }

    /// Starts draining. Returns `true` for the call that started it; later
    /// calls, from any thread, change nothing and return `false`.
    ///
    /// ```
    /// use tower_sticky_upgrade::Drain;
    ///
    /// let drain = Drain::new();
    /// let on_sigterm = drain.clone();
    /// assert!(on_sigterm.start());
    /// assert!(!drain.start()); // already started, through the clone
    /// assert!(drain.is_draining());
    /// ```
    pub fn start(&self) -> bool {
        let first = self.inner.started.set(Instant::now()).is_ok();
        // Stored by every call, not only the first: a call that loses the race
        // returns as soon as `started` is set, maybe before the first one stored
        // the flag, and its caller must see the drain from then on (a
        // `closed()` it awaits relies on the layer refusing upgrades).
        self.inner.draining.store(true, Ordering::SeqCst);
        if !first {
            return false;
        }
        self.inner.start_signal.notify_waiters();
        tracing::info!(
            active = self.active(),
            close_delay_ms = self.inner.close_delay.as_millis() as u64,
            close_spread_ms = self.inner.close_spread.as_millis() as u64,
            "drain started"
        );
        true
    }

    /// Whether [`start`](Self::start) was called.
    ///
    /// ```
    /// use tower_sticky_upgrade::Drain;
    ///
    /// let drain = Drain::new();
    /// assert!(!drain.is_draining());
    /// drain.start();
    /// assert!(drain.is_draining());
    /// assert!(drain.clone().is_draining());
    /// ```
    #[inline]
    pub fn is_draining(&self) -> bool {
        self.inner.draining.load(Ordering::SeqCst)
    }

    /// How many sockets are tracked: guards alive right now, plus upgrade
    /// requests the layer let through whose response is not out yet (their
    /// handler is about to take a guard, or to refuse the upgrade).
    ///
    /// ```
    /// use tower_sticky_upgrade::Drain;
    ///
    /// let drain = Drain::new();
    /// let a = drain.guard();
    /// let b = drain.clone().guard(); // clones count into the same drain
    /// assert_eq!(drain.active(), 2);
    /// drop(a);
    /// assert_eq!(drain.active(), 1);
    /// drop(b);
    /// assert_eq!(drain.active(), 0);
    /// ```
    pub fn active(&self) -> usize {
        self.inner.active.load(Ordering::SeqCst)
    }

    /// Counts an upgrade request from before the layer checks
    /// [`is_draining`](Self::is_draining) until its response is out, by which
    /// time the handler holds its own guard. Without it, a drain that starts
    /// while the handler runs would see no socket, report
    /// [`Drained`](DrainOutcome::Drained), and the process would exit under a
    /// socket it is about to upgrade.
    ///
    /// Both sides use sequentially consistent operations: the count is raised
    /// before `draining` is read here, and `draining` is set before the count is
    /// read by [`closed`](Self::closed). So either this upgrade sees the drain
    /// (and is refused), or the drain sees this upgrade (and waits for it).
    pub(crate) fn handshake(&self) -> Handshake {
        self.inner.active.fetch_add(1, Ordering::SeqCst);
        Handshake {
            inner: Arc::clone(&self.inner),
        }
    }

    /// A guard for one upgraded socket; see [`DrainGuard`]. Usually taken with
    /// [`StickySession::guard`](crate::StickySession::guard).
    ///
    /// A guard taken once the spread window is open is told to close at once:
    ///
    /// ```
    /// use tokio::time::Instant;
    /// use tower_sticky_upgrade::Drain;
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() {
    /// let drain = Drain::new(); // 10 s close spread, no close delay
    /// drain.start();
    /// let late = drain.guard();
    /// assert_eq!(drain.active(), 1);
    /// assert_eq!(late.close_at(), Some(Instant::now()));
    /// late.closing().await; // resolves at once
    /// # }
    /// ```
    #[must_use = "the socket is tracked only while the guard lives: move it into the socket's task"]
    pub fn guard(&self) -> DrainGuard {
        self.inner.active.fetch_add(1, Ordering::SeqCst);
        // A guard taken once the window is open closes at once. Before that,
        // during the close delay too, it takes the next place in the window:
        // guards arriving during the delay must not all close at its end.
        let window_open = match self.inner.started.get() {
            Some(&start) => Instant::now() >= self.inner.window_opens(start),
            None => false,
        };
        let offset = if window_open {
            Duration::ZERO
        } else {
            let slot = self.inner.next_slot.fetch_add(1, Ordering::Relaxed);
            spread_offset(slot, self.inner.close_spread)
        };
        DrainGuard {
            inner: Arc::clone(&self.inner),
            offset,
        }
    }

    /// Resolves when no socket is tracked (at once if none is). Usually awaited
    /// after [`start`](Self::start). The future does not borrow `self`.
    ///
    /// ```
    /// use std::time::Duration;
    /// use tokio::time::timeout;
    /// use tower_sticky_upgrade::Drain;
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() {
    /// let drain = Drain::new();
    /// drain.closed().await; // no socket: at once
    ///
    /// let guard = drain.guard();
    /// let open = timeout(Duration::from_secs(60), drain.closed()).await;
    /// assert!(open.is_err()); // still waiting for `guard`
    /// let closed = tokio::spawn(drain.closed()); // `'static`: no borrow of `drain`
    /// drop(guard);
    /// closed.await.unwrap();
    /// # }
    /// ```
    pub fn closed(&self) -> impl Future<Output = ()> + Send + 'static {
        let inner = Arc::clone(&self.inner);
        async move {
            // Counted before the first check, and for as long as this future
            // lives, cancelled or not (see `Inner::leave`).
            let _waiting = Waiting::new(&inner);
            loop {
                // Created before the check: a `Notified` receives
                // `notify_waiters` from then on, so a guard dropped in between
                // still wakes this waiter.
                let notified = inner.all_closed.notified();
                if inner.active.load(Ordering::SeqCst) == 0 {
                    return;
                }
                notified.await;
            }
        }
    }

    /// Waits until the drain is done, or until `timeout` has passed,
    /// whichever comes first. Done means no socket is tracked and, once draining
    /// started, the [close delay](DrainBuilder::close_delay) is over: until
    /// then the balancer may still route here, so the process must keep its
    /// listener open (health `503`, upgrades refused with `503`) rather than
    /// exit and have connections refused. Without a close delay, done is the
    /// same as [`closed`](Self::closed).
    ///
    /// Keep the timeout below the load balancer's deregistration delay (AWS
    /// ALB: 300 s by default) so the process exits before the balancer gives
    /// up on it, and above the close delay plus the close spread plus a close
    /// handshake, so the last sockets get their `1001`. A timeout that ends
    /// within the close delay gives
    /// [`TimedOut`](DrainOutcome::TimedOut), even with no socket open.
    ///
    /// # Panics
    ///
    /// When polled outside a Tokio runtime, or in one built without timers
    /// (`enable_time`, which `enable_all` and `#[tokio::main]` include): the
    /// timeout is a Tokio timer. [`closed`](Self::closed) needs no runtime.
    ///
    /// ```
    /// use std::time::Duration;
    /// use tokio::time::Instant;
    /// use tower_sticky_upgrade::{Drain, DrainOutcome};
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() {
    /// let drain = Drain::builder().close_delay(Duration::from_secs(8)).build();
    /// let started = Instant::now();
    /// drain.start();
    /// // No socket is open, but the balancer may route here for 8 s more.
    /// assert_eq!(drain.wait(Duration::from_secs(30)).await, DrainOutcome::Drained);
    /// assert!(started.elapsed() >= Duration::from_secs(8));
    /// # }
    /// ```
    pub fn wait(&self, timeout: Duration) -> impl Future<Output = DrainOutcome> + Send + 'static {
        let this = self.clone();
        async move {
            let done = async {
                this.closed().await;
                if let Some(&start) = this.inner.started.get() {
                    let delay_over = this.inner.window_opens(start);
                    if Instant::now() < delay_over {
                        tokio::time::sleep_until(delay_over).await;
                        // The app may have taken a guard of its own meanwhile.
                        this.closed().await;
                    }
                }
            };
            match tokio::time::timeout(timeout, done).await {
                Ok(()) => DrainOutcome::Drained,
                Err(_) => DrainOutcome::TimedOut {
                    still_open: this.active(),
                },
            }
        }
    }

    /// A health-check service that answers `200 ok` while serving and
    /// `503 draining` once draining started.
    ///
    /// ```
    /// use http::StatusCode;
    /// use tower_sticky_upgrade::Drain;
    ///
    /// let drain = Drain::new();
    /// let health = drain.health_service();
    /// assert_eq!(health.response().status(), StatusCode::OK);
    /// drain.start();
    /// assert_eq!(health.response().status(), StatusCode::SERVICE_UNAVAILABLE);
    /// ```
    #[must_use]
    pub fn health_service(&self) -> HealthService {
        HealthService::new(self.clone())
    }
}

impl Default for Drain {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for Drain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Drain")
            .field("draining", &self.is_draining())
            .field("active", &self.active())
            .field("close_delay", &self.inner.close_delay)
            .field("close_spread", &self.inner.close_spread)
            .finish()
    }
}

/// Builds a [`Drain`]: when, after [`Drain::start`], open sockets are told to
/// close. Made by [`Drain::builder`].
///
/// The timeline of a drain: at `start()` new upgrades are refused and the
/// health check answers `503` at once; after the close delay the spread window
/// opens, and each open socket is told to close at its own place in it.
///
/// # Example
///
/// ```
/// use std::time::Duration;
/// use tower_sticky_upgrade::{Drain, StickyUpgradeLayer};
///
/// // HAProxy checking every 2 s, taking a node out after 3 failed checks
/// // (6 s), plus a margin.
/// let drain = Drain::builder()
///     .close_delay(Duration::from_secs(8))
///     .close_spread(Duration::from_secs(10))
///     .build();
/// let layer = StickyUpgradeLayer::builder().drain(drain.clone()).build().unwrap();
/// assert_eq!(layer.drain().close_delay(), Duration::from_secs(8));
/// ```
#[derive(Debug, Clone)]
#[must_use = "a builder does nothing until `build` is called"]
pub struct DrainBuilder {
    close_delay: Duration,
    close_spread: Duration,
}

impl DrainBuilder {
    /// How long to wait after [`Drain::start`] before the first socket is told
    /// to close. Default: `Duration::ZERO`, the spread starts with the drain.
    ///
    /// Set it when the load balancer learns of the drain from the failing
    /// health check, and so keeps routing here for a while: at least the check
    /// interval × the unhealthy threshold (HAProxy `inter` × `fall`; ALB
    /// `interval` × `unhealthy_threshold`), plus a margin (ALB takes a few
    /// seconds more until all its nodes agree). A client closed before then
    /// reconnects to this node and is refused with `503`; one closed after
    /// goes straight to a live node. Leave it at zero when the balancer stops
    /// routing here before the process is told to stop (an ALB target that is
    /// deregistered first).
    ///
    /// The drain deadline must leave room for the delay, the spread and a close
    /// handshake. A delay over [`MAX_CLOSE_DELAY`] (a day) is taken as that.
    ///
    /// ```
    /// use std::time::Duration;
    /// use tower_sticky_upgrade::{Drain, MAX_CLOSE_DELAY};
    ///
    /// let drain = Drain::builder().close_delay(Duration::MAX).build();
    /// assert_eq!(drain.close_delay(), MAX_CLOSE_DELAY);
    /// ```
    pub fn close_delay(mut self, delay: Duration) -> Self {
        self.close_delay = delay.min(MAX_CLOSE_DELAY);
        self
    }

    /// The window the close signals of open sockets are spread over, once the
    /// close delay is over; `Duration::ZERO` signals all at once. Default:
    /// [`DEFAULT_CLOSE_SPREAD`].
    ///
    /// Pick a window that the drain deadline leaves room for, and that lets the
    /// other nodes absorb the reconnects: clients reconnect at about
    /// `open sockets / window` per second. A window over [`MAX_CLOSE_SPREAD`]
    /// (a day) is taken as that.
    ///
    /// ```
    /// use std::time::Duration;
    /// use tower_sticky_upgrade::{Drain, MAX_CLOSE_SPREAD};
    ///
    /// let drain = Drain::builder().close_spread(Duration::from_secs(30)).build();
    /// assert_eq!(drain.close_spread(), Duration::from_secs(30));
    /// let drain = Drain::builder().close_spread(Duration::MAX).build();
    /// assert_eq!(drain.close_spread(), MAX_CLOSE_SPREAD);
    /// ```
    pub fn close_spread(mut self, window: Duration) -> Self {
        self.close_spread = window.min(MAX_CLOSE_SPREAD);
        self
    }

    /// The drain. Each call makes a new controller, which shares nothing with
    /// drains built before.
    ///
    /// ```
    /// use std::time::Duration;
    /// use tower_sticky_upgrade::Drain;
    ///
    /// let builder = Drain::builder().close_spread(Duration::from_secs(5));
    /// let a = builder.clone().build();
    /// let b = builder.build();
    /// assert_eq!(b.close_spread(), Duration::from_secs(5));
    /// a.start();
    /// assert!(!b.is_draining());
    /// ```
    #[must_use]
    pub fn build(self) -> Drain {
        Drain {
            inner: Arc::new(Inner {
                started: OnceLock::new(),
                draining: AtomicBool::new(false),
                start_signal: Notify::new(),
                active: AtomicUsize::new(0),
                all_closed: Notify::new(),
                waiting: AtomicUsize::new(0),
                close_delay: self.close_delay,
                close_spread: self.close_spread,
                next_slot: AtomicU64::new(0),
            }),
        }
    }
}

impl Default for DrainBuilder {
    fn default() -> Self {
        Drain::builder()
    }
}

/// Where in the window the `slot`-th guard closes: the fractional parts of
/// `slot / φ` (a Weyl sequence) are spread evenly over `[0, 1)` for any run of
/// consecutive slots, so sockets close at a steady rate whatever their number.
///
/// In integer nanoseconds, rounded down, so that the offset stays below the
/// window: `Duration::mul_f64` rounds to the nearest nanosecond, which for a
/// fraction just under 1 is the whole window.
fn spread_offset(slot: u64, window: Duration) -> Duration {
    const INV_GOLDEN_RATIO_64: u64 = 0x9E37_79B9_7F4A_7C15;
    // The fraction, as a 64-bit fixed-point number in [0, 1).
    let fraction = u128::from(slot.wrapping_mul(INV_GOLDEN_RATIO_64));
    // At most a day (under 2^47 ns) times under 2^64: no overflow.
    let nanos = (window.as_nanos() * fraction) >> 64;
    Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
}

/// Tracks one upgraded socket for a [`Drain`].
///
/// While the guard lives it counts in [`Drain::active`]; drop it when the socket
/// is gone. [`closing`](Self::closing) resolves when this socket should be
/// closed (send close code `1001`, going away).
///
/// A guard counts one socket, so it is not `Clone`. When the socket is split
/// between tasks (a reader and a writer, say), keep the guard in the task that
/// sends the close frame, or share it in an `Arc` (it is `Send` and `Sync`) if
/// several tasks wait on [`closing`](Self::closing); the socket counts until
/// the last `Arc` is dropped.
///
/// # Example
///
/// ```
/// use std::time::Duration;
/// use tower_sticky_upgrade::Drain;
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() {
/// let drain = Drain::with_close_spread(Duration::ZERO);
/// let guard = drain.guard();
/// assert_eq!(drain.active(), 1);
///
/// drain.start();
/// guard.closing().await; // resolves at once: the spread is zero
/// assert!(guard.is_draining());
/// drop(guard);
/// assert_eq!(drain.active(), 0);
/// # }
/// ```
#[must_use = "the socket is tracked only while the guard lives: move it into the socket's task"]
pub struct DrainGuard {
    inner: Arc<Inner>,
    offset: Duration,
}

impl DrainGuard {
    /// Whether draining started.
    ///
    /// ```
    /// use tower_sticky_upgrade::Drain;
    ///
    /// let drain = Drain::new();
    /// let guard = drain.guard();
    /// assert!(!guard.is_draining());
    /// drain.start();
    /// assert!(guard.is_draining());
    /// ```
    pub fn is_draining(&self) -> bool {
        self.inner.draining.load(Ordering::SeqCst)
    }

    /// When this socket should close, once draining started.
    ///
    /// ```
    /// use std::time::Duration;
    /// use tokio::time::Instant;
    /// use tower_sticky_upgrade::Drain;
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() {
    /// let drain = Drain::builder().close_delay(Duration::from_secs(5)).build();
    /// let guard = drain.guard();
    /// assert_eq!(guard.close_at(), None); // not draining yet
    ///
    /// let started = Instant::now();
    /// drain.start();
    /// let at = guard.close_at().unwrap();
    /// assert!(at >= started + drain.close_delay());
    /// guard.closing().await;
    /// assert!(Instant::now() >= at);
    /// # }
    /// ```
    pub fn close_at(&self) -> Option<Instant> {
        self.inner
            .started
            .get()
            .map(|&start| self.inner.close_at(start, self.offset))
    }

    /// Resolves when this socket should close: its place in the spread window
    /// after [`Drain::start`] and the close delay. A guard taken during the
    /// delay gets a place in the window too; one taken once the window is open
    /// closes at once.
    ///
    /// Cancel-safe: the close time is fixed when draining starts, so calling it
    /// again (as in a `tokio::select!` loop) waits for the same instant. Make it
    /// once per socket all the same: each new future boxes a new timer once
    /// draining has started. The future borrows the guard, so a
    /// `tokio::pin!`-ed one must be gone before an explicit `drop(guard)`:
    /// pin it inside a block that ends with the loop, or let both go out of
    /// scope together.
    ///
    /// # Panics
    ///
    /// When it has to wait for its close time (a close delay or a place in
    /// the spread window still ahead) and is polled outside a Tokio runtime,
    /// or in one built without timers (`enable_time`, which `enable_all` and
    /// `#[tokio::main]` include), as `tokio::time::sleep` does. A runtime
    /// built with `enable_io()` alone serves sockets fine and would panic
    /// only here, during the drain. Waiting for the drain to start, and
    /// resolving once the close time has come, need no runtime.
    ///
    /// ```
    /// use std::time::Duration;
    /// use tokio::time::timeout;
    /// use tower_sticky_upgrade::Drain;
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() {
    /// let drain = Drain::with_close_spread(Duration::ZERO);
    /// let guard = drain.guard();
    /// // Not draining: an hour (of paused time) passes without a signal.
    /// let early = timeout(Duration::from_secs(3600), guard.closing()).await;
    /// assert!(early.is_err());
    /// drain.start();
    /// guard.closing().await; // now it resolves, here at once
    /// # }
    /// ```
    pub async fn closing(&self) {
        let start = loop {
            // A `Notified` receives `notify_waiters` from the moment it is
            // created, so a `start()` between here and the check still wakes it.
            let notified = self.inner.start_signal.notified();
            if let Some(&start) = self.inner.started.get() {
                break start;
            }
            notified.await;
        };
        let close_at = self.inner.close_at(start, self.offset);
        if Instant::now() < close_at {
            // Boxed so that a socket waiting for the drain to start (all its
            // life, usually) does not carry a timer inline in its task.
            Box::pin(tokio::time::sleep_until(close_at)).await;
        }
    }
}

impl Drop for DrainGuard {
    fn drop(&mut self) {
        self.inner.leave();
    }
}

impl Inner {
    /// When the socket at `offset` in the window closes, for a drain that
    /// started at `start`. Cannot overflow: the delay and the offset are each
    /// at most a day.
    fn close_at(&self, start: Instant, offset: Duration) -> Instant {
        self.window_opens(start) + offset
    }

    /// When the spread window opens (the close delay is over), for a drain
    /// that started at `start`.
    fn window_opens(&self, start: Instant) -> Instant {
        start + self.close_delay
    }

    /// One guard or handshake less; wakes `closed()` at zero.
    ///
    /// `closed()` raises `waiting` before it reads `active`, and this lowers
    /// `active` before it reads `waiting`, all sequentially consistent. So
    /// either `closed()` reads the lowered count (and returns), or this sees it
    /// waiting (and wakes it: its `Notified` was made before its read of the
    /// count, so before this wake-up).
    fn leave(&self) {
        if self.active.fetch_sub(1, Ordering::SeqCst) == 1
            && self.waiting.load(Ordering::SeqCst) != 0
        {
            self.all_closed.notify_waiters();
        }
    }
}

/// One waiting `closed()` future in [`Inner::waiting`], from its creation
/// until it is dropped.
struct Waiting<'a>(&'a Inner);

impl<'a> Waiting<'a> {
    fn new(inner: &'a Inner) -> Self {
        inner.waiting.fetch_add(1, Ordering::SeqCst);
        Self(inner)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.waiting.fetch_sub(1, Ordering::SeqCst);
    }
}

/// An upgrade request counted in [`Drain::active`] until its response is out;
/// see [`Drain::handshake`].
pub(crate) struct Handshake {
    inner: Arc<Inner>,
}

impl Drop for Handshake {
    fn drop(&mut self) {
        self.inner.leave();
    }
}

impl fmt::Debug for DrainGuard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DrainGuard")
            .field("draining", &self.is_draining())
            .field("offset", &self.offset)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// For the two-thread race tests: both threads arrive at `round`
    /// (`arrivals` reaches `2 * round + 2`), spinning; bounded by a deadline
    /// in case the other thread has died.
    fn meet(arrivals: &AtomicUsize, round: usize) {
        arrivals.fetch_add(1, Ordering::SeqCst);
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        let mut spins = 0u32;
        while arrivals.load(Ordering::SeqCst) < 2 * round + 2 {
            std::hint::spin_loop();
            spins = spins.wrapping_add(1);
            if spins % 1024 == 0 {
                assert!(
                    std::time::Instant::now() < deadline,
                    "round {round}: no partner"
                );
                std::thread::yield_now();
            }
        }
    }

    /// A short busy wait of `n` spins, to shift where in the race a thread acts.
    fn spin(n: usize) {
        for _ in 0..n {
            std::hint::spin_loop();
        }
    }

    #[tokio::test(start_paused = true)]
    async fn start_is_idempotent() {
        let drain = Drain::new();
        assert!(drain.start());
        let first = drain.guard();
        assert!(!drain.start());
        assert!(drain.is_draining());
        assert!(first.is_draining());
    }

    #[tokio::test(start_paused = true)]
    async fn active_counts_live_guards() {
        let drain = Drain::new();
        assert_eq!(drain.active(), 0);
        let a = drain.guard();
        let b = drain.clone().guard();
        assert_eq!(drain.active(), 2);
        drop(a);
        assert_eq!(drain.active(), 1);
        drop(b);
        assert_eq!(drain.active(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn closed_resolves_at_once_without_guards() {
        let drain = Drain::new();
        tokio::time::timeout(Duration::from_millis(1), drain.closed())
            .await
            .expect("no guard, nothing to wait for");
    }

    #[tokio::test(start_paused = true)]
    async fn closing_waits_for_start_then_its_offset() {
        let drain = Drain::with_close_spread(Duration::from_secs(10));
        let _first = drain.guard(); // slot 0 closes at offset 0
        let guard = drain.guard(); // slot 1: offset ~6.18 s
        let offset = guard.offset;
        assert!(offset > Duration::from_secs(6) && offset < Duration::from_secs(7));

        let before = tokio::time::timeout(Duration::from_secs(60), guard.closing()).await;
        assert!(before.is_err(), "must not close while serving");

        let started = Instant::now();
        drain.start();
        guard.closing().await;
        // tokio's timer wheel has millisecond resolution and rounds up.
        let elapsed = started.elapsed();
        assert!(
            elapsed >= offset && elapsed <= offset + Duration::from_millis(1),
            "{elapsed:?}"
        );
        assert_eq!(guard.close_at(), Some(started + offset));
    }

    #[tokio::test(start_paused = true)]
    async fn guard_taken_after_start_closes_at_once() {
        let drain = Drain::with_close_spread(Duration::from_secs(60));
        drain.start();
        let started = Instant::now();
        let late = drain.guard();
        late.closing().await;
        assert_eq!(started.elapsed(), Duration::ZERO);
    }

    #[tokio::test(start_paused = true)]
    async fn zero_window_closes_everything_at_once() {
        let drain = Drain::with_close_spread(Duration::ZERO);
        let guards: Vec<_> = (0..100).map(|_| drain.guard()).collect();
        drain.start();
        let started = Instant::now();
        for g in &guards {
            g.closing().await;
        }
        assert_eq!(started.elapsed(), Duration::ZERO);
    }

    #[test]
    fn spread_offsets_fill_the_window_evenly() {
        let window = Duration::from_secs(10);
        for count in [10u64, 100, 1000] {
            let mut buckets = [0u64; 10];
            for slot in 0..count {
                let offset = spread_offset(slot, window);
                assert!(offset < window);
                buckets[(offset.as_secs_f64()) as usize] += 1;
            }
            let expected = count / 10;
            for (i, &b) in buckets.iter().enumerate() {
                // A Weyl sequence keeps every tenth of the window within a
                // couple of guards of its fair share.
                assert!(b.abs_diff(expected) <= 2, "count {count}, bucket {i}: {b}");
            }
        }
    }

    /// No guard closes at the end of the window or after it, however short the
    /// window: in floating point, a fraction just under 1 times the window
    /// rounded up to the whole window (slot 987 of a 1 µs window, slot
    /// 2,178,309 of a 1 ms one).
    #[tokio::test(start_paused = true)]
    async fn close_times_stay_inside_short_windows() {
        let window = Duration::from_micros(1);
        let drain = Drain::with_close_spread(window);
        let guards: Vec<_> = (0..2000).map(|_| drain.guard()).collect();
        drain.start();
        let opens = Instant::now();
        for (slot, guard) in guards.iter().enumerate() {
            let at = guard.close_at().expect("draining");
            assert!(at >= opens && at < opens + window, "slot {slot}: {at:?}");
        }
        for (slot, window) in [
            (987, Duration::from_micros(1)),
            (2_178_309, Duration::from_millis(1)),
        ] {
            assert!(spread_offset(slot, window) < window, "slot {slot}");
        }
        for slot in 0..100_000 {
            for window in [Duration::from_nanos(1), Duration::from_nanos(7)] {
                assert!(spread_offset(slot, window) < window, "slot {slot}");
            }
        }
    }

    #[tokio::test(start_paused = true)]
    async fn wait_reports_sockets_left_at_the_deadline() {
        let drain = Drain::with_close_spread(Duration::ZERO);
        let _stuck = drain.guard();
        let _stuck_too = drain.guard();
        drain.start();
        let outcome = drain.wait(Duration::from_secs(3)).await;
        assert_eq!(outcome, DrainOutcome::TimedOut { still_open: 2 });
    }

    #[tokio::test(start_paused = true)]
    async fn wait_resolves_when_the_last_guard_drops() {
        let drain = Drain::with_close_spread(Duration::from_secs(1));
        for _ in 0..1000 {
            let guard = drain.guard();
            tokio::spawn(async move {
                guard.closing().await;
                drop(guard);
            });
        }
        assert_eq!(drain.active(), 1000);
        drain.start();
        let outcome = drain.wait(Duration::from_secs(5)).await;
        assert_eq!(outcome, DrainOutcome::Drained);
        assert_eq!(drain.active(), 0);
    }

    /// With a close delay, `wait` keeps the process up until the delay is
    /// over even when no socket is open: the balancer may still route here
    /// until then. `closed` does not wait for it.
    #[tokio::test(start_paused = true)]
    async fn wait_lasts_at_least_the_close_delay() {
        let delay = Duration::from_secs(8);
        let drain = Drain::builder().close_delay(delay).build();
        let started = Instant::now();
        drain.start();
        drain.closed().await;
        assert_eq!(
            Instant::now(),
            started,
            "closed() does not wait for the delay"
        );

        let early = drain.wait(delay - Duration::from_millis(1)).await;
        assert_eq!(early, DrainOutcome::TimedOut { still_open: 0 });
        assert_eq!(
            drain.wait(Duration::from_secs(30)).await,
            DrainOutcome::Drained
        );
        assert_eq!(Instant::now(), started + delay);

        // Once the delay is over, nothing more to wait for.
        let later = Instant::now();
        assert_eq!(
            drain.wait(Duration::from_secs(30)).await,
            DrainOutcome::Drained
        );
        assert_eq!(Instant::now(), later);
    }

    /// A socket that outlasts the delay is waited for; one that closes early
    /// does not end the wait before the delay does; and a guard taken during
    /// the delay is waited for too.
    #[tokio::test(start_paused = true)]
    async fn wait_needs_both_the_delay_and_the_last_guard() {
        let delay = Duration::from_secs(5);
        let drain = Drain::builder()
            .close_delay(delay)
            .close_spread(Duration::ZERO)
            .build();
        let started = Instant::now();
        let quick = drain.guard();
        drain.start();
        let waiter = tokio::spawn(drain.wait(Duration::from_secs(60)));
        tokio::time::sleep(Duration::from_secs(1)).await;
        drop(quick);
        // Nothing is open now; then a guard is taken during the delay, and
        // dropped 3 s after it.
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert!(!waiter.is_finished(), "the delay is not over");
        let late = drain.guard();
        tokio::spawn(async move {
            tokio::time::sleep_until(started + delay + Duration::from_secs(3)).await;
            drop(late);
        });
        assert_eq!(waiter.await.unwrap(), DrainOutcome::Drained);
        assert_eq!(Instant::now(), started + delay + Duration::from_secs(3));
    }

    /// Before `start`, there is no delay to wait for: `wait` is `closed`
    /// with a deadline.
    #[tokio::test(start_paused = true)]
    async fn wait_before_start_ignores_the_delay() {
        let drain = Drain::builder().close_delay(Duration::from_secs(8)).build();
        let before = Instant::now();
        assert_eq!(
            drain.wait(Duration::from_secs(30)).await,
            DrainOutcome::Drained
        );
        assert_eq!(Instant::now(), before);
    }

    /// However long the window, close times stay representable: a window
    /// over a day is a day.
    #[tokio::test(start_paused = true)]
    async fn a_window_of_any_length_closes_within_a_day() {
        for window in [
            Duration::MAX,
            Duration::from_secs(u64::MAX),
            MAX_CLOSE_SPREAD * 2,
        ] {
            let drain = Drain::with_close_spread(window);
            assert_eq!(drain.close_spread(), MAX_CLOSE_SPREAD);
            let _first = drain.guard();
            let guard = drain.guard();
            drain.start();
            let started = Instant::now();
            let close_at = guard.close_at().expect("draining");
            assert!(close_at > started && close_at < started + MAX_CLOSE_SPREAD);
            guard.closing().await;
            assert!(Instant::now() >= close_at);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn closing_waits_for_the_delay_then_its_offset() {
        let delay = Duration::from_secs(4);
        let drain = Drain::builder()
            .close_delay(delay)
            .close_spread(Duration::from_secs(10))
            .build();
        let first = drain.guard(); // slot 0: offset 0, so it closes as the delay ends
        let second = drain.guard(); // slot 1: offset ~6.18 s after that
        let started = Instant::now();
        drain.start();
        assert!(drain.is_draining(), "refusals and health do not wait");
        assert_eq!(first.close_at(), Some(started + delay));
        assert_eq!(second.close_at(), Some(started + delay + second.offset));

        let early = tokio::time::timeout(delay - Duration::from_millis(1), first.closing()).await;
        assert!(
            early.is_err(),
            "no socket is told to close during the delay"
        );
        first.closing().await;
        assert_eq!(started.elapsed(), delay);
        second.closing().await;
        let elapsed = started.elapsed();
        let due = delay + second.offset;
        assert!(
            elapsed >= due && elapsed <= due + Duration::from_millis(1),
            "{elapsed:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn guards_taken_during_the_delay_are_spread_then_later_ones_close_at_once() {
        let delay = Duration::from_secs(5);
        let window = Duration::from_secs(60);
        let drain = Drain::builder()
            .close_delay(delay)
            .close_spread(window)
            .build();
        drain.start();
        let started = Instant::now();
        tokio::time::advance(Duration::from_secs(2)).await;
        // Upgrades still let through during the delay (a layer that does not
        // refuse while draining): each gets its own place in the window.
        let during: Vec<_> = (0..3).map(|_| drain.guard()).collect();
        let mut close_at: Vec<_> = during.iter().map(|g| g.close_at().unwrap()).collect();
        close_at.sort();
        close_at.dedup();
        assert_eq!(close_at.len(), 3, "not all at the end of the delay");
        assert_eq!(close_at[0], started + delay, "slot 0 opens the window");
        assert!(close_at[2] > started + delay + window / 2, "{close_at:?}");
        for guard in &during {
            guard.closing().await;
        }
        // tokio's timer wheel has millisecond resolution and rounds up.
        let (elapsed, due) = (started.elapsed(), close_at[2] - started);
        assert!(
            elapsed >= due && elapsed <= due + Duration::from_millis(1),
            "{elapsed:?}"
        );

        let after = drain.guard();
        let now = Instant::now();
        assert_eq!(
            after.close_at(),
            Some(started + delay),
            "the window is open"
        );
        after.closing().await;
        assert_eq!(now.elapsed(), Duration::ZERO, "so it closes at once");
    }

    #[tokio::test(start_paused = true)]
    async fn a_delay_of_any_length_keeps_close_times_representable() {
        let drain = Drain::builder()
            .close_delay(Duration::MAX)
            .close_spread(Duration::MAX)
            .build();
        assert_eq!(drain.close_delay(), MAX_CLOSE_DELAY);
        let _first = drain.guard();
        let guard = drain.guard();
        drain.start();
        let started = Instant::now();
        let close_at = guard.close_at().expect("draining");
        assert!(close_at > started + MAX_CLOSE_DELAY);
        assert!(close_at < started + MAX_CLOSE_DELAY + MAX_CLOSE_SPREAD);
        guard.closing().await;
        assert!(Instant::now() >= close_at);
    }

    #[test]
    fn new_and_with_close_spread_have_no_delay() {
        assert_eq!(Drain::new().close_delay(), Duration::ZERO);
        assert_eq!(Drain::new().close_spread(), DEFAULT_CLOSE_SPREAD);
        let drain = Drain::with_close_spread(Duration::from_secs(3));
        assert_eq!(drain.close_delay(), Duration::ZERO);
        assert_eq!(drain.close_spread(), Duration::from_secs(3));
        assert_eq!(
            DrainBuilder::default().build().close_delay(),
            Duration::ZERO
        );
    }

    #[test]
    fn guard_is_small() {
        assert!(std::mem::size_of::<DrainGuard>() <= 24);
    }

    #[tokio::test(start_paused = true)]
    async fn closed_counts_as_waiting_while_it_lives() {
        let drain = Drain::new();
        let guard = drain.guard();
        let mut closed = Box::pin(drain.closed());
        assert_eq!(drain.inner.waiting.load(Ordering::SeqCst), 0, "lazy");
        let pending = tokio::time::timeout(Duration::from_millis(1), &mut closed).await;
        assert!(pending.is_err(), "a guard is alive");
        assert_eq!(drain.inner.waiting.load(Ordering::SeqCst), 1);
        // Cancelled: no longer waiting, and the last guard leaving wakes nobody.
        drop(closed);
        assert_eq!(drain.inner.waiting.load(Ordering::SeqCst), 0);
        drop(guard);
        // Resolved: no longer waiting either.
        drain.closed().await;
        assert_eq!(drain.inner.waiting.load(Ordering::SeqCst), 0);
    }

    /// The race the `waiting` count must not lose: the first poll of a
    /// `closed()` and the drop of the last guard on another thread, many
    /// times over. Both threads meet at a spinning rendezvous, then each waits
    /// a few spins more, by an amount that varies from round to round, so the
    /// two sweep over every order of their steps. Whichever comes first, the
    /// future is ready at that poll or its waker is called.
    #[test]
    fn closed_never_misses_the_last_guard() {
        use std::sync::mpsc;
        use std::task::{Context, Wake, Waker};

        struct Flag(AtomicBool);
        impl Wake for Flag {
            fn wake(self: Arc<Self>) {
                self.0.store(true, Ordering::SeqCst);
            }
        }

        const ROUNDS: usize = 30_000;
        const SWEEP: usize = 160;
        let arrivals = Arc::new(AtomicUsize::new(0));
        let (send, guards) = mpsc::channel::<DrainGuard>();
        let (dropped, each_drop) = mpsc::channel::<()>();
        let dropper = std::thread::spawn({
            let arrivals = Arc::clone(&arrivals);
            move || {
                for (round, guard) in guards.iter().take(ROUNDS).enumerate() {
                    meet(&arrivals, round);
                    spin(round % SWEEP);
                    drop(guard);
                    if dropped.send(()).is_err() {
                        return;
                    }
                }
            }
        });
        for round in 0..ROUNDS {
            let drain = Drain::new();
            send.send(drain.guard()).expect("dropper alive");
            let flag = Arc::new(Flag(AtomicBool::new(false)));
            let waker = Waker::from(Arc::clone(&flag));
            let mut cx = Context::from_waker(&waker);
            let mut closed = Box::pin(drain.closed());
            meet(&arrivals, round);
            spin(round / SWEEP % SWEEP);
            let ready = closed.as_mut().poll(&mut cx).is_ready();
            each_drop
                .recv_timeout(Duration::from_secs(10))
                .expect("the guard is dropped");
            let woken = flag.0.load(Ordering::SeqCst);
            assert!(
                ready || woken,
                "round {round}: closed() missed the last guard"
            );
            if !ready {
                assert!(closed.as_mut().poll(&mut cx).is_ready(), "round {round}");
            }
        }
        dropper.join().expect("dropper");
    }

    /// `start()` from two threads at once (a signal thread and the app, say):
    /// whichever call returns, `false` included, the drain is visible to its
    /// caller. Otherwise the losing caller may answer its health check with
    /// `200`, or await `closed()` before the layer refuses upgrades, and see no
    /// socket while an upgrade it did not wait for is let through.
    #[test]
    fn start_is_visible_to_every_caller_when_it_returns() {
        const ROUNDS: usize = 100_000;
        const SWEEP: usize = 64;
        let time_limit = std::time::Instant::now() + Duration::from_secs(60);
        let arrivals = Arc::new(AtomicUsize::new(0));
        let (send, drains) = std::sync::mpsc::channel::<Drain>();
        let other = std::thread::spawn({
            let arrivals = Arc::clone(&arrivals);
            move || {
                let mut unseen = 0usize;
                for (round, drain) in drains.iter().enumerate() {
                    meet(&arrivals, round);
                    spin(round % SWEEP);
                    drain.start();
                    unseen += usize::from(!drain.is_draining());
                }
                unseen
            }
        });
        let mut unseen = 0usize;
        for round in 0..ROUNDS {
            if std::time::Instant::now() > time_limit {
                break;
            }
            let drain = Drain::new();
            send.send(drain.clone()).expect("other thread alive");
            meet(&arrivals, round);
            spin(round / SWEEP % SWEEP);
            drain.start();
            unseen += usize::from(!drain.is_draining());
        }
        drop(send);
        unseen += other.join().expect("other thread");
        assert_eq!(unseen, 0, "start() returned before the drain was visible");
    }

    /// What the module docs promise to work off the runtime: a `start()` from
    /// a plain thread wakes a `closing()` polled before it, which then needs no
    /// timer once its close time has come; `closed()` and the last guard
    /// dropped on another thread need none either.
    #[test]
    fn start_from_a_plain_thread_wakes_futures_polled_off_the_runtime() {
        use std::task::{Context, Wake, Waker};

        struct Flag(AtomicBool);
        impl Wake for Flag {
            fn wake(self: Arc<Self>) {
                self.0.store(true, Ordering::SeqCst);
            }
        }

        let drain = Drain::with_close_spread(Duration::ZERO);
        let guard = drain.guard();
        let flag = Arc::new(Flag(AtomicBool::new(false)));
        let waker = Waker::from(Arc::clone(&flag));
        let mut cx = Context::from_waker(&waker);
        {
            let mut closing = Box::pin(guard.closing());
            assert!(closing.as_mut().poll(&mut cx).is_pending());
            let starter = drain.clone();
            std::thread::spawn(move || assert!(starter.start()))
                .join()
                .expect("starter");
            assert!(flag.0.swap(false, Ordering::SeqCst), "woken by start()");
            assert!(closing.as_mut().poll(&mut cx).is_ready());
        }
        assert_eq!(
            drain.health_service().response().status(),
            http::StatusCode::SERVICE_UNAVAILABLE
        );

        let mut closed = Box::pin(drain.closed());
        assert!(closed.as_mut().poll(&mut cx).is_pending());
        std::thread::spawn(move || drop(guard))
            .join()
            .expect("dropper");
        assert!(flag.0.load(Ordering::SeqCst), "woken by the last guard");
        assert!(closed.as_mut().poll(&mut cx).is_ready());
    }

    /// `start()` from a thread outside a multi-thread runtime whose tasks
    /// await `closing()` over a real (short) window: each is woken and
    /// closes, and the drain is over well within its deadline.
    #[test]
    fn start_from_outside_the_runtime_closes_every_socket() {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_time()
            .build()
            .expect("runtime");
        let drain = Drain::with_close_spread(Duration::from_millis(50));
        let (ready, mut all_ready) = tokio::sync::mpsc::channel::<()>(64);
        let mut tasks = Vec::new();
        for _ in 0..64 {
            let guard = drain.guard();
            let ready = ready.clone();
            tasks.push(runtime.spawn(async move {
                {
                    let closing = guard.closing();
                    tokio::pin!(closing);
                    // Polled once before the start, then the task says it waits.
                    assert!(futures_poll_once(closing.as_mut()).await.is_none());
                    let _ = ready.send(()).await;
                    closing.await;
                }
                drop(guard);
            }));
        }
        drop(ready);
        runtime.block_on(async {
            for _ in 0..64 {
                all_ready
                    .recv()
                    .await
                    .expect("every task polled its closing()");
            }
        });
        let starter = drain.clone();
        std::thread::spawn(move || assert!(starter.start()))
            .join()
            .expect("starter");
        let outcome = runtime.block_on(drain.wait(Duration::from_secs(10)));
        assert_eq!(outcome, DrainOutcome::Drained);
        assert_eq!(drain.active(), 0);
        runtime.block_on(async {
            for task in tasks {
                task.await.expect("no socket task panicked");
            }
        });
    }

    /// Polls `future` once: `Some` if it was ready.
    async fn futures_poll_once<F: Future + Unpin>(mut future: F) -> Option<F::Output> {
        std::future::poll_fn(|cx| {
            std::task::Poll::Ready(match std::pin::Pin::new(&mut future).poll(cx) {
                std::task::Poll::Ready(out) => Some(out),
                std::task::Poll::Pending => None,
            })
        })
        .await
    }

    #[tokio::test(start_paused = true)]
    async fn closed_wakes_when_the_last_guard_drops_later() {
        let drain = Drain::new();
        let guard = drain.guard();
        let closed = tokio::spawn(drain.closed());
        tokio::task::yield_now().await;
        assert!(!closed.is_finished());
        drop(guard);
        tokio::time::timeout(Duration::from_secs(1), closed)
            .await
            .expect("closed() resolves once the last guard is gone")
            .unwrap();
    }
}
