"""The order processor in Python: the same work as handler/order-processor.

It subscribes to `orders`, totals each order and saves the processed order
to the state store. Its answers follow Dapr's contract, as the Rust one's
do: an order that can never be processed (malformed JSON, a failed
validation) is DROP, so it reaches the dead-letter topic; a failure that may
pass (the state store is unavailable) is RETRY.

Build: the `[component.order-processor.build]` command of this folder's spin.toml.
"""

import json
import math
import re
import sys
import time

from componentize_py_types import Err
from wit_world import exports
from wit_world.imports import state
from wit_world.imports.types import Event, Status

STATE_STORE = "statestore"
MAX_ID_LEN = 64
_ID = re.compile(r"[A-Za-z0-9_-]{1,%d}" % MAX_ID_LEN)
_U32_MAX = 2**32 - 1


class InvalidOrder(Exception):
    """Why a payload is not a valid order; the message names the field."""


def _fields(value, where, names):
    """Checks that `value` is an object with exactly the fields `names`."""
    if not isinstance(value, dict):
        raise InvalidOrder(f"{where} must be an object")
    for name in names:
        if name not in value:
            raise InvalidOrder(f"{where}: missing field `{name}`")
    for name in value:
        if name not in names:
            raise InvalidOrder(f"{where}: unknown field `{name}`")
    return value


def _string(value, where):
    if not isinstance(value, str):
        raise InvalidOrder(f"{where} must be a string")
    return value


def parse_order(data: bytes) -> dict:
    """Parses and validates an order, with the rules of the `orders` crate."""
    try:
        order = json.loads(data)
    except (ValueError, UnicodeDecodeError) as err:
        raise InvalidOrder(f"the body is not a valid order: {err}") from None
    _fields(order, "the order", ("orderId", "customer", "items"))
    order_id = _string(order["orderId"], "orderId")
    if not _ID.fullmatch(order_id):
        raise InvalidOrder(
            f"orderId must be 1 to {MAX_ID_LEN} characters of letters, digits, '-' or '_', got {order_id!r}"
        )
    if not _string(order["customer"], "customer").strip():
        raise InvalidOrder("customer must not be empty")
    items = order["items"]
    if not isinstance(items, list):
        raise InvalidOrder("items must be a list")
    if not items:
        raise InvalidOrder("items must hold at least one item")
    for i, item in enumerate(items):
        _fields(item, f"items[{i}]", ("sku", "qty", "price"))
        if not _string(item["sku"], f"items[{i}].sku").strip():
            raise InvalidOrder(f"items[{i}].sku must not be empty")
        qty = item["qty"]
        if isinstance(qty, bool) or not isinstance(qty, int) or qty > _U32_MAX:
            raise InvalidOrder(f"items[{i}].qty must be a whole number")
        if qty < 1:
            raise InvalidOrder(f"items[{i}].qty must be at least 1")
        price = item["price"]
        if isinstance(price, bool) or not isinstance(price, (int, float)):
            raise InvalidOrder(f"items[{i}].price must be a number")
        if not math.isfinite(price) or price < 0:
            raise InvalidOrder(f"items[{i}].price must be a number of at least 0, got {price}")
    return order


def total_cents(order: dict) -> int:
    """The total in cents; each price is rounded to cents first, half away
    from zero as in Rust, so the total is exact and the same everywhere."""
    return sum(math.floor(item["price"] * 100 + 0.5) * item["qty"] for item in order["items"])


def rfc3339(seconds: float) -> str:
    """Seconds since the Unix epoch as an RFC 3339 UTC time with milliseconds."""
    millis = int(seconds * 1000) % 1000
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(int(seconds))) + f".{millis:03d}Z"


class Subscriber(exports.Subscriber):
    def handle(self, event: Event) -> Status:
        try:
            order = parse_order(event.data)
        except InvalidOrder as err:
            print(f"order-processor-py: dropping event {event.id}: {err}", file=sys.stderr)
            return Status.DROP
        key = f"order-{order['orderId']}"
        processed = {
            "orderId": order["orderId"],
            "customer": order["customer"],
            "items": order["items"],
            "status": "processed",
            "total": total_cents(order) / 100,
            # The wall clock is granted to this component in its manifest.
            "processedAt": rfc3339(time.time()),
            "eventId": event.id,
        }
        try:
            state.save(STATE_STORE, key, json.dumps(processed, separators=(",", ":")).encode())
        except Err as err:
            print(f"order-processor-py: saving {key} failed, will retry: {err.value}", file=sys.stderr)
            return Status.RETRY
        return Status.SUCCESS
