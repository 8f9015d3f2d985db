//! Building the example kernels and booting them in `qemu-system-i386`.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crate::cmd::{self, Result, command};
use crate::root;
use crate::setup::{KERNEL_TARGET, QEMU};

/// QEMU's exit status when the kernel writes 0x10 to the debug-exit port.
pub const EXIT_SUCCESS: i32 = 33;
/// QEMU's exit status when the kernel writes 0x11 (a failed check or a panic).
pub const EXIT_FAILURE: i32 = 35;
/// How long a boot may take before QEMU is killed, unless `XTASK_QEMU_TIMEOUT`
/// gives another number of seconds.
pub const TIMEOUT: Duration = Duration::from_secs(120);

/// The boot timeout: [`TIMEOUT`], or `XTASK_QEMU_TIMEOUT` seconds.
pub fn timeout() -> Duration {
    std::env::var("XTASK_QEMU_TIMEOUT")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .map_or(TIMEOUT, Duration::from_secs)
}
/// Guest RAM: 2 GiB shows highmem above the 896 MiB direct map; 1 GiB is the
/// fallback when the host cannot give QEMU that much.
const MEMORY: [&str; 2] = ["2G", "1G"];
/// CPUs a boot gets unless told otherwise (`--smp N`).
pub const DEFAULT_SMP: usize = 4;

/// The machine QEMU emulates for one boot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Machine<'a> {
    /// Guest RAM (QEMU's `-m`); `None`: 2 GiB, or 1 GiB if the host
    /// cannot give 2.
    pub memory: Option<&'a str>,
    /// CPUs (QEMU's `-smp`).
    pub smp: usize,
}

impl Default for Machine<'_> {
    fn default() -> Self {
        Machine {
            memory: None,
            smp: DEFAULT_SMP,
        }
    }
}

/// The kernels in `examples/`, each a workspace of its own built for
/// [`KERNEL_TARGET`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kernel {
    /// `examples/i386-kernel`: the test kernel, every crate exercised
    /// (2-level or PAE, SMP).
    Example,
    /// `examples/minimal-kernel`: the kernel a user copies, kmm up through
    /// the umbrella crate (2-level paging, one CPU).
    Minimal,
}

impl Kernel {
    /// The package name (and binary name).
    pub const fn package(self) -> &'static str {
        match self {
            Kernel::Example => "kmm-example-i386-kernel",
            Kernel::Minimal => "kmm-example-minimal-kernel",
        }
    }

    /// The directory of the kernel's workspace.
    pub fn dir(self) -> PathBuf {
        root().join(match self {
            Kernel::Example => "examples/i386-kernel",
            Kernel::Minimal => "examples/minimal-kernel",
        })
    }

    /// Builds the kernel (release, i686) and returns the path of its ELF file.
    pub fn build(self) -> Result<PathBuf> {
        let dir = self.dir();
        cmd::run(&mut command(
            &dir,
            "cargo",
            ["build", "--release", "--target", KERNEL_TARGET],
        ))?;
        let target_dir = match std::env::var_os("CARGO_TARGET_DIR") {
            Some(t) => dir.join(t),
            None => dir.join("target"),
        };
        let elf = target_dir
            .join(KERNEL_TARGET)
            .join("release")
            .join(self.package());
        if elf.is_file() {
            Ok(elf)
        } else {
            Err(format!(
                "the kernel built, but {} does not exist",
                elf.display()
            ))
        }
    }
}

/// What one boot did.
#[derive(Debug)]
pub struct Boot {
    /// QEMU's exit status; `None` if it was killed (timeout) or died by a signal.
    pub code: Option<i32>,
    /// True if the timeout killed QEMU.
    pub timed_out: bool,
    /// Everything the kernel wrote to the serial port, `\r` removed.
    pub serial: String,
}

impl Boot {
    /// True if some serial line starts with `prefix`.
    pub fn has_line(&self, prefix: &str) -> bool {
        self.serial.lines().any(|l| l.starts_with(prefix))
    }

    /// A one-line description of how QEMU ended.
    pub fn ending(&self) -> String {
        match self.code {
            _ if self.timed_out => format!("timed out after {}s, QEMU killed", timeout().as_secs()),
            Some(EXIT_SUCCESS) => format!("exit code {EXIT_SUCCESS} (kernel success)"),
            Some(EXIT_FAILURE) => format!("exit code {EXIT_FAILURE} (kernel failure/panic)"),
            Some(c) => {
                format!("exit code {c} (not from the kernel: a triple fault or a QEMU error?)")
            }
            None => "killed by a signal".to_string(),
        }
    }
}

/// Copies everything from `from` to `to` as it arrives and returns it.
fn tee(
    mut from: impl Read + Send + 'static,
    mut to: impl Write + Send + 'static,
) -> JoinHandle<Vec<u8>> {
    thread::spawn(move || {
        let mut all = Vec::new();
        let mut buf = [0u8; 4096];
        while let Ok(n) = from.read(&mut buf) {
            if n == 0 {
                break;
            }
            all.extend_from_slice(&buf[..n]);
            let _ = to.write_all(&buf[..n]);
            let _ = to.flush();
        }
        all
    })
}

/// Waits for `child` until `deadline`, then kills it. Returns the exit code and
/// whether it was killed.
fn wait_until(child: &mut Child, deadline: Instant) -> Result<(Option<i32>, bool)> {
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Ok((status.code(), false)),
            Ok(None) if Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                return Ok((None, true));
            }
            Ok(None) => thread::sleep(Duration::from_millis(50)),
            Err(e) => return Err(format!("waiting for {QEMU}: {e}")),
        }
    }
}

fn boot_once(elf: &Path, append: &str, memory: &str, smp: usize) -> Result<(Boot, String)> {
    let mut c = Command::new(QEMU);
    c.args(["-m", memory, "-smp", &smp.to_string(), "-kernel"])
        .arg(elf)
        .args(["-append", append])
        .args(["-display", "none", "-serial", "stdio", "-no-reboot"])
        .args(["-device", "isa-debug-exit,iobase=0xf4,iosize=0x04"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    eprintln!("$ {}", cmd::describe(&c));
    let mut child = c.spawn().map_err(|e| format!("cannot start {QEMU}: {e}"))?;
    let out = tee(child.stdout.take().expect("piped"), std::io::stdout());
    let err = tee(child.stderr.take().expect("piped"), std::io::stderr());
    let (code, timed_out) = wait_until(&mut child, Instant::now() + timeout())?;
    let serial = String::from_utf8_lossy(&out.join().unwrap_or_default()).replace('\r', "");
    let stderr = String::from_utf8_lossy(&err.join().unwrap_or_default()).into_owned();
    Ok((
        Boot {
            code,
            timed_out,
            serial,
        },
        stderr,
    ))
}

/// Boots `elf` on the default machine (2 GiB, [`DEFAULT_SMP`] CPUs); see
/// [`boot_on`].
pub fn boot(elf: &Path, append: &str) -> Result<Boot> {
    boot_on(elf, append, Machine::default())
}

/// Boots `elf` on `machine` with kernel command line `append`, streaming the
/// serial output to the terminal. Without a memory size, retries with less
/// RAM if QEMU cannot allocate 2 GiB.
pub fn boot_on(elf: &Path, append: &str, machine: Machine<'_>) -> Result<Boot> {
    let sizes: &[&str] = match &machine.memory {
        Some(m) => std::slice::from_ref(m),
        None => &MEMORY,
    };
    for (i, memory) in sizes.iter().enumerate() {
        let (boot, stderr) = boot_once(elf, append, memory, machine.smp)?;
        let no_memory = boot.code == Some(1)
            && boot.serial.trim().is_empty()
            && stderr.to_ascii_lowercase().contains("memory");
        if no_memory && i + 1 < sizes.len() {
            eprintln!("xtask: {QEMU} could not get {memory} of RAM; retrying with less");
            continue;
        }
        return Ok(boot);
    }
    unreachable!("the last memory size always returns")
}

/// The usage line of `cargo xtask qemu`.
const USAGE: &str = "usage: qemu [--pae] [--smp N] [--memory SIZE] [--check] [-- ARGS...] \
                     | qemu --minimal [--memory SIZE] [--check]";

/// What `cargo xtask qemu` was asked for ([`parse`]).
#[derive(Debug)]
pub struct Options<'a> {
    /// The kernel to boot.
    pub kernel: Kernel,
    /// PAE paging (else 2-level).
    pub pae: bool,
    /// Boot the gate's configuration of this mode, RAM and CPU count and
    /// check its lines (`gate::check_boot`).
    pub check: bool,
    /// RAM and CPUs.
    pub machine: Machine<'a>,
    /// More kernel command line.
    pub extra: Vec<&'a str>,
}

/// Parses `cargo xtask qemu [--pae] [--smp N] [--memory SIZE] [--check]
/// [-- ARGS...]`: `N` CPUs (default [`DEFAULT_SMP`]) and `SIZE` of RAM
/// (QEMU's `-m`; default 2 GiB). With `--check`, the boot is the gate's
/// boot of the same paging mode, RAM and CPU count (see `gate::BOOTS`): its
/// serial lines are checked too (no extra ARGS then).
///
/// With `--minimal`, the kernel is `examples/minimal-kernel` on one CPU
/// (2-level paging, no command line: `--pae`, `--smp` and ARGS are
/// refused); `--check` boots the gate's minimal-kernel boot of that RAM
/// (see `gate::MINIMAL_BOOTS`).
pub fn parse(args: &[String]) -> Result<Options<'_>> {
    let mut kernel = Kernel::Example;
    let mut pae = false;
    let mut check = false;
    let mut smp = None;
    let mut machine = Machine::default();
    let mut extra: Vec<&str> = Vec::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--minimal" => kernel = Kernel::Minimal,
            "--pae" => pae = true,
            "--check" => check = true,
            "--smp" => {
                smp = Some(
                    it.next()
                        .and_then(|n| n.parse().ok())
                        .filter(|&n| (1..=8).contains(&n))
                        .ok_or_else(|| {
                            format!("qemu: --smp wants a CPU count from 1 to 8 ({USAGE})")
                        })?,
                )
            }
            "--memory" => {
                machine.memory = Some(
                    it.next()
                        .map(String::as_str)
                        .ok_or_else(|| format!("qemu: --memory wants a size ({USAGE})"))?,
                )
            }
            "--" => extra.extend(it.by_ref().map(String::as_str)),
            other => return Err(format!("qemu: unknown option {other:?} ({USAGE})")),
        }
    }
    if check && !extra.is_empty() {
        return Err("qemu: --check boots with the gate's command line: no ARGS".into());
    }
    if kernel == Kernel::Minimal {
        if pae || smp.is_some() || !extra.is_empty() {
            return Err(format!(
                "qemu: the minimal kernel runs 2-level paging on one CPU and reads no \
                 command line: no --pae, --smp or ARGS ({USAGE})"
            ));
        }
        smp = Some(1);
    }
    machine.smp = smp.unwrap_or(DEFAULT_SMP);
    Ok(Options {
        kernel,
        pae,
        check,
        machine,
        extra,
    })
}

/// Builds the kernel and boots it as `o` says (without `--check`).
pub fn run(o: &Options<'_>) -> Result {
    let (pae, machine) = (o.pae, o.machine);
    let extra = o.extra.iter().copied();
    let elf = o.kernel.build()?;
    let mut append = match o.kernel {
        Kernel::Example => String::from(if pae { "paging=pae" } else { "paging=2level" }),
        Kernel::Minimal => String::new(),
    };
    for e in extra {
        append.push(' ');
        append.push_str(e);
    }
    let boot = boot_on(&elf, &append, machine)?;
    eprintln!("xtask: {QEMU}: {}", boot.ending());
    if boot.code == Some(EXIT_SUCCESS) {
        Ok(())
    } else {
        Err(format!(
            "the kernel did not boot cleanly: {}",
            boot.ending()
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::{DEFAULT_SMP, Kernel, parse};

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    #[test]
    fn example_kernel_options() {
        let a = args("--pae --smp 2 --memory 1G -- smp_work=5");
        let o = parse(&a).unwrap();
        assert_eq!(o.kernel, Kernel::Example);
        assert!(o.pae && !o.check);
        assert_eq!((o.machine.smp, o.machine.memory), (2, Some("1G")));
        assert_eq!(o.extra, ["smp_work=5"]);
        let a = args("");
        assert_eq!(parse(&a).unwrap().machine.smp, DEFAULT_SMP);
        for bad in ["--smp 9", "--smp", "--memory", "--check -- x", "--bogus"] {
            let a = args(bad);
            assert!(parse(&a).is_err(), "{bad}");
        }
    }

    #[test]
    fn minimal_kernel_options() {
        let a = args("--minimal --memory 512M --check");
        let o = parse(&a).unwrap();
        assert_eq!(o.kernel, Kernel::Minimal);
        assert!(o.check && !o.pae && o.extra.is_empty());
        assert_eq!((o.machine.smp, o.machine.memory), (1, Some("512M")));
        let a = args("--minimal");
        assert_eq!(
            parse(&a).unwrap().machine,
            super::Machine {
                memory: None,
                smp: 1
            }
        );
        for bad in ["--minimal --pae", "--minimal --smp 2", "--minimal -- x"] {
            let a = args(bad);
            assert!(parse(&a).is_err(), "{bad}");
        }
    }
}
