//! The optional `Origin` check on upgrade requests, against cross-site WebSocket
//! hijacking: browsers send cookies with a WebSocket handshake from any page, so
//! a server that trusts cookies must check where the page came from.

use http::header::ORIGIN;
use http::HeaderMap;

use crate::BuildError;

#[derive(Debug, Clone)]
pub(crate) struct OriginPolicy {
    /// Normalized: lower-case, default port removed.
    allowed: Box<[Box<str>]>,
    /// Refuse upgrades that carry no `Origin` (non-browser clients send none).
    require: bool,
}

impl OriginPolicy {
    pub(crate) fn new(allowed: &[String], require: bool) -> Result<Self, BuildError> {
        if allowed.is_empty() {
            return Err(BuildError::NoAllowedOrigins);
        }
        let allowed = allowed
            .iter()
            .map(|o| {
                if o.contains('*') {
                    return Err(BuildError::WildcardOrigin { origin: o.clone() });
                }
                normalize(o).ok_or_else(|| BuildError::InvalidOrigin { origin: o.clone() })
            })
            .collect::<Result<_, _>>()?;
        Ok(Self { allowed, require })
    }

    /// Whether an upgrade with these headers may go on.
    pub(crate) fn allows(&self, headers: &HeaderMap) -> bool {
        let mut values = headers.get_all(ORIGIN).iter();
        match (values.next(), values.next()) {
            (None, _) => !self.require,
            (Some(origin), None) => {
                let origin = strip_default_port(origin.as_bytes());
                self.allowed
                    .iter()
                    .any(|a| a.as_bytes().eq_ignore_ascii_case(origin))
            }
            // Several Origin fields are not something a browser sends.
            (Some(_), Some(_)) => false,
        }
    }
}

/// `scheme://host[:port]`, lower-cased, with the scheme's default port dropped
/// as browsers do in `Origin`; `None` when `origin` is not of that form.
fn normalize(origin: &str) -> Option<Box<str>> {
    let lower = origin.to_ascii_lowercase();
    let (scheme, authority) = lower.split_once("://")?;
    let scheme_ok = scheme.starts_with(|c: char| c.is_ascii_alphabetic())
        && scheme
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c));
    let authority_ok = !authority.is_empty()
        && authority
            .bytes()
            .all(|b| b.is_ascii_graphic() && !b"/?#@,;\\\"".contains(&b));
    if !(scheme_ok && authority_ok && port_ok(authority)) {
        return None;
    }
    let stripped = strip_default_port(lower.as_bytes());
    std::str::from_utf8(stripped).ok().map(Into::into)
}

/// Whether `authority` is `host` or `host:port` as a browser serializes it in
/// `Origin`: brackets only around an IPv6 address in its canonical (shortest,
/// lower-case) form, and a port of 0 to 65535 without leading zeros. Anything
/// else could never match what a browser sends.
fn port_ok(authority: &str) -> bool {
    let (host, rest) = match authority.strip_prefix('[') {
        Some(v6) => match v6.split_once(']') {
            Some((addr, rest)) => {
                let canonical = addr
                    .parse::<std::net::Ipv6Addr>()
                    .is_ok_and(|ip| url_ipv6(ip) == addr);
                if !canonical {
                    return false;
                }
                (addr, rest)
            }
            None => return false,
        },
        None => {
            let (host, rest) = authority.split_at(authority.find(':').unwrap_or(authority.len()));
            if host.contains(['[', ']']) {
                return false;
            }
            (host, rest)
        }
    };
    if host.is_empty() {
        return false;
    }
    match rest.strip_prefix(':') {
        None => rest.is_empty(),
        Some(port) => {
            (1..=5).contains(&port.len())
                && port.bytes().all(|b| b.is_ascii_digit())
                && (port == "0" || !port.starts_with('0'))
                && port.parse::<u32>().is_ok_and(|p| p <= 65_535)
        }
    }
}

/// An IPv6 address as the URL standard serializes it (what a browser puts in
/// `Origin`): eight lower-case hex pieces without leading zeros, the first
/// longest run of two or more zero pieces written `::`. Unlike `Display`, it
/// never writes an IPv4-mapped address with dots.
fn url_ipv6(ip: std::net::Ipv6Addr) -> String {
    let pieces = ip.segments();
    // (start, len) of the first longest run of zero pieces, if 2 or longer.
    let mut best = (0, 0);
    let mut i = 0;
    while i < pieces.len() {
        let run = pieces[i..].iter().take_while(|&&p| p == 0).count();
        if run > best.1 {
            best = (i, run);
        }
        i += run.max(1);
    }
    let mut out = String::with_capacity(39);
    let mut i = 0;
    while i < pieces.len() {
        if best.1 >= 2 && i == best.0 {
            out.push_str(if i == 0 { "::" } else { ":" });
            i += best.1;
            continue;
        }
        out.push_str(&format!("{:x}", pieces[i]));
        if i + 1 < pieces.len() {
            out.push(':');
        }
        i += 1;
    }
    out
}

fn strip_default_port(origin: &[u8]) -> &[u8] {
    let lower_starts =
        |p: &[u8]| origin.len() >= p.len() && origin[..p.len()].eq_ignore_ascii_case(p);
    for (scheme, port) in [(&b"https://"[..], &b":443"[..]), (b"http://", b":80")] {
        if lower_starts(scheme) && origin.ends_with(port) {
            return &origin[..origin.len() - port.len()];
        }
    }
    origin
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn policy(require: bool) -> OriginPolicy {
        OriginPolicy::new(
            &[
                "https://App.Example.com".into(),
                "http://localhost:3000".into(),
            ],
            require,
        )
        .unwrap()
    }

    fn headers(origins: &[&str]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for o in origins {
            map.append(ORIGIN, HeaderValue::from_str(o).unwrap());
        }
        map
    }

    #[test]
    fn listed_origin_is_allowed_in_any_case() {
        let p = policy(false);
        assert!(p.allows(&headers(&["https://app.example.com"])));
        assert!(p.allows(&headers(&["HTTPS://APP.EXAMPLE.COM"])));
        assert!(p.allows(&headers(&["https://app.example.com:443"])));
        assert!(p.allows(&headers(&["http://localhost:3000"])));
    }

    #[test]
    fn other_origins_are_refused() {
        let p = policy(false);
        for o in [
            "https://evil.example",
            "http://app.example.com",
            "https://app.example.com:8443",
            "http://localhost:3001",
            "null",
        ] {
            assert!(!p.allows(&headers(&[o])), "{o}");
        }
        assert!(!p.allows(&headers(&[
            "https://app.example.com",
            "https://app.example.com"
        ])));
    }

    #[test]
    fn missing_origin_depends_on_require() {
        assert!(policy(false).allows(&headers(&[])));
        assert!(!policy(true).allows(&headers(&[])));
    }

    #[test]
    fn malformed_allowed_origins_fail_the_build() {
        for bad in [
            "example.com",
            "https://",
            "https://a.com/path",
            "1http://a",
            "https://a b",
            "https://a.com:99999",
            "https://a.com:65536",
            "https://a.com:",
            "https://a.com:8x",
            "https://a.com:80:80",
            "https://:443",
            "https://[::1",
            "https://[::1]x",
            "https://a.com:0443",
            "http://a.com:080",
            "https://[]",
            "https://a]b",
            "https://a[b",
            "https://[0:0:0:0:0:0:0:1]",
            "https://[::g]",
            "http://[::ffff:127.0.0.1]",
            "http://[1::2:0:0:0:3]",
            "http://[1:0::2]",
        ] {
            let err = OriginPolicy::new(&[bad.into()], false).unwrap_err();
            assert_eq!(err, BuildError::InvalidOrigin { origin: bad.into() });
        }
    }

    /// The URL standard's IPv6 serializer, against examples worked by hand.
    #[test]
    fn ipv6_is_serialized_as_browsers_do() {
        for (input, url) in [
            ("::1", "::1"),
            ("::", "::"),
            ("1::", "1::"),
            ("2001:DB8:0:0:0:0:0:1", "2001:db8::1"),
            ("1:0:0:2:0:0:0:3", "1:0:0:2::3"),
            ("1:0:0:2:0:0:3:4", "1::2:0:0:3:4"),
            ("1:0:2:3:4:5:6:7", "1:0:2:3:4:5:6:7"),
            ("::ffff:127.0.0.1", "::ffff:7f00:1"),
            ("0001:00a0::", "1:a0::"),
        ] {
            let ip: std::net::Ipv6Addr = input.parse().unwrap();
            assert_eq!(url_ipv6(ip), url, "{input}");
        }
    }

    #[test]
    fn ports_and_ipv6_hosts_build() {
        for good in [
            "https://a.com:65535",
            "http://a.com:0",
            "http://localhost:3000",
            "https://[::1]",
            "https://[::1]:8443",
            "https://[2001:db8::1]:443",
            "HTTPS://[2001:DB8::1]",
            "http://[::ffff:7f00:1]:8080",
            "http://[1:0:0:2::3]",
            "http://[::]",
            "http://[1::]",
        ] {
            assert!(OriginPolicy::new(&[good.into()], false).is_ok(), "{good}");
        }
    }

    /// An empty list would build and then refuse every browser upgrade with 403.
    #[test]
    fn an_empty_list_fails_the_build() {
        for require in [false, true] {
            let err = OriginPolicy::new(&[], require).unwrap_err();
            assert_eq!(err, BuildError::NoAllowedOrigins);
        }
    }

    /// A pattern would build and then refuse every browser upgrade with 403.
    #[test]
    fn wildcard_origins_fail_the_build() {
        for bad in ["https://*.example.com", "*", "https://app.example.com:*"] {
            let list = ["https://app.example.com".to_owned(), bad.to_owned()];
            let err = OriginPolicy::new(&list, false).unwrap_err();
            assert_eq!(err, BuildError::WildcardOrigin { origin: bad.into() });
            assert!(err.to_string().contains("list each origin"), "{err}");
        }
    }
}
