//! The connection cap against the open-file limit, how addresses are keyed, and the
//! accept loop's back-off.

use std::future::Future;
use std::net::{IpAddr, Ipv6Addr};
use std::time::Duration;

/// The open-file limit of this process (soft), if the system says.
pub fn open_file_limit() -> Option<u64> {
    rustix::process::getrlimit(rustix::process::Resource::Nofile).current
}

/// Descriptors kept for everything but client connections (Raft, peers, admin, HTTP,
/// storage, logs): a tenth of the limit, at least 128.
pub fn fd_reserve(limit: u64) -> u64 {
    (limit / 10).max(128)
}

/// The connection cap: `configured` (0 = as many as the open-file limit allows),
/// never more than the limit minus [`fd_reserve`]. Returns the cap and, when a
/// configured value had to be lowered, the limit that lowered it.
pub fn connection_cap(configured: usize, fd_limit: Option<u64>) -> (usize, Option<u64>) {
    let Some(limit) = fd_limit else {
        return (if configured == 0 { 10_000 } else { configured }, None);
    };
    let room = limit.saturating_sub(fd_reserve(limit)).max(1) as usize;
    match configured {
        0 => (room, None),
        n if n > room => (room, Some(limit)),
        n => (n, None),
    }
}

/// An address as the per-address limits see it.
pub(crate) fn ip_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

/// The error class of a failed `accept` (the `kind` label).
pub(super) fn accept_error_kind(e: &std::io::Error) -> &'static str {
    use rustix::io::Errno;
    match e.raw_os_error() {
        Some(n) if n == Errno::MFILE.raw_os_error() => "emfile",
        Some(n) if n == Errno::NFILE.raw_os_error() => "enfile",
        Some(n) if n == Errno::NOBUFS.raw_os_error() || n == Errno::NOMEM.raw_os_error() => {
            "enomem"
        }
        _ => "other",
    }
}

/// The first back-off after a failed accept; it doubles while accepts keep failing, up
/// to [`ACCEPT_BACKOFF_MAX`].
pub(crate) const ACCEPT_BACKOFF_MIN: Duration = Duration::from_millis(10);
pub(crate) const ACCEPT_BACKOFF_MAX: Duration = Duration::from_secs(1);

/// Accept the next connection, backing off while accepting fails (out of file
/// descriptors and the like: the connection waits in the backlog, and retrying at
/// once would spin). Each failure is counted in `presenced_c2s_accept_errors_total`.
pub(crate) async fn accept_with_backoff<T, F, Fut>(mut accept: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = std::io::Result<T>>,
{
    let mut backoff = Duration::ZERO;
    loop {
        match accept().await {
            Ok(x) => {
                if !backoff.is_zero() {
                    tracing::info!("xmpp accept works again");
                }
                return x;
            }
            Err(e) => {
                let kind = accept_error_kind(&e);
                metrics::counter!("presenced_c2s_accept_errors_total", "kind" => kind).increment(1);
                if backoff.is_zero() {
                    tracing::warn!(kind, "xmpp accept failed: {e}; backing off");
                }
                backoff = (backoff * 2).clamp(ACCEPT_BACKOFF_MIN, ACCEPT_BACKOFF_MAX);
                tokio::time::sleep(backoff).await;
            }
        }
    }
}
