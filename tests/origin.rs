//! The `Origin` allow-list on upgrades, through the layer: refused upgrades
//! never reach the handler, are answered `403` and counted.

mod oneshot;

use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use http::header::{ORIGIN, SET_COOKIE};
use http::{HeaderValue, Request, Response, StatusCode};
use tower::{service_fn, ServiceExt};
use tower_sticky_upgrade::{BuildError, Refusal, StickySession, StickyUpgradeLayer};

use oneshot::ws_request;

const ALLOWED: &str = "https://app.example.com";

fn layer(require_origin: bool) -> StickyUpgradeLayer {
    StickyUpgradeLayer::builder()
        .allowed_origins([ALLOWED, "http://localhost:3000"])
        .require_origin(require_origin)
        .build()
        .unwrap()
}

/// Sends `req` to a handler that counts its calls and accepts every upgrade.
async fn call(layer: &StickyUpgradeLayer, req: Request<()>) -> (Response<String>, usize) {
    let calls = Arc::new(AtomicUsize::new(0));
    let svc = {
        let calls = Arc::clone(&calls);
        service_fn(move |req: Request<()>| {
            calls.fetch_add(1, Ordering::SeqCst);
            let upgrade = req.extensions().get::<StickySession>().is_some();
            async move {
                let mut res = Response::new(String::new());
                if upgrade {
                    *res.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
                }
                Ok::<_, Infallible>(res)
            }
        })
    };
    let res = tower::Layer::layer(layer, svc).oneshot(req).await.unwrap();
    (res, calls.load(Ordering::SeqCst))
}

fn upgrade_from(origins: &[&str]) -> Request<()> {
    let mut req = ws_request().body(()).unwrap();
    for o in origins {
        req.headers_mut()
            .append(ORIGIN, HeaderValue::from_bytes(o.as_bytes()).unwrap());
    }
    req
}

async fn assert_passes(layer: &StickyUpgradeLayer, origins: &[&str]) {
    let (res, calls) = call(layer, upgrade_from(origins)).await;
    assert_eq!(res.status(), StatusCode::SWITCHING_PROTOCOLS, "{origins:?}");
    assert_eq!(calls, 1);
    assert!(res.headers().contains_key(SET_COOKIE));
    assert_eq!(res.extensions().get::<Refusal>(), None);
}

async fn assert_forbidden(layer: &StickyUpgradeLayer, origins: &[&str]) {
    let before = layer.stats();
    let (res, calls) = call(layer, upgrade_from(origins)).await;
    assert_eq!(res.status(), StatusCode::FORBIDDEN, "{origins:?}");
    assert_eq!(calls, 0, "the handler ran for {origins:?}");
    assert!(!res.headers().contains_key(SET_COOKIE));
    assert_eq!(
        res.extensions().get::<Refusal>(),
        Some(&Refusal::OriginNotAllowed)
    );
    let after = layer.stats();
    assert_eq!(after.refused_origin, before.refused_origin + 1);
    assert_eq!(after.upgrades, before.upgrades + 1);
    // No session was decided for a refused upgrade.
    assert_eq!(
        after.issued + after.kept + after.migrated,
        before.issued + before.kept + before.migrated
    );
}

#[tokio::test]
async fn allowed_origin_passes() {
    let layer = layer(false);
    for origin in [
        ALLOWED,
        "HTTPS://APP.EXAMPLE.COM",
        "https://app.example.com:443",
        "http://localhost:3000",
    ] {
        assert_passes(&layer, &[origin]).await;
    }
    assert_eq!(layer.stats().refused_origin, 0);
}

#[tokio::test]
async fn mismatched_origin_is_403_and_the_handler_is_not_called() {
    let layer = layer(false);
    for origin in [
        "https://evil.example",
        "http://app.example.com",
        "https://app.example.com:8443",
        "https://app.example.com.evil.example",
        "https://evil.example/https://app.example.com",
        "https://app.example.com/",
        "null",
        "",
        "https://app.example.com\u{e9}",
    ] {
        assert_forbidden(&layer, &[origin]).await;
    }
    assert_eq!(layer.stats().refused_origin, 9);
}

#[tokio::test]
async fn non_utf8_origin_is_403() {
    let layer = layer(false);
    let mut req = ws_request().body(()).unwrap();
    req.headers_mut().insert(
        ORIGIN,
        HeaderValue::from_bytes(b"https://app.example.com\xff").unwrap(),
    );
    let (res, calls) = call(&layer, req).await;
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    assert_eq!(calls, 0);
    assert_eq!(layer.stats().refused_origin, 1);
}

#[tokio::test]
async fn two_origin_fields_are_403_even_if_both_allowed() {
    let layer = layer(false);
    assert_forbidden(&layer, &[ALLOWED, ALLOWED]).await;
    assert_forbidden(&layer, &["https://evil.example", ALLOWED]).await;
}

#[tokio::test]
async fn missing_origin_passes_when_not_required() {
    let layer = layer(false);
    assert_passes(&layer, &[]).await;
    assert_eq!(layer.stats().refused_origin, 0);
}

#[tokio::test]
async fn missing_origin_is_403_when_required() {
    let layer = layer(true);
    assert_forbidden(&layer, &[]).await;
    // An allowed origin still passes with `require_origin`.
    assert_passes(&layer, &[ALLOWED]).await;
}

#[tokio::test]
async fn non_upgrade_requests_are_never_origin_checked() {
    let layer = layer(true);
    for origins in [&[][..], &["https://evil.example"], &[ALLOWED, ALLOWED]] {
        let mut req = Request::get("/page").body(()).unwrap();
        for o in origins {
            req.headers_mut()
                .append(ORIGIN, HeaderValue::from_static(o));
        }
        let (res, calls) = call(&layer, req).await;
        assert_eq!(res.status(), StatusCode::OK, "{origins:?}");
        assert_eq!(calls, 1);
    }
    let stats = layer.stats();
    assert_eq!((stats.refused_origin, stats.upgrades), (0, 0));
}

/// A browser's WebSocket over HTTP/2 is an extended CONNECT (RFC 8441) and
/// carries `Origin` like an HTTP/1.1 handshake. Without the `http2` feature
/// the layer cannot see `:protocol` and gives it no session, but a foreign
/// page must still be refused: the handler (axum's `WebSocketUpgrade`, say)
/// would accept the socket otherwise. A CONNECT over HTTP/1.1 is a proxy
/// request, never a WebSocket, and passes.
#[tokio::test]
async fn extended_connect_from_a_foreign_origin_is_403_with_or_without_http2() {
    let layer = layer(false);
    let connect = |origin: &'static str| {
        let mut req = oneshot::extended_connect("websocket");
        req.headers_mut()
            .insert(ORIGIN, HeaderValue::from_static(origin));
        req
    };
    let (res, calls) = call(&layer, connect("https://evil.example")).await;
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    assert_eq!(
        res.extensions().get::<Refusal>(),
        Some(&Refusal::OriginNotAllowed)
    );
    assert_eq!(calls, 0, "the handler ran for a foreign extended CONNECT");
    assert_eq!(layer.stats().refused_origin, 1);

    let (res, calls) = call(&layer, connect(ALLOWED)).await;
    assert_ne!(res.status(), StatusCode::FORBIDDEN);
    assert_eq!(res.extensions().get::<Refusal>(), None);
    assert_eq!(calls, 1);

    let mut proxy = Request::connect("example.test:443")
        .header(ORIGIN, "https://evil.example")
        .body(())
        .unwrap();
    *proxy.version_mut() = http::Version::HTTP_11;
    let (res, calls) = call(&layer, proxy).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(calls, 1);
    assert_eq!(layer.stats().refused_origin, 1);
}

#[tokio::test]
async fn origin_refusal_comes_before_the_drain_refusal() {
    // The origin is judged first: a foreign page gets 403 whether or not the
    // node drains, and only allowed upgrades are told to retry elsewhere.
    let layer = layer(false);
    layer.drain().start();
    assert_forbidden(&layer, &["https://evil.example"]).await;
    let (res, calls) = call(&layer, upgrade_from(&[ALLOWED])).await;
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(res.extensions().get::<Refusal>(), Some(&Refusal::Draining));
    assert_eq!(calls, 0);
    assert_eq!(layer.stats().refused_draining, 1);
}

#[tokio::test]
async fn the_apps_own_403_and_503_carry_no_refusal_mark() {
    // Only what the layer answers itself is marked: a later layer that
    // rewrites marked responses must not touch the app's.
    let layer = layer(false);
    for status in [StatusCode::FORBIDDEN, StatusCode::SERVICE_UNAVAILABLE] {
        let svc = service_fn(move |_: Request<()>| async move {
            let mut res = Response::new(String::from("the app's own"));
            *res.status_mut() = status;
            Ok::<_, Infallible>(res)
        });
        let res = tower::Layer::layer(&layer, svc)
            .oneshot(upgrade_from(&[ALLOWED]))
            .await
            .unwrap();
        assert_eq!(res.status(), status);
        assert_eq!(res.extensions().get::<Refusal>(), None, "{status}");
        assert_eq!(res.body(), "the app's own");
    }
}

#[tokio::test]
async fn the_last_allowed_origins_list_wins_and_require_origin_can_be_unset() {
    let layer = StickyUpgradeLayer::builder()
        .allowed_origins(["https://old.example"])
        .require_origin(true)
        .allowed_origins([ALLOWED])
        .require_origin(false)
        .build()
        .unwrap();
    assert_passes(&layer, &[ALLOWED]).await;
    assert_forbidden(&layer, &["https://old.example"]).await;
    assert_passes(&layer, &[]).await;
}

/// An empty list (read from an unset variable, say) would refuse every
/// browser with 403; it is refused when the layer is built instead.
#[test]
fn an_empty_list_is_a_build_error() {
    for require in [false, true] {
        let err = StickyUpgradeLayer::builder()
            .allowed_origins(Vec::<String>::new())
            .require_origin(require)
            .build()
            .unwrap_err();
        assert_eq!(err, BuildError::NoAllowedOrigins, "{err}");
    }
}
