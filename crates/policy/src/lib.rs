//! Policy: pure functions over the replicated state that decide what may be seen and
//! what may leave the cluster. The router asks; adapters never decide.
//!
//! Two choke points, each one function every path calls:
//! - [`visibility`]: may a viewer see an owner's availability? With it, the candidate
//!   lists the router's loops take their viewers and owners from
//!   ([`watchers_of`], [`visible_to`]), so no loop elsewhere filters by roster.
//! - [`egress`]: may this event leave the cluster for another domain?
//!
//! Nothing here does I/O or keeps state; the same inputs give the same answer on
//! every node.

mod candidates;
mod egress;
mod visibility;

pub use candidates::{Grants, visible_to, watchers_of};
pub use egress::{Egress, EgressRefusal, Outbound, OutboundKind, egress};
pub use visibility::{Context, Seen, visibility};
