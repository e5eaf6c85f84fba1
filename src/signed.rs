//! HMAC-SHA256 signatures on cookie values (feature `signed`).
//!
//! The signature covers `NAME=ID[.NODE]`, so a value cannot be moved to a cookie
//! of another name, and is truncated to 128 bits (RFC 2104 allows truncation to
//! half the hash length) to keep the value short enough for load-balancer stick
//! tables. It is written as 32 lower-case hex digits after a final `.`.
//!
//! Several keys support rotation: the first signs, all verify, and a value signed
//! with an older key is re-issued signed with the current one. Comparison is
//! constant-time (`hmac`'s `verify_truncated_left`).
//!
//! # Security notes for maintainers
//!
//! The user-facing threat model is in the crate docs ("Cookie value and
//! security"). What this module relies on and guarantees:
//!
//! - The MAC input `NAME`, `=`, payload is unambiguous: the builder only allows
//!   RFC 9110 tokens as names, and a token has no `=`.
//! - A forger needs a 128-bit tag for a payload of their choice: one chance in
//!   2^128 per guess. Each guess costs the server one MAC per configured key,
//!   linear in the request, no state.
//! - Which key matched leaks through timing (keys are tried in order); that
//!   reveals the age of a value, never key material. The tag comparison itself
//!   is constant-time.
//! - Hex is lower-case only and exactly 32 digits, so a value has exactly one
//!   accepted spelling and an upper-case copy is invalid.
//! - Not covered by design: confidentiality of the id, expiry, replay, binding
//!   to a client. An unsigned layer reads `ID.SIG` as `ID.NODE` (32 hex digits
//!   are a well-formed node tag), and `ID.NODE.SIG` as the id and node (it
//!   never writes three segments), which is why turning signing off keeps ids;
//!   it re-sends them unsigned.
//! - `Debug` never prints keys (tested); keys live in `Hmac` states, not
//!   zeroized on drop.

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::affinity::{decode_signature, HEX_PAIRS, SIGNATURE_LEN};

type HmacSha256 = Hmac<Sha256>;

/// Shortest key accepted: the output size of SHA-256.
pub(crate) const MIN_KEY_LEN: usize = 32;

#[derive(Clone)]
pub(crate) struct Signer {
    /// Keyed MAC states, cloned per use so the key schedule runs once.
    keys: Box<[HmacSha256]>,
}

impl Signer {
    /// `keys` must be non-empty and each at least [`MIN_KEY_LEN`] bytes; the
    /// builder checks both.
    pub(crate) fn new(keys: &[Vec<u8>]) -> Option<Self> {
        let keys = keys
            .iter()
            .map(|k| HmacSha256::new_from_slice(k).ok())
            .collect::<Option<Box<[_]>>>()?;
        (!keys.is_empty()).then_some(Self { keys })
    }

    fn mac(key: &HmacSha256, name: &str, payload: &[u8]) -> HmacSha256 {
        let mut mac = key.clone();
        mac.update(name.as_bytes());
        mac.update(b"=");
        mac.update(payload);
        mac
    }

    /// Signs `out[start..]` with the first key and appends `.SIGNATURE`.
    pub(crate) fn sign_into(&self, name: &str, start: usize, out: &mut Vec<u8>) {
        let tag = Self::mac(&self.keys[0], name, &out[start..])
            .finalize()
            .into_bytes();
        out.push(b'.');
        for &byte in &tag[..SIGNATURE_LEN] {
            out.extend_from_slice(&HEX_PAIRS[usize::from(byte)]);
        }
    }

    /// Checks `hex`, the signature written after `payload`, against every key;
    /// on success says whether a key other than the first matched.
    pub(crate) fn verify(&self, name: &str, payload: &[u8], hex: &[u8]) -> Option<bool> {
        let tag = decode_signature(hex)?;
        self.keys
            .iter()
            .position(|key| {
                Self::mac(key, name, payload)
                    .verify_truncated_left(&tag)
                    .is_ok()
            })
            .map(|index| index != 0)
    }
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print key material.
        f.debug_struct("Signer")
            .field("keys", &self.keys.len())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::affinity::SIGNATURE_HEX_LEN;

    fn signer(keys: &[&[u8]]) -> Signer {
        Signer::new(&keys.iter().map(|k| k.to_vec()).collect::<Vec<_>>()).unwrap()
    }

    fn sign(s: &Signer, name: &str, payload: &str) -> Vec<u8> {
        let mut out = payload.as_bytes().to_vec();
        s.sign_into(name, 0, &mut out);
        out
    }

    /// Splits `value` at its last `.` the way the codec does, and verifies.
    fn verify<'v>(s: &Signer, name: &str, value: &'v [u8]) -> Option<(&'v [u8], bool)> {
        let dot = value.iter().rposition(|&b| b == b'.')?;
        let (payload, hex) = (&value[..dot], &value[dot + 1..]);
        s.verify(name, payload, hex).map(|stale| (payload, stale))
    }

    const K1: &[u8] = b"0123456789abcdef0123456789abcdef";
    const K2: &[u8] = b"fedcba9876543210fedcba9876543210";

    #[test]
    fn signed_value_verifies_with_its_key() {
        let s = signer(&[K1]);
        let value = sign(&s, "WS", "id.node");
        assert_eq!(value.len(), "id.node".len() + 1 + SIGNATURE_HEX_LEN);
        assert_eq!(verify(&s, "WS", &value), Some((&b"id.node"[..], false)));
    }

    #[test]
    fn altered_payload_fails() {
        let s = signer(&[K1]);
        let mut value = sign(&s, "WS", "id.node");
        value[0] = b'j';
        assert_eq!(verify(&s, "WS", &value), None);
    }

    #[test]
    fn altered_or_truncated_signature_fails() {
        let s = signer(&[K1]);
        let value = sign(&s, "WS", "id");
        let mut flipped = value.clone();
        let last = flipped.len() - 1;
        flipped[last] = if flipped[last] == b'0' { b'1' } else { b'0' };
        assert_eq!(verify(&s, "WS", &flipped), None);
        assert_eq!(verify(&s, "WS", &value[..value.len() - 1]), None);
        assert_eq!(verify(&s, "WS", b"id"), None);
    }

    #[test]
    fn upper_case_signature_fails() {
        let s = signer(&[K1]);
        let value = sign(&s, "WS", "id");
        let upper = value.to_ascii_uppercase();
        assert_ne!(upper, value);
        assert_eq!(verify(&s, "WS", &upper), None);
    }

    #[test]
    fn signature_is_bound_to_the_cookie_name() {
        let s = signer(&[K1]);
        let value = sign(&s, "WS", "id");
        assert_eq!(verify(&s, "OTHER", &value), None);
    }

    #[test]
    fn unknown_key_fails() {
        let value = sign(&signer(&[K2]), "WS", "id");
        assert_eq!(verify(&signer(&[K1]), "WS", &value), None);
    }

    #[test]
    fn rotated_key_verifies_and_is_marked_stale() {
        let old = sign(&signer(&[K2]), "WS", "id");
        let rotated = signer(&[K1, K2]);
        assert_eq!(verify(&rotated, "WS", &old), Some((&b"id"[..], true)));
        let fresh = sign(&rotated, "WS", "id");
        assert_eq!(verify(&rotated, "WS", &fresh), Some((&b"id"[..], false)));
    }

    #[test]
    fn debug_does_not_print_keys() {
        let text = format!("{:?}", signer(&[K1]));
        assert!(!text.contains("0123"), "{text}");
    }
}
