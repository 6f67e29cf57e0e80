"""A sharded index root, and `qa serve --ray`: shards and replicas on a real two-node Ray Serve cluster on 127.0.0.1.

The fake embedder stands in for the model (the cluster's processes load it by name: QA_TEST_EMBEDDER).
"""

import http.client
import json
import os
import random
import secrets
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.parse
from pathlib import Path

import pytest

from .conftest import ROOT, SEEDS, FakeEmbedder, free_port, kill_session, wait_port
from .test_cluster import VERBS, WORDS, corpus

RAY = Path(sys.executable).parent / "ray"


def build(path: Path, data: list[Path], shards: int | None):
    from qa.web.service import Service

    svc = Service(path, "fake", embedder=FakeEmbedder())
    svc.shards = shards
    return svc, svc.ingest(data)


def questions(n: int, seed: int = 7) -> list[str]:
    rng = random.Random(seed)
    qs = ["Who promised to keep aiding Assad?", "Where did Assad flee to?", "Who leads HTS?"]
    while len(qs) < n:
        a, b = rng.sample(WORDS, 2)
        qs.append(rng.choice([f"Which plan did the {a} {rng.choice(VERBS)}?",
                              f"How many residents of the {a} district were told?",
                              f"What happened to the {a} and the {b}?"]))
    return qs


def shown(out: dict) -> tuple:
    """What a reader sees of an answer: the top passages by place, their scores and marks, the answer."""
    res = [(r["citation"]["article_id"], r["citation"]["start"], r["citation"]["end"], r["score"], r["highlight"],
            [c["article_id"] for c in r["also_in"]]) for r in out["results"]]
    a = out["answer"]
    return res, a and (a["text"], a["citation"]["article_id"], a["citation"]["start"], a["confidence"]), out["facets"]


def shard_rows(root: Path) -> dict[str, list[tuple]]:
    """Per shard folder: (article id, version count, visible count)."""
    out = {}
    for folder in sorted(root.glob("shard-*")):
        conn = sqlite3.connect(folder / "qa.sqlite3")
        out[folder.name] = conn.execute("SELECT id, COUNT(*), SUM(deleted_gen IS NULL) FROM articles GROUP BY id").fetchall()
        conn.close()
    return out


# --- without Ray ----------------------------------------------------------------------------------------


def test_an_article_lives_in_the_shard_its_id_hashes_to_and_updates_replace_it_there(tmp_path):
    from qa.index.shards import read_root, shard_of

    data = corpus(tmp_path / "news.jsonl", 30, seed=11)
    svc, report = build(tmp_path / "root", [SEEDS, data], shards=3)
    assert report.added == 32 and not report.failures
    root = read_root(tmp_path / "root")
    assert root["shards"] == 3 and root["scale"]
    held = shard_rows(tmp_path / "root")
    assert sum(len(v) for v in held.values()) == 32
    for name, arts in held.items():
        assert arts, f"{name} is empty"  # 32 articles over 3 shards: each holds some
        for article_id, versions, visible in arts:
            assert name == root["folders"][shard_of(article_id, 3)] and versions == visible == 1
    assert [shard_of("story-11-4", 3)] * 3 == [shard_of("story-11-4", 3) for _ in range(3)]
    # A later ingest without --shards keeps the root's shards; an update replaces the article in its shard.
    changed = tmp_path / "changed.jsonl"
    line = json.loads(data.read_text().splitlines()[4])
    line["text"] += " The harbour council later reversed its decision."
    changed.write_text(json.dumps(line) + "\n")
    svc2, again = build(tmp_path / "root", [changed], shards=None)
    assert (again.added, again.updated) == (0, 1)
    after = shard_rows(tmp_path / "root")
    home = root["folders"][shard_of(line["id"], 3)]
    for name, arts in after.items():
        mine = [a for a in arts if a[0] == line["id"]]
        assert mine == ([(line["id"], 2, 1)] if name == home else [])
    # A different count for an existing root is refused; a one-folder index is not turned into a root.
    from qa.errors import QAError

    with pytest.raises(QAError, match="holds 3 shards"):
        build(tmp_path / "root", [changed], shards=2)
    build(tmp_path / "one", [changed], shards=None)
    with pytest.raises(QAError, match="one-folder index"):
        build(tmp_path / "one", [changed], shards=2)


def test_a_sharded_root_answers_as_one_folder(tmp_path):
    from qa.search.sharded import ShardedIndex, ShardedSearcher, local_shards

    data = corpus(tmp_path / "news.jsonl", 150, seed=12)
    one, _ = build(tmp_path / "one", [SEEDS, data], shards=None)
    build(tmp_path / "root", [SEEDS, data], shards=3)
    s1 = one.searcher()
    s3 = ShardedSearcher(ShardedIndex(local_shards(tmp_path / "root", "fake")), s1.embedder, s1.cfg)
    qs = questions(120)
    same = sum(shown(s1.ask(q, 5).to_dict()) == shown(s3.ask(q, 5).to_dict()) for q in qs)
    assert same == len(qs)  # nothing approximate differs at this size: all of them, scores and marks included
    from qa.index import Where

    w = Where(sources=("Gazette",))
    assert all(shown(s1.ask(q, 5, w).to_dict()) == shown(s3.ask(q, 5, w).to_dict()) for q in qs[:20])
    assert s3.index.article("story-12-3")["passages"] and s3.index.article("nope") is None


def test_statistics_read_from_the_shard_folders_save_the_stats_round_and_change_nothing(tmp_path):
    from qa.index.freqs import FolderFreqs
    from qa.index.shards import read_root
    from qa.search.sharded import ShardedIndex, ShardedSearcher, ShardReader, local_shards

    data = corpus(tmp_path / "news.jsonl", 120, seed=15)
    one, _ = build(tmp_path / "one", [SEEDS, data], shards=None)
    root = tmp_path / "root"
    build(root, [SEEDS, data], shards=2)
    # An update and a new article later: a second segment, and tombstones in the first (their postings count).
    later = tmp_path / "later.jsonl"
    line = json.loads(data.read_text().splitlines()[7])
    line["text"] += " The harbour council later reversed its decision on the lighthouse."
    later.write_text(json.dumps(line) + "\n" + json.dumps({"id": "late-2", "title": "Harbour", "source": "Courier",
                                                            "text": "The harbour council met on Friday."}) + "\n")
    build(tmp_path / "one", [later], shards=None)
    build(root, [later], shards=None)
    folders = [root / f for f in read_root(root)["folders"]]
    stems = ["harbour", "council", "lighthous", "nosuchstem", "decis"]
    for i, folder in enumerate(folders):
        assert FolderFreqs(folder).stats(stems) == ShardReader(folder, i, 2, "fake").stats(stems)
    # (Against one folder, these generated articles tie at the facets' edge after the update, and ties go
    # by passage id, which shards number otherwise: the questions' answers are compared with the shards'.)
    s1 = one.searcher()
    asked = ShardedSearcher(ShardedIndex(local_shards(root, "fake")), s1.embedder, s1.cfg)
    read = ShardedSearcher(ShardedIndex(local_shards(root, "fake"), freqs=[FolderFreqs(f) for f in folders]),
                           s1.embedder, s1.cfg)
    qs = questions(60, seed=5)
    for q in qs:
        assert shown(read.ask(q, 5).to_dict()) == shown(asked.ask(q, 5).to_dict()), q
    assert asked.index.rounds["stats"] > 10 and read.index.rounds["stats"] == 0
    assert read.index.rounds["candidates"] == len(qs)
    # A shard publishes: its new generation's statistics are read from the folder, still no stats round.
    newer = tmp_path / "newer.jsonl"
    newer.write_text(json.dumps({"id": "late-3", "title": "Ferry", "source": "Gazette",
                                 "text": "The harbour ferry to the lighthouse resumed sailing on Monday."}) + "\n")
    build(root, [newer], shards=None)
    for q in [qs[0], "When did the harbour ferry resume sailing?", *qs[1:5]]:  # the first: stems known before
        assert shown(read.ask(q, 5).to_dict()) == shown(asked.ask(q, 5).to_dict()), q
    # No question started again either: the folder's newer generation was seen before the candidates were asked.
    assert read.index.rounds["stats"] == 0 and read.index.rounds["stale"] == 0 and asked.index.rounds["stale"] == 1
    # A folder here ahead of the generation its replica serves (a replica that could not load the newest, a
    # slower cache): the replica's stale answer is taken, and its folder is not read for a while. At most one
    # question starts again, not every one (each of them three times, the last with the wrong statistics).
    class Ahead(FolderFreqs):
        def stats(self, stems):
            return {**super().stats(stems), "generation": super().generation() + 1}

        def generation(self):
            return super().generation() + 1

    ahead = ShardedSearcher(ShardedIndex(local_shards(root, "fake"), freqs=[Ahead(folders[0]), FolderFreqs(folders[1])]),
                            s1.embedder, s1.cfg)
    for q in qs[:6]:
        assert shown(ahead.ask(q, 5).to_dict()) == shown(asked.ask(q, 5).to_dict()), q
    assert ahead.index.rounds["stale"] == 1 and ahead.index.rounds["candidates"] == 7, ahead.index.rounds
    # A manifest naming a segment that is not there (or a writer merging faster than it is read): IndexBusy.
    from qa.errors import IndexBusy

    gap = tmp_path / "gap"
    shutil.copytree(folders[1], gap)
    next(gap.glob("seg-*.arrays")).unlink()
    with pytest.raises(IndexBusy, match="names a segment that is not there"):
        FolderFreqs(gap).stats(stems)
    # A folder this process cannot read: that shard is asked, the answers stay the same.
    broken = ShardedSearcher(ShardedIndex(local_shards(root, "fake"),
                                          freqs=[FolderFreqs(tmp_path / "nowhere"), FolderFreqs(folders[1])]),
                             s1.embedder, s1.cfg)
    assert all(shown(broken.ask(q, 5).to_dict()) == shown(asked.ask(q, 5).to_dict()) for q in qs[:10])
    assert broken.index.rounds["stats"] >= 1 and 0 in broken.index._freqs_off and 1 not in broken.index._freqs_off
    # The folder is back (restored, mounted again): it is read again once the retry time has come.
    shutil.copytree(folders[0], tmp_path / "nowhere")
    broken.index._freqs_off[0] = 0.0
    before = broken.index.rounds["stats"]
    q = "Which harbour ferry resumed?"
    assert shown(broken.ask(q, 5).to_dict()) == shown(asked.ask(q, 5).to_dict())
    assert broken.index.rounds["stats"] == before and 0 not in broken.index._freqs_off


def test_rows_and_sentences_read_from_the_shard_folders_change_nothing_and_shrink_the_shards_replies(tmp_path,
                                                                                                     monkeypatch):
    import pickle
    import statistics

    from qa.index.shards import read_root
    from qa.search.sharded import LocalShard, ShardedIndex, ShardedSearcher, ShardReader

    data = corpus(tmp_path / "news.jsonl", 120, seed=16)
    one, _ = build(tmp_path / "one", [SEEDS, data], shards=None)
    root = tmp_path / "root"
    build(root, [SEEDS, data], shards=2)
    folders = [root / f for f in read_root(root)["folders"]]
    s1 = one.searcher()
    calls: list[tuple[dict, dict]] = []  # each `candidates` request a shard got, and its reply

    class Watched(LocalShard):
        def submit(self, method, *args):
            got = super().submit(method, *args)
            if method == "candidates":
                calls.append((args[0], got.value))
            return got

    def searcher(replicas: list[Path], readers: list | None):
        shards = [Watched(ShardReader(f, i, 2, "fake")) for i, f in enumerate(replicas)]
        return ShardedSearcher(ShardedIndex(shards, freqs=readers, readers=readers), s1.embedder, s1.cfg)

    sent = searcher(folders, None)  # the shards send their best passages' rows and sentences
    read = searcher(folders, [ShardReader(f, i, 2, "fake") for i, f in enumerate(folders)])
    qs = questions(60, seed=6)
    sizes: dict[str, list[int]] = {"sent": [], "read": []}
    for q in qs:
        want = shown(s1.ask(q, 5).to_dict())
        for name, s in (("sent", sent), ("read", read)):
            calls.clear()
            assert shown(s.ask(q, 5).to_dict()) == want, (name, q)
            assert all((req["prefetch"] is None) == (name == "read") for req, _ in calls)
            sizes[name] += [len(pickle.dumps(reply)) for _, reply in calls]
    assert read.index.rounds["fetch"] == 0 and read.index.rounds["candidates"] == len(qs)
    assert statistics.median(sizes["read"]) < statistics.median(sizes["sent"]) / 4, sizes
    from qa.index import Where

    w = Where(sources=("Gazette",))  # facets counted by a second ranking: its rows read here too
    assert all(shown(read.ask(q, 5, w).to_dict()) == shown(s1.ask(q, 5, w).to_dict()) for q in qs[:10])
    # Statistics asked of the shards (QA_STATS_FROM_FOLDERS=false), rows still read here.
    asked = ShardedSearcher(ShardedIndex([Watched(ShardReader(f, i, 2, "fake")) for i, f in enumerate(folders)],
                                         readers=[ShardReader(f, i, 2, "fake") for i, f in enumerate(folders)]),
                            s1.embedder, s1.cfg)
    calls.clear()
    assert all(shown(asked.ask(q, 5).to_dict()) == shown(s1.ask(q, 5).to_dict()) for q in qs[:5])
    assert asked.index.rounds["stats"] >= 1 and asked.index.rounds["fetch"] == 0
    assert calls and all(req["prefetch"] is None for req, _ in calls)
    # A replica behind the folder read here (a copy from before the shard's writer published again, updating
    # an article the questions find): its stale answer is taken, that folder is not read for a while, and the
    # replica sends rows and sentences again.
    from qa.index.shards import shard_of

    behind = tmp_path / "behind"
    shutil.copytree(folders[0], behind)
    found = [h["citation"]["article_id"] for q in qs[:6] for h in sent.ask(q, 5).to_dict()["results"]]
    moved = next(a for a in found if shard_of(a, 2) == 0 and a.startswith("story"))
    line = next(json.loads(x) for x in data.read_text().splitlines() if json.loads(x)["id"] == moved)
    newer = tmp_path / "newer.jsonl"
    newer.write_text(json.dumps({**line, "text": "A correction was issued. " + line["text"]}) + "\n")
    build(root, [newer], shards=None)
    now = [ShardReader(f, i, 2, "fake") for i, f in enumerate(folders)]
    stuck = searcher([behind, folders[1]], now)
    reference = searcher([behind, folders[1]], None)
    for q in qs[:6]:
        calls.clear()
        assert shown(stuck.ask(q, 5).to_dict()) == shown(reference.ask(q, 5).to_dict()), q
    assert stuck.index.rounds["stale"] == 1 and 0 in stuck.index._freqs_off
    assert calls[0][0]["prefetch"] is not None and calls[1][0]["prefetch"] is None  # shard 0 sends, shard 1 not
    # On a question's last try the replica's answer is taken whatever its generation: its passages are then
    # fetched from it, not read from the newer folder here (where the updated article's passages are gone).
    from qa.search import sharded

    monkeypatch.setattr(sharded, "STALE_TRIES", 0)
    taken = ShardedSearcher(ShardedIndex([Watched(ShardReader(behind, 0, 2, "fake")), Watched(ShardReader(folders[1], 1, 2, "fake"))],
                                         freqs=now, readers=now), s1.embedder, s1.cfg)
    sends = ShardedSearcher(ShardedIndex([Watched(ShardReader(behind, 0, 2, "fake")), Watched(ShardReader(folders[1], 1, 2, "fake"))],
                                         freqs=now), s1.embedder, s1.cfg)
    for q in qs[:6]:
        assert shown(taken.ask(q, 5).to_dict()) == shown(sends.ask(q, 5).to_dict()), q
    assert taken.index.rounds["stale"] == 0 and taken.index.rounds["fetch"] == 6
    monkeypatch.undo()
    # A folder that cannot be opened here: its shard sends them, the answers stay the same.
    lost = searcher(folders, [ShardReader(tmp_path / "nowhere", 0, 2, "fake"), ShardReader(folders[1], 1, 2, "fake")])
    for q in qs[:6]:
        assert shown(lost.ask(q, 5).to_dict()) == shown(sent.ask(q, 5).to_dict()), q
    assert 0 in lost.index._freqs_off and 1 not in lost.index._freqs_off


def test_the_ingress_reads_of_the_shard_folders_what_its_settings_say(tmp_path, caplog):
    from qa.index.freqs import FolderFreqs
    from qa.search.sharded import ShardReader
    from qa.web.cluster import folder_sources

    root = tmp_path / "root"
    build(root, [SEEDS], shards=2)
    freqs, readers = folder_sources(root, "fake", stats=True, rows=True)  # the defaults: one reader a folder for both
    assert freqs is readers and [type(r) for r in readers] == [ShardReader] * 2
    freqs, readers = folder_sources(root, "fake", stats=False, rows=True)  # QA_STATS_FROM_FOLDERS=false: asked
    assert freqs is None and len(readers) == 2
    freqs, readers = folder_sources(root, "fake", stats=True, rows=False)  # QA_ROWS_FROM_FOLDERS=false: sent
    assert [type(f) for f in freqs] == [FolderFreqs] * 2 and readers is None
    assert folder_sources(root, "fake", stats=False, rows=False) == (None, None)
    assert folder_sources(tmp_path / "nowhere", "fake", stats=True, rows=True) == (None, None)  # not mounted here
    assert "cannot read the shard folders" in caplog.text


def test_qa_settings_go_to_the_replicas_but_no_secret_and_not_the_drivers_own(monkeypatch):
    from qa.web.cluster import REPLICA_ENV, replica_env

    for k, v in {"QA_READER": "false", "QA_MAX_K": "40", "QA_ADMIN_TOKEN": "s3cret", "QA_PORT": "8000",
                 "QA_RAY_ADDRESS": "auto", "QA_INDEX_DIR": "/srv/qa"}.items():
        monkeypatch.setenv(k, v)
    env = replica_env()["env_vars"]
    assert env["QA_READER"] == "false" and env["QA_MAX_K"] == "40"
    assert not {"QA_ADMIN_TOKEN", "QA_PORT", "QA_RAY_ADDRESS", "QA_INDEX_DIR"} & set(env)
    assert REPLICA_ENV["env_vars"].items() <= env.items()


def test_the_app_reads_a_sharded_root_on_one_machine(tmp_path):
    """Without --ray, the API over a sharded root answers as one folder, and sees new articles."""
    from qa.web import create_app

    data = corpus(tmp_path / "news.jsonl", 60, seed=14)
    one, _ = build(tmp_path / "one", [SEEDS, data], shards=None)
    root_svc, _ = build(tmp_path / "root", [SEEDS, data], shards=2)
    apps = [create_app({"TESTING": True, "INDEX_DIR": str(p), "MODEL": "fake", "EMBEDDER": FakeEmbedder()}).test_client()
            for p in (tmp_path / "one", tmp_path / "root")]
    for q in questions(15, seed=3):
        a, b = (c.get("/api/search", query_string={"q": q, "k": 5}) for c in apps)
        assert a.status_code == b.status_code == 200
        assert shown(a.get_json()) == shown(b.get_json())
    ready = apps[1].get("/readyz").get_json()
    assert ready["articles"] == one.searcher().index.article_count
    page = apps[1].get("/metrics").get_data(as_text=True)
    rounds = shard_rounds(page)  # statistics read from the folders here too: no stats round
    assert rounds["candidates"] >= 15 and rounds.get("stats", 0) == 0, rounds
    assert f"qa_index_passages {float(ready['passages'])}" in page and "qa_index_segments 2.0" in page
    fresh = tmp_path / "fresh.jsonl"
    fresh.write_text(json.dumps({"id": "late-1", "title": "Late news", "source": "Courier",
                                 "text": "The harbour lighthouse was repainted bright orange on Friday."}) + "\n")
    root_svc.ingest([fresh])
    got = apps[1].get("/api/search", query_string={"q": "What colour was the harbour lighthouse repainted?"}).get_json()
    assert got["results"][0]["citation"]["article_id"] == "late-1"
    assert apps[1].get("/api/articles/late-1").status_code == 200


def _call_raising(*errors):
    """A _Call whose replies raise `errors` in turn (then answer "ok"), and how often it was sent."""
    pytest.importorskip("ray.serve", reason="Ray Serve is not installed (pip install -e '.[cluster]')")
    from qa.web import cluster

    sent = []

    class Reply:
        def __init__(self, error):
            self.error = error

        def result(self, timeout_s):
            if self.error is not None:
                raise self.error
            return "ok"

    class Running:
        def soon(self):
            pass

        def missing(self):
            return []

    class Shard:
        number, name, running = 1, "shard-001", Running()

        def send(self, method, args):
            sent.append(method)
            return Reply(errors[len(sent) - 1] if len(sent) <= len(errors) else None)

    return cluster._Call(Shard(), "candidates", ()), sent


def test_a_shards_own_error_is_passed_on_at_once_and_a_lost_call_is_sent_again():
    from ray.exceptions import RayTaskError
    from qa.errors import BadRequest
    from qa.search.sharded import ShardUnavailable

    call, sent = _call_raising(BadRequest("no such field", code="bad_filter"))  # over gRPC: the error itself
    with pytest.raises(BadRequest):
        call.result()
    assert sent == ["candidates"]
    wrapped = RayTaskError("candidates", "traceback", BadRequest("no such field", code="bad_filter"))
    call, sent = _call_raising(wrapped)  # through the object store: wrapped
    with pytest.raises(BadRequest):
        call.result()
    call, sent = _call_raising(KeyError("rows"))  # a bug in the shard's code: no other replica will do better
    with pytest.raises(ShardUnavailable, match="shard-001.*failed: KeyError"):
        call.result()
    assert sent == ["candidates"]

    class AioRpcError(Exception):  # as grpc.aio names a call that lost its replica
        __module__ = "grpc.aio._call"

    call, sent = _call_raising(AioRpcError("UNAVAILABLE"), TimeoutError())
    assert call.result() == "ok" and sent == ["candidates"] * 3


# --- on a Ray Serve cluster -------------------------------------------------------------------------------


def _get(port: int, path: str, timeout: float = 30) -> tuple[int, dict | str]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        body = resp.read().decode()
        try:
            return resp.status, json.loads(body)
        except ValueError:
            return resp.status, body
    finally:
        conn.close()


def shard_rounds(metrics: str) -> dict[str, float]:
    """qa_shard_rounds_total by kind, from a /metrics page."""
    out = {}
    for line in metrics.splitlines():
        if line.startswith("qa_shard_rounds_total{"):
            kind = line.split('kind="')[1].split('"')[0]
            out[kind] = float(line.rsplit(" ", 1)[1])
    return out


def ask(port: int, q: str, k: int = 5) -> tuple[int, dict]:
    return _get(port, "/api/search?" + urllib.parse.urlencode({"q": q, "k": k}))


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """A two-node cluster (4 logical CPUs each), a 2-shard root and a one-folder copy of the same articles,
    and `qa serve --ray` with 2 replicas of each shard (one per node) and the ingress on the head."""
    yield from serve_cluster(tmp_path_factory, ingress_replicas=1)


def serve_cluster(tmp_path_factory, ingress_replicas: int):
    """Start the cluster and `qa serve --ray` (one at a time on a machine: HAProxy takes fixed ports); yield
    what the tests read, and stop it all."""
    pytest.importorskip("ray.serve", reason="Ray Serve is not installed (pip install -e '.[cluster]')")
    tmp = tmp_path_factory.mktemp("serve-cluster")
    data = corpus(tmp / "news.jsonl", 80, seed=21)
    one, _ = build(tmp / "one", [SEEDS, data], shards=None)
    build(tmp / "root", [SEEDS, data], shards=2)
    port, http_port = free_port(), free_port()
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "HF_HUB_OFFLINE": "1", "RAY_AUTH_MODE": "token",
           "RAY_AUTH_TOKEN": secrets.token_hex(16), "PYTHONPATH": str(ROOT), "QA_MODEL": "fake",
           "QA_TEST_EMBEDDER": "tests.conftest:FakeEmbedder",
           "RAY_health_check_initial_delay_ms": "0", "RAY_health_check_period_ms": "500",
           "RAY_health_check_timeout_ms": "500", "RAY_health_check_failure_threshold": "4"}
    # Each node in a session of its own, ended by killing that session: `ray stop` would stop every Ray
    # cluster on the machine, other people's too.
    head = subprocess.Popen([str(RAY), "start", "--head", f"--port={port}", "--num-cpus=4", "--node-ip-address=127.0.0.1",
                             "--include-dashboard=false", "--disable-usage-stats", "--block"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    wait_port(port, head)
    node = subprocess.Popen([str(RAY), "start", f"--address=127.0.0.1:{port}", "--num-cpus=4",
                             "--node-ip-address=127.0.0.1", "--block"], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    log = open(tmp / "serve.log", "w+")
    serve = None
    try:
        for _ in range(120):
            out = subprocess.run([sys.executable, "-c", f"import ray; ray.init(address='127.0.0.1:{port}', "
                                  "log_to_driver=False); print('alive', sum(n['Alive'] for n in ray.nodes()))"],
                                 env=env, capture_output=True, text=True, timeout=120)
            if "alive 2" in out.stdout:
                break
            time.sleep(0.5)
        else:
            raise AssertionError("the second node never joined")
        serve = subprocess.Popen([sys.executable, "-m", "qa", "serve", "--index", str(tmp / "root"), "--ray",
                                  f"127.0.0.1:{port}", "--replicas", "2", "--ingress-replicas", str(ingress_replicas),
                                  "--port", str(http_port)], cwd=ROOT, env={**env, "QA_MAX_K": "40"},
                                 stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 240
        while True:
            try:
                if _get(http_port, "/readyz", 5)[0] == 200:
                    break
            except OSError:
                pass
            if serve.poll() is not None or time.monotonic() > deadline:
                log.seek(0)
                raise AssertionError(f"qa serve --ray never became ready:\n{log.read()[-4000:]}")
            time.sleep(0.5)
        yield {"port": http_port, "one": one, "root": tmp / "root", "node": node, "head": head, "env": env,
               "log": log, "address": f"127.0.0.1:{port}"}
    finally:
        if serve is not None and serve.poll() is None:
            serve.send_signal(signal.SIGINT)
            try:
                serve.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(serve.pid, signal.SIGKILL)
        kill_session(node.pid)
        kill_session(head.pid)
        log.close()


def test_the_cluster_answers_as_one_folder(served):
    port, one = served["port"], served["one"].searcher()
    status, ready = _get(port, "/readyz")
    assert status == 200 and ready["articles"] == 82 and ready["passages"] == one.index.passage_count
    qs = questions(40, seed=3)
    same = 0
    for q in qs:
        status, out = ask(port, q)
        assert status == 200, out
        same += shown(out) == shown(one.ask(q, 5).to_dict())
    assert same >= 0.99 * len(qs)
    # One round of candidates a question; the ingress read the shards' statistics from their folders.
    status, page = _get(port, "/metrics")
    rounds = shard_rounds(page)
    assert status == 200 and rounds.get("candidates", 0) >= len(qs) and rounds.get("stats", 0) == 0, rounds
    assert f"qa_index_passages {float(ready['passages'])}" in page
    status, art = _get(port, "/api/articles/story-21-5")
    assert status == 200 and art["text"][art["passages"][0]["start"]:art["passages"][0]["end"]]
    status, page = _get(port, "/?q=Where+did+Assad+flee+to%3F")
    assert status == 200 and "data-answer" in page and "data-result" in page
    status, err = _get(port, "/api/search?q=")
    assert status == 400 and err["error"]["code"] == "empty_query"
    # QA_* settings given to `qa serve --ray` alone (not to the nodes) reach the ingress: QA_MAX_K=40.
    status, err = ask(port, "Who leads HTS?", k=41)
    assert status == 400 and err["error"]["code"] == "k_out_of_range" and "1 to 40" in err["error"]["message"]


def test_a_new_article_is_found_through_the_cluster_within_5_seconds(served):
    port, root = served["port"], served["root"]
    new = root.parent / "new.jsonl"
    new.write_text(json.dumps({"id": "zeppelin-lands", "title": "Zeppelin lands on the cathedral square",
                               "text": "A zeppelin named Aurora landed on the cathedral square of Quedlinburg on "
                                       "Tuesday, and its crew of nine handed out oranges."}) + "\n")
    t0 = time.monotonic()
    build(root, [new], shards=None)
    while True:
        status, out = ask(port, "What landed on the cathedral square of Quedlinburg?")
        if status == 200 and out["results"] and out["results"][0]["citation"]["article_id"] == "zeppelin-lands":
            break
        assert time.monotonic() - t0 < 5.0, out
        time.sleep(0.1)


CJK = "的一是不了人我在有他这中大来上国个到说们为子和你地出道也时年得就那要下以生会自着去之过家学对可她里后小么心多天而能好"


def test_a_long_article_in_a_non_latin_script_comes_back_whole_through_the_cluster(served):
    """A shard's reply is one gRPC message: this one is past gRPC's own 4 MiB default."""
    port, root = served["port"], served["root"]
    rng = random.Random(11)
    text = "".join("".join(rng.choices(CJK, k=rng.randint(20, 60))) + "。" for _ in range(50_000))[:1_900_000]
    assert len(text.encode()) > 4 * 1024 * 1024
    new = root.parent / "long.jsonl"
    new.write_text(json.dumps({"id": "long-read", "title": "长篇报道", "text": text}, ensure_ascii=False) + "\n")
    build(root, [new], shards=None)
    deadline = time.monotonic() + 30
    while True:
        status, art = _get(port, "/api/articles/long-read", 60)
        if status != 404 or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert status == 200, art
    assert art["text"] == text and art["passages"]


def test_a_node_killed_under_load_costs_at_most_the_questions_in_flight(served):
    port = served["port"]
    qs = questions(30, seed=5)
    failures, answered, stop = [], [], threading.Event()
    killed_at: list[float] = []

    def client(i: int) -> None:
        n = i
        while not stop.is_set():
            q = qs[n % len(qs)]
            n += 1
            try:
                status, out = ask(port, q)
                (answered if status == 200 else failures).append((time.monotonic(), status, out))
            except OSError as e:
                failures.append((time.monotonic(), 0, str(e)))

    threads = [threading.Thread(target=client, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    time.sleep(3)
    before = len(answered)
    os.killpg(served["node"].pid, signal.SIGKILL)  # kill -9 of the second node: its raylet, workers, replicas
    killed_at.append(time.monotonic())
    time.sleep(12)
    stop.set()
    for t in threads:
        t.join(60)
    after = [a for a in answered if a[0] > killed_at[0] + 5]
    assert before > 0 and after, "answers stopped coming after the node died"
    assert len(failures) <= 2, failures[:3]  # at most the questions in flight (2 clients); goal: none
    status, ready = _get(port, "/readyz")
    assert status == 200, ready  # every shard still has its replica on the head node


def test_a_shard_with_no_live_replica_answers_503_and_readyz_names_it(served):
    port, root = served["port"], served["root"]
    away = root / "shard-001.away"
    (root / "shard-001").rename(away)
    try:
        deadline = time.monotonic() + 60
        while True:
            status, ready = _get(port, "/readyz")
            if status == 503:
                break
            assert time.monotonic() < deadline, "the shard's replicas never went down"
            time.sleep(0.5)
        assert ready["error"]["code"] == "shard_unavailable" and "shard-001" in ready["error"]["message"]
        status, out = ask(port, "Where did Assad flee to?")
        assert status == 503 and out["error"]["code"] == "shard_unavailable" and "shard-001" in out["error"]["message"]
        status, page = _get(port, "/metrics")  # the counters still answer, without the index gauges
        assert status == 200 and shard_rounds(page)["candidates"] >= 1 and "qa_index_passages" not in page
    finally:
        away.rename(root / "shard-001")
