//! The layer on an axum 0.8 router served by `axum::serve`, with axum's
//! `WebSocketUpgrade` and real tokio-tungstenite clients.

mod harness;

use std::future::IntoFuture;
use std::time::Duration;

use axum::extract::ws::{close_code, CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Router};
use http::header::{CONNECTION, RETRY_AFTER, SET_COOKIE};
use http::StatusCode;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tower_sticky_upgrade::{
    Drain, DrainGuard, DrainOutcome, SameSite, StickySession, StickyUpgradeLayer,
};

use harness::{
    connect, cookie_pair, cookie_value, echo, get as http_get, next_close, refused, set_cookie,
    welcome, welcome_text, within, ws_request,
};

/// The WebSocket handler as an app would write it: the session from the
/// request extensions, a drain guard held for the life of the socket.
async fn ws(upgrade: WebSocketUpgrade, session: Option<Extension<StickySession>>) -> Response {
    let Some(Extension(session)) = session else {
        return (StatusCode::INTERNAL_SERVER_ERROR, "layer missing").into_response();
    };
    let guard = session.guard();
    upgrade.on_upgrade(move |socket| serve(socket, session, guard))
}

/// Welcome, echo, and on `closing()` a Close 1001 and a bounded close handshake.
async fn serve(mut socket: WebSocket, session: StickySession, guard: DrainGuard) {
    if socket
        .send(Message::Text(welcome_text(&session).into()))
        .await
        .is_err()
    {
        return;
    }
    loop {
        tokio::select! {
            () = guard.closing() => {
                let close = CloseFrame { code: close_code::AWAY, reason: "draining".into() };
                if socket.send(Message::Close(Some(close))).await.is_ok() {
                    let reply = async {
                        while let Some(Ok(msg)) = socket.recv().await {
                            if matches!(msg, Message::Close(_)) {
                                break;
                            }
                        }
                    };
                    let _ = tokio::time::timeout(Duration::from_secs(5), reply).await;
                }
                break;
            }
            msg = socket.recv() => match msg {
                Some(Ok(msg @ (Message::Text(_) | Message::Binary(_)))) => {
                    if socket.send(msg).await.is_err() {
                        break;
                    }
                }
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => break,
                Some(Ok(_)) => {}
            },
        }
    }
}

/// The same handler with the `StickySession` extractor (feature `axum`).
#[cfg(feature = "axum")]
async fn ws_extract(upgrade: WebSocketUpgrade, session: StickySession) -> Response {
    let guard = session.guard();
    upgrade.on_upgrade(move |socket| serve(socket, session, guard))
}

/// A handler that only wants the session, to see the extractor's rejection.
#[cfg(feature = "axum")]
async fn session_only(session: StickySession) -> String {
    session.id().to_string()
}

struct App {
    addr: std::net::SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    server: JoinHandle<std::io::Result<()>>,
}

/// Serves `/ws`, `/ws-health` (and with feature `axum`, `/ws-extract` and
/// `/session`) behind `layer` on 127.0.0.1:0, with graceful shutdown.
async fn serve_app(layer: StickyUpgradeLayer) -> App {
    let router = Router::new()
        // GET for HTTP/1.1, CONNECT for HTTP/2 extended CONNECT.
        .route("/ws", get(ws).connect(ws))
        .route_service("/ws-health", layer.drain().health_service());
    #[cfg(feature = "axum")]
    let router = router
        .route("/ws-extract", get(ws_extract))
        .route("/session", get(session_only));
    let app = router.layer(layer);

    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("local addr");
    let (stop, stopped) = oneshot::channel::<()>();
    let server = tokio::spawn(
        axum::serve(listener, app)
            .with_graceful_shutdown(async {
                let _ = stopped.await;
            })
            .into_future(),
    );
    App {
        addr,
        stop: Some(stop),
        server,
    }
}

#[tokio::test]
async fn issued_then_kept_with_the_configured_cookie_attributes() {
    let layer = StickyUpgradeLayer::builder()
        .cookie_name("__Host-ws")
        .max_age(Duration::from_secs(3600))
        .expires(true)
        .same_site(SameSite::Strict)
        .node_id("ax")
        .build()
        .expect("valid configuration");
    let app = serve_app(layer.clone()).await;

    let (mut ws, res) = connect(ws_request(app.addr, &[])).await;
    let hello = welcome(&mut ws).await;
    assert_eq!(hello.affinity, "issued");
    let line = set_cookie(res.headers(), "__Host-ws").expect("cookie on the 101");
    let (head, expires) = line.split_once("; Expires=").expect("Expires attribute");
    assert_eq!(
        head,
        format!(
            "__Host-ws={}.ax; Path=/; Max-Age=3600; Secure; HttpOnly; SameSite=Strict",
            hello.session
        )
    );
    // An IMF-fixdate, e.g. `Sun, 06 Nov 1994 08:49:37 GMT`.
    assert!(
        expires.len() == 29 && expires.ends_with(" GMT"),
        "{expires}"
    );
    echo(&mut ws, "hello axum").await;

    let (mut ws, res) = connect(ws_request(app.addr, &[cookie_pair(line)])).await;
    let again = welcome(&mut ws).await;
    assert_eq!(
        (again.affinity.as_str(), again.session.as_str()),
        ("kept", hello.session.as_str())
    );
    let refreshed = set_cookie(res.headers(), "__Host-ws").expect("refreshed");
    assert_eq!(cookie_value(refreshed), cookie_value(line));
    echo(&mut ws, "hello again").await;

    let stats = layer.stats();
    assert_eq!((stats.issued, stats.kept, stats.active), (1, 1, 2));
}

#[tokio::test]
async fn axum_rejections_get_no_cookie() {
    let app = serve_app(StickyUpgradeLayer::new()).await;
    // Missing Sec-WebSocket-Key: axum's WebSocketUpgrade refuses.
    let req = http::Request::get("/ws")
        .header("connection", "upgrade")
        .header("upgrade", "websocket")
        .header("sec-websocket-version", "13")
        .body(())
        .unwrap();
    let res = harness::http1(app.addr, req).await;
    assert!(res.status().is_client_error(), "{}", res.status());
    assert!(res.headers().get(SET_COOKIE).is_none());

    let res = http_get(app.addr, "/ws-health").await;
    assert_eq!(res.status(), StatusCode::OK);
    assert!(res.headers().get(SET_COOKIE).is_none());
}

#[cfg(feature = "axum")]
#[tokio::test]
async fn sticky_session_extractor_issues_then_keeps() {
    let app = serve_app(StickyUpgradeLayer::new()).await;
    let url = format!("ws://{}/ws-extract", app.addr);
    let req = |cookie: Option<&str>| {
        use tokio_tungstenite::tungstenite::client::IntoClientRequest;
        let mut req = url.as_str().into_client_request().unwrap();
        if let Some(cookie) = cookie {
            req.headers_mut()
                .insert(http::header::COOKIE, cookie.parse().unwrap());
        }
        req
    };
    let (mut ws, res) = connect(req(None)).await;
    let hello = welcome(&mut ws).await;
    assert_eq!(hello.affinity, "issued");
    let line = set_cookie(res.headers(), "WS_SESSION_ID").expect("cookie");
    assert_eq!(cookie_value(line), hello.session);

    let (mut ws, _) = connect(req(Some(cookie_pair(line)))).await;
    let again = welcome(&mut ws).await;
    assert_eq!(
        (again.affinity.as_str(), again.session),
        ("kept", hello.session)
    );

    // Not an upgrade: no session, so the extractor rejects with 400.
    let res = http_get(app.addr, "/session").await;
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
}

#[cfg(feature = "http2")]
#[tokio::test]
async fn extended_connect_through_axum_serve() {
    let app = serve_app(StickyUpgradeLayer::new()).await;
    let (mut h2, res) = harness::h2_handshake(app.addr, "/ws-health").await;
    assert_eq!(res.status(), StatusCode::OK);

    let res = harness::h2_send(
        &mut h2,
        harness::extended_connect(app.addr, "/ws", "13", &[]),
    )
    .await;
    assert_eq!(res.status(), StatusCode::OK);
    let line = set_cookie(res.headers(), "WS_SESSION_ID")
        .expect("cookie on the 200")
        .to_owned();
    let mut ws = harness::h2_websocket(res).await;
    let hello = welcome(&mut ws).await;
    assert_eq!(hello.affinity, "issued");
    echo(&mut ws, "axum over h2").await;

    let req = harness::extended_connect(app.addr, "/ws", "13", &[cookie_pair(&line)]);
    let res = harness::h2_send(&mut h2, req).await;
    let mut ws = harness::h2_websocket(res).await;
    assert_eq!(welcome(&mut ws).await.session, hello.session);
}

#[tokio::test]
async fn drain_closes_axum_sockets_with_1001_then_serve_shuts_down() {
    let drain = Drain::with_close_spread(Duration::from_millis(300));
    let layer = StickyUpgradeLayer::builder()
        .drain(drain.clone())
        .build()
        .unwrap();
    let mut app = serve_app(layer.clone()).await;

    let mut clients = Vec::new();
    for _ in 0..5 {
        let (mut ws, _) = connect(ws_request(app.addr, &[])).await;
        welcome(&mut ws).await;
        clients.push(ws);
    }
    assert_eq!(drain.active(), 5);

    // Every client reads until its Close arrives.
    let readers: Vec<_> = clients
        .into_iter()
        .map(|mut ws| {
            tokio::spawn(async move {
                let frame = next_close(&mut ws).await;
                // Let tungstenite finish the close handshake.
                while futures_util::StreamExt::next(&mut ws).await.is_some() {}
                frame
            })
        })
        .collect();

    assert!(drain.start());
    let res = http_get(app.addr, "/ws-health").await;
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    let res = refused(ws_request(app.addr, &[])).await;
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(res.headers()[RETRY_AFTER], "5");
    assert_eq!(res.headers()[CONNECTION], "close");

    for reader in readers {
        let frame = within("close frame", reader)
            .await
            .expect("reader task")
            .expect("a Close frame, not a dropped connection");
        assert_eq!(frame.code, CloseCode::Away);
        assert_eq!(frame.reason.as_str(), "draining");
    }
    assert_eq!(drain.wait(harness::LONG).await, DrainOutcome::Drained);
    assert_eq!(drain.active(), 0);

    // Then axum's own graceful shutdown has nothing left to wait for.
    app.stop.take().expect("not stopped yet").send(()).ok();
    within("axum::serve to return", &mut app.server)
        .await
        .expect("server task")
        .expect("serve");
    assert_eq!(layer.stats().refused_draining, 1);
}
