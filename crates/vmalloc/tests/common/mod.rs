//! What the vmalloc tests share: a pool of free-tree nodes that stands in for
//! `kmalloc`, counting the nodes out so a test can see none is lost.
#![allow(dead_code)] // each test file uses part of it

use core::ptr::NonNull;

use kmm_vmalloc::free_area::{FreeNode, OwnedNode};

/// Hands out nodes from leaked boxes and takes them back.
#[derive(Default)]
pub struct NodePool {
    /// Nodes handed out and not yet given back.
    pub outstanding: usize,
}

impl NodePool {
    /// A fresh node.
    pub fn take(&mut self) -> OwnedNode {
        self.outstanding += 1;
        let node = NonNull::from(Box::leak(Box::new(FreeNode::new())));
        // SAFETY: a fresh box nobody else knows of; `give` frees it.
        unsafe { OwnedNode::from_raw(node) }
    }

    /// Frees a node handed back.
    pub fn give(&mut self, node: OwnedNode) {
        self.outstanding -= 1;
        // SAFETY: every `OwnedNode` in these tests comes from `take` (a
        // leaked box) and is given back once.
        drop(unsafe { Box::from_raw(node.into_raw().as_ptr()) });
    }

    /// Frees every node in `nodes`, returning how many there were.
    pub fn give_all(&mut self, nodes: impl IntoIterator<Item = OwnedNode>) -> usize {
        nodes.into_iter().map(|n| self.give(n)).count()
    }
}
