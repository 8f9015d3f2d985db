//! `cargo xtask setup`: installs what the gate needs if it is missing: the
//! i686 Rust target, QEMU and a 32-bit C runtime; the nightly toolchain with
//! the components the fuzz targets and Miri use, a C++ compiler (libFuzzer
//! is C++) and cargo-fuzz.

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

/// The toolchain of the fuzz targets and of Miri (the library crates build
/// on the stable toolchain pinned in rust-toolchain.toml).
pub const NIGHTLY: &str = "nightly";
/// The components the gate uses on [`NIGHTLY`]: Miri and the standard
/// library's sources it builds its sysroot from, and rustfmt and clippy for
/// the fuzz targets. cargo-fuzz needs nothing more than the toolchain itself
/// (its sanitizer runtimes ship with it) and a C++ compiler.
pub const NIGHTLY_COMPONENTS: [&str; 4] = ["miri", "rust-src", "rustfmt", "clippy"];
/// The Debian package that gives the C++ compiler libFuzzer is built with.
pub const CXX_PACKAGE: &str = "g++";

/// Installs what booting the kernel needs: the i686 target and QEMU.
pub fn for_qemu() -> Result {
    rust_target()?;
    qemu()
}

/// Installs whatever the gate needs that is missing.
pub fn run() -> Result {
    for_qemu()?;
    multilib()?;
    for_fuzz()?;
    eprintln!(
        "xtask: setup ok ({KERNEL_TARGET} target, {QEMU}, a 32-bit C runtime, \
         the {NIGHTLY} toolchain with {}, a C++ compiler and cargo-fuzz present)",
        NIGHTLY_COMPONENTS.join(", ")
    );
    Ok(())
}

/// `cargo +nightly ARGS` in `dir`: the toolchain named here, whatever
/// rust-toolchain.toml or the calling cargo (`RUSTUP_TOOLCHAIN`) says.
pub fn nightly_cargo<I, S>(dir: &std::path::Path, args: I) -> std::process::Command
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    let mut c = command(dir, "cargo", [format!("+{NIGHTLY}")]);
    c.args(args).env_remove("RUSTUP_TOOLCHAIN");
    c
}

/// `rustup ARGS`, not pinned to the calling cargo's toolchain.
fn rustup<const N: usize>(args: [&str; N]) -> std::process::Command {
    let mut c = command(&root(), "rustup", args);
    c.env_remove("RUSTUP_TOOLCHAIN");
    c
}

/// True if `rustup toolchain list` printed `list` with the toolchain `name`
/// in it: `nightly` is `nightly-<host>`, not a dated `nightly-2025-01-01-<host>`.
fn has_toolchain(list: &str, name: &str) -> bool {
    list.lines()
        .filter_map(|l| l.split_whitespace().next())
        .any(|t| {
            t == name
                || t.strip_prefix(name)
                    .and_then(|rest| rest.strip_prefix('-'))
                    .is_some_and(|host| !host.starts_with(|c: char| c.is_ascii_digit()))
        })
}

/// Installs the nightly toolchain with [`NIGHTLY_COMPONENTS`] (what `cargo
/// xtask miri` needs), or adds the components it lacks.
pub fn for_miri() -> Result {
    if cmd::which("rustup").is_none() {
        return Err(format!(
            "rustup is not installed: the fuzz targets and Miri need the {NIGHTLY} toolchain \
             with {}; install rustup (https://rustup.rs) and run `cargo xtask setup`",
            NIGHTLY_COMPONENTS.join(", ")
        ));
    }
    let components = NIGHTLY_COMPONENTS.join(",");
    let toolchains = cmd::output(&mut rustup(["toolchain", "list"]))?;
    if !has_toolchain(&toolchains, NIGHTLY) {
        eprintln!(
            "xtask: installing the {NIGHTLY} toolchain with {components} \
             (for the fuzz targets and Miri)"
        );
        return cmd::run(&mut rustup([
            "toolchain",
            "install",
            NIGHTLY,
            "--profile",
            "minimal",
            "--component",
            &components,
        ]));
    }
    let installed = cmd::output(&mut rustup([
        "component",
        "list",
        "--toolchain",
        NIGHTLY,
        "--installed",
    ]))?;
    for component in NIGHTLY_COMPONENTS {
        if !installed.lines().any(|l| l.starts_with(component)) {
            eprintln!("xtask: adding {component} to the {NIGHTLY} toolchain");
            cmd::run(&mut rustup([
                "component",
                "add",
                "--toolchain",
                NIGHTLY,
                component,
            ]))?;
        }
    }
    Ok(())
}

/// Installs what the fuzz targets need: the nightly toolchain (with the
/// components of [`for_miri`]), a C++ compiler for libFuzzer, and cargo-fuzz
/// (`cargo install cargo-fuzz --locked`) if `cargo fuzz` does not run.
pub fn for_fuzz() -> Result {
    for_miri()?;
    if cmd::which("c++").is_none() {
        apt_install(CXX_PACKAGE, "a C++ compiler (libFuzzer is built from C++)")?;
        if cmd::which("c++").is_none() {
            return Err(format!(
                "installed {CXX_PACKAGE} but c++ is still not on PATH"
            ));
        }
    }
    let root = root();
    if cmd::succeeds(&mut nightly_cargo(&root, ["fuzz", "--version"])) {
        return Ok(());
    }
    eprintln!(
        "xtask: installing cargo-fuzz (`cargo fuzz` does not run; this builds it, a minute or two)"
    );
    cmd::run(&mut nightly_cargo(
        &root,
        ["install", "cargo-fuzz", "--locked"],
    ))?;
    cmd::output(&mut nightly_cargo(&root, ["fuzz", "--version"]))
        .map(drop)
        .map_err(|e| format!("installed cargo-fuzz but `cargo fuzz --version` still fails: {e}"))
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

#[cfg(test)]
mod tests {
    use super::has_toolchain;

    #[test]
    fn toolchain_names() {
        let list = "stable-x86_64-unknown-linux-gnu (default)\n\
                    nightly-2025-01-01-x86_64-unknown-linux-gnu\n\
                    1.95.0-x86_64-unknown-linux-gnu (active)\n";
        assert!(!has_toolchain(list, "nightly"));
        assert!(has_toolchain(list, "nightly-2025-01-01"));
        assert!(has_toolchain(list, "stable"));
        assert!(has_toolchain(list, "1.95.0"));
        let list = "nightly-x86_64-unknown-linux-gnu\n";
        assert!(has_toolchain(list, "nightly"));
        assert!(!has_toolchain("", "nightly"));
    }
}
