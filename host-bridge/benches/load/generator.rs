//! The load generator: one keep-alive HTTP/1.1 connection per unit of
//! concurrency, each sending its next request as soon as the last is
//! answered (a closed loop), on the harness's one thread. Every answer is
//! checked against what its [`Workload`] expects.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// What one point of load sends and what it accepts as an answer.
#[derive(Clone, Copy)]
pub(crate) enum Workload {
    /// `POST /orders-events`: a CloudEvent as daprd sends it; wants SUCCESS.
    Delivery,
    /// `POST /order-processor-http`: the same CloudEvent, to the order
    /// processor as a plain `wasi:http` component; wants SUCCESS.
    HttpDelivery,
    /// `POST /orders`: a new order; wants 202.
    PlaceOrder,
    /// `GET /hello`; wants 200.
    Hello,
    /// `POST /v1.0/publish/pubsub/{topic}` on the embedded broker's sidecar
    /// API (or daprd's); wants 204.
    Publish(&'static str),
}

pub(crate) static ORDER_NUMBER: AtomicU64 = AtomicU64::new(0);

/// An order; ids cycle over a thousand, so the state stores stay small.
pub(crate) fn order_json(n: u64) -> String {
    format!(
        r#"{{"orderId":"o-{}","customer":"ada","items":[{{"sku":"book","qty":2,"price":12.5}},{{"sku":"pen","qty":3,"price":1.2}}]}}"#,
        n % 1000
    )
}

/// Order `n` as daprd delivers it: a structured CloudEvent.
fn cloud_event(n: u64) -> String {
    format!(
        r#"{{"specversion":"1.0","id":"e-{n}","source":"bench","type":"com.dapr.event.sent","datacontenttype":"application/json","topic":"orders","pubsubname":"pubsub","traceid":"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01","data":{}}}"#,
        order_json(n)
    )
}

impl Workload {
    pub(crate) fn request(self, addr: SocketAddr) -> http::Request<Full<Bytes>> {
        let n = ORDER_NUMBER.fetch_add(1, Ordering::Relaxed);
        let publish_path;
        let (method, path, body) = match self {
            Workload::Delivery => (http::Method::POST, "/orders-events", cloud_event(n)),
            Workload::HttpDelivery => (http::Method::POST, "/order-processor-http", cloud_event(n)),
            Workload::PlaceOrder => (http::Method::POST, "/orders", order_json(n)),
            Workload::Hello => (http::Method::GET, "/hello", String::new()),
            Workload::Publish(topic) => {
                publish_path = format!("/v1.0/publish/pubsub/{topic}");
                (http::Method::POST, publish_path.as_str(), order_json(n))
            }
        };
        let content_type = if matches!(self, Workload::Delivery | Workload::HttpDelivery) {
            "application/cloudevents+json"
        } else {
            "application/json"
        };
        http::Request::builder()
            .method(method)
            .uri(path)
            .header(http::header::HOST, addr.to_string())
            .header(http::header::CONTENT_TYPE, content_type)
            .body(Full::new(Bytes::from(body)))
            .expect("a valid request")
    }

    /// Whether the server may answer before it has finished the work (an
    /// order accepted with 202 is processed afterwards), so the harness
    /// must wait for its processed count to catch up.
    pub(crate) fn leaves_work(self) -> bool {
        matches!(self, Workload::PlaceOrder)
    }

    pub(crate) fn accepts(self, status: http::StatusCode, body: &[u8]) -> bool {
        match self {
            Workload::Delivery | Workload::HttpDelivery => {
                status == http::StatusCode::OK && body.windows(9).any(|w| w == b"\"SUCCESS\"")
            }
            Workload::PlaceOrder => status == http::StatusCode::ACCEPTED,
            Workload::Hello => status == http::StatusCode::OK,
            Workload::Publish(_) => status.is_success(),
        }
    }
}

/// What one run of load measured.
#[derive(Default, Clone)]
pub(crate) struct LoadResult {
    pub(crate) ok: u64,
    pub(crate) errors: u64,
    pub(crate) elapsed: Duration,
    /// Latency of every accepted answer, in microseconds.
    pub(crate) latencies: Vec<u32>,
    /// The first unaccepted answer or failure, for the report.
    pub(crate) first_error: Option<String>,
}

pub(crate) enum Stop {
    After(Duration),
    /// After this many requests in all.
    Count(u64),
}

/// Runs `concurrency` closed-loop connections against `addr` until `stop`.
pub(crate) async fn load(
    addr: SocketAddr,
    workload: Workload,
    concurrency: usize,
    stop: Stop,
) -> LoadResult {
    let started = Instant::now();
    let (deadline, budget) = match stop {
        Stop::After(d) => (Some(started + d), None),
        Stop::Count(n) => (None, Some(Arc::new(AtomicU64::new(n)))),
    };
    let tasks: Vec<_> = (0..concurrency)
        .map(|_| {
            let budget = budget.clone();
            tokio::task::spawn_local(async move {
                let mut result = LoadResult::default();
                let take = || match &budget {
                    Some(b) => b
                        .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
                        .is_ok(),
                    None => deadline.is_some_and(|d| Instant::now() < d),
                };
                'connections: while take() {
                    let mut sender = match connect(addr).await {
                        Ok(sender) => sender,
                        Err(e) => {
                            result.errors += 1;
                            result.first_error.get_or_insert(e);
                            tokio::time::sleep(Duration::from_millis(10)).await;
                            continue;
                        }
                    };
                    loop {
                        let sent = Instant::now();
                        let answer = async {
                            let response = sender.send_request(workload.request(addr)).await?;
                            let status = response.status();
                            let body = response.into_body().collect().await?.to_bytes();
                            Ok::<_, hyper::Error>((status, body))
                        }
                        .await;
                        match answer {
                            Ok((status, body)) if workload.accepts(status, &body) => {
                                result.ok += 1;
                                let micros = sent.elapsed().as_micros();
                                result.latencies.push(micros.min(u32::MAX as u128) as u32);
                            }
                            Ok((status, body)) => {
                                result.errors += 1;
                                result.first_error.get_or_insert_with(|| {
                                    format!("{status}: {}", String::from_utf8_lossy(&body))
                                });
                            }
                            Err(e) => {
                                result.errors += 1;
                                result.first_error.get_or_insert(e.to_string());
                                continue 'connections;
                            }
                        }
                        if !take() {
                            break 'connections;
                        }
                    }
                }
                result
            })
        })
        .collect();
    let mut total = LoadResult::default();
    for task in tasks {
        let r = task.await.expect("a load task panicked");
        total.ok += r.ok;
        total.errors += r.errors;
        total.latencies.extend(r.latencies);
        if total.first_error.is_none() {
            total.first_error = r.first_error;
        }
    }
    total.elapsed = started.elapsed();
    total
}

pub(crate) type Sender = hyper::client::conn::http1::SendRequest<Full<Bytes>>;

pub(crate) async fn connect(addr: SocketAddr) -> Result<Sender, String> {
    let stream = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    stream.set_nodelay(true).map_err(|e| e.to_string())?;
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    tokio::task::spawn_local(connection);
    Ok(sender)
}

/// Runs load on `runtime`, in a `LocalSet` (the generator is one thread).
pub(crate) fn run(
    runtime: &tokio::runtime::Runtime,
    future: impl Future<Output = LoadResult>,
) -> LoadResult {
    tokio::task::LocalSet::new().block_on(runtime, future)
}
