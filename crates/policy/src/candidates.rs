//! Candidate lists: who may watch an owner, and whose availability a viewer may see.
//! Each candidate comes with the verdict [`visibility`] gives for the pair, so the
//! router's fan-out, probe and re-evaluation loops take both from here and never
//! filter by roster themselves.

use std::collections::BTreeMap;

use presenced_model::State;

use crate::{Context, Seen, visibility};

/// Entitlements kept in node memory rather than in the replicated state: directed
/// presence, temporary subscriptions, chat rooms. The router implements it over its
/// sessions; an empty implementation (`()`) means "roster only".
pub trait Grants {
    /// Viewers (bare JIDs) `owner` is entitled to show itself to beyond its roster,
    /// each with the context that entitles them.
    fn viewers_of(&self, owner: &str) -> Vec<(String, Context)>;
    /// Owners (local user names) that entitled `viewer` beyond the roster.
    fn owners_for(&self, viewer: &str) -> Vec<(String, Context)>;
    /// The context for one pair (what [`visibility`] is asked with).
    fn context(&self, owner: &str, viewer: &str) -> Context;
}

impl Grants for () {
    fn viewers_of(&self, _: &str) -> Vec<(String, Context)> {
        Vec::new()
    }
    fn owners_for(&self, _: &str) -> Vec<(String, Context)> {
        Vec::new()
    }
    fn context(&self, _: &str, _: &str) -> Context {
        Context::default()
    }
}

/// Everyone who may be shown something of `owner`'s availability (the owner itself
/// first), with what they are shown; viewers [`visibility`] says `Nothing` for are
/// left out. Viewers are bare JIDs and may be in other domains.
pub fn watchers_of(state: &State, owner: &str, grants: &impl Grants) -> Vec<(String, Seen)> {
    let own = state.jid_of(owner);
    let mut ctxs: BTreeMap<String, Context> = BTreeMap::new();
    if let Some(d) = state.user(owner) {
        for (jid, item) in &d.roster.items {
            if item.subscription.contact_watches() {
                ctxs.entry(jid.to_string()).or_default();
            }
        }
    }
    for (v, c) in grants.viewers_of(owner) {
        let slot = ctxs.entry(v).or_default();
        slot.directed |= c.directed;
        slot.temporary |= c.temporary;
        slot.room |= c.room;
    }
    ctxs.remove(&own);
    let mut out = vec![(own, Seen::Available)];
    for (v, c) in ctxs {
        let seen = visibility(state, owner, &v, c);
        if seen != Seen::Nothing {
            out.push((v, seen));
        }
    }
    out
}

/// Every local owner whose availability `viewer` (a local user name) may be shown
/// something of (the viewer itself first), with what it is shown.
pub fn visible_to(state: &State, viewer: &str, grants: &impl Grants) -> Vec<(String, Seen)> {
    let me = state.jid_of(viewer);
    let mut ctxs: BTreeMap<String, Context> = BTreeMap::new();
    // An owner lets the viewer watch through its own roster, so it lists the viewer.
    for o in state.listed_by(viewer) {
        ctxs.entry(o.to_string()).or_default();
    }
    for (o, c) in grants.owners_for(&me) {
        let slot = ctxs.entry(o).or_default();
        slot.directed |= c.directed;
        slot.temporary |= c.temporary;
        slot.room |= c.room;
    }
    ctxs.remove(viewer);
    let mut out = vec![(viewer.to_string(), Seen::Available)];
    for (o, c) in ctxs {
        let seen = visibility(state, &o, &me, c);
        if seen != Seen::Nothing {
            out.push((o, seen));
        }
    }
    out
}
