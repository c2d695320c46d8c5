// The order processor in JavaScript: the same work as handler/order-processor.
//
// It subscribes to `orders`, totals each order and saves the processed order
// to the state store. Its answers follow Dapr's contract, as the Rust one's
// do: an order that can never be processed (malformed JSON, a failed
// validation) is "drop", so it reaches the dead-letter topic; a failure that
// may pass (the state store is unavailable) is "retry".
//
// Build: see `[component.order-processor.build]` in spin-javascript.toml.

import { save } from "hostbridge:pubsub/state@0.1.0";

const STATE_STORE = "statestore";
const MAX_ID_LEN = 64;
const ID = new RegExp(`^[A-Za-z0-9_-]{1,${MAX_ID_LEN}}$`);
const U32_MAX = 2 ** 32 - 1;
// Made once, when the component is built (the runtime is snapshotted then),
// instead of once per delivery.
const UTF8 = new TextDecoder("utf-8", { fatal: true });
const ENCODER = new TextEncoder();

class InvalidOrder extends Error {}

// Checks that `value` is an object with exactly the fields `names`.
function fields(value, where, names) {
  if (typeof value !== "object" || value === null || Array.isArray(value)) {
    throw new InvalidOrder(`${where} must be an object`);
  }
  for (const name of names) {
    if (!Object.hasOwn(value, name)) throw new InvalidOrder(`${where}: missing field \`${name}\``);
  }
  for (const name of Object.keys(value)) {
    if (!names.includes(name)) throw new InvalidOrder(`${where}: unknown field \`${name}\``);
  }
  return value;
}

function string(value, where) {
  if (typeof value !== "string") throw new InvalidOrder(`${where} must be a string`);
  return value;
}

// Parses and validates an order, with the rules of the `orders` crate.
export function parseOrder(data) {
  let order;
  try {
    order = JSON.parse(UTF8.decode(data));
  } catch (err) {
    throw new InvalidOrder(`the body is not a valid order: ${err.message}`);
  }
  fields(order, "the order", ["orderId", "customer", "items"]);
  const orderId = string(order.orderId, "orderId");
  if (!ID.test(orderId)) {
    throw new InvalidOrder(
      `orderId must be 1 to ${MAX_ID_LEN} characters of letters, digits, '-' or '_', got ${JSON.stringify(orderId)}`,
    );
  }
  if (!string(order.customer, "customer").trim()) throw new InvalidOrder("customer must not be empty");
  if (!Array.isArray(order.items)) throw new InvalidOrder("items must be a list");
  if (order.items.length === 0) throw new InvalidOrder("items must hold at least one item");
  order.items.forEach((item, i) => {
    fields(item, `items[${i}]`, ["sku", "qty", "price"]);
    if (!string(item.sku, `items[${i}].sku`).trim()) throw new InvalidOrder(`items[${i}].sku must not be empty`);
    if (!Number.isInteger(item.qty) || item.qty > U32_MAX) {
      throw new InvalidOrder(`items[${i}].qty must be a whole number`);
    }
    if (item.qty < 1) throw new InvalidOrder(`items[${i}].qty must be at least 1`);
    if (typeof item.price !== "number" || !Number.isFinite(item.price) || item.price < 0) {
      throw new InvalidOrder(`items[${i}].price must be a number of at least 0, got ${item.price}`);
    }
  });
  return order;
}

// The total in cents; each price is rounded to cents first, half away from
// zero as in Rust, so the total is exact and the same everywhere.
function totalCents(order) {
  return order.items.reduce((sum, item) => sum + Math.floor(item.price * 100 + 0.5) * item.qty, 0);
}

export const subscriber = {
  handle(event) {
    let order;
    try {
      order = parseOrder(event.data);
    } catch (err) {
      if (!(err instanceof InvalidOrder)) throw err;
      console.error(`order-processor-js: dropping event ${event.id}: ${err.message}`);
      return "drop";
    }
    const key = `order-${order.orderId}`;
    const processed = {
      orderId: order.orderId,
      customer: order.customer,
      items: order.items,
      status: "processed",
      total: totalCents(order) / 100,
      // The wall clock is granted to this component in its manifest.
      processedAt: new Date().toISOString(),
      eventId: event.id,
    };
    try {
      save(STATE_STORE, key, ENCODER.encode(JSON.stringify(processed)));
    } catch (err) {
      console.error(`order-processor-js: saving ${key} failed, will retry: ${JSON.stringify(err.payload ?? err.message)}`);
      return "retry";
    }
    return "success";
  },
};
