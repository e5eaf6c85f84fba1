//! Byte search for the hot path: where the cookie's name might start in a
//! `Cookie` line, where a value ends.
//!
//! Written so the compiler vectorises it without `unsafe` or intrinsics: a
//! fixed-size block is tested with a branch-free fold (SSE2 on any x86-64, NEON
//! on AArch64: one compare per 16 bytes and one mask test), and only a block
//! that holds the byte is searched one byte at a time. Shorter rests are read a
//! 64-bit word at a time.

/// Bytes tested at once.
const BLOCK: usize = 32;

/// `0x01` in every byte of a word: times a byte, that byte in every lane.
pub(crate) const ONES: u64 = u64::from_le_bytes([0x01; 8]);
/// The high bit of every byte of a word, where SWAR tests leave their answers.
pub(crate) const HIGHS: u64 = u64::from_le_bytes([0x80; 8]);

/// The index of the first `needle` in `haystack`.
pub(crate) fn find_byte(haystack: &[u8], needle: u8) -> Option<usize> {
    let mut offset = 0;
    for block in haystack.chunks_exact(BLOCK) {
        let Ok(block) = <&[u8; BLOCK]>::try_from(block) else {
            break;
        };
        // Branch-free over an array: this is what vectorises.
        if block
            .iter()
            .fold(0u8, |found, &b| found | u8::from(b == needle))
            != 0
        {
            break;
        }
        offset += BLOCK;
    }
    // The block that holds the byte, or a rest shorter than a block.
    let rest = haystack.get(offset..)?;
    find_in_words(rest, needle).map(|i| offset + i)
}

/// [`find_byte`] for short haystacks, eight bytes at a time.
fn find_in_words(haystack: &[u8], needle: u8) -> Option<usize> {
    let pattern = ONES * u64::from(needle);
    let mut words = haystack.chunks_exact(8);
    let mut offset = 0;
    for word in &mut words {
        let mut bytes = [0; 8];
        bytes.copy_from_slice(word);
        // Bytes equal to `needle` become zero; the classic zero-byte test then
        // sets the high bit of the first zero byte (and maybe of later ones,
        // never of earlier ones), so the lowest set bit marks the first match.
        let x = u64::from_le_bytes(bytes) ^ pattern;
        let zeros = x.wrapping_sub(ONES) & !x & HIGHS;
        if zeros != 0 {
            return Some(offset + (zeros.trailing_zeros() / 8) as usize);
        }
        offset += 8;
    }
    let tail = words.remainder();
    tail.iter().position(|&b| b == needle).map(|i| offset + i)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn find_byte_agrees_with_a_plain_search() {
        // Every length around the word and block sizes, the needle at every
        // position, and bytes that differ from it by one bit or by the high bit.
        for len in 0..100 {
            for at in 0..=len {
                let mut hay: Vec<u8> = (0..len)
                    .map(|i| [b'a', b':', 0xbb, b'{', 0x00][i % 5])
                    .collect();
                if at < len {
                    hay[at] = b';';
                    if at + 3 < len {
                        hay[at + 3] = b';';
                    }
                }
                let expected = hay.iter().position(|&b| b == b';');
                assert_eq!(find_byte(&hay, b';'), expected, "{hay:?}");
            }
        }
        assert_eq!(find_byte(&[0x80; 40], 0x00), None);
        assert_eq!(find_byte(&[0xff; 9], 0x7f), None);
        assert_eq!(
            find_byte(b"\x01\x00\x01\x01\x01\x01\x01\x01", 0x01),
            Some(0)
        );
        for needle in 0..=255u8 {
            let mut hay = [needle.wrapping_add(1); 70];
            hay[69] = needle;
            assert_eq!(find_byte(&hay, needle), Some(69));
            hay[33] = needle;
            assert_eq!(find_byte(&hay, needle), Some(33));
        }
    }

    /// A block made of nothing but the needle holds its first occurrence: the
    /// block scan must stop there, not skip it as if it had none. (The cookie
    /// scan would otherwise miss a name that starts with a block's worth of
    /// one byte.)
    #[test]
    fn find_byte_stops_at_a_block_full_of_the_needle() {
        for len in [BLOCK, BLOCK + 1, 2 * BLOCK + 5] {
            let hay = vec![b'a'; len];
            assert_eq!(find_byte(&hay, b'a'), Some(0), "{len} needles");
        }
    }
}
