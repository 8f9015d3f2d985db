//! The errors of each operation. Every error leaves the state as it was:
//! no count, mapping, page address or slot changed.

use core::fmt;

use kmm_hal::{LayoutError, MapError, VirtAddr};

/// Why [`crate::Pkmap::new`] refused to set up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum InitError {
    /// The layout breaks the `KernelLayout` contract ([`kmm_hal::check_layout`]).
    Layout(LayoutError),
    /// `last_pkmap()` is zero or above [`crate::MAX_PKMAP`].
    PkmapEntries,
    /// The machine has more CPUs than [`crate::MAX_CPUS`], or than the fixmap
    /// has `kmap_atomic` slots for.
    TooManyCpus,
    /// `kmap_per_cpu` is zero or above [`crate::KM_MAX`].
    KmapSlots,
    /// A pkmap entry or a `kmap_atomic` slot is already mapped: the window is
    /// not ours alone.
    WindowInUse(VirtAddr),
    /// The page tables refused to build a page-table page for the window (the
    /// frame source ran dry, say).
    Map(MapError),
    /// Called with interrupts disabled on a machine with more than one CPU:
    /// set-up ends with a kernel-wide TLB flush, which needs them on.
    IrqsDisabled,
}

impl fmt::Display for InitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            InitError::Layout(e) => write!(f, "pkmap: {e}"),
            InitError::PkmapEntries => f.write_str("pkmap: LAST_PKMAP is zero or too large"),
            InitError::TooManyCpus => f.write_str("pkmap: more CPUs than kmap_atomic slots"),
            InitError::KmapSlots => f.write_str("pkmap: kmap_atomic slots per CPU out of range"),
            InitError::WindowInUse(va) => write!(f, "pkmap: {va} is already mapped"),
            InitError::Map(e) => write!(f, "pkmap: page tables: {e}"),
            InitError::IrqsDisabled => f.write_str("pkmap: set up with interrupts disabled"),
        }
    }
}

impl core::error::Error for InitError {}

/// Why `kmap`, `try_kmap` or `kmap_high` refused. Nothing changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum KmapError {
    /// The page is not a descriptor of this `mem_map`.
    NotInMemMap,
    /// `kmap_high` of a low-memory page (`kmap` maps it: its direct-map
    /// address).
    NotHighmem,
    /// `try_kmap`: every pkmap entry is in use (`kmap` would wait).
    Full,
    /// Called from an interrupt handler: `kmap` may wait, so it is for process
    /// context only (use `kmap_local_page`).
    InInterrupt,
    /// Called with interrupts disabled: `kmap` may wait or flush every CPU's
    /// TLB, which needs them on.
    IrqsDisabled,
    /// The page already has `u32::MAX - 1` users.
    TooManyUsers,
    /// The page tables refused the mapping (they should not: the page-table
    /// page was built at set-up).
    Map(MapError),
}

impl fmt::Display for KmapError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            KmapError::NotInMemMap => "kmap: not a page of mem_map",
            KmapError::NotHighmem => "kmap_high: not a high-memory page",
            KmapError::Full => "kmap: every pkmap entry is in use",
            KmapError::InInterrupt => "kmap: called from an interrupt handler",
            KmapError::IrqsDisabled => "kmap: called with interrupts disabled",
            KmapError::TooManyUsers => "kmap: too many users of one page",
            KmapError::Map(_) => "kmap: the page tables refused the mapping",
        })
    }
}

impl core::error::Error for KmapError {}

/// Why `kunmap` or `kunmap_high` refused. Nothing changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum KunmapError {
    /// The page is not a descriptor of this `mem_map`.
    NotInMemMap,
    /// `kunmap_high` of a low-memory page (`kunmap` accepts it: a no-op).
    NotHighmem,
    /// The page has no persistent kmap.
    NotMapped,
    /// The page's entry has no user left: more `kunmap`s than `kmap`s (a
    /// double `kunmap`).
    Unbalanced,
    /// Called from an interrupt handler (process context only, as in Linux).
    InInterrupt,
    /// Called with interrupts disabled (a CPU spinning on the pkmap lock with
    /// interrupts off could not answer a TLB shootdown).
    IrqsDisabled,
}

impl fmt::Display for KunmapError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            KunmapError::NotInMemMap => "kunmap: not a page of mem_map",
            KunmapError::NotHighmem => "kunmap_high: not a high-memory page",
            KunmapError::NotMapped => "kunmap: the page has no kmap",
            KunmapError::Unbalanced => "kunmap: more kunmaps than kmaps",
            KunmapError::InInterrupt => "kunmap: called from an interrupt handler",
            KunmapError::IrqsDisabled => "kunmap: called with interrupts disabled",
        })
    }
}

impl core::error::Error for KunmapError {}

/// Why `kmap_local_page` or `kmap_atomic` refused. Nothing changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum KmapLocalError {
    /// The page is not a descriptor of this `mem_map`.
    NotInMemMap,
    /// This CPU already holds `kmap_per_cpu` local mappings.
    TooDeep,
    /// The calling CPU's slot stack is in use by the code this call
    /// re-entered (cannot happen: the stack is only held with interrupts
    /// off; kept as an error rather than trusted).
    Busy,
    /// The page tables refused the mapping.
    Map(MapError),
}

impl fmt::Display for KmapLocalError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            KmapLocalError::NotInMemMap => "kmap_local: not a page of mem_map",
            KmapLocalError::TooDeep => "kmap_local: every slot of this CPU is in use",
            KmapLocalError::Busy => "kmap_local: this CPU's slot stack is busy",
            KmapLocalError::Map(_) => "kmap_local: the page tables refused the mapping",
        })
    }
}

impl core::error::Error for KmapLocalError {}

/// Why `kunmap_local` or `kunmap_atomic` refused. Nothing changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum KunmapLocalError {
    /// This CPU holds no local mapping.
    NothingMapped,
    /// The address is one of this CPU's local mappings, but not the last one
    /// made: local mappings are undone in reverse order. `top` is the one to
    /// undo first.
    OutOfOrder {
        /// The address of the most recent local mapping.
        top: VirtAddr,
    },
    /// The address is not one of this CPU's local mappings.
    NotMapped,
    /// `kunmap_atomic` of a `kmap_local_page` mapping, or `kunmap_local` of a
    /// `kmap_atomic` one.
    WrongKind,
    /// The calling CPU's slot stack is in use (see [`KmapLocalError::Busy`]).
    Busy,
    /// The page tables refused to unmap the slot (something else unmapped it).
    Map(MapError),
}

impl fmt::Display for KunmapLocalError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KunmapLocalError::NothingMapped => f.write_str("kunmap_local: nothing mapped"),
            KunmapLocalError::OutOfOrder { top } => {
                write!(f, "kunmap_local: out of order (unmap {top} first)")
            }
            KunmapLocalError::NotMapped => f.write_str("kunmap_local: not a local mapping"),
            KunmapLocalError::WrongKind => {
                f.write_str("kunmap_local: kunmap_atomic/kunmap_local mismatch")
            }
            KunmapLocalError::Busy => f.write_str("kunmap_local: this CPU's slot stack is busy"),
            KunmapLocalError::Map(_) => f.write_str("kunmap_local: the slot was not mapped"),
        }
    }
}

impl core::error::Error for KunmapLocalError {}

/// What [`crate::Pkmap::check`] found inconsistent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CheckError {
    /// What disagrees.
    pub what: &'static str,
    /// The pkmap entry, slot or page address concerned.
    pub at: VirtAddr,
}

impl fmt::Display for CheckError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "pkmap check: {} at {}", self.what, self.at)
    }
}

impl core::error::Error for CheckError {}

/// Why a call that may wait was refused: kmap and kunmap run in process
/// context with interrupts enabled (converted into each call's error).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NotProcessContext {
    /// Called from an interrupt handler.
    InInterrupt,
    /// Called with interrupts disabled.
    IrqsDisabled,
}

impl From<NotProcessContext> for KmapError {
    fn from(e: NotProcessContext) -> Self {
        match e {
            NotProcessContext::InInterrupt => KmapError::InInterrupt,
            NotProcessContext::IrqsDisabled => KmapError::IrqsDisabled,
        }
    }
}

impl From<NotProcessContext> for KunmapError {
    fn from(e: NotProcessContext) -> Self {
        match e {
            NotProcessContext::InInterrupt => KunmapError::InInterrupt,
            NotProcessContext::IrqsDisabled => KunmapError::IrqsDisabled,
        }
    }
}
