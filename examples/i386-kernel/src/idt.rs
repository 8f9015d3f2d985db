//! A minimal interrupt descriptor table, so the kernel can run with
//! interrupts enabled (pkmap's `kmap` and `kunmap` are process-context calls
//! and refuse to run with interrupts off).
//!
//! Every exception (vectors 0–31) panics with its name, error code, EIP and
//! CR2. The two 8259 PICs are moved to vectors 0x20–0x2F and every line is
//! masked, so no device interrupt arrives; the remaining vectors only count
//! a stray interrupt and return.

use core::arch::{asm, global_asm};
use core::sync::atomic::{AtomicUsize, Ordering};

use crate::serial::outb;

/// The kernel code segment of the boot GDT (see [`crate::boot`]).
const KERNEL_CS: u16 = 0x08;
/// A present ring-0 32-bit interrupt gate.
const INTERRUPT_GATE: u8 = 0x8E;
/// The stubs of the exceptions are this many bytes apart.
const STUB_SIZE: usize = 16;
/// The first vector of the master PIC after the remap.
const PIC_BASE: u8 = 0x20;

global_asm!(
    // The exception stubs: each pushes a zero error code where the CPU pushes
    // none, then the vector, and jumps to the common entry.
    ".macro kmm_isr_noerr n",
    ".balign 16",
    "push 0",
    "push \\n",
    "jmp kmm_isr_common",
    ".endm",
    ".macro kmm_isr_err n",
    ".balign 16",
    "push \\n",
    "jmp kmm_isr_common",
    ".endm",
    ".section .text.kmm_isr, \"ax\"",
    ".balign 16",
    ".global kmm_isr_stubs",
    "kmm_isr_stubs:",
    "kmm_isr_noerr 0",
    "kmm_isr_noerr 1",
    "kmm_isr_noerr 2",
    "kmm_isr_noerr 3",
    "kmm_isr_noerr 4",
    "kmm_isr_noerr 5",
    "kmm_isr_noerr 6",
    "kmm_isr_noerr 7",
    "kmm_isr_err 8",
    "kmm_isr_noerr 9",
    "kmm_isr_err 10",
    "kmm_isr_err 11",
    "kmm_isr_err 12",
    "kmm_isr_err 13",
    "kmm_isr_err 14",
    "kmm_isr_noerr 15",
    "kmm_isr_noerr 16",
    "kmm_isr_err 17",
    "kmm_isr_noerr 18",
    "kmm_isr_noerr 19",
    "kmm_isr_noerr 20",
    "kmm_isr_err 21",
    "kmm_isr_noerr 22",
    "kmm_isr_noerr 23",
    "kmm_isr_noerr 24",
    "kmm_isr_noerr 25",
    "kmm_isr_noerr 26",
    "kmm_isr_noerr 27",
    "kmm_isr_noerr 28",
    "kmm_isr_err 29",
    "kmm_isr_err 30",
    "kmm_isr_noerr 31",
    // The common entry: the general registers on top of the vector and error
    // code, and a pointer to it all for `kmm_exception`, which never returns.
    "kmm_isr_common:",
    "pushad",
    "cld",
    "push esp",
    "call kmm_exception",
    "ud2",
    // Any other vector: count it and return.
    ".balign 16",
    ".global kmm_isr_stray",
    "kmm_isr_stray:",
    "lock inc dword ptr [{stray}]",
    "iretd",
    stray = sym STRAY,
);

unsafe extern "C" {
    /// The first exception stub; stub `v` is at `STUB_SIZE * v` from it.
    static kmm_isr_stubs: u8;
    /// The stub of every other vector.
    static kmm_isr_stray: u8;
}

/// Interrupts that arrived on a vector that is not an exception.
static STRAY: AtomicUsize = AtomicUsize::new(0);

/// What the exception stubs leave on the stack.
#[repr(C)]
struct Frame {
    edi: u32,
    esi: u32,
    ebp: u32,
    esp: u32,
    ebx: u32,
    edx: u32,
    ecx: u32,
    eax: u32,
    vector: u32,
    error: u32,
    eip: u32,
    cs: u32,
    eflags: u32,
}

/// The exception names, by vector.
const NAMES: [&str; 32] = [
    "divide error",
    "debug",
    "NMI",
    "breakpoint",
    "overflow",
    "bound range",
    "invalid opcode",
    "device not available",
    "double fault",
    "coprocessor segment overrun",
    "invalid TSS",
    "segment not present",
    "stack fault",
    "general protection",
    "page fault",
    "reserved",
    "x87 floating point",
    "alignment check",
    "machine check",
    "SIMD floating point",
    "virtualization",
    "control protection",
    "reserved",
    "reserved",
    "reserved",
    "reserved",
    "reserved",
    "reserved",
    "reserved",
    "VMM communication",
    "security",
    "reserved",
];

/// Called by the exception stubs: reports the exception and panics.
#[unsafe(no_mangle)]
extern "C" fn kmm_exception(f: &Frame) -> ! {
    let cr2: usize;
    // SAFETY: reading CR2 in ring 0 has no side effect.
    unsafe { asm!("mov {}, cr2", out(reg) cr2, options(nomem, nostack, preserves_flags)) };
    let name = NAMES.get(f.vector as usize).copied().unwrap_or("?");
    panic!(
        "exception {} ({name}) error={:#x} eip={:#010x} cs={:#x} eflags={:#x} cr2={cr2:#010x} eax={:#x} ebx={:#x} ecx={:#x} edx={:#x} esi={:#x} edi={:#x} ebp={:#x}",
        f.vector, f.error, f.eip, f.cs, f.eflags, f.eax, f.ebx, f.ecx, f.edx, f.esi, f.edi, f.ebp
    );
}

/// One interrupt gate.
#[derive(Clone, Copy)]
#[repr(C)]
struct Gate {
    offset_low: u16,
    selector: u16,
    zero: u8,
    attr: u8,
    offset_high: u16,
}

impl Gate {
    fn new(handler: usize) -> Gate {
        Gate {
            offset_low: handler as u16,
            selector: KERNEL_CS,
            zero: 0,
            attr: INTERRUPT_GATE,
            offset_high: (handler >> 16) as u16,
        }
    }
}

/// The table, built once.
static IDT: spin::Once<[Gate; 256]> = spin::Once::new();

/// The operand of LIDT.
#[repr(C, packed)]
struct Pointer {
    limit: u16,
    base: u32,
}

/// Moves the PICs' vectors to 0x20–0x2F and masks every line.
fn mask_pics() {
    // SAFETY: the standard 8259 initialisation sequence (ICW1–ICW4) on the
    // PICs' own ports, then the interrupt masks; nothing else in the kernel
    // uses them.
    unsafe {
        outb(0x20, 0x11);
        outb(0xA0, 0x11);
        outb(0x21, PIC_BASE);
        outb(0xA1, PIC_BASE + 8);
        outb(0x21, 0x04);
        outb(0xA1, 0x02);
        outb(0x21, 0x01);
        outb(0xA1, 0x01);
        outb(0x21, 0xFF);
        outb(0xA1, 0xFF);
    }
}

/// Loads the table, masks the PICs and enables interrupts. Called once.
pub fn init_and_enable() {
    assert!(!IDT.is_completed(), "the IDT is loaded once");
    let stubs = (&raw const kmm_isr_stubs).addr();
    let stray = (&raw const kmm_isr_stray).addr();
    let idt = IDT.call_once(|| {
        core::array::from_fn(|v| Gate::new(if v < 32 { stubs + v * STUB_SIZE } else { stray }))
    });
    mask_pics();
    let ptr = Pointer {
        limit: (size_of::<[Gate; 256]>() - 1) as u16,
        base: idt.as_ptr().addr() as u32,
    };
    // SAFETY: the table lives for the kernel's life (a static), its gates
    // point at the stubs above in the kernel code segment, and the kernel
    // runs identity mapped, so the linear addresses stay valid. Every device
    // line is masked; what still arrives (an exception, a stray vector) has
    // a handler.
    unsafe {
        asm!("lidt [{}]", in(reg) &raw const ptr, options(readonly, nostack, preserves_flags));
        asm!("sti", options(nomem, nostack));
    }
}

/// Interrupts that arrived on a vector that is not an exception.
pub fn stray() -> usize {
    STRAY.load(Ordering::Relaxed)
}
