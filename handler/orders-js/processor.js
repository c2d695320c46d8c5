// The order processor in JavaScript: the same work as handler/order-processor.
//
// It subscribes to `orders`, totals each order and saves the processed order
// to the state store. Its answers follow Dapr's contract, as the Rust one's
// do: an order that can never be processed (malformed JSON, a failed
// validation) is "drop", so it reaches the dead-letter topic; a failure that
// may pass (the state store is unavailable) is "retry".
//
// Build: `npm run build:processor` (spin.toml's build command).

import { save } from "hostbridge:pubsub/state@0.1.0";
import { InvalidOrder, STATE_STORE, parseOrder, stateKey, totalCents } from "./orders.js";

const ENCODER = new TextEncoder();

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
    const key = stateKey(order.orderId);
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
