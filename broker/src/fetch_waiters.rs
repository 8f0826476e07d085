//! Fetches parked until their partitions have new data, watched per partition (Kafka's fetch
//! purgatory, keyed by partition): an append wakes only the fetches that asked for that
//! partition, not every parked fetch on the broker, so a broker hosting thousands of partitions
//! does not re-read every follower's whole fetch on every append anywhere.
//!
//! A parked fetch owns one [`Notify`] and registers it with each partition it reads, once per
//! request; a partition holds only weak references, so a finished fetch costs nothing but a dead
//! entry, which the next registration on that partition removes. A wake-up is `notify_one`: it
//! leaves a permit when the fetch is not waiting yet, so one that arrives between a fetch's read
//! and its wait is not lost.

use std::sync::{Arc, Mutex, Weak};

use tokio::sync::Notify;

/// One partition's parked fetches.
#[derive(Debug, Default)]
pub struct FetchWaiters {
    waiting: Mutex<Vec<Weak<Notify>>>,
}

impl FetchWaiters {
    /// Registers a parked fetch's wake-up (registering it again changes nothing), dropping
    /// those of fetches that have finished.
    pub fn watch(&self, waiter: &Arc<Notify>) {
        let mut waiting = self.lock();
        waiting.retain(|w| w.strong_count() > 0);
        if !waiting
            .iter()
            .any(|w| std::ptr::eq(w.as_ptr(), Arc::as_ptr(waiter)))
        {
            waiting.push(Arc::downgrade(waiter));
        }
    }

    /// Wakes every fetch parked on this partition: new records, or a moved high watermark.
    pub fn wake(&self) {
        for waiter in self.lock().iter().filter_map(Weak::upgrade) {
            waiter.notify_one();
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Weak<Notify>>> {
        self.waiting
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.lock().len()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn a_wake_before_the_wait_is_kept_and_only_watchers_wake() {
        let (a, b) = (FetchWaiters::default(), FetchWaiters::default());
        let fetch = Arc::new(Notify::new());
        a.watch(&fetch);
        // B's append is not this fetch's business.
        b.wake();
        let waited = tokio::time::timeout(Duration::from_millis(50), fetch.notified()).await;
        assert!(waited.is_err(), "woken by a partition it does not watch");
        // A's append lands between the fetch's read and its wait: the permit stays.
        a.wake();
        tokio::time::timeout(Duration::from_secs(5), fetch.notified())
            .await
            .expect("woken by its partition");
    }

    #[test]
    fn watching_again_registers_once_and_finished_fetches_are_dropped() {
        let partition = FetchWaiters::default();
        let fetch = Arc::new(Notify::new());
        partition.watch(&fetch);
        partition.watch(&fetch);
        assert_eq!(partition.len(), 1);
        for _ in 0..100 {
            partition.watch(&Arc::new(Notify::new()));
        }
        // Each registration removes the fetches that finished before it.
        assert_eq!(partition.len(), 2);
        drop(fetch);
        partition.watch(&Arc::new(Notify::new()));
        assert_eq!(partition.len(), 1);
        partition.wake();
    }
}
