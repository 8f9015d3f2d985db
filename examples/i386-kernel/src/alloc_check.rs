//! The global allocator at work: `Vec`, `Box`, `String` and `BTreeMap` from
//! `alloc`, all on kmalloc, checked value by value; once they are dropped and
//! the caches shrunk, every slab page and large block is back.

use alloc::boxed::Box;
use alloc::collections::BTreeMap;
use alloc::string::String;
use alloc::vec::Vec;
use core::fmt::Write;

use crate::heap::{HEAP, KernelSlab};
use crate::serial::kprintln;
use crate::slab_check::validate_general;

/// Elements pushed onto the `Vec<u32>`.
const VEC_LEN: u32 = 100_000;
/// Entries inserted into the `BTreeMap`.
const MAP_LEN: u32 = 4000;

/// A page-aligned type: its `Box` needs a kmalloc class aligned to a page.
#[repr(C, align(4096))]
struct PageAligned([u8; 4096]);

/// A cache-line-aligned type of 100 bytes (rounded to 128).
#[repr(C, align(64))]
struct LineAligned([u8; 100]);

/// The key of entry `i`: scattered, so the tree is built out of order.
fn key(i: u32) -> u32 {
    i.wrapping_mul(2_654_435_761)
}

/// The value stored under `k`: 1 to 64 bytes derived from the key.
fn value(k: u32) -> Vec<u8> {
    let n = (k % 64) as usize + 1;
    (0..n).map(|j| (k as u8).wrapping_add(j as u8)).collect()
}

/// The `Vec<u32>`: grown one push at a time (reallocated from the small
/// classes through the large blocks), summed. Returns (capacity, moves, usable
/// bytes of its block).
fn check_vec(slab: &KernelSlab) -> (usize, usize, usize) {
    let mut v: Vec<u32> = Vec::new();
    let mut moves = 0;
    let mut at = v.as_ptr();
    for i in 0..VEC_LEN {
        v.push(i.wrapping_mul(7));
        if v.as_ptr() != at {
            moves += 1;
            at = v.as_ptr();
        }
    }
    let sum: u64 = v.iter().map(|&x| u64::from(x)).sum();
    let n = u64::from(VEC_LEN);
    assert_eq!(sum, 7 * n * (n - 1) / 2, "Vec<u32> sum");
    assert!(v.iter().enumerate().all(|(i, &x)| x == (i as u32) * 7));
    let usable = slab
        .ksize(v.as_mut_ptr().cast())
        .expect("the Vec's buffer came from kmalloc");
    assert!(usable >= v.capacity() * 4, "ksize below the Vec's capacity");
    (v.capacity(), moves, usable)
}

/// Boxes: a 5000-byte array (in the smallest dense class that holds it), a
/// page-aligned and a cache-line-aligned value. Returns the array's usable
/// size.
fn check_boxes(slab: &KernelSlab) -> usize {
    let mut b = Box::new([0u8; 5000]);
    for (i, x) in b.iter_mut().enumerate() {
        *x = (i % 251) as u8;
    }
    assert!(b.iter().enumerate().all(|(i, &x)| x == (i % 251) as u8));
    let usable = slab
        .ksize(b.as_mut_ptr())
        .expect("the Box came from kmalloc");
    let class = kmm_slab::KmallocSizes::Dense
        .classes()
        .iter()
        .map(|c| c.size)
        .find(|&c| c >= 5000);
    assert_eq!(Some(usable), class, "Box<[u8; 5000]> is not in its class");
    let page = Box::new(PageAligned([0x5a; 4096]));
    let page_at = &raw const *page;
    assert!(
        page_at.addr().is_multiple_of(4096),
        "page-aligned Box at {page_at:p}"
    );
    assert!(page.0.iter().all(|&x| x == 0x5a));
    let lines: Vec<LineAligned> = (0..50).map(|i| LineAligned([i as u8; 100])).collect();
    for (i, l) in lines.iter().enumerate() {
        assert!((&raw const *l).addr().is_multiple_of(64));
        assert!(l.0.iter().all(|&x| x == i as u8));
    }
    usable
}

/// A `String` built with `write!` and read back. Returns its length.
fn check_string() -> usize {
    let mut s = String::new();
    for i in 0..2000u32 {
        write!(s, "{i},").expect("writing to a String never fails");
    }
    let mut n = 0u32;
    for (i, part) in s.trim_end_matches(',').split(',').enumerate() {
        assert_eq!(part.parse::<u32>(), Ok(i as u32), "String part {i}");
        n += 1;
    }
    assert_eq!(n, 2000);
    s.push_str("kmm");
    s.shrink_to_fit();
    assert!(s.ends_with("1999,kmm"));
    s.len()
}

/// A `BTreeMap<u32, Vec<u8>>`: [`MAP_LEN`] entries inserted out of order,
/// looked up, every general cache validated while they are live, half
/// removed, checked, the rest removed. Returns the bytes held in values at
/// the peak and the objects validated.
fn check_btreemap(slab: &KernelSlab) -> (usize, usize) {
    let mut m: BTreeMap<u32, Vec<u8>> = BTreeMap::new();
    let mut bytes = 0;
    for i in 0..MAP_LEN {
        let k = key(i);
        let v = value(k);
        bytes += v.len();
        assert!(m.insert(k, v).is_none(), "key {k:#x} twice");
    }
    assert_eq!(m.len(), MAP_LEN as usize);
    for i in 0..MAP_LEN {
        let k = key(i);
        assert_eq!(m.get(&k), Some(&value(k)), "entry {k:#x}");
    }
    assert!(m.keys().zip(m.keys().skip(1)).all(|(a, b)| a < b));
    let validated = validate_general(slab);
    for i in (0..MAP_LEN).step_by(2) {
        let k = key(i);
        assert_eq!(m.remove(&k), Some(value(k)), "removing {k:#x}");
    }
    assert_eq!(m.len(), MAP_LEN as usize / 2);
    for i in 0..MAP_LEN {
        let k = key(i);
        assert_eq!(
            m.contains_key(&k),
            i % 2 == 1,
            "entry {k:#x} after removals"
        );
    }
    for i in (1..MAP_LEN).step_by(2) {
        assert!(m.remove(&key(i)).is_some());
    }
    assert!(m.is_empty());
    (bytes, validated)
}

/// Runs the checks, then shrinks every cache and checks that the slab pages
/// and large blocks are as before.
pub fn run(slab: &KernelSlab) {
    let (pages0, large0) = (slab.slab_pages(), slab.large_pages());
    let (cap, moves, vec_usable) = check_vec(slab);
    let box_usable = check_boxes(slab);
    let string_len = check_string();
    let (map_bytes, validated) = check_btreemap(slab);
    let pages = slab.slab_pages();
    let buddy = slab.buddy();
    buddy.drain_local();
    let free = buddy.free_pages_total();
    let reported = slab.shrink_all();
    buddy.drain_local();
    let shrunk = buddy.free_pages_total() - free;
    assert_eq!(slab.large_pages(), large0, "large kmalloc blocks left");
    assert_eq!(
        slab.slab_pages(),
        pages0,
        "slab pages after dropping everything and shrink_all"
    );
    assert_eq!(shrunk, pages - pages0, "pages shrink_all gave back");
    assert_eq!(HEAP.refused(), 0, "the global allocator refused a free");
    kprintln!(
        "kmm: global allocator ok (Vec<u32> of {VEC_LEN}: capacity {cap}, moved {moves} times, block of {vec_usable} B, sum checked; Box<[u8; 5000]> in a {box_usable} B object, page- and line-aligned boxes; String of {string_len} B; BTreeMap<u32, Vec<u8>> {MAP_LEN} entries with {map_bytes} B of values inserted, looked up ({validated} general-cache objects validated), removed; all dropped, no large block left, 0 frees refused; shrink_all: slab pages {pages} -> {pages0}, {shrunk} pages back to the buddy allocator ({reported} reported))"
    );
}
