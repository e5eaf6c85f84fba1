//! Shared by the fuzz targets: layer configurations picked by an input byte, a
//! model WebSocket handler, one synchronous call through the layer (polled
//! once with a no-op waker), and the layer's contract checked on every call.
//! Everything goes through the crate's public API.

#[path = "../../tests/model/mod.rs"]
pub mod model;

use std::cell::RefCell;
use std::convert::Infallible;
use std::future::{ready, Future, Ready};
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use http::header::{CONNECTION, SEC_WEBSOCKET_KEY, SEC_WEBSOCKET_VERSION, SET_COOKIE, UPGRADE};
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode};
use tower_service::Service;
use tower_sticky_upgrade::{Affinity, Refresh, SessionId, StickySession, StickyUpgradeLayer};

use model::IdRule;

pub const NAME: &str = "WS_SESSION_ID";
pub const HERE: &str = "here";
/// The attributes the default configuration renders after the value.
pub const SUFFIX: &str = "; Path=/; Secure; HttpOnly; SameSite=Lax";
pub const KEY: &[u8; 32] = b"fuzzing key, never used for real";
/// The id a closure generator hands out in [`Config::any_id`] layers.
pub const FIXED_ID: &str = "fuzz~generated_id!";

/// A layer configuration, from one input byte.
#[derive(Debug, Clone, Copy)]
pub struct Config {
    pub node: bool,
    pub signed: bool,
    /// A closure generator, which accepts any well-formed id.
    pub any_id: bool,
    pub on_change: bool,
}

impl Config {
    pub fn from_byte(b: u8) -> Self {
        Self {
            node: b & 1 != 0,
            signed: b & 2 != 0,
            any_id: b & 4 != 0,
            on_change: b & 8 != 0,
        }
    }

    pub fn id_rule(&self) -> IdRule {
        if self.any_id {
            IdRule::Any
        } else {
            IdRule::UuidV4
        }
    }

    pub fn build(&self) -> StickyUpgradeLayer {
        let mut b = StickyUpgradeLayer::builder();
        if self.node {
            b = b.node_id(HERE);
        }
        if self.signed {
            b = b.signing_keys([KEY]);
        }
        if self.any_id {
            let id = SessionId::new(FIXED_ID).expect("a valid id");
            b = b.id_generator(move || id);
        }
        if self.on_change {
            b = b.refresh(Refresh::OnChange);
        }
        b.build().expect("valid configuration")
    }
}

/// What the service behind the layer answers.
#[derive(Debug, Clone)]
pub enum Handler {
    /// `101` to everything.
    Switch,
    /// This status to everything.
    Status(StatusCode),
    /// `101` with its own affinity cookie.
    SetsCookie,
}

impl Handler {
    pub fn from_byte(b: u8) -> Self {
        const STATUSES: [u16; 6] = [200, 204, 400, 426, 500, 503];
        match b % 4 {
            0 | 1 => Self::Switch,
            2 => Self::Status(
                StatusCode::from_u16(STATUSES[usize::from(b / 4) % STATUSES.len()]).unwrap(),
            ),
            _ => Self::SetsCookie,
        }
    }
}

pub const APP_COOKIE: &str = "WS_SESSION_ID=from-the-app; Path=/";

struct Model<'a> {
    handler: &'a Handler,
    seen: &'a RefCell<Option<(Option<StickySession>, StatusCode)>>,
}

impl Service<Request<()>> for Model<'_> {
    type Response = Response<()>;
    type Error = Infallible;
    type Future = Ready<Result<Response<()>, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<()>) -> Self::Future {
        let mut res = Response::new(());
        *res.status_mut() = match self.handler {
            Handler::Switch | Handler::SetsCookie => StatusCode::SWITCHING_PROTOCOLS,
            Handler::Status(s) => *s,
        };
        if let Handler::SetsCookie = self.handler {
            res.headers_mut()
                .append(SET_COOKIE, HeaderValue::from_static(APP_COOKIE));
        }
        *self.seen.borrow_mut() = Some((
            req.extensions().get::<StickySession>().cloned(),
            res.status(),
        ));
        ready(Ok(res))
    }
}

/// What one call came to.
#[derive(Debug)]
pub struct Outcome {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub session: Option<StickySession>,
    pub called: bool,
}

impl Outcome {
    /// The values of the `Set-Cookie` lines that set [`NAME`].
    pub fn affinity_values(&self) -> Vec<&[u8]> {
        self.headers
            .get_all(SET_COOKIE)
            .iter()
            .filter_map(|line| {
                let rest = line.as_bytes().strip_prefix(NAME.as_bytes())?;
                let rest = rest.strip_prefix(b"=")?;
                let end = rest.iter().position(|&b| b == b';').unwrap_or(rest.len());
                Some(&rest[..end])
            })
            .collect()
    }

    pub fn affinity(&self) -> Option<Affinity> {
        self.session.as_ref().map(StickySession::affinity)
    }
}

/// Sends `req` through `layer` in front of `handler`, and checks the layer's
/// contract: a called handler's status comes back unchanged; otherwise the
/// layer answered `403` or `503` with no cookie; at most one affinity cookie;
/// the layer's own cookie is cookie-octets with the configured attributes.
pub fn call(layer: &StickyUpgradeLayer, handler: &Handler, req: Request<()>) -> Outcome {
    let seen = RefCell::new(None);
    let mut svc = tower_layer::Layer::layer(
        layer,
        Model {
            handler,
            seen: &seen,
        },
    );
    let mut cx = Context::from_waker(Waker::noop());
    assert!(svc.poll_ready(&mut cx).is_ready());
    let future = pin!(svc.call(req));
    let Poll::Ready(Ok(res)) = future.poll(&mut cx) else {
        panic!("the layered call did not complete in one poll");
    };
    let seen = seen.into_inner();
    match &seen {
        Some((_, status)) => assert_eq!(res.status(), *status, "the layer rewrote a status"),
        None => {
            assert!(
                res.status() == StatusCode::FORBIDDEN
                    || res.status() == StatusCode::SERVICE_UNAVAILABLE,
                "the layer answered {} itself",
                res.status()
            );
            assert!(!res.headers().contains_key(SET_COOKIE));
        }
    }
    let (session, called) = match seen {
        Some((session, _)) => (session, true),
        None => (None, false),
    };
    let out = Outcome {
        status: res.status(),
        headers: res.headers().clone(),
        session,
        called,
    };
    let values = out.affinity_values();
    assert!(values.len() <= 1, "{values:?}");
    for line in out.headers.get_all(SET_COOKIE) {
        let line = line.as_bytes();
        if line == APP_COOKIE.as_bytes() || !line.starts_with(NAME.as_bytes()) {
            continue;
        }
        assert!(line.len() <= 4096);
        assert!(line.ends_with(SUFFIX.as_bytes()), "{line:?}");
        let value = &line[NAME.len() + 1..line.len() - SUFFIX.len()];
        assert!(
            !value.is_empty() && value.iter().all(|&b| is_cookie_octet(b)),
            "{line:?}"
        );
        let session = out.session.as_ref().expect("a cookie only for a session");
        assert!(value.starts_with(session.id().as_str().as_bytes()));
    }
    out
}

/// `cookie-octet` of RFC 6265bis.
pub fn is_cookie_octet(b: u8) -> bool {
    matches!(b, 0x21 | 0x23..=0x2B | 0x2D..=0x3A | 0x3C..=0x5B | 0x5D..=0x7E)
}

/// A complete, valid HTTP/1.1 WebSocket handshake.
pub fn ws_request() -> Request<()> {
    Request::get("/ws")
        .header(CONNECTION, "Upgrade")
        .header(UPGRADE, "websocket")
        .header(SEC_WEBSOCKET_KEY, "dGhlIHNhbXBsZSBub25jZQ==")
        .header(SEC_WEBSOCKET_VERSION, "13")
        .body(())
        .unwrap()
}

/// Trims SP and HTAB, the optional whitespace of RFC 9110.
pub fn trim_ows(mut s: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = s {
        s = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = s {
        s = rest;
    }
    s
}

/// Whether `needle` occurs in `haystack`.
pub fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || haystack.windows(needle.len()).any(|w| w == needle)
}

/// Checks a kept or migrated session against the `(ID, NODE)` the model
/// expected, or an issued one against `None`.
pub fn assert_decision(session: &StickySession, expected: Option<&(String, Option<String>)>) {
    match expected {
        Some((id, node)) => {
            assert_eq!(session.id().as_str(), id);
            match (node.as_deref(), session.node()) {
                (Some(from), Some(here)) if from != here.as_str() => {
                    let affinity = session.affinity();
                    let migrated = affinity.migrated_from().map(|n| n.as_str());
                    assert_eq!(migrated, Some(from));
                }
                _ => assert_eq!(session.affinity(), Affinity::Kept),
            }
        }
        None => assert_eq!(session.affinity(), Affinity::Issued),
    }
}
