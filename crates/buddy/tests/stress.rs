//! Several CPUs (host threads) allocating and freeing at once, with blocks freed
//! on other CPUs than the one that allocated them. Each block carries a pattern
//! that must survive until it is freed: an overlap would break it.

mod common;

use std::sync::Mutex;

use common::{check, fill, rig};
use kmm_buddy::{BuddyConfig, Gfp, MAX_ORDER};
use kmm_page_frame::Page;

const ROUNDS: usize = if cfg!(miri) { 40 } else { 4000 };

/// A small xorshift: each thread its own stream.
fn next(s: &mut u64) -> u64 {
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    *s
}

#[test]
fn cpus_allocate_and_free_across_each_other() {
    // Linux's default watermarks: the stress runs into them too.
    let r = rig(64, 48, 4, true, BuddyConfig::default());
    let b = r.buddy();
    let managed = b.managed_total();
    // Blocks handed between CPUs: (descriptor, order, tag).
    let exchange: Mutex<Vec<(&Page, usize, u64)>> = Mutex::new(Vec::new());
    r.on_each_cpu(|cpu| {
        let mut seed = 0x9E37_79B9_7F4A_7C15 ^ (cpu as u64 + 1);
        let mut mine: Vec<(&Page, usize, u64)> = Vec::new();
        for round in 0..ROUNDS {
            let x = next(&mut seed);
            match x % 4 {
                0 | 1 => {
                    let order = if x.is_multiple_of(7) {
                        (x >> 8) as usize % MAX_ORDER
                    } else {
                        (x >> 8) as usize % 3
                    };
                    let gfp = [
                        Gfp::KERNEL,
                        Gfp::HIGHUSER,
                        Gfp::KERNEL | Gfp::DMA,
                        Gfp::ATOMIC,
                    ][(x >> 16) as usize % 4];
                    if let Some(p) = b.alloc_pages(gfp, order) {
                        let tag = (cpu as u64) << 32 | round as u64;
                        fill(b, p, order, tag);
                        mine.push((p, order, tag));
                    }
                }
                2 if !mine.is_empty() => {
                    let (p, order, tag) = mine.swap_remove((x >> 8) as usize % mine.len());
                    check(b, p, order, tag);
                    if x & 1 == 0 {
                        b.free_pages_page(p, order).unwrap();
                    } else {
                        exchange.lock().unwrap().push((p, order, tag));
                    }
                }
                _ => {
                    // Free a block another CPU allocated.
                    let got = exchange.lock().unwrap().pop();
                    if let Some((p, order, tag)) = got {
                        check(b, p, order, tag);
                        b.free_pages_page(p, order).unwrap();
                    }
                }
            }
        }
        for (p, order, tag) in mine {
            check(b, p, order, tag);
            b.free_pages_page(p, order).unwrap();
        }
    });
    {
        let _c = r.bind(0);
        for (p, order, tag) in exchange.into_inner().unwrap() {
            check(b, p, order, tag);
            b.free_pages_page(p, order).unwrap();
        }
    }
    r.drain_every_cpu();
    assert_eq!(b.free_pages_total(), managed);
    r.assert_fully_coalesced();
}

/// The bulk paths on 4 CPUs at once: each CPU fills arrays with
/// `alloc_pages_bulk`, tags every page, and frees them with `release_pages`
/// — half of the arrays on another CPU — while the others allocate and free
/// single pages too. No page is handed out twice (the tags), none is lost.
#[test]
fn cpus_bulk_allocate_and_free_across_each_other() {
    let r = rig(64, 48, 4, true, BuddyConfig::default());
    let b = r.buddy();
    let managed = b.managed_total();
    let rounds = ROUNDS / 8;
    // Arrays handed between CPUs, with their tags.
    type Batch<'b> = (Vec<Option<&'b Page>>, u64);
    let exchange: Mutex<Vec<Batch<'_>>> = Mutex::new(Vec::new());
    let check_all = |pages: &[Option<&Page>], tag: u64| {
        for p in pages.iter().flatten() {
            check(b, p, 0, tag);
        }
    };
    r.on_each_cpu(|cpu| {
        let mut seed = 0xD1B5_4A32_D192_ED03 ^ (cpu as u64 + 1);
        for round in 0..rounds {
            let x = next(&mut seed);
            let n = 2 + (x >> 8) as usize % 90;
            let gfp = [Gfp::KERNEL, Gfp::HIGHUSER, Gfp::ATOMIC | Gfp::COLD][(x >> 16) as usize % 3];
            let mut pages = vec![None; n];
            let filled = b.alloc_pages_bulk(gfp, &mut pages);
            assert!(pages[..filled].iter().all(Option::is_some));
            let tag = (cpu as u64) << 32 | round as u64;
            for p in pages.iter().flatten() {
                fill(b, p, 0, tag);
            }
            // A single page alongside, freed at once.
            if let Some(p) = b.alloc_pages(Gfp::KERNEL, 0) {
                b.free_pages_page(p, 0).unwrap();
            }
            if x & 1 == 0 {
                check_all(&pages, tag);
                let count = pages.iter().flatten().count();
                assert_eq!(b.release_pages(&mut pages), Ok(count));
            } else {
                exchange.lock().unwrap().push((pages, tag));
            }
            let got = exchange.lock().unwrap().pop();
            if let Some((mut pages, tag)) = got {
                check_all(&pages, tag);
                let count = pages.iter().flatten().count();
                assert_eq!(b.release_pages(&mut pages), Ok(count));
            }
        }
    });
    {
        let _c = r.bind(0);
        for (mut pages, tag) in exchange.into_inner().unwrap() {
            check_all(&pages, tag);
            let count = pages.iter().flatten().count();
            assert_eq!(b.release_pages(&mut pages), Ok(count));
        }
    }
    r.drain_every_cpu();
    assert_eq!(b.free_pages_total(), managed);
    r.assert_fully_coalesced();
}
