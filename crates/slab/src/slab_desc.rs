//! [`SlabDesc`]: one slab's descriptor, followed in memory by its free-object
//! index (Linux's `kmem_bufctl_t` array) and one state byte per object; and
//! [`Lists`], a cache's slab lists, which its list lock holds.
//!
//! A descriptor's counters, free list and list mark are guarded by its
//! cache's list lock. That rule is in the types: every method that reads or
//! writes them takes the locked [`Lists`] (`&mut` to write, `&` to read),
//! which only the lock's guard hands out.

use core::cell::Cell;
use core::sync::atomic::{AtomicU8, Ordering};

use intrusive_collections::{LinkedList, LinkedListLink, UnsafeRef, intrusive_adapter};

/// Management bytes per object: a 16-bit free-list index and a state byte.
pub const MGMT_PER_OBJ: usize = 3;
/// End of a slab's free list.
pub const BUFCTL_END: u16 = u16::MAX;
/// State byte of an object held by a user.
pub const OBJ_ALLOCATED: u8 = 0xA5;
/// State byte of an object in a cache (free list or per-CPU array).
pub const OBJ_FREE: u8 = 0;
/// State byte of an object its owner is handing out, freeing or resizing in
/// place while the `debug` checks rewrite its red zones, slack and poison
/// (`debug` builds only): `validate_cache` skips it, since what it would
/// read is half written.
pub const OBJ_TRANSIT: u8 = 0x5A;

/// A slab: `num` objects in `2^gfporder` pages.
///
/// The counters are `Cell`s guarded by the cache's list lock; the state bytes
/// are atomics written by whoever holds the object (no locked instructions).
#[repr(C)]
pub struct SlabDesc {
    /// Links the slab into its cache's full, partial or free list.
    pub link: LinkedListLink,
    /// Address of the first object buffer.
    pub s_mem: usize,
    /// Address of the slab's first page.
    pub mem: usize,
    /// Objects handed out of the slab (to users or per-CPU arrays).
    inuse: Cell<u32>,
    /// Objects in the slab (at most `MAX_OBJS`, so 32 bits are plenty).
    num: u32,
    /// The colour offset the slab was given (less than a slab).
    colour_off: u32,
    /// First free object, or `BUFCTL_END`.
    free: Cell<u16>,
    /// Which list of its cache the slab is on.
    list: Cell<SlabList>,
}

// Small enough that a single-object slab's off-slab descriptor (with its 3
// bytes of per-object management) fits the 64-byte general cache.
#[cfg(target_pointer_width = "64")]
const _: () = assert!(core::mem::size_of::<SlabDesc>() + MGMT_PER_OBJ <= 64);

/// The list of its cache a slab is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum SlabList {
    /// Every object handed out.
    Full,
    /// Some objects handed out.
    Partial,
    /// No object handed out.
    Free,
}

// SAFETY: `inuse`, `free`, the free-list index and `link` are only touched with
// the owning cache's list lock held; the state bytes are atomics.
unsafe impl Sync for SlabDesc {}
// SAFETY: as above.
unsafe impl Send for SlabDesc {}

mod adapter {
    // The macro generates items without docs.
    #![allow(missing_docs)]
    use super::{LinkedListLink, SlabDesc, UnsafeRef, intrusive_adapter};

    intrusive_adapter!(
        /// Threads slabs on a cache's lists.
        pub SlabAdapter = UnsafeRef<SlabDesc>: SlabDesc { link => LinkedListLink }
    );
}
pub use adapter::SlabAdapter;

impl Lists {
    /// No slabs.
    pub(crate) fn new() -> Lists {
        Lists {
            full: LinkedList::new(SlabAdapter::NEW),
            partial: LinkedList::new(SlabAdapter::NEW),
            free: LinkedList::new(SlabAdapter::NEW),
            free_objects: 0,
            colour_next: 0,
            slabs: 0,
            grown: 0,
            reaped: 0,
        }
    }
}

/// The slab lists of a cache, behind its list lock (Linux's `kmem_list3`).
pub(crate) struct Lists {
    pub(crate) full: LinkedList<SlabAdapter>,
    pub(crate) partial: LinkedList<SlabAdapter>,
    pub(crate) free: LinkedList<SlabAdapter>,
    /// Free objects in the slabs (not counting arrays).
    pub(crate) free_objects: usize,
    /// Colour of the next slab.
    pub(crate) colour_next: usize,
    /// Slabs in the cache.
    pub(crate) slabs: usize,
    /// Slabs ever created, and destroyed.
    pub(crate) grown: usize,
    pub(crate) reaped: usize,
}

impl SlabDesc {
    /// Writes a descriptor for `num` objects from `s_mem` at `at`, with every
    /// object free and the free list in address order.
    ///
    /// # Safety
    /// `at` must be valid for writing `size_of::<SlabDesc>() + num * 3` bytes,
    /// aligned for `SlabDesc`, and stay so while the slab exists.
    pub unsafe fn init<'a>(
        at: *mut SlabDesc,
        mem: usize,
        s_mem: usize,
        num: usize,
        colour_off: usize,
    ) -> &'a SlabDesc {
        // SAFETY: the caller guarantees `at` is writable and aligned.
        unsafe {
            at.write(SlabDesc {
                link: LinkedListLink::new(),
                s_mem,
                inuse: Cell::new(0),
                free: Cell::new(0),
                num: num as u32,
                colour_off: colour_off as u32,
                list: Cell::new(SlabList::Free),
                mem,
            });
        }
        // SAFETY: just initialised; the management bytes follow it.
        let d = unsafe { &*at };
        for i in 0..num {
            let next = if i + 1 < num {
                (i + 1) as u16
            } else {
                BUFCTL_END
            };
            // SAFETY: the index array of `num` entries follows the
            // descriptor (the caller's contract); the slab is on no list
            // yet, so nothing else reaches it.
            unsafe { d.bufctl_ptr().add(i).write(next) };
            d.state(i).store(OBJ_FREE, Ordering::Relaxed);
        }
        d
    }

    /// The free-object index after the descriptor. It is reached by address
    /// (with the provenance the allocator exposed for all of RAM), not through
    /// `&self`, whose provenance covers only the descriptor.
    #[inline]
    fn bufctl_ptr(&self) -> *mut u16 {
        let at = (self as *const SlabDesc).addr() + core::mem::size_of::<SlabDesc>();
        core::ptr::with_exposed_provenance_mut(at)
    }

    fn bufctl(&self, i: usize, _locked: &Lists) -> u16 {
        debug_assert!(i < (self.num as usize));
        // SAFETY: the index array of `num` entries follows the descriptor (see
        // `init`); u16 needs 2-byte alignment, which the descriptor gives.
        unsafe { self.bufctl_ptr().add(i).read() }
    }

    fn set_bufctl(&self, i: usize, v: u16, _locked: &mut Lists) {
        debug_assert!(i < (self.num as usize));
        // SAFETY: as in `bufctl`; writes happen under the list lock
        // (`_locked`).
        unsafe { self.bufctl_ptr().add(i).write(v) }
    }

    /// The state byte of object `i`.
    #[inline]
    pub fn state(&self, i: usize) -> &AtomicU8 {
        assert!(i < (self.num as usize), "object index out of range");
        // SAFETY: checked just above.
        unsafe { self.state_unchecked(i) }
    }

    /// [`Self::state`] without the range check.
    ///
    /// # Safety
    /// `i` must be below [`Self::num`].
    #[inline(always)]
    pub unsafe fn state_unchecked(&self, i: usize) -> &AtomicU8 {
        debug_assert!(i < (self.num as usize));
        // SAFETY: the state bytes follow the index array (see `init`); AtomicU8
        // has alignment 1; i < num.
        unsafe {
            &*self
                .bufctl_ptr()
                .add(self.num as usize)
                .cast::<AtomicU8>()
                .add(i)
        }
    }

    /// The list the slab is on.
    pub fn list(&self, _locked: &Lists) -> SlabList {
        self.list.get()
    }

    /// Records the list the slab is on.
    pub fn set_list(&self, l: SlabList, _locked: &mut Lists) {
        self.list.set(l);
    }

    /// Objects in the slab.
    pub fn num(&self) -> usize {
        self.num as usize
    }

    /// Objects handed out of the slab.
    pub fn inuse(&self, _locked: &Lists) -> usize {
        self.inuse.get() as usize
    }

    /// Takes a free object. `None` if the slab is full.
    pub fn get_obj(&self, locked: &mut Lists) -> Option<usize> {
        let i = self.free.get();
        if i == BUFCTL_END {
            return None;
        }
        self.free.set(self.bufctl(usize::from(i), locked));
        self.inuse.set(self.inuse.get() + 1);
        Some(usize::from(i))
    }

    /// Returns object `i`.
    pub fn put_obj(&self, i: usize, locked: &mut Lists) {
        self.set_bufctl(i, self.free.get(), locked);
        self.free.set(i as u16);
        self.inuse.set(self.inuse.get() - 1);
    }
}
