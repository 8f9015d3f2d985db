//! Draining per-CPU lists back to the zones (Linux's `drain_local_pages`,
//! `drain_all_pages` and the CPU-hotplug drain).

use core::sync::atomic::Ordering;

use kmm_hal::Cpu;
use kmm_page_frame::PgFlags;

use crate::buddy::Buddy;
use crate::pcp::{Pcp, PerCpuPages};
use crate::zone::Zone;

impl<'a, C: Cpu> Buddy<'a, C> {
    /// Moves up to `n` pages from the cold end of a per-CPU list to its zone
    /// (Linux's `free_pcppages_bulk`). The caller owns the list.
    pub(crate) fn spill(&self, zone: &'a Zone<'a>, p: &mut Pcp<'a>, n: usize) {
        let mut locked = zone.lock();
        for _ in 0..n {
            let Some(page) = p.list.pop_back() else {
                break;
            };
            p.count -= 1;
            // SAFETY: the owner contract: the page just left the per-CPU list
            // the caller owns and goes straight to the zone, under its lock.
            unsafe { page.remove(PgFlags::PCP) };
            let pfn = self.mem.page_to_pfn(page).expect("pcp page is in mem_map");
            locked.free_one(&self.mem, pfn.as_usize(), 0);
        }
    }

    /// Empties one per-CPU list into its zone and clears its drain request. The
    /// caller owns the list.
    pub(crate) fn drain_pcp(&self, zone: &'a Zone<'a>, pcp: &PerCpuPages<'a>, p: &mut Pcp<'a>) {
        pcp.drain.store(false, Ordering::Relaxed);
        let n = p.count;
        self.spill(zone, p, n);
        pcp.set_count(p.count);
    }

    /// Empties the calling CPU's lists in every zone.
    pub fn drain_local(&self) {
        let _irq = self.cpu.irq_guard();
        let id = self.cpu.id();
        for z in self.zones {
            if let Some(pcp) = z.pcp.get(id) {
                // SAFETY: `Cpu` contract: interrupts are off (`irq_guard`) and
                // `id()` is this CPU's id, unique among running CPUs and
                // stable while they are off: nothing else touches this list.
                let p = unsafe { &mut *pcp.inner.get() };
                self.drain_pcp(z, pcp, p);
            }
        }
    }

    /// Empties the calling CPU's lists now and asks every other CPU to empty
    /// its own at its next entry into the allocator (Linux sends an IPI; here
    /// the request waits for the CPU, as the HAL has no IPI).
    pub fn drain_all_pages(&self) {
        let id = {
            let _g = self.cpu.preempt_guard();
            self.cpu.id()
        };
        for z in self.zones {
            for (cpu, pcp) in z.pcp.iter().enumerate() {
                if cpu != id && pcp.count() > 0 {
                    pcp.drain.store(true, Ordering::Relaxed);
                }
            }
        }
        self.drain_local();
    }

    /// Empties the lists of CPU `cpu` from another CPU (Linux's drain when a CPU
    /// goes offline).
    ///
    /// # Safety
    /// CPU `cpu` must not be in the allocator and must not enter it until this
    /// returns (it is offline, or parked).
    pub unsafe fn drain_offline_cpu(&self, cpu: usize) {
        let _irq = self.cpu.irq_guard();
        for z in self.zones {
            if let Some(pcp) = z.pcp.get(cpu) {
                // SAFETY: the caller guarantees the owner is not running.
                let p = unsafe { &mut *pcp.inner.get() };
                self.drain_pcp(z, pcp, p);
            }
        }
    }
}
