//! A slow disk, for fault tests (`scripts/chaos`, fault `slow_disk`): when the
//! environment variable `PRESENCED_FAULT_SLOW_DISK` names a file, every fsync
//! ([`crate::Store::flush`]) first sleeps as many milliseconds as the file says (0 or
//! missing: none). The file is read at most every 100 ms, so a test slows the disk
//! down and back up while the node runs. Without the variable nothing is read and
//! nothing waits.

use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub const ENV: &str = "PRESENCED_FAULT_SLOW_DISK";

const REREAD: Duration = Duration::from_millis(100);

pub(crate) struct SlowDisk {
    file: PathBuf,
    /// The delay in force and when the file was last read.
    cached: Mutex<(Duration, Option<Instant>)>,
}

impl SlowDisk {
    /// From the environment, if the fault is armed for this process.
    pub(crate) fn from_env() -> Option<SlowDisk> {
        let file = std::env::var_os(ENV)?;
        tracing::info!(
            file = %PathBuf::from(&file).display(),
            "fault injection armed: fsync is delayed by the number of milliseconds this file holds"
        );
        Some(SlowDisk {
            file: file.into(),
            cached: Mutex::new((Duration::ZERO, None)),
        })
    }

    fn delay(&self) -> Duration {
        let mut c = self.cached.lock().unwrap_or_else(|p| p.into_inner());
        if c.1.is_none_or(|at| at.elapsed() >= REREAD) {
            let ms = std::fs::read_to_string(&self.file)
                .ok()
                .and_then(|s| s.trim().parse::<u64>().ok())
                .unwrap_or(0);
            let d = Duration::from_millis(ms.min(60_000));
            if d != c.0 {
                tracing::warn!(delay_ms = ms, "fault injection: fsync delay changed");
            }
            *c = (d, Some(Instant::now()));
        }
        c.0
    }

    /// Before an fsync.
    pub(crate) fn wait(&self) {
        let d = self.delay();
        if !d.is_zero() {
            std::thread::sleep(d);
        }
    }
}
