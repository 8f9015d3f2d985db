//! Growing a cache by a whole slab (Linux's `cache_grow`) and giving free
//! slabs back to the page allocator (`slab_destroy`).

use core::ptr::NonNull;

use intrusive_collections::UnsafeRef;
use kmm_buddy::Gfp;
use kmm_hal::{Cpu, VirtAddr};
use kmm_page_frame::{Page, PgFlags};

use crate::allocator::SlabAllocator;
use crate::cache::KmemCache;
use crate::slab_desc::{SlabDesc, SlabList};
use crate::{SlabError, SlabFlags};

impl<'a, C: Cpu> SlabAllocator<'a, C> {
    /// Gives up to `max` free slabs back to the page allocator; returns the
    /// number of pages freed.
    pub(crate) fn free_slabs(&self, c: &KmemCache, max: usize) -> usize {
        let mut pages = 0;
        for _ in 0..max {
            let slab = {
                let mut l = c.lists.lock_irqsave(self.buddy.cpu());
                let Some(r) = l.free.pop_back() else { break };
                l.free_objects -= r.num();
                l.slabs -= 1;
                l.reaped += 1;
                UnsafeRef::into_raw(r)
            };
            // SAFETY: off every list: ours alone.
            self.destroy_slab(c, unsafe { &*slab });
            pages += 1 << c.geo.gfporder;
        }
        pages
    }

    /// Adds a slab to the cache (Linux's `cache_grow`): pages from the buddy
    /// allocator, the management on or off the slab, a colour offset, the
    /// objects constructed, the pages pointed back at the cache and slab.
    #[cold]
    pub(crate) fn grow(&self, c: &KmemCache, gfp: Gfp) -> Result<(), SlabError> {
        self.buddy.cpu().interrupt_point();
        let geo = c.geo;
        let colour = {
            let mut l = c.lists.lock_irqsave(self.buddy.cpu());
            let off = l.colour_next;
            if geo.colour > 0 {
                l.colour_next = (l.colour_next + 1) % geo.colour;
            }
            off * geo.colour_off
        };
        let mut g = gfp.difference(Gfp::HIGHMEM | Gfp::ZERO | Gfp::DMA) | Gfp::NOWARN;
        if c.flags.contains(SlabFlags::CACHE_DMA) {
            g |= Gfp::DMA;
        }
        let head = self
            .buddy
            .alloc_pages(g, geo.gfporder as usize)
            .ok_or(SlabError::OutOfMemory)?;
        let mem = self.buddy.mem();
        let addr = mem
            .page_address(head)
            .expect("slab pages are low memory")
            .as_usize();
        let (desc_at, s_mem) = if geo.off_slab {
            let cache = c
                .slabp_cache
                .expect("off-slab caches have a descriptor cache");
            let desc_cache = self.cache(cache.erase())?;
            match self.alloc_object(desc_cache, gfp, false) {
                Ok(p) => (p.as_ptr().addr(), addr + colour),
                Err(e) => {
                    let r = self.buddy.free_pages_page(head, geo.gfporder as usize);
                    debug_assert!(r.is_ok());
                    return Err(e);
                }
            }
        } else {
            (addr + colour, addr + colour + geo.mgmt_size)
        };
        // SAFETY: `desc_at` is ours (on the slab's own pages, or a fresh off-slab
        // object) with room for the descriptor and `num` entries.
        let slab = unsafe {
            SlabDesc::init(
                core::ptr::with_exposed_provenance_mut(desc_at),
                addr,
                s_mem,
                geo.num,
                colour,
            )
        };
        for i in 0..geo.num {
            let buf = s_mem + i * geo.buffer_size;
            self.debug_on_new(c, buf);
            if let Some(ctor) = c.ctor {
                ctor(core::ptr::with_exposed_provenance_mut(buf + geo.obj_offset));
            }
        }
        let pfn = mem.page_to_pfn(head).expect("a buddy page").as_usize();
        // The cache of caches' pages are the allocator's own: `locate` (so
        // `kfree` and `kmem_cache_free`) refuses their objects.
        let flags = if c.is_internal() {
            PgFlags::SLAB | PgFlags::SLAB_INTERNAL
        } else {
            PgFlags::SLAB
        };
        for p in 0..1usize << geo.gfporder {
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
        let mut l = c.lists.lock_irqsave(self.buddy.cpu());
        slab.set_list(SlabList::Free, &mut l);
        // SAFETY: the descriptor lives until `destroy_slab`.
        l.free.push_back(unsafe { UnsafeRef::from_raw(slab) });
        l.free_objects += geo.num;
        l.slabs += 1;
        l.grown += 1;
        Ok(())
    }

    /// Gives a slab that is on no list back to the page allocator.
    pub(crate) fn destroy_slab(&self, c: &KmemCache, slab: &SlabDesc) {
        let mem = self.buddy.mem();
        let head: &Page = mem
            .virt_to_page(VirtAddr::new(slab.mem))
            .expect("slab pages are direct-mapped");
        let pfn = mem.page_to_pfn(head).expect("a buddy page").as_usize();
        for p in 0..1usize << c.geo.gfporder {
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
        if c.geo.off_slab {
            let desc = NonNull::from(slab).cast::<u8>();
            let r = c.slabp_cache.map(|sc| self.kmem_cache_free(sc, desc));
            debug_assert!(matches!(r, Some(Ok(()))), "off-slab descriptor free failed");
        }
        let r = self.buddy.free_pages_page(head, c.geo.gfporder as usize);
        debug_assert!(r.is_ok(), "slab pages go back: {r:?}");
    }
}
