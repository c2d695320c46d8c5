"""The admin page in a real browser: Debian's Chromium, driven by Playwright.

Run by host-bridge/tests/admin_page.rs (`the_page_works_in_a_real_browser`)
against a host it started with `up --admin`; see that test for the app.
Prints each check as it passes, and exits non-zero on the first that fails.

    admin_page.py --admin http://127.0.0.1:PORT --sidecar http://127.0.0.1:PORT \
        --fixed dead_letter.wasm --screenshot target/test-artifacts/admin-page.png

The token is HOST_BRIDGE_ADMIN_TOKEN. Playwright never downloads a browser
here: it launches /usr/bin/chromium (`make setup-browser` installs both).
"""

import argparse
import json
import os
import sys
import time
import urllib.error
import urllib.request

from playwright.sync_api import expect, sync_playwright

CHROMIUM = "/usr/bin/chromium"
TIMEOUT_MS = 30_000


def say(line):
    print(line, flush=True)


def http(method, url, body=None, headers=None):
    request = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def publish(sidecar, topic, event_id, content_type, data):
    status, body = http(
        "POST",
        f"{sidecar}/v1.0/publish/pubsub/{topic}?metadata.cloudevent.id={event_id}",
        data.encode(),
        {"content-type": content_type},
    )
    assert status == 204, f"publish of {event_id} answered {status}: {body!r}"


def state(sidecar, key):
    status, body = http("GET", f"{sidecar}/v1.0/state/statestore/{key}")
    return body.decode() if status == 200 else None


def wait_until(what, check, timeout=30.0):
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--admin", required=True, help="the admin listener, http://HOST:PORT")
    parser.add_argument("--sidecar", required=True, help="the sidecar API, http://HOST:PORT")
    parser.add_argument("--fixed", required=True, help="the fixed processor's .wasm")
    parser.add_argument("--screenshot", required=True, help="where to save the screenshot")
    args = parser.parse_args()
    token = os.environ["HOST_BRIDGE_ADMIN_TOKEN"]

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=["--no-sandbox"]
        )
        page = browser.new_page(viewport={"width": 1400, "height": 1100})
        page.set_default_timeout(TIMEOUT_MS)
        expect.set_options(timeout=TIMEOUT_MS)
        errors = []
        page.on("pageerror", lambda e: errors.append(str(e)))

        # 1. A wrong token is refused, and the page asks again.
        page.goto(args.admin + "/")
        expect(page.locator("#login")).to_be_visible()
        page.fill("#token", "not-the-token-not-the-token-not-the-token")
        page.click("#login-form button[type=submit]")
        expect(page.locator("#login-error")).to_contain_text("Wrong token")
        expect(page.locator("#main")).to_be_hidden()
        say("ok: a wrong token is refused, and the page asks for it again")

        # The right one opens the page: components, subscriptions, routes.
        page.fill("#token", token)
        page.click("#login-form button[type=submit]")
        expect(page.locator("#main")).to_be_visible()
        expect(page.locator("#live")).to_have_text("live")
        processor = page.locator('#components [data-component="processor"]')
        expect(processor).to_contain_text("hostbridge:pubsub subscriber")
        expect(processor.locator(".digest")).to_contain_text("sha256:")
        say("ok: the right token opens the page, with the components and their digests")

        # 2. The counts move while messages flow, with no reload.
        page.evaluate("window.sameDocument = true")
        delivered = page.locator('#subscriptions tr[data-sub="1"] .delivered')
        before = int(delivered.inner_text())
        for n in range(10):
            publish(args.sidecar, "record-flow", f"flow-{n}", "text/plain", f"message {n}")
            time.sleep(0.1)
        wait_until(
            "the delivered count to move",
            lambda: int(delivered.inner_text()) >= before + 10,
        )
        after = int(delivered.inner_text())
        assert page.evaluate("window.sameDocument === true"), "the page was reloaded"
        say(f"ok: the delivered count moved from {before} to {after} without a reload")

        # 3. A dropped order shows up among the dead letters, with its data.
        order = {"orderId": "order-42", "customer": "ada", "items": [{"sku": "book", "qty": 2}]}
        publish(args.sidecar, "drop-orders", "order-42", "application/json", json.dumps(order))
        row = page.locator('#dead-letters tr[data-event-id="order-42"]')
        expect(row).to_be_visible()
        expect(row.locator(".data")).to_contain_text('"orderId": "order-42"')
        expect(row).to_contain_text("DROP")
        expect(page.locator('#subscriptions tr[data-sub="0"] .drop')).to_have_text("1")
        say("ok: the dropped order is listed among the dead letters, with its data as JSON")
        os.makedirs(os.path.dirname(os.path.abspath(args.screenshot)), exist_ok=True)
        page.screenshot(path=args.screenshot, full_page=True)
        say(f"ok: screenshot saved to {args.screenshot}")

        # 4. The processor is fixed (a live deploy), then Replay.
        with open(args.fixed, "rb") as f:
            status, body = http(
                "PUT",
                f"{args.admin}/admin/components/processor",
                f.read(),
                {"authorization": f"Bearer {token}"},
            )
        assert status == 200, f"the deploy answered {status}: {body!r}"
        digest = json.loads(body)["digest"]
        expect(processor.locator(".digest")).to_have_text(digest)
        say(f"ok: the fixed processor is deployed live, and the page shows {digest[:19]}…")
        row.locator("button.replay").click()
        expect(page.locator("#message")).to_contain_text("Replayed")
        expect(row).to_have_count(0)
        processed = wait_until("the order to be processed", lambda: state(args.sidecar, "deadletter-order-42"))
        assert "order-42" in processed, processed
        expect(page.locator("#actions")).to_contain_text("replay")
        expect(page.locator('#subscriptions tr[data-sub="0"] .success')).to_have_text("1")
        say("ok: Replay ended with the order processed")

        assert not errors, f"the page threw: {errors}"
        root, ext = os.path.splitext(args.screenshot)
        page.screenshot(path=f"{root}-after-replay{ext}", full_page=True)
        browser.close()
    say("all checks passed")


if __name__ == "__main__":
    try:
        main()
    except AssertionError as e:
        print(f"FAILED: {e}", file=sys.stderr, flush=True)
        sys.exit(1)
