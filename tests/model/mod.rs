//! A small reference model of what the layer must decide, written from the
//! specifications (RFC 9110 lists, RFC 6265 cookie pairs through the `cookie`
//! crate, the value format documented in the crate), independent of the
//! crate's code. Used by `tests/properties.rs` and by the fuzz targets
//! (`fuzz/src/lib.rs` includes this file by path).
#![allow(dead_code)]

use http::header::{HeaderName, CONNECTION, ORIGIN, UPGRADE};
use http::{HeaderMap, Method, Version};

/// Which session ids the layer's generator accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdRule {
    /// The default `UuidV4`: lower-case hyphenated, version 4, variant 8-b.
    UuidV4,
    /// A closure generator: any 1-64 cookie-octets other than `.`.
    Any,
}

/// The documented value format for a layer without signing and a UUID v4
/// generator: `(ID, NODE)`.
pub fn reference_decode(value: &str) -> Option<(String, Option<String>)> {
    reference_decode_with(value.as_bytes(), IdRule::UuidV4)
}

/// The documented value format for a layer without signing: `ID[.NODE]`,
/// or `ID.NODE.SIGNATURE` from a layer that signs, whose signature (32
/// lower-case hex digits) cannot be checked and is ignored: `(ID, NODE)`.
pub fn reference_decode_with(value: &[u8], rule: IdRule) -> Option<(String, Option<String>)> {
    let (id, node) = match value.iter().position(|&b| b == b'.') {
        Some(dot) => (&value[..dot], Some(&value[dot + 1..])),
        None => (value, None),
    };
    let (node, signature_ok) = match node.map(|n| (n, n.iter().position(|&b| b == b'.'))) {
        Some((n, Some(dot))) => {
            let sig = &n[dot + 1..];
            let ok = sig.len() == 32
                && sig
                    .iter()
                    .all(|&c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c));
            (Some(&n[..dot]), ok)
        }
        other => (other.map(|(n, _)| n), true),
    };
    let id_ok = match rule {
        IdRule::UuidV4 => {
            id.len() == 36
                && id.iter().enumerate().all(|(i, &c)| match i {
                    8 | 13 | 18 | 23 => c == b'-',
                    _ => c.is_ascii_digit() || (b'a'..=b'f').contains(&c),
                })
                && id[14] == b'4'
                && matches!(id[19], b'8' | b'9' | b'a' | b'b')
        }
        // RFC 6265bis cookie-octet: %x21 / %x23-2B / %x2D-3A / %x3C-5B / %x5D-7E
        IdRule::Any => {
            (1..=64).contains(&id.len())
                && id
                    .iter()
                    .all(|&c| (0x21..=0x7e).contains(&c) && !b"\",;\\.".contains(&c))
        }
    };
    let node_ok = match node {
        None => true,
        Some(n) => {
            (1..=32).contains(&n.len())
                && n.iter()
                    .all(|&c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_')
        }
    };
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    (id_ok && node_ok && signature_ok).then(|| (text(id), node.map(text)))
}

/// Maps every whitespace character other than SP and HTAB to U+FFFD.
///
/// The optional whitespace around cookie pairs is SP and HTAB only (RFC 6265
/// `OWS`, RFC 9110); `cookie` trims with `str::trim`, which also strips
/// Unicode whitespace such as U+0085 (NEL) and U+00A0 (NBSP). Replacing those
/// with U+FFFD, which is neither whitespace, `;`, `=` nor a cookie-octet, makes
/// `cookie` trim like the RFC without changing where pairs split or which
/// values are valid. (CR, LF, VT and FF cannot occur: `HeaderValue` refuses
/// them.)
pub fn rfc_whitespace(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_whitespace() && c != ' ' && c != '\t' {
                '\u{fffd}'
            } else {
                c
            }
        })
        .collect()
}

/// What the oracle expects of a scan for the cookie `name`: the winning
/// `(ID, NODE)` if any, and whether a refused pair with that name came before
/// it. See `tests/properties.rs` for the definition.
pub fn oracle(fields: &[&[u8]], name: &str) -> (Option<(String, Option<String>)>, bool) {
    oracle_with(fields, name, IdRule::UuidV4)
}

/// [`oracle`] for a generator that accepts ids by `rule`.
pub fn oracle_with(
    fields: &[&[u8]],
    name: &str,
    rule: IdRule,
) -> (Option<(String, Option<String>)>, bool) {
    // The layer decodes at most this many pairs with the name (its
    // `MAX_CANDIDATES`); later ones count as absent.
    const MAX_CANDIDATES: usize = 16;
    let mut refused = false;
    let mut candidates = 0;
    for field in fields {
        let text = rfc_whitespace(&String::from_utf8_lossy(field));
        for cookie in cookie::Cookie::split_parse(text.as_str()).flatten() {
            if cookie.name() != name {
                continue;
            }
            if candidates == MAX_CANDIDATES {
                return (None, refused);
            }
            candidates += 1;
            match reference_decode_with(cookie.value().as_bytes(), rule) {
                Some(found) => return (Some(found), refused),
                None => refused = true,
            }
        }
    }
    (None, refused)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// HTTP/1.1 `Upgrade`; success is `101`.
    Http1,
    /// Extended CONNECT; success is any `2xx`.
    ExtendedConnect,
}

/// RFC 9110 lists: split on `,`, trim SP and HTAB, drop empty elements.
pub fn list<'a>(headers: &'a HeaderMap, name: &HeaderName) -> impl Iterator<Item = &'a [u8]> {
    headers.get_all(name).into_iter().flat_map(|v| {
        v.as_bytes()
            .split(|&b| b == b',')
            .map(|t| {
                let start = t
                    .iter()
                    .position(|&b| b != b' ' && b != b'\t')
                    .unwrap_or(t.len());
                let end = t
                    .iter()
                    .rposition(|&b| b != b' ' && b != b'\t')
                    .map_or(start, |e| e + 1);
                &t[start..end]
            })
            .filter(|t| !t.is_empty())
    })
}

/// Whether the layer must treat a request as an upgrade; `http2` says whether
/// the crate was built with extended CONNECT detection.
pub fn reference_detect(
    method: &Method,
    version: Version,
    headers: &HeaderMap,
    protocol: Option<&str>,
    http2: bool,
) -> Option<Kind> {
    if method == Method::CONNECT {
        let websocket = protocol.is_some_and(|p| p.eq_ignore_ascii_case("websocket"));
        return (http2 && websocket).then_some(Kind::ExtendedConnect);
    }
    // The `Upgrade` handshake is HTTP/1.1's alone (RFC 9110 §7.8).
    if version != Version::HTTP_11 {
        return None;
    }
    let connection = list(headers, &CONNECTION).any(|t| t.eq_ignore_ascii_case(b"upgrade"));
    // `protocol-name ["/" protocol-version]`
    let upgrade = list(headers, &UPGRADE).any(|t| {
        t.split(|&b| b == b'/')
            .next()
            .unwrap_or(t)
            .eq_ignore_ascii_case(b"websocket")
    });
    (connection && upgrade).then_some(Kind::Http1)
}

/// The origin check for an allow-list of the single origin `allowed`
/// (lower-case, `https` without port).
pub fn reference_origin_allowed(headers: &HeaderMap, require: bool, allowed: &str) -> bool {
    let values: Vec<_> = headers.get_all(ORIGIN).iter().collect();
    match values.as_slice() {
        [] => !require,
        [one] => {
            let mut v = one.as_bytes().to_ascii_lowercase();
            if v.starts_with(b"https://") && v.ends_with(b":443") {
                v.truncate(v.len() - 4);
            }
            v == allowed.as_bytes()
        }
        _ => false,
    }
}
