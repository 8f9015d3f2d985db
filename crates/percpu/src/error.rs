//! [`PercpuError`]: why a per-CPU call failed. Every error leaves the areas
//! and the allocator as they were: no allocation, chunk or page is lost.

use core::fmt;

/// Why a per-CPU call was refused. Nothing changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum PercpuError {
    /// A CPU id at or past the number of possible CPUs (`per_cpu`,
    /// `per_cpu_ptr`, `offset`).
    NoSuchCpu {
        /// The id asked for.
        cpu: usize,
        /// The number of possible CPUs.
        possible: usize,
    },
    /// `__alloc_percpu` of zero bytes (or `alloc_percpu` of a zero-sized type).
    ZeroSize,
    /// More than [`crate::PCPU_MAX_ALLOC`] (a page) per CPU.
    TooLarge {
        /// The size asked for.
        size: usize,
    },
    /// An alignment that is not a power of two, or larger than a page.
    BadAlign {
        /// The alignment asked for.
        align: usize,
    },
    /// No chunk has room and no new chunk could be made: the chunk table is
    /// full ([`crate::PCPU_MAX_CHUNKS`]), or the backing ran out of pages or
    /// addresses. Everything taken was given back.
    OutOfMemory,
    /// An allocation or free from an interrupt handler or with interrupts
    /// disabled: the allocator's lock and its chunk creation are for process
    /// context.
    InInterrupt,
    /// `free_percpu` of an address that no chunk of this allocator holds.
    Foreign,
    /// `free_percpu` of a static per-CPU variable (the static part of the
    /// first chunk).
    StaticArea,
    /// `free_percpu` of an address inside an allocation, not its start.
    Interior,
    /// `free_percpu` of an address in a chunk where no allocation starts:
    /// freed already, or never handed out.
    NotLive,
    /// A static per-CPU variable that the template does not hold (not
    /// registered, or not in the linker section).
    NotRegistered,
    /// A re-entry on a CPU that already holds what the call needs:
    /// `get_cpu_var` of a variable whose copy this CPU holds (a hook or an
    /// interrupt handler; the copy is not handed out twice), or
    /// `__alloc_percpu`/`shrink` from a hook the backing called while this
    /// CPU holds the allocator's allocation lock (instead of spinning on
    /// it forever).
    Busy,
    /// `Percpu::new` over areas whose first chunk another allocator serves
    /// (each would hand out the same bytes): one allocator per set of areas.
    /// The first allocator gives the areas back when it is dropped holding
    /// no allocation in the first chunk.
    AreasTaken,
    /// Set-up: more possible CPUs than [`crate::NR_CPUS`], or none.
    TooManyCpus,
    /// Set-up: the static template leaves less than
    /// [`crate::PERCPU_DYNAMIC_RESERVE`] of the unit for the first chunk's
    /// dynamic part, or more than [`crate::PCPU_MAX_STATIC_VARS`] variables
    /// were registered.
    StaticTooLarge,
    /// Set-up: the area allocator could not give a CPU its area (the areas
    /// already given were handed back).
    NoArea {
        /// The CPU left without an area.
        cpu: usize,
    },
}

impl fmt::Display for PercpuError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PercpuError::NoSuchCpu { cpu, possible } => {
                write!(
                    f,
                    "percpu: CPU {cpu} is not one of the {possible} possible CPUs"
                )
            }
            PercpuError::ZeroSize => f.write_str("percpu: size is zero"),
            PercpuError::TooLarge { size } => {
                write!(f, "percpu: {size} bytes per CPU is more than a page")
            }
            PercpuError::BadAlign { align } => {
                write!(
                    f,
                    "percpu: alignment {align} is not a power of two up to a page"
                )
            }
            PercpuError::OutOfMemory => f.write_str("percpu: out of chunks, pages or addresses"),
            PercpuError::InInterrupt => f.write_str("percpu: called in interrupt context"),
            PercpuError::Foreign => f.write_str("percpu: not an address of this allocator"),
            PercpuError::StaticArea => f.write_str("percpu: a static per-CPU variable"),
            PercpuError::Interior => f.write_str("percpu: inside an allocation, not its start"),
            PercpuError::NotLive => f.write_str("percpu: no allocation starts there"),
            PercpuError::NotRegistered => f.write_str("percpu: variable is not in the template"),
            PercpuError::Busy => f.write_str("percpu: already held on this CPU (a re-entry)"),
            PercpuError::AreasTaken => f.write_str("percpu: another allocator serves these areas"),
            PercpuError::TooManyCpus => {
                f.write_str("percpu: no possible CPU, or more than NR_CPUS")
            }
            PercpuError::StaticTooLarge => f.write_str("percpu: the static template is too large"),
            PercpuError::NoArea { cpu } => write!(f, "percpu: no memory for CPU {cpu}'s area"),
        }
    }
}

impl core::error::Error for PercpuError {}
