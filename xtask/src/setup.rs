//! `cargo xtask setup`: installs the i686 Rust target, QEMU and a 32-bit C runtime if missing.

use crate::cmd::{self, Result, command};
use crate::root;

/// The Rust target the example kernel is built for.
pub const KERNEL_TARGET: &str = "i686-unknown-linux-gnu";
/// The QEMU binary that boots the kernel.
pub const QEMU: &str = "qemu-system-i386";
/// The Debian package that provides [`QEMU`].
pub const QEMU_PACKAGE: &str = "qemu-system-x86";

/// The Debian package that lets the host C toolchain link 32-bit programs
/// (the library crates' tests also run as i686 Linux programs).
pub const MULTILIB_PACKAGE: &str = "gcc-multilib";

/// Installs what booting the kernel needs: the i686 target and QEMU.
pub fn for_qemu() -> Result {
    rust_target()?;
    qemu()
}

/// Installs whatever the gate needs that is missing.
pub fn run() -> Result {
    for_qemu()?;
    multilib()?;
    eprintln!("xtask: setup ok ({KERNEL_TARGET} target, {QEMU} and a 32-bit C runtime present)");
    Ok(())
}

/// True if the host C compiler finds a 32-bit C runtime (`cc -m32` prints a
/// path for `crt1.o` only when one is installed).
fn links_32bit() -> bool {
    cmd::output(&mut command(
        &root(),
        "cc",
        ["-m32", "-print-file-name=crt1.o"],
    ))
    .is_ok_and(|p| p.trim().contains('/'))
}

/// Installs gcc-multilib when 32-bit programs cannot be linked yet.
fn multilib() -> Result {
    if links_32bit() {
        return Ok(());
    }
    apt_install(
        MULTILIB_PACKAGE,
        "a 32-bit C runtime for the i686 host tests",
    )?;
    if links_32bit() {
        Ok(())
    } else {
        Err(format!(
            "installed {MULTILIB_PACKAGE} but `cc -m32` still finds no crt1.o"
        ))
    }
}

/// Installs a Debian package with apt-get when running as root, or explains
/// what to install.
fn apt_install(package: &str, what: &str) -> Result {
    let root = root();
    let uid = cmd::output(&mut command(&root, "id", ["-u"])).unwrap_or_default();
    if uid.trim() != "0" || cmd::which("apt-get").is_none() {
        return Err(format!(
            "{what} is missing; install the {package} package \
             (Debian/Ubuntu: `sudo apt-get install {package}`) and run again"
        ));
    }
    eprintln!("xtask: installing {package}");
    cmd::run(&mut command(&root, "apt-get", ["update"]))?;
    cmd::run(
        command(&root, "apt-get", ["install", "-y", package])
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )
}

/// Adds the kernel's target to the pinned toolchain if it lacks it.
fn rust_target() -> Result {
    let root = root();
    if cmd::which("rustup").is_none() {
        // No rustup: accept a toolchain that already has the target's `core`.
        let sysroot = cmd::output(&mut command(&root, "rustc", ["--print", "sysroot"]))?;
        let lib = std::path::Path::new(sysroot.trim())
            .join("lib/rustlib")
            .join(KERNEL_TARGET);
        return if lib.is_dir() {
            Ok(())
        } else {
            Err(format!(
                "rustup is not installed and the toolchain lacks the {KERNEL_TARGET} target; \
                 install it for the toolchain in rust-toolchain.toml"
            ))
        };
    }
    let installed = cmd::output(&mut command(
        &root,
        "rustup",
        ["target", "list", "--installed"],
    ))?;
    if installed.lines().any(|l| l.trim() == KERNEL_TARGET) {
        return Ok(());
    }
    eprintln!("xtask: installing the {KERNEL_TARGET} Rust target");
    cmd::run(&mut command(
        &root,
        "rustup",
        ["target", "add", KERNEL_TARGET],
    ))
}

/// Installs QEMU with apt-get when running as root, or explains what to install.
fn qemu() -> Result {
    if cmd::which(QEMU).is_some() {
        return Ok(());
    }
    apt_install(QEMU_PACKAGE, QEMU)?;
    match cmd::which(QEMU) {
        Some(_) => Ok(()),
        None => Err(format!(
            "installed {QEMU_PACKAGE} but {QEMU} is still not on PATH"
        )),
    }
}
