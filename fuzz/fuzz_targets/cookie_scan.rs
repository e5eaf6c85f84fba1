//! The Cookie scan over arbitrary `Cookie` fields.
//!
//! Input: one byte picks the layer configuration (node tag, signing, id
//! generator, refresh); the rest, split on `\n`, gives the `Cookie` fields of a
//! valid handshake (fields `HeaderValue` refuses are left out). Without
//! signing, the decision is checked against the reference oracle
//! (`tests/model`: the `cookie` crate's parser plus the documented value
//! format); with signing, a kept id must come from the request.
#![no_main]

use http::header::COOKIE;
use http::HeaderValue;
use libfuzzer_sys::fuzz_target;
use tower_sticky_upgrade_fuzz::{
    assert_decision, call, contains, model, ws_request, Config, Handler, NAME,
};

fuzz_target!(|data: &[u8]| {
    let Some((&config, rest)) = data.split_first() else {
        return;
    };
    let config = Config::from_byte(config);
    let layer = config.build();
    let fields: Vec<&[u8]> = rest
        .split(|&b| b == b'\n')
        .filter(|f| HeaderValue::from_bytes(f).is_ok())
        .collect();
    let mut req = ws_request();
    for f in &fields {
        req.headers_mut()
            .append(COOKIE, HeaderValue::from_bytes(f).unwrap());
    }
    let out = call(&layer, &Handler::Switch, req);
    let session = out
        .session
        .as_ref()
        .expect("an upgrade always gets a session");
    let stats = layer.stats();
    assert_eq!(stats.upgrades, 1);
    // Refreshed on every upgrade, or at least on every change.
    if !config.on_change {
        assert_eq!(out.affinity_values().len(), 1);
    }
    if config.signed {
        if session.affinity() != tower_sticky_upgrade::Affinity::Issued {
            let id = session.id().as_str().as_bytes();
            assert!(
                fields.iter().any(|f| contains(f, id)),
                "kept id not in the request"
            );
        }
        return;
    }
    let (winner, refused) = model::oracle_with(&fields, NAME, config.id_rule());
    assert_decision(session, winner.as_ref());
    assert_eq!(stats.invalid_cookies, u64::from(refused));
});
