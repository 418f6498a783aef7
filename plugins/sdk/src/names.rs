//! Generated names without randomness. A plugin has none (its decisions replay), so where
//! KubeRay draws `<name>-<5 random chars>` a plugin hashes what identifies the object
//! (a uid, a generation, an index) with FNV-1a and spells the hash in KubeRay's alphabet.

/// The FNV-1a offset basis: the state to start [`fnv1a`] from.
pub const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;

/// FNV-1a, continuing from `state`: stable across platforms and versions, unlike std's hasher.
pub fn fnv1a(state: u64, bytes: &[u8]) -> u64 {
    bytes.iter().fold(state, |hash, byte| {
        (hash ^ u64::from(*byte)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// KubeRay's alphabet for generated suffixes (no vowels, no look-alike digits).
const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";

/// Five characters of KubeRay's alphabet spelling `hash`.
pub fn suffix(mut hash: u64) -> String {
    let base = ALPHABET.len() as u64;
    (0..5)
        .map(|_| {
            let digit = ALPHABET[(hash % base) as usize];
            hash /= base;
            char::from(digit)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv1a_matches_the_reference_vectors() {
        assert_eq!(fnv1a(FNV_OFFSET, b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(FNV_OFFSET, b"a"), 0xaf63_dc4c_8601_ec8c);
    }

    #[test]
    fn suffixes_have_five_characters_of_the_alphabet() {
        for hash in [0, 1, u64::MAX, 0xdead_beef] {
            let text = suffix(hash);
            assert_eq!(text.len(), 5);
            assert!(text.bytes().all(|byte| ALPHABET.contains(&byte)), "{text}");
        }
    }
}
