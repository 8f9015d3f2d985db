//! Fuzzes the buddy allocator with the operation grammar of its model test:
//! allocations of every order and GFP zone on two CPUs and two nodes, frees
//! (hot and cold, on either CPU), extra references, bad frees, drains. After
//! each step the live blocks must not overlap and the accounting must be exact;
//! each input ends by freeing everything, draining both CPUs and checking that
//! every zone is fully coalesced — so the allocator is back where it started and
//! is reused by the next input.
#![no_main]

use std::collections::BTreeMap;
use std::sync::OnceLock;

use kmm_buddy::{Buddy, BuddyConfig, FreeError, Freed, Gfp, MAX_ORDER};
use kmm_hal::{DirectMap, Fixmap, KernelLayout, PhysAddr, Pfn, VirtAddr};
use kmm_mock::{Backing, Machine, MockCpu, MockLayout};
use kmm_page_frame::{Bootmem, MemMap, PgFlags, Region, RegionKind, ZoneType};
use libfuzzer_sys::fuzz_target;

const MIB: u64 = 1 << 20;

/// 24 MiB on two nodes, a BIOS hole, an unaligned ACPI range.
static MAP: [Region; 5] = [
    Region::new(0, 0x9_fc00, RegionKind::Usable),
    Region::new(0x9_fc00, 0x6_0400, RegionKind::Reserved),
    Region::new(0x10_0000, 12 * MIB - 0x10_0000, RegionKind::Usable),
    Region::new(0x50_0100, 0x1800, RegionKind::AcpiNvs),
    Region {
        base: 12 * MIB,
        len: 12 * MIB,
        kind: RegionKind::Usable,
        node: 1,
    },
];

/// The mock layout with high memory from 20 MiB, so all three zones exist.
struct Layout(MockLayout);

// SAFETY: the mock layout's values, highmem from 20 MiB (inside its direct map).
unsafe impl KernelLayout for Layout {
    fn direct_map(&self) -> DirectMap {
        self.0.direct_map()
    }
    fn vmalloc_start(&self) -> VirtAddr {
        self.0.vmalloc_start()
    }
    fn vmalloc_end(&self) -> VirtAddr {
        self.0.vmalloc_end()
    }
    fn pkmap_base(&self) -> VirtAddr {
        self.0.pkmap_base()
    }
    fn last_pkmap(&self) -> usize {
        self.0.last_pkmap()
    }
    fn fixmap(&self) -> Fixmap {
        self.0.fixmap()
    }
    fn highmem_start(&self) -> PhysAddr {
        PhysAddr::new(20 * MIB)
    }
}

struct Rig {
    machine: &'static Machine,
    buddy: Buddy<'static, MockCpu>,
}

fn rig() -> &'static Rig {
    static RIG: OnceLock<Rig> = OnceLock::new();
    RIG.get_or_init(|| {
        let machine: &'static Machine = Box::leak(Box::new(
            Machine::builder()
                .ram((24 * MIB) as usize)
                .cpus(2)
                .backing(Backing::Software)
                .build()
                .expect("machine"),
        ));
        let mut boot = Bootmem::new(&MAP, machine.lowmem_end()).expect("bootmem");
        boot.reserve(PhysAddr::new(MIB), MIB).expect("kernel image");
        // SAFETY: the machine is leaked: its RAM (the direct map) lives forever.
        let mem = unsafe { MemMap::new(&mut boot, &Layout(*machine.layout())) }.expect("mem_map");
        let config = BuddyConfig {
            min_free_kbytes: Some(256),
            cpu_nodes: &[0, 1],
            ..BuddyConfig::default()
        };
        // SAFETY: as above.
        let buddy = unsafe { Buddy::new(mem, boot, machine.cpu().clone(), config) }.expect("buddy");
        Rig { machine, buddy }
    })
}

fn gfp(sel: u8) -> Gfp {
    [Gfp::KERNEL | Gfp::DMA, Gfp::KERNEL, Gfp::HIGHUSER, Gfp::ATOMIC | Gfp::COLD][usize::from(sel % 4)]
}

fn check(b: &Buddy<'static, MockCpu>, live: &BTreeMap<usize, (usize, u32)>) {
    let mut end = 0;
    for (&pfn, &(order, refs)) in live {
        assert!(pfn >= end, "live blocks overlap at {pfn:#x}");
        end = pfn + (1 << order);
        let p = b.mem().pfn_to_page(Pfn::new(pfn)).unwrap();
        assert!(p.test(PgFlags::HEAD) && p.private() == order && p.count() == refs);
    }
    let used: usize = live.values().map(|&(o, _)| 1 << o).sum();
    assert_eq!(b.free_pages_total() + used, b.managed_total(), "pages lost");
}

fn coalesced(b: &Buddy<'static, MockCpu>) {
    let pages = b.mem().pages();
    for z in b.zones() {
        assert_eq!(z.pcp_pages(), 0);
        assert_eq!(z.free_pages(), z.managed());
        let span = z.span();
        let mut ideal = [0usize; MAX_ORDER];
        let (mut pfn, end) = (span.start_pfn as usize, span.end_pfn() as usize);
        while pfn < end {
            if pages[pfn].test(PgFlags::RESERVED) {
                pfn += 1;
                continue;
            }
            let mut run = pfn;
            while run < end && !pages[run].test(PgFlags::RESERVED) {
                run += 1;
            }
            for (_, o) in kmm_buddy::aligned_blocks(pfn, run) {
                ideal[o] += 1;
            }
            pfn = run;
        }
        let got: Vec<usize> = (0..MAX_ORDER).map(|o| z.nr_free(o)).collect();
        assert_eq!(got, ideal.to_vec(), "zone {:?} of node {} not coalesced", z.kind(), z.node());
    }
}

fuzz_target!(|data: &[u8]| {
    let r = rig();
    let b = &r.buddy;
    let cpus = r.machine.cpu();
    let mut live: BTreeMap<usize, (usize, u32)> = BTreeMap::new();
    let mut freed: Vec<usize> = Vec::new();
    for op in data.chunks_exact(3) {
        let (k, x, y) = (op[0], op[1], op[2]);
        let cpu = usize::from(x & 1);
        let _on = cpus.bind(cpu).expect("bind");
        match k % 6 {
            0 => {
                let order = usize::from(y) % (MAX_ORDER + 1);
                let g = gfp(x >> 1);
                match b.alloc_pages(g, order) {
                    Some(p) => {
                        assert!(order < MAX_ORDER);
                        assert!(p.zone_type() <= g.zone());
                        if g.contains(Gfp::DMA) {
                            assert_eq!(p.zone_type(), ZoneType::Dma);
                        }
                        let pfn = b.mem().page_to_pfn(p).unwrap().as_usize();
                        assert_eq!(pfn % (1 << order), 0);
                        assert!(live.insert(pfn, (order, 1)).is_none());
                    }
                    None => {}
                }
            }
            1 if !live.is_empty() => {
                let pick = usize::from(u16::from_le_bytes([x, y])) % live.len();
                let (&pfn, &(order, refs)) = live.iter().nth(pick).unwrap();
                let p = b.mem().pfn_to_page(Pfn::new(pfn)).unwrap();
                let res = if order == 0 && y & 1 == 1 { b.free_cold_page(p) } else { b.free_pages_page(p, order) };
                if refs == 1 {
                    assert_eq!(res, Ok(Freed::Released));
                    live.remove(&pfn);
                    freed.push(pfn);
                } else {
                    assert_eq!(res, Ok(Freed::StillReferenced));
                    live.get_mut(&pfn).unwrap().1 -= 1;
                }
            }
            2 if !live.is_empty() => {
                let pick = usize::from(y) % live.len();
                let (&pfn, _) = live.iter().nth(pick).unwrap();
                assert!(b.get_page(b.mem().pfn_to_page(Pfn::new(pfn)).unwrap()));
                live.get_mut(&pfn).unwrap().1 += 1;
            }
            3 => {
                // A bad free: a freed block again, a tail page, a wrong order, a
                // reserved page. It must be refused and change nothing.
                let before = b.free_pages_total();
                let res = match (y % 4, live.iter().nth(usize::from(x) % live.len().max(1))) {
                    (0, _) if !freed.is_empty() => {
                        let pfn = freed[usize::from(x) % freed.len()];
                        if live.keys().any(|&s| s <= pfn && pfn < s + (1 << live[&s].0)) {
                            continue;
                        }
                        b.free_pages_page(b.mem().pfn_to_page(Pfn::new(pfn)).unwrap(), 0)
                    }
                    (1, Some((&pfn, &(order, _)))) if order > 0 => {
                        b.free_pages_page(b.mem().pfn_to_page(Pfn::new(pfn + 1)).unwrap(), 0)
                    }
                    (2, Some((&pfn, &(order, _)))) if order > 0 => {
                        b.free_pages_page(b.mem().pfn_to_page(Pfn::new(pfn)).unwrap(), order - 1)
                    }
                    _ => b.free_pages_page(b.mem().pfn_to_page(Pfn::new(0x100 + usize::from(x))).unwrap(), 0),
                };
                assert!(res.is_err(), "bad free accepted");
                if let Err(FreeError::WrongOrder { allocated }) = res {
                    assert!(allocated < MAX_ORDER);
                }
                assert_eq!(b.free_pages_total(), before);
            }
            4 => b.drain_local(),
            5 => b.drain_all_pages(),
            _ => {}
        }
        check(b, &live);
    }
    {
        let _on = cpus.bind(0).expect("bind");
        for (&pfn, &(order, refs)) in &live {
            let p = b.mem().pfn_to_page(Pfn::new(pfn)).unwrap();
            for _ in 1..refs {
                assert_eq!(b.free_pages_page(p, order), Ok(Freed::StillReferenced));
            }
            assert_eq!(b.free_pages_page(p, order), Ok(Freed::Released));
        }
        b.drain_local();
    }
    {
        let _on = cpus.bind(1).expect("bind");
        b.drain_local();
    }
    coalesced(b);
});
