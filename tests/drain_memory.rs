//! What tracking one upgraded socket costs: the size of a `DrainGuard` and of
//! its `closing()` future, and the heap the drain allocates per socket (none
//! while serving; one boxed timer per socket still waiting once draining). Its own test binary because it installs a counting global
//! allocator. Run with `--nocapture` to see the numbers.

use std::future::{poll_fn, Future};
use std::mem::{size_of, size_of_val};
use std::pin::Pin;
use std::task::Poll;
use std::time::Duration;

use tower_sticky_upgrade::{Drain, DrainGuard};

#[path = "support/counting_alloc.rs"]
mod counting_alloc;

#[global_allocator]
static GLOBAL: counting_alloc::Counting = counting_alloc::Counting;

/// Counts the allocations (and bytes) this thread makes until [`Counter::stop`].
/// The runtime below is current-thread, so the drain's work happens here too.
struct Counter {
    allocations: usize,
    bytes: usize,
}

impl Counter {
    fn start() -> Counter {
        Counter {
            allocations: counting_alloc::allocations(),
            bytes: counting_alloc::bytes(),
        }
    }

    /// `(allocations, bytes)` since `start`.
    fn stop(self) -> (usize, usize) {
        (
            counting_alloc::allocations() - self.allocations,
            counting_alloc::bytes() - self.bytes,
        )
    }
}

/// Polls every future once; how many were ready.
///
/// Unconstrained by tokio's cooperative budget: in an app each socket is its
/// own task with its own budget, while here one task polls them all, and an
/// exhausted budget makes tokio defer wakers into a (growing) list.
async fn poll_each<F: Future>(futures: &mut [Pin<Box<F>>]) -> usize {
    let poll = poll_fn(|cx| {
        let ready = futures
            .iter_mut()
            .map(|fut| fut.as_mut().poll(cx).is_ready())
            .filter(|&ready| ready)
            .count();
        Poll::Ready(ready)
    });
    tokio::task::unconstrained(poll).await
}

#[test]
fn a_tracked_socket_costs_a_guard_and_a_future_and_no_heap() {
    const SOCKETS: usize = 1000;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .expect("runtime");
    rt.block_on(async {
        let drain = Drain::with_close_spread(Duration::from_secs(10));
        // Warm up whatever the runtime sets up lazily on first use: a waiter,
        // and a timer armed for a slot (on another drain, started at once).
        {
            let warm_drain = Drain::with_close_spread(Duration::from_secs(10));
            let mut warm = [warm_drain.guard(), warm_drain.guard()];
            let [a, b] = &mut warm;
            let mut futs = [Box::pin(a.closing()), Box::pin(b.closing())];
            assert_eq!(poll_each(&mut futs).await, 0);
            warm_drain.start();
            assert_eq!(poll_each(&mut futs[1..]).await, 0, "slot 1 is later");
        }

        let guard_size = size_of::<DrainGuard>();
        let mut guards = Vec::with_capacity(SOCKETS);
        let counter = Counter::start();
        for _ in 0..SOCKETS {
            guards.push(drain.guard());
        }
        assert_eq!(counter.stop(), (0, 0), "taking a guard allocates");
        assert_eq!(drain.active(), SOCKETS);

        // The app keeps one `closing()` future per socket alive while it
        // waits (in a `select!` loop); here they are boxed, so the heap in
        // use is the boxes plus whatever the drain allocates.
        let future_size = size_of_val(&guards[0].closing());
        let mut waiting = Vec::with_capacity(SOCKETS);
        let counter = Counter::start();
        for guard in &mut guards {
            waiting.push(Box::pin(guard.closing()));
        }
        assert_eq!(counter.stop(), (SOCKETS, SOCKETS * future_size));

        // Waiting for the drain to start registers each future as a waiter
        // of a `Notify`: intrusive, no heap.
        let counter = Counter::start();
        let ready = poll_each(&mut waiting).await;
        assert_eq!(counter.stop(), (0, 0), "waiting for the start allocated");
        assert_eq!(ready, 0);

        // Once draining, each future still waiting for its slot arms one
        // boxed timer, and nothing else.
        drain.start();
        let counter = Counter::start();
        let ready = poll_each(&mut waiting).await;
        let (allocations, _) = counter.stop();
        assert_eq!(allocations, SOCKETS - ready, "one timer per waiting socket");
        // Slot 0 closes at the start of the window; the rest are spread.
        assert!(ready <= 1, "{ready} ready at once");

        eprintln!(
            "per tracked socket: DrainGuard {guard_size} B + closing() future {future_size} B \
             = {} B, no heap; Drain handle {} B, shared by all",
            guard_size + future_size,
            size_of::<Drain>()
        );
        assert!(guard_size <= 24, "DrainGuard is {guard_size} bytes");
        assert!(
            guard_size + future_size <= 128,
            "closing() future is {future_size} bytes"
        );
        drop(waiting);
    });
}
