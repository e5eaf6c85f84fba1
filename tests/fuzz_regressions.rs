//! Inputs found by the fuzz targets (`fuzz/`), replayed through the same
//! checks with the public API, so they stay fixed without a fuzzing toolchain.

mod model;
mod oneshot;

use http::header::COOKIE;
use http::HeaderValue;
use tower_sticky_upgrade::{Affinity, Refresh, SessionId, StickyUpgradeLayer};

use model::IdRule;
use oneshot::{send_now, ws_request, Inner};

const NAME: &str = "WS_SESSION_ID";

/// `fuzz/artifacts/cookie_scan/crash-9fd756e9c00be5877a8bfec05e1e4e30ce74fe3b`
/// (kept as `tests/fuzz_inputs/cookie_scan-crash-9fd756e9.bin`),
/// found after 1.26 M runs of `cookie_scan`: a field `WS_SESSION_ID=f1b5a6 `
/// followed by U+0085 (NEL, `c2 85`), among fields of junk and obs-text.
///
/// `cookie` trims NEL as whitespace and read the value `f1b5a6`, which a
/// closure generator accepts; the layer only trims SP and HTAB (RFC 6265,
/// RFC 9110), saw `f1b5a6 \u{85}` (a space and obs-text inside), refused it and
/// issued an id. The layer was right: the oracle now maps non-RFC whitespace
/// before parsing (`model::rfc_whitespace`).
const CRASH_COOKIE_SCAN_NEL: &[u8] = include_bytes!("fuzz_inputs/cookie_scan-crash-9fd756e9.bin");

#[test]
fn cookie_scan_value_followed_by_nel_is_invalid() {
    // First byte 0x2d: node tag, closure generator, Refresh::OnChange.
    let (&config, rest) = CRASH_COOKIE_SCAN_NEL.split_first().unwrap();
    assert_eq!(config, 0x2d);
    let fixed = SessionId::new("fuzz~generated_id!").unwrap();
    let layer = StickyUpgradeLayer::builder()
        .node_id("here")
        .id_generator(move || fixed)
        .refresh(Refresh::OnChange)
        .build()
        .unwrap();
    let fields: Vec<&[u8]> = rest
        .split(|&b| b == b'\n')
        .filter(|f| HeaderValue::from_bytes(f).is_ok())
        .collect();
    assert!(fields
        .iter()
        .any(|f| f.starts_with(b"WS_SESSION_ID=f1b5a6 ")));
    let mut req = ws_request().body(()).unwrap();
    for f in &fields {
        req.headers_mut()
            .append(COOKIE, HeaderValue::from_bytes(f).unwrap());
    }
    let out = send_now(&layer, Inner::AlwaysSwitch, req);
    assert_eq!(out.affinity(), Some(Affinity::Issued));
    assert_eq!(out.id(), Some(fixed));
    assert_eq!(layer.stats().invalid_cookies, 1);
    assert_eq!(model::oracle_with(&fields, NAME, IdRule::Any), (None, true));
}
