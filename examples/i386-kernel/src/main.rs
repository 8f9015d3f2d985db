//! The kmm example kernel: boots from a multiboot loader (QEMU's `-kernel`),
//! builds Linux-style i386 kernel page tables with kmm-i386 (2-level or PAE,
//! chosen on the command line), turns paging on, proves a mapping through two
//! aliases, builds `mem_map` and the zoned buddy allocator from the multiboot
//! memory map (kmm-page-frame, kmm-buddy) and exercises every zone and order,
//! builds the slab allocator over it (kmm-slab) and makes `kmalloc` the
//! `#[global_allocator]` (`Vec`, `Box`, `BTreeMap` from `alloc`), exercises its
//! caches, then turns interrupts on and builds vmalloc and pkmap over the
//! shared kernel tables (kmm-vmalloc, kmm-pkmap): vmalloc memory read back
//! through `kmap`, every free HIGHMEM page through `kmap`, `ioremap` of the
//! local APIC and VGA text memory, `/proc/vmallocinfo`; then it starts the
//! other CPUs (see [`smp`], [`ap`]) and runs every allocator on all of them
//! at once, with a timer interrupt allocating on each (see [`smp_check`]).
//! Every allocator is built with the SMP `Cpu` from the start
//! (`kmm_i386::I386SmpCpu`, the CPU count from the ACPI MADT) and flushes
//! through the IPI shootdown (`kmm_i386::SmpTlb`). It reports on COM1.
//!
//! Command line: `paging=2level` (default) or `paging=pae`; `smp_work=N`
//! rounds of work per CPU in the SMP phase; `test=panic` to panic on
//! purpose. QEMU exits with 33 on success and 35 on failure through
//! the `isa-debug-exit` device.
#![no_std]
#![no_main]

extern crate alloc;

mod alloc_check;
mod ap;
mod bad_free;
mod boot;
mod buddy_check;
mod exit;
mod fallback;
mod frames;
mod heap;
mod highmem;
mod idt;
mod multiboot;
mod paging;
mod percpu;
mod physmem;
mod pkmap_check;
mod pool_check;
mod serial;
mod slab_bad_input;
mod slab_check;
mod smp;
mod smp_check;
mod tables;
mod vmalloc_check;

use core::panic::PanicInfo;

use kmm_hal::{KernelLayout, PAGE_SIZE};
use kmm_i386::{Classic, FIXADDR_TOP, I386Layout, MAX_LOWMEM, Mode, PAGE_OFFSET, PaeMode};

use exit::{ExitCode, exit};
use frames::BootFrames;
use multiboot::{BOOTLOADER_MAGIC, BootInfo, Options, PagingMode};
use serial::kprintln;

const MIB: u64 = 1 << 20;

/// The Rust entry point, called by `_start` in [`boot`] with the loader's magic
/// (EAX) and the physical address of its information structure (EBX).
#[unsafe(no_mangle)]
pub extern "C" fn kmain(magic: u32, info: u32) -> ! {
    serial::init();
    kprintln!();
    kprintln!("kmm: example i386 kernel");
    kmm_i386::rt::self_test();
    kprintln!("kmm: memcpy/memmove/memset/memcmp self-test ok");
    assert_eq!(
        magic, BOOTLOADER_MAGIC,
        "not started by a multiboot loader (magic {magic:#x})"
    );
    // SAFETY: the magic says a multiboot loader passed `info`; paging is off.
    let boot = unsafe { BootInfo::read(info as usize) };
    kprintln!(
        "kmm: multiboot flags={:#x} cmdline={:?}",
        boot.flags,
        boot.cmdline()
    );
    let opts = Options::parse(boot.cmdline());
    kprintln!("kmm: paging={}", opts.paging);
    // SAFETY: paging is off, so the local APIC's registers are reached at
    // their physical address; reading the id register has no side effect.
    let boot_apic_id = unsafe {
        core::ptr::with_exposed_provenance::<u32>(kmm_i386::APIC_DEFAULT_PHYS_BASE as usize + 0x20)
            .read_volatile()
            >> 24
    } as u8;
    let cpus = smp::find_cpus(boot_apic_id);
    smp::init_boot_cpu(cpus);
    kprintln!(
        "kmm: smp: {} CPU(s) ({}{}), APIC ids {:?}; per-CPU %fs segments loaded on the boot CPU",
        cpus.count,
        cpus.source,
        if cpus.dropped > 0 {
            ", some past MAX_CPUS dropped"
        } else {
            ""
        },
        &cpus.apic_ids[..cpus.count]
    );
    match opts.paging {
        PagingMode::TwoLevel => run::<Classic>(&boot, opts, false),
        PagingMode::Pae => run::<PaeMode>(&boot, opts, true),
    }
}

/// Prints the memory map and returns the end of low memory.
fn print_memory_map(boot: &BootInfo) -> usize {
    let map = &boot.memory_map;
    let source = if boot.from_mmap {
        "multiboot mmap"
    } else {
        "mem_upper"
    };
    kprintln!(
        "kmm: memory map ({source}, {} entries):",
        map.regions().len()
    );
    for r in map.regions() {
        kprintln!(
            "kmm:   base={:#012x} len={:#012x} type={} ({})",
            r.base,
            r.len,
            r.kind,
            r.kind_name()
        );
    }
    if map.dropped() > 0 {
        kprintln!("kmm:   ({} more entries dropped)", map.dropped());
    }
    let top = map.top_of_ram();
    let lowmem = top.min(MAX_LOWMEM as u64) & !(PAGE_SIZE as u64 - 1);
    kprintln!(
        "kmm: ram: {} MiB usable, top of ram {:#x} ({} MiB), lowmem {} MiB, highmem {} MiB",
        map.usable_bytes() / MIB,
        top,
        top / MIB,
        lowmem / MIB,
        top.saturating_sub(lowmem) / MIB
    );
    assert!(lowmem >= 8 * MIB, "too little RAM: lowmem is {lowmem:#x}");
    lowmem as usize
}

/// Boots with paging mode `M` (`pae` says which one it is).
fn run<M: Mode + Send + 'static>(boot: &BootInfo, opts: Options, pae: bool) -> ! {
    let lowmem = print_memory_map(boot);
    let (kstart, kend) = boot::kernel_image();
    let floor = kend.max(boot.data_end);
    let mut frames = BootFrames::new(&boot.memory_map, floor, lowmem as u64);
    kprintln!(
        "kmm: kernel image {kstart:#x}..{kend:#x}, loader data ends {:#x}, boot frames from {floor:#x} ({} MiB available)",
        boot.data_end,
        frames.capacity() / MIB
    );

    let layout = I386Layout::new(lowmem, pae, smp::cpus().count);
    let (mut pt, stats) = paging::build_tables::<M>(lowmem, kend, &mut frames);
    let large_kib = kmm_i386::Paging::<M>::LARGE_PAGE_SIZE >> 10;
    kprintln!(
        "kmm: tables ({}): direct map {} MiB at {PAGE_OFFSET:#x} = {} large pages of {large_kib} KiB + {} base pages, global",
        M::NAME,
        lowmem as u64 / MIB,
        stats.direct_large,
        stats.direct_base,
    );
    kprintln!(
        "kmm: tables: identity map 0..{:#x} = {} large pages; {} page-table pages, {} boot frames used",
        stats.identity_end,
        stats.identity_large,
        pt.table_pages(),
        frames.in_use()
    );

    paging::enable(&mut pt, pae, &layout);
    paging::check_direct_map(&pt, &layout);
    paging::check_vmalloc_alias(&mut pt, &layout, &mut frames);

    let fixmap = layout.fixmap();
    kprintln!(
        "kmm: layout: PAGE_OFFSET={PAGE_OFFSET:#x} high_memory={:#x} VMALLOC_START={} VMALLOC_END={} PKMAP_BASE={} LAST_PKMAP={} FIXADDR_START={} FIXADDR_TOP={FIXADDR_TOP:#x}",
        PAGE_OFFSET + lowmem,
        layout.vmalloc_start(),
        layout.vmalloc_end(),
        layout.pkmap_base(),
        layout.last_pkmap(),
        fixmap.start(),
    );
    kprintln!(
        "kmm: summary: paging={} ram={} MiB lowmem={} MiB large_pages={} table_pages={} boot_frames={} (allocated {})",
        opts.paging,
        boot.memory_map.top_of_ram() / MIB,
        lowmem as u64 / MIB,
        stats.direct_large + stats.identity_large,
        pt.table_pages(),
        frames.in_use(),
        frames.allocated()
    );
    let window = highmem::prepare(&mut pt, &layout, &mut frames);
    smp::init_apic(&mut pt, &layout, &mut frames);
    kprintln!(
        "kmm: highmem window at {window} (the fixmap's vDSO slot), {} table pages",
        pt.table_pages()
    );
    let (buddy, tables) = physmem::run(boot, &layout, frames, pt, window);
    percpu::setup(buddy);
    let slab = slab_check::run(buddy);
    let (vm, pkmap) = vmalloc_check::run(slab, tables, &layout);
    let pcpu = percpu::init_dynamic(vm, tables, buddy);
    smp_check::run(
        slab,
        vm,
        pkmap,
        pcpu,
        opts.smp_work.unwrap_or(smp_check::DEFAULT_ROUNDS),
    );
    if opts.test_panic {
        kprintln!("kmm: test=panic: panicking on purpose");
        panic!("deliberate panic requested by test=panic");
    }
    let used = boot::stack_high_water();
    kprintln!(
        "kmm: boot stack: {} KiB of {} KiB used at most",
        used.div_ceil(1024),
        boot::STACK_SIZE / 1024
    );
    assert!(
        used + 16 * 1024 <= boot::STACK_SIZE,
        "the boot stack came within 16 KiB of overflowing"
    );
    let (ap_used, ap_size) = ap::stack_high_water();
    kprintln!(
        "kmm: AP stacks: {} KiB of {} KiB used at most",
        ap_used.div_ceil(1024),
        ap_size / 1024
    );
    assert!(
        ap_used + 8 * 1024 <= ap_size,
        "an AP stack came within 8 KiB of overflowing"
    );
    kprintln!("kmm: boot ok");
    exit(ExitCode::Success)
}

#[panic_handler]
fn panic(info: &PanicInfo<'_>) -> ! {
    match info.location() {
        Some(l) => kprintln!("PANIC: {} at {}:{}", info.message(), l.file(), l.line()),
        None => kprintln!("PANIC: {} at <unknown>:0", info.message()),
    }
    exit(ExitCode::Failure)
}
