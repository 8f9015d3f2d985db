//! `cargo xtask test [--only WORD]... [--list]`: the gate. Runs each step in
//! order and stops at the first failure, printing each step's time; the last
//! lines give every step's time and count the steps as `xtask: N passed, M
//! failed in T`. `--only WORD` runs setup and the steps whose names contain
//! WORD (any of the words given); `--list` prints the steps' names.

use std::path::Path;
use std::time::{Duration, Instant};

use crate::cmd::{self, Result, command};
use crate::fuzz;
use crate::miri;
use crate::qemu::{self, Boot, EXIT_FAILURE, EXIT_SUCCESS, Kernel};
use crate::root;
use crate::setup::{self, KERNEL_TARGET};

/// The 32-bit host the library crates' tests also run on: `usize` is 4 bytes
/// there, as on the i386 kernel, so word-size bugs show up on the host.
const HOST_32: &str = KERNEL_TARGET;

/// One gate step: a name and what it runs.
struct Step {
    name: String,
    run: Box<dyn Fn() -> Result>,
}

fn step(name: impl Into<String>, run: impl Fn() -> Result + 'static) -> Step {
    Step {
        name: name.into(),
        run: Box::new(run),
    }
}

/// `cargo ARGS` in `dir` as a step.
fn cargo(name: &'static str, dir: &Path, args: &'static [&'static str]) -> Step {
    let dir = dir.to_path_buf();
    step(name, move || cmd::run(&mut command(&dir, "cargo", args)))
}

/// The `no_std` library crates (the kernel links them), and with the mock
/// the crates whose tests also run as a 32-bit host. Not `kmm-testkit`: it
/// uses std (it is in `miri::CRATES`, so its tests run as a 32-bit host).
/// The umbrella's tests run as a 32-bit host in a step of their own (with
/// its `multiboot` feature; not under Miri: they dereference vmalloc
/// addresses, which the mock's software backing cannot).
const LIB_CRATES: [&str; 9] = [
    "kmm",
    "kmm-hal",
    "kmm-i386",
    "kmm-page-frame",
    "kmm-buddy",
    "kmm-slab",
    "kmm-vmalloc",
    "kmm-pkmap",
    "kmm-percpu",
];

/// The umbrella's features the host tests turn on: all but `hw` (ring 0:
/// INVLPG and CR3 writes) and `mem-symbols` (C symbols a hosted program
/// must take from its libc).
const KMM_HOST_FEATURES: &str = "global-allocator,multiboot,debug,hardened";

/// `cargo SUBCOMMAND -p CRATE… REST…` in `dir` as a step.
fn cargo_on(
    name: &'static str,
    dir: &Path,
    subcommand: &'static str,
    crates: &'static [&'static str],
    rest: &'static [&'static str],
) -> Step {
    let mut args = vec![subcommand];
    for c in crates {
        args.extend(["-p", c]);
    }
    args.extend(rest);
    let dir = dir.to_path_buf();
    step(name, move || cmd::run(&mut command(&dir, "cargo", &args)))
}

/// The workspace members that are never published (`publish = false`): the
/// task runner and the benchmarks. Every other member is a crate users can
/// depend on, and the gate packages it.
const UNPUBLISHED: [&str; 2] = ["xtask", "kmm-benches"];

/// `cargo package` of every publishable crate, as `cargo publish --workspace`
/// would prepare them: the file list, the manifest with every path
/// dependency turned into a versioned one, the README, and a lock file
/// resolved for each crate with the crates before it overlaid as if already
/// published (which is where a dev-dependency cycle shows up).
///
/// `--no-verify`: verifying builds every packaged crate again from its
/// `.crate` file (about 12 s with a warm target directory and a minute cold,
/// on one core), and the clippy and test steps already build the same
/// sources; `cargo package` without `--no-verify` does it by hand.
/// `--offline`: the lock files are resolved from the crates the clippy step
/// downloaded, so the step needs no network and takes about a second.
/// `--allow-dirty`: the gate runs before a commit.
fn package() -> Step {
    let root = root();
    step(
        "cargo package (every publishable crate, no verify)",
        move || {
            let mut args = vec!["package", "--workspace"];
            for c in UNPUBLISHED {
                args.extend(["--exclude", c]);
            }
            args.extend(["--no-verify", "--offline", "--allow-dirty"]);
            cmd::run(&mut command(&root, "cargo", &args))
        },
    )
}

/// The lines every good boot prints besides the mode line, whatever its RAM
/// and CPUs: paging on, a mapping proved through two aliases, the buddy
/// allocator built from the multiboot map with every zone and order
/// exercised and every page back, the slab allocator as the global
/// allocator (`Vec`, `Box`, `String`, `BTreeMap`), its own caches, a mempool
/// and `/proc/slabinfo`, with every page accounted for; then, with
/// interrupts on, vmalloc and pkmap over the shared kernel tables: the
/// local APIC through `ioremap_nocache`, VGA text memory through `ioremap`
/// (the direct map), a `vmap`, `/proc/vmallocinfo`, every area given back;
/// the SMP phase (see [`smp_lines`]); and `kmm: boot ok` last.
const BOOT_LINES: [&str; 15] = [
    "kmm: paging enabled",
    "kmm: alias check ok",
    "kmm: buddy ok",
    "kmm: global allocator ok",
    "kmm: slabinfo: slabinfo - version: 2.1",
    "kmm: mempool ok",
    "kmm: slab ok",
    "kmm: interrupts on",
    "kmm: ioremap: local APIC 0xfee00000 at ",
    "kmm: ioremap: VGA text memory 0xb8000 at 0xc00b8000 (the direct map",
    "kmm: vmap: 2 highmem pages",
    "kmm: vmallocinfo: ",
    "kmm: vmalloc stats: areas=0 pages=0 lazy_pages=0",
    "kmm: vmalloc ok",
    "kmm: boot ok",
];

/// The lines of a machine with HIGHMEM (more than 896 MiB of RAM): the
/// HIGHMEM zone checked, an 8 MiB vmalloc of HIGHMEM pages read back
/// through `kmap`, every free HIGHMEM page stamped and verified through
/// `kmap`.
const HIGHMEM_LINES: [&str; 3] = [
    "kmm: highmem zone ok",
    "kmm: vmalloc: 8 MiB from 2048 pages (2048 highmem) checked through kmap",
    "kmm: pkmap: every free HIGHMEM page stamped through kmap and verified",
];

/// The lines of a machine without HIGHMEM (896 MiB of RAM or less): the
/// zone is absent, the vmalloc buffer comes from low memory, pkmap has no
/// page to stamp.
const NO_HIGHMEM_LINES: [&str; 3] = [
    "kmm: no highmem zone",
    "kmm: vmalloc: 8 MiB from 2048 pages (0 highmem) checked through kmap",
    "kmm: pkmap: no HIGHMEM zone; nothing to stamp",
];

/// The SMP phase's lines for `smp` CPUs: the CPUs found (ACPI MADT), all
/// online (the others started with INIT-SIPI-SIPI), every CPU sending
/// cross-CPU calls at once with each run exactly once, each CPU's work line,
/// the shootdown and cross-CPU call counts, the allocations from the timer
/// interrupt, every page back, and `kmm: smp ok`.
fn smp_lines(smp: usize) -> Vec<String> {
    let mut v = vec![
        format!("kmm: smp: {smp} CPU(s) (ACPI MADT)"),
        format!(
            "kmm: smp: {smp} CPUs online ({} started with INIT-SIPI-SIPI)",
            smp - 1
        ),
    ];
    v.push(format!(
        "kmm: smp: concurrent cross-CPU calls: {smp} CPUs sent 25 on_each_cpu calls each at once; every CPU ran each exactly once"
    ));
    v.extend((0..smp).map(|i| format!("kmm: smp: cpu {i}: pages=")));
    v.push(format!("kmm: percpu: {smp} areas of 32 KiB ("));
    v.extend(
        [
            "kmm: smp: percpu: every CPU's SMP_ROUNDS = ",
            "kmm: smp: shootdowns: ",
            "kmm: smp: interrupt-context allocations: ",
            "kmm: smp: vmalloc during the phase: ",
            "kmm: smp: every page back (",
        ]
        .map(String::from),
    );
    v.push(format!("kmm: smp ok ({smp} CPUs)"));
    v
}

/// One boot of the gate: paging mode, RAM, CPUs, extra command line, and
/// whether the machine has HIGHMEM (which decides the expected lines).
#[derive(Debug, Clone, Copy)]
pub struct GateBoot {
    /// The step's name.
    pub name: &'static str,
    /// `2level` or `pae`.
    pub mode: &'static str,
    /// Guest RAM (QEMU's `-m`).
    pub memory: &'static str,
    /// CPUs (QEMU's `-smp`).
    pub smp: usize,
    /// More kernel command line.
    pub extra: &'static str,
    /// The machine has a HIGHMEM zone.
    pub highmem: bool,
}

/// The gate's boots. Expected lines, per boot: the mode line, [`BOOT_LINES`],
/// [`HIGHMEM_LINES`] or [`NO_HIGHMEM_LINES`], and [`smp_lines`] for its CPU
/// count; at least one timer allocation per CPU, and with several CPUs at
/// least one cross-CPU call. The 8 GiB boot caps the SMP phase's work
/// (`smp_work=200`) so it stays short under QEMU's emulation.
pub const BOOTS: [GateBoot; 5] = [
    GateBoot {
        name: "qemu boot, 2-level paging, 2 GiB, 4 CPUs",
        mode: "2level",
        memory: "2G",
        smp: 4,
        extra: "",
        highmem: true,
    },
    GateBoot {
        name: "qemu boot, PAE paging, 2 GiB, 4 CPUs",
        mode: "pae",
        memory: "2G",
        smp: 4,
        extra: "",
        highmem: true,
    },
    GateBoot {
        name: "qemu boot, 2-level paging, 2 GiB, 1 CPU",
        mode: "2level",
        memory: "2G",
        smp: 1,
        extra: "",
        highmem: true,
    },
    GateBoot {
        name: "qemu boot, 2-level paging, 16 MiB (ZONE_DMA only), 1 CPU",
        mode: "2level",
        memory: "16M",
        smp: 1,
        extra: "",
        highmem: false,
    },
    GateBoot {
        name: "qemu boot, PAE paging, 8 GiB, 4 CPUs, capped work",
        mode: "pae",
        memory: "8G",
        smp: 4,
        extra: "smp_work=200",
        highmem: true,
    },
];

/// The gate boot of `mode`, `memory` and `smp` (for `cargo xtask qemu
/// --check`).
pub fn find_boot(mode: &str, memory: &str, smp: usize) -> Result<&'static GateBoot> {
    BOOTS
        .iter()
        .find(|b| b.mode == mode && b.memory == memory && b.smp == smp)
        .ok_or_else(|| {
            let list: Vec<String> = BOOTS
                .iter()
                .map(|b| format!("{} {} smp {}", b.mode, b.memory, b.smp))
                .collect();
            format!(
                "qemu --check: no gate boot is {mode} {memory} smp {smp} (the gate boots: {})",
                list.join("; ")
            )
        })
}

/// `cargo xtask qemu --check`: boots the gate's configuration of `o`'s
/// paging mode, RAM and CPU count and checks it ([`boot_config`]); with
/// `--minimal`, the gate's minimal-kernel boot of `o`'s RAM
/// ([`boot_minimal`]).
pub fn check_boot(o: &qemu::Options<'_>) -> Result {
    if o.kernel == Kernel::Minimal {
        let b = find_minimal_boot(o.machine.memory.unwrap_or("2G"))?;
        boot_minimal(b)?;
        eprintln!(
            "xtask: {}: every expected line, exit code {EXIT_SUCCESS}",
            b.name
        );
        return Ok(());
    }
    let mode = if o.pae { "pae" } else { "2level" };
    let b = find_boot(mode, o.machine.memory.unwrap_or("2G"), o.machine.smp)?;
    boot_config(b)?;
    eprintln!(
        "xtask: {}: every expected line, exit code {EXIT_SUCCESS}",
        b.name
    );
    Ok(())
}

/// The number after `key` in the rest of the line starting with `prefix`
/// (right after the prefix when `key` is empty).
fn number_after(b: &Boot, prefix: &str, key: &str) -> Option<usize> {
    let rest = b.serial.lines().find_map(|l| l.strip_prefix(prefix))?;
    let rest = &rest[rest.find(key)? + key.len()..];
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

/// Boots the kernel as `g` says and checks its lines and exit code (also
/// `cargo xtask qemu --check`).
pub fn boot_config(g: &GateBoot) -> Result {
    let elf = Kernel::Example.build()?;
    let mut append = format!("paging={}", g.mode);
    if !g.extra.is_empty() {
        append.push(' ');
        append.push_str(g.extra);
    }
    let machine = qemu::Machine {
        memory: Some(g.memory),
        smp: g.smp,
    };
    let started = std::time::Instant::now();
    let b = qemu::boot_on(&elf, &append, machine)?;
    let secs = started.elapsed().as_secs_f64();
    let name = g.name;
    let mode_line = format!("kmm: paging={}", g.mode);
    let zone_lines = if g.highmem {
        HIGHMEM_LINES
    } else {
        NO_HIGHMEM_LINES
    };
    let smp = smp_lines(g.smp);
    let missing: Vec<&str> = std::iter::once(mode_line.as_str())
        .chain(BOOT_LINES)
        .chain(zone_lines)
        .chain(smp.iter().map(String::as_str))
        .filter(|l| !b.has_line(l))
        .collect();
    if b.code != Some(EXIT_SUCCESS) {
        return Err(format!(
            "{name}: {} (want exit code {EXIT_SUCCESS})",
            b.ending()
        ));
    }
    if !missing.is_empty() {
        return Err(format!("{name}: missing serial lines {missing:?}"));
    }
    if b.has_line("PANIC:") {
        return Err(format!("{name}: printed a PANIC line"));
    }
    let unexpected = if g.highmem {
        NO_HIGHMEM_LINES
    } else {
        HIGHMEM_LINES
    };
    if let Some(l) = unexpected.iter().find(|l| b.has_line(l)) {
        return Err(format!("{name}: printed {l:?}"));
    }
    let ticks = number_after(&b, "kmm: smp: interrupt-context allocations: ", "");
    if ticks.is_none_or(|t| t < g.smp) {
        return Err(format!(
            "{name}: {ticks:?} timer allocations in interrupt context, want at least one per CPU"
        ));
    }
    let calls = number_after(&b, "kmm: smp: shootdowns: ", "cross-CPU calls=");
    if g.smp > 1 && calls.is_none_or(|c| c == 0) {
        return Err(format!(
            "{name}: no cross-CPU call (shootdown) with {} CPUs",
            g.smp
        ));
    }
    let last = b.serial.lines().rfind(|l| !l.trim().is_empty());
    if !last.is_some_and(|l| l.starts_with("kmm: boot ok")) {
        return Err(format!(
            "{name}: `kmm: boot ok` is not the last line (last: {last:?})"
        ));
    }
    eprintln!("xtask: {name}: booted and checked in {secs:.1}s");
    Ok(())
}

/// One boot of the minimal kernel (`examples/minimal-kernel`: 2-level
/// paging, one CPU) in the gate.
#[derive(Debug, Clone, Copy)]
pub struct MinimalBoot {
    /// The step's name.
    pub name: &'static str,
    /// Guest RAM (QEMU's `-m`).
    pub memory: &'static str,
    /// The machine has a HIGHMEM zone (more than 896 MiB of RAM).
    pub highmem: bool,
}

/// The minimal kernel's boots: all RAM in the direct map, and HIGHMEM
/// above it (where the kernel maps a page with `kmap_local_page`).
pub const MINIMAL_BOOTS: [MinimalBoot; 2] = [
    MinimalBoot {
        name: "qemu boot, minimal kernel, 2-level paging, 512 MiB, 1 CPU",
        memory: "512M",
        highmem: false,
    },
    MinimalBoot {
        name: "qemu boot, minimal kernel, 2-level paging, 2 GiB (HIGHMEM), 1 CPU",
        memory: "2G",
        highmem: true,
    },
];

/// The gate's minimal-kernel boot of `memory` (for `cargo xtask qemu
/// --minimal --check`).
pub fn find_minimal_boot(memory: &str) -> Result<&'static MinimalBoot> {
    MINIMAL_BOOTS
        .iter()
        .find(|b| b.memory == memory)
        .ok_or_else(|| {
            let list: Vec<&str> = MINIMAL_BOOTS.iter().map(|b| b.memory).collect();
            format!(
                "qemu --minimal --check: no gate boot has {memory} (the gate boots: {})",
                list.join(", ")
            )
        })
}

/// The lines every minimal-kernel boot prints: one per allocator it uses
/// (`alloc` through the `GlobalHeap`, a `Vec` grown past 4 MiB into
/// vmalloc, `alloc_pages`, `kmalloc`, `alloc_percpu`), then `show_mem`:
/// Linux's boot lines about memory and the `/proc` files under their
/// headings.
const MINIMAL_LINES: [&str; 12] = [
    "alloc: Box 42 at 0x",
    "vmalloc: a Vec of 5 MiB at 0x",
    "alloc_pages: an order-2 block in zone ",
    "kmalloc: 100 bytes at 0x",
    "alloc_percpu: CPU 0's u64 at 0x",
    "Zone PFN ranges:",
    "Memory: ",
    "/proc/buddyinfo:",
    "/proc/zoneinfo:",
    "/proc/slabinfo:",
    "/proc/vmallocinfo:",
    "minimal: ok",
];

/// The line of a minimal-kernel boot on a machine with HIGHMEM: a HIGHMEM
/// page written and read back through `kmap_local_page`.
const MINIMAL_KMAP_LINE: &str = "kmap_local_page: a HIGHMEM page at 0x";

/// Builds and boots the minimal kernel as `g` says and checks it
/// ([`check_minimal`]).
pub fn boot_minimal(g: &MinimalBoot) -> Result {
    let elf = Kernel::Minimal.build()?;
    let machine = qemu::Machine {
        memory: Some(g.memory),
        smp: 1,
    };
    let started = std::time::Instant::now();
    let b = qemu::boot_on(&elf, "", machine)?;
    let secs = started.elapsed().as_secs_f64();
    check_minimal(g, &b)?;
    eprintln!("xtask: {}: booted and checked in {secs:.1}s", g.name);
    Ok(())
}

/// Checks a minimal-kernel boot: exit code 33, no panic, every line of
/// [`MINIMAL_LINES`], a non-zero "…MB HIGHMEM available." and the
/// `kmap_local_page` line exactly when `g` has HIGHMEM, and `minimal: ok`
/// last.
fn check_minimal(g: &MinimalBoot, b: &Boot) -> Result {
    let name = g.name;
    if b.code != Some(EXIT_SUCCESS) {
        return Err(format!(
            "{name}: {} (want exit code {EXIT_SUCCESS})",
            b.ending()
        ));
    }
    if b.has_line("PANIC:") {
        return Err(format!("{name}: printed a PANIC line"));
    }
    let missing: Vec<&str> = MINIMAL_LINES
        .into_iter()
        .filter(|l| !b.has_line(l))
        .collect();
    if !missing.is_empty() {
        return Err(format!("{name}: missing serial lines {missing:?}"));
    }
    let highmem_mb = b.serial.lines().find_map(|l| {
        let mb = l.strip_suffix("MB HIGHMEM available.")?;
        mb.parse::<u64>().ok()
    });
    match highmem_mb {
        None => return Err(format!("{name}: no `…MB HIGHMEM available.` line")),
        Some(mb) if (mb > 0) != g.highmem => {
            return Err(format!(
                "{name}: {mb}MB HIGHMEM available, want {}",
                if g.highmem { "some" } else { "none" }
            ));
        }
        Some(_) => {}
    }
    if b.has_line(MINIMAL_KMAP_LINE) != g.highmem {
        return Err(format!(
            "{name}: the kmap_local_page line is {}",
            if g.highmem {
                "missing"
            } else {
                "there without HIGHMEM"
            }
        ));
    }
    let last = b.serial.lines().rfind(|l| !l.trim().is_empty());
    if last != Some("minimal: ok") {
        return Err(format!(
            "{name}: `minimal: ok` is not the last line (last: {last:?})"
        ));
    }
    Ok(())
}

/// True if `line` is `PANIC: <message> at <file>:<line>`.
fn is_panic_line(line: &str) -> bool {
    let Some(rest) = line.strip_prefix("PANIC: ") else {
        return false;
    };
    let Some((_, location)) = rest.rsplit_once(" at ") else {
        return false;
    };
    match location.rsplit_once(':') {
        Some((file, n)) => {
            !file.is_empty() && !n.is_empty() && n.bytes().all(|c| c.is_ascii_digit())
        }
        None => false,
    }
}

/// Boots with `test=panic` and checks the panic line and the failure code.
fn boot_panic() -> Result {
    let elf = Kernel::Example.build()?;
    let b: Boot = qemu::boot(&elf, "paging=2level test=panic")?;
    if !b.serial.lines().any(is_panic_line) {
        return Err("test=panic boot: no `PANIC: <message> at <file>:<line>` line".into());
    }
    if b.code != Some(EXIT_FAILURE) {
        return Err(format!(
            "test=panic boot: {} (want exit code {EXIT_FAILURE})",
            b.ending()
        ));
    }
    if b.has_line("kmm: boot ok") {
        return Err("test=panic boot: printed `kmm: boot ok`".into());
    }
    Ok(())
}

/// The gate's steps, in order.
fn steps() -> Vec<Step> {
    let root = root();
    let root_for_doc = root.clone();
    let kernel = Kernel::Example.dir();
    let minimal = Kernel::Minimal.dir();
    vec![
        step("setup", setup::run),
        cargo("rustfmt (workspace)", &root, &["fmt", "--all", "--check"]),
        cargo("rustfmt (example kernel)", &kernel, &["fmt", "--check"]),
        cargo("rustfmt (minimal kernel)", &minimal, &["fmt", "--check"]),
        step("linux map: every item named exists", crate::linux_map::run),
        step("rustfmt (fuzz targets, nightly)", fuzz::fmt_check),
        cargo(
            "clippy (workspace, host, all targets)",
            &root,
            &[
                "clippy",
                "--workspace",
                "--all-targets",
                "--",
                "-D",
                "warnings",
            ],
        ),
        package(),
        cargo(
            "clippy (example kernel, i686)",
            &kernel,
            &[
                "clippy",
                "--release",
                "--target",
                KERNEL_TARGET,
                "--",
                "-D",
                "warnings",
            ],
        ),
        cargo(
            "clippy (minimal kernel, i686)",
            &minimal,
            &[
                "clippy",
                "--release",
                "--target",
                KERNEL_TARGET,
                "--",
                "-D",
                "warnings",
            ],
        ),
        cargo_on(
            "clippy (library crates for i686)",
            &root,
            "clippy",
            &LIB_CRATES,
            &["--target", KERNEL_TARGET, "--", "-D", "warnings"],
        ),
        step("clippy (fuzz targets, nightly)", fuzz::clippy),
        cargo("cargo test (workspace)", &root, &["test", "--workspace"]),
        cargo_on(
            "cargo test (library crates and the mock as a 32-bit i686 host)",
            &root,
            "test",
            &crate::miri::CRATES,
            // One test at a time: each mock machine reserves its 1 GiB kernel
            // window, and a 32-bit process has room for few at once.
            &["--target", HOST_32, "--", "--test-threads=1"],
        ),
        cargo_on(
            "cargo test (kmm-slab with debug as a 32-bit i686 host)",
            &root,
            "test",
            &["kmm-slab"],
            &[
                "--target",
                HOST_32,
                "--features",
                "debug",
                "--",
                "--test-threads=1",
            ],
        ),
        cargo(
            "clippy (kmm-slab with the debug feature)",
            &root,
            &[
                "clippy",
                "-p",
                "kmm-slab",
                "--features",
                "debug",
                "--all-targets",
                "--",
                "-D",
                "warnings",
            ],
        ),
        cargo(
            "cargo test (kmm-slab with the debug feature)",
            &root,
            &["test", "-p", "kmm-slab", "--features", "debug"],
        ),
        cargo(
            "clippy (kmm-slab with the hardened feature)",
            &root,
            &[
                "clippy",
                "-p",
                "kmm-slab",
                "--features",
                "hardened",
                "--all-targets",
                "--",
                "-D",
                "warnings",
            ],
        ),
        cargo(
            "cargo test (kmm-slab with the hardened feature)",
            &root,
            &["test", "-p", "kmm-slab", "--features", "hardened"],
        ),
        cargo(
            "clippy (kmm with every feature but hw, host)",
            &root,
            &[
                "clippy",
                "-p",
                "kmm",
                "--features",
                KMM_HOST_FEATURES,
                "--all-targets",
                "--",
                "-D",
                "warnings",
            ],
        ),
        cargo(
            "clippy (kmm with hw, multiboot and mem-symbols, i686)",
            &root,
            &[
                "clippy",
                "-p",
                "kmm",
                "--features",
                "hw,multiboot,mem-symbols",
                "--target",
                KERNEL_TARGET,
                "--",
                "-D",
                "warnings",
            ],
        ),
        cargo(
            "cargo test (kmm with every feature but hw)",
            &root,
            &["test", "-p", "kmm", "--features", KMM_HOST_FEATURES],
        ),
        cargo_on(
            "cargo test (kmm with multiboot as a 32-bit i686 host)",
            &root,
            "test",
            &["kmm"],
            &[
                "--target",
                HOST_32,
                "--features",
                "multiboot",
                "--",
                "--test-threads=1",
            ],
        ),
        cargo(
            "walkthrough (cargo run -p kmm --example walkthrough)",
            &root,
            &["run", "-q", "-p", "kmm", "--example", "walkthrough"],
        ),
        step("rustdoc (workspace, warnings denied)", move || {
            let mut c = command(&root_for_doc, "cargo", ["doc", "--workspace", "--no-deps"]);
            c.env("RUSTDOCFLAGS", "-D warnings");
            cmd::run(&mut c)
        }),
    ]
    .into_iter()
    .chain([step("fuzz build (every target)", fuzz::build)])
    .chain(fuzz::TARGETS.map(|t| {
        step(
            format!("fuzz run {t} ({} s, empty corpus)", fuzz::GATE_SECONDS),
            move || fuzz::gate_run(t),
        )
    }))
    .chain([step(
        format!(
            "miri ({} tests on the mock's software backing, one case each)",
            miri::GATE_TESTS.len()
        ),
        miri::gate,
    )])
    .chain(BOOTS.iter().map(|g| step(g.name, move || boot_config(g))))
    .chain([step("qemu boot, panic path (test=panic)", boot_panic)])
    .chain(
        MINIMAL_BOOTS
            .iter()
            .map(|g| step(g.name, move || boot_minimal(g))),
    )
    .collect()
}

/// What `cargo xtask test` was asked: the words of `--only` (empty: every
/// step) and whether to list the steps rather than run them.
#[derive(Debug, Default, PartialEq, Eq)]
struct Options {
    only: Vec<String>,
    list: bool,
}

/// Reads `cargo xtask test`'s arguments: `--only WORD` (repeatable), `--list`.
fn parse(args: &[String]) -> Result<Options> {
    let mut o = Options::default();
    let mut args = args.iter();
    while let Some(a) = args.next() {
        match a.as_str() {
            "--only" => match args.next() {
                Some(w) => o.only.push(w.to_lowercase()),
                None => return Err("test: --only needs a WORD".into()),
            },
            "--list" => o.list = true,
            other => {
                return Err(format!(
                    "test: unknown argument {other:?} (usage: test [--only WORD]... [--list])"
                ));
            }
        }
    }
    Ok(o)
}

/// True if the step called `name` runs under `only`: every step when it is
/// empty, otherwise setup and the steps whose names contain one of its words
/// (case-insensitive).
fn selected(name: &str, only: &[String]) -> bool {
    let name = name.to_lowercase();
    only.is_empty() || name == "setup" || only.iter().any(|w| name.contains(w.as_str()))
}

/// `d` as `1m 23.4s` (or `23.4s`).
fn elapsed(d: Duration) -> String {
    let s = d.as_secs_f64();
    if s < 60.0 {
        format!("{s:.1}s")
    } else {
        format!("{}m {:04.1}s", (s / 60.0) as u64, s % 60.0)
    }
}

/// Runs the gate (or the steps `args` choose, see [`parse`]).
pub fn run(args: &[String]) -> Result {
    let o = parse(args)?;
    let steps: Vec<Step> = steps()
        .into_iter()
        .filter(|s| selected(&s.name, &o.only))
        .collect();
    if o.list {
        for s in &steps {
            println!("{}", s.name);
        }
        return Ok(());
    }
    if steps.iter().all(|s| s.name == "setup") {
        return Err(format!("test: no step matches --only {:?}", o.only));
    }
    let total = steps.len();
    let (mut passed, mut failed) = (0, 0);
    let mut error = None;
    let mut times = Vec::new();
    let started = Instant::now();
    for (i, s) in steps.iter().enumerate() {
        eprintln!("\nxtask: [{}/{total}] {}", i + 1, s.name);
        let t = Instant::now();
        let result = (s.run)();
        let took = elapsed(t.elapsed());
        times.push((s.name.as_str(), took.clone()));
        match result {
            Ok(()) => {
                passed += 1;
                eprintln!("xtask: [{}/{total}] {}: ok in {took}", i + 1, s.name);
            }
            Err(e) => {
                failed += 1;
                eprintln!(
                    "xtask: [{}/{total}] {}: FAILED in {took}: {e}",
                    i + 1,
                    s.name
                );
                error = Some(format!("gate step {:?} failed: {e}", s.name));
                break;
            }
        }
    }
    eprintln!("\nxtask: step times:");
    for (name, took) in &times {
        eprintln!("xtask: {took:>10}  {name}");
    }
    if failed > 0 {
        eprintln!(
            "xtask: stopped at the first failure; {} step(s) not run",
            total - passed - failed
        );
    }
    println!(
        "xtask: {passed} passed, {failed} failed in {}",
        elapsed(started.elapsed())
    );
    match error {
        None => Ok(()),
        Some(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::{
        BOOTS, MINIMAL_BOOTS, Options, UNPUBLISHED, check_minimal, elapsed, find_minimal_boot,
        is_panic_line, parse, selected, steps,
    };
    use crate::qemu::{Boot, EXIT_FAILURE, EXIT_SUCCESS};
    use crate::root;

    /// What the minimal kernel prints (cut short), with or without HIGHMEM.
    fn minimal_serial(highmem: bool) -> String {
        let mut s = String::from(
            "alloc: Box 42 at 0xc1e1a8a0, String \"kmm minimal\", Vec [0, 1, 2]..\n\
             vmalloc: a Vec of 5 MiB at 0xf8800000 (kvmalloc)\n\
             alloc_pages: an order-2 block in zone Normal\n\
             kmalloc: 100 bytes at 0xc1e1bf00, ksize 128\n",
        );
        if highmem {
            s.push_str("kmap_local_page: a HIGHMEM page at 0xffffb000, read back 0x6b6d6d\n");
        }
        s.push_str("alloc_percpu: CPU 0's u64 at 0xc1e10000\n");
        s.push_str(if highmem {
            "1151MB HIGHMEM available.\n896MB LOWMEM available.\n"
        } else {
            "0MB HIGHMEM available.\n511MB LOWMEM available.\n"
        });
        s.push_str(
            "Zone PFN ranges:\n  DMA      0x00000000 -> 0x00001000\n\
             Memory: 2081840k/2096636k available (408k kernel code, 14796k reserved, 0k data, 0k init, 1179520k highmem)\n\
             /proc/buddyinfo:\nNode 0, zone      DMA      1\n\
             /proc/zoneinfo:\n/proc/slabinfo:\nslabinfo - version: 2.1\n\
             /proc/vmallocinfo:\nminimal: ok\n",
        );
        s
    }

    fn boot(code: i32, serial: String) -> Boot {
        Boot {
            code: Some(code),
            timed_out: false,
            serial,
        }
    }

    #[test]
    fn minimal_boot_checks() {
        let [low, high] = &MINIMAL_BOOTS;
        assert!(!low.highmem && high.highmem);
        assert_eq!(find_minimal_boot("2G").unwrap().memory, "2G");
        assert!(find_minimal_boot("1G").is_err());
        for g in [low, high] {
            let good = minimal_serial(g.highmem);
            assert_eq!(check_minimal(g, &boot(EXIT_SUCCESS, good.clone())), Ok(()));
            assert!(check_minimal(g, &boot(EXIT_FAILURE, good.clone())).is_err());
            let other = minimal_serial(!g.highmem);
            assert!(
                check_minimal(g, &boot(EXIT_SUCCESS, other)).is_err(),
                "HIGHMEM mismatch"
            );
            let cut = good.replace("/proc/slabinfo:\n", "");
            assert!(
                check_minimal(g, &boot(EXIT_SUCCESS, cut)).is_err(),
                "a heading missing"
            );
            let late = format!("{good}PANIC: panicked at src/main.rs:1:1:\nboom\n");
            assert!(
                check_minimal(g, &boot(EXIT_SUCCESS, late)).is_err(),
                "not last / panic"
            );
        }
    }

    fn args(v: &[&str]) -> Vec<String> {
        v.iter().map(|a| a.to_string()).collect()
    }

    #[test]
    fn options() {
        assert_eq!(parse(&[]), Ok(Options::default()));
        let o = parse(&args(&["--only", "Fuzz", "--only", "miri", "--list"])).unwrap();
        assert_eq!(o.only, ["fuzz", "miri"]);
        assert!(o.list);
        assert!(parse(&args(&["--only"])).is_err());
        assert!(parse(&args(&["fuzz"])).is_err());
    }

    /// The names of the steps `--only only` runs.
    fn chosen(only: &[&str]) -> Vec<String> {
        let only = args(only);
        steps()
            .into_iter()
            .map(|s| s.name)
            .filter(|n| selected(n, &only))
            .collect()
    }

    #[test]
    fn only_picks_setup_and_matching_steps() {
        assert_eq!(chosen(&[]).len(), steps().len());
        let qemu = chosen(&["qemu"]);
        assert_eq!(qemu[0], "setup");
        // The boots, the panic path and the minimal kernel.
        assert_eq!(
            qemu.len(),
            1 + BOOTS.len() + 1 + MINIMAL_BOOTS.len(),
            "{qemu:?}"
        );
        assert!(qemu[1..].iter().all(|n| n.contains("qemu")));
        let fuzz = chosen(&["fuzz"]);
        // fmt, clippy, the build, one run per target.
        assert_eq!(fuzz.len(), 1 + 3 + crate::fuzz::TARGETS.len(), "{fuzz:?}");
        assert!(fuzz[1..].iter().all(|n| n.contains("fuzz")));
        assert_eq!(chosen(&["miri", "rustfmt"]).len(), 1 + 1 + 4);
    }

    #[test]
    fn times() {
        assert_eq!(elapsed(Duration::from_millis(1234)), "1.2s");
        assert_eq!(elapsed(Duration::from_millis(83_400)), "1m 23.4s");
        assert_eq!(elapsed(Duration::from_millis(3_605_000)), "60m 05.0s");
    }

    #[test]
    fn panic_line() {
        assert!(is_panic_line("PANIC: boom at src/main.rs:141"));
        assert!(is_panic_line("PANIC: a at b at src/x.rs:1"));
        assert!(!is_panic_line("PANIC: boom"));
        assert!(!is_panic_line("PANIC: boom at src/main.rs:"));
        assert!(!is_panic_line("kmm: PANIC: boom at a.rs:1"));
    }

    /// The value of `key = "..."` on a line of `toml` (the first such line).
    fn string_value<'a>(toml: &'a str, key: &str) -> Option<&'a str> {
        toml.lines().find_map(|l| {
            let rest = l.trim().strip_prefix(key)?.trim_start().strip_prefix('=')?;
            rest.trim().strip_prefix('"')?.strip_suffix('"')
        })
    }

    /// The gate packages every workspace member but [`UNPUBLISHED`], and
    /// those are exactly the members marked `publish = false`.
    #[test]
    fn unpublished_members_are_publish_false() {
        let root = root();
        let workspace = std::fs::read_to_string(root.join("Cargo.toml")).unwrap();
        // `members = [...]`, on one line or several, comments dropped.
        let uncommented: String = workspace
            .lines()
            .map(|l| l.split('#').next().unwrap_or(""))
            .collect::<Vec<_>>()
            .join("\n");
        let members = uncommented
            .split_once("members = [")
            .and_then(|(_, rest)| rest.split_once(']'))
            .map(|(list, _)| list)
            .expect("`members = [...]` in the workspace Cargo.toml");
        let members = members
            .split(',')
            .map(|m| m.trim().trim_matches('"'))
            .filter(|m| !m.is_empty());
        let mut unpublished = Vec::new();
        for member in members {
            let manifest = std::fs::read_to_string(root.join(member).join("Cargo.toml")).unwrap();
            let name = string_value(&manifest, "name").unwrap();
            if manifest.lines().any(|l| l.trim() == "publish = false") {
                unpublished.push(name.to_string());
            }
        }
        unpublished.sort();
        let mut want: Vec<&str> = UNPUBLISHED.to_vec();
        want.sort_unstable();
        assert_eq!(unpublished, want);
    }
}
