//! The client side of the load-balancer end-to-end tests
//! (`tests/e2e_haproxy.rs`, `tests/e2e_haproxy_crash.rs`,
//! `tests/e2e_haproxy_refusal.rs`, `tests/e2e_haproxy_reload.rs`,
//! `tests/e2e_nginx.rs`, `tests/e2e_nginx_node_tags.rs`,
//! `tests/e2e_traefik.rs`): fresh clients and reconnects with cookies, over
//! HTTP/1.1 or HTTP/2, clients that send numbered messages and check every
//! echo while a node drains, and what they report.
//!
//! What differs between the balancers is a parameter ([`Talk`]): HAProxy may
//! answer `503` until its health check marks a draining node down, so its
//! clients get several reconnect attempts; nginx retries the `503` itself,
//! and Traefik has taken the node out before it closes a socket, so their
//! clients must get through at the first attempt.
//!
//! Declared from a test file after `lb` (it builds on its helpers):
//!
//! ```ignore
//! mod support;
//! #[path = "support/lb.rs"]
//! mod lb;
//! #[path = "support/talk.rs"]
//! mod talk;
//! ```
#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap, HashSet};
use std::process::ExitStatus;
use std::time::{Duration, Instant};

use futures_util::SinkExt;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tokio_tungstenite::tungstenite::Message;

use crate::lb::{self, Cluster, ConnectError, CookieJar, Interrupted, Welcome, Ws};
use crate::support::Server;

/// Pace of the numbered messages of each client.
pub const MESSAGE_INTERVAL: Duration = Duration::from_millis(20);
/// Bound on each wait for an echo.
pub const ECHO_TIMEOUT: Duration = Duration::from_secs(5);

/// Echoes each client gets before the drain starts ([`Milestone::Warm`]),
/// and after it moved ([`Milestone::Moved`]).
pub const WARM_ECHOES: u64 = 5;

/// How hard the clients try to reconnect after a Close, and how long the
/// test waits for their milestones.
#[derive(Debug, Clone, Copy)]
pub struct Talk {
    /// Connection attempts after a Close frame, the first one included. With
    /// 1, the first attempt must succeed.
    pub reconnect_attempts: u32,
    /// No attempt after the first starts later than this after the Close
    /// frame.
    pub reconnect_budget: Duration,
    /// Bound on each wait for the clients' milestones.
    pub milestone_timeout: Duration,
}

impl Talk {
    /// Clients that must get through at the first attempt after a Close.
    pub const fn first_attempt(milestone_timeout: Duration) -> Talk {
        Talk {
            reconnect_attempts: 1,
            reconnect_budget: Duration::ZERO,
            milestone_timeout,
        }
    }

    /// Clients that make up to `attempts` attempts after a Close, none but
    /// the first later than `budget` after it.
    pub const fn retrying(attempts: u32, budget: Duration, milestone_timeout: Duration) -> Talk {
        Talk {
            reconnect_attempts: attempts,
            reconnect_budget: budget,
            milestone_timeout,
        }
    }
}

/// A client with its cookies, its session and the node it is on.
#[derive(Debug, Clone)]
pub struct Client {
    pub id: usize,
    pub jar: CookieJar,
    pub session: String,
    /// The node that answered it (which one is up to the test).
    pub node: String,
}

/// Connects `count` clients with no cookie, each checked to get an `issued`
/// welcome, an affinity cookie and a session id of its own. Returns them in
/// `id` order, each on the node that issued its session, and how many each
/// of the nodes named `nodes` issued (also reported).
pub async fn fresh_clients(
    url: &str,
    nodes: [&'static str; 3],
    count: usize,
) -> (Vec<Client>, BTreeMap<&'static str, usize>) {
    let mut tasks = JoinSet::new();
    for id in 0..count {
        let url = url.to_owned();
        tasks.spawn(async move {
            let mut jar = CookieJar::default();
            let (ws, welcome) = lb::connect(&url, &mut jar)
                .await
                .unwrap_or_else(|e| panic!("client {id}: first connection: {e:?}"));
            assert_eq!(welcome.affinity, "issued", "client {id}: {welcome:?}");
            assert_eq!(
                jar.get(lb::COOKIE_NAME).map(str::is_empty),
                Some(false),
                "client {id}: no {} cookie on the 101",
                lb::COOKIE_NAME
            );
            lb::close(ws).await;
            Client {
                id,
                jar,
                session: welcome.session,
                node: welcome.node,
            }
        });
    }
    let mut clients = Vec::with_capacity(count);
    while let Some(joined) = tasks.join_next().await {
        clients.push(joined.expect("fresh client panicked"));
    }
    clients.sort_by_key(|c| c.id);
    let sessions: HashSet<&str> = clients.iter().map(|c| c.session.as_str()).collect();
    assert_eq!(sessions.len(), count, "session ids must be unique");
    let per_node = count_per_node(nodes, clients.iter().map(|c| (c.id, c.node.as_str())));
    lb::report(&format!("{count} fresh clients per node: {per_node:?}"));
    (clients, per_node)
}

/// Connects `times` times in a row with the jar's cookies, closing each
/// socket before the next; returns the welcomes and the last socket, open.
pub async fn reconnect(
    url: &str,
    id: usize,
    jar: &mut CookieJar,
    times: usize,
) -> (Vec<Welcome>, Ws) {
    let mut welcomes = Vec::with_capacity(times);
    let mut open: Option<Ws> = None;
    for round in 1..=times {
        if let Some(previous) = open.take() {
            lb::close(previous).await;
        }
        let (ws, welcome) = lb::connect(url, jar)
            .await
            .unwrap_or_else(|e| panic!("client {id}: reconnect {round}: {e:?}"));
        welcomes.push(welcome);
        open = Some(ws);
    }
    (welcomes, open.expect("at least one connection"))
}

/// Reconnects every client `times` times in a row with its cookies (the
/// clients at the same time), and checks that every welcome is `kept` on the
/// client's node with its session: reports how many were, then panics on
/// the first ones that were not. Returns each client's last socket, open, by
/// client id.
pub async fn reconnect_all_kept(url: &str, clients: &[Client], times: usize) -> HashMap<usize, Ws> {
    let mut tasks = JoinSet::new();
    for c in clients.iter().cloned() {
        let url = url.to_owned();
        tasks.spawn(async move {
            let mut jar = c.jar;
            let (welcomes, ws) = reconnect(&url, c.id, &mut jar, times).await;
            (c.id, welcomes, ws)
        });
    }
    let mut sockets = HashMap::with_capacity(clients.len());
    let (mut total, mut wrong) = (0, Vec::new());
    while let Some(joined) = tasks.join_next().await {
        let (id, welcomes, ws) = joined.expect("reconnect task panicked");
        let c = clients
            .iter()
            .find(|c| c.id == id)
            .expect("a client of the list");
        for (round, w) in welcomes.into_iter().enumerate() {
            total += 1;
            if (w.affinity.as_str(), &w.node, &w.session) != ("kept", &c.node, &c.session) {
                wrong.push((id, round + 1, c.node.clone(), w));
            }
        }
        sockets.insert(id, ws);
    }
    wrong.sort_by_key(|(id, round, _, _)| (*id, *round));
    lb::report(&format!(
        "stickiness: {}/{total} reconnects `kept` on their node with their session",
        total - wrong.len()
    ));
    assert!(
        wrong.is_empty(),
        "{} of {total} reconnects left their node or session, the first ones \
         (client, reconnect, node, welcome): {:#?}",
        wrong.len(),
        &wrong[..wrong.len().min(5)]
    );
    sockets
}

/// Sends `text` on `ws`, client `c`'s socket, and checks that it comes back
/// (each step bounded by [`ECHO_TIMEOUT`]).
pub async fn echo(ws: &mut Ws, c: &Client, text: &str) {
    let sent = format!("client {} {text}", c.id);
    tokio::time::timeout(ECHO_TIMEOUT, ws.send(Message::Text(sent.clone().into())))
        .await
        .unwrap_or_else(|_| panic!("client {}: send took over {ECHO_TIMEOUT:?}", c.id))
        .unwrap_or_else(|e| panic!("client {}: send {text}: {e}", c.id));
    let back = tokio::time::timeout(ECHO_TIMEOUT, lb::next_text(ws))
        .await
        .unwrap_or_else(|_| panic!("client {}: no echo within {ECHO_TIMEOUT:?}", c.id));
    assert_eq!(back, Ok(sent), "client {} on {}: echo {text}", c.id, c.node);
}

/// How many of `clients` (id, node) are on each of the nodes named `nodes`.
pub fn count_per_node<'a>(
    nodes: [&'static str; 3],
    clients: impl IntoIterator<Item = (usize, &'a str)>,
) -> BTreeMap<&'static str, usize> {
    let mut counts: BTreeMap<&'static str, usize> = nodes.iter().map(|n| (*n, 0)).collect();
    for (id, node) in clients {
        *counts
            .get_mut(node)
            .unwrap_or_else(|| panic!("client {id} on unknown node {node:?}")) += 1;
    }
    counts
}

/// The node with the most clients in `counts`, and how many it has.
pub fn busiest(counts: &BTreeMap<&'static str, usize>) -> (&'static str, usize) {
    counts
        .iter()
        .max_by_key(|(_, n)| **n)
        .map(|(name, n)| (*name, *n))
        .expect("three nodes")
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Milestone {
    /// [`WARM_ECHOES`] echoes on the first socket.
    Warm,
    /// Moved after a close and [`WARM_ECHOES`] echoes on the new socket.
    Moved,
}

/// Waits (bounded by `timeout`) until `count` clients reported `which`;
/// returns how many did.
pub async fn wait_milestones(
    rx: &mut mpsc::UnboundedReceiver<(usize, Milestone)>,
    which: Milestone,
    count: usize,
    timeout: Duration,
) -> usize {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut seen = 0;
    while seen < count {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some((_, m))) if m == which => seen += 1,
            Ok(Some(_)) => {}
            // Every client is gone (failed) or the deadline passed: the
            // caller asserts on the count and the clients' own errors.
            Ok(None) | Err(_) => break,
        }
    }
    seen
}

/// Polls the node's process until it exits (bounded); returns its status and
/// how long after the call it was seen gone (within 20 ms).
pub async fn wait_exit(server: &mut Server, timeout: Duration) -> (Option<ExitStatus>, Duration) {
    lb::wait_child_exit(&mut server.child, timeout).await
}

/// What the clients and the node did around a drain ([`drain_busiest`]).
#[derive(Debug)]
pub struct Drain {
    /// The drained node's name, and its index in the nodes.
    pub node: String,
    pub index: usize,
    /// The clients that were on the drained node.
    pub clients_on_node: usize,
    /// How many of them reported [`Milestone::Moved`] in time.
    pub moved: usize,
    /// The node's exit status; `None` if it still ran at the timeout.
    pub exit: Option<ExitStatus>,
    /// From the SIGTERM to the exit seen (or to giving up).
    pub exited_after: Duration,
    /// The clients that returned a report, in `id` order.
    pub reports: Vec<TalkReport>,
    /// What the other clients failed on.
    pub failures: Vec<String>,
}

impl Drain {
    /// The numbered messages of every report: sent, echoed, and resent
    /// after a `1001` (in flight when it came).
    pub fn messages(&self) -> (u64, u64, u64) {
        self.reports
            .iter()
            .fold((0, 0, 0), |(sent, echoed, resent), r| {
                (sent + r.sent, echoed + r.echoed, resent + r.resent)
            })
    }

    /// Reports the numbered messages and checks that every one was echoed.
    pub fn assert_no_message_lost(&self) {
        let (sent, echoed, resent) = self.messages();
        lb::report(&format!(
            "messages: {sent} sent, {echoed} echoed, {} lost, \
             {resent} in flight at a 1001 and resent after the reconnect",
            sent - echoed
        ));
        assert_eq!(echoed, sent, "every numbered message is echoed once");
    }

    /// Checks that the drained node exited cleanly within `drain_timeout`,
    /// and reports it.
    pub fn assert_clean_exit(&self, drain_timeout: Duration) {
        let name = &self.node;
        let exited_after = self.exited_after;
        let status = self
            .exit
            .unwrap_or_else(|| panic!("{name} still running after SIGTERM"));
        lb::report(&format!(
            "{name} exited with {status} {exited_after:?} after SIGTERM (drain timeout {drain_timeout:?})"
        ));
        assert!(status.success(), "{name} exited with {status}");
        assert!(
            exited_after <= drain_timeout,
            "{name} took {exited_after:?} to exit (drain timeout {drain_timeout:?})"
        );
    }
}

/// Starts [`talk`] on every client's open socket; once all of them are
/// [`Milestone::Warm`] (asserted), SIGTERMs the node of `nodes` (in
/// [`Cluster::NODES`] order) with the most clients, waits for its clients to
/// move and for it to exit (bounded by `exit_timeout`), then stops every
/// client.
pub async fn drain_busiest(
    url: &str,
    clients: Vec<(Client, Ws)>,
    nodes: &mut [Server],
    exit_timeout: Duration,
    options: Talk,
) -> Drain {
    let total = clients.len();
    let (node, _) = busiest(&count_per_node(
        Cluster::NODES,
        clients.iter().map(|(c, _)| (c.id, c.node.as_str())),
    ));
    let node = node.to_owned();
    let index = Cluster::node_index(&node);
    let clients_on_node = clients.iter().filter(|(c, _)| c.node == node).count();
    let (stop_tx, stop_rx) = watch::channel(false);
    let (milestones_tx, mut milestones) = mpsc::unbounded_channel();
    let mut tasks = JoinSet::new();
    for (c, ws) in clients {
        tasks.spawn(talk(
            url.to_owned(),
            c,
            ws,
            stop_rx.clone(),
            milestones_tx.clone(),
            options,
        ));
    }
    drop(milestones_tx);

    let timeout = options.milestone_timeout;
    let warm = wait_milestones(&mut milestones, Milestone::Warm, total, timeout).await;
    assert_eq!(warm, total, "clients echoing before the drain");
    nodes[index].sigterm();
    lb::report(&format!(
        "SIGTERM to {node} with {clients_on_node} open sockets"
    ));
    // Watch the node's exit at the same time, to time it from the SIGTERM.
    let (moved, (exit, exited_after)) = tokio::join!(
        wait_milestones(&mut milestones, Milestone::Moved, clients_on_node, timeout),
        wait_exit(&mut nodes[index], exit_timeout),
    );
    let _ = stop_tx.send(true);

    let (mut reports, mut failures) = (Vec::with_capacity(total), Vec::new());
    while let Some(joined) = tasks.join_next().await {
        match joined.expect("client task panicked") {
            Ok(report) => reports.push(report),
            Err(failure) => failures.push(failure),
        }
    }
    reports.sort_by_key(|r| r.id);
    Drain {
        node,
        index,
        clients_on_node,
        moved,
        exit,
        exited_after,
        reports,
        failures,
    }
}

/// Checks the report `r` of client `c` after a drain of node `drained`. A
/// client of that node was closed with `1001` and reconnected `migrated`
/// from it, with its session, to another node, where it got at least
/// [`WARM_ECHOES`] echoes: returns that move. Any other client was never
/// closed.
pub fn check_move<'r>(r: &'r TalkReport, c: &Client, drained: &str) -> Option<&'r Migration> {
    let id = r.id;
    if c.node != drained {
        assert!(
            r.migration.is_none(),
            "client {id} on {} was closed though its node kept serving: {r:?}",
            c.node
        );
        return None;
    }
    let m = r
        .migration
        .as_ref()
        .unwrap_or_else(|| panic!("client {id} on {drained} was not moved: {r:?}"));
    assert_eq!(m.close_code, Some(1001), "client {id}: close code");
    assert_eq!(
        (
            m.welcome.affinity.as_str(),
            m.welcome.from.as_deref(),
            m.welcome.session.as_str()
        ),
        ("migrated", Some(drained), c.session.as_str()),
        "client {id} after the 1001 from {drained} (affinity, from, session): {m:?}"
    );
    assert_ne!(
        m.welcome.node, drained,
        "client {id} back on the drained node"
    );
    assert!(
        m.echoes_after >= WARM_ECHOES,
        "client {id}: {} echoes after the move",
        m.echoes_after
    );
    Some(m)
}

/// Reports that `what` (the cluster) is up since `started`, runs `scenario`
/// on a Tokio runtime with two worker threads, then reports the time since
/// `started` as the total of the `name` test.
pub fn run(
    name: &str,
    what: &str,
    started: Instant,
    scenario: impl std::future::Future<Output = ()>,
) {
    lb::report(&format!("{name} e2e: {what} up in {:?}", started.elapsed()));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    runtime.block_on(scenario);
    lb::report(&format!(
        "{name} e2e: total {:?} (including the cluster start)",
        started.elapsed()
    ));
}

#[derive(Debug)]
pub struct Migration {
    pub close_code: Option<u16>,
    pub welcome: Welcome,
    /// From the Close frame to the welcome on the new node.
    pub reconnect_time: Duration,
    pub echoes_after: u64,
}

#[derive(Debug)]
pub struct TalkReport {
    pub id: usize,
    /// Numbered messages sent (a resent one counts once).
    pub sent: u64,
    /// Numbered messages whose echo came back.
    pub echoed: u64,
    /// Messages in flight when a `1001` came, sent again on the new socket.
    pub resent: u64,
    /// `503`s with `Retry-After` met while reconnecting, and the time waited.
    pub refusals_with_retry_after: u32,
    pub waited_retry_after: Duration,
    pub migration: Option<Migration>,
    /// The cookies at the end, for one more reconnect.
    pub jar: CookieJar,
}

/// Sends numbered messages one at a time and checks each echo, until `stop`.
/// On a Close frame: reconnects with the cookies ([`move_on`]), resends the
/// message that was in flight, and goes on.
pub async fn talk(
    url: String,
    mut c: Client,
    mut ws: Ws,
    stop: watch::Receiver<bool>,
    milestones: mpsc::UnboundedSender<(usize, Milestone)>,
    options: Talk,
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
            .map_err(|e| format!("client {id}: send {text:?}: {e}"))?;
        report.sent += 1;
        let outcome = tokio::time::timeout(ECHO_TIMEOUT, lb::next_text(&mut ws))
            .await
            .map_err(|_| format!("client {id}: no echo of {text:?} within {ECHO_TIMEOUT:?}"))?;
        let in_flight = match outcome {
            Ok(echo) if echo == text => {
                report.echoed += 1;
                false
            }
            Ok(other) => return Err(format!("client {id}: sent {text:?}, got {other:?}")),
            Err(Interrupted::Closed(code)) => {
                ws = move_on(&url, &mut c, &mut ws, code, &mut report, options).await?;
                true
            }
            Err(e) => return Err(format!("client {id}: waiting for echo of {text:?}: {e:?}")),
        };
        if in_flight {
            // The node closed before echoing it (after its Close it may send
            // no data frame, RFC 6455 5.5.1): the one message a client must
            // resend. It has to come back from the new node.
            report.resent += 1;
            ws.send(Message::text(text.clone()))
                .await
                .map_err(|e| format!("client {id}: resend {text:?}: {e}"))?;
            match tokio::time::timeout(ECHO_TIMEOUT, lb::next_text(&mut ws)).await {
                Ok(Ok(echo)) if echo == text => report.echoed += 1,
                other => return Err(format!("client {id}: resent {text:?}, got {other:?}")),
            }
        }
        next += 1;
        if let Some(m) = report.migration.as_mut() {
            m.echoes_after += 1;
            if m.echoes_after == WARM_ECHOES {
                let _ = milestones.send((id, Milestone::Moved));
            }
        } else if report.echoed == WARM_ECHOES {
            let _ = milestones.send((id, Milestone::Warm));
        }
        // Pace, but notice a Close frame that arrives between two messages.
        tokio::select! {
            _ = pace.tick() => {}
            frame = lb::next_text(&mut ws) => match frame {
                Err(Interrupted::Closed(code)) => {
                    ws = move_on(&url, &mut c, &mut ws, code, &mut report, options).await?;
                }
                other => return Err(format!("client {id}: unasked frame {other:?}")),
            },
        }
    }
    lb::close(ws).await;
    report.jar = c.jar;
    Ok(report)
}

/// After a Close frame with `code`: finishes the close, reconnects with the
/// cookies and records the move. A client moves at most once in these tests.
///
/// Makes at most `options.reconnect_attempts` attempts, none after the first
/// starting later than `options.reconnect_budget` after the Close; between
/// two, waits for a `503`'s `Retry-After`, or 100 ms after an error made by
/// the balancer (no server answered), which carries none.
async fn move_on(
    url: &str,
    c: &mut Client,
    ws: &mut Ws,
    code: Option<u16>,
    report: &mut TalkReport,
    options: Talk,
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
        let failed = match lb::connect(url, &mut c.jar).await {
            Ok(pair) => break pair,
            Err(e) => e,
        };
        let no_live_node = || {
            format!(
                "client {id}: reconnect after close {code:?} from {}: no live node after \
                 {attempts} attempt(s) in {:?}, the last one: {failed:?}",
                c.node,
                closed_at.elapsed()
            )
        };
        if attempts >= options.reconnect_attempts {
            return Err(no_live_node());
        }
        match &failed {
            ConnectError::Refused {
                status,
                retry_after: Some(secs),
            } if status.as_u16() == 503 => {
                // The draining node (or the balancer) asked us to wait.
                let wait = Duration::from_secs(*secs);
                report.refusals_with_retry_after += 1;
                report.waited_retry_after += wait;
                tokio::time::sleep(wait).await;
            }
            _ => tokio::time::sleep(Duration::from_millis(100)).await,
        }
        if closed_at.elapsed() > options.reconnect_budget {
            return Err(no_live_node());
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

/// Closes the socket of the first client of each node (in
/// [`Cluster::NODES`] order), as if it went away; returns those clients, and
/// the others of `clients` with their sockets, taken from `sockets`, ready
/// for [`drain_busiest`]. Every client must have an open socket in
/// `sockets`.
pub async fn one_away_per_node(
    clients: &[Client],
    sockets: &mut HashMap<usize, Ws>,
) -> (Vec<Client>, Vec<(Client, Ws)>) {
    let away: Vec<Client> = Cluster::NODES
        .iter()
        .filter_map(|node| clients.iter().find(|c| c.node == *node).cloned())
        .collect();
    for c in &away {
        let ws = sockets
            .remove(&c.id)
            .unwrap_or_else(|| panic!("no open socket for client {}", c.id));
        lb::close(ws).await;
    }
    let talking = clients
        .iter()
        .filter(|c| !away.iter().any(|a| a.id == c.id))
        .map(|c| {
            let ws = sockets
                .remove(&c.id)
                .unwrap_or_else(|| panic!("no open socket for client {}", c.id));
            (c.clone(), ws)
        })
        .collect();
    (away, talking)
}

/// Reconnects every client once, at the same time, with its jar; returns the
/// welcomes `ok` refuses, with their client's id.
pub async fn reconnect_all(
    url: &str,
    clients: &[Client],
    jars: &mut [CookieJar],
    ok: impl Fn(usize, &Welcome) -> bool,
) -> Vec<(usize, Welcome)> {
    let mut tasks = JoinSet::new();
    for c in clients {
        let (url, id, mut jar) = (url.to_owned(), c.id, jars[c.id].clone());
        tasks.spawn(async move {
            let (welcomes, ws) = reconnect(&url, id, &mut jar, 1).await;
            lb::close(ws).await;
            (id, jar, welcomes.into_iter().next().expect("one welcome"))
        });
    }
    let mut wrong = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        let (id, jar, w) = joined.expect("reconnect panicked");
        jars[id] = jar;
        if !ok(id, &w) {
            wrong.push((id, w));
        }
    }
    wrong.sort_by_key(|(id, _)| *id);
    wrong
}

/// Connects new clients (no cookie), one at a time, until one is welcomed by
/// `node`; returns how many it took. Panics after `timeout`, with the last
/// outcome.
pub async fn wait_for_fresh_client_on(url: &str, node: &str, timeout: Duration) -> u32 {
    let deadline = Instant::now() + timeout;
    let mut attempts = 0;
    loop {
        attempts += 1;
        let mut jar = crate::lb::CookieJar::default();
        let last = match crate::lb::connect(url, &mut jar).await {
            Ok((ws, w)) => {
                crate::lb::close(ws).await;
                if w.node == node {
                    return attempts;
                }
                format!("welcomed by {}", w.node)
            }
            Err(e) => format!("{e:?}"),
        };
        assert!(
            Instant::now() < deadline,
            "no new client reached {node} within {timeout:?} ({attempts} attempts, the last \
             one: {last})"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A balancer that pins clients with a cookie of its own, set on the `101`
/// beside the layer's and naming the server it chose (Traefik's and Envoy's
/// `WS_NODE`), and takes a draining node out with a health check.
pub struct OwnCookie<'a> {
    /// The balancer, for messages (`Traefik`).
    pub balancer: &'a str,
    /// Its cookie's name.
    pub cookie: &'a str,
    /// Its health check's `interval` + `timeout`: it takes a node back
    /// within a few of them.
    pub check: Duration,
}

/// Where [`own_cookie_scenario`] leaves the clients.
pub struct Pinned {
    /// The first clients, `clients[id].id == id`.
    pub clients: Vec<Client>,
    /// Their cookies now, by id.
    pub jars: Vec<CookieJar>,
    /// The node each of them is `kept` on now, by id: the drained node's
    /// clients that were present moved.
    pub home: Vec<String>,
    /// New clients after the drained node came back, ids from 0.
    pub fresh: Vec<Client>,
    /// The drained node.
    pub drained: String,
    /// Median time from a drained client's `1001` to its new welcome.
    pub reconnect_median: Duration,
}

impl Pinned {
    /// Every client, the first ones and then the fresh ones (their ids
    /// following on), with its cookies and the node it is `kept` on now.
    pub fn everyone(&self) -> (Vec<Client>, Vec<CookieJar>, Vec<String>) {
        let all: Vec<Client> = self
            .clients
            .iter()
            .chain(&self.fresh)
            .cloned()
            .enumerate()
            .map(|(id, c)| Client { id, ..c })
            .collect();
        let mut jars = self.jars.clone();
        jars.extend(self.fresh.iter().map(|c| c.jar.clone()));
        let mut homes = self.home.clone();
        homes.extend(self.fresh.iter().map(|c| c.node.clone()));
        (all, jars, homes)
    }
}

/// Reconnects every one of `all` through `url` with its cookies (`jars`,
/// updated) and checks that each is `kept` on its node (`homes`, by id), as
/// it should be `what` (`after a restart of Envoy`); reports it.
pub async fn all_kept(
    url: &str,
    all: &[Client],
    jars: &mut [CookieJar],
    homes: &[String],
    what: &str,
) {
    let wrong = reconnect_all(url, all, jars, |id, w| {
        (w.affinity.as_str(), &w.node, &w.session) == ("kept", &homes[id], &all[id].session)
    })
    .await;
    assert!(
        wrong.is_empty(),
        "{what}, reconnects left their node (client, welcome): {wrong:#?}"
    );
    lb::report(&format!(
        "{what}: {} reconnects `kept` on their node",
        all.len()
    ));
}

/// The scenario every balancer with [`OwnCookie`] must pass, through `url`
/// in front of `nodes` (started with `options`, logging to `log`):
///
/// 1. `count` new clients reach every node, each with both cookies, one
///    value of the balancer's per node;
/// 2. each reconnects `reconnects` times, `kept` on its node every time;
/// 3. one client of each node goes away and the others talk while the
///    busiest node drains: its clients reconnect at the first attempt
///    (`talk`), `migrated` with a new balancer cookie, and no echoed message
///    is lost; the node exits cleanly;
/// 4. the moved sessions stay on their new node;
/// 5. the node comes back on its address: a new client reaches it again,
///    every present session stays where it is, the clients away during the
///    deploy come back `kept` on their node, and new clients reach it.
pub async fn own_cookie_scenario(
    url: &str,
    nodes: &mut [Server],
    options: lb::NodeOptions,
    log: &lb::OutputLog,
    by: &OwnCookie<'_>,
    (count, reconnects, talk): (usize, usize, Talk),
) -> Pinned {
    let (balancer, cookie) = (by.balancer, by.cookie);
    // 1. New clients reach every node, with both cookies.
    let (clients, per_node) = fresh_clients(url, Cluster::NODES, count).await;
    assert!(
        per_node.values().all(|n| *n > 0),
        "fresh clients did not reach every node: {per_node:?}"
    );
    for c in &clients {
        assert!(
            c.jar.get(cookie).is_some_and(|v| !v.is_empty()),
            "client {}: no {cookie} cookie on the 101: {:?}",
            c.id,
            c.jar
        );
    }
    // The balancer's cookie names the server: one value per node.
    let value_of = |node: &str| -> Vec<&str> {
        let mut values: Vec<&str> = clients
            .iter()
            .filter(|c| c.node == node)
            .filter_map(|c| c.jar.get(cookie))
            .collect();
        values.sort_unstable();
        values.dedup();
        values
    };
    for node in Cluster::NODES {
        assert_eq!(
            value_of(node).len(),
            1,
            "{cookie} values of {node}'s clients: {:?}",
            value_of(node)
        );
    }

    // 2. Every reconnect with the cookies lands on the same node, same session.
    let mut sockets = reconnect_all_kept(url, &clients, reconnects).await;

    // 3. One client of each node goes away (its socket closed) and sleeps
    //    through the deploy (step 5). The others send numbered messages, and
    //    the busiest node is drained.
    let (away, talking) = one_away_per_node(&clients, &mut sockets).await;
    let exit_timeout = options.drain_timeout * 2;
    let drain = drain_busiest(url, talking, nodes, exit_timeout, talk).await;
    let (drained, moved, drained_clients) = (&drain.node, drain.moved, drain.clients_on_node);
    assert!(
        drain.failures.is_empty(),
        "clients failed (a reconnect after a 1001 must get through at the first attempt: \
         {balancer}'s health check takes the node out before its close delay is over): {:#?}",
        drain.failures
    );
    let reports = &drain.reports;
    let drained_value = value_of(drained)[0].to_owned();
    let mut reconnect_times = Vec::new();
    let mut home: Vec<String> = clients.iter().map(|c| c.node.clone()).collect();
    for r in reports {
        if let Some(m) = check_move(r, &clients[r.id], drained) {
            reconnect_times.push(m.reconnect_time);
            home[r.id] = m.welcome.node.clone();
            // The balancer picked a live node and said so in a new cookie.
            let value = r.jar.get(cookie).expect("the balancer's cookie");
            assert_ne!(
                value, drained_value,
                "client {}: {cookie} still names {drained} after the move to {}",
                r.id, m.welcome.node
            );
        }
    }
    assert_eq!(moved, drained_clients, "clients of {drained} moved");
    let (median, worst) = lb::median_max(&mut reconnect_times).expect("drained clients");
    lb::report(&format!(
        "drain: {moved}/{drained_clients} clients of {drained} moved with `migrated` at \
         their first reconnect, from the 1001 to the welcome: median {median:?}, worst {worst:?}"
    ));
    drain.assert_no_message_lost();
    drain.assert_clean_exit(options.drain_timeout);

    // 4. The moved sessions stay on the node they moved to.
    let mut jars = vec![CookieJar::default(); count];
    for r in reports {
        jars[r.id] = r.jar.clone();
    }
    for c in &away {
        jars[c.id] = c.jar.clone();
    }
    let present: Vec<Client> = clients
        .iter()
        .filter(|c| !away.iter().any(|a| a.id == c.id))
        .cloned()
        .collect();
    let kept_at_home = |id: usize, w: &Welcome| {
        (w.affinity.as_str(), &w.node, &w.session) == ("kept", &home[id], &clients[id].session)
    };
    let wrong = reconnect_all(url, &present, &mut jars, kept_at_home).await;
    assert!(
        wrong.is_empty(),
        "after {drained} left, reconnects left their node (client, welcome): {wrong:#?}"
    );
    let moved_count = home
        .iter()
        .zip(&clients)
        .filter(|(h, c)| **h != c.node)
        .count();
    lb::report(&format!(
        "after the drain: {} reconnects `kept` on their node, {moved_count} of them moved",
        present.len(),
    ));

    // 5. The deploy brings the node back on its address. Once the health
    //    check takes it back, new clients reach it again; the moved sessions
    //    stay where they are; the clients away during the deploy come back
    //    to their node, which keeps their session.
    let port = nodes[drain.index].addr.port();
    let listen = format!("127.0.0.1:{port}");
    lb::wait_until_bindable(&listen, Duration::from_secs(10)).await;
    nodes[drain.index] = lb::start_named_node(drained, &listen, options, log);
    let back_at = Instant::now();
    let attempts = wait_for_fresh_client_on(url, drained, by.check * 10).await;
    lb::report(&format!(
        "{drained} restarted on {listen}: a new client reached it after {:?} ({attempts} attempts)",
        back_at.elapsed()
    ));
    let wrong = reconnect_all(url, &present, &mut jars, kept_at_home).await;
    assert!(
        wrong.is_empty(),
        "once {drained} was back, reconnects left their node (client, welcome): {wrong:#?}"
    );
    let wrong = reconnect_all(url, &away, &mut jars, kept_at_home).await;
    assert!(
        wrong.is_empty(),
        "clients away during the deploy did not come back `kept` on their node \
         (client, welcome): {wrong:#?}"
    );
    let (fresh, per_node) = fresh_clients(url, Cluster::NODES, count).await;
    assert!(
        per_node.get(drained.as_str()).is_some_and(|n| *n > 0),
        "no fresh client reached {drained} once it was back: {per_node:?}"
    );
    lb::report(&format!(
        "{drained} back: {} sessions `kept` where they were (the moved ones included), \
         {} clients away during the deploy `kept` on their node ({drained} included)",
        present.len(),
        away.len()
    ));
    Pinned {
        clients,
        jars,
        home,
        fresh,
        drained: drained.clone(),
        reconnect_median: median,
    }
}

/// The busiest node of a set of new clients, with one of its clients'
/// sockets held open, which keeps the node up (draining, refusing upgrades)
/// once it drains, until its close delay is over; see [`hold_busiest`].
pub struct Held {
    pub victim: &'static str,
    /// Its index in the nodes (and in [`Cluster::NODES`]).
    pub index: usize,
    /// Its other clients, to bring back while it drains.
    pub returning: Vec<Client>,
    open: Ws,
}

/// Connects `count` new clients through `url`, picks the busiest node
/// (which needs 3 clients or more: a guard against a test that brings no one
/// back), and reconnects one of its clients, checked `kept` on it, leaving
/// that socket open.
pub async fn hold_busiest(url: &str, count: usize) -> Held {
    let (clients, per_node) = fresh_clients(url, Cluster::NODES, count).await;
    let (victim, _) = busiest(&per_node);
    let theirs: Vec<Client> = clients.into_iter().filter(|c| c.node == victim).collect();
    assert!(
        theirs.len() >= 3,
        "the busiest node needs 3 clients or more: {per_node:?}"
    );
    let index = Cluster::node_index(victim);
    let (holder, returning) = theirs.split_first().expect("clients");
    let mut jar = holder.jar.clone();
    let (welcomes, open) = reconnect(url, holder.id, &mut jar, 1).await;
    assert_eq!(
        (welcomes[0].affinity.as_str(), welcomes[0].node.as_str()),
        ("kept", victim),
        "the socket that keeps {victim} up"
    );
    Held {
        victim,
        index,
        returning: returning.to_vec(),
        open,
    }
}

impl Held {
    /// SIGTERMs the node and waits (at most 5 s) until it answers `503` on
    /// `/ws-health`: it is draining.
    pub async fn drain(&self, nodes: &mut [Server]) {
        let node = &mut nodes[self.index];
        node.sigterm();
        let since = Instant::now();
        let wait = Duration::from_secs(5);
        while !lb::http_get_status(node.addr, "/ws-health").is_ok_and(|status| status == 503) {
            assert!(
                since.elapsed() < wait,
                "{} did not start draining within {wait:?} of SIGTERM",
                self.victim
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Checks that the node is still up and draining, closes the held
    /// socket, waits for the node to exit cleanly (within `drain_timeout`),
    /// and returns how many upgrades it refused while draining (its own
    /// count, from `log`).
    pub async fn release(
        self,
        nodes: &mut [Server],
        drain_timeout: Duration,
        log: &lb::OutputLog,
    ) -> u64 {
        let (victim, node) = (self.victim, &mut nodes[self.index]);
        assert!(
            matches!(node.child.try_wait(), Ok(None))
                && lb::http_get_status(node.addr, "/ws-health").is_ok_and(|status| status == 503),
            "{victim} should still be up and draining"
        );
        lb::close(self.open).await;
        let (exit, _) = wait_exit(node, drain_timeout).await;
        assert!(
            exit.is_some_and(|s| s.success()),
            "{victim} after its drain: {exit:?}"
        );
        lb::refused_while_draining(log, victim)
    }
}
