//! The highmem benchmarks' workloads (issue 9): `kmap`+`kunmap` of a page
//! that is already mapped and of one that is not, and the
//! `kmap_local_page`+`kunmap_local` pair, on the mock's software backing.

use kmm_buddy::Gfp;
use kmm_mock::{Backing, CpuBinding, Machine, MockCpu, MockFrames, MockPageTable};
use kmm_page_frame::Page;
use kmm_pkmap::{Pkmap, SpinWait};
use kmm_testkit::TestMachine;

/// The pkmap of a [`KmapHost`].
pub type MockPkmap<'h> = Pkmap<'h, MockPageTable, MockFrames, Machine, MockCpu, SpinWait>;

/// A 64 MiB machine with high memory from 16 MiB and kernel page tables.
pub struct KmapHost {
    machine: TestMachine,
}

impl Default for KmapHost {
    fn default() -> Self {
        KmapHost::new()
    }
}

impl KmapHost {
    /// A fresh machine.
    pub fn new() -> KmapHost {
        let machine = TestMachine::builder()
            .ram_mib(64)
            .highmem_mib(16)
            .backing(Backing::Software)
            .no_reserve()
            .kernel_tables_mib(1)
            .build();
        KmapHost { machine }
    }

    /// Binds the calling thread to CPU 0.
    pub fn bind(&self) -> CpuBinding {
        self.machine.bind(0)
    }

    /// The pkmap over the machine (one per machine).
    pub fn pkmap(&self) -> MockPkmap<'_> {
        let m = &self.machine;
        // SAFETY: the only pkmap over this machine's mem_map and page tables
        // (one per `KmapHost`, and callers make one).
        unsafe {
            Pkmap::new(
                m.buddy().mem(),
                m.kernel_tables(),
                m.machine(),
                m.cpu(),
                m.machine().layout(),
                SpinWait,
            )
        }
        .expect("pkmap over the bench machine")
    }

    /// `n` HIGHMEM pages.
    pub fn highmem_pages(&self, n: usize) -> Vec<&Page> {
        (0..n)
            .map(|_| {
                self.machine
                    .buddy()
                    .alloc_pages(Gfp::HIGHUSER, 0)
                    .expect("a highmem page")
            })
            .collect()
    }
}

/// One `kmap`+`kunmap` pair.
#[inline(always)]
pub fn kmap_pair(pk: &MockPkmap<'_>, page: &Page) {
    let va = pk.kmap(page).expect("kmap");
    std::hint::black_box(va);
    pk.kunmap(page).expect("kunmap");
}

/// One `kmap_local_page`+`kunmap_local` pair.
#[inline(always)]
pub fn kmap_local_pair(pk: &MockPkmap<'_>, page: &Page) {
    let va = pk.kmap_local_page(page).expect("kmap_local_page");
    pk.kunmap_local(std::hint::black_box(va))
        .expect("kunmap_local");
}
