//! Watermarks: how much of each zone only atomic and high-priority allocations
//! may use (Linux's `setup_per_zone_pages_min` and `lowmem_reserve`).

use kmm_hal::{Cpu, PAGE_SIZE};
use kmm_page_frame::ZoneType;

use crate::buddy::Buddy;

/// The three watermarks of a zone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Watermark {
    /// Below this only atomic and high-priority allocations succeed.
    Min = 0,
    /// Below this an allocation wakes reclaim (the `on_low` hook).
    Low = 1,
    /// Reclaim stops above this.
    High = 2,
}

/// What a watermark check asks ([`crate::Zone::watermark_ok`]; Linux's
/// `zone_watermark_ok` arguments and `ALLOC_*` flags).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WatermarkCheck {
    /// The watermark to stay above.
    pub mark: Watermark,
    /// High priority (`Gfp::HIGH`, Linux's `ALLOC_HIGH`): the mark is halved.
    pub high: bool,
    /// Atomic, cannot wait (Linux's `ALLOC_HARDER`): the mark is cut by a
    /// quarter.
    pub harder: bool,
    /// The highest zone the allocation may use (the lowmem reserve kept back
    /// against it applies).
    pub classzone: ZoneType,
}

impl WatermarkCheck {
    /// An ordinary check of `mark` for an allocation whose highest zone is
    /// `classzone`.
    pub const fn new(mark: Watermark, classzone: ZoneType) -> Self {
        WatermarkCheck {
            mark,
            high: false,
            harder: false,
            classzone,
        }
    }
}

/// Linux's default `min_free_kbytes`: `sqrt(lowmem_kbytes * 16)`, clamped to
/// 128..=65536.
pub fn default_min_free_kbytes(lowmem_pages: usize) -> usize {
    // In u64, so the square root is the same on 32- and 64-bit targets.
    let kbytes = (lowmem_pages as u64).saturating_mul((PAGE_SIZE / 1024) as u64);
    kbytes.saturating_mul(16).isqrt().clamp(128, 65536) as usize
}

impl<C: Cpu> Buddy<'_, C> {
    /// The reserve in KiB the watermarks were computed from.
    pub fn min_free_kbytes(&self) -> usize {
        self.min_free_kbytes
    }

    /// Sets `min_free_kbytes` (`None`: Linux's default) and recomputes every
    /// zone's watermarks and lowmem reserves, as Linux does when the sysctl is
    /// written.
    ///
    /// Low-memory zones share `min_free_kbytes` in proportion to their size;
    /// a high-memory zone's `min` is a thousandth of it, within 32..=128 pages.
    /// `low` is `min * 5/4`, `high` is `min * 3/2`.
    pub fn set_min_free_kbytes(&mut self, kbytes: Option<usize>) {
        let lowmem: usize = self
            .zones
            .iter()
            .filter(|z| z.kind() != ZoneType::HighMem)
            .map(|z| z.managed())
            .sum();
        let kbytes = kbytes.unwrap_or_else(|| default_min_free_kbytes(lowmem));
        self.min_free_kbytes = kbytes;
        let pages_min = kbytes / (PAGE_SIZE / 1024);
        for z in self.zones {
            let min = if z.managed() == 0 {
                0
            } else if z.kind() == ZoneType::HighMem {
                if kbytes == 0 {
                    0
                } else {
                    (z.managed() / 1024).clamp(32, 128)
                }
            } else if lowmem == 0 {
                0
            } else {
                ((pages_min as u128 * z.managed() as u128) / lowmem as u128) as usize
            };
            z.set_watermarks(min);
        }
        // lowmem_reserve[classzone] of zone j: what allocations that could also
        // use the higher zones up to `classzone` must leave in zone j.
        for node in 0..self.mem.nr_node_ids() {
            let zs = &self.zones[node * ZoneType::COUNT..(node + 1) * ZoneType::COUNT];
            for (j, z) in zs.iter().enumerate() {
                for class in ZoneType::ALL {
                    let c = class as usize;
                    let reserve = if c <= j || kbytes == 0 {
                        0
                    } else {
                        let above: usize = zs[j + 1..=c].iter().map(|z| z.managed()).sum();
                        above / super::buddy::LOWMEM_RESERVE_RATIO[j.min(1)]
                    };
                    z.set_lowmem_reserve(class, reserve);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::default_min_free_kbytes;

    #[test]
    fn linux_defaults() {
        // 896 MiB of lowmem: sqrt(917504 * 16) = 3831 KiB.
        assert_eq!(default_min_free_kbytes(229_376), 3831);
        assert_eq!(default_min_free_kbytes(16), 128, "clamped below");
        assert_eq!(default_min_free_kbytes(1 << 28), 65536, "clamped above");
        assert_eq!(default_min_free_kbytes(usize::MAX), 65536, "no overflow");
    }
}
