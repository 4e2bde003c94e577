//! How full the archive's filesystem is, as `df` counts it: used blocks over the blocks
//! available to the server (used + available to unprivileged users), so the blocks reserved
//! for root count as full, as they do for a server that does not run as root.

use std::path::Path;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Usage {
    /// Bytes in use.
    pub used: u64,
    /// Bytes the server can still write.
    pub available: u64,
}

impl Usage {
    /// Percent used (0 to 100).
    pub fn used_percent(&self) -> f64 {
        let total = self.used.saturating_add(self.available);
        if total == 0 {
            return 0.0;
        }
        self.used as f64 * 100.0 / total as f64
    }
}

/// The usage of the filesystem holding `path` (statvfs).
pub fn usage(path: &Path) -> std::io::Result<Usage> {
    let stat = rustix::fs::statvfs(path)?;
    let block = stat.f_frsize.max(1);
    Ok(Usage {
        used: stat
            .f_blocks
            .saturating_sub(stat.f_bfree)
            .saturating_mul(block),
        available: stat.f_bavail.saturating_mul(block),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_real_filesystem() {
        let usage = usage(Path::new("/")).unwrap();
        assert!(usage.used > 0);
        let percent = usage.used_percent();
        assert!((0.0..=100.0).contains(&percent), "{percent}");
        assert_eq!(
            Usage {
                used: 1,
                available: 3
            }
            .used_percent(),
            25.0
        );
        assert!(super::usage(Path::new("/no/such/folder")).is_err());
    }
}
