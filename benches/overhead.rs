//! Time the layer adds to a request, measured against the same service without
//! it in the same run, and the same job done with tower-cookies.
//!
//! Run with `cargo bench --bench overhead`; one case with e.g.
//! `cargo bench --bench overhead -- upgrade_issued`. What a service adds is
//! its `_added` line (below); the lines timed alone give the absolute times,
//! which depend on the machine and its load.
//!
//! Groups:
//! - `plain`: a non-upgrade request carrying several cookies (three fields:
//!   `host`, `user-agent`, `cookie`); beside the layer,
//!   tower's `MapResponseLayer` with an identity closure shows what any layer
//!   with its own response future costs here;
//! - `plain_15_fields`: the same with the twelve more fields a browser behind a
//!   balancer sends (the layer's quick test reads every field name);
//! - `upgrade_kept`: an upgrade with a valid affinity cookie (re-sent, the default
//!   `Refresh::EveryUpgrade`; `sticky_refresh_on_change` does not re-send it);
//! - `upgrade_issued`: an upgrade without one: a new UUID v4 is issued;
//! - `upgrade_migrated`: an upgrade with another node's cookie (layer with a node id);
//! - in `plain`, `plain_15_fields`, `upgrade_kept` and `upgrade_issued`, a
//!   `floor` line: a service doing only the `http` operations and allocations
//!   every implementation of this job must perform, without parsing or
//!   checking anything
//!   (`benches/support/floor.rs`). What the layer adds beyond the floor is
//!   what it chose to do;
//! - beside every line of a request group, its `_added` line (`sticky_added`,
//!   `floor_added`, …): what that service adds over the bare handler, both
//!   timed in alternating batches within one measurement (see `bench_added`).
//!   `bare_added`, the bare handler against itself, is the error of that
//!   method and should read about zero. The targets are differences, and
//!   these lines measure them directly; the lines timed alone run seconds
//!   apart, each on its own heap state;
//! - `drain`: signalling 10,000 tracked sockets to close.
//!
//! Each timed iteration calls `poll_ready` and `call`, polls the future once with
//! a no-op waker (every service here answers at once, so no runtime is needed),
//! and drops the response, so the time includes freeing what the layer
//! allocated. Requests are built outside the timed section, 64 at a time (see
//! `batch_size`).

use std::convert::Infallible;
use std::future::{ready, Ready};
use std::hint::black_box;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use http::header::UPGRADE;
use http::{HeaderValue, Request, Response};
use tower::util::MapResponseLayer;
use tower::{service_fn, Layer, Service};
use tower_cookies::cookie::SameSite;
use tower_cookies::{Cookie, CookieManagerLayer, Cookies};
use tower_sticky_upgrade::{Drain, IdGenerator, StickyUpgradeLayer, UuidV4, DEFAULT_COOKIE_NAME};

/// The request, the inner service (`handshake`) and the way it is called,
/// shared with `tests/alloc.rs`.
#[path = "../tests/support/handshake_fixture.rs"]
mod fixture;

use fixture::{add_fields, call_once as call, cookie_line, handshake, noop_waker, respond, Layers};

/// The operations any implementation must perform, and nothing else (not a
/// correct implementation; see the file).
#[path = "support/floor.rs"]
mod floor;

use floor::Floor;

/// A request as hyper would hand it over, with hyper's `OnUpgrade` stand-in
/// on upgrades.
fn request(upgrade: bool, cookie: &HeaderValue) -> Request<()> {
    fixture::request(upgrade, cookie, upgrade)
}

/// The same job done the way it is commonly done today: `CookieManagerLayer`
/// parses the cookies, and the WebSocket handler reads the session cookie,
/// issues a UUID v4 if it is missing or not one, and sets it again with the
/// layer's default attributes (the layer also re-sends a kept cookie on every
/// upgrade by default).
fn tower_cookies_handshake(req: Request<()>) -> Ready<Result<Response<()>, Infallible>> {
    if req.headers().contains_key(UPGRADE) {
        if let Some(cookies) = req.extensions().get::<Cookies>() {
            let kept = cookies
                .get(DEFAULT_COOKIE_NAME)
                .and_then(|c| uuid::Uuid::try_parse(c.value()).ok())
                .filter(|id| id.get_version_num() == 4);
            let id = kept.unwrap_or_else(uuid::Uuid::new_v4);
            black_box(&id);
            cookies.add(
                Cookie::build((DEFAULT_COOKIE_NAME, id.to_string()))
                    .path("/")
                    .secure(true)
                    .http_only(true)
                    .same_site(SameSite::Lax)
                    .build(),
            );
        }
    }
    ready(Ok(respond(&req)))
}

/// Requests built per timed batch (per service, in [`bench_added`]).
///
/// Small on purpose: hyper calls the service right after parsing the request,
/// so its headers are in cache. `BatchSize::SmallInput` builds a tenth of a
/// sample's iterations at once (thousands of requests, megabytes), and the
/// timed part then starts with cache misses on every header it reads: that
/// penalises whatever reads headers (the layer: Upgrade, Connection, Cookie)
/// far more than a bare handler. 64 requests stay in L2.
const BATCH: u64 = 64;

/// [`BATCH`] requests per batch; set `OVERHEAD_COLD_REQUESTS=1` to measure
/// the lines timed alone with `SmallInput` anyway.
fn batch_size() -> BatchSize {
    if std::env::var_os("OVERHEAD_COLD_REQUESTS").is_some() {
        BatchSize::SmallInput
    } else {
        BatchSize::NumIterations(BATCH)
    }
}

/// Benchmarks a service made by `svc` on requests made by `make`, checking
/// first that the response is what the group is about: the line `name`, timed
/// alone, then `{name}_added`, what it adds over the bare handler timed in the
/// same measurement (see [`bench_added`]; for the bare handler itself, the
/// error of that method).
fn bench_service<S>(
    group: &mut Group<'_>,
    name: &str,
    svc: &dyn Fn() -> S,
    make: &dyn Fn() -> Request<()>,
    expect_set_cookie: bool,
) where
    S: Service<Request<()>, Response = Response<()>>,
    S::Error: std::fmt::Debug,
{
    let waker = noop_waker();
    let mut alone = svc();
    let res = call(&mut alone, make(), &waker);
    assert_eq!(
        res.headers().contains_key(http::header::SET_COOKIE),
        expect_set_cookie,
        "{name}: the bench must exercise the path it is named after"
    );
    group.bench_function(name, |b| {
        b.iter_batched(
            make,
            |req| drop(black_box(call(&mut alone, req, &waker))),
            batch_size(),
        )
    });
    bench_added(group, &format!("{name}_added"), svc(), make);
}

fn overhead(c: &mut Criterion) {
    let Layers {
        defaults: layer,
        nodes,
        on_change,
    } = Layers::new();
    let id = UuidV4.generate();

    // Plain requests carry the same cookies as kept upgrades.
    let kept = cookie_line(Some(id.as_str()));
    let none = cookie_line(None);
    let migrated = cookie_line(Some(&format!("{id}.node-2")));

    let mut g = c.benchmark_group("plain");
    let make = || request(false, &kept);
    bare_and_layered(&mut g, &layer, &make, false);
    let tc = || CookieManagerLayer::new().layer(service_fn(tower_cookies_handshake));
    bench_service(&mut g, "tower_cookies", &tc, &make, false);
    // What any layer with its own response future costs: one more call,
    // the request moved once more, the future wrapped and polled through.
    let identity = MapResponseLayer::new(|res: Response<()>| res);
    let svc = || identity.layer(service_fn(handshake));
    bench_service(&mut g, "identity_map_response", &svc, &make, false);
    // The floor: on top of that, the test for `Upgrade` any implementation needs.
    floor(&mut g, &make, false);
    g.finish();

    // The same plain request with the fields a browser behind a balancer
    // adds (15 in all): the layer's quick test reads every field name.
    let mut g = c.benchmark_group("plain_15_fields");
    let make = || {
        let mut req = request(false, &kept);
        add_fields(&mut req, 12);
        req
    };
    bare_and_layered(&mut g, &layer, &make, false);
    floor(&mut g, &make, false);
    g.finish();

    for (group, cookie) in [("upgrade_kept", &kept), ("upgrade_issued", &none)] {
        let mut g = c.benchmark_group(group);
        let make = || request(true, cookie);
        bare_and_layered(&mut g, &layer, &make, true);
        let tc = || CookieManagerLayer::new().layer(service_fn(tower_cookies_handshake));
        bench_service(&mut g, "tower_cookies", &tc, &make, true);
        floor(&mut g, &make, true);
        if group == "upgrade_kept" {
            // A kept cookie is not sent again: no Set-Cookie to render.
            let svc = || on_change.layer(service_fn(handshake));
            bench_service(&mut g, "sticky_refresh_on_change", &svc, &make, false);
        }
        g.finish();
    }

    let mut g = c.benchmark_group("upgrade_migrated");
    let make = || request(true, &migrated);
    bare_and_layered(&mut g, &nodes, &make, true);
    g.finish();
}

type Group<'a> = criterion::BenchmarkGroup<'a, criterion::measurement::WallTime>;

/// The `bare` and `sticky` lines of a group: the handler alone, then under
/// `layer`; `sets_cookie` is whether the layer's answer carries `Set-Cookie`.
/// With each, its `_added` line (see [`bench_added`]).
fn bare_and_layered(
    g: &mut Group<'_>,
    layer: &StickyUpgradeLayer,
    make: &dyn Fn() -> Request<()>,
    sets_cookie: bool,
) {
    // `bare_added`, the handler against itself, should read about zero.
    bench_service(g, "bare", &|| service_fn(handshake), make, false);
    bench_service(
        g,
        "sticky",
        &|| layer.layer(service_fn(handshake)),
        make,
        sets_cookie,
    );
}

/// The `floor` and `floor_added` lines of a group (see
/// `benches/support/floor.rs`).
fn floor(g: &mut Group<'_>, make: &dyn Fn() -> Request<()>, sets_cookie: bool) {
    bench_service(
        g,
        "floor",
        &|| Floor::new(service_fn(handshake)),
        make,
        sets_cookie,
    );
}

/// A line whose time is what `svc` adds over the bare handler. Both are timed
/// within one measurement, in alternating batches of [`BATCH`]
/// requests, so that whatever the machine does over the seconds of a
/// measurement (frequency, neighbours on a VM) falls on both alike. The
/// separate `bare` and `sticky` lines are timed seconds apart, each on its own
/// heap state, and on plain requests they moved by more than the target
/// between two runs of one binary.
///
/// The two sets of a batch are built interleaved, and which set is built
/// first and which is served first both alternate, out of step. Both matter:
/// with one set built wholly before the other, the bare handler measured
/// against itself served the set built first about 15 ns faster per request
/// (where the allocator had put its requests), and the set served second
/// finds the caches as the first left them.
///
/// Each batch is timed on its own; the line's time for `iters` requests is
/// the sum of `svc`'s batches minus the sum of the bare ones. A sample in
/// which the bare batches took longer reads 1 ns in all (a `Duration` cannot
/// be negative, and criterion refuses zero): that can only overstate what
/// `svc` adds.
fn bench_added<S>(group: &mut Group<'_>, name: &str, mut svc: S, make: &dyn Fn() -> Request<()>)
where
    S: Service<Request<()>, Response = Response<()>>,
    S::Error: std::fmt::Debug,
{
    let mut bare = service_fn(handshake);
    let waker = noop_waker();
    group.bench_function(name, |b| {
        b.iter_custom(|iters| {
            // Index 0: under `svc`; 1: bare.
            let mut requests: [Vec<Request<()>>; 2] = Default::default();
            let mut spent = [Duration::ZERO; 2];
            let mut left = iters;
            let mut batch = 0;
            while left > 0 {
                let n = left.min(BATCH);
                left -= n;
                let built = [batch % 2, 1 - batch % 2];
                let served = [batch / 2 % 2, 1 - batch / 2 % 2];
                batch += 1;
                for _ in 0..n {
                    for k in built {
                        requests[k].push(make());
                    }
                }
                for k in served {
                    let started = Instant::now();
                    if k == 0 {
                        for req in requests[0].drain(..) {
                            drop(black_box(call(&mut svc, req, &waker)));
                        }
                    } else {
                        for req in requests[1].drain(..) {
                            drop(black_box(call(&mut bare, req, &waker)));
                        }
                    }
                    spent[k] += started.elapsed();
                }
            }
            spent[0]
                .saturating_sub(spent[1])
                .max(Duration::from_nanos(1))
        })
    });
}

/// Tracked sockets in the drain benchmark.
const SOCKETS: usize = 10_000;

/// `Drain::start` until every one of 10,000 socket tasks, each awaiting
/// `DrainGuard::closing` with a zero close spread, has finished. On a
/// current-thread runtime everything runs on this thread, so the wall time is
/// the CPU time spent (as long as the machine does not preempt it).
fn drain(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("runtime");
    let mut g = c.benchmark_group("drain");
    g.sample_size(20);
    g.bench_function("signal_10k_sockets", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                total += rt.block_on(signal_all(SOCKETS));
            }
            total
        })
    });
    g.finish();
}

async fn signal_all(sockets: usize) -> Duration {
    let drain = Drain::with_close_spread(Duration::ZERO);
    let waiting = Arc::new(AtomicUsize::new(0));
    for _ in 0..sockets {
        let guard = drain.guard();
        let waiting = Arc::clone(&waiting);
        tokio::spawn(async move {
            waiting.fetch_add(1, Ordering::Relaxed);
            // Registers and returns `Pending` in the same poll as the count.
            guard.closing().await;
            drop(guard);
        });
    }
    // Bounded: every task is polled once within a few scheduler ticks.
    for _ in 0..sockets {
        if waiting.load(Ordering::Relaxed) == sockets {
            break;
        }
        tokio::task::yield_now().await;
    }
    assert_eq!(
        waiting.load(Ordering::Relaxed),
        sockets,
        "tasks not started"
    );
    assert_eq!(drain.active(), sockets);

    let started = Instant::now();
    drain.start();
    drain.closed().await;
    let elapsed = started.elapsed();
    assert_eq!(drain.active(), 0);
    elapsed
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = overhead, drain
}
criterion_main!(benches);
