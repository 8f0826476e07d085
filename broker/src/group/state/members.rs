//! A group's members, keyed by member id, with a running count of how many members name each
//! protocol. JoinGroup checks a joining member's protocols against every member's (Kafka's
//! `supportsProtocols`); with the count kept here as members come, go and change protocols, that
//! check costs O(the member's protocols) rather than O(members), so a rebalance of N members
//! costs O(N) under the group's lock rather than O(N²).
//!
//! Reads go through `Deref` to the map. Writes go through the methods below; a member's
//! `protocols` change only through [`Members::set_protocols`], which keeps the count true.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::ops::Deref;

use bytes::Bytes;

use super::Member;

#[derive(Debug, Default)]
pub(super) struct Members {
    by_id: BTreeMap<String, Member>,
    /// Protocol name → how many members name it (each member once per name).
    support: HashMap<String, usize>,
}

impl Deref for Members {
    type Target = BTreeMap<String, Member>;

    fn deref(&self) -> &Self::Target {
        &self.by_id
    }
}

impl Members {
    /// How many members name `protocol`.
    pub(super) fn support(&self, protocol: &str) -> usize {
        self.support.get(protocol).copied().unwrap_or(0)
    }

    pub(super) fn insert(&mut self, id: String, member: Member) -> Option<Member> {
        count(&mut self.support, &member.protocols, true);
        let old = self.by_id.insert(id, member);
        if let Some(old) = &old {
            count(&mut self.support, &old.protocols, false);
        }
        old
    }

    pub(super) fn remove(&mut self, id: &str) -> Option<Member> {
        let member = self.by_id.remove(id)?;
        count(&mut self.support, &member.protocols, false);
        Some(member)
    }

    /// A member to change in place; its `protocols` must not be changed through it (see
    /// [`Members::set_protocols`]).
    pub(super) fn get_mut(&mut self, id: &str) -> Option<&mut Member> {
        self.by_id.get_mut(id)
    }

    /// Every member, to change in place (not their `protocols`).
    pub(super) fn values_mut(&mut self) -> impl Iterator<Item = &mut Member> {
        self.by_id.values_mut()
    }

    /// Every member with its id, to change in place (not their `protocols`).
    pub(super) fn iter_mut(&mut self) -> impl Iterator<Item = (&String, &mut Member)> {
        self.by_id.iter_mut()
    }

    /// Replaces a member's protocols; the member, to change further in place, or `None` if
    /// there is no such member.
    pub(super) fn set_protocols(
        &mut self,
        id: &str,
        protocols: Vec<(String, Bytes)>,
    ) -> Option<&mut Member> {
        let member = self.by_id.get_mut(id)?;
        let old = std::mem::replace(&mut member.protocols, protocols);
        count(&mut self.support, &old, false);
        count(&mut self.support, &member.protocols, true);
        Some(member)
    }
}

/// Adds (or takes away) one member's protocols to (from) the count of who names each.
fn count(support: &mut HashMap<String, usize>, protocols: &[(String, Bytes)], add: bool) {
    let mut named = HashSet::new();
    for (name, _) in protocols {
        if !named.insert(name.as_str()) {
            continue;
        }
        if add {
            *support.entry(name.clone()).or_default() += 1;
        } else if let Some(n) = support.get_mut(name.as_str()) {
            *n -= 1;
            if *n == 0 {
                support.remove(name.as_str());
            }
        }
    }
}
