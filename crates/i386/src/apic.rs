//! The local APIC (xAPIC, memory mapped), reached through the fixmap's APIC
//! slot as Linux's `set_fixmap_nocache(FIX_APIC_BASE, …)` does: its id, EOI,
//! the spurious-interrupt vector, the timer, and the interrupt command
//! register (ICR) that sends IPIs — fixed vectors, INIT and STARTUP.
//!
//! Every CPU sees its own local APIC at the same physical address, so one
//! mapping serves all CPUs. The register encodings ([`Icr`]) are plain
//! values, tested on the host.

use core::ptr::NonNull;

use kmm_hal::{
    FrameSource, KernelLayout, MapError, PAGE_SIZE, PageFlags, PageTable, PhysAddr, VirtAddr,
};

/// The local APIC's default physical base (`APIC_DEFAULT_PHYS_BASE`).
pub const APIC_DEFAULT_PHYS_BASE: u64 = 0xFEE0_0000;
/// The fixmap slot of the local APIC (Linux's `FIX_APIC_BASE`): slot 0 is a
/// hole, 1 the vDSO, 2 the local APIC, 3 the I/O APIC.
pub const FIX_APIC_BASE: usize = 2;

/// Register offsets from the APIC base (Intel SDM vol. 3, table 11-1).
pub mod reg {
    /// Local APIC ID (bits 24–31).
    pub const ID: usize = 0x20;
    /// Version (bits 0–7) and max LVT entry (bits 16–23).
    pub const VERSION: usize = 0x30;
    /// Task priority.
    pub const TPR: usize = 0x80;
    /// End of interrupt.
    pub const EOI: usize = 0xB0;
    /// Spurious-interrupt vector (bit 8: APIC software enable).
    pub const SVR: usize = 0xF0;
    /// Error status.
    pub const ESR: usize = 0x280;
    /// Interrupt command, low half (writing it sends the IPI).
    pub const ICR_LOW: usize = 0x300;
    /// Interrupt command, high half (destination in bits 24–31).
    pub const ICR_HIGH: usize = 0x310;
    /// LVT timer.
    pub const LVT_TIMER: usize = 0x320;
    /// LVT LINT0.
    pub const LVT_LINT0: usize = 0x350;
    /// LVT LINT1.
    pub const LVT_LINT1: usize = 0x360;
    /// LVT error.
    pub const LVT_ERROR: usize = 0x370;
    /// Timer initial count.
    pub const TIMER_INITIAL: usize = 0x380;
    /// Timer current count.
    pub const TIMER_CURRENT: usize = 0x390;
    /// Timer divide configuration.
    pub const TIMER_DIVIDE: usize = 0x3E0;
}

/// SVR bit 8: the APIC is software-enabled.
const SVR_ENABLE: u32 = 1 << 8;
/// LVT bit 16: the entry is masked.
const LVT_MASKED: u32 = 1 << 16;
/// LVT timer bit 17: periodic mode.
const LVT_TIMER_PERIODIC: u32 = 1 << 17;
/// The first vector that is not a CPU exception.
pub const FIRST_EXTERNAL_VECTOR: u8 = 0x20;
/// ICR bit 12: delivery status (1 = send pending).
const ICR_SEND_PENDING: u32 = 1 << 12;

/// An ICR delivery mode (bits 8–10).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliveryMode {
    /// Deliver the vector (`APIC_DM_FIXED`).
    Fixed = 0b000,
    /// INIT: reset the target to its wait-for-SIPI state (`APIC_DM_INIT`).
    Init = 0b101,
    /// STARTUP: start the target in real mode at `vector << 12`
    /// (`APIC_DM_STARTUP`).
    Startup = 0b110,
}

/// An ICR destination shorthand (bits 18–19).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shorthand {
    /// The APIC id in the high half.
    None = 0b00,
    /// The sender only.
    SelfOnly = 0b01,
    /// Every CPU, the sender included.
    AllIncludingSelf = 0b10,
    /// Every CPU but the sender (`APIC_DEST_ALLBUT`).
    AllButSelf = 0b11,
}

/// One interrupt command: the two halves of the ICR (physical destination
/// mode, edge triggered, level asserted).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Icr {
    /// The low half (vector, delivery mode, level, shorthand).
    pub low: u32,
    /// The high half (destination APIC id in bits 24–31).
    pub high: u32,
}

impl Icr {
    /// The command `mode` with `vector` to `shorthand` (APIC id `dest` when
    /// the shorthand is [`Shorthand::None`]).
    pub const fn new(mode: DeliveryMode, vector: u8, shorthand: Shorthand, dest: u8) -> Icr {
        Icr {
            low: vector as u32 | (mode as u32) << 8 | 1 << 14 | (shorthand as u32) << 18,
            high: (dest as u32) << 24,
        }
    }

    /// A fixed IPI of `vector` to the CPU whose APIC id is `apic_id`.
    pub const fn fixed(apic_id: u8, vector: u8) -> Icr {
        Icr::new(DeliveryMode::Fixed, vector, Shorthand::None, apic_id)
    }

    /// A fixed IPI of `vector` to every CPU but the sender.
    pub const fn fixed_all_but_self(vector: u8) -> Icr {
        Icr::new(DeliveryMode::Fixed, vector, Shorthand::AllButSelf, 0)
    }

    /// INIT to `apic_id` (the first step of Linux's `wakeup_secondary_cpu`).
    pub const fn init(apic_id: u8) -> Icr {
        Icr::new(DeliveryMode::Init, 0, Shorthand::None, apic_id)
    }

    /// STARTUP to `apic_id`: it starts in real mode at physical
    /// `page << 12` (the trampoline page, below 1 MiB).
    pub const fn startup(apic_id: u8, page: u8) -> Icr {
        Icr::new(DeliveryMode::Startup, page, Shorthand::None, apic_id)
    }
}

/// A local APIC's memory-mapped registers.
///
/// Every CPU that uses the value reaches its own local APIC through the same
/// address (the xAPIC is per CPU at one physical address), so one
/// `LocalApic` serves all CPUs of a kernel.
#[derive(Debug, Clone, Copy)]
pub struct LocalApic {
    base: NonNull<u32>,
}

// SAFETY: the value is an address; each CPU that dereferences it reaches its
// own APIC (`new`'s contract), so sharing it between CPUs shares no state.
unsafe impl Send for LocalApic {}
// SAFETY: as for `Send`.
unsafe impl Sync for LocalApic {}

impl LocalApic {
    /// The local APIC whose registers are mapped at `base`.
    ///
    /// # Safety
    ///
    /// `base` must be page aligned and map the 4 KiB register page of the
    /// local APIC (uncached, read-write) on every CPU that uses the value —
    /// see [`map_local_apic`] — for as long as the value is used. Only ring
    /// 0 code uses it. On every CPU, every external-interrupt vector (32 to
    /// 255) has a handler that copes with an interrupt it did not expect:
    /// the safe methods can send ([`LocalApic::send_fixed`]) or route
    /// ([`LocalApic::start_timer_periodic`], [`LocalApic::enable`]'s
    /// spurious vector) any of them.
    pub const unsafe fn new(base: NonNull<u32>) -> LocalApic {
        LocalApic { base }
    }

    /// The address the registers are mapped at.
    pub fn base(&self) -> VirtAddr {
        VirtAddr::from_ptr(self.base.as_ptr().cast_const())
    }

    /// Reads the register at byte offset `off` (one of [`reg`]).
    pub fn read(&self, off: usize) -> u32 {
        debug_assert!(off < PAGE_SIZE && off.is_multiple_of(16));
        // SAFETY: `new`'s contract maps the register page at `base`; the
        // registers are 16-byte aligned 32-bit words inside it.
        unsafe { self.base.byte_add(off).read_volatile() }
    }

    /// Writes the register at byte offset `off` (one of [`reg`]).
    ///
    /// # Safety
    ///
    /// The write must keep the kernel's interrupt set-up sound: a register
    /// written here can send an IPI (the ICR: see [`LocalApic::send`]'s
    /// contract), route an interrupt to any vector (the LVT entries: the
    /// vector needs a handler that expects an external interrupt, and no
    /// exception vector below 32 does), or move the APIC.
    pub unsafe fn write(&self, off: usize, v: u32) {
        debug_assert!(off < PAGE_SIZE && off.is_multiple_of(16));
        // SAFETY: as in `read`; the caller keeps the contract above.
        unsafe { self.base.byte_add(off).write_volatile(v) }
    }

    /// Writes a register whose write cannot break the kernel (the caller
    /// here vouches for the value).
    fn write_reg(&self, off: usize, v: u32) {
        // SAFETY: callers in this module write only TPR, ESR, SVR, EOI,
        // the timer's divide and counts, masked LVT entries and LVT entries
        // with a vector checked to be an external-interrupt vector (>= 32).
        unsafe { self.write(off, v) }
    }

    /// The running CPU's APIC id.
    pub fn id(&self) -> u8 {
        (self.read(reg::ID) >> 24) as u8
    }

    /// The version register (version in bits 0–7).
    pub fn version(&self) -> u32 {
        self.read(reg::VERSION)
    }

    /// Signals the end of the interrupt being handled (Linux's `ack_APIC_irq`).
    pub fn eoi(&self) {
        self.write_reg(reg::EOI, 0);
    }

    /// Software-enables this CPU's APIC with `spurious_vector` (its low four
    /// bits should be 0xF on old APICs; 0xFF is the usual choice), accepts
    /// every priority (TPR 0), masks LINT0, LINT1 and the error LVT, and
    /// clears the error status (part of Linux's `setup_local_APIC`).
    ///
    /// Panics if `spurious_vector` is an exception vector (below 32).
    pub fn enable(&self, spurious_vector: u8) {
        assert!(
            spurious_vector >= FIRST_EXTERNAL_VECTOR,
            "an exception vector"
        );
        self.write_reg(reg::TPR, 0);
        self.write_reg(reg::LVT_LINT0, LVT_MASKED);
        self.write_reg(reg::LVT_LINT1, LVT_MASKED);
        self.write_reg(reg::LVT_ERROR, LVT_MASKED);
        self.write_reg(reg::ESR, 0);
        self.write_reg(reg::ESR, 0);
        self.write_reg(reg::SVR, SVR_ENABLE | u32::from(spurious_vector));
    }

    /// Starts this CPU's timer in periodic mode: an interrupt of `vector`
    /// every `initial_count` ticks of the bus clock divided by `divide`
    /// (a power of two from 1 to 128). `vector`'s handler must expect a
    /// timer interrupt (as any external-interrupt vector's handler must
    /// expect an unexpected one).
    ///
    /// Panics if `vector` is an exception vector (below 32).
    pub fn start_timer_periodic(&self, vector: u8, initial_count: u32, divide: u32) {
        assert!(vector >= FIRST_EXTERNAL_VECTOR, "an exception vector");
        self.write_reg(reg::TIMER_DIVIDE, divide_config(divide));
        self.write_reg(reg::LVT_TIMER, LVT_TIMER_PERIODIC | u32::from(vector));
        self.write_reg(reg::TIMER_INITIAL, initial_count);
    }

    /// Stops this CPU's timer (masks it, count 0).
    pub fn stop_timer(&self) {
        self.write_reg(reg::LVT_TIMER, LVT_MASKED);
        self.write_reg(reg::TIMER_INITIAL, 0);
    }

    /// Busy-waits about `ticks` ticks of the bus clock divided by 16 on this
    /// CPU's timer, in one-shot mode with its interrupt masked (the timer is
    /// left stopped). With QEMU's 1 GHz APIC bus, 62.5 ticks are 1 µs.
    pub fn spin_ticks(&self, ticks: u32) {
        self.write_reg(reg::TIMER_DIVIDE, divide_config(16));
        self.write_reg(reg::LVT_TIMER, LVT_MASKED);
        self.write_reg(reg::TIMER_INITIAL, ticks.max(1));
        while self.read(reg::TIMER_CURRENT) != 0 {
            core::hint::spin_loop();
        }
        self.stop_timer();
    }

    /// Waits until the previous command has been accepted (ICR delivery
    /// status clear), as Linux's `apic_wait_icr_idle`.
    pub fn wait_icr_idle(&self) {
        while self.read(reg::ICR_LOW) & ICR_SEND_PENDING != 0 {
            core::hint::spin_loop();
        }
    }

    /// Sends `icr`: waits for the previous command, writes the high half,
    /// then the low half (which sends it).
    ///
    /// Sending is not atomic with respect to another sender on the same CPU:
    /// call it with interrupts disabled if an interrupt handler on this CPU
    /// may also send.
    ///
    /// # Safety
    ///
    /// INIT and STARTUP go only to a CPU the caller is starting (not running
    /// kernel code: INIT resets it, STARTUP makes it run the code at the
    /// given page in real mode, which must be the caller's trampoline). A
    /// fixed IPI carries an external-interrupt vector (32 or above) whose
    /// handler on every target expects it; [`LocalApic::send_fixed`] is the
    /// safe form.
    pub unsafe fn send(&self, icr: Icr) {
        self.wait_icr_idle();
        // SAFETY: the caller keeps the contract above.
        unsafe {
            self.write(reg::ICR_HIGH, icr.high);
            self.write(reg::ICR_LOW, icr.low);
        }
    }

    /// Sends a fixed IPI of `vector` to the CPU whose APIC id is `apic_id`.
    /// Any external-interrupt vector's handler must cope with an interrupt
    /// it did not expect (devices and the APIC raise such interrupts too);
    /// the kernel's IDT keeps that rule.
    ///
    /// Panics if `vector` is an exception vector (below 32): there the CPU
    /// would run an exception handler that expects the CPU's own frame.
    pub fn send_fixed(&self, apic_id: u8, vector: u8) {
        assert!(vector >= FIRST_EXTERNAL_VECTOR, "an exception vector");
        // SAFETY: a fixed IPI of an external-interrupt vector (checked).
        unsafe { self.send(Icr::fixed(apic_id, vector)) }
    }
}

/// The timer divide-configuration value for dividing by `divide` (rounded
/// down to a power of two between 1 and 128).
pub const fn divide_config(divide: u32) -> u32 {
    // Divide by 2^(n+1) is encoded as bits 3,1,0 = n (0b111 = divide by 1).
    let log = match divide {
        0 | 1 => return 0b1011,
        d if d >= 128 => 7,
        d => 31 - d.leading_zeros(),
    };
    let n = log - 1;
    (n & 0b11) | ((n & 0b100) << 1)
}

/// The fixmap address of the local APIC's register page
/// ([`FIX_APIC_BASE`]) in `layout`.
pub fn apic_fixmap_address<L: KernelLayout + ?Sized>(layout: &L) -> Option<VirtAddr> {
    layout.fixmap().fix_to_virt(FIX_APIC_BASE)
}

/// Maps the local APIC's register page at `phys` (usually
/// [`APIC_DEFAULT_PHYS_BASE`]) into the fixmap's APIC slot of `layout`,
/// uncached and global, and returns its address (Linux's
/// `set_fixmap_nocache(FIX_APIC_BASE, apic_phys)`). Page-table pages, if any
/// are needed, come from `frames`. Fails if the slot is mapped already.
///
/// Nothing was mapped there before, so there is no stale translation to
/// flush.
pub fn map_local_apic<P, F, L>(
    pt: &mut P,
    frames: &mut F,
    layout: &L,
    phys: PhysAddr,
) -> Result<VirtAddr, MapError>
where
    P: PageTable + ?Sized,
    F: FrameSource + ?Sized,
    L: KernelLayout + ?Sized,
{
    let va = apic_fixmap_address(layout).ok_or(MapError::VirtOutOfRange)?;
    pt.map(
        va,
        phys,
        PageFlags::KERNEL_IO | PageFlags::GLOBAL | PageFlags::WRITE_THROUGH,
        frames,
    )?
    .ignore();
    Ok(va)
}

#[cfg(test)]
mod tests {
    extern crate std;
    use std::boxed::Box;

    use super::*;

    #[test]
    fn icr_encodings() {
        // Linux's values: fixed to one CPU, all-but-self, INIT, STARTUP.
        assert_eq!(
            Icr::fixed(3, 0xFB),
            Icr {
                low: 0x0000_40FB,
                high: 0x0300_0000
            }
        );
        assert_eq!(Icr::fixed_all_but_self(0xFB).low, 0x000C_40FB);
        assert_eq!(
            Icr::init(1),
            Icr {
                low: 0x0000_4500,
                high: 0x0100_0000
            }
        );
        assert_eq!(
            Icr::startup(2, 0x08),
            Icr {
                low: 0x0000_4608,
                high: 0x0200_0000
            }
        );
    }

    #[test]
    fn timer_divide_encodings() {
        assert_eq!(divide_config(1), 0b1011);
        assert_eq!(divide_config(2), 0b0000);
        assert_eq!(divide_config(4), 0b0001);
        assert_eq!(divide_config(8), 0b0010);
        assert_eq!(divide_config(16), 0b0011);
        assert_eq!(divide_config(32), 0b1000);
        assert_eq!(divide_config(64), 0b1001);
        assert_eq!(divide_config(128), 0b1010);
    }

    #[repr(C, align(4096))]
    struct FakeApic([u32; 1024]);

    #[test]
    fn registers_are_written_where_the_sdm_says() {
        let mut regs = Box::new(FakeApic([0; 1024]));
        regs.0[reg::ID / 4] = 5 << 24;
        let base = NonNull::new(regs.0.as_mut_ptr()).unwrap();
        // SAFETY: a page-aligned page of ordinary memory stands in for the
        // registers, and outlives `apic`.
        let apic = unsafe { LocalApic::new(base) };
        assert_eq!(apic.id(), 5);
        // SAFETY: no CPU: the "registers" are memory.
        unsafe { apic.send(Icr::startup(1, 8)) };
        apic.enable(0xFF);
        apic.start_timer_periodic(0xEF, 1000, 16);
        apic.eoi();
        let r = |off: usize| regs.0[off / 4];
        assert_eq!(r(reg::ICR_HIGH), 1 << 24);
        assert_eq!(r(reg::ICR_LOW), 0x4608);
        assert_eq!(r(reg::SVR), 0x1FF);
        assert_eq!(r(reg::LVT_TIMER), 0x2_00EF);
        assert_eq!(r(reg::TIMER_INITIAL), 1000);
        assert_eq!(r(reg::TIMER_DIVIDE), 0b0011);
    }
}
