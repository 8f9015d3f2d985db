//! Hooks the backing calls (the buddy allocator's `on_low`, anything
//! vmalloc runs) re-enter the allocator: `free_percpu` works there (the map
//! lock is not held across backing calls), `__alloc_percpu` and `shrink`
//! return `Busy` on the CPU that holds the allocation lock instead of
//! spinning on it. Each test runs under a watchdog, so a deadlock fails it
//! instead of hanging. On plain memory; not under Miri (the allocator is
//! leaked so the hook can reach it, which Miri reports).

mod common;

use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

use common::{BackingCall, FakeCpu, Hook, HookBacking, Ledger, SoftAreas, SoftBacking, ledger};
use kmm_hal::PAGE_SIZE;
use kmm_mock::watchdog;
use kmm_percpu::{PCPU_UNIT_SIZE, Percpu, PercpuError, PercpuPtr, Template, setup_per_cpu_areas};

type Pcpu = Percpu<'static, FakeCpu, SoftAreas, HookBacking>;

/// An allocator on two fake CPUs whose backing runs `hook` (set later).
/// Leaked: the hook refers to the allocator that owns the backing.
fn allocator() -> (
    &'static Pcpu,
    std::sync::Arc<std::sync::Mutex<Ledger>>,
    Hook,
) {
    let cpu: &'static FakeCpu = Box::leak(Box::new(FakeCpu::new(2)));
    let l = ledger();
    let areas = Box::leak(Box::new(
        setup_per_cpu_areas(cpu, &Template::from_vars(&[]), SoftAreas(l.clone())).unwrap(),
    ));
    let hook: Hook = Rc::default();
    let backing = HookBacking {
        inner: SoftBacking(l.clone()),
        hook: hook.clone(),
    };
    let pcpu: &'static Pcpu = Box::leak(Box::new(Percpu::new(areas, backing).unwrap()));
    (pcpu, l, hook)
}

/// The first chunk filled with page-sized allocations.
fn fill_first_chunk(pcpu: &Pcpu) -> Vec<PercpuPtr<u8>> {
    (0..PCPU_UNIT_SIZE / PAGE_SIZE)
        .map(|_| pcpu.__alloc_percpu(PAGE_SIZE, PAGE_SIZE).unwrap())
        .collect()
}

const LIMIT: Duration = Duration::from_secs(60);

#[test]
#[cfg_attr(miri, ignore = "leaks the allocator its hook reaches")]
fn a_hook_in_populate_frees_and_finds_allocation_busy() {
    watchdog("hook in populate", LIMIT, || {
        let (pcpu, l, hook) = allocator();
        let mut first = fill_first_chunk(pcpu);
        let victim = first.pop().unwrap();
        let seen = Rc::new(RefCell::new(Vec::new()));
        let seen2 = seen.clone();
        let l2 = l.clone();
        *hook.borrow_mut() = Some(Box::new(move |call| {
            if call != BackingCall::Populate {
                return;
            }
            // The area being populated is not handed out yet.
            let base = l2.lock().unwrap().chunks.last().unwrap().2;
            let pending = pcpu.free_percpu(PercpuPtr::<u8>::from_raw(base));
            seen2.borrow_mut().push((
                pcpu.free_percpu(victim),
                pending,
                pcpu.alloc_percpu::<u64>().err(),
                pcpu.shrink().err(),
                pcpu.check(),
                pcpu.stats().allocations,
            ));
        }));
        // A new chunk: created and populated with the hook inside.
        let p = pcpu.__alloc_percpu(PAGE_SIZE, PAGE_SIZE).unwrap();
        *hook.borrow_mut() = None;
        let want = PCPU_UNIT_SIZE / PAGE_SIZE - 1;
        assert_eq!(
            *seen.borrow(),
            [(
                Ok(()),
                Err(PercpuError::NotLive),
                Some(PercpuError::Busy),
                Some(PercpuError::Busy),
                Ok(()),
                want,
            )]
        );
        // Intact: the victim freed, the new allocation counted.
        pcpu.check().unwrap();
        let s = pcpu.stats();
        assert_eq!(
            (s.allocations, s.chunks, s.populated_pages),
            (want + 1, 2, 1)
        );
        assert_eq!(l.lock().unwrap().pages, 1);
        assert_eq!(pcpu.free_percpu(victim), Err(PercpuError::NotLive));
        // The freed page is reused, the allocator works as before.
        let again = pcpu.__alloc_percpu(PAGE_SIZE, PAGE_SIZE).unwrap();
        assert_eq!(again, victim);
        for q in first.into_iter().chain([p, again]) {
            pcpu.free_percpu(q).unwrap();
        }
        pcpu.shrink().unwrap();
        pcpu.check().unwrap();
        let s = pcpu.stats();
        assert_eq!((s.chunks, s.allocations, s.used_bytes), (1, 0, 0));
        let l = l.lock().unwrap();
        assert!(l.chunks.is_empty() && l.pages == 0, "{l:?}");
    });
}

#[test]
#[cfg_attr(miri, ignore = "leaks the allocator its hook reaches")]
fn a_hook_in_create_and_destroy_frees_and_finds_allocation_busy() {
    watchdog("hook in create and destroy", LIMIT, || {
        let (pcpu, l, hook) = allocator();
        let first = fill_first_chunk(pcpu);
        let small = pcpu.__alloc_percpu(8, 8).unwrap();
        let seen = Rc::new(RefCell::new(Vec::new()));
        let seen2 = seen.clone();
        let mut victims = first.clone();
        *hook.borrow_mut() = Some(Box::new(move |call| {
            let freed = victims.pop().map(|v| pcpu.free_percpu(v));
            seen2.borrow_mut().push((
                call,
                freed,
                // A pointer of the chunk being destroyed is no chunk's.
                pcpu.free_percpu(small),
                pcpu.__alloc_percpu(4, 4).err(),
                pcpu.shrink().err(),
                pcpu.check(),
            ));
        }));
        // The chunk of `small` made empty by a free: nothing destroyed yet.
        pcpu.free_percpu(small).unwrap();
        assert_eq!(pcpu.stats().empty_chunks, 1);
        assert!(seen.borrow().is_empty(), "free_percpu calls no backing");
        // shrink destroys it, the hook inside.
        assert_eq!(pcpu.shrink(), Ok(1));
        *hook.borrow_mut() = None;
        assert_eq!(
            *seen.borrow(),
            [(
                BackingCall::Destroy,
                Some(Ok(())),
                Err(PercpuError::Foreign),
                Some(PercpuError::Busy),
                Some(PercpuError::Busy),
                Ok(()),
            )]
        );
        pcpu.check().unwrap();
        let s = pcpu.stats();
        assert_eq!(
            (s.chunks, s.allocations, s.destroyed),
            (1, first.len() - 1, 1)
        );
        assert!(l.lock().unwrap().chunks.is_empty());
        for q in &first[..first.len() - 1] {
            pcpu.free_percpu(*q).unwrap();
        }
        pcpu.check().unwrap();
        assert_eq!(pcpu.stats().allocations, 0);
    });
}

#[test]
#[cfg_attr(miri, ignore = "leaks the allocator its hook reaches")]
fn chunks_emptied_by_frees_go_back_at_the_next_allocation() {
    watchdog("emptied chunks", LIMIT, || {
        let (pcpu, l, _hook) = allocator();
        let first = fill_first_chunk(pcpu);
        let per_unit = PCPU_UNIT_SIZE / PAGE_SIZE;
        let later: Vec<_> = (0..3 * per_unit)
            .map(|_| pcpu.__alloc_percpu(PAGE_SIZE, PAGE_SIZE).unwrap())
            .collect();
        assert_eq!(pcpu.stats().chunks, 4);
        for q in &later {
            pcpu.free_percpu(*q).unwrap();
        }
        // Frees give nothing back.
        let s = pcpu.stats();
        assert_eq!((s.chunks, s.empty_chunks, s.destroyed), (4, 3, 0));
        assert_eq!(l.lock().unwrap().chunks.len(), 3);
        pcpu.check().unwrap();
        // The next allocation keeps one spare, whatever its outcome.
        assert_eq!(pcpu.__alloc_percpu(0, 4), Err(PercpuError::ZeroSize));
        assert_eq!(pcpu.stats().empty_chunks, 3, "refused before the lock");
        let p = pcpu.__alloc_percpu(4, 4).unwrap();
        let s = pcpu.stats();
        assert_eq!((s.chunks, s.empty_chunks, s.destroyed), (3, 1, 1), "{s:?}");
        pcpu.free_percpu(p).unwrap();
        for q in first {
            pcpu.free_percpu(q).unwrap();
        }
        assert_eq!(pcpu.shrink(), Ok(2));
        assert!(l.lock().unwrap().chunks.is_empty());
    });
}
