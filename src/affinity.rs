//! Session ids, node tags, the affinity outcome and the cookie value codec.
//!
//! A cookie value has the shape `ID[.NODE][.SIGNATURE]`:
//! - `ID` comes from the [`IdGenerator`] (a lower-case hyphenated UUID v4 by default);
//! - `NODE` is present when the layer has a [`node_id`](crate::StickyUpgradeBuilder::node_id);
//! - `SIGNATURE` is present with the `signed` feature and a signing key: 32 lower-case
//!   hex digits, HMAC-SHA256 over `NAME=ID[.NODE]` truncated to 128 bits.
//!
//! Every byte is a cookie-octet (RFC 6265bis) and nothing is percent-encoded, since
//! AWS ALB does not support URL-encoded cookie values.

use std::fmt;
use std::sync::Arc;

use crate::layer::Shared;
use crate::DrainGuard;

/// Longest cookie value accepted on a request; anything longer is invalid
/// without further parsing. The longest value this crate writes is
/// `64 + 1 + 32 + 1 + 32` = 130 bytes.
pub(crate) const MAX_VALUE_LEN: usize = 256;

#[derive(Clone, Copy, PartialEq, Eq, Hash)]
struct InlineStr<const N: usize> {
    len: u8,
    buf: [u8; N],
}

impl<const N: usize> InlineStr<N> {
    /// `s` must be ASCII and at most `N` (< 256) bytes: callers check first.
    fn new(s: &[u8]) -> Self {
        let mut buf = [0; N];
        buf[..s.len()].copy_from_slice(s);
        Self {
            len: s.len() as u8,
            buf,
        }
    }

    fn as_bytes(&self) -> &[u8] {
        &self.buf[..usize::from(self.len)]
    }

    fn as_str(&self) -> &str {
        // Only ever built from checked ASCII; the fallback is unreachable in
        // practice and keeps this free of `unsafe` and panics.
        std::str::from_utf8(self.as_bytes()).unwrap_or_default()
    }
}

/// A session id: the stable part of the affinity cookie, and the key an app can
/// use for its session state.
///
/// 1 to [`SessionId::MAX_LEN`] bytes of cookie-octets other than `.` (the
/// separator of the cookie value). Stored inline: cloning copies 65 bytes and
/// never allocates.
///
/// # Example
///
/// ```
/// use tower_sticky_upgrade::SessionId;
///
/// let id = SessionId::new("user-42_abc").unwrap();
/// assert_eq!(id.as_str(), "user-42_abc");
/// assert!(SessionId::new("has.dot").is_err());
/// assert!(SessionId::new("").is_err());
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct SessionId(InlineStr<{ SessionId::MAX_LEN }>);

impl SessionId {
    /// The longest session id, in bytes.
    pub const MAX_LEN: usize = 64;

    /// Checks and wraps `id`.
    ///
    /// # Errors
    ///
    /// When `id` is empty, longer than [`MAX_LEN`](Self::MAX_LEN), or holds a byte
    /// that is not a cookie-octet or is `.`.
    pub fn new(id: &str) -> Result<Self, InvalidSessionId> {
        Self::from_bytes(id.as_bytes()).ok_or(InvalidSessionId(()))
    }

    pub(crate) fn from_bytes(id: &[u8]) -> Option<Self> {
        if !all_cookie_octets(id) || id.contains(&b'.') {
            return None;
        }
        Self::from_cookie_octets(id)
    }

    /// `id` is known to be cookie-octets other than `.`; only the length is checked.
    fn from_cookie_octets(id: &[u8]) -> Option<Self> {
        let ok = !id.is_empty() && id.len() <= Self::MAX_LEN;
        ok.then(|| Self(InlineStr::new(id)))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }
}

impl fmt::Debug for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl AsRef<str> for SessionId {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

/// The error returned by [`SessionId::new`] for a string that cannot be a session id.
///
/// # Example
///
/// ```
/// use tower_sticky_upgrade::SessionId;
///
/// let err = SessionId::new("with space").unwrap_err();
/// assert!(err.to_string().contains("session id"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidSessionId(());

impl fmt::Display for InvalidSessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "a session id must be 1 to {} cookie-octets other than '.'",
            SessionId::MAX_LEN
        )
    }
}

impl std::error::Error for InvalidSessionId {}

/// The tag of the node (process, pod, instance) that issued a cookie.
///
/// 1 to [`NodeId::MAX_LEN`] bytes of `A-Z a-z 0-9 - _`. Stored inline.
///
/// # Example
///
/// ```
/// use tower_sticky_upgrade::NodeId;
///
/// let node = NodeId::new("eu-west-1a_7").unwrap();
/// assert_eq!(node.as_str(), "eu-west-1a_7");
/// assert!(NodeId::new("with.dot").is_err());
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct NodeId(InlineStr<{ NodeId::MAX_LEN }>);

impl NodeId {
    /// The longest node id, in bytes.
    pub const MAX_LEN: usize = 32;

    /// Checks and wraps `node`.
    ///
    /// # Errors
    ///
    /// When `node` is empty, longer than [`MAX_LEN`](Self::MAX_LEN), or holds a
    /// character outside `A-Z a-z 0-9 - _`.
    pub fn new(node: &str) -> Result<Self, InvalidNodeId> {
        Self::from_bytes(node.as_bytes()).ok_or(InvalidNodeId(()))
    }

    fn from_bytes(node: &[u8]) -> Option<Self> {
        let ok = !node.is_empty()
            && node.len() <= Self::MAX_LEN
            && node
                .iter()
                .all(|&b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        ok.then(|| Self(InlineStr::new(node)))
    }

    /// The node id as text.
    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }
}

impl fmt::Debug for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The error returned by [`NodeId::new`] for a string that cannot be a node id.
///
/// # Example
///
/// ```
/// use tower_sticky_upgrade::NodeId;
///
/// let err = NodeId::new("node 1").unwrap_err();
/// assert!(err.to_string().contains("node id"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidNodeId(());

impl fmt::Display for InvalidNodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "a node id must be 1 to {} characters of A-Z, a-z, 0-9, '-' or '_'",
            NodeId::MAX_LEN
        )
    }
}

impl std::error::Error for InvalidNodeId {}

/// How the session of an upgrade request was decided.
///
/// # Example
///
/// ```
/// use tower_sticky_upgrade::{Affinity, NodeId};
///
/// let from = NodeId::new("node-a").unwrap();
/// let affinity = Affinity::Migrated { from };
/// assert_eq!(affinity.as_str(), "migrated");
/// assert_eq!(affinity.migrated_from(), Some(&from));
/// assert_eq!(Affinity::Kept.migrated_from(), None);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Affinity {
    /// No valid affinity cookie came with the request; a new session id was issued.
    Issued,
    /// A valid cookie came and was issued by this node (or no node id is configured).
    Kept,
    /// A valid cookie came that another node issued: the session id is kept and the
    /// cookie is re-issued with this node's tag. The load balancer lost stickiness
    /// (the node died, was drained, or stickiness is misconfigured); the app may
    /// rehydrate state from a shared store keyed by the same id.
    Migrated {
        /// The node that issued the cookie.
        from: NodeId,
    },
}

impl Affinity {
    /// `"issued"`, `"kept"` or `"migrated"`, as used in logs and metrics.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Issued => "issued",
            Self::Kept => "kept",
            Self::Migrated { .. } => "migrated",
        }
    }

    /// The node that issued the cookie, when the session migrated.
    pub fn migrated_from(&self) -> Option<&NodeId> {
        match self {
            Self::Migrated { from } => Some(from),
            _ => None,
        }
    }
}

impl fmt::Display for Affinity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The affinity decision for one upgrade request, put in the request extensions
/// by [`StickyUpgrade`](crate::StickyUpgrade).
///
/// Only upgrade requests carry it. Cloning never allocates. Take a
/// [`DrainGuard`] from it with [`guard`](Self::guard) and move the guard into the
/// task that serves the upgraded socket, so draining can count and close it.
///
/// # Example
///
/// ```
/// use http::{header, Request, Response, StatusCode};
/// use std::convert::Infallible;
/// use tower::{service_fn, ServiceBuilder, ServiceExt};
/// use tower_sticky_upgrade::{Affinity, StickySession, StickyUpgradeLayer};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let svc = ServiceBuilder::new()
///     .layer(StickyUpgradeLayer::new())
///     .service(service_fn(|req: Request<()>| async move {
///         let session = req.extensions().get::<StickySession>().cloned();
///         let session = session.expect("the layer sets it on upgrades");
///         assert_eq!(session.affinity(), Affinity::Issued);
///         assert_eq!(session.id().as_str().len(), 36); // a UUID
///         Ok::<_, Infallible>(
///             Response::builder()
///                 .status(StatusCode::SWITCHING_PROTOCOLS)
///                 .body(())
///                 .unwrap(),
///         )
///     }));
///
/// let req = Request::get("/ws")
///     .header(header::CONNECTION, "upgrade")
///     .header(header::UPGRADE, "websocket")
///     .body(())
///     .unwrap();
/// let res = svc.oneshot(req).await.unwrap();
/// assert!(res.headers().contains_key(header::SET_COOKIE));
/// # }
/// ```
#[derive(Clone)]
pub struct StickySession {
    id: SessionId,
    affinity: Affinity,
    shared: Arc<Shared>,
}

impl StickySession {
    pub(crate) fn new(id: SessionId, affinity: Affinity, shared: Arc<Shared>) -> Self {
        Self {
            id,
            affinity,
            shared,
        }
    }

    /// The session id, the same across reconnects while the cookie is kept.
    pub fn id(&self) -> &SessionId {
        &self.id
    }

    /// Whether the id was issued, kept, or migrated from another node.
    pub fn affinity(&self) -> Affinity {
        self.affinity
    }

    /// The node id of this layer, if one is configured.
    pub fn node(&self) -> Option<&NodeId> {
        self.shared.config.codec.node.as_ref()
    }

    /// Whether the layer's [`Drain`](crate::Drain) has started.
    pub fn is_draining(&self) -> bool {
        self.shared.drain.is_draining()
    }

    /// A guard that counts this socket in [`Drain::active`](crate::Drain::active)
    /// until dropped and tells it when to close. Move it into the task that owns
    /// the upgraded socket.
    #[must_use = "the socket is tracked only while the guard lives: move it into the socket's task"]
    pub fn guard(&self) -> DrainGuard {
        self.shared.drain.guard()
    }
}

impl fmt::Debug for StickySession {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StickySession")
            .field("id", &self.id)
            .field("affinity", &self.affinity)
            .field("node", &self.node())
            .finish()
    }
}

/// Makes session ids for new sessions, and says which ids it could have made.
///
/// The default, [`UuidV4`], makes random UUIDs. A custom generator must make ids
/// that are unpredictable: they are also the key apps use for session state.
/// Closures `Fn() -> SessionId` are generators that accept any well-formed id.
///
/// # Example
///
/// ```
/// use std::sync::atomic::{AtomicU64, Ordering};
/// use tower_sticky_upgrade::{IdGenerator, SessionId, StickyUpgradeLayer};
///
/// /// Ids with a fixed prefix, for illustration only: a real one must be random.
/// struct Prefixed(AtomicU64);
///
/// impl IdGenerator for Prefixed {
///     fn generate(&self) -> SessionId {
///         let n = self.0.fetch_add(1, Ordering::Relaxed);
///         SessionId::new(&format!("s-{n}")).unwrap()
///     }
///
///     fn accepts(&self, id: &SessionId) -> bool {
///         id.as_str().starts_with("s-")
///     }
/// }
///
/// let layer = StickyUpgradeLayer::builder()
///     .id_generator(Prefixed(AtomicU64::new(0)))
///     .build()
///     .unwrap();
/// # let _ = layer;
/// ```
pub trait IdGenerator: Send + Sync + 'static {
    /// A new, unpredictable session id.
    fn generate(&self) -> SessionId;

    /// Whether `id`, read from a cookie, has the shape of an id this generator
    /// makes. Returning `false` makes the cookie invalid, so a new id is issued.
    fn accepts(&self, id: &SessionId) -> bool {
        let _ = id;
        true
    }
}

impl<F> IdGenerator for F
where
    F: Fn() -> SessionId + Send + Sync + 'static,
{
    fn generate(&self) -> SessionId {
        self()
    }
}

/// The default [`IdGenerator`]: random (version 4) UUIDs, lower-case and
/// hyphenated.
///
/// The 122 random bits come from `rand`'s thread-local generator: ChaCha12, a
/// CSPRNG seeded from the operating system and reseeded every 64 KiB of output.
/// Asking the OS for every id would cost a system call per new session, more
/// than the rest of the layer's work. Like any user-space CSPRNG it is not
/// reseeded when the process forks: a server that forks after handing out ids
/// (rare with tokio) should use its own [`IdGenerator`] in the child.
///
/// It only accepts ids of exactly that shape, so an upper-case look-alike or a
/// UUID of another version is invalid.
///
/// # Example
///
/// ```
/// use tower_sticky_upgrade::{IdGenerator, SessionId, UuidV4};
///
/// let id = UuidV4.generate();
/// assert_eq!(id.as_str().len(), 36);
/// assert!(UuidV4.accepts(&id));
/// let upper = SessionId::new(&id.as_str().to_ascii_uppercase()).unwrap();
/// assert!(!UuidV4.accepts(&upper));
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct UuidV4;

impl IdGenerator for UuidV4 {
    fn generate(&self) -> SessionId {
        let mut buf = [0u8; uuid::fmt::Hyphenated::LENGTH];
        let uuid =
            uuid::Builder::from_random_bytes(rand::random::<u128>().to_le_bytes()).into_uuid();
        let text = uuid.hyphenated().encode_lower(&mut buf);
        SessionId(InlineStr::new(text.as_bytes()))
    }

    fn accepts(&self, id: &SessionId) -> bool {
        let Ok(b) = <&[u8; uuid::fmt::Hyphenated::LENGTH]>::try_from(id.0.as_bytes()) else {
            return false;
        };
        // Fixed positions and one branch-free pass over the digits: this runs
        // on every upgrade that carries a cookie.
        let lower_hex = |c: u8| c.is_ascii_digit() | (b'a'..=b'f').contains(&c);
        let digits = [&b[..8], &b[9..13], &b[14..18], &b[19..23], &b[24..]];
        b[8] == b'-'
            && b[13] == b'-'
            && b[18] == b'-'
            && b[23] == b'-'
            && b[14] == b'4'
            && matches!(b[19], b'8' | b'9' | b'a' | b'b')
            && digits.iter().fold(true, |ok, group| {
                ok & group.iter().fold(true, |ok, &c| ok & lower_hex(c))
            })
    }
}

/// `cookie-octet` of RFC 6265bis: `%x21 / %x23-2B / %x2D-3A / %x3C-5B / %x5D-7E`.
pub(crate) fn is_cookie_octet(b: u8) -> bool {
    COOKIE_OCTETS[usize::from(b)]
}

/// [`is_cookie_octet`] as a table: the range test compiles to a chain of
/// branches, the table to one load per byte.
static COOKIE_OCTETS: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0;
    while b < table.len() {
        table[b] = matches!(b, 0x21 | 0x23..=0x2B | 0x2D..=0x3A | 0x3C..=0x5B | 0x5D..=0x7E);
        b += 1;
    }
    table
};

/// Whether every byte is a cookie-octet; branch-free, as values are short.
fn all_cookie_octets(bytes: &[u8]) -> bool {
    bytes.iter().fold(true, |ok, &b| ok & is_cookie_octet(b))
}

/// A cookie value the codec accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Decoded {
    pub(crate) id: SessionId,
    pub(crate) node: Option<NodeId>,
    /// Signed with a key other than the current signing key (key rotation).
    pub(crate) stale_key: bool,
}

/// Reads and writes cookie values.
pub(crate) struct Codec {
    pub(crate) node: Option<NodeId>,
    pub(crate) generator: Arc<dyn IdGenerator>,
    #[cfg(feature = "signed")]
    pub(crate) signer: Option<crate::signed::Signer>,
}

impl fmt::Debug for Codec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("Codec");
        d.field("node", &self.node);
        #[cfg(feature = "signed")]
        d.field("signed", &self.signer.is_some());
        d.finish_non_exhaustive()
    }
}

impl Codec {
    /// Parses a cookie value; `None` when it is not a value this codec writes.
    pub(crate) fn decode(&self, name: &str, value: &[u8]) -> Option<Decoded> {
        if value.len() > MAX_VALUE_LEN {
            return None;
        }
        // One pass: every byte a cookie-octet, and where the first `.` is.
        // Backwards, so the last `.` seen is the first one; branch-free.
        let mut octets = true;
        let mut dot = value.len();
        for (i, &b) in value.iter().enumerate().rev() {
            octets &= is_cookie_octet(b);
            dot = if b == b'.' { i } else { dot };
        }
        if !octets {
            return None;
        }
        #[cfg(feature = "signed")]
        let (value, stale_key) = match &self.signer {
            Some(signer) => signer.verify(name, value)?,
            None => (value, false),
        };
        #[cfg(not(feature = "signed"))]
        let (stale_key, _) = (false, name);
        // A signature is cut off the end, so a `.` past what is left was the
        // one before it.
        let (id, node) = match value.get(dot + 1..) {
            Some(node) => (&value[..dot], Some(NodeId::from_bytes(node)?)),
            None => (value, None),
        };
        // Every byte was checked above, and `id` ends before the first `.`.
        let id = SessionId::from_cookie_octets(id)?;
        self.generator.accepts(&id).then_some(Decoded {
            id,
            node,
            stale_key,
        })
    }

    /// Length of the value [`encode`](Self::encode) writes for `id`.
    pub(crate) fn encoded_len(&self, id: &SessionId) -> usize {
        let node = self.node.as_ref().map_or(0, |n| 1 + n.0.as_bytes().len());
        #[cfg(feature = "signed")]
        let sig = self
            .signer
            .as_ref()
            .map_or(0, |_| 1 + crate::signed::SIGNATURE_HEX_LEN);
        #[cfg(not(feature = "signed"))]
        let sig = 0;
        id.0.as_bytes().len() + node + sig
    }

    /// Appends the value for `id`, tagged with this node and signed, to `out`.
    pub(crate) fn encode(&self, name: &str, id: &SessionId, out: &mut Vec<u8>) {
        let start = out.len();
        out.extend_from_slice(id.0.as_bytes());
        if let Some(node) = &self.node {
            out.push(b'.');
            out.extend_from_slice(node.0.as_bytes());
        }
        #[cfg(feature = "signed")]
        if let Some(signer) = &self.signer {
            signer.sign_into(name, start, out);
        }
        #[cfg(not(feature = "signed"))]
        let _ = (name, start);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn codec(node: Option<&str>) -> Codec {
        Codec {
            node: node.and_then(|n| NodeId::new(n).ok()),
            generator: Arc::new(UuidV4),
            #[cfg(feature = "signed")]
            signer: None,
        }
    }

    fn encode(codec: &Codec, id: &SessionId) -> Vec<u8> {
        let mut out = Vec::new();
        codec.encode("WS", id, &mut out);
        assert_eq!(out.len(), codec.encoded_len(id));
        out
    }

    #[test]
    fn plain_value_is_the_id() {
        let c = codec(None);
        let id = UuidV4.generate();
        let value = encode(&c, &id);
        assert_eq!(value, id.as_str().as_bytes());
        let d = c.decode("WS", &value).unwrap();
        assert_eq!((d.id, d.node, d.stale_key), (id, None, false));
    }

    #[test]
    fn node_tag_round_trips() {
        let c = codec(Some("node-1"));
        let id = UuidV4.generate();
        let value = encode(&c, &id);
        assert_eq!(value, format!("{id}.node-1").as_bytes());
        let d = c.decode("WS", &value).unwrap();
        assert_eq!(d.id, id);
        assert_eq!(d.node, NodeId::new("node-1").ok());
    }

    #[test]
    fn upper_case_uuid_look_alike_is_invalid() {
        let c = codec(None);
        let id = UuidV4.generate().as_str().to_ascii_uppercase();
        assert_eq!(c.decode("WS", id.as_bytes()), None);
    }

    #[test]
    fn wrong_shapes_are_invalid() {
        let c = codec(Some("n"));
        let id = UuidV4.generate();
        for bad in [
            String::new(),
            ".".into(),
            format!("{id}."),
            format!(".{id}"),
            format!("{id}.n.extra"),
            format!("{id}.bad node"),
            format!("\"{id}\""),
            "not-a-uuid".into(),
            // UUID of version 1, same shape otherwise.
            "6ba7b810-9dad-11d1-80b4-00c04fd430c8".into(),
            "x".repeat(MAX_VALUE_LEN + 1),
        ] {
            assert_eq!(c.decode("WS", bad.as_bytes()), None, "{bad:?}");
        }
    }

    #[test]
    fn non_cookie_octets_are_invalid() {
        let c = codec(None);
        let id = UuidV4.generate();
        for byte in [
            0x00u8, 0x09, 0x20, b'"', b',', b';', b'\\', 0x7f, 0x80, 0xff,
        ] {
            let mut value = id.as_str().as_bytes().to_vec();
            value[3] = byte;
            assert_eq!(c.decode("WS", &value), None, "byte {byte:#x}");
        }
    }

    #[test]
    fn cookie_octet_matches_the_rfc_ranges() {
        let allowed: Vec<u8> = (0u8..=255).filter(|&b| is_cookie_octet(b)).collect();
        let expected: Vec<u8> = (0x21u8..=0x7e)
            .filter(|b| ![b'"', b',', b';', b'\\'].contains(b))
            .collect();
        assert_eq!(allowed, expected);
    }

    #[test]
    fn session_id_rules() {
        assert!(SessionId::new(&"a".repeat(SessionId::MAX_LEN)).is_ok());
        assert!(SessionId::new(&"a".repeat(SessionId::MAX_LEN + 1)).is_err());
        assert!(SessionId::new("a b").is_err());
        assert!(SessionId::new("a.b").is_err());
        assert!(SessionId::new("é").is_err());
        assert_eq!(format!("{:?}", SessionId::new("ab").unwrap()), "\"ab\"");
    }

    #[test]
    fn node_id_rules() {
        assert!(NodeId::new(&"n".repeat(NodeId::MAX_LEN)).is_ok());
        assert!(NodeId::new(&"n".repeat(NodeId::MAX_LEN + 1)).is_err());
        assert!(NodeId::new("").is_err());
        assert!(NodeId::new("a=b").is_err());
    }

    #[test]
    fn closure_generator_accepts_any_well_formed_id() {
        let generator = || SessionId::new("fixed").unwrap();
        assert_eq!(generator.generate().as_str(), "fixed");
        assert!(generator.accepts(&SessionId::new("other").unwrap()));
    }

    #[test]
    fn uuid_v4_rejects_any_byte_out_of_place() {
        let id = UuidV4.generate();
        for i in 0..id.as_str().len() {
            for bad in [b'g', b'A', b'-', b'.', b'_'] {
                let mut text = id.as_str().as_bytes().to_vec();
                if text[i] == bad {
                    continue;
                }
                text[i] = bad;
                if let Some(candidate) = SessionId::from_bytes(&text) {
                    assert!(!UuidV4.accepts(&candidate), "{candidate:?}");
                }
            }
        }
        let short = SessionId::new(&id.as_str()[..35]).unwrap();
        assert!(!UuidV4.accepts(&short));
    }

    #[test]
    fn uuid_v4_ids_are_distinct_and_accepted() {
        let a = UuidV4.generate();
        let b = UuidV4.generate();
        assert_ne!(a, b);
        assert!(UuidV4.accepts(&a) && UuidV4.accepts(&b));
    }
}
