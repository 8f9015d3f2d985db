//! The multiboot reader over fake loader memory: structures built in a
//! buffer whose "physical" addresses are offsets into it.
#![cfg(feature = "multiboot")]

use kmm::multiboot::{
    BOOTLOADER_MAGIC, BadMagic, BootMemoryMap, INFO_CMDLINE, INFO_FRAMEBUFFER, INFO_MEMORY,
    INFO_MMAP, INFO_MODS, MAX_STRING, MapSource, MemoryMapError, MultibootInfo, OutOfWindow,
    ReservedKind, ReservedRange, ReservedRanges, check_magic,
};
use kmm::page_frame::{Region, RegionKind};
use proptest::prelude::*;

/// Field offsets in the information structure.
const MEM_LOWER: u32 = 4;
const MEM_UPPER: u32 = 8;
const CMDLINE: u32 = 16;
const MODS_COUNT: u32 = 20;
const MODS_ADDR: u32 = 24;
const MMAP_LENGTH: u32 = 44;
const MMAP_ADDR: u32 = 48;

/// A fake loader's memory: "physical" address = offset into `mem`. Bytes
/// nobody wrote are 0xEE, so a stray read shows.
struct Fake {
    mem: Vec<u8>,
}

impl Fake {
    fn new() -> Fake {
        // Nothing at the first 0x100 "physical" bytes.
        Fake {
            mem: vec![0xEE; 0x100],
        }
    }

    /// Appends `b` at the next offset that is `misalign` past a multiple of 8.
    fn put(&mut self, b: &[u8], misalign: usize) -> u32 {
        while self.mem.len() % 8 != misalign % 8 {
            self.mem.push(0xEE);
        }
        let at = self.mem.len();
        self.mem.extend_from_slice(b);
        at as u32
    }

    fn write(&mut self, at: u32, b: &[u8]) {
        let at = at as usize;
        self.mem[at..at + b.len()].copy_from_slice(b);
    }

    /// A zeroed 88-byte structure with `flags`.
    fn info(&mut self, flags: u32) -> u32 {
        let at = self.put(&[0; 88], 0);
        self.set(at, 0, flags);
        at
    }

    fn set(&mut self, info: u32, field: u32, v: u32) {
        self.write(info + field, &v.to_le_bytes());
    }

    /// A NUL-terminated string.
    fn string(&mut self, s: &[u8], misalign: usize) -> u32 {
        let at = self.put(s, misalign);
        self.mem.push(0);
        at
    }

    /// A memory map of `entries`, its buffer at `misalign`; sets flag bit 6.
    fn mmap(&mut self, info: u32, entries: &[u8], misalign: usize) -> u32 {
        let at = self.put(entries, misalign);
        self.set(info, MMAP_ADDR, at);
        self.set(info, MMAP_LENGTH, entries.len() as u32);
        let flags = self.flags(info);
        self.set(info, 0, flags | INFO_MMAP);
        at
    }

    fn flags(&self, info: u32) -> u32 {
        let i = info as usize;
        u32::from_le_bytes(self.mem[i..i + 4].try_into().unwrap())
    }

    fn window(&self) -> usize {
        self.mem.as_ptr().expose_provenance()
    }

    fn read(&self, info: u32) -> MultibootInfo<'_> {
        // SAFETY: everything the structure describes was written into `mem`
        // at offsets from its start, and the result borrows `self`, so `mem`
        // stays unchanged while it lives.
        unsafe { MultibootInfo::new(info, self.window()) }.unwrap()
    }
}

/// One memory-map entry: `size` (not counting itself), then `body`.
fn raw_entry(size: u32, body: &[u8]) -> Vec<u8> {
    let mut e = size.to_le_bytes().to_vec();
    e.extend_from_slice(body);
    e
}

/// A well-formed 24-byte memory-map entry.
fn entry(base: u64, len: u64, ty: u32) -> Vec<u8> {
    let mut body = base.to_le_bytes().to_vec();
    body.extend_from_slice(&len.to_le_bytes());
    body.extend_from_slice(&ty.to_le_bytes());
    raw_entry(20, &body)
}

const MIB: u64 = 1 << 20;

#[test]
fn mmap_entries_become_regions() {
    let mut f = Fake::new();
    let info = f.info(INFO_MEMORY);
    f.set(info, MEM_LOWER, 639);
    f.set(info, MEM_UPPER, 1024);
    // A longer entry (size 24) is fine: its extra bytes are skipped.
    let mut long = entry(0xF_0000, 0x1_0000, 2);
    long[0] = 24;
    long.extend_from_slice(&[0xAB; 4]);
    let entries = [
        entry(0, 0x9_FC00, 1),
        entry(0x9_FC00, 0x400, 2),
        long,
        entry(MIB, 127 * MIB - 0x1_0000, 1),
        entry(128 * MIB - 0x1_0000, 0x1_0000, 3),
        entry(0xFEC0_0000, 0x1000, 4),
        entry(0x1_0000_0000, 0x1000, 5),
        entry(0x1_0000_1000, MIB, 1),
        entry(0xFFFF_F000, 0x1000, 7),
    ]
    .concat();
    // At an odd address: every field is read unaligned.
    f.mmap(info, &entries, 3);
    let map: BootMemoryMap = f.read(info).memory_map().unwrap();
    assert_eq!(map.source(), MapSource::Mmap, "the map wins over mem_upper");
    assert_eq!(map.dropped(), 0);
    assert_eq!(
        map.regions(),
        [
            Region::new(0, 0x9_FC00, RegionKind::Usable),
            Region::new(0x9_FC00, 0x400, RegionKind::Reserved),
            Region::new(0xF_0000, 0x1_0000, RegionKind::Reserved),
            Region::new(MIB, 127 * MIB - 0x1_0000, RegionKind::Usable),
            Region::new(128 * MIB - 0x1_0000, 0x1_0000, RegionKind::AcpiReclaimable),
            Region::new(0xFEC0_0000, 0x1000, RegionKind::AcpiNvs),
            Region::new(0x1_0000_0000, 0x1000, RegionKind::Unusable),
            Region::new(0x1_0000_1000, MIB, RegionKind::Usable),
            Region::new(0xFFFF_F000, 0x1000, RegionKind::Reserved),
        ]
    );
}

#[test]
fn mem_lower_upper_without_a_map() {
    let mut f = Fake::new();
    let info = f.info(INFO_MEMORY);
    f.set(info, MEM_LOWER, 639);
    f.set(info, MEM_UPPER, 127 * 1024);
    let mb = f.read(info);
    assert_eq!(
        (mb.mem_lower_kib(), mb.mem_upper_kib()),
        (Some(639), Some(127 * 1024))
    );
    let map: BootMemoryMap = mb.memory_map().unwrap();
    assert_eq!(map.source(), MapSource::MemLowerUpper);
    assert_eq!(
        map.regions(),
        [
            Region::new(0, 639 << 10, RegionKind::Usable),
            Region::new(MIB, 127 * MIB, RegionKind::Usable),
        ]
    );

    // Flag bit 6 with an empty map falls back too; mem_lower is clamped to
    // 640 KiB and an empty mem_upper gives no region.
    f.set(info, MEM_LOWER, 1000);
    f.set(info, MEM_UPPER, 0);
    f.mmap(info, &[], 0);
    let map: BootMemoryMap = f.read(info).memory_map().unwrap();
    assert_eq!(map.source(), MapSource::MemLowerUpper);
    assert_eq!(
        map.regions(),
        [Region::new(0, 640 << 10, RegionKind::Usable)]
    );

    // Without bit 0 the fields are not looked at.
    f.set(info, 0, 0);
    let mb = f.read(info);
    assert_eq!(mb.mem_upper_kib(), None);
    assert!(mb.basic_memory_map::<4>().is_none());
    assert_eq!(
        mb.memory_map::<4>().unwrap_err(),
        MemoryMapError::NoMemoryInfo
    );
}

#[test]
fn modules_and_cmdline_are_reserved() {
    let mut f = Fake::new();
    let info = f.info(INFO_CMDLINE | INFO_MODS | INFO_FRAMEBUFFER);
    f.put(&[0; 28], 0); // the framebuffer fields
    let cmdline = f.string(b"/boot/kernel paging=pae", 5);
    f.set(info, CMDLINE, cmdline);
    let initrd = f.put(&[1; 0x300], 0);
    let prog = f.put(&[2; 0x11], 1);
    let initrd_s = f.string(b"/boot/initrd", 3);
    let prog_s = f.string(b"/bin/init -v", 6);
    let mut list = Vec::new();
    for (start, len, s) in [(initrd, 0x300, initrd_s), (prog, 0x11, prog_s), (0, 0, 0)] {
        for w in [start, start + len, s, 0] {
            list.extend_from_slice(&w.to_le_bytes());
        }
    }
    let mods = f.put(&list, 2);
    f.set(info, MODS_ADDR, mods);
    f.set(info, MODS_COUNT, 3);
    let mmap = f.mmap(info, &entry(0, 0x9_F000, 1), 7);

    let mb = f.read(info);
    assert_eq!(mb.cmdline(), Some("/boot/kernel paging=pae"));
    let m: Vec<_> = mb.modules().unwrap().collect();
    assert_eq!(m.len(), 3);
    assert_eq!(m[0].range(), u64::from(initrd)..u64::from(initrd) + 0x300);
    assert_eq!(m[0].string(), Some("/boot/initrd"));
    assert_eq!(m[0].data().unwrap(), [1; 0x300]);
    assert_eq!((m[1].start(), m[1].end()), (prog, prog + 0x11));
    assert_eq!(m[1].string(), Some("/bin/init -v"));
    assert_eq!(m[1].data().unwrap(), [2; 0x11]);
    assert_eq!(
        (m[2].string(), m[2].range()),
        (None, 0..0),
        "no string, no bytes"
    );

    let r: ReservedRanges = mb.reserved(0x10_0000..0x18_0000).unwrap();
    let span = |at: u32, len: u64, kind| ReservedRange {
        start: at.into(),
        end: u64::from(at) + len,
        kind,
    };
    assert_eq!(
        r.entries(),
        [
            span(0x10_0000, 0x8_0000, ReservedKind::Kernel),
            span(info, 116, ReservedKind::InfoStructure),
            span(cmdline, 24, ReservedKind::CommandLine),
            span(mmap, 24, ReservedKind::MemoryMap),
            span(mods, 48, ReservedKind::ModuleList),
            span(initrd, 0x300, ReservedKind::Module(0)),
            span(initrd_s, 13, ReservedKind::ModuleString(0)),
            span(prog, 0x11, ReservedKind::Module(1)),
            span(prog_s, 13, ReservedKind::ModuleString(1)),
        ]
    );
    assert_eq!(r.dropped(), 0);
    assert!(r.contains(0x17_FFFF) && !r.contains(0x18_0000));
    assert_eq!(r.iter().len(), 9);
    let ranges: Vec<_> = r.entries().iter().map(ReservedRange::range).collect();
    assert_eq!(r.ranges(), ranges, "the slice BootParams::reserved takes");
}

#[test]
fn flags_gate_the_fields() {
    let mut f = Fake::new();
    let info = f.info(0);
    let s = f.string(b"ignored", 0);
    f.set(info, CMDLINE, s);
    f.set(info, MODS_COUNT, 4);
    f.set(info, MODS_ADDR, 0xEEEE_EEEE);
    f.set(info, MMAP_LENGTH, 0xEEEE_EEEE);
    let mb = f.read(info);
    assert_eq!(mb.cmdline(), None);
    assert_eq!(mb.modules().unwrap().len(), 0);
    let r: ReservedRanges<4> = mb.reserved(0..0).unwrap();
    assert_eq!(
        r.entries(),
        [ReservedRange {
            start: info.into(),
            end: u64::from(info) + 88,
            kind: ReservedKind::InfoStructure
        }]
    );
}

#[test]
fn bad_magic_is_refused() {
    assert_eq!(check_magic(BOOTLOADER_MAGIC), Ok(()));
    // The header magic (0x1BADB002) is not what the loader leaves in EAX.
    let e = check_magic(0x1BAD_B002).unwrap_err();
    assert_eq!(e, BadMagic { found: 0x1BAD_B002 });
    assert_eq!(
        e.to_string(),
        "multiboot: bad magic 0x1badb002 (want 0x2badb002)"
    );
    assert!(check_magic(0).is_err());
}

/// The memory map of `entries` (mmap_length = its length), read into `N`.
fn read_map<const N: usize>(entries: &[u8]) -> Result<BootMemoryMap<N>, MemoryMapError> {
    let mut f = Fake::new();
    let info = f.info(INFO_MEMORY);
    f.set(info, MEM_UPPER, 1024);
    f.mmap(info, entries, 1);
    // Bytes past mmap_length that must not be read: a well-formed entry.
    f.put(&entry(0x5000, 0x1000, 1), 0);
    f.read(info).memory_map()
}

#[test]
fn malformed_mmap_entries_stop_the_walk() {
    let good = entry(0, 0x9_F000, 1);
    // Size 0 (which would not advance past the size field) and 19 (too small
    // for base, length and type).
    for size in [0, 19] {
        let e = [good.clone(), raw_entry(size, &[0; 20])].concat();
        assert_eq!(
            read_map::<8>(&e).unwrap_err(),
            MemoryMapError::EntryTooSmall { offset: 24, size }
        );
    }
    // A size that runs past mmap_length: by a byte, and absurdly.
    for size in [21, u32::MAX] {
        let e = [good.clone(), raw_entry(size, &[0; 20])].concat();
        assert_eq!(
            read_map::<8>(&e).unwrap_err(),
            MemoryMapError::EntryPastEnd { offset: 24 }
        );
    }
    // mmap_length ends inside an entry, or inside a size field.
    let two = [good.clone(), good.clone()].concat();
    for len in [47, 26] {
        assert_eq!(
            read_map::<8>(&two[..len]).unwrap_err(),
            MemoryMapError::EntryPastEnd { offset: 24 }
        );
    }
    // The walk stops at mmap_length: the entry after it is not read.
    let map = read_map::<8>(&two).unwrap();
    assert_eq!(
        map.regions(),
        [Region::new(0, 0x9_F000, RegionKind::Usable); 2]
    );
    // The error names its cause.
    assert_eq!(
        MemoryMapError::EntryTooSmall {
            offset: 24,
            size: 0
        }
        .to_string(),
        "multiboot: memory-map entry at offset 0x18 has size 0 (below 20)"
    );
}

#[test]
fn entries_past_the_capacity_are_counted() {
    let entries: Vec<u8> = (0..40u64)
        .flat_map(|i| entry(i * MIB, MIB, 1 + (i % 2) as u32))
        .collect();
    let map = read_map::<32>(&entries).unwrap();
    assert_eq!((map.regions().len(), map.dropped()), (32, 8));
    assert_eq!(
        map.regions()[31],
        Region::new(31 * MIB, MIB, RegionKind::Reserved)
    );
    let map = read_map::<0>(&entries).unwrap();
    assert_eq!((map.regions().len(), map.dropped()), (0, 40));

    // Reserved ranges too: the kernel, the structure, the list and five
    // modules (no strings) are eight ranges.
    let mut f = Fake::new();
    let info = f.info(INFO_MODS);
    let list: Vec<u8> = (0..5u32)
        .flat_map(|i| [0x100_0000 + i * 0x1000, 0x100_0800 + i * 0x1000, 0, 0])
        .flat_map(u32::to_le_bytes)
        .collect();
    let mods = f.put(&list, 0);
    f.set(info, MODS_ADDR, mods);
    f.set(info, MODS_COUNT, 5);
    let r: ReservedRanges<4> = f.read(info).reserved(0x10_0000..0x20_0000).unwrap();
    assert_eq!((r.entries().len(), r.dropped()), (4, 4));
    assert_eq!(r.entries()[3].kind, ReservedKind::Module(0));
    assert_eq!(r.ranges().len(), 4, "the slice stops where the entries do");
}

#[test]
fn strings_without_a_nul_or_not_utf8() {
    let mut f = Fake::new();
    let info = f.info(INFO_CMDLINE);
    let at = f.put(&vec![b'x'; MAX_STRING + 16], 0);
    f.mem.push(0);
    f.set(info, CMDLINE, at);
    let mb = f.read(info);
    assert_eq!(mb.cmdline_bytes(), None, "longer than MAX_STRING");
    let r: ReservedRanges = mb.reserved(0..0).unwrap();
    assert_eq!(
        r.entries()[1].range(),
        u64::from(at)..u64::from(at) + MAX_STRING as u64
    );

    let bad = f.string(&[b'a', 0xFF, b'b'], 0);
    f.set(info, CMDLINE, bad);
    let mb = f.read(info);
    assert_eq!(mb.cmdline_bytes(), Some(&[b'a', 0xFF, b'b'][..]));
    assert_eq!(mb.cmdline(), None, "not UTF-8");

    let empty = f.string(b"", 0);
    f.set(info, CMDLINE, empty);
    assert_eq!(f.read(info).cmdline(), Some(""));
    // Address 0 means no command line.
    f.set(info, CMDLINE, 0);
    assert_eq!(f.read(info).cmdline(), None);
}

#[test]
fn structures_outside_the_window_are_refused() {
    // SAFETY: a structure at virtual 0 (window 0, physical 0) is refused
    // before anything is read.
    let e = unsafe { MultibootInfo::new(0, 0) }.unwrap_err();
    assert_eq!(e, OutOfWindow { phys: 0, len: 88 });
    // SAFETY: window + physical address wraps around the address space:
    // refused before anything is read.
    let e = unsafe { MultibootInfo::new(0x100, usize::MAX - 0x40) }.unwrap_err();
    assert_eq!(
        e,
        OutOfWindow {
            phys: 0x100,
            len: 88
        }
    );
    // SAFETY: the structure fits, but its end wraps: refused as a whole.
    let e = unsafe { MultibootInfo::new(0x100, usize::MAX - 0x150) }.unwrap_err();
    assert_eq!(
        e,
        OutOfWindow {
            phys: 0x100,
            len: 88
        }
    );
    assert_eq!(
        e.to_string(),
        "multiboot: 0x58 bytes at physical 0x100 are outside the window"
    );
}

// ---- random memory maps against a reference walk ----

/// The reference walk: entries by their size field, over exactly `buf`.
fn model(buf: &[u8]) -> Result<Vec<Region>, MemoryMapError> {
    let mut out = Vec::new();
    let mut off = 0;
    while off < buf.len() {
        let offset = off as u32;
        if buf.len() - off < 4 {
            return Err(MemoryMapError::EntryPastEnd { offset });
        }
        let size = u32::from_le_bytes(buf[off..off + 4].try_into().unwrap());
        if size < 20 {
            return Err(MemoryMapError::EntryTooSmall { offset, size });
        }
        if (size as usize) > buf.len() - off - 4 {
            return Err(MemoryMapError::EntryPastEnd { offset });
        }
        let e = &buf[off + 4..];
        let base = u64::from_le_bytes(e[0..8].try_into().unwrap());
        let len = u64::from_le_bytes(e[8..16].try_into().unwrap());
        let ty = u32::from_le_bytes(e[16..20].try_into().unwrap());
        out.push(Region::new(base, len, RegionKind::from_e820(ty)));
        off += 4 + size as usize;
    }
    Ok(out)
}

/// Entry-shaped bytes: sizes from the troublesome set, bodies that may be
/// shorter than their size.
fn entries() -> impl Strategy<Value = Vec<u8>> {
    let size = prop_oneof![
        Just(0u32),
        0..20u32,
        Just(20u32),
        Just(24u32),
        21..64u32,
        any::<u32>(),
    ];
    let one = (size, any::<u64>(), any::<u64>(), 0..8u32, 0..48usize).prop_map(
        |(size, base, len, ty, body)| {
            let mut e = entry(base, len, ty);
            e[..4].copy_from_slice(&size.to_le_bytes());
            e.resize(4 + body.min(size as usize).max(20), 0x5A);
            e
        },
    );
    prop::collection::vec(one, 0..12).prop_map(|v| v.concat())
}

proptest! {
    /// Any bytes as the memory map: the reader agrees with the reference
    /// walk over exactly `mmap_length` bytes (so it read nothing past them —
    /// the bytes after are random and the model never sees them), never
    /// panics and never hangs.
    #[test]
    fn random_mmap_reads_only_the_buffer(
        bytes in prop_oneof![prop::collection::vec(any::<u8>(), 0..400), entries()],
        cut in any::<prop::sample::Index>(),
        tail in prop::collection::vec(any::<u8>(), 0..64),
        misalign in 0..8usize,
    ) {
        let len = cut.index(bytes.len() + 1);
        let mut f = Fake::new();
        let info = f.info(0);
        let at = f.mmap(info, &bytes[..len], misalign);
        f.mem.extend_from_slice(&bytes[len..]);
        f.mem.extend_from_slice(&tail);
        // The buffer ends exactly at the map when there is no tail.
        if tail.is_empty() {
            f.mem.truncate(at as usize + len);
            f.mem.shrink_to_fit();
        }
        let mb = f.read(info);
        let want = model(&bytes[..len]);
        if len == 0 {
            prop_assert_eq!(mb.memory_map::<8>().unwrap_err(), MemoryMapError::NoMemoryInfo);
        } else {
            match (mb.memory_map::<8>(), want) {
                (Ok(map), Ok(v)) => {
                    prop_assert_eq!(map.regions(), &v[..v.len().min(8)]);
                    prop_assert_eq!(map.dropped(), v.len().saturating_sub(8));
                    prop_assert_eq!(map.source(), MapSource::Mmap);
                }
                (got, want) => prop_assert_eq!(got.map(|m| m.regions().to_vec()), want),
            }
        }
        let r: ReservedRanges<4> = mb.reserved(0..0).unwrap();
        let mmap = r.entries().iter().find(|e| e.kind == ReservedKind::MemoryMap);
        prop_assert_eq!(mmap.map(ReservedRange::range), (len > 0).then(|| u64::from(at)..(at as u64 + len as u64)));
    }
}
