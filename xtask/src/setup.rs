//! `cargo xtask setup`: installs the i686 Rust target and QEMU if missing.

use crate::cmd::{self, Result, command};
use crate::root;

/// The Rust target the example kernel is built for.
pub const KERNEL_TARGET: &str = "i686-unknown-linux-gnu";
/// The QEMU binary that boots the kernel.
pub const QEMU: &str = "qemu-system-i386";
/// The Debian package that provides [`QEMU`].
pub const QEMU_PACKAGE: &str = "qemu-system-x86";

/// Installs whatever is missing.
pub fn run() -> Result {
    rust_target()?;
    qemu()?;
    eprintln!("xtask: setup ok ({KERNEL_TARGET} target and {QEMU} present)");
    Ok(())
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
    let root = root();
    let uid = cmd::output(&mut command(&root, "id", ["-u"])).unwrap_or_default();
    if uid.trim() != "0" {
        return Err(format!(
            "{QEMU} is not on PATH; install the {QEMU_PACKAGE} package \
             (Debian/Ubuntu: `sudo apt-get install {QEMU_PACKAGE}`) and run again"
        ));
    }
    if cmd::which("apt-get").is_none() {
        return Err(format!(
            "{QEMU} is not on PATH and apt-get is not available; install {QEMU_PACKAGE} \
             (or your system's package with {QEMU}) and run again"
        ));
    }
    eprintln!("xtask: installing {QEMU_PACKAGE}");
    cmd::run(&mut command(&root, "apt-get", ["update"]))?;
    cmd::run(
        command(&root, "apt-get", ["install", "-y", QEMU_PACKAGE])
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )?;
    match cmd::which(QEMU) {
        Some(_) => Ok(()),
        None => Err(format!(
            "installed {QEMU_PACKAGE} but {QEMU} is still not on PATH"
        )),
    }
}
