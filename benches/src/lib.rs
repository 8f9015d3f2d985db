//! Drivers for kmm's criterion benchmarks: one [`FrameAlloc`] interface over
//! kmm's buddy allocator and the crates.io peers, and the workloads run on it.
//!
//! - [`Kmm`]: `kmm-buddy` on the host mock ([`Host`]), through the per-CPU lists
//!   or bypassing them ([`KmmPath`]);
//! - [`Bitmap`]: `bitmap-allocator`'s segment-tree bitmaps ([`BitAlloc1M`] for
//!   4 GiB of frames);
//! - [`BuddySystem`]: `buddy_system_allocator`'s [`FrameAllocator`] with
//!   kmm's `MAX_ORDER` (11 free lists, blocks of up to 1024 frames).
//!
//! Every allocator is driven through the same functions ([`alloc_free_pair`],
//! [`run_ops`], [`exhaust_refill`], [`exhaust_refill_shuffled`]; kmm's bulk
//! paths alone through [`bulk_alloc_free`]) with the same operation sequences
//! ([`random_ops`], [`fragment_ops`], [`shuffled`]), so the benchmarks compare
//! the allocators and nothing else.
//! `benches/page_alloc.rs` holds the criterion groups; `docs/benchmarks.md` the
//! results.
//!
//! The [`slab`] module does the same for object allocators: `kmm-slab`'s
//! caches and `kmalloc` beside `slabmalloc`, `talc`, `linked_list_allocator`
//! and `buddy_system_allocator`'s heap (`benches/slab_alloc.rs`).
//!
//! # Example
//!
//! ```
//! use kmm_benches::{FrameAlloc, Host, Kmm, KmmPath, exhaust_refill};
//!
//! let mut host = Host::new(64 << 20);
//! let mut kmm = Kmm::new(&mut host, KmmPath::PerCpu);
//! let mut buf = Vec::new();
//! let n = exhaust_refill(&mut kmm, &mut buf);
//! assert!(n > 16_000, "nearly all of 64 MiB is handed out");
//! assert_eq!(exhaust_refill(&mut kmm, &mut buf), n, "and all of it comes back");
//! ```

use std::hint::black_box;

use bitmap_allocator::BitAlloc;
use buddy_system_allocator::FrameAllocator;
use kmm_buddy::{Buddy, BuddyConfig, Freed, Gfp, MAX_ORDER};
use kmm_mock::{Backing, CpuBinding, MockCpu};
use kmm_page_frame::{Page, Region, RegionKind};
use kmm_testkit::TestMachine;

pub mod pkmap;
pub mod slab;
pub mod vmalloc;

pub use bitmap_allocator::{BitAlloc1M, BitAlloc64K};

/// 4 GiB of RAM, the size of the "fresh range" workloads.
pub const RAM_4G: usize = 4 << 30;
/// Frames in 4 GiB.
pub const FRAMES_4G: usize = RAM_4G >> 12;
/// Most blocks the random-order workload keeps allocated at once.
pub const MAX_LIVE: usize = 64;
/// The seed of the random-order workload.
pub const SEED: u64 = 0x9E37_79B9_7F4A_7C15;

/// A page-frame allocator as the workloads drive it: blocks of `2^order`
/// frames, handed out and taken back.
pub trait FrameAlloc {
    /// What `alloc` returns and `free` takes (a descriptor or a frame number).
    type Block: Copy;
    /// Allocates `2^order` contiguous frames, or `None` when none are left.
    fn alloc(&mut self, order: u32) -> Option<Self::Block>;
    /// Frees a block `alloc` returned for the same `order`. Panics if the
    /// allocator refuses it (a driver bug).
    fn free(&mut self, block: Self::Block, order: u32);
}

/// A host mock machine with one usable region covering all of its RAM and
/// kmm's buddy allocator on it (a [`TestMachine`]). Owning the machine and
/// lending it out mutably guarantees that only one allocator uses its RAM at
/// a time.
pub struct Host {
    machine: TestMachine,
}

impl Host {
    /// A machine with `ram` bytes of sparse, `mmap`-backed RAM (a 4 GiB
    /// machine costs the pages kmm touches: `mem_map` and the zones), 2-level
    /// paging, one CPU.
    pub fn new(ram: usize) -> Host {
        Host::with_cpus(ram, 1)
    }

    /// [`Host::new`] with `cpus` simulated CPUs (for the multi-threaded
    /// workloads: each thread binds a CPU of its own).
    pub fn with_cpus(ram: usize, cpus: usize) -> Host {
        Host {
            machine: kmm_machine(ram, cpus),
        }
    }

    /// The machine's CPUs.
    pub fn cpu(&self) -> &MockCpu {
        self.machine.cpu()
    }

    /// Builds kmm over this machine again exactly as a kernel does at boot
    /// (and as the test kit does for the `kmm-buddy` doc example): `Bootmem`
    /// over the memory map, `MemMap::new`, `Buddy::new`
    /// ([`TestMachine::rebuild`]). The earlier allocator built here is gone
    /// (the exclusive borrow ends its users), so its memory is free to reuse.
    pub fn buddy(&mut self, config: BuddyConfig<'static>) -> &Buddy<'_, MockCpu> {
        self.machine.rebuild(config);
        self.machine.buddy()
    }
}

/// The machine every kmm benchmark runs on: `ram` bytes of sparse,
/// `mmap`-backed RAM in one usable region, `cpus` simulated CPUs, no kernel
/// image reserved (kmm manages all of RAM, as the peers do), and the buddy
/// allocator with [`KmmPath::PerCpu`]'s configuration (no reserve).
pub fn kmm_machine(ram: usize, cpus: usize) -> TestMachine {
    TestMachine::builder()
        .ram(ram)
        .cpus(cpus)
        .backing(Backing::Mmap)
        .memory_map(vec![Region::new(0, ram as u64, RegionKind::Usable)])
        .without_kernel_image()
        .buddy_config(KmmPath::PerCpu.config())
        .build()
}

/// Which order-0 path a [`Kmm`] takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KmmPath {
    /// Through the calling CPU's hot/cold lists (Linux's `buffered_rmqueue`).
    PerCpu,
    /// Straight to the zone's free lists (`BuddyConfig::bypass_pcp`).
    Bypass,
}

impl KmmPath {
    /// The configuration of this path. Both set `min_free_kbytes` to 0: the
    /// peers keep no reserve, so kmm may hand out every frame too.
    pub fn config(self) -> BuddyConfig<'static> {
        BuddyConfig {
            bypass_pcp: self == KmmPath::Bypass,
            min_free_kbytes: Some(0),
            ..BuddyConfig::default()
        }
    }
}

/// kmm's buddy allocator on a [`Host`], the calling thread bound to CPU 0 for
/// as long as it lives. Allocates with `Gfp::KERNEL` (NORMAL, then DMA).
pub struct Kmm<'h> {
    buddy: &'h Buddy<'h, MockCpu>,
    _cpu: CpuBinding,
}

impl<'h> Kmm<'h> {
    /// Builds kmm on `host` for `path` and binds the calling thread to CPU 0.
    /// Panics if the thread is already bound (another `Kmm` is alive on it).
    pub fn new(host: &'h mut Host, path: KmmPath) -> Kmm<'h> {
        let cpu = host.cpu().bind(0).expect("bind the bench thread to CPU 0");
        Kmm {
            buddy: host.buddy(path.config()),
            _cpu: cpu,
        }
    }

    /// The allocator.
    pub fn buddy(&self) -> &'h Buddy<'h, MockCpu> {
        self.buddy
    }
}

impl<'h> FrameAlloc for Kmm<'h> {
    type Block = &'h Page;

    #[inline]
    fn alloc(&mut self, order: u32) -> Option<&'h Page> {
        self.buddy.alloc_pages(Gfp::KERNEL, order as usize)
    }

    #[inline]
    fn free(&mut self, page: &'h Page, order: u32) {
        let r = self.buddy.free_pages_page(page, order as usize);
        assert!(r == Ok(Freed::Released), "kmm refused a free: {r:?}");
    }
}

/// `bitmap-allocator`: one bit per frame in a 16-way segment tree. Order 0
/// uses `alloc`/`dealloc`, larger orders `alloc_contiguous` (aligned to the
/// block size, as a buddy block is) and `dealloc_contiguous`.
pub struct Bitmap<B: BitAlloc>(Box<B>);

impl<B: BitAlloc> Bitmap<B> {
    /// A bitmap with frames `0..frames` free.
    pub fn new(frames: usize) -> Self {
        let mut b = Box::new(B::DEFAULT);
        b.insert(0..frames);
        Bitmap(b)
    }

    /// Empties the bitmap in place and frees `0..frames` again (what
    /// [`Bitmap::new`] does, without the heap allocation).
    pub fn reset(&mut self, frames: usize) {
        *self.0 = B::DEFAULT;
        self.0.insert(0..frames);
    }
}

impl<B: BitAlloc> FrameAlloc for Bitmap<B> {
    type Block = usize;

    #[inline]
    fn alloc(&mut self, order: u32) -> Option<usize> {
        if order == 0 {
            self.0.alloc()
        } else {
            self.0.alloc_contiguous(None, 1 << order, order as usize)
        }
    }

    #[inline]
    fn free(&mut self, frame: usize, order: u32) {
        let ok = if order == 0 {
            self.0.dealloc(frame)
        } else {
            self.0.dealloc_contiguous(frame, 1 << order)
        };
        assert!(ok, "bitmap-allocator refused a free of {frame:#x}");
    }
}

/// `buddy_system_allocator::FrameAllocator` with kmm's `MAX_ORDER` free lists
/// (blocks of up to 1024 frames); each free list is a `BTreeSet` of frame
/// numbers on the host heap.
pub struct BuddySystem(FrameAllocator<MAX_ORDER>);

impl BuddySystem {
    /// An allocator with frames `0..frames` added.
    pub fn new(frames: usize) -> Self {
        let mut f = FrameAllocator::new();
        f.add_frame(0, frames);
        BuddySystem(f)
    }
}

impl FrameAlloc for BuddySystem {
    type Block = usize;

    #[inline]
    fn alloc(&mut self, order: u32) -> Option<usize> {
        self.0.alloc(1 << order)
    }

    #[inline]
    fn free(&mut self, frame: usize, order: u32) {
        self.0.dealloc(frame, 1 << order);
    }
}

/// Workload 1: one order-0 allocation and its free.
#[inline]
pub fn alloc_free_pair<A: FrameAlloc>(a: &mut A) {
    let b = a.alloc(0).expect("a fresh range has frames");
    a.free(black_box(b), 0);
}

/// The bulk workload: one `alloc_pages_bulk` filling every slot of `pages`
/// (all empty) with order-0 pages, then one `release_pages` of them all,
/// which empties the slots again. Panics if a slot stays empty or a page is
/// refused (a fresh range has frames; a driver bug).
#[inline]
pub fn bulk_alloc_free<'h>(kmm: &mut Kmm<'h>, pages: &mut [Option<&'h Page>]) {
    let b = kmm.buddy();
    let n = b.alloc_pages_bulk(Gfp::KERNEL, pages);
    assert_eq!(n, pages.len(), "a fresh range fills every slot");
    let r = b.release_pages(black_box(pages));
    assert_eq!(r, Ok(n), "kmm refused a bulk free");
}

/// A small xorshift64 generator (Marsaglia), so the sequences need no extra
/// dependency and are the same on every machine.
#[derive(Debug, Clone)]
pub struct XorShift(u64);

impl XorShift {
    /// A generator from a non-zero seed (0 is replaced by [`SEED`]).
    pub fn new(seed: u64) -> Self {
        XorShift(if seed == 0 { SEED } else { seed })
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    /// A number in `0..n` (`n > 0`; the slight modulo bias does not matter here).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }
}

/// One step of the random-order workload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// Allocate a block of this order and append it to the live blocks.
    Alloc(u32),
    /// Free the live block at this index (`swap_remove`).
    Free(usize),
}

/// Workload 2: a fixed-seed sequence of `steps` random steps — an allocation of
/// a random order in `0..=max_order`, or the free of a random live block, at
/// most `max_live` blocks live — followed by the frees of the blocks still
/// live, so it starts and ends with nothing allocated. Every allocation is
/// freed exactly once.
pub fn random_ops(seed: u64, steps: usize, max_order: u32, max_live: usize) -> Vec<Op> {
    let mut rng = XorShift::new(seed);
    let mut ops = Vec::with_capacity(steps + max_live);
    let mut live = 0usize;
    for _ in 0..steps {
        let alloc = live == 0 || (live < max_live && rng.next_u64() & 1 == 0);
        if alloc {
            ops.push(Op::Alloc(rng.below(max_order as usize + 1) as u32));
            live += 1;
        } else {
            ops.push(Op::Free(rng.below(live)));
            live -= 1;
        }
    }
    while live > 0 {
        ops.push(Op::Free(rng.below(live)));
        live -= 1;
    }
    ops
}

/// Runs a sequence from [`random_ops`]; `live` is scratch space (emptied first,
/// empty again at the end). Panics if an allocation fails.
pub fn run_ops<A: FrameAlloc>(a: &mut A, ops: &[Op], live: &mut Vec<(A::Block, u32)>) {
    live.clear();
    run_steps(a, ops, live);
    debug_assert!(live.is_empty());
}

/// Runs steps of a sequence on top of the blocks already in `live` (a
/// `Free(i)` frees `live[i]`), leaving in `live` what is still allocated at
/// the end. Panics if an allocation fails.
pub fn run_steps<A: FrameAlloc>(a: &mut A, ops: &[Op], live: &mut Vec<(A::Block, u32)>) {
    for &op in ops {
        match op {
            Op::Alloc(order) => {
                let b = a.alloc(order).expect("the random workload fits in RAM");
                live.push((black_box(b), order));
            }
            Op::Free(i) => {
                let (b, order) = live.swap_remove(i);
                a.free(b, order);
            }
        }
    }
}

/// Workload 3: allocates order-0 frames until the allocator fails, then frees
/// them all in allocation order; returns how many it got. `buf` is scratch
/// space. The allocator ends as it started, so cycles can repeat.
pub fn exhaust_refill<A: FrameAlloc>(a: &mut A, buf: &mut Vec<A::Block>) -> usize {
    buf.clear();
    while let Some(b) = a.alloc(0) {
        buf.push(b);
    }
    let n = buf.len();
    for b in buf.drain(..) {
        a.free(b, 0);
    }
    n
}

/// Blocks the fragmenting phase of workload 4 allocates on its 1 GiB machine
/// (150 187 frames of the 226 301 `Gfp::KERNEL` may take there).
pub const FRAGMENT_BLOCKS: usize = 8192;
/// Largest order of the fragmenting phase (blocks of up to 64 frames).
pub const FRAGMENT_MAX_ORDER: u32 = 6;
/// The seed of the free order of workload 4 (the fragmenting phase uses
/// [`SEED`]).
pub const FREE_ORDER_SEED: u64 = 0xD1B5_4A32_D192_ED03;

/// The fragmenting phase of workload 4: `blocks` allocations of random orders
/// in `0..=max_order` (fixed seed), then the frees of a random half of them
/// in random order; the other half stays allocated, scattered over the frames
/// the allocations packed, so the free memory that remains is holes of every
/// size up to `2^max_order` frames between live blocks. Run it with
/// [`run_steps`]; it leaves `blocks - blocks / 2` blocks live.
pub fn fragment_ops(seed: u64, blocks: usize, max_order: u32) -> Vec<Op> {
    let mut rng = XorShift::new(seed);
    let mut ops: Vec<Op> = (0..blocks)
        .map(|_| Op::Alloc(rng.below(max_order as usize + 1) as u32))
        .collect();
    let mut live = blocks;
    for _ in 0..blocks / 2 {
        ops.push(Op::Free(rng.below(live)));
        live -= 1;
    }
    ops
}

/// A fixed-seed random permutation of `0..n` (Fisher–Yates with
/// [`XorShift`]): the order in which workload 4 frees the frames it got.
pub fn shuffled(seed: u64, n: usize) -> Vec<u32> {
    let n32 = u32::try_from(n).expect("fewer than 2^32 frames");
    let mut rng = XorShift::new(seed);
    let mut v: Vec<u32> = (0..n32).collect();
    for i in (1..n).rev() {
        v.swap(i, rng.below(i + 1));
    }
    v
}

/// Workload 4: allocates order-0 frames until the allocator fails, then frees
/// them in the order `order` gives (`order[k]` is the index, in allocation
/// order, of the `k`th frame freed: a permutation of `0..n` from
/// [`shuffled`]); returns how many it got. Panics, before freeing anything,
/// if that is not `order.len()`. `buf` is scratch space. The allocator ends
/// as it started, so cycles can repeat.
pub fn exhaust_refill_shuffled<A: FrameAlloc>(
    a: &mut A,
    buf: &mut Vec<A::Block>,
    order: &[u32],
) -> usize {
    buf.clear();
    while let Some(b) = a.alloc(0) {
        buf.push(b);
    }
    let n = buf.len();
    assert_eq!(
        n,
        order.len(),
        "the free order covers every frame handed out"
    );
    for &i in order {
        a.free(buf[i as usize], 0);
    }
    buf.clear();
    n
}

/// Frames the blocks of `live` hold.
pub fn live_frames<B>(live: &[(B, u32)]) -> usize {
    live.iter().map(|&(_, order)| 1usize << order).sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    const SMALL: usize = 64 << 20;
    const SMALL_FRAMES: usize = SMALL >> 12;

    /// Runs every workload on `a` and checks the counts.
    fn drive<A: FrameAlloc>(a: &mut A, expect_frames: usize) {
        for _ in 0..100 {
            alloc_free_pair(a);
        }
        // At most 8 live blocks of up to 4 MiB: they fit in 64 MiB however
        // fragmented, as 64 live blocks fit in the benchmarks' 4 GiB.
        let ops = random_ops(SEED, 2000, 10, 8);
        let mut live = Vec::new();
        run_ops(a, &ops, &mut live);
        let mut buf = Vec::new();
        let n = exhaust_refill(a, &mut buf);
        assert_eq!(n, expect_frames);
        assert_eq!(exhaust_refill(a, &mut buf), n);
        run_ops(a, &ops, &mut live);
    }

    #[test]
    fn sequence_is_closed_and_bounded() {
        let ops = random_ops(SEED, 10_000, 10, MAX_LIVE);
        assert_eq!(ops, random_ops(SEED, 10_000, 10, MAX_LIVE));
        let mut live = 0usize;
        let (mut allocs, mut orders) = (0, [0usize; 11]);
        for op in &ops {
            match *op {
                Op::Alloc(o) => {
                    live += 1;
                    allocs += 1;
                    orders[o as usize] += 1;
                }
                Op::Free(i) => {
                    assert!(i < live);
                    live -= 1;
                }
            }
            assert!(live <= MAX_LIVE);
        }
        assert_eq!(live, 0);
        assert_eq!(ops.len(), 2 * allocs);
        assert!(
            orders.iter().all(|&n| n > 0),
            "every order is drawn: {orders:?}"
        );
    }

    /// Fragments `a` (which has `frames` frames), then runs workload 4 twice
    /// and checks that it gets every frame not held by the fragmenting
    /// phase each time; then frees what that phase left and checks that every
    /// frame comes back.
    fn drive_fragmented<A: FrameAlloc>(a: &mut A, frames: usize) {
        let ops = fragment_ops(SEED, 512, 5);
        let mut live = Vec::new();
        run_steps(a, &ops, &mut live);
        assert_eq!(live.len(), 256, "half the blocks stay live");
        let held = live_frames(&live);
        assert!(held > 256, "the blocks are of several orders");
        let order = shuffled(FREE_ORDER_SEED, frames - held);
        let mut buf = Vec::new();
        assert_eq!(exhaust_refill_shuffled(a, &mut buf, &order), frames - held);
        assert_eq!(exhaust_refill_shuffled(a, &mut buf, &order), frames - held);
        for (b, order) in live.drain(..) {
            a.free(b, order);
        }
        assert_eq!(exhaust_refill(a, &mut buf), frames);
    }

    #[test]
    fn fragment_phase_leaves_half_live() {
        let ops = fragment_ops(SEED, 1000, FRAGMENT_MAX_ORDER);
        assert_eq!(ops, fragment_ops(SEED, 1000, FRAGMENT_MAX_ORDER));
        assert_eq!(ops.len(), 1500);
        assert!(
            ops[..1000]
                .iter()
                .all(|op| matches!(op, Op::Alloc(o) if *o <= 6))
        );
        let mut live = 1000;
        for op in &ops[1000..] {
            let Op::Free(i) = *op else {
                panic!("allocations come first");
            };
            assert!(i < live);
            live -= 1;
        }
    }

    #[test]
    fn shuffled_is_a_fixed_permutation() {
        let p = shuffled(FREE_ORDER_SEED, 10_000);
        assert_eq!(p, shuffled(FREE_ORDER_SEED, 10_000));
        let mut seen = vec![false; 10_000];
        for &i in &p {
            assert!(!seen[i as usize], "{i} twice");
            seen[i as usize] = true;
        }
        let in_place = p.iter().enumerate().filter(|&(k, &i)| k == i as usize);
        assert!(in_place.count() < 10, "a shuffle, not the identity");
    }

    #[test]
    #[should_panic(expected = "the free order covers every frame")]
    fn shuffled_refill_refuses_a_short_order() {
        let mut b = Bitmap::<BitAlloc64K>::new(100);
        exhaust_refill_shuffled(&mut b, &mut Vec::new(), &shuffled(1, 99));
    }

    /// Runs `drive` on kmm through both order-0 paths, on one host, with
    /// the frames kmm hands out.
    fn kmm_both(drive: impl Fn(&mut Kmm<'_>, usize)) {
        let mut host = Host::new(SMALL);
        let free = {
            let k = Kmm::new(&mut host, KmmPath::PerCpu);
            k.buddy().free_pages_total()
        };
        for path in [KmmPath::PerCpu, KmmPath::Bypass] {
            let mut k = Kmm::new(&mut host, path);
            drive(&mut k, free);
        }
    }

    #[test]
    fn kmm_fragmented_both_paths() {
        kmm_both(|k, free| drive_fragmented(k, free));
    }

    #[test]
    fn peers_fragmented() {
        drive_fragmented(&mut Bitmap::<BitAlloc64K>::new(SMALL_FRAMES), SMALL_FRAMES);
        drive_fragmented(&mut BuddySystem::new(SMALL_FRAMES), SMALL_FRAMES);
    }

    #[test]
    fn kmm_both_paths() {
        kmm_both(|k, free| drive(k, free));
    }

    #[test]
    fn peers() {
        drive(&mut Bitmap::<BitAlloc64K>::new(SMALL_FRAMES), SMALL_FRAMES);
        drive(&mut BuddySystem::new(SMALL_FRAMES), SMALL_FRAMES);
        let mut b = Bitmap::<BitAlloc64K>::new(10);
        b.reset(SMALL_FRAMES);
        drive(&mut b, SMALL_FRAMES);
    }
}
