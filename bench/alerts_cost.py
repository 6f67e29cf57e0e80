"""What standing questions cost a writer, and how soon a new answer reaches its feed and its webhook.

    python bench/alerts_cost.py [--alerts 1000] [--new 100] [--rounds 2] [--prefilter-check]

An archive (seeds/ and bench/time_pairs.py's family A: 162 articles) is copied afresh for every run;
each run is one `qa ingest` process (start, model load, chunking, embedding, publishing, and with
standing questions, reading what it published against them) of `--new` new articles (family B's
facts that change, with their dates), timed from its start to its exit, alternately:

    A: no standing questions          B: --alerts standing questions (their vectors kept, as after the first check)

The standing questions are family B's questions about the present (those the new articles answer)
and squad-dev's questions (which they do not), one with a webhook to a receiver on 127.0.0.1. Prints
each run's time, the medians, B's extra share, what each check read (from the log), and when the
first answer reached the webhook after the ingest started. `--prefilter-check` also reads the last B
run's new articles against every standing question without the prefilter and counts the answers the
prefilter would lose.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

SQUAD = ROOT.parent / "shared" / "eval" / "squad-dev.json"


class Receiver:
    def __init__(self):
        self.got: list[float] = []
        mine = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                self.rfile.read(int(self.headers["Content-Length"]))
                mine.got.append(time.time())
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


def qa(*args, env=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "qa", *args], cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--alerts", type=int, default=1000)
    ap.add_argument("--new", type=int, default=100)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--prefilter-check", action="store_true")
    args = ap.parse_args()

    import time_pairs

    from qa import alerts
    from qa.embed.model import DEFAULT_MODEL, get_embedder

    work = Path(tempfile.mkdtemp(prefix="qa-alerts-bench-"))
    archive_a, _ = time_pairs.make("A", 40, 7)
    new_b, questions_b = time_pairs.make("B", 40, 7)
    (work / "archive.jsonl").write_text("".join(json.dumps(a) + "\n" for a in archive_a))
    (work / "new.jsonl").write_text("".join(json.dumps(a) + "\n" for a in new_b[:args.new]))
    archive = work / "archive"
    for what in ([str(ROOT / "seeds")], [str(work / "archive.jsonl")]):
        r = qa("ingest", *what, "--index", str(archive), "-q")
        assert r.returncode == 0, r.stderr
    print(f"archive: {r.stdout.strip()}")

    # The standing questions, made once against a copy of the archive (vectors kept), copied into each B run.
    receiver = Receiver()
    present = [q["q"] for q in questions_b if q["kind"] == "present" and any(
        a["id"] == q["want"] for a in new_b[:args.new])]
    squad = [qa_["question"] for art in json.loads(SQUAD.read_text())["data"] for p in art["paragraphs"]
             for qa_ in p["qas"]]
    asked = (present + squad[::max(1, len(squad) // args.alerts)])[:args.alerts]
    template = work / "with-alerts"
    shutil.copytree(archive, template)
    embedder = get_embedder(DEFAULT_MODEL, "openvino-int8")
    t0 = time.perf_counter()
    for i, q in enumerate(asked):
        alerts.create(template, q, webhook=receiver.url if i == 0 else None, embedder=embedder)
    print(f"{len(asked)} standing questions ({len(present)} about the new articles' facts) made in "
          f"{time.perf_counter() - t0:.1f} s")

    times: dict[str, list[float]] = {"A": [], "B": []}
    last_b = None
    for rnd in range(args.rounds):
        for cond in ("A", "B"):
            folder = work / f"run-{cond}-{rnd}"
            shutil.copytree(template if cond == "B" else archive, folder)
            receiver.got.clear()
            start = time.time()
            t0 = time.perf_counter()
            r = qa("ingest", str(work / "new.jsonl"), "--index", str(folder), "-q")
            took = time.perf_counter() - t0
            assert r.returncode == 0, r.stderr
            times[cond].append(took)
            line = f"  {cond} round {rnd + 1}: {took:6.1f} s  ({r.stdout.strip().split(';')[0]})"
            if cond == "B":
                reads = re.findall(r"read (\d+) new articles against (\d+) standing questions in ([\d.]+) s: "
                                   r"(\d+) answer steps, (\d+) new answers", r.stderr)
                checks = sum(float(x[2]) for x in reads)
                line += (f"; {len(reads)} checks took {checks:.2f} s in all, "
                         f"{sum(int(x[4]) for x in reads)} new answers")
                if receiver.got:
                    line += f"; first webhook {receiver.got[0] - start:.1f} s after the ingest started"
                last_b = folder
            print(line, flush=True)
    a, b = statistics.median(times["A"]), statistics.median(times["B"])
    print(f"median A (no standing questions) {a:.1f} s, B ({len(asked)}) {b:.1f} s: B takes {100 * (b / a - 1):+.1f}%")

    if args.prefilter_check and last_b is not None:
        from qa.alerts.match import check
        from qa.web.service import Service

        store = alerts.AlertStore(last_b)
        kept = {(r[0], r[1]) for r in _entries(store)}
        with store._tx() as c:
            c.execute("DELETE FROM entries")
            c.execute("UPDATE state SET value = ? WHERE key = 'checked'", (str(alerts.published_version(archive)),))
        svc = Service(last_b, DEFAULT_MODEL, "openvino-int8", embedder=embedder)
        got = check(svc.searcher(wait=True), store, prefilter=-1.0)
        every = {(r[0], r[1]) for r in _entries(store)}
        print(f"without the prefilter: {got.pairs} answer steps in {got.seconds:.1f} s, {len(every)} answers; "
              f"with it: {len(kept)} answers; lost by the prefilter: {len(every - kept)}")


def _entries(store):
    with store._conn() as c:
        return c.execute("SELECT alert_id, article_id FROM entries").fetchall()


if __name__ == "__main__":
    main()
