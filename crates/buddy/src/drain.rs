//! Draining per-CPU lists back to the zones (Linux's `drain_local_pages`,
//! `drain_all_pages` and the CPU-hotplug drain).

use core::sync::atomic::Ordering;

use kmm_hal::{Cpu, IrqGuard};
use kmm_page_frame::PgFlags;

use crate::buddy::Buddy;
use crate::pcp::{Pcp, PerCpuPages};
use crate::zone::Zone;

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

    /// Empties the calling CPU's lists now and asks every other CPU to empty
    /// its own at its next entry into the allocator (Linux sends an IPI; here
    /// the request waits for the CPU, as the HAL has no IPI).
    pub fn drain_all_pages(&self) {
        self.cpu.interrupt_point();
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
