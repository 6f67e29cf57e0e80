"""`qa ingest --ray`: a real two-node Ray cluster on 127.0.0.1 (a head and a second node, one CPU each)."""

import json
import os
import random
import secrets
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from .conftest import ROOT, SEEDS, free_port, kill_session, wait_port

pytestmark = pytest.mark.slow
RAY = Path(sys.executable).parent / "ray"
WORDS = ("harbour council ferry bridge library museum market river station school hospital festival election budget "
         "storm flood rail airport stadium theatre factory farm forest coast island mayor minister court police "
         "union strike price tax wage energy water road tram bus port tower garden castle church square").split()
VERBS = "approved closed opened rebuilt delayed funded cancelled expanded inspected repaired sold bought".split()


def corpus(path: Path, n: int, seed: int) -> Path:
    """n short news-like articles, the same for the same seed."""
    rng = random.Random(seed)
    with path.open("w") as f:
        for i in range(n):
            sents = []
            for _ in range(rng.randint(4, 9)):
                a, b, c = rng.sample(WORDS, 3)
                sents.append(f"The {a} {rng.choice(VERBS)} the {b} plan on day {rng.randint(1, 28)}, "
                             f"and {rng.randint(2, 900)} residents of the {c} district were told.")
            f.write(json.dumps({"id": f"story-{seed}-{i}", "title": f"{rng.choice(WORDS).title()} news {i}",
                                "source": rng.choice(["Gazette", "Courier"]), "text": " ".join(sents)}) + "\n")
    return path


def qa(*args, env, timeout=900):
    return subprocess.run([sys.executable, "-m", "qa", *args], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=timeout)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    pytest.importorskip("ray", reason="Ray is not installed (pip install -e '.[cluster]'); .ci/run installs it")
    port = free_port()
    # Ray 2.60 nodes check a shared token; the head, the second node and `qa ingest` get the same one.
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "HF_HUB_OFFLINE": "1", "RAY_AUTH_MODE": "token",
           "RAY_AUTH_TOKEN": secrets.token_hex(16),
           # a killed node is noticed in seconds, not the default half minute
           "RAY_health_check_initial_delay_ms": "0", "RAY_health_check_period_ms": "500",
           "RAY_health_check_timeout_ms": "500", "RAY_health_check_failure_threshold": "4"}
    # Each node in a session of its own, ended by killing that session: `ray stop` would stop every Ray
    # cluster on the machine, other people's too.
    head = subprocess.Popen([str(RAY), "start", "--head", f"--port={port}", "--num-cpus=1", "--node-ip-address=127.0.0.1",
                             "--include-dashboard=false", "--disable-usage-stats", "--block"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    wait_port(port, head)
    nodes: list[subprocess.Popen] = []

    def add_node() -> subprocess.Popen:
        p = subprocess.Popen([str(RAY), "start", f"--address=127.0.0.1:{port}", "--num-cpus=1",
                              "--node-ip-address=127.0.0.1", "--block"], env=env, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL, start_new_session=True)
        nodes.append(p)
        return p

    def alive() -> int:
        out = subprocess.run([sys.executable, "-c", f"import ray; ray.init(address='127.0.0.1:{port}', "
                              "log_to_driver=False); print('alive', sum(n['Alive'] for n in ray.nodes()))"],
                             env=env, capture_output=True, text=True, timeout=120)
        # Ray's driver prints notices (a node lost earlier) to stdout too, before or after ours.
        counts = [line.split()[1] for line in out.stdout.splitlines() if line.startswith("alive ")]
        return int(counts[-1]) if out.returncode == 0 and counts else 0

    def wait_nodes(n: int) -> None:
        for _ in range(60):
            if alive() == n:
                return
            time.sleep(0.5)
        raise AssertionError(f"the cluster never had {n} nodes alive")

    add_node()
    wait_nodes(2)
    try:
        yield {"address": f"127.0.0.1:{port}", "env": env, "add_node": add_node, "wait_nodes": wait_nodes,
               "nodes": nodes}
    finally:
        for p in [*nodes, head]:  # each node's whole session: Ray's workers are in process groups of their own
            kill_session(p.pid)


def rows(index: Path) -> list[tuple]:
    """Every visible article's id and its passages' offsets."""
    conn = sqlite3.connect(index / "qa.sqlite3")
    try:
        return sorted(conn.execute(
            "SELECT a.id, p.start_char, p.end_char FROM passages p JOIN articles a ON a.version = p.version "
            "WHERE a.deleted_gen IS NULL").fetchall())
    finally:
        conn.close()


def committed(index: Path) -> int:
    """Articles committed to the index's database so far (0 before it exists)."""
    try:
        conn = sqlite3.connect(f"file:{index / 'qa.sqlite3'}?mode=ro", uri=True, timeout=5)
        try:
            return conn.execute("SELECT COUNT(*) FROM articles").fetchone()[0]
        finally:
            conn.close()
    except sqlite3.Error:
        return 0


def wait_first_commit(run: subprocess.Popen, index: Path) -> None:
    """Wait until the running ingest has committed its first batch (SQLite, before any publish)."""
    for _ in range(1200):
        if committed(index) > 0:
            return
        time.sleep(0.05)
    run.kill()
    raise AssertionError("nothing was written: " + run.communicate()[1][-2000:])


def test_cluster_ingest_equals_a_local_one(cluster, tmp_path):
    env = cluster["env"]
    data = corpus(tmp_path / "news.jsonl", 40, seed=1)
    local = qa("ingest", str(SEEDS), str(data), "--index", str(tmp_path / "local"), "-q", env=env)
    assert local.returncode == 0, local.stderr
    ray = qa("ingest", str(SEEDS), str(data), "--index", str(tmp_path / "ray"), "-q", "--ray", cluster["address"],
             env=env)
    assert ray.returncode == 0, ray.stderr
    assert local.stdout.split(";")[0] == ray.stdout.split(";")[0] == \
        "42 articles added, 0 updated, 0 skipped as duplicates, 0 failed"
    assert rows(tmp_path / "ray") == rows(tmp_path / "local")
    for q in ("Who promised to keep aiding Assad?", "Which plan did the harbour council approve?",
              "How many residents of the castle district were told?"):
        tops = []
        for ix in ("local", "ray"):
            out = json.loads(qa("ask", q, "-k", "3", "--json", "--index", str(tmp_path / ix), env=env).stdout)
            tops.append([(r["citation"]["article_id"], r["citation"]["start"], r["citation"]["end"])
                         for r in out["results"]])
        assert tops[0] == tops[1], q
    # Running it again skips everything: nothing is embedded twice.
    again = qa("ingest", str(SEEDS), str(data), "--index", str(tmp_path / "ray"), "-q", "--ray", cluster["address"],
               env=env)
    assert again.stdout.startswith("0 articles added, 0 updated, 42 skipped as duplicates")


def test_a_node_killed_mid_ingest_loses_and_doubles_nothing(cluster, tmp_path):
    env = cluster["env"]
    data = corpus(tmp_path / "news.jsonl", 160, seed=2)
    index = tmp_path / "ix"
    run = subprocess.Popen([sys.executable, "-m", "qa", "ingest", str(data), "--index", str(index), "-q", "--ray",
                            cluster["address"]], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           text=True)
    # Once the first batches are written, kill -9 the second node (its raylet and its workers).
    wait_first_commit(run, index)
    victim = cluster["nodes"].pop()
    kill_session(victim.pid)
    out, err = run.communicate(timeout=600)
    assert run.returncode == 0, err[-3000:]
    # Ray's own notices (the node's death, the batches it runs again) go to stderr; stdout is the summary alone.
    assert len(out.strip().splitlines()) == 1, out
    assert out.startswith("160 articles added, 0 updated, 0 skipped as duplicates, 0 failed"), out
    ids = [r[0] for r in rows(index)]
    conn = sqlite3.connect(index / "qa.sqlite3")
    visible = conn.execute("SELECT id, COUNT(*) FROM articles WHERE deleted_gen IS NULL GROUP BY id").fetchall()
    versions = conn.execute("SELECT COUNT(*) FROM articles").fetchone()[0]
    conn.close()
    assert len(visible) == 160 and all(n == 1 for _, n in visible)
    assert versions == 160, "an article was written twice"
    assert len(set(ids)) == 160
    cluster["add_node"]()  # put the second node back for any test after this one
    cluster["wait_nodes"](2)


def test_qa_ingest_killed_mid_run_leaves_whole_articles_and_the_same_command_completes(cluster, tmp_path):
    env = cluster["env"]
    N = 400  # a dozen batches or more, so the kill lands mid-run
    data = corpus(tmp_path / "news.jsonl", N, seed=3)
    index = tmp_path / "ix"
    cmd = [sys.executable, "-m", "qa", "ingest", str(data), "--index", str(index), "-q", "--ray", cluster["address"]]
    run = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_first_commit(run, index)
    run.kill()  # kill -9 of the process that writes
    run.communicate()
    written = len({r[0] for r in rows(index)})
    assert 0 < written < N, "the kill came too late to test anything"
    again = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    # Whatever the killed run committed is skipped (an article half-written would have been re-added).
    assert again.stdout.startswith(f"{N - written} articles added, 0 updated, {written} skipped as duplicates"), \
        again.stdout
    conn = sqlite3.connect(index / "qa.sqlite3")
    visible = conn.execute("SELECT COUNT(DISTINCT id), COUNT(*) FROM articles WHERE deleted_gen IS NULL").fetchone()
    conn.close()
    assert visible == (N, N)


def test_ray_missing_says_how_to_install_it(monkeypatch):
    from qa.ingest import cluster
    from qa.errors import QAError

    monkeypatch.setitem(sys.modules, "ray", None)  # import ray now raises ImportError
    with pytest.raises(QAError, match=r"pip install -e '\.\[cluster\]'"):
        cluster.connect("local")
