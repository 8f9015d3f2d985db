//! [`I386Cpu`]: the [`Cpu`] of a uniprocessor i386 kernel.

use core::arch::asm;
use core::sync::atomic::{AtomicUsize, Ordering};

use kmm_hal::{Cpu, IrqState};

/// EFLAGS.IF: maskable interrupts enabled.
const EFLAGS_IF: usize = 1 << 9;

/// The boot CPU of a uniprocessor kernel: id 0 of 1. Interrupt guards save
/// EFLAGS and execute `cli`, and restore IF as it was; the preemption count is
/// kept here for the kernel's scheduler to consult. An SMP kernel uses
/// [`crate::I386SmpCpu`] instead (id and counts per CPU).
#[derive(Debug)]
pub struct I386Cpu {
    preempt: AtomicUsize,
}

impl I386Cpu {
    /// The boot CPU, preemption enabled.
    ///
    /// # Safety
    /// Only one CPU may run code that uses this value (a uniprocessor kernel,
    /// or an SMP kernel before it starts the other CPUs): every `I386Cpu`
    /// answers id 0, and [`Cpu`]'s contract asks ids to be unique among the
    /// running CPUs. The code must run in ring 0 (it executes `cli`/`sti`).
    pub const unsafe fn new() -> I386Cpu {
        I386Cpu {
            preempt: AtomicUsize::new(0),
        }
    }
}

fn eflags() -> usize {
    let f: usize;
    // SAFETY: pushfd/pop reads EFLAGS and restores the stack pointer.
    unsafe { asm!("pushfd", "pop {}", out(reg) f, options(nomem, preserves_flags)) };
    f
}

// SAFETY: one CPU (`count` 1, `id` 0: unique and stable, as `new`'s caller
// promised); `cli` and `sti` really mask interrupts and `irqs_disabled` reads
// EFLAGS.IF. `in_interrupt` keeps the default (false), which only weakens the
// lock checker.
unsafe impl Cpu for I386Cpu {
    fn count(&self) -> usize {
        1
    }

    fn id(&self) -> usize {
        0
    }

    fn irq_save(&self) -> IrqState {
        let f = eflags();
        // SAFETY: `cli` only masks interrupts; ring 0 is this type's contract.
        // No `nomem`: like Linux's `"memory"` clobber, the block is a compiler
        // barrier, so no access of the data the guard protects is moved
        // before interrupts are off.
        unsafe { asm!("cli", options(nostack)) };
        IrqState::from_raw(f & EFLAGS_IF)
    }

    unsafe fn irq_restore(&self, state: IrqState) {
        if state.raw() & EFLAGS_IF != 0 {
            // SAFETY: interrupts were enabled when the matching `irq_save` ran.
            // A compiler barrier (no `nomem`), as `cli`: no access of the
            // guarded data is moved after interrupts are on again.
            unsafe { asm!("sti", options(nostack)) };
        }
    }

    fn irqs_disabled(&self) -> bool {
        eflags() & EFLAGS_IF == 0
    }

    fn preempt_disable(&self) {
        self.preempt.fetch_add(1, Ordering::Acquire);
    }

    unsafe fn preempt_enable(&self) {
        let before = self.preempt.fetch_sub(1, Ordering::Release);
        debug_assert!(before > 0, "preempt_enable without preempt_disable");
    }

    fn preempt_count(&self) -> usize {
        self.preempt.load(Ordering::Relaxed)
    }
}
