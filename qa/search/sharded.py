"""Search over a sharded index root: every shard finds its own candidates, one searcher fuses them.

A question is one round to every shard at once (a shard may be a folder in this process or a Ray
Serve deployment, qa/web/cluster.py), two when one of the question's stems is new to a shard whose
folder this process cannot read:

1. `stats` (only for stems a shard has not been asked about at its current generation): the stems'
   document frequencies and the shard's passage and token counts, summed into the collection's BM25
   statistics (Elasticsearch's dfs_query_then_fetch). The fusing side keeps each shard's answers per
   shard generation, so a question whose stems were all asked before needs no round for them; where it
   can read the shard's folder (the replicas' shared file system), it reads them there instead
   (qa/index/freqs.py), and asks no round at all;
2. `candidates`: with those statistics every shard scores exactly as one folder holding all the
   passages would, and returns its own best passages by BM25 and by int8 vector, and for each of
   them what fusion reads (exact cosine, BM25, best sentence by cosine and by stems). The best of
   the collection are among the shards' own best, so fusing the union is fusing as one folder does.
   The request names the generation each shard's statistics came from; a shard that has published
   another since answers `stale` with its new statistics, and the question starts again. With its
   candidates each shard sends the rows (text, citation), sentences and sources of its best passages
   as it would fuse them alone, which are nearly always those the fused ranking reads, unless this
   process has that generation of the shard's folder open itself (`readers`): then it reads them there,
   the shard's work halves and its reply is a tenth;
3. `fetch` (only for what the shards' own best missed, from a shard whose folder is not read here):
   rows, sentences and sources of the best fused passages, for collapsing, the answer step and the
   facets, which then run here as on one folder.

Passage ids are global (`local * shards + shard`, qa/index/shards.py) from the shards' answers on.
"""

from __future__ import annotations

import dataclasses
import heapq
import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from pathlib import Path

import numpy as np

from ..errors import IndexCorrupt, QAError
from ..index import Index, Where
from ..index.freqs import FolderFreqs
from ..index.manifest import manifest_stamp
from ..index.reader import Collection, PassageRow, SentenceScores
from ..index.shards import global_id, read_root, shard_of, split_id
from .searcher import Searcher, fuse

log = logging.getLogger(__name__)

PREFETCH_ROWS = 40  # the best passages whose rows come with the candidates (collapsing reads 40 with an answer)
PREFETCH_SENTENCES = 8  # ... and whose sentences (the answer reads 5 or more, the results k)
DF_CACHE_STEMS = 200_000  # stems whose document frequency is kept per shard (for its newest generation)
SIDE_BEST = 2  # ... and the sentences of each side's best on a shard, whatever its fused rank there
FREQS_RETRY = 30  # seconds a shard whose folder could not be read here has its statistics asked instead
STALE_TRIES = 2  # a question starts again at most this often when a shard published meanwhile


class ShardUnavailable(QAError):
    code = "shard_unavailable"
    status = 503


# --- the shard's side ---------------------------------------------------------------------------------


class ShardReader:
    """One shard folder's side of a sharded search, on the newest snapshot its writer published."""

    def __init__(self, folder: str | os.PathLike, shard: int, shards: int, model: str | None = None):
        self.folder, self.shard, self.shards, self.model = Path(folder), shard, shards, model
        self._index: Index | None = None
        self._stamp = None
        self._lock = threading.Lock()

    @property
    def index(self) -> Index:
        """The newest published snapshot (one stat a call; a snapshot that fails to load keeps the last)."""
        stamp = manifest_stamp(self.folder)
        if self._index is not None and stamp == self._stamp:
            return self._index
        with self._lock:
            if self._index is None or stamp != self._stamp:
                try:
                    self._index = Index.load(self.folder, self.model, previous=self._index)
                    self._stamp = stamp
                except Exception:
                    if self._index is None:
                        raise
                    log.exception("shard %d: cannot load the new snapshot; still serving generation %d",
                                  self.shard, self._index.generation)
                    self._stamp = stamp
        return self._index

    def _g(self, ids) -> list[int]:
        return [global_id(i, self.shard, self.shards) for i in ids]

    def info(self) -> dict:
        idx = self.index
        return {"shard": self.shard, "generation": idx.generation, "articles": idx.article_count,
                "passages": idx.passage_count, "segments": idx.segment_count, "model": idx.manifest.get("model")}

    def stats(self, stems: list[str]) -> dict:
        return self._stats(self.index, stems)

    def generation(self) -> int:
        """The newest published generation (as FolderFreqs.generation: a ShardReader in this process serves as
        the fusing side's view of its own folder)."""
        return self.index.generation

    @staticmethod
    def _stats(idx: Index, stems: list[str]) -> dict:
        df, n = idx.doc_freqs(stems)
        return {"df": {t: df.get(t, 0) for t in stems}, "passages": n, "rows": sum(len(p.seg) for p in idx.parts),
                "tokens": sum(p.seg.tokens for p in idx.parts), "generation": idx.generation,
                "articles": idx.article_count}

    def candidates(self, req: dict) -> dict:
        """This shard's best passages by BM25 (with the collection's statistics) and by int8 vector, with
        what fusion reads of each: exact cosine, BM25, its best sentence by cosine and by stems; and the
        rows, sentences and sources of its best (`prefetch`). When the statistics were summed from another
        generation of this shard than the one it now serves: {"stale": its statistics}."""
        idx = self.index
        expect = req.get("generations")
        if expect is not None and expect[self.shard] != idx.generation:
            return {"stale": self._stats(idx, req["stems"])}
        stats = Collection(req["df"], req["passages"], req["avgdl"])
        stems, qvec, tw, where = req["stems"], req["qvec"], req["title_weight"], req["where"]
        among = req.get("among")
        if among is not None:  # only these passages (a standing question reading new articles)
            mine = _local([g for g in among if split_id(g, self.shards)[0] == self.shard], self.shards)
            lexical = idx.lexical_of(stems, mine, tw, stats) if req["lexical"] else {}
            coarse: dict[int, float] = {}
            local = list(dict.fromkeys([*mine, *lexical]))
        else:
            lexical = idx.lexical(stems, req["n"], tw, where, stats) if req["lexical"] else {}
            coarse = idx.dense_coarse(qvec, req["dense_n"], where) if qvec is not None else {}
            local = list(dict.fromkeys([*coarse, *lexical]))
        exact = idx.dense_of(qvec, local) if qvec is not None else {}
        sentences = idx.sentences(qvec, req["idf"], local)
        bm25 = dict(lexical)
        if req["lexical"] and among is None:
            bm25.update(idx.lexical_of(stems, [i for i in local if i not in lexical], tw, stats))
        g = self.shard, self.shards

        def out(d: dict) -> dict:
            return {global_id(i, *g): v for i, v in d.items()}

        got = {"lexical": out(lexical), "coarse": out(coarse), "exact": out(exact), "bm25": out(bm25),
               "best_dense": out(sentences.best_dense), "best_terms": out(sentences.best_terms),
               "generation": idx.generation}
        pre = req.get("prefetch")
        if pre and req.get("cfg") is not None:
            # The passages this shard would rank first on its own: nearly always those of the collection's
            # ranking that land here (what the fusing side still lacks, it fetches).
            mine = fusion(lexical, coarse, exact, bm25, sentences.best_dense, sentences.best_terms, req["cfg"],
                          req["n"], req["dense_n"], qvec is not None, among is not None)
            mine_ranked = [i for i, _ in mine[0]]
            with idx.reading():
                rows = idx.passages(mine_ranked[:pre["rows"]])
                rest = [i for i in mine_ranked[:pre["sources"]] if i not in rows]
                sources = {i: (r.article_id, r.source) for i, r in rows.items()}
                sources.update(idx.sources_of(rest))
            # The collection weighs the two sides by its own best scores, not this shard's: a passage best
            # here by one side alone can rank high there (its first by vector ranked 2nd of the collection
            # and 16th here), so the best SIDE_BEST of each side have their sentences sent too.
            sides = [i for side in mine[5:] for i in heapq.nlargest(SIDE_BEST, side, key=side.get)]
            full = list(dict.fromkeys([*mine_ranked[:pre["full"]], *sides]))
            got["full"] = _wire_full(sentences.full_many(full), *g)
            got["rows"] = _wire_rows(rows, *g)
            got["sources"] = out(sources)
        return got

    def fetch(self, req: dict) -> dict:
        """Rows, sentences (as SentenceScores.full gives them) and sources of some passages."""
        return fetch_from(self.index, self.shard, self.shards, req)

    def article(self, article_id: str) -> dict | None:
        art = self.index.article(article_id)
        if art is not None:
            for p in art["passages"]:
                p["id"] = global_id(p["id"], self.shard, self.shards)
        return art


# A reply crosses to the fusing side as plain tuples, lists and bytes: Serve pickles it (cloudpickle), which
# asks about every object that is not a plain type; 50 rows as dataclasses took 0.15 ms against 0.03 as tuples,
# the sentences' stem keys as arrays 0.31 ms against 0.03 as bytes, and the reading side pays half as much again.
ROW_FIELDS = tuple(f.name for f in dataclasses.fields(PassageRow))


def _local(gids: Sequence[int], shards: int) -> list[int]:
    return [split_id(g, shards)[1] for g in gids]


def fetch_from(idx: Index, shard: int, shards: int, req: dict) -> dict:
    """Rows, sentences and sources of some passages (global ids) of one snapshot of shard `shard`."""
    got: dict = {"rows": {}, "full": {}, "sources": {}}
    with idx.reading():
        if req.get("rows"):
            got["rows"] = _wire_rows(idx.passages(_local(req["rows"], shards)), shard, shards)
        if req.get("full"):
            mine = _local(req["full"], shards)
            sc = idx.sentences(req["qvec"], req["idf"], mine)
            got["full"] = _wire_full(sc.full_many(mine), shard, shards)
        if req.get("sources"):
            mine = _local(req["sources"], shards)
            got["sources"] = {global_id(i, shard, shards): v for i, v in idx.sources_of(mine).items()}
    return got


def _wire_rows(rows: dict[int, PassageRow], shard: int, shards: int) -> dict[int, tuple]:
    """A shard's rows by global id, each a tuple of PassageRow's fields with the global id first."""
    out = {}
    for pid, row in rows.items():
        gid = global_id(pid, shard, shards)
        out[gid] = (gid, *(getattr(row, f) for f in ROW_FIELDS[1:]))
    return out


def _rows(wire: dict[int, tuple]) -> dict[int, PassageRow]:
    return {i: PassageRow(*t) for i, t in wire.items()}


def _wire_full(full: dict[int, tuple], shard: int, shards: int) -> dict[int, tuple]:
    """A shard's `full_many` by global id, each sentence's stem keys as bytes."""
    return {global_id(pid, shard, shards): (spans, terms, dense, [np.ascontiguousarray(h, dtype=np.uint32).tobytes()
                                                                  for h in held], links, central)
            for pid, (spans, terms, dense, held, links, central) in full.items()}


def _full(wire: dict[int, tuple]) -> dict[int, tuple]:
    return {i: (spans, terms, dense, [np.frombuffer(h, dtype=np.uint32) for h in held], links, central)
            for i, (spans, terms, dense, held, links, central) in wire.items()}


# --- the fusing side ------------------------------------------------------------------------------------


class _Done:
    def __init__(self, value=None, error: BaseException | None = None):
        self.value, self.error = value, error

    def result(self):
        if self.error is not None:
            raise self.error
        return self.value


class LocalShard:
    """A shard answered in this process (tests, `qa ask` on a root, the benchmark's reference)."""

    def __init__(self, reader: ShardReader):
        self.reader = reader

    def submit(self, method: str, *args):
        try:
            return _Done(getattr(self.reader, method)(*args))
        except Exception as e:  # noqa: BLE001 - raised where the answer is read, as a remote call's would be
            return _Done(error=e)


def local_shards(root: str | os.PathLike, model: str | None = None) -> list[LocalShard]:
    meta = read_root(root)
    if meta is None:
        raise IndexCorrupt(f"{root} is not a sharded index root", code="index_missing")
    n = meta["shards"]
    return [LocalShard(ShardReader(Path(root) / f, i, n, model)) for i, f in enumerate(meta["folders"])]


class _Question(threading.local):
    stats: Collection | None = None
    generations: list[int] | None = None  # each shard's generation the statistics came from
    check: bool = True  # whether the shards check them (not on a question's last try)
    qvec = None
    idf: dict | None = None
    ranked: list[int] | None = None
    rows: dict
    full: dict
    sources: dict
    snapshots: dict  # shard -> the snapshot of its folder read here, the generation its replica answered from

    def __init__(self):
        self.reset()

    def reset(self):
        self.stats, self.generations, self.qvec, self.idf, self.ranked = None, None, None, None, None
        self.rows, self.full, self.sources, self.snapshots = {}, {}, {}, {}


class _Stale(Exception):
    """A shard serves another generation than the one the question's statistics came from."""


class _Known:
    """What the fusing side keeps of one shard generation: its counts, and its stems' document frequencies."""

    __slots__ = ("generation", "passages", "rows", "tokens", "articles", "df")

    def __init__(self, st: dict):
        self.generation, self.passages, self.rows = st["generation"], st["passages"], st["rows"]
        self.tokens, self.articles = st["tokens"], st["articles"]
        self.df: dict[str, int] = {}


class ShardedIndex:
    """What a Searcher reads of an Index, over every shard of a root: each call asks the shards."""

    def __init__(self, shards: list, names: list[str] | None = None, model: str | None = None,
                 call: Callable | None = None, freqs: list[FolderFreqs | ShardReader] | None = None,
                 readers: list[ShardReader] | None = None):
        self.shards, self.n = shards, len(shards)
        # Each shard's folder read here for the statistics (where this process can read it): a question's
        # new stems then cost a look in the folder's term tables, not a round of calls before the candidates.
        self.freqs: list[FolderFreqs | ShardReader | None] = list(freqs) if freqs else [None] * self.n
        # ... and opened here for rows, sentences and sources (`readers`): a shard then sends its candidates
        # alone, without those of its best passages (half its work and most of its reply), and no question
        # needs a `fetch` round from it.
        self.readers: list[ShardReader | None] = list(readers) if readers else [None] * self.n
        # shard -> when to read its folder here again (statistics, rows), after it failed or another generation
        # than its replicas serve was found there
        self._freqs_off: dict[int, float] = {}
        self.names = names or [f"shard-{i:03d}" for i in range(self.n)]
        self.model = model
        self._call = call  # (shard number, method, args) -> result; default: submit to every shard, then wait
        self.q = _Question()
        self.totals = {"generation": 0, "articles": 0, "passages": 0}
        self.path = None
        self._known: dict[int, _Known] = {}  # per shard: its newest generation seen, and what is known of it
        self.rounds = {"stats": 0, "candidates": 0, "fetch": 0, "stale": 0}  # rounds asked (the benchmark reads it)
        self.on_round: Callable[[str], None] = lambda kind: None  # the server counts them (/metrics)

    def counted(self, kind: str) -> None:
        """Count one round of calls of a kind: stats, candidates, fetch, or stale (a question started again)."""
        self.rounds[kind] += 1
        self.on_round(kind)

    # --- asking the shards ---

    def ask_all(self, method: str, args_of: Callable[[int], tuple] = lambda s: ()) -> list:
        """Every shard's answer to one call (sent to all at once); ShardUnavailable names a shard that failed."""
        if self._call is not None:
            return self._call(method, [args_of(s) for s in range(self.n)])
        pending = [sh.submit(method, *args_of(s)) for s, sh in enumerate(self.shards)]
        out = []
        for s, p in enumerate(pending):
            try:
                out.append(p.result())
            except QAError:
                raise
            except Exception as e:  # noqa: BLE001
                raise ShardUnavailable(f"shard {s} ({self.names[s]}) did not answer: {type(e).__name__}: {e}") from None
        return out

    def ask_some(self, method: str, by_shard: dict[int, tuple]) -> dict[int, object]:
        if not by_shard:
            return {}
        if self._call is not None:
            got = self._call(method, [by_shard.get(s) for s in range(self.n)])
            return {s: got[s] for s in by_shard}
        pending = {s: self.shards[s].submit(method, *args) for s, args in by_shard.items()}
        out = {}
        for s, p in pending.items():
            try:
                out[s] = p.result()
            except QAError:
                raise
            except Exception as e:  # noqa: BLE001
                raise ShardUnavailable(f"shard {s} ({self.names[s]}) did not answer: {type(e).__name__}: {e}") from None
        return out

    def refresh(self) -> dict:
        """The totals over every shard (generation: their sum)."""
        infos = self.ask_all("info")
        self.totals = {"generation": sum(i["generation"] for i in infos),
                       "articles": sum(i["articles"] for i in infos),
                       "passages": sum(i["passages"] for i in infos),
                       "segments": sum(i.get("segments", 0) for i in infos)}
        if self.model is None:
            self.model = infos[0]["model"]
        return self.totals

    # --- what Searcher, the API and the pages read ---

    @property
    def generation(self) -> int:
        return self.totals["generation"]

    @property
    def article_count(self) -> int:
        return self.totals["articles"]

    @property
    def passage_count(self) -> int:
        return self.totals["passages"]

    @property
    def segment_count(self) -> int:
        return self.totals.get("segments", 0)  # as of the last refresh (/readyz, /metrics)

    @property
    def manifest(self) -> dict:
        return {"model": self.model, "shards": self.n, **self.totals}

    def reading(self):
        return nullcontext()

    def article(self, article_id: str) -> dict | None:
        s = shard_of(article_id, self.n)
        return self.ask_some("article", {s: (article_id,)})[s]

    def learn(self, shard: int, st: dict) -> _Known:
        """Keep a shard's statistics (a `stats` answer): its counts per generation, its stems' frequencies."""
        known = self._known.get(shard)
        if known is None or st["generation"] > known.generation:
            known = self._known[shard] = _Known(st)
        if known.generation == st["generation"]:
            if len(known.df) + len(st["df"]) > DF_CACHE_STEMS:
                known.df = {}
            known.df.update(st["df"])
        return known

    def served(self, s: int, st: dict) -> None:
        """Keep the statistics of the generation shard s's replica serves (a `stale` answer), older or newer
        than what was known: the question asks again with them. A folder here ahead of the replica (which
        could not load it yet, or reads through a slower cache) is not read until FREQS_RETRY has passed,
        else every question would come back stale."""
        known = self._known.get(s)
        if known is not None and known.generation != st["generation"]:
            del self._known[s]
        self.learn(s, st)
        now = time.monotonic()
        if self._published_since(s, st["generation"], now):
            log.info("shard %d (%s): its replica serves generation %d, its folder here holds a newer one; asking "
                     "the replica for statistics for %d s", s, self.names[s], st["generation"], FREQS_RETRY)
            self._freqs_off[s] = now + FREQS_RETRY

    def _folder_failed(self, s: int, now: float, what: str, e: Exception) -> None:
        """Turn shard s's folder off here for FREQS_RETRY (its replicas are asked instead), warning once."""
        if s not in self._freqs_off:
            log.warning("shard %d (%s): cannot read %s here (%s: %s); asking its replicas instead, and trying the "
                        "folder again every %d s", s, self.names[s], what, type(e).__name__, e, FREQS_RETRY)
        self._freqs_off[s] = now + FREQS_RETRY

    def _readable(self, s: int, now: float) -> bool:
        return self.freqs[s] is not None and self._freqs_off.get(s, 0.0) <= now

    def _published_since(self, s: int, generation: int, now: float) -> bool:
        """Whether shard s's folder holds a newer generation than `generation` (a question asked with the
        older one's statistics would come back stale, a round of candidates lost)."""
        if not self._readable(s, now):
            return False
        try:
            return self.freqs[s].generation() > generation
        except Exception:  # noqa: BLE001 - unreadable now: reading its statistics says so, and asks the shard
            return True

    def snapshots(self, generations: Sequence[int]) -> dict[int, Index]:
        """Give each shard's snapshot open here at the generation a question's statistics came from."""
        # A replica answering `candidates` serves that generation (else it answers `stale`): these shards'
        # rows and sentences are read here, and their replicas need not send them.
        now, out = time.monotonic(), {}
        for s, reader in enumerate(self.readers):
            if reader is None or self._freqs_off.get(s, 0.0) > now:
                continue
            try:
                idx = reader.index
            except Exception as e:  # noqa: BLE001 - unreadable here now: its replicas send them, for a while
                self._folder_failed(s, now, f"rows and sentences from {reader.folder}", e)
                continue
            self._freqs_off.pop(s, None)
            if idx.generation == generations[s]:
                out[s] = idx
        return out

    def _fetch(self, by: dict[int, dict]) -> list[dict]:
        """`fetch` of each shard's request: from its snapshot read here where there is one, else one round."""
        snaps = self.q.snapshots
        got = [fetch_from(snaps[s], s, self.n, req) for s, req in by.items() if s in snaps]
        remote = {s: (req,) for s, req in by.items() if s not in snaps}
        if remote:
            self.counted("fetch")
            got += list(self.ask_some("fetch", remote).values())
        return got

    def doc_freqs(self, terms: Sequence[str]) -> tuple[dict[str, int], int]:
        """The collection's document frequencies, passage count and average length: from what is known
        of each shard's generation, asking (round 1) only shards that have not been asked for a stem."""
        stems = list(dict.fromkeys(terms))
        per: dict[int, tuple[int, int, int, int, int, dict[str, int]]] = {}
        ask: dict[int, tuple] = {}
        now = time.monotonic()
        for s in range(self.n):
            known = self._known.get(s)
            try:
                if known is None or self._published_since(s, known.generation, now):
                    raise KeyError
                df = known.df
                per[s] = (known.generation, known.passages, known.rows, known.tokens, known.articles,
                          {t: df[t] for t in stems})
            except KeyError:
                ask[s] = (stems,)
        for s in [s for s in ask if self._readable(s, now)]:
            try:
                st = self.freqs[s].stats(stems)
            except Exception as e:  # noqa: BLE001 - any failure to read the folder: ask the shard for a while
                self._folder_failed(s, now, f"its statistics from {self.freqs[s].folder}", e)
                continue
            if self._freqs_off.pop(s, None) is not None:
                log.info("shard %d (%s): reading its statistics from %s again", s, self.names[s], self.freqs[s].folder)
            known = self._known.get(s)
            if known is not None and st["generation"] < known.generation:
                self._freqs_off[s] = now + FREQS_RETRY  # the folder here is older than its replicas' (a copy): ask them
                continue
            self.learn(s, st)
            per[s] = (st["generation"], st["passages"], st["rows"], st["tokens"], st["articles"], st["df"])
            del ask[s]
        if ask:
            self.counted("stats")
            for s, st in self.ask_some("stats", ask).items():
                self.learn(s, st)
                per[s] = (st["generation"], st["passages"], st["rows"], st["tokens"], st["articles"], st["df"])
        got = [per[s] for s in range(self.n)]
        df: dict[str, int] = {}
        for g in got:
            for t, c in g[5].items():
                if c:
                    df[t] = df.get(t, 0) + c
        n = sum(g[1] for g in got)
        rows, tokens = sum(g[2] for g in got), sum(g[3] for g in got)
        self.q.stats = Collection(df, n, tokens / rows if rows else 1.0)
        self.q.generations = [g[0] for g in got]
        self.totals.update(generation=sum(g[0] for g in got), articles=sum(g[4] for g in got), passages=n)
        return df, n

    def lexical(self, *args, **kw) -> dict[int, float]:
        return {}  # the sharded searcher's _rank gathers both sides in one round

    lexical_of = lexical

    def _prefetch(self, want_rows: Sequence[int] = (), want_sources: Sequence[int] = ()) -> None:
        """Round 3: rows, sentences and sources of the best fused passages (and of any asked for), at once."""
        q = self.q
        ranked = q.ranked or []
        # The best fused passages' rows come along in the same round; from a folder read here, only those asked
        # for (the sentences of the best few, which the answer and the marks read, all the same).
        wanted = set(want_rows)
        rows = [i for i in dict.fromkeys([*want_rows, *ranked[:PREFETCH_ROWS]])
                if i not in q.rows and (i in wanted or split_id(i, self.n)[0] not in q.snapshots)]
        full = [i for i in ranked[:PREFETCH_SENTENCES] if i not in q.full] if q.qvec is not None or q.idf else []
        sources = [i for i in want_sources if i not in q.sources]
        by: dict[int, dict] = {}
        for kind, ids in (("rows", rows), ("full", full), ("sources", sources)):
            for i in ids:
                by.setdefault(split_id(i, self.n)[0], {"rows": [], "full": [], "sources": [], "qvec": q.qvec,
                                                        "idf": q.idf or {}})[kind].append(i)
        for got in self._fetch(by):
            q.rows.update(_rows(got["rows"]))
            q.full.update(_full(got["full"]))
            q.sources.update(got["sources"])
        for i in rows:  # asked for and not there (deleted meanwhile): not asked again
            q.rows.setdefault(i, None)

    def passages(self, ids: Sequence[int]) -> dict:
        if any(i not in self.q.rows for i in ids):
            self._prefetch(want_rows=ids)
        return {i: self.q.rows[i] for i in ids if self.q.rows.get(i) is not None}

    def sources_of(self, ids: Sequence[int]) -> dict:
        if any(i not in self.q.sources for i in ids):
            self._prefetch(want_sources=ids)
        return {i: self.q.sources[i] for i in ids if i in self.q.sources}

    def sentences(self, q: np.ndarray | None, weights: dict[str, float], pids: Sequence[int]) -> _Sentences:
        return _Sentences(self, q, weights, {}, {}, set(pids))

    def full(self, pid: int, qvec, idf) -> tuple:
        q = self.q
        if pid not in q.full:  # this one, and those of the best rows still lacking theirs, in one round
            # (read here, a passage costs no round: from such a shard, only the one asked for)
            ids = [pid, *(i for i in (q.ranked or [])[:PREFETCH_ROWS] if i not in q.full and i != pid
                          and split_id(i, self.n)[0] not in q.snapshots)]
            by: dict[int, dict] = {}
            for i in ids:
                by.setdefault(split_id(i, self.n)[0], {"full": [], "qvec": qvec, "idf": idf})["full"].append(i)
            for got in self._fetch(by):
                q.full.update(_full(got["full"]))
            for i in ids:
                q.full.setdefault(i, None)
        return q.full.get(pid) or ([], [], [], [], [], [])


class _Sentences(SentenceScores):
    """The candidates' sentence scores as the shards gave them; a passage's sentences fetched on demand."""

    def __init__(self, index: ShardedIndex, qv, weights, best_dense, best_terms, where):
        super().__init__()
        self.index, self.qv, self.weights = index, qv, weights
        self.best_dense, self.best_terms, self.where = best_dense, best_terms, where

    def full(self, pid: int):
        return self.index.full(pid, self.qv, self.weights)

    def full_many(self, pids) -> dict[int, tuple]:
        """`full` of each of `pids` (a passage no shard knows gets empty lists, as from `full`)."""
        return {pid: self.full(pid) for pid in pids}


class ShardedSearcher(Searcher):
    """Searcher over a ShardedIndex: the candidates come from every shard in one round, then everything
    after them (fusion, collapsing, the answer, facets) is Searcher's own code."""

    index: ShardedIndex

    def ask(self, q: str, k: int = 5, where: Where | None = None, sort: str = "relevance", with_answer: bool = True,
            **kw):
        for attempt in range(STALE_TRIES + 1):
            self.index.q.reset()
            self.index.q.check = attempt < STALE_TRIES  # the last try takes the shards' statistics as they come
            try:
                return super().ask(q, k, where, sort, with_answer, **kw)
            except _Stale:
                continue
            finally:
                self.index.q.reset()
        raise AssertionError("unreachable: the last try does not check generations")

    def _rank(self, qvec, stems: list[str], idf: dict[str, float], lexical: dict[int, float], n: int,
              where: Where | None, among: list[int] | None = None):
        cfg, index, q = self.cfg, self.index, self.index.q
        if q.stats is None:
            index.doc_freqs(stems)
        stats = q.stats
        dense_n = max(n, cfg.dense_candidates)
        req = {"stems": stems, "qvec": qvec, "title_weight": cfg.title_weight, "where": where, "n": n,
               "dense_n": dense_n, "idf": idf, "lexical": cfg.lexical_weight > 0,
               "df": stats.doc_freqs, "passages": stats.passages, "avgdl": stats.avgdl,
               "generations": q.generations if q.check else None, "among": among, "cfg": cfg,
               "prefetch": {"rows": _share(PREFETCH_ROWS, index.n), "full": _share(PREFETCH_SENTENCES, index.n),
                            "sources": _share(max(n, cfg.candidates), index.n)}}
        snaps = index.snapshots(q.generations)
        bare = {**req, "prefetch": None}  # a shard whose folder is read here sends its candidates alone
        index.counted("candidates")
        got = index.ask_all("candidates", lambda s: (bare if s in snaps else req,))
        stale = [(s, g["stale"]) for s, g in enumerate(got) if "stale" in g]
        if stale:  # a shard published since its statistics were kept: the question starts again
            index.counted("stale")
            for s, st in stale:
                index.served(s, st)
            raise _Stale()
        # On a question's last try a replica may answer from another generation than the one read here: its
        # passages are then fetched from it. The facets' second ranking keeps the first's snapshots.
        for s, idx in snaps.items():
            if got[s]["generation"] == idx.generation:
                q.snapshots.setdefault(s, idx)
        merged = [{} for _ in range(6)]
        for g in got:
            for d, key in zip(merged, ("lexical", "coarse", "exact", "bm25", "best_dense", "best_terms")):
                d.update(g[key])
            q.rows.update(_rows(g.get("rows", {})))
            q.full.update(_full(g.get("full", {})))
            q.sources.update(g.get("sources", {}))
        ranked, whole, candidates, best_dense, best_terms, _, _ = fusion(*merged, cfg, n, dense_n, qvec is not None,
                                                                         among is not None)
        sentences = _Sentences(index, qvec, idf, best_dense, best_terms, set(candidates))
        if q.ranked is None:  # the question's own ranking (a second one only counts facets)
            q.ranked, q.qvec, q.idf = [i for i, _ in ranked], qvec, idf
        return ranked, whole, sentences


def fusion(lexical: dict[int, float], coarse: dict[int, float], exact: dict[int, float], bm25: dict[int, float],
           best_dense: dict[int, float], best_terms: dict[int, float], cfg, n: int, dense_n: int, has_qvec: bool,
           among: bool = False):
    """Fuse candidates as one folder's Searcher._rank does: the n best by BM25; the best n + n/4 by int8
    score, of which the dense_n best exactly (`among`: every one given); each scored by its best sentence.
    (ranked, whole passages' cosines, candidates, their best sentences by cosine and by stems, each side's
    scores: BM25 and dense)."""
    lexical = _top(lexical, n) if not among else dict(lexical)
    dense: dict[int, float] = {}
    whole: dict[int, float] = {}
    if has_qvec:
        if among:
            whole = dict(exact)
        else:
            near = _top(coarse, dense_n + dense_n // 4)
            whole = dict(sorted(((i, exact[i]) for i in near if i in exact), key=lambda kv: -kv[1])[:dense_n])
        candidates = list(dict.fromkeys([*whole, *lexical]))
        whole.update((i, exact[i]) for i in candidates if i not in whole and i in exact)
        sw = cfg.sentence_weight
        for i in candidates:
            best = best_dense.get(i)
            if i in whole:
                dense[i] = whole[i] if best is None else (1 - sw) * whole[i] + sw * best
        if cfg.lexical_weight > 0:
            lexical.update((i, bm25[i]) for i in candidates if i not in lexical and i in bm25)
    else:
        candidates = list(lexical)
    best_dense = {i: best_dense[i] for i in candidates if i in best_dense}
    best_terms = {i: best_terms[i] for i in candidates if i in best_terms}
    best_sentence = None
    if cfg.lexical_weight > 0 and cfg.lexical_sentence_weight > 0:
        best_sentence = best_terms
    return fuse(lexical, dense, cfg, best_sentence), whole, candidates, best_dense, best_terms, lexical, dense


def _share(best: int, shards: int) -> int:
    """How many of its own best passages a shard sends rows (sentences, sources) of with its candidates, for
    the `best` of the fused ranking: with 2 shards 1.25 x best (the local order is not the collection's:
    the rows the fused 40 read were among each shard's own best 44 over 120 questions, their sentences
    among its 28), fewer as the best spread over more shards, never under a quarter."""
    return min(best + best // 4, max(-(-best // 4), -(-3 * best // shards)))


def _top(scores: dict[int, float], n: int) -> dict[int, float]:
    if len(scores) <= n:
        return dict(scores)
    ids = np.fromiter(scores, dtype=np.int64, count=len(scores))
    vals = np.fromiter(scores.values(), dtype=np.float64, count=len(scores))
    best = np.argpartition(-vals, n - 1)[:n]
    return dict(zip(ids[best].tolist(), vals[best].tolist()))
