//! End to end through a real load balancer: three nodes of
//! `examples/server.rs` behind HAProxy configured by `deploy/haproxy.cfg`,
//! which learns the affinity cookie from the `101` and sticks on it.
//!
//! Needs `haproxy` (`bash .ci/install-e2e.sh`). Without it the test passes
//! with a loud `SKIPPED` line, except under `CI=true`, where it fails.
//! `E2E_HAPROXY=/path/to/haproxy` picks the executable
//! (`E2E_HAPROXY=/nonexistent` shows the skip path).

#[path = "support/lb.rs"]
mod lb;
mod support;

use std::collections::{BTreeMap, HashMap};
use std::process::ExitStatus;
use std::time::{Duration, Instant};

use futures_util::SinkExt;
use lb::{Cluster, ConnectError, CookieJar, Interrupted, NodeOptions, Welcome, Ws};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tokio_tungstenite::tungstenite::Message;

const CLIENTS: usize = 30;
const RECONNECTS: usize = 10;
/// Echoes each client gets before the drain starts, and after it reconnects.
const WARM_ECHOES: u64 = 5;
/// Pace of the numbered messages of each client.
const MESSAGE_INTERVAL: Duration = Duration::from_millis(20);
/// Bounds on the reconnection after a `1001`.
const RECONNECT_ATTEMPTS: u32 = 40;
const RECONNECT_BUDGET: Duration = Duration::from_secs(20);
/// Bound on each wait for an echo.
const ECHO_TIMEOUT: Duration = Duration::from_secs(5);

const OPTIONS: NodeOptions = NodeOptions {
    // HAProxy takes a node out after `inter 500ms fall 2`: about a second.
    close_delay: Duration::from_millis(1500),
    close_spread: Duration::from_secs(1),
    drain_timeout: Duration::from_secs(10),
    retry_after: Duration::from_secs(1),
};

#[test]
fn haproxy_keeps_sessions_on_their_node_and_moves_them_on_drain() {
    let Some([haproxy]) = lb::tools_or_skip("e2e_haproxy", [lb::Tool::HaProxy]) else {
        return;
    };
    let started = Instant::now();
    let mut cluster = Cluster::start(&haproxy, OPTIONS);
    lb::report(&format!(
        "haproxy e2e: 3 nodes + haproxy up in {:?}",
        started.elapsed()
    ));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    runtime.block_on(scenario(&mut cluster));
    lb::report(&format!(
        "haproxy e2e: total {:?} (including the cluster start)",
        started.elapsed()
    ));
}

/// A client after its first connection.
#[derive(Debug, Clone)]
struct Client {
    id: usize,
    jar: CookieJar,
    node: String,
    session: String,
}

async fn scenario(cluster: &mut Cluster) {
    let url = cluster.ws_url();

    // 1. Fresh clients spread over the nodes and get a session each.
    let clients = fresh_clients(&url).await;
    let mut per_node: BTreeMap<&str, usize> = Cluster::NODES.iter().map(|n| (*n, 0)).collect();
    for c in &clients {
        *per_node
            .get_mut(c.node.as_str())
            .unwrap_or_else(|| panic!("client {} on unknown node {:?}", c.id, c.node)) += 1;
    }
    lb::report(&format!("{CLIENTS} fresh clients per node: {per_node:?}"));
    assert!(
        per_node.values().all(|n| *n > 0),
        "fresh clients did not reach every node: {per_node:?}"
    );
    let sessions: std::collections::HashSet<&str> =
        clients.iter().map(|c| c.session.as_str()).collect();
    assert_eq!(sessions.len(), CLIENTS, "session ids must be unique");

    // HAProxy learned every cookie from a 101 (`stick store-response`), for
    // the node that set it.
    for c in &clients {
        let value = c.jar.get(lb::COOKIE_NAME).expect("affinity cookie");
        let stuck = cluster.stuck_node(value).expect("HAProxy admin socket");
        assert_eq!(
            stuck,
            Some(c.node.as_str()),
            "HAProxy's stick table for client {}'s cookie {value:?}",
            c.id
        );
    }

    // 2. Every reconnect with the cookie lands on the same node, same session.
    let mut tasks = JoinSet::new();
    for c in clients.clone() {
        let url = url.clone();
        tasks.spawn(reconnect_ten_times(url, c));
    }
    let mut sockets: HashMap<usize, Ws> = HashMap::new();
    let (mut sticky, mut total) = (0u32, 0usize);
    let mut misrouted = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        let (id, welcomes, ws) = joined.expect("reconnect task panicked");
        let c = &clients[id];
        for w in welcomes {
            total += 1;
            if w.node == c.node && w.session == c.session && w.affinity == "kept" {
                sticky += 1;
            } else {
                misrouted.push((id, c.node.clone(), c.session.clone(), w));
            }
        }
        sockets.insert(id, ws);
    }
    let percent = 100.0 * f64::from(sticky) / f64::from(u32::try_from(total).expect("small"));
    lb::report(&format!(
        "stickiness: {sticky}/{total} reconnects on the same node with `kept` = {percent:.1}%"
    ));
    assert_eq!(total, CLIENTS * RECONNECTS);
    assert!(
        misrouted.is_empty(),
        "{} reconnects left their node or session, the first ones (client, node, session, welcome): {:#?}",
        misrouted.len(),
        &misrouted[..misrouted.len().min(5)]
    );

    // 3. Numbered messages on every socket, then drain the busiest node.
    let drained = per_node
        .iter()
        .max_by_key(|(_, n)| **n)
        .map(|(name, _)| name.to_string())
        .expect("three nodes");
    let (stop_tx, stop_rx) = watch::channel(false);
    let (milestones_tx, mut milestones) = mpsc::unbounded_channel();
    let mut tasks = JoinSet::new();
    for c in clients.iter().cloned() {
        let ws = sockets.remove(&c.id).expect("socket from step 2");
        tasks.spawn(talk(
            url.clone(),
            c,
            ws,
            stop_rx.clone(),
            milestones_tx.clone(),
        ));
    }
    drop(milestones_tx);

    let warm = wait_milestones(&mut milestones, Milestone::Warm, CLIENTS).await;
    assert_eq!(warm, CLIENTS, "clients echoing before the drain");
    let drained_clients = clients.iter().filter(|c| c.node == drained).count();
    let index = cluster.index_of(&drained).expect("drained node index");
    cluster.nodes[index].sigterm();
    lb::report(&format!(
        "SIGTERM to {drained} with {drained_clients} open sockets"
    ));

    // Watch the node's exit at the same time, to time it from the SIGTERM.
    let (migrated, (exit, exited_after)) = tokio::join!(
        wait_milestones(&mut milestones, Milestone::Migrated, drained_clients),
        wait_exit(&mut cluster.nodes[index], OPTIONS.drain_timeout * 2),
    );
    let _ = stop_tx.send(true);

    let mut reports = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        reports.push(joined.expect("client task panicked"));
    }
    let failures: Vec<_> = reports.iter().filter_map(|r| r.as_ref().err()).collect();
    assert!(failures.is_empty(), "clients failed: {failures:#?}");
    let reports: Vec<TalkReport> = reports.into_iter().filter_map(Result::ok).collect();

    let mut reconnect_times = Vec::new();
    let (mut sent, mut echoed, mut resent, mut refused, mut waited) = (0, 0, 0, 0, Duration::ZERO);
    for r in &reports {
        sent += r.sent;
        echoed += r.echoed;
        resent += r.resent;
        refused += r.refusals_with_retry_after;
        waited += r.waited_retry_after;
        let c = &clients[r.id];
        if c.node == drained {
            let m = r
                .migration
                .as_ref()
                .unwrap_or_else(|| panic!("client {} on {drained} was not moved: {r:?}", r.id));
            assert_eq!(m.close_code, Some(1001), "client {}: close code", r.id);
            assert_eq!(m.welcome.affinity, "migrated", "client {}: {m:?}", r.id);
            assert_eq!(m.welcome.session, c.session, "client {}: session id", r.id);
            assert_eq!(
                m.welcome.from.as_deref(),
                Some(drained.as_str()),
                "client {}: from",
                r.id
            );
            assert_ne!(
                m.welcome.node, drained,
                "client {} back on the drained node",
                r.id
            );
            assert!(
                m.echoes_after >= WARM_ECHOES,
                "client {}: {} echoes after the move",
                r.id,
                m.echoes_after
            );
            reconnect_times.push(m.reconnect_time);
        } else {
            assert!(
                r.migration.is_none(),
                "client {} on {} was closed though its node kept serving: {r:?}",
                r.id,
                c.node
            );
        }
    }
    // A client fails (above) on a missing, wrong or late echo, so this only
    // sums up what the clients checked one message at a time.
    let lost = sent - echoed;
    let (median, worst) = lb::median_max(&mut reconnect_times).expect("drained clients");
    let port = cluster.nodes[index].addr.port();
    let server = cluster
        .haproxy
        .server_for_port(port)
        .expect("show stat")
        .unwrap_or_else(|| panic!("no HAProxy server for {drained}'s port {port}"));
    lb::report(&format!(
        "drain: {migrated}/{drained_clients} clients of {drained} moved with `migrated`, \
         reconnect after the 1001: median {median:?}, worst {worst:?}; \
         503s with Retry-After seen by clients: {refused} ({waited:?} waited in total); \
         HAProxy on {}: {} retries, {} redispatches, now {}",
        server.name, server.retries, server.redispatches, server.status
    ));
    lb::report(&format!(
        "messages: {sent} sent, {echoed} echoed, {lost} lost, \
         {resent} in flight at a 1001 and resent after the reconnect"
    ));

    // 4. The drained node exits cleanly within its drain timeout.
    let status = exit.unwrap_or_else(|| panic!("{drained} still running after SIGTERM"));
    lb::report(&format!(
        "{drained} exited with {status} {exited_after:?} after SIGTERM (drain timeout {:?})",
        OPTIONS.drain_timeout
    ));
    assert!(status.success(), "{drained} exited with {status}");
    assert!(
        exited_after <= OPTIONS.drain_timeout,
        "{drained} took {exited_after:?} to exit (drain timeout {:?})",
        OPTIONS.drain_timeout
    );

    // 5. HAProxy re-learned the moved sessions from the new 101: they now
    //    stick to their new node, as `kept`.
    let mut tasks = JoinSet::new();
    for r in reports.iter().filter(|r| r.migration.is_some()) {
        let (url, id, mut jar) = (url.clone(), r.id, r.jar.clone());
        tasks.spawn(async move {
            let (ws, welcome) = lb::connect(&url, &mut jar)
                .await
                .unwrap_or_else(|e| panic!("client {id}: reconnect after the move: {e:?}"));
            lb::close(ws).await;
            (id, welcome)
        });
    }
    while let Some(joined) = tasks.join_next().await {
        let (id, welcome) = joined.expect("reconnect after the move panicked");
        let r = reports.iter().find(|r| r.id == id).expect("report");
        let moved_to = &r.migration.as_ref().expect("moved").welcome;
        let value = r.jar.get(lb::COOKIE_NAME).expect("affinity cookie");
        let stuck = cluster.stuck_node(value).expect("HAProxy admin socket");
        assert_eq!(
            stuck,
            Some(moved_to.node.as_str()),
            "HAProxy's stick table for client {id}'s re-issued cookie {value:?}"
        );
        assert_eq!(
            (welcome.affinity.as_str(), &welcome.node, &welcome.session),
            ("kept", &moved_to.node, &clients[id].session),
            "client {id} after moving to {}",
            moved_to.node
        );
    }
}

/// Connects `CLIENTS` clients with no cookie.
async fn fresh_clients(url: &str) -> Vec<Client> {
    let mut tasks = JoinSet::new();
    for id in 0..CLIENTS {
        let url = url.to_owned();
        tasks.spawn(async move {
            let mut jar = CookieJar::default();
            let (ws, welcome) = lb::connect(&url, &mut jar)
                .await
                .unwrap_or_else(|e| panic!("client {id}: first connection: {e:?}"));
            assert_eq!(welcome.affinity, "issued", "client {id}: {welcome:?}");
            assert_eq!(
                jar.get(lb::COOKIE_NAME).map(|v| v.is_empty()),
                Some(false),
                "client {id}: no {} cookie on the 101",
                lb::COOKIE_NAME
            );
            lb::close(ws).await;
            Client {
                id,
                jar,
                node: welcome.node,
                session: welcome.session,
            }
        });
    }
    let mut clients: Vec<Client> = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        clients.push(joined.expect("fresh client panicked"));
    }
    clients.sort_by_key(|c| c.id);
    clients
}

/// Reconnects `RECONNECTS` times with the client's cookies; returns the
/// welcomes and the last socket, left open.
async fn reconnect_ten_times(url: String, mut c: Client) -> (usize, Vec<Welcome>, Ws) {
    let mut welcomes = Vec::with_capacity(RECONNECTS);
    let mut open = None;
    for round in 0..RECONNECTS {
        if let Some(previous) = open.take() {
            lb::close(previous).await;
        }
        let (ws, welcome) = lb::connect(&url, &mut c.jar)
            .await
            .unwrap_or_else(|e| panic!("client {}: reconnect {round}: {e:?}", c.id));
        welcomes.push(welcome);
        open = Some(ws);
    }
    let ws = open.expect("RECONNECTS is not zero");
    (c.id, welcomes, ws)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Milestone {
    /// `WARM_ECHOES` echoes on the first socket.
    Warm,
    /// Moved after a close and `WARM_ECHOES` echoes on the new socket.
    Migrated,
}

/// Waits (bounded) until `count` clients reported `which`; returns how many did.
async fn wait_milestones(
    rx: &mut mpsc::UnboundedReceiver<(usize, Milestone)>,
    which: Milestone,
    count: usize,
) -> usize {
    let deadline = tokio::time::Instant::now() + RECONNECT_BUDGET + Duration::from_secs(10);
    let mut seen = 0;
    while seen < count {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some((_, m))) if m == which => seen += 1,
            Ok(Some(_)) => {}
            // Every client is gone (failed) or the deadline passed: the caller
            // asserts on the count and the clients' own errors.
            Ok(None) | Err(_) => break,
        }
    }
    seen
}

/// Polls the node's process until it exits (bounded); returns its status and
/// how long after the call it was seen gone (within 20 ms).
async fn wait_exit(
    server: &mut support::Server,
    timeout: Duration,
) -> (Option<ExitStatus>, Duration) {
    let start = Instant::now();
    loop {
        if let Ok(Some(status)) = server.child.try_wait() {
            return (Some(status), start.elapsed());
        }
        if start.elapsed() >= timeout {
            return (None, start.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[derive(Debug)]
struct Migration {
    close_code: Option<u16>,
    welcome: Welcome,
    /// From the Close frame to the welcome on the new node.
    reconnect_time: Duration,
    echoes_after: u64,
}

#[derive(Debug)]
struct TalkReport {
    id: usize,
    sent: u64,
    echoed: u64,
    /// Messages in flight when a `1001` came, sent again on the new socket.
    resent: u64,
    refusals_with_retry_after: u32,
    waited_retry_after: Duration,
    migration: Option<Migration>,
    /// The cookies at the end, for one more reconnect.
    jar: CookieJar,
}

/// Sends numbered messages one at a time and checks each echo, until `stop`.
/// On a Close frame: reconnects with the cookies (honouring `Retry-After`),
/// checks the welcome, resends the message that was in flight, and goes on.
async fn talk(
    url: String,
    mut c: Client,
    mut ws: Ws,
    stop: watch::Receiver<bool>,
    milestones: mpsc::UnboundedSender<(usize, Milestone)>,
) -> Result<TalkReport, String> {
    let id = c.id;
    let mut report = TalkReport {
        id,
        sent: 0,
        echoed: 0,
        resent: 0,
        refusals_with_retry_after: 0,
        waited_retry_after: Duration::ZERO,
        migration: None,
        jar: CookieJar::default(),
    };
    let mut pace = tokio::time::interval(MESSAGE_INTERVAL);
    pace.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut next = 0u64;
    // Bounds the loop even if `stop` never comes.
    let give_up = Instant::now() + Duration::from_secs(60);
    while !*stop.borrow() {
        if Instant::now() > give_up {
            return Err(format!("client {id}: never told to stop"));
        }
        let text = format!("client {id} message {next}");
        ws.send(Message::text(text.clone()))
            .await
            .map_err(|e| format!("client {id}: send {next}: {e}"))?;
        report.sent += 1;
        let outcome = tokio::time::timeout(ECHO_TIMEOUT, lb::next_text(&mut ws))
            .await
            .map_err(|_| format!("client {id}: no echo of {next} within {ECHO_TIMEOUT:?}"))?;
        let in_flight = match outcome {
            Ok(echo) if echo == text => {
                report.echoed += 1;
                false
            }
            Ok(other) => return Err(format!("client {id}: sent {text:?}, got {other:?}")),
            Err(Interrupted::Closed(code)) => {
                ws = move_on(&url, &mut c, &mut ws, code, &mut report).await?;
                true
            }
            Err(e) => return Err(format!("client {id}: waiting for echo {next}: {e:?}")),
        };
        if in_flight {
            // The node closed before echoing it (after its Close it may send
            // no data frame, RFC 6455 5.5.1): the one message a client must
            // resend. It has to come back from the new node.
            report.resent += 1;
            ws.send(Message::text(text.clone()))
                .await
                .map_err(|e| format!("client {id}: resend {next}: {e}"))?;
            match tokio::time::timeout(ECHO_TIMEOUT, lb::next_text(&mut ws)).await {
                Ok(Ok(echo)) if echo == text => report.echoed += 1,
                other => return Err(format!("client {id}: resent {text:?}, got {other:?}")),
            }
        }
        next += 1;
        if let Some(m) = report.migration.as_mut() {
            m.echoes_after += 1;
            if m.echoes_after == WARM_ECHOES {
                let _ = milestones.send((id, Milestone::Migrated));
            }
        } else if report.echoed == WARM_ECHOES {
            let _ = milestones.send((id, Milestone::Warm));
        }
        // Pace, but notice a Close frame that arrives between two messages.
        tokio::select! {
            _ = pace.tick() => {}
            frame = lb::next_text(&mut ws) => match frame {
                Err(Interrupted::Closed(code)) => {
                    ws = move_on(&url, &mut c, &mut ws, code, &mut report).await?;
                }
                other => return Err(format!("client {id}: unasked frame {other:?}")),
            },
        }
    }
    lb::close(ws).await;
    report.jar = c.jar;
    Ok(report)
}

/// After a Close frame with `code`: finishes the close, reconnects and checks
/// that the session moved. A client moves at most once in this test.
async fn move_on(
    url: &str,
    c: &mut Client,
    ws: &mut Ws,
    code: Option<u16>,
    report: &mut TalkReport,
) -> Result<Ws, String> {
    let id = c.id;
    let closed_at = Instant::now();
    if report.migration.is_some() {
        return Err(format!("client {id}: closed again ({code:?}) after moving"));
    }
    lb::finish_close(ws).await;
    let mut attempts = 0;
    let (new_ws, welcome) = loop {
        attempts += 1;
        if attempts > RECONNECT_ATTEMPTS || closed_at.elapsed() > RECONNECT_BUDGET {
            return Err(format!(
                "client {id}: no live node after {attempts} attempts in {:?}",
                closed_at.elapsed()
            ));
        }
        match lb::connect(url, &mut c.jar).await {
            Ok(pair) => break pair,
            Err(ConnectError::Refused {
                status,
                retry_after: Some(secs),
            }) if status.as_u16() == 503 => {
                // The draining node (or the balancer) asked us to wait.
                let wait = Duration::from_secs(secs);
                report.refusals_with_retry_after += 1;
                report.waited_retry_after += wait;
                tokio::time::sleep(wait).await;
            }
            // A balancer-made error (no server answered) carries no
            // Retry-After: back off briefly.
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    };
    report.migration = Some(Migration {
        close_code: code,
        welcome,
        reconnect_time: closed_at.elapsed(),
        echoes_after: 0,
    });
    Ok(new_ws)
}
