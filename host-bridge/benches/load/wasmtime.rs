//! `wasmtime serve`, the reference `wasi:http` runtime, as a system under
//! test: with host-bridge's pooling-allocator settings (checked against
//! host-bridge's engine) or its own defaults, and with a fresh instance per
//! request or its default instance reuse.

use crate::common::{Process, free_port, workspace};
use crate::systems::{Counter, Server, Tools, local};
use std::process::Command;
use std::time::Duration;

/// Which pooling-allocator settings `wasmtime serve` runs with.
#[derive(Clone, Copy, PartialEq)]
pub(crate) enum Pool {
    /// host-bridge's ([`SAME_POOL`]): the like-for-like comparison.
    HostBridge,
    /// `wasmtime serve`'s own defaults (it turns the pooling allocator on).
    Default,
}

/// Whether a server makes a fresh instance for every request, as
/// host-bridge does by default, or keeps instances for later requests.
#[derive(Clone, Copy, PartialEq)]
pub(crate) enum Instances {
    Fresh,
    Reuse,
}

/// host-bridge's pooling allocator (`Engine::new` in
/// `host-bridge/src/engine/mod.rs`, at the default `--max-instances` of
/// 1000) as `wasmtime serve`'s `-O` options, each with the code in
/// `engine/mod.rs` it stands for; [`same_pool_options`] checks that code is
/// still there and that the engine sets nothing else on its pool, so the
/// two cannot drift apart unnoticed. What neither sets (the decommit batch
/// size, 1) is wasmtime's default for both.
const SAME_POOL: [(&str, &str); 10] = [
    (
        "pooling-allocator=y",
        "InstanceAllocationStrategy::Pooling(pool)",
    ),
    (
        "pooling-total-component-instances=1000",
        "total_component_instances(options.max_instances)",
    ),
    (
        "pooling-total-core-instances=4000",
        ".total_core_instances(options.max_instances * 4)",
    ),
    (
        "pooling-total-memories=2000",
        ".total_memories(options.max_instances * 2)",
    ),
    (
        "pooling-total-tables=4000",
        ".total_tables(options.max_instances * 4)",
    ),
    (
        "pooling-max-memories-per-component=4",
        ".max_memories_per_component(4)",
    ),
    (
        "pooling-max-tables-per-component=8",
        ".max_tables_per_component(8)",
    ),
    (
        "pooling-memory-keep-resident=8388608",
        "linear_memory_keep_resident(KEEP_RESIDENT)",
    ),
    (
        "pooling-table-keep-resident=65536",
        ".table_keep_resident(64 << 10)",
    ),
    ("pooling-pagemap-scan=auto", ".pagemap_scan(Enabled::Auto)"),
];

/// The `-O` options of [`SAME_POOL`], after checking that host-bridge's
/// engine still sets exactly those: every setting of its pool is one of
/// them, each is written as the table says, `KEEP_RESIDENT` is 8 MiB and
/// `--max-instances` defaults to 1000. What differs is an error.
pub(crate) fn same_pool_options() -> Result<Vec<String>, String> {
    let root = workspace();
    // The code without its comments (a setting in a comment is not set)
    // and without whitespace (so formatting does not matter).
    let read = |path: &str| {
        let text = std::fs::read_to_string(root.join(path)).unwrap_or_default();
        text.lines()
            .map(|line| line.split_once("//").map_or(line, |(code, _)| code))
            .flat_map(str::split_whitespace)
            .collect::<String>()
    };
    let engine = read("host-bridge/src/engine/mod.rs");
    let main = read("host-bridge/src/main.rs");
    let stale = |what: String| {
        format!(
            "host-bridge's pool settings changed: {what}. Update SAME_POOL in \
             host-bridge/benches/load/systems.rs, so that wasmtime serve runs with the same settings"
        )
    };
    let squeeze = |code: &str| code.split_whitespace().collect::<String>();
    for (option, code) in SAME_POOL {
        if !engine.contains(&squeeze(code)) {
            return Err(stale(format!(
                "host-bridge/src/engine/mod.rs no longer has `{code}` (for -O {option})"
            )));
        }
    }
    if !engine.contains("constKEEP_RESIDENT:usize=8<<20;") {
        return Err(stale(
            "KEEP_RESIDENT in host-bridge/src/engine/mod.rs is no longer 8 << 20".into(),
        ));
    }
    if !main.contains("default_value_t=1000)]max_instances:u32") {
        return Err(stale(
            "host-bridge's --max-instances no longer defaults to 1000 (host-bridge/src/main.rs)"
                .into(),
        ));
    }
    // Every setting made on the pool, from its creation to its use.
    let Some(start) = engine.find("PoolingAllocationConfig::default();") else {
        return Err(stale(
            "no PoolingAllocationConfig::default() in host-bridge/src/engine/mod.rs".into(),
        ));
    };
    let end = engine[start..]
        .find("config.allocation_strategy(")
        .map_or(engine.len(), |i| start + i);
    let chain = &engine[start..end];
    let known: Vec<String> = SAME_POOL
        .iter()
        .filter_map(|(_, code)| {
            let name = code.trim_start_matches('.').split('(').next()?;
            Some(format!("{name}("))
        })
        .collect();
    for (i, _) in chain.match_indices('(') {
        let name_start = chain[..i]
            .rfind(|c: char| !(c.is_alphanumeric() || c == '_'))
            .map_or(0, |j| j + 1);
        let name = &chain[name_start..=i];
        let is_method = chain[..name_start].ends_with('.');
        if is_method && !known.iter().any(|k| k == name) {
            return Err(stale(format!(
                "host-bridge/src/engine/mod.rs calls `{name}..)` while it sets up its pool, which SAME_POOL does not mirror"
            )));
        }
    }
    Ok(SAME_POOL
        .iter()
        .map(|(option, _)| option.to_string())
        .collect())
}

/// `wasmtime serve` running one component: the reference Wasm runtime,
/// with host-bridge's pool or its own defaults, and a fresh instance per
/// request (`--max-instance-reuse-count 1`), as host-bridge by default, or
/// its default reuse (a WASI 0.3 instance serves up to 128 requests, 16 at
/// once).
pub(crate) fn start_wasmtime(
    tools: &Tools,
    component: &str,
    pool: Pool,
    instances: Instances,
) -> Result<Option<Server>, String> {
    let Some(wasmtime) = tools.wasmtime.as_ref() else {
        return Ok(None);
    };
    let dir = tempfile::tempdir().unwrap();
    let addr = local(free_port());
    let mut command = Command::new(wasmtime);
    // `-S cli` gives the guest stdout and stderr, as host-bridge does.
    command
        .arg("serve")
        .arg("--addr")
        .arg(addr.to_string())
        .arg("-Scli");
    if pool == Pool::HostBridge {
        for option in same_pool_options()? {
            command.arg("-O").arg(option);
        }
    }
    if instances == Instances::Fresh {
        command.args([
            "--max-instance-reuse-count",
            "1",
            "--max-instance-concurrent-reuse-count",
            "1",
        ]);
    }
    command.arg(tools.wasm(component));
    let name = match (pool, instances) {
        (Pool::HostBridge, Instances::Fresh) => WASMTIME_SAME_POOL,
        (Pool::Default, Instances::Fresh) => "wasmtime serve, default pool",
        (Pool::HostBridge, Instances::Reuse) => "wasmtime serve, same pool, instance reuse",
        (Pool::Default, Instances::Reuse) => "wasmtime serve, default pool, instance reuse",
    };
    let mut process = tools
        .cores
        .on_servers(|| Process::spawn(command, name.into(), &dir.path().join("log")));
    process.wait_for_line("Serving HTTP on", Duration::from_secs(120));
    Ok(Some(Server {
        name,
        process,
        addr,
        sidecar: addr,
        counter: Counter::None,
        _dir: dir,
    }))
}

/// The like-for-like `wasmtime serve`: host-bridge's pool, a fresh
/// instance per request.
pub(crate) const WASMTIME_SAME_POOL: &str = "wasmtime serve, same pool";

/// `wasmtime serve` running `component` three ways: host-bridge's pool and
/// its own, each with a fresh instance per request, and its own pool with
/// its default instance reuse. One that cannot start as it should is left
/// out, and why goes into `failures`.
pub(crate) fn wasmtimes(tools: &Tools, component: &str, failures: &mut Vec<String>) -> Vec<Server> {
    let mut servers = Vec::new();
    for (pool, instances) in [
        (Pool::HostBridge, Instances::Fresh),
        (Pool::Default, Instances::Fresh),
        (Pool::Default, Instances::Reuse),
    ] {
        match start_wasmtime(tools, component, pool, instances) {
            Ok(server) => servers.extend(server),
            Err(e) => {
                eprintln!("bench: wasmtime serve left out: {e}");
                if !failures.contains(&e) {
                    failures.push(e);
                }
            }
        }
    }
    servers
}
