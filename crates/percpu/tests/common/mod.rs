//! The set-up the percpu tests share: plain-memory areas and chunks (the
//! pure-software backing, which Miri runs), a one-thread CPU set whose
//! "current CPU" the test chooses, and mock machines with vmalloc.
#![allow(dead_code)]

use std::alloc::{Layout, alloc_zeroed, dealloc};
use std::ptr::NonNull;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::atomic::{AtomicBool, AtomicUsize};
use std::sync::{Arc, Mutex};

use kmm_hal::{Cpu, IrqState, PAGE_SIZE};
use kmm_percpu::{AreaAlloc, ChunkBacking, ChunkGeometry, ChunkMem, PercpuError};

/// CPUs for one-thread tests: `count` of them, the "running" one chosen
/// with [`FakeCpu::switch`]; interrupt and preemption state in cells.
pub struct FakeCpu {
    count: usize,
    id: AtomicUsize,
    irqs_off: AtomicBool,
    preempt: AtomicUsize,
}

impl FakeCpu {
    pub fn new(count: usize) -> FakeCpu {
        FakeCpu {
            count,
            id: AtomicUsize::new(0),
            irqs_off: AtomicBool::new(false),
            preempt: AtomicUsize::new(0),
        }
    }

    /// Runs the rest of the test "on" CPU `id` (no guard may be held).
    pub fn switch(&self, id: usize) {
        assert_eq!(self.preempt_count(), 0, "switching CPU while pinned");
        assert!(id < self.count);
        self.id.store(id, Relaxed);
    }
}

// SAFETY: each test builds its own and uses it from one thread only, so the
// one running "CPU" is unique; `switch` refuses to move while preemption is off; interrupt
// state is recorded as asked and no handler ever runs.
unsafe impl Cpu for FakeCpu {
    fn count(&self) -> usize {
        self.count
    }
    fn id(&self) -> usize {
        self.id.load(Relaxed)
    }
    fn irq_save(&self) -> IrqState {
        IrqState::from_raw(usize::from(self.irqs_off.swap(true, Relaxed)))
    }
    unsafe fn irq_restore(&self, state: IrqState) {
        self.irqs_off.store(state.raw() != 0, Relaxed);
    }
    fn irqs_disabled(&self) -> bool {
        self.irqs_off.load(Relaxed)
    }
    fn preempt_disable(&self) {
        self.preempt.fetch_add(1, Relaxed);
    }
    unsafe fn preempt_enable(&self) {
        self.preempt.fetch_sub(1, Relaxed);
    }
    fn preempt_count(&self) -> usize {
        self.preempt.load(Relaxed)
    }
}

fn page_layout(size: usize) -> Layout {
    Layout::from_size_align(size, PAGE_SIZE).unwrap()
}

/// What the plain-memory allocators hold, shared with the test.
#[derive(Debug, Default)]
pub struct Ledger {
    /// Live areas.
    pub areas: usize,
    /// Live chunks: (region start, span, base).
    pub chunks: Vec<(usize, usize, usize)>,
    /// Pages populated in live chunks (per unit).
    pub pages: usize,
    /// Fail this many more populate calls from now (0: none).
    pub fail_populate: usize,
    /// Fail chunk creation while set.
    pub fail_create: bool,
    /// Fail area allocation for this CPU.
    pub fail_area: Option<usize>,
}

/// Areas from the host heap.
pub struct SoftAreas(pub Arc<Mutex<Ledger>>);

// SAFETY: fresh, zeroed, page-aligned host memory of `size` bytes, freed
// with the same layout.
unsafe impl AreaAlloc for SoftAreas {
    fn alloc_area(&mut self, cpu: usize, size: usize) -> Option<NonNull<u8>> {
        let mut l = self.0.lock().unwrap();
        if l.fail_area == Some(cpu) {
            return None;
        }
        l.areas += 1;
        // SAFETY: a non-zero size.
        NonNull::new(unsafe { alloc_zeroed(page_layout(size)) })
    }
    unsafe fn free_area(&mut self, _cpu: usize, area: NonNull<u8>, size: usize) {
        self.0.lock().unwrap().areas -= 1;
        // SAFETY: allocated above with this layout.
        unsafe { dealloc(area.as_ptr(), page_layout(size)) };
    }
}

/// Chunks in host memory: one allocation spanning the units, "populated"
/// by bookkeeping only (the memory is there from the start).
pub struct SoftBacking(pub Arc<Mutex<Ledger>>);

// SAFETY: the region is fresh host memory of `span` bytes, page-aligned;
// its provenance is exposed, and `base_for` puts every unit inside it (the
// areas lie within `span` of the lowest); freed only on destroy.
unsafe impl ChunkBacking for SoftBacking {
    fn create_chunk(&mut self, geo: &ChunkGeometry<'_>) -> Result<ChunkMem, PercpuError> {
        let mut l = self.0.lock().unwrap();
        if l.fail_create {
            return Err(PercpuError::OutOfMemory);
        }
        // SAFETY: a non-zero size.
        let p = unsafe { alloc_zeroed(page_layout(geo.span)) };
        assert!(!p.is_null());
        let region = p.expose_provenance();
        let base = geo.base_for(region);
        l.chunks.push((region, geo.span, base));
        Ok(ChunkMem {
            base,
            handle: region,
        })
    }
    fn populate(
        &mut self,
        _mem: &ChunkMem,
        _geo: &ChunkGeometry<'_>,
        _page: usize,
    ) -> Result<(), PercpuError> {
        let mut l = self.0.lock().unwrap();
        if l.fail_populate > 0 {
            l.fail_populate -= 1;
            return Err(PercpuError::OutOfMemory);
        }
        l.pages += 1;
        Ok(())
    }
    unsafe fn destroy_chunk(&mut self, mem: ChunkMem, geo: &ChunkGeometry<'_>, populated: u32) {
        let mut l = self.0.lock().unwrap();
        let i = l
            .chunks
            .iter()
            .position(|c| c.0 == mem.handle)
            .expect("a live chunk");
        l.chunks.swap_remove(i);
        l.pages -= populated.count_ones() as usize;
        let p = std::ptr::with_exposed_provenance_mut::<u8>(mem.handle);
        // SAFETY: allocated in `create_chunk` with this layout.
        unsafe { dealloc(p, page_layout(geo.span)) };
    }
}

/// A fresh ledger.
pub fn ledger() -> Arc<Mutex<Ledger>> {
    Arc::new(Mutex::new(Ledger::default()))
}

/// Which backing call a [`HookBacking`] hook runs in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackingCall {
    Create,
    Populate,
    Destroy,
}

/// The hook a [`HookBacking`] calls, set by the test after the allocator
/// exists (it usually calls back into it, as a buddy `on_low` hook would).
pub type Hook = std::rc::Rc<std::cell::RefCell<Option<Box<dyn FnMut(BackingCall)>>>>;

/// [`SoftBacking`] that runs a hook at the start of every call, as the
/// buddy allocator runs its `on_low` hook (or vmalloc a flush) inside the
/// backing's calls. The hook is taken out while it runs, so a nested call
/// does not run it again.
pub struct HookBacking {
    pub inner: SoftBacking,
    pub hook: Hook,
}

impl HookBacking {
    fn run(&self, call: BackingCall) {
        let taken = self.hook.borrow_mut().take();
        if let Some(mut f) = taken {
            f(call);
            *self.hook.borrow_mut() = Some(f);
        }
    }
}

// SAFETY: forwards to `SoftBacking`, which keeps the contract; the hook
// changes nothing the contract speaks of.
unsafe impl ChunkBacking for HookBacking {
    fn create_chunk(&mut self, geo: &ChunkGeometry<'_>) -> Result<ChunkMem, PercpuError> {
        self.run(BackingCall::Create);
        self.inner.create_chunk(geo)
    }
    fn populate(
        &mut self,
        mem: &ChunkMem,
        geo: &ChunkGeometry<'_>,
        page: usize,
    ) -> Result<(), PercpuError> {
        self.run(BackingCall::Populate);
        self.inner.populate(mem, geo, page)
    }
    unsafe fn destroy_chunk(&mut self, mem: ChunkMem, geo: &ChunkGeometry<'_>, populated: u32) {
        self.run(BackingCall::Destroy);
        // SAFETY: the caller's contract, forwarded.
        unsafe { self.inner.destroy_chunk(mem, geo, populated) }
    }
}
