//! `MemMap::new` checks the kernel layout before it uses it: a layout that
//! breaks the `KernelLayout` contract is refused with a typed error and
//! nothing is placed or written.

use kmm_hal::{DirectMap, Fixmap, KernelLayout, LayoutError, PhysAddr, VirtAddr};
use kmm_mock::{Backing, Machine, MockLayout};
use kmm_page_frame::{Bootmem, MemMap, MemMapError, Region, RegionKind};

/// What to break in the machine's (good) layout.
#[derive(Clone, Copy)]
enum Break {
    /// `ZONE_HIGHMEM` starts past the end of the direct map: frames between
    /// the two would be "low memory" with no direct-map address.
    HighmemPastDirectMap,
    /// The vmalloc area starts inside the direct map.
    VmallocOverlapsDirectMap,
}

/// The machine's layout with one value made wrong. `MockLayout` itself cannot
/// be built wrong (`with_highmem_start` clamps), so this wrapper lies.
struct BadLayout {
    inner: MockLayout,
    fault: Break,
}

// SAFETY: deliberately NOT kept — this layout breaks the contract in the one
// way `fault` names, and is only handed to `MemMap::new`, which must check it
// (`kmm_hal::check_layout`) and refuse it before it relies on any value.
unsafe impl KernelLayout for BadLayout {
    fn direct_map(&self) -> DirectMap {
        self.inner.direct_map()
    }
    fn vmalloc_start(&self) -> VirtAddr {
        match self.fault {
            Break::VmallocOverlapsDirectMap => {
                let dm = self.inner.direct_map();
                VirtAddr::new(dm.base().as_usize() + dm.size() / 2)
            }
            Break::HighmemPastDirectMap => self.inner.vmalloc_start(),
        }
    }
    fn vmalloc_end(&self) -> VirtAddr {
        self.inner.vmalloc_end()
    }
    fn pkmap_base(&self) -> VirtAddr {
        self.inner.pkmap_base()
    }
    fn last_pkmap(&self) -> usize {
        self.inner.last_pkmap()
    }
    fn fixmap(&self) -> Fixmap {
        self.inner.fixmap()
    }
    fn dma_limit(&self) -> PhysAddr {
        self.inner.dma_limit()
    }
    fn highmem_start(&self) -> PhysAddr {
        match self.fault {
            Break::HighmemPastDirectMap => {
                PhysAddr::new(self.inner.direct_map().size() as u64 + (64 << 20))
            }
            Break::VmallocOverlapsDirectMap => self.inner.highmem_start(),
        }
    }
    fn phys_limit(&self) -> u64 {
        self.inner.phys_limit()
    }
}

#[test]
fn a_layout_that_breaks_the_contract_is_refused() {
    let m = Machine::builder()
        .ram(16 << 20)
        .backing(Backing::Software)
        .build()
        .unwrap();
    let map = [Region::new(0, 16 << 20, RegionKind::Usable)];
    for (fault, want) in [
        (Break::HighmemPastDirectMap, LayoutError::PhysLimits),
        (
            Break::VmallocOverlapsDirectMap,
            LayoutError::Overlap("direct map", "vmalloc"),
        ),
    ] {
        let layout = BadLayout {
            inner: *m.layout(),
            fault,
        };
        assert_eq!(kmm_hal::check_layout(&layout), Err(want));
        let mut boot = Bootmem::new(&map, m.lowmem_end()).unwrap();
        let limit = boot.limit_pfn();
        // SAFETY: the direct map is the machine's RAM, which outlives the
        // call (and nothing is built: the layout is refused first).
        let r = unsafe { MemMap::new(&mut boot, &layout) };
        assert_eq!(r.err(), Some(MemMapError::Layout(want)));
        assert!(
            MemMapError::Layout(want).to_string().starts_with("layout:"),
            "the error names the layout"
        );
        // Nothing was placed or limited.
        assert_eq!(boot.allocated_pages(), 0);
        assert_eq!(boot.limit_pfn(), limit);
    }
    // The same machine's own layout, with high memory moved inside the direct
    // map, is fine.
    let good = m.layout().with_highmem_start(8 << 20);
    let mut boot = Bootmem::new(&map, m.lowmem_end()).unwrap();
    // SAFETY: as above; `m` outlives `mem`.
    let mem = unsafe { MemMap::new(&mut boot, &good) }.unwrap();
    assert_eq!(mem.len(), (16 << 20) / 4096);
}
