//! WebSocket handshakes per second through a real hyper server on loopback,
//! with and without the layer, in one run.
//!
//! Run with `cargo bench --bench handshake`.
//!
//! Three servers on `127.0.0.1:0` run the same WebSocket handler: `bare`;
//! `sticky`, wrapped in `StickyUpgradeLayer` (defaults: every handshake issues a
//! session id and sets the cookie, and the handler takes a `DrainGuard` for the
//! socket, as an app would); and `by_hand`, doing the same job without the
//! layer (a UUID cookie set by the handler, a guard), which tells the cost of
//! the job from the cost of the layer. A few tokio-tungstenite clients open
//! sockets, one handshake each (TCP connect, HTTP upgrade, `101`), then drop
//! them. Rounds alternate A B C / C B A so that drift in the machine's load
//! hits every server alike, and the ratios are taken per round (the servers
//! run back to back) before their median. Client and servers share the
//! machine, so the client's work (parsing the longer response) counts too.
//! Everything is bounded: the number of rounds, each handshake (5 s), and the
//! whole run (120 s).
//!
//! Environment: `HANDSHAKE_ROUNDS` (default 10) and `HANDSHAKE_PER_ROUND`
//! (handshakes per server per round, default 500).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{CONNECTION, SEC_WEBSOCKET_ACCEPT, SEC_WEBSOCKET_KEY, SET_COOKIE, UPGRADE};
use http::{HeaderValue, Request, Response, StatusCode};
use http_body_util::Empty;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::WebSocketStream;
use tower::{service_fn, Layer, Service};
use tower_sticky_upgrade::{Drain, DrainGuard, StickySession, StickyUpgradeLayer};

const CLIENTS: usize = 4;
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
const RUN_LIMIT: Duration = Duration::from_secs(120);

/// Accepts every WebSocket handshake; the socket task reads until the client
/// goes away. Holds the session's drain guard for the socket's lifetime.
async fn websocket(req: Request<Incoming>) -> Result<Response<Empty<Bytes>>, Infallible> {
    let guard = req
        .extensions()
        .get::<StickySession>()
        .map(StickySession::guard);
    Ok(accept(req, guard))
}

/// Answers the handshake and spawns the socket task, which holds `guard`.
fn accept(mut req: Request<Incoming>, guard: Option<DrainGuard>) -> Response<Empty<Bytes>> {
    let mut res = Response::new(Empty::new());
    let Some(key) = req.headers().get(SEC_WEBSOCKET_KEY) else {
        *res.status_mut() = StatusCode::BAD_REQUEST;
        return res;
    };
    let accept = derive_accept_key(key.as_bytes());
    let on_upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        if let Ok(upgraded) = on_upgrade.await {
            let mut ws =
                WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, None).await;
            while let Some(Ok(_)) = futures_util::StreamExt::next(&mut ws).await {}
        }
        drop(guard);
    });
    *res.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = res.headers_mut();
    h.insert(CONNECTION, HeaderValue::from_static("upgrade"));
    h.insert(UPGRADE, HeaderValue::from_static("websocket"));
    if let Ok(accept) = HeaderValue::from_str(&accept) {
        h.insert(SEC_WEBSOCKET_ACCEPT, accept);
    }
    res
}

/// The same job without the layer, the way an app would do it by hand: the
/// handler sets the same cookie with a new UUID v4 on every 101 and tracks the
/// socket with a drain guard. Separates what the job costs (a longer response
/// for the client to parse, the guard) from what the layer adds.
async fn websocket_by_hand(
    req: Request<Incoming>,
    drain: Drain,
) -> Result<Response<Empty<Bytes>>, Infallible> {
    let mut res = accept(req, Some(drain.guard()));
    if res.status() == StatusCode::SWITCHING_PROTOCOLS {
        let id = uuid::Builder::from_random_bytes(rand::random()).into_uuid();
        let cookie = format!("WS_SESSION_ID={id}; Path=/; Secure; HttpOnly; SameSite=Lax");
        if let Ok(cookie) = HeaderValue::from_str(&cookie) {
            res.headers_mut().append(SET_COOKIE, cookie);
        }
    }
    Ok(res)
}

/// Serves `svc` over HTTP/1.1 with upgrades on a new loopback port.
async fn start<S>(svc: S) -> SocketAddr
where
    S: Service<Request<Incoming>, Response = Response<Empty<Bytes>>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("local address");
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                // Out of descriptors, say: back off rather than spin.
                tokio::time::sleep(Duration::from_millis(1)).await;
                continue;
            };
            let _ = stream.set_nodelay(true);
            let svc = TowerToHyperService::new(svc.clone());
            tokio::spawn(async move {
                let conn = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .with_upgrades();
                let _ = conn.await;
            });
        }
    });
    addr
}

/// One handshake; returns whether the response set a cookie.
async fn handshake(addr: SocketAddr) -> bool {
    let attempt = async {
        let stream = TcpStream::connect(addr).await.expect("connect");
        let _ = stream.set_nodelay(true);
        let url = format!("ws://{addr}/ws");
        let (ws, res) = tokio_tungstenite::client_async(url, stream)
            .await
            .expect("handshake");
        drop(ws);
        res.headers().contains_key(SET_COOKIE)
    };
    tokio::time::timeout(HANDSHAKE_TIMEOUT, attempt)
        .await
        .expect("a handshake took over 5 s")
}

/// `count` handshakes from `CLIENTS` concurrent clients; the elapsed time.
async fn round(addr: SocketAddr, count: usize) -> Duration {
    let left = Arc::new(AtomicUsize::new(count));
    let started = Instant::now();
    let clients: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let left = Arc::clone(&left);
            tokio::spawn(async move {
                while left
                    .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
                    .is_ok()
                {
                    handshake(addr).await;
                }
            })
        })
        .collect();
    for client in clients {
        client.await.expect("client task");
    }
    started.elapsed()
}

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|&n| n > 0)
        .unwrap_or(default)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` does not: then
    // run a short smoke round only.
    let bench = std::env::args().any(|a| a == "--bench");
    let rounds = if bench {
        env_or("HANDSHAKE_ROUNDS", 10)
    } else {
        1
    };
    let per_round = if bench {
        env_or("HANDSHAKE_PER_ROUND", 500)
    } else {
        20
    };
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(cores)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let drain = Drain::new();
        let by_hand = service_fn(move |req| websocket_by_hand(req, drain.clone()));
        let servers = [
            ("bare", start(service_fn(websocket)).await),
            ("by_hand", start(by_hand).await),
            ("sticky", start(StickyUpgradeLayer::new().layer(service_fn(websocket))).await),
        ];
        for (name, addr) in servers {
            let sets_cookie = handshake(addr).await;
            assert_eq!(sets_cookie, name != "bare", "{name}: cookie on the 101");
        }

        println!(
            "handshake: {cores} cores, {CLIENTS} clients, {rounds} rounds x {per_round} handshakes per server, order A B C / C B A"
        );
        // Warm-up: connection pools, allocator, branch predictors.
        for (_, addr) in servers {
            round(addr, per_round / 2).await;
        }

        let run = Instant::now();
        let mut rates: [Vec<f64>; 3] = Default::default();
        let mut times = [Duration::ZERO; 3];
        for i in 0..rounds {
            if run.elapsed() > RUN_LIMIT {
                println!("time limit reached after {i} rounds");
                break;
            }
            let order = if i % 2 == 0 { [0, 1, 2] } else { [2, 1, 0] };
            for s in order {
                let t = round(servers[s].1, per_round).await;
                rates[s].push(per_round as f64 / t.as_secs_f64());
                times[s] += t;
            }
            println!(
                "round {i:>2}: bare {:>7.0}/s  by_hand {:>7.0}/s  sticky {:>7.0}/s",
                rates[0][i], rates[1][i], rates[2][i]
            );
        }
        let overall: Vec<f64> = (0..3)
            .map(|s| (rates[s].len() * per_round) as f64 / times[s].as_secs_f64())
            .collect();
        // Within a round the servers run back to back, so a per-round ratio
        // cancels drift in the machine's load; its median is the robust figure.
        let paired = |a: usize, b: usize| {
            median(rates[a].iter().zip(&rates[b]).map(|(x, y)| x / y).collect())
        };
        let (sticky_bare, sticky_by_hand) = (paired(2, 0), paired(2, 1));
        let medians: Vec<f64> = rates.into_iter().map(median).collect();
        for (s, (name, _)) in servers.iter().enumerate() {
            println!(
                "{name:<8} {:>7.0} handshakes/s overall, median round {:>7.0}/s",
                overall[s], medians[s]
            );
        }
        println!(
            "sticky / bare:    {:.3} median of per-round ratios, {:.3} overall (target >= 0.97)",
            sticky_bare,
            overall[2] / overall[0],
        );
        println!(
            "sticky / by_hand: {:.3} median of per-round ratios, {:.3} overall",
            sticky_by_hand,
            overall[2] / overall[1],
        );
    });
}
