//! [`MockCpu`]: simulated CPUs. A host thread takes a CPU id with
//! [`MockCpu::bind`]; interrupt and preemption state is tracked per thread, so a
//! test can assert that per-CPU code ran with preemption or interrupts off.
//!
//! Interrupts can be delivered: [`MockCpu::with_irq_handler`] installs a
//! handler for the calling thread's CPU, [`MockCpu::raise_irq`] makes it
//! pending, and it runs at the next point where that CPU has interrupts
//! enabled — an [`IrqGuard`](kmm_hal::IrqGuard) restoring "enabled", or an
//! allocator's [`Cpu::interrupt_point`] — with [`Cpu::in_interrupt`] true and
//! interrupts off. The lock checker's reports ([`Cpu::lockdep_report`]) are
//! recorded ([`MockCpu::lockdep_reports`]) and by default panic.
//!
//! Cross-CPU calls ([`kmm_hal::CrossCall`], in `smp.rs`) run on a CPU's thread
//! at the same points, and wherever it spins for a lock with interrupts on.

use std::cell::Cell;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use kmm_hal::sync::LockReport;
use kmm_hal::{Cpu, IrqState};

use crate::call_queue::{self, CallQueues, run_queue};

thread_local! {
    /// The CPU id this thread runs as, if bound.
    static CURRENT: Cell<Option<usize>> = const { Cell::new(None) };
    /// The CPUs (a [`Shared`]'s address) `CURRENT` belongs to; null if unbound.
    static MACHINE: Cell<*const Shared> = const { Cell::new(std::ptr::null()) };
    /// This thread's CPU's interrupt state: [`OFF`] (interrupts disabled) and
    /// [`HANDLER`] (an interrupt handler is installed), in one cell so the
    /// guards' fast path reads one thread-local.
    static IRQ: Cell<u8> = const { Cell::new(0) };
    /// Preemption count of this thread's CPU.
    static PREEMPT: Cell<usize> = const { Cell::new(0) };
    /// IRQ saves and preemption disables made by this thread (counted per thread
    /// so the counting costs no shared cache line on the allocators' fast paths).
    static GUARDS: Cell<(u64, u64)> = const { Cell::new((0, 0)) };
    /// True while an interrupt handler runs on this thread's CPU.
    static IN_IRQ: Cell<bool> = const { Cell::new(false) };
    /// `irq_save`s not yet restored on this thread's CPU (counted in builds
    /// with debug assertions): while one is, an `IrqGuard` lives, and an
    /// `IrqSpinLock` may be held even if interrupts were turned back on by a
    /// guard dropped out of order.
    static SAVES: Cell<usize> = const { Cell::new(0) };
    /// The interrupt handler installed by `with_irq_handler` on this thread,
    /// if any (the pointer is valid while `with_irq_handler` runs).
    static HANDLER_FN: Cell<Option<*const (dyn Fn() + '_)>> = const { Cell::new(None) };
}

/// Simulated interrupts are delivered in builds with debug assertions (every
/// test build); release builds (the benchmarks) measure the guards alone.
const DELIVER: bool = cfg!(debug_assertions);

/// [`IRQ`] bit: interrupts are disabled on this thread's CPU.
const OFF: u8 = 1;
/// [`IRQ`] bit: an interrupt handler is installed (`with_irq_handler`).
const HANDLER: u8 = 2;

/// The simulated CPU the calling thread is bound to, if any (for the TLB
/// checker, which models one TLB per CPU).
pub(crate) fn current_id() -> Option<usize> {
    CURRENT.with(Cell::get)
}

fn irqs_off() -> bool {
    IRQ.with(Cell::get) & OFF != 0
}

fn set_irqs_off(off: bool) {
    IRQ.with(|c| c.set((c.get() & !OFF) | u8::from(off)));
}

/// [`Shared::bound`]: no thread runs as the CPU.
pub(crate) const FREE: u8 = 0;
/// [`Shared::bound`]: a thread is bound to the CPU.
pub(crate) const BOUND: u8 = 1;
/// [`Shared::bound`]: a cross-CPU call's sender runs the CPU's pending calls
/// for it (no thread is bound; `bind` waits until it is done).
pub(crate) const ACTING: u8 = 2;

/// The state of one simulated CPU's thread: what [`as_cpu`] switches and
/// gives back.
#[derive(Clone, Copy)]
struct Context {
    current: Option<usize>,
    machine: *const Shared,
    irq: u8,
    preempt: usize,
    in_irq: bool,
    saves: usize,
}

fn swap_context(new: Context) -> Context {
    Context {
        current: CURRENT.with(|c| c.replace(new.current)),
        machine: MACHINE.with(|c| c.replace(new.machine)),
        irq: IRQ.with(|c| c.replace(new.irq)),
        preempt: PREEMPT.with(|c| c.replace(new.preempt)),
        in_irq: IN_IRQ.with(|c| c.replace(new.in_irq)),
        saves: SAVES.with(|c| c.replace(new.saves)),
    }
}

/// Gives a saved [`Context`] back on drop (also when `f` unwinds).
struct Restore(Context);

impl Drop for Restore {
    fn drop(&mut self) {
        swap_context(self.0);
    }
}

/// Runs `f` on the calling thread as an interrupt handler of CPU `id` of
/// `shared` — id, interrupts off, [`Cpu::in_interrupt`] true, preemption
/// count 0 — then gives the thread its own state back. The caller has
/// claimed the CPU ([`ACTING`]), so no thread is bound to it meanwhile.
pub(crate) fn as_cpu<R>(shared: &Shared, id: usize, f: impl FnOnce() -> R) -> R {
    let _restore = Restore(swap_context(Context {
        current: Some(id),
        machine: shared,
        irq: OFF,
        preempt: 0,
        in_irq: true,
        saves: 0,
    }));
    f()
}

/// Runs `f` as an interrupt handler of the calling thread's own CPU:
/// interrupts off and [`Cpu::in_interrupt`] true until it returns (also when
/// it unwinds). Called with interrupts on.
pub(crate) fn in_irq_context<R>(f: impl FnOnce() -> R) -> R {
    struct Exit(u8);
    impl Drop for Exit {
        fn drop(&mut self) {
            IN_IRQ.with(|c| c.set(false));
            IRQ.with(|c| c.set(self.0));
        }
    }
    let _exit = Exit(IRQ.with(|c| c.replace(c.get() | OFF)));
    IN_IRQ.with(|c| c.set(true));
    f()
}

/// True if the calling thread's CPU has interrupts enabled and runs no
/// interrupt handler: where it may take an interrupt or a cross-CPU call.
pub(crate) fn may_take_irqs() -> bool {
    !irqs_off() && !IN_IRQ.with(Cell::get)
}

/// The calling thread's CPU, if it is one of `shared`'s.
pub(crate) fn this_cpu_of(shared: &Shared) -> Option<usize> {
    if std::ptr::eq(MACHINE.with(Cell::get), shared) {
        CURRENT.with(Cell::get)
    } else {
        None
    }
}

/// Panics if the calling thread may not wait for other CPUs: the deadlock
/// rule of `CrossCall` and `KernelTlb`.
#[track_caller]
pub(crate) fn assert_may_wait(what: &str) {
    if IN_IRQ.with(Cell::get) {
        panic!(
            "kmm-mock: {what} called from an interrupt handler: a cross-CPU call waits for the \
             other CPUs and could deadlock (the deadlock rule)"
        );
    }
    if irqs_off() {
        panic!(
            "kmm-mock: {what} called with interrupts disabled (an IrqSpinLock held, or in an \
             interrupt handler): with several CPUs the cross-CPU call could deadlock (the \
             deadlock rule)"
        );
    }
    let saves = SAVES.with(Cell::get);
    if saves > 0 {
        panic!(
            "kmm-mock: {what} called with {saves} interrupt guard(s) alive (interrupts were \
             re-enabled out of order, and an IrqSpinLock may be held): the cross-CPU call \
             could deadlock (the deadlock rule)"
        );
    }
}

/// Runs the calling thread's CPU's pending cross-CPU calls, as interrupt
/// handlers, if it is one of `shared`'s CPUs and may take interrupts now.
fn take_cross_calls(shared: &Shared) {
    let Some(id) = this_cpu_of(shared) else {
        return;
    };
    if shared.calls.queued[id].load(Ordering::Acquire) == 0 {
        return;
    }
    if !may_take_irqs() {
        return;
    }
    in_irq_context(|| run_queue(&shared.calls, id));
}

pub(crate) struct Shared {
    /// Per CPU: [`FREE`], [`BOUND`] or [`ACTING`].
    pub(crate) bound: Vec<AtomicU8>,
    /// Cross-CPU calls waiting for each CPU.
    pub(crate) calls: CallQueues,
    /// Interrupts raised and not yet delivered, per CPU.
    pending: Vec<AtomicUsize>,
    /// Interrupts delivered, per CPU.
    delivered: Vec<AtomicUsize>,
    reports: Mutex<Vec<LockReport>>,
    lockdep_panics: AtomicBool,
}

/// `count` simulated CPUs. Cheap to clone; clones share the CPUs.
///
/// A thread must take a CPU with [`MockCpu::bind`] (or run under
/// [`MockCpu::run_on_each`]) before it asks for its CPU id: [`Cpu::id`] panics on
/// an unbound thread, because two unbound threads sharing an id would race on
/// per-CPU data. The IRQ and preemption guards work on any thread.
#[derive(Clone)]
pub struct MockCpu {
    pub(crate) shared: Arc<Shared>,
}

impl fmt::Debug for MockCpu {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MockCpu")
            .field("count", &self.shared.bound.len())
            .finish()
    }
}

/// Why a thread could not take a CPU.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum BindError {
    /// The id is not below the CPU count.
    NoSuchCpu,
    /// Another thread runs as that CPU.
    Busy,
    /// This thread is already bound to a CPU.
    AlreadyBound,
}

impl fmt::Display for BindError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            BindError::NoSuchCpu => "no such CPU",
            BindError::Busy => "another thread runs as that CPU",
            BindError::AlreadyBound => "this thread is already bound to a CPU",
        })
    }
}

impl std::error::Error for BindError {}

/// The calling thread runs as a CPU until this is dropped.
#[must_use = "the thread leaves the CPU when the binding is dropped"]
pub struct CpuBinding {
    shared: Arc<Shared>,
    id: usize,
    _not_send: std::marker::PhantomData<*const ()>,
}

impl CpuBinding {
    /// The CPU id taken.
    pub fn id(&self) -> usize {
        self.id
    }
}

impl Drop for CpuBinding {
    fn drop(&mut self) {
        // Leaving a CPU while pinned to it would let another thread take the
        // id while this one still uses the CPU's per-CPU data (the `Cpu`
        // contract's "stable while pinned"): refuse, whatever the build.
        if irqs_off() || PREEMPT.with(Cell::get) > 0 {
            eprintln!(
                "kmm-mock: CPU {} unbound with interrupts or preemption disabled",
                self.id
            );
            std::process::abort();
        }
        CURRENT.with(|c| c.set(None));
        MACHINE.with(|c| c.set(std::ptr::null()));
        self.shared.bound[self.id].store(FREE, Ordering::Release);
    }
}

impl MockCpu {
    /// `count` CPUs (at least one).
    pub fn new(count: usize) -> MockCpu {
        MockCpu {
            shared: Arc::new(Shared {
                bound: (0..count.max(1)).map(|_| AtomicU8::new(FREE)).collect(),
                calls: CallQueues::new(count.max(1)),
                pending: (0..count.max(1)).map(|_| AtomicUsize::new(0)).collect(),
                delivered: (0..count.max(1)).map(|_| AtomicUsize::new(0)).collect(),
                reports: Mutex::new(Vec::new()),
                lockdep_panics: AtomicBool::new(true),
            }),
        }
    }

    /// Makes the calling thread run as CPU `id` until the binding is dropped.
    pub fn bind(&self, id: usize) -> Result<CpuBinding, BindError> {
        let slot = self.shared.bound.get(id).ok_or(BindError::NoSuchCpu)?;
        if CURRENT.with(Cell::get).is_some() {
            return Err(BindError::AlreadyBound);
        }
        // A sender running this CPU's cross-CPU calls for it holds the slot
        // for as long as the calls take: wait for it, it is not a thread.
        while let Err(now) = slot.compare_exchange(FREE, BOUND, Ordering::AcqRel, Ordering::Acquire)
        {
            if now == BOUND {
                return Err(BindError::Busy);
            }
            std::thread::yield_now();
        }
        CURRENT.with(|c| c.set(Some(id)));
        MACHINE.with(|c| c.set(Arc::as_ptr(&self.shared)));
        Ok(CpuBinding {
            shared: self.shared.clone(),
            id,
            _not_send: std::marker::PhantomData,
        })
    }

    /// Runs `f(cpu_id)` on one scoped thread per CPU, each bound to its CPU, and
    /// returns the results in CPU order.
    pub fn run_on_each<T: Send>(&self, f: impl Fn(usize) -> T + Sync) -> Vec<T> {
        std::thread::scope(|s| {
            let handles: Vec<_> = (0..self.count())
                .map(|id| {
                    let f = &f;
                    s.spawn(move || {
                        let _b = self.bind(id).expect("fresh thread binds its CPU");
                        f(id)
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("CPU thread panicked"))
                .collect()
        })
    }

    /// Panics unless preemption is disabled on the calling CPU.
    #[track_caller]
    pub fn assert_preempt_disabled(&self) {
        assert!(
            self.preempt_count() > 0,
            "kmm-mock: CPU {:?} runs with preemption enabled",
            CURRENT.with(Cell::get)
        );
    }

    /// Panics unless interrupts are disabled on the calling CPU.
    #[track_caller]
    pub fn assert_irqs_disabled(&self) {
        assert!(
            self.irqs_disabled(),
            "kmm-mock: CPU {:?} runs with interrupts enabled",
            CURRENT.with(Cell::get)
        );
    }

    /// How many times the calling thread called `irq_save` and
    /// `preempt_disable` (on any machine).
    pub fn guard_counts(&self) -> (u64, u64) {
        GUARDS.with(Cell::get)
    }

    /// Runs `body` with `handler` as the interrupt handler of the calling
    /// thread's CPU: interrupts raised for that CPU ([`MockCpu::raise_irq`])
    /// run `handler` at the next point where the CPU has interrupts enabled.
    /// Handlers do not nest, and are not run by other threads.
    ///
    /// Interrupts are delivered only in builds with debug assertions (test
    /// builds): release builds keep the guards' fast path as lean as a real
    /// CPU's for the benchmarks. [`MockCpu::delivers_irqs`] tells which.
    pub fn with_irq_handler<R>(&self, handler: &(dyn Fn() + '_), body: impl FnOnce() -> R) -> R {
        struct Restore(Option<*const (dyn Fn() + 'static)>);
        impl Drop for Restore {
            fn drop(&mut self) {
                HANDLER_FN.with(|h| h.set(self.0));
                if self.0.is_none() {
                    IRQ.with(|c| c.set(c.get() & !HANDLER));
                }
            }
        }
        // SAFETY: only the lifetime is erased; the pointer is removed again
        // (by `Restore`, also on unwinding) before `handler`'s borrow ends,
        // and it is only dereferenced on this thread, while it is installed.
        let erased: *const (dyn Fn() + 'static) =
            unsafe { std::mem::transmute::<*const (dyn Fn() + '_), _>(handler) };
        assert!(
            !irqs_off(),
            "kmm-mock: install an interrupt handler with interrupts enabled"
        );
        let _restore = Restore(HANDLER_FN.with(|h| h.replace(Some(erased))));
        IRQ.with(|c| c.set(c.get() | HANDLER));
        let r = body();
        self.interrupt_point();
        r
    }

    /// True if this build delivers simulated interrupts (debug assertions on).
    pub const fn delivers_irqs() -> bool {
        DELIVER
    }

    /// Makes `n` interrupts pending on CPU `cpu` (any thread may raise them).
    pub fn raise_irq(&self, cpu: usize, n: usize) {
        if let Some(p) = self.shared.pending.get(cpu) {
            p.fetch_add(n, Ordering::Relaxed);
        }
    }

    /// Interrupts raised for CPU `cpu` and not yet delivered.
    pub fn pending_irqs(&self, cpu: usize) -> usize {
        self.shared
            .pending
            .get(cpu)
            .map_or(0, |p| p.load(Ordering::Relaxed))
    }

    /// Interrupts delivered on CPU `cpu` so far.
    pub fn delivered_irqs(&self, cpu: usize) -> usize {
        self.shared
            .delivered
            .get(cpu)
            .map_or(0, |p| p.load(Ordering::Relaxed))
    }

    /// The lock checker's reports so far.
    pub fn lockdep_reports(&self) -> Vec<LockReport> {
        self.shared
            .reports
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Whether a lock checker report also panics (the default) or is only
    /// recorded.
    pub fn set_lockdep_panics(&self, panics: bool) {
        self.shared.lockdep_panics.store(panics, Ordering::Relaxed);
    }

    /// Where interrupts are on (an `IrqGuard` restored "enabled", an
    /// interrupt point): takes this thread's CPU's pending cross-CPU calls,
    /// then, in builds that deliver them, its simulated interrupts.
    #[cold]
    #[inline(never)]
    pub(crate) fn irqs_on_slow(&self) {
        take_cross_calls(&self.shared);
        if DELIVER && IRQ.with(Cell::get) == HANDLER {
            self.deliver_slow();
        }
    }

    /// Runs pending interrupts of this thread's CPU: called where it has
    /// interrupts enabled and a handler installed.
    #[cold]
    fn deliver_slow(&self) {
        let Some(id) = this_cpu_of(&self.shared) else {
            return;
        };
        if HANDLER_FN.with(Cell::get).is_none() {
            // A guard saved while a handler was installed restored the stale
            // bit after the handler went.
            IRQ.with(|c| c.set(c.get() & !HANDLER));
            return;
        }
        while !irqs_off() && !IN_IRQ.with(Cell::get) {
            let pending = &self.shared.pending[id];
            if pending
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
                .is_err()
            {
                return;
            }
            let Some(handler) = HANDLER_FN.with(Cell::get) else {
                return;
            };
            self.shared.delivered[id].fetch_add(1, Ordering::Relaxed);
            set_irqs_off(true);
            IN_IRQ.with(|c| c.set(true));
            struct Exit;
            impl Drop for Exit {
                fn drop(&mut self) {
                    IN_IRQ.with(|c| c.set(false));
                    set_irqs_off(false);
                }
            }
            let _exit = Exit;
            // SAFETY: installed by `with_irq_handler` on this thread, which
            // is still running (it removes the pointer before returning).
            unsafe { (*handler)() };
        }
    }
}

// SAFETY: ids come from `bind`, which gives an id to at most one thread at a
// time (a compare-exchange on `bound`), or from a cross-CPU call's sender
// acting as a CPU no thread is bound to, which claims it the same way
// (`ACTING`, so `bind` waits) and gives its own state back before releasing
// it; `id` panics on an unbound thread,
// so no two running threads share an id, and every id is `< count()` (fixed at
// construction). A thread keeps its id until its binding drops, which aborts
// if interrupts or preemption are still disabled, so the id is stable while
// pinned (a sender acting as another CPU does so only inside the nested,
// interrupt-context run of that CPU's calls, and its own id, interrupt and
// preemption state are back before its code goes on, as after an interrupt).
// The interrupt state is per thread (per simulated CPU): `irq_save` really
// keeps this CPU's simulated interrupts and cross-CPU calls (the only ones)
// from running until it is restored, and `in_interrupt` is true exactly
// while one runs.
unsafe impl Cpu for MockCpu {
    #[inline]
    fn count(&self) -> usize {
        self.shared.bound.len()
    }

    #[inline]
    #[track_caller]
    fn id(&self) -> usize {
        match CURRENT.with(Cell::get) {
            Some(id) => id,
            None => panic!("kmm-mock: this thread is not bound to a simulated CPU (MockCpu::bind)"),
        }
    }

    #[inline]
    fn irq_save(&self) -> IrqState {
        GUARDS.with(|g| g.set((g.get().0 + 1, g.get().1)));
        if DELIVER {
            SAVES.with(|c| c.set(c.get() + 1));
        }
        // The saved state is the whole cell: restoring it is one store.
        IrqState::from_raw(usize::from(IRQ.with(|c| {
            let v = c.get();
            c.set(v | OFF);
            v
        })))
    }

    #[inline]
    unsafe fn irq_restore(&self, state: IrqState) {
        // Checked in test builds; benchmarks (release) measure the guard alone.
        debug_assert!(
            irqs_off(),
            "kmm-mock: irq_restore with interrupts already enabled"
        );
        if DELIVER {
            SAVES.with(|c| c.set(c.get().saturating_sub(1)));
        }
        // Truncation: the state is a value of the cell (`irq_save`).
        let v = state.raw() as u8;
        IRQ.with(|c| c.set(v));
        // Release builds (the benchmarks) keep the restore to this store:
        // there, cross-CPU calls are taken at `interrupt_point` and
        // `cpu_relax` only (and the sender serves unbound CPUs).
        if DELIVER && v & OFF == 0 && (v == HANDLER || call_queue::in_flight()) {
            self.irqs_on_slow();
        }
    }

    #[inline]
    fn irqs_disabled(&self) -> bool {
        irqs_off()
    }

    #[inline]
    fn preempt_disable(&self) {
        GUARDS.with(|g| g.set((g.get().0, g.get().1 + 1)));
        PREEMPT.with(|c| c.set(c.get() + 1));
    }

    #[inline]
    unsafe fn preempt_enable(&self) {
        PREEMPT.with(|c| {
            let n = c.get();
            assert!(n > 0, "kmm-mock: preempt_enable without preempt_disable");
            c.set(n - 1);
        });
    }

    #[inline]
    fn preempt_count(&self) -> usize {
        PREEMPT.with(Cell::get)
    }

    #[inline]
    fn in_interrupt(&self) -> bool {
        IN_IRQ.with(Cell::get)
    }

    #[inline]
    fn interrupt_point(&self) {
        let v = IRQ.with(Cell::get);
        if v & OFF == 0 && ((DELIVER && v == HANDLER) || call_queue::in_flight()) {
            self.irqs_on_slow();
        }
    }

    /// Takes pending cross-CPU calls when interrupts are on (a CPU spinning
    /// for a plain lock answers IPIs), then spins. Simulated interrupts keep
    /// their own delivery points.
    #[inline]
    fn cpu_relax(&self) {
        if !irqs_off() && call_queue::in_flight() {
            take_cross_calls(&self.shared);
        }
        std::hint::spin_loop();
    }

    fn lockdep_report(&self, report: &LockReport) {
        self.shared
            .reports
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(*report);
        if self.shared.lockdep_panics.load(Ordering::Relaxed) {
            panic!("kmm-mock lockdep: {report}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guards_nest_and_restore() {
        let cpu = MockCpu::new(2);
        assert!(!cpu.irqs_disabled());
        {
            let _a = cpu.irq_guard();
            cpu.assert_irqs_disabled();
            {
                let _b = cpu.irq_guard();
                cpu.assert_irqs_disabled();
            }
            cpu.assert_irqs_disabled();
        }
        assert!(!cpu.irqs_disabled());
        {
            let _b = cpu.bind(1).unwrap();
            let g = cpu.preempt_guard();
            cpu.assert_preempt_disabled();
            assert_eq!(g.cpu_id(), 1);
        }
        assert_eq!(cpu.preempt_count(), 0);
        assert_eq!(cpu.guard_counts(), (2, 1));
    }

    #[test]
    #[should_panic(expected = "preemption enabled")]
    fn assert_catches_missing_guard() {
        let cpu = MockCpu::new(1);
        let _b = cpu.bind(0).unwrap();
        cpu.assert_preempt_disabled();
    }

    #[test]
    #[should_panic(expected = "not bound")]
    fn unbound_thread_has_no_cpu_id() {
        let _ = MockCpu::new(2).id();
    }

    #[test]
    fn threads_are_cpus() {
        let cpu = MockCpu::new(3);
        let ids = cpu.run_on_each(|id| {
            assert_eq!(cpu.bind(id).err(), Some(BindError::AlreadyBound));
            let g = cpu.preempt_guard();
            g.cpu_id()
        });
        assert_eq!(ids, vec![0, 1, 2]);
        let b = cpu.bind(1).unwrap();
        assert_eq!(cpu.id(), 1);
        let other = std::thread::scope(|s| s.spawn(|| cpu.bind(1).err()).join().unwrap());
        assert_eq!(other, Some(BindError::Busy));
        drop(b);
        assert_eq!(cpu.bind(3).err(), Some(BindError::NoSuchCpu));
        assert_eq!(cpu.bind(0).map(|b| b.id()), Ok(0));
    }
}
