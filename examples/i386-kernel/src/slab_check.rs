//! The slab allocator on the real buddy allocator: built once (see [`heap`]),
//! used as the global allocator (see [`alloc_check`]), caches of our own with
//! a constructor, refused bad input (see [`slab_bad_input`]), a mempool (see
//! [`pool_check`]), shrinking, validation, `/proc/slabinfo`, and an account of
//! every page: once everything is freed and shrunk, the buddy allocator has
//! back all it had before the slab allocator was built but the cache of
//! caches' slabs and the bootstrap metadata (the cache of caches' own
//! descriptor and arrays, one page, and the arena holding the general caches'
//! per-CPU arrays, two pages, with one CPU).

use alloc::vec::Vec;
use core::ptr::NonNull;
use core::sync::atomic::{AtomicUsize, Ordering};

use kmm_buddy::Gfp;
use kmm_slab::{CACHE_LINE, Cache, KmallocSizes, SlabError, SlabFlags};

use crate::alloc_check;
use crate::buddy_check::KernelBuddy;
use crate::heap::{self, HEAP, KernelSlab};
use crate::pool_check;
use crate::serial::{LineWriter, kprintln};
use crate::slab_bad_input;

/// Bytes of a `task_struct`-like object.
const TASK_SIZE: usize = 400;
/// The constructor's mark in word 0 of every task object.
const TASK_MAGIC: u32 = 0x7A5C_0DE5;
/// Task objects allocated at once.
const TASKS: usize = 2000;
/// Bytes of a small object.
const SMALL_SIZE: usize = 24;
/// Small objects allocated at once.
const SMALLS: usize = 10_000;

/// Times [`task_ctor`] ran.
static CTOR_CALLS: AtomicUsize = AtomicUsize::new(0);

/// The task cache's constructor: a zeroed object with the magic in word 0.
fn task_ctor(obj: *mut u8) {
    CTOR_CALLS.fetch_add(1, Ordering::Relaxed);
    // SAFETY: the allocator hands the constructor a whole object of the cache
    // (TASK_SIZE bytes, cache-line aligned) that no one uses yet.
    unsafe {
        obj.write_bytes(0, TASK_SIZE);
        obj.cast::<u32>().write(TASK_MAGIC);
    }
}

/// Word `i` of an object of at least `4 * (i + 1)` bytes.
fn word(obj: NonNull<u8>, i: usize) -> *mut u32 {
    obj.as_ptr().cast::<u32>().wrapping_add(i)
}

/// Reads word `i` of an object the caller holds.
fn read(obj: NonNull<u8>, i: usize) -> u32 {
    // SAFETY: callers pass objects they hold, large enough for word `i`,
    // aligned for u32.
    unsafe { word(obj, i).read() }
}

/// Writes word `i` of an object the caller holds.
fn write(obj: NonNull<u8>, i: usize, v: u32) {
    // SAFETY: as in `read`.
    unsafe { word(obj, i).write(v) }
}

/// Pages the cache of caches holds in slabs.
fn cache_of_caches_pages(slab: &KernelSlab) -> usize {
    let s = slab
        .cache_stats(slab.cache_of_caches())
        .expect("the cache of caches exists");
    s.num_slabs << s.gfporder
}

/// Free pages of the buddy allocator, per-CPU lists drained first.
fn buddy_free(b: &KernelBuddy<'_>) -> usize {
    b.drain_local();
    b.free_pages_total()
}

/// Allocates [`TASKS`] task objects: each fresh from the constructor, aligned,
/// then numbered; checks the numbers (no two objects overlap).
fn take_tasks(slab: &KernelSlab, task: Cache<'static>) -> Vec<NonNull<u8>> {
    let mut v = Vec::with_capacity(TASKS);
    for i in 0..TASKS {
        let t = slab.kmem_cache_alloc(task, Gfp::KERNEL).expect("a task");
        assert!(
            t.as_ptr().addr().is_multiple_of(CACHE_LINE),
            "task at {t:p}"
        );
        assert_eq!(
            (read(t, 0), read(t, 1)),
            (TASK_MAGIC, 0),
            "fresh task {t:p}"
        );
        write(t, 1, i as u32 + 1);
        v.push(t);
    }
    for (i, &t) in v.iter().enumerate() {
        assert_eq!((read(t, 0), read(t, 1)), (TASK_MAGIC, i as u32 + 1));
    }
    v
}

/// Frees task objects in the constructed state (pid 0 again), as Linux
/// requires of a cache with a constructor; the even ones first.
fn put_tasks(slab: &KernelSlab, task: Cache<'static>, v: Vec<NonNull<u8>>) {
    for first in [0, 1] {
        for &t in v.iter().skip(first).step_by(2) {
            write(t, 1, 0);
            slab.kmem_cache_free(task, t).expect("freeing a task");
        }
    }
}

/// Validates `cache` (bookkeeping against the objects' states); returns the
/// objects checked.
pub fn validate(slab: &KernelSlab, cache: Cache<'static>, what: &str) -> usize {
    match slab.validate_cache(cache) {
        Ok(n) => n,
        Err(r) => panic!("validate_cache({what}): {r}"),
    }
}

/// Prints `/proc/slabinfo`, one `kmm: slabinfo:` line per line.
fn print_slabinfo(slab: &KernelSlab) {
    let mut w = LineWriter::new("kmm: slabinfo: ");
    slab.slabinfo(&mut w).expect("serial output never fails");
}

/// Our caches: objects taken and checked, slabinfo with them live, bad input,
/// everything freed, shrunk, validated and the caches destroyed.
fn own_caches(slab: &KernelSlab) {
    let flags = SlabFlags::HWCACHE_ALIGN;
    let task = slab
        .kmem_cache_create("task_struct", TASK_SIZE, 0, flags, Some(task_ctor))
        .expect("creating task_struct");
    let small = slab
        .kmem_cache_create("kmm_small24", SMALL_SIZE, 0, SlabFlags::empty(), None)
        .expect("creating kmm_small24");
    let tasks = take_tasks(slab, task);
    let mut smalls = Vec::with_capacity(SMALLS);
    for i in 0..SMALLS {
        let s = slab
            .kmem_cache_alloc(small, Gfp::KERNEL)
            .expect("a small object");
        for w in 0..SMALL_SIZE / 4 {
            write(s, w, (i * 8 + w) as u32);
        }
        smalls.push(s);
    }
    for (i, &s) in smalls.iter().enumerate() {
        assert!((0..SMALL_SIZE / 4).all(|w| read(s, w) == (i * 8 + w) as u32));
    }
    let live = validate(slab, task, "task_struct") + validate(slab, small, "kmm_small24");
    let ts = slab.cache_stats(task).expect("task_struct exists");
    let per_slab = ts.num_objs / ts.num_slabs;
    let ctor = CTOR_CALLS.load(Ordering::Relaxed);
    assert_eq!(
        ctor,
        ts.grown * per_slab,
        "the constructor ran once per object"
    );
    let ss = slab.cache_stats(small).expect("kmm_small24 exists");
    kprintln!(
        "kmm: slab: task_struct ({TASK_SIZE} B, HWCACHE_ALIGN, ctor): {TASKS} objects in {} slabs of {per_slab}, ctor ran {ctor} times (once per object of every slab grown), magic on every fresh object; kmm_small24: {SMALLS} objects in {} slabs of {}; {live} objects validated",
        ts.num_slabs,
        ss.num_slabs,
        ss.num_objs / ss.num_slabs,
    );
    print_slabinfo(slab);
    let refused = slab_bad_input::run(slab, task, small);
    // SAFETY: only the boot CPU runs yet (the others start in the SMP
    // phase), and no one else uses the cache during the call.
    let busy = unsafe { slab.kmem_cache_destroy(task) };
    assert_eq!(busy, Err(SlabError::Busy), "destroying a cache in use");
    put_tasks(slab, task, tasks);
    for s in smalls.iter().rev() {
        slab.kmem_cache_free(small, *s)
            .expect("freeing a small object");
    }
    drop(smalls);
    // Objects come back constructed, and the constructor does not run again
    // unless the cache grows.
    let again = take_tasks(slab, task);
    let ts = slab.cache_stats(task).expect("task_struct exists");
    assert_eq!(CTOR_CALLS.load(Ordering::Relaxed), ts.grown * per_slab);
    put_tasks(slab, task, again);
    let checked = validate(slab, task, "task_struct") + validate(slab, small, "kmm_small24");
    let free = buddy_free(slab.buddy());
    let reported = slab.kmem_cache_shrink(task).expect("shrinking task_struct")
        + slab
            .kmem_cache_shrink(small)
            .expect("shrinking kmm_small24");
    let shrunk = buddy_free(slab.buddy()) - free;
    for c in [task, small] {
        let s = slab.cache_stats(c).expect("the cache exists");
        assert_eq!((s.num_slabs, s.in_arrays), (0, 0), "a shrunk empty cache");
    }
    // SAFETY: only the boot CPU runs yet (the others start in the SMP
    // phase), and nothing uses the caches any more.
    unsafe {
        slab.kmem_cache_destroy(task)
            .expect("destroying task_struct");
        slab.kmem_cache_destroy(small)
            .expect("destroying kmm_small24");
    }
    assert_eq!(
        slab.kmem_cache_alloc(task, Gfp::KERNEL),
        Err(SlabError::NoSuchCache)
    );
    kprintln!(
        "kmm: slab: bad input refused ({refused} calls: interior object -> Interior, double free -> DoubleFree, wrong cache -> WrongCache, kfree interior/twice, large block interior/tail page/twice, the stack -> Foreign, bad create and kmalloc sizes -> BadAlign/BadSize; then two allocations gave two objects); destroy while in use -> Busy; all freed constructed, reused without the ctor, {checked} objects validated, shrunk ({shrunk} pages back, {reported} reported), destroyed; the handle -> NoSuchCache"
    );
}

/// Validates every general cache (the normal ones of the allocator's class
/// table, the DMA ones of Linux 2.6's); returns the objects checked.
pub fn validate_general(slab: &KernelSlab) -> usize {
    let normal = slab
        .kmalloc_sizes()
        .classes()
        .iter()
        .map(|c| (c.size, false));
    let dma = KmallocSizes::Linux26
        .classes()
        .iter()
        .map(|c| (c.size, true));
    let mut n = 0;
    for (size, dma) in normal.chain(dma) {
        let c = slab.kmalloc_cache(size, dma).expect("a general cache");
        n += validate(slab, c, "a general cache");
    }
    n
}

/// Builds the slab allocator over `buddy`, makes it the global allocator and
/// runs every check, accounting for every page. Returns the allocator, kept
/// for the kernel's life.
pub fn run(buddy: &'static KernelBuddy<'static>) -> &'static KernelSlab {
    let free0 = buddy_free(buddy);
    let slab = heap::init(buddy);
    let free1 = buddy_free(buddy);
    let boot = free0 - free1;
    let cc1 = cache_of_caches_pages(slab);
    let meta = boot - cc1;
    kprintln!(
        "kmm: slab: allocator up: {} caches (cache of caches + {} general), bootstrap took {boot} pages = {cc1} of cache-of-caches slabs + {meta} of descriptors and per-CPU arrays",
        slab.cache_count(),
        slab.cache_count() - 1
    );
    alloc_check::run(slab);
    own_caches(slab);
    pool_check::run(slab);
    let free_before_shrink = buddy_free(buddy);
    let reported = slab.shrink_all();
    let general = validate_general(slab);
    let cc = validate(slab, slab.cache_of_caches(), "kmem_cache");
    let free2 = buddy_free(buddy);
    let shrunk = free2 - free_before_shrink;
    let cc2 = cache_of_caches_pages(slab);
    kprintln!(
        "kmm: slab: accounting: buddy free {free0} before the slab allocator, {free1} after bootstrap, {free2} at the end; held: cache of caches {cc2} pages ({cc1} at bootstrap), metadata {meta}, other slabs {}, large kmalloc {}",
        slab.slab_pages() - cc2,
        slab.large_pages()
    );
    assert_eq!(
        slab.slab_pages(),
        cc2,
        "slab pages besides the cache of caches"
    );
    assert_eq!(slab.large_pages(), 0, "large kmalloc blocks left");
    assert_eq!(
        free0 - free2,
        cc2 + meta,
        "pages missing beyond the cache of caches and the bootstrap metadata"
    );
    assert_eq!(HEAP.refused(), 0, "the global allocator refused a free");
    kprintln!(
        "kmm: slab ok ({} caches; shrink_all gave back {shrunk} pages ({reported} reported); general caches validated ({general} objects left) and the cache of caches ({cc} objects); every page back but the {cc2} of the cache of caches and {meta} of metadata: {free2} = {free0} - {cc2} - {meta})",
        slab.cache_count()
    );
    slab
}
