//! Fuzzes the highmem mappings against a model: `kmap`/`try_kmap`/`kunmap`
//! of 48 HIGHMEM pages and one lowmem page (users per page), and
//! `kmap_local_page`/`kmap_atomic` with their unmaps (a stack), plus bad
//! unmaps (a page not mapped, a double `kunmap`, a local unmap out of order,
//! of an address not from these calls, or of the wrong kind).
//!
//! After each step: the call returned what the model predicts (a bad unmap
//! its error, with nothing changed), `Pkmap::check` passes, every mapped
//! page's address reads the page's own stamp through the kernel page tables
//! with the TLB checker on, and `page_address` agrees with the model. Each
//! input ends by undoing every mapping, so the next one starts afresh on the
//! same machine and pkmap.
#![no_main]

use std::sync::OnceLock;

use kmm_buddy::Gfp;
use kmm_hal::{KernelLayout, PAGE_SIZE, VirtAddr};
use kmm_mock::{CpuBinding, Machine, MockCpu, MockFrames, MockPageTable};
use kmm_page_frame::Page;
use kmm_pkmap::{KunmapError, KunmapLocalError, Pkmap, SpinWait};
use kmm_testkit::{Backing, TestMachine};
use libfuzzer_sys::fuzz_target;

type Pk = Pkmap<'static, MockPageTable, MockFrames, Machine, MockCpu, SpinWait>;

/// HIGHMEM pages the ops pick from (index 48 is a lowmem page).
const HIGH: usize = 48;

struct World {
    host: &'static TestMachine,
    pk: &'static Pk,
    pages: Vec<&'static Page>,
    _cpu0: CpuBinding,
}

fn host() -> &'static TestMachine {
    static HOST: OnceLock<TestMachine> = OnceLock::new();
    HOST.get_or_init(|| {
        TestMachine::builder()
            .ram_mib(32)
            .highmem_mib(16)
            .backing(Backing::Software)
            .no_reserve()
            .kernel_tables_mib(1)
            .build()
    })
}

thread_local! {
    static WORLD: World = {
        let host = host();
        let cpu0 = host.bind(0);
        // SAFETY: the only pkmap over this machine's mem_map and tables: it
        // is made once, for the fuzzing thread, and never dropped.
        let pk: &'static Pk = Box::leak(Box::new(
            unsafe {
                Pkmap::new(
                    host.buddy().mem(),
                    host.kernel_tables(),
                    host.machine(),
                    host.cpu(),
                    host.machine().layout(),
                    SpinWait,
                )
            }
            .expect("pkmap"),
        ));
        let mut pages: Vec<&'static Page> = (0..HIGH)
            .map(|_| host.buddy().alloc_pages(Gfp::HIGHUSER, 0).expect("highmem"))
            .collect();
        pages.push(host.buddy().alloc_pages(Gfp::KERNEL, 0).expect("lowmem"));
        for (i, p) in pages.iter().enumerate() {
            let pa = host.buddy().mem().page_to_phys(p).expect("in mem_map");
            assert!(host.machine().write_phys(pa, &stamp(i)));
        }
        World { host, pk, pages, _cpu0: cpu0 }
    };
}

fn stamp(i: usize) -> [u8; 8] {
    ((i as u64) << 16 | 0x5AA5).to_le_bytes()
}

fn read(host: &TestMachine, va: VirtAddr) -> [u8; 8] {
    let mut b = [0u8; 8];
    host.kernel_tables()
        .lock(host.cpu())
        .pt
        .read(va, &mut b)
        .unwrap_or_else(|e| panic!("read through {va}: {e}"));
    b
}

fuzz_target!(|data: &[u8]| {
    WORLD.with(|w| run(w, data));
});

fn run(w: &World, data: &[u8]) {
    let (pk, host) = (w.pk, w.host);
    let mut users = [0u32; HIGH + 1];
    // (page index, address, atomic)
    let mut stack: Vec<(usize, VirtAddr, bool)> = Vec::new();
    for &[k, a] in data.as_chunks::<2>().0 {
        let i = usize::from(a) % (HIGH + 1);
        let page = w.pages[i];
        match k % 10 {
            0..=2 => {
                let va = if k % 2 == 0 {
                    pk.kmap(page)
                } else {
                    pk.try_kmap(page)
                };
                match va {
                    Ok(_) => users[i] += 1,
                    Err(kmm_pkmap::KmapError::Full) => {
                        assert!(k % 2 == 1, "kmap waits, never Full")
                    }
                    Err(e) => panic!("kmap: {e:?}"),
                }
            }
            3 | 4 => {
                let r = pk.kunmap(page);
                if i == HIGH {
                    assert_eq!(r, Ok(()), "kunmap of lowmem is a no-op");
                } else if users[i] > 0 {
                    r.expect("kunmap of a mapped page");
                    users[i] -= 1;
                } else {
                    assert!(
                        matches!(r, Err(KunmapError::NotMapped | KunmapError::Unbalanced)),
                        "kunmap of an unmapped page: {r:?}"
                    );
                }
            }
            5 | 6 if stack.len() < 8 => {
                let atomic = k % 2 == 0;
                let va = if atomic {
                    pk.kmap_atomic(page)
                } else {
                    pk.kmap_local_page(page)
                }
                .expect("a local slot");
                stack.push((i, va, atomic));
            }
            7 => {
                if let Some((_, va, atomic)) = stack.pop() {
                    if atomic {
                        pk.kunmap_atomic(va)
                    } else {
                        pk.kunmap_local(va)
                    }
                    .expect("the top local mapping");
                }
            }
            8 => {
                // Out of order, foreign, or the wrong kind: refused.
                let depth = pk.local_depth();
                let r = match (stack.len(), a % 3) {
                    // Not the top (a lowmem page's address is its direct-map
                    // one, the same for every local mapping of it).
                    (n, 0) if n >= 2 && stack[0].1 != stack[n - 1].1 => {
                        let (_, va, atomic) = stack[0];
                        if atomic {
                            pk.kunmap_atomic(va)
                        } else {
                            pk.kunmap_local(va)
                        }
                    }
                    (n, 1) if n >= 1 => {
                        let (_, va, atomic) = stack[n - 1];
                        if atomic {
                            pk.kunmap_local(va)
                        } else {
                            pk.kunmap_atomic(va)
                        }
                    }
                    _ => pk.kunmap_local(VirtAddr::new(
                        host.machine().layout().vmalloc_start().as_usize() + PAGE_SIZE,
                    )),
                };
                assert!(
                    matches!(
                        r,
                        Err(KunmapLocalError::OutOfOrder { .. }
                            | KunmapLocalError::WrongKind
                            | KunmapLocalError::NotMapped
                            | KunmapLocalError::NothingMapped)
                    ),
                    "a bad local unmap: {r:?}"
                );
                assert_eq!(pk.local_depth(), depth, "nothing changed");
            }
            _ => {}
        }
        pk.check().unwrap_or_else(|e| panic!("check: {e:?}"));
        for (j, &n) in users.iter().enumerate().take(HIGH) {
            let addr = pk.page_address(w.pages[j]);
            if n > 0 {
                let va = addr.expect("a mapped page has an address");
                assert_eq!(read(host, va), stamp(j), "page {j} through {va}");
            }
        }
        for &(j, va, _) in &stack {
            assert_eq!(read(host, va), stamp(j), "local mapping of page {j}");
        }
        assert!(host.machine().tlb().violations().is_empty());
    }
    while let Some((_, va, atomic)) = stack.pop() {
        if atomic {
            pk.kunmap_atomic(va)
        } else {
            pk.kunmap_local(va)
        }
        .expect("unwind");
    }
    for (j, n) in users.iter().enumerate() {
        for _ in 0..*n {
            pk.kunmap(w.pages[j]).expect("unwind");
        }
    }
    assert_eq!(pk.local_depth(), 0);
    pk.check().expect("check at the end");
}
