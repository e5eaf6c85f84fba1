//! Bad-input row "16 KiB Cookie header, 1,000 pairs: no per-pair allocation",
//! by counting: a global allocator counts the allocations made on the current
//! thread while the layered service handles one request, and the count must
//! be the same for 10 pairs as for 1,000.
//!
//! Counting is per thread (a `const` thread-local), so the tests of this binary
//! can run in parallel without seeing each other's allocations. The request is
//! built before counting starts; the layered call is polled once with a no-op
//! waker (the handler is ready at once), so no runtime allocates meanwhile.

use std::convert::Infallible;

use futures_util::FutureExt;
use http::header::COOKIE;
use http::{HeaderValue, Request, Response, StatusCode};
use tower::{service_fn, Service};
use tower_sticky_upgrade::{IdGenerator, StickyUpgradeLayer, UuidV4};

#[path = "support/counting_alloc.rs"]
mod counting_alloc;

use counting_alloc::count;

#[global_allocator]
static ALLOCATOR: counting_alloc::Counting = counting_alloc::Counting;

fn handler(req: Request<()>) -> std::future::Ready<Result<Response<()>, Infallible>> {
    let mut res = Response::new(());
    if req.headers().contains_key(http::header::UPGRADE) {
        *res.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    }
    std::future::ready(Ok(res))
}

fn request(upgrade: bool, cookie: &str) -> Request<()> {
    let mut b = Request::get("/ws");
    if upgrade {
        b = b
            .header("connection", "Upgrade")
            .header("upgrade", "websocket");
    }
    let mut req = b.body(()).unwrap();
    req.headers_mut()
        .insert(COOKIE, HeaderValue::from_str(cookie).unwrap());
    req
}

/// Allocations of one call of `layer` around the handler, and the response.
fn layered(layer: &StickyUpgradeLayer, req: Request<()>) -> (usize, Response<()>) {
    let mut svc = tower::Layer::layer(layer, service_fn(handler));
    let (n, res) = count(|| svc.call(req).now_or_never());
    (n, res.expect("ready at once").unwrap())
}

/// Allocations of one call of the bare handler.
fn bare(req: Request<()>) -> usize {
    let mut svc = service_fn(handler);
    count(|| svc.call(req).now_or_never()).0
}

/// `pairs` unrelated pairs, then `tail`.
fn cookie(pairs: usize, tail: &str) -> String {
    let mut s = String::new();
    for i in 0..pairs {
        s.push_str(&format!("c{i:05}=v{i:07}; "));
    }
    s.push_str(tail);
    s
}

fn session_value(res: &Response<()>) -> String {
    let line = res.headers()[http::header::SET_COOKIE].to_str().unwrap();
    let pair = line.split(';').next().unwrap();
    pair.split_once('=').unwrap().1.to_owned()
}

#[test]
fn counting_allocator_sees_allocations() {
    // Guards the other tests against counting nothing at all.
    let (n, v) = count(|| vec![1u8; 10]);
    assert!(n >= 1, "{n}");
    drop(v);
}

#[test]
fn plain_request_with_1000_cookie_pairs_allocates_nothing_more_than_the_handler() {
    let layer = StickyUpgradeLayer::new();
    let big = cookie(1000, "");
    assert!(big.len() >= 16 * 1024);
    let (n, res) = layered(&layer, request(false, &big));
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(n, bare(request(false, &big)));
}

#[test]
fn issued_upgrade_allocations_do_not_grow_with_cookie_pairs() {
    let layer = StickyUpgradeLayer::new();
    // The first id issued on a thread sets up the thread-local CSPRNG (one
    // allocation, once per thread): not something a cookie pair causes.
    let _ = layered(&layer, request(true, &cookie(1, "")));
    let (small, res_small) = layered(&layer, request(true, &cookie(10, "")));
    let (large, res_large) = layered(&layer, request(true, &cookie(1000, "")));
    assert!(res_small.headers().contains_key(http::header::SET_COOKIE));
    assert!(res_large.headers().contains_key(http::header::SET_COOKIE));
    assert!(
        small > 0,
        "the upgrade path allocates the session and cookie"
    );
    assert_eq!(small, large);
}

#[test]
fn kept_upgrade_allocations_do_not_grow_with_cookie_pairs() {
    let layer = StickyUpgradeLayer::new();
    let id = UuidV4.generate();
    let tail = format!("WS_SESSION_ID={id}");
    let (small, res_small) = layered(&layer, request(true, &cookie(10, &tail)));
    let (large, res_large) = layered(&layer, request(true, &cookie(999, &tail)));
    assert_eq!(session_value(&res_small), id.as_str());
    assert_eq!(session_value(&res_large), id.as_str());
    assert_eq!(layer.stats().kept, 2);
    assert_eq!(small, large);
}

#[test]
fn invalid_affinity_pairs_allocate_nothing_per_pair() {
    let layer = StickyUpgradeLayer::new();
    let id = UuidV4.generate();
    let invalid = |n: usize| {
        let mut s = String::new();
        for i in 0..n {
            s.push_str(&format!("WS_SESSION_ID=x{i}; "));
        }
        s.push_str(&format!("WS_SESSION_ID={id}"));
        s
    };
    // Within the 16 pairs the layer decodes, the valid one is kept whatever
    // number of invalid ones come first.
    let (small, res_small) = layered(&layer, request(true, &invalid(3)));
    let (large, res_large) = layered(&layer, request(true, &invalid(15)));
    assert_eq!(session_value(&res_small), id.as_str());
    assert_eq!(session_value(&res_large), id.as_str());
    assert_eq!(small, large);
    // Past them, a new id is issued, for the cost of issuing with no cookie.
    let _ = layered(&layer, request(true, "")); // warms the thread's CSPRNG
    let (none, _) = layered(&layer, request(true, ""));
    let (flood, res_flood) = layered(&layer, request(true, &invalid(999)));
    assert_ne!(session_value(&res_flood), id.as_str());
    assert_eq!(flood, none);
}

#[cfg(feature = "signed")]
#[test]
fn signed_verification_allocates_nothing_per_pair() {
    let layer = StickyUpgradeLayer::builder()
        .signing_keys([[3u8; 32], [4u8; 32]])
        .build()
        .unwrap();
    let (_, res) = layered(&layer, request(true, ""));
    let value = session_value(&res);
    // Pairs that reach HMAC verification with both keys and fail.
    let forged = |n: usize| {
        let mut s = String::new();
        for i in 0..n {
            s.push_str(&format!("WS_SESSION_ID={}.{i:032x}; ", UuidV4.generate()));
        }
        s.push_str(&format!("WS_SESSION_ID={value}"));
        s
    };
    let (small, res_small) = layered(&layer, request(true, &forged(3)));
    let (large, res_large) = layered(&layer, request(true, &forged(15)));
    assert_eq!(session_value(&res_small), value);
    assert_eq!(session_value(&res_large), value);
    assert_eq!(small, large);
    // Past the 16 decoded pairs: issued, for the cost of issuing with no cookie.
    let (none, _) = layered(&layer, request(true, ""));
    let (flood, res_flood) = layered(&layer, request(true, &forged(999)));
    assert_ne!(session_value(&res_flood), value);
    assert_eq!(flood, none);
}
