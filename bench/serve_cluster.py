"""`qa serve --ray` against `qa serve` on the same articles, on a two-node Ray cluster on 127.0.0.1.

    .venv/bin/python bench/serve_cluster.py [--articles 200] [--questions 60] [--rounds 2] [--before DIR] [--no-kill]
                                            [--compare-env QA_KEY=VALUE] [--floor] [--replicas 2]
                                            [--ingress-replicas 1]

Builds a one-folder index and a 2-shard root of the seeds and N generated articles with the real model,
serves the folder with `qa serve --workers 1` and the root with `qa serve --ray --replicas 2` (or
`--replicas`), then prints: the share of questions with the same top 5 and the same answer, HTTP latency
of each path measured in alternating blocks (A B A B, one client) and then question by question (each
question asked of both twice, once in each order: the median of the differences), each question's first
asking (on the cluster, the one that may need a shard's statistics first), and the failures while the
second node is killed under load.

`--floor` also prints what any question pays on each path, whatever it asks: GET /healthz (no search)
through `qa serve` and through HAProxy and the ingress, and one round of trivial calls (`info`) to every
shard through Serve's handles from a driver on the cluster, then a round of the questions' own `candidates`
calls, and that work done in this process (each shard's share of a question's search).

`--compare-env QA_KEY=VALUE` likewise measures this tree deployed with that setting (`qa serve --ray` hands
its QA_* settings to the replicas), as the first of each round.

`--before DIR` also measures another source tree (a `git worktree` of an earlier revision, say) on the same
cluster in the same run: each round deploys the earlier tree's `qa serve --ray`, then this tree's, each
measured in its own A B A B blocks against the same `qa serve`.

Every process it starts is in a session of its own and is stopped by killing that session: no `ray stop`,
which would stop every Ray cluster on the machine. Ray nices its worker processes (Serve's proxy, the ingress, the
replicas) by 15 unless told otherwise; `--worker-niceness 0` (the default) runs them at the priority of
`qa serve`, as on a machine that serves and does nothing else at a higher priority.
"""

from __future__ import annotations

import argparse
import json
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
from tests.test_serve_cluster import _get, ask, kill_session, questions, shard_rounds, shown, wait_port  # noqa: E402
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


FLOOR = """
import importlib.util, json, statistics, sys, time
sys.path.insert(0, sys.argv[3])
import ray
from ray import serve
spec = importlib.util.spec_from_file_location("serve_cluster", sys.argv[3] + "/bench/serve_cluster.py")
bench = importlib.util.module_from_spec(spec)
spec.loader.exec_module(bench)
ray.init(address=sys.argv[1], log_to_driver=False)
reqs = bench.asked_of(sys.argv[2], json.loads(sys.argv[4]))[1]
handles = [serve.get_deployment_handle(f"shard-{i:03d}", "qa") for i in range(len(reqs))]

def rounds(call, n):
    took = []
    for i in range(n):
        t0 = time.perf_counter()
        [r.result(timeout_s=30) for r in [call(s, h, i) for s, h in enumerate(handles)]]
        took.append((time.perf_counter() - t0) * 1000)
    return statistics.median(took)

info = lambda s, h, i: h.info.remote()
cands = lambda s, h, i: h.candidates.remote(reqs[s][i % len(reqs[s])])
rounds(info, 20), rounds(cands, 20)
print(f"{rounds(info, 300):.2f} {rounds(cands, 300):.2f}")
"""


def floor(a_port: int, b_port: int, address: str, root: Path, qs: list[str], env: dict[str, str], work: Path,
          label: str) -> None:
    """Time what a question pays on each path: GET /healthz on both; rounds of trivial and of real shard calls."""
    def healthz(port: int) -> float:
        took = []
        for _ in range(200):
            t0 = time.perf_counter()
            _get(port, "/healthz")
            took.append((time.perf_counter() - t0) * 1000)
        return statistics.median(took)

    one, clu = healthz(a_port), healthz(b_port)
    one, clu = statistics.median([one, healthz(a_port)]), statistics.median([clu, healthz(b_port)])
    try:
        out = subprocess.run([sys.executable, "-c", FLOOR, address, str(root), str(HERE), json.dumps(qs)], cwd=work,
                             capture_output=True, text=True, timeout=600,
                             env={**env, "RAY_SERVE_USE_GRPC_BY_DEFAULT": "1"})
    except subprocess.TimeoutExpired:
        print(f"{label} floor: the driver took over 600 s", flush=True)
        return
    if out.returncode:
        print(f"{label} floor: the driver failed: {out.stderr[-500:]}", flush=True)
        return
    info, cands = out.stdout.split()[-2:]
    print(f"{label} floor: GET /healthz p50 qa serve {one:.2f} ms, --ray {clu:.2f} ms (+{clu - one:.2f}); one round of "
          f"calls to every shard through Serve's handles, from a driver: trivial (`info`) p50 {info} ms, the "
          f"questions' own `candidates` p50 {cands} ms", flush=True)


def asked_of(root: str | Path, qs: list[str]) -> tuple[list, list[list[dict]]]:
    """Return a root's shards, opened in this process, and the `candidates` requests the questions make of each."""
    from qa.embed.model import get_embedder
    from qa.search.searcher import SearchConfig
    from qa.search.sharded import ShardedIndex, ShardedSearcher, local_shards

    shards = local_shards(root)
    asked: list[list[dict]] = [[] for _ in shards]

    class Keep:  # the searcher's own requests, so that the timings replay what a question really asks
        def __init__(self, s: int):
            self.s = s

        def submit(self, method: str, *args):
            if method == "candidates":
                asked[self.s].append(args[0])
            return shards[self.s].submit(method, *args)

    index = ShardedIndex([Keep(s) for s in range(len(shards))])
    index.refresh()
    searcher = ShardedSearcher(index, get_embedder(index.model), SearchConfig())
    for q in qs:
        searcher.ask(q)
    return shards, asked


def shard_work(root: Path, qs: list[str], label: str) -> None:
    """Time each shard's `candidates` work for the questions in this process (what a replica computes a call)."""
    shards, asked = asked_of(root, qs)
    took = []
    for _ in range(2):
        for s, reqs in enumerate(asked):
            for req in reqs:
                t0 = time.perf_counter()
                shards[s].reader.candidates(req)
                took.append((time.perf_counter() - t0) * 1000)
    print(f"{label} a shard's `candidates` work in this process: p50 {statistics.median(took):.2f} ms a call", flush=True)


def p99(v: list[float]) -> float:
    s = sorted(v)
    return s[min(len(s) - 1, round(0.99 * (len(s) - 1)))]


def stop(proc: subprocess.Popen, grace: float = 30) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--articles", type=int, default=200)
    ap.add_argument("--questions", type=int, default=60)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--work", default="/tmp/qa-bench-serve-cluster")
    ap.add_argument("--before", help="another source tree to measure alongside this one (each round: it, then this)")
    ap.add_argument("--worker-niceness", type=int, default=0, help="Ray's worker niceness (Ray's own default: 15)")
    ap.add_argument("--replicas", type=int, default=2, help="replicas of each shard (the node kill needs 2)")
    ap.add_argument("--ingress-replicas", type=int, default=1,
                    help="replicas of the ingress (2: one on each node, so the node kill takes one)")
    ap.add_argument("--compare-env", metavar="QA_KEY=VALUE",
                    help="also measure this tree with a setting given to `qa serve --ray` (each round: it, then as is)")
    ap.add_argument("--no-kill", action="store_true", help="skip the node kill under load")
    ap.add_argument("--floor", action="store_true", help="also measure what any question pays on each path")
    args = ap.parse_args()
    if args.replicas < 2 and not args.no_kill:
        ap.error("the node kill needs 2 replicas of each shard: add --no-kill, or leave --replicas at 2")
    work = Path(args.work)
    subprocess.run(["rm", "-rf", str(work)], check=True)
    work.mkdir(parents=True)
    data = corpus(work / "news.jsonl", args.articles, seed=31)
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "HF_HUB_OFFLINE": "1", "RAY_AUTH_MODE": "token",
           "RAY_AUTH_TOKEN": secrets.token_hex(16), "QA_MODEL_THREADS": "1",
           "RAY_worker_niceness": str(args.worker_niceness),
           "RAY_health_check_initial_delay_ms": "0", "RAY_health_check_period_ms": "500",
           "RAY_health_check_timeout_ms": "500", "RAY_health_check_failure_threshold": "4"}
    for ix, extra in (("one", []), ("root", ["--shards", "2"])):
        r = subprocess.run([sys.executable, "-m", "qa", "ingest", str(SEEDS), str(data), "--index", str(work / ix), "-q",
                            *extra], cwd=HERE, env=env, capture_output=True, text=True)
        print(ix, r.stdout.strip(), r.stderr[-500:] if r.returncode else "", flush=True)
    versions = [("after", HERE, {})]
    if args.before:
        versions.insert(0, ("before", Path(args.before).resolve(), {}))
    if args.compare_env:
        k, _, v = args.compare_env.partition("=")
        versions.insert(0, (args.compare_env, HERE, {k: v}))
    port = free_port()
    procs: list[subprocess.Popen] = []
    # Both nodes in sessions of their own (cwd: the work folder, so a replica imports the tree its driver names).
    head = subprocess.Popen([str(RAY), "start", "--head", f"--port={port}", "--num-cpus=4", "--node-ip-address=127.0.0.1",
                             "--include-dashboard=false", "--disable-usage-stats", "--block"], cwd=work, env=env,
                            stdout=open(work / "head.log", "w"), stderr=subprocess.STDOUT, start_new_session=True)
    node = None
    try:
        wait_port(port, head)
        node = subprocess.Popen([str(RAY), "start", f"--address=127.0.0.1:{port}", "--num-cpus=4",
                                 "--node-ip-address=127.0.0.1", "--block"], cwd=work, env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        for _ in range(120):
            out = subprocess.run([sys.executable, "-c", f"import ray; ray.init(address='127.0.0.1:{port}', "
                                  "log_to_driver=False); print('alive', sum(n['Alive'] for n in ray.nodes()))"],
                                 cwd=work, env=env, capture_output=True, text=True, timeout=120)
            if "alive 2" in out.stdout:
                break
            time.sleep(0.5)
        else:
            raise SystemExit("the second node never joined")
        a_port, b_port = free_port(), free_port()
        one = subprocess.Popen([sys.executable, "-m", "qa", "serve", "--index", str(work / "one"), "--workers", "1",
                                "--port", str(a_port)], cwd=HERE, env=env, stdout=open(work / "one.log", "w"),
                               stderr=subprocess.STDOUT, start_new_session=True)
        procs.append(one)
        wait_ready(a_port, one)
        qs = questions(args.questions, seed=9)
        lat = {name: {"one": [], "cluster": [], "added": [], "paired": [], "first": []} for name, _, _ in versions}
        clu = None
        for r in range(args.rounds):
            for name, code, extra in versions:
                # `python -m qa` in `code` imports that tree, and Ray adds the driver's folder to the path of its
                # job's workers; the replicas are the Serve controller's, so Serve starts afresh for each tree.
                subprocess.run([sys.executable, "-c", f"import ray; from ray import serve; ray.init(address="
                                f"'127.0.0.1:{port}', log_to_driver=False); serve.shutdown()"], cwd=work, env=env,
                               capture_output=True, timeout=300)
                clu = subprocess.Popen([sys.executable, "-m", "qa", "serve", "--index", str(work / "root"), "--ray",
                                        f"127.0.0.1:{port}", "--replicas", str(args.replicas),
                                        *(["--ingress-replicas", str(args.ingress_replicas)]
                                          if args.ingress_replicas > 1 and code == HERE else []),
                                        "--port", str(b_port)], cwd=code,
                                       env={**env, "PYTHONPATH": str(code), **extra},
                                       stdout=open(work / f"cluster-{name}-{r}.log", "w"), stderr=subprocess.STDOUT,
                                       start_new_session=True)
                procs.append(clu)
                wait_ready(b_port, clu)
                # Each question's first asking, timed on both: on the cluster, a question with a stem new to a shard
                # generation needs that shard's statistics first (a round of calls where the ingress cannot read
                # the shard folders), as every question does after a shard publishes; later askings find them kept.
                one_out, clu_out, first = {}, {}, []
                for q in qs:
                    t0 = time.perf_counter()
                    one_out[q] = ask(a_port, q)[1]
                    t1 = time.perf_counter()
                    clu_out[q] = ask(b_port, q)[1]
                    first.append((time.perf_counter() - t1) * 1000 - (t1 - t0) * 1000)
                lat[name]["first"] += first
                status, page = _get(b_port, "/metrics")
                rounds = shard_rounds(page) if status == 200 else {}
                same = sum(key(one_out[q]) == key(clu_out[q]) for q in qs)
                exact = sum(shown(one_out[q]) == shown(clu_out[q]) for q in qs)
                print(f"[{name}, round {r + 1}] same top 5 and answer: {same}/{len(qs)} = {same / len(qs):.3f}; "
                      f"identical scores, marks and facets too: {exact}/{len(qs)}; each question's first asking: "
                      f"--ray minus qa serve, median {statistics.median(first):.1f} ms; the ingress's rounds of shard "
                      f"calls so far: {rounds or 'not counted by this tree'}", flush=True)
                timed(a_port, qs[:10]), timed(b_port, qs[:10])  # warm both
                for b in range(2):  # A B A B
                    a_block, b_block = timed(a_port, qs), timed(b_port, qs)
                    lat[name]["one"] += a_block
                    lat[name]["cluster"] += b_block
                    lat[name]["added"].append(statistics.median(b_block) - statistics.median(a_block))
                    print(f"[{name}, round {r + 1}] block {b + 1}: qa serve p50 {statistics.median(a_block):6.1f} ms, "
                          f"--ray p50 {statistics.median(b_block):6.1f} ms", flush=True)
                # A B, then B A, question by question: the machine's drift between two
                # blocks of 60 questions (qa serve alone moved 24-37 ms at p50 from one block to the next) cancels.
                diffs = []
                for q in qs:
                    for first, second in ((a_port, b_port), (b_port, a_port)):
                        t_first, t_second = timed(first, [q])[0], timed(second, [q])[0]
                        diffs.append(t_second - t_first if first == a_port else t_first - t_second)
                lat[name]["paired"] += diffs
                print(f"[{name}, round {r + 1}] question by question: --ray minus qa serve, median "
                      f"{statistics.median(diffs):.1f} ms over {len(diffs)} pairs", flush=True)
                if args.floor and code == HERE:  # this tree's requests: the other tree's may differ
                    label = f"[{name}, round {r + 1}]"
                    floor(a_port, b_port, f"127.0.0.1:{port}", work / "root", qs, env, work, label)
                    shard_work(work / "root", qs, label)
                if r < args.rounds - 1 or name != versions[-1][0] or args.no_kill:
                    stop(clu)
        for name, v in lat.items():
            p50 = {k: statistics.median(v[k]) for k in ("one", "cluster")}
            print(f"{name}: p50 qa serve {p50['one']:.1f} ms, --ray {p50['cluster']:.1f} ms, added "
                  f"{p50['cluster'] - p50['one']:.1f} ms (per block pair: "
                  f"{', '.join(f'{x:.1f}' for x in v['added'])}); p99 qa serve {p99(v['one']):.1f} ms, "
                  f"--ray {p99(v['cluster']):.1f} ms, added {p99(v['cluster']) - p99(v['one']):.1f} ms "
                  f"(target: added p50 <= 8 ms); question by question, the median of --ray minus qa serve "
                  f"{statistics.median(v['paired']):.1f} ms over {len(v['paired'])} pairs; each question's first "
                  f"asking {statistics.median(v['first']):.1f} ms over {len(v['first'])}", flush=True)
        if args.no_kill:
            return
        # The node kill under load, on the last deployment: 2 clients, the second node killed 3 s in.
        failures, answered, stopping = [], [], threading.Event()

        def client(i: int) -> None:
            n = i
            while not stopping.is_set():
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
        stopping.set()
        for t in threads:
            t.join(60)
        print(f"node kill under load (2 clients, 18 s): {len(failures)} failed of {len(failures) + len(answered)}"
              f" {failures[:3]}", flush=True)
    finally:
        for p in reversed(procs):
            stop(p)
        for p in (node, head):  # each node's raylet, GCS and workers: the session it was started in
            if p is not None:
                kill_session(p.pid)


if __name__ == "__main__":
    main()
