// The orders Web API in JavaScript: the same routes and answers as
// handler/order-api (Rust), served through componentize-js's `fetch` event,
// which exports wasi:http/incoming-handler.
//
// - `POST /orders` validates the order, publishes it to topic `orders` on
//   pub/sub `pubsub` and answers 202 with the order id. An invalid body gets
//   400 with the reason, and nothing is published.
// - `GET /orders/{id}` answers the processed order from the state store, or
//   404 while it is unknown.
//
// Build: `npm run build:api` (spin.toml's build command).

import { publish } from "hostbridge:pubsub/publisher@0.1.0";
import { get } from "hostbridge:pubsub/state@0.1.0";
import { InvalidOrder, PUBSUB_NAME, STATE_STORE, TOPIC, isValidId, parseOrder, stateKey } from "./orders.js";

const TEXT = new TextDecoder();

addEventListener("fetch", (event) => event.respondWith(handle(event.request)));

async function handle(request) {
  const path = new URL(request.url).pathname.replace(/\/+$/, "");
  if (path !== "/orders" && !path.startsWith("/orders/")) {
    return json(404, { error: "no such route" });
  }
  const rest = path.slice("/orders".length);
  if (request.method === "POST" && rest === "") {
    return placeOrder(new Uint8Array(await request.arrayBuffer()));
  }
  if (request.method === "GET" && rest.startsWith("/")) {
    return getOrder(rest.slice(1));
  }
  return json(405, { error: "use POST /orders or GET /orders/{id}" });
}

// Validates and publishes an order. The published bytes are the body as the
// client sent it, so subscribers see exactly what was accepted.
function placeOrder(body) {
  let order;
  try {
    order = parseOrder(body);
  } catch (err) {
    if (!(err instanceof InvalidOrder)) throw err;
    return json(400, { error: err.message });
  }
  const message = {
    data: body,
    contentType: "application/json",
    metadata: {
      ttlSeconds: undefined,
      rawPayload: false,
      cloudevent: { subject: order.orderId },
      extra: [],
    },
  };
  try {
    publish(PUBSUB_NAME, TOPIC, message);
  } catch (err) {
    // A WIT `publish-error`: { tag: "unavailable" | ..., val: reason }.
    const error = err.payload ?? { tag: "broker", val: String(err) };
    return json(error.tag === "unavailable" ? 503 : 500, {
      error: `the order was not published: ${error.val}`,
    });
  }
  return json(202, { orderId: order.orderId, status: "accepted" });
}

// Answers the processed order with id `id` from the state store.
function getOrder(id) {
  if (!isValidId(id)) return json(404, { error: `no order ${JSON.stringify(id)}` });
  let record;
  try {
    record = get(STATE_STORE, stateKey(id));
  } catch (err) {
    return json(503, { error: `the state store failed: ${JSON.stringify(err.payload ?? String(err))}` });
  }
  if (record === undefined) return json(404, { error: `no processed order ${JSON.stringify(id)} yet` });
  return new Response(TEXT.decode(record), { status: 200, headers: { "content-type": "application/json" } });
}

function json(status, value) {
  return new Response(JSON.stringify(value), { status, headers: { "content-type": "application/json" } });
}
