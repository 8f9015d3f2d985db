//! Several CPUs allocate, use and free areas at once: every access goes
//! through the per-CPU TLB checker, which finds no CPU using a translation
//! that changed — freed addresses are reused only after the kernel-wide
//! flush of a purge — and everything is given back at the end.

mod common;

use common::*;
use kmm_hal::{PAGE_SIZE, VirtAddr};

#[test]
fn cpus_share_the_vmalloc_range_without_stale_translations() {
    let host = rig(64, 2);
    let vm = {
        let _cpu0 = host.bind(0);
        vm(&host)
    };
    let rounds = if cfg!(miri) { 10 } else { 1500 };
    host.on_each_cpu(|cpu| {
        let mut live: Vec<(*mut u8, usize, u8)> = Vec::new();
        for r in 0..rounds {
            let pages = 1 + (r * 7 + cpu) % 9;
            let p = vm.vmalloc(pages * PAGE_SIZE).unwrap().as_ptr();
            let tag = (r as u8).wrapping_mul(31) ^ cpu as u8;
            for i in 0..pages {
                write(&host, page_va(p, i), &[tag; 16]).unwrap();
            }
            live.push((p, pages, tag));
            if live.len() > 6 {
                let (q, n, t) = live.remove(r % live.len());
                for i in 0..n {
                    let mut buf = [0u8; 16];
                    read(&host, page_va(q, i), &mut buf).unwrap();
                    assert_eq!(buf, [t; 16], "CPU {cpu}: another area's bytes");
                }
                vm.vfree(q).unwrap();
            }
        }
        for (q, _, _) in live {
            vm.vfree(q).unwrap();
        }
    });
    let v = host.machine().tlb().violations();
    assert!(v.is_empty(), "{} stale uses, first {}", v.len(), v[0]);
    assert!(vm.stats().purges > 0, "the lazy purge ran");
    let _cpu0 = host.bind(0);
    vm.purge();
    assert_eq!(vm.stats().areas, 0);
    assert!(vm.find_vm_area(VirtAddr::new(0)).is_none());
    drop(vm);
}
