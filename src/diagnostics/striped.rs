//! A counter split into cache-line-sized slots, one per thread (assigned round-robin), so that
//! threads counting the same thing never contend for one cache line.
//!
//! `emit()` runs on the host's request threads and must cost about as much as one channel send.
//! A single shared atomic written by every caller and by the gateway actor (the `emitted`
//! ledger, the gateway stage's pending gauge, the count of `emit()` calls in progress) bounces
//! its cache line between cores on every event; here each thread adds to its own slot and a
//! reader (a stats snapshot, shutdown) sums the slots. Reads are rare and may be a little
//! stale, like any snapshot of concurrent counters; a slot is only ever changed by atomic adds,
//! so the sum is exact once writers are quiet.

use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};

/// Slots per counter: enough for the producer threads of a busy host plus the gateway's own.
const SLOTS: usize = 16;

/// One slot on its own cache line pair (128 bytes: adjacent-line prefetching pairs lines).
#[derive(Debug, Default)]
#[repr(align(128))]
struct Slot(AtomicI64);

/// A striped signed counter.
#[derive(Debug)]
pub(crate) struct Striped {
    slots: Box<[Slot]>,
}

impl Default for Striped {
    fn default() -> Self {
        Striped {
            slots: (0..SLOTS).map(|_| Slot::default()).collect(),
        }
    }
}

static NEXT_SLOT: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    static MY_SLOT: usize = NEXT_SLOT.fetch_add(1, Ordering::Relaxed) % SLOTS;
}

fn my_slot() -> usize {
    // During thread teardown the thread-local may be gone: slot 0 is as good as any.
    MY_SLOT.try_with(|s| *s).unwrap_or(0)
}

impl Striped {
    /// Adds `n` (which may be negative) on this thread's slot.
    pub(crate) fn add(&self, n: i64, order: Ordering) {
        self.slots[my_slot()].0.fetch_add(n, order);
    }

    /// The sum of every slot.
    pub(crate) fn sum(&self, order: Ordering) -> i64 {
        self.slots.iter().map(|s| s.0.load(order)).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn sums_across_threads() {
        let c = Arc::new(Striped::default());
        let threads: Vec<_> = (0..8)
            .map(|i| {
                let c = c.clone();
                std::thread::spawn(move || {
                    for _ in 0..1000 {
                        c.add(1, Ordering::Relaxed);
                    }
                    if i % 2 == 0 {
                        c.add(-500, Ordering::Relaxed);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(c.sum(Ordering::SeqCst), 8 * 1000 - 4 * 500);
    }
}
