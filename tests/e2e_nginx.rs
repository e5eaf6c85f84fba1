//! End to end through open-source nginx: three nodes of `examples/server.rs`
//! behind nginx running the shipped `deploy/nginx.conf`, which cannot learn
//! the affinity cookie and hashes the session id instead. The test checks
//! what the file's comments promise:
//!
//! 1. new clients (no cookie) are hashed on a random id: they spread;
//! 2. the first reconnect is hashed on the session id: same session, on the
//!    issuing node (`kept`) or another (`migrated` from it); from the second
//!    reconnect on, `kept` on that node, although the node tag of the cookie
//!    changed on migration;
//! 3. consistent hashing: when a node is gone, only its sessions move;
//! 4. a draining node's `503` is retried on the next node of the ring
//!    (`proxy_next_upstream http_503`): its clients, closed with `1001`,
//!    reconnect at the first attempt, `migrated` with the same session id,
//!    and no echoed message is lost;
//! 5. when the node comes back on its address, its sessions are mapped back
//!    to it (point 3): they migrate a second time, then stay.
//!
//! Only the listen port and the three upstream addresses of the shipped text
//! are rewritten (see `support/nginx.rs`); nginx runs with its prefix, pid
//! file and logs in a temp dir.
//!
//! Needs `nginx` (`bash .ci/install-e2e.sh`). Without it the test passes
//! with a loud `SKIPPED` line, except under `CI=true`, where it fails.
//! `E2E_NGINX=/path/to/nginx` picks the executable (`E2E_NGINX=/nonexistent`
//! shows the skip path).

#[path = "support/lb.rs"]
mod lb;
#[path = "support/nginx.rs"]
mod nginx;
mod support;
#[path = "support/talk.rs"]
mod talk;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use lb::{Cluster, CookieJar, NodeOptions};
use nginx::NginxCluster;
use talk::{Client, Talk};
use tokio::task::JoinSet;

/// The shipped file under test, in `deploy/`.
const CONFIG: &str = "nginx.conf";
const CLIENTS: usize = 30;
/// Connections per client after its first one.
const RECONNECTS: usize = 4;
/// Bound on each wait for the clients' milestones.
const MILESTONE_TIMEOUT: Duration = Duration::from_secs(30);
/// nginx retries a draining node's 503 on the next node itself
/// (`proxy_next_upstream http_503`): a client's one attempt after its `1001`
/// must get through.
const TALK: Talk = Talk::first_attempt(MILESTONE_TIMEOUT);

const OPTIONS: NodeOptions = NodeOptions::NGINX;

#[test]
fn nginx_hashes_sessions_onto_a_stable_node_and_retries_a_draining_one() {
    let Some([bin]) = lb::tools_or_skip("e2e_nginx", [lb::Tool::Nginx]) else {
        return;
    };
    let started = Instant::now();
    let mut cluster = NginxCluster::start(&bin, CONFIG, OPTIONS);
    let (major, minor, patch) = nginx::version(&bin);
    let what = format!(
        "3 nodes + nginx {major}.{minor}.{patch} ({})",
        bin.display()
    );
    talk::run("nginx", &what, started, scenario(&mut cluster));
}

async fn scenario(cluster: &mut NginxCluster) {
    let url = cluster.ws_url();

    // 1. New clients are hashed on a random id: they spread over the nodes.
    //    Each is on its issuing node for now.
    let (fresh, per_issuer) = talk::fresh_clients(&url, Cluster::NODES, CLIENTS).await;
    assert!(
        per_issuer.values().filter(|n| **n > 0).count() > 1,
        "new clients all went to one node (nginx.conf point 1: hashed on $request_id): {per_issuer:?}"
    );

    // 2. Reconnects are hashed on the session id.
    let mut tasks = JoinSet::new();
    for mut c in fresh {
        let url = url.clone();
        tasks.spawn(async move {
            let (welcomes, ws) = talk::reconnect(&url, c.id, &mut c.jar, RECONNECTS).await;
            (c, welcomes, ws)
        });
    }
    // From here on, a client's node is its home: the node of its reconnects.
    let mut clients = Vec::with_capacity(CLIENTS);
    let mut wrong = Vec::new();
    let (mut kept_first, mut migrated_first) = (0, 0);
    while let Some(joined) = tasks.join_next().await {
        let (c, welcomes, ws) = joined.expect("reconnect task panicked");
        let (id, issuer, session) = (c.id, c.node, c.session);
        let first = &welcomes[0];
        // The first reconnect picks a node of its own: the issuing one
        // (`kept`) or another, which reports the issuer (`migrated`).
        match (first.affinity.as_str(), first.from.as_deref()) {
            ("kept", None) if first.node == issuer => kept_first += 1,
            ("migrated", Some(from)) if from == issuer && first.node != issuer => {
                migrated_first += 1;
            }
            _ => wrong.push((id, 1, issuer.clone(), first.clone())),
        }
        if first.session != session {
            wrong.push((id, 1, issuer.clone(), first.clone()));
        }
        // From the second on: `kept` on the first reconnect's node.
        for (round, w) in welcomes.iter().enumerate().skip(1) {
            if (w.affinity.as_str(), &w.node, &w.session, &w.from)
                != ("kept", &first.node, &session, &None)
            {
                wrong.push((id, round + 1, issuer.clone(), w.clone()));
            }
        }
        let home = Client {
            id,
            jar: c.jar,
            session,
            node: first.node.clone(),
        };
        clients.push((home, ws));
    }
    clients.sort_by_key(|(c, _)| c.id);
    let per_home = talk::count_per_node(
        Cluster::NODES,
        clients.iter().map(|(c, _)| (c.id, c.node.as_str())),
    );
    lb::report(&format!(
        "first reconnect: {kept_first} kept, {migrated_first} migrated \
         (nginx.conf point 2 expects about (N-1)/N = 2/3 migrated); \
         then {} reconnects per client; clients per node now: {per_home:?}",
        RECONNECTS - 1
    ));
    assert!(
        wrong.is_empty(),
        "{} reconnects broke nginx.conf point 2, the first ones \
         (client, reconnect, issuing node, welcome): {:#?}",
        wrong.len(),
        &wrong[..wrong.len().min(5)]
    );
    // The session id's node is independent of the random pick of the first
    // connection: with 30 clients, all kept or all migrated has a chance
    // below (2/3)^30 < 1e-5. Seeing both shows the hash is on the session id
    // and ignores the node tag (point 2), which is what makes the first
    // reconnect migrate.
    assert!(
        kept_first > 0 && migrated_first > 0,
        "first reconnects: {kept_first} kept, {migrated_first} migrated; \
         nginx.conf point 2 says some of each"
    );

    // 3. Numbered messages on every socket, then drain the busiest node.
    let (clients, sockets): (Vec<Client>, Vec<_>) = clients.into_iter().unzip();
    let talking = clients.iter().cloned().zip(sockets).collect();
    let exit_timeout = OPTIONS.drain_timeout * 2;
    let drain = talk::drain_busiest(&url, talking, &mut cluster.nodes, exit_timeout, TALK).await;
    let (drained, moved, drained_clients) = (&drain.node, drain.moved, drain.clients_on_node);
    let failures = &drain.failures;
    assert!(
        failures.is_empty(),
        "clients failed (nginx.conf point 4: a draining node's 503 is retried \
         on the next node, so no reconnect may fail): {failures:#?}"
    );

    let mut reconnect_times = Vec::new();
    let mut moved_to: BTreeMap<usize, String> = BTreeMap::new();
    for r in &drain.reports {
        if let Some(m) = talk::check_move(r, &clients[r.id], drained) {
            reconnect_times.push(m.reconnect_time);
            moved_to.insert(r.id, m.welcome.node.clone());
        }
    }
    assert_eq!(moved, drained_clients, "clients of {drained} moved");
    let (median, worst) = lb::median_max(&mut reconnect_times).expect("drained clients");
    let log = cluster.nginx.log();
    let count = |needle: &str| log.iter().filter(|l| l.contains(needle)).count();
    lb::report(&format!(
        "drain: {moved}/{drained_clients} clients of {drained} moved with `migrated` at \
         their first reconnect (to {:?}), from the 1001 to the welcome: median {median:?}, \
         worst {worst:?}; nginx log: {} `temporarily disabled`, {} `connect() failed`",
        talk::count_per_node(
            Cluster::NODES,
            moved_to.iter().map(|(id, node)| (*id, node.as_str()))
        ),
        count("upstream server temporarily disabled"),
        count("connect() failed"),
    ));
    drain.assert_no_message_lost();

    // 4. The drained node exits cleanly within its drain timeout.
    drain.assert_clean_exit(OPTIONS.drain_timeout);

    // 5. With the node gone: the moved sessions stay on their new node
    //    (`kept`), and the others were not remapped (point 3: only the gone
    //    node's sessions move).
    // Every client reported (no failures, above): jars by client id.
    assert_eq!(drain.reports.len(), CLIENTS, "a report from every client");
    let mut jars = vec![CookieJar::default(); CLIENTS];
    for r in &drain.reports {
        jars[r.id] = r.jar.clone();
    }
    let expect_kept_on = |id: usize| moved_to.get(&id).unwrap_or(&clients[id].node).clone();
    let wrong = talk::reconnect_all(&url, &clients, &mut jars, |id, w| {
        (w.affinity.as_str(), &w.node, &w.session)
            == ("kept", &expect_kept_on(id), &clients[id].session)
    })
    .await;
    assert!(
        wrong.is_empty(),
        "after {drained} left, reconnects left their node (client, welcome): {wrong:#?}"
    );
    lb::report(&format!(
        "after the drain: {CLIENTS} reconnects `kept` on their node"
    ));

    // 6. The drained node comes back on its address (restarted in place):
    //    consistent hashing maps its sessions back to it (point 3). Until
    //    nginx tries it again (`fail_timeout` after the failures it saw during
    //    the drain) they stay `kept` where they moved; then they move back,
    //    `migrated` from that node with the same session id, and are `kept`
    //    on it from then on. The other sessions never move.
    let fail_timeout = nginx::fail_timeout(CONFIG);
    let port = cluster.nodes[drain.index].addr.port();
    let listen = format!("127.0.0.1:{port}");
    lb::wait_until_bindable(&listen, Duration::from_secs(10)).await;
    cluster.nodes[drain.index] = lb::start_named_node(drained, &listen, OPTIONS, &cluster.node_log);
    let back_at = Instant::now();
    lb::report(&format!("{drained} restarted on {listen}"));
    // The first moved client polls until nginx tries the node again; the
    // workers share the node's failure state (`zone`), so from then on every
    // other moved session is sent back at its first attempt, whichever
    // worker takes the connection.
    let mut first_attempts = None;
    for (&id, moved_to_node) in &moved_to {
        let deadline = Instant::now() + fail_timeout * 3;
        let mut attempts = 0;
        loop {
            attempts += 1;
            let (ws, w) = lb::connect(&url, &mut jars[id])
                .await
                .unwrap_or_else(|e| panic!("client {id}: reconnect once {drained} is back: {e:?}"));
            lb::close(ws).await;
            let session = &clients[id].session;
            if w.node == *drained {
                assert_eq!(
                    (w.affinity.as_str(), w.from.as_deref(), &w.session),
                    ("migrated", Some(moved_to_node.as_str()), session),
                    "client {id} back on {drained} after {attempts} attempts"
                );
                break;
            }
            assert!(
                first_attempts.is_none(),
                "client {id} not sent back to {drained} at its first attempt, after another \
                 client was (nginx.conf: `zone` shares the failure state between workers)"
            );
            assert_eq!(
                (w.affinity.as_str(), &w.node, &w.session),
                ("kept", moved_to_node, session),
                "client {id}, attempt {attempts} once {drained} is back"
            );
            assert!(
                Instant::now() < deadline,
                "client {id} not sent back to {drained} within {:?} ({attempts} attempts)",
                fail_timeout * 3
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        first_attempts.get_or_insert(attempts);
    }
    // The node's failures during the drain kept nginx off it for a while:
    // the first reconnects stayed where they moved.
    let first_attempts = first_attempts.expect("a moved client");
    assert!(
        first_attempts > 1,
        "nginx sent the first moved client back to {drained} at once: \
         it never counted the drained node as failed"
    );
    let mapped_back = back_at.elapsed();
    let wrong = talk::reconnect_all(&url, &clients, &mut jars, |id, w| {
        (w.affinity.as_str(), &w.node, &w.session)
            == ("kept", &clients[id].node, &clients[id].session)
    })
    .await;
    assert!(
        wrong.is_empty(),
        "once {drained} was back, reconnects off their home node (client, welcome): {wrong:#?}"
    );
    lb::report(&format!(
        "{drained} back: its {} sessions mapped back to it within {mapped_back:?} \
         (`migrated` a second time; the first after {first_attempts} attempts, the others at \
         their first), then {CLIENTS} reconnects `kept` on their home node",
        moved_to.len()
    ));
}
