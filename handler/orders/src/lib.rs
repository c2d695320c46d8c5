//! The orders domain of the example app, shared by its guests.
//!
//! `order-api` validates incoming orders with [`Order::parse`] before it
//! publishes them, and `order-processor` parses the event again (a message
//! on the topic may come from anyone) and turns it into a [`ProcessedOrder`].
//! Keeping both sides on this one crate means they can never disagree on
//! what a valid order is. The crate is plain Rust, so its tests run natively.

pub mod cloudevent;

use serde::{Deserialize, Serialize};
use std::fmt;

/// The pub/sub component the example publishes to.
pub const PUBSUB_NAME: &str = "pubsub";
/// The topic orders are published to.
pub const TOPIC: &str = "orders";
/// The state store processed orders are saved in.
pub const STATE_STORE: &str = "statestore";

/// The longest order id accepted. Ids end up in state keys and URLs.
const MAX_ID_LEN: usize = 64;

/// An order as a client submits it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Order {
    pub order_id: String,
    pub customer: String,
    pub items: Vec<Item>,
}

/// One line of an order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Item {
    pub sku: String,
    pub qty: u32,
    pub price: f64,
}

/// An order after the processor has handled it: what `GET /orders/{id}` shows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProcessedOrder {
    pub order_id: String,
    pub customer: String,
    pub items: Vec<Item>,
    /// Always `"processed"`; a field so clients need not infer it.
    pub status: String,
    /// The sum of `qty * price` over the items, in currency units, rounded to cents.
    pub total: f64,
    /// When the processor handled the order, as an RFC 3339 UTC timestamp.
    pub processed_at: String,
    /// The id of the event that carried the order.
    pub event_id: String,
}

/// Why a payload is not a valid order. The message names the offending field.
#[derive(Debug, Clone, PartialEq)]
pub struct InvalidOrder(pub String);

impl fmt::Display for InvalidOrder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for InvalidOrder {}

impl Order {
    /// Parses and validates an order from its JSON text.
    pub fn parse(json: &[u8]) -> Result<Order, InvalidOrder> {
        let order: Order = serde_json::from_slice(json)
            .map_err(|e| InvalidOrder(format!("the body is not a valid order: {e}")))?;
        order.validate()?;
        Ok(order)
    }

    /// Checks the rules serde cannot express.
    pub fn validate(&self) -> Result<(), InvalidOrder> {
        if !is_valid_id(&self.order_id) {
            return Err(InvalidOrder(format!(
                "orderId must be 1 to {MAX_ID_LEN} characters of letters, digits, '-' or '_', got {:?}",
                self.order_id
            )));
        }
        if self.customer.trim().is_empty() {
            return Err(InvalidOrder("customer must not be empty".into()));
        }
        if self.items.is_empty() {
            return Err(InvalidOrder("items must hold at least one item".into()));
        }
        for (i, item) in self.items.iter().enumerate() {
            if item.sku.trim().is_empty() {
                return Err(InvalidOrder(format!("items[{i}].sku must not be empty")));
            }
            if item.qty == 0 {
                return Err(InvalidOrder(format!("items[{i}].qty must be at least 1")));
            }
            if !item.price.is_finite() || item.price < 0.0 {
                return Err(InvalidOrder(format!(
                    "items[{i}].price must be a number of at least 0, got {}",
                    item.price
                )));
            }
        }
        Ok(())
    }

    /// The order total in cents. Prices are rounded to cents first, so the
    /// total is exact and the same on every machine.
    pub fn total_cents(&self) -> u64 {
        self.items
            .iter()
            .map(|item| (item.price * 100.0).round() as u64 * u64::from(item.qty))
            .sum()
    }

    /// The processed record for this order.
    pub fn process(self, event_id: &str, processed_at: String) -> ProcessedOrder {
        let total = self.total_cents() as f64 / 100.0;
        ProcessedOrder {
            order_id: self.order_id,
            customer: self.customer,
            items: self.items,
            status: "processed".into(),
            total,
            processed_at,
            event_id: event_id.into(),
        }
    }
}

/// Whether `id` can be used as an order id.
pub fn is_valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_ID_LEN
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

/// The state key of an order.
pub fn state_key(order_id: &str) -> String {
    format!("order-{order_id}")
}

/// Formats seconds since the Unix epoch as an RFC 3339 UTC timestamp.
///
/// The guests have no date library; this is the civil-from-days algorithm.
pub fn rfc3339(unix_seconds: u64, nanos: u32) -> String {
    let days = (unix_seconds / 86_400) as i64;
    let secs = unix_seconds % 86_400;
    let (h, m, s) = (secs / 3600, secs % 3600 / 60, secs % 60);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{h:02}:{m:02}:{s:02}.{:03}Z",
        nanos / 1_000_000
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str =
        r#"{"orderId":"o-1","customer":"ada","items":[{"sku":"book","qty":2,"price":12.5}]}"#;

    #[test]
    fn parses_a_valid_order_and_totals_it() {
        let order = Order::parse(GOOD.as_bytes()).unwrap();
        assert_eq!(order.order_id, "o-1");
        assert_eq!(order.total_cents(), 2500);
        let processed = order.process("ev-1", "t".into());
        assert_eq!(processed.total, 25.0);
        assert_eq!(processed.status, "processed");
    }

    #[test]
    fn totals_are_exact_in_cents() {
        let order = Order {
            order_id: "x".into(),
            customer: "c".into(),
            items: vec![
                Item {
                    sku: "a".into(),
                    qty: 3,
                    price: 0.1,
                },
                Item {
                    sku: "b".into(),
                    qty: 1,
                    price: 0.2,
                },
            ],
        };
        assert_eq!(order.total_cents(), 50);
    }

    #[test]
    fn rejections_name_the_field() {
        let cases = [
            (r#"{"orderId":"","customer":"a","items":[]}"#, "orderId"),
            (r#"{"orderId":"a b","customer":"a","items":[]}"#, "orderId"),
            (r#"{"orderId":"a","customer":" ","items":[]}"#, "customer"),
            (r#"{"orderId":"a","customer":"c","items":[]}"#, "items"),
            (
                r#"{"orderId":"a","customer":"c","items":[{"sku":"s","qty":0,"price":1}]}"#,
                "items[0].qty",
            ),
            (
                r#"{"orderId":"a","customer":"c","items":[{"sku":"s","qty":1,"price":-1}]}"#,
                "items[0].price",
            ),
            (
                r#"{"orderId":"a","customer":"c","items":[{"sku":"","qty":1,"price":1}]}"#,
                "items[0].sku",
            ),
            (r#"{"orderId":"a","items":[]}"#, "customer"),
            (
                r#"{"orderId":"a","customer":"c","items":[],"extra":1}"#,
                "extra",
            ),
            ("not json", "not a valid order"),
        ];
        for (body, field) in cases {
            let err = Order::parse(body.as_bytes()).unwrap_err();
            assert!(
                err.0.contains(field),
                "{body}: {err} should mention {field}"
            );
        }
    }

    #[test]
    fn formats_rfc3339() {
        assert_eq!(rfc3339(0, 0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(951_782_400, 5_000_000), "2000-02-29T00:00:00.005Z");
        assert_eq!(rfc3339(1_795_737_600, 0), "2026-11-27T00:00:00.000Z");
    }
}
