//! Per-subscription delivery statistics, for the admin page's live view.
//!
//! `/metrics` counts deliveries for the whole host; the admin page shows
//! them per subscription: how many answered SUCCESS, RETRY and DROP, how
//! many are in flight, and how long they took (p50 and p99).
//!
//! Invariant: recording is on the delivery's hot path, so it is a handful
//! of relaxed atomic adds on memory allocated once, at startup, for every
//! subscription: no lock and no allocation per delivery. Latencies go into
//! a histogram of fixed, log-spaced buckets ([`BUCKETS`]: each power of two
//! of microseconds split in four), so a percentile read from it is the
//! upper edge of its bucket: at most 25% above the true value, which is
//! plenty to tell 2 ms from 20 ms. Readers take a [`Snapshot`] and compute rates and
//! percentiles from the difference of two ([`Snapshot::since`]).

use crate::contract::Status;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

/// Sub-buckets per power of two, of equal width: a bucket's upper edge is
/// at most 1.25 times its lower one.
const PER_OCTAVE: usize = 4;
/// Octaves of microseconds covered: 1 µs up to 2^36 µs (19 hours); longer
/// deliveries go into the last bucket.
const OCTAVES: usize = 36;
/// How many buckets each subscription's histogram has.
pub const BUCKETS: usize = PER_OCTAVE * OCTAVES;

/// The statistics of every subscription, by its index in the manifest's
/// `[[trigger.pubsub]]` list.
pub struct SubscriptionStats {
    subscriptions: Box<[One]>,
}

/// One subscription's counters.
struct One {
    success: AtomicU64,
    retry: AtomicU64,
    drop: AtomicU64,
    in_flight: AtomicU64,
    latency: [AtomicU64; BUCKETS],
}

impl One {
    fn new() -> One {
        One {
            success: AtomicU64::new(0),
            retry: AtomicU64::new(0),
            drop: AtomicU64::new(0),
            in_flight: AtomicU64::new(0),
            latency: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }
}

/// Counts a delivery in flight until dropped (see [`SubscriptionStats::enter`]).
pub struct InFlightGuard<'a>(Option<&'a AtomicU64>);

impl Drop for InFlightGuard<'_> {
    fn drop(&mut self) {
        if let Some(gauge) = self.0 {
            gauge.fetch_sub(1, Relaxed);
        }
    }
}

/// The bucket a latency of `micros` falls in: its octave (the position of
/// its top bit) and the next two bits below it.
fn bucket(micros: u64) -> usize {
    if micros < 2 {
        return 0;
    }
    let octave = 63 - micros.leading_zeros() as usize;
    let fraction = if octave >= 2 {
        ((micros >> (octave - 2)) & 3) as usize
    } else {
        ((micros << (2 - octave)) & 3) as usize
    };
    (octave * PER_OCTAVE + fraction).min(BUCKETS - 1)
}

/// The upper edge of bucket `index`, in microseconds: what a percentile
/// that lands in it reads as.
fn upper_edge(index: usize) -> f64 {
    let octave = (index / PER_OCTAVE) as i32;
    let fraction = (index % PER_OCTAVE) as f64;
    2f64.powi(octave) * (1.0 + (fraction + 1.0) / PER_OCTAVE as f64)
}

impl SubscriptionStats {
    /// Statistics for `subscriptions` subscriptions, all at zero.
    pub fn new(subscriptions: usize) -> SubscriptionStats {
        SubscriptionStats {
            subscriptions: (0..subscriptions).map(|_| One::new()).collect(),
        }
    }

    /// Counts one delivery of `subscription` in flight until the guard is
    /// dropped. An unknown index counts nothing.
    pub fn enter(&self, subscription: usize) -> InFlightGuard<'_> {
        let gauge = self.subscriptions.get(subscription).map(|s| &s.in_flight);
        if let Some(gauge) = gauge {
            gauge.fetch_add(1, Relaxed);
        }
        InFlightGuard(gauge)
    }

    /// Records one delivery of `subscription`: its answer and how long it
    /// took. Two atomic adds.
    pub fn record(&self, subscription: usize, status: Status, took: Duration) {
        let Some(s) = self.subscriptions.get(subscription) else {
            return;
        };
        let counter = match status {
            Status::Success => &s.success,
            Status::Retry => &s.retry,
            Status::Drop => &s.drop,
        };
        counter.fetch_add(1, Relaxed);
        let micros = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        s.latency[bucket(micros)].fetch_add(1, Relaxed);
    }

    /// Every subscription's counters as they are now.
    pub fn snapshot(&self) -> Vec<Snapshot> {
        self.subscriptions
            .iter()
            .map(|s| Snapshot {
                success: s.success.load(Relaxed),
                retry: s.retry.load(Relaxed),
                drop: s.drop.load(Relaxed),
                in_flight: s.in_flight.load(Relaxed),
                latency: s.latency.iter().map(|b| b.load(Relaxed)).collect(),
            })
            .collect()
    }
}

/// One subscription's counters at one moment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    pub success: u64,
    pub retry: u64,
    pub drop: u64,
    pub in_flight: u64,
    /// Deliveries per latency bucket.
    latency: Vec<u64>,
}

impl Snapshot {
    /// Every delivery, whatever its answer.
    pub fn delivered(&self) -> u64 {
        self.success + self.retry + self.drop
    }

    /// What happened between `earlier` and this one (the gauge is this
    /// one's).
    pub fn since(&self, earlier: &Snapshot) -> Snapshot {
        Snapshot {
            success: self.success.saturating_sub(earlier.success),
            retry: self.retry.saturating_sub(earlier.retry),
            drop: self.drop.saturating_sub(earlier.drop),
            in_flight: self.in_flight,
            latency: self
                .latency
                .iter()
                .zip(&earlier.latency)
                .map(|(now, then)| now.saturating_sub(*then))
                .collect(),
        }
    }

    /// The latency under which a fraction `q` (0 to 1) of the deliveries
    /// counted here took, as the upper edge of its bucket; `None` with no
    /// deliveries.
    pub fn percentile(&self, q: f64) -> Option<Duration> {
        let total: u64 = self.latency.iter().sum();
        if total == 0 {
            return None;
        }
        // The rank of the delivery at q, counted from 1.
        let rank = ((q * total as f64).ceil() as u64).clamp(1, total);
        let mut seen = 0;
        for (index, count) in self.latency.iter().enumerate() {
            seen += count;
            if seen >= rank {
                return Some(Duration::from_nanos((upper_edge(index) * 1000.0) as u64));
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_log_spaced_and_a_value_is_below_its_upper_edge() {
        let mut last = 0;
        for micros in [1u64, 2, 3, 5, 8, 100, 1_000, 12_345, 1_000_000, 60_000_000] {
            let b = bucket(micros);
            assert!(b >= last, "{micros} µs went down to bucket {b}");
            last = b;
            let edge = upper_edge(b);
            assert!(
                micros as f64 <= edge && edge <= micros as f64 * 1.26 + 1.0,
                "{micros} µs is in bucket {b}, whose upper edge is {edge}"
            );
        }
        assert_eq!(bucket(u64::MAX), BUCKETS - 1);
    }

    #[test]
    fn percentiles_come_from_the_histogram_within_a_bucket() {
        let stats = SubscriptionStats::new(2);
        // 98 fast deliveries of 1 ms, 2 slow ones of 200 ms.
        for _ in 0..98 {
            stats.record(1, Status::Success, Duration::from_millis(1));
        }
        stats.record(1, Status::Retry, Duration::from_millis(200));
        stats.record(1, Status::Drop, Duration::from_millis(200));
        let snapshot = &stats.snapshot()[1];
        assert_eq!(
            (snapshot.success, snapshot.retry, snapshot.drop),
            (98, 1, 1)
        );
        let p50 = snapshot.percentile(0.5).unwrap();
        let p99 = snapshot.percentile(0.99).unwrap();
        assert!(
            p50 >= Duration::from_millis(1) && p50 < Duration::from_micros(1_200),
            "{p50:?}"
        );
        assert!(
            p99 >= Duration::from_millis(200) && p99 < Duration::from_millis(240),
            "{p99:?}"
        );
        assert_eq!(stats.snapshot()[0].percentile(0.5), None, "no deliveries");
    }

    #[test]
    fn a_difference_of_snapshots_is_what_happened_in_between() {
        let stats = SubscriptionStats::new(1);
        stats.record(0, Status::Success, Duration::from_secs(1));
        let before = stats.snapshot().remove(0);
        stats.record(0, Status::Success, Duration::from_millis(3));
        stats.record(0, Status::Success, Duration::from_millis(3));
        let guard = stats.enter(0);
        let after = stats.snapshot().remove(0);
        let window = after.since(&before);
        assert_eq!(window.delivered(), 2);
        assert_eq!(window.in_flight, 1);
        assert!(window.percentile(0.99).unwrap() < Duration::from_millis(4));
        drop(guard);
        assert_eq!(stats.snapshot()[0].in_flight, 0);
        // An unknown subscription counts nothing and does not panic.
        stats.record(7, Status::Drop, Duration::ZERO);
        drop(stats.enter(7));
    }
}
