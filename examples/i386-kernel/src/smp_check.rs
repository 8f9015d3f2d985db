//! The SMP phase: every CPU at once runs the allocators for a fixed amount
//! of work, with a local-APIC timer interrupt on every CPU that allocates
//! and frees with `Gfp::ATOMIC` (a buddy page and a kmalloc object), so
//! allocation from interrupt context runs for real.
//!
//! First every CPU sends [`CALLS_PER_CPU`] `on_each_cpu` calls at once:
//! each must run exactly once on every CPU, and the senders must not wait on
//! each other. Then each CPU, for `smp_work` rounds: pages of every zone and
//! order (the block stamped with its owner in its first and last page,
//! through the direct map or its own `kmap_local_page` for HIGHMEM, and
//! checked before it is freed, a few rounds later; up to 64 pages of a
//! HIGHMEM block written and read back through `kmap`); slab objects of
//! three caches and kmalloc, each stamped (owner, cache) over the whole
//! object, half put in the next CPU's inbox and freed there (cross-CPU
//! frees); a vmalloc area stamped page by page; `kmap` and
//! `kmap_local_page` of a HIGHMEM page. A stamp that changed while its owner
//! held the memory means it was handed out twice: the check panics. At the
//! end every CPU stops its timer, drains its per-CPU lists and arrays and
//! checks its preempt and irq counts; the boot CPU checks that every page is
//! free or in a slab as before the phase and every cache has its active
//! objects of before (`/proc/buddyinfo` and `/proc/slabinfo`), validates
//! the stress caches and finds `/proc/vmallocinfo` empty.
//!
//! vmalloc and pkmap flush through [`crate::smp::KernelTlb`]: every purge
//! and `flush_all_zero_pkmaps` is a shootdown IPI to the other CPUs; a
//! waiting allocation short of memory drains every CPU's lists through
//! IPIs too.

use alloc::boxed::Box;
use core::fmt;
use core::ptr::NonNull;
use core::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};

use kmm_buddy::{Freed, Gfp, MAX_ORDER};
use kmm_hal::{Cpu, CrossCall, PAGE_SIZE, VirtAddr};
use kmm_i386::Mode;
use kmm_page_frame::{Page, ZoneType};
use kmm_slab::{Cache, SlabFlags};

use crate::buddy_check::KernelBuddy;
use crate::heap::KernelSlab;
use kmm_percpu::PercpuPtr;

use crate::percpu::{self, KernelPercpu};
use crate::pkmap_check::KernelPkmap;
use crate::serial::{LineWriter, kprintln};
use crate::smp::{self, MAX_CPUS};
use crate::vmalloc_check::KernelVmalloc;
use crate::{ap, idt};

/// Rounds of work per CPU unless the command line says `smp_work=N`.
pub const DEFAULT_ROUNDS: usize = 1000;
/// The local timer's initial count: 10 ms at QEMU's 1 GHz APIC bus clock
/// divided by 16.
const TIMER_COUNT: u32 = 625_000;
/// Page blocks each CPU holds at once.
const HELD_BLOCKS: usize = 6;
/// Slab objects each CPU holds at once.
const HELD_OBJECTS: usize = 16;
/// Dynamic per-CPU blocks a CPU holds at once.
const HELD_PERCPU: usize = 16;
/// Pages of a HIGHMEM block mapped with `kmap` one by one.
const KMAP_BLOCK_PAGES: usize = 64;
/// Slots of each CPU's inbox.
const QUEUE_SLOTS: usize = 64;
/// The stress caches' object sizes.
const CACHE_SIZES: [usize; 3] = [32, 192, 1000];
/// The kmalloc sizes used (the fourth "cache").
const KMALLOC_SIZES: [usize; 3] = [24, 500, 3000];

/// 0: wait; 1: work; 2: stop timers and drain.
static PHASE: AtomicUsize = AtomicUsize::new(0);
/// APs done with their work.
static WORKED: AtomicUsize = AtomicUsize::new(0);
/// APs done draining.
static DRAINED: AtomicUsize = AtomicUsize::new(0);
/// The timer handler allocates while this is set.
static TIMER_WORK: AtomicBool = AtomicBool::new(false);
/// CPUs whose timer work stopped (set before they drain: a tick already
/// pending when the timer is stopped must not refill what is drained).
static TIMER_STOPPED: [AtomicBool; MAX_CPUS] = [const { AtomicBool::new(false) }; MAX_CPUS];
/// Cross-CPU calls each CPU makes at the start of its work, all CPUs at once.
const CALLS_PER_CPU: usize = 25;
/// Runs of those calls' function, by the CPU that ran it.
static CALL_RUNS: [AtomicUsize; MAX_CPUS] = [const { AtomicUsize::new(0) }; MAX_CPUS];
/// Timer interrupts, by CPU.
static TICKS: [AtomicUsize; MAX_CPUS] = [const { AtomicUsize::new(0) }; MAX_CPUS];
/// Timer interrupts that allocated a page and an object, by CPU.
static TICK_ALLOCS: [AtomicUsize; MAX_CPUS] = [const { AtomicUsize::new(0) }; MAX_CPUS];
/// Atomic allocations from the timer that failed.
static TICK_FAILS: AtomicUsize = AtomicUsize::new(0);
/// The work every CPU runs (set by the boot CPU before the APs start).
static WORK: spin::Once<&'static (dyn Fn(usize) + Sync)> = spin::Once::new();
/// Each CPU's counts.
static RESULTS: spin::Mutex<[Work; MAX_CPUS]> = spin::Mutex::new([Work::ZERO; MAX_CPUS]);
/// The cross-CPU queues: each CPU's inbox of objects another CPU allocated
/// (an object's address, its stamp naming its cache; 0 when empty).
static QUEUE: [[AtomicUsize; QUEUE_SLOTS]; MAX_CPUS] =
    [const { [const { AtomicUsize::new(0) }; QUEUE_SLOTS] }; MAX_CPUS];

/// What one CPU did.
#[derive(Debug, Clone, Copy, Default)]
struct Work {
    pages: usize,
    page_fails: usize,
    highmem_pages: usize,
    objects: usize,
    cross_frees: usize,
    vmallocs: usize,
    kmaps: usize,
    percpu_allocs: usize,
}

impl Work {
    const ZERO: Work = Work {
        pages: 0,
        page_fails: 0,
        highmem_pages: 0,
        objects: 0,
        cross_frees: 0,
        vmallocs: 0,
        kmaps: 0,
        percpu_allocs: 0,
    };
}

/// The local timer's work (called by `idt` inside `irq_enter`/`irq_exit`):
/// counts the tick and, during the SMP phase, allocates and frees a page
/// and a kmalloc object with `Gfp::ATOMIC`.
pub fn timer_tick() {
    let cpu = smp::cpu();
    let id = cpu.id();
    TICKS[id].fetch_add(1, Ordering::Relaxed);
    if !TIMER_WORK.load(Ordering::Acquire) || TIMER_STOPPED[id].load(Ordering::Relaxed) {
        return;
    }
    let (Some(buddy), Some(slab)) = (crate::physmem::buddy(), crate::heap::slab()) else {
        return;
    };
    debug_assert!(cpu.in_interrupt() && cpu.irqs_disabled());
    let tag = 0x7100_0000 | (id as u32) << 16 | TICKS[id].load(Ordering::Relaxed) as u32 & 0xFFFF;
    let page_ok = match buddy.alloc_pages(Gfp::ATOMIC, 0) {
        Some(page) => {
            let va = buddy
                .mem()
                .page_address(page)
                .expect("Gfp::ATOMIC is low memory");
            let p = va.as_mut_ptr::<u32>();
            // SAFETY: the page is ours until freed below; the direct map
            // maps it.
            let back = unsafe {
                p.write_volatile(tag);
                p.read_volatile()
            };
            assert_eq!(back, tag, "timer page stamp");
            assert_eq!(buddy.free_pages_page(page, 0), Ok(Freed::Released));
            true
        }
        None => false,
    };
    let obj_ok = match slab.kmalloc(64, Gfp::ATOMIC) {
        Ok(o) => {
            let p = o.as_ptr().cast::<u32>();
            // SAFETY: 64 bytes are ours until kfree.
            let back = unsafe {
                p.add(15).write_volatile(tag);
                p.add(15).read_volatile()
            };
            assert_eq!(back, tag, "timer object stamp");
            slab.kfree(o.as_ptr()).expect("kfree of the timer's object");
            true
        }
        Err(_) => false,
    };
    if page_ok && obj_ok {
        TICK_ALLOCS[id].fetch_add(1, Ordering::Relaxed);
    } else {
        TICK_FAILS.fetch_add(1, Ordering::Relaxed);
    }
}

/// Enables interrupts on the calling CPU.
fn sti() {
    // SAFETY: every vector that can arrive has a handler (the IDT is loaded
    // on this CPU), and the caller holds no IRQ-safe lock.
    unsafe { core::arch::asm!("sti", options(nomem, nostack)) };
}

/// Runs `f` with interrupts off.
fn irqs_off<R>(f: impl FnOnce() -> R) -> R {
    let cpu = smp::cpu();
    let _g = cpu.irq_guard();
    f()
}

/// Waits (interrupts on, so IPIs are answered) until `phase`.
fn wait_phase(phase: usize) {
    while PHASE.load(Ordering::Acquire) < phase {
        core::hint::spin_loop();
    }
}

/// Waits (interrupts on) until this CPU's timer has allocated from
/// interrupt context at least once, however fast the work went.
fn wait_for_timer_work(cpu: usize) {
    while TICK_ALLOCS[cpu].load(Ordering::Relaxed) == 0 && TICK_FAILS.load(Ordering::Relaxed) == 0 {
        core::hint::spin_loop();
    }
}

/// Stops this CPU's timer, then empties its per-CPU page lists and slab
/// arrays (process context, interrupts on).
fn stop_and_drain() {
    irqs_off(|| {
        TIMER_STOPPED[smp::cpu().id()].store(true, Ordering::Relaxed);
        smp::apic().stop_timer();
    });
    if let Some(slab) = crate::heap::slab() {
        slab.shrink_all();
    }
    if let Some(buddy) = crate::physmem::buddy() {
        buddy.drain_local();
    }
    let cpu = smp::cpu();
    assert_eq!(
        (cpu.preempt_count(), cpu.irq_count(), cpu.irqs_disabled()),
        (0, 0, false),
        "CPU {}: per-CPU preempt or irq count unbalanced after the phase",
        cpu.id()
    );
}

/// An application processor after [`crate::ap`] brought it up: timer on,
/// interrupts on, then the phases.
pub fn ap_main(cpu: usize) -> ! {
    smp::apic().start_timer_periodic(smp::LOCAL_TIMER_VECTOR, TIMER_COUNT, 16);
    sti();
    wait_phase(1);
    let work = WORK.get().expect("the work is set before the APs start");
    work(cpu);
    wait_for_timer_work(cpu);
    WORKED.fetch_add(1, Ordering::AcqRel);
    wait_phase(2);
    stop_and_drain();
    DRAINED.fetch_add(1, Ordering::AcqRel);
    loop {
        // Idle, still answering cross-CPU calls.
        // SAFETY: `sti; hlt` waits for the next interrupt with the IDT loaded.
        unsafe { core::arch::asm!("sti", "hlt", options(nomem, nostack)) };
    }
}

/// The allocators the work uses.
struct Shared<M: Mode + 'static> {
    buddy: &'static KernelBuddy<'static>,
    slab: &'static KernelSlab,
    vm: &'static KernelVmalloc<M>,
    pkmap: &'static KernelPkmap<M>,
    pcpu: &'static KernelPercpu<M>,
    caches: [Cache<'static>; 3],
    rounds: usize,
    highmem: bool,
    cpus: usize,
}

/// A page block held by a CPU.
#[derive(Clone, Copy)]
struct Held {
    page: &'static Page,
    order: usize,
    tag: u32,
}

impl<M: Mode + 'static> Shared<M> {
    /// Writes (`Some(tag)`) or checks the stamp of page `page` of a block:
    /// its first and last word.
    fn page_stamp(&self, page: &Page, tag: u32, write: bool) -> bool {
        // A HIGHMEM page is reached through a mapping of our own: its
        // `page_address` may be a pkmap entry another CPU's
        // `flush_all_zero_pkmaps` takes away at any moment (Linux's rule:
        // `page_address` of a high page holds only while you kmap it).
        let (va, local) = if page.zone_type() == ZoneType::HighMem {
            let va = self
                .pkmap
                .kmap_local_page(page)
                .unwrap_or_else(|e| panic!("kmap_local_page: {e}"));
            (va, true)
        } else {
            let va = self.buddy.mem().page_address(page);
            (va.expect("low memory is in the direct map"), false)
        };
        let p = va.as_mut_ptr::<u32>();
        let last = PAGE_SIZE / 4 - 1;
        // SAFETY: the page belongs to the block the caller holds; `va` maps
        // it (the direct map, or a kmap_local slot until kunmap_local).
        let ok = unsafe {
            if write {
                p.write_volatile(tag);
                p.add(last).write_volatile(!tag);
                true
            } else {
                p.read_volatile() == tag && p.add(last).read_volatile() == !tag
            }
        };
        if local {
            self.pkmap.kunmap_local(va).expect("kunmap_local");
        }
        ok
    }

    /// Stamps or checks a block's first and last page.
    fn block_stamp(&self, h: &Held, write: bool) -> bool {
        let mem = self.buddy.mem();
        if h.order == 0 {
            return self.page_stamp(h.page, h.tag, write);
        }
        let pfn = mem
            .page_to_pfn(h.page)
            .expect("a page of mem_map")
            .as_usize();
        let last = mem
            .pfn_to_page(kmm_hal::Pfn::new(pfn + (1 << h.order) - 1))
            .expect("the block's last page");
        self.page_stamp(h.page, h.tag, write) && self.page_stamp(last, h.tag ^ 0x5555, write)
    }

    fn free_block(&self, h: Held) {
        assert!(
            self.block_stamp(&h, false),
            "a page block of order {} stamped {:#x} changed while its owner held it: handed out twice?",
            h.order,
            h.tag
        );
        assert_eq!(
            self.buddy.free_pages_page(h.page, h.order),
            Ok(Freed::Released)
        );
    }

    /// The size of objects of "cache" `idx` (3: kmalloc of `size`).
    fn alloc_object(&self, idx: usize, round: usize) -> Option<(NonNull<u8>, usize)> {
        if idx < 3 {
            self.slab
                .kmem_cache_alloc(self.caches[idx], Gfp::KERNEL)
                .ok()
                .map(|p| (p, CACHE_SIZES[idx]))
        } else {
            let size = KMALLOC_SIZES[round % 3];
            self.slab.kmalloc(size, Gfp::KERNEL).ok().map(|p| (p, size))
        }
    }

    /// Stamps an object: word 0 the tag, word 1 the cache index and size,
    /// every other word the tag's complement.
    fn stamp_object(p: NonNull<u8>, idx: usize, size: usize, tag: u32) {
        let w = p.as_ptr().cast::<u32>();
        // SAFETY: the object is ours and at least `size` bytes.
        unsafe {
            w.write_volatile(tag);
            w.add(1).write_volatile((idx as u32) << 16 | size as u32);
            for i in 2..size / 4 {
                w.add(i).write_volatile(!tag);
            }
        }
    }

    /// Checks an object's stamp and frees it; returns whether another CPU
    /// allocated it.
    fn free_object(&self, p: NonNull<u8>, idx: usize, me: usize) -> bool {
        let w = p.as_ptr().cast::<u32>();
        // SAFETY: the object is ours (held or taken from the queue) and was
        // stamped over its size, which word 1 records.
        let (tag, meta) = unsafe { (w.read_volatile(), w.add(1).read_volatile()) };
        let size = (meta & 0xFFFF) as usize;
        assert_eq!(
            (meta >> 16) as usize,
            idx,
            "object {p:p}: stamp {tag:#x} names cache {} not {idx}: handed out twice?",
            meta >> 16
        );
        for i in 2..size / 4 {
            // SAFETY: as above.
            let v = unsafe { w.add(i).read_volatile() };
            assert_eq!(
                v, !tag,
                "object {p:p} of cache {idx} stamped {tag:#x}: word {i} is {v:#x}: handed out twice?"
            );
        }
        if idx < 3 {
            self.slab
                .kmem_cache_free(self.caches[idx], p)
                .expect("kmem_cache_free");
        } else {
            self.slab.kfree(p.as_ptr()).expect("kfree");
        }
        ((tag >> 20) & 0xF) as usize != me
    }

    /// Puts an object in the inbox of CPU `to`; false if it is full.
    fn push(p: NonNull<u8>, to: usize) -> bool {
        let v = p.as_ptr() as usize;
        QUEUE[to].iter().any(|slot| {
            slot.compare_exchange(0, v, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
        })
    }

    /// Takes an object out of CPU `cpu`'s inbox.
    fn pop(cpu: usize) -> Option<(NonNull<u8>, usize)> {
        QUEUE[cpu].iter().find_map(|slot| {
            if slot.load(Ordering::Relaxed) == 0 {
                return None;
            }
            let p = NonNull::new(slot.swap(0, Ordering::AcqRel) as *mut u8)?;
            // SAFETY: a queued object is stamped, word 1 holding its cache
            // index; the swap made it ours.
            let meta = unsafe { p.as_ptr().cast::<u32>().add(1).read_volatile() };
            Some((p, (meta >> 16) as usize))
        })
    }

    /// One CPU's work.
    fn work(&self, me: usize) {
        // Every CPU sends cross-CPU calls at once: each must run exactly
        // once everywhere, and no two senders may wait on each other.
        let calls = smp::calls();
        for _ in 0..CALLS_PER_CPU {
            calls.on_each_cpu(&|| {
                CALL_RUNS[smp::cpu().id()].fetch_add(1, Ordering::Relaxed);
            });
        }
        let mut w = Work::default();
        let mut blocks: [Option<Held>; HELD_BLOCKS] = [None; HELD_BLOCKS];
        let mut objects: [Option<(NonNull<u8>, usize)>; HELD_OBJECTS] = [None; HELD_OBJECTS];
        let zones = [Gfp::KERNEL | Gfp::DMA, Gfp::KERNEL, Gfp::HIGHUSER];
        let mut pcpu_held: [Option<(PercpuPtr<u8>, u32)>; HELD_PERCPU] = [None; HELD_PERCPU];
        for r in 0..self.rounds {
            let tag = 0x8000_0000 | (me as u32) << 20 | (r as u32 & 0xF_FFFF);
            // Pages: every zone and order in turn.
            let gfp = zones[r % 3];
            let order = (r / 3) % MAX_ORDER;
            let slot = r % HELD_BLOCKS;
            if let Some(h) = blocks[slot].take() {
                self.free_block(h);
            }
            match self.buddy.alloc_pages(gfp, order) {
                Some(page) => {
                    let h = Held { page, order, tag };
                    self.block_stamp(&h, true);
                    w.pages += 1 << order;
                    if page.zone_type() == ZoneType::HighMem {
                        w.highmem_pages += 1 << order;
                        w.kmaps += self.kmap_block(&h);
                    }
                    blocks[slot] = Some(h);
                }
                None => w.page_fails += 1,
            }
            // Slab objects: held a while, half of them freed by another CPU.
            for k in 0..4 {
                let idx = (r + k) % 4;
                let Some((p, size)) = self.alloc_object(idx, r + k) else {
                    continue;
                };
                Self::stamp_object(p, idx, size, tag);
                w.objects += 1;
                if k % 2 == 0 && Self::push(p, (me + 1) % self.cpus) {
                    continue;
                }
                let slot = (r * 2 + k) % HELD_OBJECTS;
                if let Some((old, oi)) = objects[slot].replace((p, idx)) {
                    self.free_object(old, oi, me);
                }
            }
            for _ in 0..2 {
                if let Some((p, idx)) = Self::pop(me)
                    && self.free_object(p, idx, me)
                {
                    w.cross_frees += 1;
                }
            }
            // vmalloc: a small area every round.
            {
                self.vmalloc_round(tag);
                w.vmallocs += 1;
            }
            // kmap and kmap_local of a HIGHMEM page every round.
            if self.highmem {
                self.kmap_round(tag);
                w.kmaps += 2;
            }
            // Per-CPU variables: this CPU's round counter (one `incl %fs:`),
            // and a dynamic per-CPU variable every fourth round.
            percpu::this_cpu()
                .inc(&percpu::SMP_ROUNDS)
                .expect("SMP_ROUNDS is in the template");
            if r % 2 == 0 {
                self.percpu_round(me, tag, &mut pcpu_held);
                w.percpu_allocs += 1;
            }
        }
        for h in blocks.into_iter().flatten() {
            self.free_block(h);
        }
        for (p, idx) in objects.into_iter().flatten() {
            self.free_object(p, idx, me);
        }
        for (p, tag) in pcpu_held.into_iter().flatten() {
            self.percpu_check(p, me, tag);
            self.pcpu.free_percpu(p).expect("free_percpu");
        }
        RESULTS.lock()[me] = w;
    }

    /// Allocates a dynamic per-CPU block of 4 bytes or 256 bytes to a page (held a
    /// while, so the CPUs together fill the first chunk and chunks in the
    /// vmalloc area are made), adds `tag` to this CPU's first word through
    /// `%fs`, checks every copy (this CPU's holds `tag`, the others' are
    /// zero: nobody else was handed it), and frees the block it replaces
    /// in `held` after checking it the same way.
    fn percpu_round(&self, me: usize, tag: u32, held: &mut [Option<(PercpuPtr<u8>, u32)>]) {
        let size = if tag.is_multiple_of(3) {
            4
        } else {
            256 << (tag as usize % 5)
        };
        let slot = tag as usize % held.len();
        if let Some((old, old_tag)) = held[slot].take() {
            self.percpu_check(old, me, old_tag);
            self.pcpu.free_percpu(old).expect("free_percpu");
        }
        let Ok(p) = self.pcpu.__alloc_percpu(size, 4) else {
            return;
        };
        let this = percpu::this_cpu();
        // SAFETY: `p` is live until freed above on a later round, at least 4
        // bytes per CPU, 4-aligned.
        unsafe { this.add_ptr(p.cast::<AtomicU32>(), tag) };
        self.percpu_check(p, me, tag);
        held[slot] = Some((p, tag));
    }

    /// Every CPU's first word of live per-CPU block `p`: `tag` on `me`, 0 on
    /// the others.
    fn percpu_check(&self, p: PercpuPtr<u8>, me: usize, tag: u32) {
        let areas = percpu::areas();
        for cpu in 0..self.cpus {
            let q = areas
                .per_cpu_ptr(p.cast::<AtomicU32>(), cpu)
                .expect("a possible CPU");
            // SAFETY: live, zeroed when handed out, and an atomic: any CPU
            // may read another's copy.
            let v = unsafe { q.as_ref() }.load(Ordering::Relaxed);
            let want = if cpu == me { tag } else { 0 };
            assert_eq!(
                v, want,
                "per-CPU block {p:?}, CPU {cpu}'s copy: handed out twice?"
            );
        }
    }

    fn vmalloc_round(&self, tag: u32) {
        let pages = 1 + (tag as usize % 4);
        let Ok(p) = self.vm.vmalloc(pages * PAGE_SIZE) else {
            return;
        };
        let w = p.as_ptr().cast::<u32>();
        for i in 0..pages {
            // SAFETY: the area maps `pages` pages from `p`, ours until vfree.
            unsafe { w.add(i * PAGE_SIZE / 4).write_volatile(tag ^ i as u32) };
        }
        for i in 0..pages {
            // SAFETY: as above.
            let v = unsafe { w.add(i * PAGE_SIZE / 4).read_volatile() };
            assert_eq!(
                v,
                tag ^ i as u32,
                "vmalloc page {i} at {p:p}: handed out twice?"
            );
        }
        self.vm.vfree(p.as_ptr()).expect("vfree");
    }

    /// Writes a word into up to [`KMAP_BLOCK_PAGES`] pages of a held
    /// HIGHMEM block through `kmap`, then maps each again and reads it back:
    /// distinct pages use up the pkmap entries, so `flush_all_zero_pkmaps`
    /// (a shootdown) runs while the other CPUs use their kmaps. Returns the
    /// kmaps made.
    fn kmap_block(&self, h: &Held) -> usize {
        let mem = self.buddy.mem();
        let pfn = mem
            .page_to_pfn(h.page)
            .expect("a page of mem_map")
            .as_usize();
        let n = (1usize << h.order).min(KMAP_BLOCK_PAGES);
        for pass in 0..2 {
            for i in 0..n {
                let page = mem
                    .pfn_to_page(kmm_hal::Pfn::new(pfn + i))
                    .expect("a page of the block");
                let va = self
                    .pkmap
                    .kmap(page)
                    .unwrap_or_else(|e| panic!("kmap: {e}"));
                let p = va.as_mut_ptr::<u32>().wrapping_add(3);
                let want = h.tag ^ (i as u32) << 8;
                // SAFETY: `va` maps the page until kunmap; the block is ours.
                unsafe {
                    if pass == 0 {
                        p.write_volatile(want);
                    } else {
                        let v = p.read_volatile();
                        assert_eq!(v, want, "HIGHMEM page {i} of a block through kmap");
                    }
                }
                self.pkmap.kunmap(page).expect("kunmap");
            }
        }
        2 * n
    }

    fn kmap_round(&self, tag: u32) {
        let Some(page) = self.buddy.alloc_pages(Gfp::HIGHUSER, 0) else {
            return;
        };
        let va = self
            .pkmap
            .kmap(page)
            .unwrap_or_else(|e| panic!("kmap: {e}"));
        // SAFETY: `va` maps the page until kunmap; the page is ours.
        unsafe { va.as_mut_ptr::<u32>().add(7).write_volatile(tag) };
        self.pkmap.kunmap(page).expect("kunmap");
        let l: VirtAddr = self
            .pkmap
            .kmap_local_page(page)
            .unwrap_or_else(|e| panic!("kmap_local_page: {e}"));
        // SAFETY: `l` maps the page until kunmap_local.
        let v = unsafe { l.as_mut_ptr::<u32>().add(7).read_volatile() };
        self.pkmap.kunmap_local(l).expect("kunmap_local");
        assert_eq!(v, tag, "a HIGHMEM page through kmap then kmap_local");
        assert_eq!(self.buddy.free_pages_page(page, 0), Ok(Freed::Released));
    }
}

/// Free blocks per zone and order.
type Snapshot = [[usize; MAX_ORDER]; 8];

fn snapshot(buddy: &KernelBuddy<'_>) -> Snapshot {
    let mut s = [[0; MAX_ORDER]; 8];
    for (z, row) in buddy.zones().iter().zip(s.iter_mut()) {
        for (o, n) in row.iter_mut().enumerate() {
            *n = z.nr_free(o);
        }
    }
    s
}

/// Every cache's active objects, in `/proc/slabinfo` order, from its text.
#[derive(Clone, Copy, PartialEq, Eq)]
struct ActiveObjects {
    /// Active objects of cache `i`.
    active: [usize; 64],
    /// Caches seen.
    caches: usize,
    /// The current line.
    line: [u8; 200],
    len: usize,
}

impl ActiveObjects {
    fn of(slab: &KernelSlab) -> ActiveObjects {
        let mut a = ActiveObjects {
            active: [0; 64],
            caches: 0,
            line: [0; 200],
            len: 0,
        };
        slab.slabinfo(&mut a).expect("counting never fails");
        a.line = [0; 200];
        a
    }

    fn end_line(&mut self) {
        let line = core::str::from_utf8(&self.line[..self.len]).unwrap_or("");
        self.len = 0;
        if line.starts_with("slabinfo") || line.starts_with('#') {
            return;
        }
        let active = line
            .split_ascii_whitespace()
            .nth(1)
            .and_then(|n| n.parse().ok());
        if let (Some(n), Some(slot)) = (active, self.active.get_mut(self.caches)) {
            *slot = n;
            self.caches += 1;
        }
    }
}

impl fmt::Write for ActiveObjects {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for b in s.bytes() {
            if b == b'\n' {
                self.end_line();
            } else if self.len < self.line.len() {
                self.line[self.len] = b;
                self.len += 1;
            }
        }
        Ok(())
    }
}

/// Counts lines written.
struct LineCount(usize);

impl fmt::Write for LineCount {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        self.0 += s.bytes().filter(|&b| b == b'\n').count();
        Ok(())
    }
}

/// The SMP phase (see the module docs); `rounds` of work per CPU.
pub fn run<M: Mode + 'static>(
    slab: &'static KernelSlab,
    vm: &'static KernelVmalloc<M>,
    pkmap: &'static KernelPkmap<M>,
    pcpu: &'static KernelPercpu<M>,
    rounds: usize,
) where
    KernelVmalloc<M>: Sync,
    KernelPkmap<M>: Sync,
{
    let buddy = slab.buddy();
    let cpu = smp::cpu();
    let calls = smp::calls();
    smp::apic().enable(smp::SPURIOUS_APIC_VECTOR);
    // SAFETY: once, on the boot CPU; its APIC is enabled and the IDT routes
    // the call vector.
    unsafe { calls.cpu_online() };
    let caches = CACHE_SIZES.map(|size| {
        slab.kmem_cache_create("smp-stress", size, 0, SlabFlags::empty(), None)
            .unwrap_or_else(|e| panic!("kmem_cache_create({size}): {e}"))
    });
    let highmem = buddy
        .zones()
        .iter()
        .any(|z| z.kind() == ZoneType::HighMem && z.managed() > 0);
    let shared: &'static Shared<M> = Box::leak(Box::new(Shared {
        buddy,
        slab,
        vm,
        pkmap,
        pcpu,
        caches,
        rounds,
        highmem,
        cpus: cpu.count(),
    }));
    let work: &'static (dyn Fn(usize) + Sync) = Box::leak(Box::new(move |me| shared.work(me)));
    WORK.call_once(|| work);
    vm.purge();
    slab.shrink_all();
    buddy.drain_local();
    let before = snapshot(buddy);
    let free_before = buddy.free_pages_total();
    let slab_before = slab.slab_pages();
    let objects_before = ActiveObjects::of(slab);
    let shoot_before = smp::tlb().stats();
    let vm_before = vm.stats();
    let pcpu_before = pcpu.stats();

    let started = ap::start_all();
    while calls.online_count() < cpu.count() {
        core::hint::spin_loop();
    }
    kprintln!(
        "kmm: smp: {} CPUs online ({} started with INIT-SIPI-SIPI); timer {} Hz per CPU; {rounds} rounds of work per CPU",
        calls.online_count(),
        started,
        1_000_000_000 / 16 / TIMER_COUNT
    );
    TIMER_WORK.store(true, Ordering::Release);
    smp::apic().start_timer_periodic(smp::LOCAL_TIMER_VECTOR, TIMER_COUNT, 16);
    PHASE.store(1, Ordering::Release);
    shared.work(0);
    wait_for_timer_work(0);
    while WORKED.load(Ordering::Acquire) < started {
        core::hint::spin_loop();
    }
    for (id, runs) in CALL_RUNS.iter().enumerate().take(cpu.count()) {
        assert_eq!(
            runs.load(Ordering::Relaxed),
            CALLS_PER_CPU * cpu.count(),
            "CPU {id} ran the concurrent cross-CPU calls a wrong number of times"
        );
    }
    kprintln!(
        "kmm: smp: concurrent cross-CPU calls: {} CPUs sent {CALLS_PER_CPU} on_each_cpu calls each at once; every CPU ran each exactly once",
        cpu.count()
    );
    let mut leftovers = 0;
    for inbox in 0..cpu.count() {
        while let Some((p, idx)) = Shared::<M>::pop(inbox) {
            shared.free_object(p, idx, 0);
            leftovers += 1;
        }
    }
    PHASE.store(2, Ordering::Release);
    stop_and_drain();
    while DRAINED.load(Ordering::Acquire) < started {
        core::hint::spin_loop();
    }
    TIMER_WORK.store(false, Ordering::Release);
    // The spare per-CPU chunk goes back too (its vmalloc area is purged
    // next).
    pcpu.shrink().expect("process context");
    vm.purge();
    slab.shrink_all();
    buddy.drain_local();

    let results = *RESULTS.lock();
    for (id, w) in results.iter().enumerate().take(cpu.count()) {
        kprintln!(
            "kmm: smp: cpu {id}: pages={} (highmem {}, {} failed allocations) objects={} cross_frees={} vmallocs={} kmaps={} timer_ticks={} timer_atomic_allocs={}",
            w.pages,
            w.highmem_pages,
            w.page_fails,
            w.objects,
            w.cross_frees,
            w.vmallocs,
            w.kmaps,
            TICKS[id].load(Ordering::Relaxed),
            TICK_ALLOCS[id].load(Ordering::Relaxed)
        );
    }
    let areas = percpu::areas();
    for id in 0..cpu.count() {
        let rounds_done = areas
            .per_cpu(&percpu::SMP_ROUNDS, id)
            .expect("a possible CPU")
            .load(Ordering::Relaxed);
        assert_eq!(
            rounds_done as usize, rounds,
            "CPU {id}'s per-CPU round counter: another CPU's increments landed in it?"
        );
    }
    let ps = pcpu.stats();
    pcpu.check().unwrap_or_else(|e| panic!("percpu check: {e}"));
    let allocs: usize = results.iter().map(|w| w.percpu_allocs).sum();
    assert_eq!(
        (ps.chunks, ps.allocations),
        (pcpu_before.chunks, pcpu_before.allocations),
        "per-CPU chunks or allocations left after the SMP phase"
    );
    kprintln!(
        "kmm: smp: percpu: every CPU's SMP_ROUNDS = {rounds} (this_cpu_inc through %fs), {allocs} dynamic per-CPU blocks (4 B, or 256 B to a page; up to {HELD_PERCPU} held per CPU) checked on every CPU and freed, vmalloc chunks made during the phase: {}, all given back",
        ps.created - pcpu_before.created
    );
    let total_ticks: usize = TICK_ALLOCS.iter().map(|t| t.load(Ordering::Relaxed)).sum();
    let cross: usize = results.iter().map(|w| w.cross_frees).sum();
    let s = smp::tlb().stats();
    let c = calls.stats();
    kprintln!(
        "kmm: smp: shootdowns: range={} full={} (during the phase: range={} full={}); cross-CPU calls={} ipis={} handled={} spurious={}; spurious APIC interrupts={}",
        s.range_flushes,
        s.full_flushes,
        s.range_flushes - shoot_before.range_flushes,
        s.full_flushes - shoot_before.full_flushes,
        c.calls,
        c.ipis,
        c.handled,
        c.spurious,
        idt::spurious()
    );
    kprintln!(
        "kmm: smp: interrupt-context allocations: {total_ticks} timer ticks allocated a page and a kmalloc object with Gfp::ATOMIC ({} failed); {cross} cross-CPU frees, {leftovers} left in the inboxes freed by cpu 0; {} drains of every CPU's lists through IPIs (waiting allocations short of memory)",
        TICK_FAILS.load(Ordering::Relaxed),
        buddy.ipi_drains()
    );
    for (i, &cache) in caches.iter().enumerate() {
        match slab.validate_cache(cache) {
            Ok(_) => {}
            Err(r) => panic!("validate_cache(smp-stress {}): {r}", CACHE_SIZES[i]),
        }
    }
    let vs = vm.stats();
    kprintln!(
        "kmm: smp: vmalloc during the phase: {} lazy purges, {} kernel TLB flushes, {} areas freed",
        vs.purges - vm_before.purges,
        vs.flushes - vm_before.flushes,
        vs.frees - vm_before.frees
    );
    let mut lines = LineCount(0);
    vm.vmallocinfo(&mut lines).expect("counting never fails");
    assert_eq!(
        (vs.areas, vs.pages, vs.lazy_pages, lines.0),
        (0, 0, 0, 0),
        "vmalloc areas, pages, lazy pages or vmallocinfo lines left after the SMP phase"
    );
    let after = snapshot(buddy);
    let free_after = buddy.free_pages_total();
    let slab_after = slab.slab_pages();
    // Every page is free again, or in a slab: a long-lived kmalloc object
    // that was replaced during the phase (a node of vmalloc's free-area
    // tree, say) may now sit in another slab than before; the stress caches
    // are empty and shrunk.
    let objects_after = ActiveObjects::of(slab);
    if free_after + slab_after != free_before + slab_before || objects_after != objects_before {
        crate::physmem::print_buddyinfo(buddy);
        let pcp: usize = buddy.zones().iter().map(|z| z.pcp_pages()).sum();
        let mut w = LineWriter::new("kmm: smp: slabinfo: ");
        slab.slabinfo(&mut w).expect("serial output never fails");
        drop(w);
        panic!(
            "pages or objects missing after the SMP phase: {free_before} free before, {free_after} after; slab pages {slab_before} before, {slab_after} after; {pcp} in per-CPU lists; active objects per cache before {:?}, after {:?}",
            &objects_before.active[..objects_before.caches],
            &objects_after.active[..objects_after.caches]
        );
    }
    let mut w = LineWriter::new("kmm: smp: buddyinfo: ");
    buddy.buddyinfo(&mut w).expect("serial output never fails");
    drop(w);
    assert_eq!(idt::stray(), 0, "stray interrupts arrived");
    let how = if after == before {
        "buddyinfo as before the phase"
    } else {
        "free or in slabs as before the phase; a long-lived object moved slab"
    };
    kprintln!(
        "kmm: smp: every page back ({free_after} free + {slab_after} in slabs, {how}), every cache's active objects as before ({} caches), 3 stress caches validated, vmallocinfo empty",
        objects_after.caches
    );
    kprintln!("kmm: smp ok ({} CPUs)", cpu.count());
}
