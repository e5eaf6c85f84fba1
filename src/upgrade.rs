//! Upgrade detection: HTTP/1.1 `Connection: upgrade` + `Upgrade: <protocol>` and
//! HTTP/2 / HTTP/3 extended CONNECT (RFC 8441, RFC 9220).
//!
//! Detection only looks at headers, method and extensions; it does not judge the
//! handshake itself (`Sec-WebSocket-Key`, version). The inner service does, and the
//! cookie is only set when it accepts.

use http::header::{CONNECTION, UPGRADE};
use http::{Extensions, HeaderMap, HeaderName, HeaderValue, Method, Version};

/// How the client asked to upgrade, which decides what a successful answer is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum UpgradeKind {
    /// HTTP/1.1 `Upgrade` handshake; success is `101 Switching Protocols`.
    Http1,
    /// Extended CONNECT over HTTP/2 or HTTP/3; success is any `2xx`.
    #[cfg_attr(not(feature = "http2"), allow(dead_code))]
    ExtendedConnect,
}

impl UpgradeKind {
    #[inline]
    pub(crate) fn is_success(self, status: http::StatusCode) -> bool {
        match self {
            Self::Http1 => status == http::StatusCode::SWITCHING_PROTOCOLS,
            Self::ExtendedConnect => status.is_success(),
        }
    }
}

/// Upgrade protocols the layer acts on, stored lower-case.
#[derive(Debug, Clone)]
pub(crate) struct Protocols(Box<[Box<str>]>);

impl Protocols {
    pub(crate) fn new(names: impl IntoIterator<Item = Box<str>>) -> Self {
        Self(
            names
                .into_iter()
                .map(|p| p.to_ascii_lowercase().into())
                .collect(),
        )
    }

    #[inline]
    fn accepts(&self, name: &[u8]) -> bool {
        // Names are stored lower-case, as clients send them: try an exact
        // match before the case-insensitive one.
        self.0.iter().any(|p| {
            let p = p.as_bytes();
            p == name || p.eq_ignore_ascii_case(name)
        })
    }
}

impl Default for Protocols {
    fn default() -> Self {
        Self(Box::new(["websocket".into()]))
    }
}

/// Requests with more distinct field names than this skip the pass of
/// [`may_upgrade`] and take the hashed lookup of [`detect`]: about where the
/// pass starts to cost more than the lookup and the copy of the request it
/// avoids (measured on x86-64 with `benches/instructions.rs`).
pub(crate) const SCAN_LIMIT: usize = 28;

/// Whether a request might ask to upgrade: a `CONNECT` (extended CONNECT, or
/// without the `http2` feature one to warn about), or a request with an
/// `Upgrade` field.
/// `false` is final; `true` calls for [`detect`].
///
/// Every request pays for this test, so it is kept to what inlines
/// completely: comparisons and one pass over the field names, or none above
/// [`SCAN_LIMIT`]. `HeaderMap::get` would hash one name instead, but it takes
/// a reference into the request to a function that is not inlined, and the
/// compiler then copies the request before it is moved on to the inner
/// service.
#[inline]
pub(crate) fn may_upgrade(method: &Method, headers: &HeaderMap) -> bool {
    method == Method::CONNECT
        || headers.keys_len() > SCAN_LIMIT
        || headers.keys().any(|name| name == UPGRADE)
}

/// Decides whether a request asks to upgrade to one of `protocols`.
///
/// The `Upgrade` handshake exists in HTTP/1.1 only: a server must ignore
/// `Upgrade` in an HTTP/1.0 request (RFC 9110 §7.8), and hyper never switches
/// one, nor can HTTP/2 and HTTP/3 carry the field.
pub(crate) fn detect(
    method: &Method,
    version: Version,
    headers: &HeaderMap,
    extensions: &Extensions,
    protocols: &Protocols,
) -> Option<UpgradeKind> {
    if method == Method::CONNECT {
        return extended_connect(version, extensions, protocols);
    }
    if version != Version::HTTP_11 {
        return None;
    }
    // `get` finds the first line with the cheapest lookup `HeaderMap` has.
    let first = headers.get(&UPGRADE)?;
    http1_upgrade(first, headers, protocols)
}

fn extended_connect(
    version: Version,
    extensions: &Extensions,
    protocols: &Protocols,
) -> Option<UpgradeKind> {
    #[cfg(feature = "http2")]
    {
        let _ = version;
        let protocol = extensions.get::<hyper::ext::Protocol>()?;
        protocols
            .accepts(protocol.as_str().as_bytes())
            .then_some(UpgradeKind::ExtendedConnect)
    }
    #[cfg(not(feature = "http2"))]
    {
        let _ = (extensions, protocols);
        if version >= Version::HTTP_2 {
            warn_connect_without_http2();
        }
        None
    }
}

/// Says once per process that an HTTP/2 or HTTP/3 `CONNECT` went by untagged:
/// without the `http2` feature the layer cannot read `:protocol`, so a
/// WebSocket over HTTP/2 (RFC 8441) gets no session and no cookie, which is
/// otherwise silent.
#[cfg(not(feature = "http2"))]
#[cold]
fn warn_connect_without_http2() {
    use std::sync::atomic::{AtomicBool, Ordering};
    static WARNED: AtomicBool = AtomicBool::new(false);
    if !WARNED.swap(true, Ordering::Relaxed) {
        tracing::warn!(
            "HTTP/2 CONNECT request passed through untagged: tower-sticky-upgrade was built \
             without its `http2` feature, so extended CONNECT WebSockets (RFC 8441) get no \
             session and no cookie; enable the feature to detect them"
        );
    }
}

/// An `Upgrade` line (`first` is the first one) names an accepted protocol and
/// `Connection` lists `upgrade`.
fn http1_upgrade(
    first: &HeaderValue,
    headers: &HeaderMap,
    protocols: &Protocols,
) -> Option<UpgradeKind> {
    // What clients send, `Upgrade: websocket`, is matched whole; anything
    // else is split.
    let names_protocol = |line: &HeaderValue| {
        tokens(line.as_bytes()).any(|token| {
            // `protocol-name ["/" protocol-version]`: the version does not matter here.
            let name = match token.iter().position(|&b| b == b'/') {
                Some(slash) => &token[..slash],
                None => token,
            };
            protocols.accepts(name)
        })
    };
    let wants_protocol = protocols.accepts(first.as_bytes())
        || names_protocol(first)
        || other_lines(headers, &UPGRADE).any(names_protocol);
    if !wants_protocol {
        return None;
    }
    // `Connection: Upgrade` (Chrome) is matched without splitting;
    // `keep-alive, Upgrade` (Firefox) is split.
    let lists_upgrade = |line: &HeaderValue| {
        is_upgrade_token(line.as_bytes()) || tokens(line.as_bytes()).any(is_upgrade_token)
    };
    let first = headers.get(&CONNECTION)?;
    (lists_upgrade(first) || other_lines(headers, &CONNECTION).any(lists_upgrade))
        .then_some(UpgradeKind::Http1)
}

/// Whether `s` is `upgrade` in any case, compared as one word: setting bit
/// 0x20 maps exactly `U`/`u` to `u` and so on, as every byte of `upgrade` is a
/// letter, and a byte whose 0x20 bit is set or cleared otherwise cannot match.
fn is_upgrade_token(s: &[u8]) -> bool {
    const UPGRADE: u64 = u64::from_le_bytes(*b"upgrade\0");
    const CASE: u64 = u64::from_le_bytes([0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0]);
    let Ok(bytes) = <[u8; 7]>::try_from(s) else {
        return false;
    };
    let mut word = [0; 8];
    word[..7].copy_from_slice(&bytes);
    u64::from_le_bytes(word) | CASE == UPGRADE
}

/// The lines of the field `name` after the first one, which callers read with
/// `HeaderMap::get`, the cheapest lookup. A repeated field is rare, so its
/// other lines are only looked up when some field of the map is repeated.
pub(crate) fn other_lines<'a>(
    headers: &'a HeaderMap,
    name: &HeaderName,
) -> impl Iterator<Item = &'a HeaderValue> {
    let repeated = headers.len() != headers.keys_len();
    repeated
        .then(|| headers.get_all(name).iter().skip(1))
        .into_iter()
        .flatten()
}

/// Splits an RFC 9110 comma-separated list, trimming optional whitespace and
/// skipping empty elements.
fn tokens(line: &[u8]) -> impl Iterator<Item = &[u8]> {
    line.split(|&b| b == b',')
        .map(trim_ows)
        .filter(|t| !t.is_empty())
}

pub(crate) fn trim_ows(mut s: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = s {
        s = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = s {
        s = rest;
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::{HeaderValue, Request};

    /// `detect`, checking on the way that `may_upgrade` lets through every
    /// request it accepts.
    fn detect_req(req: &Request<()>) -> Option<UpgradeKind> {
        let kind = detect(
            req.method(),
            req.version(),
            req.headers(),
            req.extensions(),
            &Protocols::default(),
        );
        if kind.is_some() {
            assert!(
                may_upgrade(req.method(), req.headers()),
                "may_upgrade ruled out an upgrade: {req:?}"
            );
        }
        kind
    }

    /// A `GET` with `fields` other fields, the WebSocket pair inserted before
    /// the field `pair_at` (`None`: no pair, `Connection: keep-alive` instead),
    /// `Upgrade` first at even positions and second at odd ones.
    fn with_fields(fields: usize, pair_at: Option<usize>) -> Request<()> {
        let mut req = Request::get("/ws").body(()).unwrap();
        let h = req.headers_mut();
        for i in 0..=fields {
            if pair_at == Some(i) {
                let connection = (CONNECTION, HeaderValue::from_static("Upgrade"));
                let upgrade = (UPGRADE, HeaderValue::from_static("websocket"));
                let pair = if i % 2 == 0 {
                    [upgrade, connection]
                } else {
                    [connection, upgrade]
                };
                for (name, value) in pair {
                    h.insert(name, value);
                }
            }
            if i < fields {
                let name = HeaderName::try_from(format!("x-field-{i}")).unwrap();
                h.insert(name, HeaderValue::from_static("v"));
            }
        }
        if pair_at.is_none() {
            h.insert(CONNECTION, HeaderValue::from_static("keep-alive"));
        }
        req
    }

    #[test]
    fn upgrade_field_is_seen_at_any_position_with_any_field_count() {
        for fields in 0..SCAN_LIMIT + 8 {
            for at in 0..=fields {
                let req = with_fields(fields, Some(at));
                assert!(may_upgrade(req.method(), req.headers()), "{fields} {at}");
                assert_eq!(detect_req(&req), Some(UpgradeKind::Http1), "{fields} {at}");
            }
        }
    }

    #[test]
    fn upgrade_as_the_only_field_is_let_through() {
        let req = Request::get("/ws")
            .header(UPGRADE, "websocket")
            .body(())
            .unwrap();
        assert!(may_upgrade(req.method(), req.headers()));
    }

    /// The limit counts distinct names: repeated lines do not push a request
    /// over it.
    #[test]
    fn repeated_lines_do_not_count_towards_the_scan_limit() {
        let mut req = with_fields(0, None);
        for i in 0..SCAN_LIMIT * 2 {
            let cookie = HeaderValue::try_from(format!("c{i}=v")).unwrap();
            req.headers_mut().append(http::header::COOKIE, cookie);
        }
        assert!(req.headers().len() > SCAN_LIMIT);
        assert!(!may_upgrade(req.method(), req.headers()));
        req.headers_mut()
            .insert(UPGRADE, HeaderValue::from_static("websocket"));
        req.headers_mut()
            .insert(CONNECTION, HeaderValue::from_static("upgrade"));
        assert!(may_upgrade(req.method(), req.headers()));
        assert_eq!(detect_req(&req), Some(UpgradeKind::Http1));
    }

    /// Below the limit a request without `Upgrade` is ruled out; above it,
    /// every request goes to `detect`, which rules it out there.
    #[test]
    fn requests_without_upgrade_are_ruled_out_unless_over_the_scan_limit() {
        for fields in 0..SCAN_LIMIT + 8 {
            let req = with_fields(fields, None);
            // `Connection` is one more field.
            let scanned = fields < SCAN_LIMIT;
            assert_eq!(
                may_upgrade(req.method(), req.headers()),
                !scanned,
                "{fields} fields"
            );
            assert_eq!(detect_req(&req), None, "{fields} fields");
        }
    }

    /// Every `CONNECT` takes the full check: with the `http2` feature to read
    /// `:protocol`, without it to warn that it cannot (see
    /// `tests/tracing_events.rs`). Without the extension it is no upgrade.
    #[test]
    fn connect_takes_the_full_check() {
        let req = Request::connect("/ws").body(()).unwrap();
        assert!(may_upgrade(req.method(), req.headers()));
        assert_eq!(detect_req(&req), None);
    }

    fn h1(connection: &[&str], upgrade: &[&str]) -> Request<()> {
        let mut req = Request::get("/ws").body(()).unwrap();
        for c in connection {
            req.headers_mut()
                .append(CONNECTION, HeaderValue::from_str(c).unwrap());
        }
        for u in upgrade {
            req.headers_mut()
                .append(UPGRADE, HeaderValue::from_str(u).unwrap());
        }
        req
    }

    #[test]
    fn plain_connection_upgrade_is_detected() {
        assert_eq!(
            detect_req(&h1(&["Upgrade"], &["websocket"])),
            Some(UpgradeKind::Http1)
        );
    }

    #[test]
    fn connection_token_list_with_keep_alive_is_detected() {
        assert_eq!(
            detect_req(&h1(&["keep-alive, Upgrade"], &["websocket"])),
            Some(UpgradeKind::Http1)
        );
    }

    #[test]
    fn connection_token_is_case_insensitive() {
        assert_eq!(
            detect_req(&h1(&["UPGRADE"], &["websocket"])),
            Some(UpgradeKind::Http1)
        );
    }

    #[test]
    fn connection_split_over_two_lines_is_detected() {
        assert_eq!(
            detect_req(&h1(&["keep-alive", "upgrade"], &["websocket"])),
            Some(UpgradeKind::Http1)
        );
    }

    #[test]
    fn connection_token_with_tabs_and_empty_elements_is_detected() {
        assert_eq!(
            detect_req(&h1(&[",\tupgrade\t,,"], &["websocket"])),
            Some(UpgradeKind::Http1)
        );
    }

    #[test]
    fn connection_notupgrade_is_not_an_upgrade() {
        assert_eq!(detect_req(&h1(&["notupgrade"], &["websocket"])), None);
    }

    /// RFC 9110 §7.8: `Upgrade` in an HTTP/1.0 request is ignored (hyper
    /// never switches one); HTTP/2 and HTTP/3 cannot carry it.
    #[test]
    fn upgrade_headers_outside_http11_are_not_an_upgrade() {
        for version in [
            http::Version::HTTP_09,
            http::Version::HTTP_10,
            http::Version::HTTP_2,
            http::Version::HTTP_3,
        ] {
            let mut req = h1(&["upgrade"], &["websocket"]);
            *req.version_mut() = version;
            assert_eq!(detect_req(&req), None, "{version:?}");
        }
    }

    #[test]
    fn upgrade_without_connection_is_not_an_upgrade() {
        assert_eq!(detect_req(&h1(&[], &["websocket"])), None);
    }

    #[test]
    fn connection_without_upgrade_header_is_not_an_upgrade() {
        assert_eq!(detect_req(&h1(&["upgrade"], &[])), None);
    }

    #[test]
    fn upgrade_protocol_is_case_insensitive() {
        assert_eq!(
            detect_req(&h1(&["upgrade"], &["WebSocket"])),
            Some(UpgradeKind::Http1)
        );
    }

    #[test]
    fn upgrade_list_naming_websocket_is_detected() {
        assert_eq!(
            detect_req(&h1(&["upgrade"], &["websocket, h2c"])),
            Some(UpgradeKind::Http1)
        );
        assert_eq!(
            detect_req(&h1(&["upgrade"], &["h2c", "websocket/13"])),
            Some(UpgradeKind::Http1)
        );
    }

    #[test]
    fn upgrade_to_other_protocol_is_not_detected() {
        assert_eq!(detect_req(&h1(&["upgrade"], &["h2c"])), None);
        assert_eq!(detect_req(&h1(&["upgrade"], &["websocketx"])), None);
    }

    #[test]
    fn configured_protocols_replace_the_default() {
        let req = h1(&["upgrade"], &["my-proto"]);
        let protocols = Protocols::new(["My-Proto".into()]);
        let got = detect(
            req.method(),
            req.version(),
            req.headers(),
            req.extensions(),
            &protocols,
        );
        assert_eq!(got, Some(UpgradeKind::Http1));
        let ws = h1(&["upgrade"], &["websocket"]);
        assert_eq!(
            detect(
                ws.method(),
                ws.version(),
                ws.headers(),
                ws.extensions(),
                &protocols
            ),
            None
        );
    }

    #[cfg(feature = "http2")]
    #[test]
    fn extended_connect_with_websocket_protocol_is_detected() {
        let mut req = Request::builder()
            .method(Method::CONNECT)
            .version(http::Version::HTTP_2)
            .uri("https://example.test/ws")
            .body(())
            .unwrap();
        req.extensions_mut()
            .insert(hyper::ext::Protocol::from_static("websocket"));
        assert_eq!(detect_req(&req), Some(UpgradeKind::ExtendedConnect));
    }

    #[test]
    fn connect_without_protocol_is_not_an_upgrade() {
        let req = Request::builder()
            .method(Method::CONNECT)
            .uri("example.test:443")
            .body(())
            .unwrap();
        assert_eq!(detect_req(&req), None);
    }

    #[cfg(feature = "http2")]
    #[test]
    fn extended_connect_with_other_protocol_is_not_detected() {
        let mut req = Request::builder()
            .method(Method::CONNECT)
            .version(http::Version::HTTP_2)
            .body(())
            .unwrap();
        req.extensions_mut()
            .insert(hyper::ext::Protocol::from_static("connect-udp"));
        assert_eq!(detect_req(&req), None);
    }

    #[test]
    fn success_statuses_depend_on_kind() {
        use http::StatusCode;
        assert!(UpgradeKind::Http1.is_success(StatusCode::SWITCHING_PROTOCOLS));
        assert!(!UpgradeKind::Http1.is_success(StatusCode::OK));
        assert!(UpgradeKind::ExtendedConnect.is_success(StatusCode::OK));
        assert!(!UpgradeKind::ExtendedConnect.is_success(StatusCode::SWITCHING_PROTOCOLS));
        assert!(!UpgradeKind::ExtendedConnect.is_success(StatusCode::BAD_REQUEST));
        // Any 2xx accepts an extended CONNECT (RFC 8441 §5, RFC 9110 §9.3.6),
        // and nothing else does; HTTP/1.1 switches with 101 only.
        for code in 100..=599 {
            let status = StatusCode::from_u16(code).unwrap();
            assert_eq!(
                UpgradeKind::ExtendedConnect.is_success(status),
                (200..300).contains(&code),
                "{code}"
            );
            assert_eq!(UpgradeKind::Http1.is_success(status), code == 101, "{code}");
        }
    }

    #[test]
    fn upgrade_token_word_test_agrees_with_a_bytewise_comparison() {
        // Every byte value at every position of `upgrade` and of `UpGrAdE`,
        // the rest left as is.
        for base in [*b"upgrade", *b"UpGrAdE"] {
            for at in 0..base.len() {
                for byte in 0..=255u8 {
                    let mut s = base;
                    s[at] = byte;
                    assert_eq!(
                        is_upgrade_token(&s),
                        s.eq_ignore_ascii_case(b"upgrade"),
                        "{s:?}"
                    );
                }
            }
        }
        for s in [&b""[..], b"upgrad", b"upgrades", b" upgrade", b"upgrade\0"] {
            assert!(!is_upgrade_token(s), "{s:?}");
        }
    }

    #[test]
    fn trim_ows_strips_spaces_and_tabs_only() {
        assert_eq!(trim_ows(b" \t a b\t "), b"a b");
        assert_eq!(trim_ows(b"   "), b"");
        assert_eq!(trim_ows(b""), b"");
    }
}
