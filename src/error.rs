//! Errors returned when a [`StickyUpgradeLayer`](crate::StickyUpgradeLayer) is built.

use std::fmt;
use std::time::Duration;

/// A configuration rule broken when building a
/// [`StickyUpgradeLayer`](crate::StickyUpgradeLayer).
///
/// Every rule is checked once, in
/// [`StickyUpgradeBuilder::build`](crate::StickyUpgradeBuilder::build); a layer that
/// was built never fails per request. Each variant names one rule and carries
/// the offending value so the message can say exactly what to change.
///
/// # Example
///
/// ```
/// use tower_sticky_upgrade::{BuildError, SameSite, StickyUpgradeLayer};
///
/// let err = StickyUpgradeLayer::builder()
///     .same_site(SameSite::None)
///     .secure(false)
///     .build()
///     .unwrap_err();
/// assert_eq!(err, BuildError::SameSiteNoneWithoutSecure);
/// assert!(err.to_string().contains("SameSite=None"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum BuildError {
    /// The cookie name is empty.
    EmptyCookieName,
    /// The cookie name is not an RFC 9110 token (it holds a control character,
    /// whitespace, or a separator such as `;`, `,`, `=`).
    CookieNameNotToken {
        /// The rejected name.
        name: String,
    },
    /// The cookie name starts with `AWSALB`, a prefix AWS Application Load Balancer
    /// reserves for its own cookies (`AWSALB`, `AWSALBAPP`, `AWSALBTG`).
    ReservedCookieName {
        /// The rejected name.
        name: String,
    },
    /// The cookie name is longer than `max` (256) bytes. The cap keeps name and
    /// value far below the 4096 bytes browsers keep for a cookie.
    CookieNameTooLong {
        /// Length of the rejected name in bytes.
        len: usize,
        /// The longest name accepted.
        max: usize,
    },
    /// The `Path` attribute does not start with `/`.
    PathNotAbsolute {
        /// The rejected path.
        path: String,
    },
    /// The `Path` attribute holds a byte that is not visible ASCII (a control
    /// character, whitespace or a non-ASCII byte), or `;` or `,`.
    InvalidPath {
        /// The rejected path.
        path: String,
    },
    /// The `Domain` attribute is not a host name a browser would store: empty,
    /// over 253 bytes (not counting one leading dot, which is allowed), an
    /// empty label (`a..b`, a trailing dot), a label over 63 bytes or starting
    /// or ending with `-`, or a character outside letters, digits, `-` and `.`.
    InvalidDomain {
        /// The rejected domain.
        domain: String,
    },
    /// `SameSite=None` was asked for without `Secure`; browsers reject such cookies.
    SameSiteNoneWithoutSecure,
    /// `Partitioned` was asked for without `Secure`; browsers reject such cookies.
    PartitionedWithoutSecure,
    /// The name starts with `__Secure-` (any case) but `Secure` is off.
    SecurePrefixWithoutSecure {
        /// The cookie name.
        name: String,
    },
    /// The name starts with `__Host-` (any case) but `Secure` is off.
    HostPrefixWithoutSecure {
        /// The cookie name.
        name: String,
    },
    /// The name starts with `__Host-` (any case) but a `Domain` was set.
    HostPrefixWithDomain {
        /// The cookie name.
        name: String,
    },
    /// The name starts with `__Host-` (any case) but the `Path` is not `/`.
    HostPrefixWithPath {
        /// The cookie name.
        name: String,
        /// The path that was set.
        path: String,
    },
    /// The name starts with `__Http-` (any case) but `Secure` is off. (A
    /// `__Host-Http-` name without `Secure` is a
    /// [`HostPrefixWithoutSecure`](Self::HostPrefixWithoutSecure).)
    HttpPrefixWithoutSecure {
        /// The cookie name.
        name: String,
    },
    /// The name starts with `__Http-` or `__Host-Http-` (any case) but
    /// `HttpOnly` is off. Browsers that know these prefixes refuse such a
    /// cookie: the prefix promises that no page script set it.
    HttpPrefixWithoutHttpOnly {
        /// The cookie name.
        name: String,
    },
    /// `Max-Age` is below one second; the cookie would be deleted at once.
    MaxAgeTooShort {
        /// The rejected duration.
        max_age: Duration,
    },
    /// `Max-Age` is over 400 days, the most browsers honour (RFC 6265bis).
    MaxAgeTooLong {
        /// The rejected duration.
        max_age: Duration,
    },
    /// `Expires` was asked for without a `Max-Age` to derive it from.
    ExpiresWithoutMaxAge,
    /// The node id is empty, longer than [`NodeId::MAX_LEN`](crate::NodeId::MAX_LEN)
    /// bytes, or holds a character outside `A-Z a-z 0-9 - _`.
    InvalidNodeId {
        /// The rejected node id.
        node: String,
    },
    /// No upgrade protocol is accepted, so the layer would never act.
    NoProtocols,
    /// An accepted upgrade protocol is not an RFC 9110 token.
    InvalidProtocol {
        /// The rejected protocol name.
        protocol: String,
    },
    /// `Retry-After` is zero while new upgrades are refused during draining;
    /// clients would retry in a tight loop.
    RetryAfterZero,
    /// `Retry-After` is over [`MAX_RETRY_AFTER`](crate::MAX_RETRY_AFTER) (a
    /// day) while new upgrades are refused during draining.
    RetryAfterTooLong {
        /// The rejected duration.
        retry_after: Duration,
    },
    /// `signing_keys` was given an empty list: signing was asked for but
    /// cannot be done (a key list read from an unset variable, say). Without
    /// this error the layer would run unsigned and accept any id a client picks.
    #[cfg(feature = "signed")]
    NoSigningKeys,
    /// A signing key is shorter than the 32 bytes HMAC-SHA256 needs to be safe.
    #[cfg(feature = "signed")]
    SigningKeyTooShort {
        /// Position of the key in the list (0 signs).
        index: usize,
        /// Its length in bytes.
        len: usize,
    },
    /// An allowed origin is not of the form `scheme://host[:port]`.
    InvalidOrigin {
        /// The rejected origin.
        origin: String,
    },
    /// `allowed_origins` was given an empty list (read from an unset
    /// variable, say): every upgrade that carries an `Origin`, which is every
    /// browser's, would be refused with `403`.
    NoAllowedOrigins,
    /// An allowed origin contains `*`. Origins are compared whole, so a
    /// pattern such as `https://*.example.com` would never match: list each
    /// origin instead.
    WildcardOrigin {
        /// The rejected origin.
        origin: String,
    },
    /// `require_origin(true)` was set without `allowed_origins`: there is no
    /// list to check the required `Origin` against.
    RequireOriginWithoutAllowedOrigins,
}

impl fmt::Display for BuildError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::EmptyCookieName => f.write_str("cookie name must not be empty"),
            Self::CookieNameNotToken { name } => write!(
                f,
                "cookie name {name:?} is not an RFC 9110 token (no control characters, whitespace or separators)"
            ),
            Self::ReservedCookieName { name } => write!(
                f,
                "cookie name {name:?} starts with AWSALB, which AWS load balancers reserve for their own cookies"
            ),
            Self::CookieNameTooLong { len, max } => {
                write!(f, "cookie name is {len} bytes, at most {max} are allowed")
            }
            Self::PathNotAbsolute { path } => {
                write!(f, "cookie Path {path:?} must start with '/'")
            }
            Self::InvalidPath { path } => write!(
                f,
                "cookie Path {path:?} must be visible ASCII other than ';' and ','"
            ),
            Self::InvalidDomain { domain } => write!(
                f,
                "cookie Domain {domain:?} must be a host name: labels of 1 to 63 letters, digits and inner '-', joined by single dots"
            ),
            Self::SameSiteNoneWithoutSecure => {
                f.write_str("SameSite=None requires the Secure attribute")
            }
            Self::PartitionedWithoutSecure => {
                f.write_str("the Partitioned attribute requires the Secure attribute")
            }
            Self::SecurePrefixWithoutSecure { name } => write!(
                f,
                "cookie name {name:?} has the __Secure- prefix, which requires the Secure attribute"
            ),
            Self::HostPrefixWithoutSecure { name } => write!(
                f,
                "cookie name {name:?} has the __Host- prefix, which requires the Secure attribute"
            ),
            Self::HostPrefixWithDomain { name } => write!(
                f,
                "cookie name {name:?} has the __Host- prefix, which forbids a Domain attribute"
            ),
            Self::HostPrefixWithPath { name, path } => write!(
                f,
                "cookie name {name:?} has the __Host- prefix, which requires Path=/ (got {path:?})"
            ),
            Self::HttpPrefixWithoutSecure { name } => write!(
                f,
                "cookie name {name:?} has the __Http- prefix, which requires the Secure attribute"
            ),
            Self::HttpPrefixWithoutHttpOnly { name } => write!(
                f,
                "cookie name {name:?} has an __Http- or __Host-Http- prefix, which requires the HttpOnly attribute"
            ),
            Self::MaxAgeTooShort { max_age } => {
                write!(f, "Max-Age {max_age:?} is below one second")
            }
            Self::MaxAgeTooLong { max_age } => write!(
                f,
                "Max-Age {max_age:?} is over 400 days, the longest lifetime browsers keep"
            ),
            Self::ExpiresWithoutMaxAge => {
                f.write_str("Expires is derived from Max-Age, so a Max-Age must be set")
            }
            Self::InvalidNodeId { node } => {
                write!(f, "node id {node:?} is invalid: ")?;
                let refused = crate::affinity::first_refused(node);
                crate::affinity::write_node_id_problem(f, refused, node.len())
            }
            Self::NoProtocols => f.write_str("at least one upgrade protocol must be accepted"),
            Self::InvalidProtocol { protocol } => {
                write!(f, "upgrade protocol {protocol:?} is not an RFC 9110 token")
            }
            Self::RetryAfterZero => f.write_str(
                "Retry-After must not be zero when upgrades are refused while draining \
                 (it is sent in whole seconds, rounded up)",
            ),
            Self::RetryAfterTooLong { retry_after } => write!(
                f,
                "Retry-After {retry_after:?} is over a day, the longest allowed"
            ),
            #[cfg(feature = "signed")]
            Self::NoSigningKeys => f.write_str(
                "signing_keys was given no key: pass at least one key of 32 bytes or more, \
                 or do not call signing_keys to run unsigned",
            ),
            #[cfg(feature = "signed")]
            Self::SigningKeyTooShort { index, len } => write!(
                f,
                "signing key #{index} is {len} bytes, HMAC-SHA256 keys must be at least 32 bytes"
            ),
            Self::InvalidOrigin { origin } => write!(
                f,
                "allowed origin {origin:?} must look like scheme://host[:port] with no path"
            ),
            Self::NoAllowedOrigins => f.write_str(
                "allowed_origins was given no origin: every browser upgrade would be refused; \
                 list at least one origin, or do not call allowed_origins to skip the check",
            ),
            Self::WildcardOrigin { origin } => write!(
                f,
                "allowed origin {origin:?} contains `*`: patterns are not supported, list each origin"
            ),
            Self::RequireOriginWithoutAllowedOrigins => f.write_str(
                "require_origin(true) needs allowed_origins: there is no list to check Origin against",
            ),
        }
    }
}

impl std::error::Error for BuildError {}
