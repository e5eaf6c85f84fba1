//! End to end through open-source nginx routing by the node tag: three nodes
//! of `examples/server.rs` behind nginx running the shipped
//! `deploy/nginx-node-tags.conf`, which sends a cookie tagged `n1` to the
//! node `n1` (then to the others, as backups). The test checks what the
//! file's comments promise:
//!
//! 1. new clients (no cookie) are hashed on a random id: they spread;
//! 2. every reconnect, the first one included, is `kept` on the node that
//!    issued the session;
//! 3. a draining node's `503` is retried on a backup
//!    (`proxy_next_upstream http_503`): its clients, closed with `1001`,
//!    reconnect at the first attempt, `migrated` with the same session id,
//!    and no echoed message is lost; no other session moves;
//! 4. once the node is back on its address and nginx tries it again (after
//!    `fail_timeout`: until then its tag sends requests to a backup), a
//!    value tagged with it is `kept` there, while the sessions that moved
//!    stay `kept` where they moved: their cookie now names that node;
//! 5. values whose tag names no node of the file are hashed: each lands on
//!    one node every time, `migrated` from that tag, and they spread; once
//!    re-tagged, a value is `kept` by its new tag.
//!
//! Only the listen port and the upstream addresses of the shipped text are
//! rewritten (see `support/nginx.rs`).
//!
//! Needs `nginx` (`bash .ci/install-e2e.sh`). Without it the test passes
//! with a loud `SKIPPED` line, except under `CI=true`, where it fails.
//! `E2E_NGINX=/path/to/nginx` picks the executable.

#[path = "support/lb.rs"]
mod lb;
#[path = "support/nginx.rs"]
mod nginx;
mod support;
#[path = "support/talk.rs"]
mod talk;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use lb::{Cluster, CookieJar, NodeOptions, Welcome};
use nginx::NginxCluster;
use talk::{Client, Talk};

/// The shipped file under test, in `deploy/`.
const CONFIG: &str = "nginx-node-tags.conf";
const CLIENTS: usize = 30;
/// Connections per client after its first one.
const RECONNECTS: usize = 3;
/// Values with a tag the file does not list (step 5).
const UNKNOWN_TAGS: u64 = 12;
/// nginx retries a draining node's 503 on a backup itself: a client's one
/// attempt after its `1001` must get through.
const TALK: Talk = Talk::first_attempt(Duration::from_secs(30));

const OPTIONS: NodeOptions = NodeOptions::NGINX;

#[test]
fn nginx_routes_reconnects_by_the_node_tag_and_moves_a_draining_nodes_sessions() {
    let Some([bin]) = lb::tools_or_skip("e2e_nginx_node_tags", [lb::Tool::Nginx]) else {
        return;
    };
    let started = Instant::now();
    let mut cluster = NginxCluster::start(&bin, CONFIG, OPTIONS);
    let (major, minor, patch) = nginx::version(&bin);
    let what = format!("3 nodes + nginx {major}.{minor}.{patch} with {CONFIG}");
    talk::run("nginx node tags", &what, started, scenario(&mut cluster));
}

async fn scenario(cluster: &mut NginxCluster) {
    let url = cluster.ws_url();

    // 1. New clients spread over the nodes.
    let (clients, per_node) = talk::fresh_clients(&url, Cluster::NODES, CLIENTS).await;
    assert!(
        per_node.values().filter(|n| **n > 0).count() > 1,
        "new clients all went to one node (hashed on $request_id): {per_node:?}"
    );

    // 2. The tag routes every reconnect, the first one included, to the
    //    issuing node.
    let mut sockets = talk::reconnect_all_kept(&url, &clients, RECONNECTS).await;

    // 3. Numbered messages on every socket, then drain the busiest node.
    let talking = clients
        .iter()
        .map(|c| {
            (
                c.clone(),
                sockets.remove(&c.id).expect("a socket per client"),
            )
        })
        .collect();
    let exit_timeout = OPTIONS.drain_timeout * 2;
    let drain = talk::drain_busiest(&url, talking, &mut cluster.nodes, exit_timeout, TALK).await;
    let drained = drain.node.clone();
    assert!(
        drain.failures.is_empty(),
        "clients failed (a draining node's 503 is retried on a backup, so no \
         reconnect may fail): {:#?}",
        drain.failures
    );
    let mut moved = Vec::new();
    for r in &drain.reports {
        if let Some(m) = talk::check_move(r, &clients[r.id], &drained) {
            moved.push((r.id, m.welcome.node.clone()));
        }
    }
    assert_eq!(
        moved.len(),
        drain.clients_on_node,
        "clients of {drained} moved"
    );
    let (messages, echoed, _) = drain.messages();
    assert_eq!(echoed, messages, "every numbered message is echoed once");
    lb::report(&format!(
        "drain: {}/{} clients of {drained} moved with `migrated` at their first reconnect; \
         messages: {messages} sent, {echoed} echoed",
        moved.len(),
        drain.clients_on_node
    ));
    drain.assert_clean_exit(OPTIONS.drain_timeout);

    // Every client reported (no failures, above): each client as it is now.
    assert_eq!(drain.reports.len(), CLIENTS, "a report from every client");
    let now: Vec<Client> = drain
        .reports
        .iter()
        .map(|r| {
            let node = moved
                .iter()
                .find(|(id, _)| *id == r.id)
                .map_or(&clients[r.id].node, |(_, node)| node);
            Client {
                id: r.id,
                jar: r.jar.clone(),
                session: clients[r.id].session.clone(),
                node: node.clone(),
            }
        })
        .collect();
    let mut jars: Vec<CookieJar> = now.iter().map(|c| c.jar.clone()).collect();
    let kept_where_they_are = |id: usize, w: &Welcome| {
        (w.affinity.as_str(), &w.node, &w.session) == ("kept", &now[id].node, &now[id].session)
    };
    let wrong = talk::reconnect_all(&url, &now, &mut jars, kept_where_they_are).await;
    assert!(
        wrong.is_empty(),
        "after {drained} left, reconnects left their node (client, welcome): {wrong:#?}"
    );

    // 4. The node comes back on its address. Values tagged with it reach it
    //    once nginx tries it again; the moved sessions stay where they are.
    let listen = format!("127.0.0.1:{}", cluster.nodes[drain.index].addr.port());
    lb::wait_until_bindable(&listen, Duration::from_secs(10)).await;
    cluster.nodes[drain.index] =
        lb::start_named_node(&drained, &listen, OPTIONS, &cluster.node_log);
    let back_at = Instant::now();
    let attempts = tagged_value_reaches(&url, &drained, nginx::fail_timeout(CONFIG) * 3).await;
    lb::report(&format!(
        "{drained} restarted on {listen}: a value tagged with it reached it after {attempts} \
         attempt(s), {:?}",
        back_at.elapsed()
    ));
    let wrong = talk::reconnect_all(&url, &now, &mut jars, kept_where_they_are).await;
    assert!(
        wrong.is_empty(),
        "once {drained} was back, reconnects left their node (client, welcome): {wrong:#?}"
    );
    lb::report(&format!(
        "{drained} back: {CLIENTS} reconnects `kept` where they were, its {} moved sessions \
         included",
        moved.len()
    ));

    // 5. Tags that name no node of the file: such values are hashed, as in
    //    nginx.conf. Each lands on the same node every time (`migrated` from
    //    the tag; the re-tagged cookie is not sent back here), and different
    //    values spread over the nodes. A re-tagged value is then routed by
    //    its new tag: `kept`.
    let mut landed = BTreeSet::new();
    let mut retagged = None;
    for k in 0..UNKNOWN_TAGS {
        let session = session_id(1_000 + k);
        let value = format!("{session}.elsewhere");
        let mut nodes = Vec::with_capacity(2);
        for _ in 0..2 {
            let mut jar = CookieJar::with(lb::COOKIE_NAME, &value);
            let (ws, w) = lb::connect(&url, &mut jar)
                .await
                .unwrap_or_else(|e| panic!("value {value}: {e:?}"));
            lb::close(ws).await;
            assert_eq!(
                (w.affinity.as_str(), w.from.as_deref(), w.session.as_str()),
                ("migrated", Some("elsewhere"), session.as_str()),
                "value {value}: {w:?}"
            );
            nodes.push(w.node);
            retagged = Some(jar);
        }
        assert_eq!(nodes[0], nodes[1], "value {value} must land on one node");
        landed.insert(nodes[0].clone());
    }
    // With 3 nodes, all values on one node has a chance of 3 × (1/3)^12, below 1e-5.
    assert!(
        landed.len() > 1,
        "{UNKNOWN_TAGS} values with an unknown tag all landed on {landed:?}: not hashed on the value"
    );
    let mut jar = retagged.expect("at least one value");
    let (ws, w) = lb::connect(&url, &mut jar)
        .await
        .unwrap_or_else(|e| panic!("a re-tagged value: {e:?}"));
    lb::close(ws).await;
    let tag = jar
        .get(lb::COOKIE_NAME)
        .and_then(|v| v.split('.').nth(1))
        .map(str::to_owned);
    assert_eq!(
        (w.affinity.as_str(), Some(&w.node)),
        ("kept", tag.as_ref()),
        "a value re-tagged by a node: {w:?}"
    );
    lb::report(&format!(
        "{UNKNOWN_TAGS} values with an unknown tag: each `migrated` to one node, twice, \
         over {landed:?}; a re-tagged one then `kept`"
    ));
}

/// A session id of the shape the nodes' generator makes (UUID v4, lower
/// case), distinct for each `n`.
fn session_id(n: u64) -> String {
    format!(
        "{:08x}-{:04x}-4000-8000-{:012x}",
        n >> 32,
        (n >> 16) & 0xffff,
        n & 0xffff
    )
}

/// Connects with a new value tagged `node` until one is `kept` on `node`,
/// each on a fresh session id so that no attempt changes the next one.
/// Until then, each must be `migrated` from `node` to a backup (the group
/// still skips the node, `fail_timeout`). Returns the number of attempts;
/// panics after `timeout`.
async fn tagged_value_reaches(url: &str, node: &str, timeout: Duration) -> u64 {
    let deadline = Instant::now() + timeout;
    for attempt in 1.. {
        let value = format!("{}.{node}", session_id(attempt));
        let mut jar = CookieJar::with(lb::COOKIE_NAME, &value);
        let (ws, w) = lb::connect(url, &mut jar)
            .await
            .unwrap_or_else(|e| panic!("value tagged {node}, attempt {attempt}: {e:?}"));
        lb::close(ws).await;
        if w.node == node {
            assert_eq!(w.affinity, "kept", "attempt {attempt}: {w:?}");
            return attempt;
        }
        assert_eq!(
            (w.affinity.as_str(), w.from.as_deref()),
            ("migrated", Some(node)),
            "attempt {attempt} with a value tagged {node}: {w:?}"
        );
        assert!(
            Instant::now() < deadline,
            "nginx did not send a value tagged {node} to it within {timeout:?} \
             ({attempt} attempts)"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    unreachable!("the attempts are bounded by the deadline")
}
