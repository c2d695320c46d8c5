//! Every broker Dapr carries the app's messages on, for real: Kafka,
//! RabbitMQ, NATS JetStream and MQTT, each started by `scripts/broker.sh`,
//! behind a real daprd given that broker's folder of `components/`, as
//! `dapr run --resources-path ./components/NAME` would be. (Redis, the
//! top folder, runs the same scenarios in `tests/dapr.rs` and
//! `tests/dapr_faults.rs`.)
//!
//! Per broker, two tests: the delivery scenarios on one app, and the faults
//! (host-bridge down 30 s, daprd killed, the broker killed and restarted on
//! its data) counted id by id. The aim is nothing lost on any of them;
//! where a broker cannot promise that, the test says so and asserts the
//! bound RELIABILITY.md gives.

mod common;

use common::brokers::BrokerKind;
use common::dapr::{Backing, DaprApp};
use common::scenarios::{self, TOPICS, subscriber_manifest};
use std::time::Duration;

/// The delivery scenarios of the Redis suite, on `kind`, on one app.
fn deliveries(kind: BrokerKind) {
    let backing = Backing::for_broker(kind);
    scenarios::the_orders_app_runs(&backing);
    let mut app = DaprApp::start(
        &format!("deliveries-{}", kind.name()),
        &subscriber_manifest(),
        &backing.resources,
        TOPICS,
    );
    scenarios::payloads_arrive_byte_for_byte(&mut app);
    scenarios::retry_is_redelivered_and_drop_is_dead_lettered(&mut app, kind.dead_letters_a_drop());
    scenarios::traps_and_loops_are_retried_then_dead_lettered(&mut app);
    scenarios::bulk_deliveries_come_in_batches(&mut app, true);
    drop(app);
    // MQTT 3 has one session per client id (the app id): replicas take
    // turns. On JetStream, as components/jetstream/ sets it up, each
    // replica gets every message. Neither shares (the folders' pubsub.yaml
    // say why).
    if matches!(kind, BrokerKind::Kafka | BrokerKind::RabbitMq) {
        scenarios::two_replicas_share_the_work(&backing, &format!("replicated-{}", kind.name()));
    }
}

/// The three faults, one after another on one broker, each on its own app
/// id (so its own queue or consumer group) and its own stream of 1,000 ids.
///
/// Each fault is counted twice: the ids still missing after the stream (and
/// up to two minutes more), and those still missing after daprd was
/// restarted. MQTT 3.1.1 sends an unacked message again only when its
/// client reconnects, and the second count shows whether that brings it
/// back. All counts are printed before any is asserted, so a run with
/// `BROKER_DEFAULTS=1` (each broker's pub/sub with only its address: the
/// negative control of RELIABILITY.md) reports every fault.
fn faults(kind: BrokerKind) {
    let mut backing = Backing::for_broker(kind);
    let mut counted = Vec::new();
    for (fault, run) in [
        (
            "host-down",
            scenarios::host_down_30s as fn(&mut DaprApp, &mut Backing),
        ),
        ("daprd-killed", scenarios::daprd_killed),
        ("broker-restarted", scenarios::broker_restarted),
    ] {
        let app_id = format!("{fault}-{}", kind.name());
        let prefix = format!("{app_id}-");
        let mut app = scenarios::start_record_app(&backing, &app_id);
        let missing = scenarios::count_lost_through_a_fault(
            &mut app,
            &mut backing,
            &prefix,
            1000,
            Duration::from_secs(120),
            run,
        );
        let lost = if missing.is_empty() {
            Vec::new()
        } else {
            app.daprd.kill();
            app.daprd.restart();
            scenarios::missing_after(&mut app, &prefix, 1000, Duration::from_secs(60))
        };
        eprintln!(
            "{}, {fault}: {} of 1000 missing after the stream, {} after daprd restarted{}",
            kind.name(),
            missing.len(),
            lost.len(),
            if std::env::var_os("BROKER_DEFAULTS").is_some() {
                " (the broker's defaults)"
            } else {
                ""
            }
        );
        counted.push((fault, missing.len(), lost.len()));
    }
    for (fault, _, lost) in &counted {
        let bound = kind.loss_bound(fault);
        assert!(
            *lost <= bound,
            "{}, {fault}: {lost} of 1000 lost, more than {bound}: {counted:?}",
            kind.name()
        );
    }
}

macro_rules! on_every_broker {
    ($($module:ident => $kind:expr),* $(,)?) => {$(
        mod $module {
            use super::*;

            #[test]
            fn delivers_every_scenario() {
                deliveries($kind);
            }

            #[test]
            fn loses_nothing_through_faults() {
                faults($kind);
            }
        }
    )*};
}

on_every_broker! {
    kafka => BrokerKind::Kafka,
    rabbitmq => BrokerKind::RabbitMq,
    jetstream => BrokerKind::JetStream,
    mqtt => BrokerKind::Mqtt,
}
