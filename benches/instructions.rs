//! A fixed-work driver for counting the instructions the layer adds, with
//! callgrind, and a second, simpler timing of the same cases.
//!
//! Criterion (`benches/overhead.rs`) gives the times the README reports; this
//! binary explains them. Run one case a fixed number of times, bare or under the
//! layer, and subtract a run of zero requests to remove start-up:
//!
//! ```sh
//! cargo bench --bench instructions --no-run   # prints the binary's path
//! BIN=target/release/deps/instructions-<hash>
//! for n in 0 10000; do
//!   valgrind --tool=callgrind --callgrind-out-file=cg.kept.sticky.$n $BIN kept sticky $n
//! done
//! # (Ir at 10000 - Ir at 0) / 10000, minus the same for `bare`, is what the layer adds;
//! # `callgrind_annotate --inclusive=no` on the two files shows where.
//! ```
//!
//! Cases: `plain`, `kept` (cookie re-sent, the default refresh), `issued`.
//! Modes: `bare`, `sticky`, and `floor` (`benches/support/floor.rs`: only the
//! operations any implementation must perform, for comparison).
//!
//! Without arguments (`cargo bench --bench instructions`) it times every case:
//! 400 rounds of 256 requests, bare, layered and floor rounds interleaved, and
//! prints quantiles of the per-request time of each; then the same for plain
//! requests with 8 to 40 fields (`plain8f` …), as browsers and balancers send
//! them. A plain loop without criterion's machinery, it shows how much of a
//! difference of a few nanoseconds is code layout: the same code measures
//! differently from one build to the next.

use std::hint::black_box;
use std::time::Instant;

use http::{HeaderValue, Request};
use tower::{service_fn, Layer, Service};
use tower_sticky_upgrade::{IdGenerator, StickyUpgradeLayer, UuidV4};

#[path = "../tests/support/handshake_fixture.rs"]
mod fixture;

use fixture::{add_fields, call_once, cookie_line, handshake, noop_waker, request};

#[path = "support/floor.rs"]
mod floor;

use floor::Floor;

const CASES: [&str; 3] = ["plain", "kept", "issued"];

/// Rounds of the timing mode, and requests per round.
const ROUNDS: usize = 400;
const PER_ROUND: usize = 256;

/// The request of `case`: whether it upgrades, and its `Cookie` line.
fn case_request(case: &str, id: &str) -> (bool, HeaderValue) {
    let cookie = cookie_line((case != "issued").then_some(id));
    (case != "plain", cookie)
}

/// Requests built before any is served, as a server hands them over.
fn requests(upgrade: bool, cookie: &HeaderValue, n: usize) -> Vec<Request<()>> {
    (0..n).map(|_| request(upgrade, cookie, upgrade)).collect()
}

/// Serves every request and drops the responses.
fn serve<S>(svc: &mut S, requests: Vec<Request<()>>)
where
    S: Service<Request<()>, Response = http::Response<()>>,
    S::Error: std::fmt::Debug,
{
    let waker = noop_waker();
    for req in requests {
        drop(black_box(call_once(svc, req, &waker)));
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    // `cargo bench` passes `--bench`; only explicit cases select the fixed mode.
    match args.iter().map(String::as_str).collect::<Vec<_>>()[..] {
        [case, mode, n] if CASES.contains(&case) => fixed(case, mode, n),
        _ => timing(),
    }
}

/// `n` requests of `case`, bare or under the layer.
fn fixed(case: &str, mode: &str, n: &str) {
    let n: usize = n.parse().expect("a request count");
    let id = UuidV4.generate();
    let (upgrade, cookie) = case_request(case, id.as_str());
    let reqs = requests(upgrade, &cookie, n);
    match mode {
        "bare" => serve(&mut service_fn(handshake), reqs),
        "sticky" => serve(
            &mut StickyUpgradeLayer::new().layer(service_fn(handshake)),
            reqs,
        ),
        "floor" => serve(&mut Floor::new(service_fn(handshake)), reqs),
        other => panic!("mode is bare, sticky or floor, not {other}"),
    }
}

/// Interleaved rounds, bare, layered and floor, for every case; then plain
/// requests with more fields (the layer's quick test scans the field names
/// up to a limit).
fn timing() {
    let id = UuidV4.generate();
    println!("ns per request: min / p25 / median, {ROUNDS} rounds of {PER_ROUND}; added = median - bare median");
    for case in CASES {
        let (upgrade, cookie) = case_request(case, id.as_str());
        compare(case, &|| requests(upgrade, &cookie, PER_ROUND));
    }
    let cookie = cookie_line(Some(id.as_str()));
    for more in [5, 12, 13, 14, 20, 25, 26, 29, 37] {
        let make = || {
            let mut reqs = requests(false, &cookie, PER_ROUND);
            for req in &mut reqs {
                add_fields(req, more);
            }
            reqs
        };
        compare(&format!("plain{}f", 3 + more), &make);
    }
}

/// Times bare, layered and floor rounds, interleaved, on requests from `make`.
fn compare(case: &str, make: &dyn Fn() -> Vec<Request<()>>) {
    let mut bare = service_fn(handshake);
    let mut sticky = StickyUpgradeLayer::new().layer(service_fn(handshake));
    let mut floor = Floor::new(service_fn(handshake));
    let mut times: [Vec<f64>; 3] = Default::default();
    for round in 0..ROUNDS * times.len() {
        let reqs = make();
        let which = round % times.len();
        let start = Instant::now();
        match which {
            0 => serve(&mut bare, reqs),
            1 => serve(&mut sticky, reqs),
            _ => serve(&mut floor, reqs),
        }
        times[which].push(start.elapsed().as_secs_f64() * 1e9 / PER_ROUND as f64);
    }
    let [b, s, f] = times.map(|mut times| {
        times.sort_by(f64::total_cmp);
        let at = |q: f64| times[((times.len() - 1) as f64 * q) as usize];
        [at(0.0), at(0.25), at(0.5)]
    });
    for (name, q) in [("bare", b), ("layer", s), ("floor", f)] {
        println!(
            "{case:9} {name:6} {:6.1} {:6.1} {:6.1} | added {:+6.1}",
            q[0],
            q[1],
            q[2],
            q[2] - b[2]
        );
    }
}
