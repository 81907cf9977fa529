//! A vector kept in fixed-size chunks, each shared by reference count.
//!
//! Why: a checkpoint needs the shard's state as it was at one WAL sequence, and encoding a
//! large journal takes hundreds of milliseconds; the shard must not stop that long. A copy of
//! this vector costs one reference count per chunk (a thousand for a million records), so the
//! shard takes it in its pause and a background thread encodes it. A write after the copy
//! duplicates only the chunk it lands in (`Arc::make_mut`), once per chunk and copy; a chunk
//! nobody shares is written in place, as a plain `Vec` would be.

use serde::de::{Deserialize, Deserializer, SeqAccess, Visitor};
use serde::ser::{Serialize, SerializeSeq, Serializer};
use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;

/// Items per chunk: large enough that the chunk table stays small (a million records take
/// 977 pointers), small enough that copying a chunk on its first write after a snapshot is
/// short (1,024 journal slots are about 140 KB).
pub const CHUNK_LEN: usize = 1024;

/// See the module docs. Cloning shares every chunk.
#[derive(Clone, Debug)]
pub struct ChunkedVec<T> {
    /// Full chunks of `CHUNK_LEN` items, the last one possibly shorter (never empty).
    chunks: Vec<Arc<Vec<T>>>,
    len: usize,
}

impl<T> Default for ChunkedVec<T> {
    fn default() -> Self {
        ChunkedVec { chunks: Vec::new(), len: 0 }
    }
}

impl<T: Clone> ChunkedVec<T> {
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn get(&self, at: usize) -> Option<&T> {
        self.chunks.get(at / CHUNK_LEN).and_then(|chunk| chunk.get(at % CHUNK_LEN))
    }

    /// The item at `at`, its chunk copied first when a snapshot still shares it.
    pub fn get_mut(&mut self, at: usize) -> Option<&mut T> {
        let chunk = self.chunks.get_mut(at / CHUNK_LEN)?;
        Arc::make_mut(chunk).get_mut(at % CHUNK_LEN)
    }

    pub fn push(&mut self, item: T) {
        match self.chunks.last_mut() {
            Some(last) if self.len % CHUNK_LEN != 0 => {
                let chunk = Arc::make_mut(last);
                // A chunk copied from a shared one has only the capacity of its items.
                chunk.reserve_exact(CHUNK_LEN - chunk.len());
                chunk.push(item);
            }
            _ => {
                let mut chunk = Vec::with_capacity(CHUNK_LEN);
                chunk.push(item);
                self.chunks.push(Arc::new(chunk));
            }
        }
        self.len += 1;
    }

    pub fn iter(&self) -> impl Iterator<Item = &T> {
        self.chunks.iter().flat_map(|chunk| chunk.iter())
    }

    /// How many chunks this vector shares with another copy of it (tests and metrics).
    pub fn shared_chunks(&self) -> usize {
        self.chunks.iter().filter(|chunk| Arc::strong_count(chunk) > 1).count()
    }
}

/// Equal when the items are, however they are chunked and shared.
impl<T: Clone + PartialEq> PartialEq for ChunkedVec<T> {
    fn eq(&self, other: &Self) -> bool {
        self.len == other.len && self.iter().eq(other.iter())
    }
}

impl<T: Clone + Eq> Eq for ChunkedVec<T> {}

impl<T: Clone> FromIterator<T> for ChunkedVec<T> {
    fn from_iter<I: IntoIterator<Item = T>>(items: I) -> Self {
        let mut vec = ChunkedVec::default();
        items.into_iter().for_each(|item| vec.push(item));
        vec
    }
}

/// Written as a plain sequence: the same bytes a `Vec<T>` of the items gives.
impl<T: Clone + Serialize> Serialize for ChunkedVec<T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut seq = serializer.serialize_seq(Some(self.len))?;
        for item in self.iter() {
            seq.serialize_element(item)?;
        }
        seq.end()
    }
}

/// Read from a plain sequence straight into chunks (no intermediate `Vec` of everything).
impl<'de, T: Clone + Deserialize<'de>> Deserialize<'de> for ChunkedVec<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Items<T>(PhantomData<T>);

        impl<'de, T: Clone + Deserialize<'de>> Visitor<'de> for Items<T> {
            type Value = ChunkedVec<T>;

            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a sequence")
            }

            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                // Each chunk filled before it is shared (no reference count checked per item).
                let mut vec = ChunkedVec::default();
                let mut chunk = Vec::with_capacity(CHUNK_LEN);
                while let Some(item) = seq.next_element()? {
                    chunk.push(item);
                    if chunk.len() == CHUNK_LEN {
                        vec.len += CHUNK_LEN;
                        vec.chunks.push(Arc::new(std::mem::replace(&mut chunk, Vec::with_capacity(CHUNK_LEN))));
                    }
                }
                if !chunk.is_empty() {
                    vec.len += chunk.len();
                    vec.chunks.push(Arc::new(chunk));
                }
                Ok(vec)
            }
        }

        deserializer.deserialize_seq(Items(PhantomData))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_copy_keeps_what_it_saw_while_the_original_changes() {
        let mut vec: ChunkedVec<u64> = (0..3 * CHUNK_LEN as u64 + 5).collect();
        let snapshot = vec.clone();
        assert_eq!(vec.shared_chunks(), 4);
        *vec.get_mut(CHUNK_LEN + 7).unwrap() = 1_000_000;
        vec.push(42);
        assert_eq!(vec.get(CHUNK_LEN + 7), Some(&1_000_000));
        assert_eq!(snapshot.get(CHUNK_LEN + 7), Some(&(CHUNK_LEN as u64 + 7)));
        assert_eq!(snapshot.len(), 3 * CHUNK_LEN + 5);
        assert_eq!(snapshot.get(3 * CHUNK_LEN + 5), None);
        assert_eq!(vec.get(3 * CHUNK_LEN + 5), Some(&42));
        // Only the two chunks written were copied; the others are still shared.
        assert_eq!(vec.shared_chunks(), 2);
        assert!(snapshot.iter().copied().eq(0..3 * CHUNK_LEN as u64 + 5));
        drop(snapshot);
        assert_eq!(vec.shared_chunks(), 0);
    }

    #[test]
    fn it_encodes_as_a_vec_does_and_reads_back() {
        for len in [0, 1, CHUNK_LEN - 1, CHUNK_LEN, CHUNK_LEN + 1, 2 * CHUNK_LEN] {
            let plain: Vec<(u32, String)> = (0..len as u32).map(|i| (i, format!("item {i}"))).collect();
            let chunked: ChunkedVec<(u32, String)> = plain.iter().cloned().collect();
            let bytes = bincode::serialize(&chunked).unwrap();
            assert_eq!(bytes, bincode::serialize(&plain).unwrap(), "len {len}");
            let back: ChunkedVec<(u32, String)> = bincode::deserialize(&bytes).unwrap();
            assert_eq!(back.len(), len);
            assert!(back.iter().eq(plain.iter()), "len {len}");
            assert_eq!(back.get(len), None);
        }
    }

    #[test]
    fn out_of_range_is_none() {
        let mut vec: ChunkedVec<u8> = ChunkedVec::default();
        assert!(vec.is_empty());
        assert_eq!(vec.get(0), None);
        assert_eq!(vec.get_mut(0), None);
        vec.push(1);
        assert_eq!(vec.get_mut(1), None);
        assert_eq!(vec.get_mut(CHUNK_LEN), None);
    }
}
