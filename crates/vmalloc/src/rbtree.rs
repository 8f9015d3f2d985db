//! An intrusive red-black tree, keyed by a `usize` and optionally augmented
//! with a per-subtree value (Linux's `lib/rbtree.c` with the
//! `rb_augment_callbacks` of `include/linux/rbtree_augmented.h`).
//!
//! # Why our own tree
//!
//! vmalloc keeps its free address ranges in a red-black tree in which every
//! node caches the largest free size of its subtree (Linux's
//! `subtree_max_size`), so a fitting hole is found in O(log n) however many
//! areas are live. That cache must be kept right through every rotation, and
//! `intrusive-collections`' `RBTree` has no hook on its rotations, so it
//! cannot be augmented. The tree here can.
//!
//! # Shape
//!
//! - **Intrusive and allocation-free.** A node is any caller-owned struct
//!   with a [`Link`] inside it; an [`Adapter`] says where the link is, what
//!   the node's key is, and how the augmented value is computed. In kmm the
//!   nodes live inside area descriptors that vmalloc takes from `kmalloc`, so
//!   the tree never allocates.
//! - **Unique `usize` keys** (the start address); inserting a key that is
//!   already there is refused.
//! - **Augmentation** ([`Adapter::AUGMENTED`], [`Adapter::augment`]): every
//!   link caches a value computed from its node and its children's cached
//!   values (for the free tree: `max(own size, left, right)`). Linux's three
//!   callbacks map onto this file as: *propagate* — [`RbTree::propagate`] and
//!   the walk to the root after an insert or an erase; *copy* — the successor
//!   that takes an erased node's place is recomputed on that walk; *rotate* —
//!   every rotation hands the old subtree root's value to the new one and
//!   recomputes the old one.
//! - **Operations**, each O(log n): [`RbTree::insert`], [`RbTree::remove`],
//!   [`RbTree::remove_key`], [`RbTree::get`], [`RbTree::floor`] (greatest key
//!   `<= k`), [`RbTree::ceil`] (least key `>= k`), [`NodeRef::next`] and
//!   [`NodeRef::prev`], [`RbTree::first`], [`RbTree::last`], and
//!   [`RbTree::lowest_match`], the descent that uses the augmented values to
//!   find the lowest-key node satisfying a predicate (the core of Linux's
//!   `find_vmap_lowest_match`). [`RbTree::check`] verifies every invariant in
//!   O(n) for tests.
//!
//! # Safety
//!
//! The tree holds raw pointers to nodes it does not own. What makes that
//! sound is the contract of [`RbTree::insert`]: from insertion until the node
//! is removed, it stays valid and does not move, it is in no other tree, and
//! the caller reaches it only through this tree (the tree hands out shared
//! [`NodeRef`]s borrowed from itself). Links are `Cell`s and the tree keeps
//! the pointers it was given at insertion (with their provenance), so every
//! write goes through interior mutability or through those pointers, which
//! keeps Miri's stacked and tree borrows happy. The tree is `Send` when its
//! nodes are, never `Sync`.
//!
//! The adapter's `key` and `augment` are only called while the links are
//! consistent: a panic in them may leave colours or cached values wrong, but
//! never a link pointing at a node that has left the tree. Removing a node
//! clears its links.

use core::cell::Cell;
use core::fmt;
use core::marker::PhantomData;
use core::ops::Deref;
use core::ptr::{self, NonNull};

/// The bit of [`Link::parent_color`] that marks a red node.
const RED: usize = 1;

/// The links of one node: parent (with the colour), children and the cached
/// augmented value (Linux's `struct rb_node` plus the augmented field).
///
/// Embed one in each node type and name its offset in the [`Adapter`].
pub struct Link {
    /// The parent's address with the colour in bit 0 (1 = red), like Linux's
    /// `__rb_parent_color`. Null for the root and for unlinked nodes.
    parent_color: Cell<*mut Link>,
    /// The left child (smaller keys).
    left: Cell<Option<NonNull<Link>>>,
    /// The right child (larger keys).
    right: Cell<Option<NonNull<Link>>>,
    /// The augmented value of the subtree rooted here.
    augmented: Cell<usize>,
}

// SAFETY: the pointers in a link are followed only by the `RbTree` the link
// is in, and while it is linked the contract of `RbTree::insert` lets the
// node be reached only through that tree, which is itself only `Send` (never
// `Sync`): moving a node or a whole tree to another thread cannot give two
// threads access to the same cells. An unlinked node's links are null and
// never followed.
unsafe impl Send for Link {}

impl Link {
    /// An unlinked link.
    pub const fn new() -> Self {
        Self {
            parent_color: Cell::new(ptr::null_mut()),
            left: Cell::new(None),
            right: Cell::new(None),
            augmented: Cell::new(0),
        }
    }

    /// The cached augmented value of the subtree rooted at this node (Linux's
    /// `subtree_max_size` for the free tree). Meaningful while the node is
    /// linked in a tree whose adapter is [`Adapter::AUGMENTED`].
    pub fn augmented(&self) -> usize {
        self.augmented.get()
    }

    fn parent(&self) -> Option<NonNull<Link>> {
        NonNull::new(self.parent_color.get().map_addr(|a| a & !RED))
    }

    fn is_red(&self) -> bool {
        self.parent_color.get().addr() & RED != 0
    }

    fn set_parent(&self, parent: Option<NonNull<Link>>) {
        let colour = self.parent_color.get().addr() & RED;
        let raw = parent.map_or(ptr::null_mut(), NonNull::as_ptr);
        self.parent_color.set(raw.map_addr(|a| a | colour));
    }

    fn set_red(&self, red: bool) {
        let raw = self.parent_color.get();
        self.parent_color
            .set(raw.map_addr(|a| (a & !RED) | usize::from(red)));
    }

    /// Forgets every link (after a removal).
    fn clear(&self) {
        self.parent_color.set(ptr::null_mut());
        self.left.set(None);
        self.right.set(None);
    }
}

impl Default for Link {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for Link {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Link")
            .field("red", &self.is_red())
            .field("augmented", &self.augmented.get())
            .finish_non_exhaustive()
    }
}

/// How a tree reaches the [`Link`] in its node type, the node's key, and the
/// augmented value.
///
/// # Safety
///
/// [`LINK_OFFSET`](Adapter::LINK_OFFSET) must be the byte offset of a field
/// of type [`Link`] inside `Node` (write `core::mem::offset_of!(Node,
/// link)`): the tree steps from a node pointer to its link and back by it.
/// Nothing else in the adapter is trusted for memory safety; a `key` that
/// changes the order of linked nodes or an `augment` that is not a function
/// of its inputs only makes the tree's answers wrong.
pub unsafe trait Adapter {
    /// The node type, with a [`Link`] inside.
    type Node;

    /// The offset of the [`Link`] inside [`Node`](Adapter::Node).
    const LINK_OFFSET: usize;

    /// Whether nodes cache an augmented value. When false, [`augment`]
    /// is never called and [`Link::augmented`] stays 0.
    ///
    /// [`augment`]: Adapter::augment
    const AUGMENTED: bool = false;

    /// The node's key. It may change while the node is linked only if the
    /// order of the linked nodes stays the same (a free range that shrinks
    /// from its start keeps its place).
    fn key(node: &Self::Node) -> usize;

    /// The augmented value of the subtree rooted at `node`, from the node
    /// itself and its children's cached values (`None` for a missing child).
    /// For vmalloc's free tree, Linux's `compute_subtree_max_size`:
    /// `max(size, left, right)`.
    fn augment(node: &Self::Node, left: Option<usize>, right: Option<usize>) -> usize {
        let _ = (node, left, right);
        0
    }
}

/// An intrusive red-black tree of caller-owned nodes (see the module docs).
pub struct RbTree<A: Adapter> {
    /// The root link, `None` when the tree is empty.
    root: Option<NonNull<Link>>,
    /// The number of linked nodes.
    len: usize,
    /// The tree refers to nodes it does not own.
    _nodes: PhantomData<*const A::Node>,
}

// SAFETY: the tree reaches its nodes only through `&self`/`&mut self`, and the
// contract of `insert` makes the tree the only way to reach a linked node, so
// sending the tree sends exclusive access to all of its nodes, which is
// sound when the nodes are `Send`. The tree is not `Sync` (its nodes' links
// are `Cell`s).
unsafe impl<A: Adapter> Send for RbTree<A> where A::Node: Send {}

impl<A: Adapter> Default for RbTree<A> {
    fn default() -> Self {
        Self::new()
    }
}

impl<A: Adapter> fmt::Debug for RbTree<A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.iter().map(|n| A::key(n.get())))
            .finish()
    }
}

/// A linked node, borrowed from the tree it is in: a cursor that can move to
/// its neighbours (Linux's `rb_next`/`rb_prev`) and dereferences to the node.
pub struct NodeRef<'a, A: Adapter> {
    tree: &'a RbTree<A>,
    link: NonNull<Link>,
}

impl<A: Adapter> Clone for NodeRef<'_, A> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<A: Adapter> Copy for NodeRef<'_, A> {}

impl<A: Adapter> fmt::Debug for NodeRef<'_, A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NodeRef")
            .field("key", &self.key())
            .field("augmented", &self.augmented())
            .finish()
    }
}

impl<'a, A: Adapter> NodeRef<'a, A> {
    /// The node.
    pub fn get(&self) -> &'a A::Node {
        self.tree.node(self.link)
    }

    /// The node's key.
    pub fn key(&self) -> usize {
        A::key(self.get())
    }

    /// The cached augmented value of the node's subtree.
    pub fn augmented(&self) -> usize {
        self.tree.at(self.link).augmented()
    }

    /// The node with the next greater key, in O(log n).
    #[allow(clippy::should_implement_trait)] // a cursor step, not an iterator
    pub fn next(&self) -> Option<Self> {
        self.tree
            .next_link(self.link)
            .map(|link| self.tree.wrap(link))
    }

    /// The node with the next smaller key, in O(log n).
    pub fn prev(&self) -> Option<Self> {
        self.tree
            .prev_link(self.link)
            .map(|link| self.tree.wrap(link))
    }

    /// The pointer the node was inserted with (its provenance intact), for
    /// [`RbTree::remove`] and [`RbTree::propagate`] once this borrow ends.
    pub fn as_ptr(&self) -> NonNull<A::Node> {
        RbTree::<A>::node_of(self.link)
    }
}

impl<A: Adapter> Deref for NodeRef<'_, A> {
    type Target = A::Node;

    fn deref(&self) -> &A::Node {
        self.get()
    }
}

/// The answer of [`RbTree::lowest_match`]: the node found and how many nodes
/// the descent looked at (for complexity tests).
#[derive(Debug)]
pub struct Match<'a, A: Adapter> {
    /// The lowest-key node that matched, if any.
    pub node: Option<NodeRef<'a, A>>,
    /// The number of nodes the descent visited.
    pub visited: usize,
}

/// What [`RbTree::check`] found wrong.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum TreeError {
    /// The root is red.
    RedRoot,
    /// The node's key is out of order with an ancestor's.
    Order {
        /// The key of the misplaced node.
        key: usize,
    },
    /// A red node has a red child.
    RedRed {
        /// The key of the red child.
        key: usize,
    },
    /// The two subtrees of a node have different black heights.
    BlackHeight {
        /// The key of the node.
        key: usize,
    },
    /// A node's parent link does not point at the node that links to it.
    Parent {
        /// The key of the node.
        key: usize,
    },
    /// A cached augmented value differs from the recomputed one.
    Augmented {
        /// The key of the node.
        key: usize,
        /// The value cached in the link.
        cached: usize,
        /// The value recomputed from the node and its children.
        expected: usize,
    },
    /// The tree is deeper than a red-black tree of its size can be (or has a
    /// cycle).
    Depth,
    /// The number of reachable nodes differs from the count kept.
    Len {
        /// Nodes reached from the root.
        counted: usize,
        /// The count kept by the tree.
        len: usize,
    },
}

impl fmt::Display for TreeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::RedRoot => write!(f, "the root is red"),
            Self::Order { key } => write!(f, "key {key:#x} is out of order"),
            Self::RedRed { key } => write!(f, "red node {key:#x} has a red parent"),
            Self::BlackHeight { key } => {
                write!(f, "the subtrees of {key:#x} have different black heights")
            }
            Self::Parent { key } => write!(f, "the parent link of {key:#x} is wrong"),
            Self::Augmented {
                key,
                cached,
                expected,
            } => write!(
                f,
                "node {key:#x} caches {cached:#x}, its subtree gives {expected:#x}"
            ),
            Self::Depth => write!(f, "the tree is too deep (or has a cycle)"),
            Self::Len { counted, len } => {
                write!(f, "{counted} nodes reachable but the tree counts {len}")
            }
        }
    }
}

/// The shape [`RbTree::check`] measured.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TreeShape {
    /// The number of nodes.
    pub len: usize,
    /// The number of nodes on the longest root-to-leaf path.
    pub height: usize,
    /// The number of black nodes on every root-to-leaf path.
    pub black_height: usize,
}

/// In-order iterator over a tree's nodes, from [`RbTree::iter`].
pub struct Iter<'a, A: Adapter> {
    next: Option<NodeRef<'a, A>>,
    remaining: usize,
}

impl<'a, A: Adapter> Iterator for Iter<'a, A> {
    type Item = NodeRef<'a, A>;

    fn next(&mut self) -> Option<Self::Item> {
        let node = self.next?;
        self.next = node.next();
        self.remaining -= 1;
        Some(node)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.remaining, Some(self.remaining))
    }
}

impl<A: Adapter> ExactSizeIterator for Iter<'_, A> {}

impl<A: Adapter> RbTree<A> {
    /// An empty tree.
    pub const fn new() -> Self {
        Self {
            root: None,
            len: 0,
            _nodes: PhantomData,
        }
    }

    /// The number of linked nodes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the tree is empty.
    pub fn is_empty(&self) -> bool {
        self.root.is_none()
    }

    // ----- The raw core: the only places that turn pointers into references.

    /// The link at `link`.
    ///
    /// Every `NonNull<Link>` the tree's code handles is reachable from the
    /// root (or is the node being inserted or removed), so by the contract of
    /// [`insert`](Self::insert) it points at a live node.
    fn at(&self, link: NonNull<Link>) -> &Link {
        // SAFETY: see above; the link is in a live node that only this tree
        // reaches, and links are only mutated through their `Cell`s.
        unsafe { link.as_ref() }
    }

    /// The node whose link is at `link` (same argument as [`Self::at`]).
    fn node(&self, link: NonNull<Link>) -> &A::Node {
        // SAFETY: see `at`; `node_of` steps back to the start of the same
        // live node.
        unsafe { Self::node_of(link).as_ref() }
    }

    /// The link inside the node at `node`.
    ///
    /// # Safety
    ///
    /// `node` points at a live `A::Node`.
    unsafe fn link_of(node: NonNull<A::Node>) -> NonNull<Link> {
        // SAFETY: by the adapter's contract `LINK_OFFSET` is the offset of a
        // `Link` field, so the result stays inside the node the caller
        // vouches for.
        unsafe { node.byte_add(A::LINK_OFFSET).cast() }
    }

    /// The node containing the link at `link`; keeps the provenance of the
    /// pointer the node was inserted with.
    fn node_of(link: NonNull<Link>) -> NonNull<A::Node> {
        // `wrapping_byte_sub` needs no in-bounds promise; every link the tree
        // holds was made by `link_of`, so this is the node pointer again.
        let raw = link.as_ptr().wrapping_byte_sub(A::LINK_OFFSET);
        NonNull::new(raw.cast::<A::Node>()).expect("a link inside a node is never at address 0")
    }

    fn wrap(&self, link: NonNull<Link>) -> NodeRef<'_, A> {
        NodeRef { tree: self, link }
    }

    // ----- Small accessors.

    fn key_at(&self, link: NonNull<Link>) -> usize {
        A::key(self.node(link))
    }

    fn left(&self, link: NonNull<Link>) -> Option<NonNull<Link>> {
        self.at(link).left.get()
    }

    fn right(&self, link: NonNull<Link>) -> Option<NonNull<Link>> {
        self.at(link).right.get()
    }

    fn parent(&self, link: NonNull<Link>) -> Option<NonNull<Link>> {
        self.at(link).parent()
    }

    fn is_red(&self, link: Option<NonNull<Link>>) -> bool {
        link.is_some_and(|l| self.at(l).is_red())
    }

    fn aug(&self, link: Option<NonNull<Link>>) -> Option<usize> {
        link.map(|l| self.at(l).augmented())
    }

    /// The augmented value of `link`'s subtree recomputed from the node and
    /// its children's cached values.
    fn compute(&self, link: NonNull<Link>) -> usize {
        A::augment(
            self.node(link),
            self.aug(self.left(link)),
            self.aug(self.right(link)),
        )
    }

    fn minimum(&self, mut link: NonNull<Link>) -> NonNull<Link> {
        while let Some(l) = self.left(link) {
            link = l;
        }
        link
    }

    fn maximum(&self, mut link: NonNull<Link>) -> NonNull<Link> {
        while let Some(r) = self.right(link) {
            link = r;
        }
        link
    }

    fn next_link(&self, link: NonNull<Link>) -> Option<NonNull<Link>> {
        if let Some(r) = self.right(link) {
            return Some(self.minimum(r));
        }
        let mut child = link;
        while let Some(p) = self.parent(child) {
            if self.left(p) == Some(child) {
                return Some(p);
            }
            child = p;
        }
        None
    }

    fn prev_link(&self, link: NonNull<Link>) -> Option<NonNull<Link>> {
        if let Some(l) = self.left(link) {
            return Some(self.maximum(l));
        }
        let mut child = link;
        while let Some(p) = self.parent(child) {
            if self.right(p) == Some(child) {
                return Some(p);
            }
            child = p;
        }
        None
    }

    // ----- Structure changes (links first, then augmentation).

    /// Makes `new` take `old`'s place under `parent` (or as the root).
    fn replace_child(
        &mut self,
        parent: Option<NonNull<Link>>,
        old: NonNull<Link>,
        new: Option<NonNull<Link>>,
    ) {
        match parent {
            None => self.root = new,
            Some(p) if self.left(p) == Some(old) => self.at(p).left.set(new),
            Some(p) => self.at(p).right.set(new),
        }
    }

    /// Puts `new` (with its subtree) where `old` is; `old` keeps its links.
    fn transplant(&mut self, old: NonNull<Link>, new: Option<NonNull<Link>>) {
        let parent = self.parent(old);
        self.replace_child(parent, old, new);
        if let Some(n) = new {
            self.at(n).set_parent(parent);
        }
    }

    /// Rotates left at `x` (its right child takes its place); Linux's
    /// augment *rotate* callback at the end.
    fn rotate_left(&mut self, x: NonNull<Link>) {
        let y = self.right(x).expect("rotate_left needs a right child");
        let inner = self.left(y);
        self.at(x).right.set(inner);
        if let Some(b) = inner {
            self.at(b).set_parent(Some(x));
        }
        self.transplant(x, Some(y));
        self.at(y).left.set(Some(x));
        self.at(x).set_parent(Some(y));
        self.rotate_augment(x, y);
    }

    /// Rotates right at `x` (its left child takes its place).
    fn rotate_right(&mut self, x: NonNull<Link>) {
        let y = self.left(x).expect("rotate_right needs a left child");
        let inner = self.right(y);
        self.at(x).left.set(inner);
        if let Some(b) = inner {
            self.at(b).set_parent(Some(x));
        }
        self.transplant(x, Some(y));
        self.at(y).right.set(Some(x));
        self.at(x).set_parent(Some(y));
        self.rotate_augment(x, y);
    }

    /// After a rotation that put `new_top` where `old_top` was: the subtree
    /// holds the same nodes, so the new top inherits the old top's value and
    /// only the old top (now a child) is recomputed.
    fn rotate_augment(&mut self, old_top: NonNull<Link>, new_top: NonNull<Link>) {
        if A::AUGMENTED {
            let whole = self.at(old_top).augmented();
            self.at(new_top).augmented.set(whole);
            let value = self.compute(old_top);
            self.at(old_top).augmented.set(value);
        }
    }

    /// Recomputes the augmented values from `from` up to the root; with
    /// `stop_early`, stops at the first node whose value did not change
    /// (valid when only one node's own value or one leaf changed below).
    fn propagate_from(&mut self, from: Option<NonNull<Link>>, stop_early: bool) {
        if !A::AUGMENTED {
            return;
        }
        let mut cur = from;
        while let Some(link) = cur {
            let value = self.compute(link);
            let cell = &self.at(link).augmented;
            if stop_early && cell.get() == value {
                break;
            }
            cell.set(value);
            cur = self.parent(link);
        }
    }

    // ----- Insertion and removal.

    /// Links `node` into the tree under its key (Linux's `rb_link_node` plus
    /// `rb_insert_augmented`), in O(log n).
    ///
    /// Returns `Err(node)` and changes nothing when a node with the same key
    /// is already linked.
    ///
    /// # Safety
    ///
    /// - `node` points at a live `A::Node` that is not linked in any tree;
    /// - from now until it is removed ([`remove`](Self::remove),
    ///   [`remove_key`](Self::remove_key)) the node stays valid and does not
    ///   move, is not inserted into another tree, and is reached only through
    ///   this tree (the [`NodeRef`]s it lends); the caller may keep the
    ///   pointer but must not make references from it until the node is
    ///   removed.
    ///
    /// Dropping the tree releases every node still linked: it never touches
    /// them again (their links are left stale, and `insert` resets them).
    pub unsafe fn insert(&mut self, node: NonNull<A::Node>) -> Result<(), NonNull<A::Node>> {
        // SAFETY: the caller vouches that `node` is live and unshared.
        let key = A::key(unsafe { node.as_ref() });
        let mut parent = None;
        let mut go_left = false;
        let mut cur = self.root;
        while let Some(c) = cur {
            let k = self.key_at(c);
            parent = Some(c);
            if key < k {
                go_left = true;
                cur = self.left(c);
            } else if key > k {
                go_left = false;
                cur = self.right(c);
            } else {
                return Err(node);
            }
        }
        // SAFETY: `node` is live (caller's contract).
        let z = unsafe { Self::link_of(node) };
        let link = self.at(z);
        link.clear();
        link.set_parent(parent);
        link.set_red(true);
        match parent {
            None => self.root = Some(z),
            Some(p) if go_left => self.at(p).left.set(Some(z)),
            Some(p) => self.at(p).right.set(Some(z)),
        }
        self.len += 1;
        if A::AUGMENTED {
            let own = self.compute(z);
            self.at(z).augmented.set(own);
            self.propagate_from(parent, true);
        }
        self.insert_fixup(z);
        Ok(())
    }

    /// Restores the red-black properties after `z` was linked red.
    fn insert_fixup(&mut self, mut z: NonNull<Link>) {
        while let Some(mut p) = self.parent(z).filter(|&p| self.is_red(Some(p))) {
            // A red node is never the root, so it has a parent.
            let g = self.parent(p).expect("a red node has a parent");
            let parent_is_left = self.left(g) == Some(p);
            let uncle = if parent_is_left {
                self.right(g)
            } else {
                self.left(g)
            };
            if self.is_red(uncle) {
                let u = uncle.expect("a red uncle exists");
                self.at(p).set_red(false);
                self.at(u).set_red(false);
                self.at(g).set_red(true);
                z = g;
                continue;
            }
            if parent_is_left {
                if self.right(p) == Some(z) {
                    self.rotate_left(p);
                    z = p;
                    p = self.parent(z).expect("rotated under its old child");
                }
                self.at(p).set_red(false);
                self.at(g).set_red(true);
                self.rotate_right(g);
            } else {
                if self.left(p) == Some(z) {
                    self.rotate_right(p);
                    z = p;
                    p = self.parent(z).expect("rotated under its old child");
                }
                self.at(p).set_red(false);
                self.at(g).set_red(true);
                self.rotate_left(g);
            }
        }
        if let Some(root) = self.root {
            self.at(root).set_red(false);
        }
    }

    /// Unlinks `node` (Linux's `rb_erase_augmented`), in O(log n), and
    /// clears its links. Afterwards the tree never touches it again and the
    /// caller owns it fully.
    ///
    /// # Safety
    ///
    /// `node` is linked in this tree (it is a pointer given to
    /// [`insert`](Self::insert) on this tree, or [`NodeRef::as_ptr`] of one
    /// of its nodes, and has not been removed since).
    pub unsafe fn remove(&mut self, node: NonNull<A::Node>) {
        // SAFETY: the node is linked here, so it is live.
        let z = unsafe { Self::link_of(node) };
        let z_red = self.at(z).is_red();
        let (x, x_parent, removed_black);
        match (self.left(z), self.right(z)) {
            (None, child) | (child, None) => {
                x = child;
                x_parent = self.parent(z);
                removed_black = !z_red;
                self.transplant(z, child);
            }
            (Some(zl), Some(zr)) => {
                // The successor takes z's place and colour.
                let y = self.minimum(zr);
                removed_black = !self.at(y).is_red();
                x = self.right(y);
                if y == zr {
                    x_parent = Some(y);
                } else {
                    x_parent = self.parent(y);
                    self.transplant(y, x);
                    self.at(y).right.set(Some(zr));
                    self.at(zr).set_parent(Some(y));
                }
                self.transplant(z, Some(y));
                self.at(y).left.set(Some(zl));
                self.at(zl).set_parent(Some(y));
                self.at(y).set_red(z_red);
            }
        }
        self.at(z).clear();
        self.len -= 1;
        // Every node whose subtree lost `z` is on the path from `x_parent`
        // to the root (the successor, if it moved, among them): Linux's
        // *copy* and *propagate* callbacks in one walk.
        self.propagate_from(x_parent, false);
        if removed_black {
            self.remove_fixup(x, x_parent);
        }
    }

    /// Restores the red-black properties after a black node left the path
    /// through `x` (a child of `parent`, possibly empty).
    fn remove_fixup(&mut self, mut x: Option<NonNull<Link>>, mut parent: Option<NonNull<Link>>) {
        while x != self.root && !self.is_red(x) {
            let Some(p) = parent else { break };
            if x == self.left(p) {
                let mut w = self.right(p).expect("the sibling of a short path exists");
                if self.at(w).is_red() {
                    self.at(w).set_red(false);
                    self.at(p).set_red(true);
                    self.rotate_left(p);
                    w = self.right(p).expect("the sibling of a short path exists");
                }
                if !self.is_red(self.left(w)) && !self.is_red(self.right(w)) {
                    self.at(w).set_red(true);
                    x = Some(p);
                    parent = self.parent(p);
                } else {
                    if !self.is_red(self.right(w)) {
                        let wl = self.left(w).expect("a red nephew exists");
                        self.at(wl).set_red(false);
                        self.at(w).set_red(true);
                        self.rotate_right(w);
                        w = self.right(p).expect("the sibling of a short path exists");
                    }
                    self.at(w).set_red(self.at(p).is_red());
                    self.at(p).set_red(false);
                    if let Some(wr) = self.right(w) {
                        self.at(wr).set_red(false);
                    }
                    self.rotate_left(p);
                    x = self.root;
                    parent = None;
                }
            } else {
                let mut w = self.left(p).expect("the sibling of a short path exists");
                if self.at(w).is_red() {
                    self.at(w).set_red(false);
                    self.at(p).set_red(true);
                    self.rotate_right(p);
                    w = self.left(p).expect("the sibling of a short path exists");
                }
                if !self.is_red(self.left(w)) && !self.is_red(self.right(w)) {
                    self.at(w).set_red(true);
                    x = Some(p);
                    parent = self.parent(p);
                } else {
                    if !self.is_red(self.left(w)) {
                        let wr = self.right(w).expect("a red nephew exists");
                        self.at(wr).set_red(false);
                        self.at(w).set_red(true);
                        self.rotate_left(w);
                        w = self.left(p).expect("the sibling of a short path exists");
                    }
                    self.at(w).set_red(self.at(p).is_red());
                    self.at(p).set_red(false);
                    if let Some(wl) = self.left(w) {
                        self.at(wl).set_red(false);
                    }
                    self.rotate_right(p);
                    x = self.root;
                    parent = None;
                }
            }
        }
        if let Some(x) = x {
            self.at(x).set_red(false);
        }
    }

    /// Unlinks the node with `key` and hands its pointer back (the one it was
    /// inserted with), in O(log n).
    pub fn remove_key(&mut self, key: usize) -> Option<NonNull<A::Node>> {
        let node = self.get(key)?.as_ptr();
        // SAFETY: `get` found the node linked in this tree.
        unsafe { self.remove(node) };
        Some(node)
    }

    /// Unlinks the node with the smallest key and hands it back.
    pub fn pop_first(&mut self) -> Option<NonNull<A::Node>> {
        let node = self.first()?.as_ptr();
        // SAFETY: `first` found the node linked in this tree.
        unsafe { self.remove(node) };
        Some(node)
    }

    /// Recomputes the augmented values from `node` up to the root after the
    /// caller changed what [`Adapter::augment`] reads from it (Linux's
    /// `augment_tree_propagate_from`), in O(log n).
    ///
    /// # Safety
    ///
    /// `node` is linked in this tree (as for [`remove`](Self::remove)).
    pub unsafe fn propagate(&mut self, node: NonNull<A::Node>) {
        // SAFETY: the node is linked here, so it is live.
        let link = unsafe { Self::link_of(node) };
        self.propagate_from(Some(link), true);
    }

    // ----- Queries.

    /// The node with `key`.
    pub fn get(&self, key: usize) -> Option<NodeRef<'_, A>> {
        let mut cur = self.root;
        while let Some(c) = cur {
            let k = self.key_at(c);
            if key < k {
                cur = self.left(c);
            } else if key > k {
                cur = self.right(c);
            } else {
                return Some(self.wrap(c));
            }
        }
        None
    }

    /// The node with the greatest key `<= key`.
    pub fn floor(&self, key: usize) -> Option<NodeRef<'_, A>> {
        let mut best = None;
        let mut cur = self.root;
        while let Some(c) = cur {
            if self.key_at(c) <= key {
                best = Some(c);
                cur = self.right(c);
            } else {
                cur = self.left(c);
            }
        }
        best.map(|l| self.wrap(l))
    }

    /// The node with the least key `>= key`.
    pub fn ceil(&self, key: usize) -> Option<NodeRef<'_, A>> {
        let mut best = None;
        let mut cur = self.root;
        while let Some(c) = cur {
            if self.key_at(c) >= key {
                best = Some(c);
                cur = self.left(c);
            } else {
                cur = self.right(c);
            }
        }
        best.map(|l| self.wrap(l))
    }

    /// The node with the smallest key.
    pub fn first(&self) -> Option<NodeRef<'_, A>> {
        self.root.map(|r| self.wrap(self.minimum(r)))
    }

    /// The node with the greatest key.
    pub fn last(&self) -> Option<NodeRef<'_, A>> {
        self.root.map(|r| self.wrap(self.maximum(r)))
    }

    /// The root node (its augmented value covers the whole tree).
    pub fn root(&self) -> Option<NodeRef<'_, A>> {
        self.root.map(|r| self.wrap(r))
    }

    /// The nodes in key order.
    pub fn iter(&self) -> Iter<'_, A> {
        Iter {
            next: self.first(),
            remaining: self.len,
        }
    }

    /// The lowest-key node with key `>= min_key` for which `matches` holds,
    /// skipping every subtree whose augmented value fails `may_match` (the
    /// descent of Linux's `find_vmap_lowest_match`).
    ///
    /// `may_match` must hold for the augmented value of every subtree that
    /// contains a matching node; then the answer is exact. When it is also
    /// exact the other way (it holds only for subtrees that do contain a
    /// match, as `subtree_max_size >= length` for `size >= length`), the
    /// descent visits at most about three root-to-leaf paths: O(log n). With
    /// a looser `may_match` the answer stays right but the walk may be longer.
    pub fn lowest_match(
        &self,
        min_key: usize,
        mut may_match: impl FnMut(usize) -> bool,
        mut matches: impl FnMut(&A::Node) -> bool,
    ) -> Match<'_, A> {
        let mut visited = 0;
        let mut may = |tree: &Self, link: Option<NonNull<Link>>| {
            link.filter(|&l| may_match(tree.at(l).augmented()))
        };
        let Some(mut cur) = may(self, self.root) else {
            return Match {
                node: None,
                visited,
            };
        };
        // Down towards `min_key`, leaving out subtrees that cannot match: the
        // first candidate is the lowest node `>= min_key` not inside such a
        // subtree.
        let mut candidate = loop {
            visited += 1;
            if self.key_at(cur) < min_key {
                match may(self, self.right(cur)) {
                    Some(r) => cur = r,
                    None => break self.climb(cur, &mut visited),
                }
            } else {
                match may(self, self.left(cur)) {
                    Some(l) => cur = l,
                    None => break Some(cur),
                }
            }
        };
        // In key order from there, skipping subtrees that cannot match.
        while let Some(c) = candidate {
            if matches(self.node(c)) {
                return Match {
                    node: Some(self.wrap(c)),
                    visited,
                };
            }
            candidate = match may(self, self.right(c)) {
                Some(mut r) => {
                    visited += 1;
                    while let Some(l) = may(self, self.left(r)) {
                        visited += 1;
                        r = l;
                    }
                    Some(r)
                }
                None => self.climb(c, &mut visited),
            };
        }
        Match {
            node: None,
            visited,
        }
    }

    /// The first ancestor of `link` reached from its left child: the in-order
    /// successor once `link`'s right subtree is done with.
    fn climb(&self, mut link: NonNull<Link>, visited: &mut usize) -> Option<NonNull<Link>> {
        while let Some(p) = self.parent(link) {
            *visited += 1;
            if self.left(p) == Some(link) {
                return Some(p);
            }
            link = p;
        }
        None
    }

    // ----- The checker.

    /// Verifies every invariant in O(n): keys in order, the root black, no
    /// red node with a red child, equal black heights, parent links that
    /// match child links, the cached augmented values, and the node count.
    /// Returns the shape it measured.
    pub fn check(&self) -> Result<TreeShape, TreeError> {
        let Some(root) = self.root else {
            return if self.len == 0 {
                Ok(TreeShape {
                    len: 0,
                    height: 0,
                    black_height: 0,
                })
            } else {
                Err(TreeError::Len {
                    counted: 0,
                    len: self.len,
                })
            };
        };
        if self.parent(root).is_some() {
            return Err(TreeError::Parent {
                key: self.key_at(root),
            });
        }
        if self.at(root).is_red() {
            return Err(TreeError::RedRoot);
        }
        // A red-black tree of n nodes is at most 2 log2(n + 1) deep.
        let max_depth = 2 * (usize::BITS - self.len.leading_zeros()) as usize + 2;
        let sub = self.check_subtree(root, None, None, 1, max_depth)?;
        if sub.count != self.len {
            return Err(TreeError::Len {
                counted: sub.count,
                len: self.len,
            });
        }
        Ok(TreeShape {
            len: sub.count,
            height: sub.height,
            black_height: sub.black_height,
        })
    }

    fn check_subtree(
        &self,
        link: NonNull<Link>,
        low: Option<usize>,
        high: Option<usize>,
        depth: usize,
        max_depth: usize,
    ) -> Result<Sub, TreeError> {
        let key = self.key_at(link);
        if depth > max_depth {
            return Err(TreeError::Depth);
        }
        if low.is_some_and(|l| key <= l) || high.is_some_and(|h| key >= h) {
            return Err(TreeError::Order { key });
        }
        let red = self.at(link).is_red();
        let mut sides = [Sub::EMPTY; 2];
        for (side, child) in [self.left(link), self.right(link)].into_iter().enumerate() {
            let Some(c) = child else { continue };
            if self.parent(c) != Some(link) {
                return Err(TreeError::Parent {
                    key: self.key_at(c),
                });
            }
            if red && self.at(c).is_red() {
                return Err(TreeError::RedRed {
                    key: self.key_at(c),
                });
            }
            let (lo, hi) = if side == 0 {
                (low, Some(key))
            } else {
                (Some(key), high)
            };
            sides[side] = self.check_subtree(c, lo, hi, depth + 1, max_depth)?;
        }
        if sides[0].black_height != sides[1].black_height {
            return Err(TreeError::BlackHeight { key });
        }
        if A::AUGMENTED {
            let cached = self.at(link).augmented();
            let expected = self.compute(link);
            if cached != expected {
                return Err(TreeError::Augmented {
                    key,
                    cached,
                    expected,
                });
            }
        }
        Ok(Sub {
            count: sides[0].count + sides[1].count + 1,
            height: sides[0].height.max(sides[1].height) + 1,
            black_height: sides[0].black_height + usize::from(!red),
        })
    }
}

/// What [`RbTree::check_subtree`] measured of one subtree.
#[derive(Clone, Copy)]
struct Sub {
    count: usize,
    height: usize,
    black_height: usize,
}

impl Sub {
    const EMPTY: Self = Self {
        count: 0,
        height: 0,
        black_height: 0,
    };
}

#[cfg(test)]
mod tests {
    extern crate alloc;
    extern crate std;

    use super::*;
    use alloc::boxed::Box;
    use alloc::vec::Vec;
    use core::mem::offset_of;

    struct Node {
        link: Link,
        key: usize,
        own: usize,
    }

    /// Augmented with the subtree's node count: every rotation changes it.
    struct Count;

    // SAFETY: `LINK_OFFSET` is the offset of `Node::link`.
    unsafe impl Adapter for Count {
        type Node = Node;
        const LINK_OFFSET: usize = offset_of!(Node, link);
        const AUGMENTED: bool = true;

        fn key(node: &Node) -> usize {
            node.key
        }

        fn augment(node: &Node, left: Option<usize>, right: Option<usize>) -> usize {
            let _ = node.own;
            1 + left.unwrap_or(0) + right.unwrap_or(0)
        }
    }

    /// Nodes leaked from boxes, freed on drop (after the tree that links
    /// them, which is declared later and so dropped first).
    struct Arena(Vec<NonNull<Node>>);

    impl Arena {
        fn node(&mut self, key: usize) -> NonNull<Node> {
            let node = Box::new(Node {
                link: Link::new(),
                key,
                own: key,
            });
            let ptr = NonNull::from(Box::leak(node));
            self.0.push(ptr);
            ptr
        }
    }

    impl Drop for Arena {
        fn drop(&mut self) {
            for &node in &self.0 {
                // SAFETY: each pointer came from `Box::leak` and is freed once;
                // the tree that linked them is gone.
                drop(unsafe { Box::from_raw(node.as_ptr()) });
            }
        }
    }

    #[test]
    fn ascending_inserts_and_removals_keep_every_invariant() {
        let mut arena = Arena(Vec::new());
        let mut tree = RbTree::<Count>::new();
        let n = if cfg!(miri) { 40 } else { 500 };
        for key in 0..n {
            let node = arena.node(key * 2);
            // SAFETY: a fresh arena node, freed only after the tree is gone.
            unsafe { tree.insert(node) }.unwrap();
            tree.check().unwrap();
        }
        assert_eq!(tree.root().unwrap().augmented(), n);
        let dup = arena.node(10);
        // SAFETY: as above; refused, so it stays unlinked.
        assert_eq!(unsafe { tree.insert(dup) }, Err(dup));
        assert_eq!(tree.floor(11).unwrap().key(), 10);
        assert_eq!(tree.ceil(11).unwrap().key(), 12);
        assert_eq!(tree.get(12).unwrap().next().unwrap().key(), 14);
        assert_eq!(tree.get(12).unwrap().prev().unwrap().key(), 10);
        for key in (0..n).rev().step_by(3) {
            assert!(tree.remove_key(key * 2).is_some());
            tree.check().unwrap();
        }
        while tree.pop_first().is_some() {
            tree.check().unwrap();
        }
        assert!(tree.is_empty());
    }

    #[test]
    fn the_checker_sees_a_broken_colour_and_a_stale_value() {
        let mut arena = Arena(Vec::new());
        let mut tree = RbTree::<Count>::new();
        for key in 0..7 {
            let node = arena.node(key);
            // SAFETY: a fresh arena node, freed only after the tree is gone.
            unsafe { tree.insert(node) }.unwrap();
        }
        let root = tree.root.unwrap();
        tree.at(root).set_red(true);
        assert_eq!(tree.check(), Err(TreeError::RedRoot));
        tree.at(root).set_red(false);
        let leaf = tree.minimum(root);
        tree.at(leaf).augmented.set(5);
        assert!(matches!(
            tree.check(),
            Err(TreeError::Augmented { key: 0, .. })
        ));
        tree.at(leaf).augmented.set(1);
        tree.check().unwrap();
    }
}
