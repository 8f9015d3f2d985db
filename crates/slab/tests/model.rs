//! Model-based property test: caches of many sizes, alignments and
//! constructors, kmalloc/krealloc/kfree, on several CPUs. Every live object is
//! filled with a pattern and checked; no two overlap; bad frees change nothing;
//! after freeing everything and shrinking, every page is back in the buddy
//! allocator.

mod common;

use std::collections::BTreeMap;
use std::ptr::NonNull;

use common::{pages_out, rig, shrink_everywhere};
use kmm_buddy::Gfp;
use kmm_slab::{Cache, SlabError, SlabFlags};
use proptest::prelude::*;

const CPUS: usize = 2;
const CACHES: usize = 4;

#[derive(Debug, Clone)]
enum Op {
    Alloc {
        cpu: usize,
        cache: usize,
    },
    Kmalloc {
        cpu: usize,
        size: usize,
        dma: bool,
    },
    Free {
        cpu: usize,
        pick: usize,
    },
    Realloc {
        cpu: usize,
        pick: usize,
        size: usize,
    },
    BadFree {
        pick: usize,
        kind: u8,
    },
    Reap {
        cpu: usize,
    },
}

fn op() -> impl Strategy<Value = Op> {
    let size = prop_oneof![8 => 1usize..300, 3 => 300usize..5000, 1 => 5000usize..40_000, 1 => 130_000usize..300_000];
    prop_oneof![
        4 => (0..CPUS, 0..CACHES).prop_map(|(cpu, cache)| Op::Alloc { cpu, cache }),
        4 => (0..CPUS, size.clone(), any::<bool>()).prop_map(|(cpu, size, dma)| Op::Kmalloc { cpu, size, dma }),
        6 => (0..CPUS, any::<usize>()).prop_map(|(cpu, pick)| Op::Free { cpu, pick }),
        2 => (0..CPUS, any::<usize>(), size).prop_map(|(cpu, pick, size)| Op::Realloc { cpu, pick, size }),
        1 => (any::<usize>(), 0u8..4).prop_map(|(pick, kind)| Op::BadFree { pick, kind }),
        1 => (0..CPUS).prop_map(|cpu| Op::Reap { cpu }),
    ]
}

/// Cache specs: size, alignment, flags, constructor.
fn cache_spec() -> impl Strategy<Value = (usize, usize, bool, bool)> {
    (
        1usize..3000,
        prop_oneof![
            Just(0usize),
            Just(8),
            Just(16),
            Just(64),
            Just(256),
            Just(4096)
        ],
        any::<bool>(),
        any::<bool>(),
    )
}

fn ctor(obj: *mut u8) {
    // SAFETY: the allocator hands the constructor a whole object of at least
    // one byte.
    unsafe { obj.write(0xC7) }
}

#[derive(Debug, Clone, Copy)]
struct Live {
    size: usize,
    cache: Option<usize>,
    tag: u8,
}

fn fill(p: usize, size: usize, tag: u8) {
    // SAFETY: `p` is a live block of at least `size` bytes that the test owns.
    unsafe { core::ptr::write_bytes(p as *mut u8, tag, size) };
}

fn check(p: usize, size: usize, tag: u8) -> bool {
    // SAFETY: as in `fill`.
    let b = unsafe { core::slice::from_raw_parts(p as *const u8, size) };
    b.iter().all(|&x| x == tag)
}

/// Checks a live block: constructed objects keep byte 0 as the constructor set
/// it and carry the tag after it.
fn check_live(p: usize, l: &Live, ctor_cache: bool) -> bool {
    if ctor_cache {
        // SAFETY: as in `fill`.
        let first = unsafe { *(p as *const u8) };
        first == 0xC7 && check(p + 1, l.size - 1, l.tag)
    } else {
        check(p, l.size, l.tag)
    }
}

fn run(specs: Vec<(usize, usize, bool, bool)>, ops: Vec<Op>) -> Result<(), TestCaseError> {
    let r = rig(48, CPUS);
    let s = &r.slab;
    let cpus = r.machine.cpu();
    let baseline = pages_out(&r);
    let caches: Vec<(Cache, usize, usize, bool)> = {
        let _c = cpus.bind(0).unwrap();
        specs
            .iter()
            .map(|&(size, align, hw, with_ctor)| {
                let flags = if hw {
                    SlabFlags::HWCACHE_ALIGN
                } else {
                    SlabFlags::empty()
                };
                let c = s
                    .kmem_cache_create(
                        "model",
                        size,
                        align,
                        flags,
                        with_ctor.then_some(ctor as fn(*mut u8)),
                    )
                    .expect("cache");
                (c, size, align, with_ctor)
            })
            .collect()
    };
    let mut live: BTreeMap<usize, Live> = BTreeMap::new();
    let mut tag = 1u8;
    for op in ops {
        tag = tag.wrapping_add(1).max(1);
        match op {
            Op::Alloc { cpu, cache } => {
                let _c = cpus.bind(cpu).unwrap();
                let (c, size, align, with_ctor) = caches[cache % caches.len()];
                let p = s.kmem_cache_alloc(c, Gfp::KERNEL).expect("alloc").as_ptr() as usize;
                if align > 0 {
                    prop_assert_eq!(p % align, 0, "misaligned object");
                }
                if with_ctor {
                    // The constructor ran when the slab was grown, and users
                    // give objects back in their constructed state (the test
                    // keeps byte 0 as the constructor left it).
                    // SAFETY: a live object of at least one byte.
                    let first = unsafe { *(p as *const u8) };
                    prop_assert_eq!(first, 0xC7, "object not constructed");
                    fill(p + 1, size - 1, tag);
                } else {
                    fill(p, size, tag);
                }
                let fresh = live
                    .insert(
                        p,
                        Live {
                            size,
                            cache: Some(cache % caches.len()),
                            tag,
                        },
                    )
                    .is_none();
                prop_assert!(fresh, "handed out twice");
            }
            Op::Kmalloc { cpu, size, dma } => {
                let _c = cpus.bind(cpu).unwrap();
                let gfp = if dma {
                    Gfp::KERNEL | Gfp::DMA
                } else {
                    Gfp::KERNEL
                };
                let p = s.kmalloc(size, gfp).expect("kmalloc").as_ptr() as usize;
                prop_assert!(s.ksize(p as *mut u8).unwrap() >= size);
                if size >= 8 {
                    prop_assert_eq!(p % 8, 0);
                }
                fill(p, size, tag);
                let fresh = live
                    .insert(
                        p,
                        Live {
                            size,
                            cache: None,
                            tag,
                        },
                    )
                    .is_none();
                prop_assert!(fresh, "handed out twice");
            }
            Op::Free { cpu, pick } => {
                if live.is_empty() {
                    continue;
                }
                let _c = cpus.bind(cpu).unwrap();
                let (&p, &l) = live.iter().nth(pick % live.len()).unwrap();
                let ctor_cache = l.cache.is_some_and(|i| caches[i].3);
                prop_assert!(check_live(p, &l, ctor_cache), "object overwritten");
                let ptr = NonNull::new(p as *mut u8).unwrap();
                match l.cache {
                    Some(i) => prop_assert_eq!(s.kmem_cache_free(caches[i].0, ptr), Ok(())),
                    None => prop_assert_eq!(s.kfree(ptr.as_ptr()), Ok(())),
                }
                live.remove(&p);
            }
            Op::Realloc { cpu, pick, size } => {
                let kmallocd: Vec<usize> = live
                    .iter()
                    .filter(|(_, l)| l.cache.is_none())
                    .map(|(&p, _)| p)
                    .collect();
                if kmallocd.is_empty() {
                    continue;
                }
                let _c = cpus.bind(cpu).unwrap();
                let p = kmallocd[pick % kmallocd.len()];
                let l = live[&p];
                // SAFETY: `p` is a live kmalloc block the test owns.
                let q = unsafe { s.krealloc(p as *mut u8, size, Gfp::KERNEL) }
                    .expect("krealloc")
                    .as_ptr() as usize;
                let keep = l.size.min(size);
                prop_assert!(check(q, keep, l.tag), "krealloc lost the contents");
                live.remove(&p);
                fill(q, size, tag);
                let fresh = live
                    .insert(
                        q,
                        Live {
                            size,
                            cache: None,
                            tag,
                        },
                    )
                    .is_none();
                prop_assert!(fresh, "handed out twice");
            }
            Op::BadFree { pick, kind } => {
                if live.is_empty() {
                    continue;
                }
                let _c = cpus.bind(0).unwrap();
                let (&p, &l) = live.iter().nth(pick % live.len()).unwrap();
                let before = pages_out(&r);
                let res = match kind {
                    0 if l.size > 1 => s.kfree((p + 1) as *mut u8),
                    1 => {
                        let other = caches
                            .iter()
                            .position(|c| Some(c) != l.cache.map(|i| &caches[i]))
                            .unwrap_or(0);
                        s.kmem_cache_free(caches[other].0, NonNull::new(p as *mut u8).unwrap())
                    }
                    _ => {
                        let mut x = 0u64;
                        s.kfree((&raw mut x).cast())
                    }
                };
                let in_slab = s.ksize(p as *mut u8).unwrap() <= kmm_slab::KMALLOC_MAX_CACHE_SIZE;
                if kind == 1 && l.cache.is_none() && in_slab {
                    prop_assert_eq!(res, Err(SlabError::WrongCache));
                } else if !(kind == 0 && l.size <= 1) {
                    prop_assert!(res.is_err(), "bad free accepted: {:?}", res);
                }
                prop_assert_eq!(pages_out(&r), before);
                let ctor_cache = l.cache.is_some_and(|i| caches[i].3);
                prop_assert!(check_live(p, &l, ctor_cache));
            }
            Op::Reap { cpu } => {
                let _c = cpus.bind(cpu).unwrap();
                s.reap();
            }
        }
        // No two live blocks overlap.
        let mut end = 0;
        for (&p, l) in &live {
            prop_assert!(p >= end, "blocks overlap at {:#x}", p);
            end = p + l.size;
        }
    }
    for (&p, l) in &live {
        let ctor_cache = l.cache.is_some_and(|i| caches[i].3);
        prop_assert!(check_live(p, l, ctor_cache), "object overwritten");
        let _c = cpus.bind(0).unwrap();
        match l.cache {
            Some(i) => s
                .kmem_cache_free(caches[i].0, NonNull::new(p as *mut u8).unwrap())
                .unwrap(),
            None => s.kfree(p as *mut u8).unwrap(),
        }
    }
    shrink_everywhere(&r);
    {
        let _c = cpus.bind(0).unwrap();
        for &(c, ..) in &caches {
            // SAFETY: no CPU uses the cache any more.
            prop_assert_eq!(unsafe { s.kmem_cache_destroy(c) }, Ok(()));
        }
    }
    shrink_everywhere(&r);
    prop_assert_eq!(pages_out(&r), baseline, "pages not given back");
    prop_assert_eq!(s.large_pages(), 0);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: if cfg!(miri) { 2 } else { 32 },
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn slab_matches_the_model(
        specs in prop::collection::vec(cache_spec(), CACHES),
        ops in prop::collection::vec(op(), if cfg!(miri) { 5..20 } else { 1..250 }),
    ) {
        run(specs, ops)?;
    }
}
