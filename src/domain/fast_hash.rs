//! A small, fast, deterministic hasher for in-memory maps keyed by ids.
//!
//! SipHash (std's default) guards against hash flooding by remote input; our keys are order ids
//! we assign and short identifiers, and the maps are per shard, so a multiply-rotate hash is
//! enough and several times cheaper on the hot path.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

const K: u64 = 0x9E37_79B9_7F4A_7C15;

#[derive(Default, Clone, Copy)]
pub struct FastHasher(u64);

impl FastHasher {
    #[inline]
    fn mix(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(K);
    }
}

impl Hasher for FastHasher {
    #[inline]
    fn finish(&self) -> u64 {
        // Fold the high bits down: hashbrown uses the top 7 bits as tags and the low bits as
        // the bucket, and both must vary.
        self.0 ^ (self.0 >> 32)
    }

    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for chunk in &mut chunks {
            let mut word = [0u8; 8];
            word.copy_from_slice(chunk);
            self.mix(u64::from_le_bytes(word));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut word = [0u8; 8];
            word[..rest.len()].copy_from_slice(rest);
            self.mix(u64::from_le_bytes(word));
        }
    }

    #[inline]
    fn write_u8(&mut self, value: u8) {
        self.mix(value as u64);
    }

    #[inline]
    fn write_u32(&mut self, value: u32) {
        self.mix(value as u64);
    }

    #[inline]
    fn write_u64(&mut self, value: u64) {
        self.mix(value);
    }

    #[inline]
    fn write_usize(&mut self, value: usize) {
        self.mix(value as u64);
    }
}

pub type FastBuild = BuildHasherDefault<FastHasher>;
pub type FastMap<K, V> = HashMap<K, V, FastBuild>;

/// Serde for large maps in checkpoints: written as a sequence of pairs, read back into a map
/// sized for all of them at once. (Serde's own map reading grows the table step by step from
/// a cautious guess: for the million-entry maps of a journal, rehashing several times over.)
pub mod presized_map {
    use super::FastMap;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};
    use std::hash::Hash;

    pub fn serialize<K: Serialize, V: Serialize, S: Serializer>(
        map: &FastMap<K, V>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(map.iter())
    }

    pub fn deserialize<'de, K, V, D>(deserializer: D) -> Result<FastMap<K, V>, D::Error>
    where
        K: Deserialize<'de> + Eq + Hash,
        V: Deserialize<'de>,
        D: Deserializer<'de>,
    {
        let pairs = Vec::<(K, V)>::deserialize(deserializer)?;
        let mut map = FastMap::with_capacity_and_hasher(pairs.len(), Default::default());
        map.extend(pairs);
        Ok(map)
    }
}

/// Serde for ordered maps and sets in checkpoints: read back as a whole and built in bulk
/// (`FromIterator` sorts, which is linear on the sorted input, then builds the tree without
/// the per-entry searches and splits of one-by-one inserts).
pub mod bulk_ordered {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<T, I, S>(items: T, serializer: S) -> Result<S::Ok, S::Error>
    where
        T: IntoIterator<Item = I>,
        I: Serialize,
        S: Serializer,
    {
        serializer.collect_seq(items)
    }

    pub fn deserialize<'de, C, I, D>(deserializer: D) -> Result<C, D::Error>
    where
        C: FromIterator<I>,
        I: Deserialize<'de>,
        D: Deserializer<'de>,
    {
        Ok(Vec::<I>::deserialize(deserializer)?.into_iter().collect())
    }
}
