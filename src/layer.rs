//! [`StickyUpgradeLayer`] and its builder.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use http::HeaderValue;
use tower_layer::Layer;

use crate::affinity::{Codec, IdGenerator, Ids, NodeId};
use crate::cookie::{CookieAttributes, CookieSpec, SameSite};
use crate::origin::OriginPolicy;
use crate::stats::Counters;
use crate::upgrade::Protocols;
use crate::{BuildError, Drain, Stats, StickyUpgrade};

/// The `Retry-After` sent with `503` to upgrades refused while draining.
///
/// ```
/// use http::{header, StatusCode};
/// use tower_sticky_upgrade::{StickyUpgradeLayer, DEFAULT_RETRY_AFTER};
/// # include!("../tests/support/doctest.rs");
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
///
/// // `handshake` (hidden) sends one upgrade request, with `cookie` if given,
/// // through the layer to a handler that accepts it.
/// let layer = StickyUpgradeLayer::new();
/// layer.drain().start();
/// let res = handshake(&layer, None).await;
/// assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
/// assert_eq!(res.headers()[header::RETRY_AFTER], "5");
/// assert_eq!(DEFAULT_RETRY_AFTER.as_secs(), 5);
/// # }
/// ```
pub const DEFAULT_RETRY_AFTER: Duration = Duration::from_secs(5);

/// The longest `Retry-After` the builder accepts: a day. A draining node is
/// gone within minutes; a longer value is a unit mistake, and some clients
/// read the header into 32 bits.
///
/// ```
/// use std::time::Duration;
/// use tower_sticky_upgrade::{BuildError, StickyUpgradeLayer, MAX_RETRY_AFTER};
///
/// assert_eq!(MAX_RETRY_AFTER, Duration::from_secs(24 * 60 * 60));
/// assert!(StickyUpgradeLayer::builder().retry_after(MAX_RETRY_AFTER).build().is_ok());
/// let err = StickyUpgradeLayer::builder()
///     .retry_after(MAX_RETRY_AFTER + Duration::from_millis(1))
///     .build()
///     .unwrap_err();
/// assert!(matches!(err, BuildError::RetryAfterTooLong { .. }));
/// ```
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(24 * 60 * 60);

/// When the affinity cookie is sent again on a successful upgrade.
///
/// `#[non_exhaustive]`: more policies may come (one that re-sends only as
/// `Max-Age` runs out, say), so a `match` on it needs a `_` arm.
///
/// # Example
///
/// ```
/// use http::header::SET_COOKIE;
/// use tower_sticky_upgrade::{Affinity, Refresh, StickyUpgradeLayer};
/// # include!("../tests/support/doctest.rs");
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
///
/// // `upgrade` and `handshake` (hidden) send one upgrade request, with a
/// // `Cookie` line if given, through the layer to a handler that accepts it.
/// let layer = StickyUpgradeLayer::builder()
///     .refresh(Refresh::OnChange)
///     .build()
///     .unwrap();
/// let (session, cookie) = upgrade(&layer, None).await; // issued: cookie set
/// assert_eq!(session.affinity(), Affinity::Issued);
///
/// // The reconnect keeps the session; the cookie is not sent again.
/// let res = handshake(&layer, Some(&cookie)).await;
/// assert!(!res.headers().contains_key(SET_COOKIE));
///
/// // With the default, every successful upgrade re-sends it.
/// let res = handshake(&StickyUpgradeLayer::new(), Some(&cookie)).await;
/// assert!(res.headers().contains_key(SET_COOKIE));
/// # }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Refresh {
    /// On every successful upgrade (the default): keeps a `Max-Age` sliding and
    /// lets a load balancer that learns cookies from responses re-learn it.
    #[default]
    EveryUpgrade,
    /// Only when the value changes: a new id was issued, the session migrated,
    /// or the value must be re-tagged, re-signed with the current key, or
    /// sent without a signature this layer does not check (signing turned off).
    ///
    /// A `Max-Age` (and `Expires`) then counts from when the value was last
    /// set, not from the last reconnect: an active client's cookie still
    /// expires that long after it was issued, and the client gets a new
    /// session at its next upgrade after that.
    OnChange,
}

/// Layer configuration, fixed when built.
pub(crate) struct Config {
    pub(crate) protocols: Protocols,
    pub(crate) cookie: CookieSpec,
    pub(crate) codec: Codec,
    pub(crate) refresh: Refresh,
    /// `Some(Retry-After value)` when upgrades are refused while draining.
    pub(crate) refuse_while_draining: Option<HeaderValue>,
    pub(crate) origins: Option<OriginPolicy>,
}

/// State shared by a layer and every service and session it made.
pub(crate) struct Shared {
    pub(crate) config: Config,
    pub(crate) counters: Counters,
    pub(crate) drain: Drain,
}

/// Gives upgraded connections (WebSockets) session affinity and graceful draining.
///
/// On an upgrade request (HTTP/1.1 `Upgrade`, or HTTP/2 extended CONNECT) the
/// [`StickyUpgrade`] service reads the affinity cookie, decides the
/// [`StickySession`](crate::StickySession) (issued, kept or migrated), puts it in
/// the request extensions and, if the inner service accepts the upgrade, sets
/// the cookie on the `101` (or `2xx`) response so the load balancer pins
/// reconnects to this node. Other requests pass through untouched.
///
/// [`new`](Self::new) uses the defaults; [`builder`](Self::builder) changes them.
/// Cloning is cheap: clones share configuration, counters and [`Drain`].
/// See the [crate docs](crate) for a full example.
///
/// # Example
///
/// ```
/// use tower::{service_fn, ServiceBuilder};
/// use tower_sticky_upgrade::StickyUpgradeLayer;
/// # async fn handle(_: http::Request<()>) -> Result<http::Response<()>, std::convert::Infallible> {
/// #     Ok(http::Response::new(()))
/// # }
///
/// let layer = StickyUpgradeLayer::new();
/// let drain = layer.drain().clone(); // call `drain.start()` on shutdown
/// let svc = ServiceBuilder::new().layer(layer).service(service_fn(handle));
/// # let _ = (svc, drain);
/// ```
#[derive(Clone)]
pub struct StickyUpgradeLayer {
    pub(crate) shared: Arc<Shared>,
}

impl StickyUpgradeLayer {
    /// A layer with the defaults: cookie `WS_SESSION_ID` with
    /// `Path=/; Secure; HttpOnly; SameSite=Lax` and no lifetime (a session
    /// cookie), UUID v4 ids, no node id, refreshed on every upgrade, accepting
    /// `websocket`, refusing upgrades with `503` and `Retry-After: 5` while its
    /// own [`Drain`] (close spread 10 s, no close delay) is draining.
    ///
    /// ```
    /// use std::time::Duration;
    /// use tower_sticky_upgrade::{StickyUpgradeLayer, DEFAULT_CLOSE_SPREAD, DEFAULT_COOKIE_NAME};
    ///
    /// let layer = StickyUpgradeLayer::new();
    /// assert_eq!(layer.cookie_name(), DEFAULT_COOKIE_NAME);
    /// assert!(!layer.drain().is_draining());
    /// assert_eq!(layer.drain().close_spread(), DEFAULT_CLOSE_SPREAD);
    /// assert_eq!(layer.drain().close_delay(), Duration::ZERO);
    /// assert_eq!(layer.stats().upgrades, 0);
    /// ```
    #[must_use]
    pub fn new() -> Self {
        match StickyUpgradeBuilder::default().build() {
            Ok(layer) => layer,
            // The defaults are tested to be valid.
            Err(e) => unreachable!("default configuration is invalid: {e}"),
        }
    }

    /// A builder to change any default.
    ///
    /// ```
    /// use tower_sticky_upgrade::StickyUpgradeLayer;
    ///
    /// let layer = StickyUpgradeLayer::builder()
    ///     .cookie_name("ws_affinity")
    ///     .build()
    ///     .expect("valid configuration");
    /// assert_eq!(layer.cookie_name(), "ws_affinity");
    /// ```
    pub fn builder() -> StickyUpgradeBuilder {
        StickyUpgradeBuilder::default()
    }

    /// The drain controller this layer refuses upgrades for and hands guards from.
    ///
    /// ```
    /// use tower_sticky_upgrade::StickyUpgradeLayer;
    ///
    /// let layer = StickyUpgradeLayer::new();
    /// let copy = layer.clone(); // clones share one drain
    /// let drain = layer.drain().clone(); // kept for the shutdown signal
    /// drain.start();
    /// assert!(copy.drain().is_draining());
    /// ```
    pub fn drain(&self) -> &Drain {
        &self.shared.drain
    }

    /// A snapshot of the counters.
    ///
    /// ```
    /// use http::header;
    /// use tower_sticky_upgrade::StickyUpgradeLayer;
    /// # include!("../tests/support/doctest.rs");
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    ///
    /// // `handshake` (hidden) sends one upgrade request, with `cookie` if given,
    /// // through the layer to a handler that accepts it.
    /// let layer = StickyUpgradeLayer::new();
    /// let first = handshake(&layer, None).await;
    /// let cookie = first.headers()[header::SET_COOKIE].to_str().unwrap();
    /// let cookie = cookie.split(';').next().unwrap();
    /// handshake(&layer, Some(cookie)).await;
    ///
    /// let stats = layer.stats();
    /// assert_eq!((stats.upgrades, stats.issued, stats.kept), (2, 1, 1));
    /// assert_eq!(stats.active, 0); // no guard was taken
    /// # }
    /// ```
    pub fn stats(&self) -> Stats {
        self.shared.counters.snapshot(self.shared.drain.active())
    }

    /// The name of the affinity cookie.
    ///
    /// ```
    /// use tower_sticky_upgrade::{StickyUpgradeLayer, DEFAULT_COOKIE_NAME};
    ///
    /// assert_eq!(StickyUpgradeLayer::new().cookie_name(), DEFAULT_COOKIE_NAME);
    /// let layer = StickyUpgradeLayer::builder().cookie_name("__Host-ws").build().unwrap();
    /// assert_eq!(layer.cookie_name(), "__Host-ws");
    /// ```
    pub fn cookie_name(&self) -> &str {
        &self.shared.config.cookie.name
    }
}

impl Default for StickyUpgradeLayer {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for StickyUpgradeLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let config = &self.shared.config;
        f.debug_struct("StickyUpgradeLayer")
            .field(
                "cookie",
                &format_args!("{}=…{}", config.cookie.name, config.cookie.suffix),
            )
            .field("codec", &config.codec)
            .field("protocols", &config.protocols)
            .field("refresh", &config.refresh)
            .field("refuse_while_draining", &config.refuse_while_draining)
            .field("origins", &config.origins)
            .field("drain", &self.shared.drain)
            .finish()
    }
}

impl<S> Layer<S> for StickyUpgradeLayer {
    type Service = StickyUpgrade<S>;

    fn layer(&self, inner: S) -> Self::Service {
        StickyUpgrade::new(inner, self.clone())
    }
}

/// Configures a [`StickyUpgradeLayer`]; every setter shows its default.
///
/// Nothing is checked until [`build`](Self::build), which checks everything and
/// returns a [`BuildError`] naming the rule broken.
///
/// # Example
///
/// ```
/// use std::time::Duration;
/// use tower_sticky_upgrade::{Drain, Refresh, SameSite, StickyUpgradeLayer};
///
/// let drain = Drain::with_close_spread(Duration::from_secs(20));
/// let layer = StickyUpgradeLayer::builder()
///     .cookie_name("__Host-ws")
///     .max_age(Duration::from_secs(24 * 60 * 60))
///     .expires(true)
///     .same_site(SameSite::Strict)
///     .node_id("node-7")
///     .refresh(Refresh::EveryUpgrade)
///     .retry_after(Duration::from_secs(3))
///     .drain(drain)
///     .build()
///     .expect("valid configuration");
/// assert_eq!(layer.cookie_name(), "__Host-ws");
/// ```
#[must_use]
#[derive(Clone)]
pub struct StickyUpgradeBuilder {
    cookie: CookieAttributes,
    node: Option<String>,
    ids: Ids,
    refresh: Refresh,
    protocols: Vec<String>,
    refuse_while_draining: bool,
    retry_after: Duration,
    drain: Option<Drain>,
    origins: Option<Vec<String>>,
    require_origin: bool,
    /// `None`: unsigned; `Some` of an empty list is a build error.
    #[cfg(feature = "signed")]
    signing_keys: Option<Vec<Vec<u8>>>,
}

impl Default for StickyUpgradeBuilder {
    fn default() -> Self {
        Self {
            cookie: CookieAttributes::default(),
            node: None,
            ids: Ids::UuidV4,
            refresh: Refresh::default(),
            protocols: vec!["websocket".to_owned()],
            refuse_while_draining: true,
            retry_after: DEFAULT_RETRY_AFTER,
            drain: None,
            origins: None,
            require_origin: false,
            #[cfg(feature = "signed")]
            signing_keys: None,
        }
    }
}

impl StickyUpgradeBuilder {
    /// The cookie name. Default: `WS_SESSION_ID`. Must be an RFC 9110 token and
    /// must not start with `AWSALB` (reserved by AWS load balancers). A
    /// `__Host-` prefix (recommended) needs `Secure`, `Path=/` and no `Domain`;
    /// `__Secure-` needs `Secure`; `__Http-` needs `Secure` and `HttpOnly`;
    /// `__Host-Http-` needs all of these. Prefixes match in any case.
    ///
    /// ```
    /// use tower_sticky_upgrade::StickyUpgradeLayer;
    /// # include!("../tests/support/doctest.rs");
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    ///
    /// // `set_cookie` (hidden) builds the layer and returns the `Set-Cookie`
    /// // line of one accepted handshake.
    /// let line = set_cookie(StickyUpgradeLayer::builder().cookie_name("__Host-ws")).await;
    /// assert!(line.starts_with("__Host-ws="));
    /// assert!(line.ends_with("; Path=/; Secure; HttpOnly; SameSite=Lax"));
    /// # }
    /// ```
    pub fn cookie_name(mut self, name: impl Into<String>) -> Self {
        self.cookie.name = name.into();
        self
    }

    /// The `Path` attribute. Default: `/`.
    ///
    /// ```
    /// use tower_sticky_upgrade::StickyUpgradeLayer;
    /// # include!("../tests/support/doctest.rs");
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    ///
    /// // `set_cookie` (hidden) builds the layer and returns the `Set-Cookie`
    /// // line of one accepted handshake.
    /// let line = set_cookie(StickyUpgradeLayer::builder().path("/chat")).await;
    /// assert!(line.ends_with("; Path=/chat; Secure; HttpOnly; SameSite=Lax"));
    /// # }
    /// ```
    pub fn path(mut self, path: impl Into<String>) -> Self {
        self.cookie.path = path.into();
        self
    }

    /// The `Domain` attribute. Default: none (the cookie stays on the exact host).
    ///
    /// ```
    /// use tower_sticky_upgrade::StickyUpgradeLayer;
    /// # include!("../tests/support/doctest.rs");
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    ///
    /// // `set_cookie` (hidden) builds the layer and returns the `Set-Cookie`
    /// // line of one accepted handshake.
    /// let line = set_cookie(StickyUpgradeLayer::builder().domain("example.com")).await;
    /// assert!(line.ends_with("; Path=/; Domain=example.com; Secure; HttpOnly; SameSite=Lax"));
    /// # }
    /// ```
    pub fn domain(mut self, domain: impl Into<String>) -> Self {
        self.cookie.domain = Some(domain.into());
        self
    }

    /// The `Max-Age` attribute, in whole seconds (a fraction is dropped: a
    /// cookie must not outlive what was asked), from 1 second to 400 days.
    /// Default: none, so the cookie lasts for the browser session.
    ///
    /// ```
    /// use std::time::Duration;
    /// use tower_sticky_upgrade::StickyUpgradeLayer;
    /// # include!("../tests/support/doctest.rs");
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    ///
    /// // `set_cookie` (hidden) builds the layer and returns the `Set-Cookie`
    /// // line of one accepted handshake.
    /// let hour = Duration::from_millis(3_600_900); // the 0.9 s is dropped
    /// let line = set_cookie(StickyUpgradeLayer::builder().max_age(hour)).await;
    /// assert!(line.ends_with("; Path=/; Max-Age=3600; Secure; HttpOnly; SameSite=Lax"));
    /// # }
    /// ```
    pub fn max_age(mut self, max_age: Duration) -> Self {
        self.cookie.max_age = Some(max_age);
        self
    }

    /// Also send `Expires`, computed from `Max-Age` at each response, for
    /// clients that ignore `Max-Age`. Default: `false`. Needs a `max_age`.
    ///
    /// ```
    /// use std::time::{Duration, SystemTime};
    /// use tower_sticky_upgrade::StickyUpgradeLayer;
    /// # include!("../tests/support/doctest.rs");
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    ///
    /// // `set_cookie` (hidden) builds the layer and returns the `Set-Cookie`
    /// // line of one accepted handshake.
    /// let builder = StickyUpgradeLayer::builder()
    ///     .max_age(Duration::from_secs(3600))
    ///     .expires(true);
    /// let line = set_cookie(builder).await;
    /// let (_, date) = line.split_once("; Expires=").unwrap();
    /// let expires = httpdate::parse_http_date(date).unwrap();
    /// let now = SystemTime::now();
    /// // An hour from now, to the second the date format keeps.
    /// assert!(expires > now + Duration::from_secs(3590));
    /// assert!(expires <= now + Duration::from_secs(3600));
    /// # }
    /// ```
    pub fn expires(mut self, enabled: bool) -> Self {
        self.cookie.expires = enabled;
        self
    }

    /// The `SameSite` attribute. Default: [`SameSite::Lax`]. For a socket on
    /// another site than its page, see [`SameSite`].
    ///
    /// ```
    /// use tower_sticky_upgrade::{SameSite, StickyUpgradeLayer};
    /// # include!("../tests/support/doctest.rs");
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    ///
    /// // `set_cookie` (hidden) builds the layer and returns the `Set-Cookie`
    /// // line of one accepted handshake.
    /// let line = set_cookie(StickyUpgradeLayer::builder().same_site(SameSite::Strict)).await;
    /// assert!(line.ends_with("; SameSite=Strict"));
    /// # }
    /// ```
    pub fn same_site(mut self, same_site: SameSite) -> Self {
        self.cookie.same_site = same_site;
        self
    }

    /// The `Secure` attribute. Default: `true`. Turn it off only for plain-HTTP
    /// development: browsers then refuse `SameSite=None`, `Partitioned` and the
    /// `__Host-`, `__Secure-` and `__Http-` prefixes, and so does
    /// [`build`](Self::build).
    ///
    /// ```
    /// use tower_sticky_upgrade::StickyUpgradeLayer;
    /// # include!("../tests/support/doctest.rs");
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    ///
    /// // `set_cookie` (hidden) builds the layer and returns the `Set-Cookie`
    /// // line of one accepted handshake.
    /// let line = set_cookie(StickyUpgradeLayer::builder().secure(false)).await;
    /// assert!(line.ends_with("; Path=/; HttpOnly; SameSite=Lax"));
    /// # }
    /// ```
    pub fn secure(mut self, enabled: bool) -> Self {
        self.cookie.secure = enabled;
        self
    }

    /// The `HttpOnly` attribute. Default: `true` (page scripts cannot read the id).
    /// The `__Http-` and `__Host-Http-` name prefixes need it.
    ///
    /// ```
    /// use tower_sticky_upgrade::StickyUpgradeLayer;
    /// # include!("../tests/support/doctest.rs");
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    ///
    /// // `set_cookie` (hidden) builds the layer and returns the `Set-Cookie`
    /// // line of one accepted handshake.
    /// let line = set_cookie(StickyUpgradeLayer::builder().http_only(false)).await;
    /// assert!(line.ends_with("; Path=/; Secure; SameSite=Lax"));
    /// # }
    /// ```
    pub fn http_only(mut self, enabled: bool) -> Self {
        self.cookie.http_only = enabled;
        self
    }

    /// The `Partitioned` attribute (CHIPS). Default: `false`. Needs `Secure`.
    /// With [`SameSite::None`], it keeps the session of a socket on another
    /// site than its page, once per top-level site, in browsers that refuse
    /// unpartitioned third-party cookies (Chromium with third-party cookies
    /// blocked; not Firefox when it blocks all of them: see [`SameSite`]).
    ///
    /// ```
    /// use tower_sticky_upgrade::{SameSite, StickyUpgradeLayer};
    /// # include!("../tests/support/doctest.rs");
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    ///
    /// // `set_cookie` (hidden) builds the layer and returns the `Set-Cookie`
    /// // line of one accepted handshake.
    /// let builder = StickyUpgradeLayer::builder()
    ///     .same_site(SameSite::None)
    ///     .partitioned(true);
    /// let line = set_cookie(builder).await;
    /// assert!(line.ends_with("; Secure; HttpOnly; SameSite=None; Partitioned"));
    /// # }
    /// ```
    pub fn partitioned(mut self, enabled: bool) -> Self {
        self.cookie.partitioned = enabled;
        self
    }

    /// This node's id, carried in the cookie value so that a reconnect landing on
    /// another node is reported as [`Affinity::Migrated`](crate::Affinity::Migrated).
    /// Default: none. 1 to 32 bytes of `A-Z a-z 0-9 - _`, no dots: see
    /// [`NodeId`](crate::NodeId) for deriving one from a host name.
    ///
    /// A balancer can route by the tag, with no state of its own: the
    /// repository's `deploy/haproxy.cfg` and `deploy/nginx-node-tags.conf`
    /// send a value tagged `n1` to the node `n1`.
    ///
    /// ```
    /// use tower_sticky_upgrade::StickyUpgradeLayer;
    /// # include!("../tests/support/doctest.rs");
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    ///
    /// // `set_cookie` (hidden) builds the layer and returns the `Set-Cookie`
    /// // line of one accepted handshake.
    /// let line = set_cookie(StickyUpgradeLayer::builder().node_id("node-7")).await;
    /// let (pair, _) = line.split_once(';').unwrap();
    /// assert!(pair.ends_with(".node-7")); // `WS_SESSION_ID=ID.node-7`
    /// # }
    /// ```
    pub fn node_id(mut self, node: impl Into<String>) -> Self {
        self.node = Some(node.into());
        self
    }

    /// The session id generator. Default: [`UuidV4`](crate::UuidV4).
    ///
    /// ```
    /// use tower_sticky_upgrade::{SessionId, StickyUpgradeLayer};
    /// # include!("../tests/support/doctest.rs");
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    ///
    /// // `set_cookie` (hidden) builds the layer and returns the `Set-Cookie`
    /// // line of one accepted handshake.
    /// // A fixed id, for illustration only: real ids must be unpredictable.
    /// let fixed = || SessionId::new("fixed-id").unwrap();
    /// let line = set_cookie(StickyUpgradeLayer::builder().id_generator(fixed)).await;
    /// assert!(line.starts_with("WS_SESSION_ID=fixed-id;"));
    /// # }
    /// ```
    pub fn id_generator(mut self, generator: impl IdGenerator) -> Self {
        self.ids = Ids::new(generator);
        self
    }

    /// When to send the cookie again. Default: [`Refresh::EveryUpgrade`].
    ///
    /// ```
    /// use http::header::SET_COOKIE;
    /// use tower_sticky_upgrade::{Refresh, StickyUpgradeLayer};
    /// # include!("../tests/support/doctest.rs");
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    ///
    /// // `handshake` (hidden) sends one upgrade request, with `cookie` if given,
    /// // through the layer to a handler that accepts it.
    /// let layer = StickyUpgradeLayer::builder().refresh(Refresh::OnChange).build().unwrap();
    /// let first = handshake(&layer, None).await; // a new id: the cookie is set
    /// let cookie = first.headers()[SET_COOKIE].to_str().unwrap();
    /// let cookie = cookie.split(';').next().unwrap();
    /// let again = handshake(&layer, Some(cookie)).await; // kept, unchanged
    /// assert!(again.headers().get(SET_COOKIE).is_none());
    /// # }
    /// ```
    pub fn refresh(mut self, refresh: Refresh) -> Self {
        self.refresh = refresh;
        self
    }

    /// The upgrade protocols acted on, matched case-insensitively against the
    /// `Upgrade` header and the extended CONNECT `:protocol`. Replaces the
    /// default, `["websocket"]`.
    ///
    /// These are `Upgrade` tokens, not WebSocket subprotocols: a GraphQL or
    /// STOMP socket still upgrades to `websocket`, and names its subprotocol
    /// in `Sec-WebSocket-Protocol`, which the layer does not read. Leave the
    /// default for WebSockets; a list without `websocket` leaves WebSocket
    /// upgrades untouched (no session, no cookie).
    ///
    /// ```
    /// use std::convert::Infallible;
    /// use http::header::{CONNECTION, UPGRADE};
    /// use http::{Request, Response};
    /// use tower::{service_fn, Layer, ServiceExt};
    /// use tower_sticky_upgrade::{StickySession, StickyUpgradeLayer};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// // WebSockets, and a custom protocol upgraded with `Upgrade: my-tunnel`.
    /// let layer = StickyUpgradeLayer::builder()
    ///     .upgrade_protocols(["websocket", "my-tunnel"])
    ///     .build()
    ///     .unwrap();
    /// // The handler answers whether the layer gave the request a session.
    /// let svc = layer.layer(service_fn(|req: Request<()>| async move {
    ///     let tagged = req.extensions().get::<StickySession>().is_some();
    ///     Ok::<_, Infallible>(Response::new(tagged))
    /// }));
    /// let upgrade = |protocol: &str| {
    ///     let req = Request::get("/tunnel").header(CONNECTION, "upgrade");
    ///     req.header(UPGRADE, protocol).body(()).unwrap()
    /// };
    /// for (protocol, tagged) in [("my-tunnel", true), ("WebSocket", true), ("h2c", false)] {
    ///     let res = svc.clone().oneshot(upgrade(protocol)).await.unwrap();
    ///     assert_eq!(*res.body(), tagged, "{protocol}");
    /// }
    /// # }
    /// ```
    pub fn upgrade_protocols<I, P>(mut self, protocols: I) -> Self
    where
        I: IntoIterator<Item = P>,
        P: Into<String>,
    {
        self.protocols = protocols.into_iter().map(Into::into).collect();
        self
    }

    /// Whether the layer answers upgrades itself with `503` and `Retry-After`
    /// (and `Connection: close` up to HTTP/1.1) while draining, without
    /// calling the inner service.
    /// Default: `true`. With `false` they pass through (and are still tagged).
    ///
    /// ```
    /// use http::{header, StatusCode};
    /// use tower_sticky_upgrade::StickyUpgradeLayer;
    /// # include!("../tests/support/doctest.rs");
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    ///
    /// // `handshake` (hidden) sends one upgrade request, with `cookie` if given,
    /// // through the layer to a handler that accepts it.
    /// let refusing = StickyUpgradeLayer::new();
    /// let passing = StickyUpgradeLayer::builder()
    ///     .refuse_while_draining(false)
    ///     .build()
    ///     .unwrap();
    /// refusing.drain().start();
    /// passing.drain().start();
    ///
    /// let res = handshake(&refusing, None).await;
    /// assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    /// let res = handshake(&passing, None).await;
    /// assert_eq!(res.status(), StatusCode::SWITCHING_PROTOCOLS);
    /// assert!(res.headers().contains_key(header::SET_COOKIE));
    /// # }
    /// ```
    pub fn refuse_while_draining(mut self, refuse: bool) -> Self {
        self.refuse_while_draining = refuse;
        self
    }

    /// The `Retry-After` of upgrades refused while draining, in whole seconds
    /// (rounded up: a client must not come back sooner than asked), from 1 s
    /// to [`MAX_RETRY_AFTER`] (a day). Default: [`DEFAULT_RETRY_AFTER`] (5 s).
    ///
    /// ```
    /// use std::time::Duration;
    /// use http::header::RETRY_AFTER;
    /// use tower_sticky_upgrade::StickyUpgradeLayer;
    /// # include!("../tests/support/doctest.rs");
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    ///
    /// // `handshake` (hidden) sends one upgrade request, with `cookie` if given,
    /// // through the layer to a handler that accepts it.
    /// let layer = StickyUpgradeLayer::builder()
    ///     .retry_after(Duration::from_millis(2500))
    ///     .build()
    ///     .unwrap();
    /// layer.drain().start();
    /// let res = handshake(&layer, None).await;
    /// assert_eq!(res.headers()[RETRY_AFTER], "3");
    /// # }
    /// ```
    pub fn retry_after(mut self, retry_after: Duration) -> Self {
        self.retry_after = retry_after;
        self
    }

    /// Share a [`Drain`] controller, for example one made with a close delay or
    /// a custom close spread ([`Drain::builder`]) or shared by several layers.
    /// Default: a new [`Drain::new`].
    ///
    /// ```
    /// use std::time::Duration;
    /// use tower_sticky_upgrade::{Drain, StickyUpgradeLayer};
    ///
    /// let drain = Drain::builder().close_delay(Duration::from_secs(8)).build();
    /// let public = StickyUpgradeLayer::builder().drain(drain.clone()).build().unwrap();
    /// let admin = StickyUpgradeLayer::builder()
    ///     .cookie_name("ADMIN_WS")
    ///     .drain(drain.clone())
    ///     .build()
    ///     .unwrap();
    /// assert_eq!(public.drain().close_delay(), Duration::from_secs(8));
    /// drain.start(); // one call drains both layers
    /// assert!(public.drain().is_draining() && admin.drain().is_draining());
    /// ```
    pub fn drain(mut self, drain: Drain) -> Self {
        self.drain = Some(drain);
        self
    }

    /// Refuse upgrades whose `Origin` is not one of `origins` with `403`, before
    /// the inner service runs (against cross-site WebSocket hijacking). Each is
    /// `scheme://host[:port]` as a browser sends it (an IPv6 host in brackets
    /// and shortest form, a port without leading zeros), compared
    /// case-insensitively, default ports ignored; anything else would never
    /// match and is [`BuildError::InvalidOrigin`]. Patterns such as
    /// `https://*.example.com` are not supported
    /// ([`BuildError::WildcardOrigin`]), nor is an empty list
    /// ([`BuildError::NoAllowedOrigins`]). Upgrades without `Origin`
    /// (non-browser clients) pass unless [`require_origin`](Self::require_origin)
    /// is set. Default: no check. Called again, the last list wins.
    /// Without the `http2` feature, every HTTP/2 or HTTP/3 `CONNECT` is
    /// checked too, since a browser's extended CONNECT cannot be told apart.
    ///
    /// ```
    /// use std::convert::Infallible;
    /// use http::header::{CONNECTION, ORIGIN, UPGRADE};
    /// use http::{Request, Response, StatusCode};
    /// use tower::{service_fn, Layer, ServiceExt};
    /// use tower_sticky_upgrade::{BuildError, Refusal, StickyUpgradeLayer};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let layer = StickyUpgradeLayer::builder()
    ///     .allowed_origins(["https://app.example.com", "http://localhost:3000"])
    ///     .build()
    ///     .unwrap();
    /// // A handler that accepts every upgrade.
    /// let svc = layer.layer(service_fn(|_: Request<()>| async {
    ///     Ok::<_, Infallible>(Response::builder().status(101).body(()).unwrap())
    /// }));
    /// let from = |origin: &str| {
    ///     let req = Request::get("/ws").header(CONNECTION, "upgrade");
    ///     let req = req.header(UPGRADE, "websocket").header(ORIGIN, origin);
    ///     req.body(()).unwrap()
    /// };
    ///
    /// let res = svc.clone().oneshot(from("https://app.example.com")).await.unwrap();
    /// assert_eq!(res.status(), StatusCode::SWITCHING_PROTOCOLS);
    /// // A page of another site: refused before the handler runs.
    /// let res = svc.oneshot(from("https://attacker.example")).await.unwrap();
    /// assert_eq!(res.status(), StatusCode::FORBIDDEN);
    /// assert_eq!(res.extensions().get(), Some(&Refusal::OriginNotAllowed));
    ///
    /// let err = StickyUpgradeLayer::builder()
    ///     .allowed_origins(["https://*.example.com"])
    ///     .build()
    ///     .unwrap_err();
    /// assert!(matches!(err, BuildError::WildcardOrigin { .. }));
    /// # }
    /// ```
    pub fn allowed_origins<I, O>(mut self, origins: I) -> Self
    where
        I: IntoIterator<Item = O>,
        O: Into<String>,
    {
        self.origins = Some(origins.into_iter().map(Into::into).collect());
        self
    }

    /// With `true`, upgrades that carry no `Origin` are refused with `403` too,
    /// so only browsers on an [allowed origin](Self::allowed_origins) get
    /// through; non-browser clients usually send no `Origin`. Default: `false`.
    /// Without `allowed_origins` it is a build error
    /// ([`BuildError::RequireOriginWithoutAllowedOrigins`]).
    ///
    /// ```
    /// use tower_sticky_upgrade::{BuildError, StickyUpgradeLayer};
    ///
    /// let browsers_only = StickyUpgradeLayer::builder()
    ///     .allowed_origins(["https://app.example.com"])
    ///     .require_origin(true)
    ///     .build();
    /// assert!(browsers_only.is_ok());
    ///
    /// let err = StickyUpgradeLayer::builder()
    ///     .require_origin(true)
    ///     .build()
    ///     .unwrap_err();
    /// assert_eq!(err, BuildError::RequireOriginWithoutAllowedOrigins);
    /// ```
    pub fn require_origin(mut self, require: bool) -> Self {
        self.require_origin = require;
        self
    }

    /// Sign cookie values with HMAC-SHA256 so that clients cannot forge or pick
    /// a session id. Each key must be at least 32 bytes; the first signs, all
    /// verify, so rotate by putting the new key first and keeping the old one
    /// until old cookies have expired. Default: unsigned. An empty list is a
    /// build error ([`BuildError::NoSigningKeys`]), not a way to turn signing off.
    ///
    /// A key is used as the bytes it is made of: a hex or base64 string is not
    /// decoded, so a 32-character hex string passes the length check with only
    /// 128 bits of randomness. Give 32 random bytes, or 64 hex characters.
    ///
    /// ```
    /// use tower_sticky_upgrade::{BuildError, StickyUpgradeLayer};
    /// # include!("../tests/support/doctest.rs");
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    ///
    /// // `set_cookie` (hidden) builds the layer and returns the `Set-Cookie`
    /// // line of one accepted handshake.
    /// // Keys: 32 random bytes or more, the same on every node, from a secret store.
    /// let (new_key, old_key) = ([7u8; 32], [9u8; 32]);
    /// let builder = StickyUpgradeLayer::builder().signing_keys([new_key, old_key]);
    /// let line = set_cookie(builder).await;
    /// // `WS_SESSION_ID=ID.SIGNATURE`, the signature 128 bits in lower-case hex.
    /// let (value, _) = line.split_once(';').unwrap();
    /// let (_, signature) = value.split_once('.').unwrap();
    /// assert_eq!(signature.len(), 32);
    /// assert!(signature.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')));
    ///
    /// let short = StickyUpgradeLayer::builder().signing_keys([[7u8; 16]]).build();
    /// assert_eq!(short.unwrap_err(), BuildError::SigningKeyTooShort { index: 0, len: 16 });
    /// # }
    /// ```
    #[cfg(feature = "signed")]
    #[cfg_attr(docsrs, doc(cfg(feature = "signed")))]
    pub fn signing_keys<I, K>(mut self, keys: I) -> Self
    where
        I: IntoIterator<Item = K>,
        K: AsRef<[u8]>,
    {
        self.signing_keys = Some(keys.into_iter().map(|k| k.as_ref().to_vec()).collect());
        self
    }

    /// Checks every setting and builds the layer.
    ///
    /// # Errors
    ///
    /// A [`BuildError`] naming the first rule broken.
    ///
    /// # Example
    ///
    /// ```
    /// use std::time::Duration;
    /// use tower_sticky_upgrade::{BuildError, StickyUpgradeLayer};
    ///
    /// assert!(StickyUpgradeLayer::builder().node_id("node-1").build().is_ok());
    ///
    /// let err = StickyUpgradeLayer::builder().node_id("node.1").build().unwrap_err();
    /// assert_eq!(err, BuildError::InvalidNodeId { node: "node.1".into() });
    /// let err = StickyUpgradeLayer::builder()
    ///     .retry_after(Duration::ZERO)
    ///     .build()
    ///     .unwrap_err();
    /// assert_eq!(err, BuildError::RetryAfterZero);
    /// ```
    pub fn build(self) -> Result<StickyUpgradeLayer, BuildError> {
        let cookie = self.cookie.build()?;
        let node = self
            .node
            .map(|n| NodeId::new(&n).map_err(|_| BuildError::InvalidNodeId { node: n }))
            .transpose()?;
        if self.protocols.is_empty() {
            return Err(BuildError::NoProtocols);
        }
        if let Some(bad) = self
            .protocols
            .iter()
            .find(|p| p.is_empty() || !p.bytes().all(crate::cookie::is_tchar))
        {
            return Err(BuildError::InvalidProtocol {
                protocol: bad.clone(),
            });
        }
        let protocols = Protocols::new(self.protocols.into_iter().map(Into::into));
        let refuse_while_draining = if self.refuse_while_draining {
            let secs = self
                .retry_after
                .as_secs()
                .saturating_add(u64::from(self.retry_after.subsec_nanos() > 0));
            if secs == 0 {
                return Err(BuildError::RetryAfterZero);
            }
            if self.retry_after > MAX_RETRY_AFTER {
                return Err(BuildError::RetryAfterTooLong {
                    retry_after: self.retry_after,
                });
            }
            Some(HeaderValue::from(secs))
        } else {
            None
        };
        let origins = match (self.origins, self.require_origin) {
            (None, true) => return Err(BuildError::RequireOriginWithoutAllowedOrigins),
            (None, false) => None,
            (Some(list), require) => Some(OriginPolicy::new(&list, require)?),
        };
        #[cfg(feature = "signed")]
        let signer = match &self.signing_keys {
            None => None,
            Some(keys) if keys.is_empty() => return Err(BuildError::NoSigningKeys),
            Some(keys) => {
                if let Some((index, key)) = keys
                    .iter()
                    .enumerate()
                    .find(|(_, k)| k.len() < crate::signed::MIN_KEY_LEN)
                {
                    return Err(BuildError::SigningKeyTooShort {
                        index,
                        len: key.len(),
                    });
                }
                crate::signed::Signer::new(keys)
            }
        };
        let codec = Codec {
            node,
            ids: self.ids,
            #[cfg(feature = "signed")]
            signer,
        };
        Ok(StickyUpgradeLayer {
            shared: Arc::new(Shared {
                config: Config {
                    protocols,
                    cookie,
                    codec,
                    refresh: self.refresh,
                    refuse_while_draining,
                    origins,
                },
                counters: Counters::default(),
                drain: self.drain.unwrap_or_default(),
            }),
        })
    }
}

impl fmt::Debug for StickyUpgradeBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("StickyUpgradeBuilder");
        d.field("cookie", &self.cookie)
            .field("node", &self.node)
            .field("refresh", &self.refresh)
            .field("protocols", &self.protocols)
            .field("refuse_while_draining", &self.refuse_while_draining)
            .field("retry_after", &self.retry_after)
            .field("drain", &self.drain)
            .field("origins", &self.origins)
            .field("require_origin", &self.require_origin);
        #[cfg(feature = "signed")]
        d.field("signing_keys", &self.signing_keys.as_ref().map(Vec::len));
        d.finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        let layer = StickyUpgradeBuilder::default().build().unwrap();
        assert_eq!(layer.cookie_name(), crate::DEFAULT_COOKIE_NAME);
        assert_eq!(
            &*layer.shared.config.cookie.suffix,
            "; Path=/; Secure; HttpOnly; SameSite=Lax"
        );
        assert_eq!(
            layer.shared.config.refuse_while_draining,
            Some(HeaderValue::from_static("5"))
        );
    }

    #[test]
    fn bad_node_id_is_a_build_error() {
        for node in ["", "a.b", "a b", &"n".repeat(33)] {
            let err = StickyUpgradeLayer::builder()
                .node_id(node)
                .build()
                .unwrap_err();
            assert_eq!(err, BuildError::InvalidNodeId { node: node.into() });
        }
    }

    #[test]
    fn protocols_must_be_tokens() {
        let none: [&str; 0] = [];
        assert_eq!(
            StickyUpgradeLayer::builder()
                .upgrade_protocols(none)
                .build()
                .unwrap_err(),
            BuildError::NoProtocols
        );
        assert_eq!(
            StickyUpgradeLayer::builder()
                .upgrade_protocols(["web socket"])
                .build()
                .unwrap_err(),
            BuildError::InvalidProtocol {
                protocol: "web socket".into()
            }
        );
    }

    #[test]
    fn retry_after_rounds_up_and_must_not_be_zero() {
        let layer = StickyUpgradeLayer::builder()
            .retry_after(Duration::from_millis(1500))
            .build()
            .unwrap();
        assert_eq!(
            layer.shared.config.refuse_while_draining,
            Some(HeaderValue::from_static("2"))
        );
        assert_eq!(
            StickyUpgradeLayer::builder()
                .retry_after(Duration::ZERO)
                .build()
                .unwrap_err(),
            BuildError::RetryAfterZero
        );
        // A day at most: longer is a unit mistake, and overflows 32-bit readers.
        let layer = StickyUpgradeLayer::builder()
            .retry_after(MAX_RETRY_AFTER)
            .build()
            .unwrap();
        assert_eq!(
            layer.shared.config.refuse_while_draining,
            Some(HeaderValue::from_static("86400"))
        );
        for too_long in [MAX_RETRY_AFTER + Duration::from_nanos(1), Duration::MAX] {
            assert_eq!(
                StickyUpgradeLayer::builder()
                    .retry_after(too_long)
                    .build()
                    .unwrap_err(),
                BuildError::RetryAfterTooLong {
                    retry_after: too_long
                }
            );
        }
        // Zero is fine when upgrades pass through while draining.
        assert!(StickyUpgradeLayer::builder()
            .retry_after(Duration::ZERO)
            .refuse_while_draining(false)
            .build()
            .is_ok());
    }

    #[test]
    fn cookie_errors_surface_from_build() {
        let err = StickyUpgradeLayer::builder()
            .cookie_name("AWSALBAPP-1")
            .build()
            .unwrap_err();
        assert_eq!(
            err,
            BuildError::ReservedCookieName {
                name: "AWSALBAPP-1".into()
            }
        );
    }

    #[test]
    fn bad_origin_is_a_build_error() {
        let err = StickyUpgradeLayer::builder()
            .allowed_origins(["example.com"])
            .build()
            .unwrap_err();
        assert_eq!(
            err,
            BuildError::InvalidOrigin {
                origin: "example.com".into()
            }
        );
    }

    #[cfg(feature = "signed")]
    #[test]
    fn short_signing_key_is_a_build_error() {
        let err = StickyUpgradeLayer::builder()
            .signing_keys([[7u8; 32].as_slice(), [1u8; 31].as_slice()])
            .build()
            .unwrap_err();
        assert_eq!(err, BuildError::SigningKeyTooShort { index: 1, len: 31 });
    }

    #[test]
    fn layer_debug_shows_configuration_not_secrets() {
        let text = format!("{:?}", StickyUpgradeLayer::new());
        assert!(text.contains("WS_SESSION_ID"), "{text}");
    }
}
