//! [`PkmapStats`]: counters for tests and benchmarks.

/// What the pkmap has done so far (relaxed counters: exact once the CPUs
/// that use the pkmap are quiescent).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct PkmapStats {
    /// `flush_all_zero_pkmaps` runs (one per wrap-around of the entry search).
    pub flush_all_zero_runs: usize,
    /// Kernel-wide TLB flushes made by those runs (none when a run found no
    /// entry to free).
    pub kernel_flushes: usize,
    /// Times `kmap` waited for a free entry.
    pub waits: usize,
    /// `KmapLocalGuard`s whose drop could not unmap (their mapping was not on
    /// top of the stack); the mapping stayed.
    pub guard_errors: usize,
}
