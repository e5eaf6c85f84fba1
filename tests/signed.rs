//! Signed cookie values (feature `signed`) through the layer: what is kept,
//! what is refused and counted, and how key rotation re-signs.
#![cfg(feature = "signed")]

mod oneshot;

use http::StatusCode;
use tower_sticky_upgrade::{Affinity, NodeId, Refresh, StickyUpgradeBuilder, StickyUpgradeLayer};

use oneshot::{assert_issued, issued_value, send, ws_with_cookie, Inner, Outcome};

const NAME: &str = "WS_SESSION_ID";
const KEY_A: &[u8] = b"signed.rs key A: 32 bytes or mor";
const KEY_B: &[u8] = b"signed.rs key B: 32 bytes or mor";
const KEY_C: &[u8] = b"signed.rs key C: never in use ..";

/// `ID[.NODE].SIG` with `SIG` 32 lower-case hex digits.
fn split_signed(value: &str) -> (&str, &str) {
    let (payload, sig) = value.rsplit_once('.').expect("a signed value has a dot");
    assert_eq!(sig.len(), 32, "{value}");
    assert!(
        sig.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)),
        "{value}"
    );
    (payload, sig)
}

fn builder(keys: &[&[u8]]) -> StickyUpgradeBuilder {
    StickyUpgradeLayer::builder().signing_keys(keys.iter().copied())
}

fn signed(keys: &[&[u8]]) -> StickyUpgradeLayer {
    builder(keys).build().unwrap()
}

async fn present(layer: &StickyUpgradeLayer, name: &str, value: &str) -> Outcome {
    send(
        layer,
        Inner::Validator,
        ws_with_cookie(&format!("{name}={value}")),
    )
    .await
}

/// Presents `value` and asserts it was refused: a fresh id, the cookie
/// replaced, and `invalid_cookies` up by one.
async fn assert_refused(layer: &StickyUpgradeLayer, value: &str) {
    let before = layer.stats();
    let out = present(layer, NAME, value).await;
    assert_issued(&out, NAME);
    let id = out.id().unwrap();
    assert!(
        !value.starts_with(id.as_str()),
        "the refused id was reused: {value}"
    );
    let after = layer.stats();
    assert_eq!(after.invalid_cookies, before.invalid_cookies + 1, "{value}");
    assert_eq!(after.issued, before.issued + 1);
    assert_eq!(after.kept, before.kept);
}

#[tokio::test]
async fn signed_cookie_from_the_layer_is_kept() {
    let layer = signed(&[KEY_A]);
    let value = issued_value(&layer).await;
    let (payload, _) = split_signed(&value);
    let out = present(&layer, NAME, &value).await;
    assert_eq!(out.status, StatusCode::SWITCHING_PROTOCOLS);
    assert_eq!(out.affinity(), Some(Affinity::Kept));
    assert_eq!(out.id().unwrap().as_str(), payload);
    // Refreshed with the same value: sent back as it came, since it is what
    // signing it again would give.
    assert_eq!(out.cookie(NAME), value);
    assert_eq!(layer.stats().invalid_cookies, 0);
}

#[tokio::test]
async fn signed_cookie_is_kept_by_another_layer_with_the_same_key() {
    // Several nodes of one app share keys; any of them accepts the value.
    let value = issued_value(&signed(&[KEY_A])).await;
    let other = signed(&[KEY_A]);
    let out = present(&other, NAME, &value).await;
    assert_eq!(out.affinity(), Some(Affinity::Kept));
}

#[tokio::test]
async fn unsigned_id_is_refused_by_a_signed_layer() {
    // A client picking its own id (session fixation) without a signature.
    let layer = signed(&[KEY_A]);
    let value = issued_value(&layer).await;
    let (payload, _) = split_signed(&value);
    assert_refused(&layer, payload).await;
    assert_refused(&layer, "0b6d4b4e-5c1c-4c89-9b57-2c3f5a1d2e3f").await;
}

#[tokio::test]
async fn forged_signature_is_refused() {
    let layer = signed(&[KEY_A]);
    let value = issued_value(&layer).await;
    let (payload, _) = split_signed(&value);
    for forged in ["0".repeat(32), "f".repeat(32), "0123456789abcdef".repeat(2)] {
        assert_refused(&layer, &format!("{payload}.{forged}")).await;
    }
}

#[tokio::test]
async fn altered_id_is_refused() {
    let layer = signed(&[KEY_A]);
    let value = issued_value(&layer).await;
    let (payload, sig) = split_signed(&value);
    // Swap one hex digit of the id for another that keeps the UUID v4 shape.
    let mut id = payload.as_bytes().to_vec();
    id[0] = if id[0] == b'a' { b'b' } else { b'a' };
    let altered = format!("{}.{sig}", String::from_utf8(id).unwrap());
    assert_refused(&layer, &altered).await;
}

#[tokio::test]
async fn altered_node_tag_is_refused() {
    let layer = builder(&[KEY_A]).node_id("node-a").build().unwrap();
    let value = issued_value(&layer).await;
    let (payload, sig) = split_signed(&value);
    let (id, node) = payload.split_once('.').unwrap();
    assert_eq!(node, "node-a");
    assert_refused(&layer, &format!("{id}.node-b.{sig}")).await;
    // Dropping the tag is an alteration too.
    assert_refused(&layer, &format!("{id}.{sig}")).await;
}

#[tokio::test]
async fn altered_signature_is_refused() {
    let layer = signed(&[KEY_A]);
    let value = issued_value(&layer).await;
    let (payload, sig) = split_signed(&value);
    let mut bytes = sig.as_bytes().to_vec();
    for i in [0, 15, 31] {
        let original = bytes[i];
        bytes[i] = if original == b'0' { b'1' } else { b'0' };
        let altered = format!("{payload}.{}", std::str::from_utf8(&bytes).unwrap());
        assert_refused(&layer, &altered).await;
        bytes[i] = original;
    }
    // An upper-case copy of the right signature is not a value the layer wrote.
    let upper = format!("{payload}.{}", sig.to_ascii_uppercase());
    if upper != value {
        assert_refused(&layer, &upper).await;
    }
}

#[tokio::test]
async fn truncated_or_extended_value_is_refused() {
    let layer = signed(&[KEY_A]);
    let value = issued_value(&layer).await;
    for cut in [1, 2, 16, 31, 32, 33] {
        assert_refused(&layer, &value[..value.len() - cut]).await;
    }
    assert_refused(&layer, &format!("{value}0")).await;
    assert_refused(&layer, &format!("{value}.{}", "0".repeat(32))).await;
}

#[tokio::test]
async fn value_signed_with_an_unknown_key_is_refused() {
    let foreign = issued_value(&signed(&[KEY_C])).await;
    let layer = signed(&[KEY_A, KEY_B]);
    assert_refused(&layer, &foreign).await;
}

#[tokio::test]
async fn value_signed_for_another_cookie_name_is_refused() {
    // Same key, other cookie name: the name is part of what is signed, so a
    // value cannot be carried from one cookie to another.
    let other = builder(&[KEY_A]).cookie_name("OTHER_ID").build().unwrap();
    let value = issued_value(&other).await;
    let layer = signed(&[KEY_A]);
    assert_refused(&layer, &value).await;
    // And back: the layer that issued it still accepts it under its own name.
    let out = present(&other, "OTHER_ID", &value).await;
    assert_eq!(out.affinity(), Some(Affinity::Kept));
}

async fn assert_rotated(refresh: Refresh) {
    let old_value = issued_value(&signed(&[KEY_B])).await;
    let (old_payload, _) = split_signed(&old_value);

    // KEY_A is the new signing key; KEY_B is kept to verify old cookies.
    let layer = builder(&[KEY_A, KEY_B]).refresh(refresh).build().unwrap();
    let out = present(&layer, NAME, &old_value).await;
    assert_eq!(out.affinity(), Some(Affinity::Kept), "{refresh:?}");
    assert_eq!(out.id().unwrap().as_str(), old_payload);
    let new_value = out.cookie(NAME);
    let (new_payload, _) = split_signed(&new_value);
    assert_eq!(new_payload, old_payload);
    assert_ne!(new_value, old_value, "not re-signed");
    assert_eq!(layer.stats().invalid_cookies, 0);

    // Re-signed with KEY_A: a layer that only knows KEY_A keeps it without
    // re-issuing (OnChange), one that only knows KEY_B refuses it.
    let only_a = builder(&[KEY_A])
        .refresh(Refresh::OnChange)
        .build()
        .unwrap();
    let out = present(&only_a, NAME, &new_value).await;
    assert_eq!(out.affinity(), Some(Affinity::Kept));
    assert!(out.cookies_named(NAME).is_empty(), "{out:?}");
    assert_refused(&signed(&[KEY_B]), &new_value).await;
}

#[tokio::test]
async fn value_signed_with_old_key_is_kept_and_resigned_with_current_key() {
    assert_rotated(Refresh::EveryUpgrade).await;
}

#[tokio::test]
async fn value_signed_with_old_key_is_resigned_even_with_refresh_on_change() {
    assert_rotated(Refresh::OnChange).await;
}

#[tokio::test]
async fn value_signed_with_current_key_is_not_reissued_with_refresh_on_change() {
    let layer = builder(&[KEY_A, KEY_B])
        .refresh(Refresh::OnChange)
        .build()
        .unwrap();
    let value = issued_value(&layer).await;
    let out = present(&layer, NAME, &value).await;
    assert_eq!(out.affinity(), Some(Affinity::Kept));
    assert!(out.set_cookies().is_empty(), "{out:?}");
}

#[tokio::test]
async fn signed_value_from_another_node_migrates_and_is_retagged() {
    let from_a = issued_value(&builder(&[KEY_A]).node_id("a").build().unwrap()).await;
    let node_b = builder(&[KEY_A]).node_id("b").build().unwrap();
    let out = present(&node_b, NAME, &from_a).await;
    let Some(Affinity::Migrated { from }) = out.affinity() else {
        panic!("expected a migration: {out:?}");
    };
    assert_eq!(from.as_str(), "a");
    let value = out.cookie(NAME);
    let (payload, _) = split_signed(&value);
    assert_eq!(payload, format!("{}.b", out.id().unwrap()));
}

#[tokio::test]
async fn turning_signing_on_refuses_unsigned_values_in_circulation() {
    // Each client with an old cookie gets a fresh id once: plan the switch
    // like a key change (or run both layers' keys through a rotation).
    let unsigned_value = issued_value(&StickyUpgradeLayer::new()).await;
    assert_refused(&signed(&[KEY_A]), &unsigned_value).await;
}

#[tokio::test]
async fn turning_signing_off_keeps_ids_and_drops_the_signature() {
    // An unsigned layer reads `ID.SIG` as `ID.NODE` (32 hex digits are a
    // well-formed node tag), keeps the id, and, since the tag is not its own,
    // re-issues the bare id. Nothing is trusted from the value either way:
    // without signing the id is client-chosen by design.
    let value = issued_value(&signed(&[KEY_A])).await;
    let (id, _) = split_signed(&value);
    let unsigned = StickyUpgradeLayer::builder()
        .refresh(Refresh::OnChange)
        .build()
        .unwrap();
    let out = present(&unsigned, NAME, &value).await;
    assert_eq!(out.affinity(), Some(Affinity::Kept));
    assert_eq!(out.id().unwrap().as_str(), id);
    assert_eq!(out.cookie(NAME), id);
}

#[tokio::test]
async fn turning_signing_off_and_node_ids_on_reads_a_signature_as_a_node_once() {
    // The edge the crate docs name: a signed value without a node tag,
    // `ID.SIG`, read by an unsigned layer that has a node id, takes the
    // signature for a node. The id is kept; the upgrade is reported as
    // migrated from that "node" once, and the value written back, `ID.n1`,
    // is kept from then on.
    let value = issued_value(&signed(&[KEY_A])).await;
    let (id, sig) = split_signed(&value);
    let unsigned = StickyUpgradeLayer::builder().node_id("n1").build().unwrap();
    let out = present(&unsigned, NAME, &value).await;
    assert_eq!(
        out.affinity(),
        Some(Affinity::Migrated {
            from: NodeId::new(sig).unwrap()
        })
    );
    assert_eq!(out.id().unwrap().as_str(), id);
    let rewritten = out.cookie(NAME);
    assert_eq!(rewritten, format!("{id}.n1"));
    let out = present(&unsigned, NAME, &rewritten).await;
    assert_eq!(out.affinity(), Some(Affinity::Kept));
    assert_eq!(out.id().unwrap().as_str(), id);
    let stats = unsigned.stats();
    assert_eq!((stats.migrated, stats.kept), (1, 1), "{stats:?}");
}

/// An empty list (a key variable left unset, say) must not quietly build an
/// unsigned layer that accepts any id a client picks.
#[test]
fn an_empty_signing_key_list_is_a_build_error() {
    use tower_sticky_upgrade::BuildError;
    let err = StickyUpgradeLayer::builder()
        .signing_keys(Vec::<Vec<u8>>::new())
        .build()
        .unwrap_err();
    assert_eq!(err, BuildError::NoSigningKeys);
    assert!(err.to_string().contains("no key"), "{err}");
}

#[tokio::test]
async fn turning_signing_off_with_node_ids_keeps_ids_and_drops_the_signature() {
    // `ID.NODE.SIG` has one segment more than an unsigned layer writes, so it
    // is unambiguous: the id and node are read, and the signature, which an
    // unsigned layer cannot check, is dropped on the response. This is what
    // keeps sessions through a rollback from a signing deploy.
    let value = issued_value(&builder(&[KEY_A]).node_id("n1").build().unwrap()).await;
    let (payload, _) = split_signed(&value);
    let (id, _) = payload.split_once('.').expect("ID.NODE");

    // Same node: kept, and written back unsigned even when only changes are.
    let same = StickyUpgradeLayer::builder()
        .node_id("n1")
        .refresh(Refresh::OnChange)
        .build()
        .unwrap();
    let out = present(&same, NAME, &value).await;
    assert_eq!(out.affinity(), Some(Affinity::Kept));
    assert_eq!(out.id().unwrap().as_str(), id);
    assert_eq!(out.cookie(NAME), format!("{id}.n1"));

    // Another node: migrated from the signing node, re-tagged.
    let other = StickyUpgradeLayer::builder().node_id("n2").build().unwrap();
    let out = present(&other, NAME, &value).await;
    assert_eq!(
        out.affinity(),
        Some(Affinity::Migrated {
            from: NodeId::new("n1").unwrap()
        })
    );
    assert_eq!(out.id().unwrap().as_str(), id);
    assert_eq!(out.cookie(NAME), format!("{id}.n2"));
}

#[test]
fn signing_keys_shorter_than_32_bytes_are_a_build_error() {
    use tower_sticky_upgrade::BuildError;
    let err = builder(&[KEY_A, &KEY_B[..31]]).build().unwrap_err();
    assert_eq!(err, BuildError::SigningKeyTooShort { index: 1, len: 31 });
}

#[test]
fn layer_debug_output_holds_no_key_material() {
    let layer = signed(&[KEY_A, KEY_B]);
    let text = format!("{layer:?} {:?}", builder(&[KEY_A]));
    for key in [KEY_A, KEY_B] {
        let key = std::str::from_utf8(key).unwrap();
        assert!(!text.contains(&key[..12]), "{text}");
    }
}
