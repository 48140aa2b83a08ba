//! Values WeChat hands out with a lifetime (the access token, the card api_ticket), kept until
//! shortly before they expire.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Mutex;

/// Refresh this long before WeChat says a value expires: WeChat issues the next one about five
/// minutes before expiry and both work during the overlap.
pub const REFRESH_MARGIN: Duration = Duration::from_secs(300);

/// How long a value with `lifetime` is used before it is fetched again.
pub fn usable_for(lifetime: Duration) -> Duration {
    if lifetime > REFRESH_MARGIN * 2 {
        lifetime - REFRESH_MARGIN
    } else {
        lifetime / 2
    }
}

pub struct Expiring<T> {
    slot: Mutex<Option<(T, Instant)>>,
}

impl<T> Default for Expiring<T> {
    fn default() -> Self {
        Self { slot: Mutex::new(None) }
    }
}

impl<T: Clone + PartialEq> Expiring<T> {
    /// The cached value, or the one `fetch` returns with its lifetime. Concurrent callers wait for
    /// one fetch instead of each asking WeChat.
    pub async fn get_or_fetch<E, Fut>(&self, fetch: impl FnOnce() -> Fut) -> Result<T, E>
    where
        Fut: Future<Output = Result<(T, Duration), E>>,
    {
        let mut slot = self.slot.lock().await;
        if let Some((value, _)) = slot.as_ref().filter(|(_, refresh_at)| Instant::now() < *refresh_at) {
            return Ok(value.clone());
        }
        let (value, lifetime) = fetch().await?;
        // A lifetime too long to add to the clock is kept as "until the process ends".
        let now = Instant::now();
        let refresh_at = now
            .checked_add(usable_for(lifetime))
            .unwrap_or(now + Duration::from_secs(366 * 24 * 3600));
        *slot = Some((value.clone(), refresh_at));
        Ok(value)
    }

    /// Drops `stale` after WeChat rejected it; a value another caller already replaced stays.
    pub async fn forget(&self, stale: &T) {
        let mut slot = self.slot.lock().await;
        if slot.as_ref().is_some_and(|(value, _)| value == stale) {
            *slot = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_refreshed_before_expiry() {
        assert_eq!(usable_for(Duration::from_secs(7200)), Duration::from_secs(6900));
        assert_eq!(usable_for(Duration::from_secs(400)), Duration::from_secs(200));
        assert_eq!(usable_for(Duration::ZERO), Duration::ZERO);
    }

    #[tokio::test]
    async fn fetches_once_until_forgotten() {
        let cache = Expiring::<String>::default();
        let calls = std::sync::atomic::AtomicU32::new(0);
        let fetch = || async {
            let n = calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            Ok::<_, ()>((format!("v{n}"), Duration::from_secs(7200)))
        };
        assert_eq!(cache.get_or_fetch(fetch).await.unwrap(), "v0");
        assert_eq!(cache.get_or_fetch(fetch).await.unwrap(), "v0");
        cache.forget(&"other".to_owned()).await;
        assert_eq!(
            cache.get_or_fetch(fetch).await.unwrap(),
            "v0",
            "forgetting another value keeps ours"
        );
        cache.forget(&"v0".to_owned()).await;
        assert_eq!(cache.get_or_fetch(fetch).await.unwrap(), "v1");
        // A value with no life left is fetched every time.
        let short = Expiring::<String>::default();
        short
            .get_or_fetch(|| async { Ok::<_, ()>(("a".to_owned(), Duration::ZERO)) })
            .await
            .unwrap();
        let again = short
            .get_or_fetch(|| async { Ok::<_, ()>(("b".to_owned(), Duration::ZERO)) })
            .await;
        assert_eq!(again.unwrap(), "b");
    }
}

/// An image and when it was stored.
type Entry = (Arc<Vec<u8>>, Instant);

/// Images by request, for a while: repeated requests for the same mini-program code are served
/// from memory instead of spending WeChat's quota. Bounded in bytes; the oldest go first.
pub struct ImageCache {
    ttl: Duration,
    max_bytes: usize,
    entries: std::sync::Mutex<HashMap<String, Entry>>,
}

impl ImageCache {
    pub fn new(ttl: Duration, max_bytes: usize) -> Self {
        Self {
            ttl,
            max_bytes,
            entries: Default::default(),
        }
    }

    pub fn get(&self, key: &str) -> Option<Arc<Vec<u8>>> {
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries
            .get(key)
            .filter(|(_, at)| at.elapsed() < self.ttl)
            .map(|(image, _)| image.clone())
    }

    pub fn put(&self, key: String, image: Arc<Vec<u8>>) {
        if self.ttl.is_zero() || image.len() > self.max_bytes {
            return;
        }
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries.retain(|_, (_, at)| at.elapsed() < self.ttl);
        let mut total: usize = entries.values().map(|(i, _)| i.len()).sum();
        while total + image.len() > self.max_bytes {
            let Some(oldest) = entries.iter().min_by_key(|(_, (_, at))| *at).map(|(k, _)| k.clone()) else {
                break;
            };
            if let Some((gone, _)) = entries.remove(&oldest) {
                total -= gone.len();
            }
        }
        entries.insert(key, (image, Instant::now()));
    }
}

#[cfg(test)]
mod image_cache_tests {
    use super::*;

    #[test]
    fn serves_within_ttl_and_stays_within_its_budget() {
        let cache = ImageCache::new(Duration::from_secs(60), 10);
        cache.put("a".into(), Arc::new(vec![1; 4]));
        cache.put("b".into(), Arc::new(vec![2; 4]));
        assert_eq!(cache.get("a").unwrap().len(), 4);
        cache.put("c".into(), Arc::new(vec![3; 4]));
        assert!(cache.get("a").is_none(), "the oldest made room");
        assert!(cache.get("b").is_some() && cache.get("c").is_some());
        cache.put("huge".into(), Arc::new(vec![0; 11]));
        assert!(cache.get("huge").is_none(), "larger than the whole budget: not kept");

        let off = ImageCache::new(Duration::ZERO, 10);
        off.put("a".into(), Arc::new(vec![1]));
        assert!(off.get("a").is_none());
    }
}
