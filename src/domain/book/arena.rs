//! Slab storage for resting orders plus the order-id index.
//!
//! Nodes are recycled through a free list, so once the book has seen its peak number of resting
//! orders, placing and cancelling allocate nothing.

use super::RestingOrder;
use crate::domain::fast_hash::FastMap;
use serde::{Deserialize, Serialize};

pub const NIL: u32 = u32::MAX;

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Node {
    pub order: RestingOrder,
    pub prev: u32,
    pub next: u32,
}

pub type OrderIndex = FastMap<u64, u32>;

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Arena {
    nodes: Vec<Node>,
    free_head: u32,
    live: usize,
}

impl Arena {
    pub fn with_capacity(capacity: usize) -> Self {
        Self { nodes: Vec::with_capacity(capacity), free_head: NIL, live: 0 }
    }

    /// Reserves room for `capacity` nodes in all.
    pub fn reserve(&mut self, capacity: usize) {
        self.nodes.reserve(capacity.saturating_sub(self.nodes.len()));
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
