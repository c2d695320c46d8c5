//! How each broker reads a duration setting: one table, [`DURATION_KEYS`].
//!
//! components-contrib parses durations three ways, and which one a key gets
//! decides what `"2s"` or `"2000"` means:
//! - dapr/kit's `metadata.DecodeMetadata` (kit v0.18.3, `metadata/
//!   duration.go`): a Go duration string, or a bare number of **seconds**.
//! - dapr/kit's `config.Decode` (`config/decode.go`): a bare number of
//!   **milliseconds**, or a Go duration string.
//! - A plain `strconv.ParseUint` of the value, with the error ignored: a
//!   bare number of **milliseconds**, and anything else (`"2s"`) is dropped
//!   without a word, keeping the default. Of the keys of pubsub.redis,
//!   pubsub.kafka, pubsub.rabbitmq, pubsub.jetstream and pubsub.mqtt3 in
//!   components-contrib v1.18.4, only pubsub.redis' `redeliverInterval` is
//!   read this way: every other duration key takes a duration string, and
//!   every integer key refuses `"5s"` loudly (the component fails to start).
//!
//! The rules read durations through [`effective`], so that the value a rule
//! reasons about is the one the component uses, and [`silently_ignored`] is
//! rule 4: a value the component drops.

use super::finding::{Finding, Subject};
use super::resources::{Component, Setting};
use std::time::Duration;

/// How a bare number is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    Milliseconds,
    Seconds,
}

/// What happens to a value that is not a bare number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strings {
    /// Parsed as a Go duration (`"1m30s"`); anything else fails the
    /// component's start.
    Parsed,
    /// Dropped without a word: the default stays.
    Ignored,
}

/// One duration key of one component type.
#[derive(Debug)]
pub struct DurationKey {
    pub component_type: &'static str,
    pub key: &'static str,
    pub bare_number: Unit,
    pub strings: Strings,
    /// What the component uses when the key is absent (or ignored).
    pub default: Duration,
    pub case: KeyCase,
}

/// How a key is matched against the names written in `spec.metadata`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyCase {
    /// Regardless of case (mapstructure's field matching).
    Any,
    /// Exactly (a plain map lookup): `RedeliverInterval` is another key.
    Exact,
    /// This prefix exactly, the rest regardless of case
    /// (`config.PrefixedBy` cuts the prefix, then mapstructure matches).
    ExactPrefix(&'static str),
}

impl KeyCase {
    /// The setting of `component` that `key` reads.
    pub fn lookup<'c>(self, component: &'c Component, key: &str) -> Option<&'c Setting> {
        match self {
            KeyCase::Any => component.get(key),
            KeyCase::Exact => component.get_exact(key),
            KeyCase::ExactPrefix(prefix) => component
                .metadata
                .iter()
                .find(|(name, _)| {
                    name.starts_with(prefix)
                        && key.starts_with(prefix)
                        && name[prefix.len()..].eq_ignore_ascii_case(&key[prefix.len()..])
                })
                .map(|(_, setting)| setting),
        }
    }
}

/// The duration keys the rules read, with how components-contrib v1.18.4
/// parses each.
pub const DURATION_KEYS: &[DurationKey] = &[
    // common/component/redis/redis.go, ParseClientFromProperties: for pub/sub
    // the defaults are 60 s and 15 s (metadata.yaml says 15 s and 60 s, the
    // code wins). processingTimeout is a time.Duration field decoded by
    // config.Decode, then re-read with ParseUint as milliseconds;
    // redeliverInterval's field is `mapstructure:"-"` (settings.go), so only
    // the ParseUint reads it, and its error is ignored.
    DurationKey {
        component_type: "pubsub.redis",
        key: "processingTimeout",
        bare_number: Unit::Milliseconds,
        strings: Strings::Parsed,
        default: Duration::from_secs(60),
        // The ParseUint re-read is exact, but config.Decode matches any case
        // and reads a bare number as milliseconds too: the same result.
        case: KeyCase::Any,
    },
    DurationKey {
        component_type: "pubsub.redis",
        key: "redeliverInterval",
        bare_number: Unit::Milliseconds,
        strings: Strings::Ignored,
        default: Duration::from_secs(15),
        case: KeyCase::Exact,
    },
    // common/component/kafka/kafka.go, Init: retry.DecodeConfigWithPrefix(
    // "backOff") is config.Decode over kit's retry.DefaultConfig (kit
    // retry/retry.go: 5 s constant; exponential from 500 ms up to 60 s for at
    // most 15 min). The prefix is cut with strings.CutPrefix: exact case.
    DurationKey {
        component_type: "pubsub.kafka",
        key: "backOffDuration",
        bare_number: Unit::Milliseconds,
        strings: Strings::Parsed,
        default: Duration::from_secs(5),
        case: KeyCase::ExactPrefix("backOff"),
    },
    DurationKey {
        component_type: "pubsub.kafka",
        key: "backOffMaxElapsedTime",
        bare_number: Unit::Milliseconds,
        strings: Strings::Parsed,
        default: Duration::from_secs(15 * 60),
        case: KeyCase::ExactPrefix("backOff"),
    },
    // common/component/kafka/metadata.go: DecodeMetadata, then a bare
    // number is re-read as milliseconds.
    DurationKey {
        component_type: "pubsub.kafka",
        key: "consumeRetryInterval",
        bare_number: Unit::Milliseconds,
        strings: Strings::Parsed,
        default: Duration::from_millis(100),
        case: KeyCase::Any,
    },
    // pubsub/jetstream/metadata.go: DecodeMetadata; 0 leaves the server's
    // default (30 s) in place.
    DurationKey {
        component_type: "pubsub.jetstream",
        key: "ackWait",
        bare_number: Unit::Seconds,
        strings: Strings::Parsed,
        default: Duration::from_secs(30),
        case: KeyCase::Any,
    },
    // pubsub/rabbitmq/metadata.go: DecodeMetadata, default 3 s.
    DurationKey {
        component_type: "pubsub.rabbitmq",
        key: "reconnectWaitSeconds",
        bare_number: Unit::Seconds,
        strings: Strings::Parsed,
        default: Duration::from_secs(3),
        case: KeyCase::Any,
    },
];

/// What a duration key of a component amounts to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effective {
    /// The value the component uses, and whether it came from the file.
    Known { value: Duration, written: bool },
    /// Given by a secret or the environment: unknown here.
    Unknown,
    /// Written but not a value the component can read; it refuses to start.
    Invalid,
}

/// The row of [`DURATION_KEYS`] for `key` of `component_type`.
pub fn row(component_type: &str, key: &str) -> Option<&'static DurationKey> {
    DURATION_KEYS
        .iter()
        .find(|r| r.component_type == component_type && r.key == key)
}

/// The duration the component uses for `key`, which must be a row of
/// [`DURATION_KEYS`] for its type.
pub fn effective(component: &Component, key: &str) -> Effective {
    let Some(row) = row(&component.component_type, key) else {
        return Effective::Unknown;
    };
    match row.case.lookup(component, row.key) {
        None => Effective::Known {
            value: row.default,
            written: false,
        },
        Some(Setting::Elsewhere) => Effective::Unknown,
        Some(Setting::Value(text)) if text.is_empty() => Effective::Known {
            value: row.default,
            written: false,
        },
        Some(Setting::Value(text)) => match parse(row, text) {
            Parsed::Value(value) => Effective::Known {
                value,
                written: true,
            },
            Parsed::Dropped => Effective::Known {
                value: row.default,
                written: false,
            },
            Parsed::Invalid => Effective::Invalid,
        },
    }
}

enum Parsed {
    Value(Duration),
    Dropped,
    Invalid,
}

fn parse(row: &DurationKey, text: &str) -> Parsed {
    let text = text.trim();
    if let Ok(n) = text.parse::<u64>() {
        return Parsed::Value(match row.bare_number {
            Unit::Milliseconds => Duration::from_millis(n),
            Unit::Seconds => Duration::from_secs(n),
        });
    }
    match row.strings {
        Strings::Ignored => Parsed::Dropped,
        Strings::Parsed => go_duration(text).map_or(Parsed::Invalid, Parsed::Value),
    }
}

/// Rule 4: every setting of `component` that its component type drops
/// without a word: a value it reads only as a number, or a key it reads
/// only spelled exactly so.
pub fn silently_ignored(component: &Component) -> Vec<Finding> {
    let mut findings = Vec::new();
    for row in DURATION_KEYS
        .iter()
        .filter(|r| r.component_type == component.component_type)
    {
        if row.case == KeyCase::Exact
            && component.get_exact(row.key).is_none()
            && let Some((written, _)) = component
                .metadata
                .iter()
                .find(|(name, _)| name.eq_ignore_ascii_case(row.key))
        {
            findings.push(Finding::new(
                component.file.clone(),
                Subject::of(component),
                written,
                format!(
                    "{written} is not read: {} reads this key only spelled {}",
                    component.component_type, row.key
                ),
                vec![format!(
                    "components-contrib 1.18.4 looks it up by its exact name, finds nothing, \
                         and keeps the default, {}",
                    show(row.default)
                )],
                format!("rename it to {}", row.key),
            ));
            continue;
        }
        if row.strings != Strings::Ignored {
            continue;
        }
        let Some(Setting::Value(text)) = row.case.lookup(component, row.key) else {
            continue;
        };
        if text.is_empty() || text.trim().parse::<u64>().is_ok() {
            continue;
        }
        let (what, meant) = match go_duration(text.trim()) {
            Some(d) => ("a duration string", d),
            None => ("not a number", row.default),
        };
        let (unit, as_number) = match row.bare_number {
            Unit::Milliseconds => ("milliseconds", meant.as_millis()),
            Unit::Seconds => ("seconds", u128::from(meant.as_secs())),
        };
        findings.push(Finding::new(
            component.file.clone(),
            Subject::of(component),
            row.key,
            format!(
                "{} \"{text}\" is {what}; {} reads this key only as a number of {unit}",
                row.key, component.component_type
            ),
            vec![format!(
                "components-contrib 1.18.4 drops it without a word and keeps the default, {}",
                show(row.default)
            )],
            format!("{}: \"{as_number}\"", row.key),
        ));
    }
    findings
}

/// Parses a Go duration (`time.ParseDuration`): `"300ms"`, `"1.5h"`,
/// `"2h45m"`, or `"0"`. Negative durations are `None`: no rule needs one.
pub fn go_duration(text: &str) -> Option<Duration> {
    let mut rest = text.strip_prefix('+').unwrap_or(text);
    if rest == "0" {
        return Some(Duration::ZERO);
    }
    if rest.is_empty() {
        return None;
    }
    let mut total = 0f64;
    while !rest.is_empty() {
        let number_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let (number, after) = rest.split_at(number_len);
        if number.is_empty() || number == "." || number.matches('.').count() > 1 {
            return None;
        }
        let value: f64 = number.parse().ok()?;
        let unit_len = after
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(after.len());
        let (unit, after) = after.split_at(unit_len);
        let nanos = match unit {
            "ns" => 1.0,
            "us" | "\u{b5}s" | "\u{3bc}s" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            _ => return None,
        };
        total += value * nanos;
        rest = after;
    }
    Some(Duration::from_nanos(total.round() as u64))
}

/// A duration as Go prints it, short: `15s`, `1m30s`, `500ms`, `8m20s`.
pub fn show(d: Duration) -> String {
    let ms = d.as_millis();
    if ms == 0 {
        return String::from("0s");
    }
    if ms < 1000 {
        return format!("{ms}ms");
    }
    let (h, m, s, rest_ms) = (ms / 3_600_000, ms / 60_000 % 60, ms / 1000 % 60, ms % 1000);
    let mut out = String::new();
    if h > 0 {
        out.push_str(&format!("{h}h"));
    }
    if m > 0 {
        out.push_str(&format!("{m}m"));
    }
    if rest_ms > 0 {
        let frac = format!("{:03}", rest_ms);
        out.push_str(&format!("{s}.{}s", frac.trim_end_matches('0')));
    } else if s > 0 {
        out.push_str(&format!("{s}s"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::resources::test_component;

    fn redis(settings: &[(&str, &str)]) -> Component {
        test_component("pubsub.redis", settings)
    }

    #[test]
    fn go_durations_parse_as_go_does() {
        assert_eq!(go_duration("15s"), Some(Duration::from_secs(15)));
        assert_eq!(go_duration("1m30s"), Some(Duration::from_secs(90)));
        assert_eq!(go_duration("1.5s"), Some(Duration::from_millis(1500)));
        assert_eq!(go_duration("500ms"), Some(Duration::from_millis(500)));
        assert_eq!(go_duration("0"), Some(Duration::ZERO));
        assert_eq!(go_duration("2000"), None);
        assert_eq!(go_duration("2 s"), None);
        assert_eq!(go_duration(""), None);
        assert_eq!(show(Duration::from_millis(90_500)), "1m30.5s");
        assert_eq!(show(Duration::from_secs(8)), "8s");
    }

    #[test]
    fn a_bare_number_takes_the_unit_of_the_key() {
        let c = redis(&[("processingTimeout", "15"), ("redeliverInterval", "2000")]);
        assert_eq!(
            effective(&c, "processingTimeout"),
            Effective::Known {
                value: Duration::from_millis(15),
                written: true
            }
        );
        assert_eq!(
            effective(&c, "redeliverInterval"),
            Effective::Known {
                value: Duration::from_secs(2),
                written: true
            }
        );
        let c = redis(&[("processingTimeout", "15s"), ("redeliverInterval", "2s")]);
        assert_eq!(
            effective(&c, "processingTimeout"),
            Effective::Known {
                value: Duration::from_secs(15),
                written: true
            }
        );
        // Dropped: the default, 15 s, stays.
        assert_eq!(
            effective(&c, "redeliverInterval"),
            Effective::Known {
                value: Duration::from_secs(15),
                written: false
            }
        );
    }

    #[test]
    fn a_duration_string_where_only_milliseconds_are_read_is_a_finding() {
        let fires = silently_ignored(&redis(&[("redeliverInterval", "2s")]));
        assert_eq!(fires.len(), 1);
        assert_eq!(
            fires[0].to_string(),
            "c/pubsub.yaml: component \"pubsub\" (pubsub.redis): redeliverInterval \"2s\" is a \
             duration string; pubsub.redis reads this key only as a number of milliseconds\n  \
             components-contrib 1.18.4 drops it without a word and keeps the default, 15s\n  \
             fix: redeliverInterval: \"2000\"\n"
        );
        // The number, and a duration string where strings are parsed, are fine.
        assert!(silently_ignored(&redis(&[("redeliverInterval", "2000")])).is_empty());
        assert!(silently_ignored(&redis(&[("processingTimeout", "15s")])).is_empty());
        // A key spelled in another case is not read at all.
        let fires = silently_ignored(&redis(&[("RedeliverInterval", "2000")]));
        assert_eq!(fires.len(), 1);
        assert!(
            fires[0]
                .to_string()
                .contains("RedeliverInterval is not read")
        );
    }
}
