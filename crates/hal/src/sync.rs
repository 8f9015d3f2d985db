//! Spin locks that know about interrupts, and the lock checker.
//!
//! Linux takes every lock that an interrupt handler can reach with
//! `spin_lock_irqsave`: if such a lock were ever held with interrupts enabled,
//! an interrupt arriving on the same CPU would spin on it forever. Here that
//! rule is a type:
//!
//! - [`IrqSpinLock`] can only be locked with interrupts off: [`IrqSpinLock::lock`]
//!   takes the caller's [`IrqGuard`] as proof (and the lock guard borrows it, so
//!   interrupts stay off until the lock is released), and
//!   [`IrqSpinLock::lock_irqsave`] disables them itself.
//! - [`SpinLock`] is a plain lock for data no interrupt path reaches.
//!
//! A CPU waiting for a lock another CPU holds calls [`Cpu::cpu_relax`] as it
//! spins: with interrupts enabled (a [`SpinLock`]) it may take interrupts
//! there, as a real CPU does, so a cross-CPU call
//! ([`CrossCall`](crate::CrossCall)) from the holder is answered.
//!
//! # The lock checker (lockdep)
//!
//! In builds with debug assertions (or the `lockdep` feature) every lock
//! remembers the first place it was taken from an interrupt handler
//! ([`Cpu::in_interrupt`]) and the first place it was taken with interrupts
//! enabled. A lock with both is a deadlock waiting for an interrupt to land at
//! the wrong moment, whether or not one did in this run: the checker hands a
//! [`LockReport`] naming the lock and both places to [`Cpu::lockdep_report`]
//! (once per lock), before the lock is taken. [`IrqSpinLock`] can only be
//! taken with interrupts enabled if an outer [`IrqGuard`] was dropped before an
//! inner one; the check catches that too.

use core::fmt;
use core::ops::{Deref, DerefMut};
use core::panic::Location;

use crate::cpu::{Cpu, IrqGuard};

pub use crate::lock_report::LockReport;

#[cfg(any(debug_assertions, feature = "lockdep"))]
mod dep {
    use core::panic::Location;
    use core::ptr;
    use core::sync::atomic::{AtomicBool, AtomicPtr, Ordering};

    use super::LockReport;
    use crate::cpu::Cpu;

    /// What a lock has seen.
    pub(super) struct LockDep {
        in_irq: AtomicPtr<Location<'static>>,
        irqs_on: AtomicPtr<Location<'static>>,
        reported: AtomicBool,
    }

    fn first(slot: &AtomicPtr<Location<'static>>, site: &'static Location<'static>) {
        if slot.load(Ordering::Relaxed).is_null() {
            let _ = slot.compare_exchange(
                ptr::null_mut(),
                ptr::from_ref(site).cast_mut(),
                Ordering::Relaxed,
                Ordering::Relaxed,
            );
        }
    }

    fn site(slot: &AtomicPtr<Location<'static>>) -> Option<&'static Location<'static>> {
        // SAFETY: only `&'static Location` references are ever stored.
        unsafe { slot.load(Ordering::Relaxed).as_ref() }
    }

    impl LockDep {
        pub(super) const fn new() -> LockDep {
            LockDep {
                in_irq: AtomicPtr::new(ptr::null_mut()),
                irqs_on: AtomicPtr::new(ptr::null_mut()),
                reported: AtomicBool::new(false),
            }
        }

        /// Records one acquisition and reports a conflict once.
        pub(super) fn acquire<C: Cpu + ?Sized>(
            &self,
            name: &'static str,
            cpu: &C,
            at: &'static Location<'static>,
        ) {
            if cpu.in_interrupt() {
                first(&self.in_irq, at);
            }
            if !cpu.irqs_disabled() {
                first(&self.irqs_on, at);
            }
            if let (Some(in_interrupt), Some(irqs_enabled)) =
                (site(&self.in_irq), site(&self.irqs_on))
                && !self.reported.swap(true, Ordering::Relaxed)
            {
                cpu.lockdep_report(&LockReport {
                    lock: name,
                    in_interrupt,
                    irqs_enabled,
                });
            }
        }
    }
}

#[cfg(not(any(debug_assertions, feature = "lockdep")))]
mod dep {
    use core::panic::Location;

    use crate::cpu::Cpu;

    /// The checker is compiled out: nothing is recorded.
    pub(super) struct LockDep;

    impl LockDep {
        pub(super) const fn new() -> LockDep {
            LockDep
        }

        #[inline(always)]
        pub(super) fn acquire<C: Cpu + ?Sized>(
            &self,
            _name: &'static str,
            _cpu: &C,
            _at: &'static Location<'static>,
        ) {
        }
    }
}

use dep::LockDep;

/// A locked value; dereferences to it. The lock is released when this drops.
pub struct SpinGuard<'a, T: ?Sized> {
    inner: spin::MutexGuard<'a, T>,
}

impl<T: ?Sized> Deref for SpinGuard<'_, T> {
    type Target = T;
    #[inline]
    fn deref(&self) -> &T {
        &self.inner
    }
}

impl<T: ?Sized> DerefMut for SpinGuard<'_, T> {
    #[inline]
    fn deref_mut(&mut self) -> &mut T {
        &mut self.inner
    }
}

impl<T: ?Sized + fmt::Debug> fmt::Debug for SpinGuard<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&**self, f)
    }
}

/// A named spin lock that feeds the lock checker: what both lock types are.
struct CheckedLock<T: ?Sized> {
    name: &'static str,
    dep: LockDep,
    inner: spin::Mutex<T>,
}

impl<T> CheckedLock<T> {
    const fn new(name: &'static str, value: T) -> Self {
        CheckedLock {
            name,
            dep: LockDep::new(),
            inner: spin::Mutex::new(value),
        }
    }
}

impl<T: ?Sized> CheckedLock<T> {
    /// Records the acquisition (before spinning), then takes the lock,
    /// calling [`Cpu::cpu_relax`] while another CPU holds it (where a CPU
    /// spinning with interrupts on takes them, IPIs included).
    #[inline(always)]
    fn acquire<C: Cpu + ?Sized>(
        &self,
        cpu: &C,
        at: &'static Location<'static>,
    ) -> SpinGuard<'_, T> {
        self.dep.acquire(self.name, cpu, at);
        loop {
            if let Some(inner) = self.inner.try_lock() {
                return SpinGuard { inner };
            }
            self.contended(cpu);
        }
    }

    /// Waits, relaxing, until the lock looks free (test-and-test-and-set).
    #[cold]
    #[inline(never)]
    fn contended<C: Cpu + ?Sized>(&self, cpu: &C) {
        while self.inner.is_locked() {
            cpu.cpu_relax();
        }
    }
}

/// The methods both lock types share, forwarded to their `CheckedLock`.
macro_rules! shared_lock_methods {
    ($lock:ident) => {
        impl<T> $lock<T> {
            /// The value, when nothing else can hold the lock.
            pub fn into_inner(self) -> T {
                self.0.inner.into_inner()
            }
        }

        impl<T: ?Sized> $lock<T> {
            /// The value, through an exclusive borrow of the lock (no locking
            /// needed).
            #[inline]
            pub fn get_mut(&mut self) -> &mut T {
                self.0.inner.get_mut()
            }

            /// The lock's name.
            pub fn name(&self) -> &'static str {
                self.0.name
            }

            /// True if some CPU holds the lock (a racy snapshot, for
            /// diagnostics).
            pub fn is_locked(&self) -> bool {
                self.0.inner.is_locked()
            }
        }

        impl<T: ?Sized> fmt::Debug for $lock<T> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.debug_struct(stringify!($lock))
                    .field("name", &self.0.name)
                    .finish_non_exhaustive()
            }
        }
    };
}

/// A spin lock an interrupt handler may take (Linux's `spin_lock_irqsave`):
/// it is only ever held with interrupts disabled on the holding CPU.
pub struct IrqSpinLock<T: ?Sized>(CheckedLock<T>);

/// An [`IrqSpinLock`] held together with the interrupt guard it took: the
/// lock is released first, then interrupts are restored.
pub struct IrqSaveGuard<'a, T: ?Sized, C: Cpu> {
    lock: SpinGuard<'a, T>,
    _irq: IrqGuard<'a, C>,
}

impl<T: ?Sized, C: Cpu> Deref for IrqSaveGuard<'_, T, C> {
    type Target = T;
    #[inline]
    fn deref(&self) -> &T {
        &self.lock
    }
}

impl<T: ?Sized, C: Cpu> DerefMut for IrqSaveGuard<'_, T, C> {
    #[inline]
    fn deref_mut(&mut self) -> &mut T {
        &mut self.lock
    }
}

impl<T> IrqSpinLock<T> {
    /// A lock named `name` (the checker's reports use the name) around `value`.
    pub const fn new(name: &'static str, value: T) -> Self {
        IrqSpinLock(CheckedLock::new(name, value))
    }
}

impl<T: ?Sized> IrqSpinLock<T> {
    /// Takes the lock; `irq` proves that interrupts are off on this CPU and
    /// keeps them off until the returned guard is dropped.
    #[inline]
    #[track_caller]
    pub fn lock<'a, C: Cpu>(&'a self, irq: &'a IrqGuard<'_, C>) -> SpinGuard<'a, T> {
        self.0.acquire(irq.cpu(), Location::caller())
    }

    /// Disables interrupts on this CPU, then takes the lock; both are undone
    /// when the returned guard is dropped.
    #[inline]
    #[track_caller]
    pub fn lock_irqsave<'a, C: Cpu>(&'a self, cpu: &'a C) -> IrqSaveGuard<'a, T, C> {
        let irq = cpu.irq_guard();
        IrqSaveGuard {
            lock: self.0.acquire(cpu, Location::caller()),
            _irq: irq,
        }
    }
}

shared_lock_methods!(IrqSpinLock);

/// A plain spin lock, for data no interrupt handler can reach. Taking it from
/// an interrupt handler as well as with interrupts enabled is what the lock
/// checker reports.
pub struct SpinLock<T: ?Sized>(CheckedLock<T>);

impl<T> SpinLock<T> {
    /// A lock named `name` around `value`.
    pub const fn new(name: &'static str, value: T) -> Self {
        SpinLock(CheckedLock::new(name, value))
    }
}

impl<T: ?Sized> SpinLock<T> {
    /// Takes the lock on behalf of the CPU `cpu` (the checker asks it whether
    /// an interrupt handler runs and whether interrupts are on).
    #[inline]
    #[track_caller]
    pub fn lock<C: Cpu + ?Sized>(&self, cpu: &C) -> SpinGuard<'_, T> {
        self.0.acquire(cpu, Location::caller())
    }
}

shared_lock_methods!(SpinLock);
