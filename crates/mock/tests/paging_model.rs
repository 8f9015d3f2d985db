//! Model-based property tests of the page tables: random map / map_range /
//! map_large / unmap / protect / translate sequences, in both paging modes, on the
//! raw `kmm-i386` tables and through the mock's mirrored kernel page table,
//! against a plain map model. After each step the tables agree with the model,
//! the page-table page count is exact, and (mock) the host mirror agrees with the
//! tables; after unmapping everything with table freeing on, every page-table
//! frame but the roots has been returned, and after `destroy` all of them.

use std::collections::{BTreeMap, BTreeSet};

use kmm_hal::{
    DirectMap, FrameSource, MapError, PAGE_SIZE, PageFlags, PageSize, PageTable, PhysAddr,
    TableReclaim, VirtAddr,
};
use kmm_i386::{Pae, TwoLevel};
use kmm_mock::{Backing, Machine, MockFrames, PagingMode};
use proptest::prelude::*;

/// The region the raw-table runs touch: it straddles 0xC0000000, a PDPT boundary
/// under PAE.
const RAW_REGION: usize = 0xBF80_0000;
/// The region the mock runs touch: inside the kernel window.
const MOCK_REGION: usize = 0xD000_0000;
/// Directory entries in the region.
const SLOTS: usize = 8;

#[derive(Debug, Clone)]
enum Op {
    Map {
        slot: usize,
        off: usize,
        frame: u64,
        flags: u8,
    },
    MapRange {
        slot: usize,
        off: usize,
        pages: usize,
        frame: u64,
    },
    MapLarge {
        slot: usize,
        frame: u64,
        flags: u8,
    },
    Unmap {
        slot: usize,
        off: usize,
        free: bool,
    },
    Protect {
        slot: usize,
        off: usize,
        flags: u8,
    },
    Translate {
        slot: usize,
        off: usize,
        byte: usize,
    },
}

fn op() -> impl Strategy<Value = Op> {
    let off = prop_oneof![4 => 0usize..6, 1 => 0usize..512];
    let slot = 0..SLOTS;
    prop_oneof![
        4 => (slot.clone(), off.clone(), 0u64..1 << 20, any::<u8>())
            .prop_map(|(slot, off, frame, flags)| Op::Map { slot, off, frame, flags }),
        2 => (slot.clone(), off.clone(), 1usize..700, 0u64..1 << 19)
            .prop_map(|(slot, off, pages, frame)| Op::MapRange { slot, off, pages, frame }),
        1 => (slot.clone(), 0u64..64, any::<u8>())
            .prop_map(|(slot, frame, flags)| Op::MapLarge { slot, frame, flags }),
        4 => (slot.clone(), off.clone(), any::<bool>())
            .prop_map(|(slot, off, free)| Op::Unmap { slot, off, free }),
        2 => (slot.clone(), off.clone(), any::<u8>())
            .prop_map(|(slot, off, flags)| Op::Protect { slot, off, flags }),
        2 => (slot, off, 0usize..PAGE_SIZE)
            .prop_map(|(slot, off, byte)| Op::Translate { slot, off, byte }),
    ]
}

/// Flags from a byte: always expressible in both modes.
fn flags(b: u8) -> PageFlags {
    let mut f = PageFlags::PRESENT;
    for (bit, flag) in [
        (0, PageFlags::WRITABLE),
        (1, PageFlags::GLOBAL),
        (2, PageFlags::NO_CACHE),
        (3, PageFlags::WRITE_THROUGH),
        (4, PageFlags::USER),
    ] {
        if b & (1 << bit) != 0 {
            f |= flag;
        }
    }
    f
}

/// The model: what is mapped, in guest (i386) addresses.
#[derive(Default)]
struct Model {
    small: BTreeMap<usize, (u64, PageFlags)>,
    large: BTreeMap<usize, (u64, PageFlags)>,
    /// Directory entries that have a page table.
    tables: BTreeSet<usize>,
}

impl Model {
    fn lookup(&self, va: usize, large: usize) -> Option<(u64, PageFlags, PageSize)> {
        let page = va & !(PAGE_SIZE - 1);
        if let Some(&(pa, f)) = self.small.get(&page) {
            return Some((pa + (va - page) as u64, f, PageSize::Base));
        }
        let base = va & !(large - 1);
        self.large
            .get(&base)
            .map(|&(pa, f)| (pa + (va - base) as u64, f, PageSize::Large))
    }
}

/// Drives `ops` against `pt`; `host` turns a guest address into the address
/// `pt` takes; `roots` is the page count of empty tables; `check` runs extra
/// invariants after each step.
#[allow(clippy::too_many_arguments)]
fn run<P: PageTable, F: FrameSource>(
    pt: &mut P,
    frames: &mut F,
    outstanding: impl Fn(&F) -> usize,
    table_pages: impl Fn(&P) -> usize,
    sweep: impl Fn(&mut P, &mut F) -> usize,
    roots: usize,
    large: usize,
    region: usize,
    host: impl Fn(usize) -> VirtAddr,
    check: impl Fn(&P),
    ops: &[Op],
) -> Result<(), TestCaseError> {
    let mut m = Model::default();
    let per_slot = large / PAGE_SIZE;
    let va_of = |slot: usize, off: usize| region + slot * large + (off % per_slot) * PAGE_SIZE;
    for op in ops {
        match *op {
            Op::Map {
                slot,
                off,
                frame,
                flags: fl,
            } => {
                let va = va_of(slot, off);
                let r = pt.map(host(va), PhysAddr::new(frame << 12), flags(fl), frames);
                if m.lookup(va, large).is_some() {
                    prop_assert_eq!(r.map(|f| f.ignore()), Err(MapError::AlreadyMapped));
                } else {
                    r.expect("map").ignore();
                    m.small.insert(va, (frame << 12, flags(fl)));
                    m.tables.insert(va / large);
                }
            }
            Op::MapRange {
                slot,
                off,
                pages,
                frame,
            } => {
                let va = va_of(slot, off);
                let end = (region + SLOTS * large).min(va + pages * PAGE_SIZE);
                let len = end - va;
                let r = pt.map_range(
                    host(va),
                    PhysAddr::new(frame << 12),
                    len,
                    PageFlags::KERNEL_RW,
                    frames,
                );
                let busy = (va..end)
                    .step_by(PAGE_SIZE)
                    .any(|v| m.lookup(v, large).is_some());
                if busy {
                    prop_assert_eq!(r.map(|f| f.ignore()), Err(MapError::AlreadyMapped));
                } else {
                    r.expect("map_range").ignore();
                    for (i, v) in (va..end).step_by(PAGE_SIZE).enumerate() {
                        m.small.insert(
                            v,
                            ((frame << 12) + (i * PAGE_SIZE) as u64, PageFlags::KERNEL_RW),
                        );
                        m.tables.insert(v / large);
                    }
                }
            }
            Op::MapLarge {
                slot,
                frame,
                flags: fl,
            } => {
                let va = region + slot * large;
                let pa = frame * large as u64;
                let r = pt.map_large(host(va), PhysAddr::new(pa), flags(fl));
                if m.tables.contains(&(va / large)) || m.large.contains_key(&va) {
                    prop_assert_eq!(r.map(|f| f.ignore()), Err(MapError::AlreadyMapped));
                } else {
                    r.expect("map_large").ignore();
                    m.large.insert(va, (pa, flags(fl)));
                }
            }
            Op::Unmap { slot, off, free } => {
                let va = va_of(slot, off);
                let reclaim = if free {
                    TableReclaim::Free
                } else {
                    TableReclaim::Keep
                };
                let r = pt.unmap(host(va), reclaim, frames);
                match m.lookup(va, large) {
                    None => prop_assert_eq!(r.map(|x| x.1.ignore()), Err(MapError::NotMapped)),
                    Some((_, _, PageSize::Large)) if va % large != 0 => {
                        prop_assert_eq!(r.map(|x| x.1.ignore()), Err(MapError::InsideLargePage))
                    }
                    Some((pa, f, size)) => {
                        let (t, fl) = r.expect("unmap");
                        fl.flush(pt);
                        prop_assert_eq!(t.frame, PhysAddr::new(pa));
                        prop_assert_eq!(t.flags, f);
                        prop_assert_eq!(t.size, size);
                        if size == PageSize::Large {
                            m.large.remove(&va);
                        } else {
                            m.small.remove(&va);
                            let d = va / large;
                            let empty = !m.small.keys().any(|&v| v / large == d);
                            if free && empty {
                                m.tables.remove(&d);
                            }
                        }
                    }
                }
            }
            Op::Protect {
                slot,
                off,
                flags: fl,
            } => {
                let va = va_of(slot, off);
                let r = pt.protect(host(va), flags(fl));
                match m.lookup(va, large) {
                    None => prop_assert_eq!(r.map(|f| f.ignore()), Err(MapError::NotMapped)),
                    Some((_, _, PageSize::Large)) if va % large != 0 => {
                        prop_assert_eq!(r.map(|f| f.ignore()), Err(MapError::InsideLargePage))
                    }
                    Some((_, _, size)) => {
                        r.expect("protect").flush(pt);
                        let map = if size == PageSize::Large {
                            &mut m.large
                        } else {
                            &mut m.small
                        };
                        map.get_mut(&va).expect("modelled").1 = flags(fl);
                    }
                }
            }
            Op::Translate { slot, off, byte } => {
                let va = va_of(slot, off) + byte;
                let got = pt
                    .translate(host(va))
                    .map(|t| (t.phys.as_u64(), t.flags, t.size));
                prop_assert_eq!(got, m.lookup(va, large));
            }
        }
        // Invariants after every step.
        prop_assert_eq!(table_pages(pt), roots + m.tables.len());
        prop_assert_eq!(outstanding(frames), roots + m.tables.len());
        for (&va, &(pa, f)) in m.small.iter().chain(m.large.iter()) {
            let t = pt.translate(host(va)).expect("modelled mapping is mapped");
            prop_assert_eq!((t.frame.as_u64(), t.flags), (pa, f));
        }
        check(pt);
    }
    // Unmap everything with table freeing on: only the roots remain.
    let all: Vec<usize> = m.small.keys().chain(m.large.keys()).copied().collect();
    for va in all {
        pt.unmap(host(va), TableReclaim::Free, frames)
            .expect("unmap all")
            .1
            .flush(pt);
    }
    // Tables emptied by earlier unmaps that kept them are still there, exactly
    // the modelled ones that map nothing now; the sweep returns them.
    let kept = m.tables.len()
        - m.tables
            .iter()
            .filter(|&&d| m.small.keys().any(|&v| v / large == d))
            .count();
    prop_assert_eq!(table_pages(pt), roots + kept);
    prop_assert_eq!(sweep(pt, frames), kept);
    prop_assert_eq!(table_pages(pt), roots);
    prop_assert_eq!(outstanding(frames), roots);
    check(pt);
    Ok(())
}

/// RAM for the raw-table runs: software backing, so Miri can run this too.
fn software_ram() -> (Machine, DirectMap, MockFrames) {
    let ram = 4 << 20;
    let m = Machine::builder()
        .ram(ram)
        .backing(Backing::Software)
        .build()
        .unwrap();
    let base = m.phys_ptr(PhysAddr::ZERO, ram).unwrap();
    let dm = DirectMap::new(VirtAddr::from_ptr(base), ram).unwrap();
    let frames = MockFrames::new(PhysAddr::new(1 << 20), PhysAddr::new(ram as u64));
    (m, dm, frames)
}

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: if cfg!(miri) { 2 } else { 64 },
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

fn len() -> std::ops::Range<usize> {
    if cfg!(miri) { 5..15 } else { 1..120 }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn two_level_tables_match_the_model(ops in prop::collection::vec(op(), len())) {
        let (_m, dm, mut frames) = software_ram();
        // SAFETY: `dm` maps the test RAM, which outlives the tables.
        let mut pt = unsafe { TwoLevel::new(dm, true, &mut frames) }.unwrap();
        run(&mut pt, &mut frames, MockFrames::outstanding, TwoLevel::table_pages,
            |p, f| { let (n, fl) = p.free_empty_tables(f); fl.flush(p); n }, 1,
            TwoLevel::LARGE_PAGE_SIZE, RAW_REGION, VirtAddr::new, |_| {}, &ops)?;
        pt.destroy(&mut frames);
        prop_assert_eq!(frames.outstanding(), 0);
    }

    #[test]
    fn pae_tables_match_the_model(ops in prop::collection::vec(op(), len())) {
        let (_m, dm, mut frames) = software_ram();
        // SAFETY: `dm` maps the test RAM, which outlives the tables.
        let mut pt = unsafe { Pae::new(dm, true, &mut frames) }.unwrap();
        run(&mut pt, &mut frames, MockFrames::outstanding, Pae::table_pages,
            |p, f| { let (n, fl) = p.free_empty_tables(f); fl.flush(p); n }, 5,
            Pae::LARGE_PAGE_SIZE, RAW_REGION, VirtAddr::new, |_| {}, &ops)?;
        pt.destroy(&mut frames);
        prop_assert_eq!(frames.outstanding(), 0);
    }

    #[test]
    fn mirrored_tables_match_the_model(
        pae in any::<bool>(),
        ops in prop::collection::vec(op(), len()),
    ) {
        let mode = if pae { PagingMode::Pae } else { PagingMode::TwoLevel };
        let m = Machine::builder().ram(4 << 20).paging(mode).build().unwrap();
        let mut frames = m.lowmem_frames(PhysAddr::new(1 << 20));
        let mut pt = m.kernel_page_table(&mut frames, false).unwrap();
        let roots = pt.table_pages();
        let large = pt.large_page_size().unwrap();
        let layout = *m.layout();
        run(&mut pt, &mut frames, MockFrames::outstanding, |p| p.table_pages(),
            |p, f| { let (n, fl) = p.free_empty_tables(f); fl.flush(p); n }, roots, large,
            MOCK_REGION, |g| layout.guest_to_host(g).unwrap(),
            |p| { p.verify_mirror().expect("mirror agrees with the tables"); },
            &ops)?;
        prop_assert_eq!(m.tlb().pending(), 0, "every change was flushed");
        prop_assert!(m.tlb().violations().is_empty());
        pt.destroy(&mut frames);
        prop_assert_eq!(frames.outstanding(), 0);
    }
}
