//! One worker thread's series. Only the thread that owns a shard writes its series, with plain
//! loads and stores (no read-modify-write, no lock), so a request touches no cache line another
//! core writes. A scrape reads every shard and sums; the shard's map is locked only when a
//! thread meets a new label set, or a scrape walks or prunes it.

use std::{
    cell::RefCell,
    collections::HashMap,
    sync::{
        atomic::{AtomicU64, Ordering::Relaxed},
        Arc, Mutex,
    },
};

use super::{Key, Metrics};

type FastMap<K, V> = HashMap<K, V, foldhash::fast::FixedState>;

/// One label set's numbers on one thread.
pub(super) struct Series {
    /// Requests (or, for a gauge, the gauge's value as a wrapping two's complement).
    pub count: AtomicU64,
    pub request_bytes: AtomicU64,
    pub response_bytes: AtomicU64,
    /// Sum of the durations, in nanoseconds.
    pub nanos: AtomicU64,
    /// Observations per bucket (not cumulative); empty for counters and gauges.
    pub buckets: Box<[AtomicU64]>,
}

impl Series {
    fn new(buckets: usize) -> Series {
        Series {
            count: AtomicU64::new(0),
            request_bytes: AtomicU64::new(0),
            response_bytes: AtomicU64::new(0),
            nanos: AtomicU64::new(0),
            buckets: (0..buckets).map(|_| AtomicU64::new(0)).collect(),
        }
    }
}

/// Adds `n` to a counter only this thread writes.
#[inline]
pub(super) fn add(counter: &AtomicU64, n: u64) {
    counter.store(counter.load(Relaxed).wrapping_add(n), Relaxed);
}

/// The series of one thread, as scrapes see them.
#[derive(Default)]
pub(super) struct Shard {
    pub series: Mutex<FastMap<Key, Arc<Series>>>,
}

/// A thread's view of one [`Metrics`]: its shard and the series it has looked up.
struct Local {
    metrics: u64,
    /// The metrics' epoch when `cache` was filled: a prune bumps it, and the cache is dropped.
    epoch: u64,
    shard: Arc<Shard>,
    cache: FastMap<Key, Arc<Series>>,
}

thread_local! {
    static LOCAL: RefCell<Vec<Local>> = const { RefCell::new(Vec::new()) };
}

impl Metrics {
    /// Runs `f` on this thread's series for `key`, creating it on first use.
    pub(super) fn with_series(&self, key: Key, f: impl FnOnce(&Series)) {
        // A meter dropped while its thread shuts down finds no thread-local: not counted.
        let _ = LOCAL.try_with(|locals| {
            let mut locals = locals.borrow_mut();
            let index = match locals.iter().position(|l| l.metrics == self.id) {
                Some(index) => index,
                None => {
                    let shard = Arc::new(Shard::default());
                    self.shards.lock().unwrap_or_else(|e| e.into_inner()).push(shard.clone());
                    locals.push(Local { metrics: self.id, epoch: 0, shard, cache: FastMap::default() });
                    locals.len() - 1
                }
            };
            let local = &mut locals[index];
            let epoch = self.epoch.load(Relaxed);
            if local.epoch != epoch {
                local.cache.clear();
                local.epoch = epoch;
            }
            if let Some(series) = local.cache.get(&key) {
                return f(series);
            }
            let width = if key.level.has_histogram() { self.settings.buckets.len() } else { 0 };
            let series = {
                let mut shared = local.shard.series.lock().unwrap_or_else(|e| e.into_inner());
                shared.entry(key).or_insert_with(|| Arc::new(Series::new(width))).clone()
            };
            f(&series);
            local.cache.insert(key, series);
        });
    }
}
