//! [`PkmapTable`]: the persistent kernel mappings (Linux's `pkmap_count`,
//! `last_pkmap_nr`, `kmap_high`, `kunmap_high`, `map_new_virtual` and
//! `flush_all_zero_pkmaps`).
//!
//! `pkmap_count[nr]` is 0 for a free entry (unmapped, and flushed from every
//! TLB), 1 for an entry still mapped but without users (it keeps its page and
//! its page's address until the next wrap-around), `n + 1` for `n` users.

use core::sync::atomic::{AtomicUsize, Ordering};

use kmm_hal::sync::{SpinGuard, SpinLock};
use kmm_hal::{Cpu, FrameSource, KernelTlb, PageTable, PhysAddr, TableReclaim, VirtAddr};
use kmm_page_frame::{Page, PgFlags};

use crate::ctx::{Ctx, KMAP_PROT};
use crate::error::{CheckError, KmapError, KunmapError};
use crate::wait::KmapWait;

/// The most persistent-kmap entries a layout may have (i386's `LAST_PKMAP`
/// with 2-level paging; PAE has 512).
pub const MAX_PKMAP: usize = 1024;

/// What the pkmap lock protects.
struct State {
    /// `pkmap_count`: see the module docs. Only `..last_pkmap` is used.
    count: [u32; MAX_PKMAP],
    /// Where the last search for a free entry stopped (Linux's
    /// `last_pkmap_nr`).
    last_pkmap_nr: usize,
    /// Tasks in `KmapWait::wait_until` (Linux's `waitqueue_active`).
    waiters: usize,
}

/// The counters of the persistent kmaps.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) flush_runs: AtomicUsize,
    pub(crate) kernel_flushes: AtomicUsize,
    pub(crate) waits: AtomicUsize,
}

/// Whether `kmap_high` may wait for an entry.
pub(crate) enum Waiting<'w, W: ?Sized> {
    /// `kmap`: wait through the hook.
    Wait(&'w W),
    /// `try_kmap`: fail with [`KmapError::Full`].
    Fail,
}

/// The pkmap entries and their lock.
///
/// The lock is a plain [`SpinLock`], not an IRQ-safe one: `kmap` may wait,
/// so it and `kunmap` are process context only, and both refuse to run in
/// an interrupt handler or with interrupts off (`Pkmap` checks before it
/// comes here). No interrupt path reaches the lock, and every holder has
/// interrupts on, so a holder's kernel-wide TLB flush is always answered.
pub(crate) struct PkmapTable {
    state: SpinLock<State>,
    /// Moves (under the lock) each time an entry loses its last user: what a
    /// waiter waits for.
    generation: AtomicUsize,
    pub(crate) counters: Counters,
}

impl PkmapTable {
    pub(crate) const fn new() -> PkmapTable {
        PkmapTable {
            state: SpinLock::new(
                "pkmap lock",
                State {
                    count: [0; MAX_PKMAP],
                    last_pkmap_nr: 0,
                    waiters: 0,
                },
            ),
            generation: AtomicUsize::new(0),
            counters: Counters {
                flush_runs: AtomicUsize::new(0),
                kernel_flushes: AtomicUsize::new(0),
                waits: AtomicUsize::new(0),
            },
        }
    }

    /// The entry `page`'s recorded address names, if it has one in the
    /// window (Linux's `page_address` + `PKMAP_NR`).
    fn entry_of<P, F, T, C>(&self, cx: &Ctx<'_, P, F, T, C>, page: &Page) -> Option<usize> {
        cx.mem.page_address(page).and_then(|va| cx.pkmap_nr(va))
    }

    /// Linux's `kmap_high`: maps high-memory page `page` (frame `pa`) or
    /// takes another reference to its mapping. Caller: process context with
    /// interrupts on, `page` a high-memory page of `cx.mem`.
    pub(crate) fn kmap_high<P, F, T, C, W>(
        &self,
        cx: &Ctx<'_, P, F, T, C>,
        page: &Page,
        pa: PhysAddr,
        waiting: Waiting<'_, W>,
    ) -> Result<VirtAddr, KmapError>
    where
        P: PageTable,
        F: FrameSource,
        T: KernelTlb,
        C: Cpu,
        W: KmapWait + ?Sized,
    {
        let mut st = self.state.lock(cx.cpu);
        loop {
            let nr = match self.entry_of(cx, page) {
                Some(nr) => nr,
                None => match self.map_new_virtual(cx, &mut st, page, pa)? {
                    Some(nr) => nr,
                    None => {
                        let Waiting::Wait(hook) = waiting else {
                            return Err(KmapError::Full);
                        };
                        // Read under the lock: a kunmap that frees an entry
                        // after this point moves the generation, so the
                        // waiter's condition cannot miss it.
                        let seen = self.generation.load(Ordering::Acquire);
                        st.waiters += 1;
                        drop(st);
                        self.counters.waits.fetch_add(1, Ordering::Relaxed);
                        hook.wait_until(&|| self.generation.load(Ordering::Acquire) != seen);
                        st = self.state.lock(cx.cpu);
                        st.waiters -= 1;
                        // Somebody may have mapped the page meanwhile: look
                        // again from the top.
                        continue;
                    }
                },
            };
            let c = &mut st.count[nr];
            // `u32::MAX` would be the `u32::MAX - 1`th user: refused.
            if *c >= u32::MAX - 1 {
                return Err(KmapError::TooManyUsers);
            }
            *c += 1;
            return Ok(cx.pkmap_addr(nr));
        }
    }

    /// Linux's `map_new_virtual`: finds a free entry from `last_pkmap_nr` on
    /// (running `flush_all_zero_pkmaps` at each wrap-around), maps `pa` there
    /// with count 1 and records the address in `page`'s descriptor. `None`
    /// if every entry is in use.
    fn map_new_virtual<P, F, T, C>(
        &self,
        cx: &Ctx<'_, P, F, T, C>,
        st: &mut SpinGuard<'_, State>,
        page: &Page,
        pa: PhysAddr,
    ) -> Result<Option<usize>, KmapError>
    where
        P: PageTable,
        F: FrameSource,
        T: KernelTlb,
        C: Cpu,
    {
        let last = cx.last_pkmap;
        let mut count = last;
        loop {
            st.last_pkmap_nr = (st.last_pkmap_nr + 1) % last;
            if st.last_pkmap_nr == 0 {
                self.flush_all_zero_pkmaps(cx, st);
                count = last;
            }
            if st.count[st.last_pkmap_nr] == 0 {
                break;
            }
            count -= 1;
            if count == 0 {
                return Ok(None);
            }
        }
        let nr = st.last_pkmap_nr;
        let va = cx.pkmap_addr(nr);
        {
            let mut t = cx.tables.lock(cx.cpu);
            let t = &mut *t;
            // A free entry is unmapped and was flushed from every TLB when it
            // was freed (or at set-up), and x86 caches only present entries:
            // nothing to flush after mapping it.
            t.pt.map(va, pa, KMAP_PROT, &mut t.frames)
                .map_err(KmapError::Map)?
                .ignore();
        }
        st.count[nr] = 1;
        // SAFETY: the owner contract of `MemMap::set_page_address`: only the
        // pkmap writes the address of a high-memory page (`Pkmap::new`'s
        // caller made this the only pkmap over `mem`), always under the pkmap
        // lock, held here; `va` maps `page`'s frame from now until
        // `flush_all_zero_pkmaps` clears the address before unmapping it.
        unsafe { cx.mem.set_page_address(page, Some(va)) };
        Ok(Some(nr))
    }

    /// Linux's `flush_all_zero_pkmaps`: frees every entry with count 1
    /// (mapped, no user): clears its page's address, unmaps it; then one
    /// kernel-wide flush of the window for all of them, made with the pkmap
    /// lock held (so nobody maps a freed entry before every CPU forgot it)
    /// but the kernel page-table lock dropped and interrupts on.
    fn flush_all_zero_pkmaps<P, F, T, C>(&self, cx: &Ctx<'_, P, F, T, C>, st: &mut State)
    where
        P: PageTable,
        F: FrameSource,
        T: KernelTlb,
        C: Cpu,
    {
        self.counters.flush_runs.fetch_add(1, Ordering::Relaxed);
        let mut need_flush = false;
        {
            let mut t = cx.tables.lock(cx.cpu);
            let t = &mut *t;
            for nr in 0..cx.last_pkmap {
                if st.count[nr] != 1 {
                    continue;
                }
                st.count[nr] = 0;
                let va = cx.pkmap_addr(nr);
                if let Some(tr) = t.pt.translate(va)
                    && let Ok(pfn) = tr.frame.pfn()
                    && let Ok(page) = cx.mem.pfn_to_page(pfn)
                {
                    // SAFETY: as in `map_new_virtual` (pkmap lock held); the
                    // address goes before the mapping does, so a recorded
                    // address is always mapped.
                    unsafe { cx.mem.set_page_address(page, None) };
                }
                // The flush is the kernel-wide one below, for every entry.
                if let Ok((_, flush)) = t.pt.unmap(va, TableReclaim::Keep, &mut t.frames) {
                    flush.ignore();
                }
                need_flush = true;
            }
        }
        if need_flush {
            cx.tlb.flush_tlb_kernel_range(cx.pkmap_base, cx.pkmap_end());
            self.counters.kernel_flushes.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Linux's `kunmap_high`: drops a user of `page`'s mapping; the entry
    /// keeps its mapping (count 1) until the next wrap-around. Wakes the
    /// waiters, with the lock dropped, if the entry lost its last user.
    pub(crate) fn kunmap_high<P, F, T, C, W>(
        &self,
        cx: &Ctx<'_, P, F, T, C>,
        page: &Page,
        hook: &W,
    ) -> Result<(), KunmapError>
    where
        C: Cpu,
        W: KmapWait + ?Sized,
    {
        let mut st = self.state.lock(cx.cpu);
        let nr = self.entry_of(cx, page).ok_or(KunmapError::NotMapped)?;
        let wake = match st.count[nr] {
            0 => return Err(KunmapError::NotMapped),
            1 => return Err(KunmapError::Unbalanced),
            n => {
                st.count[nr] = n - 1;
                if n - 1 == 1 {
                    self.generation.fetch_add(1, Ordering::Release);
                    st.waiters > 0
                } else {
                    false
                }
            }
        };
        drop(st);
        if wake {
            hook.wake_all();
        }
        Ok(())
    }

    /// The users of entry `nr` (`pkmap_count[nr]` less one; `None` for a
    /// free entry or one past `LAST_PKMAP`).
    pub(crate) fn users<P, F, T, C: Cpu>(
        &self,
        cx: &Ctx<'_, P, F, T, C>,
        nr: usize,
    ) -> Option<u32> {
        if nr >= cx.last_pkmap {
            return None;
        }
        let c = self.state.lock(cx.cpu).count[nr];
        c.checked_sub(1)
    }

    /// `pkmap_count[nr]` for every entry, through `f` (under the lock).
    pub(crate) fn with_counts<P, F, T, C: Cpu, R>(
        &self,
        cx: &Ctx<'_, P, F, T, C>,
        f: impl FnOnce(&[u32]) -> R,
    ) -> R {
        let st = self.state.lock(cx.cpu);
        f(&st.count[..cx.last_pkmap])
    }

    /// Checks, under the pkmap lock and then the page-table lock: a free entry
    /// is unmapped; a used one maps a high-memory page whose descriptor
    /// records this entry's address (so no two entries map one page); every
    /// high-memory page with a recorded address names a used entry mapping
    /// its frame.
    pub(crate) fn check<P, F, T, C>(&self, cx: &Ctx<'_, P, F, T, C>) -> Result<(), CheckError>
    where
        P: PageTable,
        F: FrameSource,
        C: Cpu,
    {
        let st = self.state.lock(cx.cpu);
        let t = cx.tables.lock(cx.cpu);
        let err = |what, at| Err(CheckError { what, at });
        for nr in 0..cx.last_pkmap {
            let va = cx.pkmap_addr(nr);
            let tr = t.pt.translate(va);
            match (st.count[nr], tr) {
                (0, None) => {}
                (0, Some(_)) => return err("free pkmap entry is mapped", va),
                (_, None) => return err("used pkmap entry is not mapped", va),
                (_, Some(tr)) => {
                    let page = tr.frame.pfn().ok().and_then(|p| cx.mem.pfn_to_page(p).ok());
                    let Some(page) = page else {
                        return err("pkmap entry maps a frame outside mem_map", va);
                    };
                    if !page.test(PgFlags::HIGHMEM) {
                        return err("pkmap entry maps a low-memory page", va);
                    }
                    if cx.mem.page_address(page) != Some(va) {
                        return err("mapped page does not record its pkmap address", va);
                    }
                }
            }
        }
        let start = cx.mem.highmem_start_pfn() as usize;
        for page in cx.mem.pages().iter().skip(start) {
            let Some(va) = cx.mem.page_address(page) else {
                continue;
            };
            let Some(nr) = cx.pkmap_nr(va) else {
                return err("high-memory page records an address outside pkmap", va);
            };
            if st.count[nr] == 0 {
                return err("high-memory page records a free pkmap entry", va);
            }
            let frame = cx.mem.page_to_phys(page).ok();
            if t.pt.translate(va).map(|tr| tr.frame) != frame {
                return err("pkmap entry maps another frame than its page's", va);
            }
        }
        if st.last_pkmap_nr >= cx.last_pkmap {
            return err("last_pkmap_nr past LAST_PKMAP", cx.pkmap_base);
        }
        Ok(())
    }
}
