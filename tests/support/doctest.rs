// Helpers for the crate's doc examples. An example pulls them in with the
// hidden line `# include!("../tests/support/doctest.rs");`, so that it shows
// what its item does and not the same request-building code again. Not a
// module of any test target. Items only, with full paths and no `use`, which
// could clash with an example's own imports; unused ones are allowed in
// doctests.

/// Sends one upgrade request, with `cookie` (a `Cookie` line) if given,
/// through `layer` to a handler that accepts it, and returns the response;
/// its body is the session the handler was given.
async fn doc_send(
    layer: &tower_sticky_upgrade::StickyUpgradeLayer,
    cookie: Option<&str>,
) -> http::Response<Option<tower_sticky_upgrade::StickySession>> {
    use tower::{Layer as _, ServiceExt as _};
    let accept = tower::service_fn(|req: http::Request<()>| async move {
        let session = req
            .extensions()
            .get::<tower_sticky_upgrade::StickySession>()
            .cloned();
        let res = http::Response::builder().status(101).body(session).unwrap();
        Ok::<_, std::convert::Infallible>(res)
    });
    let mut req = http::Request::get("/ws")
        .header(http::header::CONNECTION, "upgrade")
        .header(http::header::UPGRADE, "websocket");
    if let Some(cookie) = cookie {
        req = req.header(http::header::COOKIE, cookie);
    }
    layer.layer(accept).oneshot(req.body(()).unwrap()).await.unwrap()
}

/// One handshake through `layer` (see `doc_send`), the response without a body.
async fn handshake(
    layer: &tower_sticky_upgrade::StickyUpgradeLayer,
    cookie: Option<&str>,
) -> http::Response<()> {
    doc_send(layer, cookie).await.map(drop)
}

/// One accepted handshake through `layer`: the handler's session and the
/// `NAME=VALUE` pair of the `Set-Cookie` sent back.
async fn upgrade(
    layer: &tower_sticky_upgrade::StickyUpgradeLayer,
    cookie: Option<&str>,
) -> (tower_sticky_upgrade::StickySession, String) {
    let res = doc_send(layer, cookie).await;
    let line = res.headers()[http::header::SET_COOKIE].to_str().unwrap();
    let pair = line.split(';').next().unwrap().to_owned();
    (res.into_body().expect("a session"), pair)
}

/// Builds the layer and returns the `Set-Cookie` line of one accepted
/// handshake without a cookie.
async fn set_cookie(builder: tower_sticky_upgrade::StickyUpgradeBuilder) -> String {
    let res = doc_send(&builder.build().unwrap(), None).await;
    res.headers()[http::header::SET_COOKIE]
        .to_str()
        .unwrap()
        .to_owned()
}
