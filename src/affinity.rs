//! Session ids, node tags, the affinity outcome and the cookie value codec.
//!
//! A cookie value has the shape `ID[.NODE][.SIGNATURE]`:
//! - `ID` comes from the [`IdGenerator`] (a lower-case hyphenated UUID v4 by default);
//! - `NODE` is present when the layer has a [`node_id`](crate::StickyUpgradeBuilder::node_id);
//! - `SIGNATURE` is present with the `signed` feature and a signing key: 32 lower-case
//!   hex digits, HMAC-SHA256 over `NAME=ID[.NODE]` truncated to 128 bits.
//!
//! Every byte is a cookie-octet (RFC 6265bis) and nothing is percent-encoded, since
//! AWS ALB does not support URL-encoded cookie values. The longest value is
//! `64 + 1 + 32 + 1 + 32` = 130 bytes; reading a value stops at the first byte
//! that cannot belong to it, so a longer one is refused without reading on.

use std::fmt;
use std::sync::Arc;

use crate::layer::Shared;
use crate::DrainGuard;

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
    ///
    /// ```
    /// use tower_sticky_upgrade::SessionId;
    ///
    /// assert_eq!(SessionId::MAX_LEN, 64);
    /// assert!(SessionId::new(&"a".repeat(SessionId::MAX_LEN)).is_ok());
    /// assert!(SessionId::new(&"a".repeat(SessionId::MAX_LEN + 1)).is_err());
    /// ```
    pub const MAX_LEN: usize = 64;

    /// Checks and wraps `id`.
    ///
    /// # Errors
    ///
    /// When `id` is empty, longer than [`MAX_LEN`](Self::MAX_LEN), or holds a byte
    /// that is not a cookie-octet or is `.`.
    ///
    /// # Example
    ///
    /// ```
    /// use tower_sticky_upgrade::SessionId;
    ///
    /// assert_eq!(SessionId::new("Room_7-a").unwrap().as_str(), "Room_7-a");
    /// assert!(SessionId::new("a;b").is_err()); // `;` is no cookie-octet
    /// assert!(SessionId::new("a.b").is_err()); // `.` separates the value's parts
    /// assert!(SessionId::new("é").is_err()); // only ASCII
    /// ```
    pub fn new(id: &str) -> Result<Self, InvalidSessionId> {
        Self::from_bytes(id.as_bytes()).ok_or_else(|| InvalidSessionId::of(id.as_bytes()))
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
    ///
    /// ```
    /// use tower_sticky_upgrade::SessionId;
    ///
    /// let id = SessionId::new("abc-123").unwrap();
    /// assert_eq!(id.as_str(), "abc-123");
    /// assert_eq!(id.to_string(), id.as_str()); // `Display` writes the same
    /// ```
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

/// Same as [`SessionId::new`].
impl std::str::FromStr for SessionId {
    type Err = InvalidSessionId;

    fn from_str(id: &str) -> Result<Self, Self::Err> {
        Self::new(id)
    }
}

/// Same as [`SessionId::new`].
impl TryFrom<&str> for SessionId {
    type Error = InvalidSessionId;

    fn try_from(id: &str) -> Result<Self, Self::Error> {
        Self::new(id)
    }
}

impl From<SessionId> for String {
    fn from(id: SessionId) -> Self {
        id.as_str().to_owned()
    }
}

/// The error returned by [`SessionId::new`] for a string that cannot be a session id.
///
/// The message says what is wrong (empty, too long, or which byte is refused)
/// without quoting the value: a near-valid id is close to a live one, and
/// error messages end up in logs.
///
/// # Example
///
/// ```
/// use tower_sticky_upgrade::SessionId;
///
/// let err = SessionId::new("with space").unwrap_err();
/// assert_eq!(
///     err.to_string(),
///     "session id is invalid: byte 4 is ' ' (0x20); \
///      it must be 1 to 64 cookie-octets other than '.'"
/// );
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidSessionId(SessionIdProblem);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SessionIdProblem {
    Empty,
    TooLong { len: usize },
    Byte { index: usize, byte: u8 },
}

impl InvalidSessionId {
    /// What is wrong with `id`, which [`SessionId::from_bytes`] refused.
    fn of(id: &[u8]) -> Self {
        let bad = id.iter().position(|&b| !is_cookie_octet(b) || b == b'.');
        Self(match bad {
            _ if id.is_empty() => SessionIdProblem::Empty,
            Some(index) => SessionIdProblem::Byte {
                index,
                byte: id[index],
            },
            None => SessionIdProblem::TooLong { len: id.len() },
        })
    }
}

impl fmt::Display for InvalidSessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("session id is invalid: ")?;
        match self.0 {
            SessionIdProblem::Empty => f.write_str("it is empty")?,
            SessionIdProblem::TooLong { len } => write!(f, "it is {len} bytes")?,
            SessionIdProblem::Byte { index, byte } if byte.is_ascii_graphic() || byte == b' ' => {
                write!(f, "byte {index} is '{}' (0x{byte:02X})", char::from(byte))?
            }
            SessionIdProblem::Byte { index, byte } => write!(f, "byte {index} is 0x{byte:02X}")?,
        }
        write!(
            f,
            "; it must be 1 to {} cookie-octets other than '.'",
            SessionId::MAX_LEN
        )
    }
}

impl std::error::Error for InvalidSessionId {}

/// The tag of the node (process, pod, instance) that issued a cookie.
///
/// 1 to [`NodeId::MAX_LEN`] (32) bytes of `A-Z a-z 0-9 - _`. Stored inline,
/// in every session, so kept short. No dots: they separate the parts of the
/// cookie value.
///
/// A host name may not fit as it is: a Kubernetes pod name can be longer
/// than 32 characters, and an EC2 host name has dots. The node id only has to
/// tell apart the nodes behind one balancer, so take the first label of the
/// host name and, if it is too long, its last 32 characters: a pod name ends
/// in its unique part (the replica set's hash and the pod's own suffix).
///
/// # Example
///
/// ```
/// use tower_sticky_upgrade::{NodeId, StickyUpgradeLayer};
///
/// let node = NodeId::new("eu-west-1a_7").unwrap();
/// assert_eq!(node.as_str(), "eu-west-1a_7");
/// assert!(NodeId::new("with.dot").is_err());
///
/// /// The first label of a host name, cut to its last `NodeId::MAX_LEN` characters.
/// /// `None` when that is not a valid node id (a non-ASCII label, say).
/// fn node_id_from_host(host: &str) -> Option<NodeId> {
///     let label = host.split('.').next()?;
///     let tail = label.get(label.len().saturating_sub(NodeId::MAX_LEN)..)?;
///     NodeId::new(tail).ok()
/// }
/// let pod = "websocket-gateway-7d9f8c6b5d-x2k4q"; // 34 characters
/// assert_eq!(node_id_from_host(pod).unwrap().as_str(), "bsocket-gateway-7d9f8c6b5d-x2k4q");
/// let ec2 = "ip-10-0-1-23.eu-west-1.compute.internal";
/// assert_eq!(node_id_from_host(ec2).unwrap().as_str(), "ip-10-0-1-23");
/// assert_eq!(node_id_from_host("nœud-3"), None);
/// let cut_inside_a_character = format!("{}x", "é".repeat(16)); // 33 bytes
/// assert_eq!(node_id_from_host(&cut_inside_a_character), None);
///
/// // A checked `NodeId` goes to the builder as it is (or parse one: `"node-1".parse()`).
/// let layer = StickyUpgradeLayer::builder()
///     .node_id(node_id_from_host(ec2).unwrap())
///     .build()
///     .unwrap();
/// # let _ = layer;
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct NodeId(InlineStr<{ NodeId::MAX_LEN }>);

impl NodeId {
    /// The longest node id, in bytes.
    ///
    /// ```
    /// use tower_sticky_upgrade::NodeId;
    ///
    /// assert_eq!(NodeId::MAX_LEN, 32);
    /// assert!(NodeId::new(&"n".repeat(NodeId::MAX_LEN)).is_ok());
    /// assert!(NodeId::new(&"n".repeat(NodeId::MAX_LEN + 1)).is_err());
    /// ```
    pub const MAX_LEN: usize = 32;

    /// Checks and wraps `node`.
    ///
    /// # Errors
    ///
    /// When `node` is empty, longer than [`MAX_LEN`](Self::MAX_LEN), or holds a
    /// character outside `A-Z a-z 0-9 - _`.
    ///
    /// # Example
    ///
    /// ```
    /// use tower_sticky_upgrade::NodeId;
    ///
    /// assert_eq!(NodeId::new("pod-7_b").unwrap().as_str(), "pod-7_b");
    /// assert!(NodeId::new("").is_err());
    /// assert!(NodeId::new("pod:7").is_err()); // only A-Z a-z 0-9 - _
    /// assert!(NodeId::new("host.internal").is_err()); // no dots
    /// ```
    pub fn new(node: &str) -> Result<Self, InvalidNodeId> {
        Self::from_bytes(node.as_bytes()).ok_or_else(|| InvalidNodeId(Rejected::new(node)))
    }

    fn from_bytes(node: &[u8]) -> Option<Self> {
        if !node.iter().all(|&b| is_node_char(b)) {
            return None;
        }
        Self::from_node_chars(node)
    }

    /// `node` is known to be node-tag characters (a [`segment`] of a cookie
    /// value); only the length is checked, by [`node_tag`].
    fn from_node_chars(node: &[u8]) -> Option<Self> {
        node_tag(node).map(|node| Self(InlineStr::new(node)))
    }

    /// The node id as text.
    ///
    /// ```
    /// use tower_sticky_upgrade::NodeId;
    ///
    /// let node = NodeId::new("node-1").unwrap();
    /// assert_eq!(node.as_str(), "node-1");
    /// assert_eq!(node.to_string(), node.as_str()); // `Display` writes the same
    /// ```
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

impl AsRef<str> for NodeId {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

/// Same as [`NodeId::new`], for a node id read from the environment or a flag.
impl std::str::FromStr for NodeId {
    type Err = InvalidNodeId;

    fn from_str(node: &str) -> Result<Self, Self::Err> {
        Self::new(node)
    }
}

/// Same as [`NodeId::new`].
impl TryFrom<&str> for NodeId {
    type Error = InvalidNodeId;

    fn try_from(node: &str) -> Result<Self, Self::Error> {
        Self::new(node)
    }
}

/// So that a checked `NodeId` can be passed to
/// [`StickyUpgradeBuilder::node_id`](crate::StickyUpgradeBuilder::node_id).
impl From<NodeId> for String {
    fn from(node: NodeId) -> Self {
        node.as_str().to_owned()
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
/// assert_eq!(
///     err.to_string(),
///     r#"node id "node 1" is invalid: it holds ' '; it must be 1 to 32 characters of A-Z, a-z, 0-9, '-' or '_'"#
/// );
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidNodeId(Rejected);

impl fmt::Display for InvalidNodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "node id {} is invalid: ", self.0)?;
        write_node_id_problem(f, self.0.refused, self.0.len)
    }
}

/// The first character of `node` that a node id cannot hold.
pub(crate) fn first_refused(node: &str) -> Option<char> {
    node.chars()
        .find(|&c| !u8::try_from(c).is_ok_and(is_node_char))
}

/// Writes what is wrong with a rejected node id of `len` bytes whose first
/// refused character is `refused`, the rule, and for the two usual mistakes
/// (a host name with dots, a pod name too long) what to do. A refused
/// character is named instead of the length, as it says more.
pub(crate) fn write_node_id_problem(
    f: &mut fmt::Formatter<'_>,
    refused: Option<char>,
    len: usize,
) -> fmt::Result {
    match refused {
        _ if len == 0 => f.write_str("it is empty")?,
        Some(c) => write!(f, "it holds {c:?}")?,
        None => write!(f, "it is {len} bytes")?,
    }
    let max = NodeId::MAX_LEN;
    write!(
        f,
        "; it must be 1 to {max} characters of A-Z, a-z, 0-9, '-' or '_'"
    )?;
    match refused {
        Some('.') => f.write_str(" (from a host name, take its first label: see `NodeId`)"),
        None if len > max => write!(
            f,
            " (from a pod name, take its last {max} characters: see `NodeId`)"
        ),
        _ => Ok(()),
    }
}

impl std::error::Error for InvalidNodeId {}

/// A rejected node id, kept for the error message: its first
/// [`PREVIEW`](Self::PREVIEW) bytes (cut at a character boundary), its length
/// and its first refused character, wherever that is.
/// Node ids are configuration, not secrets, so the message quotes them.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Rejected {
    start: Box<str>,
    len: usize,
    refused: Option<char>,
}

impl Rejected {
    /// Enough to recognise any value that was meant as a node id, not so much
    /// that a stray buffer floods a log.
    const PREVIEW: usize = 4 * NodeId::MAX_LEN;

    fn new(value: &str) -> Self {
        let mut end = value.len().min(Self::PREVIEW);
        while !value.is_char_boundary(end) {
            end -= 1;
        }
        Self {
            start: value[..end].into(),
            len: value.len(),
            refused: first_refused(value),
        }
    }
}

/// `"value"`, or `"start"… (N bytes)` when cut, with `Debug` escapes so that
/// control characters show.
impl fmt::Display for Rejected {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.start)?;
        if self.start.len() < self.len {
            write!(f, "… ({} bytes)", self.len)?;
        }
        Ok(())
    }
}

/// `A-Z a-z 0-9 - _`
fn is_node_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'-' || b == b'_'
}

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
    /// A valid cookie came and was issued by this node, or carries no node tag
    /// (issued before this node had an id; it is sent back with this node's
    /// tag), or this layer has no node id (a tag then does not change the
    /// affinity, and the cookie is sent back without it).
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
    ///
    /// ```
    /// use tower_sticky_upgrade::{Affinity, NodeId};
    ///
    /// let from = NodeId::new("node-a").unwrap();
    /// assert_eq!(Affinity::Issued.as_str(), "issued");
    /// assert_eq!(Affinity::Kept.as_str(), "kept");
    /// assert_eq!(Affinity::Migrated { from }.as_str(), "migrated");
    /// assert_eq!(Affinity::Kept.to_string(), "kept"); // `Display` writes the same
    /// ```
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Issued => "issued",
            Self::Kept => "kept",
            Self::Migrated { .. } => "migrated",
        }
    }

    /// The node that issued the cookie, when the session migrated.
    ///
    /// ```
    /// use tower_sticky_upgrade::{Affinity, NodeId};
    ///
    /// let from = NodeId::new("node-a").unwrap();
    /// let migrated = Affinity::Migrated { from };
    /// assert_eq!(migrated.migrated_from().map(NodeId::as_str), Some("node-a"));
    /// assert_eq!(Affinity::Issued.migrated_from(), None);
    /// assert_eq!(Affinity::Kept.migrated_from(), None);
    /// ```
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
///
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
    ///
    /// ```
    /// use tower_sticky_upgrade::StickyUpgradeLayer;
    /// # include!("../tests/support/doctest.rs");
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    ///
    /// // `upgrade` (hidden) runs one accepted handshake through the layer,
    /// // sending `cookie` if given: it returns the session and the cookie set.
    /// let layer = StickyUpgradeLayer::new();
    /// let (first, cookie) = upgrade(&layer, None).await;
    /// // Without a node id or signing, the cookie value is the id itself.
    /// assert_eq!(cookie, format!("WS_SESSION_ID={}", first.id()));
    ///
    /// let (again, _) = upgrade(&layer, Some(&cookie)).await;
    /// assert_eq!(again.id(), first.id());
    /// # }
    /// ```
    pub fn id(&self) -> &SessionId {
        &self.id
    }

    /// Whether the id was issued, kept, or migrated from another node.
    ///
    /// ```
    /// use tower_sticky_upgrade::{Affinity, NodeId, StickyUpgradeLayer};
    /// # include!("../tests/support/doctest.rs");
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    ///
    /// // `upgrade` (hidden) runs one accepted handshake through the layer,
    /// // sending `cookie` if given: it returns the session and the cookie set.
    /// let node_a = StickyUpgradeLayer::builder().node_id("node-a").build().unwrap();
    /// let node_b = StickyUpgradeLayer::builder().node_id("node-b").build().unwrap();
    ///
    /// let (session, cookie) = upgrade(&node_a, None).await;
    /// assert_eq!(session.affinity(), Affinity::Issued);
    /// let (session, _) = upgrade(&node_a, Some(&cookie)).await;
    /// assert_eq!(session.affinity(), Affinity::Kept);
    /// let (session, _) = upgrade(&node_b, Some(&cookie)).await;
    /// let from = NodeId::new("node-a").unwrap();
    /// assert_eq!(session.affinity(), Affinity::Migrated { from });
    /// # }
    /// ```
    pub fn affinity(&self) -> Affinity {
        self.affinity
    }

    /// The node id of this layer, if one is configured.
    ///
    /// ```
    /// use tower_sticky_upgrade::StickyUpgradeLayer;
    /// # include!("../tests/support/doctest.rs");
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    ///
    /// // `upgrade` (hidden) runs one accepted handshake through the layer,
    /// // sending `cookie` if given: it returns the session and the cookie set.
    /// let layer = StickyUpgradeLayer::builder().node_id("node-b").build().unwrap();
    /// let (session, _) = upgrade(&layer, None).await;
    /// assert_eq!(session.node().unwrap().as_str(), "node-b");
    ///
    /// let (session, _) = upgrade(&StickyUpgradeLayer::new(), None).await;
    /// assert_eq!(session.node(), None);
    /// # }
    /// ```
    pub fn node(&self) -> Option<&NodeId> {
        self.shared.config.codec.node.as_ref()
    }

    /// Whether the layer's [`Drain`](crate::Drain) has started.
    ///
    /// ```
    /// use tower_sticky_upgrade::StickyUpgradeLayer;
    /// # include!("../tests/support/doctest.rs");
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    ///
    /// // `upgrade` (hidden) runs one accepted handshake through the layer,
    /// // sending `cookie` if given: it returns the session and the cookie set.
    /// let layer = StickyUpgradeLayer::new();
    /// let (session, _) = upgrade(&layer, None).await;
    /// assert!(!session.is_draining());
    /// layer.drain().start();
    /// assert!(session.is_draining());
    /// # }
    /// ```
    pub fn is_draining(&self) -> bool {
        self.shared.drain.is_draining()
    }

    /// A guard that counts this socket in [`Drain::active`](crate::Drain::active)
    /// until dropped and tells it when to close. Move it into the task that owns
    /// the upgraded socket.
    ///
    /// ```
    /// use tower_sticky_upgrade::StickyUpgradeLayer;
    /// # include!("../tests/support/doctest.rs");
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    ///
    /// // `upgrade` (hidden) runs one accepted handshake through the layer,
    /// // sending `cookie` if given: it returns the session and the cookie set.
    /// let layer = StickyUpgradeLayer::new();
    /// let (session, _) = upgrade(&layer, None).await;
    /// assert_eq!(layer.drain().active(), 0);
    /// let guard = session.guard();
    /// assert_eq!(layer.drain().active(), 1);
    /// drop(guard); // the socket is gone
    /// assert_eq!(layer.drain().active(), 0);
    /// # }
    /// ```
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
/// # include!("../tests/support/doctest.rs");
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let layer = StickyUpgradeLayer::builder()
///     .id_generator(Prefixed(AtomicU64::new(0)))
///     .build()
///     .unwrap();
///
/// // `upgrade` (hidden) sends one upgrade request, with a `Cookie` line if
/// // given, through the layer, and returns the session and the cookie set.
/// let (session, cookie) = upgrade(&layer, None).await;
/// assert_eq!(session.id().as_str(), "s-0");
/// assert_eq!(cookie, "WS_SESSION_ID=s-0");
/// let (session, _) = upgrade(&layer, Some("WS_SESSION_ID=s-0")).await;
/// assert_eq!(session.id().as_str(), "s-0"); // kept
///
/// // An id this generator would not make counts as no cookie: a new one.
/// let (session, _) = upgrade(&layer, Some("WS_SESSION_ID=forged")).await;
/// assert_eq!(session.id().as_str(), "s-1");
/// # }
/// ```
pub trait IdGenerator: Send + Sync + 'static {
    /// A new, unpredictable session id.
    ///
    /// ```
    /// use tower_sticky_upgrade::{IdGenerator, UuidV4};
    ///
    /// let (a, b) = (UuidV4.generate(), UuidV4.generate());
    /// assert_ne!(a, b);
    /// assert_eq!(a.as_str().len(), 36);
    /// ```
    fn generate(&self) -> SessionId;

    /// Whether `id`, read from a cookie, has the shape of an id this generator
    /// makes. Returning `false` makes the cookie invalid, so a new id is issued.
    ///
    /// By default every well-formed id is accepted, as by a closure generator:
    ///
    /// ```
    /// use tower_sticky_upgrade::{IdGenerator, SessionId, UuidV4};
    ///
    /// let id = SessionId::new("not-a-uuid").unwrap();
    /// let closure = || SessionId::new("fixed").unwrap(); // illustration only
    /// assert!(closure.accepts(&id));
    /// assert!(!UuidV4.accepts(&id));
    /// assert!(UuidV4.accepts(&UuidV4.generate()));
    /// ```
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
        let uuid =
            uuid::Builder::from_random_bytes(rand::random::<u128>().to_le_bytes()).into_uuid();
        SessionId(InlineStr::new(&hyphenated_lower(uuid.as_bytes())))
    }

    fn accepts(&self, id: &SessionId) -> bool {
        <&[u8; UUID_LEN]>::try_from(id.0.as_bytes()).is_ok_and(is_uuid_v4_text)
    }
}

/// Length of a hyphenated UUID.
const UUID_LEN: usize = uuid::fmt::Hyphenated::LENGTH;

/// The two lower-case hex digits of every byte value: session ids and
/// signatures (`signed.rs`) are written with it.
pub(crate) const HEX_PAIRS: [[u8; 2]; 256] = {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut pairs = [[0; 2]; 256];
    let mut i = 0;
    while i < 256 {
        pairs[i] = [DIGITS[i >> 4], DIGITS[i & 0xf]];
        i += 1;
    }
    pairs
};

/// `bytes` as a lower-case hyphenated UUID (8-4-4-4-12 digits), what
/// `uuid::Uuid::hyphenated` writes, one table lookup per byte. Every issued
/// session pays for this: with it, [`UuidV4::generate`] takes 118
/// instructions instead of 282 (callgrind, x86-64, random bytes included).
#[inline]
fn hyphenated_lower(bytes: &[u8; 16]) -> [u8; UUID_LEN] {
    let mut text = [b'-'; UUID_LEN];
    let mut at = 0;
    for (i, &byte) in bytes.iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            at += 1;
        }
        text[at..at + 2].copy_from_slice(&HEX_PAIRS[usize::from(byte)]);
        at += 2;
    }
    text
}

/// Whether `b` is a lower-case hyphenated UUID of version 4 (RFC 9562 variant):
/// `xxxxxxxx-xxxx-4xxx-Yxxx-xxxxxxxxxxxx`, `x` a lower-case hex digit and `Y`
/// one of `89ab`.
///
/// This runs on every upgrade that carries a cookie, so the 32 digits are
/// checked eight at a time: the four groups after the first are packed into
/// three words.
#[inline]
fn is_uuid_v4_text(b: &[u8; UUID_LEN]) -> bool {
    let word = |parts: [&[u8]; 2]| {
        let mut w = [0u8; 8];
        w[..parts[0].len()].copy_from_slice(parts[0]);
        w[parts[0].len()..].copy_from_slice(parts[1]);
        u64::from_le_bytes(w)
    };
    let digits = [
        word([&b[0..4], &b[4..8]]),
        word([&b[9..13], &b[14..18]]),
        word([&b[19..23], &b[24..28]]),
        word([&b[28..32], &b[32..36]]),
    ];
    let shape = b[8] == b'-'
        && b[13] == b'-'
        && b[18] == b'-'
        && b[23] == b'-'
        && b[14] == b'4'
        && matches!(b[19], b'8' | b'9' | b'a' | b'b');
    shape & digits.iter().fold(true, |ok, &w| ok & all_lower_hex(w))
}

/// Whether all eight bytes of `w` are `0-9` or `a-f` (SWAR: one word at a time).
fn all_lower_hex(w: u64) -> bool {
    use crate::find::{HIGHS, ONES};
    // For a byte below 0x80, adding `0x80 - lo` sets its high bit exactly when
    // the byte is at least `lo`, and never carries into the next byte. Bytes
    // from 0x80 up are refused first, so their lanes need not make sense.
    let at_least = |lo: u8| w.wrapping_add(ONES * u64::from(0x80 - lo));
    let digit = at_least(b'0') & !at_least(b'9' + 1);
    let letter = at_least(b'a') & !at_least(b'f' + 1);
    w & HIGHS == 0 && (digit | letter) & HIGHS == HIGHS
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

/// A cookie value the codec accepted, borrowed from the `Cookie` line: the
/// session id is only copied out once the request is decided, and a value
/// that is sent back unchanged is copied straight from here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Decoded<'a> {
    /// The whole value: `ID[.NODE][.SIGNATURE]`.
    pub(crate) value: &'a [u8],
    /// Its first `id_len` bytes are the id: checked cookie-octets without
    /// `.`, 1 to [`SessionId::MAX_LEN`] of them, accepted by the generator.
    id_len: usize,
    /// The node tag: checked node characters, 1 to [`NodeId::MAX_LEN`] of them.
    node: Option<&'a [u8]>,
    /// Valid, but not the value this layer writes for this id and node: signed
    /// with a key other than the current signing key (key rotation), or
    /// signed while this layer does not sign. Written again on the response.
    pub(crate) rewrite: bool,
}

impl Decoded<'_> {
    /// The session id. `None` cannot happen (the id was checked when it was
    /// read), and callers treat it as no cookie rather than panic.
    pub(crate) fn id(&self) -> Option<SessionId> {
        SessionId::from_cookie_octets(self.value.get(..self.id_len)?)
    }

    /// Whether the value carries the node tag `node` (or none, like `None`).
    pub(crate) fn has_node(&self, node: Option<&NodeId>) -> bool {
        self.node == node.map(|n| n.0.as_bytes())
    }

    /// The node tag, when there is one.
    pub(crate) fn node(&self) -> Option<NodeId> {
        NodeId::from_node_chars(self.node?)
    }
}

/// Where session ids come from, and which ids a cookie may carry.
#[derive(Clone)]
pub(crate) enum Ids {
    /// [`UuidV4`], the default; matched without a dynamic call.
    UuidV4,
    /// Any other generator.
    Custom(Arc<dyn IdGenerator>),
}

impl Ids {
    /// `generator`, or [`Ids::UuidV4`] when it is one.
    pub(crate) fn new<G: IdGenerator>(generator: G) -> Self {
        if std::any::TypeId::of::<G>() == std::any::TypeId::of::<UuidV4>() {
            Self::UuidV4
        } else {
            Self::Custom(Arc::new(generator))
        }
    }

    pub(crate) fn generate(&self) -> SessionId {
        match self {
            Self::UuidV4 => UuidV4.generate(),
            Self::Custom(generator) => generator.generate(),
        }
    }

    /// The length of the session id at the start of `input`, if it is one
    /// the generator could have made. The id ends at the first byte that
    /// cannot be part of one (for UUIDs: after 36 bytes).
    #[inline]
    fn parse(&self, input: &[u8]) -> Option<usize> {
        match self {
            Self::UuidV4 => {
                let text = <&[u8; UUID_LEN]>::try_from(input.get(..UUID_LEN)?).ok()?;
                // Lower-case hex and `-` are cookie-octets.
                is_uuid_v4_text(text).then_some(UUID_LEN)
            }
            Self::Custom(generator) => {
                let len = run(input, SessionId::MAX_LEN, |b| {
                    b != b'.' && is_cookie_octet(b)
                });
                let id = SessionId::from_cookie_octets(&input[..len])?;
                generator.accepts(&id).then_some(len)
            }
        }
    }
}

/// The length of the run of bytes matching `part_of` at the start of `input`,
/// read up to one byte past `max` (a longer run is too long for any part).
fn run(input: &[u8], max: usize, part_of: impl Fn(u8) -> bool) -> usize {
    input
        .iter()
        .take(max + 1)
        .position(|&b| !part_of(b))
        .unwrap_or(input.len().min(max + 1))
}

/// The node-tag characters (which include lower-case hex, so signatures too)
/// after a `.` at `at`: their start and end. `None` without the `.`.
fn segment(input: &[u8], at: usize) -> Option<(usize, usize)> {
    if input.get(at) != Some(&b'.') {
        return None;
    }
    let start = at + 1;
    Some((
        start,
        start + run(&input[start..], NodeId::MAX_LEN, is_node_char),
    ))
}

/// `chars`, node characters read by [`segment`], if they are a node tag.
fn node_tag(chars: &[u8]) -> Option<&[u8]> {
    (!chars.is_empty() && chars.len() <= NodeId::MAX_LEN).then_some(chars)
}

/// The lower-case hex digits of a signature (see `signed.rs`). Defined here,
/// with [`decode_signature`], because builds without signing use them too, to
/// read a signed value's id and node.
pub(crate) const SIGNATURE_HEX_LEN: usize = 32;

/// The bytes of a signature.
pub(crate) const SIGNATURE_LEN: usize = SIGNATURE_HEX_LEN / 2;

// A signature is read as a segment: it must fit in one.
const _: () = assert!(SIGNATURE_HEX_LEN <= NodeId::MAX_LEN);

/// The signature written as `hex`, or `None` if `hex` is not exactly
/// [`SIGNATURE_HEX_LEN`] lower-case hex digits: an upper-case look-alike is
/// not a value this crate wrote. The one test of a signature's shape, for
/// the signing layer that checks it and the unsigned one that drops it.
pub(crate) fn decode_signature(hex: &[u8]) -> Option<[u8; SIGNATURE_LEN]> {
    if hex.len() != SIGNATURE_HEX_LEN {
        return None;
    }
    let nibble = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    };
    let mut out = [0u8; SIGNATURE_LEN];
    for (byte, pair) in out.iter_mut().zip(hex.chunks_exact(2)) {
        *byte = nibble(pair[0])? << 4 | nibble(pair[1])?;
    }
    Some(out)
}

/// Reads and writes cookie values.
pub(crate) struct Codec {
    pub(crate) node: Option<NodeId>,
    pub(crate) ids: Ids,
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
    /// Parses a cookie value; `None` when it is not a value this codec reads
    /// (what it writes, and for an unsigned codec a signing one's values too).
    #[cfg(test)]
    pub(crate) fn decode<'a>(&self, name: &str, value: &'a [u8]) -> Option<Decoded<'a>> {
        let decoded = self.decode_prefix(name, value)?;
        (decoded.value.len() == value.len()).then_some(decoded)
    }

    /// Parses the value at the start of `input`. Whatever follows it is left
    /// to the caller, which checks that the value ends there (at a `;` or the
    /// end of the line). The value is read in one pass, without looking for
    /// where it ends first.
    ///
    /// Every byte is checked by the part it belongs to (id, node tag,
    /// signature), and all of them before the signature's MAC is computed.
    #[inline]
    pub(crate) fn decode_prefix<'a>(&self, name: &str, input: &'a [u8]) -> Option<Decoded<'a>> {
        let id_len = self.ids.parse(input)?;
        #[cfg(feature = "signed")]
        if let Some(signer) = &self.signer {
            // `ID[.NODE].SIGNATURE`
            let first = segment(input, id_len)?;
            let (node, (start, end)) = match segment(input, first.1) {
                Some(second) => (Some(node_tag(&input[first.0..first.1])?), second),
                None => (None, first),
            };
            // The payload ends before the `.` of the signature.
            let stale_key = signer.verify(name, &input[..start - 1], &input[start..end])?;
            return Some(Decoded {
                value: &input[..end],
                id_len,
                node,
                rewrite: stale_key,
            });
        }
        #[cfg(not(feature = "signed"))]
        let _ = name;
        let Some((start, end)) = segment(input, id_len) else {
            return Some(Decoded {
                value: &input[..id_len],
                id_len,
                node: None,
                rewrite: false,
            });
        };
        let node = node_tag(&input[start..end])?;
        // `ID.NODE.SIGNATURE`, from a layer that signs (signing turned off, or
        // a rollback to a build without it). Three segments are unambiguous
        // here, since this layer writes at most two: the id and node are read,
        // and the signature, which cannot be checked, is dropped on the
        // response. Not a weakening: without signing any id is accepted.
        let (len, rewrite) = match segment(input, end) {
            Some((_, sig_end)) if decode_signature(&input[end + 1..sig_end]).is_some() => {
                (sig_end, true)
            }
            _ => (end, false),
        };
        Some(Decoded {
            value: &input[..len],
            id_len,
            node: Some(node),
            rewrite,
        })
    }

    /// Length of the value [`encode`](Self::encode) writes for `id`.
    pub(crate) fn encoded_len(&self, id: &SessionId) -> usize {
        let node = self.node.as_ref().map_or(0, |n| 1 + n.0.as_bytes().len());
        #[cfg(feature = "signed")]
        let sig = self.signer.as_ref().map_or(0, |_| 1 + SIGNATURE_HEX_LEN);
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
            ids: Ids::UuidV4,
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
    fn hyphenated_lower_writes_what_the_uuid_crate_writes() {
        // Every byte value at every position (each position runs through all
        // 256 values as `start` does, its neighbours holding other values),
        // and the all-zero and all-ones extremes.
        let mut cases: Vec<[u8; 16]> = (0..=255u8)
            .map(|start| std::array::from_fn(|i| start.wrapping_add(7 * i as u8)))
            .collect();
        cases.extend([[0; 16], [0xff; 16]]);
        for bytes in cases {
            let mut expected = [0; UUID_LEN];
            uuid::Uuid::from_bytes(bytes)
                .hyphenated()
                .encode_lower(&mut expected);
            assert_eq!(hyphenated_lower(&bytes), expected, "{bytes:02x?}");
        }
    }

    #[test]
    fn generated_ids_are_fresh_v4_uuids() {
        let ids: Vec<SessionId> = (0..1000).map(|_| UuidV4.generate()).collect();
        for id in &ids {
            assert!(UuidV4.accepts(id), "{id}");
            let parsed = uuid::Uuid::try_parse(id.as_str()).unwrap();
            assert_eq!(parsed.get_version_num(), 4, "{id}");
            assert_eq!(parsed.get_variant(), uuid::Variant::RFC4122, "{id}");
        }
        let distinct: std::collections::HashSet<_> = ids.iter().collect();
        assert_eq!(distinct.len(), ids.len());
    }

    #[test]
    fn plain_value_is_the_id() {
        let c = codec(None);
        let id = UuidV4.generate();
        let value = encode(&c, &id);
        assert_eq!(value, id.as_str().as_bytes());
        let d = c.decode("WS", &value).unwrap();
        assert_eq!((d.id(), d.node(), d.rewrite), (Some(id), None, false));
    }

    #[test]
    fn node_tag_round_trips() {
        let c = codec(Some("node-1"));
        let id = UuidV4.generate();
        let value = encode(&c, &id);
        assert_eq!(value, format!("{id}.node-1").as_bytes());
        let d = c.decode("WS", &value).unwrap();
        assert_eq!(d.id(), Some(id));
        assert_eq!(d.node(), NodeId::new("node-1").ok());
    }

    include!("../tests/support/near_miss_signatures.rs");

    #[test]
    fn a_signed_value_is_read_without_its_signature_by_an_unsigned_codec() {
        let sig = "0123456789abcdef0123456789abcdef";
        let id = UuidV4.generate();
        for c in [codec(Some("n1")), codec(None)] {
            let value = format!("{id}.n1.{sig}");
            let d = c.decode("WS", value.as_bytes()).unwrap();
            assert_eq!(
                (d.id(), d.node(), d.rewrite),
                (Some(id), NodeId::new("n1").ok(), true)
            );
            assert_eq!(d.value, value.as_bytes());
            // What this codec writes itself is sent back as it came.
            let own = format!("{id}.n1");
            assert!(!c.decode("WS", own.as_bytes()).unwrap().rewrite);
            for third in near_miss_signatures(sig) {
                let value = format!("{id}.n1.{third}");
                assert_eq!(c.decode("WS", value.as_bytes()), None, "{value}");
            }
        }
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
            "x".repeat(300),
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
    fn session_id_errors_say_what_is_wrong_without_quoting_the_id() {
        let problem = |id: &str| {
            let err = SessionId::new(id).unwrap_err().to_string();
            let rule = "; it must be 1 to 64 cookie-octets other than '.'";
            err.strip_prefix("session id is invalid: ")
                .and_then(|rest| rest.strip_suffix(rule))
                .unwrap_or_else(|| panic!("{err}"))
                .to_owned()
        };
        assert_eq!(problem(""), "it is empty");
        assert_eq!(problem(&"s".repeat(65)), "it is 65 bytes");
        assert_eq!(problem("secret.tail"), "byte 6 is '.' (0x2E)");
        assert_eq!(problem("secret\r\n"), "byte 6 is 0x0D");
        assert_eq!(problem("secret\u{e9}"), "byte 6 is 0xC3");
        // A bad byte is named even in an overlong id.
        assert_eq!(
            problem(&format!("{};", "s".repeat(70))),
            "byte 70 is ';' (0x3B)"
        );
        let err = SessionId::new("secret;").unwrap_err().to_string();
        assert!(!err.contains("secret"), "{err}");
    }

    #[test]
    fn node_id_errors_say_what_is_wrong_and_how_to_fix_the_usual_mistakes() {
        let message = |node: &str| {
            let from_new = NodeId::new(node).unwrap_err().to_string();
            let from_builder = crate::StickyUpgradeLayer::builder()
                .node_id(node)
                .build()
                .unwrap_err()
                .to_string();
            assert_eq!(from_new, from_builder, "the same message both ways");
            from_new
        };
        let rule = "it must be 1 to 32 characters of A-Z, a-z, 0-9, '-' or '_'";
        assert_eq!(
            message(""),
            format!(r#"node id "" is invalid: it is empty; {rule}"#)
        );
        assert_eq!(
            message("a b"),
            format!(r#"node id "a b" is invalid: it holds ' '; {rule}"#)
        );
        assert_eq!(
            message("nœud"),
            format!(r#"node id "nœud" is invalid: it holds 'œ'; {rule}"#)
        );
        let host = "ip-10-0-1-23.eu-west-1.compute.internal";
        assert_eq!(
            message(host),
            format!(
                "node id {host:?} is invalid: it holds '.'; {rule} \
                 (from a host name, take its first label: see `NodeId`)"
            )
        );
        let pod = "websocket-gateway-7d9f8c6b5d-x2k4q";
        assert_eq!(
            message(pod),
            format!(
                "node id {pod:?} is invalid: it is 34 bytes; {rule} \
                 (from a pod name, take its last 32 characters: see `NodeId`)"
            )
        );
        // The first refused character is named, with its hint only.
        assert_eq!(
            message("ab cd.ef"),
            format!(r#"node id "ab cd.ef" is invalid: it holds ' '; {rule}"#)
        );
        // A refused character is named even in an overlong id, beyond the
        // quoted part too.
        let long_dotted = format!("{}.x", "n".repeat(40));
        assert!(message(&long_dotted).contains("it holds '.'"));
        // (The builder's error quotes all of it, `NodeId::new`'s its start.)
        let cut = format!("{}.x", "n".repeat(Rejected::PREVIEW));
        let from_new = NodeId::new(&cut).unwrap_err().to_string();
        let from_builder = crate::StickyUpgradeLayer::builder()
            .node_id(cut.as_str())
            .build()
            .unwrap_err()
            .to_string();
        for err in [from_new, from_builder] {
            let (_, problem) = err.split_once(" is invalid: ").unwrap();
            assert_eq!(
                problem,
                format!(
                    "it holds '.'; {rule} (from a host name, take its first label: see `NodeId`)"
                )
            );
        }
    }

    #[test]
    fn node_id_errors_quote_the_node_id() {
        let err = NodeId::new("a\r\nb").unwrap_err().to_string();
        assert!(err.starts_with(r#"node id "a\r\nb" is invalid"#), "{err}");
        let err = NodeId::new("").unwrap_err().to_string();
        assert!(err.starts_with(r#"node id "" is invalid"#), "{err}");
        let too_long = "n".repeat(NodeId::MAX_LEN + 1);
        let err = NodeId::new(&too_long).unwrap_err().to_string();
        assert!(
            err.contains(&format!("{too_long:?} is invalid")),
            "not cut: {err}"
        );
    }

    #[test]
    fn node_id_errors_cut_a_long_value_at_a_character_boundary() {
        // 'é' is two bytes: the cut at PREVIEW would fall inside one.
        let value = format!("x{}", "é".repeat(200));
        let err = NodeId::new(&value).unwrap_err();
        let cut = format!("x{}", "é".repeat((Rejected::PREVIEW - 1) / 2));
        assert_eq!(
            err.to_string(),
            format!(
                "node id {cut:?}… ({} bytes) is invalid: it holds 'é'; it must be 1 to 32 \
                 characters of A-Z, a-z, 0-9, '-' or '_'",
                value.len()
            )
        );
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

    /// The rule spelled out byte by byte, to check the word-at-a-time version.
    fn is_uuid_v4_by_bytes(b: &[u8]) -> bool {
        b.len() == UUID_LEN
            && b.iter().enumerate().all(|(i, &c)| match i {
                8 | 13 | 18 | 23 => c == b'-',
                14 => c == b'4',
                19 => matches!(c, b'8' | b'9' | b'a' | b'b'),
                _ => c.is_ascii_digit() || (b'a'..=b'f').contains(&c),
            })
    }

    #[test]
    fn uuid_v4_check_agrees_with_the_bytewise_rule_on_every_byte_everywhere() {
        let id = UuidV4.generate();
        let mut text = [0u8; UUID_LEN];
        text.copy_from_slice(id.as_str().as_bytes());
        assert!(is_uuid_v4_text(&text));
        for i in 0..UUID_LEN {
            for byte in 0..=255u8 {
                let mut candidate = text;
                candidate[i] = byte;
                assert_eq!(
                    is_uuid_v4_text(&candidate),
                    is_uuid_v4_by_bytes(&candidate),
                    "byte {byte:#x} at {i}"
                );
            }
        }
        // Two bytes changed at once, across word boundaries.
        for (i, j) in [
            (0, 35),
            (3, 4),
            (7, 9),
            (12, 14),
            (22, 24),
            (27, 28),
            (31, 32),
        ] {
            for (a, b) in [(0x80, b'0'), (b'/', b':'), (b'`', b'g'), (0xff, 0x7f)] {
                let mut candidate = text;
                candidate[i] = a;
                candidate[j] = b;
                assert_eq!(is_uuid_v4_text(&candidate), is_uuid_v4_by_bytes(&candidate));
            }
        }
    }

    #[test]
    fn uuid_v4_given_explicitly_is_the_built_in_check() {
        assert!(matches!(Ids::new(UuidV4), Ids::UuidV4));
        assert!(matches!(
            Ids::new(|| SessionId::new("x").unwrap()),
            Ids::Custom(_)
        ));
    }

    #[test]
    fn uuid_v4_ids_are_distinct_and_accepted() {
        let a = UuidV4.generate();
        let b = UuidV4.generate();
        assert_ne!(a, b);
        assert!(UuidV4.accepts(&a) && UuidV4.accepts(&b));
    }
}
