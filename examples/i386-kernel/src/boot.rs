//! The multiboot header and the entry point: a flat GDT, a stack, SSE on, then
//! `kmain(magic, info)`.
//!
//! The prebuilt `core` for i686 uses SSE2, so SSE must be enabled (CR0.EM clear,
//! CR0.MP set, CR4.OSFXSR and CR4.OSXMMEXCPT set) before any Rust code runs.

/// The magic value a multiboot loader looks for in the kernel's first 8 KiB.
pub const HEADER_MAGIC: u32 = 0x1BAD_B002;
/// Header flags: bit 0 page-aligned modules, bit 1 memory information (the
/// `mem_*` fields and the memory map).
pub const HEADER_FLAGS: u32 = 0b11;
/// Size of the boot stack in bytes.
pub const STACK_SIZE: usize = 256 * 1024;

core::arch::global_asm!(
    // The multiboot v1 header: magic, flags, checksum (the three sum to zero).
    ".section .multiboot, \"a\"",
    ".balign 4",
    ".long {magic}",
    ".long {flags}",
    ".long -({magic} + {flags})",
    // A flat GDT: null, ring-0 code 0x08 and ring-0 data 0x10, each 0..4 GiB.
    ".section .rodata.boot_gdt, \"a\"",
    ".balign 8",
    "boot_gdt:",
    ".quad 0",
    ".quad 0x00CF9A000000FFFF",
    ".quad 0x00CF92000000FFFF",
    "boot_gdt_ptr:",
    ".word boot_gdt_ptr - boot_gdt - 1",
    ".long boot_gdt",
    // The boot stack.
    ".section .bss.boot_stack, \"aw\", @nobits",
    ".balign 16",
    ".global boot_stack_bottom",
    "boot_stack_bottom:",
    ".skip {stack_size}",
    "boot_stack_top:",
    // The entry point. The loader leaves the magic in EAX and the physical
    // address of the multiboot information in EBX; both stay untouched here.
    ".section .text.boot, \"ax\"",
    ".global _start",
    ".type _start, @function",
    "_start:",
    "    cli",
    "    cld",
    "    lgdt [boot_gdt_ptr]",
    "    mov ecx, offset .Lreload_cs",
    "    push 0x08",
    "    push ecx",
    "    retf",
    ".Lreload_cs:",
    "    mov cx, 0x10",
    "    mov ds, cx",
    "    mov es, cx",
    "    mov fs, cx",
    "    mov gs, cx",
    "    mov ss, cx",
    "    mov esp, offset boot_stack_top",
    "    xor ebp, ebp",
    // SSE: CR0.EM (bit 2) clear, CR0.MP (bit 1) set; CR4.OSFXSR (bit 9) and
    // CR4.OSXMMEXCPT (bit 10) set; then a clean x87 state.
    "    mov ecx, cr0",
    "    and ecx, 0xFFFFFFFB",
    "    or ecx, 0x2",
    "    mov cr0, ecx",
    "    mov ecx, cr4",
    "    or ecx, 0x600",
    "    mov cr4, ecx",
    "    fninit",
    // kmain(magic, info), with ESP 16-byte aligned at the call as the SysV
    // i386 ABI wants.
    "    sub esp, 8",
    "    push ebx",
    "    push eax",
    "    call kmain",
    ".Lhang:",
    "    cli",
    "    hlt",
    "    jmp .Lhang",
    ".size _start, . - _start",
    magic = const HEADER_MAGIC,
    flags = const HEADER_FLAGS,
    stack_size = const STACK_SIZE,
);

unsafe extern "C" {
    /// First byte of the kernel image (from the linker script).
    static __kernel_start: u8;
    /// First byte after the kernel image, bss and boot stack included, page
    /// aligned (from the linker script).
    static __kernel_end: u8;
    /// The lowest byte of the boot stack (from the assembly above).
    static boot_stack_bottom: u8;
}

/// The most the boot stack has held so far, in bytes: the stack sits in the
/// zeroed bss and grows down, so everything below its lowest non-zero byte
/// was never written. A stack that reaches its bottom has overflowed into
/// whatever lies below it without a fault (no guard page): the boot checks
/// this at the end and fails if less than a margin was left.
pub fn stack_high_water() -> usize {
    let bottom = (&raw const boot_stack_bottom).cast::<u8>();
    let mut untouched = 0;
    // SAFETY: the boot stack is `STACK_SIZE` bytes from `boot_stack_bottom`,
    // mapped (identity and direct map) for the kernel's life; reading bytes
    // below the running frame's stack pointer reads what earlier frames left.
    while untouched < STACK_SIZE && unsafe { bottom.add(untouched).read_volatile() } == 0 {
        untouched += 1;
    }
    STACK_SIZE - untouched
}

/// The physical range `[start, end)` of the kernel image (the kernel runs
/// identity mapped, so its addresses are physical).
pub fn kernel_image() -> (u64, u64) {
    // Only the addresses of the linker-script symbols are taken (which needs no
    // `unsafe`); the bytes behind them are never read.
    let (start, end) = (&raw const __kernel_start, &raw const __kernel_end);
    (start.addr() as u64, end.addr() as u64)
}
