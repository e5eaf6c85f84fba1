//! Upgrade detection, origin check and drain refusal over arbitrary requests.
//!
//! Input: `[method, version, flags, records...]`, records split on `\n`; the
//! first byte of a record picks the header (`Connection`, `Upgrade`, `Cookie`,
//! `Origin`, `Sec-WebSocket-Key`, `Sec-WebSocket-Version`, one of 32 other
//! headers, or the extended CONNECT `:protocol`), the rest is its value.
//! `flags` pick the origin allow-list, draining and the handler. The outcome
//! must match the model of `tests/model` and `tests/properties.rs`.
#![no_main]

use http::header::{
    HeaderName, CONNECTION, COOKIE, ORIGIN, RETRY_AFTER, SEC_WEBSOCKET_KEY, SEC_WEBSOCKET_VERSION,
    UPGRADE,
};
use http::{HeaderValue, Method, Request, StatusCode, Version};
use libfuzzer_sys::fuzz_target;
use tower_sticky_upgrade::StickyUpgradeLayer;
use tower_sticky_upgrade_fuzz::{call, model, Handler, APP_COOKIE};

const ALLOWED: &str = "https://app.example.com";

fuzz_target!(|data: &[u8]| {
    let [method, version, flags, rest @ ..] = data else {
        return;
    };
    let methods = [
        Method::GET,
        Method::GET,
        Method::CONNECT,
        Method::POST,
        Method::HEAD,
        Method::OPTIONS,
        Method::PUT,
        Method::TRACE,
    ];
    let method = methods[usize::from(*method) % methods.len()].clone();
    let versions = [
        Version::HTTP_11,
        Version::HTTP_2,
        Version::HTTP_10,
        Version::HTTP_09,
        Version::HTTP_3,
    ];
    let version = versions[usize::from(*version) % versions.len()];
    let origins = flags & 1 != 0;
    let require_origin = flags & 2 != 0;
    let draining = flags & 4 != 0;
    let refuse_while_draining = flags & 8 == 0;
    let handler = Handler::from_byte(flags >> 4);

    let mut req = Request::builder()
        .method(method.clone())
        .version(version)
        .uri("/ws")
        .body(())
        .unwrap();
    let mut protocol = None;
    for record in rest.split(|&b| b == b'\n') {
        let Some((&which, value)) = record.split_first() else {
            continue;
        };
        let name: HeaderName = match which % 8 {
            0 => CONNECTION,
            1 => UPGRADE,
            2 => COOKIE,
            3 => ORIGIN,
            4 => SEC_WEBSOCKET_KEY,
            5 => SEC_WEBSOCKET_VERSION,
            // One of 32 other names, so that a request can carry more
            // distinct fields than the layer's quick test scans.
            6 => HeaderName::try_from(format!("x-other-{}", which / 8)).expect("a valid name"),
            _ => {
                if let Ok(p) = std::str::from_utf8(value) {
                    protocol = Some(p.to_owned());
                }
                continue;
            }
        };
        if let Ok(value) = HeaderValue::from_bytes(value) {
            req.headers_mut().append(name, value);
        }
    }
    if let Some(p) = &protocol {
        req.extensions_mut()
            .insert(hyper::ext::Protocol::from(p.as_str()));
    }
    let headers = req.headers().clone();

    let mut builder = StickyUpgradeLayer::builder().refuse_while_draining(refuse_while_draining);
    if origins {
        builder = builder
            .allowed_origins([ALLOWED])
            .require_origin(require_origin);
    }
    let layer = builder.build().unwrap();
    if draining {
        layer.drain().start();
    }

    let out = call(&layer, &handler, req);
    let stats = layer.stats();
    let app_cookie = matches!(handler, Handler::SetsCookie);
    let affinity = out.affinity_values().len();

    let detected = model::reference_detect(&method, version, &headers, protocol.as_deref(), true);
    assert_eq!(stats.upgrades, u64::from(detected.is_some()));
    let Some(kind) = detected else {
        assert!(out.called && out.session.is_none());
        assert_eq!(affinity, usize::from(app_cookie));
        return;
    };
    if origins && !model::reference_origin_allowed(&headers, require_origin, ALLOWED) {
        assert_eq!(out.status, StatusCode::FORBIDDEN);
        assert!(!out.called);
        assert_eq!(stats.refused_origin, 1);
        return;
    }
    if draining && refuse_while_draining {
        assert_eq!(out.status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(!out.called);
        assert!(out.headers.contains_key(RETRY_AFTER));
        assert_eq!(
            out.headers.contains_key(CONNECTION),
            version <= Version::HTTP_11
        );
        return;
    }
    assert!(out.called && out.session.is_some());
    let success = match kind {
        model::Kind::Http1 => out.status == StatusCode::SWITCHING_PROTOCOLS,
        model::Kind::ExtendedConnect => out.status.is_success(),
    };
    assert_eq!(affinity, usize::from(success || app_cookie));
    if app_cookie {
        let line = out.headers.get(http::header::SET_COOKIE).unwrap();
        assert_eq!(line.as_bytes(), APP_COOKIE.as_bytes());
    }
});
