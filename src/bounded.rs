//! A map bounded by entries and bytes, for caches read on the query path (signatures, encoded
//! answers). Keys are bytes and may come from the network (query names), so they are hashed
//! with a keyed hash. Sharded, each shard in two generations: when the young one fills, it
//! becomes the old one and the old one is dropped; a hit in the old generation moves back to
//! the young. So the map holds at most its limits (each shard and generation takes half of its
//! share), what is asked for keeps its place, and no entry carries a clock. Knows no other
//! module.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::{Mutex, MutexGuard, PoisonError};

const SHARDS: usize = 16;

pub struct BoundedMap<V> {
    shards: Box<[Mutex<Shard<V>>]>,
    hasher: RandomState,
    /// Per shard and generation.
    entries: usize,
    bytes: usize,
}

struct Shard<V> {
    young: Generation<V>,
    old: Generation<V>,
}

struct Generation<V> {
    map: HashMap<Box<[u8]>, (V, usize), RandomState>,
    bytes: usize,
}

impl<V> Default for Generation<V> {
    fn default() -> Self {
        Generation {
            map: HashMap::default(),
            bytes: 0,
        }
    }
}

impl<V: Clone> BoundedMap<V> {
    /// A map holding at most `entries` entries and about `bytes` bytes (as the sizes given to
    /// [`BoundedMap::insert`] count them).
    pub fn new(entries: usize, bytes: usize) -> BoundedMap<V> {
        BoundedMap {
            shards: (0..SHARDS)
                .map(|_| {
                    Mutex::new(Shard {
                        young: Generation::default(),
                        old: Generation::default(),
                    })
                })
                .collect(),
            hasher: RandomState::new(),
            entries: (entries / SHARDS / 2).max(1),
            bytes: (bytes / SHARDS / 2).max(1),
        }
    }

    /// The keyed hash of `key` (stable for this map).
    pub fn hash(&self, key: &[u8]) -> u64 {
        self.hasher.hash_one(key)
    }

    fn shard(&self, key: &[u8]) -> MutexGuard<'_, Shard<V>> {
        let at = self.hash(key) as usize % SHARDS;
        self.shards[at]
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// The value under `key` if there is one and `fresh` holds for it; a stale one is left to
    /// be replaced.
    pub fn get(&self, key: &[u8], fresh: impl Fn(&V) -> bool) -> Option<V> {
        let mut shard = self.shard(key);
        if let Some((value, _)) = shard.young.map.get(key) {
            return fresh(value).then(|| value.clone());
        }
        let (key, (value, size)) = shard.old.map.remove_entry(key)?;
        shard.old.bytes -= size;
        if !fresh(&value) {
            return None;
        }
        self.place(&mut shard, key, value.clone(), size);
        Some(value)
    }

    /// Puts `value` under `key`, counting `size` bytes for it.
    pub fn insert(&self, key: Box<[u8]>, value: V, size: usize) {
        let mut shard = self.shard(&key);
        self.place(&mut shard, key, value, size);
    }

    fn place(&self, shard: &mut Shard<V>, key: Box<[u8]>, value: V, size: usize) {
        let size = size + key.len() + 48;
        if shard.young.map.len() >= self.entries || shard.young.bytes + size > self.bytes {
            shard.old = std::mem::take(&mut shard.young);
        }
        if let Some((_, replaced)) = shard.young.map.insert(key, (value, size)) {
            shard.young.bytes -= replaced;
        }
        shard.young.bytes += size;
    }

    /// Entries and bytes held.
    pub fn size(&self) -> (usize, usize) {
        self.fold((0, 0), |(n, b), _, size| (n + 1, b + size))
    }

    /// Folds over every entry (value and size), shard by shard.
    pub fn fold<T>(&self, init: T, mut f: impl FnMut(T, &V, usize) -> T) -> T {
        let mut acc = init;
        for shard in self.shards.iter() {
            let s = shard.lock().unwrap_or_else(PoisonError::into_inner);
            for (value, size) in s.young.map.values().chain(s.old.map.values()) {
                acc = f(acc, value, *size);
            }
        }
        acc
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stays_within_its_limits_and_keeps_what_is_asked_for() {
        let map = BoundedMap::new(64, 1 << 20);
        map.insert(Box::from(&b"kept"[..]), 0u32, 8);
        for i in 0u32..10_000 {
            map.insert(Box::from(&i.to_be_bytes()[..]), i, 64);
            // Asked for all along: never dropped.
            assert_eq!(map.get(b"kept", |_| true), Some(0), "after {i}");
        }
        assert!(map.size().0 <= 64 + SHARDS, "{:?}", map.size());
        let map = BoundedMap::new(1 << 20, 64 << 10);
        for i in 0u32..10_000 {
            map.insert(Box::from(&i.to_be_bytes()[..]), i, 64);
        }
        assert!(map.size().1 <= 64 << 10, "{:?}", map.size());
        assert_eq!(map.get(&9_999u32.to_be_bytes(), |_| true), Some(9_999));
        assert_eq!(map.get(&9_999u32.to_be_bytes(), |&v| v < 10), None, "stale");
    }
}
