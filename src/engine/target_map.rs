//! [`TargetMap`]: what a leader knows per replication target, in a short sorted list.
//!
//! A group has a handful of members, and a host of many groups has thousands of leaders, idle
//! most of the time: a `BTreeMap`'s first node has room for eleven entries (456 bytes for a
//! leader's match points), where two followers need two. This map holds exactly its entries,
//! sorted by key, and finds one by a binary search.

use std::fmt;

/// A map from target to `V`, sorted by target, with the part of `BTreeMap`'s interface the
/// leader uses.
///
/// Invariant: `entries` is sorted by key, without duplicates.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct TargetMap<K, V> {
    entries: Vec<(K, V)>,
}

impl<K, V> Default for TargetMap<K, V> {
    fn default() -> Self {
        Self { entries: Vec::new() }
    }
}

impl<K: Ord + Copy, V> TargetMap<K, V> {
    /// An empty map; allocates nothing.
    pub(crate) fn new() -> Self {
        Self::default()
    }

    fn position(&self, key: &K) -> Result<usize, usize> {
        self.entries.binary_search_by(|(k, _)| k.cmp(key))
    }

    pub(crate) fn get(&self, key: &K) -> Option<&V> {
        self.position(key).ok().map(|at| &self.entries[at].1)
    }

    pub(crate) fn get_mut(&mut self, key: &K) -> Option<&mut V> {
        self.position(key).ok().map(|at| &mut self.entries[at].1)
    }

    pub(crate) fn contains_key(&self, key: &K) -> bool {
        self.position(key).is_ok()
    }

    /// Set `key`'s value; returns the one it replaced.
    pub(crate) fn insert(&mut self, key: K, value: V) -> Option<V> {
        match self.position(&key) {
            Ok(at) => Some(std::mem::replace(&mut self.entries[at].1, value)),
            Err(at) => {
                self.insert_at(at, key, value);
                None
            }
        }
    }

    /// `key`'s value, inserting `value` first if there is none (`BTreeMap`'s
    /// `entry(key).or_insert(value)`).
    pub(crate) fn get_or_insert(&mut self, key: K, value: V) -> &mut V {
        let at = match self.position(&key) {
            Ok(at) => at,
            Err(at) => {
                self.insert_at(at, key, value);
                at
            }
        };
        &mut self.entries[at].1
    }

    fn insert_at(&mut self, at: usize, key: K, value: V) {
        // Grow from exactly one entry by doubling: a 3-node group's leader holds two, not the
        // four a `Vec` starts with.
        if self.entries.len() == self.entries.capacity() {
            self.entries.reserve_exact(self.entries.len().max(1));
        }
        self.entries.insert(at, (key, value));
    }

    /// How many entries there are.
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    /// Keep only the entries for which `keep` returns `true`.
    pub(crate) fn retain(&mut self, mut keep: impl FnMut(&K, &mut V) -> bool) {
        self.entries.retain_mut(|(k, v)| keep(k, v));
    }

    /// The entries, in key order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (&K, &V)> {
        self.entries.iter().map(|(k, v)| (k, v))
    }

    /// The keys, in order.
    pub(crate) fn keys(&self) -> impl Iterator<Item = &K> {
        self.entries.iter().map(|(k, _)| k)
    }

    /// The values, in key order.
    pub(crate) fn values(&self) -> impl Iterator<Item = &V> {
        self.entries.iter().map(|(_, v)| v)
    }

    /// The entries, in key order, with values to change.
    pub(crate) fn iter_mut(&mut self) -> impl Iterator<Item = (&K, &mut V)> {
        self.entries.iter_mut().map(|(k, v)| (&*k, v))
    }

    /// Whether there is no entry.
    pub(crate) fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Remove every entry, and hand back the memory.
    pub(crate) fn clear(&mut self) {
        self.entries = Vec::new();
    }

    /// Remove every entry, handing back the values, and the memory.
    pub(crate) fn take_values(&mut self) -> impl Iterator<Item = V> {
        std::mem::take(&mut self.entries).into_iter().map(|(_, v)| v)
    }
}

impl<K: Ord + Copy, V> Extend<(K, V)> for TargetMap<K, V> {
    fn extend<I: IntoIterator<Item = (K, V)>>(&mut self, iter: I) {
        for (k, v) in iter {
            self.insert(k, v);
        }
    }
}

impl<K: Ord + Copy, V> FromIterator<(K, V)> for TargetMap<K, V> {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> Self {
        let mut map = Self::new();
        map.extend(iter);
        map
    }
}

impl<K: Ord + Copy, V, const N: usize> From<[(K, V); N]> for TargetMap<K, V> {
    fn from(entries: [(K, V); N]) -> Self {
        entries.into_iter().collect()
    }
}

impl<'a, K, V> IntoIterator for &'a TargetMap<K, V> {
    type Item = (&'a K, &'a V);
    type IntoIter = std::iter::Map<std::slice::Iter<'a, (K, V)>, fn(&'a (K, V)) -> (&'a K, &'a V)>;

    fn into_iter(self) -> Self::IntoIter {
        self.entries.iter().map(|(k, v)| (k, v))
    }
}

impl<K: fmt::Debug, V: fmt::Debug> fmt::Debug for TargetMap<K, V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.entries.iter().map(|(k, v)| (k, v))).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::TargetMap;

    #[test]
    fn entries_stay_sorted_and_unique_whatever_the_order_of_inserts() {
        let mut map = TargetMap::new();
        for (k, v) in [(3, 'c'), (1, 'a'), (2, 'x'), (2, 'b')] {
            map.insert(k, v);
        }
        assert_eq!(map.iter().map(|(k, v)| (*k, *v)).collect::<Vec<_>>(), vec![(1, 'a'), (2, 'b'), (3, 'c')]);
        assert_eq!(map.get(&2), Some(&'b'));
        assert_eq!(map.get(&4), None);
        assert_eq!(*map.get_or_insert(4, 'd'), 'd');
        assert_eq!(*map.get_or_insert(4, 'z'), 'd', "an existing entry is kept");
        map.retain(|k, _| k % 2 == 0);
        assert_eq!(map, TargetMap::from([(4, 'd'), (2, 'b')]));
        assert!(!map.contains_key(&1));
    }

    #[test]
    fn a_map_of_two_holds_room_for_two() {
        let map: TargetMap<u64, u64> = [(2, 0), (3, 0)].into();
        assert_eq!(map.entries.capacity(), 2);
    }
}
