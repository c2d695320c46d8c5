//! A real trace backend for the trace tests: Jaeger v2 (`make setup-jaeger`
//! builds it from Go modules), with in-memory storage, OTLP/HTTP in and its
//! query API out, on free ports.

use super::process::Process;
use super::{client, free_port};
use serde_json::Value;
use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

/// The binary `scripts/install-jaeger.sh` installs, or `$JAEGER`.
pub fn jaeger_bin() -> PathBuf {
    std::env::var_os("JAEGER")
        .map(PathBuf::from)
        .or_else(|| {
            let home = std::env::var_os("HOME")?;
            Some(PathBuf::from(home).join(".cache/host-bridge/tools/jaeger-1.75.0/jaeger"))
        })
        .filter(|p| p.is_file())
        .expect("jaeger is not installed: run `make setup-jaeger` (or `make test`, which does)")
}

pub struct Jaeger {
    _process: Process,
    /// Where OTLP/HTTP goes: `OTEL_EXPORTER_OTLP_ENDPOINT`.
    pub otlp_http: String,
    /// `host:port` of the OTLP/HTTP receiver, as daprd's config names it.
    pub otlp_address: String,
    pub query: String,
    _dir: tempfile::TempDir,
}

impl Jaeger {
    pub fn start() -> Jaeger {
        let dir = tempfile::tempdir().unwrap();
        let (otlp, query, grpc_query) = (free_port(), free_port(), free_port());
        let config = dir.path().join("jaeger.yaml");
        std::fs::write(
            &config,
            format!(
                r#"service:
  extensions: [jaeger_storage, jaeger_query]
  pipelines:
    traces:
      receivers: [otlp]
      processors: [batch]
      exporters: [jaeger_storage_exporter]
  telemetry:
    logs:
      level: warn
    metrics:
      level: none
extensions:
  jaeger_query:
    storage:
      traces: memstore
    http:
      endpoint: 127.0.0.1:{query}
    grpc:
      endpoint: 127.0.0.1:{grpc_query}
  jaeger_storage:
    backends:
      memstore:
        memory:
          max_traces: 10000
receivers:
  otlp:
    protocols:
      http:
        endpoint: 127.0.0.1:{otlp}
processors:
  batch:
    timeout: 100ms
exporters:
  jaeger_storage_exporter:
    trace_storage: memstore
"#
            ),
        )
        .unwrap();
        let mut command = Command::new(jaeger_bin());
        command.arg("--config").arg(&config);
        let process = Process::spawn(
            command,
            format!("jaeger on port {query}"),
            &dir.path().join("jaeger.log"),
        );
        let jaeger = Jaeger {
            _process: process,
            otlp_http: format!("http://127.0.0.1:{otlp}"),
            otlp_address: format!("127.0.0.1:{otlp}"),
            query: format!("http://127.0.0.1:{query}"),
            _dir: dir,
        };
        super::dapr::wait_until(Duration::from_secs(30), "jaeger to be ready", || {
            client()
                .get(format!("{}/api/services", jaeger.query))
                .send()
                .is_ok_and(|r| r.status().is_success())
        });
        jaeger
    }

    /// The traces Jaeger holds with a span of `service`.
    pub fn traces(&self, service: &str) -> Vec<Trace> {
        let response: Value = client()
            .get(format!(
                "{}/api/traces?service={service}&limit=100&lookback=1h",
                self.query
            ))
            .send()
            .and_then(|r| r.json())
            .unwrap_or_default();
        response["data"]
            .as_array()
            .map(|traces| traces.iter().map(Trace::from_jaeger).collect())
            .unwrap_or_default()
    }
}

/// One span as Jaeger's query API gives it.
#[derive(Debug, Clone)]
pub struct Span {
    pub id: String,
    pub parent: Option<String>,
    pub name: String,
    pub service: String,
    pub kind: String,
    pub tags: HashMap<String, Value>,
}

/// One trace: its spans.
#[derive(Debug, Clone)]
pub struct Trace {
    pub id: String,
    pub spans: Vec<Span>,
}

impl Trace {
    fn from_jaeger(trace: &Value) -> Trace {
        let services: HashMap<&str, &str> = trace["processes"]
            .as_object()
            .map(|p| {
                p.iter()
                    .map(|(id, process)| {
                        (id.as_str(), process["serviceName"].as_str().unwrap_or(""))
                    })
                    .collect()
            })
            .unwrap_or_default();
        let spans = trace["spans"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|span| {
                let tags: HashMap<String, Value> = span["tags"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|t| Some((t["key"].as_str()?.to_owned(), t["value"].clone())))
                    .collect();
                Span {
                    id: span["spanID"].as_str().unwrap_or("").to_owned(),
                    parent: span["references"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .find(|r| r["refType"] == "CHILD_OF")
                        .and_then(|r| r["spanID"].as_str())
                        .map(str::to_owned),
                    name: span["operationName"].as_str().unwrap_or("").to_owned(),
                    service: services
                        .get(span["processID"].as_str().unwrap_or(""))
                        .copied()
                        .unwrap_or("")
                        .to_owned(),
                    kind: tags
                        .get("span.kind")
                        .and_then(Value::as_str)
                        .unwrap_or("")
                        .to_owned(),
                    tags,
                }
            })
            .collect();
        Trace {
            id: trace["traceID"].as_str().unwrap_or("").to_owned(),
            spans,
        }
    }

    /// The one span of `service` named `name`; fails the test, showing the
    /// trace, if there is none or more than one.
    pub fn one(&self, service: &str, name: &str) -> &Span {
        let found: Vec<&Span> = self
            .spans
            .iter()
            .filter(|s| s.service == service && s.name == name)
            .collect();
        assert_eq!(
            found.len(),
            1,
            "expected one span {name:?} of {service} in trace {}:\n{}",
            self.id,
            self.tree()
        );
        found[0]
    }

    pub fn span(&self, id: &str) -> Option<&Span> {
        self.spans.iter().find(|s| s.id == id)
    }

    /// The parent of `span`; fails the test if it is not in the trace.
    pub fn parent_of(&self, span: &Span) -> &Span {
        span.parent
            .as_deref()
            .and_then(|p| self.span(p))
            .unwrap_or_else(|| {
                panic!(
                    "span {:?} of {} has no parent in trace {}:\n{}",
                    span.name,
                    span.service,
                    self.id,
                    self.tree()
                )
            })
    }

    /// The trace as an indented tree, for failure messages.
    pub fn tree(&self) -> String {
        fn walk(trace: &Trace, parent: Option<&str>, depth: usize, out: &mut String) {
            for span in trace.spans.iter().filter(|s| {
                s.parent.as_deref() == parent
                    || (parent.is_none()
                        && s.parent.as_deref().is_some_and(|p| trace.span(p).is_none()))
            }) {
                out.push_str(&format!(
                    "{}{} [{}] {}\n",
                    "  ".repeat(depth),
                    span.name,
                    span.service,
                    span.kind
                ));
                walk(trace, Some(&span.id), depth + 1, out);
            }
        }
        let mut out = String::new();
        walk(self, None, 0, &mut out);
        out
    }
}
