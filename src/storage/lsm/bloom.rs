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

/// The 64-bit hash the filter derives a key's bit positions from (`Bloom::from_hashes` takes
/// these, so a table builder keeps 8 bytes per key instead of the key).
pub fn hash64(key: &[u8]) -> u64 {
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

/// Bit positions of a key with hash `h`: `(h + i * delta) mod 2^64 mod num_bits` for `i` in
/// `0..num_hashes`, with `delta = h.rotate_left(17) | 1`. Computed incrementally (two
/// divisions per key instead of one per position), tracking the wrap-around of the 64-bit sum.
struct Positions {
    /// `(h + i * delta) mod 2^64`, the 64-bit sum of the next position.
    sum: u64,
    delta: u64,
    /// `sum mod n`.
    pos: u64,
    /// `delta mod n`.
    step: u64,
    /// `2^64 mod n`, taken off once the 64-bit sum wraps.
    wrap: u64,
    n: u64,
    left: u32,
}

impl Positions {
    fn new(h: u64, num_hashes: u32, n: u64) -> Self {
        let delta = h.rotate_left(17) | 1;
        Positions { sum: h, delta, pos: h % n, step: delta % n, wrap: (u64::MAX % n + 1) % n, n, left: num_hashes }
    }
}

/// `(a + b) mod n` for `a, b < n`.
fn add_mod(a: u64, b: u64, n: u64) -> u64 {
    let (s, overflow) = a.overflowing_add(b);
    if overflow || s >= n {
        s.wrapping_sub(n)
    } else {
        s
    }
}

impl Iterator for Positions {
    type Item = u64;

    fn next(&mut self) -> Option<u64> {
        if self.left == 0 {
            return None;
        }
        self.left -= 1;
        let p = self.pos;
        let (sum, wrapped) = self.sum.overflowing_add(self.delta);
        self.sum = sum;
        self.pos = add_mod(self.pos, self.step, self.n);
        if wrapped && self.wrap != 0 {
            // The 64-bit sum wrapped, dropping 2^64: take 2^64 mod n off the position too.
            self.pos = add_mod(self.pos, self.n - self.wrap, self.n);
        }
        Some(p)
    }
}

impl Bloom {
    /// A filter sized for `keys` at `bits_per_key` (10 gives about 1 % false positives).
    pub fn build<'a>(keys: impl ExactSizeIterator<Item = &'a [u8]>, bits_per_key: u32) -> Self {
        let mut bloom = Bloom::empty(keys.len(), bits_per_key);
        for key in keys {
            bloom.insert_hash(hash64(key));
        }
        bloom
    }

    /// The filter `build` makes for the keys whose `hash64` values are `hashes` (same bytes).
    pub fn from_hashes(hashes: &[u64], bits_per_key: u32) -> Self {
        let mut bloom = Bloom::empty(hashes.len(), bits_per_key);
        for &h in hashes {
            bloom.insert_hash(h);
        }
        bloom
    }

    fn empty(keys: usize, bits_per_key: u32) -> Self {
        let bits_per_key = bits_per_key.max(1);
        let num_bits = (keys as u64 * u64::from(bits_per_key)).max(64);
        // k = bits_per_key * ln 2, rounded.
        let num_hashes = ((f64::from(bits_per_key) * std::f64::consts::LN_2).round() as u32).clamp(1, MAX_HASHES);
        Bloom { num_hashes, num_bits, bits: vec![0; num_bits.div_ceil(8) as usize] }
    }

    fn insert_hash(&mut self, h: u64) {
        for p in Positions::new(h, self.num_hashes, self.num_bits) {
            self.bits[(p / 8) as usize] |= 1 << (p % 8);
        }
    }

    /// False means the key is certainly not in the set.
    pub fn may_contain(&self, key: &[u8]) -> bool {
        Positions::new(hash64(key), self.num_hashes, self.num_bits)
            .all(|p| self.bits[(p / 8) as usize] & (1 << (p % 8)) != 0)
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
    fn incremental_positions_match_the_formula() {
        let naive = |h: u64, k: u32, n: u64| -> Vec<u64> {
            let delta = h.rotate_left(17) | 1;
            (0..u64::from(k)).map(|i| h.wrapping_add(i.wrapping_mul(delta)) % n).collect()
        };
        let sizes = [1, 2, 3, 64, 65, 1000, 10_000_019, (1 << 40) + 1, 1 << 40, (1 << 63) + 5, u64::MAX - 1, u64::MAX];
        let special = [0, 1, u64::MAX, u64::MAX - 1, 1 << 63];
        for round in 0..20_000u64 {
            let h = special.get(round as usize).copied().unwrap_or_else(|| hash64(&round.to_le_bytes()));
            for &n in &sizes {
                let k = (round % u64::from(MAX_HASHES)) as u32 + 1;
                assert_eq!(Positions::new(h, k, n).collect::<Vec<_>>(), naive(h, k, n), "h {h:#x} n {n} k {k}");
            }
        }
    }

    #[test]
    fn from_hashes_matches_build() {
        for n in [0u32, 1, 7, 100, 5000] {
            let keys: Vec<Vec<u8>> = (0..n).map(|i| format!("key-{i}").into_bytes()).collect();
            let hashes: Vec<u64> = keys.iter().map(|k| hash64(k)).collect();
            for bits in [1, 10, 16] {
                let built = Bloom::build(keys.iter().map(Vec::as_slice), bits);
                assert_eq!(Bloom::from_hashes(&hashes, bits).to_bytes(), built.to_bytes());
            }
        }
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
