//! Draining on a real server with real WebSocket clients: close 1001 spread
//! over the window, the deadline, refusals while draining, health, stats.

mod harness;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use http::header::{CACHE_CONTROL, CONNECTION, RETRY_AFTER, SET_COOKIE};
use http::{Request, StatusCode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;
use tower_sticky_upgrade::{Drain, DrainOutcome, StickyUpgradeLayer, DEFAULT_COOKIE_NAME};

use harness::{
    connect, cookie_pair, get, http1, next_close, raw_upgrade, read_frame, read_head, refused,
    set_cookie, welcome, within, Client, Event, Node, Options, LONG,
};

fn layer_with(drain: &Drain) -> StickyUpgradeLayer {
    StickyUpgradeLayer::builder()
        .drain(drain.clone())
        .build()
        .expect("valid configuration")
}

/// Opens `n` sockets and reads each welcome; returns them with their session ids.
async fn open(node: &Node, n: usize) -> Vec<(Client, String)> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let (mut ws, _) = connect(node.ws_request(&[])).await;
        let id = welcome(&mut ws).await.session;
        out.push((ws, id));
    }
    out
}

/// What a client saw at the end of its socket.
#[derive(Debug)]
struct Ending {
    session: String,
    /// When the Close frame arrived.
    at: Instant,
    code: Option<CloseCode>,
    reason: String,
    /// Close frames after the first one (must be none).
    extra_closes: usize,
}

/// Reads until the server's Close, then lets tungstenite finish the close
/// handshake until the stream ends.
fn read_until_closed(mut ws: Client, session: String) -> tokio::task::JoinHandle<Ending> {
    tokio::spawn(async move {
        let frame = next_close(&mut ws).await;
        let at = Instant::now();
        let mut extra_closes = 0;
        while let Some(msg) = ws.next().await {
            if matches!(msg, Ok(Message::Close(_))) {
                extra_closes += 1;
            }
        }
        Ending {
            session,
            at,
            code: frame.as_ref().map(|f| f.code),
            reason: frame.map(|f| f.reason.to_string()).unwrap_or_default(),
            extra_closes,
        }
    })
}

/// A [`read_until_closed`] task for each socket of [`open`].
fn read_all_until_closed(sockets: Vec<(Client, String)>) -> Vec<tokio::task::JoinHandle<Ending>> {
    sockets
        .into_iter()
        .map(|(ws, id)| read_until_closed(ws, id))
        .collect()
}

/// What each reader saw, in order; each bounded by [`within`].
async fn endings(readers: Vec<tokio::task::JoinHandle<Ending>>) -> Vec<Ending> {
    let mut endings = Vec::with_capacity(readers.len());
    for reader in readers {
        endings.push(within("client sees Close", reader).await.expect("reader"));
    }
    endings
}

/// The `CloseSent` events reported so far, by session id.
fn close_times(node: &mut Node) -> HashMap<String, Instant> {
    node.drain_events()
        .into_iter()
        .filter_map(|e| match e {
            Event::CloseSent { id, close_at, .. } => {
                Some((id.to_string(), close_at.expect("set once draining")))
            }
            _ => None,
        })
        .collect()
}

/// How many of `offsets` fall in each tenth of `window` (later ones in the last).
fn tenths(offsets: &[Duration], window: Duration) -> [usize; 10] {
    let mut slices = [0; 10];
    for offset in offsets {
        let i = (offset.as_secs_f64() / window.as_secs_f64() * 10.0) as usize;
        slices[i.min(9)] += 1;
    }
    slices
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_socket_gets_1001_spread_over_the_window() {
    const CLIENTS: usize = 40;
    let window = Duration::from_secs(2);
    let drain = Drain::with_close_spread(window);
    let mut node = Node::start(layer_with(&drain)).await;
    let sockets = open(&node, CLIENTS).await;
    assert_eq!(drain.active(), CLIENTS);
    let readers = read_all_until_closed(sockets);

    let before = Instant::now();
    assert!(drain.start());
    let after = Instant::now();

    let endings = endings(readers).await;
    assert_eq!(drain.wait(LONG).await, DrainOutcome::Drained);
    assert_eq!(drain.active(), 0);

    let close_at = close_times(&mut node);
    assert_eq!(close_at.len(), CLIENTS, "each socket was signalled once");
    for end in &endings {
        assert_eq!(end.code, Some(CloseCode::Away), "{end:?}");
        assert_eq!(end.reason, "draining");
        assert_eq!(end.extra_closes, 0);
        // No Close leaves before its slot, and every slot is in the window.
        let at = close_at[&end.session];
        assert!(at >= before && at < after + window, "{end:?}");
        assert!(end.at >= at, "arrived before its slot: {end:?}");
    }

    // The schedule itself, free of scheduling noise: spread over the window.
    let mut planned: Vec<_> = close_at.values().map(|&t| t - before).collect();
    planned.sort();
    let planned_span = planned[CLIENTS - 1] - planned[0];
    assert!(planned_span >= window * 3 / 4, "{planned:?}");
    let slices = tenths(&planned, window);
    assert!(
        slices.iter().all(|&n| n <= CLIENTS / 4),
        "planned {slices:?}"
    );

    // What the clients saw, reported but not asserted: a stall of the test
    // process bunches arrivals up, while the checks above (every slot planned
    // across the window, no Close arriving before its slot) already fail if
    // all sockets were closed at once.
    let mut arrivals: Vec<_> = endings.iter().map(|e| e.at - before).collect();
    arrivals.sort();
    let span = arrivals[CLIENTS - 1] - arrivals[0];
    let slices = tenths(&arrivals, window);
    eprintln!(
        "{CLIENTS} closes over {window:?}: planned span {planned_span:?}, arrival span {span:?} \
         (first {:?}, last {:?}), per tenth {slices:?}",
        arrivals[0],
        arrivals[CLIENTS - 1]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_close_delay_holds_the_closes_but_not_the_refusals() {
    const CLIENTS: usize = 8;
    let delay = Duration::from_millis(1500);
    let window = Duration::from_millis(500);
    let drain = Drain::builder()
        .close_delay(delay)
        .close_spread(window)
        .build();
    let mut node = Node::start(layer_with(&drain)).await;
    let readers = read_all_until_closed(open(&node, CLIENTS).await);

    let before = Instant::now();
    assert!(drain.start());
    let after = Instant::now();
    // The balancer is told at once: upgrades are refused and health fails
    // while every socket is still open.
    let res = refused(node.ws_request(&[])).await;
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    let res = get(node.addr, "/ws-health").await;
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    // Read before the clock: every close is planned after `before + delay`,
    // so a count taken before that instant must still be whole.
    let active = drain.active();
    if before.elapsed() < delay {
        assert_eq!(active, CLIENTS, "no socket closed during the delay");
    }

    let endings = endings(readers).await;
    assert_eq!(drain.wait(LONG).await, DrainOutcome::Drained);
    let close_at = close_times(&mut node);
    assert_eq!(close_at.len(), CLIENTS);
    for end in &endings {
        assert_eq!(end.code, Some(CloseCode::Away), "{end:?}");
        let at = close_at[&end.session];
        assert!(
            at >= before + delay && at < after + delay + window,
            "planned outside the window after the delay: {end:?}"
        );
        assert!(end.at >= at, "arrived before its slot: {end:?}");
    }
}

#[tokio::test]
async fn clients_ignoring_the_close_are_dropped_after_the_close_handshake_wait() {
    let drain = Drain::with_close_spread(Duration::ZERO);
    let options = Options {
        close_handshake: Some(Duration::from_millis(300)),
        ..Options::default()
    };
    let mut node = Node::start_with(layer_with(&drain), options).await;
    // One never reads at all; one reads the Close and never answers.
    let mut deaf = raw_upgrade(node.addr).await;
    let mut mute = raw_upgrade(node.addr).await;
    let (opcode, _) = within("welcome", read_frame(&mut mute)).await;
    assert_eq!(opcode, 0x1, "a text welcome");
    assert_eq!(drain.active(), 2);

    drain.start();
    let (opcode, payload) = within("close frame", read_frame(&mut mute)).await;
    assert_eq!(opcode, 0x8, "a Close frame");
    assert_eq!(payload[..2], 1001u16.to_be_bytes(), "code 1001");
    assert_eq!(&payload[2..], b"draining");

    // The server gives up on both after its close-handshake wait, without
    // either client doing anything.
    assert_eq!(drain.wait(LONG).await, DrainOutcome::Drained);
    let mut gone = 0;
    while gone < 2 {
        if let Event::SocketGone { .. } = node.next_event().await {
            gone += 1;
        }
    }
    let mut rest = Vec::new();
    within("server closes the mute client", mute.read_to_end(&mut rest))
        .await
        .expect("read to EOF");
    assert!(rest.is_empty(), "nothing after the Close: {rest:?}");

    // The deaf client finds the welcome, the Close, then the end of the stream.
    assert_eq!(within("welcome", read_frame(&mut deaf)).await.0, 0x1);
    assert_eq!(within("close", read_frame(&mut deaf)).await.0, 0x8);
    let mut rest = Vec::new();
    within("server closes the deaf client", deaf.read_to_end(&mut rest))
        .await
        .expect("read to EOF");
    assert!(rest.is_empty());
}

#[tokio::test]
async fn deadline_bounds_the_wait_when_sockets_never_close() {
    let drain = Drain::with_close_spread(Duration::ZERO);
    // The socket task keeps its guard until the client acts.
    let options = Options {
        close_handshake: None,
        ..Options::default()
    };
    let mut node = Node::start_with(layer_with(&drain), options).await;
    let (mut idle, _) = connect(node.ws_request(&[])).await; // never reads
    welcome(&mut idle).await;
    let mut mute = raw_upgrade(node.addr).await; // reads, never replies
    assert_eq!(within("welcome", read_frame(&mut mute)).await.0, 0x1);
    assert_eq!(drain.active(), 2);

    drain.start();
    assert_eq!(within("close frame", read_frame(&mut mute)).await.0, 0x8);
    let deadline = Duration::from_millis(500);
    let started = Instant::now();
    let outcome = within("wait with a deadline", drain.wait(deadline)).await;
    assert_eq!(outcome, DrainOutcome::TimedOut { still_open: 2 });
    assert!(started.elapsed() >= deadline);
    let sent = node
        .drain_events()
        .into_iter()
        .filter(|e| matches!(e, Event::CloseSent { .. }))
        .count();
    assert_eq!(sent, 2, "both were told to close");

    // Once the clients go away, so do the guards.
    drop(idle);
    mute.shutdown().await.expect("shutdown");
    drop(mute);
    within("last guard dropped", drain.closed()).await;
    assert_eq!(drain.active(), 0);
}

/// SIGTERM while a handshake is between the layer and its `101` (the handler
/// still routing or authenticating): the drain counts that upgrade, waits for
/// its socket and closes it with 1001, instead of reporting `Drained` while the
/// socket is still to come.
#[tokio::test]
async fn drain_started_during_a_handshake_waits_for_that_socket() {
    let drain = Drain::with_close_spread(Duration::from_secs(5));
    let gate = Arc::new(Semaphore::new(0));
    let options = Options {
        gate: Some(Arc::clone(&gate)),
        ..Options::default()
    };
    let mut node = Node::start_with(layer_with(&drain), options).await;
    let client = tokio::spawn(connect(node.ws_request(&[])));
    let (path, session) = node.next_call().await;
    assert_eq!(path, "/ws");
    let session = session.expect("the layer let the upgrade through");
    assert_eq!(drain.active(), 1, "the handshake counts before its guard");

    drain.start();
    let wait = tokio::spawn(drain.wait(LONG));
    tokio::task::yield_now().await;
    assert_eq!(drain.active(), 1);
    assert!(!wait.is_finished(), "nothing is drained yet");

    // The handler answers now: its guard is taken after the start, so its
    // socket is told to close at once.
    gate.add_permits(1);
    let (mut ws, res) = within("handshake", client).await.expect("client task");
    assert_eq!(res.status(), StatusCode::SWITCHING_PROTOCOLS);
    assert!(
        set_cookie(res.headers(), DEFAULT_COOKIE_NAME).is_some(),
        "the accepted upgrade has its cookie"
    );
    let close = next_close(&mut ws).await.expect("a Close frame");
    assert_eq!(close.code, CloseCode::Away);
    drop(ws);
    let outcome = within("drain", wait).await.expect("wait task");
    assert_eq!(outcome, DrainOutcome::Drained);
    assert_eq!(drain.active(), 0);
    assert!(node
        .drain_events()
        .iter()
        .any(|e| matches!(e, Event::CloseSent { id, .. } if id == session.id())));
}

#[tokio::test]
async fn upgrade_during_drain_gets_503_and_never_reaches_the_service() {
    let drain = Drain::with_close_spread(Duration::from_secs(60));
    let layer = StickyUpgradeLayer::builder()
        .drain(drain.clone())
        .retry_after(Duration::from_secs(7))
        .build()
        .unwrap();
    let node = Node::start(layer).await;
    let (mut ws, res) = connect(node.ws_request(&[])).await;
    welcome(&mut ws).await;
    let cookie =
        cookie_pair(set_cookie(res.headers(), DEFAULT_COOKIE_NAME).expect("cookie")).to_owned();
    let calls = node.calls();

    assert!(drain.start());
    for cookies in [vec![], vec![cookie.as_str()]] {
        let res = refused(node.ws_request(&cookies)).await;
        assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(res.headers()[RETRY_AFTER], "7");
        assert_eq!(res.headers()[CONNECTION], "close");
        assert!(res.headers().get(SET_COOKIE).is_none());
    }

    // `Connection: close` is honoured: the server ends the connection.
    let mut raw = TcpStream::connect(node.addr).await.expect("connect");
    let req = format!(
        "GET /ws HTTP/1.1\r\nHost: {}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
        node.addr
    );
    raw.write_all(req.as_bytes()).await.expect("write");
    let head = within("503 head", read_head(&mut raw)).await;
    assert!(head.starts_with("HTTP/1.1 503"), "{head}");
    let mut rest = Vec::new();
    within("server closes the connection", raw.read_to_end(&mut rest))
        .await
        .expect("read to EOF");

    // Ordinary requests still pass.
    let res = get(node.addr, "/plain").await;
    assert_eq!(res.status(), StatusCode::OK);

    assert_eq!(node.calls(), calls + 1, "only the plain request was served");
    assert_eq!(node.layer.stats().refused_draining, 3);
    assert_eq!(drain.active(), 1, "refused upgrades leave no count behind");
}

#[tokio::test]
async fn health_flips_from_200_to_503() {
    let drain = Drain::new();
    let node = Node::start(layer_with(&drain)).await;
    let res = get(node.addr, "/ws-health").await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.body().as_ref(), b"ok");

    drain.start();
    let res = get(node.addr, "/ws-health").await;
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(res.body().as_ref(), b"draining");
    assert_eq!(res.headers()[CACHE_CONTROL], "no-store");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_twice_is_harmless() {
    const CLIENTS: usize = 10;
    let window = Duration::from_secs(1);
    let drain = Drain::with_close_spread(window);
    let mut node = Node::start(layer_with(&drain)).await;
    let sockets = open(&node, CLIENTS).await;
    let probe = drain.guard();
    let readers = read_all_until_closed(sockets);

    let before = Instant::now();
    assert!(drain.start());
    let after = Instant::now();
    let planned = probe.close_at().expect("draining");

    // Once the first socket closed, start again: nothing changes.
    let first = loop {
        if let Event::CloseSent { id, .. } = node.next_event().await {
            break id;
        }
    };
    assert!(!drain.start());
    assert!(!drain.clone().start());
    assert!(drain.is_draining());
    assert_eq!(
        probe.close_at(),
        Some(planned),
        "the schedule was not reset"
    );

    let mut signalled = vec![first.to_string()];
    for end in endings(readers).await {
        assert_eq!(end.code, Some(CloseCode::Away));
        assert_eq!(end.extra_closes, 0, "signalled once: {end:?}");
    }
    for (id, at) in close_times(&mut node) {
        assert!(at >= before && at < after + window, "slot moved: {at:?}");
        signalled.push(id);
    }
    signalled.sort();
    signalled.dedup();
    assert_eq!(signalled.len(), CLIENTS, "each socket told once");

    drop(probe);
    assert_eq!(drain.wait(LONG).await, DrainOutcome::Drained);
}

/// 1,000 real WebSocket connections (2,000 sockets in this process): all get
/// 1001 and the drain reports `Drained`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_sockets_drain() {
    const CLIENTS: usize = 1000;
    const CONNECTORS: usize = 20;
    let drain = Drain::with_close_spread(Duration::from_secs(1));
    let node = Node::start(layer_with(&drain)).await;
    let addr = node.addr;

    let opened = Instant::now();
    let connectors: Vec<_> = (0..CONNECTORS)
        .map(|_| {
            tokio::spawn(async move {
                let mut clients = Vec::new();
                for _ in 0..CLIENTS / CONNECTORS {
                    let (mut ws, _) = connect(harness::ws_request(addr, &[])).await;
                    let id = welcome(&mut ws).await.session;
                    clients.push(read_until_closed(ws, id));
                }
                clients
            })
        })
        .collect();
    let mut readers = Vec::with_capacity(CLIENTS);
    for connector in connectors {
        readers.extend(within("connect", connector).await.expect("connector"));
    }
    let opened = opened.elapsed();
    assert_eq!(drain.active(), CLIENTS);

    let started = Instant::now();
    assert!(drain.start());
    let endings = endings(readers).await;
    let away = endings
        .iter()
        .filter(|end| end.code == Some(CloseCode::Away));
    assert_eq!(away.count(), CLIENTS);
    assert_eq!(drain.wait(LONG).await, DrainOutcome::Drained);
    assert_eq!(drain.active(), 0);
    eprintln!(
        "{CLIENTS} sockets: opened in {opened:?}, drained in {:?}",
        started.elapsed()
    );
    assert_eq!(node.layer.stats().issued, CLIENTS as u64);
}

#[tokio::test]
async fn stats_count_every_decision() {
    let a = Node::start(StickyUpgradeLayer::builder().node_id("a").build().unwrap()).await;
    let drain = Drain::with_close_spread(Duration::ZERO);
    let b = Node::start(
        StickyUpgradeLayer::builder()
            .node_id("b")
            .drain(drain.clone())
            .allowed_origins(["https://app.example"])
            .build()
            .unwrap(),
    )
    .await;
    let (_ws, res) = connect(a.ws_request(&[])).await;
    let from_a = cookie_pair(set_cookie(res.headers(), DEFAULT_COOKIE_NAME).unwrap()).to_owned();

    let mut open = Vec::new();
    // Issued twice.
    for _ in 0..2 {
        let (ws, res) = connect(b.ws_request(&[])).await;
        open.push((ws, res));
    }
    let from_b =
        cookie_pair(set_cookie(open[0].1.headers(), DEFAULT_COOKIE_NAME).unwrap()).to_owned();
    // Kept, migrated, and an invalid cookie (which is also issued).
    for cookie in [from_b.as_str(), &from_a, "WS_SESSION_ID=garbage"] {
        open.push(connect(b.ws_request(&[cookie])).await);
    }
    // Refused by the service (no key): still an issued upgrade.
    let no_key = Request::get("/ws")
        .header("connection", "upgrade")
        .header("upgrade", "websocket")
        .header("sec-websocket-version", "13")
        .body(())
        .unwrap();
    assert_eq!(
        http1(b.addr, no_key).await.status(),
        StatusCode::BAD_REQUEST
    );
    // Refused for its Origin.
    let mut evil = b.ws_request(&[]);
    evil.headers_mut()
        .insert("origin", "https://evil.example".parse().unwrap());
    assert_eq!(refused(evil).await.status(), StatusCode::FORBIDDEN);
    // Not an upgrade: not counted.
    assert_eq!(get(b.addr, "/plain").await.status(), StatusCode::OK);

    let stats = b.layer.stats();
    assert_eq!(stats.upgrades, 7);
    assert_eq!(stats.issued, 4);
    assert_eq!(stats.kept, 1);
    assert_eq!(stats.migrated, 1);
    assert_eq!(stats.invalid_cookies, 1);
    assert_eq!(stats.refused_draining, 0);
    assert_eq!(stats.refused_origin, 1);
    assert_eq!(stats.active, 5);

    // Refused while draining, even with a good cookie: counted as refused only.
    drain.start();
    for cookie in [vec![], vec![from_b.as_str()]] {
        let res = refused(b.ws_request(&cookie)).await;
        assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    }
    let mut readers = Vec::new();
    for (ws, _) in open {
        readers.push(read_until_closed(ws, String::new()));
    }
    for reader in readers {
        within("close", reader).await.expect("reader");
    }
    assert_eq!(drain.wait(LONG).await, DrainOutcome::Drained);

    let stats = b.layer.stats();
    assert_eq!(stats.upgrades, 9);
    assert_eq!(
        (
            stats.issued,
            stats.kept,
            stats.migrated,
            stats.invalid_cookies
        ),
        (4, 1, 1, 1)
    );
    assert_eq!(stats.refused_draining, 2);
    assert_eq!(stats.refused_origin, 1);
    assert_eq!(stats.active, 0);
    // Node a only issued once.
    let a_stats = a.layer.stats();
    assert_eq!((a_stats.upgrades, a_stats.issued), (1, 1));
}
