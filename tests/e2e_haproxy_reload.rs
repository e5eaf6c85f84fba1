//! End to end through HAProxy when HAProxy itself changes, as on a deploy of
//! its configuration: three nodes of `examples/server.rs` behind HAProxy
//! configured by `deploy/haproxy.cfg`, with clients whose sockets are open.
//!
//! 1. A soft reload (a new process with the same files, the old one told to
//!    stop with `-sf`): the open sockets stay up on the old process and
//!    still echo; every reconnect goes through the new process, whose stick
//!    table starts empty, and is `kept` on its node (the cookie's node tag
//!    names the node's server), and the new process learns each cookie from
//!    the `101`; once its last socket closes, the old process exits.
//! 2. A second HAProxy with the same files, sharing nothing with the first
//!    (as several instances behind DNS or a network load balancer): every
//!    reconnect through it is `kept` on its node too.
//!
//! It runs twice: HAProxy standalone, reloaded with `-sf`, and HAProxy as a
//! master process with its worker (`-W`), reloaded with `SIGUSR2`, as
//! systemd's `haproxy.service` reloads it (it runs `-Ws`: `-W` with
//! systemd's notification, which is left out here); there the old worker
//! keeps the open sockets, and the master reports its exit.
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

use lb::{Cluster, CookieJar, NodeOptions};

const CLIENTS: usize = 12;
/// Bound on the old process's stop of its frontend after a reload, and on
/// its exit once its last socket has closed.
const OLD_PROCESS_EXIT: Duration = Duration::from_secs(10);

#[test]
fn haproxy_reloads_and_instances_keep_every_session_on_its_node() {
    run(false);
}

/// The same with HAProxy as a master process and its worker, reloaded with
/// `SIGUSR2`, as systemd's `haproxy.service` reloads it.
#[test]
fn haproxy_master_worker_reloads_keep_every_session_on_its_node() {
    run(true);
}

fn run(master_worker: bool) {
    let Some([haproxy]) = lb::tools_or_skip("e2e_haproxy_reload", [lb::Tool::HaProxy]) else {
        return;
    };
    let started = Instant::now();
    let (mut cluster, what) = if master_worker {
        let cluster = Cluster::start_master_worker(&haproxy, NodeOptions::HAPROXY);
        (cluster, "3 nodes + haproxy -W (master and worker)")
    } else {
        (
            Cluster::start(&haproxy, NodeOptions::HAPROXY),
            "3 nodes + haproxy",
        )
    };
    talk::run("haproxy reload", what, started, scenario(&mut cluster));
}

async fn scenario(cluster: &mut Cluster) {
    let url = cluster.ws_url();

    // Fresh clients spread over the nodes; each then opens a socket with its
    // cookie, `kept` on its node, and leaves it open.
    let (clients, per_node) = talk::fresh_clients(&url, Cluster::NODES, CLIENTS).await;
    assert!(
        per_node.values().all(|n| *n > 0),
        "fresh clients did not reach every node: {per_node:?}"
    );
    let mut sockets = talk::reconnect_all_kept(&url, &clients, 1).await;

    // 1. A soft reload. The old process (or worker) stops listening (it
    //    says so), and the open sockets stay with it.
    let mut old = cluster.reload_haproxy();
    let stopping = Instant::now();
    while !cluster.haproxy.former_stopped_listening(&old) {
        assert!(
            stopping.elapsed() < OLD_PROCESS_EXIT,
            "the {} did not stop its frontend within {OLD_PROCESS_EXIT:?}: {:#?}",
            old.name(),
            cluster.haproxy.log()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for c in &clients {
        let ws = sockets.get_mut(&c.id).expect("an open socket");
        talk::echo(ws, c, "after the reload").await;
    }
    lb::report(&format!(
        "reload: {CLIENTS} sockets open before it still echo"
    ));

    // Reconnects go to the new process, which has learned nothing yet: the
    // node tag routes them, and the new process learns each cookie anew.
    assert!(
        cluster
            .haproxy
            .stick_entries()
            .expect("HAProxy admin socket")
            .is_empty(),
        "the new process's stick table should start empty"
    );
    let mut jars: Vec<CookieJar> = clients.iter().map(|c| c.jar.clone()).collect();
    let kept_on_its_node = |id: usize, w: &lb::Welcome| {
        (w.affinity.as_str(), &w.node, &w.session)
            == ("kept", &clients[id].node, &clients[id].session)
    };
    let wrong = talk::reconnect_all(&url, &clients, &mut jars, kept_on_its_node).await;
    assert!(
        wrong.is_empty(),
        "reconnects after the reload left their node (client, welcome): {wrong:#?}"
    );
    for c in &clients {
        let value = jars[c.id].get(lb::COOKIE_NAME).expect("affinity cookie");
        let stuck = cluster.stuck_node(value).expect("HAProxy admin socket");
        assert_eq!(
            stuck,
            Some(c.node.as_str()),
            "the new process's stick table for client {}'s cookie {value:?}",
            c.id
        );
    }
    lb::report(&format!(
        "reload: {CLIENTS} reconnects through the new process `kept` on their node, \
         their cookies learned anew"
    ));

    // The old process still serves its sockets, then leaves with the last.
    assert!(
        cluster
            .haproxy
            .former_exit(&mut old, Duration::ZERO)
            .await
            .is_none(),
        "the {} should still serve its open sockets",
        old.name()
    );
    for c in &clients {
        let mut ws = sockets.remove(&c.id).expect("an open socket");
        talk::echo(&mut ws, c, "after the reconnects").await;
        lb::close(ws).await;
    }
    let closed_at = Instant::now();
    let exit = cluster
        .haproxy
        .former_exit(&mut old, OLD_PROCESS_EXIT)
        .await;
    lb::report(&format!(
        "reload: the {} exited {:?} after its last socket closed: {exit:?}",
        old.name(),
        closed_at.elapsed()
    ));
    assert!(
        exit == Some(true),
        "the {} should exit cleanly within {OLD_PROCESS_EXIT:?} of its last socket \
         closing: {exit:?}",
        old.name()
    );

    // 2. A second HAProxy with the same files, sharing nothing with the first.
    let (_other, frontend) = cluster.start_another_haproxy();
    let other_url = format!("ws://{frontend}/ws");
    let wrong = talk::reconnect_all(&other_url, &clients, &mut jars, kept_on_its_node).await;
    assert!(
        wrong.is_empty(),
        "reconnects through a second HAProxy left their node (client, welcome): {wrong:#?}"
    );
    lb::report(&format!(
        "a second HAProxy: {CLIENTS} reconnects `kept` on their node"
    ));
}
