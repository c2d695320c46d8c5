//! The app of `spin-redis-app`, written instead for spin-sdk 3 as Spin 2 and
//! 3 apps were: a synchronous `#[redis_component]` built for `wasm32-wasip1`
//! as a core module, exporting the unversioned `fermyon:spin/inbound-redis`
//! and importing `fermyon:spin/key-value@2.0.0` and
//! `fermyon:spin/variables@2.0.0`. host-bridge runs it to check that it
//! honours that older contract too.
//!
//! Its behaviour is chosen by the message body, read as UTF-8 text (a body
//! that is not UTF-8 is an error, before anything is counted):
//!
//! | body     | behaviour |
//! |---|---|
//! | `fail`   | returns an error (the old trigger carries no reason) |
//! | `panic`  | panics |
//! | `denied` | opens the store `secret`, which the manifest does not grant, and saves under `denied` the error's `Debug` text (or `opened` if it opened) |
//! | `keys`   | saves under `keys` every key of the `default` store, sorted and joined by `,` (or `error: {err:?}` if listing failed) |
//! | `exists` | saves under `exists` whether `count-exists` and `no-such-key` exist, as `true,false`, and deletes `to-delete` |
//! | anything else | reads the variable `greeting` and saves `{greeting}, {body}` under `msg-{body}` |
//!
//! Every delivery first increments `count-{body}` (decimal text) in the
//! `default` store, so a test can count deliveries even of messages that
//! then fail or panic. Each delivery runs in a fresh instance, so the store
//! is the only memory it has; the count is a read-modify-write and counts
//! deliveries that follow each other, not concurrent ones.
//!
//! The manifest is expected to grant the store `default` (and not `secret`)
//! and to define the variable `greeting`.

use anyhow::{Context, anyhow};
use bytes::Bytes;
use spin_sdk::key_value::Store;
use spin_sdk::redis_component;

/// The store every delivery counts in, and the only one the manifest grants.
const STORE: &str = "default";

#[redis_component]
fn on_message(message: Bytes) -> anyhow::Result<()> {
    let body = std::str::from_utf8(&message).context("the message body is not UTF-8")?;
    let store = Store::open(STORE).with_context(|| format!("opening the store `{STORE}`"))?;
    count_delivery(&store, body)?;

    match body {
        "fail" => Err(anyhow!("asked to fail")),
        "panic" => panic!("asked to panic"),
        "denied" => denied(&store),
        "keys" => keys(&store),
        "exists" => exists(&store),
        _ => greet(&store, body),
    }
}

/// Adds one to `count-{body}`; a missing key counts as zero.
fn count_delivery(store: &Store, body: &str) -> anyhow::Result<()> {
    let key = format!("count-{body}");
    let count: u64 = match store
        .get(&key)
        .with_context(|| format!("reading `{key}`"))?
    {
        Some(value) => std::str::from_utf8(&value)
            .ok()
            .and_then(|text| text.parse().ok())
            .with_context(|| format!("`{key}` does not hold a decimal count"))?,
        None => 0,
    };
    set(store, &key, &(count + 1).to_string())
}

/// Records what opening a store the manifest does not grant gives.
fn denied(store: &Store) -> anyhow::Result<()> {
    let outcome = match Store::open("secret") {
        Ok(_) => "opened".to_string(),
        Err(err) => format!("{err:?}"),
    };
    set(store, "denied", &outcome)
}

/// Records every key of the store.
fn keys(store: &Store) -> anyhow::Result<()> {
    let listing = match store.get_keys() {
        Ok(mut keys) => {
            keys.sort();
            keys.join(",")
        }
        Err(err) => format!("error: {err:?}"),
    };
    set(store, "keys", &listing)
}

/// Records `exists` of a key that is there and of one that is not, and
/// deletes a key that may or may not be there.
fn exists(store: &Store) -> anyhow::Result<()> {
    let present = store
        .exists("count-exists")
        .context("checking `count-exists`")?;
    let absent = store
        .exists("no-such-key")
        .context("checking `no-such-key`")?;
    set(store, "exists", &format!("{present},{absent}"))?;
    store.delete("to-delete").context("deleting `to-delete`")
}

/// Greets the body with the component variable `greeting`.
fn greet(store: &Store, body: &str) -> anyhow::Result<()> {
    let greeting =
        spin_sdk::variables::get("greeting").context("reading the variable `greeting`")?;
    set(
        store,
        &format!("msg-{body}"),
        &format!("{greeting}, {body}"),
    )
}

fn set(store: &Store, key: &str, value: &str) -> anyhow::Result<()> {
    store
        .set(key, value.as_bytes())
        .with_context(|| format!("writing `{key}`"))
}
