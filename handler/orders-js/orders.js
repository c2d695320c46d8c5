// The orders domain of the JavaScript guests, shared by api.js and
// processor.js as the `orders` crate is by the Rust ones, with the same
// rules: an order's fields, the id syntax, totals in cents.

export const PUBSUB_NAME = "pubsub";
export const TOPIC = "orders";
export const STATE_STORE = "statestore";

const MAX_ID_LEN = 64;
const ID = new RegExp(`^[A-Za-z0-9_-]{1,${MAX_ID_LEN}}$`);
const U32_MAX = 2 ** 32 - 1;
// Made once, when the component is built (the runtime is snapshotted then),
// instead of once per call.
const UTF8 = new TextDecoder("utf-8", { fatal: true });

/** Why a payload is not a valid order; the message names the field. */
export class InvalidOrder extends Error {}

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

/** Whether `id` can be used as an order id. */
export function isValidId(id) {
  return ID.test(id);
}

/** The state key of an order. */
export function stateKey(orderId) {
  return `order-${orderId}`;
}

/** Parses and validates an order from its JSON bytes. */
export function parseOrder(data) {
  let order;
  try {
    order = JSON.parse(UTF8.decode(data));
  } catch (err) {
    throw new InvalidOrder(`the body is not a valid order: ${err.message}`);
  }
  fields(order, "the order", ["orderId", "customer", "items"]);
  const orderId = string(order.orderId, "orderId");
  if (!isValidId(orderId)) {
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

/** The total in cents; each price is rounded to cents first, half away from
 * zero as in Rust, so the total is exact and the same everywhere. */
export function totalCents(order) {
  return order.items.reduce((sum, item) => sum + Math.floor(item.price * 100 + 0.5) * item.qty, 0);
}
