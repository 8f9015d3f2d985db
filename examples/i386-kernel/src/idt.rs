//! A minimal interrupt descriptor table, so the kernel can run with
//! interrupts enabled (pkmap's `kmap` and `kunmap` are process-context calls
//! and refuse to run with interrupts off).
//!
//! Every exception (vectors 0–31) panics with its name, error code, EIP and
//! CR2. The two 8259 PICs are moved to vectors 0x20–0x2F and every line is
//! masked, so no device interrupt arrives. Three local-APIC vectors have
//! handlers (see [`crate::smp`]): the cross-CPU calls
//! (`CALL_FUNCTION_VECTOR`, kmm's `ApicCrossCall::handle_ipi`), the local
//! timer (`LOCAL_TIMER_VECTOR`, allocation from interrupt context) and the
//! spurious vector (counted, no EOI). Their stubs save the SSE state
//! (FXSAVE), since the handlers are Rust code that may use SSE registers,
//! and bracket the handler with `irq_enter`/`irq_exit` so kmm sees interrupt
//! context. The remaining vectors only count a stray interrupt and return.
//! Every CPU loads the same table ([`load`]).

use core::arch::{asm, global_asm};
use core::sync::atomic::{AtomicUsize, Ordering};

use crate::serial::outb;
use crate::smp;

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
    // The local-APIC interrupts: the general registers and the SSE state
    // saved (a 512-byte FXSAVE area, 16-byte aligned, below the saved
    // registers), the Rust handler called with ESP 16-byte aligned.
    ".macro kmm_irq_stub name, handler",
    ".balign 16",
    ".global \\name",
    "\\name:",
    "pushad",
    "cld",
    "mov ebp, esp",
    "sub esp, 512",
    "and esp, -16",
    "fxsave [esp]",
    "call \\handler",
    "fxrstor [esp]",
    "mov esp, ebp",
    "popad",
    "iretd",
    ".endm",
    "kmm_irq_stub kmm_irq_timer, kmm_timer_interrupt",
    "kmm_irq_stub kmm_irq_call_function, kmm_call_function_interrupt",
    // The spurious vector: count it, no EOI (the APIC expects none).
    ".balign 16",
    ".global kmm_irq_spurious",
    "kmm_irq_spurious:",
    "lock inc dword ptr [{spurious}]",
    "iretd",
    // Any other vector: count it and return.
    ".balign 16",
    ".global kmm_isr_stray",
    "kmm_isr_stray:",
    "lock inc dword ptr [{stray}]",
    "iretd",
    stray = sym STRAY,
    spurious = sym SPURIOUS,
);

unsafe extern "C" {
    /// The first exception stub; stub `v` is at `STUB_SIZE * v` from it.
    static kmm_isr_stubs: u8;
    /// The stub of every other vector.
    static kmm_isr_stray: u8;
    /// The stub of the local timer vector.
    static kmm_irq_timer: u8;
    /// The stub of the cross-CPU call vector.
    static kmm_irq_call_function: u8;
    /// The stub of the spurious vector.
    static kmm_irq_spurious: u8;
}

/// Spurious local-APIC interrupts.
static SPURIOUS: AtomicUsize = AtomicUsize::new(0);

/// The local timer's handler (called by its stub with interrupts off).
#[unsafe(no_mangle)]
extern "C" fn kmm_timer_interrupt() {
    let cpu = smp::cpu();
    cpu.irq_enter();
    crate::smp_check::timer_tick();
    // SAFETY: matches the `irq_enter` above, in this handler.
    unsafe { cpu.irq_exit() };
    smp::apic().eoi();
}

/// The cross-CPU call vector's handler (Linux's
/// `smp_call_function_interrupt`), called by its stub with interrupts off.
#[unsafe(no_mangle)]
extern "C" fn kmm_call_function_interrupt() {
    let cpu = smp::cpu();
    cpu.irq_enter();
    smp::calls().handle_ipi();
    // SAFETY: matches the `irq_enter` above, in this handler.
    unsafe { cpu.irq_exit() };
    smp::apic().eoi();
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

/// Builds and loads the table, masks the PICs and enables interrupts.
/// Called once, on the boot CPU.
pub fn init_and_enable() {
    assert!(!IDT.is_completed(), "the IDT is loaded once");
    let stubs = (&raw const kmm_isr_stubs).addr();
    let stray = (&raw const kmm_isr_stray).addr();
    let timer = (&raw const kmm_irq_timer).addr();
    let call = (&raw const kmm_irq_call_function).addr();
    let spurious = (&raw const kmm_irq_spurious).addr();
    IDT.call_once(|| {
        core::array::from_fn(|v| {
            Gate::new(match v {
                0..32 => stubs + v * STUB_SIZE,
                _ if v == usize::from(smp::LOCAL_TIMER_VECTOR) => timer,
                _ if v == usize::from(smp::CALL_FUNCTION_VECTOR) => call,
                _ if v == usize::from(smp::SPURIOUS_APIC_VECTOR) => spurious,
                _ => stray,
            })
        })
    });
    mask_pics();
    load();
    // SAFETY: every vector that can arrive has a handler (the table is
    // loaded); every device line of the PICs is masked.
    unsafe { asm!("sti", options(nomem, nostack)) };
}

/// Loads the table (built by [`init_and_enable`]) on the calling CPU;
/// interrupts stay as they are.
pub fn load() {
    let idt = IDT.get().expect("idt::init_and_enable ran");
    let ptr = Pointer {
        limit: (size_of::<[Gate; 256]>() - 1) as u16,
        base: idt.as_ptr().addr() as u32,
    };
    // SAFETY: the table lives for the kernel's life (a static), its gates
    // point at the stubs above in the kernel code segment, and the kernel
    // runs identity mapped, so the linear addresses stay valid.
    unsafe {
        asm!("lidt [{}]", in(reg) &raw const ptr, options(readonly, nostack, preserves_flags));
    }
}

/// Spurious local-APIC interrupts so far.
pub fn spurious() -> usize {
    SPURIOUS.load(Ordering::Relaxed)
}

/// Interrupts that arrived on a vector that is not an exception.
pub fn stray() -> usize {
    STRAY.load(Ordering::Relaxed)
}
