//! Heap allocations the layer adds to a request, and the memory one tracked
//! socket costs.
//!
//! A counting global allocator counts allocations per thread, so the test
//! harness running other tests on other threads cannot disturb a measurement.
//! Each case runs the same request through a bare `service_fn` and through the
//! layer wrapping that same function, polling the futures with a no-op waker
//! (no runtime), and compares the counts.

use std::convert::Infallible;
use std::future::{ready, Future, Ready};
use std::pin::pin;
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};

use http::header::{CONNECTION, COOKIE, SET_COOKIE, UPGRADE};
use http::{HeaderValue, Request, Response, StatusCode};
use tower::{service_fn, Layer, Service};
use tower_sticky_upgrade::{
    Drain, DrainGuard, IdGenerator, Refresh, StickySession, StickyUpgradeLayer, UuidV4,
};

#[path = "support/counting_alloc.rs"]
mod counting_alloc;

#[global_allocator]
static GLOBAL: counting_alloc::Counting = counting_alloc::Counting;

fn allocs() -> u64 {
    counting_alloc::allocations() as u64
}

/// Stands in for hyper's `OnUpgrade`, which hyper puts in the extensions of
/// every upgrade request it hands to a service. With it, the extension map
/// exists before the layer inserts its `StickySession`, as in production.
#[derive(Clone)]
struct OnUpgradeStandIn;

/// Answers like a WebSocket handshake: `101` with the usual headers for an
/// upgrade, `200` otherwise. Reads the session like an app would.
fn handshake(req: Request<()>) -> Ready<Result<Response<()>, Infallible>> {
    let session = req.extensions().get::<StickySession>().map(|s| *s.id());
    std::hint::black_box(session);
    let mut res = Response::new(());
    if req.headers().contains_key(UPGRADE) {
        *res.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        let h = res.headers_mut();
        h.insert(CONNECTION, HeaderValue::from_static("upgrade"));
        h.insert(UPGRADE, HeaderValue::from_static("websocket"));
        h.insert(
            "sec-websocket-accept",
            HeaderValue::from_static("s3pPLMBiTxaQ9kYGzzhZRbK+xOo="),
        );
    }
    ready(Ok(res))
}

/// Calls `svc` once and polls the future to completion with a no-op waker;
/// returns the allocations counted on this thread and the response.
fn measure<S>(svc: &mut S, req: Request<()>, waker: &Waker) -> (u64, Response<()>)
where
    S: Service<Request<()>, Response = Response<()>>,
    S::Error: std::fmt::Debug,
{
    let mut cx = Context::from_waker(waker);
    let before = allocs();
    assert!(matches!(svc.poll_ready(&mut cx), Poll::Ready(Ok(()))));
    let res = match pin!(svc.call(req)).poll(&mut cx) {
        Poll::Ready(res) => res.expect("the handshake service does not fail"),
        Poll::Pending => panic!("the handshake service answers at once"),
    };
    (allocs() - before, res)
}

/// A waker that does nothing: every future here is ready on its first poll.
/// Made once, before any measurement (`Waker::noop` needs Rust 1.85).
fn noop_waker() -> Waker {
    struct Noop;
    impl Wake for Noop {
        fn wake(self: Arc<Self>) {}
    }
    Waker::from(Arc::new(Noop))
}

/// Cookies a browser typically sends along: analytics, preferences, CSRF.
const OTHER_COOKIES: &str =
    "_ga=GA1.2.1234567890.1700000000; theme=dark; lang=en-GB; csrftoken=Zm9vYmFyYmF6cXV4cXV1eA";

fn request(upgrade: bool, cookie: &str, hyper_extension: bool) -> Request<()> {
    let mut req = Request::get(if upgrade { "/ws" } else { "/api/items" })
        .header("host", "example.com")
        .header(COOKIE, cookie)
        .body(())
        .expect("valid request");
    if upgrade {
        let h = req.headers_mut();
        h.insert(CONNECTION, HeaderValue::from_static("Upgrade"));
        h.insert(UPGRADE, HeaderValue::from_static("websocket"));
        h.insert(
            "sec-websocket-key",
            HeaderValue::from_static("dGhlIHNhbXBsZSBub25jZQ=="),
        );
        h.insert("sec-websocket-version", HeaderValue::from_static("13"));
    }
    if hyper_extension {
        req.extensions_mut().insert(OnUpgradeStandIn);
    }
    req
}

struct Case {
    name: String,
    layer: StickyUpgradeLayer,
    upgrade: bool,
    cookie: String,
    hyper_extension: bool,
    /// Allocations the layer may add.
    budget: u64,
    /// Whether the layered response must carry the affinity cookie.
    sets_cookie: bool,
}

/// Allocations added by the layer: `allocs(layered) - allocs(bare)` for the
/// same request. Every case runs in this one test so the output is one table.
#[test]
fn layer_adds_no_allocation_on_plain_requests_and_at_most_two_on_upgrades() {
    let waker = noop_waker();
    let plain = StickyUpgradeLayer::new();
    let nodes = StickyUpgradeLayer::builder()
        .node_id("node-1")
        .build()
        .expect("valid configuration");
    let on_change = StickyUpgradeLayer::builder()
        .refresh(Refresh::OnChange)
        .build()
        .expect("valid configuration");
    let id = UuidV4.generate();
    let with = |value: &str| format!("{OTHER_COOKIES}; WS_SESSION_ID={value}");
    let many: String = (0..1000)
        .map(|i| format!("c{i}=v{i}; "))
        .chain([format!("WS_SESSION_ID={id}")])
        .collect();

    let mut cases = Vec::new();
    let mut case =
        |name: &str, layer: &StickyUpgradeLayer, upgrade, cookie: String, ext, budget| {
            cases.push(Case {
                name: name.to_owned(),
                layer: layer.clone(),
                upgrade,
                cookie,
                hyper_extension: ext,
                budget,
                sets_cookie: upgrade && budget > 1,
            });
        };
    case(
        "plain, several cookies",
        &plain,
        false,
        with(id.as_str()),
        true,
        0,
    );
    case(
        "plain, no extensions",
        &plain,
        false,
        with(id.as_str()),
        false,
        0,
    );
    case("upgrade kept", &plain, true, with(id.as_str()), true, 2);
    case(
        "upgrade issued",
        &plain,
        true,
        OTHER_COOKIES.into(),
        true,
        2,
    );
    case(
        "upgrade issued, invalid cookie",
        &plain,
        true,
        with("forged"),
        true,
        2,
    );
    case(
        "upgrade kept, node-tagged",
        &nodes,
        true,
        with(&format!("{id}.node-1")),
        true,
        2,
    );
    case(
        "upgrade migrated",
        &nodes,
        true,
        with(&format!("{id}.node-2")),
        true,
        2,
    );
    case(
        "upgrade kept, 1000 cookies",
        &plain,
        true,
        many.clone(),
        true,
        2,
    );
    // No cookie is re-sent on a kept session: only the extension is boxed.
    case(
        "upgrade kept, refresh on change",
        &on_change,
        true,
        with(id.as_str()),
        true,
        1,
    );
    // Without an earlier extension (not the case under hyper), the first
    // `Extensions::insert` also allocates the map: its box and its table.
    case(
        "upgrade kept, no extensions",
        &plain,
        true,
        with(id.as_str()),
        false,
        4,
    );
    case(
        "upgrade issued, no extensions",
        &plain,
        true,
        OTHER_COOKIES.into(),
        false,
        4,
    );

    let mut failures = Vec::new();
    println!(
        "{:<36} {:>5} {:>7} {:>5} {:>6}",
        "case", "bare", "layered", "added", "budget"
    );
    for case in &cases {
        let req = || request(case.upgrade, &case.cookie, case.hyper_extension);
        let mut bare = service_fn(handshake);
        let mut layered = case.layer.layer(service_fn(handshake));
        // Warm up once: lazily initialised statics (the OS RNG, tracing
        // callsites) must not count against the first case.
        let _ = measure(&mut layered, req(), &waker);
        let (bare_allocs, _) = measure(&mut bare, req(), &waker);
        let (layered_allocs, res) = measure(&mut layered, req(), &waker);
        let added = layered_allocs.saturating_sub(bare_allocs);
        println!(
            "{:<36} {bare_allocs:>5} {layered_allocs:>7} {added:>5} {:>6}",
            case.name, case.budget
        );
        if added > case.budget {
            failures.push(format!("{}: {added} added > {}", case.name, case.budget));
        }
        assert_eq!(
            res.headers().contains_key(SET_COOKIE),
            case.sets_cookie,
            "{}: the measurement must exercise the path it names",
            case.name
        );
    }
    assert!(failures.is_empty(), "over budget: {failures:#?}");
}

/// One tracked socket costs its `DrainGuard`, the `closing()` future the app
/// awaits, and nothing on the controller side: taking a guard allocates nothing
/// and the controller keeps no per-socket state. Issue #6 sets 128 bytes per
/// socket as the target. (Once draining starts, a socket still waiting for its
/// turn also holds a boxed timer until it closes; see `tests/drain_memory.rs`.)
#[test]
fn one_tracked_socket_costs_a_guard_and_its_closing_future_only() {
    let drain = Drain::new();
    let mut guards: Vec<DrainGuard> = Vec::with_capacity(100);
    let before = allocs();
    guards.extend((0..100).map(|_| drain.guard()));
    assert_eq!(allocs() - before, 0, "taking a guard must not allocate");
    assert_eq!(drain.active(), 100);

    let guard_size = std::mem::size_of::<DrainGuard>();
    let closing_size = std::mem::size_of_val(&guards[0].closing());
    let total = guard_size + closing_size;
    println!(
        "DrainGuard {guard_size} B + closing() future {closing_size} B = {total} B per socket"
    );
    assert!(guard_size <= 24, "DrainGuard is {guard_size} bytes");
    assert!(total <= 128, "{total} bytes per tracked socket");
}
