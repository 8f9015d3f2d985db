//! [`KmapWait`]: how `kmap` waits for a free pkmap entry (Linux's
//! `pkmap_map_wait` wait queue), and [`SpinWait`], the spinning default.

/// The kernel's wait queue for `kmap` when every pkmap entry is in use.
///
/// Both methods are called with no lock held. The protocol has no lost
/// wake-ups: `kmap` reads a generation counter under the pkmap lock, drops
/// the lock and calls [`KmapWait::wait_until`] with a condition that is true
/// once the counter has moved; every `kunmap` that frees an entry moves the
/// counter under the lock and then calls [`KmapWait::wake_all`]. A wake-up
/// that comes before the waiter sleeps is not lost: the condition is already
/// true, and a correct implementation checks it after preparing to sleep.
///
/// A kernel plugs its wait queue in like this (Linux's `wait_event` /
/// `wake_up_all`):
///
/// ```
/// # struct WaitQueue;
/// # impl WaitQueue {
/// #     fn wait_event(&self, cond: impl Fn() -> bool) { while !cond() {} }
/// #     fn wake_up_all(&self) {}
/// # }
/// use kmm_pkmap::KmapWait;
///
/// struct PkmapMapWait(WaitQueue);
///
/// impl KmapWait for PkmapMapWait {
///     fn wait_until(&self, done: &dyn Fn() -> bool) {
///         // prepare_to_wait; if !done() { schedule() }; finish_wait — in a loop.
///         self.0.wait_event(done)
///     }
///     fn wake_all(&self) {
///         self.0.wake_up_all()
///     }
/// }
/// ```
///
/// The trait is safe: a `wait_until` that returns early only makes `kmap`
/// look for an entry again (and wait again).
pub trait KmapWait {
    /// Blocks the caller until `done()` returns true (Linux's
    /// `wait_event(pkmap_map_wait, done())`). `done` is cheap and takes no
    /// lock. Returning early is allowed; never returning after `done()`
    /// became true and [`KmapWait::wake_all`] was called is a lost wake-up.
    fn wait_until(&self, done: &dyn Fn() -> bool);

    /// Wakes every task blocked in [`KmapWait::wait_until`] (Linux's
    /// `wake_up(&pkmap_map_wait)`).
    fn wake_all(&self);
}

impl<W: KmapWait + ?Sized> KmapWait for &W {
    fn wait_until(&self, done: &dyn Fn() -> bool) {
        (**self).wait_until(done)
    }
    fn wake_all(&self) {
        (**self).wake_all()
    }
}

/// Waits by spinning on the condition: right for a kernel without a
/// scheduler, and for the host mock (every simulated CPU is a thread).
#[derive(Debug, Clone, Copy, Default)]
pub struct SpinWait;

impl KmapWait for SpinWait {
    fn wait_until(&self, done: &dyn Fn() -> bool) {
        while !done() {
            core::hint::spin_loop();
        }
    }

    fn wake_all(&self) {}
}
