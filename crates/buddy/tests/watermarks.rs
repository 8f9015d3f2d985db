//! Watermarks: ordinary allocations stop at `min`, atomic ones dip below it,
//! crossing `low` calls the hook, and lower zones keep their lowmem reserve.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};

use common::rig;
use kmm_buddy::{BuddyConfig, Gfp, Watermark, default_min_free_kbytes};
use kmm_page_frame::ZoneType;
use kmm_testkit::zone_index;

static LOW_CALLS: AtomicUsize = AtomicUsize::new(0);

fn on_low(_: &kmm_buddy::Zone<'_>) {
    LOW_CALLS.fetch_add(1, Ordering::Relaxed);
}

#[test]
fn kernel_stops_at_min_and_atomic_goes_below() {
    let config = BuddyConfig {
        min_free_kbytes: Some(1024),
        on_low: Some(&on_low),
        ..BuddyConfig::default()
    };
    // One zone in play: 16 MiB of DMA and 8 MiB of NORMAL; allocate from DMA.
    let r = rig(24, 24, 1, false, config);
    let _cpu = r.bind(0);
    let b = r.buddy();
    let dma = &b.zones()[zone_index(0, ZoneType::Dma)];
    let min = dma.watermark(Watermark::Min);
    let low = dma.watermark(Watermark::Low);
    let high = dma.watermark(Watermark::High);
    assert!(min > 0 && low == min + min / 4 && high == min + min / 2);
    let total_min: usize = b.zones().iter().map(|z| z.watermark(Watermark::Min)).sum();
    assert!(
        total_min.abs_diff(1024 / 4) <= 2,
        "zones share min_free_kbytes: {total_min}"
    );

    let kernel = Gfp::KERNEL | Gfp::DMA;
    let mut live = Vec::new();
    let calls_before = LOW_CALLS.load(Ordering::Relaxed);
    while let Some(p) = b.alloc_pages(kernel, 0) {
        live.push(p);
    }
    let free = dma.free_pages() + dma.pcp_pages();
    assert!(
        free > 0 && free <= min + 1,
        "GFP_KERNEL stopped with {free} free, min {min}"
    );
    assert!(
        LOW_CALLS.load(Ordering::Relaxed) > calls_before,
        "low watermark hook not called"
    );
    assert!(dma.low_events() > 0);

    // Atomic allocations may use the reserve below min, but not all of it.
    let mut atomic = 0;
    while let Some(p) = b.alloc_pages(Gfp::ATOMIC | Gfp::DMA, 0) {
        live.push(p);
        atomic += 1;
    }
    assert!(atomic > 0, "GFP_ATOMIC could not dip below min");
    let left = dma.free_pages() + dma.pcp_pages();
    assert!(left > 0, "the last reserve is never given away");
    assert!(left < free);
    for p in live {
        b.free_pages_page(p, 0).unwrap();
    }
    b.drain_local();
    r.assert_fully_coalesced();
}

#[test]
fn lowmem_reserve_protects_dma_from_normal_requests() {
    let r = rig(64, 64, 1, false, BuddyConfig::default());
    let b = r.buddy();
    let dma = &b.zones()[zone_index(0, ZoneType::Dma)];
    let normal = &b.zones()[zone_index(0, ZoneType::Normal)];
    assert_eq!(dma.lowmem_reserve(ZoneType::Dma), 0);
    assert_eq!(dma.lowmem_reserve(ZoneType::Normal), normal.managed() / 256);
    assert_eq!(normal.lowmem_reserve(ZoneType::Normal), 0);
}

#[test]
fn default_reserve_follows_linux() {
    let r = rig(64, 64, 1, false, BuddyConfig::default());
    let lowmem: usize = r.buddy().zones().iter().map(|z| z.managed()).sum();
    assert_eq!(r.buddy().min_free_kbytes(), default_min_free_kbytes(lowmem));
    let mut info = String::new();
    r.buddy().zoneinfo(&mut info).unwrap();
    assert!(info.contains("Node 0, zone      DMA"));
    assert!(info.contains("        min      "));
    assert!(info.contains("    cpu: 0"));
}

#[test]
fn highmem_first_then_fallback() {
    // 40 MiB with highmem from 32 MiB: HIGHUSER takes HighMem pages first, then
    // falls back to NORMAL and DMA when HighMem runs out.
    let r = rig(40, 32, 1, false, common::no_reserve());
    let _cpu = r.bind(0);
    let b = r.buddy();
    let first = b.alloc_pages(Gfp::HIGHUSER, 0).unwrap();
    assert_eq!(first.zone_type(), ZoneType::HighMem);
    assert!(first.test(kmm_page_frame::PgFlags::HIGHMEM));
    assert_eq!(
        b.mem().page_address(first),
        None,
        "highmem has no address until mapped"
    );
    let mut live = vec![first];
    let high = &b.zones()[zone_index(0, ZoneType::HighMem)];
    while let Some(p) = b.alloc_pages(Gfp::HIGHUSER, 0) {
        let z = p.zone_type();
        live.push(p);
        if z != ZoneType::HighMem {
            assert_eq!(high.free_pages(), 0, "fell back while HighMem had pages");
            break;
        }
    }
    assert_eq!(live.last().unwrap().zone_type(), ZoneType::Normal);
    for p in live {
        b.free_pages_page(p, 0).unwrap();
    }
    b.drain_local();
    r.assert_fully_coalesced();
}

#[test]
fn local_node_first_then_others() {
    let r = rig(
        48,
        48,
        2,
        true,
        BuddyConfig {
            cpu_nodes: &[0, 1],
            ..common::no_reserve()
        },
    );
    let b = r.buddy();
    {
        let _c = r.bind(1);
        let p = b.alloc_pages(Gfp::KERNEL, 4).unwrap();
        assert_eq!(p.node(), 1, "CPU 1 is on node 1");
        b.free_pages_page(p, 4).unwrap();
        let q = b.alloc_pages_node(0, Gfp::KERNEL, 4).unwrap();
        assert_eq!(q.node(), 0);
        b.free_pages_page(q, 4).unwrap();
        // DMA exists only on node 0: a DMA request from node 1 falls back there.
        let d = b.alloc_pages(Gfp::KERNEL | Gfp::DMA, 0).unwrap();
        assert_eq!((d.node(), d.zone_type()), (0, ZoneType::Dma));
        b.free_pages_page(d, 0).unwrap();
    }
    r.drain_every_cpu();
    r.assert_fully_coalesced();
}
