//! One async lock per key (an environment, an app's mirror), created on first use and removed
//! when its last user lets go, so the map holds only keys someone is working on.
use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, Mutex};

use tokio::sync::OwnedMutexGuard;

pub(crate) struct KeyedLocks<K> {
    /// Never held across an await: only to find or drop a key's lock.
    map: Arc<Mutex<HashMap<K, Arc<tokio::sync::Mutex<()>>>>>,
}

impl<K> Default for KeyedLocks<K> {
    fn default() -> Self {
        KeyedLocks {
            map: Arc::default(),
        }
    }
}

/// Held while working on one key; dropping it releases the lock and forgets the key when no
/// one else waits for it.
pub(crate) struct KeyedGuard<K: Eq + Hash + Clone> {
    // Dropped before the map is pruned (fields drop in order), so the count below is exact.
    guard: Option<OwnedMutexGuard<()>>,
    key: K,
    map: Arc<Mutex<HashMap<K, Arc<tokio::sync::Mutex<()>>>>>,
}

impl<K: Eq + Hash + Clone> KeyedLocks<K> {
    fn entry(&self, key: &K) -> Arc<tokio::sync::Mutex<()>> {
        lock(&self.map).entry(key.clone()).or_default().clone()
    }

    /// Wait for the key's lock.
    pub(crate) async fn lock(&self, key: &K) -> KeyedGuard<K> {
        let m = self.entry(key);
        KeyedGuard {
            guard: Some(m.lock_owned().await),
            key: key.clone(),
            map: self.map.clone(),
        }
    }

    /// The key's lock if it is free now.
    pub(crate) fn try_lock(&self, key: &K) -> Option<KeyedGuard<K>> {
        let m = self.entry(key);
        let guard = m.try_lock_owned().ok();
        let out = guard.map(|g| KeyedGuard {
            guard: Some(g),
            key: key.clone(),
            map: self.map.clone(),
        });
        if out.is_none() {
            prune(&self.map, key);
        }
        out
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        lock(&self.map).len()
    }
}

impl<K: Eq + Hash + Clone> Drop for KeyedGuard<K> {
    fn drop(&mut self) {
        self.guard.take();
        prune(&self.map, &self.key);
    }
}

/// Forget `key` if nobody but the map holds its lock (no holder, no waiter).
fn prune<K: Eq + Hash>(map: &Mutex<HashMap<K, Arc<tokio::sync::Mutex<()>>>>, key: &K) {
    let mut map = lock(map);
    if map.get(key).is_some_and(|m| Arc::strong_count(m) == 1) {
        map.remove(key);
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn keys_are_forgotten_when_released_and_serialised_while_held() {
        let locks: KeyedLocks<String> = KeyedLocks::default();
        for i in 0..100 {
            let _g = locks.lock(&format!("env-{i}")).await;
        }
        assert_eq!(locks.len(), 0, "released keys must not pile up");

        let held = locks.lock(&"a".to_owned()).await;
        assert!(locks.try_lock(&"a".to_owned()).is_none());
        assert_eq!(locks.len(), 1);
        let waiter = {
            let map = KeyedLocks {
                map: locks.map.clone(),
            };
            tokio::spawn(async move {
                let _g = map.lock(&"a".to_owned()).await;
            })
        };
        tokio::task::yield_now().await;
        drop(held);
        waiter.await.unwrap();
        assert_eq!(locks.len(), 0);
        assert!(locks.try_lock(&"b".to_owned()).is_some());
        assert_eq!(locks.len(), 0);
    }
}
