//! Diagnostics in Linux's text formats from one place: `/proc/buddyinfo`,
//! `/proc/zoneinfo`, `/proc/slabinfo`, `/proc/vmallocinfo` and the boot
//! lines about memory ([`MemSummary`](crate::MemSummary)).

use core::fmt::{self, Write};

use crate::{MemoryManager, Platform};

impl<P: Platform> MemoryManager<'_, P> {
    /// `/proc/buddyinfo`: free blocks of each order, per zone.
    pub fn buddyinfo(&self, w: &mut dyn Write) -> fmt::Result {
        self.buddy.buddyinfo(w)
    }

    /// `/proc/zoneinfo`: each zone's counters, watermarks, protection and
    /// per-CPU lists, in Linux's field names.
    pub fn zoneinfo(&self, w: &mut dyn Write) -> fmt::Result {
        self.buddy.zoneinfo(w)
    }

    /// `/proc/slabinfo` (version 2.1): every cache's objects, slabs and
    /// tunables.
    pub fn slabinfo(&self, w: &mut dyn Write) -> fmt::Result {
        self.slab.slabinfo(w)
    }

    /// `/proc/vmallocinfo`: every live area of the vmalloc range.
    pub fn vmallocinfo(&self, w: &mut dyn Write) -> fmt::Result {
        self.vmalloc.vmallocinfo(w)
    }

    /// The boot lines about memory, as Linux 2.6 prints them on i386
    /// ("…MB HIGHMEM available.", "…MB LOWMEM available.", the zone PFN
    /// ranges, "Memory: …k/…k available (…)").
    pub fn mem_init_lines(&self, w: &mut dyn Write) -> fmt::Result {
        self.summary.write_to(w)
    }

    /// Everything above, each under a `/proc` heading, for a boot log.
    pub fn show_mem(&self, w: &mut dyn Write) -> fmt::Result {
        self.mem_init_lines(w)?;
        writeln!(w, "/proc/buddyinfo:")?;
        self.buddyinfo(w)?;
        writeln!(w, "/proc/zoneinfo:")?;
        self.zoneinfo(w)?;
        writeln!(w, "/proc/slabinfo:")?;
        self.slabinfo(w)?;
        writeln!(w, "/proc/vmallocinfo:")?;
        self.vmallocinfo(w)
    }
}
