//! The smallest kernel with kmm, made to be copied: a multiboot loader (QEMU's
//! `-kernel`, GRUB) starts it with paging off; it brings every allocator up
//! through the umbrella crate from the loader's memory map, uses each once,
//! prints `show_mem` on COM1 and leaves QEMU through its `isa-debug-exit`
//! device (exit status 33; 35 after a panic). One CPU, no interrupt handlers.
#![no_std]
#![no_main]

extern crate alloc;

use alloc::{boxed::Box, string::String, vec::Vec};
use core::arch::{asm, global_asm};
use core::fmt::{self, Write};
use core::ops::Range;

use kmm::buddy::Gfp;
use kmm::hal::VirtAddr;
use kmm::multiboot::{MultibootInfo, check_magic};
use kmm::page_frame::ZoneType;
use kmm::{BootParams, GlobalHeap, I386};

/// The kernel heap: `Box`, `Vec` and `String` allocate here once `kmain` ran
/// `HEAP.init` (kmalloc up to 4 MiB, vmalloc above, as Linux's `kvmalloc`).
#[global_allocator]
static HEAP: GlobalHeap<I386> = GlobalHeap::new();

// The multiboot header (magic, flags: page-aligned modules and memory
// information, checksum), the boot stack, and the entry point.
global_asm!(
    ".section .multiboot, \"a\"",
    ".balign 4",
    ".long 0x1BADB002, 3, -(0x1BADB002 + 3)",
    // 512 KiB: MemoryManager::init takes about 90 KiB of stack in a release
    // build, 400 KiB in a debug one.
    ".section .bss.stack, \"aw\", @nobits",
    ".balign 16",
    "stack_bottom: .skip 0x80000",
    "stack_top:",
    ".section .text.boot, \"ax\"",
    ".global _start",
    "_start: cli; cld; mov esp, offset stack_top",
    // SSE, which the i686 target's code uses (SSE2): CR0.EM clear, CR0.MP
    // set, CR4.OSFXSR and CR4.OSXMMEXCPT set.
    "mov ecx, cr0; and ecx, 0xFFFFFFFB; or ecx, 2; mov cr0, ecx",
    "mov ecx, cr4; or ecx, 0x600; mov cr4, ecx; fninit",
    // kmain's arguments: EAX = the loader's magic, EBX = its information
    // structure (ESP 16-byte aligned at the call, as the SysV i386 ABI wants).
    "sub esp, 8; push ebx; push eax",
    // Interrupts on (vmalloc refuses to run with them off), yet none can
    // arrive: every line of both 8259 PICs is masked, so no IDT is needed.
    "mov al, 0xFF; out 0x21, al; out 0xA1, al; sti",
    "call kmain",
    "2: cli; hlt; jmp 2b",
);

// The kernel image's first byte and the first byte after it, bss and stack
// included (linker.ld).
unsafe extern "C" {
    static __kernel_start: u8;
    static __kernel_end: u8;
}

/// The kernel image's physical range (it runs at its physical addresses).
fn kernel_image() -> Range<u64> {
    (&raw const __kernel_start).addr() as u64..(&raw const __kernel_end).addr() as u64
}

/// COM1, a 16550 UART at 0x3F8, polled: the console.
struct Com1;

impl Com1 {
    /// Writes `value` to COM1's register `reg` (0 to 7), or reads it.
    fn io(reg: u16, value: Option<u8>) -> u8 {
        let (port, mut v) = (0x3F8 + (reg & 7), value.unwrap_or(0));
        // SAFETY: ring 0; COM1's eight registers drive only the serial port,
        // which nothing else uses.
        unsafe {
            match value {
                Some(_) => asm!("out dx, al", in("dx") port, in("al") v, options(nomem, nostack)),
                None => asm!("in al, dx", in("dx") port, out("al") v, options(nomem, nostack)),
            }
        }
        v
    }

    /// 38400 baud, 8N1, FIFOs on, no interrupts.
    fn init() {
        for (reg, v) in [(1, 0), (3, 0x80), (0, 3), (1, 0), (3, 3), (2, 0xC7), (4, 3)] {
            Com1::io(reg, Some(v));
        }
    }
}

impl Write for Com1 {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let crlf = s
            .bytes()
            .flat_map(|b| [(b == b'\n').then_some(b'\r'), Some(b)]);
        for b in crlf.flatten() {
            while Com1::io(5, None) & 0x20 == 0 {} // until the transmitter is free
            Com1::io(0, Some(b));
        }
        Ok(())
    }
}

/// `println!` on COM1.
macro_rules! println {
    ($($arg:tt)*) => {{ let _ = writeln!(Com1, $($arg)*); }};
}

/// Leaves QEMU through `isa-debug-exit` (port 0xF4): its exit status is
/// `(code << 1) | 1`. On a machine without the device, halts.
fn exit(code: u32) -> ! {
    // SAFETY: the debug-exit port touches no memory; without the device the
    // write is ignored; halting with interrupts off only stops the CPU.
    unsafe {
        asm!("out 0xf4, eax", in("eax") code, options(nomem, nostack));
        asm!("2: cli; hlt; jmp 2b", options(nomem, nostack, noreturn))
    }
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    println!("PANIC: {info}");
    exit(0x11)
}

/// The Rust entry point, called by `_start` with the loader's EAX and EBX.
#[unsafe(no_mangle)]
extern "C" fn kmain(magic: u32, info: u32) -> ! {
    Com1::init();
    check_magic(magic).expect("not started by a multiboot loader");
    // SAFETY: the magic matched, so EBX holds the loader's structure; paging
    // is off, so window 0 reads physical memory; nothing was written over.
    let info = unsafe { MultibootInfo::new(info, 0) }.expect("multiboot information");
    let map = info.memory_map::<32>().expect("memory map");

    // kmm up: all it needs is the map and what is in use in it.
    let reserved = info.reserved::<16>(kernel_image()).expect("reserved");
    assert_eq!((map.dropped(), reserved.dropped()), (0, 0), "cut short");
    // SAFETY: one CPU, ring 0, paging off (as the loader leaves it); the
    // image and the loader's data are reserved; nothing else uses the RAM.
    let params = unsafe { BootParams::i386(map.regions(), kernel_image()) };
    // SAFETY: as above; called once, and the direct map stays for good.
    let mm = unsafe { HEAP.init(I386::new(), params.reserved(reserved.ranges())) }.expect("kmm");

    // `alloc` through the GlobalHeap.
    let b = Box::new(42u64);
    let s = String::from("kmm") + " minimal";
    let v: Vec<u32> = (0..1000).collect();
    println!("alloc: Box {b} at {b:p}, String {s:?}, Vec {:?}..", &v[..3]);
    // A Vec that grows past 4 MiB moves to vmalloc (the heap's kvmalloc).
    let mut big = Vec::new();
    for i in 0..(5u32 << 20) / 4 {
        big.push(i);
    }
    let at = VirtAddr::from_ptr(big.as_ptr());
    assert!(mm.vmalloc_allocator().is_vmalloc_addr(at), "not vmalloc'ed");
    assert!(big.iter().zip(0..).all(|(&x, i)| x == i), "corrupted");
    println!("vmalloc: a Vec of 5 MiB at {at} (kvmalloc)");
    drop(big);

    // The Linux functions, each once.
    let page = mm.alloc_pages(Gfp::KERNEL, 2).expect("alloc_pages");
    let zone = page.zone_type().name();
    println!("alloc_pages: an order-2 block in zone {zone}");
    mm.free_pages(page, 2).expect("__free_pages");
    let p = mm.kmalloc(100, Gfp::KERNEL).expect("kmalloc");
    let size = mm.ksize(p.as_ptr()).expect("ksize");
    println!("kmalloc: 100 bytes at {p:p}, ksize {size}");
    mm.kfree(p.as_ptr()).expect("kfree");
    if mm.summary().highmem > 0 {
        // A page above the direct map, mapped on demand in a fixmap slot.
        let high = mm.alloc_page(Gfp::HIGHUSER).expect("a HIGHMEM page");
        assert_eq!(high.zone_type(), ZoneType::HighMem);
        let va = mm.kmap_local_page(high).expect("kmap_local_page");
        // SAFETY: the whole page is mapped at `va` until kunmap_local.
        let back = unsafe {
            va.as_mut_ptr::<u64>().write(0x6B6D6D);
            va.as_ptr::<u64>().read_volatile()
        };
        println!("kmap_local_page: a HIGHMEM page at {va}, read back {back:#x}");
        mm.kunmap_local(va).expect("kunmap_local");
        mm.free_pages(high, 0).expect("__free_pages");
    }
    let pc = mm.alloc_percpu::<u64>().expect("alloc_percpu");
    let mine = mm.per_cpu_areas().per_cpu_ptr(pc, 0).expect("per_cpu_ptr");
    // SAFETY: CPU 0's copy of a live allocation, and only CPU 0 runs.
    unsafe { mine.write(7) };
    println!("alloc_percpu: CPU 0's u64 at {mine:p}");
    mm.free_percpu(pc).expect("free_percpu");

    mm.show_mem(&mut Com1).expect("show_mem");
    println!("minimal: ok");
    exit(0x10)
}
