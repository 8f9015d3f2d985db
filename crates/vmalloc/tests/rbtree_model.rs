//! Model-based test of the augmented red-black tree: random inserts,
//! removals and lookups against a `BTreeMap`, with the tree's checker (order,
//! colours, black heights, parent links, cached values) after every step.

use std::collections::BTreeMap;
use std::mem::offset_of;
use std::ptr::NonNull;

use kmm_vmalloc::rbtree::{Adapter, Link, RbTree};
use proptest::prelude::*;

/// A test node: a key and an own value; the subtree caches the largest own
/// value, as the free tree caches the largest size.
struct Node {
    link: Link,
    key: usize,
    own: usize,
}

struct MaxOwn;

// SAFETY: `LINK_OFFSET` is the offset of `Node::link`, a `Link`.
unsafe impl Adapter for MaxOwn {
    type Node = Node;
    const LINK_OFFSET: usize = offset_of!(Node, link);
    const AUGMENTED: bool = true;

    fn key(node: &Node) -> usize {
        node.key
    }

    fn augment(node: &Node, left: Option<usize>, right: Option<usize>) -> usize {
        node.own.max(left.unwrap_or(0)).max(right.unwrap_or(0))
    }
}

/// The nodes, leaked from boxes (a `Vec<Box<Node>>` would assert unique
/// ownership the tree's pointers contradict); freed when the arena drops,
/// after the tree.
#[derive(Default)]
struct Arena(Vec<NonNull<Node>>);

impl Arena {
    fn node(&mut self, key: usize, own: usize) -> NonNull<Node> {
        let node = Box::new(Node {
            link: Link::new(),
            key,
            own,
        });
        let ptr = NonNull::from(Box::leak(node));
        self.0.push(ptr);
        ptr
    }
}

impl Drop for Arena {
    fn drop(&mut self) {
        for &node in &self.0 {
            // SAFETY: leaked by `node`, freed once, the tree is gone.
            drop(unsafe { Box::from_raw(node.as_ptr()) });
        }
    }
}

#[derive(Clone, Debug)]
enum Op {
    Insert { key: usize, own: usize },
    RemoveKey { key: usize },
    RemoveNode { key: usize },
    Lookup { key: usize },
    LowestMatch { min_key: usize, need: usize },
}

const KEYS: usize = 96;

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0..KEYS, 0..1000usize).prop_map(|(key, own)| Op::Insert { key, own }),
        2 => (0..KEYS).prop_map(|key| Op::RemoveKey { key }),
        1 => (0..KEYS).prop_map(|key| Op::RemoveNode { key }),
        2 => (0..KEYS + 2).prop_map(|key| Op::Lookup { key }),
        2 => (0..KEYS + 2, 0..1100usize).prop_map(|(min_key, need)| Op::LowestMatch { min_key, need }),
    ]
}

struct Harness {
    // The tree first: dropped before the arena that holds its nodes.
    tree: RbTree<MaxOwn>,
    model: BTreeMap<usize, usize>,
    arena: Arena,
}

impl Harness {
    fn apply(&mut self, op: &Op) -> Result<(), TestCaseError> {
        match *op {
            Op::Insert { key, own } => {
                let node = self.arena.node(key, own);
                // SAFETY: a fresh arena node; it outlives the tree and is
                // reached only through the tree until removed.
                let res = unsafe { self.tree.insert(node) };
                let fresh = !self.model.contains_key(&key);
                prop_assert_eq!(res.is_ok(), fresh);
                if fresh {
                    self.model.insert(key, own);
                }
            }
            Op::RemoveKey { key } => {
                let got = self.tree.remove_key(key);
                // SAFETY: an arena node that just left the tree.
                let got = got.map(|n| unsafe { n.as_ref() }.own);
                prop_assert_eq!(got, self.model.remove(&key));
            }
            Op::RemoveNode { key } => {
                let ptr = self.tree.get(key).map(|n| n.as_ptr());
                prop_assert_eq!(ptr.is_some(), self.model.contains_key(&key));
                if let Some(ptr) = ptr {
                    // SAFETY: `get` found it linked in this tree.
                    unsafe { self.tree.remove(ptr) };
                    self.model.remove(&key);
                }
            }
            Op::Lookup { key } => {
                let own = |n: kmm_vmalloc::rbtree::NodeRef<'_, MaxOwn>| (n.key(), n.own);
                let m = &self.model;
                let model_pair = |(&k, &o): (&usize, &usize)| (k, o);
                prop_assert_eq!(
                    self.tree.get(key).map(own),
                    m.get_key_value(&key).map(model_pair)
                );
                prop_assert_eq!(
                    self.tree.floor(key).map(own),
                    m.range(..=key).next_back().map(model_pair)
                );
                prop_assert_eq!(
                    self.tree.ceil(key).map(own),
                    m.range(key..).next().map(model_pair)
                );
                if let Some(n) = self.tree.get(key) {
                    prop_assert_eq!(n.next().map(own), m.range(key + 1..).next().map(model_pair));
                    prop_assert_eq!(
                        n.prev().map(own),
                        m.range(..key).next_back().map(model_pair)
                    );
                }
                prop_assert_eq!(
                    self.tree.first().map(own),
                    m.first_key_value().map(model_pair)
                );
                prop_assert_eq!(
                    self.tree.last().map(own),
                    m.last_key_value().map(model_pair)
                );
            }
            Op::LowestMatch { min_key, need } => {
                let found = self
                    .tree
                    .lowest_match(min_key, |max| max >= need, |n| n.own >= need);
                let want = self
                    .model
                    .range(min_key..)
                    .find(|&(_, &own)| own >= need)
                    .map(|(&k, _)| k);
                prop_assert_eq!(found.node.map(|n| n.key()), want);
                // An exact predicate: at most about three paths.
                let shape = self.tree.check().unwrap();
                prop_assert!(
                    found.visited <= 3 * shape.height + 1,
                    "{} visits, height {}",
                    found.visited,
                    shape.height
                );
            }
        }
        Ok(())
    }

    fn check(&self) -> Result<(), TestCaseError> {
        let shape = self
            .tree
            .check()
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(shape.len, self.model.len());
        let tree: Vec<(usize, usize)> = self.tree.iter().map(|n| (n.key(), n.own)).collect();
        let model: Vec<(usize, usize)> = self.model.iter().map(|(&k, &o)| (k, o)).collect();
        prop_assert_eq!(tree, model);
        let max = self.model.values().copied().max();
        prop_assert_eq!(self.tree.root().map(|r| r.augmented()), max);
        Ok(())
    }
}

proptest! {
    #![proptest_config(kmm_testkit::model::proptest_config(256, 3))]

    #[test]
    fn tree_matches_a_btreemap(ops in prop::collection::vec(op(), if cfg!(miri) { 1..60 } else { 1..400 })) {
        let mut h = Harness { tree: RbTree::new(), model: BTreeMap::new(), arena: Arena::default() };
        for op in &ops {
            h.apply(op)?;
            h.check()?;
        }
        // Empty it in a random-ish order (every third key first).
        let keys: Vec<usize> = h.model.keys().copied().collect();
        for &k in keys.iter().step_by(3).chain(keys.iter()) {
            if h.model.remove(&k).is_some() {
                prop_assert!(h.tree.remove_key(k).is_some());
                h.check()?;
            }
        }
        prop_assert!(h.tree.is_empty());
    }
}
