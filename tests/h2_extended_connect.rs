//! Session affinity over HTTP/2 extended CONNECT (RFC 8441): a real hyper
//! server with `enable_connect_protocol`, hyper's HTTP/2 client, and a
//! WebSocket exchanged over the upgraded stream.
#![cfg(feature = "http2")]

mod harness;

use std::net::SocketAddr;

use bytes::Bytes;
use http::header::{CONNECTION, COOKIE, RETRY_AFTER, SET_COOKIE};
use http::{Request, StatusCode};
use http_body_util::Empty;
use hyper::client::conn::http2::SendRequest;
use tower_sticky_upgrade::{Affinity, StickyUpgradeLayer, DEFAULT_COOKIE_NAME};

use harness::{
    cookie_pair, echo, extended_connect, h2_handshake, h2_send, h2_websocket, set_cookie, welcome,
    Node,
};

/// An HTTP/2 connection ready for extended CONNECT. Its first request, a
/// plain `GET /plain`, must pass through untouched.
async fn h2_client(node: &mut Node) -> SendRequest<Empty<Bytes>> {
    let (sender, res) = h2_handshake(node.addr, "/plain").await;
    assert_eq!(res.status(), StatusCode::OK);
    assert!(res.headers().get(SET_COOKIE).is_none());
    let (path, session) = node.next_call().await;
    assert_eq!(path, "/plain");
    assert!(session.is_none(), "a plain h2 request carries no session");
    sender
}

fn ws_connect(addr: SocketAddr, version: &str, cookies: &[&str]) -> Request<Empty<Bytes>> {
    extended_connect(addr, "/ws", version, cookies)
}

#[tokio::test]
async fn extended_connect_is_issued_then_kept_with_the_cookie_on_the_200() {
    let layer = StickyUpgradeLayer::builder().node_id("h2").build().unwrap();
    let mut node = Node::start(layer).await;
    let mut h2 = h2_client(&mut node).await;

    let res = h2_send(&mut h2, ws_connect(node.addr, "13", &[])).await;
    assert_eq!(res.status(), StatusCode::OK);
    let line = set_cookie(res.headers(), DEFAULT_COOKIE_NAME)
        .expect("cookie on the 200")
        .to_owned();
    assert!(
        line.ends_with("; Path=/; Secure; HttpOnly; SameSite=Lax"),
        "{line}"
    );
    let (path, session) = node.next_call().await;
    assert_eq!(path, "/ws");
    let session = session.expect("extended CONNECT detected");
    assert_eq!(session.affinity(), Affinity::Issued);

    let mut first = h2_websocket(res).await;
    let hello = welcome(&mut first).await;
    assert_eq!(hello.affinity, "issued");
    assert_eq!(hello.session, session.id().as_str());
    echo(&mut first, "frame over an h2 stream").await;

    // Reconnect on another stream of the same connection, the first socket
    // still open: the cookie is kept.
    let res = h2_send(&mut h2, ws_connect(node.addr, "13", &[cookie_pair(&line)])).await;
    assert_eq!(res.status(), StatusCode::OK);
    let (_, again) = node.next_call().await;
    let again = again.expect("tagged");
    assert_eq!(again.affinity(), Affinity::Kept);
    assert_eq!(again.id(), session.id());
    let mut second = h2_websocket(res).await;
    assert_eq!(welcome(&mut second).await.affinity, "kept");
    echo(&mut second, "second stream").await;
    echo(&mut first, "first stream still works").await;

    let stats = node.layer.stats();
    assert_eq!((stats.upgrades, stats.issued, stats.kept), (2, 1, 1));
    assert_eq!(stats.active, 2);
}

#[tokio::test]
async fn cookie_split_over_two_h2_fields_is_found() {
    let mut node = Node::start(StickyUpgradeLayer::new()).await;
    let mut h2 = h2_client(&mut node).await;
    let res = h2_send(&mut h2, ws_connect(node.addr, "13", &[])).await;
    let line = set_cookie(res.headers(), DEFAULT_COOKIE_NAME)
        .expect("cookie")
        .to_owned();
    node.next_call().await;

    // RFC 9113 §8.2.3: a client may send each cookie-pair as its own field.
    let req = ws_connect(
        node.addr,
        "13",
        &["theme=dark", cookie_pair(&line), "lang=en"],
    );
    assert_eq!(req.headers().get_all(COOKIE).iter().count(), 3);
    let res = h2_send(&mut h2, req).await;
    assert_eq!(res.status(), StatusCode::OK);
    let (_, session) = node.next_call().await;
    assert_eq!(session.expect("tagged").affinity(), Affinity::Kept);
    let mut ws = h2_websocket(res).await;
    assert_eq!(welcome(&mut ws).await.affinity, "kept");
}

#[tokio::test]
async fn refused_extended_connect_gets_no_cookie() {
    let mut node = Node::start(StickyUpgradeLayer::new()).await;
    let mut h2 = h2_client(&mut node).await;

    let res = h2_send(&mut h2, ws_connect(node.addr, "8", &[])).await;
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    assert!(res.headers().get(SET_COOKIE).is_none());
    let (_, session) = node.next_call().await;
    assert!(session.is_some(), "detected, then refused by the service");
    assert_eq!(node.layer.stats().active, 0);
}

#[tokio::test]
async fn draining_refuses_extended_connect_with_503_and_no_connection_header() {
    let mut node = Node::start(StickyUpgradeLayer::new()).await;
    let mut h2 = h2_client(&mut node).await;
    let calls = node.calls();

    assert!(node.layer.drain().start());
    let res = h2_send(&mut h2, ws_connect(node.addr, "13", &[])).await;
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(res.headers()[RETRY_AFTER], "5");
    // `Connection` is forbidden in HTTP/2; the refusal must not carry it.
    assert!(res.headers().get(CONNECTION).is_none());
    assert!(res.headers().get(SET_COOKIE).is_none());
    assert_eq!(node.calls(), calls, "the inner service was not called");
    assert_eq!(node.layer.stats().refused_draining, 1);
}
