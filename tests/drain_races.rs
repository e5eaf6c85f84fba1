//! `Drain::start()` racing upgrades in flight, on a multi-thread runtime,
//! without a network: the layer and a handler that takes a guard before its
//! `101`, as the README says, and moves it into a socket task.
//!
//! The guarantee under test: once `closed()` resolves after `start()`, no
//! socket the layer let through is still open, and none opens later.

use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use http::header::{CONNECTION, UPGRADE};
use http::{Request, Response, StatusCode};
use tower::{service_fn, ServiceExt};
use tower_sticky_upgrade::{Drain, StickySession, StickyUpgrade, StickyUpgradeLayer};

#[derive(Default)]
struct Sockets {
    /// Guards taken by the handler.
    opened: AtomicUsize,
    /// Sockets that ended (counted before their guard drops).
    ended: AtomicUsize,
}

fn upgrade() -> Request<()> {
    Request::get("/ws")
        .header(CONNECTION, "upgrade")
        .header(UPGRADE, "websocket")
        .body(())
        .expect("request")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closed_after_start_never_misses_an_upgrade_in_flight() {
    const ROUNDS: usize = 200;
    const CLIENTS: usize = 4;
    const CALLS: usize = 50;
    let time_limit = tokio::time::Instant::now() + Duration::from_secs(60);
    let mut let_through = 0usize;
    for round in 0..ROUNDS {
        if tokio::time::Instant::now() > time_limit {
            break;
        }
        let drain = Drain::with_close_spread(Duration::ZERO);
        let layer = StickyUpgradeLayer::builder()
            .drain(drain.clone())
            .build()
            .expect("layer");
        let sockets = Arc::new(Sockets::default());
        let svc = StickyUpgrade::new(
            service_fn({
                let sockets = Arc::clone(&sockets);
                move |req: Request<()>| {
                    let sockets = Arc::clone(&sockets);
                    async move {
                        let session = req
                            .extensions()
                            .get::<StickySession>()
                            .cloned()
                            .expect("the layer let it through");
                        // Some handlers take a while (auth, routing).
                        tokio::task::yield_now().await;
                        let guard = session.guard();
                        sockets.opened.fetch_add(1, Ordering::SeqCst);
                        tokio::spawn(async move {
                            {
                                let closing = guard.closing();
                                tokio::pin!(closing);
                                closing.await;
                            }
                            sockets.ended.fetch_add(1, Ordering::SeqCst);
                            drop(guard);
                        });
                        let mut res = Response::new(());
                        *res.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
                        Ok::<_, Infallible>(res)
                    }
                }
            }),
            layer,
        );
        let go = Arc::new(AtomicBool::new(false));
        let clients: Vec<_> = (0..CLIENTS)
            .map(|_| {
                let svc = svc.clone();
                let go = Arc::clone(&go);
                tokio::spawn(async move {
                    while !go.load(Ordering::SeqCst) {
                        tokio::task::yield_now().await;
                    }
                    for _ in 0..CALLS {
                        let res = svc.clone().oneshot(upgrade()).await.expect("infallible");
                        if res.status() == StatusCode::SERVICE_UNAVAILABLE {
                            break;
                        }
                        assert_eq!(res.status(), StatusCode::SWITCHING_PROTOCOLS);
                    }
                })
            })
            .collect();
        go.store(true, Ordering::SeqCst);
        // Start after a number of sockets that changes from round to round,
        // so that the start lands anywhere among the handshakes.
        let target = round % (CLIENTS * CALLS / 2);
        let wait_until = tokio::time::Instant::now() + Duration::from_secs(5);
        while sockets.opened.load(Ordering::SeqCst) < target {
            assert!(
                tokio::time::Instant::now() < wait_until,
                "round {round}: stuck"
            );
            tokio::task::yield_now().await;
        }
        assert!(drain.start());
        tokio::time::timeout(Duration::from_secs(10), drain.closed())
            .await
            .expect("closed() resolves");
        let (opened, ended) = (
            sockets.opened.load(Ordering::SeqCst),
            sockets.ended.load(Ordering::SeqCst),
        );
        assert_eq!(opened, ended, "round {round}: closed() with sockets open");
        for client in clients {
            tokio::time::timeout(Duration::from_secs(10), client)
                .await
                .expect("client finishes")
                .expect("client task");
        }
        assert_eq!(
            sockets.opened.load(Ordering::SeqCst),
            opened,
            "round {round}: a socket opened after closed() resolved"
        );
        let_through += opened;
    }
    // The race was run, not skipped: some upgrades got through before starts.
    assert!(let_through > 0);
}
