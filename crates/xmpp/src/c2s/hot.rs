//! Handles of the per-stanza counters, registered once (see the router's `hot`
//! module: a `counter!` call looks its key up on every use).

use std::sync::LazyLock;

use metrics::Counter;

pub(super) static STANZAS_IN: LazyLock<Counter> =
    LazyLock::new(|| metrics::counter!("presenced_xmpp_stanzas_in_total"));
pub(super) static STANZAS_OUT: LazyLock<Counter> =
    LazyLock::new(|| metrics::counter!("presenced_xmpp_stanzas_out_total"));
