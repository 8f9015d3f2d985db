//! [`Mempool`]: a reserve of elements for allocations that must not fail
//! (Linux's `mempool_t`). The reserve is used only when the underlying
//! allocation fails, and refilled first when elements come back.

use core::ptr::NonNull;

use kmm_buddy::Gfp;
use kmm_hal::Cpu;
use kmm_hal::sync::IrqSpinLock;

use crate::SlabError;
use crate::allocator::SlabAllocator;
use crate::cache::Cache;

/// Where a pool's elements come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PoolSource<'a> {
    /// Objects of a cache (Linux's `mempool_alloc_slab`).
    Cache(Cache<'a>),
    /// `kmalloc` blocks of a size (Linux's `mempool_kmalloc`).
    Kmalloc(usize),
}

/// The reserve: up to `cap` elements in an array from kmalloc, behind the
/// pool's lock (the `&mut Reserve` a method takes is the proof).
struct Reserve {
    /// `cap` element slots (null when `cap` is 0).
    slots: *mut NonNull<u8>,
    cap: usize,
    curr: usize,
}

// SAFETY: the reserve array and the elements in it are only touched through
// the pool's lock.
unsafe impl Send for Reserve {}

impl Reserve {
    /// Adds an element; `false` if the reserve is full.
    fn push(&mut self, e: NonNull<u8>) -> bool {
        if self.curr == self.cap {
            return false;
        }
        // SAFETY: curr < cap: one of the array's slots.
        unsafe { self.slots.add(self.curr).write(e) };
        self.curr += 1;
        true
    }

    /// Takes the last element added.
    fn pop(&mut self) -> Option<NonNull<u8>> {
        self.curr = self.curr.checked_sub(1)?;
        // SAFETY: slots below the old `curr` hold elements.
        Some(unsafe { self.slots.add(self.curr).read() })
    }

    /// True if `e` is in the reserve.
    fn contains(&self, e: NonNull<u8>) -> bool {
        // SAFETY: slots below `curr` hold elements.
        (0..self.curr).any(|i| unsafe { self.slots.add(i).read() } == e)
    }
}

/// A memory pool with a guaranteed minimum of elements.
pub struct Mempool<'s, 'a, C: Cpu> {
    slab: &'s SlabAllocator<'a, C>,
    source: PoolSource<'a>,
    min_nr: usize,
    /// Taken with interrupts off: an atomic `alloc` or a `free` in an
    /// interrupt handler takes it too.
    reserve: IrqSpinLock<Reserve>,
}

impl<C: Cpu> core::fmt::Debug for Mempool<'_, '_, C> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Mempool")
            .field("source", &self.source)
            .field("min_nr", &self.min_nr)
            .field("reserved", &self.reserved())
            .finish()
    }
}

impl<'s, 'a, C: Cpu> Mempool<'s, 'a, C> {
    /// Creates a pool and fills its reserve with `min_nr` elements (Linux's
    /// `mempool_create`). Fails, keeping nothing, if the reserve cannot be
    /// filled.
    pub fn create(
        slab: &'s SlabAllocator<'a, C>,
        min_nr: usize,
        source: PoolSource<'a>,
    ) -> Result<Self, SlabError> {
        if let PoolSource::Kmalloc(0) = source {
            return Err(SlabError::BadSize);
        }
        if let PoolSource::Cache(c) = source
            && slab.cache_info(c).is_none()
        {
            return Err(SlabError::NoSuchCache);
        }
        let slots = if min_nr == 0 {
            core::ptr::null_mut()
        } else {
            slab.kmalloc(
                min_nr
                    .checked_mul(core::mem::size_of::<NonNull<u8>>())
                    .ok_or(SlabError::BadSize)?,
                Gfp::KERNEL,
            )?
            .as_ptr()
            .cast::<NonNull<u8>>()
        };
        let pool = Mempool {
            slab,
            source,
            min_nr,
            reserve: IrqSpinLock::new(
                "mempool reserve",
                Reserve {
                    slots,
                    cap: min_nr,
                    curr: 0,
                },
            ),
        };
        for _ in 0..min_nr {
            match pool.raw_alloc(Gfp::KERNEL) {
                Ok(e) => {
                    let pushed = pool.reserve.lock_irqsave(slab.buddy().cpu()).push(e);
                    debug_assert!(pushed, "min_nr slots");
                }
                Err(e) => {
                    pool.release_all();
                    return Err(e);
                }
            }
        }
        Ok(pool)
    }

    fn raw_alloc(&self, gfp: Gfp) -> Result<NonNull<u8>, SlabError> {
        match self.source {
            PoolSource::Cache(c) => self.slab.kmem_cache_alloc(c, gfp | Gfp::NOWARN),
            PoolSource::Kmalloc(n) => self.slab.kmalloc(n, gfp | Gfp::NOWARN),
        }
    }

    fn raw_free(&self, e: NonNull<u8>) -> Result<(), SlabError> {
        match self.source {
            PoolSource::Cache(c) => self.slab.kmem_cache_free(c, e),
            PoolSource::Kmalloc(_) => self.slab.kfree(e.as_ptr()),
        }
    }

    /// Elements in the reserve.
    pub fn reserved(&self) -> usize {
        self.reserve.lock_irqsave(self.slab.buddy().cpu()).curr
    }

    /// The guaranteed minimum.
    pub fn min_nr(&self) -> usize {
        self.min_nr
    }

    /// An element (Linux's `mempool_alloc`): from the underlying allocator,
    /// or, if that fails, from the reserve. `Err(OutOfMemory)` when both are
    /// empty — a kernel that can sleep waits for a `free` and retries.
    pub fn alloc(&self, gfp: Gfp) -> Result<NonNull<u8>, SlabError> {
        self.slab.buddy().cpu().interrupt_point();
        if let Ok(e) = self.raw_alloc(gfp) {
            return Ok(e);
        }
        self.reserve
            .lock_irqsave(self.slab.buddy().cpu())
            .pop()
            .ok_or(SlabError::OutOfMemory)
    }

    /// Returns an element (Linux's `mempool_free`): it refills the reserve if
    /// that is below the minimum, else goes back to the allocator. An element
    /// the allocator would refuse (foreign, double free) is refused here too,
    /// before it can enter the reserve.
    pub fn free(&self, e: NonNull<u8>) -> Result<(), SlabError> {
        self.slab.buddy().cpu().interrupt_point();
        self.check(e)?;
        {
            let mut r = self.reserve.lock_irqsave(self.slab.buddy().cpu());
            // Reserve elements are still allocated in their cache, so the
            // checks above pass for them: look for the element in the reserve
            // itself.
            if r.contains(e) {
                return Err(SlabError::DoubleFree);
            }
            if r.push(e) {
                return Ok(());
            }
        }
        self.raw_free(e)
    }

    /// Validates an element without freeing it: it must be a live object of
    /// the pool's source.
    fn check(&self, e: NonNull<u8>) -> Result<(), SlabError> {
        match self.source {
            PoolSource::Cache(c) => {
                let loc = self.slab.locate(e.as_ptr())?;
                if !core::ptr::eq(
                    loc.cache,
                    self.slab.cache_info(c).ok_or(SlabError::NoSuchCache)?,
                ) {
                    return Err(SlabError::WrongCache);
                }
                self.slab.ksize(e.as_ptr()).map(|_| ())
            }
            PoolSource::Kmalloc(n) => {
                if self.slab.ksize(e.as_ptr())? < n {
                    return Err(SlabError::WrongCache);
                }
                Ok(())
            }
        }
    }

    /// Gives every reserved element and the reserve array back, one at a
    /// time with the pool's lock dropped (freeing may call the report hook).
    fn release_all(&self) {
        let cpu = self.slab.buddy().cpu();
        loop {
            let e = self.reserve.lock_irqsave(cpu).pop();
            let Some(e) = e else { break };
            let res = self.raw_free(e);
            debug_assert!(res.is_ok());
        }
        let slots = {
            let mut r = self.reserve.lock_irqsave(cpu);
            r.cap = 0;
            core::mem::replace(&mut r.slots, core::ptr::null_mut())
        };
        if !slots.is_null() {
            let res = self.slab.kfree(slots.cast());
            debug_assert!(res.is_ok());
        }
    }

    /// Destroys the pool, giving the reserve back (Linux's `mempool_destroy`).
    /// Refused with [`SlabError::Busy`], the pool intact, while elements taken
    /// from the reserve are still out.
    pub fn destroy(self) -> Result<(), (Self, SlabError)> {
        if self.reserved() < self.min_nr {
            return Err((self, SlabError::Busy));
        }
        self.release_all();
        Ok(())
    }
}
