//! The layer's `tracing` events, seen on a real server.
//!
//! Its own test binary: `tracing` caches per call site whether anyone is
//! interested, and with a single thread-scoped subscriber that cache is filled
//! from whichever thread hits the call site first. Another test's thread
//! (no subscriber) would then switch the events off for this one.

mod harness;

use http::header::SEC_WEBSOCKET_VERSION;
use http::HeaderValue;
use tower_sticky_upgrade::{StickyUpgradeLayer, DEFAULT_COOKIE_NAME};

use harness::{connect, cookie_pair, get, refused, set_cookie, welcome, Node};

/// A `tracing` subscriber that keeps this crate's events as text lines.
#[derive(Clone, Default)]
struct Capture(std::sync::Arc<std::sync::Mutex<Vec<String>>>);

impl Capture {
    fn lines(&self) -> Vec<String> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

struct Line(String);

impl tracing::field::Visit for Line {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        use std::fmt::Write;
        let _ = write!(self.0, " {}={:?}", field.name(), value);
    }

    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        use std::fmt::Write;
        let _ = write!(self.0, " {}={}", field.name(), value);
    }
}

impl tracing::Subscriber for Capture {
    fn enabled(&self, metadata: &tracing::Metadata<'_>) -> bool {
        metadata.target().starts_with("tower_sticky_upgrade")
    }

    fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        tracing::span::Id::from_u64(1)
    }

    fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}

    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}

    fn event(&self, event: &tracing::Event<'_>) {
        let mut line = Line(event.metadata().level().to_string());
        event.record(&mut line);
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(line.0);
    }

    fn enter(&self, _: &tracing::span::Id) {}

    fn exit(&self, _: &tracing::span::Id) {}
}

/// Server and clients run on this test's thread (current-thread runtime), so
/// a thread-scoped subscriber sees every event of the layer.
#[tokio::test(flavor = "current_thread")]
async fn debug_events_say_what_the_layer_decided() {
    let capture = Capture::default();
    let _scope = tracing::subscriber::set_default(capture.clone());
    let node = Node::start(StickyUpgradeLayer::builder().node_id("a").build().unwrap()).await;

    let (mut ws, res) = connect(node.ws_request(&[])).await;
    let id = welcome(&mut ws).await.session;
    let cookie = cookie_pair(set_cookie(res.headers(), DEFAULT_COOKIE_NAME).unwrap()).to_owned();
    let (mut ws2, _) = connect(node.ws_request(&[&cookie])).await;
    welcome(&mut ws2).await;
    let mut req = node.ws_request(&[]);
    req.headers_mut()
        .insert(SEC_WEBSOCKET_VERSION, HeaderValue::from_static("8"));
    refused(req).await;
    node.layer.drain().start();
    refused(node.ws_request(&[])).await;
    get(node.addr, "/plain").await;

    let lines = capture.lines();
    let find = |needle: &[&str]| {
        lines
            .iter()
            .find(|l| needle.iter().all(|n| l.contains(n)))
            .unwrap_or_else(|| panic!("no event with {needle:?} in {lines:#?}"))
    };
    find(&[
        "DEBUG",
        "upgrade request",
        &format!("session={id}"),
        "affinity=issued",
    ]);
    find(&[
        "DEBUG",
        "upgrade request",
        &format!("session={id}"),
        "affinity=kept",
    ]);
    find(&["DEBUG", "refused by the service", "status=426"]);
    find(&["INFO", "drain started", "active=2"]);
    find(&["DEBUG", "upgrade refused: draining"]);
    // One event per decision, nothing for the plain request.
    assert_eq!(lines.len(), 6, "{lines:#?}");
}

/// Without the `http2` feature the layer cannot read `:protocol`: an HTTP/2
/// WebSocket goes by with no session and no cookie, and the layer says so,
/// once per process rather than on every request.
#[cfg(not(feature = "http2"))]
#[tokio::test(flavor = "current_thread")]
async fn extended_connect_without_the_http2_feature_is_warned_about_once() {
    use harness::{extended_connect, h2_handshake, h2_send};
    use http::header::SET_COOKIE;

    let capture = Capture::default();
    let _scope = tracing::subscriber::set_default(capture.clone());
    let mut node = Node::start(StickyUpgradeLayer::new()).await;
    let (mut h2, _) = h2_handshake(node.addr, "/plain").await;
    node.next_call().await;
    for i in 0..2 {
        let res = h2_send(&mut h2, extended_connect(node.addr, "/ws", "13", &[])).await;
        assert!(res.headers().get(SET_COOKIE).is_none());
        let (path, session) = node.next_call().await;
        assert_eq!(path, "/ws");
        assert!(session.is_none(), "no session without the feature");
        // The warning comes with the first CONNECT, not a later one.
        let lines = capture.lines();
        assert_eq!(lines.len(), 1, "after CONNECT {i}: {lines:#?}");
    }

    let lines = capture.lines();
    assert_eq!(lines.len(), 1, "{lines:#?}");
    assert!(
        lines[0].starts_with("WARN") && lines[0].contains("without its `http2` feature"),
        "{lines:#?}"
    );
}
