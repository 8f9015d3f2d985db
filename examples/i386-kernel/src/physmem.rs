//! The page allocator from the real memory map: the multiboot map as
//! kmm-page-frame [`Region`]s, bootmem with everything already in use reserved,
//! `mem_map` and the zoned buddy allocator (kmm-buddy), and what they report.

use kmm_buddy::{Buddy, BuddyConfig};
use kmm_hal::KernelTables;
use kmm_hal::{KernelLayout, PAGE_SIZE, Pfn, PhysAddr, VirtAddr};
use kmm_i386::{I386Layout, Mode, Paging};
use kmm_page_frame::{Bootmem, MemMap, Region, RegionKind, ZoneType};

use crate::boot;
use crate::buddy_check::{self, KernelBuddy};
use crate::frames::BootFrames;
use crate::highmem::HighmemWindow;
use crate::multiboot::{BootInfo, MAX_REGIONS};
use crate::paging;
use crate::serial::{LineWriter, kprintln};
use crate::tables::{KTables, LowmemFrames};

/// Reserves the physical range `[start, end)` (something in use before the
/// page allocator exists) in bootmem, and says so.
fn reserve(bootmem: &mut Bootmem<'_>, what: &str, start: u64, end: u64) {
    if start >= end {
        return;
    }
    if let Err(e) = bootmem.reserve(PhysAddr::new(start), end - start) {
        panic!("reserving {what} {start:#x}..{end:#x}: {e}");
    }
    kprintln!("kmm: bootmem: reserved {what} {start:#x}..{end:#x}");
}

/// The page allocator, built once by [`run`] and kept for the kernel's life:
/// the slab allocator (and through it the global allocator) borrows it for
/// `'static`.
static BUDDY: spin::Once<KernelBuddy<'static>> = spin::Once::new();

/// The page allocator, once [`run`] built it (the timer handler's way to it).
pub fn buddy() -> Option<&'static KernelBuddy<'static>> {
    BUDDY.get()
}

/// Moves `value` into memory taken from bootmem for good (Linux's
/// `alloc_bootmem`: the frames stay reserved and never reach the page
/// allocator) and returns it for the kernel's life.
fn leak<T>(bootmem: &mut Bootmem<'_>, layout: &I386Layout, what: &str, value: T) -> &'static T {
    let pa = bootmem
        .alloc(size_of::<T>().max(1), align_of::<T>())
        .unwrap_or_else(|e| panic!("bootmem: {what}: {e}"));
    let p = layout
        .direct_map()
        .phys_to_virt(pa)
        .expect("bootmem hands out low memory")
        .as_mut_ptr::<T>();
    // SAFETY: bootmem reserved at least `size_of::<T>()` bytes at `pa` for this
    // call alone, aligned to at least `align_of::<T>()` (bootmem blocks are
    // page-aligned), and never gives them back: they stay reserved in
    // `mem_map`, so the page allocator never hands them out. The direct map
    // maps them read-write for the kernel's life (see `run`). Nothing else
    // refers to them, and the value is never dropped or moved again.
    unsafe {
        p.write(value);
        &*p
    }
}

/// Builds `mem_map` and the buddy allocator from the multiboot memory map,
/// prints what they hold, runs the allocator checks of [`buddy_check`], and
/// returns the allocator, kept for the kernel's life.
///
/// `frames` is retired here: every frame it handed out (the page tables of
/// `pt` among them) is reserved, and it hands out no more. The kernel tables
/// `pt` move into bootmem memory for good as one [`KernelTables`], whose
/// new page-table pages come from the allocator from now on; so does the
/// highmem window at `window_va` (see [`crate::highmem::prepare`]), since
/// the allocator's `zero_highmem` hook uses it for as long as the allocator
/// lives. `M: Send` lets that hook (which must be `Sync`) share the locked
/// tables.
///
/// Called once: the allocator is built once. Returns the allocator and the
/// kernel tables.
pub fn run<M: Mode + Send + 'static>(
    boot: &BootInfo,
    layout: &I386Layout,
    frames: BootFrames,
    pt: Paging<M>,
    window_va: VirtAddr,
) -> (&'static KernelBuddy<'static>, &'static KTables<M>) {
    assert!(!BUDDY.is_completed(), "the page allocator is built once");
    let mut regions = [Region::new(0, 0, RegionKind::Reserved); MAX_REGIONS];
    let n = convert_map(boot, paging::phys_limit(layout.pae()), &mut regions);
    let regions = &regions[..n];
    let lowmem_end = layout.direct_map().size() as u64;
    let mut bootmem = match Bootmem::new(regions, PhysAddr::new(lowmem_end)) {
        Ok(b) => b,
        Err(e) => panic!("bootmem: {e}"),
    };
    let (kstart, kend) = boot::kernel_image();
    reserve(&mut bootmem, "kernel image", kstart, kend);
    for (i, &(s, e)) in boot.loader_data.iter().enumerate() {
        let what = ["multiboot info", "command line", "memory map"][i];
        reserve(&mut bootmem, what, s, e);
    }
    let tramp = crate::ap::TRAMPOLINE_PHYS as u64;
    for &(s, e) in &boot.loader_data {
        assert!(
            e <= tramp || s >= tramp + PAGE_SIZE as u64,
            "the loader's data {s:#x}..{e:#x} overlaps the AP trampoline page"
        );
    }
    reserve(
        &mut bootmem,
        "AP trampoline",
        crate::ap::TRAMPOLINE_PHYS as u64,
        crate::ap::TRAMPOLINE_PHYS as u64 + PAGE_SIZE as u64,
    );
    for (s, e) in frames.used_ranges() {
        reserve(&mut bootmem, "boot frames (page tables)", s, e);
    }
    // `frames` (taken by value) is not used again: retired.

    // SAFETY: the direct map of `layout` maps all low memory, read-write, at
    // PAGE_OFFSET (paging::build_tables and paging::enable) for the rest of the
    // kernel's life. Bootmem hands out only usable low-memory frames that are
    // not reserved, and everything in use is reserved above: the kernel image
    // (code, data, bss and stack), the loader's data and every frame the boot
    // frame source gave out, which is retired.
    let mem = match unsafe { MemMap::new(&mut bootmem, layout) } {
        Ok(m) => m,
        Err(e) => panic!("mem_map: {e}"),
    };
    let tables: &'static KTables<M> = leak(
        &mut bootmem,
        layout,
        "kernel page tables",
        KernelTables::new(pt, LowmemFrames::new()),
    );
    let window = leak(
        &mut bootmem,
        layout,
        "highmem window",
        HighmemWindow::new(tables, window_va),
    );
    let zero: &'static (dyn Fn(Pfn) + Sync) = leak(
        &mut bootmem,
        layout,
        "zero_highmem hook",
        move |pfn: Pfn| {
            // SAFETY: the allocator calls `zero_highmem` only for a frame of a
            // block it has just taken off its free lists for a `Gfp::ZERO`
            // request: no one else uses it yet.
            unsafe { window.zero(pfn) }
        },
    );
    let config = BuddyConfig {
        zero_highmem: Some(zero),
        // Waiting allocations drain every CPU's per-CPU lists (and the
        // slab's arrays) through the IPIs.
        cross_call: Some(crate::smp::calls()),
        ..BuddyConfig::default()
    };
    // SAFETY: as for MemMap::new: the direct map covers what bootmem hands out
    // and stays; the frames `mem` releases (usable, not reserved) are unused.
    let buddy = match unsafe { Buddy::new(mem, bootmem, crate::smp::cpu(), config) } {
        Ok(b) => b,
        Err(e) => panic!("buddy allocator: {e}"),
    };
    let buddy = BUDDY.call_once(|| buddy);
    tables.lock(buddy.cpu()).frames.attach(buddy);
    print_stats(buddy);
    let kernel_pfn = Pfn::new((kstart / PAGE_SIZE as u64) as usize);
    buddy_check::run(buddy, window, kernel_pfn);
    (buddy, tables)
}

/// Converts the multiboot map into `out` and returns how many entries it
/// holds. Usable RAM at or above `limit` (what the paging mode can map) is
/// left out, as Linux does without `HIGHMEM64G`.
fn convert_map(boot: &BootInfo, limit: u64, out: &mut [Region; MAX_REGIONS]) -> usize {
    let mut n = 0;
    let mut ignored = 0;
    for r in boot.memory_map.regions() {
        let kind = RegionKind::from_e820(r.kind);
        let mut len = r.len;
        if kind == RegionKind::Usable && r.end() > limit {
            len = limit.saturating_sub(r.base);
            ignored += r.len - len;
        }
        if len > 0 {
            out[n] = Region::new(r.base, len, kind);
            n += 1;
        }
    }
    if ignored > 0 {
        kprintln!(
            "kmm: ignoring {} MiB of RAM at or above {limit:#x}: the paging mode cannot map it",
            ignored >> 20
        );
    }
    n
}

/// Keeps the zone headers, free pages, watermarks and protection lines of
/// `/proc/zoneinfo`.
fn watermark_line(line: &str) -> bool {
    let t = line.trim_start();
    ["Node", "pages free", "min ", "low ", "high ", "protection"]
        .iter()
        .any(|p| t.starts_with(p))
}

/// Prints the `mem_map` counts, the node and zone spans, the watermarks and
/// `/proc/buddyinfo`.
fn print_stats(buddy: &KernelBuddy<'_>) {
    let mem = buddy.mem();
    let s = mem.stats();
    let base = VirtAddr::from_ptr(mem.pages().as_ptr());
    let at = mem
        .direct_map()
        .virt_to_phys(base)
        .expect("mem_map is in the direct map");
    kprintln!(
        "kmm: mem_map: spanned={} present={} mem_map_pages={} ({} descriptors of {} B at {at}) bootmem_pages={} reserved_ram={}",
        s.spanned,
        s.present,
        s.mem_map_pages,
        mem.pages().len(),
        size_of::<kmm_page_frame::Page>(),
        s.bootmem_pages,
        s.reserved_ram
    );
    for node in mem.nodes() {
        kprintln!(
            "kmm: node {}: pfn {:#x}..{:#x}, present {}",
            node.id,
            node.start_pfn,
            node.end_pfn,
            node.present
        );
        for t in ZoneType::ALL {
            let span = node.zone(t);
            let zone = &buddy.zones()[node.id * ZoneType::COUNT + t as usize];
            let (high, batch) = zone.pcp().get(0).map_or((0, 0), |p| p.limits());
            kprintln!(
                "kmm:   zone {:>7}: start_pfn={:#x} spanned={} present={} managed={} pcp high={high} batch={batch}",
                t.name(),
                span.start_pfn,
                span.spanned,
                span.present,
                zone.managed()
            );
        }
    }
    let managed = buddy.managed_total();
    kprintln!(
        "kmm: buddy: managed={} pages ({} MiB), free={}, min_free_kbytes={}",
        managed,
        (managed * PAGE_SIZE) >> 20,
        buddy.free_pages_total(),
        buddy.min_free_kbytes()
    );
    assert_eq!(
        managed as u64,
        s.present - s.reserved_ram,
        "managed pages are not the present RAM minus the reserved"
    );
    assert_eq!(
        buddy.free_pages_total(),
        managed,
        "not every managed page is free after init"
    );
    let mut w = LineWriter::filtered("kmm: zoneinfo: ", watermark_line);
    buddy.zoneinfo(&mut w).expect("serial output never fails");
    drop(w);
    print_buddyinfo(buddy);
}

/// Prints `/proc/buddyinfo`, one `kmm: buddyinfo:` line per zone.
pub fn print_buddyinfo(buddy: &KernelBuddy<'_>) {
    let mut w = LineWriter::new("kmm: buddyinfo: ");
    buddy.buddyinfo(&mut w).expect("serial output never fails");
}
