//! The invariants `apply` keeps.

use super::State;

impl State {
    /// Check the invariants that `apply` must keep. Used by tests and after loading.
    pub fn check_invariants(&self) -> Result<(), String> {
        for (u, d) in &self.users {
            for (j, item) in &d.roster.items {
                if item.jid != *j {
                    return Err(format!("{u}: item key {j} holds {}", item.jid));
                }
                if let Some(c) = self.local_user(j)
                    && !self.users.contains_key(c)
                {
                    return Err(format!("{u}: lists deleted account {j}"));
                }
            }
        }
        let mut copy = self.clone();
        copy.rebuild_index();
        if copy.listed_by != self.listed_by {
            return Err("reverse index out of date".into());
        }
        Ok(())
    }
}
