//! A bounded ring of records with ever-increasing ids (k-line bars, ticks).
//!
//! DIFF addresses series records by id (`klines/<sym>/<dur>/data/<id>`, `last_id`), so every
//! record keeps the id it was born with: the number of records pushed before it. When the ring
//! is full the oldest record is overwritten in place; the backing chunks are allocated during
//! the first lap and never past it, so pushing never allocates after the first lap.
//!
//! The records are kept in shared chunks (`ChunkedVec`), so cloning a ring (a checkpoint's
//! snapshot of the engine) copies pointers, and the ring's next write copies only the chunk
//! it lands in.

use crate::domain::chunked_vec::ChunkedVec;

/// Keeps the newest `capacity` records, each with its id.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "RingParts<T>")]
#[serde(bound(deserialize = "T: Clone + serde::Deserialize<'de>"))]
pub struct Ring<T: Clone> {
    slots: ChunkedVec<T>,
    /// Index in `slots` of the oldest record; 0 until the ring has wrapped.
    head: usize,
    capacity: usize,
    /// Records ever pushed: the id the next record will get.
    pushed: i64,
}

impl<T: Clone> Ring<T> {
    /// A ring for `capacity` records (at least one).
    pub fn with_capacity(capacity: usize) -> Self {
        let capacity = capacity.max(1);
        Self { slots: ChunkedVec::default(), head: 0, capacity, pushed: 0 }
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Records currently held (at most `capacity`).
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// Records ever pushed, which is also the id the next one gets.
    pub fn pushed(&self) -> i64 {
        self.pushed
    }

    /// Id of the oldest record held, -1 when empty (the DIFF convention for "none").
    pub fn first_id(&self) -> i64 {
        if self.slots.is_empty() {
            -1
        } else {
            self.pushed - self.slots.len() as i64
        }
    }

    /// Id of the newest record, -1 when empty.
    pub fn last_id(&self) -> i64 {
        self.pushed - 1
    }

    /// Appends `value`, dropping the oldest record when full; returns the new record's id.
    pub fn push(&mut self, value: T) -> i64 {
        if self.slots.len() < self.capacity {
            self.slots.push(value);
        } else {
            // `head` is within a full ring (`try_from` refuses a decoded ring where it is not).
            if let Some(slot) = self.slots.get_mut(self.head) {
                *slot = value;
            }
            self.head = if self.head + 1 == self.capacity { 0 } else { self.head + 1 };
        }
        self.pushed += 1;
        debug_assert!(self.slots.len() <= self.capacity);
        self.pushed - 1
    }

    /// Slot of the newest record: the one just before `head` (no division on the hot path).
    #[inline]
    fn newest_index(&self) -> Option<usize> {
        let len = self.slots.len();
        if len == 0 {
            None
        } else if len < self.capacity || self.head == 0 {
            Some(len - 1)
        } else {
            Some(self.head - 1)
        }
    }

    #[inline]
    pub fn last(&self) -> Option<&T> {
        self.newest_index().and_then(|i| self.slots.get(i))
    }

    #[inline]
    pub fn last_mut(&mut self) -> Option<&mut T> {
        let i = self.newest_index()?;
        self.slots.get_mut(i)
    }

    /// The record with id `id`, if it is still held.
    pub fn get(&self, id: i64) -> Option<&T> {
        let first = self.first_id();
        if self.slots.is_empty() || id < first || id > self.last_id() {
            return None;
        }
        let offset = (id - first) as usize;
        // head < len and offset < len, so one conditional subtraction wraps (no division).
        let mut index = self.head + offset;
        if index >= self.slots.len() {
            index -= self.slots.len();
        }
        self.slots.get(index)
    }

    /// `(id, record)` pairs, oldest first.
    pub fn iter(&self) -> RingIter<'_, T> {
        RingIter { ring: self, front: self.pushed - self.slots.len() as i64, back: self.pushed }
    }

    /// `(id, record)` pairs with id >= `from_id`, oldest first (e.g. the newest N bars of a
    /// chart: `iter_from(last_id - N + 1)`).
    pub fn iter_from(&self, from_id: i64) -> RingIter<'_, T> {
        let mut iter = self.iter();
        iter.front = iter.front.max(from_id).min(iter.back);
        iter
    }
}

/// A ring as decoded (checkpoints), before its fields are checked against each other.
#[derive(serde::Deserialize)]
#[serde(bound(deserialize = "T: Clone + serde::Deserialize<'de>"))]
struct RingParts<T: Clone> {
    slots: ChunkedVec<T>,
    head: usize,
    capacity: usize,
    pushed: i64,
}

impl<T: Clone> TryFrom<RingParts<T>> for Ring<T> {
    type Error = String;

    /// Refuses fields no sequence of pushes leaves (they would index out of bounds).
    fn try_from(parts: RingParts<T>) -> Result<Self, String> {
        let RingParts { slots, head, capacity, pushed } = parts;
        let len = slots.len();
        let head_ok = if len < capacity { head == 0 } else { head < len };
        if capacity == 0 || len > capacity || !head_ok || pushed < len as i64 {
            return Err(format!("a ring of {len} records, head {head}, capacity {capacity}, {pushed} pushed"));
        }
        Ok(Ring { slots, head, capacity, pushed })
    }
}

/// Iterator over `(id, &record)`; double-ended and exact-size.
#[derive(Clone, Debug)]
pub struct RingIter<'a, T: Clone> {
    ring: &'a Ring<T>,
    /// Next id from the front (inclusive).
    front: i64,
    /// End id (exclusive).
    back: i64,
}

impl<'a, T: Clone> Iterator for RingIter<'a, T> {
    type Item = (i64, &'a T);

    fn next(&mut self) -> Option<Self::Item> {
        if self.front >= self.back {
            return None;
        }
        let id = self.front;
        self.front += 1;
        self.ring.get(id).map(|v| (id, v))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let n = (self.back - self.front).max(0) as usize;
        (n, Some(n))
    }
}

impl<T: Clone> DoubleEndedIterator for RingIter<'_, T> {
    fn next_back(&mut self) -> Option<Self::Item> {
        if self.front >= self.back {
            return None;
        }
        self.back -= 1;
        let id = self.back;
        self.ring.get(id).map(|v| (id, v))
    }
}

impl<T: Clone> ExactSizeIterator for RingIter<'_, T> {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drops_the_oldest_and_keeps_ids_increasing() {
        let mut ring = Ring::with_capacity(3);
        assert_eq!((ring.first_id(), ring.last_id(), ring.len()), (-1, -1, 0));
        assert!(ring.last().is_none() && ring.get(0).is_none());
        for value in 10..15 {
            ring.push(value);
        }
        // Pushed 10,11,12,13,14 with ids 0..=4; 10 and 11 fell off.
        assert_eq!((ring.first_id(), ring.last_id(), ring.len(), ring.pushed()), (2, 4, 3, 5));
        let got: Vec<(i64, i32)> = ring.iter().map(|(id, v)| (id, *v)).collect();
        assert_eq!(got, vec![(2, 12), (3, 13), (4, 14)]);
        let back: Vec<i64> = ring.iter().rev().map(|(id, _)| id).collect();
        assert_eq!(back, vec![4, 3, 2]);
        assert_eq!((ring.get(1), ring.get(2), ring.get(4), ring.get(5)), (None, Some(&12), Some(&14), None));
        assert_eq!(ring.last(), Some(&14));
        assert_eq!(ring.iter_from(3).map(|(id, _)| id).collect::<Vec<_>>(), vec![3, 4]);
        assert_eq!(ring.iter_from(-7).len(), 3);
        assert_eq!(ring.iter_from(9).len(), 0);
    }

    #[test]
    fn never_grows_past_its_capacity() {
        let mut ring = Ring::with_capacity(4);
        ring.push(0u64);
        let base = ring.get(0).unwrap() as *const u64;
        for value in 1..1000u64 {
            ring.push(value);
            *ring.last_mut().unwrap() += 1;
        }
        // Still the first lap's storage (overwritten in place), and never more than 4 held.
        assert_eq!(ring.slots.len(), 4);
        assert_eq!(ring.slots.get(0).unwrap() as *const u64, base);
        assert_eq!(ring.iter().map(|(_, v)| *v).collect::<Vec<_>>(), vec![997, 998, 999, 1000]);
        assert_eq!(ring.last_id(), 999);
    }

    #[test]
    fn a_clone_keeps_its_records_while_the_ring_laps_on() {
        let capacity = 3 * crate::domain::chunked_vec::CHUNK_LEN;
        let mut ring = Ring::with_capacity(capacity);
        for value in 0..capacity as u64 + 10 {
            ring.push(value);
        }
        let snapshot = ring.clone();
        for value in 0..capacity as u64 {
            ring.push(1_000_000 + value);
            *ring.last_mut().unwrap() += 1;
        }
        assert!(snapshot.iter().map(|(_, v)| *v).eq(10..capacity as u64 + 10));
        assert!(ring.iter().map(|(_, v)| *v).eq(1_000_001..1_000_001 + capacity as u64));
        assert_eq!(bincode::serialize(&snapshot).unwrap(), bincode::serialize(&snapshot.clone()).unwrap());
    }

    #[test]
    fn zero_capacity_means_one() {
        let mut ring = Ring::with_capacity(0);
        ring.push('a');
        ring.push('b');
        assert_eq!((ring.capacity(), ring.first_id(), ring.last()), (1, 1, Some(&'b')));
    }
}
