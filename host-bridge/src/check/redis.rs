//! `pubsub.redis` (Redis Streams): the settings that lose a message, read
//! from components-contrib v1.18.4 `common/component/redis/redis.go`
//! (`ParseClientFromProperties`: pub/sub defaults processingTimeout 60 s,
//! redeliverInterval 15 s), `common/component/redis/settings.go` (the
//! keys) and `pubsub/redis/redis.go` (what they do). How the durations are
//! parsed is durations.rs' table; whether daprd's retries fit
//! processingTimeout is resiliency.rs'.

use super::durations::{Effective, effective, show};
use super::finding::{ComponentFindings, Finding};
use super::resources::{Component, Folder};

/// Every finding for one `pubsub.redis` component.
pub fn check(component: &Component, _folder: &Folder) -> Vec<Finding> {
    let mut found = ComponentFindings::new(component);
    // pubsub/redis/redis.go, reclaimPendingMessagesLoop: "Having a
    // processingTimeout or redeliverInterval [of 0] means that redelivery
    // is disabled": a message left pending is never claimed again.
    for (key, default_fix) in [
        ("processingTimeout", "processingTimeout: \"60s\""),
        ("redeliverInterval", "redeliverInterval: \"15000\""),
    ] {
        if let Effective::Known {
            value,
            written: true,
        } = effective(component, key)
            && value.is_zero()
        {
            found.add(
                key,
                format!("{key} is 0, which turns redelivery off"),
                vec![String::from(
                    "a message left pending (daprd crashed mid-delivery, or stopped a delivery when the app health \
                     check paused the subscription) is never claimed and delivered again (pubsub/redis/redis.go, \
                     reclaimPendingMessagesLoop)",
                )],
                format!("{default_fix} (the default)"),
            );
        }
    }
    // settings.go: maxLenApprox (int64) and streamTTL (a duration) trim
    // the stream on every publish (pubsub/redis/redis.go, Publish); an
    // entry trimmed while still pending is acked away
    // (removeMessagesThatNoLongerExistFromPending).
    if let Some(n) = component
        .value("maxLenApprox")
        .and_then(|v| v.trim().parse::<i64>().ok())
        .filter(|n| *n > 0)
    {
        found.add(
            "maxLenApprox",
            format!("maxLenApprox is \"{n}\""),
            vec![format!(
                "each publish trims the stream to about {n} entries: an entry trimmed before it was delivered \
                 (a backlog while the app is down, say), or while it was pending, is lost"
            )],
            String::from("remove maxLenApprox"),
        );
    }
    if let Some(ttl) = component
        .value("streamTTL")
        .filter(|v| !v.trim().is_empty())
    {
        let parsed = super::durations::go_duration(ttl.trim()).or_else(|| {
            ttl.trim()
                .parse::<u64>()
                .ok()
                .map(std::time::Duration::from_millis)
        });
        if parsed.is_some_and(|d| !d.is_zero()) {
            found.add(
                "streamTTL",
                format!("streamTTL is \"{ttl}\""),
                vec![format!(
                    "each publish trims entries older than {}: one not delivered by then (a backlog while the app \
                     is down, say), or still pending, is lost",
                    parsed.map_or_else(String::new, show)
                )],
                String::from("remove streamTTL"),
            );
        }
    }
    found.findings
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(settings: &[(&str, &str)]) -> Vec<String> {
        crate::check::keys_found(check, "pubsub.redis", settings)
    }

    #[test]
    fn the_shipped_settings_pass() {
        assert!(keys(&[]).is_empty());
        assert!(keys(&[("processingTimeout", "15s"), ("redeliverInterval", "2000")]).is_empty());
        assert!(keys(&[("maxLenApprox", "0")]).is_empty());
    }

    #[test]
    fn redelivery_off_fires() {
        assert_eq!(keys(&[("processingTimeout", "0")]), ["processingTimeout"]);
        assert_eq!(keys(&[("processingTimeout", "0s")]), ["processingTimeout"]);
        assert_eq!(keys(&[("redeliverInterval", "0")]), ["redeliverInterval"]);
        // "0s" is dropped (a string), so the default 15 s stays: rule 4's.
        assert!(keys(&[("redeliverInterval", "0s")]).is_empty());
    }

    #[test]
    fn trimming_fires() {
        assert_eq!(keys(&[("maxLenApprox", "10000")]), ["maxLenApprox"]);
        assert_eq!(keys(&[("streamTTL", "24h")]), ["streamTTL"]);
    }
}
