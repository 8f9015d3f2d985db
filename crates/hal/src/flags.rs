//! [`PageFlags`]: the architecture-neutral attributes of a mapping.

bitflags::bitflags! {
    /// Attributes of one page mapping.
    ///
    /// The bit values are those of an x86 page-table entry, so the i386 code turns
    /// them into an entry with a mask; another architecture translates them.
    /// [`PageFlags::PRESENT`] is implied by every `map` call.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
    pub struct PageFlags: u64 {
        /// The mapping is valid; a translation through a non-present entry faults.
        const PRESENT = 1 << 0;
        /// Writes are allowed; without it the page is read-only.
        const WRITABLE = 1 << 1;
        /// User mode may access the page; without it only the kernel may.
        const USER = 1 << 2;
        /// Write-through caching instead of write-back (x86 PWT).
        const WRITE_THROUGH = 1 << 3;
        /// Caching disabled, as for memory-mapped I/O (x86 PCD).
        const NO_CACHE = 1 << 4;
        /// Set by the CPU when the page is read or written.
        const ACCESSED = 1 << 5;
        /// Set by the CPU when the page is written.
        const DIRTY = 1 << 6;
        /// A global mapping: kept in the TLB across address-space switches (x86 PGE).
        const GLOBAL = 1 << 8;
        /// Instruction fetches fault (x86 NX/XD; only with PAE on i386).
        const NO_EXECUTE = 1 << 63;
    }
}

impl PageFlags {
    /// Flags for ordinary kernel data: present and writable.
    pub const KERNEL_RW: PageFlags = PageFlags::PRESENT.union(PageFlags::WRITABLE);
    /// Flags for kernel data that is shared by every address space: present,
    /// writable and global.
    pub const KERNEL_GLOBAL: PageFlags = PageFlags::KERNEL_RW.union(PageFlags::GLOBAL);
    /// Flags for device memory: present, writable, uncached.
    pub const KERNEL_IO: PageFlags = PageFlags::KERNEL_RW.union(PageFlags::NO_CACHE);
}
