//! The kernel's CPUs: how many there are (the ACPI MADT, or the MP table),
//! the GDT with one
//! per-CPU `%fs` segment per CPU, the SMP [`Cpu`](kmm_hal::Cpu) every
//! allocator is built with ([`I386SmpCpu`]), the cross-CPU calls over the
//! local APIC ([`ApicCrossCall`]) and the kernel-wide TLB shootdown
//! ([`SmpTlb`]); the application processors are started by [`crate::ap`].
//!
//! CPU 0 is the boot CPU; the others are numbered in table order. Each
//! CPU's `%fs` base is its per-CPU offset (`__per_cpu_offset[n]`, from
//! kmm-percpu: [`crate::percpu`]), where its id, preemption count and
//! interrupt-nesting count live as per-CPU variables; until the areas
//! exist the boot CPU's base is a copy of the template.

use core::cell::UnsafeCell;
use core::ptr::NonNull;

use kmm_hal::{Cpu, PhysAddr};
use kmm_i386::percpu_segment::{self, TablePointer};
use kmm_i386::{
    APIC_DEFAULT_PHYS_BASE, ApicCrossCall, I386Layout, I386SmpCpu, LocalApic, Paging, SmpTlb,
};

use crate::frames::BootFrames;
use crate::serial::kprintln;

/// The most CPUs the kernel starts (the layout's `kmap_atomic` slots are
/// reserved for this many).
pub const MAX_CPUS: usize = kmm_i386::DEFAULT_NR_CPUS;

/// The IDT vector of the cross-CPU calls (Linux's `CALL_FUNCTION_VECTOR`).
pub const CALL_FUNCTION_VECTOR: u8 = 0xFB;
/// The IDT vector of the local APIC timer (Linux's `LOCAL_TIMER_VECTOR`).
pub const LOCAL_TIMER_VECTOR: u8 = 0xEF;
/// The spurious-interrupt vector (Linux's `SPURIOUS_APIC_VECTOR`).
pub const SPURIOUS_APIC_VECTOR: u8 = 0xFF;

/// The kernel's CPUs.
pub type KernelCpu = I386SmpCpu;
/// The kernel's cross-CPU calls.
pub type KernelCalls = ApicCrossCall<KernelCpu>;
/// The kernel-wide TLB flush: a shootdown through [`KernelCalls`].
pub type KernelTlb = SmpTlb<&'static KernelCalls>;

/// The CPUs the firmware's tables list.
#[derive(Debug, Clone, Copy)]
pub struct CpuList {
    /// APIC id of CPU `i` (CPU 0 is the boot CPU).
    pub apic_ids: [u8; MAX_CPUS],
    /// How many CPUs (at least 1).
    pub count: usize,
    /// CPUs listed beyond [`MAX_CPUS`] (not started).
    pub dropped: usize,
    /// Where the CPU list came from.
    pub source: &'static str,
}

/// GDT entries: null, kernel code, kernel data, then one `%fs` segment per
/// CPU.
const GDT_ENTRIES: usize = 3 + MAX_CPUS;
/// The GDT index of CPU 0's `%fs` segment.
const PERCPU_GDT_BASE: u16 = 3;

/// The kernel's GDT; filled by the boot CPU before it loads it; the per-CPU
/// segments' bases are set again by the boot CPU when the per-CPU areas
/// exist ([`set_percpu_bases`]), before any other CPU starts; never
/// changed after.
#[repr(C, align(8))]
struct Gdt(UnsafeCell<[u64; GDT_ENTRIES]>);

// SAFETY: written by the boot CPU in `init_boot_cpu` and `set_percpu_bases`,
// before any other CPU runs; read-only afterwards (by the CPUs' segment
// loads).
unsafe impl Sync for Gdt {}

static GDT: Gdt = Gdt(UnsafeCell::new([0; GDT_ENTRIES]));

/// The CPUs, built by [`init_boot_cpu`].
static CPU: spin::Once<KernelCpu> = spin::Once::new();
/// The CPU list, kept for the AP start-up.
static CPUS: spin::Once<CpuList> = spin::Once::new();
/// The cross-CPU calls and the shootdown, built by [`init_apic`].
static CALLS: spin::Once<KernelCalls> = spin::Once::new();
static TLB: spin::Once<KernelTlb> = spin::Once::new();

/// Reads a `T` at physical address `pa` (paging off, or identity mapped).
///
/// # Safety
/// `pa..pa + size_of::<T>()` is readable memory, identity mapped.
unsafe fn phys<T: Copy>(pa: usize) -> T {
    // SAFETY: the caller's contract; the BIOS areas are plain memory.
    unsafe { core::ptr::with_exposed_provenance::<T>(pa).read_unaligned() }
}

/// The 8-bit sum of `len` bytes at `pa`.
///
/// # Safety
/// As for [`phys`].
unsafe fn checksum(pa: usize, len: usize) -> u8 {
    // SAFETY: the caller's contract covers every byte.
    (0..len).fold(0u8, |s, i| s.wrapping_add(unsafe { phys::<u8>(pa + i) }))
}

/// Looks for the MP floating pointer (`_MP_`, 16-byte aligned, checksummed)
/// in `[start, start + len)`.
///
/// # Safety
/// The range is readable, identity mapped.
unsafe fn scan_mp(start: usize, len: usize) -> Option<usize> {
    (start..start + len).step_by(16).find(|&a| {
        // SAFETY: inside the caller's range (16 bytes per candidate).
        unsafe { phys::<[u8; 4]>(a) == *b"_MP_" && checksum(a, 16) == 0 }
    })
}

/// Finds the CPUs: the ACPI MADT first (QEMU builds it itself, with every
/// CPU), then the MP table; without either, one CPU.
///
/// Must run with paging off: the tables are read at their physical
/// addresses.
pub fn find_cpus(boot_apic_id: u8) -> CpuList {
    let mut ids = [0u8; 64];
    // SAFETY: paging is off: physical memory is read directly; the tables
    // are checked (signatures, checksums) before their entries are read.
    let (n, source) = match unsafe { madt_cpus(&mut ids) } {
        Some(n) if n > 0 => (n, "ACPI MADT"),
        _ => {
            // SAFETY: as above.
            match unsafe { mp_cpus(&mut ids) } {
                Some(n) if n > 0 => (n, "MP table"),
                _ => (0, "no ACPI MADT or MP table: one CPU"),
            }
        }
    };
    let mut list = CpuList {
        apic_ids: [0; MAX_CPUS],
        count: 1,
        dropped: 0,
        source,
    };
    list.apic_ids[0] = boot_apic_id;
    for &id in ids[..n].iter().filter(|&&id| id != boot_apic_id) {
        if list.count < MAX_CPUS {
            list.apic_ids[list.count] = id;
            list.count += 1;
        } else {
            list.dropped += 1;
        }
    }
    list
}

/// Looks for the ACPI RSDP (`RSD PTR `, 16-byte aligned, checksummed over
/// its first 20 bytes) in `[start, start + len)`.
///
/// # Safety
/// The range is readable physical memory.
unsafe fn scan_rsdp(start: usize, len: usize) -> Option<usize> {
    (start..start + len).step_by(16).find(|&a| {
        // SAFETY: inside the caller's range (20 bytes per candidate).
        unsafe { phys::<[u8; 8]>(a) == *b"RSD PTR " && checksum(a, 20) == 0 }
    })
}

/// The enabled local APICs of the ACPI MADT, written to `ids`; `None`
/// without an RSDP, RSDT or MADT.
///
/// # Safety
/// Paging is off (physical memory is read directly).
unsafe fn madt_cpus(ids: &mut [u8; 64]) -> Option<usize> {
    // SAFETY: the caller's contract; every table is checksummed over its
    // length before its entries are read.
    unsafe {
        let ebda = usize::from(phys::<u16>(0x40E)) << 4;
        let rsdp = (ebda != 0)
            .then(|| scan_rsdp(ebda, 1024))
            .flatten()
            .or_else(|| scan_rsdp(0xE_0000, 0x2_0000))?;
        let rsdt = phys::<u32>(rsdp + 16) as usize;
        if phys::<[u8; 4]>(rsdt) != *b"RSDT" {
            return None;
        }
        let len = phys::<u32>(rsdt + 4) as usize;
        if checksum(rsdt, len) != 0 {
            return None;
        }
        let madt = (rsdt + 36..rsdt + len)
            .step_by(4)
            .map(|p| phys::<u32>(p) as usize)
            .find(|&t| phys::<[u8; 4]>(t) == *b"APIC")?;
        let len = phys::<u32>(madt + 4) as usize;
        if checksum(madt, len) != 0 {
            return None;
        }
        let mut n = 0;
        let mut p = madt + 44;
        while p + 2 <= madt + len {
            let (kind, elen) = (phys::<u8>(p), usize::from(phys::<u8>(p + 1)));
            if elen < 2 {
                break;
            }
            // Type 0: processor local APIC (ACPI processor id, APIC id, flags
            // with bit 0 = enabled).
            if kind == 0 && phys::<u32>(p + 4) & 1 != 0 && n < ids.len() {
                ids[n] = phys::<u8>(p + 3);
                n += 1;
            }
            p += elen;
        }
        Some(n)
    }
}

/// The enabled processors of the MP configuration table (Intel
/// MultiProcessor Specification 1.4), found through the MP floating
/// pointer in the EBDA's first KiB, the last KiB of base memory or the BIOS
/// ROM, written to `ids`; `None` without a table.
///
/// # Safety
/// Paging is off (physical memory is read directly).
unsafe fn mp_cpus(ids: &mut [u8; 64]) -> Option<usize> {
    // SAFETY: the BIOS data area, EBDA and ROM lie in the first MiB, which is
    // readable and identity mapped while paging is off.
    let fp = unsafe {
        let ebda = usize::from(phys::<u16>(0x40E)) << 4;
        let base_kib = usize::from(phys::<u16>(0x413));
        (ebda != 0)
            .then(|| scan_mp(ebda, 1024))
            .flatten()
            .or_else(|| scan_mp(base_kib.saturating_sub(1) * 1024, 1024))
            .or_else(|| scan_mp(0xF_0000, 0x1_0000))
    };
    let fp = fp?;
    // SAFETY: the floating pointer was found (16 bytes, checksummed); the
    // configuration table it names is checksummed over its length before
    // its entries are read.
    unsafe {
        let table = phys::<u32>(fp + 4) as usize;
        let default_config = phys::<u8>(fp + 11);
        if table == 0 || default_config != 0 {
            ids[0] = 0;
            ids[1] = 1;
            return Some(2);
        }
        if phys::<[u8; 4]>(table) != *b"PCMP" {
            return None;
        }
        let len = usize::from(phys::<u16>(table + 4));
        if checksum(table, len) != 0 {
            return None;
        }
        let entries = phys::<u16>(table + 34);
        let mut p = table + 44;
        let mut n = 0;
        for _ in 0..entries {
            if p >= table + len {
                break;
            }
            match phys::<u8>(p) {
                0 => {
                    let (id, flags) = (phys::<u8>(p + 1), phys::<u8>(p + 3));
                    if flags & 1 != 0 && n < ids.len() {
                        ids[n] = id;
                        n += 1;
                    }
                    p += 20;
                }
                _ => p += 8,
            }
        }
        Some(n)
    }
}

/// The selector of CPU `cpu`'s `%fs` segment.
pub fn percpu_selector(cpu: usize) -> u16 {
    percpu_segment::selector(PERCPU_GDT_BASE + cpu as u16, 0)
}

/// Loads the kernel GDT on the calling CPU, reloads every segment register
/// (same flat code and data selectors as the boot GDT) and `%fs` with CPU
/// `cpu`'s per-CPU segment.
///
/// # Safety
/// Ring 0; the GDT is filled ([`init_boot_cpu`] ran); called on CPU `cpu`
/// only, once per CPU.
pub unsafe fn load_gdt_and_fs(cpu: usize) {
    let ptr = TablePointer {
        limit: (size_of::<[u64; GDT_ENTRIES]>() - 1) as u16,
        base: GDT.0.get().addr() as u32,
    };
    // SAFETY: the GDT is filled and static (the kernel runs identity mapped,
    // so its linear address stays valid); selectors 0x08 and 0x10 are the
    // flat code and data segments as in the boot GDT; CPU `cpu`'s entry is
    // its own per-CPU area.
    unsafe {
        percpu_segment::load_gdt(&ptr);
        core::arch::asm!(
            "push 0x08",
            "lea {t}, [2f]",
            "push {t}",
            "retf",
            "2:",
            "mov {t:x}, 0x10",
            "mov ds, {t:x}",
            "mov es, {t:x}",
            "mov ss, {t:x}",
            "mov gs, {t:x}",
            t = out(reg) _,
        );
        percpu_segment::load_fs(percpu_selector(cpu));
    }
}

/// Builds the GDT (flat code and data, one `%fs` segment per CPU), loads it
/// on the boot CPU with its `%fs` on a copy of the per-CPU template
/// ([`crate::percpu::boot_area_base`]), and builds the SMP [`I386SmpCpu`]
/// with `cpus.count` CPUs. Call once, first thing, before any allocator.
pub fn init_boot_cpu(cpus: CpuList) {
    assert!(!CPU.is_completed(), "the boot CPU is set up once");
    let boot_base = crate::percpu::boot_area_base();
    // SAFETY: nothing else reads or writes the GDT yet (one CPU runs, and it
    // has not loaded it).
    let gdt = unsafe { &mut *GDT.0.get() };
    gdt[1] = percpu_segment::code_segment(0, u32::MAX);
    gdt[2] = percpu_segment::data_segment(0, u32::MAX);
    for i in 0..MAX_CPUS {
        // Every CPU's segment on the boot area until the areas exist (only
        // the boot CPU runs until then); 4 GiB: the per-CPU pointers are
        // template addresses, and the base wraps.
        gdt[PERCPU_GDT_BASE as usize + i] =
            percpu_segment::data_segment(boot_base as u32, u32::MAX);
    }
    // SAFETY: the GDT is filled; this is CPU 0, once.
    unsafe { load_gdt_and_fs(0) };
    CPUS.call_once(|| cpus);
    // SAFETY: every CPU loads its own `%fs` segment (the boot CPU above,
    // each AP in `ap::ap_entry` before it uses the value), whose base makes
    // the words' template addresses (`percpu::words`) its own copies: the
    // boot area (the template copied: id 0, zero counts) for the boot CPU
    // until `set_percpu_bases` moves it onto its area, where `percpu::setup`
    // wrote each CPU's id (`0..cpus.count`) and zero counts before any AP
    // starts; the interrupt entries (`idt`) call `irq_enter`/`irq_exit`; the
    // kernel has no scheduler, so nothing migrates.
    CPU.call_once(|| unsafe { I386SmpCpu::new(cpus.count, crate::percpu::words()) });
}

/// Points CPU `n`'s `%fs` segment at base `offsets[n]` (its per-CPU area:
/// `__per_cpu_offset[n]`) and reloads the boot CPU's `%fs`, with interrupts
/// off. Called once by [`crate::percpu::setup`] on the boot CPU, before any
/// other CPU starts, once every area holds its CPU's words (the boot CPU's
/// counts are zero on both sides: no guard is alive).
pub fn set_percpu_bases(offsets: &[usize]) {
    assert!(offsets.len() <= MAX_CPUS && offsets.len() >= cpus().count);
    let cpu = cpu_ref();
    let flags: u32;
    // SAFETY: pushfd/pop reads EFLAGS and restores the stack pointer.
    unsafe {
        core::arch::asm!("pushfd", "pop {}", out(reg) flags, options(nomem, preserves_flags))
    };
    // SAFETY: ring 0; interrupts stay off until `%fs` is reloaded, so no
    // handler sees a half-switched CPU.
    unsafe { core::arch::asm!("cli", options(nomem, nostack)) };
    assert_eq!((cpu.preempt_count(), cpu.irq_count()), (0, 0));
    // SAFETY: only the boot CPU runs (the others start after this), and it
    // reads the GDT only when it loads a segment, below.
    let gdt = unsafe { &mut *GDT.0.get() };
    for (i, &off) in offsets.iter().enumerate() {
        gdt[PERCPU_GDT_BASE as usize + i] = percpu_segment::data_segment(off as u32, u32::MAX);
    }
    // SAFETY: CPU 0's entry now describes its area, which holds its words
    // (id 0, zero counts, as the boot area does now).
    unsafe { percpu_segment::load_fs(percpu_selector(0)) };
    if flags & (1 << 9) != 0 {
        // SAFETY: interrupts were on before; the IDT is loaded.
        unsafe { core::arch::asm!("sti", options(nomem, nostack)) };
    }
}

/// The kernel's CPUs, by reference (after [`init_boot_cpu`]).
pub fn cpu_ref() -> &'static KernelCpu {
    CPU.get().expect("smp::init_boot_cpu ran")
}

/// The kernel's CPUs (after [`init_boot_cpu`]).
pub fn cpu() -> KernelCpu {
    *CPU.get().expect("smp::init_boot_cpu ran")
}

/// The CPU list (after [`init_boot_cpu`]).
pub fn cpus() -> CpuList {
    *CPUS.get().expect("smp::init_boot_cpu ran")
}

/// Maps the local APIC into the fixmap's APIC slot (a page table from the
/// boot frames if needed) and builds the cross-CPU calls and the shootdown
/// over it. No CPU is online for the calls yet, so until the boot CPU
/// joins they run locally only.
pub fn init_apic<M: kmm_i386::Mode>(
    pt: &mut Paging<M>,
    layout: &I386Layout,
    frames: &mut BootFrames,
) {
    let va =
        kmm_i386::apic::map_local_apic(pt, frames, layout, PhysAddr::new(APIC_DEFAULT_PHYS_BASE))
            .unwrap_or_else(|e| panic!("mapping the local APIC in the fixmap: {e}"));
    let base = NonNull::new(va.as_mut_ptr::<u32>()).expect("the fixmap is not at 0");
    // SAFETY: `map_local_apic` mapped the APIC's register page at `va`,
    // uncached, in the kernel tables every CPU uses, for the kernel's life.
    let apic = unsafe { LocalApic::new(base) };
    kprintln!(
        "kmm: smp: local APIC {APIC_DEFAULT_PHYS_BASE:#x} at {va} (fixmap slot {}), boot CPU APIC id {}",
        kmm_i386::FIX_APIC_BASE,
        apic.id()
    );
    // SAFETY: ring 0 on a machine with local APICs (QEMU's); every CPU's IDT
    // routes CALL_FUNCTION_VECTOR to `idt`'s stub, which calls `handle_ipi`
    // inside `irq_enter`/`irq_exit` and sends the EOI, and nothing else
    // sends that vector; CPUs never go offline.
    let calls =
        CALLS.call_once(|| unsafe { ApicCrossCall::new(cpu(), apic, CALL_FUNCTION_VECTOR) });
    // SAFETY: ring 0 with paging on; every CPU joins `calls` (cpu_online)
    // before it runs kmm code or touches kernel mappings kmm changes.
    TLB.call_once(|| unsafe { SmpTlb::new(calls) });
}

/// The cross-CPU calls (after [`init_apic`]).
pub fn calls() -> &'static KernelCalls {
    CALLS.get().expect("smp::init_apic ran")
}

/// The kernel-wide TLB shootdown (after [`init_apic`]).
pub fn tlb() -> &'static KernelTlb {
    TLB.get().expect("smp::init_apic ran")
}

/// The local APIC (after [`init_apic`]).
pub fn apic() -> &'static LocalApic {
    calls().apic()
}
