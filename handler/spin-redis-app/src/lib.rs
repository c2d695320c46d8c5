//! A Spin Redis-trigger app written with spin-sdk 7, exactly as a Spin user
//! would write it (`#[redis_subscriber]`, `spin:redis/inbound-redis@3.0.0`).
//! host-bridge runs it unchanged to check that it honours Spin's contract:
//! the trigger's export, and the key-value and variables imports.
//!
//! Its behaviour is chosen by the message body, read as UTF-8 text (a body
//! that is not UTF-8 is an error, before anything is counted):
//!
//! | body     | behaviour |
//! |---|---|
//! | `fail`   | returns an error, `asked to fail` |
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
use spin_sdk::redis_subscriber;

/// The store every delivery counts in, and the only one the manifest grants.
const STORE: &str = "default";

#[redis_subscriber]
async fn on_message(message: Bytes) -> anyhow::Result<()> {
    let body = std::str::from_utf8(&message).context("the message body is not UTF-8")?;
    let store = Store::open(STORE)
        .await
        .with_context(|| format!("opening the store `{STORE}`"))?;
    count_delivery(&store, body).await?;

    match body {
        "fail" => Err(anyhow!("asked to fail")),
        "panic" => panic!("asked to panic"),
        "denied" => denied(&store).await,
        "keys" => keys(&store).await,
        "exists" => exists(&store).await,
        _ => greet(&store, body).await,
    }
}

/// Adds one to `count-{body}`; a missing key counts as zero.
async fn count_delivery(store: &Store, body: &str) -> anyhow::Result<()> {
    let key = format!("count-{body}");
    let count: u64 = match store
        .get(&key)
        .await
        .with_context(|| format!("reading `{key}`"))?
    {
        Some(value) => std::str::from_utf8(&value)
            .ok()
            .and_then(|text| text.parse().ok())
            .with_context(|| format!("`{key}` does not hold a decimal count"))?,
        None => 0,
    };
    set(store, &key, (count + 1).to_string()).await
}

/// Records what opening a store the manifest does not grant gives.
async fn denied(store: &Store) -> anyhow::Result<()> {
    let outcome = match Store::open("secret").await {
        Ok(_) => "opened".to_string(),
        Err(err) => format!("{err:?}"),
    };
    set(store, "denied", outcome).await
}

/// Records every key of the store, listed as a stream and then a result.
async fn keys(store: &Store) -> anyhow::Result<()> {
    let listing = match store.get_keys().await.collect().await {
        Ok(mut keys) => {
            keys.sort();
            keys.join(",")
        }
        Err(err) => format!("error: {err:?}"),
    };
    set(store, "keys", listing).await
}

/// Records `exists` of a key that is there and of one that is not, and
/// deletes a key that may or may not be there.
async fn exists(store: &Store) -> anyhow::Result<()> {
    let present = store
        .exists("count-exists")
        .await
        .context("checking `count-exists`")?;
    let absent = store
        .exists("no-such-key")
        .await
        .context("checking `no-such-key`")?;
    set(store, "exists", format!("{present},{absent}")).await?;
    store
        .delete("to-delete")
        .await
        .context("deleting `to-delete`")
}

/// Greets the body with the component variable `greeting`.
async fn greet(store: &Store, body: &str) -> anyhow::Result<()> {
    let greeting = spin_sdk::variables::get("greeting")
        .await
        .context("reading the variable `greeting`")?;
    set(store, &format!("msg-{body}"), format!("{greeting}, {body}")).await
}

async fn set(store: &Store, key: &str, value: String) -> anyhow::Result<()> {
    store
        .set(key, value)
        .await
        .with_context(|| format!("writing `{key}`"))
}
