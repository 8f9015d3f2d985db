//! Growing a cache by a whole slab (Linux's `cache_grow`) and giving free
//! slabs back to the page allocator (`slab_destroy`).

use core::ptr::NonNull;

use intrusive_collections::UnsafeRef;
use kmm_buddy::Gfp;
use kmm_hal::{Cpu, VirtAddr};
use kmm_page_frame::{Page, PgFlags};

use crate::allocator::SlabAllocator;
use crate::cache::KmemCache;
use crate::debug;
use crate::slab_desc::{SlabDesc, SlabList};
use crate::{SlabError, SlabFlags};

impl<'a, C: Cpu> SlabAllocator<'a, C> {
    /// Gives up to `max` free slabs back to the page allocator; returns the
    /// number of pages freed.
    pub(crate) fn free_slabs(&self, c: &KmemCache, max: usize) -> usize {
        let mut pages = 0;
        for _ in 0..max {
            let slab = {
                let mut l = c.lists().lock_irqsave(self.buddy().cpu());
                let Some(r) = l.free.pop_back() else { break };
                l.free_objects -= r.num();
                l.slabs -= 1;
                l.reaped += 1;
                UnsafeRef::into_raw(r)
            };
            // SAFETY: off every list: ours alone.
            self.destroy_slab(c, unsafe { &*slab });
            pages += 1 << c.geo().gfporder;
        }
        pages
    }

    /// Adds a slab to the cache (Linux's `cache_grow`): pages from the buddy
    /// allocator, the management on or off the slab, a colour offset, the
    /// objects constructed, the pages pointed back at the cache and slab.
    /// Runs with nothing held (the page allocator may call `on_low`; the
    /// constructor runs).
    #[cold]
    pub(crate) fn grow(&self, c: &KmemCache, gfp: Gfp) -> Result<(), SlabError> {
        self.buddy().cpu().interrupt_point();
        let colour = self.next_colour(c);
        let head = self.get_slab_pages(c, gfp)?;
        let slab = match self.new_descriptor(c, head, colour, gfp) {
            Ok(slab) => slab,
            Err(e) => {
                let r = self
                    .buddy()
                    .free_pages_page(head, c.geo().gfporder as usize);
                debug_assert!(r.is_ok());
                return Err(e);
            }
        };
        construct(c, slab);
        self.claim_pages(c, head, slab);
        let mut l = c.lists().lock_irqsave(self.buddy().cpu());
        slab.set_list(SlabList::Free, &mut l);
        // SAFETY: the descriptor lives until `destroy_slab`.
        l.free.push_back(unsafe { UnsafeRef::from_raw(slab) });
        l.free_objects += c.geo().num;
        l.slabs += 1;
        l.grown += 1;
        Ok(())
    }

    /// The colour offset of the next slab (Linux's `colour_next`).
    fn next_colour(&self, c: &KmemCache) -> usize {
        let geo = c.geo();
        let mut l = c.lists().lock_irqsave(self.buddy().cpu());
        let off = l.colour_next;
        if geo.colour > 0 {
            l.colour_next = (l.colour_next + 1) % geo.colour;
        }
        off * geo.colour_off
    }

    /// A new slab's pages (Linux's `kmem_getpages`): from ZONE_DMA for a DMA
    /// cache, never high memory.
    fn get_slab_pages(&self, c: &KmemCache, gfp: Gfp) -> Result<&'a Page, SlabError> {
        let mut g = gfp.difference(Gfp::HIGHMEM | Gfp::ZERO | Gfp::DMA) | Gfp::NOWARN;
        if c.flags().contains(SlabFlags::CACHE_DMA) {
            g |= Gfp::DMA;
        }
        self.buddy()
            .alloc_pages(g, c.geo().gfporder as usize)
            .ok_or(SlabError::OutOfMemory)
    }

    /// The descriptor of a new slab on the block at `head`: on the slab after
    /// the colour offset, or an object of the off-slab descriptor cache
    /// (allocated without reclaim: the outer allocation reclaims).
    fn new_descriptor(
        &self,
        c: &KmemCache,
        head: &Page,
        colour: usize,
        gfp: Gfp,
    ) -> Result<&'a SlabDesc, SlabError> {
        let geo = c.geo();
        let addr = self
            .buddy()
            .mem()
            .page_address(head)
            .expect("slab pages are low memory")
            .as_usize();
        let (desc_at, s_mem) = if geo.off_slab {
            let cache = c
                .slabp_cache()
                .expect("off-slab caches have a descriptor cache");
            let desc_cache = self.cache(cache.erase())?;
            let p = self.alloc_object(desc_cache, gfp, false, desc_cache.geo().obj_size)?;
            (p.as_ptr().addr(), addr + colour)
        } else {
            (addr + colour, addr + colour + geo.mgmt_size)
        };
        // SAFETY: `desc_at` is ours (on the slab's own pages, or a fresh
        // off-slab object) with room for the descriptor and `num` entries,
        // until `destroy_slab`.
        Ok(unsafe {
            SlabDesc::init(
                core::ptr::with_exposed_provenance_mut(desc_at),
                addr,
                s_mem,
                geo.num,
                colour,
            )
        })
    }

    /// Points the block's pages back at the cache and the slab and marks them
    /// SLAB (and SLAB_INTERNAL for the cache of caches, whose objects
    /// `locate` — so `kfree` and `kmem_cache_free` — refuses).
    fn claim_pages(&self, c: &KmemCache, head: &Page, slab: &SlabDesc) {
        let mem = self.buddy().mem();
        let pfn = mem.page_to_pfn(head).expect("a buddy page").as_usize();
        let flags = if c.is_internal() {
            PgFlags::SLAB | PgFlags::SLAB_INTERNAL
        } else {
            PgFlags::SLAB
        };
        for p in 0..1usize << c.geo().gfporder {
            let page = mem
                .pfn_to_page(kmm_hal::Pfn::new(pfn + p))
                .expect("a buddy block");
            // SAFETY: the owner contract of `Page`: the block was just
            // allocated to this cache, and `c` and `slab` are the live cache
            // and slab its pages belong to until `destroy_slab`.
            unsafe {
                page.set_owner(c as *const KmemCache as usize);
                page.set_index(slab as *const SlabDesc as usize);
                page.insert(flags);
            }
        }
    }

    /// Gives a slab that is on no list back to the page allocator.
    pub(crate) fn destroy_slab(&self, c: &KmemCache, slab: &SlabDesc) {
        let mem = self.buddy().mem();
        let head: &Page = mem
            .virt_to_page(VirtAddr::new(slab.mem))
            .expect("slab pages are direct-mapped");
        let pfn = mem.page_to_pfn(head).expect("a buddy page").as_usize();
        for p in 0..1usize << c.geo().gfporder {
            let page = mem
                .pfn_to_page(kmm_hal::Pfn::new(pfn + p))
                .expect("a buddy block");
            // SAFETY: the owner contract of `Page`: the slab is on no list and
            // its block is still ours; clearing SLAB first leaves no stale
            // back-pointer for `kfree` to follow.
            unsafe {
                page.remove(PgFlags::SLAB | PgFlags::SLAB_INTERNAL);
                page.set_owner(0);
                page.set_index(0);
            }
        }
        if c.geo().off_slab {
            let desc = NonNull::from(slab).cast::<u8>();
            let r = c.slabp_cache().map(|sc| self.kmem_cache_free(sc, desc));
            debug_assert!(matches!(r, Some(Ok(()))), "off-slab descriptor free failed");
        }
        let r = self
            .buddy()
            .free_pages_page(head, c.geo().gfporder as usize);
        debug_assert!(r.is_ok(), "slab pages go back: {r:?}");
    }
}

/// Prepares every object of a new slab: the `debug` red zones and poison,
/// then the constructor (with nothing held: it is the user's code).
fn construct(c: &KmemCache, slab: &SlabDesc) {
    let geo = c.geo();
    for i in 0..geo.num {
        let buf = slab.s_mem + i * geo.buffer_size;
        debug::on_new(c, buf);
        if let Some(ctor) = c.ctor() {
            ctor(core::ptr::with_exposed_provenance_mut(buf + geo.obj_offset));
        }
    }
}
