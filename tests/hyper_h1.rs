//! Session affinity over HTTP/1.1 with a real hyper server, a real RFC 6455
//! handshake in the inner service, and tokio-tungstenite clients.

mod harness;

use http::header::{SEC_WEBSOCKET_VERSION, SET_COOKIE};
use http::{HeaderValue, Request, StatusCode};
use tower_sticky_upgrade::{Affinity, NodeId, Refresh, StickyUpgradeLayer, DEFAULT_COOKIE_NAME};

use harness::{
    connect, cookie_pair, cookie_value, echo, get, http1, refused, set_cookie, welcome, Node,
};

fn node(id: &str) -> StickyUpgradeLayer {
    StickyUpgradeLayer::builder()
        .node_id(id)
        .build()
        .expect("valid configuration")
}

/// Connects without a cookie and returns the `NAME=VALUE` to send back.
async fn first_visit(node: &mut Node) -> String {
    let (mut ws, res) = connect(node.ws_request(&[])).await;
    let line = set_cookie(res.headers(), DEFAULT_COOKIE_NAME).expect("cookie on the 101");
    assert_eq!(welcome(&mut ws).await.affinity, "issued");
    node.next_call().await;
    cookie_pair(line).to_owned()
}

#[tokio::test]
async fn first_connect_is_issued_with_the_cookie_on_the_101() {
    let mut node = Node::start(node("a")).await;
    let (mut ws, res) = connect(node.ws_request(&[])).await;

    assert_eq!(res.status(), StatusCode::SWITCHING_PROTOCOLS);
    let line = set_cookie(res.headers(), DEFAULT_COOKIE_NAME).expect("cookie on the 101");
    assert!(
        line.ends_with("; Path=/; Secure; HttpOnly; SameSite=Lax"),
        "{line}"
    );

    let hello = welcome(&mut ws).await;
    assert_eq!(hello.affinity, "issued");
    assert_eq!(hello.node.as_deref(), Some("a"));
    assert_eq!(hello.from, None);
    // The documented value shape: `ID.NODE`.
    assert_eq!(cookie_value(line), format!("{}.a", hello.session));

    let (path, session) = node.next_call().await;
    assert_eq!(path, "/ws");
    let session = session.expect("the layer tagged the upgrade");
    assert_eq!(session.affinity(), Affinity::Issued);
    assert_eq!(session.id().as_str(), hello.session);

    // The socket really is a WebSocket.
    echo(&mut ws, "ping over h1").await;
    assert_eq!(node.layer.stats().issued, 1);
}

#[tokio::test]
async fn reconnect_with_the_cookie_keeps_the_session() {
    let mut node = Node::start(node("a")).await;
    let (mut first, res) = connect(node.ws_request(&[])).await;
    let issued = set_cookie(res.headers(), DEFAULT_COOKIE_NAME)
        .expect("cookie on the 101")
        .to_owned();
    let id = welcome(&mut first).await.session;
    drop(first);

    let (mut ws, res) = connect(node.ws_request(&[cookie_pair(&issued)])).await;
    let hello = welcome(&mut ws).await;
    assert_eq!(hello.affinity, "kept");
    assert_eq!(hello.session, id);
    // Refreshed on every upgrade by default, with the same value.
    let again = set_cookie(res.headers(), DEFAULT_COOKIE_NAME).expect("refreshed cookie");
    assert_eq!(again, issued);

    node.next_call().await;
    let (_, session) = node.next_call().await;
    assert_eq!(session.expect("tagged").affinity(), Affinity::Kept);
    echo(&mut ws, "still here").await;
}

#[tokio::test]
async fn cookie_from_another_node_migrates_and_is_retagged() {
    let mut a = Node::start(node("a")).await;
    let mut b = Node::start(node("b")).await;
    let from_a = first_visit(&mut a).await;
    let id = from_a
        .strip_prefix("WS_SESSION_ID=")
        .and_then(|v| v.strip_suffix(".a"))
        .expect("ID.a")
        .to_owned();

    // The balancer lost stickiness: the reconnect lands on b.
    let (mut ws, res) = connect(b.ws_request(&[&from_a])).await;
    let hello = welcome(&mut ws).await;
    assert_eq!(hello.affinity, "migrated");
    assert_eq!(hello.from.as_deref(), Some("a"));
    assert_eq!(hello.node.as_deref(), Some("b"));
    assert_eq!(hello.session, id);
    let retagged = set_cookie(res.headers(), DEFAULT_COOKIE_NAME).expect("re-issued cookie");
    assert_eq!(cookie_value(retagged), format!("{id}.b"));

    let (_, session) = b.next_call().await;
    let session = session.expect("tagged");
    assert_eq!(
        session.affinity(),
        Affinity::Migrated {
            from: NodeId::new("a").expect("node id")
        }
    );
    assert_eq!(session.id().as_str(), id);

    // b's cookie is kept by b from now on.
    let (mut ws, _) = connect(b.ws_request(&[cookie_pair(retagged)])).await;
    let hello = welcome(&mut ws).await;
    assert_eq!(
        (hello.affinity.as_str(), hello.session.as_str()),
        ("kept", id.as_str())
    );
    assert_eq!(b.layer.stats().migrated, 1);
    assert_eq!(b.layer.stats().kept, 1);
}

#[tokio::test]
async fn refused_handshakes_get_no_cookie() {
    let mut node = Node::start(node("a")).await;

    // Missing Sec-WebSocket-Key: the inner service answers 400.
    let no_key = Request::get("/ws")
        .header("connection", "Upgrade")
        .header("upgrade", "websocket")
        .header("sec-websocket-version", "13")
        .body(())
        .unwrap();
    let res = http1(node.addr, no_key).await;
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    assert!(res.headers().get(SET_COOKIE).is_none());
    let (_, session) = node.next_call().await;
    assert_eq!(
        session.expect("the layer detected the upgrade").affinity(),
        Affinity::Issued
    );

    // An upgrade-looking POST: detected, refused by the service, no cookie.
    let post = Request::post("/ws")
        .header("connection", "Upgrade")
        .header("upgrade", "websocket")
        .header("sec-websocket-version", "13")
        .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")
        .body(())
        .unwrap();
    let res = http1(node.addr, post).await;
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    assert!(res.headers().get(SET_COOKIE).is_none());
    node.next_call().await;

    // A real client asking for version 8: 426, no cookie.
    let mut req = node.ws_request(&[]);
    req.headers_mut()
        .insert(SEC_WEBSOCKET_VERSION, HeaderValue::from_static("8"));
    let res = refused(req).await;
    assert_eq!(res.status(), StatusCode::UPGRADE_REQUIRED);
    assert_eq!(res.headers()[SEC_WEBSOCKET_VERSION], "13");
    assert!(res.headers().get(SET_COOKIE).is_none());
    node.next_call().await;

    assert_eq!(node.calls(), 3);
    assert_eq!(node.layer.stats().upgrades, 3);
}

#[tokio::test]
async fn plain_requests_get_no_cookie_and_no_session() {
    let mut node = Node::start(node("a")).await;

    let res = get(node.addr, "/plain").await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.body().as_ref(), b"plain");
    assert!(res.headers().get(SET_COOKIE).is_none());
    let (path, session) = node.next_call().await;
    assert_eq!(path, "/plain");
    assert!(session.is_none());

    // The WebSocket path without upgrade headers is not an upgrade either.
    let res = get(node.addr, "/ws").await;
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    assert!(res.headers().get(SET_COOKIE).is_none());
    assert!(node.next_call().await.1.is_none());

    assert_eq!(node.layer.stats().upgrades, 0);
}

#[tokio::test]
async fn cookie_split_over_two_header_lines_is_found() {
    let mut node = Node::start(node("a")).await;
    let cookie = first_visit(&mut node).await;
    let id = cookie_value(&cookie).trim_end_matches(".a").to_owned();

    // The affinity cookie on the second `Cookie` line, after other cookies.
    let (mut ws, _) = connect(node.ws_request(&["theme=dark; lang=en", &cookie])).await;
    let hello = welcome(&mut ws).await;
    assert_eq!(
        (hello.affinity.as_str(), hello.session.as_str()),
        ("kept", id.as_str())
    );

    // The name twice, first invalid, second valid on another line: the valid one wins.
    let (mut ws, _) = connect(node.ws_request(&["WS_SESSION_ID=forged.a", &cookie])).await;
    let hello = welcome(&mut ws).await;
    assert_eq!(
        (hello.affinity.as_str(), hello.session.as_str()),
        ("kept", id.as_str())
    );

    let stats = node.layer.stats();
    assert_eq!((stats.issued, stats.kept, stats.invalid_cookies), (1, 2, 1));
}

#[tokio::test]
async fn refresh_on_change_sends_the_cookie_only_when_it_changes() {
    let layer = StickyUpgradeLayer::builder()
        .node_id("a")
        .refresh(Refresh::OnChange)
        .build()
        .unwrap();
    let mut node = Node::start(layer).await;
    let cookie = first_visit(&mut node).await;

    let (mut ws, res) = connect(node.ws_request(&[&cookie])).await;
    assert_eq!(welcome(&mut ws).await.affinity, "kept");
    assert!(res.headers().get(SET_COOKIE).is_none());
}

#[tokio::test]
async fn invalid_cookie_gets_a_new_session() {
    let node = Node::start(node("a")).await;
    let (mut ws, res) = connect(node.ws_request(&["WS_SESSION_ID=not-a-uuid.a"])).await;
    let hello = welcome(&mut ws).await;
    assert_eq!(hello.affinity, "issued");
    assert_ne!(hello.session, "not-a-uuid");
    let line = set_cookie(res.headers(), DEFAULT_COOKIE_NAME).expect("new cookie");
    assert_eq!(cookie_value(line), format!("{}.a", hello.session));
    assert_eq!(node.layer.stats().invalid_cookies, 1);
}

#[cfg(feature = "signed")]
#[tokio::test]
async fn signed_cookies_migrate_only_between_nodes_sharing_a_key() {
    let key = [7u8; 32];
    let other_key = [9u8; 32];
    let signed = |node: &str, key: &[u8]| {
        StickyUpgradeLayer::builder()
            .node_id(node)
            .signing_keys([key])
            .build()
            .unwrap()
    };
    let mut a = Node::start(signed("a", &key)).await;
    let b = Node::start(signed("b", &key)).await;
    let c = Node::start(signed("c", &other_key)).await;
    let cookie = first_visit(&mut a).await;
    let id = cookie_value(&cookie).split('.').next().unwrap().to_owned();

    let (mut ws, _) = connect(b.ws_request(&[&cookie])).await;
    let hello = welcome(&mut ws).await;
    assert_eq!(
        (hello.affinity.as_str(), hello.session.as_str()),
        ("migrated", id.as_str())
    );

    // A node with another key cannot verify it: a new session.
    let (mut ws, _) = connect(c.ws_request(&[&cookie])).await;
    let hello = welcome(&mut ws).await;
    assert_eq!(hello.affinity, "issued");
    assert_ne!(hello.session, id);
    assert_eq!(c.layer.stats().invalid_cookies, 1);

    // A forged id with a's (valid-looking) tag and signature is invalid too.
    let value = cookie_value(&cookie);
    let first = if value.starts_with('0') { '1' } else { '0' };
    let forged = format!("WS_SESSION_ID={first}{}", &value[1..]);
    let (mut ws, _) = connect(a.ws_request(&[&forged])).await;
    assert_eq!(welcome(&mut ws).await.affinity, "issued");
}
