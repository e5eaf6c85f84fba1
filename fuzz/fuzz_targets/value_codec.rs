//! The cookie value codec through the layer: decoding arbitrary values, and
//! the round trip of whatever the layer writes.
//!
//! Input: one byte picks the layer configuration; the rest is the value of a
//! single `WS_SESSION_ID` pair. Checked: without signing the decision matches
//! the documented format (`tests/model`); with signing a kept id is a prefix
//! of the value; and the value the layer writes back for that session (or the
//! value itself when nothing was written) is kept, with the same id, when
//! presented again.
#![no_main]

use http::header::COOKIE;
use http::HeaderValue;
use libfuzzer_sys::fuzz_target;
use tower_sticky_upgrade::Affinity;
use tower_sticky_upgrade_fuzz::{
    assert_decision, call, model, trim_ows, ws_request, Config, Handler, NAME,
};

fn present(value: &[u8]) -> Option<http::Request<()>> {
    let cookie = HeaderValue::from_bytes(&[NAME.as_bytes(), b"=", value].concat()).ok()?;
    let mut req = ws_request();
    req.headers_mut().insert(COOKIE, cookie);
    Some(req)
}

fn present_whole(value: &[u8]) -> Option<http::Request<()>> {
    // A value with `;` would be several pairs: keep this target about one.
    if value.contains(&b';') {
        return None;
    }
    present(value)
}

fuzz_target!(|data: &[u8]| {
    let Some((&config, value)) = data.split_first() else {
        return;
    };
    let config = Config::from_byte(config);
    let Some(req) = present_whole(value) else {
        return;
    };
    let layer = config.build();
    let first = call(&layer, &Handler::Switch, req);
    let session = first
        .session
        .clone()
        .expect("an upgrade always gets a session");
    let value = trim_ows(value);
    if config.signed {
        if session.affinity() != Affinity::Issued {
            assert!(value.starts_with(session.id().as_str().as_bytes()));
            assert_eq!(layer.stats().invalid_cookies, 0);
        }
    } else {
        let expected = model::reference_decode_with(value, config.id_rule());
        assert_decision(&session, expected.as_ref());
        assert_eq!(layer.stats().invalid_cookies, u64::from(expected.is_none()));
    }

    let written = first.affinity_values();
    let again = match written.first() {
        Some(v) => v.to_vec(),
        None => {
            // Only `Refresh::OnChange` skips the cookie, and only when the
            // value needed no change: it is then valid as it is.
            assert!(config.on_change);
            assert_eq!(session.affinity(), Affinity::Kept);
            value.to_vec()
        }
    };
    let second = call(
        &layer,
        &Handler::Switch,
        present(&again).expect("written values are valid"),
    );
    let kept = second
        .session
        .as_ref()
        .expect("an upgrade always gets a session");
    assert_eq!(kept.affinity(), Affinity::Kept, "{again:?}");
    assert_eq!(kept.id(), session.id());
    if config.on_change {
        assert!(second.affinity_values().is_empty());
    } else {
        assert_eq!(second.affinity_values(), [again.as_slice()]);
    }
});
