"""A bounded load test: N concurrent clients ask real questions of a running `qa serve` for T seconds.

    python bench/load.py [--url http://127.0.0.1:8000] [--clients 8] [--duration 30] [-k 5]

Each client keeps one HTTP/1.1 connection open and asks the next question as
soon as it has the answer. Prints requests, throughput, latency percentiles and
errors (any answer that is not a 200 with a JSON body, or a failed connection);
exits 1 when there were errors.
"""

from __future__ import annotations

import argparse
import http.client
import json
import sys
import threading
import time
from urllib.parse import urlencode, urlsplit

QUESTIONS = [
    "Where did Assad flee to?",
    "Who is the leader of HTS?",
    "Which prison did opposition fighters free prisoners from?",
    "Who is Russia's foreign minister?",
    "What is Moscow's only naval base in the Mediterranean?",
    "What did Trump post on Truth Social?",
    "Who is the Syrian prime minister?",
    "When did the rebel offensive start?",
    "Which group controls the northeast of Syria?",
    "How long did the Assad family rule Syria?",
    "Did Russia grant Assad asylum?",
    "What happened to the Russian military bases in Syria?",
]


def percentile(sorted_values: list[float], p: float) -> float:
    """The p-th percentile (nearest rank) of already sorted values."""
    if not sorted_values:
        return float("nan")
    rank = max(1, min(len(sorted_values), round(p / 100 * len(sorted_values) + 0.5)))
    return sorted_values[rank - 1]


def client(host: str, port: int, k: int, offset: int, deadline: float, latencies: list, errors: list) -> None:
    """Ask questions until the deadline, recording each latency (s) or error."""
    conn = http.client.HTTPConnection(host, port, timeout=30)
    i = offset
    while time.monotonic() < deadline:
        path = "/api/search?" + urlencode({"q": QUESTIONS[i % len(QUESTIONS)], "k": k})
        i += 1
        t0 = time.perf_counter()
        try:
            conn.request("GET", path)
            resp = conn.getresponse()
            body = resp.read()
            if resp.status != 200:
                errors.append(f"{resp.status}: {body[:200]!r}")
            else:
                json.loads(body)
                latencies.append(time.perf_counter() - t0)
        except (OSError, http.client.HTTPException, ValueError) as e:
            errors.append(f"{type(e).__name__}: {e}")
            conn.close()
            conn = http.client.HTTPConnection(host, port, timeout=30)
    conn.close()


def run(url: str, clients: int, duration: float, k: int = 5) -> dict:
    """Run the load and return the figures."""
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    latencies: list[float] = []
    errors: list[str] = []
    deadline = time.monotonic() + duration
    t0 = time.perf_counter()
    threads = [threading.Thread(target=client, args=(host, port, k, n * 3, deadline, latencies, errors), daemon=True)
               for n in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(duration + 60)
    took = time.perf_counter() - t0
    lat = sorted(latencies)
    return {
        "clients": clients, "seconds": round(took, 1), "requests": len(lat) + len(errors), "ok": len(lat),
        "errors": len(errors), "throughput_rps": round(len(lat) / took, 1),
        "p50_ms": round(percentile(lat, 50) * 1000, 1), "p99_ms": round(percentile(lat, 99) * 1000, 1),
        "max_ms": round(lat[-1] * 1000, 1) if lat else None, "first_errors": errors[:5],
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--url", default="http://127.0.0.1:8000", help="base URL of a running `qa serve`")
    ap.add_argument("--clients", type=int, default=8, help="concurrent clients (default 8)")
    ap.add_argument("--duration", type=float, default=30.0, help="seconds to run (default 30)")
    ap.add_argument("-k", type=int, default=5, help="passages per answer (default 5)")
    ap.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = ap.parse_args(argv)
    r = run(args.url.rstrip("/"), args.clients, args.duration, args.k)
    if args.json:
        print(json.dumps(r))
    else:
        print(f"{r['clients']} clients, {r['seconds']} s: {r['requests']} requests, {r['throughput_rps']} req/s, "
              f"p50 {r['p50_ms']} ms, p99 {r['p99_ms']} ms, max {r['max_ms']} ms, {r['errors']} errors")
        for e in r["first_errors"]:
            print(f"  error: {e}", file=sys.stderr)
    return 1 if r["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
