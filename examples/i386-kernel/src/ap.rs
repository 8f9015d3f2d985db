//! Starting the application processors (Linux's `do_boot_cpu` and
//! `trampoline_32.S`): a real-mode trampoline copied to a low page, then
//! INIT, STARTUP, STARTUP through the local APIC, one CPU at a time.
//!
//! The trampoline runs in real mode at [`TRAMPOLINE_PHYS`], loads a flat GDT
//! of its own, enters protected mode, loads the kernel's CR4 (PAE, PSE, PGE
//! and SSE bits as the boot CPU has them) and CR3, turns paging on (the
//! identity map covers the trampoline and the kernel image), switches to the
//! CPU's own stack and calls [`ap_entry`] with the CPU id. `ap_entry` loads
//! the kernel GDT with the CPU's `%fs` segment and the shared IDT, enables
//! the local APIC, joins the cross-CPU calls and goes to
//! [`crate::smp_check::ap_main`].

use core::arch::global_asm;
use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicUsize, Ordering};

use kmm_i386::{Icr, PAGE_OFFSET, arch};

use crate::idt;
use crate::smp::{self, MAX_CPUS};

/// The physical page of the trampoline (below 1 MiB, page aligned; the
/// STARTUP vector is its page number). Reserved in bootmem, so the page
/// allocator never hands it out.
pub const TRAMPOLINE_PHYS: usize = 0x7000;
/// Bytes of each application processor's stack.
const AP_STACK_SIZE: usize = 32 * 1024;

global_asm!(
    r#"
    .section .rodata.kmm_ap_trampoline, "a"
    .balign 16
    .global kmm_ap_trampoline
    .global kmm_ap_trampoline_end
    .global kmm_ap_params
    .code16
kmm_ap_trampoline:
    cli
    cld
    movw %cs, %ax
    movw %ax, %ds
    lgdtl (kmm_tr_gdt_ptr - kmm_ap_trampoline)
    movl %cr0, %eax
    orl $1, %eax
    movl %eax, %cr0
    ljmpl $0x08, ${tramp} + (kmm_tr_pm32 - kmm_ap_trampoline)
    .code32
kmm_tr_pm32:
    movw $0x10, %ax
    movw %ax, %ds
    movw %ax, %es
    movw %ax, %ss
    movw %ax, %fs
    movw %ax, %gs
    movl ${tramp} + (kmm_ap_params - kmm_ap_trampoline), %ebx
    movl 4(%ebx), %eax
    movl %eax, %cr4
    movl 0(%ebx), %eax
    movl %eax, %cr3
    movl %cr0, %eax
    andl $0xFFFFFFFB, %eax
    orl $0x80010002, %eax
    movl %eax, %cr0
    movl 8(%ebx), %esp
    movl 16(%ebx), %eax
    movl 12(%ebx), %ecx
    fninit
    subl $12, %esp
    pushl %eax
    call *%ecx
1:
    cli
    hlt
    jmp 1b
    .balign 8
kmm_tr_gdt:
    .quad 0
    .quad 0x00CF9A000000FFFF
    .quad 0x00CF92000000FFFF
kmm_tr_gdt_ptr:
    .word 23
    .long {tramp} + (kmm_tr_gdt - kmm_ap_trampoline)
    .balign 4
kmm_ap_params:
    .long 0, 0, 0, 0, 0
kmm_ap_trampoline_end:
    .code32
"#,
    tramp = const TRAMPOLINE_PHYS,
    options(att_syntax)
);

unsafe extern "C" {
    /// First byte of the trampoline (in the kernel image; copied to
    /// [`TRAMPOLINE_PHYS`]).
    static kmm_ap_trampoline: u8;
    /// First byte after it.
    static kmm_ap_trampoline_end: u8;
    /// Its parameter block: CR3, CR4, stack top, entry point, CPU id.
    static kmm_ap_params: u8;
}

/// One application processor's stack.
#[repr(C, align(16))]
struct Stack(UnsafeCell<[u8; AP_STACK_SIZE]>);

// SAFETY: stack `i` is used only by CPU `i`, from its start on.
unsafe impl Sync for Stack {}

/// The stacks, by CPU id (entry 0, the boot CPU's, is unused).
static STACKS: [Stack; MAX_CPUS] = [const { Stack(UnsafeCell::new([0; AP_STACK_SIZE])) }; MAX_CPUS];

/// The most any application processor's stack has held so far, in bytes
/// (as [`crate::boot::stack_high_water`]: the stacks start zeroed and grow
/// down), and the stack size.
pub fn stack_high_water() -> (usize, usize) {
    let used = STACKS
        .iter()
        .map(|s| {
            let bottom = s.0.get().cast::<u8>();
            let mut untouched = 0;
            // SAFETY: `AP_STACK_SIZE` bytes of a static; reading bytes below
            // a running CPU's stack pointer reads what its earlier frames
            // left (a racy read of plain bytes is only a low estimate).
            while untouched < AP_STACK_SIZE && unsafe { bottom.add(untouched).read_volatile() } == 0
            {
                untouched += 1;
            }
            AP_STACK_SIZE - untouched
        })
        .max()
        .unwrap_or(0);
    (used, AP_STACK_SIZE)
}

/// CPUs that reached [`ap_entry`] and left the trampoline.
static STARTED: AtomicUsize = AtomicUsize::new(0);

/// Busy-waits about `us` microseconds on the local APIC timer (QEMU's APIC
/// bus clock is 1 GHz: 62.5 ticks of the clock divided by 16 per µs; real
/// hardware would calibrate). Only used while the boot CPU's timer is
/// otherwise unused.
fn delay_us(us: u32) {
    smp::apic().spin_ticks(us.saturating_mul(62));
}

/// The AP's Rust entry, called by the trampoline on the CPU's own stack
/// with paging on.
extern "C" fn ap_entry(cpu: u32) -> ! {
    let cpu = cpu as usize;
    // SAFETY: the GDT was filled by the boot CPU; this is CPU `cpu`, once.
    unsafe { smp::load_gdt_and_fs(cpu) };
    STARTED.fetch_add(1, Ordering::Release);
    idt::load();
    let apic = smp::apic();
    apic.enable(smp::SPURIOUS_APIC_VECTOR);
    assert_eq!(
        (kmm_hal::Cpu::id(&smp::cpu()), apic.id()),
        (cpu, smp::cpus().apic_ids[cpu]),
        "CPU {cpu}: the id read through %fs or the APIC id is wrong"
    );
    // SAFETY: once on this CPU; its APIC is enabled and its IDT routes the
    // call vector to the handler.
    unsafe { smp::calls().cpu_online() };
    crate::smp_check::ap_main(cpu)
}

/// Starts every CPU of the list but the boot CPU, one at a time; each
/// joins the cross-CPU calls and waits in [`crate::smp_check::ap_main`].
/// Returns the number started. Panics if one does not start.
pub fn start_all() -> usize {
    let cpus = smp::cpus();
    let apic = smp::apic();
    let start = (&raw const kmm_ap_trampoline).addr();
    let end = (&raw const kmm_ap_trampoline_end).addr();
    let params_off = (&raw const kmm_ap_params).addr() - start;
    let len = end - start;
    assert!(len <= 4096, "the trampoline fits in a page");
    let dst = (PAGE_OFFSET + TRAMPOLINE_PHYS) as *mut u8;
    // SAFETY: the trampoline page is reserved in bootmem (no allocator owns
    // it) and mapped by the direct map; the source is the kernel image.
    unsafe { core::ptr::copy_nonoverlapping(start as *const u8, dst, len) };
    for (cpu, stack) in STACKS.iter().enumerate().take(cpus.count).skip(1) {
        let top = stack.0.get().addr() + AP_STACK_SIZE;
        let params = [
            arch::read_cr3(),
            arch::read_cr4(),
            top as u32,
            (ap_entry as extern "C" fn(u32) -> !) as usize as u32,
            cpu as u32,
        ];
        // SAFETY: the parameter block lies inside the copied trampoline, in
        // the reserved page; no AP runs the trampoline now (the previous
        // one left it before counting itself started).
        unsafe {
            core::ptr::copy_nonoverlapping(
                params.as_ptr(),
                dst.add(params_off).cast::<u32>(),
                params.len(),
            )
        };
        let before = STARTED.load(Ordering::Acquire);
        let id = cpus.apic_ids[cpu];
        let page = (TRAMPOLINE_PHYS >> 12) as u8;
        // SAFETY: CPU `id` is not running (never started): INIT puts it in
        // its wait-for-STARTUP state.
        unsafe { apic.send(Icr::init(id)) };
        delay_us(10_000);
        let mut sipis = 0;
        let mut waited = 0;
        while STARTED.load(Ordering::Acquire) == before {
            if sipis < 2 && waited % 20_000 == 0 {
                // SAFETY: CPU `id` is being started and has not checked in;
                // the page holds the trampoline with this CPU's parameters.
                unsafe { apic.send(Icr::startup(id, page)) };
                sipis += 1;
            }
            delay_us(100);
            waited += 100;
            assert!(waited < 5_000_000, "CPU {cpu} (APIC id {id}) did not start");
        }
    }
    cpus.count - 1
}
