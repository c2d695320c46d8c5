//! Delivery counters, served at `GET /metrics` in Prometheus' text format.
//!
//! They are how an operator sees what the at-least-once machinery did:
//! a message that ran out of attempts without a dead-letter topic is not
//! silently gone, it is counted here (and logged).

use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;
use tokio::sync::Notify;

#[derive(Debug, Default)]
pub struct Metrics {
    pub published: AtomicU64,
    pub deliveries_success: AtomicU64,
    pub deliveries_retry: AtomicU64,
    pub deliveries_drop: AtomicU64,
    /// Deliveries handled by an instance kept from an earlier delivery
    /// (`instance_reuse`), not a fresh one.
    pub deliveries_on_reused_instances: AtomicU64,
    /// HTTP requests handled by an instance kept from an earlier request.
    pub http_requests_on_reused_instances: AtomicU64,
    pub bulk_batches: AtomicU64,
    pub dead_lettered: AtomicU64,
    pub discarded_max_attempts: AtomicU64,
    pub discarded_expired: AtomicU64,
    pub in_flight: AtomicU64,
    /// Requests refused or dropped for a body over `--max-body-size`.
    pub bodies_too_large: AtomicU64,
    /// Publishes the embedded broker refused because a queue was full.
    pub publishes_refused_queue_full: AtomicU64,
    /// Guest publishes to a topic their manifest does not allow.
    pub publishes_forbidden: AtomicU64,
    /// Guest stdout/stderr bytes not logged (`engine::guest_output`): past
    /// an instance's cap, past a line's cap, or with `--guest-output off`.
    pub guest_output_dropped_volume: AtomicU64,
    pub guest_output_dropped_line: AtomicU64,
    pub guest_output_dropped_off: AtomicU64,
}

impl Metrics {
    pub fn inc(counter: &AtomicU64) {
        counter.fetch_add(1, Relaxed);
    }

    /// The counters in Prometheus' text exposition format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let mut metric = |name: &str, kind: &str, help: &str, rows: &[(&str, &AtomicU64)]| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
            for (labels, value) in rows {
                let _ = writeln!(out, "{name}{labels} {}", value.load(Relaxed));
            }
        };
        metric(
            "host_bridge_messages_published_total",
            "counter",
            "Messages accepted by the embedded broker.",
            &[("", &self.published)],
        );
        metric(
            "host_bridge_deliveries_total",
            "counter",
            "Deliveries to subscriber guests, by outcome (a trap or timeout counts as retry).",
            &[
                ("{outcome=\"success\"}", &self.deliveries_success),
                ("{outcome=\"retry\"}", &self.deliveries_retry),
                ("{outcome=\"drop\"}", &self.deliveries_drop),
            ],
        );
        metric(
            "host_bridge_deliveries_on_reused_instances_total",
            "counter",
            "Deliveries handled by an instance kept from an earlier delivery (instance_reuse).",
            &[("", &self.deliveries_on_reused_instances)],
        );
        metric(
            "host_bridge_http_requests_on_reused_instances_total",
            "counter",
            "HTTP requests handled by an instance kept from an earlier request (instance_reuse).",
            &[("", &self.http_requests_on_reused_instances)],
        );
        metric(
            "host_bridge_bulk_batches_total",
            "counter",
            "Bulk deliveries (batches) received from the Dapr sidecar.",
            &[("", &self.bulk_batches)],
        );
        metric(
            "host_bridge_messages_dead_lettered_total",
            "counter",
            "Messages sent to a dead-letter topic.",
            &[("", &self.dead_lettered)],
        );
        metric(
            "host_bridge_messages_discarded_total",
            "counter",
            "Messages given up on with no dead-letter topic to send them to.",
            &[
                ("{reason=\"max_attempts\"}", &self.discarded_max_attempts),
                ("{reason=\"expired\"}", &self.discarded_expired),
            ],
        );
        metric(
            "host_bridge_publishes_refused_total",
            "counter",
            "Publishes refused: by the embedded broker (a full queue), or because the component may not publish there.",
            &[
                (
                    "{reason=\"queue_full\"}",
                    &self.publishes_refused_queue_full,
                ),
                ("{reason=\"forbidden\"}", &self.publishes_forbidden),
            ],
        );
        metric(
            "host_bridge_guest_output_dropped_bytes_total",
            "counter",
            "Bytes guests wrote to stdout/stderr that were not logged: past an instance's cap, past a line's cap, or with --guest-output off.",
            &[
                (
                    "{reason=\"instance_cap\"}",
                    &self.guest_output_dropped_volume,
                ),
                ("{reason=\"line_cap\"}", &self.guest_output_dropped_line),
                ("{reason=\"off\"}", &self.guest_output_dropped_off),
            ],
        );
        metric(
            "host_bridge_bodies_too_large_total",
            "counter",
            "Requests and deliveries whose body was over --max-body-size.",
            &[("", &self.bodies_too_large)],
        );
        metric(
            "host_bridge_deliveries_in_flight",
            "gauge",
            "Messages currently being delivered or waiting to be redelivered.",
            &[("", &self.in_flight)],
        );
        out
    }
}

/// The deliveries in flight: the `in_flight` gauge, and a way for shutdown
/// to wait until it drops to zero. Both backends count through it.
pub struct InFlight {
    metrics: Arc<Metrics>,
    /// Signalled whenever the count drops to zero.
    idle: Notify,
}

impl InFlight {
    pub fn new(metrics: Arc<Metrics>) -> InFlight {
        InFlight {
            metrics,
            idle: Notify::new(),
        }
    }

    /// One more delivery in flight; pair it with [`InFlight::leave`].
    pub fn enter(&self) {
        self.metrics.in_flight.fetch_add(1, Relaxed);
    }

    /// One delivery done with, whatever became of it.
    pub fn leave(&self) {
        if self.metrics.in_flight.fetch_sub(1, Relaxed) == 1 {
            self.idle.notify_waiters();
        }
    }

    /// Counts a delivery in flight until the returned guard drops, so an
    /// abandoned request (the caller hung up) is not counted forever.
    pub fn scope(&self) -> InFlightScope<'_> {
        self.enter();
        InFlightScope(self)
    }

    /// Waits, at most `grace`, for the count to reach zero; returns what is left.
    pub async fn drain(&self, grace: Duration) -> u64 {
        let deadline = tokio::time::Instant::now() + grace;
        loop {
            let idle = self.idle.notified();
            let left = self.metrics.in_flight.load(Relaxed);
            if left == 0 || tokio::time::timeout_at(deadline, idle).await.is_err() {
                return self.metrics.in_flight.load(Relaxed);
            }
        }
    }
}

/// See [`InFlight::scope`].
pub struct InFlightScope<'a>(&'a InFlight);

impl Drop for InFlightScope<'_> {
    fn drop(&mut self) {
        self.0.leave();
    }
}
