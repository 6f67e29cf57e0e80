"""One immutable segment: the passages of some articles, with everything a question needs of them.

Two files per segment, written once and never changed:

- `NAME.arrays`: passage ids, each passage's sentence rows and length, its
  article's source (hashed) and published day, int8
  codes of every passage and sentence vector, sentence spans and stems, and the
  passages' BM25 postings (stem hash -> rows with title and text frequencies);
- `NAME.faiss`: the passage vectors for search, exact (flat) for a small
  segment, IVF for a big one, memory-mapped so processes share one copy.

Deletes never touch these files: the manifest names a tombstone file per
segment (the rows deleted as of that generation); a merge leaves them out.
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import faiss
import numpy as np

from .files import FileRows, fsync_dir, read_arrays, removed_on_failure, write_arrays
from .terms import NO_DAY, day_of, hashes, quantize, sentence_keys, source_hash, stems

IVF_ABOVE = 50_000  # passages; exact search below, IVF above
# Sentence vectors of more than this many bytes are read a run of rows at a time (pread), not through
# the mapping: once cached, a mapping of them fills a server's memory (1.9 GB at 1M passages); reading
# costs about 0.5 ms a question more, which small segments need not pay.
READ_ROWS_ABOVE = 256 << 20
K1, B = 1.2, 0.75  # FTS5's bm25() constants
# Arrays a question reads a few rows of, here and there (posting lists, by contrast, are read whole).
SCATTERED = ("s_codes", "s_start", "s_end", "s_term_ptr", "s_terms", "s_hash", "s_hash_order",
             "s_hash_sorted", "p_source", "p_day")


def ivf_lists(n: int) -> int:
    """IVF lists for n vectors: about 4 sqrt(n), with at least 39 vectors each to train on (FAISS's minimum)."""
    return int(max(1, min(4096, 4 * np.sqrt(n), n // 39)))


def nprobe_for(nlist: int) -> int:
    # A sixteenth of the lists: at 1M passages (squad-dev) an eighth, a sixteenth and a
    # thirty-second gave the same acc@1 / acc@5 (the lexical side finds what probing misses).
    return max(16, nlist // 16)


@dataclass
class SegmentBuilder:
    """Collect articles' passages and sentences, then write them as one segment."""

    dim: int
    scale: float
    pids: list[int] = field(default_factory=list)
    p_lo: list[int] = field(default_factory=list)
    p_hi: list[int] = field(default_factory=list)
    p_len: list[int] = field(default_factory=list)
    p_source: list[int] = field(default_factory=list)
    p_day: list[int] = field(default_factory=list)
    p_vecs: list[np.ndarray] = field(default_factory=list)
    s_vecs: list[np.ndarray] = field(default_factory=list)
    s_start: list[int] = field(default_factory=list)
    s_end: list[int] = field(default_factory=list)
    s_hash: list[int] = field(default_factory=list)
    s_terms: list[np.ndarray] = field(default_factory=list)
    post_hash: list[np.ndarray] = field(default_factory=list)
    post_row: list[np.ndarray] = field(default_factory=list)
    post_title: list[np.ndarray] = field(default_factory=list)
    post_text: list[np.ndarray] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.pids)

    def add_article(self, title: str, text: str, passages, sentences, source: str | None = None,
                    published: str | None = None) -> None:
        """passages: (pid, start, end, vector); sentences: (start, end, embed_hash, vector), in text order."""
        src, day = source_hash(source), day_of(published)
        base = len(self.s_start)
        sent_stems = []
        for start, end, embed_hash, vec in sentences:
            words = stems(text[start:end])
            sent_stems.append(words)
            self.s_start.append(start)
            self.s_end.append(end)
            self.s_hash.append(int(embed_hash[:16], 16))
            self.s_vecs.append(vec)
            self.s_terms.append(np.unique(sentence_keys(hashes(words))))
        ends = [e for _, e, _, _ in sentences]
        starts = [s for s, _, _, _ in sentences]
        title_tf = Counter(stems(title))
        title_len = sum(title_tf.values())
        for pid, start, end, vec in passages:
            lo = int(np.searchsorted(ends, start, side="right"))  # first sentence ending after start
            hi = int(np.searchsorted(starts, end, side="left"))  # sentences starting before end
            hi = max(hi, lo)
            row = len(self.pids)
            self.pids.append(pid)
            self.p_lo.append(base + lo)
            self.p_hi.append(base + hi)
            self.p_vecs.append(vec)
            self.p_source.append(src)
            self.p_day.append(day)
            text_tf = Counter(w for words in sent_stems[lo:hi] for w in words)
            self.p_len.append(title_len + sum(text_tf.values()))
            vocab = list(title_tf.keys() | text_tf.keys())
            self.post_hash.append(hashes(vocab))
            self.post_row.append(np.full(len(vocab), row, dtype=np.int32))
            self.post_title.append(np.fromiter((min(title_tf.get(w, 0), 255) for w in vocab), dtype=np.uint8,
                                               count=len(vocab)))
            self.post_text.append(np.fromiter((min(text_tf.get(w, 0), 65535) for w in vocab), dtype=np.uint16,
                                              count=len(vocab)))

    def arrays(self) -> dict[str, np.ndarray]:
        d = self.dim
        s_terms_len = np.fromiter((len(t) for t in self.s_terms), dtype=np.int64, count=len(self.s_terms))
        arrays = {
            "pids": np.asarray(self.pids, dtype=np.int64),
            "p_lo": np.asarray(self.p_lo, dtype=np.int32),
            "p_hi": np.asarray(self.p_hi, dtype=np.int32),
            "p_len": np.asarray(self.p_len, dtype=np.int32),
            "p_source": np.asarray(self.p_source, dtype=np.uint64),
            "p_day": np.asarray(self.p_day, dtype=np.int32),
            "p_codes": quantize(np.vstack(self.p_vecs) if self.p_vecs else np.zeros((0, d)), self.scale),
            "s_codes": quantize(np.vstack(self.s_vecs) if self.s_vecs else np.zeros((0, d)), self.scale),
            "s_start": np.asarray(self.s_start, dtype=np.int32),
            "s_end": np.asarray(self.s_end, dtype=np.int32),
            "s_hash": np.asarray(self.s_hash, dtype=np.uint64),
            "s_term_ptr": np.concatenate([[0], np.cumsum(s_terms_len)]).astype(np.int64),
            "s_terms": np.concatenate(self.s_terms) if self.s_terms else np.zeros(0, np.uint32),
        }
        cat = (lambda xs, dt: np.concatenate(xs) if xs else np.zeros(0, dt))
        arrays.update(postings(cat(self.post_hash, np.uint64), cat(self.post_row, np.int32),
                               cat(self.post_title, np.uint8), cat(self.post_text, np.uint16)))
        return arrays


def postings(h: np.ndarray, rows: np.ndarray, tf_title: np.ndarray, tf_text: np.ndarray) -> dict[str, np.ndarray]:
    """Sort (stem hash, row) pairs into a vocabulary, pointers and posting lists, rows ascending per stem."""
    order = np.lexsort((rows, h))
    h = h[order]
    first = np.flatnonzero(np.concatenate([[True], h[1:] != h[:-1]])) if len(h) else np.zeros(0, np.int64)
    return {
        "t_hash": h[first].astype(np.uint64),
        "t_ptr": np.append(first, len(h)).astype(np.int64),
        "t_rows": rows[order].astype(np.int32),
        "t_title": tf_title[order].astype(np.uint8),
        "t_text": tf_text[order].astype(np.uint16),
    }


def write_segment(folder: Path, name: str, arrays: dict[str, np.ndarray], meta: dict) -> dict:
    """Write a segment's two files (fsynced) and return its manifest entry; `arrays` is emptied."""
    order = np.argsort(arrays["s_hash"], kind="stable").astype(np.int32)  # the writer's cache looks hashes up
    arrays["s_hash_order"], arrays["s_hash_sorted"] = order, arrays["s_hash"][order]
    n, dim = len(arrays["pids"]), int(meta["dim"])
    kind = "ivf" if n > IVF_ABOVE else "flat"
    meta = {**meta, "name": name, "kind": kind, "passages": n, "sentences": len(arrays["s_start"]),
            "tokens": int(arrays["p_len"].sum()), "min_pid": int(arrays["pids"].min()) if n else 0,
            "max_pid": int(arrays["pids"].max()) if n else 0}
    # The passages' codes go to the .faiss file alone (readers take them from there), not twice.
    codes = arrays.pop("p_codes")
    if kind == "ivf":
        nlist = ivf_lists(n)
        index = faiss.IndexIVFScalarQuantizer(faiss.IndexFlatIP(dim), dim, nlist,
                                              faiss.ScalarQuantizer.QT_8bit_direct_signed, faiss.METRIC_INNER_PRODUCT)
        index.by_residual = False
        sample = codes[np.random.default_rng(0).choice(n, min(n, nlist * 64), replace=False)]
        index.train(sample.astype(np.float32))
    else:
        index = faiss.IndexScalarQuantizer(dim, faiss.ScalarQuantizer.QT_8bit_direct_signed, faiss.METRIC_INNER_PRODUCT)
    for at in range(0, n, 65536):  # in float32 a piece at a time: a million codes would be 1.5 GB at once
        piece = codes[at:at + 65536].astype(np.float32)
        if kind == "ivf":
            index.add_with_ids(piece, np.arange(at, at + len(piece), dtype=np.int64))
        else:
            index.add(piece)
    if kind == "ivf":  # where each row's code sits, so a reader need not gather the ids from every list
        arrays["p_place"] = ivf_places(index)
    path = folder / f"{name}.faiss"
    tmp = path.with_name(f".{path.name}.tmp")
    with removed_on_failure(folder / f"{name}.arrays", tmp):
        size = write_arrays(folder / f"{name}.arrays", arrays, meta)
        arrays.clear()  # the caller's dict too (it hands them over): a merge's arrays are gigabytes
        faiss.write_index(index, str(tmp))
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        tmp.replace(path)
    fsync_dir(folder)
    return {"name": name, "kind": kind, "passages": n, "sentences": meta["sentences"], "tokens": meta["tokens"],
            "bytes": size + path.stat().st_size}


def term_spans(t_hash: np.ndarray, t_ptr: np.ndarray, hashes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Where each stem's postings start and stop in a segment's term table (empty for a stem it lacks)."""
    if not len(t_hash):
        return np.zeros(len(hashes), np.int64), np.zeros(len(hashes), np.int64)
    at = np.minimum(np.searchsorted(t_hash, hashes), len(t_hash) - 1)
    found = t_hash[at] == hashes
    # t_ptr holds one more entry than t_hash, so at + 1 is always inside it.
    return (np.where(found, t_ptr[at], 0).astype(np.int64), np.where(found, t_ptr[at + 1], 0).astype(np.int64))


def segment_arrays(folder: Path, entry: dict, scattered: tuple[str, ...] = ()) -> tuple[dict, dict[str, np.ndarray]]:
    """Map the arrays of the segment a manifest entry names (ValueError when they are not that segment's)."""
    meta, a = read_arrays(folder / f"{entry['name']}.arrays", scattered=scattered)
    if meta.get("name") != entry["name"] or len(a["pids"]) != entry["passages"]:
        raise ValueError(f"{entry['name']}.arrays does not match the manifest")
    return meta, a


class Segment:
    """A segment opened for reading: memory-mapped arrays and vector index."""

    def __init__(self, folder: Path, entry: dict):
        self.name = entry["name"]
        self.meta, a = segment_arrays(folder, entry, SCATTERED)
        self.scale = float(self.meta["scale"])
        self.pids, self.p_lo, self.p_hi, self.p_len = a["pids"], a["p_lo"], a["p_hi"], a["p_len"]
        self.s_codes = a["s_codes"]  # (a segment written before 2026-12-03 also holds p_codes: unread)
        self._s_rows = FileRows(folder / f"{self.name}.arrays", "s_codes") \
            if self.s_codes.nbytes > READ_ROWS_ABOVE else None
        # Each passage's article's source (hashed) and published day, for filters.
        self.p_source = a.get("p_source", np.zeros(len(self.pids), np.uint64))
        self.p_day = a.get("p_day", np.full(len(self.pids), NO_DAY, np.int32))
        self.s_start, self.s_end, self.s_hash = a["s_start"], a["s_end"], a["s_hash"]
        self.s_hash_order, self.s_hash_sorted = a["s_hash_order"], a["s_hash_sorted"]
        self.s_term_ptr, self.s_terms = a["s_term_ptr"], a["s_terms"]
        self.t_hash, self.t_ptr, self.t_rows, self.t_title, self.t_text = (
            a["t_hash"], a["t_ptr"], a["t_rows"], a["t_title"], a["t_text"])
        self.kind = entry["kind"]
        flags = faiss.IO_FLAG_MMAP if self.kind == "ivf" else faiss.IO_FLAG_MMAP_IFC
        self.vectors = faiss.read_index(str(folder / f"{self.name}.faiss"), flags | faiss.IO_FLAG_READ_ONLY)
        if self.vectors.ntotal != len(self.pids):
            raise ValueError(f"{self.name}.faiss holds {self.vectors.ntotal} vectors, not {len(self.pids)}")
        self.current = self.s_terms.dtype == np.uint32  # written in today's layout (else qa compact rewrites it)
        if self.kind == "ivf":
            ivf = faiss.extract_index_ivf(self.vectors)
            ivf.nprobe = nprobe_for(ivf.nlist)
            # Mapped lists are OnDiskInvertedLists, whose prefetch starts 32 threads on every search
            # (thread stacks mapped and faulted in anew each time): 1.7 ms of a 0.2 ms search at 65k.
            lists = faiss.downcast_InvertedLists(ivf.invlists)
            if hasattr(lists, "prefetch_nthread"):
                lists.prefetch_nthread = 0
            # Row -> place in its list (8 bytes a passage), for codes_of. Gathering it from the lists' ids
            # reads pages all over the .faiss file (0.5 s a process at 1M passages when it is not cached).
            place = a.get("p_place")
            if place is not None and len(place) == len(self.pids) and (
                    not len(place) or 0 <= int(place.min()) and int(place.max() >> 32) < ivf.nlist):
                ivf.direct_map.type = faiss.DirectMap.Array
                faiss.copy_array_to_vector(np.ascontiguousarray(place, dtype=np.int64), ivf.direct_map.array)
            else:
                ivf.make_direct_map(True)
                self.current = False
        self.tokens = int(self.meta["tokens"])

    def __len__(self) -> int:
        return len(self.pids)

    @staticmethod
    def peek(folder: Path, name: str) -> dict:
        """A segment's own description (name, kind, counts, bytes), from its files alone."""
        meta, _ = read_arrays(folder / f"{name}.arrays")
        size = (folder / f"{name}.arrays").stat().st_size + (folder / f"{name}.faiss").stat().st_size
        return {**meta, "bytes": size}

    def rows_of(self, pids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Which of `pids` this segment holds (a mask over them), and their rows."""
        if not len(self.pids) or not len(pids):
            return np.zeros(len(pids), bool), np.zeros(0, np.int64)
        at = np.minimum(np.searchsorted(self.pids, pids), len(self.pids) - 1)
        held = self.pids[at] == pids
        return held, at[held]

    # --- dense -------------------------------------------------------------------------

    def dense_top(self, q: np.ndarray, n: int, bits: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        """Rows and approximate cosines of the n best passages; `bits`: the live rows as a bitmap (None: all live)."""
        if not len(self) or n <= 0:
            return np.zeros(0, np.int64), np.zeros(0, np.float32)
        params = sel = None
        if bits is not None:
            # `sel` stays referenced until the search returns: SWIG's parameter objects do not own it,
            # and a selector freed before FAISS reads it crashes the process (issue #27.1).
            sel = faiss.IDSelectorBitmap(len(self), faiss.swig_ptr(bits))
            if self.kind == "ivf":
                params = faiss.SearchParametersIVF(sel=sel, nprobe=faiss.extract_index_ivf(self.vectors).nprobe)
            else:
                params = faiss.SearchParameters(sel=sel)
        # FAISS scores int8 codes against an int8 query (QT_8bit_direct_signed rounds the query too),
        # so the query goes in scaled like the codes; the caller scores the best ones again exactly.
        scores, rows = self.vectors.search(q.reshape(1, -1) * self.scale, min(n, len(self)), params=params)
        keep = rows[0] >= 0
        return rows[0][keep], scores[0][keep] / (self.scale * self.scale)

    def codes_of(self, rows: np.ndarray) -> np.ndarray:
        """The int8 codes of some passages (as float32), from the vector index."""
        rows = np.ascontiguousarray(rows, dtype=np.int64)
        if not len(rows):
            return np.zeros((0, self.vectors.d), np.float32)
        return self.vectors.reconstruct_batch(rows)

    def dense_of(self, q: np.ndarray, rows: np.ndarray) -> np.ndarray:
        return inner_products(self.codes_of(rows), q) / self.scale

    def sentence_rows(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Every sentence row of the given passages, end to end, and where each passage's run starts."""
        lo, hi = self.p_lo[rows].astype(np.int64), self.p_hi[rows].astype(np.int64)
        sizes = hi - lo
        firsts = np.cumsum(sizes) - sizes
        srows = np.repeat(lo - firsts, sizes) + np.arange(int(sizes.sum()), dtype=np.int64)
        return srows, firsts

    def sentence_codes(self, srows: np.ndarray) -> np.ndarray:
        """The int8 vectors of some sentences, as a question reads them."""
        return self._s_rows.take(srows) if self._s_rows is not None else self.s_codes[srows]

    def sentence_dense(self, q: np.ndarray, srows: np.ndarray, codes: np.ndarray | None = None) -> np.ndarray:
        """Each sentence's cosine with `q` (`codes`: the rows' vectors, when the caller has read them)."""
        return inner_products(self.sentence_codes(srows) if codes is None else codes, q) / self.scale

    def sentence_links(self, srows: np.ndarray, codes: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Each sentence's cosine with the row before it (0 for the first of `srows`), and its mean cosine
        with the other rows (how much it sums up the rest; 0 alone)."""
        codes = (self.sentence_codes(srows) if codes is None else codes).astype(np.float32) / self.scale
        if len(codes) < 2:
            return np.zeros(len(codes)), np.zeros(len(codes))
        gram = codes @ codes.T
        return np.concatenate([[0.0], np.diag(gram, -1)]), (gram.sum(axis=1) - np.diag(gram)) / (len(codes) - 1)

    def sentence_terms(self, srows: np.ndarray, qhash: np.ndarray, qweight: np.ndarray) -> np.ndarray:
        """Each sentence's summed weights of the query stems it holds (qhash: 64-bit stem hashes, sorted)."""
        if self.s_terms.dtype == np.uint32:
            keys = sentence_keys(qhash)
            order = np.argsort(keys, kind="stable")
            qhash, qweight = keys[order], qweight[order]
        lo, hi = self.s_term_ptr[srows], self.s_term_ptr[srows + 1]
        sizes = hi - lo
        if not len(qhash) or not sizes.sum():
            return np.zeros(len(srows))
        firsts = np.cumsum(sizes) - sizes
        at = np.repeat(lo - firsts, sizes) + np.arange(int(sizes.sum()), dtype=np.int64)
        held = self.s_terms[at]
        pos = np.minimum(np.searchsorted(qhash, held), len(qhash) - 1)
        w = np.where(qhash[pos] == held, qweight[pos], 0.0)
        # Each sentence sums its own weights and nothing else, so a sentence scores the same to the last bit
        # whichever passages it is read with (a shard reads other batches than one folder does). A trailing
        # empty sentence needs an index inside w: a 0.0 after the last sentence's weights, only then.
        if sizes[-1] == 0:
            w = np.append(w, 0.0)
        sums = np.add.reduceat(w, np.minimum(firsts, len(w) - 1))
        return np.where(sizes > 0, sums, 0.0)

    # --- lexical -----------------------------------------------------------------------

    def df(self, qhash: np.ndarray) -> np.ndarray:
        """How many of this segment's passages hold each stem."""
        lo, hi = self.spans(qhash)
        return hi - lo

    def spans(self, hashes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Where each stem's postings start and stop (an empty run for a stem this segment lacks)."""
        return term_spans(self.t_hash, self.t_ptr, hashes)

    def bm25(self, sel: np.ndarray, prow: np.ndarray, idf: np.ndarray, bm: BM25) -> np.ndarray:
        """The BM25 contributions of the postings at `sel` (rows `prow`), each with its stem's idf."""
        freq = bm.title_weight * self.t_title[sel].astype(np.float32) + self.t_text[sel]
        dl = self.p_len[prow].astype(np.float32)
        return idf * freq * (K1 + 1) / (freq + K1 * (1 - B + B * dl / bm.avgdl))

    def matched(self, lo: np.ndarray, hi: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """For each stem's postings run [lo, hi) in turn, which of `rows` (sorted) it holds:
        (the postings' places, their rows, and which stem each came from)."""
        rows = rows.astype(self.t_rows.dtype, copy=False)  # else searchsorted converts the whole posting list
        sel, which = [], []
        for i, (a, b) in enumerate(zip(lo.tolist(), hi.tolist())):
            if b > a:
                at = a + np.searchsorted(self.t_rows[a:b], rows)
                hit = at < b
                hit[hit] = self.t_rows[at[hit]] == rows[hit]
                sel.append(at[hit])
                which.append(np.full(int(hit.sum()), i))
        if not sel:
            return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.int64)
        sel_all = np.concatenate(sel)
        return sel_all, self.t_rows[sel_all].astype(np.int64), np.concatenate(which)

    def lexical_top(self, terms: Terms, n: int, live: np.ndarray | None, bm: BM25) -> tuple[np.ndarray, np.ndarray]:
        """Rows and BM25 scores of the n best passages.

        Only rare stems (`generate` true) put passages forward, as arrays over their
        postings; common stems then add their share to those candidates alone, so the
        cost follows the rare stems' postings, not every passage holding "said".
        """
        idf, generating = terms.idf, terms.generate
        lo, hi = self.spans(terms.hashes)
        size = hi - lo
        if not size.any():
            return np.zeros(0, np.int64), np.zeros(0)
        if not (generating & (size > 0)).any():  # only common stems matched here: let the rarest of them lead
            generating = generating.copy()
            generating[np.argmin(np.where(size > 0, size, np.iinfo(np.int64).max))] = True
        g = np.flatnonzero(generating & (size > 0))
        # Every generating stem's postings, end to end, in one pass.
        counts = size[g]
        firsts = np.cumsum(counts) - counts
        sel = np.repeat(lo[g] - firsts, counts) + np.arange(int(counts.sum()))
        rows = self.t_rows[sel].astype(np.int64)
        contrib = self.bm25(sel, rows, np.repeat(idf[g], counts), bm)
        if len(rows) * 8 > len(self):  # many postings: counting over every row beats sorting them
            sums = np.bincount(rows, weights=contrib, minlength=len(self))
            cand = np.flatnonzero(np.bincount(rows, minlength=len(self)))
            scores = sums[cand]
        else:
            cand, inverse = np.unique(rows, return_inverse=True)
            scores = np.bincount(inverse, weights=contrib, minlength=len(cand))
        if live is not None:
            alive = live[cand]
            cand, scores = cand[alive], scores[alive]
        depth = min(len(cand), 3 * n)
        if depth < len(cand):
            best = np.argpartition(-scores, depth - 1)[:depth]
            cand, scores = cand[best], scores[best]
        order = np.argsort(cand)
        cand, scores = cand[order], scores[order]
        rest = np.flatnonzero(~generating & (size > 0))
        if len(rest) and len(cand):
            sel, prow, which = self.matched(lo[rest], hi[rest], cand)
            scores += np.bincount(np.searchsorted(cand, prow), weights=self.bm25(sel, prow, idf[rest][which], bm),
                                  minlength=len(cand))
        if len(cand) > n:
            best = np.argpartition(-scores, n - 1)[:n]
            cand, scores = cand[best], scores[best]
        return cand, scores

    def lexical_of(self, terms: Terms, rows: np.ndarray, bm: BM25) -> np.ndarray:
        """BM25 scores of the given rows (sorted ascending)."""
        lo, hi = self.spans(terms.hashes)
        sel, prow, which = self.matched(lo, hi, rows)
        return np.bincount(np.searchsorted(rows, prow), weights=self.bm25(sel, prow, terms.idf[which], bm),
                           minlength=len(rows)).astype(np.float64)

    # --- the writer's cache of sentence vectors ---------------------------------------------

    def cached(self, wanted: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """For embed hashes (uint64), a mask of those held here and their vectors."""
        if not len(self.s_hash):
            return np.zeros(len(wanted), bool), np.zeros((0, self.s_codes.shape[1]), np.float32)
        sorted_hash = self.s_hash_sorted
        at = np.minimum(np.searchsorted(sorted_hash, wanted), len(sorted_hash) - 1)
        held = sorted_hash[at] == wanted
        rows = self.s_hash_order[at[held]]
        return held, self.s_codes[rows].astype(np.float32) / self.scale


@dataclass(frozen=True)
class Terms:
    """A question's stems as every segment's lexical side reads them, built once a question."""

    hashes: np.ndarray  # 64-bit stem hashes
    idf: np.ndarray  # FTS5-style idf, float32 (as the scores have always been summed)
    generate: np.ndarray  # whether the stem puts passages forward

    @classmethod
    def of(cls, terms: list[tuple[int, float, bool]]) -> Terms:
        """From (hash, idf, generate) per stem."""
        return cls(np.fromiter((h for h, _, _ in terms), np.uint64, len(terms)),
                   np.fromiter((w for _, w, _ in terms), np.float32, len(terms)),
                   np.fromiter((g for _, _, g in terms), bool, len(terms)))

    def __len__(self) -> int:
        return len(self.hashes)


@dataclass
class BM25:
    """The collection-wide numbers every segment's BM25 needs."""

    avgdl: float
    title_weight: float = 1.0


def inner_products(codes: np.ndarray, q: np.ndarray) -> np.ndarray:
    """codes @ q on this thread, through FAISS's SIMD loop.

    Not BLAS: OpenBLAS hands a product this small to helper threads that then spin
    for milliseconds, taking the other core from the next question's model run.
    """
    out = np.empty(len(codes), dtype=np.float32)
    if len(codes):
        m = np.ascontiguousarray(codes, dtype=np.float32)
        faiss.fvec_inner_products_ny(faiss.swig_ptr(out), faiss.swig_ptr(q), faiss.swig_ptr(m), m.shape[1], len(m))
    return out


def ivf_places(index) -> np.ndarray:
    """For each row of an IVF index, its list and offset there, as FAISS's direct map keeps them."""
    ivf = faiss.extract_index_ivf(index)
    place = np.zeros(ivf.ntotal, np.int64)
    for lst in range(ivf.nlist):
        n = ivf.invlists.list_size(lst)
        if n:
            ids = faiss.rev_swig_ptr(ivf.invlists.get_ids(lst), n)
            place[ids] = (lst << 32) | np.arange(n, dtype=np.int64)
    return place


def live_bits(live: np.ndarray) -> np.ndarray:
    return np.packbits(live.astype(np.uint8), bitorder="little")
