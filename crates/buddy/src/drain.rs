//! Draining per-CPU lists back to the zones (Linux's `drain_local_pages`,
//! `drain_all_pages` and the CPU-hotplug drain).

use core::sync::atomic::Ordering;

use kmm_hal::{Cpu, IrqGuard};
use kmm_page_frame::PgFlags;

use crate::buddy::Buddy;
use crate::pcp::{Pcp, PerCpuPages};
use crate::zone::Zone;

/// How far [`Buddy::drain_all_pages`] got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DrainAll {
    /// Every CPU emptied its lists before the call returned (a cross-CPU call).
    Done,
    /// The calling CPU emptied its lists; the others were asked to empty theirs
    /// at their next entry into the allocator.
    Requested,
}

impl<'a, C: Cpu> Buddy<'a, C> {
    /// Moves up to `n` pages from the cold end of a per-CPU list to its zone
    /// (Linux's `free_pcppages_bulk`). The caller holds the list (`p`, from
    /// `CpuLocal::with` or `with_offline`, with its shared part `s`) with
    /// interrupts off (`irq`).
    pub(crate) fn spill(
        &self,
        zone: &'a Zone<'a>,
        s: &PerCpuPages,
        p: &mut Pcp<'a>,
        n: usize,
        irq: &IrqGuard<'_, C>,
    ) {
        // No interrupt point here: the caller holds this CPU's list with
        // interrupts off (the free fast path reaches here through
        // `CpuLocal::with_unchecked`, whose promise is that nothing re-enters).
        let mut locked = zone.lock(irq);
        for _ in 0..n {
            let Some(page) = p.list.pop_back() else {
                break;
            };
            s.sub(p, 1);
            // SAFETY: the owner contract: the page just left the per-CPU list
            // the caller holds and goes straight to the zone, under its lock.
            unsafe { page.remove(PgFlags::PCP) };
            let pfn = self.mem.page_to_pfn(page).expect("pcp page is in mem_map");
            locked.free_one(&self.mem, pfn.as_usize(), 0);
        }
    }

    /// Empties one per-CPU list into its zone and clears its drain request. The
    /// caller holds the list (`p`, with its shared part `s`).
    pub(crate) fn drain_pcp(
        &self,
        zone: &'a Zone<'a>,
        s: &PerCpuPages,
        p: &mut Pcp<'a>,
        irq: &IrqGuard<'_, C>,
    ) {
        s.drain.store(false, Ordering::Relaxed);
        self.spill(zone, s, p, s.count(), irq);
    }

    /// Empties the calling CPU's lists in every zone. A list that is busy (this
    /// call re-entered the allocator from code that holds it) is left to its
    /// holder.
    pub fn drain_local(&self) {
        let irq = self.cpu.irq_guard();
        for z in self.zones {
            let _ = z.pcp.with(&irq, |p, s| self.drain_pcp(z, s, p, &irq));
        }
    }

    /// Empties every CPU's per-CPU lists into the zones (Linux's
    /// `drain_all_pages`). Returns [`DrainAll::Done`] when every CPU's lists
    /// were emptied before the call returned: with a cross-CPU call
    /// ([`crate::BuddyConfig::cross_call`]), called with interrupts enabled
    /// and outside an interrupt handler (the deadlock rule of
    /// [`kmm_hal::CrossCall`]), each CPU empties its own lists as an
    /// interrupt handler. Otherwise — no cross-CPU call, interrupts off, an
    /// interrupt handler — the calling CPU empties its own lists now and
    /// asks every other CPU to empty its own at its next entry into the
    /// allocator ([`DrainAll::Requested`]).
    ///
    /// A list that is busy on its CPU (code there re-entered the allocator
    /// from inside its per-CPU path) is left to its holder.
    pub fn drain_all_pages(&self) -> DrainAll {
        self.cpu.interrupt_point();
        match self.cross {
            Some(x) if !self.cpu.irqs_disabled() && !self.cpu.in_interrupt() => {
                x.on_each_cpu(&|| self.drain_local());
                self.ipi_drains.fetch_add(1, Ordering::Relaxed);
                DrainAll::Done
            }
            _ => {
                self.request_drains();
                DrainAll::Requested
            }
        }
    }

    /// Empties the calling CPU's lists now and asks every other CPU to empty
    /// its own at its next entry into the allocator: the drain of an
    /// allocation that may not wait for other CPUs.
    pub(crate) fn request_drains(&self) {
        let id = {
            let _g = self.cpu.preempt_guard();
            self.cpu.id()
        };
        for z in self.zones {
            for (cpu, pcp) in z.pcp().iter().enumerate() {
                if cpu != id && pcp.count() > 0 {
                    pcp.drain.store(true, Ordering::Relaxed);
                }
            }
        }
        self.drain_local();
    }

    /// Empties the lists of CPU `cpu` from another CPU (Linux's drain when a CPU
    /// goes offline). Called for the calling CPU itself, it is
    /// [`Buddy::drain_local`].
    ///
    /// # Safety
    /// CPU `cpu` must not be in the allocator and must not enter it until this
    /// returns (it is offline, or parked), and no other CPU may drain it at the
    /// same time.
    pub unsafe fn drain_offline_cpu(&self, cpu: usize) {
        let irq = self.cpu.irq_guard();
        if cpu == self.cpu.id() {
            drop(irq);
            return self.drain_local();
        }
        for z in self.zones {
            // SAFETY: `cpu` is not the calling CPU, and the caller guarantees
            // it is not running in the allocator and no one else drains it:
            // nothing else touches its lists (`CpuLocal::with_offline`).
            let _ = unsafe {
                z.pcp
                    .with_offline(cpu, |p, s| self.drain_pcp(z, s, p, &irq))
            };
        }
    }
}
