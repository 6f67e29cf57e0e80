"""`qa serve --ray` against `qa serve` on the same articles, on a two-node Ray cluster on 127.0.0.1.

    .venv/bin/python bench/serve_cluster.py [--articles 200] [--questions 60] [--rounds 2]

Builds a one-folder index and a 2-shard root of the seeds and N generated articles with the real model,
serves the folder with `qa serve --workers 1` and the root with `qa serve --ray --replicas 2`, then prints:
the share of questions with the same top 5 and the same answer, HTTP latency of each path measured in
alternating blocks (A B A B, one client), and the failures while the second node is killed under load.
"""

from __future__ import annotations

import argparse
import os
import secrets
import signal
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(HERE))

from tests.conftest import SEEDS, free_port  # noqa: E402
from tests.test_serve_cluster import _get, ask, questions  # noqa: E402
from tests.test_cluster import corpus  # noqa: E402

RAY = Path(sys.executable).parent / "ray"


def key(out: dict) -> tuple:
    a = out["answer"]
    return ([(r["citation"]["article_id"], r["citation"]["start"], r["citation"]["end"]) for r in out["results"]],
            a and (a["text"], a["citation"]["article_id"]))


def wait_ready(port: int, proc: subprocess.Popen, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server exited with {proc.returncode}")
        try:
            if _get(port, "/readyz", 5)[0] == 200:
                return
        except OSError:
            pass
        time.sleep(0.5)
    raise SystemExit("server never became ready")


def timed(port: int, qs: list[str]) -> list[float]:
    out = []
    for q in qs:
        t0 = time.perf_counter()
        status, _ = ask(port, q)
        out.append((time.perf_counter() - t0) * 1000)
        assert status == 200
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--articles", type=int, default=200)
    ap.add_argument("--questions", type=int, default=60)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--work", default="/tmp/qa-bench-serve-cluster")
    args = ap.parse_args()
    work = Path(args.work)
    subprocess.run(["rm", "-rf", str(work)], check=True)
    work.mkdir(parents=True)
    data = corpus(work / "news.jsonl", args.articles, seed=31)
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "HF_HUB_OFFLINE": "1", "RAY_AUTH_MODE": "token",
           "RAY_AUTH_TOKEN": secrets.token_hex(16), "QA_MODEL_THREADS": "1",
           "RAY_health_check_initial_delay_ms": "0", "RAY_health_check_period_ms": "500",
           "RAY_health_check_timeout_ms": "500", "RAY_health_check_failure_threshold": "4"}
    for ix, extra in (("one", []), ("root", ["--shards", "2"])):
        r = subprocess.run([sys.executable, "-m", "qa", "ingest", str(SEEDS), str(data), "--index", str(work / ix), "-q",
                            *extra], cwd=HERE, env=env, capture_output=True, text=True)
        print(ix, r.stdout.strip(), r.stderr[-500:] if r.returncode else "", flush=True)
    port = free_port()
    procs: list[subprocess.Popen] = []
    subprocess.run([str(RAY), "start", "--head", f"--port={port}", "--num-cpus=4", "--node-ip-address=127.0.0.1",
                    "--include-dashboard=false", "--disable-usage-stats"], env=env, capture_output=True, check=True)
    node = subprocess.Popen([str(RAY), "start", f"--address=127.0.0.1:{port}", "--num-cpus=4",
                             "--node-ip-address=127.0.0.1", "--block"], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        time.sleep(8)
        a_port, b_port = free_port(), free_port()
        one = subprocess.Popen([sys.executable, "-m", "qa", "serve", "--index", str(work / "one"), "--workers", "1",
                                "--port", str(a_port)], cwd=HERE, env=env, stdout=open(work / "one.log", "w"),
                               stderr=subprocess.STDOUT, start_new_session=True)
        procs.append(one)
        clu = subprocess.Popen([sys.executable, "-m", "qa", "serve", "--index", str(work / "root"), "--ray",
                                f"127.0.0.1:{port}", "--replicas", "2", "--port", str(b_port)], cwd=HERE, env=env,
                               stdout=open(work / "cluster.log", "w"), stderr=subprocess.STDOUT, start_new_session=True)
        procs.append(clu)
        wait_ready(a_port, one)
        wait_ready(b_port, clu)
        qs = questions(args.questions, seed=9)
        same = sum(key(ask(a_port, q)[1]) == key(ask(b_port, q)[1]) for q in qs)
        print(f"same top 5 and answer: {same}/{len(qs)} = {same / len(qs):.3f}", flush=True)
        timed(a_port, qs[:10]), timed(b_port, qs[:10])  # warm both
        lat = {"one": [], "cluster": []}
        for r in range(args.rounds):
            for name, p in (("one", a_port), ("cluster", b_port)):  # A B A B
                block = timed(p, qs)
                lat[name] += block
                print(f"round {r + 1} {name:8s} p50 {statistics.median(block):6.1f} ms", flush=True)
        p50 = {k: statistics.median(v) for k, v in lat.items()}
        print(f"p50: qa serve {p50['one']:.1f} ms, cluster {p50['cluster']:.1f} ms, added {p50['cluster'] - p50['one']:.1f} ms "
              f"(target <= 8 ms)", flush=True)
        # The node kill under load: 2 clients, the second node killed 3 s in.
        failures, answered, stop = [], [], threading.Event()

        def client(i: int) -> None:
            n = i
            while not stop.is_set():
                try:
                    status, _ = ask(b_port, qs[n % len(qs)])
                    (answered if status == 200 else failures).append(status)
                except OSError as e:
                    failures.append(str(e))
                n += 1

        threads = [threading.Thread(target=client, args=(i,)) for i in range(2)]
        for t in threads:
            t.start()
        time.sleep(3)
        os.killpg(node.pid, signal.SIGKILL)
        time.sleep(15)
        stop.set()
        for t in threads:
            t.join(60)
        print(f"node kill under load (2 clients, 18 s): {len(failures)} failed of {len(failures) + len(answered)}"
              f" {failures[:3]}", flush=True)
    finally:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGINT)
                try:
                    p.wait(30)
                except subprocess.TimeoutExpired:
                    os.killpg(p.pid, signal.SIGKILL)
        if node.poll() is None:
            os.killpg(node.pid, signal.SIGKILL)
        subprocess.run([str(RAY), "stop", "--force"], env=env, capture_output=True)


if __name__ == "__main__":
    main()
