"""Growth: how ingest, memory, speed, freshness and quality change as the collection grows.

    python bench/scale.py [--sizes 10000 100000 1000000] [--questions 1000] [--work DIR]

For each size: squad-dev's 24 articles hidden among BBC News articles
(../shared/eval/bbc-news.jsonl) and articles of BBC sentences recombined at
random (a fixed seed), about SIZE passages in all. Prints per size:

- ingest: passages per second of `qa ingest` (the whole process), and disk per passage;
- serving: `qa serve` (default workers) until /readyz says ready, the whole server's PSS
  (every process, shared pages split between them), HTTP p50 / p99 at one client over
  squad-dev questions (k=5);
- freshness: seconds from the start of a `qa ingest` of one new article until a search on
  the running server finds it;
- quality: acc@1 / acc@5 counting only the right article's passages holding an answer, for
  the default (approximate where segments are big) and for exact search over the same folder.

Test data only: nothing here is copied into the project.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
import urllib.parse
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared" / "eval"
os.environ.setdefault("HF_HUB_OFFLINE", "1")
PASSAGES_PER = {"squad": 1545 / 24}


def squad(path: Path) -> tuple[list[dict], list[tuple[str, str, list[str]]]]:
    data = json.loads(path.read_text())["data"]
    articles, questions = [], []
    for i, entry in enumerate(data):
        art_id = f"squad-{i:02d}"
        articles.append({"id": art_id, "title": entry["title"].replace("_", " "), "source": "Encyclopedia",
                         "text": "\n\n".join(p["context"] for p in entry["paragraphs"])})
        questions += [(art_id, q["question"], [a if isinstance(a, str) else a["text"] for a in q["answers"]])
                      for p in entry["paragraphs"] for q in p["qas"]]
    return articles, questions


PART = 100_000  # passages per `qa ingest` run: a long build resumes by part, and ingest speed shows by part


def corpus(target: int, out: Path, seed: int = 7) -> list[Path]:
    """Write squad + BBC + recombined articles to `out` (jsonl files of about PART passages); return them."""
    import blingfire

    rng = random.Random(seed)
    arts, _ = squad(SHARED / "squad-dev.json")
    bbc = [json.loads(line) for line in (SHARED / "bbc-news.jsonl").open()]
    sentences = [s for a in bbc for p in a["text"].split("\n\n") for s in blingfire.text_to_sentences(p).split("\n")
                 if len(s.split()) > 4]
    rows, passages = ([*arts], 1545) if target <= 1545 else ([*arts, *bbc], 1545 + 7273)  # squad alone: the base
    n = 0
    while passages < target:  # ~16 sentences, ~3 passages an article
        k = rng.randint(12, 20)
        picked = rng.sample(sentences, k)
        paras = ["  ".join(picked[i:i + 4]) for i in range(0, k, 4)]
        title = rng.choice(bbc)["title"]
        rows.append({"id": f"digest-{n}", "title": f"{title} (digest {n})", "source": rng.choice(
            ["Wire Digest", "Evening Roundup", "Morning Brief"]), "text": "\n\n".join(paras)})
        n += 1
        passages += 3
    rng.shuffle(rows)
    n_parts = max(1, round(passages / PART))
    out.mkdir(parents=True, exist_ok=True)
    files = []
    for i in range(n_parts):  # shuffled, so equal shares of rows are near-equal shares of passages
        files.append(out / f"part-{i:02d}.jsonl")
        with files[-1].open("w") as f:
            for r in rows[i * len(rows) // n_parts:(i + 1) * len(rows) // n_parts]:
                f.write(json.dumps(r) + "\n")
    return files


def manifest_of(index: Path) -> dict:
    path = index / "manifest.json"
    return json.loads(path.read_text()) if path.exists() else {"articles": 0, "passages": 0}


def ingest_parts(size: int, work: Path, index: Path, fresh: bool) -> tuple[int, int, float, list[dict]]:
    """`qa ingest` each part in turn, resuming after the last part logged; (articles, passages, seconds, log)."""
    parts_dir, log_path = work / f"corpus-{size}", work / f"ingest-{size}.json"
    if fresh or not log_path.exists():
        shutil.rmtree(index, ignore_errors=True)
        shutil.rmtree(parts_dir, ignore_errors=True)
        log_path.write_text("[]")
    log = json.loads(log_path.read_text())
    files = sorted(parts_dir.glob("part-*.jsonl")) or corpus(size, parts_dir)
    first = True  # only the first part of a run can be one a stop cut short
    for i, part in enumerate(files):
        if i < len(log):
            continue
        before = manifest_of(index)["passages"]
        resumed = first and (index / "manifest.json").exists() and before > sum(e["passages"] for e in log)
        first = False
        t0 = time.perf_counter()
        r = qa("ingest", str(part), "--index", str(index), "-q")
        if r.returncode:
            raise SystemExit(f"ingest of {part} failed: {r.stderr[-2000:]}")
        took = time.perf_counter() - t0
        added = manifest_of(index)["passages"] - before
        log.append({"part": part.name, "passages": added, "seconds": took, "resumed": resumed})
        log_path.write_text(json.dumps(log, indent=1))
        print(f"  part {i + 1}/{len(files)}: {added:,} passages in {took:.0f} s ({added / took:.0f} a second)"
              f"{' (resumed after a stop: rate not comparable)' if resumed else ''}", file=sys.stderr, flush=True)
    m = manifest_of(index)
    return m["articles"], m["passages"], sum(e["seconds"] for e in log), log


def qa(*args: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "qa", *args], cwd=ROOT, capture_output=True, text=True, **kw)


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pss_mib(pid: int) -> float:
    """PSS of a process and all its descendants, MiB."""
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        try:
            for line in Path(f"/proc/{p}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    total += int(line.split()[1])
            todo += [int(c) for t in Path(f"/proc/{p}/task").iterdir()
                     for c in (t / "children").read_text().split()]
        except OSError:
            pass
    return total / 1024


def pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


def get(conn: http.client.HTTPConnection, path: str) -> tuple[float, dict]:
    t0 = time.perf_counter()
    conn.request("GET", path)
    r = conn.getresponse()
    body = r.read()
    if r.status != 200:
        raise RuntimeError(f"HTTP {r.status}: {body[:200]!r}")
    return (time.perf_counter() - t0) * 1000, json.loads(body)


def right(results: list[dict], art_id: str, answers: list[str], k: int) -> bool:
    return any(r["citation"]["article_id"] == art_id and any(a in r["text"] for a in answers) for r in results[:k])


def in_process_quality(index: Path, questions, exact: bool) -> tuple[float, float, float]:
    """acc@1, acc@5 and ms a question, in this process, approximate (default) or exact."""
    from qa.embed.model import DEFAULT_MODEL
    from qa.index import reader
    from qa.web.service import Service

    svc = Service(index, DEFAULT_MODEL, "openvino-int8")
    s = svc.searcher()
    defaults = reader.GENERATE_SHARE, reader.GENERATE_MIN
    if exact:
        reader.GENERATE_SHARE, reader.GENERATE_MIN = 1.0, 1 << 62
        for p in s.index.parts:
            if p.seg.kind == "ivf":
                import faiss

                ivf = faiss.extract_index_ivf(p.seg.vectors)
                ivf.nprobe = ivf.nlist
    a1 = a5 = 0
    t0 = time.perf_counter()
    for art_id, q, answers in questions:
        hits = [h.to_dict() for h in s.search(q, 5)]
        a1 += right(hits, art_id, answers, 1)
        a5 += right(hits, art_id, answers, 5)
    took = (time.perf_counter() - t0) * 1000 / len(questions)
    reader.GENERATE_SHARE, reader.GENERATE_MIN = defaults
    return a1 / len(questions), a5 / len(questions), took


def set_cache(index: Path, cache: str) -> None:
    """Put the index's files in the OS page cache ("warm"), out of it ("cold"), or leave them ("as-is")."""
    if cache == "as-is":
        return
    for f in sorted(index.iterdir()):
        if not f.is_file():
            continue
        with open(f, "rb") as fh:
            if cache == "cold":
                os.posix_fadvise(fh.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)
            else:
                while fh.read(1 << 24):
                    pass


def measure(size: int, work: Path, n_questions: int, reuse: bool = False, warmup: int = 30,
            cache: str = "as-is") -> dict:
    work.mkdir(parents=True, exist_ok=True)
    index = work / f"index-{size}"
    n_articles, passages, ingest_s, log = ingest_parts(size, work, index, fresh=not reuse)
    # The published snapshot's files (segments merged away linger 60 s for readers still opening them).
    manifest = json.loads((index / "manifest.json").read_text())
    disk = (sum(p.stat().st_size for p in index.glob("qa.sqlite3*")) + sum(e["bytes"] for e in manifest["segments"])
            + sum((index / e["tombstones"]).stat().st_size for e in manifest["segments"] if e.get("tombstones")))
    _, questions = squad(SHARED / "squad-dev.json")
    step = max(1, len(questions) // n_questions)
    asked = questions[::step][:n_questions]

    set_cache(index, cache)
    port = free_port()
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "qa", "serve", "--index", str(index), "--port", str(port)],
                            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    out: dict = {"size": size, "articles": n_articles, "passages": passages, "ingest_s": ingest_s,
                 "ingest_pps": passages / ingest_s, "disk_per_passage": disk / passages, "ingest_log": log}
    try:
        while True:
            try:
                c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
                c.request("GET", "/readyz")
                if c.getresponse().status == 200:
                    break
            except OSError:
                pass
            if proc.poll() is not None or time.perf_counter() - t0 > 600:
                raise SystemExit("qa serve did not get ready")
            time.sleep(0.05)
        out["ready_s"] = time.perf_counter() - t0
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        # Warm up on other questions than the timed ones (the timing must not be of pages just read for them).
        for _, q, _ in (questions[step // 2::step] if step > 1 else questions)[:warmup]:
            get(conn, "/api/search?" + urllib.parse.urlencode({"q": q, "k": 5}))
        lat, a1, a5 = [], 0, 0
        for art_id, q, answers in asked:
            ms, body = get(conn, "/api/search?" + urllib.parse.urlencode({"q": q, "k": 5}))
            lat.append(ms)
            a1 += right(body["results"], art_id, answers, 1)
            a5 += right(body["results"], art_id, answers, 5)
        out.update(p50=pct(lat, 50), p99=pct(lat, 99), acc1=a1 / len(asked), acc5=a5 / len(asked),
                   pss_mib=pss_mib(proc.pid))
        # Freshness: one new article, from the start of its ingest to a search that finds it.
        new = work / "fresh.jsonl"
        stamp = int(time.time())
        # A name of its own each run: a reused folder holds the articles of earlier runs, and a copy
        # of one of them would be grouped under the earliest (wire copies), never first.
        name = f"zorblatt{stamp:x}"
        new.write_text(json.dumps({"id": f"fresh-{stamp}", "title": f"Quenby's {name} festival",
                                   "text": f"The {name} festival in Quenby was founded by Ilse Marwick in {stamp}."})
                       + "\n")
        t0 = time.perf_counter()
        ing = subprocess.Popen([sys.executable, "-m", "qa", "ingest", str(new), "--index", str(index), "-q"],
                               cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        found = None
        while time.perf_counter() - t0 < 120:
            _, body = get(conn, "/api/search?" + urllib.parse.urlencode({"q": f"Who founded the {name} festival?"}))
            if body["results"] and body["results"][0]["citation"]["article_id"] == f"fresh-{stamp}":
                found = time.perf_counter() - t0
                break
            time.sleep(0.1)
        ing.wait()
        out["fresh_s"] = found
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGINT)
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
    manifest = json.loads((index / "manifest.json").read_text())
    out["segments"] = [(s["kind"], s["passages"]) for s in manifest["segments"]]
    out["exact_acc1"], out["exact_acc5"], out["exact_ms"] = in_process_quality(index, asked, exact=True)
    out["approx_acc1"], out["approx_acc5"], out["approx_ms"] = in_process_quality(index, asked, exact=False)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    ap.add_argument("--questions", type=int, default=1000)
    ap.add_argument("--warmup", type=int, default=30,
                    help="questions asked (others than those timed) before timing; a freshly merged or "
                         "rebooted index reads from disk at first")
    ap.add_argument("--cache", choices=["as-is", "warm", "cold"], default="as-is",
                    help="the index's files in the OS page cache before serving: as left, all read in, or dropped "
                         "(as after a reboot); the server's PSS counts the cached pages it maps")
    ap.add_argument("--work", type=Path, default=Path("/tmp/qa-scale"))
    ap.add_argument("--keep", action="store_true", help="keep the index folders")
    ap.add_argument("--reuse", action="store_true",
                    help="keep what an earlier run ingested into --work: finish its parts, then measure")
    args = ap.parse_args()
    if not (SHARED / "bbc-news.jsonl").exists():
        raise SystemExit(f"needs {SHARED}/squad-dev.json and bbc-news.jsonl")
    rows = []
    print("| passages | ingest p/s | disk/passage | server PSS | ready | HTTP p50 / p99 | new article found | "
          "acc@1 / acc@5 (HTTP) | exact in process: acc@1 / acc@5, ms | default in process: acc@1 / acc@5, ms | segments |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for size in args.sizes:
        r = measure(size, args.work, args.questions, args.reuse, args.warmup, args.cache)
        rows.append(r)
        fresh = f"{r['fresh_s']:.1f} s" if r["fresh_s"] is not None else "not in 120 s"
        print(f"| {r['passages']:,} | {r['ingest_pps']:.0f} | {r['disk_per_passage'] / 1024:.1f} KB | "
              f"{r['pss_mib']:.0f} MiB | {r['ready_s']:.1f} s | {r['p50']:.1f} / {r['p99']:.1f} ms | {fresh} | "
              f"{r['acc1']:.3f} / {r['acc5']:.3f} | {r['exact_acc1']:.3f} / {r['exact_acc5']:.3f}, "
              f"{r['exact_ms']:.1f} | {r['approx_acc1']:.3f} / {r['approx_acc5']:.3f}, {r['approx_ms']:.1f} | "
              f"{len(r['segments'])} ({', '.join(f'{k} {n:,}' for k, n in r['segments'])}) |", flush=True)
        log = [e for e in r["ingest_log"] if not e["resumed"]]
        if len(log) >= 2:
            first, last = log[0], log[-1]
            print(f"  ingest, first part {first['passages'] / first['seconds']:.0f} passages/s, "
                  f"last part {last['passages'] / last['seconds']:.0f} passages/s", flush=True)
        if not (args.keep or args.reuse):
            for leftover in (f"index-{size}", f"corpus-{size}", f"ingest-{size}.json"):
                shutil.rmtree(args.work / leftover, ignore_errors=True) if (args.work / leftover).is_dir() \
                    else (args.work / leftover).unlink(missing_ok=True)
    (args.work / "scale.json").write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
