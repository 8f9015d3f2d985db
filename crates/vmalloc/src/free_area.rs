//! TEMPORARY stand-in for the augmented free tree (a sorted list), replaced
//! by the augmented red-black tree.
#![allow(missing_docs, clippy::missing_safety_doc)]

use core::ptr::NonNull;

/// A free range.
pub struct FreeNode {
    next: Option<NonNull<FreeNode>>,
    start: usize,
    end: usize,
}

/// The free ranges.
pub struct FreeAreas {
    head: Option<NonNull<FreeNode>>,
}

impl FreeAreas {
    pub unsafe fn new(start: usize, end: usize, node: NonNull<FreeNode>) -> FreeAreas {
        unsafe {
            node.as_ptr().write(FreeNode {
                next: None,
                start,
                end,
            })
        };
        FreeAreas { head: Some(node) }
    }

    pub unsafe fn alloc(
        &mut self,
        size: usize,
        align: usize,
        vstart: usize,
        vend: usize,
        spare: &mut Option<NonNull<FreeNode>>,
    ) -> Option<usize> {
        let mut prev: Option<NonNull<FreeNode>> = None;
        let mut cur = self.head;
        while let Some(n) = cur {
            let node = unsafe { &mut *n.as_ptr() };
            let a = node.start.max(vstart).next_multiple_of(align);
            if a + size <= node.end.min(vend) {
                if a == node.start && a + size == node.end {
                    match prev {
                        Some(p) => unsafe { (*p.as_ptr()).next = node.next },
                        None => self.head = node.next,
                    }
                    *spare = spare.or(None);
                    // The node is unused now: give it back through the spare
                    // slot if empty, else leak-free by keeping it (rare).
                    if spare.is_none() {
                        *spare = Some(n);
                    }
                } else if a == node.start {
                    node.start = a + size;
                } else if a + size == node.end {
                    node.end = a;
                } else {
                    let s = spare.take()?;
                    unsafe {
                        s.as_ptr().write(FreeNode {
                            next: node.next,
                            start: a + size,
                            end: node.end,
                        })
                    };
                    node.end = a;
                    node.next = Some(s);
                }
                return Some(a);
            }
            prev = cur;
            cur = node.next;
        }
        None
    }

    pub unsafe fn give_back(
        &mut self,
        start: usize,
        size: usize,
        node: NonNull<FreeNode>,
    ) -> [Option<NonNull<FreeNode>>; 2] {
        let end = start + size;
        unsafe {
            node.as_ptr().write(FreeNode {
                next: None,
                start,
                end,
            })
        };
        let mut prev: Option<NonNull<FreeNode>> = None;
        let mut cur = self.head;
        while let Some(n) = cur {
            if unsafe { (*n.as_ptr()).start } > start {
                break;
            }
            prev = cur;
            cur = unsafe { (*n.as_ptr()).next };
        }
        unsafe { (*node.as_ptr()).next = cur };
        match prev {
            Some(p) => unsafe { (*p.as_ptr()).next = Some(node) },
            None => self.head = Some(node),
        }
        let mut out = [None, None];
        // merge with next
        if let Some(nx) = cur
            && unsafe { (*nx.as_ptr()).start } == end
        {
            unsafe {
                (*node.as_ptr()).end = (*nx.as_ptr()).end;
                (*node.as_ptr()).next = (*nx.as_ptr()).next;
            }
            out[0] = Some(nx);
        }
        if let Some(p) = prev
            && unsafe { (*p.as_ptr()).end } == start
        {
            unsafe {
                (*p.as_ptr()).end = (*node.as_ptr()).end;
                (*p.as_ptr()).next = (*node.as_ptr()).next;
            }
            out[1] = Some(node);
        }
        out
    }
}
