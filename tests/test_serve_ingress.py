"""`qa serve --ray --ingress-replicas 2`: an ingress on each node, HAProxy sharing the questions out.

A module of its own: its cluster starts after test_serve_cluster.py's has stopped (HAProxy takes fixed
ports, so two Serve applications with it cannot run on one machine at once)."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from .conftest import session_pids
from .test_serve_cluster import ask, questions, serve_cluster

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    yield from serve_cluster(tmp_path_factory, ingress_replicas=2)


def test_two_ingress_replicas_run_one_on_each_node_and_both_answer(served):
    # /readyz answers once one ingress replica runs: wait for both (Serve's own count)
    script = ("import time, ray; from ray import serve\n"
              f"ray.init(address='{served['address']}', log_to_driver=False)\n"
              "deadline = time.monotonic() + 90\n"
              "while True:\n"
              "    states = serve.status().applications['qa'].deployments['ingress'].replica_states\n"
              "    n = sum(v for k, v in states.items() if str(getattr(k, 'value', k)) == 'RUNNING')\n"
              "    if n >= 2 or time.monotonic() > deadline: break\n"
              "    time.sleep(0.5)\n"
              "print(n)")
    out = subprocess.run([sys.executable, "-c", script], env=served["env"], capture_output=True, text=True, timeout=150)
    assert out.stdout.split() and out.stdout.split()[-1] == "2", out.stdout + out.stderr[-2000:]
    # Ray names a replica's process after its deployment; each node's processes are in its session
    nodes = {served["head"].pid, served["node"].pid}
    pids, sessions = [], set()
    for sid in nodes:
        for pid in session_pids(sid):
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    if b"ServeReplica:qa:ingress" in f.read():
                        pids.append(pid)
                        sessions.add(sid)
            except OSError:
                continue
    assert len(pids) == 2 and sessions == nodes, (pids, sessions)
    # HAProxy shares the questions out: each ingress process spends CPU time on them (each reads its share
    # with the real reader, ~10 ms of CPU a question), well beyond what it spends idle.
    def cpu(pid: int) -> int:  # clock ticks (10 ms) of user and system time
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return int(fields[11]) + int(fields[12])

    start = {p: cpu(p) for p in pids}
    time.sleep(2)
    idle = {p: (cpu(p) - start[p]) / 2 for p in pids}  # ticks a second
    before, t0 = {p: cpu(p) for p in pids}, time.monotonic()
    for q in questions(60, seed=8):
        assert ask(served["port"], q)[0] == 200
    took = time.monotonic() - t0
    used = {p: cpu(p) - before[p] - idle[p] * took for p in pids}
    assert all(v >= 10 for v in used.values()), (used, idle, took)
