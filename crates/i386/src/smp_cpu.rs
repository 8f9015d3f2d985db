//! [`I386SmpCpu`]: the [`Cpu`] of an SMP i386 kernel. The CPU id, the
//! preemption count and the interrupt-nesting count are per-CPU words read
//! and written through `%fs`, as Linux reads `cpu_number` and
//! `__preempt_count` (`this_cpu_read`, `%fs:` on i386).

use core::arch::asm;

use kmm_hal::{Cpu, IrqState};

/// EFLAGS.IF: maskable interrupts enabled.
const EFLAGS_IF: usize = 1 << 9;

/// Where the three per-CPU words of [`I386SmpCpu`] lie, as byte offsets from
/// the base of the `%fs` segment (each CPU's per-CPU area). Each word is a
/// 32-bit, 4-byte aligned `u32`.
///
/// A kernel with a per-CPU allocator places three per-CPU variables and
/// passes their offsets (Linux: `cpu_number`, `__preempt_count` and the
/// hard-irq part of the preempt count); a small kernel can use
/// [`SmpCpuArea`] and [`SmpCpuArea::OFFSETS`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PerCpuWords {
    /// The CPU's id (`0..count`; Linux's `cpu_number`), written once by the
    /// kernel before the CPU runs kmm code.
    pub cpu_number: usize,
    /// The preemption count (Linux's `__preempt_count`), zero at start.
    pub preempt_count: usize,
    /// The interrupt-nesting count (Linux's `HARDIRQ` bits of the preempt
    /// count), zero at start; [`I386SmpCpu::irq_enter`] and
    /// [`I386SmpCpu::irq_exit`] change it.
    pub irq_count: usize,
}

/// A minimal per-CPU area holding the three words [`I386SmpCpu`] uses, for a
/// kernel that has no per-CPU allocator yet: one per CPU, the `%fs` base of
/// CPU `n` pointing at area `n`.
#[derive(Debug, Default)]
#[repr(C, align(64))]
pub struct SmpCpuArea {
    /// The CPU's id.
    pub cpu_number: u32,
    /// The preemption count.
    pub preempt_count: u32,
    /// The interrupt-nesting count.
    pub irq_count: u32,
}

impl SmpCpuArea {
    /// The offsets of the words in this struct (0, 4 and 8).
    pub const OFFSETS: PerCpuWords = PerCpuWords {
        cpu_number: core::mem::offset_of!(SmpCpuArea, cpu_number),
        preempt_count: core::mem::offset_of!(SmpCpuArea, preempt_count),
        irq_count: core::mem::offset_of!(SmpCpuArea, irq_count),
    };

    /// The area of CPU `id`, both counts zero.
    pub const fn new(id: u32) -> SmpCpuArea {
        SmpCpuArea {
            cpu_number: id,
            preempt_count: 0,
            irq_count: 0,
        }
    }
}

/// The CPUs of an SMP i386 kernel.
///
/// - [`Cpu::id`] reads the running CPU's id through `%fs` (one instruction,
///   so it cannot be torn by an interrupt or a migration: the id read is the
///   id of the CPU the instruction ran on);
/// - the preemption count and the interrupt-nesting count are per-CPU words
///   changed with one `inc`/`dec` through `%fs` (atomic with respect to
///   interrupts on this CPU, which is all a per-CPU count needs);
/// - interrupt guards save EFLAGS and execute `cli`, and restore IF;
/// - [`Cpu::count`] is the number of CPUs the kernel may bring up (possible
///   CPUs), fixed at construction.
///
/// The kernel's interrupt entry calls [`I386SmpCpu::irq_enter`] before its
/// handler and [`I386SmpCpu::irq_exit`] after, so [`Cpu::in_interrupt`] is
/// true while a handler runs: vmalloc and pkmap refuse process-context calls
/// there, and the lock checker sees interrupt-context acquisitions.
#[derive(Debug, Clone, Copy)]
pub struct I386SmpCpu {
    count: usize,
    words: PerCpuWords,
}

impl I386SmpCpu {
    /// The CPUs of a kernel with `count` possible CPUs whose per-CPU words
    /// lie at `words` from the `%fs` base.
    ///
    /// # Safety
    ///
    /// Ring 0. From the first call of any method on any CPU on, and for the
    /// life of the value and its copies:
    ///
    /// - `%fs` on every CPU that runs code using this value is loaded with
    ///   that CPU's own per-CPU segment (see [`crate::percpu_segment`]),
    ///   whose base and limit cover the three words, 4-byte aligned;
    /// - the `cpu_number` word of each CPU holds a distinct id below
    ///   `count` (at least 1), set before the CPU uses this value and never
    ///   changed; the two counts start at zero and only this type changes
    ///   them;
    /// - the kernel calls [`I386SmpCpu::irq_enter`] / [`I386SmpCpu::irq_exit`]
    ///   around every interrupt handler that can reach kmm, and never
    ///   migrates a thread to another CPU while its preemption count is
    ///   non-zero or its interrupts are disabled.
    pub const unsafe fn new(count: usize, words: PerCpuWords) -> I386SmpCpu {
        I386SmpCpu {
            count: if count == 0 { 1 } else { count },
            words,
        }
    }

    /// The offsets of the per-CPU words.
    pub const fn words(&self) -> PerCpuWords {
        self.words
    }

    /// Reads the per-CPU word at `off`.
    #[inline(always)]
    fn read(off: usize) -> u32 {
        let v: u32;
        // SAFETY: `%fs` covers the word on this CPU (`new`'s contract); the
        // load has no side effect.
        unsafe {
            asm!("mov {v}, dword ptr fs:[{off}]", off = in(reg) off, v = out(reg) v,
                options(nostack, preserves_flags, readonly));
        }
        v
    }

    /// Adds one to the per-CPU word at `off`, in one instruction.
    #[inline(always)]
    fn inc(off: usize) {
        // SAFETY: `%fs` covers the word on this CPU (`new`'s contract); one
        // read-modify-write instruction, so an interrupt cannot tear it.
        unsafe {
            asm!("inc dword ptr fs:[{off}]", off = in(reg) off, options(nostack));
        }
    }

    /// Subtracts one from the per-CPU word at `off`, in one instruction.
    #[inline(always)]
    fn dec(off: usize) {
        // SAFETY: as in `inc`.
        unsafe {
            asm!("dec dword ptr fs:[{off}]", off = in(reg) off, options(nostack));
        }
    }

    /// Marks the start of an interrupt handler on this CPU (Linux's
    /// `irq_enter`): [`Cpu::in_interrupt`] is true until the matching
    /// [`I386SmpCpu::irq_exit`]. Called by the kernel's interrupt entry with
    /// interrupts disabled (an interrupt gate), before the handler body.
    #[inline]
    pub fn irq_enter(&self) {
        Self::inc(self.words.irq_count);
    }

    /// Marks the end of the interrupt handler begun by
    /// [`I386SmpCpu::irq_enter`] (Linux's `irq_exit`).
    ///
    /// # Safety
    /// Must match an earlier `irq_enter` on this CPU, in the same handler.
    #[inline]
    pub unsafe fn irq_exit(&self) {
        debug_assert!(
            Self::read(self.words.irq_count) > 0,
            "irq_exit without irq_enter"
        );
        Self::dec(self.words.irq_count);
    }

    /// This CPU's interrupt-nesting depth (0 in process context).
    #[inline]
    pub fn irq_count(&self) -> usize {
        Self::read(self.words.irq_count) as usize
    }
}

fn eflags() -> usize {
    let f: usize;
    // SAFETY: pushfd/pop reads EFLAGS and restores the stack pointer.
    unsafe { asm!("pushfd", "pop {}", out(reg) f, options(nomem, preserves_flags)) };
    f
}

// SAFETY: `new`'s caller promised a distinct, fixed id below `count` in each
// CPU's own `%fs` area, read here in one instruction (unique, and stable
// because a thread is never migrated with preemption or interrupts off);
// `cli`/`sti` really mask interrupts and `irqs_disabled` reads EFLAGS.IF;
// `in_interrupt` is the per-CPU nesting count the kernel's interrupt entry
// keeps (`new`'s contract); `count` is fixed. The default `interrupt_point`,
// `cpu_relax` (PAUSE) and `lockdep_report` run no kmm code.
unsafe impl Cpu for I386SmpCpu {
    #[inline]
    fn count(&self) -> usize {
        self.count
    }

    #[inline]
    fn id(&self) -> usize {
        Self::read(self.words.cpu_number) as usize
    }

    #[inline]
    fn irq_save(&self) -> IrqState {
        let f = eflags();
        // SAFETY: `cli` only masks interrupts; ring 0 is `new`'s contract.
        // No `nomem`: like Linux's `"memory"` clobber, the block is a compiler
        // barrier, so no access of the data the guard protects is moved
        // before interrupts are off.
        unsafe { asm!("cli", options(nostack)) };
        IrqState::from_raw(f & EFLAGS_IF)
    }

    #[inline]
    unsafe fn irq_restore(&self, state: IrqState) {
        if state.raw() & EFLAGS_IF != 0 {
            // SAFETY: interrupts were enabled when the matching `irq_save` ran.
            // A compiler barrier (no `nomem`), as `cli`: no access of the
            // guarded data is moved after interrupts are on again.
            unsafe { asm!("sti", options(nostack)) };
        }
    }

    #[inline]
    fn irqs_disabled(&self) -> bool {
        eflags() & EFLAGS_IF == 0
    }

    #[inline]
    fn preempt_disable(&self) {
        Self::inc(self.words.preempt_count);
    }

    #[inline]
    unsafe fn preempt_enable(&self) {
        debug_assert!(
            Self::read(self.words.preempt_count) > 0,
            "preempt_enable without preempt_disable"
        );
        Self::dec(self.words.preempt_count);
    }

    #[inline]
    fn preempt_count(&self) -> usize {
        Self::read(self.words.preempt_count) as usize
    }

    #[inline]
    fn in_interrupt(&self) -> bool {
        Self::read(self.words.irq_count) != 0
    }
}
