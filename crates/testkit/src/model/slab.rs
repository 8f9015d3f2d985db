//! The slab allocator's reference model: the caches made, and the live blocks
//! (address, size, cache or kmalloc, fill pattern).
//!
//! Every live block is filled with a pattern (objects of a cache with a
//! constructor keep byte 0 as the constructor left it) and checked when it is
//! freed, reallocated or aimed at by a bad free. Checked after every step
//! ([`Model::check`]), as the buddy model checks its allocator: no two live
//! blocks overlap; the statistics agree with the model (each cache's
//! `active_objs` is its live objects, `large_pages` the pages of live
//! kmalloc blocks from the page allocator); `validate_cache` passes for
//! the model's caches, the general caches in use and the cache of caches.
//! Checked by the steps: alignment, `ksize`, contents kept by `krealloc`, a
//! bulk allocation all or nothing, a bulk free stopped at its bad element
//! with its index and error (the elements before it freed, the rest intact), a
//! block handed out once, a bad free refused with nothing changed (`WrongCache`
//! for a kmalloc block freed to a cache). At the end ([`Model::finish`]): after
//! freeing everything, destroying the caches and shrinking everywhere, every
//! page is back in the buddy allocator and no debug report was made but the
//! double frees of repeated bulk-free elements.

use std::collections::{BTreeMap, BTreeSet};
use std::ptr::NonNull;

use kmm_buddy::Gfp;
use kmm_hal::PAGE_SIZE;
use kmm_slab::{BulkFreeError, Cache, SlabError, SlabFlags};

use super::{Checked, Flags, ensure, ensure_eq, fill, intact};
use crate::TestMachine;

/// The byte a cache's constructor writes at the start of each object.
pub const CTOR_BYTE: u8 = 0xC7;

fn ctor(obj: *mut u8) {
    // SAFETY: the allocator hands the constructor a whole object of at least
    // one byte.
    unsafe { obj.write(CTOR_BYTE) }
}

/// One step of the model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// `kmem_cache_create` on CPU 0.
    CreateCache {
        /// Object size.
        size: usize,
        /// Alignment (0: the default).
        align: usize,
        /// `SlabFlags::HWCACHE_ALIGN`.
        hwcache_align: bool,
        /// With a constructor that writes [`CTOR_BYTE`].
        ctor: bool,
    },
    /// `kmem_cache_alloc` from the `cache`-th cache (modulo their number).
    Alloc {
        /// The CPU that allocates.
        cpu: usize,
        /// Which cache.
        cache: usize,
    },
    /// `kmalloc(size, gfp)`.
    Kmalloc {
        /// The CPU that allocates.
        cpu: usize,
        /// Bytes asked for.
        size: usize,
        /// The flags.
        gfp: Flags,
    },
    /// Frees the `pick`-th live block (`kmem_cache_free` or `kfree`).
    Free {
        /// The CPU that frees.
        cpu: usize,
        /// Which live block.
        pick: usize,
    },
    /// `krealloc` of the `pick`-th live kmalloc block to `size` bytes.
    Realloc {
        /// The CPU that reallocates.
        cpu: usize,
        /// Which live kmalloc block.
        pick: usize,
        /// The new size.
        size: usize,
    },
    /// A bad free on CPU 0 aimed at the `pick`-th live block: must be refused
    /// and change nothing.
    BadFree {
        /// Which live block.
        pick: usize,
        /// What is wrong with it.
        kind: BadFree,
    },
    /// `reap` on `cpu`.
    Reap {
        /// The CPU that reaps.
        cpu: usize,
    },
    /// `kmem_cache_alloc_bulk` of `n` objects from the `cache`-th cache:
    /// all of them (each checked as `Alloc` checks one) or, where failure is
    /// accepted, none.
    AllocBulk {
        /// The CPU that allocates.
        cpu: usize,
        /// Which cache.
        cache: usize,
        /// How many objects.
        n: usize,
    },
    /// `kmem_cache_free_bulk` of up to `n` live objects of the `cache`-th
    /// cache (from the `pick`-th on), with, if `bad` is given, a bad element
    /// put at position `at` (modulo the count): the call must stop there
    /// with that index and the single free's error, every element before it
    /// freed, it and the rest untouched.
    FreeBulk {
        /// The CPU that frees.
        cpu: usize,
        /// Which cache.
        cache: usize,
        /// The first live object of the cache taken.
        pick: usize,
        /// How many objects.
        n: usize,
        /// A bad element and its position.
        bad: Option<(BadElement, usize)>,
    },
}

/// A bad element of an [`Op::FreeBulk`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BadElement {
    /// An element repeated from earlier in the slice (freed by then:
    /// `DoubleFree`); a stack address if it would be first.
    Repeated,
    /// An element's second byte (`Interior`).
    Interior,
    /// An address on the stack (`Foreign`).
    Foreign,
    /// The `pick`-th live block that is not an object of the cache: another
    /// cache's object or a kmalloc block (`WrongCache`; `Foreign` for a
    /// large kmalloc block); a stack address if there is none.
    Other {
        /// Which block.
        pick: usize,
    },
}

/// What is wrong with a [`Op::BadFree`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BadFree {
    /// `kfree` of the block's second byte (a one-byte block: as `Foreign`).
    Interior,
    /// `kmem_cache_free` to another cache than the block's: the
    /// `other`-th cache, or the first one that differs (with no cache at
    /// all: as `Foreign`).
    WrongCache {
        /// Which cache.
        other: usize,
    },
    /// `kfree` of an address on the stack.
    Foreign,
}

impl Op {
    /// Decodes four fuzzer bytes into an operation on CPU 0 (the fuzz
    /// target's grammar).
    pub fn decode([k, a, b, c]: [u8; 4]) -> Op {
        let wide = usize::from(u16::from_le_bytes([b, c]));
        match k % 9 {
            0 => Op::CreateCache {
                size: 1 + wide % 5000,
                align: [0usize, 8, 16, 64, 512, 4096][usize::from(a) % 6],
                hwcache_align: a & 0x80 != 0,
                ctor: a & 0x40 != 0,
            },
            1 => Op::Alloc {
                cpu: 0,
                cache: usize::from(a),
            },
            2 => Op::Kmalloc {
                cpu: 0,
                size: 1 + wide * (1 + usize::from(a % 8)),
                gfp: Flags(if a & 0x80 != 0 {
                    Gfp::KERNEL | Gfp::DMA
                } else {
                    Gfp::KERNEL
                }),
            },
            3 => Op::Free { cpu: 0, pick: wide },
            4 => Op::Realloc {
                cpu: 0,
                pick: usize::from(a),
                size: 1 + wide * (1 + usize::from(c % 4)),
            },
            5 => Op::BadFree {
                pick: wide,
                kind: match a % 3 {
                    0 => BadFree::Interior,
                    1 => BadFree::WrongCache {
                        other: usize::from(c),
                    },
                    _ => BadFree::Foreign,
                },
            },
            6 => Op::Reap { cpu: 0 },
            7 => Op::AllocBulk {
                cpu: 0,
                cache: usize::from(a),
                n: 1 + wide % 200,
            },
            _ => Op::FreeBulk {
                cpu: 0,
                cache: usize::from(a & 0x0f),
                pick: usize::from(c),
                n: 1 + usize::from(b) % 160,
                bad: match a >> 4 {
                    0 => Some((BadElement::Repeated, usize::from(c))),
                    1 => Some((BadElement::Interior, usize::from(c))),
                    2 => Some((BadElement::Foreign, usize::from(c))),
                    3 => Some((
                        BadElement::Other {
                            pick: usize::from(b),
                        },
                        usize::from(c),
                    )),
                    _ => None,
                },
            },
        }
    }
}

/// Strategies for the model's operations on `cpus` CPUs.
#[cfg(feature = "proptest")]
pub mod strategy {
    use proptest::prelude::*;

    use super::{BadElement, BadFree, Op};
    use crate::model::Flags;
    use kmm_buddy::Gfp;

    /// A `CreateCache`: sizes up to 3000 bytes, alignments up to a page.
    pub fn create_cache() -> impl Strategy<Value = Op> {
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
            .prop_map(|(size, align, hwcache_align, ctor)| Op::CreateCache {
                size,
                align,
                hwcache_align,
                ctor,
            })
    }

    /// Any other operation, on `cpus` CPUs, with caches picked among `caches`.
    pub fn op(cpus: usize, caches: usize) -> impl Strategy<Value = Op> {
        let size = prop_oneof![8 => 1usize..300, 3 => 300usize..5000, 1 => 5000usize..40_000, 1 => 130_000usize..300_000];
        let gfp = prop_oneof![Just(Gfp::KERNEL), Just(Gfp::KERNEL | Gfp::DMA)].prop_map(Flags);
        let bad = prop_oneof![
            Just(BadElement::Repeated),
            Just(BadElement::Interior),
            Just(BadElement::Foreign),
            any::<usize>().prop_map(|pick| BadElement::Other { pick }),
        ];
        let kind = prop_oneof![
            Just(BadFree::Interior),
            any::<usize>().prop_map(|other| BadFree::WrongCache { other }),
            Just(BadFree::Foreign),
        ];
        prop_oneof![
            4 => (0..cpus, 0..caches).prop_map(|(cpu, cache)| Op::Alloc { cpu, cache }),
            4 => (0..cpus, size.clone(), gfp).prop_map(|(cpu, size, gfp)| Op::Kmalloc { cpu, size, gfp }),
            6 => (0..cpus, any::<usize>()).prop_map(|(cpu, pick)| Op::Free { cpu, pick }),
            2 => (0..cpus, any::<usize>(), size).prop_map(|(cpu, pick, size)| Op::Realloc { cpu, pick, size }),
            1 => (any::<usize>(), kind).prop_map(|(pick, kind)| Op::BadFree { pick, kind }),
            1 => (0..cpus).prop_map(|cpu| Op::Reap { cpu }),
            2 => (0..cpus, 0..caches, prop_oneof![3 => 1usize..40, 1 => 40usize..300])
                .prop_map(|(cpu, cache, n)| Op::AllocBulk { cpu, cache, n }),
            3 => (0..cpus, 0..caches, any::<usize>(), 1usize..300, prop::option::weighted(0.3, (bad, any::<usize>())))
                .prop_map(|(cpu, cache, pick, n, bad)| Op::FreeBulk { cpu, cache, pick, n, bad }),
        ]
    }
}

/// A cache the model made.
#[derive(Debug, Clone, Copy)]
struct ModelCache<'h> {
    cache: Cache<'h>,
    size: usize,
    align: usize,
    ctor: bool,
}

/// A live block.
#[derive(Debug, Clone, Copy)]
struct Live {
    /// The block, with the provenance the allocator gave it.
    ptr: *mut u8,
    size: usize,
    cache: Option<usize>,
    /// `ksize` of a kmalloc block (0 for a cache object).
    ksize: usize,
    /// A kmalloc block from the page allocator (its frames marked
    /// `KMALLOC`), not a slab object.
    large: bool,
    tag: u8,
}

/// How strict the model is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Config {
    /// Every cache creation, allocation and reallocation must succeed (a
    /// machine large enough for the operations); otherwise a failure is
    /// accepted and changes nothing in the model.
    pub must_succeed: bool,
    /// Most caches the model makes (`CreateCache` beyond it does nothing).
    pub max_caches: usize,
}

/// The model, borrowing the slab allocator of a [`TestMachine`] for `'h`.
#[derive(Debug)]
pub struct Model<'h> {
    host: &'h TestMachine,
    config: Config,
    caches: Vec<ModelCache<'h>>,
    live: BTreeMap<usize, Live>,
    tag: u8,
    baseline: usize,
    /// Reports the allocator has made: those made before the model, and the
    /// double frees of repeated bulk-free elements; [`Model::check`] and
    /// [`Model::finish`] expect exactly these.
    reports: usize,
}

impl<'h> Model<'h> {
    /// An empty model on `host`'s slab allocator; remembers the pages out
    /// now, which [`Model::finish`] expects back.
    pub fn new(host: &'h TestMachine, config: Config) -> Model<'h> {
        let mut ring = [None; 16];
        // Reports made before (a fuzz target's earlier inputs on the same
        // machine) are not this model's.
        let reports = host.slab().reports(&mut ring);
        Model {
            host,
            config,
            caches: Vec::new(),
            live: BTreeMap::new(),
            tag: 0,
            baseline: host.pages_out(),
            reports,
        }
    }

    /// Live blocks.
    pub fn live(&self) -> usize {
        self.live.len()
    }

    /// Applies `op` to the allocator and the model, then [`Model::check`]s.
    /// The calling thread must not be bound to a CPU.
    pub fn apply(&mut self, op: &Op) -> Checked {
        self.tag = self.tag.wrapping_add(1).max(1);
        let host = self.host;
        let s = host.slab();
        match *op {
            Op::CreateCache {
                size,
                align,
                hwcache_align,
                ctor: with_ctor,
            } => {
                if self.caches.len() >= self.config.max_caches {
                    return self.check();
                }
                let _c = host.bind(0);
                let flags = if hwcache_align {
                    SlabFlags::HWCACHE_ALIGN
                } else {
                    SlabFlags::empty()
                };
                let made = s.kmem_cache_create(
                    "model",
                    size,
                    align,
                    flags,
                    with_ctor.then_some(ctor as fn(*mut u8)),
                );
                match made {
                    Ok(cache) => self.caches.push(ModelCache {
                        cache,
                        size,
                        align,
                        ctor: with_ctor,
                    }),
                    Err(e) => ensure!(!self.config.must_succeed, "{op:?}: {e:?}"),
                }
            }
            Op::Alloc { cpu, cache } => {
                if self.caches.is_empty() {
                    return self.check();
                }
                let i = cache % self.caches.len();
                let c = self.caches[i];
                let _c = host.bind(cpu);
                match s.kmem_cache_alloc(c.cache, Gfp::KERNEL) {
                    Ok(p) => {
                        let p = p.as_ptr();
                        if c.align > 0 {
                            ensure_eq!(p.addr() % c.align, 0, "misaligned object");
                        }
                        if c.ctor {
                            // The constructor ran when the slab was grown, and
                            // users give objects back in their constructed
                            // state (byte 0 is kept as the constructor left it).
                            // SAFETY: a live object of at least one byte.
                            let first = unsafe { p.read() };
                            ensure_eq!(first, CTOR_BYTE, "object not constructed");
                        }
                        self.insert(p, c.size, Some(i))?;
                    }
                    Err(e) => ensure!(!self.config.must_succeed, "{op:?}: {e:?}"),
                }
            }
            Op::Kmalloc { cpu, size, gfp } => {
                let _c = host.bind(cpu);
                match s.kmalloc(size, gfp.0) {
                    Ok(p) => {
                        let p = p.as_ptr();
                        ensure!(s.ksize(p).expect("ksize") >= size, "ksize below {size}");
                        if size >= 8 {
                            ensure_eq!(p.addr() % 8, 0, "kmalloc alignment");
                        }
                        self.insert(p, size, None)?;
                    }
                    Err(e) => ensure!(!self.config.must_succeed, "{op:?}: {e:?}"),
                }
            }
            Op::Free { cpu, pick } => {
                if let Some((&p, &l)) = self.nth(pick) {
                    let _c = host.bind(cpu);
                    self.free(p, &l)?;
                }
            }
            Op::Realloc { cpu, pick, size } => {
                let kmallocd: Vec<usize> = self
                    .live
                    .iter()
                    .filter(|(_, l)| l.cache.is_none())
                    .map(|(&p, _)| p)
                    .collect();
                if !kmallocd.is_empty() {
                    let p = kmallocd[pick % kmallocd.len()];
                    let l = self.live[&p];
                    let ptr = l.ptr;
                    let _c = host.bind(cpu);
                    // SAFETY: `ptr` is a live kmalloc block the model owns.
                    match unsafe { s.krealloc(ptr, size, Gfp::KERNEL) } {
                        Ok(q) => {
                            let q = q.as_ptr();
                            // SAFETY: `q` is live, at least `size` bytes.
                            let kept = unsafe { intact(q, l.size.min(size), l.tag) };
                            ensure!(kept, "krealloc lost the contents");
                            self.live.remove(&p);
                            self.insert(q, size, None)?;
                        }
                        Err(e) => ensure!(!self.config.must_succeed, "{op:?}: {e:?}"),
                    }
                }
            }
            Op::BadFree { pick, kind } => {
                if let Some((&p, &l)) = self.nth(pick) {
                    self.bad_free(p, &l, kind)?;
                }
            }
            Op::Reap { cpu } => {
                let _c = host.bind(cpu);
                s.reap();
            }
            Op::AllocBulk { cpu, cache, n } => {
                if self.caches.is_empty() {
                    return self.check();
                }
                let i = cache % self.caches.len();
                let c = self.caches[i];
                let mut objs = vec![NonNull::<u8>::dangling(); n];
                let made = {
                    let _c = host.bind(cpu);
                    s.kmem_cache_alloc_bulk(c.cache, Gfp::KERNEL, &mut objs)
                };
                match made {
                    Ok(()) => {
                        for p in objs {
                            self.allocated(p.as_ptr(), i)?;
                        }
                    }
                    Err(e) => ensure!(!self.config.must_succeed, "{op:?}: {e:?}"),
                }
            }
            Op::FreeBulk {
                cpu,
                cache,
                pick,
                n,
                bad,
            } => {
                if !self.caches.is_empty() {
                    self.free_bulk(cpu, cache % self.caches.len(), pick, n, bad)?;
                }
            }
        }
        self.check()
    }

    /// Checks a fresh object of the `i`-th cache (alignment, constructor)
    /// and records it.
    fn allocated(&mut self, p: *mut u8, i: usize) -> Checked {
        let c = self.caches[i];
        if c.align > 0 {
            ensure_eq!(p.addr() % c.align, 0, "misaligned object");
        }
        if c.ctor {
            // SAFETY: a live object of at least one byte.
            let first = unsafe { p.read() };
            ensure_eq!(first, CTOR_BYTE, "object not constructed");
        }
        self.insert(p, c.size, Some(i))
    }

    /// [`Op::FreeBulk`] on the `i`-th cache.
    fn free_bulk(
        &mut self,
        cpu: usize,
        i: usize,
        pick: usize,
        n: usize,
        bad: Option<(BadElement, usize)>,
    ) -> Checked {
        let host = self.host;
        let s = host.slab();
        let mine: Vec<usize> = self
            .live
            .iter()
            .filter(|(_, l)| l.cache == Some(i))
            .map(|(&p, _)| p)
            .collect();
        let start = pick % mine.len().max(1);
        let chosen: Vec<usize> = mine
            .iter()
            .cycle()
            .skip(start)
            .take(n.min(mine.len()))
            .copied()
            .collect();
        for p in &chosen {
            ensure!(self.intact(&self.live[p]), "block {p:#x} overwritten");
        }
        let mut objs: Vec<*mut u8> = chosen.iter().map(|p| self.live[p].ptr).collect();
        let mut stack = 0u64;
        let stack_ptr: *mut u8 = (&raw mut stack).cast();
        // The bad element, where it goes, and the error it must get.
        // The bad element's position and the error it must get; `Foreign`
        // is accepted too where the element points into an object freed
        // earlier in the call, whose slab may have gone back to the page
        // allocator since (as a single free would say then).
        let mut expect = None;
        if let Some((kind, at)) = bad {
            let at = at % (objs.len() + 1);
            let (ptr, err, or_gone) = match kind {
                BadElement::Repeated if at > 0 => (objs[at / 2], SlabError::DoubleFree, true),
                BadElement::Interior if !objs.is_empty() && self.caches[i].size > 1 => {
                    (objs[0].wrapping_add(1), SlabError::Interior, at > 0)
                }
                BadElement::Other { pick } => {
                    let others: Vec<&Live> =
                        self.live.values().filter(|l| l.cache != Some(i)).collect();
                    match others.get(pick % others.len().max(1)) {
                        Some(l) if l.large => (l.ptr, SlabError::Foreign, false),
                        Some(l) => (l.ptr, SlabError::WrongCache, false),
                        None => (stack_ptr, SlabError::Foreign, false),
                    }
                }
                _ => (stack_ptr, SlabError::Foreign, false),
            };
            objs.insert(at, ptr);
            expect = Some((at, err, or_gone));
        }
        let ptrs: Vec<NonNull<u8>> = objs
            .iter()
            .map(|&p| NonNull::new(p).expect("non-null"))
            .collect();
        let res = {
            let _c = host.bind(cpu);
            s.kmem_cache_free_bulk(self.caches[i].cache, &ptrs)
        };
        match (expect, res) {
            (None, Ok(())) => {}
            (Some((at, err, or_gone)), Err(BulkFreeError { index, error }))
                if index == at && (error == err || (or_gone && error == SlabError::Foreign)) =>
            {
                // A refused double free is reported.
                if error == SlabError::DoubleFree {
                    self.reports += 1;
                }
            }
            (expect, res) => {
                return Err(super::Failure(format!(
                    "kmem_cache_free_bulk of {} elements: {res:?}, expected {expect:?}",
                    ptrs.len()
                )));
            }
        }
        let freed = match res {
            Ok(()) => objs.len(),
            Err(e) => e.index,
        };
        for p in &objs[..freed] {
            ensure!(
                self.live.remove(&p.addr()).is_some(),
                "freed {p:?}, not live"
            );
        }
        for p in &objs[freed..] {
            if let Some(l) = self.live.get(&p.addr()) {
                ensure!(self.intact(l), "a refused bulk free damaged block {p:?}");
            }
        }
        Ok(())
    }

    fn nth(&self, pick: usize) -> Option<(&usize, &Live)> {
        self.live.iter().nth(pick % self.live.len().max(1))
    }

    fn insert(&mut self, p: *mut u8, size: usize, cache: Option<usize>) -> Checked {
        let tag = self.tag;
        let ksize = match cache {
            Some(_) => 0,
            None => self.host.slab().ksize(p).expect("ksize of a kmalloc block"),
        };
        let large = cache.is_none()
            && self
                .host
                .buddy()
                .mem()
                .virt_to_page(kmm_hal::VirtAddr::new(p.addr()))
                .is_ok_and(|page| page.test(kmm_page_frame::PgFlags::KMALLOC));
        let with_ctor = cache.is_some_and(|i| self.caches[i].ctor);
        // SAFETY: `p` is a live block of at least `size` bytes the model owns.
        unsafe {
            if with_ctor {
                fill(p.add(1), size - 1, tag);
            } else {
                fill(p, size, tag);
            }
        }
        let l = Live {
            ptr: p,
            size,
            cache,
            ksize,
            large,
            tag,
        };
        ensure!(
            self.live.insert(p.addr(), l).is_none(),
            "handed out twice: {p:?}"
        );
        Ok(())
    }

    /// Whether a live block still carries its pattern.
    fn intact(&self, l: &Live) -> bool {
        let ptr = l.ptr;
        // SAFETY: a live block of `l.size` bytes the model owns.
        unsafe {
            if l.cache.is_some_and(|i| self.caches[i].ctor) {
                ptr.read() == CTOR_BYTE && intact(ptr.add(1), l.size - 1, l.tag)
            } else {
                intact(ptr, l.size, l.tag)
            }
        }
    }

    fn free(&mut self, p: usize, l: &Live) -> Checked {
        let s = self.host.slab();
        ensure!(self.intact(l), "block {p:#x} overwritten");
        let ptr = NonNull::new(l.ptr).expect("non-null");
        match l.cache {
            Some(i) => ensure_eq!(
                s.kmem_cache_free(self.caches[i].cache, ptr),
                Ok(()),
                "kmem_cache_free"
            ),
            None => ensure_eq!(s.kfree(ptr.as_ptr()), Ok(()), "kfree"),
        }
        self.live.remove(&p);
        Ok(())
    }

    fn bad_free(&mut self, p: usize, l: &Live, kind: BadFree) -> Checked {
        let host = self.host;
        let s = host.slab();
        let _c = host.bind(0);
        let before = host.pages_out();
        let ptr = l.ptr;
        let other = match kind {
            BadFree::WrongCache { other } if !self.caches.is_empty() => {
                let n = self.caches.len();
                let o = other % n;
                if l.cache == Some(o) {
                    (0..n).find(|&i| Some(i) != l.cache)
                } else {
                    Some(o)
                }
            }
            _ => None,
        };
        let mut x = 0u64;
        let res = match kind {
            BadFree::Interior if l.size > 1 => s.kfree(ptr.wrapping_add(1)),
            BadFree::WrongCache { .. } if other.is_some() => {
                let c = self.caches[other.expect("some")].cache;
                s.kmem_cache_free(c, NonNull::new(ptr).expect("non-null"))
            }
            _ => s.kfree((&raw mut x).cast()),
        };
        let in_slab = !l.large;
        if other.is_some() && l.cache.is_none() && in_slab {
            ensure_eq!(res, Err(SlabError::WrongCache), "{kind:?}");
        } else {
            ensure!(res.is_err(), "bad free {kind:?} accepted: {res:?}");
        }
        ensure_eq!(host.pages_out(), before, "a refused free moved pages");
        ensure!(self.intact(l), "a refused free damaged block {p:#x}");
        Ok(())
    }

    /// The checks after every step (module docs).
    pub fn check(&self) -> Checked {
        let s = self.host.slab();
        let mut end = 0;
        for (&p, l) in &self.live {
            ensure!(p >= end, "blocks overlap at {p:#x}");
            end = p + l.size;
        }
        // Statistics against the model.
        for (i, c) in self.caches.iter().enumerate() {
            let live = self.live.values().filter(|l| l.cache == Some(i)).count();
            let st = s.cache_stats(c.cache).expect("a live cache");
            ensure_eq!(st.active_objs, live, "cache {i}'s active objects");
        }
        let large: usize = self
            .live
            .values()
            .filter(|l| l.large)
            .map(|l| l.ksize / PAGE_SIZE)
            .sum();
        ensure_eq!(s.large_pages(), large, "pages of large kmalloc blocks");
        // Consistency of every cache the model touches.
        let mut caches: Vec<Cache<'_>> = self.caches.iter().map(|c| c.cache).collect();
        caches.push(s.cache_of_caches());
        let classes: BTreeSet<usize> = self.live.values().map(|l| l.ksize).collect();
        for size in classes.into_iter().filter(|&k| k > 0) {
            caches.extend(
                [false, true]
                    .iter()
                    .filter_map(|&dma| s.kmalloc_cache(size, dma)),
            );
        }
        for c in caches {
            if let Err(r) = s.validate_cache(c) {
                return Err(super::Failure(format!("validate_cache: {r:?}")));
            }
        }
        let mut reports = [None; 16];
        let n = s.reports(&mut reports);
        ensure_eq!(
            n,
            self.reports,
            "reports: {:?}",
            reports[n.saturating_sub(1).min(15)]
        );
        Ok(())
    }

    /// Frees every live block, destroys the model's caches, shrinks
    /// everywhere, and checks that every page is back and (with `debug`) no
    /// report was made.
    pub fn finish(mut self) -> Checked {
        let host = self.host;
        let s = host.slab();
        let live: Vec<(usize, Live)> = self.live.iter().map(|(&p, &l)| (p, l)).collect();
        {
            let _c = host.bind(0);
            for (p, l) in live {
                self.free(p, &l)?;
            }
        }
        host.shrink_everywhere();
        {
            let _c = host.bind(0);
            for c in &self.caches {
                // SAFETY: no CPU uses the cache any more: every object is
                // free and the calling thread is the only one running.
                let r = unsafe { s.kmem_cache_destroy(c.cache) };
                ensure_eq!(r, Ok(()), "kmem_cache_destroy");
            }
        }
        host.shrink_everywhere();
        ensure_eq!(host.pages_out(), self.baseline, "pages not given back");
        ensure_eq!(s.large_pages(), 0, "large pages");
        let mut reports = [None; 16];
        let n = s.reports(&mut reports);
        ensure_eq!(n, self.reports, "reports: {:?}", reports[0]);
        Ok(())
    }
}

/// Runs `ops` on `host` through a fresh model, checking after every step, then
/// [`Model::finish`]es.
pub fn run(host: &TestMachine, config: Config, ops: &[Op]) -> Checked {
    let mut m = Model::new(host, config);
    for op in ops {
        m.apply(op)?;
    }
    m.finish()
}
