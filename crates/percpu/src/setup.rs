//! [`setup_per_cpu_areas`] and [`PerCpuAreas`]: one area per possible CPU,
//! each a copy of the static template followed by the first chunk's dynamic
//! part, and `__per_cpu_offset[]` (Linux's `setup_per_cpu_areas` with the
//! embedding first-chunk allocator, `pcpu_embed_first_chunk`).
//!
//! Also the static variables' accessors: [`PerCpuAreas::per_cpu`],
//! [`PerCpuAreas::per_cpu_ptr`], [`PerCpuAreas::get_cpu_var`].

use core::ops::{Deref, DerefMut};
use core::ptr::NonNull;
use core::sync::atomic::{AtomicBool, Ordering};

use kmm_buddy::{Buddy, Gfp};
use kmm_hal::{Cpu, DirectMap, LocalMut, PAGE_SIZE, PerCpu, PreemptGuard, VirtAddr};
use kmm_page_frame::Bootmem;

use crate::backing::ChunkGeometry;
use crate::this_cpu::{IndexOps, ThisCpuOps, ThisCpuPrim};
use crate::var::{PerCpuVar, Template, TemplateKind, VarDesc};
use crate::{
    NR_CPUS, PCPU_MAX_STATIC_VARS, PCPU_MIN_ALLOC_SIZE, PCPU_UNIT_SIZE, PERCPU_DYNAMIC_RESERVE,
    PercpuError, PercpuPtr,
};

/// Where the areas' memory comes from at boot: bootmem, the buddy allocator
/// ([`BuddyAreas`]), or a static pool.
///
/// # Safety
/// [`AreaAlloc::alloc_area`] returns `size` bytes aligned to [`PAGE_SIZE`],
/// readable and writable through the pointer (its provenance), which
/// nothing else uses until they are given back with
/// [`AreaAlloc::free_area`], and which overlap no other area.
pub unsafe trait AreaAlloc {
    /// `size` bytes for CPU `cpu`'s area (on its node where there are
    /// several), or `None`.
    fn alloc_area(&mut self, cpu: usize, size: usize) -> Option<NonNull<u8>>;

    /// Gives an area back.
    ///
    /// # Safety
    /// `area` came from `alloc_area(cpu, size)` of this value, is not given
    /// back yet, and is no longer used.
    unsafe fn free_area(&mut self, cpu: usize, area: NonNull<u8>, size: usize);
}

/// Areas from the buddy allocator, each on its CPU's node when a node table
/// is given (Linux's `pcpu_fc_alloc` with `early_cpu_to_node`).
pub struct BuddyAreas<'b, C: Cpu> {
    buddy: &'b Buddy<'b, C>,
    nodes: &'b [u8],
}

impl<'b, C: Cpu> BuddyAreas<'b, C> {
    /// Areas from `buddy`; CPU `n`'s from node `nodes[n]` first (the
    /// zonelist falls back to other nodes); an empty table means any node.
    pub fn new(buddy: &'b Buddy<'b, C>, nodes: &'b [u8]) -> Self {
        BuddyAreas { buddy, nodes }
    }

    fn order(size: usize) -> usize {
        size.div_ceil(PAGE_SIZE)
            .next_power_of_two()
            .trailing_zeros() as usize
    }
}

// SAFETY: a block of `2^order >= size / PAGE_SIZE` fresh low-memory pages,
// page-aligned, seen through the direct map (whose addresses the mock and a
// kernel can dereference), ours until freed with the same order.
unsafe impl<C: Cpu> AreaAlloc for BuddyAreas<'_, C> {
    fn alloc_area(&mut self, cpu: usize, size: usize) -> Option<NonNull<u8>> {
        let order = Self::order(size);
        let page = match self.nodes.get(cpu) {
            Some(&n) => self
                .buddy
                .alloc_pages_node(usize::from(n), Gfp::KERNEL, order),
            None => self.buddy.alloc_pages(Gfp::KERNEL, order),
        }?;
        let va = self.buddy.mem().page_address(page)?;
        NonNull::new(va.as_mut_ptr::<u8>())
    }

    unsafe fn free_area(&mut self, _cpu: usize, area: NonNull<u8>, size: usize) {
        let r = self
            .buddy
            .free_pages(VirtAddr::from_ptr(area.as_ptr()), Self::order(size));
        debug_assert!(r.is_ok(), "percpu: an area it allocated: {r:?}");
    }
}

/// Areas from bootmem, before the buddy allocator runs (Linux's
/// `pcpu_fc_alloc` on bootmem): low memory, seen through the direct map.
/// Bootmem has no free, so areas given back (a set-up that fails midway,
/// dropped areas) stay reserved, as Linux's boot-time memory does.
pub struct BootmemAreas<'b, 'm> {
    bootmem: &'b mut Bootmem<'m>,
    dm: DirectMap,
}

impl<'b, 'm> BootmemAreas<'b, 'm> {
    /// Areas from `bootmem`, reached through `dm`.
    ///
    /// # Safety
    /// `dm` is the direct map of the physical memory `bootmem` manages, so
    /// the address of a frame it hands out is that frame's memory, and
    /// nothing else uses what `bootmem` hands out (the frames it reserves
    /// are never given to another allocator).
    pub unsafe fn new(bootmem: &'b mut Bootmem<'m>, dm: DirectMap) -> Self {
        BootmemAreas { bootmem, dm }
    }
}

// SAFETY: page-aligned frames bootmem reserved for us alone (`new`'s
// contract), at least `size` bytes, reached through the direct map.
unsafe impl AreaAlloc for BootmemAreas<'_, '_> {
    fn alloc_area(&mut self, _cpu: usize, size: usize) -> Option<NonNull<u8>> {
        let pa = self.bootmem.alloc(size, PAGE_SIZE).ok()?;
        let va = self.dm.phys_to_virt(pa)?;
        NonNull::new(va.as_mut_ptr::<u8>())
    }

    unsafe fn free_area(&mut self, _cpu: usize, _area: NonNull<u8>, _size: usize) {
        // Bootmem memory stays reserved.
    }
}

/// A registered variable's place in the unit.
#[derive(Debug, Clone, Copy, Default)]
struct VarSlot {
    addr: usize,
    off: usize,
    size: usize,
}

/// The static per-CPU areas of the possible CPUs: one unit of
/// [`PCPU_UNIT_SIZE`] bytes each, the template copied at its start, the
/// first chunk's dynamic part after it; and the offsets
/// (`__per_cpu_offset[]`) from per-CPU pointers to each CPU's copy.
///
/// An i386 kernel loads each CPU's `%fs` segment base with
/// [`PerCpuAreas::offset`] and then uses `SegmentOps` (i386).
pub struct PerCpuAreas<'a, C: Cpu, A: AreaAlloc> {
    // Hot: every access.
    offsets: [usize; NR_CPUS],
    possible: usize,
    cpu: &'a C,
    section: Option<(usize, usize)>,
    vars: [VarSlot; PCPU_MAX_STATIC_VARS],
    nr_vars: usize,
    // Set-up and the chunk allocator.
    base: usize,
    static_size: usize,
    low: usize,
    span: usize,
    /// Set while a [`crate::Percpu`] serves the first chunk's dynamic part
    /// (two allocators over one set of areas would hand out the same bytes).
    first_chunk_taken: AtomicBool,
    alloc: A,
}

/// Copies `template` into one area per possible CPU of `cpu` (memory from
/// `alloc`), zeroes the rest of each unit (the first chunk's dynamic part)
/// and records each CPU's offset (Linux's `setup_per_cpu_areas`). Run once
/// at boot, before any CPU but the boot CPU runs.
///
/// Refused: no CPU or more than [`NR_CPUS`]
/// ([`PercpuError::TooManyCpus`]); a template that leaves less than
/// [`PERCPU_DYNAMIC_RESERVE`] bytes of the unit, or more than
/// [`PCPU_MAX_STATIC_VARS`] variables ([`PercpuError::StaticTooLarge`]); an
/// area the allocator cannot give ([`PercpuError::NoArea`], the areas given
/// so far handed back).
pub fn setup_per_cpu_areas<'a, C: Cpu, A: AreaAlloc>(
    cpu: &'a C,
    template: &Template<'_>,
    mut alloc: A,
) -> Result<PerCpuAreas<'a, C, A>, PercpuError> {
    let possible = cpu.count();
    if possible == 0 || possible > NR_CPUS {
        return Err(PercpuError::TooManyCpus);
    }
    let mut vars = [VarSlot::default(); PCPU_MAX_STATIC_VARS];
    let (base, static_size, section, nr_vars) = match template.kind {
        TemplateKind::Section { start, end } => {
            debug_assert!(
                start.is_multiple_of(PAGE_SIZE),
                "percpu: section not page-aligned"
            );
            (start, end - start, Some((start, end)), 0)
        }
        TemplateKind::Vars(list) => {
            let (n, size) = layout_vars(list, &mut vars)?;
            (0, size, None, n)
        }
    };
    let static_size = static_size.next_multiple_of(PCPU_MIN_ALLOC_SIZE);
    if static_size + PERCPU_DYNAMIC_RESERVE > PCPU_UNIT_SIZE {
        return Err(PercpuError::StaticTooLarge);
    }
    let mut areas = [0usize; NR_CPUS];
    for id in 0..possible {
        let Some(area) = alloc.alloc_area(id, PCPU_UNIT_SIZE) else {
            for (j, &a) in areas.iter().enumerate().take(id) {
                let a = NonNull::new(core::ptr::with_exposed_provenance_mut::<u8>(a));
                // SAFETY: from `alloc_area(j, PCPU_UNIT_SIZE)` above, unused.
                unsafe { alloc.free_area(j, a.expect("not null"), PCPU_UNIT_SIZE) };
            }
            return Err(PercpuError::NoArea { cpu: id });
        };
        let dst = area.as_ptr();
        // SAFETY: `AreaAlloc` contract: PCPU_UNIT_SIZE writable bytes, ours.
        unsafe { dst.write_bytes(0, PCPU_UNIT_SIZE) };
        match template.kind {
            TemplateKind::Section { start, end } => {
                let src = core::ptr::with_exposed_provenance::<u8>(start);
                // SAFETY: `Template::from_section`'s contract: the section is
                // readable and never written; it fits the unit (checked).
                unsafe { core::ptr::copy_nonoverlapping(src, dst, end - start) };
            }
            TemplateKind::Vars(_) => {
                for v in &vars[..nr_vars] {
                    let src = core::ptr::with_exposed_provenance::<u8>(v.addr);
                    // SAFETY: `v.size` bytes of a `PerCpuVar` static (`desc`
                    // takes `&'static`), never written (its contents are
                    // private and `__new`'s contract keeps it a constant);
                    // the destination is inside the unit (laid out above).
                    unsafe { core::ptr::copy_nonoverlapping(src, dst.add(v.off), v.size) };
                }
            }
        }
        // Later accesses rebuild pointers from `base + offset`.
        areas[id] = dst.expose_provenance();
    }
    let mut offsets = [0usize; NR_CPUS];
    for id in 0..possible {
        offsets[id] = areas[id].wrapping_sub(base);
    }
    let (lo, hi) = areas[..possible]
        .iter()
        .fold((usize::MAX, 0), |(lo, hi), &a| (lo.min(a), hi.max(a)));
    Ok(PerCpuAreas {
        offsets,
        possible,
        cpu,
        section,
        vars,
        nr_vars,
        base,
        static_size,
        low: lo.wrapping_sub(base),
        span: hi - lo + PCPU_UNIT_SIZE,
        first_chunk_taken: AtomicBool::new(false),
        alloc,
    })
}

/// Lays the registered variables out one after another (sorted by address
/// so lookups can bisect); returns how many and the bytes they take.
fn layout_vars(
    list: &[VarDesc],
    table: &mut [VarSlot; PCPU_MAX_STATIC_VARS],
) -> Result<(usize, usize), PercpuError> {
    let mut n = 0;
    let mut end = 0usize;
    for d in list {
        if table[..n].iter().any(|s| s.addr == d.addr) {
            continue;
        }
        if n == PCPU_MAX_STATIC_VARS || d.align > PAGE_SIZE {
            return Err(PercpuError::StaticTooLarge);
        }
        let off = end.next_multiple_of(d.align);
        end = off.checked_add(d.size).ok_or(PercpuError::StaticTooLarge)?;
        if end > PCPU_UNIT_SIZE {
            return Err(PercpuError::StaticTooLarge);
        }
        // Insertion sort by address.
        let mut i = n;
        while i > 0 && table[i - 1].addr > d.addr {
            table[i] = table[i - 1];
            i -= 1;
        }
        table[i] = VarSlot {
            addr: d.addr,
            off,
            size: d.size,
        };
        n += 1;
    }
    Ok((n, end))
}

impl<'a, C: Cpu, A: AreaAlloc> PerCpuAreas<'a, C, A> {
    /// The number of possible CPUs (each has an area).
    pub fn possible_cpus(&self) -> usize {
        self.possible
    }

    /// The CPUs the areas were set up for.
    pub fn cpu(&self) -> &'a C {
        self.cpu
    }

    /// CPU `cpu`'s offset, Linux's `__per_cpu_offset[cpu]`: its area's
    /// address less the template's base. A per-CPU pointer plus this
    /// offset is CPU `cpu`'s copy; an i386 kernel loads it as the base of
    /// that CPU's `%fs` segment.
    pub fn offset(&self, cpu: usize) -> Result<usize, PercpuError> {
        self.check_cpu(cpu)?;
        Ok(self.offsets[cpu])
    }

    /// Every possible CPU's offset, by CPU id.
    pub fn offsets(&self) -> &[usize] {
        &self.offsets[..self.possible]
    }

    /// CPU `cpu`'s area (its unit of the first chunk).
    pub fn area(&self, cpu: usize) -> Result<NonNull<u8>, PercpuError> {
        self.check_cpu(cpu)?;
        let p = core::ptr::with_exposed_provenance_mut(self.base.wrapping_add(self.offsets[cpu]));
        Ok(NonNull::new(p).expect("areas are not null"))
    }

    /// The bytes of the static template at the start of each unit (rounded
    /// up to [`PCPU_MIN_ALLOC_SIZE`]).
    pub fn static_size(&self) -> usize {
        self.static_size
    }

    /// The bytes of each unit ([`PCPU_UNIT_SIZE`]).
    pub fn unit_size(&self) -> usize {
        PCPU_UNIT_SIZE
    }

    /// The template's base: `__per_cpu_start` for the linker section, 0 for
    /// a registration list.
    pub fn template_base(&self) -> usize {
        self.base
    }

    pub(crate) fn geometry(&self) -> ChunkGeometry<'_> {
        ChunkGeometry {
            offsets: self.offsets(),
            unit_size: PCPU_UNIT_SIZE,
            low: self.low,
            span: self.span,
        }
    }

    /// Claims the first chunk's dynamic part for one allocator: false if
    /// another allocator holds it already.
    pub(crate) fn claim_first_chunk(&self) -> bool {
        !self.first_chunk_taken.swap(true, Ordering::Acquire)
    }

    /// Gives the first chunk's dynamic part back (its allocator is gone and
    /// held no allocation in it).
    pub(crate) fn release_first_chunk(&self) {
        self.first_chunk_taken.store(false, Ordering::Release);
    }

    fn check_cpu(&self, cpu: usize) -> Result<(), PercpuError> {
        if cpu < self.possible {
            Ok(())
        } else {
            Err(PercpuError::NoSuchCpu {
                cpu,
                possible: self.possible,
            })
        }
    }

    /// A static variable's per-CPU pointer (its template address for the
    /// linker section, its place in the unit for a registration list).
    pub fn ptr_of<T, S>(
        &self,
        var: &'static PerCpuVar<T, S>,
    ) -> Result<PercpuPtr<PerCpu<T, S>>, PercpuError> {
        let addr = var.addr();
        let size = size_of::<PerCpu<T, S>>();
        let cookie = match self.section {
            Some((start, end)) => {
                if addr < start || addr + size > end {
                    return Err(PercpuError::NotRegistered);
                }
                addr
            }
            None => {
                let vars = &self.vars[..self.nr_vars];
                let i = vars
                    .binary_search_by_key(&addr, |s| s.addr)
                    .map_err(|_| PercpuError::NotRegistered)?;
                vars[i].off
            }
        };
        Ok(PercpuPtr::from_raw(cookie))
    }

    /// CPU `cpu`'s copy of a pointer's object (Linux's `per_cpu_ptr`): the
    /// address only; reading through it is the caller's business.
    pub fn per_cpu_ptr<T>(&self, ptr: PercpuPtr<T>, cpu: usize) -> Result<NonNull<T>, PercpuError> {
        self.check_cpu(cpu)?;
        let p = core::ptr::with_exposed_provenance_mut(ptr.raw().wrapping_add(self.offsets[cpu]));
        NonNull::new(p).ok_or(PercpuError::Foreign)
    }

    /// CPU `cpu`'s copy of a static variable (Linux's `per_cpu(var, cpu)`):
    /// its shared part, which any CPU may read while the owner works on its
    /// local part. Refused: a CPU id past the possible CPUs, a variable the
    /// template does not hold.
    pub fn per_cpu<T: Send, S: Sync>(
        &self,
        var: &'static PerCpuVar<T, S>,
        cpu: usize,
    ) -> Result<&S, PercpuError> {
        Ok(self.slot(var, cpu)?.shared())
    }

    /// CPU `cpu`'s whole copy (a [`PerCpu`] slot: its shared part, and
    /// whether its owner holds it).
    pub fn per_cpu_slot<T: Send, S: Sync>(
        &self,
        var: &'static PerCpuVar<T, S>,
        cpu: usize,
    ) -> Result<&PerCpu<T, S>, PercpuError> {
        self.slot(var, cpu)
    }

    fn slot<T, S>(
        &self,
        var: &'static PerCpuVar<T, S>,
        cpu: usize,
    ) -> Result<&PerCpu<T, S>, PercpuError> {
        let p = self.per_cpu_ptr(self.ptr_of(var)?, cpu)?;
        // SAFETY: the copy of a registered variable lies in CPU `cpu`'s
        // area, made at set-up as a byte copy of the constant template
        // (a valid value, aligned: units are page-aligned and the layout
        // keeps each variable's alignment), and lives as long as `self`.
        // Only shared access is made: the local part stays behind its
        // `UnsafeCell` and the busy flag.
        Ok(unsafe { p.as_ref() })
    }

    /// This CPU's copy of a static variable, held with preemption disabled
    /// until the guard is dropped (Linux's `get_cpu_var`; dropping is
    /// `put_cpu_var`). Refused with [`PercpuError::Busy`] if this CPU already
    /// holds it (a re-entry), with [`PercpuError::NotRegistered`] if the
    /// template does not hold it.
    pub fn get_cpu_var<T: Send, S: Sync>(
        &self,
        var: &'static PerCpuVar<T, S>,
    ) -> Result<CpuVar<'_, T, S, C>, PercpuError> {
        let cookie = self.ptr_of(var)?;
        let pin = self.cpu.preempt_guard();
        let id = pin.cpu_id();
        let p = self.per_cpu_ptr(cookie, id)?;
        // SAFETY: as in `slot`: a live, valid copy for as long as `self`.
        let slot: &PerCpu<T, S> = unsafe { p.as_ref() };
        // SAFETY: the copy is CPU `id`'s own, `pin` keeps the caller on it,
        // every user pins with `self.cpu`'s guards, and the `CpuVar` drops
        // its `LocalMut` before its `PreemptGuard` (field order).
        let local = unsafe { slot.try_local(&pin) }.ok_or(PercpuError::Busy)?;
        Ok(CpuVar {
            local,
            shared: slot.shared(),
            pin,
        })
    }

    /// The this-CPU operations of any machine ([`IndexOps`]), over these
    /// areas.
    pub fn index_ops(&self) -> IndexOps<'_, C> {
        IndexOps::new(self.cpu, self.offsets())
    }

    /// The this-CPU operations on these areas through `ops`
    /// ([`PerCpuAreas::index_ops`], or `SegmentOps` (i386) on i386).
    ///
    /// # Safety
    /// `ops` is tied to these areas (the [`ThisCpuOps`] contract is about
    /// this offset table).
    pub unsafe fn this_cpu_with<O: ThisCpuOps>(&self, ops: O) -> ThisCpu<'_, 'a, O, C, A> {
        ThisCpu { ops, areas: self }
    }

    /// The this-CPU operations on these areas, by CPU id ([`IndexOps`]).
    pub fn this_cpu(&self) -> ThisCpu<'_, 'a, IndexOps<'_, C>, C, A> {
        ThisCpu {
            ops: self.index_ops(),
            areas: self,
        }
    }
}

impl<C: Cpu, A: AreaAlloc> Drop for PerCpuAreas<'_, C, A> {
    /// Gives every area back (a kernel never drops its areas; tests do).
    /// The copies are not dropped: they are bytes of a constant.
    fn drop(&mut self) {
        for id in 0..self.possible {
            let area = self.area(id).expect("a possible CPU");
            // SAFETY: from `alloc_area(id, PCPU_UNIT_SIZE)` at set-up; no
            // borrow of `self` (a guard, the chunk allocator) outlives it.
            unsafe { self.alloc.free_area(id, area, PCPU_UNIT_SIZE) };
        }
    }
}

/// This CPU's copy of a static variable, from
/// [`PerCpuAreas::get_cpu_var`]: the local part by `Deref`/`DerefMut`, the
/// shared part by [`CpuVar::shared`]. Preemption stays disabled while it
/// lives; dropping it is Linux's `put_cpu_var`.
pub struct CpuVar<'s, T, S, C: Cpu> {
    // Released before preemption is enabled again.
    local: LocalMut<'s, T>,
    shared: &'s S,
    pin: PreemptGuard<'s, C>,
}

impl<T, S, C: Cpu> CpuVar<'_, T, S, C> {
    /// The shared part of this CPU's copy.
    pub fn shared(&self) -> &S {
        self.shared
    }

    /// The CPU whose copy this is.
    pub fn cpu_id(&self) -> usize {
        self.pin.cpu_id()
    }
}

impl<T, S, C: Cpu> Deref for CpuVar<'_, T, S, C> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.local
    }
}

impl<T, S, C: Cpu> DerefMut for CpuVar<'_, T, S, C> {
    fn deref_mut(&mut self) -> &mut T {
        &mut self.local
    }
}

/// The this-CPU operations over one set of areas, from
/// [`PerCpuAreas::this_cpu`] (by CPU id) or [`PerCpuAreas::this_cpu_with`]
/// (`%fs` on i386). On a static variable they act on its shared part, an
/// atomic integer; on a dynamic pointer, on the integer it points to.
pub struct ThisCpu<'s, 'a, O, C: Cpu, A: AreaAlloc> {
    ops: O,
    areas: &'s PerCpuAreas<'a, C, A>,
}

impl<O: ThisCpuOps, C: Cpu, A: AreaAlloc> ThisCpu<'_, '_, O, C, A> {
    fn cookie<T, P>(&self, var: &'static PerCpuVar<T, P>) -> Result<usize, PercpuError> {
        Ok(self.areas.ptr_of(var)?.raw() + var.shared_offset())
    }

    /// This CPU's value of a static counter (Linux's `this_cpu_read`).
    #[inline]
    pub fn read<T, P: ThisCpuPrim>(
        &self,
        var: &'static PerCpuVar<T, P>,
    ) -> Result<P::Value, PercpuError> {
        let c = self.cookie(var)?;
        // SAFETY: every CPU's copy of a registered variable lives as long
        // as the areas, which `self` borrows; its shared part is a `P`.
        Ok(unsafe { self.ops.read::<P>(c) })
    }

    /// Sets this CPU's value of a static counter (`this_cpu_write`).
    #[inline]
    pub fn write<T, P: ThisCpuPrim>(
        &self,
        var: &'static PerCpuVar<T, P>,
        v: P::Value,
    ) -> Result<(), PercpuError> {
        let c = self.cookie(var)?;
        // SAFETY: as in `read`.
        unsafe { self.ops.write::<P>(c, v) };
        Ok(())
    }

    /// Adds to this CPU's value of a static counter, wrapping
    /// (`this_cpu_add`).
    #[inline]
    pub fn add<T, P: ThisCpuPrim>(
        &self,
        var: &'static PerCpuVar<T, P>,
        v: P::Value,
    ) -> Result<(), PercpuError> {
        let c = self.cookie(var)?;
        // SAFETY: as in `read`.
        unsafe { self.ops.add::<P>(c, v) };
        Ok(())
    }

    /// `this_cpu_inc`.
    #[inline]
    pub fn inc<T, P: ThisCpuPrim>(&self, var: &'static PerCpuVar<T, P>) -> Result<(), PercpuError> {
        self.add(var, P::ONE)
    }

    /// `this_cpu_dec`.
    #[inline]
    pub fn dec<T, P: ThisCpuPrim>(&self, var: &'static PerCpuVar<T, P>) -> Result<(), PercpuError> {
        self.add(var, P::neg(P::ONE))
    }

    /// This CPU's value of a dynamic counter (`this_cpu_read(*ptr)`).
    ///
    /// # Safety
    /// `ptr` is a live allocation of a `P` from an allocator over these
    /// areas (not freed while this runs).
    #[inline]
    pub unsafe fn read_ptr<P: ThisCpuPrim>(&self, ptr: PercpuPtr<P>) -> P::Value {
        // SAFETY: the caller's contract.
        unsafe { self.ops.read::<P>(ptr.raw()) }
    }

    /// Sets this CPU's value of a dynamic counter.
    ///
    /// # Safety
    /// As [`ThisCpu::read_ptr`].
    #[inline]
    pub unsafe fn write_ptr<P: ThisCpuPrim>(&self, ptr: PercpuPtr<P>, v: P::Value) {
        // SAFETY: the caller's contract.
        unsafe { self.ops.write::<P>(ptr.raw(), v) }
    }

    /// Adds to this CPU's value of a dynamic counter, wrapping.
    ///
    /// # Safety
    /// As [`ThisCpu::read_ptr`].
    #[inline]
    pub unsafe fn add_ptr<P: ThisCpuPrim>(&self, ptr: PercpuPtr<P>, v: P::Value) {
        // SAFETY: the caller's contract.
        unsafe { self.ops.add::<P>(ptr.raw(), v) }
    }
}
