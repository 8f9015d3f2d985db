//! Fuzzes the SLAB allocator (with its `debug` checks on) with the grammar of
//! its model test: caches of fuzzed sizes and alignments, object allocations and
//! frees, kmalloc / krealloc / kfree of fuzzed sizes, bad frees (interior,
//! wrong cache, double), reaping. Every live block carries a pattern that is
//! checked when it is freed; bad frees must be refused and change nothing. Each
//! input ends by freeing everything and destroying its caches, and every page
//! must be back in the buddy allocator — so the next input starts afresh on the
//! same allocators.
#![no_main]

use std::collections::BTreeMap;
use std::ptr::NonNull;
use std::sync::OnceLock;

use kmm_buddy::{Buddy, BuddyConfig, Gfp};
use kmm_hal::PhysAddr;
use kmm_mock::{Backing, Machine, MockCpu};
use kmm_page_frame::{Bootmem, MemMap, Region, RegionKind};
use kmm_slab::{Cache, SlabAllocator, SlabFlags};
use libfuzzer_sys::fuzz_target;

const MIB: u64 = 1 << 20;

struct Rig {
    machine: &'static Machine,
    buddy: &'static Buddy<'static, MockCpu>,
    slab: SlabAllocator<'static, MockCpu>,
}

fn rig() -> &'static Rig {
    static RIG: OnceLock<Rig> = OnceLock::new();
    RIG.get_or_init(|| {
        let machine: &'static Machine = Box::leak(Box::new(
            Machine::builder()
                .ram((32 * MIB) as usize)
                .backing(Backing::Software)
                .build()
                .expect("machine"),
        ));
        let map = [Region::new(0, 32 * MIB, RegionKind::Usable)];
        let mut boot = Bootmem::new(&map, machine.lowmem_end()).expect("bootmem");
        boot.reserve(PhysAddr::new(MIB), MIB).expect("kernel");
        // SAFETY: the machine is leaked: its RAM (the direct map) lives forever.
        let mem = unsafe { MemMap::new(&mut boot, machine.layout()) }.expect("mem_map");
        let config = BuddyConfig {
            min_free_kbytes: Some(0),
            ..BuddyConfig::default()
        };
        // SAFETY: as above.
        let buddy = unsafe { Buddy::new(mem, boot, machine.cpu().clone(), config) }.expect("buddy");
        let buddy: &'static Buddy<'static, MockCpu> = Box::leak(Box::new(buddy));
        let slab = {
            let _c = machine.cpu().bind(0).expect("bind");
            SlabAllocator::new(buddy).expect("slab")
        };
        Rig { machine, buddy, slab }
    })
}

/// Pages out of the buddy allocator, less the cache of caches' kept slabs.
fn pages_out(r: &Rig) -> usize {
    let cc = r.slab.cache_of_caches();
    let st = r.slab.cache_stats(cc).expect("cache of caches");
    r.buddy.managed_total() - r.buddy.free_pages_total() - (st.num_slabs << st.gfporder)
}

#[derive(Clone, Copy)]
struct Live {
    size: usize,
    cache: Option<usize>,
    tag: u8,
}

fn fill(p: usize, n: usize, tag: u8) {
    // SAFETY: a live block of at least `n` bytes owned by the fuzzer.
    unsafe { core::ptr::write_bytes(p as *mut u8, tag, n) };
}

fn intact(p: usize, n: usize, tag: u8) -> bool {
    // SAFETY: as in `fill`.
    unsafe { core::slice::from_raw_parts(p as *const u8, n) }.iter().all(|&b| b == tag)
}

fuzz_target!(|data: &[u8]| {
    let r = rig();
    let s = &r.slab;
    let _cpu = r.machine.cpu().bind(0).expect("bind");
    let baseline = pages_out(r);
    let mut caches: Vec<(Cache, usize)> = Vec::new();
    let mut live: BTreeMap<usize, Live> = BTreeMap::new();
    for (n, op) in data.chunks_exact(4).enumerate() {
        let (k, a, b, c) = (op[0], op[1], op[2], op[3]);
        let tag = (n as u8) | 1;
        let wide = usize::from(u16::from_le_bytes([b, c]));
        match k % 7 {
            0 if caches.len() < 6 => {
                let size = 1 + wide % 5000;
                let align = [0usize, 8, 16, 64, 512, 4096][usize::from(a) % 6];
                let flags = if a & 0x80 != 0 { SlabFlags::HWCACHE_ALIGN } else { SlabFlags::empty() };
                if let Ok(cache) = s.kmem_cache_create("fuzz", size, align, flags, None) {
                    caches.push((cache, size));
                }
            }
            1 if !caches.is_empty() => {
                let i = usize::from(a) % caches.len();
                let (cache, size) = caches[i];
                if let Ok(p) = s.kmem_cache_alloc(cache, Gfp::KERNEL) {
                    let p = p.as_ptr() as usize;
                    fill(p, size, tag);
                    assert!(live.insert(p, Live { size, cache: Some(i), tag }).is_none());
                }
            }
            2 => {
                let size = 1 + wide * (1 + usize::from(a % 8));
                if let Ok(p) = s.kmalloc(size, Gfp::KERNEL) {
                    let p = p.as_ptr() as usize;
                    assert!(s.ksize(p as *mut u8).unwrap() >= size);
                    fill(p, size, tag);
                    assert!(live.insert(p, Live { size, cache: None, tag }).is_none());
                }
            }
            3 if !live.is_empty() => {
                let (&p, &l) = live.iter().nth(wide % live.len()).unwrap();
                assert!(intact(p, l.size, l.tag), "block overwritten");
                match l.cache {
                    Some(i) => s.kmem_cache_free(caches[i].0, NonNull::new(p as *mut u8).unwrap()).unwrap(),
                    None => s.kfree(p as *mut u8).unwrap(),
                }
                live.remove(&p);
            }
            4 => {
                let kmallocd: Vec<usize> = live.iter().filter(|(_, l)| l.cache.is_none()).map(|(&p, _)| p).collect();
                if let Some(&p) = kmallocd.get(usize::from(a) % kmallocd.len().max(1)) {
                    let l = live[&p];
                    let size = 1 + wide * (1 + usize::from(c % 4));
                    // SAFETY: `p` is a live kmalloc block the fuzzer owns.
                    if let Ok(q) = unsafe { s.krealloc(p as *mut u8, size, Gfp::KERNEL) } {
                        let q = q.as_ptr() as usize;
                        assert!(intact(q, l.size.min(size), l.tag), "krealloc lost the contents");
                        live.remove(&p);
                        fill(q, size, tag);
                        assert!(live.insert(q, Live { size, cache: None, tag }).is_none());
                    }
                }
            }
            5 if !live.is_empty() => {
                let (&p, &l) = live.iter().nth(wide % live.len()).unwrap();
                let before = pages_out(r);
                let res = match a % 3 {
                    0 if l.size > 1 => s.kfree((p + 1) as *mut u8),
                    1 if !caches.is_empty() => {
                        let other = usize::from(c) % caches.len();
                        if l.cache == Some(other) {
                            continue;
                        }
                        s.kmem_cache_free(caches[other].0, NonNull::new(p as *mut u8).unwrap())
                    }
                    _ => {
                        let mut x = 0u64;
                        s.kfree((&raw mut x).cast())
                    }
                };
                assert!(res.is_err(), "bad free accepted");
                assert_eq!(pages_out(r), before);
                assert!(intact(p, l.size, l.tag));
            }
            6 => {
                s.reap();
            }
            _ => {}
        }
    }
    for (&p, l) in &live {
        assert!(intact(p, l.size, l.tag), "block overwritten");
        match l.cache {
            Some(i) => s.kmem_cache_free(caches[i].0, NonNull::new(p as *mut u8).unwrap()).unwrap(),
            None => s.kfree(p as *mut u8).unwrap(),
        }
    }
    s.shrink_all();
    for &(cache, _) in &caches {
        // SAFETY: no other CPU exists in this rig.
        unsafe { s.kmem_cache_destroy(cache) }.expect("destroy an empty cache");
    }
    s.shrink_all();
    r.buddy.drain_local();
    assert_eq!(pages_out(r), baseline, "pages not given back");
    // The grammar never damages an object, so the debug checks must have
    // nothing to report.
    let mut reports = [None; 16];
    assert_eq!(s.reports(&mut reports), 0, "debug report: {:?}", reports[0]);
});
