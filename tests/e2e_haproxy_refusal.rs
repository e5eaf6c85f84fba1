//! End to end through HAProxy in the window between a node's drain and the
//! health check that takes it out: three nodes of `examples/server.rs`
//! behind HAProxy configured by `deploy/haproxy.cfg`. The node's checks are
//! paused through the admin socket, so HAProxy keeps it in service for as
//! long as the test takes, as it would for `inter × fall` after the drain
//! started. Its clients then reconnect with their cookies, whose node tag
//! sends them to the draining node, which refuses each with `503` and
//! `Retry-After`: `retry-on 503` and `option redispatch 1` must send each
//! request to another node, so that the client gets through at its first
//! attempt, `migrated` with its session, and never sees the `503`. Half the
//! clients come back over HTTP/1.1, half over HTTP/2 (extended CONNECT).
//!
//! Needs `haproxy` (`bash .ci/install-e2e.sh`). Without it the test passes
//! with a loud `SKIPPED` line, except under `CI=true`, where it fails.
//! `E2E_HAPROXY=/path/to/haproxy` picks the executable.

#[path = "support/lb.rs"]
mod lb;
mod support;
#[path = "support/talk.rs"]
mod talk;

use std::time::{Duration, Instant};

use lb::{Cluster, NodeOptions};

const CLIENTS: usize = 24;
/// The draining node keeps refusing for its close delay, while one socket
/// keeps it up: longer than the test needs.
const OPTIONS: NodeOptions = NodeOptions {
    close_delay: Duration::from_secs(3),
    close_spread: Duration::ZERO,
    drain_timeout: Duration::from_secs(10),
    retry_after: Duration::from_secs(1),
    secure_cookie: false,
};

#[test]
fn haproxy_retries_a_draining_nodes_503_on_another_node() {
    let Some([haproxy]) = lb::tools_or_skip("e2e_haproxy_refusal", [lb::Tool::HaProxy]) else {
        return;
    };
    let started = Instant::now();
    let mut cluster = Cluster::start(&haproxy, OPTIONS);
    talk::run(
        "haproxy refusal",
        "3 nodes + haproxy",
        started,
        scenario(&mut cluster),
    );
}

async fn scenario(cluster: &mut Cluster) {
    let url = cluster.ws_url();
    // One client of the busiest node keeps a socket open, which keeps the
    // node up (draining, refusing upgrades) until its close delay is over.
    let held = talk::hold_busiest(&url, CLIENTS).await;
    let victim = held.victim;
    let returning = &held.returning;

    // HAProxy keeps the node in service; the node starts draining.
    cluster.admin(&format!("disable health ws_nodes/{victim}"));
    held.drain(&mut cluster.nodes).await;

    // Its clients come back, one at a time, over HTTP/1.1 and HTTP/2 in turn.
    let before = cluster.server(victim);
    let mut over = Vec::new();
    for (i, c) in returning.iter().enumerate() {
        let (protocol, url) = if i % 2 == 0 {
            ("HTTP/1.1", cluster.ws_url())
        } else {
            ("HTTP/2", cluster.h2_url())
        };
        let mut jar = c.jar.clone();
        let (ws, w) = lb::connect(&url, &mut jar).await.unwrap_or_else(|e| {
            panic!(
                "client {} over {protocol}: the reconnect while {victim} drains, still in \
                 service in HAProxy, should get through at its first attempt: {e:?}",
                c.id
            )
        });
        lb::close(ws).await;
        assert_eq!(
            (w.affinity.as_str(), w.from.as_deref(), &w.session),
            ("migrated", Some(victim), &c.session),
            "client {} over {protocol}: {w:?}",
            c.id
        );
        over.push(protocol);
    }
    let (after, redispatched) = cluster.server_in_service(victim, &before);
    assert_eq!(
        redispatched,
        returning.len() as u64,
        "HAProxy should have sent each reconnect on from {victim}, once: \
         {before:?} then {after:?}"
    );
    // The node was up and draining all along, and says how many upgrades it
    // refused with 503 (HAProxy counts no 5xx for a response it retried):
    // one per reconnect, so each redispatch followed its 503, not a refused
    // connection, which HAProxy retries too.
    let n = returning.len() as u64;
    let refused = held
        .release(&mut cluster.nodes, OPTIONS.drain_timeout, &cluster.node_log)
        .await;
    assert_eq!(
        refused, n,
        "{victim} should have refused each reconnect once"
    );
    lb::report(&format!(
        "{n} clients of draining {victim} reconnected ({over:?}), all `migrated` at the first \
         attempt: {refused} 503s from {victim}, {redispatched} redispatches and {} retries",
        after.retries - before.retries
    ));
}
