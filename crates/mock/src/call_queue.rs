//! The queues of the mock's cross-CPU calls: one per simulated CPU, standing
//! in for the IPI ([`crate::smp`] sends, [`crate::cpu`] takes them at a
//! CPU's interrupt-enabled points). Knows nothing of the CPUs themselves.

use std::collections::VecDeque;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};

/// Cross-CPU calls under way anywhere in the process: while 0, interrupt
/// points and guards skip the queues with one load.
pub(crate) static IN_FLIGHT: AtomicUsize = AtomicUsize::new(0);

/// True if some cross-CPU call may be waiting for a CPU.
#[inline]
pub(crate) fn in_flight() -> bool {
    IN_FLIGHT.load(Ordering::Relaxed) != 0
}

/// One cross-CPU call, on its sender's stack until every target ran it.
pub(crate) struct Call {
    /// The function; only its lifetime is erased (see `MockCpu::cross_call`).
    pub(crate) func: *const (dyn Fn() + Sync + 'static),
    /// Targets that have not finished running `func`.
    pub(crate) remaining: AtomicUsize,
    /// 1 + the first CPU on which `func` panicked, or 0.
    pub(crate) panicked: AtomicUsize,
}

/// A queued [`Call`].
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) struct CallRef(pub(crate) *const Call);

// SAFETY: a `CallRef` is only dereferenced while its call's `remaining`
// count says a target still has to run it, and the sender keeps the `Call`
// alive until that count is 0; the function it points to is `Sync`, so any
// thread may run it.
unsafe impl Send for CallRef {}

/// The per-CPU queues of cross-CPU calls.
pub(crate) struct CallQueues {
    queues: Vec<Mutex<VecDeque<CallRef>>>,
    /// Calls waiting per CPU (the queue's length, readable without its lock).
    pub(crate) queued: Vec<AtomicUsize>,
    /// Functions run per CPU.
    pub(crate) run: Vec<AtomicUsize>,
}

impl CallQueues {
    pub(crate) fn new(cpus: usize) -> CallQueues {
        CallQueues {
            queues: (0..cpus).map(|_| Mutex::new(VecDeque::new())).collect(),
            queued: (0..cpus).map(|_| AtomicUsize::new(0)).collect(),
            run: (0..cpus).map(|_| AtomicUsize::new(0)).collect(),
        }
    }

    fn lock(&self, cpu: usize) -> MutexGuard<'_, VecDeque<CallRef>> {
        self.queues[cpu].lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn push(&self, cpu: usize, call: CallRef) {
        let mut q = self.lock(cpu);
        q.push_back(call);
        self.queued[cpu].store(q.len(), Ordering::Release);
    }

    fn pop(&self, cpu: usize) -> Option<CallRef> {
        if self.queued[cpu].load(Ordering::Acquire) == 0 {
            return None;
        }
        let mut q = self.lock(cpu);
        let c = q.pop_front();
        self.queued[cpu].store(q.len(), Ordering::Release);
        c
    }

    /// Takes `call` off every queue it still waits on; returns how many.
    pub(crate) fn withdraw(&self, call: CallRef) -> usize {
        let mut n = 0;
        for (cpu, queue) in self.queues.iter().enumerate() {
            let mut q = queue.lock().unwrap_or_else(|e| e.into_inner());
            let before = q.len();
            q.retain(|&c| c != call);
            n += before - q.len();
            self.queued[cpu].store(q.len(), Ordering::Release);
        }
        n
    }
}

/// Runs every call queued for CPU `cpu` in `calls`; the caller runs as that
/// CPU, in interrupt context.
pub(crate) fn run_queue(calls: &CallQueues, cpu: usize) {
    while let Some(CallRef(call)) = calls.pop(cpu) {
        // SAFETY: the call was queued and had not run on `cpu`, so its
        // `remaining` count is not 0 and its sender keeps it alive (see
        // `CallRef`); it is only read here, and not touched after the
        // `fetch_sub` that may let the sender go.
        let call = unsafe { &*call };
        // SAFETY: as above: the function outlives the call's wait.
        let func = unsafe { &*call.func };
        if catch_unwind(AssertUnwindSafe(func)).is_err() {
            // The sender panics with the CPU's number; the target goes on.
            let _ =
                call.panicked
                    .compare_exchange(0, cpu + 1, Ordering::Relaxed, Ordering::Relaxed);
        }
        calls.run[cpu].fetch_add(1, Ordering::Relaxed);
        call.remaining.fetch_sub(1, Ordering::AcqRel);
    }
}
