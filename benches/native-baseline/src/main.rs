//! The benchmark's native baseline: the orders example app as plain Rust.
//!
//! host-bridge runs the app's handlers as Wasm components, a fresh sandboxed
//! instance per request and per delivery. To tell what that costs, the
//! benchmark runs the same load against this server, which does the same
//! work in process, with no WebAssembly: a hyper 1 HTTP/1 server (keep-alive,
//! `TCP_NODELAY`) on tokio's multi-threaded runtime. The numbers only mean
//! something while the work is the same, so each route follows a component:
//!
//! - `POST /orders` is `order-api`: [`Order::parse`] validates the body (400
//!   with the reason), which is published as it came, as `application/json`
//!   with CloudEvent `subject` = the order id, and answered 202.
//! - `POST /orders-events` is `order-processor` behind Dapr's app protocol: a
//!   structured CloudEvent (or, with `--bulk`, a bulk delivery whose entries
//!   run concurrently), its payload parsed as an order, processed, encoded
//!   with `serde_json::to_vec` and saved under [`state_key`]; the answer is
//!   SUCCESS, RETRY (the save failed) or DROP (never processable).
//! - `GET /hello` is the `hello` component; `GET /orders/{id}` is
//!   `order-api`'s read of a processed order.
//! - `GET /dapr/subscribe`, `/healthz` and `/stats` are the plumbing a run
//!   needs: the subscription daprd asks for, readiness, and how many orders
//!   were processed (the benchmark waits on that number).
//!
//! `--state memory` stands in for host-bridge's embedded broker run with
//! `--in-memory`: a publish goes onto a tokio queue whose consumer processes
//! every message in its own task, and records go into a map. `--state dapr`
//! publishes and saves through daprd's HTTP API on
//! `127.0.0.1:$DAPR_HTTP_PORT`, and daprd delivers to `/orders-events`.
//!
//! Where it does less than host-bridge, which favours it (on purpose: it is
//! the floor): no sandbox or instance per call; in memory mode no journal,
//! no redelivery of a failed message and no dead-letter topic; no limit on
//! a request body's size. Where it differs: it saves state through daprd's
//! HTTP state API, where host-bridge uses the gRPC one (which carries bytes).

use anyhow::Context as _;
use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt as _, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use orders::cloudevent::CloudEvent;
use orders::{Order, PUBSUB_NAME, STATE_STORE, TOPIC, is_valid_id, rfc3339, state_key};
use serde::Deserialize;
use serde_json::json;
use serde_json::value::RawValue;
use std::collections::HashMap;
use std::convert::Infallible;
use std::io::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::net::TcpListener;
use tokio::sync::mpsc;

const USAGE: &str = "usage: native-baseline --listen ADDR [--state memory|dapr] [--bulk]";

/// How many published orders may wait for the in-process consumer. The
/// consumer only spawns a task per message, so this bounds a burst, and a
/// full queue makes `POST /orders` wait instead of growing without end.
const QUEUE_CAPACITY: usize = 10_000;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = match Args::parse(std::env::args().skip(1)) {
        Ok(args) => args,
        // A usage mistake, not a failure: no backtrace, the usage instead.
        Err(reason) => {
            eprintln!("native-baseline: {reason}\n{USAGE}");
            std::process::exit(2);
        }
    };
    let listener = TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let app = App::start(&args)?;
    let addr = listener
        .local_addr()
        .context("the listener has no address")?;
    println!("native-baseline: ready on http://{addr}");
    std::io::stdout()
        .flush()
        .context("cannot write to stdout")?;
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(err) => {
                // Out of file descriptors, most likely: wait for some to close
                // rather than spin on the error.
                eprintln!("native-baseline: accept failed: {err}");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        // Small requests and answers: Nagle's algorithm would hold an answer
        // back until the client's delayed ACK, adding tens of milliseconds.
        if let Err(err) = stream.set_nodelay(true) {
            eprintln!("native-baseline: cannot set TCP_NODELAY: {err}");
        }
        let app = app.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| {
                let app = app.clone();
                async move { Ok::<_, Infallible>(app.route(req).await) }
            });
            // A connection that fails (the client went away mid-request)
            // concerns that client only.
            let _ = http1::Builder::new()
                .keep_alive(true)
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

/// The command line.
struct Args {
    listen: SocketAddr,
    dapr: bool,
    bulk: bool,
}

impl Args {
    fn parse(mut args: impl Iterator<Item = String>) -> Result<Args, String> {
        let (mut listen, mut dapr, mut bulk) = (None, false, false);
        while let Some(arg) = args.next() {
            match arg.as_str() {
                "--listen" => {
                    let addr = args.next().ok_or("--listen needs an address")?;
                    let addr = addr.parse().map_err(|e| {
                        format!("--listen {addr:?} is not an IP address and port: {e}")
                    })?;
                    listen = Some(addr);
                }
                "--state" => {
                    dapr = match args.next().as_deref() {
                        Some("memory") => false,
                        Some("dapr") => true,
                        other => {
                            return Err(format!("--state must be memory or dapr, got {other:?}"));
                        }
                    }
                }
                "--bulk" => bulk = true,
                other => return Err(format!("unknown argument {other:?}")),
            }
        }
        let listen = listen.ok_or("--listen is required")?;
        Ok(Args { listen, dapr, bulk })
    }
}

/// Where orders are published and processed orders saved.
enum Backend {
    /// In process: a queue to the consumer task, and a map for the records.
    Memory {
        queue: mpsc::Sender<Publication>,
        records: Mutex<HashMap<String, Vec<u8>>>,
    },
    /// Through daprd's HTTP API; one client, so connections are reused.
    Dapr {
        client: reqwest::Client,
        publish_url: String,
        state_url: String,
    },
}

/// An order on its way from `POST /orders` to the consumer, as the embedded
/// broker hands it over: the exact bytes published and the event's id.
struct Publication {
    event_id: String,
    data: Bytes,
}

struct App {
    backend: Backend,
    /// Whether `/dapr/subscribe` asks for bulk deliveries, and so whether a
    /// delivery may be a batch (as host-bridge reads it: only then).
    bulk: bool,
    /// Orders processed and saved, for `/stats`.
    processed: AtomicU64,
}

/// Dapr's answer to a delivery.
#[derive(Clone, Copy)]
enum Status {
    Success,
    Retry,
    Drop,
}

impl Status {
    fn as_str(self) -> &'static str {
        match self {
            Status::Success => "SUCCESS",
            Status::Retry => "RETRY",
            Status::Drop => "DROP",
        }
    }
}

/// A bulk delivery, as far as it is read here. Each entry's `event` stays
/// raw text until its turn, so one bad entry DROPs alone.
#[derive(Deserialize)]
struct BulkDelivery<'a> {
    #[serde(borrow)]
    entries: Vec<BulkEntry<'a>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct BulkEntry<'a> {
    entry_id: String,
    #[serde(borrow)]
    event: &'a RawValue,
}

impl App {
    /// Builds the app and, in memory mode, starts the queue's consumer.
    fn start(args: &Args) -> anyhow::Result<Arc<App>> {
        if args.dapr {
            let port = match std::env::var("DAPR_HTTP_PORT") {
                Ok(port) => port
                    .parse::<u16>()
                    .with_context(|| format!("DAPR_HTTP_PORT={port:?} is not a port"))?,
                Err(_) => 3500,
            };
            // As host-bridge does: daprd checks the token when it has one.
            let mut headers = header::HeaderMap::new();
            if let Ok(token) = std::env::var("DAPR_API_TOKEN") {
                let token = HeaderValue::from_str(&token)
                    .context("DAPR_API_TOKEN is not a valid header value")?;
                headers.insert("dapr-api-token", token);
            }
            let client = reqwest::Client::builder()
                .default_headers(headers)
                .build()
                .context("cannot build the HTTP client for daprd")?;
            let base = format!("http://127.0.0.1:{port}/v1.0");
            return Ok(Arc::new(App {
                backend: Backend::Dapr {
                    client,
                    publish_url: format!("{base}/publish/{PUBSUB_NAME}/{TOPIC}"),
                    state_url: format!("{base}/state/{STATE_STORE}"),
                },
                bulk: args.bulk,
                processed: AtomicU64::new(0),
            }));
        }
        let (queue, mut consumer) = mpsc::channel::<Publication>(QUEUE_CAPACITY);
        let app = Arc::new(App {
            backend: Backend::Memory {
                queue,
                records: Mutex::new(HashMap::new()),
            },
            bulk: args.bulk,
            processed: AtomicU64::new(0),
        });
        let consumer_app = app.clone();
        tokio::spawn(async move {
            while let Some(message) = consumer.recv().await {
                let app = consumer_app.clone();
                // The status is not needed: `POST /orders` validated the
                // order and a save to the map cannot fail, so nothing here
                // would ever be redelivered.
                tokio::spawn(async move { app.process(&message.event_id, &message.data).await });
            }
        });
        Ok(app)
    }

    async fn route(&self, req: Request<Incoming>) -> Response<Full<Bytes>> {
        let (parts, body) = req.into_parts();
        match (&parts.method, parts.uri.path()) {
            (&Method::GET, "/healthz") => respond(StatusCode::OK, "text/plain", ""),
            (&Method::GET, "/hello") => respond(StatusCode::OK, "text/plain", "Hello, world!\n"),
            (&Method::POST, "/orders") => match body.collect().await {
                Ok(body) => self.place_order(body.to_bytes()).await,
                Err(err) => error(
                    StatusCode::BAD_REQUEST,
                    &format!("cannot read the body: {err}"),
                ),
            },
            (&Method::POST, "/orders-events") => match body.collect().await {
                Ok(body) => self.deliver(&body.to_bytes()).await,
                // A broken upload: daprd redelivers on a non-2xx answer.
                Err(err) => error(
                    StatusCode::BAD_REQUEST,
                    &format!("cannot read the body: {err}"),
                ),
            },
            (&Method::GET, "/dapr/subscribe") => {
                let mut subscription =
                    json!({ "pubsubname": PUBSUB_NAME, "topic": TOPIC, "route": "/orders-events" });
                if self.bulk {
                    subscription["bulkSubscribe"] = json!({ "enabled": true, "maxMessagesCount": 100, "maxAwaitDurationMs": 40 });
                }
                respond(
                    StatusCode::OK,
                    "application/json",
                    json!([subscription]).to_string(),
                )
            }
            (&Method::GET, "/stats") => {
                let processed = self.processed.load(Ordering::Relaxed);
                respond(
                    StatusCode::OK,
                    "application/json",
                    json!({ "processed": processed }).to_string(),
                )
            }
            (&Method::GET, path) if path.starts_with("/orders/") => {
                self.get_order(&path["/orders/".len()..]).await
            }
            _ => error(StatusCode::NOT_FOUND, "no such route"),
        }
    }

    /// `order-api`'s `POST /orders`: validate, publish the body as it came.
    async fn place_order(&self, body: Bytes) -> Response<Full<Bytes>> {
        let order_id = match Order::parse(&body) {
            Ok(order) => order.order_id,
            Err(err) => return error(StatusCode::BAD_REQUEST, &err.0),
        };
        let published = match &self.backend {
            Backend::Memory { queue, .. } => {
                let message = Publication {
                    event_id: uuid::Uuid::new_v4().to_string(),
                    data: body,
                };
                queue
                    .send(message)
                    .await
                    .map_err(|_| "the in-process queue is closed".to_owned())
            }
            Backend::Dapr {
                client,
                publish_url,
                ..
            } => client
                .post(publish_url)
                .query(&[("metadata.cloudevent.subject", &order_id)])
                .header(header::CONTENT_TYPE, "application/json")
                .body(body)
                .send()
                .await
                .map_err(|e| format!("daprd at {publish_url} is unreachable: {e}"))
                .and_then(|resp| match resp.status() {
                    status if status.is_success() => Ok(()),
                    status => Err(format!("daprd at {publish_url} answered {status}")),
                }),
        };
        match published {
            Ok(()) => respond(
                StatusCode::ACCEPTED,
                "application/json",
                json!({ "orderId": order_id, "status": "accepted" }).to_string(),
            ),
            Err(reason) => error(
                StatusCode::SERVICE_UNAVAILABLE,
                &format!("the order was not published: {reason}"),
            ),
        }
    }

    /// One push from daprd: a CloudEvent, or with `--bulk` a batch of them.
    async fn deliver(&self, body: &[u8]) -> Response<Full<Bytes>> {
        // As host-bridge: a bulk subscription's body is a batch, unless
        // daprd sent a single event (it may, for a redelivery).
        if let Some(bulk) = self
            .bulk
            .then(|| serde_json::from_slice::<BulkDelivery>(body).ok())
            .flatten()
        {
            let deliveries = bulk.entries.iter().map(|entry| async move {
                let status = self.deliver_event(entry.event.get().as_bytes()).await;
                json!({ "entryId": entry.entry_id, "status": status.as_str() })
            });
            let statuses = futures::future::join_all(deliveries).await;
            return respond(
                StatusCode::OK,
                "application/json",
                json!({ "statuses": statuses }).to_string(),
            );
        }
        let status = self.deliver_event(body).await;
        respond(
            StatusCode::OK,
            "application/json",
            format!(r#"{{"status":"{}"}}"#, status.as_str()),
        )
    }

    /// One structured CloudEvent. One that cannot be read can never be
    /// handled, so it is DROPped (and dead-lettered by daprd).
    async fn deliver_event(&self, event: &[u8]) -> Status {
        let parsed =
            CloudEvent::parse(event).and_then(|event| event.data().map(|data| (event.id, data)));
        match parsed {
            Ok((id, data)) => self.process(&id, &data).await,
            Err(reason) => {
                eprintln!("native-baseline: dropping a delivery: {reason}");
                Status::Drop
            }
        }
    }

    /// `order-processor`'s work on one event: parse, process, encode, save.
    async fn process(&self, event_id: &str, data: &[u8]) -> Status {
        let order = match Order::parse(data) {
            Ok(order) => order,
            Err(err) => {
                eprintln!("native-baseline: dropping event {event_id}: {err}");
                return Status::Drop;
            }
        };
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        let key = state_key(&order.order_id);
        let processed = order.process(event_id, rfc3339(now.as_secs(), now.subsec_nanos()));
        let record = match serde_json::to_vec(&processed) {
            Ok(record) => record,
            Err(err) => {
                eprintln!("native-baseline: cannot encode order {key}: {err}");
                return Status::Drop;
            }
        };
        match self.save(key, record).await {
            Ok(()) => {
                self.processed.fetch_add(1, Ordering::Relaxed);
                Status::Success
            }
            Err(reason) => {
                eprintln!("native-baseline: saving event {event_id} failed, will retry: {reason}");
                Status::Retry
            }
        }
    }

    async fn save(&self, key: String, record: Vec<u8>) -> Result<(), String> {
        match &self.backend {
            Backend::Memory { records, .. } => {
                // A poisoned lock only means another save panicked; the map is intact.
                records
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(key, record);
                Ok(())
            }
            Backend::Dapr {
                client, state_url, ..
            } => {
                // `[{"key": key, "value": record}]`, with the record spliced
                // in as the JSON it is rather than parsed and encoded again.
                // The key is `order-` and a valid order id (letters, digits,
                // `-`, `_`), so it needs no escaping.
                let mut body = Vec::with_capacity(record.len() + key.len() + 24);
                body.extend_from_slice(format!(r#"[{{"key":"{key}","value":"#).as_bytes());
                body.extend_from_slice(&record);
                body.extend_from_slice(b"}]");
                let resp = client
                    .post(state_url)
                    .header(header::CONTENT_TYPE, "application/json")
                    .body(body)
                    .send()
                    .await
                    .map_err(|e| format!("daprd at {state_url} is unreachable: {e}"))?;
                match resp.status() {
                    status if status.is_success() => Ok(()),
                    status => Err(format!("daprd at {state_url} answered {status} for {key}")),
                }
            }
        }
    }

    /// `order-api`'s `GET /orders/{id}`: the processed record, or 404.
    async fn get_order(&self, id: &str) -> Response<Full<Bytes>> {
        if !is_valid_id(id) {
            return error(StatusCode::NOT_FOUND, &format!("no order {id:?}"));
        }
        let key = state_key(id);
        let record = match &self.backend {
            Backend::Memory { records, .. } => Ok(records
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get(&key)
                .cloned()),
            // daprd answers 204 for a key it does not hold.
            Backend::Dapr {
                client, state_url, ..
            } => match client.get(format!("{state_url}/{key}")).send().await {
                Ok(resp) if resp.status() == StatusCode::OK => resp
                    .bytes()
                    .await
                    .map(|b| Some(b.to_vec()))
                    .map_err(|e| e.to_string()),
                Ok(resp) if resp.status() == StatusCode::NO_CONTENT => Ok(None),
                Ok(resp) => Err(format!("daprd answered {}", resp.status())),
                Err(err) => Err(err.to_string()),
            },
        };
        match record {
            Ok(Some(record)) => respond(StatusCode::OK, "application/json", record),
            Ok(None) => error(
                StatusCode::NOT_FOUND,
                &format!("no processed order {id:?} yet"),
            ),
            Err(reason) => error(
                StatusCode::SERVICE_UNAVAILABLE,
                &format!("the state store failed: {reason}"),
            ),
        }
    }
}

fn respond(
    status: StatusCode,
    content_type: &'static str,
    body: impl Into<Bytes>,
) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(body.into()));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

fn error(status: StatusCode, message: &str) -> Response<Full<Bytes>> {
    respond(
        status,
        "application/json",
        json!({ "error": message }).to_string(),
    )
}
