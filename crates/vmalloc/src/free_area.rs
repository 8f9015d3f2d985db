//! The free ranges of the vmalloc space: Linux's `free_vmap_area_root` and
//! the functions of `mm/vmalloc.c` (since 5.2) that search and edit it.
//!
//! # The algorithm
//!
//! Every free range `[start, end)` is a [`FreeNode`] in a red-black tree
//! ([`crate::rbtree`]) keyed by `start`; each node caches the largest size in
//! its subtree (Linux's `subtree_max_size`, kept by the
//! `RB_DECLARE_CALLBACKS_MAX` callbacks). Free ranges never overlap and never
//! touch: a range given back is merged with its neighbours.
//!
//! - **Finding a hole** ([`FreeAreas::alloc`], Linux's `__alloc_vmap_area`
//!   with `find_vmap_lowest_match`): first the range that contains `vstart`,
//!   clipped to `vstart`; then the descent of [`RbTree::lowest_match`], which
//!   skips every subtree whose largest size is below the search length and
//!   so finds, in O(log n), the lowest range above `vstart` at least that
//!   long. The search length is `size`, or `size + align - 1` when `align` is
//!   above a page (Linux's `adjust_search_size`): any range that long holds
//!   an aligned block wherever it starts. So the answer is the lowest address
//!   `a`, aligned to `align`, with `vstart <= a` and `a + size <= vend`, such
//!   that `[a, a + size)` lies in a free range that either contains `vstart`
//!   or is at least the search length; with page alignment (every vmalloc
//!   and vmap) that is simply the lowest fit.
//! - **Trimming the range** (`classify_va_fit_type` and
//!   `adjust_va_to_fit_type`): a *full fit* takes the whole range and
//!   unlinks its node, which goes back to the caller; a *left-edge* or
//!   *right-edge fit* shrinks the range in place; a *no-edge fit* splits it
//!   in two and needs one more node, which the caller has put in a spare
//!   slot beforehand (Linux's per-CPU `ne_fit_preload_node`). Then the
//!   cached sizes are refreshed up to the root
//!   (`augment_tree_propagate_from`).
//! - **Giving a range back** ([`FreeAreas::free`], `merge_or_add_vmap_area`):
//!   the neighbours are the greatest range below and the least range above
//!   (two O(log n) lookups); the range extends the one it touches, joins two
//!   it touches both of, or is inserted with the caller's node. Nodes no
//!   longer needed go back to the caller.
//!
//! # Nodes
//!
//! The structure never allocates. Nodes are memory the caller owns (in kmm,
//! inside descriptors from `kmalloc`) and hands over as [`OwnedNode`]s: one to
//! create the structure, one with every free, a spare before an allocation
//! that may split. Every node the structure stops using comes back as an
//! [`OwnedNode`] in a [`Released`] or from [`FreeAreas::into_nodes`], for the
//! caller to free. Dropping a `Released`, an `OwnedNode` or the `FreeAreas`
//! leaks the nodes in it.
//!
//! # Example
//!
//! ```
//! use core::ptr::NonNull;
//! use kmm_vmalloc::free_area::{AllocError, FreeAreas, FreeNode, OwnedNode};
//!
//! // Nodes from boxes here; from kmalloc in a kernel.
//! fn node() -> OwnedNode {
//!     let ptr = NonNull::from(Box::leak(Box::new(FreeNode::new())));
//!     // SAFETY: a fresh box that nothing else knows of.
//!     unsafe { OwnedNode::from_raw(ptr) }
//! }
//! fn release(node: OwnedNode) {
//!     // SAFETY: every node in this example comes from `node()`.
//!     drop(unsafe { Box::from_raw(node.into_raw().as_ptr()) });
//! }
//!
//! const P: usize = 4096;
//! let (start, end) = (0xf000_0000, 0xf000_0000 + 256 * P);
//! let mut areas = FreeAreas::new(start, end, node()).unwrap();
//!
//! // A left-edge fit: the lowest address.
//! let a = areas.alloc(4 * P, P, start, end, &mut None).unwrap();
//! assert_eq!(a.addr, start);
//! a.released.for_each(release);
//!
//! // Aligned to 64 KiB, the fit is in the middle of the free range: the
//! // split needs a spare node (Linux's ne_fit_preload).
//! let mut spare = None;
//! let err = areas.alloc(P, 16 * P, start, end, &mut spare).unwrap_err();
//! assert_eq!(err, AllocError::NeedSpare);
//! spare = Some(node());
//! let b = areas.alloc(P, 16 * P, start, end, &mut spare).unwrap();
//! assert_eq!(b.addr, start + 16 * P);
//! assert!(spare.is_none());
//! assert_eq!(areas.nodes(), 2);
//!
//! // Freeing merges: the second free joins both neighbours and hands two
//! // nodes back.
//! areas.free(a.addr, 4 * P, node()).unwrap().for_each(release);
//! let back = areas.free(b.addr, P, node()).unwrap();
//! assert_eq!(back.len(), 2);
//! back.for_each(release);
//! assert_eq!(areas.iter().collect::<Vec<_>>(), [start..end]);
//! areas.into_nodes().for_each(release);
//! ```
//!
//! # Bad input
//!
//! Every call checks its arguments first and returns a typed error with
//! nothing changed (and, for [`FreeAreas::free`], the node handed back).
//!
//! # Invariants ([`FreeAreas::check`])
//!
//! The tree's own ([`RbTree::check`], cached sizes included); ranges
//! non-empty, page aligned, inside the span, in order, neither overlapping nor
//! touching; their sizes adding up to [`FreeAreas::free_bytes`].

use core::cell::Cell;
use core::fmt;
use core::mem::offset_of;
use core::ops::Range;
use core::ptr::NonNull;

use kmm_hal::PAGE_SIZE;

use crate::rbtree::{Adapter, Link, RbTree, TreeError};

/// One free range: Linux's `struct vmap_area` as it sits in the free tree
/// (`rb_node`, `va_start`, `va_end`, `subtree_max_size`).
///
/// vmalloc's area descriptor embeds one; outside the structure it is plain
/// memory with no meaning.
#[derive(Debug, Default)]
pub struct FreeNode {
    /// The tree links and the subtree's largest free size.
    link: Link,
    /// The first free address.
    start: Cell<usize>,
    /// The free size in bytes (the range ends at `start + size`).
    size: Cell<usize>,
}

impl FreeNode {
    /// An unlinked node, ready to hand over as an [`OwnedNode`].
    pub const fn new() -> Self {
        Self {
            link: Link::new(),
            start: Cell::new(0),
            size: Cell::new(0),
        }
    }

    /// The first address of the range.
    pub fn start(&self) -> usize {
        self.start.get()
    }

    /// The size of the range in bytes.
    pub fn size(&self) -> usize {
        self.size.get()
    }

    /// One past the last address of the range.
    pub fn end(&self) -> usize {
        self.start.get() + self.size.get()
    }

    /// The range.
    pub fn range(&self) -> Range<usize> {
        self.start()..self.end()
    }

    /// The largest free size in this node's subtree (Linux's
    /// `subtree_max_size`), while the node is in a [`FreeAreas`].
    pub fn subtree_max_size(&self) -> usize {
        self.link.augmented()
    }

    fn set(&self, start: usize, size: usize) {
        self.start.set(start);
        self.size.set(size);
    }
}

/// The free tree's adapter: keyed by start, augmented with the largest size.
pub struct FreeTree;

// SAFETY: `LINK_OFFSET` is the offset of `FreeNode::link`, a `Link`.
unsafe impl Adapter for FreeTree {
    type Node = FreeNode;
    const LINK_OFFSET: usize = offset_of!(FreeNode, link);
    const AUGMENTED: bool = true;

    fn key(node: &FreeNode) -> usize {
        node.start()
    }

    fn augment(node: &FreeNode, left: Option<usize>, right: Option<usize>) -> usize {
        node.size().max(left.unwrap_or(0)).max(right.unwrap_or(0))
    }
}

/// A [`FreeNode`] its holder owns outright: live, not moving, and reached by
/// no one else. The currency in which nodes go into and come out of a
/// [`FreeAreas`].
#[must_use = "dropping an OwnedNode leaks it"]
#[derive(Debug)]
pub struct OwnedNode(NonNull<FreeNode>);

// SAFETY: the holder is the only one to reach the node (`from_raw`'s
// contract), and `FreeNode` is `Send`.
unsafe impl Send for OwnedNode {}

impl OwnedNode {
    /// Takes ownership of the node at `node`.
    ///
    /// # Safety
    ///
    /// `node` points at a live, initialised [`FreeNode`] that is in no tree
    /// and that nothing else will read, write, move or free until the
    /// `OwnedNode` is turned back into a pointer with
    /// [`into_raw`](Self::into_raw) (after it came back from a
    /// [`FreeAreas`]).
    pub unsafe fn from_raw(node: NonNull<FreeNode>) -> Self {
        Self(node)
    }

    /// Gives the pointer back (with the provenance it came with).
    pub fn into_raw(self) -> NonNull<FreeNode> {
        self.0
    }
}

/// Nodes a [`FreeAreas`] no longer needs, for the caller to free (at most
/// two).
#[must_use = "the released nodes must be freed by the caller"]
#[derive(Debug, Default)]
pub struct Released {
    nodes: [Option<OwnedNode>; 2],
}

impl Released {
    fn none() -> Self {
        Self::default()
    }

    fn one(node: OwnedNode) -> Self {
        Self {
            nodes: [Some(node), None],
        }
    }

    /// How many nodes there are.
    pub fn len(&self) -> usize {
        self.nodes.iter().flatten().count()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Iterator for Released {
    type Item = OwnedNode;

    fn next(&mut self) -> Option<OwnedNode> {
        self.nodes.iter_mut().find_map(Option::take)
    }
}

/// A successful [`FreeAreas::alloc`].
#[derive(Debug)]
#[must_use = "the released node must be freed by the caller"]
pub struct Allocation {
    /// The first address of the allocated range.
    pub addr: usize,
    /// The node of a range the allocation used up whole (a full fit).
    pub released: Released,
}

/// Why [`FreeAreas::new`] refused a span (nothing was changed).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum CreateError {
    /// `start >= end`.
    Empty,
    /// `start` or `end` is not page aligned.
    Unaligned,
}

/// Why [`FreeAreas::alloc`] failed (nothing was changed).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum AllocError {
    /// `size` is 0.
    ZeroSize,
    /// `size` is not a multiple of the page size.
    Unaligned,
    /// `align` is not a power of two.
    BadAlign,
    /// `vstart >= vend`, one of them is not page aligned, or the window is
    /// not inside the span.
    BadWindow,
    /// No free range in the window fits.
    NoSpace,
    /// The fit splits a free range in two and the spare slot is empty: put
    /// a node in it and call again.
    NeedSpare,
}

/// Why [`FreeAreas::free`] refused a range (nothing was changed; the node
/// comes back with the error).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum FreeError {
    /// `size` is 0.
    ZeroSize,
    /// `start` or `size` is not page aligned.
    Unaligned,
    /// The range is not inside the span (or `start + size` overflows).
    OutOfRange,
    /// The range overlaps a free range: a double free.
    Overlap,
}

/// What [`FreeAreas::check`] found wrong.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum FreeAreasError {
    /// The tree's own invariants (order, colours, cached sizes).
    Tree(TreeError),
    /// An empty or unaligned range, or one outside the span.
    BadRange {
        /// Its start.
        start: usize,
    },
    /// A range overlaps or touches the one before it (not merged).
    NotMerged {
        /// Its start.
        start: usize,
    },
    /// The sizes do not add up to the free total kept.
    FreeBytes {
        /// The sum of the sizes.
        counted: usize,
        /// The total kept.
        kept: usize,
    },
}

impl fmt::Display for CreateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Empty => "the span is empty",
            Self::Unaligned => "the span is not page aligned",
        })
    }
}

impl fmt::Display for AllocError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::ZeroSize => "size 0",
            Self::Unaligned => "the size is not a multiple of the page size",
            Self::BadAlign => "the alignment is not a power of two",
            Self::BadWindow => "the window is empty, unaligned or outside the span",
            Self::NoSpace => "no free range fits",
            Self::NeedSpare => "the fit splits a range: a spare node is needed",
        })
    }
}

impl fmt::Display for FreeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::ZeroSize => "size 0",
            Self::Unaligned => "the range is not page aligned",
            Self::OutOfRange => "the range is outside the span",
            Self::Overlap => "the range overlaps a free range (double free)",
        })
    }
}

impl fmt::Display for FreeAreasError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::Tree(e) => write!(f, "free tree: {e}"),
            Self::BadRange { start } => write!(f, "free range at {start:#x} is malformed"),
            Self::NotMerged { start } => {
                write!(
                    f,
                    "free range at {start:#x} overlaps or touches the one before"
                )
            }
            Self::FreeBytes { counted, kept } => {
                write!(
                    f,
                    "free ranges add up to {counted:#x}, the total kept is {kept:#x}"
                )
            }
        }
    }
}

/// The result of [`FreeAreas::find`]: where an allocation would go, and how
/// many tree nodes the search visited.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fit {
    /// The address, if something fits.
    pub addr: Option<usize>,
    /// Tree nodes the descent visited (for complexity tests).
    pub visited: usize,
}

/// The free ranges of one address span (Linux's `free_vmap_area_root`).
pub struct FreeAreas {
    /// The free ranges by start address, with `subtree_max_size`.
    tree: RbTree<FreeTree>,
    /// The sum of the free sizes.
    free_bytes: usize,
    /// The span managed, `[start, end)`.
    start: usize,
    end: usize,
}

impl fmt::Debug for FreeAreas {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FreeAreas")
            .field("span", &(self.start..self.end))
            .field("free_bytes", &self.free_bytes)
            .field("ranges", &self.tree.len())
            .finish()
    }
}

/// Whether `x` is a multiple of the page size.
fn page_aligned(x: usize) -> bool {
    x.is_multiple_of(PAGE_SIZE)
}

/// `x` rounded up to `align` (a power of two), `None` on overflow.
fn align_up(x: usize, align: usize) -> Option<usize> {
    Some(x.checked_add(align - 1)? & !(align - 1))
}

impl FreeAreas {
    /// The span `[start, end)`, all free, in the caller's `node`.
    ///
    /// On error the node comes back.
    pub fn new(
        start: usize,
        end: usize,
        node: OwnedNode,
    ) -> Result<Self, (CreateError, OwnedNode)> {
        if !page_aligned(start) || !page_aligned(end) {
            return Err((CreateError::Unaligned, node));
        }
        if start >= end {
            return Err((CreateError::Empty, node));
        }
        let mut areas = Self {
            tree: RbTree::new(),
            free_bytes: 0,
            start,
            end,
        };
        areas.link(node, start, end - start);
        Ok(areas)
    }

    /// The span managed.
    pub fn span(&self) -> Range<usize> {
        self.start..self.end
    }

    /// The total free bytes.
    pub fn free_bytes(&self) -> usize {
        self.free_bytes
    }

    /// The size of the largest free range (the root's `subtree_max_size`),
    /// 0 when nothing is free.
    pub fn largest(&self) -> usize {
        self.tree.root().map_or(0, |r| r.subtree_max_size())
    }

    /// The number of free ranges, which is the number of nodes held.
    pub fn nodes(&self) -> usize {
        self.tree.len()
    }

    /// The free ranges in address order.
    pub fn iter(&self) -> impl Iterator<Item = Range<usize>> + '_ {
        self.tree.iter().map(|n| n.range())
    }

    /// Hands every node back, leaving nothing behind.
    pub fn into_nodes(mut self) -> impl Iterator<Item = OwnedNode> {
        core::iter::from_fn(move || {
            let node = self.tree.pop_first()?;
            // SAFETY: the node came in as an `OwnedNode` and has just left
            // the tree, which no longer reaches it.
            Some(unsafe { OwnedNode::from_raw(node) })
        })
    }

    /// Fills `node` with `[start, start + size)` and links it.
    fn link(&mut self, node: OwnedNode, start: usize, size: usize) {
        let ptr = node.into_raw();
        // SAFETY: an `OwnedNode` is ours alone (its contract), so we may
        // write it and then give it to the tree; it stays live and unmoved
        // until the tree hands it back, which is when we release it.
        unsafe {
            ptr.as_ref().set(start, size);
            self.tree
                .insert(ptr)
                .expect("free ranges never share a start");
        }
        self.free_bytes += size;
    }

    /// Where [`alloc`](Self::alloc) would put `size` bytes aligned to
    /// `align` in `[vstart, vend)`, without changing anything, and how many
    /// tree nodes the descent visited; the same checks and errors as `alloc`
    /// (but never [`AllocError::NeedSpare`]).
    pub fn find(
        &self,
        size: usize,
        align: usize,
        vstart: usize,
        vend: usize,
    ) -> Result<Fit, AllocError> {
        self.validate(size, align, vstart, vend)?;
        Ok(self.lowest_fit(size, align.max(PAGE_SIZE), vstart, vend))
    }

    /// Checks the arguments of [`alloc`](Self::alloc) and [`find`](Self::find).
    fn validate(
        &self,
        size: usize,
        align: usize,
        vstart: usize,
        vend: usize,
    ) -> Result<(), AllocError> {
        if size == 0 {
            return Err(AllocError::ZeroSize);
        }
        if !page_aligned(size) {
            return Err(AllocError::Unaligned);
        }
        if !align.is_power_of_two() {
            return Err(AllocError::BadAlign);
        }
        if vstart >= vend
            || !page_aligned(vstart)
            || !page_aligned(vend)
            || vstart < self.start
            || vend > self.end
        {
            return Err(AllocError::BadWindow);
        }
        Ok(())
    }

    /// The search of [`find`](Self::find) on valid arguments (`align` at
    /// least a page).
    fn lowest_fit(&self, size: usize, align: usize, vstart: usize, vend: usize) -> Fit {
        // First the range that holds `vstart`, clipped to it.
        if let Some(f) = self.tree.floor(vstart).filter(|f| f.end() > vstart) {
            let fits = align_up(vstart, align)
                .and_then(|a| Some((a, a.checked_add(size)?)))
                .filter(|&(_, a_end)| a_end <= f.end().min(vend));
            if let Some((a, _)) = fits {
                return Fit {
                    addr: Some(a),
                    visited: 0,
                };
            }
        }
        // Then the lowest range above it at least `length` long: any aligned
        // block of `size` fits in it, so the only thing left to check is
        // `vend` (and a later range would start later still).
        let length = if align > PAGE_SIZE {
            size.checked_add(align - 1)
        } else {
            Some(size)
        };
        let Some(length) = length else {
            return Fit {
                addr: None,
                visited: 0,
            };
        };
        let found = self
            .tree
            .lowest_match(vstart + 1, |max| max >= length, |n| n.size() >= length);
        let addr = found
            .node
            .and_then(|n| align_up(n.start(), align))
            .filter(|&a| a.checked_add(size).is_some_and(|e| e <= vend));
        Fit {
            addr,
            visited: found.visited,
        }
    }

    /// Allocates `size` bytes aligned to `align` at the lowest address in
    /// `[vstart, vend)` that the rule of the module docs allows, in O(log n)
    /// (Linux's `__alloc_vmap_area`).
    ///
    /// `size` is a non-zero multiple of the page size; `align` a power of two
    /// (below a page it means a page); `vstart < vend`, both page aligned,
    /// inside the span. When the fit is in the middle of a free range, the
    /// node for its lower part is taken from `spare` (fill it beforehand, see
    /// what is left after); if `spare` is empty the call fails with
    /// [`AllocError::NeedSpare`]. A range used up whole gives its node back
    /// in [`Allocation::released`].
    pub fn alloc(
        &mut self,
        size: usize,
        align: usize,
        vstart: usize,
        vend: usize,
        spare: &mut Option<OwnedNode>,
    ) -> Result<Allocation, AllocError> {
        let addr = self
            .find(size, align, vstart, vend)?
            .addr
            .ok_or(AllocError::NoSpace)?;
        let node = self
            .tree
            .floor(addr)
            .expect("the fit lies in a free range")
            .as_ptr();
        let released = self.trim(node, addr, size, spare)?;
        self.free_bytes -= size;
        Ok(Allocation { addr, released })
    }

    /// Takes `[addr, addr + size)` out of the free range `node` (Linux's
    /// `classify_va_fit_type` and `adjust_va_to_fit_type`).
    fn trim(
        &mut self,
        node: NonNull<FreeNode>,
        addr: usize,
        size: usize,
        spare: &mut Option<OwnedNode>,
    ) -> Result<Released, AllocError> {
        // SAFETY: `node` is linked in `self.tree` (found there by `floor`),
        // so it is live, and we only read it and write its `Cell`s; no
        // `&FreeNode` outlives a call that changes the tree. The blocks
        // below rely on the same argument.
        let (start, end) = unsafe {
            let n = node.as_ref();
            (n.start(), n.end())
        };
        let a_end = addr + size;
        debug_assert!(start <= addr && a_end <= end);
        if start == addr && a_end == end {
            // Full fit: the range is gone.
            // SAFETY: see above; linked in this tree.
            unsafe { self.tree.remove(node) };
            // SAFETY: it came in as an `OwnedNode` and has left the tree.
            return Ok(Released::one(unsafe { OwnedNode::from_raw(node) }));
        }
        if start == addr || a_end == end {
            // Left- or right-edge fit: the range shrinks in place. A left
            // edge moves the key up, but not past the next range: the order
            // stays.
            let new_start = if start == addr { a_end } else { start };
            // SAFETY: see above.
            unsafe {
                node.as_ref().set(new_start, end - start - size);
                self.tree.propagate(node);
            }
            return Ok(Released::none());
        }
        // No-edge fit: the upper part stays in `node`, the lower part goes in
        // the spare.
        let lower = spare.take().ok_or(AllocError::NeedSpare)?;
        // SAFETY: see above; the new start stays below the next range.
        unsafe {
            node.as_ref().set(a_end, end - a_end);
            self.tree.propagate(node);
        }
        self.free_bytes -= addr - start;
        self.link(lower, start, addr - start);
        Ok(Released::none())
    }

    /// Gives `[start, start + size)` back, merging it with the free ranges it
    /// touches (Linux's `merge_or_add_vmap_area`), in O(log n).
    ///
    /// `node` is used when the range joins nothing; otherwise it comes back
    /// in the [`Released`], with the node of the upper neighbour when the
    /// range joins two. On error nothing changed and `node` comes back.
    pub fn free(
        &mut self,
        start: usize,
        size: usize,
        node: OwnedNode,
    ) -> Result<Released, (FreeError, OwnedNode)> {
        if size == 0 {
            return Err((FreeError::ZeroSize, node));
        }
        if !page_aligned(start) || !page_aligned(size) {
            return Err((FreeError::Unaligned, node));
        }
        let Some(end) = start.checked_add(size) else {
            return Err((FreeError::OutOfRange, node));
        };
        if start < self.start || end > self.end {
            return Err((FreeError::OutOfRange, node));
        }
        let below = self.tree.floor(start);
        let above = self.tree.ceil(start);
        if below.is_some_and(|b| b.end() > start) || above.is_some_and(|a| a.start() < end) {
            return Err((FreeError::Overlap, node));
        }
        let below = below.filter(|b| b.end() == start).map(|b| b.as_ptr());
        let above = above.filter(|a| a.start() == end).map(|a| a.as_ptr());
        let released = match (below, above) {
            (None, None) => {
                self.link(node, start, size);
                return Ok(Released::none());
            }
            (Some(b), None) => {
                // SAFETY: `b` is linked in this tree (found by `floor`); we
                // only write its cells, then refresh the cached sizes.
                unsafe {
                    let b_ref = b.as_ref();
                    b_ref.set(b_ref.start(), b_ref.size() + size);
                    self.tree.propagate(b);
                }
                Released::one(node)
            }
            (None, Some(a)) => {
                // SAFETY: `a` is linked in this tree (found by `ceil`); its
                // start moves down to `start`, still above the range below.
                unsafe {
                    let a_ref = a.as_ref();
                    a_ref.set(start, a_ref.size() + size);
                    self.tree.propagate(a);
                }
                Released::one(node)
            }
            (Some(b), Some(a)) => {
                // SAFETY: both are linked in this tree; `a` leaves it and
                // comes back to the caller, `b` grows over both.
                let a_node = unsafe {
                    let a_size = a.as_ref().size();
                    self.tree.remove(a);
                    let b_ref = b.as_ref();
                    b_ref.set(b_ref.start(), b_ref.size() + size + a_size);
                    self.tree.propagate(b);
                    OwnedNode::from_raw(a)
                };
                Released {
                    nodes: [Some(node), Some(a_node)],
                }
            }
        };
        self.free_bytes += size;
        Ok(released)
    }

    /// Verifies every invariant in O(n) (listed in the module docs).
    pub fn check(&self) -> Result<(), FreeAreasError> {
        self.tree.check().map_err(FreeAreasError::Tree)?;
        let mut counted = 0usize;
        let mut prev_end = None;
        for n in self.tree.iter() {
            let (start, size) = (n.start(), n.size());
            let ok = size != 0
                && page_aligned(start)
                && page_aligned(size)
                && start >= self.start
                && start.checked_add(size).is_some_and(|end| end <= self.end);
            if !ok {
                return Err(FreeAreasError::BadRange { start });
            }
            if prev_end.is_some_and(|e| e >= start) {
                return Err(FreeAreasError::NotMerged { start });
            }
            prev_end = Some(n.end());
            counted += size;
        }
        if counted != self.free_bytes {
            return Err(FreeAreasError::FreeBytes {
                counted,
                kept: self.free_bytes,
            });
        }
        Ok(())
    }
}
