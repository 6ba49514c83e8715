"""Black-box checks of the running compose stack through its published ports (stdlib only).

    python .ci/e2e_check.py --api http://127.0.0.1:8000 --prometheus http://127.0.0.1:9090 \
        --manifest manifest.json

Sends events and recommendation requests as a client would, then waits for Prometheus to
report the api target up. With --loop-out, also sends enough events for a retrain cycle and
waits until the api serves a new bundle (the retrainer of the `loop` profile promoted it),
writing its model_version to that file. Exits 1 with one line naming the first failed check.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import urllib.error
import urllib.request
from typing import Any

USER = "e2e-user"
HISTORY_LENGTH = 4
N = 5


class CheckError(Exception):
    pass


def call(method: str, url: str, body: Any | None = None) -> tuple[int, Any]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method)
    request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            status, payload = response.status, response.read()
    except urllib.error.HTTPError as error:
        status, payload = error.code, error.read()
    text = payload.decode()
    try:
        return status, json.loads(text)
    except json.JSONDecodeError:
        return status, text


def expect(condition: bool, message: str) -> None:
    if not condition:
        raise CheckError(message)


def check_api(api: str, manifest: dict) -> None:
    for route in ("/healthz", "/readyz"):
        status, body = call("GET", api + route)
        expect(status == 200, f"GET {route}: {status} {body}")

    catalogue = manifest["items"]
    history = catalogue[:HISTORY_LENGTH]
    events = [
        {"user_id": USER, "item_id": item, "timestamp": 1_700_000_000 + 60 * k, "event_id": f"e{k}"}
        for k, item in enumerate(history)
    ]
    status, body = call("POST", api + "/events", {"events": events})
    expect(status == 200, f"POST /events: {status} {body}")
    print(f"POST /events {len(events)} events -> {status} {json.dumps(body)}")
    status, body = call("POST", api + "/events", {"events": events})  # a client's retry
    expect(status == 200, f"POST /events (retry): {status} {body}")
    print(f"POST /events again (same event ids) -> {status} {json.dumps(body)}")

    status, body = call("POST", api + "/recommend", {"user_id": USER, "n": N})
    expect(status == 200, f"POST /recommend: {status} {body}")
    print(f"POST /recommend -> {status} {json.dumps(body)}")
    items = [entry["item_id"] for entry in body["items"]]
    expect(len(items) == N, f"/recommend gave {len(items)} items, asked for {N}")
    expect(set(items) <= set(catalogue), f"/recommend gave items outside the catalogue: {items}")
    expect(not set(items) & set(history), f"/recommend repeated seen items: {items}")
    expect(
        body["model_version"] == manifest["model_version"],
        f"model_version {body['model_version']!r} is not the bundle's",
    )
    expect("popularity" not in body["source"], f"a user with a history got {body['source']!r}")

    status, body = call("POST", api + "/recommend", {"user_id": "e2e-stranger", "n": N})
    expect(status == 200, f"POST /recommend (no history): {status} {body}")
    expect("popularity" in body["source"], f"a user with no history got {body['source']!r}")

    status, text = call("GET", api + "/metrics")
    expect(status == 200 and "# TYPE" in str(text), f"GET /metrics: {status}")


def check_loop(api: str, manifest: dict, timeout_s: float) -> str:
    """Events of 40 users over 12 items (enough for the paper's minimum counts), then the
    version the api serves once the retrain loop has promoted a bundle trained on them."""
    items = manifest["items"][:12]
    events = [
        {
            "user_id": f"loop-{user}",
            "item_id": items[(user + k) % len(items)],
            "timestamp": 1_700_000_000 + 60 * k,
            "event_id": f"loop-{user}-{k}",
        }
        for user in range(40)
        for k in range(8)
    ]
    status, body = call("POST", api + "/events", {"events": events})
    expect(status == 200, f"POST /events (for the loop): {status} {body}")
    print(f"POST /events {len(events)} events for the retrain loop -> {status}")
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        status, body = call("POST", api + "/recommend", {"user_id": "loop-0", "n": N})
        expect(status == 200, f"POST /recommend during the loop: {status} {body}")
        if body["model_version"] != manifest["model_version"]:
            print(f"the api serves {body['model_version']}, promoted by the retrain loop")
            return body["model_version"]
        time.sleep(3)
    raise CheckError(f"no bundle promoted by the retrain loop within {timeout_s:.0f} s")


def check_prometheus(prometheus: str, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    health = "no target yet"
    while time.monotonic() < deadline:
        status, body = call("GET", prometheus + "/api/v1/targets")
        if status == 200:
            targets = [
                target
                for target in body["data"]["activeTargets"]
                if target["labels"].get("job") == "cosrec-api"
            ]
            health = targets[0]["health"] if targets else "no cosrec-api target"
            if health == "up":
                print(f"prometheus: cosrec-api target {targets[0]['scrapeUrl']} is up")
                return
        time.sleep(2)
    raise CheckError(f"prometheus: cosrec-api target not up after {timeout_s:.0f} s ({health})")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--api", required=True)
    parser.add_argument("--prometheus", required=True)
    parser.add_argument("--manifest", required=True, help="the bundle's manifest.json")
    parser.add_argument("--prometheus-timeout", type=float, default=90.0)
    parser.add_argument("--loop-out", help="check the retrain loop; write the new version here")
    parser.add_argument("--loop-timeout", type=float, default=300.0)
    args = parser.parse_args()
    with open(args.manifest, encoding="utf-8") as handle:
        manifest = json.load(handle)
    try:
        check_api(args.api.rstrip("/"), manifest)
        check_prometheus(args.prometheus.rstrip("/"), args.prometheus_timeout)
        if args.loop_out:
            promoted = check_loop(args.api.rstrip("/"), manifest, args.loop_timeout)
            with open(args.loop_out, "w", encoding="utf-8") as handle:
                handle.write(promoted)
    except (CheckError, KeyError, TypeError, OSError) as error:
        print(f"e2e check failed: {error!r}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
