//! Leaving QEMU through the `isa-debug-exit` device (`iobase=0xf4,iosize=0x04`).
//!
//! QEMU exits with status `(value << 1) | 1` when a value is written to the port.

use core::arch::asm;

/// The I/O port of the `isa-debug-exit` device.
pub const DEBUG_EXIT_PORT: u16 = 0xf4;

/// How the kernel ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitCode {
    /// Every check passed: QEMU exits with 33.
    Success,
    /// A check failed or the kernel panicked: QEMU exits with 35.
    Failure,
}

impl ExitCode {
    /// The value written to the port.
    pub const fn value(self) -> u32 {
        match self {
            ExitCode::Success => 0x10,
            ExitCode::Failure => 0x11,
        }
    }
}

/// Stops the machine with `code`. Without the exit device (a real PC, or QEMU
/// started without it) the CPU halts with interrupts off.
pub fn exit(code: ExitCode) -> ! {
    // SAFETY: a write to the debug-exit port has no effect on memory; on a machine
    // without the device the write is ignored.
    unsafe {
        asm!("out dx, eax", in("dx") DEBUG_EXIT_PORT, in("eax") code.value(),
            options(nomem, nostack, preserves_flags));
    }
    loop {
        // SAFETY: halting with interrupts off only stops the CPU.
        unsafe { asm!("cli", "hlt", options(nomem, nostack)) };
    }
}
