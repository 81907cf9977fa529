//! A bloom filter over a table's keys: "definitely absent" or "maybe present". Pure; serialises
//! to `[num_hashes: u32 LE][num_bits: u64 LE][bits...]`.

/// Hashes per key are derived from one 64-bit hash by double hashing (Kirsch-Mitzenmacher).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Bloom {
    num_hashes: u32,
    num_bits: u64,
    bits: Vec<u8>,
}

const HEADER: usize = 12;
const MAX_HASHES: u32 = 30;

fn hash64(key: &[u8]) -> u64 {
    // FNV-1a, then a splitmix64 finaliser to spread the bits.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in key {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h ^= h >> 30;
    h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^= h >> 27;
    h = h.wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

impl Bloom {
    /// A filter sized for `keys` at `bits_per_key` (10 gives about 1 % false positives).
    pub fn build<'a>(keys: impl ExactSizeIterator<Item = &'a [u8]>, bits_per_key: u32) -> Self {
        let bits_per_key = bits_per_key.max(1);
        let num_bits = (keys.len() as u64 * u64::from(bits_per_key)).max(64);
        // k = bits_per_key * ln 2, rounded.
        let num_hashes = ((f64::from(bits_per_key) * std::f64::consts::LN_2).round() as u32).clamp(1, MAX_HASHES);
        let mut bloom = Bloom { num_hashes, num_bits, bits: vec![0; num_bits.div_ceil(8) as usize] };
        for key in keys {
            bloom.insert(key);
        }
        bloom
    }

    fn positions(&self, key: &[u8]) -> impl Iterator<Item = u64> {
        let h = hash64(key);
        let delta = h.rotate_left(17) | 1;
        let n = self.num_bits;
        (0..u64::from(self.num_hashes)).map(move |i| h.wrapping_add(i.wrapping_mul(delta)) % n)
    }

    fn insert(&mut self, key: &[u8]) {
        let positions: Vec<u64> = self.positions(key).collect();
        for p in positions {
            self.bits[(p / 8) as usize] |= 1 << (p % 8);
        }
    }

    /// False means the key is certainly not in the set.
    pub fn may_contain(&self, key: &[u8]) -> bool {
        self.positions(key).all(|p| self.bits[(p / 8) as usize] & (1 << (p % 8)) != 0)
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(HEADER + self.bits.len());
        out.extend_from_slice(&self.num_hashes.to_le_bytes());
        out.extend_from_slice(&self.num_bits.to_le_bytes());
        out.extend_from_slice(&self.bits);
        out
    }

    /// Parses `to_bytes` output; any inconsistency is an error, never a panic.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, String> {
        if bytes.len() < HEADER {
            return Err(format!("bloom filter of {} bytes is shorter than its header", bytes.len()));
        }
        let num_hashes = u32::from_le_bytes(bytes[0..4].try_into().expect("4 bytes"));
        let num_bits = u64::from_le_bytes(bytes[4..12].try_into().expect("8 bytes"));
        if num_hashes == 0 || num_hashes > MAX_HASHES {
            return Err(format!("bloom filter with {num_hashes} hashes"));
        }
        if num_bits == 0 || num_bits.div_ceil(8) != (bytes.len() - HEADER) as u64 {
            return Err(format!("bloom filter of {num_bits} bits in {} bytes", bytes.len() - HEADER));
        }
        Ok(Bloom { num_hashes, num_bits, bits: bytes[HEADER..].to_vec() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_false_negatives_and_few_false_positives() {
        let keys: Vec<Vec<u8>> = (0u32..10_000).map(|i| format!("key-{i}").into_bytes()).collect();
        let bloom = Bloom::build(keys.iter().map(Vec::as_slice), 10);
        assert!(keys.iter().all(|k| bloom.may_contain(k)));
        let fp = (0u32..10_000).filter(|i| bloom.may_contain(format!("other-{i}").as_bytes())).count();
        assert!(fp < 300, "{fp} false positives of 10,000");
        let back = Bloom::from_bytes(&bloom.to_bytes()).unwrap();
        assert_eq!(back, bloom);
    }

    #[test]
    fn bad_bytes_are_errors() {
        let bloom = Bloom::build([b"a".as_slice()].into_iter(), 10);
        let bytes = bloom.to_bytes();
        assert!(Bloom::from_bytes(&bytes[..5]).is_err());
        assert!(Bloom::from_bytes(&bytes[..bytes.len() - 1]).is_err());
        let mut zero_hashes = bytes.clone();
        zero_hashes[0..4].copy_from_slice(&0u32.to_le_bytes());
        assert!(Bloom::from_bytes(&zero_hashes).is_err());
        let empty = Bloom::build(std::iter::empty::<&[u8]>(), 10);
        assert!(!empty.may_contain(b"x"));
        assert!(Bloom::from_bytes(&empty.to_bytes()).is_ok());
    }
}
