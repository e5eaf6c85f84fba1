//! Compile-time checks of the auto traits and common impls that users of axum,
//! hyper and tower rely on, so that a change which quietly loses one (a
//! `Rc` or a `Cell` in a future, say) fails here rather than in an app.
//!
//! Most of this file does its work when it compiles; the tests only make sure
//! the functions are instantiated.

use std::convert::Infallible;
use std::error::Error;
use std::fmt::{Debug, Display};
use std::future::Future;

use http::{Request, Response};
use tower::{service_fn, Layer, Service};
use tower_sticky_upgrade::future::ResponseFuture;
use tower_sticky_upgrade::{
    Affinity, BuildError, Drain, DrainBuilder, DrainGuard, DrainOutcome, HealthService,
    InvalidNodeId, InvalidSessionId, NodeId, Refresh, Refusal, SameSite, SessionId, Stats,
    StickySession, StickyUpgrade, StickyUpgradeBuilder, StickyUpgradeLayer, UuidV4,
};

fn send_sync_static<T: Send + Sync + 'static>() {}
fn send_static<T: Send + 'static>(_: &T) {}
fn clone_debug<T: Clone + Debug>() {}
/// What `Box<dyn Error + Send + Sync>`, `anyhow` and `?` in `main` need.
fn error_type<T: Error + Display + Debug + Clone + PartialEq + Send + Sync + 'static>() {}

/// A stand-in inner service whose future is `Send + 'static`, as axum's and
/// hyper's are.
fn inner() -> impl Service<
    Request<()>,
    Response = Response<String>,
    Error = Infallible,
    Future = impl Future<Output = Result<Response<String>, Infallible>> + Send + 'static,
> + Clone
       + Send
       + Sync
       + 'static {
    service_fn(|_: Request<()>| async { Ok(Response::new(String::new())) })
}

#[test]
fn layer_service_and_future_are_send_sync_static_when_inner_ones_are() {
    // axum's `Router::layer` wants the layer `Clone + Send + Sync + 'static`,
    // the service `Clone + Send + 'static` and its future `Send + 'static`;
    // hyper's executors want the future `Send + 'static`.
    send_sync_static::<StickyUpgradeLayer>();
    clone_debug::<StickyUpgradeLayer>();
    let mut svc = StickyUpgradeLayer::new().layer(inner());
    fn service<S: Clone + Send + Sync + 'static>(_: &S) {}
    service(&svc);
    let future: ResponseFuture<_> = svc.call(Request::new(()));
    send_static(&future);
    fn debug<T: Debug>(_: &T) {}
    debug(&future);
    send_sync_static::<StickyUpgrade<()>>();
    // The layer adds no `Sync` requirement of its own: an inner service that
    // is `Send` only (a `Cell` in it) still gives a `Send` service.
    struct SendOnly(#[allow(dead_code)] std::cell::Cell<u8>);
    fn send<T: Send + 'static>() {}
    send::<StickyUpgrade<SendOnly>>();
}

#[test]
fn session_and_drain_types_move_into_spawned_tasks() {
    // A request extension must be `Clone + Send + Sync + 'static`.
    send_sync_static::<StickySession>();
    clone_debug::<StickySession>();
    // Guards move into the socket's task, and `closing()` is awaited there.
    send_sync_static::<DrainGuard>();
    let drain = Drain::new();
    let guard = drain.guard();
    fn send_future<F: Future + Send>(_: &F) {}
    send_future(&guard.closing());
    send_static(&drain.closed());
    send_static(&drain.wait(std::time::Duration::ZERO));
    send_sync_static::<Drain>();
    clone_debug::<Drain>();
    clone_debug::<DrainBuilder>();
    // Routed as an axum route service or called from hyper.
    send_sync_static::<HealthService>();
    clone_debug::<HealthService>();
    let mut health = drain.health_service();
    send_static(&Service::<Request<()>>::call(&mut health, Request::new(())));
}

#[test]
fn value_types_have_the_common_impls() {
    fn value<T: Copy + Clone + Debug + PartialEq + Eq + Send + Sync + 'static>() {}
    fn hashable<T: std::hash::Hash + Eq>() {}
    value::<Affinity>();
    hashable::<Affinity>();
    value::<SessionId>();
    hashable::<SessionId>();
    value::<NodeId>();
    hashable::<NodeId>();
    value::<DrainOutcome>();
    value::<Refresh>();
    // A response extension must be `Clone + Send + Sync + 'static`.
    value::<Refusal>();
    hashable::<Refusal>();
    value::<SameSite>();
    value::<Stats>();
    fn defaults<T: Default>() {}
    defaults::<Refresh>();
    defaults::<SameSite>();
    defaults::<Stats>();
    defaults::<StickyUpgradeLayer>();
    defaults::<StickyUpgradeBuilder>();
    defaults::<Drain>();
    defaults::<DrainBuilder>();
    defaults::<UuidV4>();
    send_sync_static::<StickyUpgradeBuilder>();
    clone_debug::<StickyUpgradeBuilder>();
}

#[test]
fn error_types_box_into_send_sync_errors() {
    error_type::<BuildError>();
    error_type::<InvalidSessionId>();
    error_type::<InvalidNodeId>();
    #[cfg(feature = "axum")]
    error_type::<tower_sticky_upgrade::MissingStickySession>();

    let err: Box<dyn Error + Send + Sync> = StickyUpgradeLayer::builder()
        .cookie_name("")
        .build()
        .unwrap_err()
        .into();
    assert!(!err.to_string().is_empty());
}

/// `Debug` is what ends up in logs and panic messages: it must say what the
/// configuration is, and never print key material.
#[cfg(feature = "signed")]
#[test]
fn debug_output_is_informative_and_never_prints_signing_keys() {
    let key = *b"super-secret-signing-key-material-0123456789";
    let builder = StickyUpgradeLayer::builder()
        .node_id("node-1")
        .signing_keys([key]);
    let layer = builder.clone().build().unwrap();
    let key_as_numbers = format!("{:?}", &key[..4]); // `[115, 117, 112, 101`
    let key_as_numbers = key_as_numbers.trim_end_matches(']');
    for text in [
        format!("{builder:?}"),
        format!("{builder:#?}"),
        format!("{layer:?}"),
        format!("{layer:#?}"),
    ] {
        println!("{text}");
        assert!(!text.contains("super-secret"), "{text}");
        assert!(!text.contains(key_as_numbers), "{text}");
        assert!(text.contains("node-1"), "{text}");
    }
    assert!(format!("{layer:?}").contains("WS_SESSION_ID"));
}

/// Node and session ids are read from configuration (`env::var`, clap) and
/// handed on as strings, like any other validated string type.
#[test]
fn ids_parse_and_convert_like_strings() {
    let node: NodeId = "node-7".parse().unwrap();
    assert_eq!(NodeId::try_from("node-7"), Ok(node));
    assert!("node.7".parse::<NodeId>().is_err());
    fn text<T: AsRef<str>>(t: &T) -> &str {
        t.as_ref()
    }
    assert_eq!(text(&node), "node-7");
    // A `NodeId` made (say, from the host name) goes to the builder as it is.
    let layer = StickyUpgradeLayer::builder().node_id(node).build().unwrap();
    let _ = layer;
    assert_eq!(String::from(node), "node-7");

    let id: SessionId = "abc-123".parse().unwrap();
    assert_eq!(SessionId::try_from("abc-123"), Ok(id));
    assert!("a.b".parse::<SessionId>().is_err());
    assert_eq!(text(&id), "abc-123");
    assert_eq!(String::from(id), "abc-123");
}

/// Enums that may grow are `#[non_exhaustive]`, so a new variant is no
/// breaking change: without it, the `_` arms below are unreachable patterns,
/// denied here. `DrainOutcome` and `SameSite` are meant to be matched
/// exhaustively (the exit code of a drain; the three values RFC 6265bis
/// defines) and must stay so: the matches without `_` check that.
#[test]
#[deny(unreachable_patterns)]
fn enums_that_may_grow_are_non_exhaustive_and_the_others_are_not() {
    fn refresh(r: Refresh) -> &'static str {
        match r {
            Refresh::EveryUpgrade => "every upgrade",
            Refresh::OnChange => "on change",
            _ => "newer policy",
        }
    }
    fn affinity(a: Affinity) -> &'static str {
        match a {
            Affinity::Issued | Affinity::Kept | Affinity::Migrated { .. } => "known",
            _ => "newer outcome",
        }
    }
    // Every variant is listed: with only some, the `_` arm would be reachable
    // whether or not the enum is `#[non_exhaustive]`, and pin nothing.
    fn build_error(e: &BuildError) -> &'static str {
        use BuildError as E;
        match e {
            E::EmptyCookieName => "empty name",
            E::CookieNameNotToken { .. }
            | E::ReservedCookieName { .. }
            | E::CookieNameTooLong { .. }
            | E::PathNotAbsolute { .. }
            | E::InvalidPath { .. }
            | E::InvalidDomain { .. }
            | E::SameSiteNoneWithoutSecure
            | E::PartitionedWithoutSecure
            | E::SecurePrefixWithoutSecure { .. }
            | E::HostPrefixWithoutSecure { .. }
            | E::HostPrefixWithDomain { .. }
            | E::HostPrefixWithPath { .. }
            | E::HttpPrefixWithoutSecure { .. }
            | E::HttpPrefixWithoutHttpOnly { .. }
            | E::MaxAgeTooShort { .. }
            | E::MaxAgeTooLong { .. }
            | E::ExpiresWithoutMaxAge
            | E::InvalidNodeId { .. }
            | E::NoProtocols
            | E::InvalidProtocol { .. }
            | E::RetryAfterZero
            | E::RetryAfterTooLong { .. }
            | E::InvalidOrigin { .. }
            | E::NoAllowedOrigins
            | E::WildcardOrigin { .. }
            | E::RequireOriginWithoutAllowedOrigins => "a known rule",
            #[cfg(feature = "signed")]
            E::NoSigningKeys | E::SigningKeyTooShort { .. } => "a known rule",
            _ => "a newer rule",
        }
    }
    fn refusal(r: Refusal) -> &'static str {
        match r {
            Refusal::Draining | Refusal::OriginNotAllowed => "known",
            _ => "newer reason",
        }
    }
    fn outcome(o: DrainOutcome) -> i32 {
        match o {
            DrainOutcome::Drained => 0,
            DrainOutcome::TimedOut { .. } => 1,
        }
    }
    fn same_site(s: SameSite) -> &'static str {
        match s {
            SameSite::Strict => "Strict",
            SameSite::Lax => "Lax",
            SameSite::None => "None",
        }
    }
    assert_eq!(refresh(Refresh::default()), "every upgrade");
    assert_eq!(affinity(Affinity::Kept), "known");
    assert_eq!(build_error(&BuildError::EmptyCookieName), "empty name");
    assert_eq!(build_error(&BuildError::NoProtocols), "a known rule");
    assert_eq!(refusal(Refusal::Draining), "known");
    assert_eq!(outcome(DrainOutcome::Drained), 0);
    assert_eq!(same_site(SameSite::default()), "Lax");
}
