//! The COM1 serial port (0x3F8, 16550 UART), a [`core::fmt::Write`] writer and
//! the [`kprintln!`] macro.

use core::arch::asm;
use core::fmt;
use core::sync::atomic::{AtomicBool, Ordering};

/// The I/O base of COM1.
pub const COM1: u16 = 0x3F8;

/// Writes `value` to I/O port `port`.
///
/// # Safety
/// Ring 0; the write must not disturb a device the rest of the kernel relies on.
pub unsafe fn outb(port: u16, value: u8) {
    // SAFETY: the caller upholds the contract above; OUT touches no memory.
    unsafe {
        asm!("out dx, al", in("dx") port, in("al") value, options(nomem, nostack, preserves_flags))
    };
}

/// Reads a byte from I/O port `port`.
///
/// # Safety
/// Ring 0; the read must not disturb a device the rest of the kernel relies on.
pub unsafe fn inb(port: u16) -> u8 {
    let value: u8;
    // SAFETY: the caller upholds the contract above; IN touches no memory.
    unsafe {
        asm!("in al, dx", in("dx") port, out("al") value, options(nomem, nostack, preserves_flags))
    };
    value
}

/// Sets COM1 to 38400 baud, 8 data bits, no parity, one stop bit, FIFOs on and
/// interrupts off.
pub fn init() {
    // SAFETY: these are the standard 16550 initialisation writes to COM1's own
    // registers; nothing else in the kernel uses the port.
    unsafe {
        outb(COM1 + 1, 0x00); // no interrupts
        outb(COM1 + 3, 0x80); // DLAB on: the divisor follows
        outb(COM1, 0x03); // divisor 3 = 38400 baud (low byte)
        outb(COM1 + 1, 0x00); // (high byte)
        outb(COM1 + 3, 0x03); // 8N1, DLAB off
        outb(COM1 + 2, 0xC7); // FIFOs on, cleared, 14-byte threshold
        outb(COM1 + 4, 0x03); // DTR and RTS
    }
}

/// Sends one byte, waiting until the transmitter can take it.
fn write_byte(byte: u8) {
    // SAFETY: reading the line-status register and writing the data register of
    // COM1, which only this module uses.
    unsafe {
        while inb(COM1 + 5) & 0x20 == 0 {
            core::hint::spin_loop();
        }
        outb(COM1, byte);
    }
}

/// A writer to COM1. It holds no state; [`print`] keeps the CPUs' lines
/// apart.
#[derive(Debug, Default, Clone, Copy)]
pub struct Serial;

impl fmt::Write for Serial {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for b in s.bytes() {
            if b == b'\n' {
                write_byte(b'\r');
            }
            write_byte(b);
        }
        Ok(())
    }
}

/// Held while a CPU prints, so lines of several CPUs do not interleave.
static PRINTING: AtomicBool = AtomicBool::new(false);

/// Writes formatted text to COM1 (the backend of [`kprintln!`]), one CPU at
/// a time, with interrupts off meanwhile. A CPU that waits too long (the
/// holder panicked or stopped mid-line) prints anyway, so a panic message
/// always comes out.
pub fn print(args: fmt::Arguments<'_>) {
    let flags: usize;
    // SAFETY: saving EFLAGS and clearing IF only masks interrupts.
    unsafe { asm!("pushfd", "pop {}", "cli", out(reg) flags, options(nomem)) };
    let mut spins = 0u32;
    let mut locked = true;
    while PRINTING
        .compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed)
        .is_err()
    {
        spins += 1;
        if spins > 50_000_000 {
            locked = false;
            break;
        }
        core::hint::spin_loop();
    }
    // Serial::write_str never fails.
    let _ = fmt::Write::write_fmt(&mut Serial, args);
    if locked {
        PRINTING.store(false, Ordering::Release);
    }
    if flags & (1 << 9) != 0 {
        // SAFETY: interrupts were enabled on entry.
        unsafe { asm!("sti", options(nomem, nostack)) };
    }
}

/// Prints a line to COM1, like `println!`.
macro_rules! kprintln {
    () => {
        $crate::serial::print(format_args!("\n"))
    };
    ($($arg:tt)*) => {
        $crate::serial::print(format_args!("{}\n", format_args!($($arg)*)))
    };
}
pub(crate) use kprintln;

/// The longest line a [`LineWriter`] holds; the rest of a longer line is cut.
const LINE_MAX: usize = 200;

/// A [`fmt::Write`] adapter to COM1 for text made by library code (such as
/// `/proc/buddyinfo`): it buffers each line, drops the ones `keep` refuses,
/// and prints the others after `prefix`, so they join the kernel's greppable
/// lines. A last line without a newline is printed on drop.
pub struct LineWriter<'p> {
    prefix: &'p str,
    keep: fn(&str) -> bool,
    line: [u8; LINE_MAX],
    len: usize,
}

impl<'p> LineWriter<'p> {
    /// A writer that prints every line after `prefix`.
    pub fn new(prefix: &'p str) -> LineWriter<'p> {
        LineWriter::filtered(prefix, |_| true)
    }

    /// A writer that prints, after `prefix`, the lines for which `keep` is true.
    pub fn filtered(prefix: &'p str, keep: fn(&str) -> bool) -> LineWriter<'p> {
        LineWriter {
            prefix,
            keep,
            line: [0; LINE_MAX],
            len: 0,
        }
    }

    fn end_line(&mut self) {
        let line = core::str::from_utf8(&self.line[..self.len]).unwrap_or("<not UTF-8>");
        if (self.keep)(line) {
            print(format_args!("{}{line}\n", self.prefix));
        }
        self.len = 0;
    }
}

impl fmt::Write for LineWriter<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for b in s.bytes() {
            if b == b'\n' {
                self.end_line();
            } else if self.len < LINE_MAX {
                self.line[self.len] = b;
                self.len += 1;
            }
        }
        Ok(())
    }
}

impl Drop for LineWriter<'_> {
    fn drop(&mut self) {
        if self.len > 0 {
            self.end_line();
        }
    }
}
