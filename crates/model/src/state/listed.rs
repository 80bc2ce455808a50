//! The derived reverse index: for each local user, the local users whose roster lists
//! them (watchers and would-be watchers are found from it). At a million roster items
//! a map of name sets cost about 70 bytes per item; here every owner name is stored
//! once and each item costs one 4-byte id.

use std::collections::{BTreeMap, HashMap};

#[derive(Debug, Clone, Default)]
pub(super) struct ListedBy {
    ids: HashMap<Box<str>, u32>,
    /// Names by id. Ids are never reused while the state lives (a reload compacts).
    names: Vec<Box<str>>,
    /// Contact id -> owner ids, sorted by owner name.
    by: HashMap<u32, Vec<u32>>,
}

impl ListedBy {
    fn id(&mut self, name: &str) -> u32 {
        if let Some(i) = self.ids.get(name) {
            return *i;
        }
        let i = u32::try_from(self.names.len()).expect("fewer than 4 billion users");
        self.names.push(name.into());
        self.ids.insert(name.into(), i);
        i
    }

    /// `owner`'s roster now lists `contact`.
    pub(super) fn insert(&mut self, contact: &str, owner: &str) {
        let (c, o) = (self.id(contact), self.id(owner));
        let names = &self.names;
        let v = self.by.entry(c).or_default();
        if let Err(at) = v.binary_search_by(|x| names[*x as usize].cmp(&names[o as usize])) {
            v.insert(at, o);
        }
    }

    /// `owner`'s roster no longer lists `contact`.
    pub(super) fn remove(&mut self, contact: &str, owner: &str) {
        let (Some(&c), Some(&o)) = (self.ids.get(contact), self.ids.get(owner)) else {
            return;
        };
        let names = &self.names;
        if let Some(v) = self.by.get_mut(&c) {
            if let Ok(at) = v.binary_search_by(|x| names[*x as usize].cmp(&names[o as usize])) {
                v.remove(at);
            }
            if v.is_empty() {
                self.by.remove(&c);
            }
        }
    }

    /// Forget who lists `contact` (its account is gone).
    pub(super) fn forget(&mut self, contact: &str) {
        if let Some(c) = self.ids.get(contact) {
            self.by.remove(c);
        }
    }

    /// The owners whose roster lists `contact`, in name order.
    pub(super) fn of<'a>(&'a self, contact: &str) -> impl Iterator<Item = &'a str> + 'a {
        let owners = self
            .ids
            .get(contact)
            .and_then(|c| self.by.get(c))
            .map(Vec::as_slice)
            .unwrap_or_default();
        owners.iter().map(|o| &*self.names[*o as usize])
    }

    fn as_map(&self) -> BTreeMap<&str, Vec<&str>> {
        self.by
            .iter()
            .map(|(c, os)| {
                (
                    &*self.names[*c as usize],
                    os.iter().map(|o| &*self.names[*o as usize]).collect(),
                )
            })
            .collect()
    }
}

impl PartialEq for ListedBy {
    /// Equal when they list the same owners for the same contacts (ids may differ).
    fn eq(&self, o: &Self) -> bool {
        self.as_map() == o.as_map()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn insert_remove_and_order() {
        let mut l = ListedBy::default();
        l.insert("bob", "carol");
        l.insert("bob", "alice");
        l.insert("bob", "alice");
        assert_eq!(l.of("bob").collect::<Vec<_>>(), vec!["alice", "carol"]);
        l.remove("bob", "alice");
        assert_eq!(l.of("bob").collect::<Vec<_>>(), vec!["carol"]);
        let mut m = ListedBy::default();
        m.insert("zed", "x");
        m.insert("bob", "carol");
        m.remove("zed", "x");
        assert_eq!(l, m);
        l.forget("bob");
        assert_eq!(l.of("bob").count(), 0);
        assert_eq!(l.of("nobody").count(), 0);
    }
}
