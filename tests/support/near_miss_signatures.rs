// Third segments that come close to a signature (exactly 32 lower-case hex
// digits) and are not one. Shared by the codec's unit test in
// `src/affinity.rs` and the layer-level test in `tests/bad_input.rs`, which
// both `include!` this file, so that the two levels refuse the same list.
// Items only, no `use`.

/// Near misses of `sig`, a well-formed signature: one digit short, one too
/// many, upper case, a node tag, and empty.
fn near_miss_signatures(sig: &str) -> [String; 5] {
    [
        sig[..sig.len() - 1].to_owned(),
        format!("{sig}0"),
        sig.to_ascii_uppercase(),
        "n2".to_owned(),
        String::new(),
    ]
}
