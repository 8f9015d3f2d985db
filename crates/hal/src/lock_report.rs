//! [`LockReport`]: what the lock checker reports (through
//! [`Cpu::lockdep_report`](crate::Cpu::lockdep_report)). A leaf module, so the
//! `Cpu` trait and the locks both name it without depending on each other.

use core::fmt;
use core::panic::Location;

/// Two places a lock was taken that cannot both be right: from an interrupt
/// handler, and with interrupts enabled (Linux's "inconsistent lock state").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LockReport {
    /// The lock's name.
    pub lock: &'static str,
    /// Where it was taken inside an interrupt handler.
    pub in_interrupt: &'static Location<'static>,
    /// Where it was taken with interrupts enabled.
    pub irqs_enabled: &'static Location<'static>,
}

impl fmt::Display for LockReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "inconsistent lock state: `{}` taken in interrupt context at {} and with interrupts enabled at {}",
            self.lock, self.in_interrupt, self.irqs_enabled
        )
    }
}
