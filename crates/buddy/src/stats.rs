//! Statistics: `/proc/buddyinfo` and `/proc/zoneinfo` text, and counters.

use core::fmt::{self, Write};
use core::sync::atomic::Ordering;

use kmm_hal::Cpu;
use kmm_page_frame::MemMap;

use crate::buddy::Buddy;
use crate::zone::Zone;
use crate::{MAX_ORDER, Watermark};

impl<'a, C: Cpu> Buddy<'a, C> {
    /// Every zone (empty ones too), node by node, DMA, NORMAL, HIGHMEM.
    pub fn zones(&self) -> &'a [Zone<'a>] {
        self.zones
    }

    /// The memory map.
    pub fn mem(&self) -> &MemMap<'a> {
        &self.mem
    }

    /// The CPUs.
    pub fn cpu(&self) -> &C {
        &self.cpu
    }

    /// Allocations that failed (without `Gfp::NOWARN`).
    pub fn failures(&self) -> usize {
        self.failures.load(Ordering::Relaxed)
    }

    /// The cross-CPU call the allocator reaches the other CPUs with
    /// ([`crate::BuddyConfig::cross_call`]).
    pub fn cross_call(&self) -> Option<&'a (dyn kmm_hal::CrossCall + Sync)> {
        self.cross
    }

    /// Drains of every CPU's per-CPU lists made through a cross-CPU call
    /// ([`Buddy::drain_all_pages`] with a cross-CPU call available).
    pub fn ipi_drains(&self) -> usize {
        self.ipi_drains.load(Ordering::Relaxed)
    }

    /// Pages in every zone's free lists plus every per-CPU list.
    pub fn free_pages_total(&self) -> usize {
        self.zones
            .iter()
            .map(|z| z.free_pages() + z.pcp_pages())
            .sum()
    }

    /// Pages given to the allocator, all zones.
    pub fn managed_total(&self) -> usize {
        self.zones.iter().map(Zone::managed).sum()
    }

    /// Writes `/proc/buddyinfo`: per zone, the number of free blocks of each
    /// order.
    pub fn buddyinfo(&self, w: &mut dyn Write) -> fmt::Result {
        for z in self.zones.iter().filter(|z| z.managed() > 0) {
            write!(w, "Node {}, zone {:>8}", z.node(), z.kind().name())?;
            for o in 0..MAX_ORDER {
                write!(w, " {:>6}", z.nr_free(o))?;
            }
            writeln!(w)?;
        }
        Ok(())
    }

    /// Writes `/proc/zoneinfo`-style text: per zone, free pages, watermarks,
    /// spanned/present/managed pages, lowmem reserves and the per-CPU lists.
    pub fn zoneinfo(&self, w: &mut dyn Write) -> fmt::Result {
        for z in self.zones.iter().filter(|z| z.managed() > 0) {
            let s = z.span();
            writeln!(w, "Node {}, zone {:>8}", z.node(), z.kind().name())?;
            writeln!(w, "  pages free     {}", z.free_pages())?;
            writeln!(w, "        min      {}", z.watermark(Watermark::Min))?;
            writeln!(w, "        low      {}", z.watermark(Watermark::Low))?;
            writeln!(w, "        high     {}", z.watermark(Watermark::High))?;
            writeln!(w, "        spanned  {}", s.spanned)?;
            writeln!(w, "        present  {}", s.present)?;
            writeln!(w, "        managed  {}", z.managed())?;
            write!(w, "        protection: (")?;
            for (i, t) in kmm_page_frame::ZoneType::ALL.iter().enumerate() {
                write!(
                    w,
                    "{}{}",
                    if i > 0 { ", " } else { "" },
                    z.lowmem_reserve(*t)
                )?;
            }
            writeln!(w, ")")?;
            writeln!(w, "  start_pfn:     {}", s.start_pfn)?;
            writeln!(w, "  low events:    {}", z.low_events())?;
            writeln!(w, "  pagesets")?;
            for (cpu, p) in z.pcp().iter().enumerate() {
                let (high, batch) = p.limits();
                writeln!(w, "    cpu: {cpu}")?;
                writeln!(w, "              count: {}", p.count())?;
                writeln!(w, "              high:  {high}")?;
                writeln!(w, "              batch: {batch}")?;
            }
        }
        Ok(())
    }
}
