//! A per-CPU segment for host tests on i686 Linux: this thread's `%fs`
//! loaded with a data segment at a chosen base (a TLS descriptor from
//! `set_thread_area`), standing in for a kernel's per-CPU GDT entry, so the
//! i386 code that reads and writes through `%fs` (`I386SmpCpu`, kmm-percpu's
//! `SegmentOps`) runs for real on the host.

/// Linux's `struct user_desc` (`asm/ldt.h`).
#[repr(C)]
struct UserDesc {
    entry_number: u32,
    base_addr: u32,
    limit: u32,
    /// seg_32bit (bit 0), contents (1–2), read_exec_only (3),
    /// limit_in_pages (4), seg_not_present (5), useable (6).
    flags: u32,
}

/// How far the segment reaches from its base.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FsLimit {
    /// The whole 4 GiB address space (a kernel's per-CPU segment, whose
    /// offsets wrap).
    Flat,
    /// Bytes `0..=last` from the base.
    Bytes(u32),
}

/// This thread's `%fs` on a segment of its own; the previous selector comes
/// back when the value is dropped.
#[derive(Debug)]
pub struct FsSegment {
    old: u16,
}

impl FsSegment {
    /// Loads this thread's `%fs` with a data segment at `base` reaching
    /// `limit`. Panics if the kernel refuses the descriptor.
    ///
    /// # Safety
    /// Nothing else on this thread may rely on `%fs` while the value lives
    /// (the host's own thread-local storage is in `%gs` on i686 Linux), and
    /// every access the test makes through `%fs` must fall in memory it may
    /// use at `base` plus the offset.
    pub unsafe fn load(base: usize, limit: FsLimit) -> FsSegment {
        const SYS_SET_THREAD_AREA: usize = 243;
        let (limit, flags) = match limit {
            FsLimit::Flat => (0xF_FFFF, 0b101_0001),
            FsLimit::Bytes(last) => (last, 0b100_0001),
        };
        let mut d = UserDesc {
            entry_number: u32::MAX,
            base_addr: base as u32,
            limit,
            flags,
        };
        let ret: isize;
        // SAFETY: `set_thread_area(&d)` only writes `d.entry_number`; `ebx`
        // is swapped back before the block ends.
        unsafe {
            core::arch::asm!(
                "xchg {d}, ebx",
                "int 0x80",
                "xchg {d}, ebx",
                d = in(reg) &raw mut d,
                inlateout("eax") SYS_SET_THREAD_AREA as isize => ret,
            );
        }
        assert_eq!(ret, 0, "set_thread_area failed");
        let sel = ((d.entry_number << 3) | 3) as u16;
        let old: u16;
        // SAFETY: a data segment of this thread's TLS entries, just set up;
        // the caller vouches nothing else uses `%fs` meanwhile.
        unsafe {
            core::arch::asm!("mov {old:x}, fs", "mov fs, {sel:x}", old = out(reg) old, sel = in(reg) sel);
        }
        FsSegment { old }
    }
}

impl Drop for FsSegment {
    fn drop(&mut self) {
        // SAFETY: the selector `%fs` held before `load`.
        unsafe { core::arch::asm!("mov fs, {0:x}", in(reg) self.old) };
    }
}
