//! End to end through a real load balancer: three nodes of
//! `examples/server.rs` behind HAProxy configured by `deploy/haproxy.cfg`,
//! which routes by the node tag in the affinity cookie and also learns the
//! cookie from the `101` and sticks on it. One node is drained (its clients
//! move) and then comes back, as in a rolling deploy; clients that were not
//! connected meanwhile come back to their node. The scenario runs twice, with
//! clients over HTTP/1.1 and over HTTP/2 (extended CONNECT, RFC 8441).
//!
//! Needs `haproxy` (`bash .ci/install-e2e.sh`). Without it the test passes
//! with a loud `SKIPPED` line, except under `CI=true`, where it fails.
//! `E2E_HAPROXY=/path/to/haproxy` picks the executable
//! (`E2E_HAPROXY=/nonexistent` shows the skip path).

#[path = "support/lb.rs"]
mod lb;
mod support;
#[path = "support/talk.rs"]
mod talk;

use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use lb::{Cluster, CookieJar, NodeOptions};
use talk::{Client, Talk, TalkReport};
use tokio::task::JoinSet;

const CLIENTS: usize = 30;
const RECONNECTS: usize = 10;
/// Bounds on the reconnection after a `1001`: HAProxy may answer `503` (from
/// the draining node) until its health check marks the node down, so a
/// client may need several attempts.
const RECONNECT_ATTEMPTS: u32 = 40;
const RECONNECT_BUDGET: Duration = Duration::from_secs(20);
/// The milestones come within the reconnect budget and 10 s more.
const TALK: Talk = Talk::retrying(
    RECONNECT_ATTEMPTS,
    RECONNECT_BUDGET,
    Duration::from_secs(RECONNECT_BUDGET.as_secs() + 10),
);

const OPTIONS: NodeOptions = NodeOptions::HAPROXY;

#[test]
fn haproxy_keeps_sessions_on_their_node_and_moves_them_on_drain() {
    run_over_haproxy("HTTP/1.1", Cluster::ws_url);
}

/// The same over HTTP/2: each client opens its WebSocket with an extended
/// CONNECT (RFC 8441) to HAProxy, as a browser does once HAProxy's `alpn`
/// offers `h2`. HAProxy forwards it to the nodes as an HTTP/1.1 upgrade,
/// learns the cookie from the node's `101` as over HTTP/1.1, and answers the
/// client `200` with the node's `Set-Cookie`.
#[test]
fn haproxy_keeps_sessions_on_their_node_and_moves_them_on_drain_over_http2() {
    run_over_haproxy("HTTP/2", Cluster::h2_url);
}

/// Starts a cluster and runs the scenario with clients of `url`, one such
/// test at a time: the scenario's timings need the machine's two cores.
fn run_over_haproxy(protocol: &str, url: fn(&Cluster) -> String) {
    static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());
    let Some([haproxy]) = lb::tools_or_skip("e2e_haproxy", [lb::Tool::HaProxy]) else {
        return;
    };
    let _alone = ONE_AT_A_TIME.lock().unwrap_or_else(PoisonError::into_inner);
    let started = Instant::now();
    let mut cluster = Cluster::start(&haproxy, OPTIONS);
    let url = url(&cluster);
    let what = format!("3 nodes + haproxy, clients over {protocol}");
    talk::run("haproxy", &what, started, scenario(&mut cluster, &url));
}

async fn scenario(cluster: &mut Cluster, url: &str) {
    // 1. Fresh clients spread over the nodes and get a session each.
    let (clients, per_node) = talk::fresh_clients(url, Cluster::NODES, CLIENTS).await;
    assert!(
        per_node.values().all(|n| *n > 0),
        "fresh clients did not reach every node: {per_node:?}"
    );

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
    let mut sockets = talk::reconnect_all_kept(url, &clients, RECONNECTS).await;

    // 3. One client of each node goes away (its socket closed) and sleeps
    //    through the deploy (step 7). The others send numbered messages, and
    //    the busiest node is drained.
    let (away, talking) = talk::one_away_per_node(&clients, &mut sockets).await;
    let exit_timeout = OPTIONS.drain_timeout * 2;
    let drain = talk::drain_busiest(url, talking, &mut cluster.nodes, exit_timeout, TALK).await;
    let (drained, migrated, drained_clients) = (&drain.node, drain.moved, drain.clients_on_node);
    let failures = &drain.failures;
    assert!(failures.is_empty(), "clients failed: {failures:#?}");
    let reports = &drain.reports;

    let mut reconnect_times = Vec::new();
    let (mut refused, mut waited) = (0, Duration::ZERO);
    for r in reports {
        refused += r.refusals_with_retry_after;
        waited += r.waited_retry_after;
        if let Some(m) = talk::check_move(r, &clients[r.id], drained) {
            reconnect_times.push(m.reconnect_time);
        }
    }
    let (median, worst) = lb::median_max(&mut reconnect_times).expect("drained clients");
    let port = cluster.nodes[drain.index].addr.port();
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
    // A client fails (above) on a missing, wrong or late echo, so this
    // sums up what the clients checked one message at a time.
    drain.assert_no_message_lost();

    // 4. The drained node exits cleanly within its drain timeout.
    drain.assert_clean_exit(OPTIONS.drain_timeout);

    // 5. HAProxy re-learned the moved sessions from the new 101: they now
    //    stick to their new node, as `kept`.
    moved_sessions_stay(cluster, url, reports, &clients, "after the move").await;

    // 6. The deploy brings the drained node back: a new process, on a new
    //    port as a new container would get, which HAProxy's health check
    //    takes back. The sessions that moved stay where they are now; new
    //    sessions reach the node again, and stick to it.
    cluster.replace_node(drain.index);
    let port = cluster.nodes[drain.index].addr.port();
    lb::report(&format!(
        "{drained} is back, on port {port}, and UP in HAProxy"
    ));
    moved_sessions_stay(cluster, url, reports, &clients, "once it is back").await;
    let (fresh, per_node) = talk::fresh_clients(url, Cluster::NODES, CLIENTS).await;
    assert!(
        per_node.get(drained.as_str()).is_some_and(|n| *n > 0),
        "no fresh client reached {drained} once it was back: {per_node:?}"
    );
    // `fresh` is in id order, from 0: jars by client id.
    let mut jars: Vec<CookieJar> = fresh.iter().map(|c| c.jar.clone()).collect();
    let wrong = talk::reconnect_all(url, &fresh, &mut jars, |id, w| {
        (w.affinity.as_str(), &w.node, &w.session) == ("kept", &fresh[id].node, &fresh[id].session)
    })
    .await;
    assert!(
        wrong.is_empty(),
        "fresh clients reconnecting once {drained} was back left their node \
         (client, welcome): {wrong:#?}"
    );
    lb::report(&format!(
        "{CLIENTS}/{CLIENTS} fresh clients reconnected `kept` on their node, {drained} included"
    ));

    // 7. The clients that slept through the deploy come back. HAProxy still
    //    sends each to its node, the returned one included (the tag in its
    //    cookie names the node's server, and the stick table has the cookie),
    //    and that node (a new process with the same node id) keeps the
    //    session: nothing moved for a client that was not connected.
    // `clients` is in id order, from 0: jars by client id.
    let mut client_jars: Vec<CookieJar> = clients.iter().map(|c| c.jar.clone()).collect();
    let wrong = talk::reconnect_all(url, &away, &mut client_jars, |id, w| {
        (w.affinity.as_str(), &w.node, &w.session)
            == ("kept", &clients[id].node, &clients[id].session)
    })
    .await;
    assert!(
        wrong.is_empty(),
        "clients away during the deploy of {drained} did not come back `kept` on their \
         node (client, welcome): {wrong:#?}"
    );
    lb::report(&format!(
        "{} clients away during the deploy came back `kept` on their node ({drained} included)",
        away.len()
    ));
}

/// Reconnects, once, every client of `reports` that moved in the drain, and
/// checks `when` that it is `kept` on the node it moved to, with its session,
/// and that HAProxy's stick table sends its cookie there.
async fn moved_sessions_stay(
    cluster: &Cluster,
    url: &str,
    reports: &[TalkReport],
    clients: &[Client],
    when: &str,
) {
    let mut tasks = JoinSet::new();
    for r in reports.iter().filter(|r| r.migration.is_some()) {
        let (url, id, mut jar, when) = (url.to_owned(), r.id, r.jar.clone(), when.to_owned());
        tasks.spawn(async move {
            let (ws, welcome) = lb::connect(&url, &mut jar)
                .await
                .unwrap_or_else(|e| panic!("client {id}: reconnect {when}: {e:?}"));
            lb::close(ws).await;
            (id, welcome)
        });
    }
    let mut checked = 0;
    while let Some(joined) = tasks.join_next().await {
        let (id, welcome) = joined.expect("reconnect of a moved client panicked");
        let r = reports.iter().find(|r| r.id == id).expect("report");
        let moved_to = &r.migration.as_ref().expect("moved").welcome;
        let value = r.jar.get(lb::COOKIE_NAME).expect("affinity cookie");
        let stuck = cluster.stuck_node(value).expect("HAProxy admin socket");
        assert_eq!(
            stuck,
            Some(moved_to.node.as_str()),
            "HAProxy's stick table for client {id}'s re-issued cookie {value:?} {when}"
        );
        assert_eq!(
            (welcome.affinity.as_str(), &welcome.node, &welcome.session),
            ("kept", &moved_to.node, &clients[id].session),
            "client {id} {when}, having moved to {}",
            moved_to.node
        );
        checked += 1;
    }
    assert!(checked > 0, "no client moved in the drain");
    lb::report(&format!(
        "{checked} moved clients reconnected {when}: all `kept` on the node they moved to"
    ));
}
