//! The kernel's per-CPU memory (kmm-percpu), set up as Linux's i386 does:
//!
//! - the per-CPU variables live in the `.data..percpu` template the linker
//!   script brackets with `__per_cpu_start`/`__per_cpu_end`; among them the
//!   three words [`kmm_i386::I386SmpCpu`] reads through `%fs` (the CPU id,
//!   the preemption count, the interrupt-nesting count: Linux's
//!   `cpu_number` and `__preempt_count`), named by their template addresses
//!   ([`words`]);
//! - until the areas exist the boot CPU runs on a copy of the template
//!   ([`boot_area_base`]: its `%fs` base), as Linux's boot CPU runs on the
//!   static per-CPU section before `setup_per_cpu_areas`;
//! - [`setup`] copies the template into one area per possible CPU (pages
//!   from the buddy allocator), writes each CPU's id into its copy, points
//!   every CPU's `%fs` segment at its area (`__per_cpu_offset[n]`) and
//!   reloads the boot CPU's; the application processors load theirs when
//!   they start;
//! - [`init_dynamic`] builds `alloc_percpu` over the areas, with further
//!   chunks in the vmalloc area.

use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicU32, Ordering};

use kmm_hal::Cpu;
use kmm_i386::{Mode, PerCpuWords};
use kmm_percpu::{
    BuddyAreas, PCPU_UNIT_SIZE, PerCpuAreas, Percpu, SegmentOps, Template, ThisCpu, VmallocBacking,
    define_per_cpu, setup_per_cpu_areas,
};

use crate::buddy_check::KernelBuddy;
use crate::serial::kprintln;
use crate::smp::{self, KernelCpu};
use crate::tables::{KTables, LowmemFrames};
use crate::vmalloc_check::KernelVmalloc;

define_per_cpu! {
    /// The CPU's id (Linux's `cpu_number`), read by `I386SmpCpu::id`.
    static CPU_NUMBER: shared AtomicU32 = AtomicU32::new(0);
    /// The preemption count (Linux's `__preempt_count`).
    static PREEMPT_COUNT: shared AtomicU32 = AtomicU32::new(0);
    /// The interrupt-nesting count (the hard-irq part of Linux's count).
    static IRQ_COUNT: shared AtomicU32 = AtomicU32::new(0);
    /// Rounds of the SMP phase's work this CPU did (`this_cpu_inc`).
    pub static SMP_ROUNDS: shared AtomicU32 = AtomicU32::new(0);
}

/// The kernel's per-CPU areas.
pub type KernelAreas = PerCpuAreas<'static, KernelCpu, BuddyAreas<'static, KernelCpu>>;
/// The kernel's dynamic per-CPU allocator.
pub type KernelPercpu<M> = Percpu<
    'static,
    KernelCpu,
    BuddyAreas<'static, KernelCpu>,
    VmallocBacking<
        'static,
        'static,
        kmm_i386::Paging<M>,
        LowmemFrames,
        &'static smp::KernelTlb,
        KernelCpu,
    >,
>;

unsafe extern "C" {
    static __per_cpu_start: u8;
    static __per_cpu_end: u8;
}

/// The boot CPU's per-CPU area before [`setup`]: a copy of the template.
#[repr(C, align(4096))]
struct BootArea(UnsafeCell<[u8; PCPU_UNIT_SIZE]>);

// SAFETY: only the boot CPU uses it, through `%fs`, before any other CPU
// runs (and not after [`setup`]).
unsafe impl Sync for BootArea {}

static BOOT_AREA: BootArea = BootArea(UnsafeCell::new([0; PCPU_UNIT_SIZE]));

/// The areas, after [`setup`] (built before the heap exists: a `static`).
static AREAS: spin::Once<KernelAreas> = spin::Once::new();

/// The template's bounds.
fn template() -> (usize, usize) {
    (
        (&raw const __per_cpu_start).addr(),
        (&raw const __per_cpu_end).addr(),
    )
}

/// Where [`KernelCpu`]'s words lie: the template addresses of their per-CPU
/// variables, which `%fs` turns into the running CPU's copy.
pub fn words() -> PerCpuWords {
    PerCpuWords {
        cpu_number: CPU_NUMBER.template_shared_addr(),
        preempt_count: PREEMPT_COUNT.template_shared_addr(),
        irq_count: IRQ_COUNT.template_shared_addr(),
    }
}

/// Copies the template into the boot area and returns the `%fs` base that
/// makes it the boot CPU's per-CPU area (its address less the template's).
/// Called once, by `smp::init_boot_cpu`, before anything reads `%fs`.
pub fn boot_area_base() -> usize {
    let (start, end) = template();
    assert!(
        end - start <= PCPU_UNIT_SIZE,
        "the per-CPU template is larger than a unit"
    );
    let dst = BOOT_AREA.0.get().cast::<u8>();
    // SAFETY: the template is `end - start` readable bytes of the image; the
    // boot area is ours (nothing reads it before `%fs` points at it, and
    // only the boot CPU runs).
    unsafe {
        core::ptr::copy_nonoverlapping(
            core::ptr::with_exposed_provenance::<u8>(start),
            dst,
            end - start,
        )
    };
    dst.addr().wrapping_sub(start)
}

/// Sets up one per-CPU area per possible CPU from `buddy`'s pages
/// (Linux's `setup_per_cpu_areas`), writes each CPU's id into its copy and
/// moves every CPU's `%fs` segment onto its area, the boot CPU's at once.
/// Called on the boot CPU before the others start, with no guard alive.
pub fn setup(buddy: &'static KernelBuddy<'static>) -> &'static KernelAreas {
    let cpu: &'static KernelCpu = smp::cpu_ref();
    assert_eq!(
        (cpu.preempt_count(), cpu.irq_count()),
        (0, 0),
        "per-CPU set-up with a guard alive"
    );
    let areas = setup_per_cpu_areas(
        cpu,
        &Template::linker_section(),
        BuddyAreas::new(buddy, &[]),
    )
    .unwrap_or_else(|e| panic!("setup_per_cpu_areas: {e}"));
    let areas: &'static KernelAreas = AREAS.call_once(|| areas);
    for n in 0..areas.possible_cpus() {
        let id = u32::try_from(n).expect("CPU ids fit in 32 bits");
        for (var, v) in [(&CPU_NUMBER, id), (&PREEMPT_COUNT, 0), (&IRQ_COUNT, 0)] {
            areas
                .per_cpu(var, n)
                .expect("every possible CPU has an area")
                .store(v, Ordering::Relaxed);
        }
    }
    smp::set_percpu_bases(areas.offsets());
    kprintln!(
        "kmm: percpu: {} areas of {} KiB ({} bytes of static variables), %fs base of cpu 0 {:#x}; boot CPU moved onto its area",
        areas.possible_cpus(),
        areas.unit_size() >> 10,
        areas.static_size(),
        areas.offsets()[0]
    );
    areas
}

/// The areas (after [`setup`]).
pub fn areas() -> &'static KernelAreas {
    AREAS.get().expect("percpu::setup ran")
}

/// This CPU's variables through `%fs`: one instruction per operation.
pub fn this_cpu()
-> ThisCpu<'static, 'static, SegmentOps<'static>, KernelCpu, BuddyAreas<'static, KernelCpu>> {
    let areas = areas();
    // SAFETY: every CPU's `%fs` base is its offset from `areas.offsets()`
    // (`smp::set_percpu_bases` for the boot CPU and the GDT entries every AP
    // loads before it runs kernel code), never changed afterwards, and the
    // segments span the whole address space.
    let ops = unsafe { SegmentOps::new(areas.offsets()) };
    // SAFETY: as above: `ops` is these areas' `%fs` operations.
    unsafe { areas.this_cpu_with(ops) }
}

/// The dynamic per-CPU allocator over the areas: further chunks in `vm`'s
/// range, mapped in `tables`, pages from `buddy`.
pub fn init_dynamic<M: Mode + Send + 'static>(
    vm: &'static KernelVmalloc<M>,
    tables: &'static KTables<M>,
    buddy: &'static KernelBuddy<'static>,
) -> &'static KernelPercpu<M> {
    // SAFETY: `tables` are the kernel page tables `vm` maps its areas in,
    // the ones every CPU uses.
    let backing = unsafe { VmallocBacking::new(vm, tables, buddy, &[]) };
    let pcpu = Percpu::new(areas(), backing)
        .unwrap_or_else(|e| panic!("the dynamic per-CPU allocator: {e}"));
    alloc::boxed::Box::leak(alloc::boxed::Box::new(pcpu))
}
