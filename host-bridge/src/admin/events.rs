//! `GET /admin/events`: the page's live view, as a `text/event-stream`.
//!
//! Every [`INTERVAL`] the stream sends one `stats` event: per subscription,
//! the deliveries by answer, those in flight, deliveries per second (from
//! the difference with the last snapshot) and p50/p99 over the last
//! [`WINDOW`] snapshots; and the generations of the dead-letter list and of
//! the components, so the page reads those again only when they changed.
//!
//! The browser's `EventSource` cannot send an `Authorization` header, so
//! the page reads this with `fetch()`; the format is plain SSE all the same.
//!
//! Invariants, each kept here:
//!
//! - **Bounded.** At most [`MAX_STREAMS`] streams are open at once; one
//!   more is refused with `429`. Each holds a few snapshots, nothing more.
//! - **A stream ends when its client goes.** The stream is the response
//!   body itself, with no task of its own: when the client disconnects,
//!   hyper drops the body, and with it the stream and its permit.
//! - **Shutdown is not held up.** The listener's graceful shutdown waits
//!   for every response to finish, and a stream never would; so
//!   [`Streams::close`], called by `up` before it stops the listener, ends
//!   every stream.

use crate::broker::dead_letters::{DeadLetters, now_unix_ms};
use crate::broker::stats::{Snapshot, SubscriptionStats};
use crate::deploy::Deployer;
use crate::server::{self, Response};
use bytes::Bytes;
use http::StatusCode;
use http_body::Frame;
use http_body_util::{BodyExt, StreamBody};
use serde_json::{Value, json};
use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};

/// The most live streams open at once (SECURITY.md).
pub const MAX_STREAMS: usize = 16;
/// How often a stream sends a snapshot.
pub const INTERVAL: Duration = Duration::from_secs(1);
/// How many snapshots back the percentiles reach: about ten seconds.
pub const WINDOW: usize = 10;

/// The open streams, and how to end them all.
pub struct Streams {
    open: Arc<Semaphore>,
    closing: watch::Sender<bool>,
}

impl Streams {
    pub fn new() -> Streams {
        Streams {
            open: Arc::new(Semaphore::new(MAX_STREAMS)),
            closing: watch::Sender::new(false),
        }
    }

    /// Ends every stream, and refuses new ones.
    pub fn close(&self) {
        self.closing.send_replace(true);
        self.open.close();
    }

    /// A new stream, or `429` when [`MAX_STREAMS`] are open.
    pub fn open(
        &self,
        stats: Arc<SubscriptionStats>,
        dead_letters: Arc<dyn DeadLetters>,
        deployer: Arc<Deployer>,
    ) -> Response {
        let Ok(permit) = self.open.clone().try_acquire_owned() else {
            return server::error(
                StatusCode::TOO_MANY_REQUESTS,
                "ERR_TOO_MANY_STREAMS",
                format!(
                    "{MAX_STREAMS} live streams are open already, the most the admin API serves; close a page"
                ),
            );
        };
        let mut interval = tokio::time::interval(INTERVAL);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let stream = Stream {
            _permit: permit,
            interval,
            closing: self.closing.subscribe(),
            history: VecDeque::with_capacity(WINDOW + 1),
            stats,
            dead_letters,
            deployer,
        };
        let frames = futures::stream::unfold(stream, |mut stream| async move {
            tokio::select! {
                _ = stream.interval.tick() => {}
                // Closed, or the sender gone: either way, the end.
                _ = stream.closing.wait_for(|closing| *closing) => return None,
            }
            let event = stream.next_event();
            Some((Ok::<_, Infallible>(Frame::data(event)), stream))
        });
        let body = StreamBody::new(frames)
            .map_err(|e: Infallible| match e {})
            .boxed_unsync();
        let mut response = http::Response::new(body);
        let headers = response.headers_mut();
        headers.insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("text/event-stream"),
        );
        headers.insert(
            http::header::CACHE_CONTROL,
            http::HeaderValue::from_static("no-store"),
        );
        response
    }
}

/// One client's stream.
struct Stream {
    /// Its place among [`MAX_STREAMS`], given back when it is dropped.
    _permit: OwnedSemaphorePermit,
    interval: tokio::time::Interval,
    closing: watch::Receiver<bool>,
    /// The last snapshots, oldest first.
    history: VecDeque<(Instant, Vec<Snapshot>)>,
    stats: Arc<SubscriptionStats>,
    dead_letters: Arc<dyn DeadLetters>,
    deployer: Arc<Deployer>,
}

impl Stream {
    /// The next `stats` event, as SSE.
    fn next_event(&mut self) -> Bytes {
        let now = (Instant::now(), self.stats.snapshot());
        let data = json!({
            "atUnixMs": now_unix_ms(),
            "deadLetters": self.dead_letters.generation(),
            "components": self.deployer.generation(),
            "subscriptions": subscriptions(&now, self.history.back(), self.history.front()),
        });
        self.history.push_back(now);
        while self.history.len() > WINDOW {
            self.history.pop_front();
        }
        Bytes::from(format!("event: stats\ndata: {data}\n\n"))
    }
}

/// Each subscription's figures `now`: counts, the rate since `last`, and
/// percentiles since `oldest` (all time, before there is history).
fn subscriptions(
    now: &(Instant, Vec<Snapshot>),
    last: Option<&(Instant, Vec<Snapshot>)>,
    oldest: Option<&(Instant, Vec<Snapshot>)>,
) -> Vec<Value> {
    let millis = |d: Option<Duration>| d.map(|d| d.as_secs_f64() * 1000.0);
    now.1
        .iter()
        .enumerate()
        .map(|(index, s)| {
            let per_second = last.and_then(|(at, then)| {
                let seconds = now.0.duration_since(*at).as_secs_f64();
                let then = then.get(index)?;
                (seconds > 0.0).then(|| s.since(then).delivered() as f64 / seconds)
            });
            let window = match oldest.and_then(|(_, then)| then.get(index)) {
                Some(then) => s.since(then),
                None => s.clone(),
            };
            json!({
                "index": index,
                "success": s.success,
                "retry": s.retry,
                "drop": s.drop,
                "delivered": s.delivered(),
                "inFlight": s.in_flight,
                "perSecond": per_second.unwrap_or(0.0),
                "p50Ms": millis(window.percentile(0.5)),
                "p99Ms": millis(window.percentile(0.99)),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contract::Status;

    #[test]
    fn rates_come_from_the_last_snapshot_and_percentiles_from_the_window() {
        let stats = SubscriptionStats::new(1);
        let start = Instant::now();
        let first = (start, stats.snapshot());
        for _ in 0..10 {
            stats.record(0, Status::Success, Duration::from_millis(2));
        }
        let now = (start + Duration::from_secs(2), stats.snapshot());
        let figures = subscriptions(&now, Some(&first), Some(&first));
        assert_eq!(figures[0]["delivered"], 10);
        assert_eq!(figures[0]["perSecond"], 5.0);
        let p99 = figures[0]["p99Ms"].as_f64().unwrap();
        assert!((2.0..2.5).contains(&p99), "{p99}");
        // Nothing in the window: no percentile rather than a made-up one.
        let idle = subscriptions(&now, Some(&now), Some(&now));
        assert_eq!(idle[0]["p50Ms"], Value::Null);
    }
}
