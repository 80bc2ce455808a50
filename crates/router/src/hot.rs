//! Handles of the metrics touched for every message, registered once. A `counter!`
//! call hashes its key into the recorder's registry on every use, a few per message
//! (1.5 % of a busy cluster node's CPU); a handle is an atomic.
//!
//! Each is registered on first use, after the recorder is installed (presenced installs
//! it before anything else runs); in a process without one they are no-ops, as
//! `counter!` would be.

use std::sync::LazyLock;

use metrics::{Counter, Gauge, Histogram};

pub(crate) static RECEIPTS_OPEN: LazyLock<Gauge> =
    LazyLock::new(|| metrics::gauge!("presenced_receipts_open"));
pub(crate) static MESSAGES_ROUTED: LazyLock<Counter> =
    LazyLock::new(|| metrics::counter!("presenced_messages_routed_total"));
pub(crate) static FORWARDED: LazyLock<Counter> =
    LazyLock::new(|| metrics::counter!("presenced_forwarded_total"));
pub(crate) static PEER_BATCH_EVENTS: LazyLock<Histogram> =
    LazyLock::new(|| metrics::histogram!("presenced_peer_batch_events"));
