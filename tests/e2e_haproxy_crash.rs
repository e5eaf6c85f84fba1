//! End to end through a real load balancer when a node dies without
//! draining: three nodes of `examples/server.rs` behind HAProxy configured by
//! `deploy/haproxy.cfg`, and one node killed with `SIGKILL`, as a crash or an
//! out-of-memory kill would. Its clients' sockets end without a Close frame;
//! their reconnects land on a live node as `migrated`, with the same session
//! id, and stay there, even once the node is back. The other nodes' clients
//! notice nothing. Then HAProxy itself is killed and started again: its
//! stick table starts empty, but each cookie's node tag names its node's
//! server (`use-server`), so every session stays `kept` on its node.
//!
//! HAProxy reaches a live node in one of two ways, and each is checked with
//! half of the dead node's clients:
//! - before its health check marks the node down (the checks are paused
//!   through the admin socket, so HAProxy keeps it in service, as `no check`,
//!   for as long as this takes), the cookie's tag and the stick table still
//!   name the dead node: the connection is refused, and `retry-on
//!   conn-failure` with `option redispatch 1` sends the request to another
//!   node, at the client's first attempt;
//! - once the node is `DOWN`, HAProxy skips the rule and the stick entry that
//!   name it, and balances the request without trying it.
//!
//! A second test names the nodes so that no tag names a server, as when the
//! servers are not named after the nodes: the stick table alone keeps every
//! session on its node, and a restart of HAProxy, which empties it, lets each
//! session's next reconnect land anywhere, with its id (`kept` or
//! `migrated`), and stay there.
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

use lb::{Cluster, Interrupted, NodeOptions, ServerStat, Welcome, Ws};
use talk::Client;
use tokio::task::JoinSet;

const CLIENTS: usize = 24;
/// Bound on each wait for a socket to end, an echo, or a server state.
const WAIT: Duration = Duration::from_secs(10);

#[test]
fn sessions_survive_a_node_crash_and_a_restart_of_haproxy() {
    let Some([haproxy]) = lb::tools_or_skip("e2e_haproxy_crash", [lb::Tool::HaProxy]) else {
        return;
    };
    let started = Instant::now();
    let mut cluster = Cluster::start(&haproxy, NodeOptions::HAPROXY);
    talk::run(
        "haproxy crash",
        "3 nodes + haproxy",
        started,
        scenario(&mut cluster),
    );
}

async fn scenario(cluster: &mut Cluster) {
    let url = cluster.ws_url();

    // 1. Fresh clients spread over the nodes, then each opens a socket with
    //    its cookie, kept on its node. The node with the most clients dies.
    let (clients, per_node) = talk::fresh_clients(&url, cluster.names, CLIENTS).await;
    let (victim, on_victim) = talk::busiest(&per_node);
    assert!(
        on_victim >= 2 && per_node.values().filter(|n| **n > 0).count() >= 2,
        "the clients must be on two nodes or more, two or more on the busiest: {per_node:?}"
    );
    let index = cluster.index_of(victim).expect("a cluster node");
    let mut sockets = Vec::with_capacity(CLIENTS);
    for c in &clients {
        sockets.push(reconnect_kept(&url, c, "before the crash").await);
    }

    // 2. The health checks of the victim pause, so that HAProxy still thinks
    //    it is up when it dies; then it is killed.
    cluster.admin(&format!("disable health ws_nodes/{victim}"));
    let victim_node = &mut cluster.nodes[index];
    victim_node.child.kill().expect("SIGKILL the node");
    let status = victim_node.child.wait().expect("reap the node");
    lb::report(&format!(
        "{victim} killed ({status}), {on_victim} clients on it"
    ));

    // 3. The victim's sockets end without a Close frame (HAProxy closes the
    //    tunnel when the node's side is gone); the other sockets still echo.
    let mut survivors = Vec::new();
    for (c, mut ws) in clients.iter().zip(sockets) {
        if c.node == victim {
            let end = tokio::time::timeout(WAIT, lb::next_text(&mut ws))
                .await
                .unwrap_or_else(|_| {
                    panic!(
                        "client {}: socket still open {WAIT:?} after the crash",
                        c.id
                    )
                });
            assert!(
                matches!(end, Err(Interrupted::Dropped(_))),
                "client {}: its node died, so its socket must end without a Close frame: {end:?}",
                c.id
            );
        } else {
            talk::echo(&mut ws, c, "after the crash").await;
            survivors.push((c.clone(), ws));
        }
    }

    // 4. While HAProxy still has the victim up, half of its clients come
    //    back: refused by the dead node, redispatched, and migrated at the
    //    first attempt.
    let orphans: Vec<Client> = clients
        .iter()
        .filter(|c| c.node == victim)
        .cloned()
        .collect();
    let (early, late) = orphans.split_at(orphans.len() / 2);
    let before = cluster.server(victim);
    let mut moved = move_off(&url, early, victim, "while HAProxy had it up").await;
    let (after, redispatched) = cluster.server_in_service(victim, &before);
    assert_eq!(
        redispatched,
        early.len() as u64,
        "each of the reconnects must have been redispatched from {victim}, once: \
         {before:?} then {after:?}"
    );
    lb::report(&format!(
        "{} clients reconnected while {victim} was `{}` in HAProxy: all `migrated`, \
         {redispatched} redispatches and {} retries on {victim}",
        early.len(),
        after.status,
        after.retries - before.retries
    ));

    // 5. Once the health check marks the victim down, the other half comes
    //    back: HAProxy no longer tries the dead node.
    cluster.admin(&format!("enable health ws_nodes/{victim}"));
    let down = wait_down(cluster, victim).await;
    moved.extend(move_off(&url, late, victim, "once HAProxy had it down").await);
    let after = cluster.server(victim);
    assert_eq!(
        after.redispatches, down.redispatches,
        "a DOWN server must not be tried: {down:?} then {after:?}"
    );
    lb::report(&format!(
        "{} clients reconnected once {victim} was `{}`: all `migrated`, not one sent to it",
        late.len(),
        after.status
    ));

    // 6. HAProxy learned each re-tagged cookie from the new 101: every moved
    //    client is now kept on the node it moved to. The other clients are
    //    still kept on theirs, and HAProxy does not try the dead node for new
    //    clients either.
    let mut everyone = moved.clone();
    for (c, ws) in survivors {
        lb::close(ws).await;
        everyone.push(c);
    }
    stay_put(cluster, &url, &everyone, "after the crash", Table::Names).await;
    let before = cluster.server(victim);
    talk::fresh_clients(&url, cluster.names, CLIENTS / 2).await;
    let after = cluster.server(victim);
    assert_eq!(
        (after.retries, after.redispatches),
        (before.retries, before.redispatches),
        "new clients must not be sent to the dead {victim}: {before:?} then {after:?}"
    );

    // 7. The node comes back (a new process, as a restarted container would
    //    be). The sessions that moved stay where they are now.
    cluster.replace_node(index);
    lb::report(&format!("{victim} is back and UP in HAProxy"));
    stay_put(
        cluster,
        &url,
        &moved,
        "once the crashed node is back",
        Table::Names,
    )
    .await;

    // 8. HAProxy itself restarts: its stick table starts empty, so only the
    //    tag in each cookie, which names the server of its node, can route
    //    the session's next reconnect: `kept` there.
    cluster.restart_haproxy();
    stay_put(
        cluster,
        &url,
        &everyone,
        "after HAProxy's restart",
        Table::Empty,
    )
    .await;
}

#[test]
fn the_stick_table_routes_when_no_server_is_named_after_the_node() {
    let Some([haproxy]) = lb::tools_or_skip("e2e_haproxy_crash", [lb::Tool::HaProxy]) else {
        return;
    };
    let started = Instant::now();
    // HAProxy's servers are `n1`, `n2` and `n3`: these tags name none.
    let names = ["node-a", "node-b", "node-c"];
    let mut cluster = Cluster::start_named(&haproxy, NodeOptions::HAPROXY, names);
    talk::run(
        "haproxy untagged",
        "3 nodes named unlike their servers + haproxy",
        started,
        table_only(&mut cluster),
    );
}

async fn table_only(cluster: &mut Cluster) {
    let url = cluster.ws_url();

    // 1. HAProxy cannot route by the tags, which name no server: it learns
    //    each cookie from the 101, and its stick table keeps every session
    //    on its node.
    let (clients, per_node) = talk::fresh_clients(&url, cluster.names, CLIENTS / 2).await;
    assert!(
        per_node.values().filter(|n| **n > 0).count() >= 2,
        "the clients must be on two nodes or more: {per_node:?}"
    );
    stay_put(
        cluster,
        &url,
        &clients,
        "with the stick table alone",
        Table::Names,
    )
    .await;

    // 2. HAProxy restarts, its stick table empty: every session's next
    //    reconnect is balanced anew. Wherever it lands, it keeps its id
    //    (`kept` on its own node, `migrated` elsewhere), and HAProxy learns
    //    the cookie again from that 101.
    cluster.restart_haproxy();
    let (mut landed, mut moved) = (Vec::with_capacity(clients.len()), 0);
    for c in clients {
        let (now, w) = reconnect_once(&url, c.clone(), "after HAProxy's restart").await;
        let from = (w.node != c.node).then_some(c.node.as_str());
        let affinity = if from.is_some() { "migrated" } else { "kept" };
        moved += usize::from(from.is_some());
        assert_eq!(
            (w.affinity.as_str(), w.from.as_deref(), &w.session),
            (affinity, from, &c.session),
            "client {} of {}, after HAProxy's restart, welcomed by {}",
            c.id,
            c.node,
            w.node
        );
        landed.push(now);
    }
    lb::report(&format!(
        "after HAProxy's restart, with the stick table alone: {moved} of {} sessions \
         `migrated` with their id, the others `kept` on their node",
        landed.len()
    ));
    stay_put(
        cluster,
        &url,
        &landed,
        "after HAProxy's restart",
        Table::Names,
    )
    .await;
}

/// Reconnects `clients` of the dead node `victim` once each (concurrently);
/// each must get through at its first attempt, on a live node, as `migrated`
/// from `victim` with its session. Returns each client with the cookie it
/// was given and the node it moved to.
async fn move_off(url: &str, clients: &[Client], victim: &str, when: &str) -> Vec<Client> {
    let mut tasks = JoinSet::new();
    for c in clients.iter().cloned() {
        let (url, when) = (url.to_owned(), format!("reconnecting {when}"));
        tasks.spawn(async move { reconnect_once(&url, c, &when).await });
    }
    let mut moved = Vec::with_capacity(clients.len());
    while let Some(joined) = tasks.join_next().await {
        let (c, w) = joined.expect("reconnect task panicked");
        assert_eq!(
            (w.affinity.as_str(), w.from.as_deref(), &w.session),
            ("migrated", Some(victim), &c.session),
            "client {} reconnecting {when}: {w:?}",
            c.id
        );
        assert_ne!(w.node, victim, "client {}: welcomed by a dead node", c.id);
        moved.push(c);
    }
    moved.sort_by_key(|c| c.id);
    moved
}

/// What HAProxy's stick table must hold for a client's cookie before
/// [`stay_put`] reconnects it.
#[derive(Debug, Clone, Copy)]
enum Table {
    /// An entry that sends the cookie to the client's node.
    Names,
    /// No entry: HAProxy has just restarted, so only the cookie's node tag
    /// can route the reconnect.
    Empty,
}

/// Checks, for each client, what HAProxy's stick table holds for its cookie
/// (`table`), and that a reconnect is `kept` on the client's node with its
/// session.
async fn stay_put(cluster: &Cluster, url: &str, clients: &[Client], when: &str, table: Table) {
    for c in clients {
        let value = c.jar.get(lb::COOKIE_NAME).expect("affinity cookie");
        let stuck = cluster.stuck_node(value).expect("HAProxy admin socket");
        let expected = match table {
            Table::Names => Some(c.node.as_str()),
            Table::Empty => None,
        };
        assert_eq!(
            stuck, expected,
            "HAProxy's stick table for client {}'s cookie {value:?} {when}",
            c.id
        );
        lb::close(reconnect_kept(url, c, when).await).await;
    }
    let table = match table {
        Table::Names => "",
        Table::Empty => ", none of them in the stick table",
    };
    lb::report(&format!(
        "{} clients reconnected {when}{table}: all `kept` on the node they were last on",
        clients.len()
    ));
}

/// Connects `c` once with its cookie and closes the socket again. Returns the
/// client as it is now (on the node that answered, with the cookies it got)
/// and the welcome.
async fn reconnect_once(url: &str, c: Client, when: &str) -> (Client, Welcome) {
    let mut jar = c.jar.clone();
    let (ws, w) = lb::connect(url, &mut jar)
        .await
        .unwrap_or_else(|e| panic!("client {} {when}: {e:?}", c.id));
    lb::close(ws).await;
    let now = Client {
        node: w.node.clone(),
        jar,
        ..c
    };
    (now, w)
}

/// Reconnects `c` with its cookie and checks that it is `kept` on its node,
/// with its session; returns the socket, open.
async fn reconnect_kept(url: &str, c: &Client, when: &str) -> Ws {
    let mut jar = c.jar.clone();
    let (welcomes, ws) = talk::reconnect(url, c.id, &mut jar, 1).await;
    let w = &welcomes[0];
    assert_eq!(
        (w.affinity.as_str(), &w.node, &w.session),
        ("kept", &c.node, &c.session),
        "client {} {when}, last on {}",
        c.id,
        c.node
    );
    ws
}

/// Waits (bounded) until HAProxy's health check has marked `name` down.
async fn wait_down(cluster: &Cluster, name: &str) -> ServerStat {
    let deadline = Instant::now() + WAIT;
    loop {
        let s = cluster.server(name);
        if s.status.starts_with("DOWN") {
            return s;
        }
        assert!(
            Instant::now() < deadline,
            "{name} not marked DOWN within {WAIT:?} of its checks resuming: {s:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
