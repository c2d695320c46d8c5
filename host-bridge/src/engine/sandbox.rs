//! What a guest may touch, built from its `[component.NAME]` table.
//!
//! A guest starts with nothing: no environment, no files, no sockets, no
//! name lookups, no outbound HTTP, and clocks that read zero. Each grant in
//! the manifest opens exactly one thing:
//!
//! | manifest key | grants |
//! |---|---|
//! | `environment` | those variables, and no others |
//! | `files` | those directories, read-only, at their destinations |
//! | `allowed_outbound_hosts` | outbound `wasi:http` requests to matching hosts |
//! | `tool.host-bridge.clock` | the real wall and monotonic clocks |
//! | `tool.host-bridge.allowed_publish_topics` | publishing to those topics (`"pubsub/orders"`, `"pubsub/*"`, `"*"`) |
//! | `key_value_stores` | opening those Spin key-value labels, each backed by its state store |
//! | `[component.NAME.variables]` | reading those variables through Spin's variables API |
//!
//! `tool.host-bridge.max_instances` bounds how many instances of the
//! component are alive at once: a call past it waits for one to finish.
//!
//! Raw `wasi:sockets` stay closed whatever the manifest says. Stdout and
//! stderr go where `--guest-output` says, by default to the host's stderr,
//! each line prefixed with the component's name and escaped so that it
//! cannot pass for the host's own (see [`super::guest_output`]).

use super::guest_output::{GuestOutput, GuestStdio, Stream};
use crate::broker::Metrics;
use crate::manifest::outbound::OutboundHost;
use crate::manifest::{Component, FileMount, SandboxLimits, TopicPattern};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use wasmtime_wasi::{FsPerms, HostMonotonicClock, HostWallClock, WasiCtx, WasiCtxBuilder};

/// A component's sandbox, shared by all its instances.
#[derive(Debug, Clone)]
pub struct Sandbox {
    pub component: Arc<str>,
    environment: Vec<(String, String)>,
    files: Vec<FileMount>,
    pub outbound: Arc<[OutboundHost]>,
    pub limits: SandboxLimits,
    /// Where the component may publish.
    publish_topics: Vec<TopicPattern>,
    /// The key-value labels it may open, and the state store behind each.
    key_value_stores: BTreeMap<String, String>,
    /// Its variables, rendered.
    variables: BTreeMap<String, String>,
    /// One permit per instance that may be alive at once (`max_instances`).
    instances: Option<Arc<Semaphore>>,
}

impl Sandbox {
    pub fn new(component: &Component) -> Sandbox {
        Sandbox {
            component: component.id.as_str().into(),
            environment: component.environment.clone().into_iter().collect(),
            files: component.files.clone(),
            outbound: component.allowed_outbound_hosts.clone().into(),
            limits: component.sandbox,
            publish_topics: component.allowed_publish_topics.clone(),
            key_value_stores: component.key_value_stores.clone(),
            variables: component.variable_values.clone(),
            instances: component
                .sandbox
                .max_instances
                .map(|n| Arc::new(Semaphore::new(n as usize))),
        }
    }

    /// Waits for room for one more instance under `max_instances`. The
    /// permit lives in the instance's store, so the room is given back when
    /// the instance is dropped, however its call ended.
    pub async fn admit(&self) -> Option<OwnedSemaphorePermit> {
        let instances = self.instances.clone()?;
        // The semaphore is never closed, so acquiring cannot fail.
        instances.acquire_owned().await.ok()
    }

    /// A fresh WASI context with exactly the grants of the manifest, its
    /// stdout and stderr going to `output` (dropped bytes counted in
    /// `metrics`).
    pub fn wasi_ctx(
        &self,
        output: GuestOutput,
        metrics: &Arc<Metrics>,
    ) -> wasmtime::Result<WasiCtx> {
        let mut builder = WasiCtxBuilder::new();
        builder
            .stdout(GuestStdio::new(
                &self.component,
                Stream::Stdout,
                output,
                metrics,
            ))
            .stderr(GuestStdio::new(
                &self.component,
                Stream::Stderr,
                output,
                metrics,
            ))
            .envs(&self.environment)
            .allow_ip_name_lookup(false)
            .allow_tcp(false)
            .allow_udp(false);
        for mount in &self.files {
            builder.preopened_dir(&mount.source, &mount.destination, FsPerms::ReadOnly)?;
        }
        if !self.limits.clock {
            builder.wall_clock(FrozenClock).monotonic_clock(FrozenClock);
        }
        Ok(builder.build())
    }

    /// Whether the component may publish to `pubsubname/topic`.
    pub fn may_publish(&self, pubsubname: &str, topic: &str) -> bool {
        self.publish_topics
            .iter()
            .any(|p| p.allows(pubsubname, topic))
    }

    /// The state store behind key-value `label`, if the component may open it.
    pub fn key_value_store(&self, label: &str) -> Option<&str> {
        self.key_value_stores.get(label).map(String::as_str)
    }

    /// The value of the component's variable `name`, if it has one.
    pub fn variable(&self, name: &str) -> Option<&str> {
        self.variables.get(name).map(String::as_str)
    }

    /// Whether an outbound request to `scheme://host:port` is allowed.
    pub fn allows_outbound(&self, scheme: &str, host: &str, port: u16) -> bool {
        self.outbound.iter().any(|h| h.allows(scheme, host, port))
    }
}

/// The clock of a guest without the clock grant: it always reads zero
/// (1970-01-01 on the wall clock), so it tells the guest nothing.
struct FrozenClock;

impl HostWallClock for FrozenClock {
    fn resolution(&self) -> Duration {
        Duration::from_secs(1)
    }

    fn now(&self) -> Duration {
        Duration::ZERO
    }
}

impl HostMonotonicClock for FrozenClock {
    fn resolution(&self) -> u64 {
        1_000_000_000
    }

    fn now(&self) -> u64 {
        0
    }
}
