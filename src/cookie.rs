//! Reading the affinity cookie from `Cookie` headers, and rendering `Set-Cookie`.
//!
//! Attributes are validated and rendered once, when the layer is built; per
//! response only `NAME=VALUE` is joined to the rendered suffix, in one exactly
//! sized allocation that the header value then owns.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::header::COOKIE;
use http::{HeaderMap, HeaderValue};

use crate::affinity::{Codec, Decoded, SessionId};
use crate::find::find_byte;
use crate::upgrade::{other_lines, trim_ows};
use crate::BuildError;

/// The `SameSite` attribute of the affinity cookie.
///
/// A WebSocket handshake is a same-site request whenever the page and the
/// socket share a site, so the default `Lax` works for most apps. When a
/// page on another site opens the socket, the affinity cookie is a
/// third-party cookie, and browsers do not send a `Lax` or `Strict` one
/// back: use `None` (which needs `Secure`) with
/// [`partitioned(true)`](crate::StickyUpgradeBuilder::partitioned), which
/// Chromium keeps even where third-party cookies are blocked. A partitioned
/// cookie is kept per top-level site: the same socket host under pages of
/// two sites gets two sessions. Where a user blocks all third-party cookies
/// in Firefox, no affinity cookie comes back and every cross-site connection
/// is issued a new session; only a socket on the page's own site keeps its
/// session whatever the user's third-party cookie setting.
///
/// In this crate's browser tests (a page on `https://127.0.0.1` opening its
/// socket on `[::1]`), Chromium 156 and Firefox 153 kept the session with
/// `None` and `Partitioned` unless Firefox blocked all third-party cookies;
/// with `None` alone only where third-party cookies were allowed or, as
/// Firefox does by default, partitioned by the browser; never with `Lax`.
/// A fresh profile of Debian's Chromium 156 blocks third-party cookies.
///
/// # Example
///
/// ```
/// use tower_sticky_upgrade::{BuildError, SameSite, StickyUpgradeLayer};
/// # include!("../tests/support/doctest.rs");
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
///
/// // `set_cookie` (hidden) builds the layer and returns the `Set-Cookie`
/// // line of one accepted handshake.
/// let line = set_cookie(StickyUpgradeLayer::builder().same_site(SameSite::Strict)).await;
/// assert!(line.ends_with("; SameSite=Strict"));
///
/// // `None` without `Secure` is refused when the layer is built.
/// let err = StickyUpgradeLayer::builder()
///     .same_site(SameSite::None)
///     .secure(false)
///     .build()
///     .unwrap_err();
/// assert_eq!(err, BuildError::SameSiteNoneWithoutSecure);
/// # }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum SameSite {
    /// `SameSite=Strict`: only sent on same-site requests.
    Strict,
    /// `SameSite=Lax` (the default): sent on same-site requests and top-level navigations.
    #[default]
    Lax,
    /// `SameSite=None`: sent on cross-site requests too; requires `Secure`.
    None,
}

impl SameSite {
    /// The attribute's value as the `Set-Cookie` line carries it, which is
    /// also what [`Display`](std::fmt::Display) writes: `Strict`, `Lax` or `None`.
    ///
    /// ```
    /// use tower_sticky_upgrade::SameSite;
    ///
    /// assert_eq!(SameSite::Lax.as_str(), "Lax");
    /// assert_eq!(SameSite::None.to_string(), "None");
    /// assert_eq!(SameSite::default(), SameSite::Lax);
    /// ```
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Strict => "Strict",
            Self::Lax => "Lax",
            Self::None => "None",
        }
    }
}

impl std::fmt::Display for SameSite {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Longest cookie name accepted; with the longest value this crate writes, the
/// pair stays far below the 4096 bytes browsers keep.
pub(crate) const MAX_NAME_LEN: usize = 256;

/// Browsers cap cookie lifetimes at 400 days (RFC 6265bis).
pub(crate) const MAX_AGE_LIMIT: Duration = Duration::from_secs(400 * 24 * 60 * 60);

/// At most this many pairs named like the affinity cookie are decoded per
/// request; later ones are ignored, as if absent. Browsers repeat a name only for
/// cookies set with different `Path` or `Domain`, a handful at most, while each
/// decode can cost one HMAC per signing key: the cap bounds what a header full
/// of forged pairs can cost.
pub(crate) const MAX_CANDIDATES: usize = 16;

/// `; Expires=` followed by an IMF-fixdate, which is always 29 bytes long.
const EXPIRES_LEN: usize = "; Expires=".len() + 29;

/// Cookie attributes as given to the builder, before validation.
#[derive(Debug, Clone)]
pub(crate) struct CookieAttributes {
    pub(crate) name: String,
    pub(crate) path: String,
    pub(crate) domain: Option<String>,
    pub(crate) max_age: Option<Duration>,
    pub(crate) expires: bool,
    pub(crate) same_site: SameSite,
    pub(crate) secure: bool,
    pub(crate) http_only: bool,
    pub(crate) partitioned: bool,
}

impl Default for CookieAttributes {
    fn default() -> Self {
        Self {
            name: crate::DEFAULT_COOKIE_NAME.to_owned(),
            path: "/".to_owned(),
            domain: None,
            max_age: None,
            expires: false,
            same_site: SameSite::Lax,
            secure: true,
            http_only: true,
            partitioned: false,
        }
    }
}

impl CookieAttributes {
    /// Checks every rule and renders the attribute suffix.
    pub(crate) fn build(self) -> Result<CookieSpec, BuildError> {
        let name = self.name;
        if name.is_empty() {
            return Err(BuildError::EmptyCookieName);
        }
        if !name.bytes().all(is_tchar) {
            return Err(BuildError::CookieNameNotToken { name });
        }
        if name.len() > MAX_NAME_LEN {
            return Err(BuildError::CookieNameTooLong {
                len: name.len(),
                max: MAX_NAME_LEN,
            });
        }
        if starts_with_ignore_case(&name, "AWSALB") {
            return Err(BuildError::ReservedCookieName { name });
        }
        let path = self.path;
        if !path
            .bytes()
            .all(|b| b.is_ascii_graphic() && b != b';' && b != b',')
        {
            return Err(BuildError::InvalidPath { path });
        }
        if !path.starts_with('/') {
            return Err(BuildError::PathNotAbsolute { path });
        }
        if let Some(domain) = &self.domain {
            if !is_host_name(domain) {
                return Err(BuildError::InvalidDomain {
                    domain: domain.clone(),
                });
            }
        }
        if let Some(max_age) = self.max_age {
            if max_age < Duration::from_secs(1) {
                return Err(BuildError::MaxAgeTooShort { max_age });
            }
            // The limit applies to what is sent: whole seconds.
            if Duration::from_secs(max_age.as_secs()) > MAX_AGE_LIMIT {
                return Err(BuildError::MaxAgeTooLong { max_age });
            }
        }
        if self.expires && self.max_age.is_none() {
            return Err(BuildError::ExpiresWithoutMaxAge);
        }
        if self.same_site == SameSite::None && !self.secure {
            return Err(BuildError::SameSiteNoneWithoutSecure);
        }
        if self.partitioned && !self.secure {
            return Err(BuildError::PartitionedWithoutSecure);
        }
        if starts_with_ignore_case(&name, "__Secure-") && !self.secure {
            return Err(BuildError::SecurePrefixWithoutSecure { name });
        }
        if starts_with_ignore_case(&name, "__Host-") {
            if !self.secure {
                return Err(BuildError::HostPrefixWithoutSecure { name });
            }
            if self.domain.is_some() {
                return Err(BuildError::HostPrefixWithDomain { name });
            }
            if path != "/" {
                return Err(BuildError::HostPrefixWithPath { name, path });
            }
        }
        // `__Host-Http-` starts with `__Host-`, so the rules above hold for it too.
        let http_prefix = starts_with_ignore_case(&name, "__Http-")
            || starts_with_ignore_case(&name, "__Host-Http-");
        if http_prefix {
            if !self.secure {
                return Err(BuildError::HttpPrefixWithoutSecure { name });
            }
            if !self.http_only {
                return Err(BuildError::HttpPrefixWithoutHttpOnly { name });
            }
        }

        let mut suffix = format!("; Path={path}");
        if let Some(domain) = &self.domain {
            suffix.push_str("; Domain=");
            suffix.push_str(domain);
        }
        if let Some(max_age) = self.max_age {
            suffix.push_str(&format!("; Max-Age={}", max_age.as_secs()));
        }
        if self.secure {
            suffix.push_str("; Secure");
        }
        if self.http_only {
            suffix.push_str("; HttpOnly");
        }
        suffix.push_str("; SameSite=");
        suffix.push_str(self.same_site.as_str());
        if self.partitioned {
            suffix.push_str("; Partitioned");
        }
        Ok(CookieSpec {
            name: name.into(),
            suffix: suffix.into(),
            expires_after: self
                .max_age
                .filter(|_| self.expires)
                .map(|d| Duration::from_secs(d.as_secs())),
        })
    }
}

/// A `Domain` a browser can store: a host name of at most 253 bytes, labels
/// of 1 to 63 letters, digits and inner `-`, separated by single dots. One
/// leading dot is allowed (browsers ignore it, RFC 6265 section 5.2.3); empty
/// labels (`..`, a trailing dot) and labels starting or ending with `-` are not.
fn is_host_name(domain: &str) -> bool {
    let host = domain.strip_prefix('.').unwrap_or(domain);
    !host.is_empty()
        && host.len() <= 253
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

/// The validated, pre-rendered affinity cookie.
#[derive(Debug, Clone)]
pub(crate) struct CookieSpec {
    pub(crate) name: Box<str>,
    /// Everything after `NAME=VALUE`, e.g. `; Path=/; Secure; HttpOnly; SameSite=Lax`.
    pub(crate) suffix: Box<str>,
    /// Render `Expires` this long after the response.
    expires_after: Option<Duration>,
}

/// What the `Cookie` headers of a request said about the affinity cookie.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Scan<'a> {
    /// The first pair with the configured name that the codec accepted.
    pub(crate) valid: Option<Decoded<'a>>,
    /// At least one pair with the configured name was rejected.
    pub(crate) invalid: bool,
}

impl CookieSpec {
    /// Scans every `Cookie` line (HTTP/2 may split them, RFC 9113 §8.2.3) for
    /// pairs named like the affinity cookie; the first valid one among the
    /// first [`MAX_CANDIDATES`] wins.
    ///
    /// Linear in the header size and allocation-free.
    #[inline]
    pub(crate) fn scan<'a>(&self, headers: &'a HeaderMap, codec: &Codec) -> Scan<'a> {
        let mut invalid = false;
        let mut candidates = 0;
        let first = headers.get(&COOKIE);
        for line in first.into_iter().chain(other_lines(headers, &COOKIE)) {
            for rest in NamedValues::new(line.as_bytes(), self.name.as_bytes()) {
                if candidates == MAX_CANDIDATES {
                    return Scan {
                        valid: None,
                        invalid,
                    };
                }
                candidates += 1;
                match decode_pair_value(codec, &self.name, rest) {
                    Some(valid) => {
                        return Scan {
                            valid: Some(valid),
                            invalid,
                        }
                    }
                    None => invalid = true,
                }
            }
        }
        Scan {
            valid: None,
            invalid,
        }
    }

    /// Renders `NAME=VALUE; attributes` into one exactly sized buffer: VALUE
    /// is `id` encoded, or `sent`, a value the client sent that the codec
    /// accepted and would write the same (same node, current key), copied as is.
    ///
    /// `None` only if the header value could not be built, which the build-time
    /// checks rule out; the caller then sets no cookie rather than panic.
    #[inline]
    pub(crate) fn render(
        &self,
        codec: &Codec,
        id: &SessionId,
        sent: Option<&[u8]>,
    ) -> Option<HeaderValue> {
        let expires = self.expires_after.and_then(expiry_date);
        let value_len = sent.map_or_else(|| codec.encoded_len(id), <[u8]>::len);
        let len = self.name.len()
            + 1
            + value_len
            + self.suffix.len()
            + expires.map_or(0, |_| EXPIRES_LEN);
        let mut buf = Vec::with_capacity(len);
        buf.extend_from_slice(self.name.as_bytes());
        buf.push(b'=');
        match sent {
            Some(value) => buf.extend_from_slice(value),
            None => codec.encode(&self.name, id, &mut buf),
        }
        buf.extend_from_slice(self.suffix.as_bytes());
        if let Some(date) = expires {
            use std::io::Write;
            // Writing into a Vec cannot fail.
            let _ = write!(buf, "; Expires={date}");
        }
        debug_assert_eq!(buf.len(), len, "the buffer is sized exactly");
        // An exactly sized Vec becomes `Bytes` and then the header value without
        // another allocation or copy.
        HeaderValue::from_maybe_shared(Bytes::from(buf)).ok()
    }
}

/// Decodes the value at the start of `rest` (what follows `NAME=`), which must
/// be all of the pair's value: optional whitespace around it, then `;` or the
/// end of the line.
#[inline]
fn decode_pair_value<'a>(codec: &Codec, name: &str, rest: &'a [u8]) -> Option<Decoded<'a>> {
    let rest = trim_start_ows(rest);
    let decoded = codec.decode_prefix(name, rest)?;
    match trim_start_ows(&rest[decoded.value.len()..]).first() {
        None | Some(b';') => Some(decoded),
        Some(_) => None,
    }
}

/// Whether a `Set-Cookie` line sets the cookie `name`.
pub(crate) fn sets_cookie_named(line: &[u8], name: &[u8]) -> bool {
    trim_ows(line)
        .strip_prefix(name)
        .is_some_and(|rest| trim_ows(rest).first() == Some(&b'='))
}

/// Where the values of the pairs named `name` start in one `Cookie` line, in
/// order: the rest of the line after each `name=`. The value ends at the next
/// `;`; the decoder finds that end as it reads, rather than searching for it
/// first.
///
/// A pair is `name=value` with optional whitespace around the name and the
/// `=`, pairs are separated by `;`. Rather than splitting the line into pairs,
/// this searches for the first byte of the name (a block of bytes at a time,
/// see [`find_byte`]) and only looks closer where it starts a pair: a `Cookie`
/// line is mostly other cookies' values, often hundreds of bytes of analytics
/// ids, that need not be read pair by pair. Linear in the line: the
/// look-behind from a candidate stops at the first byte that is not
/// whitespace, and the name is compared only where a pair starts.
struct NamedValues<'a, 'n> {
    line: &'a [u8],
    name: &'n [u8],
    /// Where the search continues.
    pos: usize,
}

impl<'a, 'n> NamedValues<'a, 'n> {
    fn new(line: &'a [u8], name: &'n [u8]) -> Self {
        Self { line, name, pos: 0 }
    }
}

impl<'a> Iterator for NamedValues<'a, '_> {
    type Item = &'a [u8];

    #[inline]
    fn next(&mut self) -> Option<&'a [u8]> {
        let first = *self.name.first()?;
        loop {
            let at = self.pos + find_byte(self.line.get(self.pos..)?, first)?;
            self.pos = at + 1;
            if !starts_pair(self.line, at) {
                continue;
            }
            if let Some(rest) = value_if_named(&self.line[at..], self.name) {
                return Some(rest);
            }
        }
    }
}

/// Whether `at` starts a pair: nothing but whitespace between it and the
/// previous `;`, or the start of the line.
fn starts_pair(line: &[u8], at: usize) -> bool {
    line[..at]
        .iter()
        .rev()
        .find(|&&b| b != b' ' && b != b'\t')
        .map_or(true, |&b| b == b';')
}

/// The rest of `pair` after `name`, optional whitespace and `=`, if `pair`
/// starts with them (after optional whitespace).
fn value_if_named<'a>(pair: &'a [u8], name: &[u8]) -> Option<&'a [u8]> {
    let rest = trim_start_ows(pair).strip_prefix(name)?;
    trim_start_ows(rest).strip_prefix(b"=")
}

fn trim_start_ows(mut s: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = s {
        s = rest;
    }
    s
}

/// `now + after` as an HTTP date, or `None` when the clock is outside what an
/// HTTP date can express (before 1970, after 9999), rather than panic.
fn expiry_date(after: Duration) -> Option<httpdate::HttpDate> {
    const YEAR_10000: u64 = 253_402_300_800;
    let at = SystemTime::now().checked_add(after)?;
    let secs = at.duration_since(UNIX_EPOCH).ok()?.as_secs();
    (secs < YEAR_10000).then(|| httpdate::HttpDate::from(at))
}

/// `tchar` of RFC 9110 §5.6.2.
pub(crate) fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

fn starts_with_ignore_case(s: &str, prefix: &str) -> bool {
    s.len() >= prefix.len() && s.as_bytes()[..prefix.len()].eq_ignore_ascii_case(prefix.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::affinity::{IdGenerator, NodeId, UuidV4};

    fn codec() -> Codec {
        Codec {
            node: None,
            ids: crate::affinity::Ids::UuidV4,
            #[cfg(feature = "signed")]
            signer: None,
        }
    }

    fn attrs() -> CookieAttributes {
        CookieAttributes::default()
    }

    fn build_err(a: CookieAttributes) -> BuildError {
        a.build().unwrap_err()
    }

    fn headers(cookies: &[&[u8]]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for c in cookies {
            map.append(COOKIE, HeaderValue::from_bytes(c).unwrap());
        }
        map
    }

    fn render(spec: &CookieSpec, id: &SessionId) -> String {
        let value = spec.render(&codec(), id, None).unwrap();
        value.to_str().unwrap().to_owned()
    }

    #[test]
    fn defaults_render_secure_attributes() {
        let spec = attrs().build().unwrap();
        let id = UuidV4.generate();
        assert_eq!(
            render(&spec, &id),
            format!("WS_SESSION_ID={id}; Path=/; Secure; HttpOnly; SameSite=Lax")
        );
    }

    #[test]
    fn every_attribute_renders() {
        let spec = CookieAttributes {
            name: "__Secure-affinity".into(),
            path: "/app".into(),
            domain: Some("example.com".into()),
            max_age: Some(Duration::from_secs(3600)),
            expires: false,
            same_site: SameSite::None,
            secure: true,
            http_only: false,
            partitioned: true,
        }
        .build()
        .unwrap();
        assert_eq!(
            &*spec.suffix,
            "; Path=/app; Domain=example.com; Max-Age=3600; Secure; SameSite=None; Partitioned"
        );
    }

    #[test]
    fn same_site_strict_renders() {
        let spec = CookieAttributes {
            same_site: SameSite::Strict,
            ..attrs()
        }
        .build()
        .unwrap();
        assert!(spec.suffix.ends_with("; SameSite=Strict"));
    }

    #[test]
    fn insecure_cookie_has_no_secure_attribute() {
        let spec = CookieAttributes {
            secure: false,
            ..attrs()
        }
        .build()
        .unwrap();
        assert!(!spec.suffix.contains("Secure"));
    }

    #[test]
    fn expires_is_derived_from_max_age() {
        let spec = CookieAttributes {
            max_age: Some(Duration::from_secs(86_400)),
            expires: true,
            ..attrs()
        }
        .build()
        .unwrap();
        let id = UuidV4.generate();
        let text = render(&spec, &id);
        let (_, date) = text.split_once("; Expires=").unwrap();
        let expires = httpdate::parse_http_date(date).unwrap();
        let expected = SystemTime::now() + Duration::from_secs(86_400);
        let skew = expected
            .duration_since(expires)
            .unwrap_or_else(|e| e.duration());
        assert!(skew < Duration::from_secs(5), "{text}");
        assert!(text.contains("; Max-Age=86400"));
    }

    #[test]
    fn build_rejects_bad_names() {
        for (name, expected) in [
            ("", BuildError::EmptyCookieName),
            ("a;b", BuildError::CookieNameNotToken { name: "a;b".into() }),
            ("a b", BuildError::CookieNameNotToken { name: "a b".into() }),
            (
                "a\rb",
                BuildError::CookieNameNotToken {
                    name: "a\rb".into(),
                },
            ),
            (
                "a\nb",
                BuildError::CookieNameNotToken {
                    name: "a\nb".into(),
                },
            ),
            (
                "a\0b",
                BuildError::CookieNameNotToken {
                    name: "a\0b".into(),
                },
            ),
            ("a=b", BuildError::CookieNameNotToken { name: "a=b".into() }),
            ("a,b", BuildError::CookieNameNotToken { name: "a,b".into() }),
        ] {
            let got = build_err(CookieAttributes {
                name: name.into(),
                ..attrs()
            });
            assert_eq!(got, expected, "{name:?}");
        }
    }

    #[test]
    fn build_rejects_aws_reserved_names() {
        for name in ["AWSALB", "AWSALBAPP-0", "AWSALBTG", "awsalbcors"] {
            let got = build_err(CookieAttributes {
                name: name.into(),
                ..attrs()
            });
            assert_eq!(got, BuildError::ReservedCookieName { name: name.into() });
        }
    }

    #[test]
    fn build_rejects_overlong_name() {
        let got = build_err(CookieAttributes {
            name: "n".repeat(MAX_NAME_LEN + 1),
            ..attrs()
        });
        assert!(matches!(got, BuildError::CookieNameTooLong { .. }));
    }

    /// The limit is inclusive: a name of exactly `MAX_NAME_LEN` bytes builds.
    #[test]
    fn build_accepts_a_name_of_max_len() {
        let name = "n".repeat(MAX_NAME_LEN);
        let spec = CookieAttributes {
            name: name.clone(),
            ..attrs()
        }
        .build()
        .unwrap();
        assert_eq!(&*spec.name, name);
    }

    #[test]
    fn build_rejects_bad_paths() {
        for path in ["/a;b", "/a b", "/a\r", "/a\n", "/a\0", "/a,b", "/é"] {
            let got = build_err(CookieAttributes {
                path: path.into(),
                ..attrs()
            });
            assert_eq!(got, BuildError::InvalidPath { path: path.into() });
        }
        let got = build_err(CookieAttributes {
            path: "app".into(),
            ..attrs()
        });
        assert_eq!(got, BuildError::PathNotAbsolute { path: "app".into() });
    }

    #[test]
    fn build_rejects_bad_domains() {
        let long_label = "a".repeat(64);
        let long_name = [
            "a".repeat(63),
            "b".repeat(63),
            "c".repeat(63),
            "d".repeat(62),
        ]
        .join(".");
        for domain in [
            "",
            "a;b",
            "a b",
            "a\r",
            "a\n",
            "a\0",
            "a,b",
            "a/b",
            ".",
            "..",
            "-",
            "a..b",
            "example.com.",
            "..example.com",
            "-a.example.com",
            "a-.example.com",
            "a_b.example.com",
            &long_label,
            &long_name,
        ] {
            let got = build_err(CookieAttributes {
                domain: Some(domain.into()),
                ..attrs()
            });
            assert_eq!(
                got,
                BuildError::InvalidDomain {
                    domain: domain.into()
                }
            );
        }
    }

    #[test]
    fn build_accepts_host_names_with_or_without_a_leading_dot() {
        let longest = [
            "a".repeat(63),
            "b".repeat(63),
            "c".repeat(63),
            "d".repeat(61),
        ]
        .join(".");
        for domain in [
            "example.com",
            ".example.com",
            "a-b.example.com",
            "xn--bcher-kva.example",
            "localhost",
            "127.0.0.1",
            &"a".repeat(63),
            &longest,
        ] {
            let spec = CookieAttributes {
                domain: Some(domain.into()),
                ..attrs()
            }
            .build();
            assert!(spec.is_ok(), "{domain}: {spec:?}");
        }
    }

    #[test]
    fn build_rejects_same_site_none_without_secure() {
        let got = build_err(CookieAttributes {
            same_site: SameSite::None,
            secure: false,
            ..attrs()
        });
        assert_eq!(got, BuildError::SameSiteNoneWithoutSecure);
    }

    #[test]
    fn build_rejects_partitioned_without_secure() {
        let got = build_err(CookieAttributes {
            partitioned: true,
            secure: false,
            ..attrs()
        });
        assert_eq!(got, BuildError::PartitionedWithoutSecure);
    }

    /// The defaults, named `name`.
    fn named(name: &str) -> CookieAttributes {
        CookieAttributes {
            name: name.into(),
            ..attrs()
        }
    }

    /// `named(name)` with `change` applied fails to build with `want`.
    fn assert_rejected(name: &str, change: impl FnOnce(&mut CookieAttributes), want: BuildError) {
        let mut a = named(name);
        change(&mut a);
        assert_eq!(build_err(a), want, "{name}");
    }

    /// The `__Host-` rules: Secure, no Domain, `Path=/`; the defaults pass.
    fn assert_host_prefix_rules(name: &str) {
        assert_rejected(
            name,
            |a| a.secure = false,
            BuildError::HostPrefixWithoutSecure { name: name.into() },
        );
        assert_rejected(
            name,
            |a| a.domain = Some("example.com".into()),
            BuildError::HostPrefixWithDomain { name: name.into() },
        );
        assert_rejected(
            name,
            |a| a.path = "/app".into(),
            BuildError::HostPrefixWithPath {
                name: name.into(),
                path: "/app".into(),
            },
        );
        assert!(named(name).build().is_ok(), "{name}");
    }

    /// The HttpOnly rule of `__Http-` and `__Host-Http-`.
    fn assert_http_only_rule(name: &str) {
        assert_rejected(
            name,
            |a| a.http_only = false,
            BuildError::HttpPrefixWithoutHttpOnly { name: name.into() },
        );
    }

    #[test]
    fn build_rejects_secure_prefix_without_secure_in_any_case() {
        for name in ["__Secure-x", "__secure-x", "__SECURE-x"] {
            assert_rejected(
                name,
                |a| a.secure = false,
                BuildError::SecurePrefixWithoutSecure { name: name.into() },
            );
        }
    }

    #[test]
    fn build_applies_host_prefix_rules_in_any_case() {
        for name in ["__Host-x", "__host-x", "__HOST-x"] {
            assert_host_prefix_rules(name);
        }
    }

    #[test]
    fn build_applies_http_prefix_rules_in_any_case() {
        for name in ["__Http-x", "__http-x", "__HTTP-x"] {
            assert_rejected(
                name,
                |a| a.secure = false,
                BuildError::HttpPrefixWithoutSecure { name: name.into() },
            );
            assert_http_only_rule(name);
            // Unlike `__Host-`, it allows any Path and a Domain.
            assert!(CookieAttributes {
                path: "/app".into(),
                domain: Some("example.com".into()),
                ..named(name)
            }
            .build()
            .is_ok());
        }
    }

    #[test]
    fn build_applies_host_and_http_prefix_rules_to_host_http() {
        for name in ["__Host-Http-x", "__host-http-x", "__HOST-HTTP-x"] {
            assert_http_only_rule(name);
            assert_host_prefix_rules(name);
        }
        // The prefix is `__Host-Http-` exactly: a name that only looks close
        // is a plain `__Host-` name, with no HttpOnly rule.
        assert!(CookieAttributes {
            http_only: false,
            ..named("__Host-Httpx")
        }
        .build()
        .is_ok());
    }

    #[test]
    fn build_bounds_max_age() {
        let too_long = MAX_AGE_LIMIT + Duration::from_secs(1);
        assert_eq!(
            build_err(CookieAttributes {
                max_age: Some(too_long),
                ..attrs()
            }),
            BuildError::MaxAgeTooLong { max_age: too_long }
        );
        assert_eq!(
            build_err(CookieAttributes {
                max_age: Some(Duration::from_millis(500)),
                ..attrs()
            }),
            BuildError::MaxAgeTooShort {
                max_age: Duration::from_millis(500)
            }
        );
        // The fraction is dropped before the limit applies.
        let spec = CookieAttributes {
            max_age: Some(MAX_AGE_LIMIT + Duration::from_millis(999)),
            ..attrs()
        }
        .build()
        .unwrap();
        assert!(
            spec.suffix.contains("; Max-Age=34560000;"),
            "{}",
            spec.suffix
        );
        assert!(CookieAttributes {
            max_age: Some(MAX_AGE_LIMIT),
            ..attrs()
        }
        .build()
        .is_ok());
    }

    /// One second is the shortest `Max-Age` allowed, and it builds.
    #[test]
    fn build_accepts_a_max_age_of_one_second() {
        let spec = CookieAttributes {
            max_age: Some(Duration::from_secs(1)),
            ..attrs()
        }
        .build()
        .unwrap();
        assert!(spec.suffix.contains("; Max-Age=1;"), "{}", spec.suffix);
    }

    #[test]
    fn build_rejects_expires_without_max_age() {
        assert_eq!(
            build_err(CookieAttributes {
                expires: true,
                ..attrs()
            }),
            BuildError::ExpiresWithoutMaxAge
        );
    }

    #[test]
    fn scan_finds_cookie_among_others() {
        let spec = attrs().build().unwrap();
        let id = UuidV4.generate();
        let line = format!("a=1; WS_SESSION_ID={id}; b=2");
        let lines = headers(&[line.as_bytes()]);
        let scan = spec.scan(&lines, &codec());
        assert_eq!(scan.valid.and_then(|d| d.id()), Some(id));
        assert!(!scan.invalid);
    }

    #[test]
    fn scan_finds_cookie_in_second_header_line() {
        let spec = attrs().build().unwrap();
        let id = UuidV4.generate();
        let second = format!("WS_SESSION_ID={id}");
        let lines = headers(&[b"a=1", second.as_bytes()]);
        let scan = spec.scan(&lines, &codec());
        assert_eq!(scan.valid.and_then(|d| d.id()), Some(id));
    }

    #[test]
    fn scan_prefers_the_first_valid_pair() {
        let spec = attrs().build().unwrap();
        let id = UuidV4.generate();
        let line = format!("WS_SESSION_ID=garbage; WS_SESSION_ID={id}");
        let lines = headers(&[line.as_bytes()]);
        let scan = spec.scan(&lines, &codec());
        assert_eq!(scan.valid.and_then(|d| d.id()), Some(id));
        assert!(scan.invalid);
    }

    #[test]
    fn scan_survives_malformed_headers() {
        let spec = attrs().build().unwrap();
        for line in [
            &b""[..],
            b";;",
            b"a",
            b"=v",
            b"WS_SESSION_ID=",
            b"\tWS_SESSION_ID\t=\t",
            b"a=b;",
            b"WS_SESSION_ID=\"quoted\"",
            b"WS_SESSION_ID=\x80\xff",
            // HeaderValue refuses other control bytes, so a tab is the only one
            // that can reach the layer.
            b"WS_SESSION_ID=a\tb",
        ] {
            let lines = headers(&[line]);
            let scan = spec.scan(&lines, &codec());
            assert_eq!(scan.valid, None, "{line:?}");
        }
    }

    #[test]
    fn scan_decodes_at_most_max_candidates() {
        let spec = attrs().build().unwrap();
        let id = UuidV4.generate();
        let forged = |n: usize| "WS_SESSION_ID=forged; ".repeat(n);
        let within = format!("{}WS_SESSION_ID={id}", forged(MAX_CANDIDATES - 1));
        let lines = headers(&[within.as_bytes()]);
        let scan = spec.scan(&lines, &codec());
        assert_eq!(scan.valid.and_then(|d| d.id()), Some(id));
        let beyond = format!("{}WS_SESSION_ID={id}", forged(MAX_CANDIDATES));
        let lines = headers(&[beyond.as_bytes()]);
        let scan = spec.scan(&lines, &codec());
        assert_eq!(
            scan,
            Scan {
                valid: None,
                invalid: true
            }
        );
    }

    #[test]
    fn scan_trims_tabs_around_name_and_value() {
        let spec = attrs().build().unwrap();
        let id = UuidV4.generate();
        let line = format!("a=1;\tWS_SESSION_ID\t=\t{id}\t;");
        let lines = headers(&[line.as_bytes()]);
        let scan = spec.scan(&lines, &codec());
        assert_eq!(scan.valid.and_then(|d| d.id()), Some(id));
    }

    #[test]
    fn scan_is_case_sensitive_on_the_name() {
        let spec = attrs().build().unwrap();
        let line = format!("ws_session_id={}", UuidV4.generate());
        let lines = headers(&[line.as_bytes()]);
        let scan = spec.scan(&lines, &codec());
        assert_eq!(
            scan,
            Scan {
                valid: None,
                invalid: false
            }
        );
    }

    #[test]
    fn sets_cookie_named_matches_exact_name_only() {
        let name = b"WS_SESSION_ID";
        assert!(!sets_cookie_named(b"WS_SESSION_IDX=1", name));
        assert!(!sets_cookie_named(b"other=1", name));
        assert!(sets_cookie_named(b"WS_SESSION_ID=1; Path=/", name));
        assert!(sets_cookie_named(b" WS_SESSION_ID =1", name));
    }

    #[test]
    fn render_carries_node_tag() {
        let spec = attrs().build().unwrap();
        let codec = Codec {
            node: NodeId::new("n1").ok(),
            ..codec()
        };
        let id = UuidV4.generate();
        let value = spec.render(&codec, &id, None).unwrap();
        assert!(value
            .to_str()
            .unwrap()
            .starts_with(&format!("WS_SESSION_ID={id}.n1; ")));
    }

    #[test]
    fn render_copies_a_sent_value_as_is_with_every_attribute() {
        let spec = CookieAttributes {
            max_age: Some(Duration::from_secs(60)),
            expires: true,
            ..attrs()
        }
        .build()
        .unwrap();
        let id = SessionId::new("abc").unwrap();
        // The value as the client sent it wins over the id's encoding, and
        // the buffer is sized for it (checked by the debug assertion too).
        let value = spec.render(&codec(), &id, Some(b"abc.n1")).unwrap();
        let text = value.to_str().unwrap();
        assert!(
            text.starts_with("WS_SESSION_ID=abc.n1; Path=/; Max-Age=60; "),
            "{text}"
        );
        assert_eq!(text.matches("; Expires=").count(), 1, "{text}");
    }

    /// The values as [`NamedValues`] finds them, each cut at the next `;`
    /// as the decoder does.
    fn named_values<'a>(line: &'a [u8], name: &'a [u8]) -> Vec<&'a [u8]> {
        NamedValues::new(line, name)
            .map(|rest| rest.split(|&b| b == b';').next().unwrap_or_default())
            .collect()
    }

    /// The rule as first written: split on `;`, the name is everything
    /// before the first `=`, trimmed.
    fn named_values_by_splitting<'a>(line: &'a [u8], name: &[u8]) -> Vec<&'a [u8]> {
        line.split(|&b| b == b';')
            .filter_map(|pair| {
                let eq = pair.iter().position(|&b| b == b'=')?;
                (trim_ows(&pair[..eq]) == name).then(|| &pair[eq + 1..])
            })
            .collect()
    }

    #[test]
    fn named_values_agree_with_splitting_on_every_short_line() {
        // Every line of up to 7 bytes over an alphabet that makes near
        // misses: the name, its first byte, separators, whitespace.
        let alphabet = [b'W', b'S', b'=', b';', b' ', b'\t', b'x'];
        let name = b"WS";
        let mut line = Vec::new();
        for len in 0..=7u32 {
            for mut n in 0..alphabet.len().pow(len) {
                line.clear();
                for _ in 0..len {
                    line.push(alphabet[n % alphabet.len()]);
                    n /= alphabet.len();
                }
                let found = named_values(&line, name);
                assert_eq!(
                    found,
                    named_values_by_splitting(&line, name),
                    "{:?}",
                    String::from_utf8_lossy(&line)
                );
            }
        }
    }

    #[test]
    fn named_values_skip_the_name_inside_other_values() {
        let line = b"a=WS=1; WSa=2;b=x WS=3; WS =4;\tWS\t= 5 ;WS";
        let found = named_values(line, b"WS");
        assert_eq!(found, [&b"4"[..], &b" 5 "[..]]);
    }

    #[test]
    fn value_if_named_matches_the_whole_name() {
        let name = b"WS";
        assert_eq!(value_if_named(b"WS=v", name), Some(&b"v"[..]));
        assert_eq!(value_if_named(b" \tWS \t= v ", name), Some(&b" v "[..]));
        assert_eq!(value_if_named(b"WS=", name), Some(&b""[..]));
        assert_eq!(value_if_named(b"WSX=v", name), None);
        assert_eq!(value_if_named(b"XWS=v", name), None);
        assert_eq!(value_if_named(b"WS", name), None);
        assert_eq!(value_if_named(b"WS v=1", name), None);
        assert_eq!(value_if_named(b"=WS", name), None);
        assert_eq!(value_if_named(b"", name), None);
    }
}
