//! The arrays of free objects between the fast path and the slabs (Linux's
//! `array_cache`): one per CPU and cache on [`kmm_hal::CpuLocal`], and each
//! cache's shared array under its lock.
//!
//! A CPU's array is a [`PerCpu`] slot: [`ArrayCache`] (where the entries
//! are, the limit, the batch count, the `touched` mark), which only that CPU
//! touches, and [`ArrayStatus`] (the number of entries and the drain request),
//! which anyone may read. The entries themselves live in the cache's metadata
//! block. The slow paths see an array, a CPU's or the shared one, as a
//! [`Lifo`]: most recent entries at the top, oldest at the bottom.

use core::ptr::NonNull;
use core::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use kmm_hal::{CpuLocal, PerCpu};

use crate::flags::CACHE_LINE;

/// An array entry: an object's address and its state byte's address (so
/// handing an object out needs no slab lookup).
pub(crate) type Entry = [usize; 2];

/// No entry: objects are never at address 0.
pub(crate) const NO_ENTRY: Entry = [0, 0];

/// One CPU's array of one cache: its slot.
pub(crate) type ArraySlot = PerCpu<ArrayCache, ArrayStatus>;

/// The per-CPU arrays of one cache.
pub(crate) type CpuArrays<'c> = CpuLocal<'c, ArrayCache, ArrayStatus>;

/// Bytes of the entries of an array of `limit`, rounded up to whole cache
/// lines (each array starts on a line of its own: no false sharing).
pub(crate) const fn entry_bytes(limit: usize) -> usize {
    (limit * core::mem::size_of::<Entry>()).next_multiple_of(CACHE_LINE)
}

/// The part of a CPU's array only that CPU touches (through
/// `CpuLocal::with`; or another CPU for a CPU that is not running, through
/// `CpuLocal::with_offline`).
pub(crate) struct ArrayCache {
    entries: NonNull<Entry>,
    limit: usize,
    /// Objects moved to or from the shared array and the slabs at a time.
    pub(crate) batchcount: usize,
    /// An object was handed out since the last reap (Linux's `touched`).
    pub(crate) touched: bool,
}

// SAFETY: the entries are the array's own memory (see `ArrayCache::new`):
// whoever holds the `ArrayCache` is the only one to touch them.
unsafe impl Send for ArrayCache {}

/// The part of a CPU's array anyone may read.
pub(crate) struct ArrayStatus {
    /// The number of entries: written only by the array's holder (a plain
    /// load and store, no locked instruction), read by anyone (statistics).
    avail: AtomicUsize,
    /// Set by another CPU's shrink: empty the array. The owner does it at its
    /// next slow path with the array — a refill, a flush, a reap or shrink
    /// (Linux sends an interrupt to each CPU instead; the fast paths do not
    /// test the flag, which keeps them as short as before the per-CPU
    /// primitive).
    pub(crate) drain: AtomicBool,
}

impl ArrayStatus {
    /// An empty array's status.
    pub(crate) const fn new() -> ArrayStatus {
        ArrayStatus {
            avail: AtomicUsize::new(0),
            drain: AtomicBool::new(false),
        }
    }

    /// The number of entries (a moment old, unless read by the holder).
    #[inline]
    pub(crate) fn avail(&self) -> usize {
        self.avail.load(Ordering::Relaxed)
    }

    /// True if another CPU asked for the array to be emptied.
    #[inline(always)]
    pub(crate) fn drain_requested(&self) -> bool {
        self.drain.load(Ordering::Relaxed)
    }
}

impl ArrayCache {
    /// An empty array of `limit` entries at `entries`.
    ///
    /// # Safety
    /// `entries` must be valid for reading and writing `limit` entries, used
    /// by nothing else, for as long as the array is used.
    pub(crate) const unsafe fn new(
        entries: NonNull<Entry>,
        limit: usize,
        batchcount: usize,
    ) -> ArrayCache {
        ArrayCache {
            entries,
            limit,
            batchcount,
            touched: false,
        }
    }

    /// The most entries the array holds.
    #[inline]
    pub(crate) fn limit(&self) -> usize {
        self.limit
    }

    /// Takes the most recently added entry: [`NO_ENTRY`] if the array is
    /// empty (the slow path refills it). The fast path of every allocation
    /// (an entry, not an `Option`: the caller's test of the object address
    /// is all the branching needed). A drain another CPU asked for waits for
    /// the next slow path (see [`ArrayStatus::drain`]).
    #[inline(always)]
    pub(crate) fn pop(&mut self, st: &ArrayStatus) -> Entry {
        let n = st.avail.load(Ordering::Relaxed);
        if n == 0 {
            return NO_ENTRY;
        }
        self.touched = true;
        st.avail.store(n - 1, Ordering::Relaxed);
        debug_assert!(n <= self.limit, "array overflow");
        // SAFETY: 0 < n ≤ limit (the array never holds more than `limit`):
        // one of the array's entries (`new`'s contract).
        unsafe { self.entries.add(n - 1).read() }
    }

    /// Adds an entry: `false` if the array is full (the slow path flushes
    /// it). The fast path of every free. A drain another CPU asked for waits
    /// for the next slow path, as in [`ArrayCache::pop`].
    #[inline(always)]
    pub(crate) fn push(&mut self, st: &ArrayStatus, obj: usize, state: usize) -> bool {
        let n = st.avail.load(Ordering::Relaxed);
        if n == self.limit {
            return false;
        }
        let at = self.entries.as_ptr().wrapping_add(n).cast::<usize>();
        // SAFETY: n < limit: one of the array's entries (`new`'s contract).
        // Two word stores, not one of an `Entry` built on the stack: the
        // compiler would write it as two words and read it back as one wide
        // load, which the CPU cannot forward (a stall of a dozen cycles per
        // free).
        unsafe {
            at.write(obj);
            at.add(1).write(state);
        }
        st.avail.store(n + 1, Ordering::Relaxed);
        true
    }

    /// Runs `f` on the array as a [`Lifo`] (for the slow paths); the number
    /// of entries it leaves is stored back in `st`.
    #[inline]
    pub(crate) fn with_lifo<R>(
        &mut self,
        st: &ArrayStatus,
        f: impl FnOnce(&mut Lifo<'_>) -> R,
    ) -> R {
        let mut avail = st.avail.load(Ordering::Relaxed);
        // SAFETY: `new`'s contract; `&mut self` is the only way to the entries.
        let entries = unsafe { core::slice::from_raw_parts_mut(self.entries.as_ptr(), self.limit) };
        let r = f(&mut Lifo {
            entries,
            avail: &mut avail,
        });
        st.avail.store(avail, Ordering::Relaxed);
        r
    }
}

/// A cache's shared array (Linux's `shared` array cache), behind the cache's
/// shared-array lock. A cache without one has a limit of 0.
pub(crate) struct SharedArray {
    entries: NonNull<Entry>,
    limit: usize,
    avail: usize,
}

// SAFETY: the entries are the array's own memory (see `SharedArray::new`),
// reached only through the lock that holds the `SharedArray`.
unsafe impl Send for SharedArray {}

impl SharedArray {
    /// No shared array.
    pub(crate) const fn none() -> SharedArray {
        SharedArray {
            entries: NonNull::dangling(),
            limit: 0,
            avail: 0,
        }
    }

    /// An empty shared array of `limit` entries at `entries`.
    ///
    /// # Safety
    /// As for [`ArrayCache::new`].
    pub(crate) const unsafe fn new(entries: NonNull<Entry>, limit: usize) -> SharedArray {
        SharedArray {
            entries,
            limit,
            avail: 0,
        }
    }

    /// The number of entries.
    pub(crate) fn avail(&self) -> usize {
        self.avail
    }

    /// The most entries the array holds (0: the cache has none).
    pub(crate) fn limit(&self) -> usize {
        self.limit
    }

    /// The array as a [`Lifo`].
    pub(crate) fn lifo(&mut self) -> Lifo<'_> {
        // SAFETY: `new`'s contract (or no entries at all); `&mut self` is the
        // only way to them.
        let entries = unsafe { core::slice::from_raw_parts_mut(self.entries.as_ptr(), self.limit) };
        Lifo {
            entries,
            avail: &mut self.avail,
        }
    }
}

/// A cache's metadata block: the per-CPU array slots, then each CPU's
/// entries, then the shared array's entries.
#[derive(Debug, Clone, Copy)]
pub(crate) struct MetaLayout {
    pub(crate) cpus: usize,
    pub(crate) limit: usize,
    pub(crate) batch: usize,
    pub(crate) shared: usize,
}

impl MetaLayout {
    /// The arrays of a cache of `buffer_size`-byte objects on `cpus` CPUs
    /// (Linux's `enable_cpucache`).
    pub(crate) fn new(buffer_size: usize, cpus: usize) -> MetaLayout {
        let (limit, batch, shared) = crate::geometry::array_sizes(buffer_size, cpus);
        MetaLayout {
            cpus,
            limit,
            batch,
            shared,
        }
    }

    /// Bytes of the block.
    pub(crate) fn bytes(&self) -> usize {
        let shared = if self.shared > 0 {
            entry_bytes(self.shared)
        } else {
            0
        };
        self.cpus * (core::mem::size_of::<ArraySlot>() + entry_bytes(self.limit)) + shared
    }

    /// Writes empty arrays into the block at `at`; returns the slots and the
    /// shared array.
    ///
    /// # Safety
    /// `at` must be valid for writing `self.bytes()` bytes, aligned to a
    /// cache line, and used by nothing else for as long as the arrays are.
    pub(crate) unsafe fn init(&self, at: NonNull<u8>) -> (NonNull<ArraySlot>, SharedArray) {
        let slots = at.cast::<ArraySlot>();
        let first = self.cpus * core::mem::size_of::<ArraySlot>();
        for i in 0..self.cpus {
            // SAFETY: inside the block (see `bytes`); slots are a multiple of
            // a cache line apart and the block starts on one; each CPU's
            // entries lie behind the slots, apart from each other.
            unsafe {
                let entries = at
                    .byte_add(first + i * entry_bytes(self.limit))
                    .cast::<Entry>();
                slots.add(i).write(PerCpu::new(
                    ArrayCache::new(entries, self.limit, self.batch),
                    ArrayStatus::new(),
                ));
            }
        }
        let shared = if self.shared > 0 {
            // SAFETY: the shared array's entries are the block's tail.
            unsafe {
                let entries = at
                    .byte_add(first + self.cpus * entry_bytes(self.limit))
                    .cast::<Entry>();
                SharedArray::new(entries, self.shared)
            }
        } else {
            SharedArray::none()
        };
        (slots, shared)
    }
}

/// An array as the slow paths see it: `avail` entries at the bottom of
/// `entries`, the most recent on top.
pub(crate) struct Lifo<'x> {
    entries: &'x mut [Entry],
    avail: &'x mut usize,
}

impl Lifo<'_> {
    /// The number of entries.
    #[inline]
    pub(crate) fn len(&self) -> usize {
        *self.avail
    }

    /// True if the array holds nothing.
    #[inline]
    pub(crate) fn is_empty(&self) -> bool {
        *self.avail == 0
    }

    /// Free slots.
    #[inline]
    pub(crate) fn room(&self) -> usize {
        self.entries.len() - *self.avail
    }

    /// Takes the most recent entry.
    #[inline]
    pub(crate) fn pop(&mut self) -> Option<Entry> {
        let n = self.avail.checked_sub(1)?;
        *self.avail = n;
        Some(self.entries[n])
    }

    /// Adds an entry; the array must have room.
    #[inline]
    pub(crate) fn push(&mut self, e: Entry) {
        self.entries[*self.avail] = e;
        *self.avail += 1;
    }

    /// The free slots above the entries, to be filled and then counted with
    /// [`Lifo::filled`].
    #[inline]
    pub(crate) fn spare(&mut self) -> &mut [Entry] {
        &mut self.entries[*self.avail..]
    }

    /// Counts `n` slots of [`Lifo::spare`] as entries.
    #[inline]
    pub(crate) fn filled(&mut self, n: usize) {
        assert!(n <= self.room(), "more entries than slots");
        *self.avail += n;
    }

    /// Takes the `n` most recent entries off (at most [`Lifo::len`]) and
    /// returns them, oldest first (a bulk allocation copies them out).
    #[inline]
    pub(crate) fn take_top(&mut self, n: usize) -> &[Entry] {
        let from = *self.avail - n;
        *self.avail = from;
        &self.entries[from..from + n]
    }

    /// Moves the `n` most recent entries on top of `to`, in order (a refill
    /// from the shared array). `n` is at most this array's entries and
    /// `to`'s room.
    pub(crate) fn move_top(&mut self, to: &mut Lifo<'_>, n: usize) {
        let from = *self.avail - n;
        to.spare()[..n].copy_from_slice(&self.entries[from..from + n]);
        to.filled(n);
        *self.avail = from;
    }

    /// Moves the `n` oldest entries on top of `to` (a flush to the shared
    /// array). `n` is at most this array's entries and `to`'s room.
    pub(crate) fn move_oldest(&mut self, to: &mut Lifo<'_>, n: usize) {
        to.spare()[..n].copy_from_slice(&self.entries[..n]);
        to.filled(n);
        self.drop_oldest(n);
    }

    /// Takes up to `n` of the oldest entries out (at most [`ObjBatch::CAP`]).
    pub(crate) fn take_oldest(&mut self, n: usize) -> ObjBatch {
        let n = n.min(*self.avail).min(ObjBatch::CAP);
        let mut b = ObjBatch::new();
        for &[obj, _] in &self.entries[..n] {
            b.push(obj);
        }
        self.drop_oldest(n);
        b
    }

    fn drop_oldest(&mut self, n: usize) {
        let avail = *self.avail;
        self.entries.copy_within(n..avail, 0);
        *self.avail = avail - n;
    }
}

/// Up to [`ObjBatch::CAP`] object addresses taken out of an array, on their
/// way back to their slabs (given back once the array is no longer held),
/// without a heap.
pub(crate) struct ObjBatch {
    v: [usize; ObjBatch::CAP],
    n: usize,
}

// A CPU's array fits one batch: a drain requested by another CPU takes it
// whole.
const _: () = assert!(crate::geometry::MAX_ARRAY_LIMIT <= ObjBatch::CAP);

impl ObjBatch {
    /// The most objects a batch holds.
    pub(crate) const CAP: usize = 128;

    /// An empty batch.
    pub(crate) const fn new() -> Self {
        ObjBatch {
            v: [0; ObjBatch::CAP],
            n: 0,
        }
    }

    /// Adds an object; the batch must have room.
    pub(crate) fn push(&mut self, obj: usize) {
        self.v[self.n] = obj;
        self.n += 1;
    }

    /// The objects.
    pub(crate) fn as_slice(&self) -> &[usize] {
        &self.v[..self.n]
    }

    /// The number of objects.
    pub(crate) fn len(&self) -> usize {
        self.n
    }

    /// True if the batch holds nothing.
    pub(crate) fn is_empty(&self) -> bool {
        self.n == 0
    }
}
