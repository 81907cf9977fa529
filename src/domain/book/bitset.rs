//! A two-level bitmap over price levels: which levels of one side hold orders.
//!
//! Finding the next non-empty level after the best one empties is the only search the book does;
//! with 64 x 64 = 4096 levels per summary word it is a couple of `leading_zeros` calls instead of a
//! walk over empty levels.

#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct LevelBitset {
    words: Vec<u64>,
    summary: Vec<u64>,
}

impl LevelBitset {
    pub fn new(level_count: usize) -> Self {
        let word_count = level_count.div_ceil(64).max(1);
        Self { words: vec![0; word_count], summary: vec![0; word_count.div_ceil(64)] }
    }

    pub fn set(&mut self, index: usize) {
        let word = index / 64;
        self.words[word] |= 1 << (index % 64);
        self.summary[word / 64] |= 1 << (word % 64);
    }

    pub fn clear(&mut self, index: usize) {
        let word = index / 64;
        self.words[word] &= !(1 << (index % 64));
        if self.words[word] == 0 {
            self.summary[word / 64] &= !(1 << (word % 64));
        }
    }

    pub fn contains(&self, index: usize) -> bool {
        self.words.get(index / 64).is_some_and(|w| w & (1 << (index % 64)) != 0)
    }

    /// The lowest set index >= `from`.
    pub fn first_at_or_above(&self, from: usize) -> Option<usize> {
        let mut word = from / 64;
        if word >= self.words.len() {
            return None;
        }
        let masked = self.words[word] & (u64::MAX << (from % 64));
        if masked != 0 {
            return Some(word * 64 + masked.trailing_zeros() as usize);
        }
        word += 1;
        let mut summary_index = word / 64;
        if summary_index >= self.summary.len() {
            return None;
        }
        let mut summary_word = if word % 64 == 0 {
            self.summary[summary_index]
        } else {
            self.summary[summary_index] & (u64::MAX << (word % 64))
        };
        loop {
            if summary_word != 0 {
                let w = summary_index * 64 + summary_word.trailing_zeros() as usize;
                return Some(w * 64 + self.words[w].trailing_zeros() as usize);
            }
            summary_index += 1;
            if summary_index >= self.summary.len() {
                return None;
            }
            summary_word = self.summary[summary_index];
        }
    }

    /// The highest set index <= `from`.
    pub fn last_at_or_below(&self, from: usize) -> Option<usize> {
        let from = from.min(self.words.len() * 64 - 1);
        let word = from / 64;
        let shift = 63 - (from % 64);
        let masked = (self.words[word] << shift) >> shift;
        if masked != 0 {
            return Some(word * 64 + 63 - masked.leading_zeros() as usize);
        }
        if word == 0 {
            return None;
        }
        let below = word - 1;
        let mut summary_index = below / 64;
        let keep = 63 - (below % 64);
        let mut summary_word = (self.summary[summary_index] << keep) >> keep;
        loop {
            if summary_word != 0 {
                let w = summary_index * 64 + 63 - summary_word.leading_zeros() as usize;
                return Some(w * 64 + 63 - self.words[w].leading_zeros() as usize);
            }
            if summary_index == 0 {
                return None;
            }
            summary_index -= 1;
            summary_word = self.summary[summary_index];
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeSet;

    proptest! {
        #[test]
        fn matches_a_btreeset(ops in prop::collection::vec((any::<bool>(), 0usize..10_000), 1..400),
                              probes in prop::collection::vec(0usize..10_000, 1..50)) {
            let mut bits = LevelBitset::new(10_000);
            let mut model = BTreeSet::new();
            for (insert, index) in ops {
                if insert { bits.set(index); model.insert(index); } else { bits.clear(index); model.remove(&index); }
            }
            for p in probes {
                prop_assert_eq!(bits.first_at_or_above(p), model.range(p..).next().copied());
                prop_assert_eq!(bits.last_at_or_below(p), model.range(..=p).next_back().copied());
                prop_assert_eq!(bits.contains(p), model.contains(&p));
            }
        }
    }
}
