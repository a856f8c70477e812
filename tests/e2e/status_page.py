#!/usr/bin/python3
"""Drives the status page in headless Chromium through chromedriver (W3C WebDriver over HTTP).

Usage: status_page.py CHROMEDRIVER_URL PAGE_URL MEMBER_ID NAME SCREENSHOT_DIR
Reads commands from stdin between steps ("stop-backend" is answered by the caller), so the
shell script can stop the backend while the page stays open. Exits non-zero on any failure.
"""

import base64
import json
import sys
import time
import urllib.request

DRIVER, PAGE, MEMBER, NAME, SHOTS = sys.argv[1:6]


def call(method, path, body=None):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(DRIVER + path, data=data, method=method,
                                 headers={"content-type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.loads(r.read())["value"]


def until(what, predicate, limit=15.0):
    """Polls `predicate` every 0.2 s for at most `limit` seconds."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise SystemExit(f"FAIL {what} (waited {limit} s)")


def ok(what):
    print(f"ok   {what}", flush=True)


caps = {"capabilities": {"alwaysMatch": {
    "browserName": "chrome",
    "goog:chromeOptions": {
        "binary": "/usr/bin/chromium",
        "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", f"--user-data-dir={SHOTS}/profile",
                 "--window-size=1280,900"],
    },
}}}
session = call("POST", "/session", caps)["sessionId"]
S = f"/session/{session}"


def js(script, *args):
    return call("POST", f"{S}/execute/sync", {"script": script, "args": list(args)})


def shot(name):
    png = base64.b64decode(call("GET", f"{S}/screenshot"))
    with open(f"{SHOTS}/{name}", "wb") as f:
        f.write(png)


try:
    call("POST", f"{S}/url", {"url": PAGE})
    health = lambda: js(
        "const c = document.querySelector(`tr[data-member='${arguments[0]}'] .health`);"
        "return c ? c.textContent : null;", MEMBER)
    until("the member shows up", lambda: health() == "up")
    ok("one page load shows the member up")
    shares = js("return [...document.querySelectorAll('tr[data-member] .share')]"
                ".map(c => [c.parentElement.dataset.member, parseFloat(c.title)]);")
    share = dict(shares)
    if not (20 <= share.get(MEMBER, 0) <= 45) or abs(sum(share.values()) - 100) > 1:
        raise SystemExit(f"FAIL answer shares do not follow the weights 1:2: {share}")
    ok(f"answer shares follow the weights ({share})")
    js("window.__sameDocument = 'yes';")

    print("stop-backend", flush=True)
    if sys.stdin.readline().strip() != "stopped":
        raise SystemExit("FAIL the backend was not stopped")
    until("the member shows down without a reload", lambda: health() == "down")
    if js("return window.__sameDocument || null;") != "yes":
        raise SystemExit("FAIL the page was reloaded")
    ok("the same page shows the member down (no reload)")
    events = js("return document.getElementById('events').textContent;")
    if MEMBER not in events or "down" not in events:
        raise SystemExit(f"FAIL recent changes do not list the member going down: {events!r}")
    ok("recent changes list the member going down")

    until("the explain form lists the name",
          lambda: js("return [...document.querySelectorAll('#explain-name option')]"
                     ".some(o => o.value === arguments[0]);", NAME))
    js("document.getElementById('explain-name').value = arguments[0];"
       "document.getElementById('explain-client').value = '192.0.2.1';"
       "document.querySelector('#explain button').click();", NAME)
    result = until("the explanation appears",
                   lambda: js("const r = document.getElementById('explain-result');"
                              "return r.hidden ? null : r.textContent;"))
    if "reason" not in result or "answer:" not in result:
        raise SystemExit(f"FAIL the explanation has no answer and reason: {result!r}")
    ok("an explain query through the form shows its reason")
    shot("status-page.png")

    call("POST", f"{S}/window/rect", {"width": 390, "height": 844})
    time.sleep(0.3)  # let layout settle after the resize before measuring
    wide = js("return Math.max(document.documentElement.scrollWidth - window.innerWidth,"
              " ...[...document.querySelectorAll('section')].map(s => s.scrollWidth - s.clientWidth));")
    if wide > 1:
        raise SystemExit(f"FAIL at phone width the page or a section is {wide}px too wide")
    ok("readable at phone width (no horizontal scrolling)")
    shot("status-page-phone.png")
finally:
    call("DELETE", S)
