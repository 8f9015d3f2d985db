//! Control-register and TLB instructions of an i386 CPU. Ring 0 only.

use core::arch::asm;

use kmm_hal::{PhysAddr, VirtAddr};

/// CR0.PG: paging enabled.
pub const CR0_PG: u32 = 1 << 31;
/// CR0.WP: ring 0 honours read-only pages.
pub const CR0_WP: u32 = 1 << 16;
/// CR4.PSE: 4 MiB pages under 2-level paging.
pub const CR4_PSE: u32 = 1 << 4;
/// CR4.PAE: PAE paging.
pub const CR4_PAE: u32 = 1 << 5;
/// CR4.PGE: global pages.
pub const CR4_PGE: u32 = 1 << 7;

/// Reads CR0.
pub fn read_cr0() -> u32 {
    let v: u32;
    // SAFETY: reading CR0 has no side effects (ring 0 is the crate's contract).
    unsafe { asm!("mov {}, cr0", out(reg) v, options(nomem, nostack, preserves_flags)) };
    v
}

/// Writes CR0.
///
/// # Safety
/// Ring 0; the new value must keep the running code valid (for example, paging
/// may be enabled only with a CR3 that maps the code being run).
pub unsafe fn write_cr0(v: u32) {
    // SAFETY: the caller upholds the contract above.
    unsafe { asm!("mov cr0, {}", in(reg) v, options(nostack, preserves_flags)) };
}

/// Reads CR3.
pub fn read_cr3() -> u32 {
    let v: u32;
    // SAFETY: reading CR3 has no side effects.
    unsafe { asm!("mov {}, cr3", out(reg) v, options(nomem, nostack, preserves_flags)) };
    v
}

/// Loads CR3 with the root of a set of page tables (flushes non-global TLB
/// entries).
///
/// # Safety
/// Ring 0; `root` must be the root of valid tables (below 4 GiB, 32-byte aligned
/// for a PAE PDPT) that map the running code, its stack and data.
pub unsafe fn write_cr3(root: PhysAddr) {
    debug_assert!(
        root.as_u64() <= u64::from(u32::MAX),
        "CR3 holds a 32-bit address"
    );
    let v = root.as_u64() as u32;
    // SAFETY: the caller upholds the contract above.
    unsafe { asm!("mov cr3, {}", in(reg) v, options(nostack, preserves_flags)) };
}

/// Reads CR4.
pub fn read_cr4() -> u32 {
    let v: u32;
    // SAFETY: reading CR4 has no side effects.
    unsafe { asm!("mov {}, cr4", out(reg) v, options(nomem, nostack, preserves_flags)) };
    v
}

/// Writes CR4.
///
/// # Safety
/// Ring 0; the new value must keep the running code valid.
pub unsafe fn write_cr4(v: u32) {
    // SAFETY: the caller upholds the contract above.
    unsafe { asm!("mov cr4, {}", in(reg) v, options(nostack, preserves_flags)) };
}

/// Invalidates the TLB entry (and paging-structure caches) for `va`.
///
/// # Safety
/// Ring 0.
pub unsafe fn invlpg(va: VirtAddr) {
    // SAFETY: INVLPG only drops cached translations.
    unsafe { asm!("invlpg [{}]", in(reg) va.as_usize(), options(nostack, preserves_flags)) };
}

/// Invalidates every TLB entry, global ones included: toggles CR4.PGE when it is
/// set (as Linux's `__flush_tlb_all` does), otherwise reloads CR3.
///
/// # Safety
/// Ring 0, with paging on.
pub unsafe fn flush_tlb_all() {
    let cr4 = read_cr4();
    // SAFETY: clearing and restoring PGE, or reloading CR3 with its own value,
    // changes no translation; it only empties the TLB.
    unsafe {
        if cr4 & CR4_PGE != 0 {
            write_cr4(cr4 & !CR4_PGE);
            write_cr4(cr4);
        } else {
            write_cr3(PhysAddr::new(u64::from(read_cr3())));
        }
    }
}

/// Turns paging on with `root` in CR3: sets CR4.PAE for PAE tables, CR4.PSE when
/// large pages are wanted under 2-level paging, CR0.PG and CR0.WP, then CR4.PGE.
///
/// # Safety
/// Ring 0 with paging off; `root` must map the running code, stack and data at
/// their current addresses.
pub unsafe fn enable_paging(root: PhysAddr, pae: bool, pse: bool, pge: bool) {
    // SAFETY: the caller guarantees root maps what runs; the order follows the
    // Intel SDM: CR4.PAE before CR0.PG, CR4.PGE after.
    unsafe {
        let mut cr4 = read_cr4();
        if pae {
            cr4 |= CR4_PAE;
        }
        if pse {
            cr4 |= CR4_PSE;
        }
        write_cr4(cr4);
        write_cr3(root);
        write_cr0(read_cr0() | CR0_PG | CR0_WP);
        if pge {
            write_cr4(read_cr4() | CR4_PGE);
        }
    }
}
