//! Drives a `StickyUpgradeLayer` through its public API only: a request goes
//! through the layer into a model of a WebSocket handler, and the [`Outcome`]
//! records what the layer decided (the `StickySession` the handler saw) and
//! what it wrote (`Set-Cookie`, status).
//!
//! `mod oneshot;` from a test file.
#![allow(dead_code)]

use std::convert::Infallible;
use std::sync::{Arc, Mutex};

use http::header::{
    self, CONNECTION, SEC_WEBSOCKET_ACCEPT, SEC_WEBSOCKET_KEY, SEC_WEBSOCKET_VERSION, SET_COOKIE,
    UPGRADE,
};
use http::{HeaderValue, Method, Request, Response, StatusCode, Version};
use tower::{service_fn, ServiceExt};
use tower_sticky_upgrade::{Affinity, SessionId, StickySession, StickyUpgradeLayer};

/// A `Sec-WebSocket-Key` (base64 of 16 bytes), the example of RFC 6455 §1.3.
pub const WS_KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

/// What the service behind the layer does.
#[derive(Debug, Clone)]
pub enum Inner {
    /// A WebSocket handler that judges the handshake as a real one does:
    /// `405` for a method other than `GET`, `426` for a version other than 13,
    /// `400` without a well-formed key, `101` otherwise (`200` to an extended
    /// CONNECT); `200` to requests without `Upgrade`.
    Validator,
    /// Answers `101` to everything, so a missing cookie can only be the layer's
    /// decision, never the handler's refusal.
    AlwaysSwitch,
    /// Answers `101` and adds these `Set-Cookie` lines itself.
    SwitchSettingCookies(Vec<&'static str>),
    /// Answers this status to everything.
    Status(StatusCode),
}

/// What one request through the layer came to.
#[derive(Debug)]
pub struct Outcome {
    pub status: StatusCode,
    pub headers: http::HeaderMap,
    /// The session the handler found in the request extensions.
    pub session: Option<(SessionId, Affinity)>,
    /// Whether the handler was called at all.
    pub inner_called: bool,
}

impl Outcome {
    /// Every `Set-Cookie` line, as text.
    pub fn set_cookies(&self) -> Vec<String> {
        self.headers
            .get_all(SET_COOKIE)
            .iter()
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            .collect()
    }

    /// The `Set-Cookie` lines that set the cookie `name`.
    pub fn cookies_named(&self, name: &str) -> Vec<String> {
        self.set_cookies()
            .into_iter()
            .filter(|line| cookie_value(line, name).is_some())
            .collect()
    }

    /// The value of the one cookie `name` set on the response; panics (the test
    /// fails) when there is none or more than one.
    pub fn cookie(&self, name: &str) -> String {
        let lines = self.cookies_named(name);
        assert_eq!(lines.len(), 1, "expected one {name} cookie: {lines:?}");
        cookie_value(&lines[0], name).unwrap().to_owned()
    }

    pub fn affinity(&self) -> Option<Affinity> {
        self.session.map(|(_, a)| a)
    }

    pub fn id(&self) -> Option<SessionId> {
        self.session.map(|(id, _)| id)
    }
}

/// `VALUE` from a `NAME=VALUE; attributes` line when the name is `name`.
pub fn cookie_value<'a>(line: &'a str, name: &str) -> Option<&'a str> {
    let pair = line.split(';').next()?;
    let (n, v) = pair.split_once('=')?;
    (n.trim() == name).then(|| v.trim())
}

/// A complete, valid HTTP/1.1 WebSocket handshake request builder.
pub fn ws_request() -> http::request::Builder {
    Request::get("/ws")
        .header(CONNECTION, "Upgrade")
        .header(UPGRADE, "websocket")
        .header(SEC_WEBSOCKET_KEY, WS_KEY)
        .header(SEC_WEBSOCKET_VERSION, "13")
}

/// A valid handshake carrying `Cookie: cookie`.
pub fn ws_with_cookie(cookie: &str) -> Request<()> {
    ws_request()
        .header(header::COOKIE, cookie)
        .body(())
        .unwrap()
}

/// An HTTP/2 extended CONNECT (RFC 8441) for `:protocol`.
pub fn extended_connect(protocol: &'static str) -> Request<()> {
    let mut req = Request::builder()
        .method(Method::CONNECT)
        .version(Version::HTTP_2)
        .uri("https://example.test/ws")
        .header(SEC_WEBSOCKET_VERSION, "13")
        .body(())
        .unwrap();
    req.extensions_mut()
        .insert(hyper::ext::Protocol::from_static(protocol));
    req
}

fn handshake(req: &Request<()>) -> Response<String> {
    let h = req.headers();
    let mut res = Response::new(String::new());
    let status = |res: &mut Response<String>, s: StatusCode| *res.status_mut() = s;
    let version_13 = h
        .get(SEC_WEBSOCKET_VERSION)
        .is_some_and(|v| v.as_bytes() == b"13");
    if req.method() == Method::CONNECT && req.extensions().get::<hyper::ext::Protocol>().is_some() {
        status(
            &mut res,
            if version_13 {
                StatusCode::OK
            } else {
                StatusCode::BAD_REQUEST
            },
        );
        return res;
    }
    if !h.contains_key(UPGRADE) {
        return res;
    }
    if req.method() != Method::GET {
        status(&mut res, StatusCode::METHOD_NOT_ALLOWED);
        res.headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("GET"));
        return res;
    }
    if !version_13 {
        status(&mut res, StatusCode::UPGRADE_REQUIRED);
        res.headers_mut()
            .insert(SEC_WEBSOCKET_VERSION, HeaderValue::from_static("13"));
        return res;
    }
    let key = h
        .get(SEC_WEBSOCKET_KEY)
        .filter(|k| k.len() == 24 && k.as_bytes().ends_with(b"=="));
    let Some(key) = key else {
        status(&mut res, StatusCode::BAD_REQUEST);
        return res;
    };
    let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
    status(&mut res, StatusCode::SWITCHING_PROTOCOLS);
    let headers = res.headers_mut();
    headers.insert(UPGRADE, HeaderValue::from_static("websocket"));
    headers.insert(CONNECTION, HeaderValue::from_static("Upgrade"));
    headers.insert(
        SEC_WEBSOCKET_ACCEPT,
        HeaderValue::from_str(&accept).unwrap(),
    );
    res
}

fn answer(inner: &Inner, req: &Request<()>) -> Response<String> {
    match inner {
        Inner::Validator => handshake(req),
        Inner::AlwaysSwitch => {
            let mut res = Response::new(String::new());
            *res.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
            res
        }
        Inner::SwitchSettingCookies(cookies) => {
            let mut res = answer(&Inner::AlwaysSwitch, req);
            for c in cookies {
                res.headers_mut()
                    .append(SET_COOKIE, HeaderValue::from_static(c));
            }
            res
        }
        Inner::Status(status) => {
            let mut res = Response::new(String::new());
            *res.status_mut() = *status;
            res
        }
    }
}

#[derive(Default)]
struct Seen {
    session: Option<StickySession>,
    status: Option<StatusCode>,
}

/// Sends `req` through `layer` in front of `inner`.
///
/// Also checks the layer's contract on every call: when the handler ran, the
/// status is the handler's (the layer never rewrites it); when it did not, the
/// layer answered `403` (origin) or `503` (draining) and set no cookie.
pub async fn send(layer: &StickyUpgradeLayer, inner: Inner, req: Request<()>) -> Outcome {
    let seen = Arc::new(Mutex::new(Seen::default()));
    let svc = {
        let seen = Arc::clone(&seen);
        service_fn(move |req: Request<()>| {
            let res = answer(&inner, &req);
            let mut seen = seen.lock().unwrap();
            seen.session = req.extensions().get::<StickySession>().cloned();
            seen.status = Some(res.status());
            async move { Ok::<_, Infallible>(res) }
        })
    };
    let res = tower::Layer::layer(layer, svc).oneshot(req).await.unwrap();
    let seen = std::mem::take(&mut *seen.lock().unwrap());
    match seen.status {
        Some(inner_status) => assert_eq!(res.status(), inner_status, "the layer rewrote a status"),
        None => {
            assert!(
                [StatusCode::FORBIDDEN, StatusCode::SERVICE_UNAVAILABLE].contains(&res.status()),
                "the layer answered {} itself",
                res.status()
            );
            assert!(!res.headers().contains_key(SET_COOKIE));
        }
    }
    Outcome {
        status: res.status(),
        headers: res.headers().clone(),
        session: seen.session.map(|s| (*s.id(), s.affinity())),
        inner_called: seen.status.is_some(),
    }
}

/// A value the layer itself issued: one fresh handshake, its cookie value.
pub async fn issued_value(layer: &StickyUpgradeLayer) -> String {
    let out = send(layer, Inner::Validator, ws_request().body(()).unwrap()).await;
    assert_eq!(out.affinity(), Some(Affinity::Issued));
    out.cookie(layer.cookie_name())
}

/// Asserts the request was treated as an upgrade with a fresh session and the
/// cookie set to that session.
pub fn assert_issued(out: &Outcome, name: &str) {
    assert_eq!(out.status, StatusCode::SWITCHING_PROTOCOLS, "{out:?}");
    assert_eq!(out.affinity(), Some(Affinity::Issued), "{out:?}");
    let id = out.id().unwrap();
    let value = out.cookie(name);
    assert!(value.starts_with(id.as_str()), "{value} vs {id}");
}

/// Asserts the request was not treated as an upgrade: no session, no cookie.
pub fn assert_not_upgrade(out: &Outcome, layer: &StickyUpgradeLayer) {
    assert!(out.inner_called);
    assert_eq!(out.session, None, "{out:?}");
    assert!(out.set_cookies().is_empty(), "{out:?}");
    assert_eq!(layer.stats().upgrades, 0);
}

/// [`send`] for synchronous callers (proptest): every future in the chain is
/// ready at once, so one poll with a no-op waker completes it.
pub fn send_now(layer: &StickyUpgradeLayer, inner: Inner, req: Request<()>) -> Outcome {
    use futures_util::FutureExt;
    send(layer, inner, req)
        .now_or_never()
        .expect("the layered call completes in one poll")
}
