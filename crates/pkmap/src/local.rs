//! [`LocalStacks`]: `kmap_local_page` / `kunmap_local` (modern Linux) and
//! `kmap_atomic` / `kunmap_atomic` (2.6) on per-CPU fixmap slots.
//!
//! Each CPU has `kmap_per_cpu` slots (`Fixmap::kmap_slot(cpu, idx)`), used
//! as a stack: the `n`th nested mapping takes slot `n`, and mappings are
//! undone in reverse order. Only the owning CPU ever maps, uses or unmaps
//! its slots, so an unmap is flushed on this CPU alone. An interrupt handler
//! pushes on top of what the code it interrupted holds, and pops before it
//! returns.
//!
//! A low-memory page gets its direct-map address and no fixmap PTE, but
//! still takes a stack entry (Linux takes none): the ordering and
//! "not mine" checks then work the same whatever memory a page is in, and
//! a kernel's nesting depth does not depend on where its pages happen to
//! lie.

use core::sync::atomic::{AtomicUsize, Ordering};

use kmm_hal::{
    Cpu, CpuLocal, FrameSource, PAGE_SIZE, PageTable, PerCpu, Pfn, TableReclaim, VirtAddr,
};

use crate::ctx::{Ctx, KMAP_PROT, Memory};
use crate::error::{CheckError, KmapLocalError, KunmapLocalError};

/// The most CPUs a pkmap serves (Linux's `NR_CPUS` for the slot stacks).
pub const MAX_CPUS: usize = 16;

/// The most local mappings one CPU may nest (Linux's `KM_MAX_IDX`); the
/// layout's `kmap_per_cpu` (`KM_TYPE_NR`, 20 on i386) must not exceed it.
pub const KM_MAX: usize = 32;

/// A stack entry: the frame number shifted left by two, bit 0 set for
/// `kmap_atomic`, bit 1 for high memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Entry(usize);

impl Entry {
    const ATOMIC: usize = 1;
    const HIGH: usize = 2;

    fn new(pfn: Pfn, atomic: bool, high: bool) -> Entry {
        let mut e = pfn.as_usize() << 2;
        if atomic {
            e |= Entry::ATOMIC;
        }
        if high {
            e |= Entry::HIGH;
        }
        Entry(e)
    }

    fn pfn(self) -> Pfn {
        Pfn::new(self.0 >> 2)
    }

    fn atomic(self) -> bool {
        self.0 & Entry::ATOMIC != 0
    }

    fn high(self) -> bool {
        self.0 & Entry::HIGH != 0
    }
}

/// One CPU's stack (only that CPU touches it).
struct Stack {
    depth: usize,
    entries: [Entry; KM_MAX],
}

/// One CPU's numbers anyone may read.
struct Shared {
    /// The stack's depth (mirrors `Stack::depth`).
    depth: AtomicUsize,
    /// `kmap_atomic` mappings held: Linux's `pagefault_disable` count.
    pagefault_disabled: AtomicUsize,
}

/// Every CPU's slot stack.
pub(crate) struct LocalStacks {
    cpus: [PerCpu<Stack, Shared>; MAX_CPUS],
    /// Guards whose drop found their mapping not on top (see
    /// `KmapLocalGuard`).
    pub(crate) guard_errors: AtomicUsize,
}

impl LocalStacks {
    pub(crate) const fn new() -> LocalStacks {
        LocalStacks {
            cpus: [const {
                PerCpu::new(
                    Stack {
                        depth: 0,
                        entries: [Entry(0); KM_MAX],
                    },
                    Shared {
                        depth: AtomicUsize::new(0),
                        pagefault_disabled: AtomicUsize::new(0),
                    },
                )
            }; MAX_CPUS],
            guard_errors: AtomicUsize::new(0),
        }
    }

    /// The slots as per-CPU data.
    fn local(&self) -> CpuLocal<'_, Stack, Shared> {
        // SAFETY: every `with` on these slots is given a guard of the one
        // `Cpu` value the pkmap was built with (`Ctx::cpu`), so ids are those
        // of one machine.
        unsafe { CpuLocal::new(&self.cpus) }
    }

    /// The address of stack entry `idx` of CPU `cpu`: its fixmap slot for a
    /// high-memory page, its direct-map address for a low one.
    fn addr_of<P, F, T, C>(
        cx: &Ctx<'_, P, F, T, C>,
        cpu: usize,
        idx: usize,
        e: Entry,
    ) -> Option<VirtAddr> {
        if e.high() {
            cx.fixmap
                .kmap_slot(cpu, idx)
                .and_then(|s| cx.fixmap.fix_to_virt(s))
        } else {
            cx.mem.direct_map().phys_to_virt(e.pfn().phys())
        }
    }

    /// Linux's `kmap_local_page` (`atomic`: `kmap_atomic`): disables
    /// preemption (and, for `kmap_atomic`, page faults), pushes the page on
    /// this CPU's stack and maps a high-memory page at the slot. On error
    /// nothing changed, preemption included.
    pub(crate) fn kmap<P, F, T, C>(
        &self,
        cx: &Ctx<'_, P, F, T, C>,
        pfn: Pfn,
        memory: Memory,
        atomic: bool,
    ) -> Result<VirtAddr, KmapLocalError>
    where
        P: PageTable,
        F: FrameSource,
        C: Cpu,
    {
        cx.cpu.preempt_disable();
        let r = {
            // Interrupts off while the stack is held: an interrupt handler
            // that maps comes before or after, never in the middle.
            let irq = cx.cpu.irq_guard();
            let cpu = irq.cpu().id();
            self.local()
                .with(&irq, |stack, shared| {
                    let idx = stack.depth;
                    if idx >= cx.fixmap.kmap_per_cpu.min(KM_MAX) {
                        return Err(KmapLocalError::TooDeep);
                    }
                    let high = matches!(memory, Memory::High(_));
                    let entry = Entry::new(pfn, atomic, high);
                    let va = Self::addr_of(cx, cpu, idx, entry).ok_or(KmapLocalError::TooDeep)?;
                    if let Memory::High(pa) = memory {
                        let mut t = cx.tables.lock(cx.cpu);
                        let t = &mut *t;
                        // The slot is unmapped and this CPU flushed it when
                        // it last unmapped it; no other CPU uses it.
                        t.pt.map(va, pa, KMAP_PROT, &mut t.frames)
                            .map_err(KmapLocalError::Map)?
                            .ignore();
                    }
                    stack.entries[idx] = entry;
                    stack.depth = idx + 1;
                    shared.depth.store(idx + 1, Ordering::Relaxed);
                    if atomic {
                        shared.pagefault_disabled.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(va)
                })
                .unwrap_or(Err(KmapLocalError::Busy))
        };
        if r.is_err() {
            // SAFETY: matches the `preempt_disable` above, on this CPU
            // (preemption was off in between).
            unsafe { cx.cpu.preempt_enable() };
        }
        r
    }

    /// Linux's `kunmap_local` (`atomic`: `kunmap_atomic`): `addr` (anywhere in
    /// the page) must be this CPU's most recent local mapping, made by the
    /// matching call. Clears the slot's PTE, flushes it on this CPU, pops
    /// the stack and enables preemption (and page faults) again. On error
    /// nothing changed.
    pub(crate) fn kunmap<P, F, T, C>(
        &self,
        cx: &Ctx<'_, P, F, T, C>,
        addr: VirtAddr,
        atomic: bool,
    ) -> Result<(), KunmapLocalError>
    where
        P: PageTable,
        F: FrameSource,
        C: Cpu,
    {
        let va = VirtAddr::new(addr.as_usize() & !(PAGE_SIZE - 1));
        let r = {
            let irq = cx.cpu.irq_guard();
            let cpu = irq.cpu().id();
            self.local()
                .with(&irq, |stack, shared| {
                    let depth = stack.depth;
                    if depth == 0 {
                        return Err(KunmapLocalError::NothingMapped);
                    }
                    let top = stack.entries[depth - 1];
                    let top_va = Self::addr_of(cx, cpu, depth - 1, top);
                    if top_va != Some(va) {
                        let below = (0..depth - 1)
                            .any(|i| Self::addr_of(cx, cpu, i, stack.entries[i]) == Some(va));
                        return Err(match (below, top_va) {
                            (true, Some(top)) => KunmapLocalError::OutOfOrder { top },
                            _ => KunmapLocalError::NotMapped,
                        });
                    }
                    if top.atomic() != atomic {
                        return Err(KunmapLocalError::WrongKind);
                    }
                    if top.high() {
                        let mut t = cx.tables.lock(cx.cpu);
                        let t = &mut *t;
                        let (_, flush) =
                            t.pt.unmap(va, TableReclaim::Keep, &mut t.frames)
                                .map_err(KunmapLocalError::Map)?;
                        // Local: only this CPU ever uses its slots, so only
                        // its TLB can hold the translation for use.
                        flush.flush(&t.pt);
                    }
                    stack.depth = depth - 1;
                    shared.depth.store(depth - 1, Ordering::Relaxed);
                    if atomic {
                        shared.pagefault_disabled.fetch_sub(1, Ordering::Relaxed);
                    }
                    Ok(())
                })
                .unwrap_or(Err(KunmapLocalError::Busy))
        };
        if r.is_ok() {
            // SAFETY: the entry just popped was pushed by `kmap` on this CPU,
            // which disabled preemption once for it and left it disabled.
            unsafe { cx.cpu.preempt_enable() };
        }
        r
    }

    /// The depth of the calling CPU's stack.
    pub(crate) fn depth<P, F, T, C: Cpu>(&self, cx: &Ctx<'_, P, F, T, C>) -> usize {
        let _p = cx.cpu.preempt_guard();
        self.cpus
            .get(cx.cpu.id())
            .map_or(0, |s| s.shared().depth.load(Ordering::Relaxed))
    }

    /// The calling CPU's `pagefault_disable` count (its `kmap_atomic`s held).
    pub(crate) fn pagefault_disabled<P, F, T, C: Cpu>(&self, cx: &Ctx<'_, P, F, T, C>) -> usize {
        let _p = cx.cpu.preempt_guard();
        self.cpus
            .get(cx.cpu.id())
            .map_or(0, |s| s.shared().pagefault_disabled.load(Ordering::Relaxed))
    }

    /// Checks the calling CPU's stack against the page tables: each entry
    /// below the depth of a high-memory page maps its frame at its slot; every
    /// slot at or above the depth is unmapped.
    pub(crate) fn check<P, F, T, C>(&self, cx: &Ctx<'_, P, F, T, C>) -> Result<(), CheckError>
    where
        P: PageTable,
        F: FrameSource,
        C: Cpu,
    {
        let irq = cx.cpu.irq_guard();
        let cpu = irq.cpu().id();
        let per_cpu = cx.fixmap.kmap_per_cpu.min(KM_MAX);
        self.local()
            .with(&irq, |stack, shared| {
                let t = cx.tables.lock(cx.cpu);
                let err = |what, at| Err(CheckError { what, at });
                if shared.depth.load(Ordering::Relaxed) != stack.depth {
                    return err("slot stack depth disagrees", VirtAddr::new(0));
                }
                for idx in 0..per_cpu {
                    let Some(slot) = cx.fixmap.kmap_slot(cpu, idx) else {
                        break;
                    };
                    let Some(va) = cx.fixmap.fix_to_virt(slot) else {
                        break;
                    };
                    let mapped = t.pt.translate(va).map(|tr| tr.frame);
                    let want = (idx < stack.depth && stack.entries[idx].high())
                        .then(|| stack.entries[idx].pfn().phys());
                    if mapped != want {
                        return err("fixmap slot disagrees with the slot stack", va);
                    }
                }
                Ok(())
            })
            .unwrap_or(Err(CheckError {
                what: "slot stack busy",
                at: VirtAddr::new(0),
            }))
    }
}
