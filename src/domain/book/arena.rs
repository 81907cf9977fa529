//! Slab storage for resting orders plus the order-id index.
//!
//! Nodes are recycled through a free list, so once the book has seen its peak number of resting
//! orders, placing and cancelling allocate nothing.

use super::RestingOrder;
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

pub const NIL: u32 = u32::MAX;

#[derive(Clone, Debug)]
pub struct Node {
    pub order: RestingOrder,
    pub prev: u32,
    pub next: u32,
}

/// Order ids are mostly sequential integers: a Fibonacci multiply spreads them over the table
/// (an identity hash would leave hashbrown's control bytes all equal).
#[derive(Default, Clone, Copy)]
pub struct OrderIdHasher(u64);

impl Hasher for OrderIdHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ b as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }
    fn write_u64(&mut self, value: u64) {
        self.0 = value.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

pub type OrderIndex = HashMap<u64, u32, BuildHasherDefault<OrderIdHasher>>;

#[derive(Clone, Debug, Default)]
pub struct Arena {
    nodes: Vec<Node>,
    free_head: u32,
    live: usize,
}

impl Arena {
    pub fn with_capacity(capacity: usize) -> Self {
        Self { nodes: Vec::with_capacity(capacity), free_head: NIL, live: 0 }
    }

    pub fn insert(&mut self, order: RestingOrder) -> u32 {
        self.live += 1;
        let node = Node { order, prev: NIL, next: NIL };
        if self.free_head != NIL {
            let slot = self.free_head;
            self.free_head = self.nodes[slot as usize].next;
            self.nodes[slot as usize] = node;
            slot
        } else {
            self.nodes.push(node);
            (self.nodes.len() - 1) as u32
        }
    }

    pub fn remove(&mut self, slot: u32) -> RestingOrder {
        self.live -= 1;
        let node = &mut self.nodes[slot as usize];
        node.next = self.free_head;
        node.prev = NIL;
        self.free_head = slot;
        node.order
    }

    pub fn get(&self, slot: u32) -> &Node {
        &self.nodes[slot as usize]
    }

    pub fn get_mut(&mut self, slot: u32) -> &mut Node {
        &mut self.nodes[slot as usize]
    }

    pub fn live(&self) -> usize {
        self.live
    }
}
