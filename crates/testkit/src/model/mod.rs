//! Reference models of the allocators, one per crate, shared by the crate's
//! property test (`tests/model.rs`) and its fuzz target.
//!
//! Each model keeps the live blocks and what is in them, applies one
//! operation at a time to the allocator and to itself ([`buddy::Model::apply`],
//! [`slab::Model::apply`]) and checks the allocator against itself after every
//! step (`check`); `finish` gives everything back and checks that the
//! allocator is where it started. Operations are enums whose `Debug` output
//! reads as the call made (`Kmalloc { cpu: 1, size: 200, gfp: KERNEL | DMA }`),
//! so a shrunk failure says what happened. A failed check is a [`Failure`]:
//! it is a `std::error::Error`, so `?` turns it into a proptest `TestCaseError`, the fuzz targets panic.

use std::fmt;

use kmm_buddy::Gfp;

pub mod buddy;
pub mod slab;

/// The configuration of kmm's property tests: `cases` cases natively,
/// `miri_cases` under Miri (orders of magnitude slower) or fewer if
/// `PROPTEST_CASES` asks for fewer (the gate's Miri step runs one case of
/// each; Miri shows the program that variable only when told to,
/// `-Zmiri-env-forward=PROPTEST_CASES`, as `cargo xtask` does), and a failure
/// saved beside the test's source (`proptest-regressions`) except under Miri,
/// which has no file system.
#[cfg(feature = "proptest")]
pub fn proptest_config(cases: u32, miri_cases: u32) -> proptest::test_runner::Config {
    use proptest::test_runner::{Config, FileFailurePersistence};
    let cap = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|s| s.trim().parse::<u32>().ok());
    Config {
        cases: if cfg!(miri) {
            cap.map_or(miri_cases, |c| miri_cases.min(c.max(1)))
        } else {
            cases
        },
        failure_persistence: if cfg!(miri) {
            None
        } else {
            Some(Box::new(FileFailurePersistence::WithSource(
                "proptest-regressions",
            )))
        },
        ..Config::default()
    }
}

/// A check that failed: what the model expected and what the allocator did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure(pub String);

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Failure {}

/// A model step's result.
pub type Checked = Result<(), Failure>;

/// Fails the check with a message unless `cond` holds.
macro_rules! ensure {
    ($cond:expr, $($msg:tt)+) => {
        if !$cond {
            return Err($crate::model::Failure(format!($($msg)+)));
        }
    };
}

/// Fails the check unless `left == right`, showing both.
macro_rules! ensure_eq {
    ($left:expr, $right:expr, $($msg:tt)+) => {{
        let (l, r) = (&$left, &$right);
        if l != r {
            return Err($crate::model::Failure(format!(
                "{}: left {:?}, right {:?} ({} == {})",
                format!($($msg)+), l, r, stringify!($left), stringify!($right)
            )));
        }
    }};
}

pub(crate) use {ensure, ensure_eq};

/// GFP flags in an operation, shown by name: `KERNEL | DMA`, `HIGHUSER |
/// ZERO`, `ATOMIC | COLD`.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Flags(pub Gfp);

impl fmt::Debug for Flags {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let g = self.0;
        let mut rest = g;
        let base = if g.contains(Gfp::HIGHUSER) {
            rest.remove(Gfp::HIGHUSER);
            "HIGHUSER"
        } else if g.contains(Gfp::KERNEL) {
            rest.remove(Gfp::KERNEL);
            "KERNEL"
        } else if g.contains(Gfp::ATOMIC) {
            rest.remove(Gfp::ATOMIC);
            "ATOMIC"
        } else {
            ""
        };
        f.write_str(base)?;
        let mut sep = !base.is_empty();
        for (name, flag) in rest.iter_names() {
            let _ = flag;
            if sep {
                f.write_str(" | ")?;
            }
            f.write_str(name)?;
            sep = true;
        }
        if !sep {
            f.write_str("0")?;
        }
        Ok(())
    }
}

/// Fills `len` bytes at `p` with `tag`.
///
/// # Safety
/// `p..p + len` is a live block the caller owns.
pub unsafe fn fill(p: *mut u8, len: usize, tag: u8) {
    // SAFETY: forwarded from the caller.
    unsafe { core::ptr::write_bytes(p, tag, len) };
}

/// Whether all `len` bytes at `p` are `tag`.
///
/// # Safety
/// `p..p + len` is a live block the caller owns.
pub unsafe fn intact(p: *const u8, len: usize, tag: u8) -> bool {
    // SAFETY: forwarded from the caller.
    unsafe { core::slice::from_raw_parts(p, len) }
        .iter()
        .all(|&b| b == tag)
}
