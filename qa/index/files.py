"""Plain files of an index folder: atomic writes, and arrays in one memory-mapped file.

A segment's arrays live in one file: a line of magic, a JSON header giving each
array's dtype, shape and offset, then the raw arrays, each 64-byte aligned. A
reader maps the file once and takes views, so every process that opens a
segment shares one copy in the page cache, and nothing is unpickled.
"""

from __future__ import annotations

import json
import mmap
import os
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

MAGIC = b"QAARRAYS1\n"
ALIGN = 64
# A written file bigger than this (a merge's output) leaves the OS page cache once on disk: readers
# take a few rows of it per question, and a cached page is one the kernel maps into every reader
# that touches its neighbours (64 KB around each fault), so a server's memory would fill with rows
# no question read.
UNCACHE_ABOVE = 64 << 20


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def tmp_name(path: Path) -> Path:
    return path.with_name(f".{path.name}.{os.getpid()}.tmp")


@contextmanager
def removed_on_failure(*paths: Path) -> Iterator[None]:
    """Remove the given files if the block fails: a half-written file would hold its space (a full
    disk stays full) until the next writer opens the folder."""
    try:
        yield
    except BaseException:
        for p in paths:
            p.unlink(missing_ok=True)
        raise


def write_atomic(path: Path, data: bytes) -> None:
    """Write a file so that it is either the old or the new one, even after a crash."""
    tmp = tmp_name(path)
    with removed_on_failure(tmp):
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    fsync_dir(path.parent)


def write_arrays(path: Path, arrays: dict[str, np.ndarray], meta: dict) -> int:
    """Write named arrays and a small JSON `meta` to one file, atomically; return its size."""
    layout, offset = {}, 0
    for name, a in arrays.items():
        a = np.ascontiguousarray(a)
        arrays[name] = a
        layout[name] = {"dtype": a.dtype.str, "shape": list(a.shape), "offset": offset}
        offset += -(-a.nbytes // ALIGN) * ALIGN
    header = json.dumps({"meta": meta, "arrays": layout}).encode()
    start = -(-(len(MAGIC) + 8 + len(header)) // ALIGN) * ALIGN
    tmp = tmp_name(path)
    with removed_on_failure(tmp):
        with open(tmp, "wb") as f:
            f.write(MAGIC + len(header).to_bytes(8, "little") + header)
            for name, a in arrays.items():
                f.seek(start + layout[name]["offset"])
                f.write(a.tobytes())
            f.truncate(start + offset)
            f.flush()
            os.fsync(f.fileno())
            if start + offset > UNCACHE_ABOVE and hasattr(os, "posix_fadvise"):
                os.posix_fadvise(f.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)
        os.replace(tmp, path)
    return start + offset


def read_header(path: Path) -> tuple[dict, int]:
    """A file's header (meta and where each array lies) and where its arrays start."""
    with open(path, "rb") as f:
        head = f.read(len(MAGIC) + 8)
        if head[:len(MAGIC)] != MAGIC:
            raise ValueError(f"{path.name} is not an index array file")
        hlen = int.from_bytes(head[len(MAGIC):], "little")
        header = json.loads(f.read(hlen))
    return header, -(-(len(MAGIC) + 8 + hlen) // ALIGN) * ALIGN


class FileRows:
    """Rows of one array in a file written by write_arrays, read with pread rather than through a mapping.

    For an array read a few rows at a time all over: the kernel maps the cached
    pages around every page a mapped read touches (64 KB, whatever madvise says),
    so once the file is in the page cache a server would map all of it within a
    few hundred questions. Read rows land in the page cache, shared as before,
    but in no process's memory.
    """

    def __init__(self, path: Path, name: str):
        header, start = read_header(path)
        spec = header["arrays"][name]
        self.dtype, self.shape = np.dtype(spec["dtype"]), tuple(spec["shape"])
        self.row = int(np.prod(self.shape[1:], dtype=np.int64)) * self.dtype.itemsize
        self.at = start + spec["offset"]
        self.fd = os.open(path, os.O_RDONLY)
        self._finalizer = weakref.finalize(self, os.close, self.fd)

    def take(self, rows: np.ndarray) -> np.ndarray:
        """The given rows, one read per run of consecutive rows."""
        rows = np.asarray(rows, dtype=np.int64)
        out = np.empty((len(rows), *self.shape[1:]), self.dtype)
        if not len(rows):
            return out
        breaks = np.flatnonzero(np.diff(rows) != 1) + 1
        starts = np.concatenate([[0], breaks]).tolist()
        ends = np.concatenate([breaks, [len(rows)]]).tolist()
        buf = memoryview(out.reshape(-1).view(np.uint8))
        for a, b, first in zip(starts, ends, rows[starts].tolist()):
            want = (b - a) * self.row
            if os.preadv(self.fd, [buf[a * self.row:b * self.row]], self.at + first * self.row) != want:
                raise ValueError("an index array file ended early")
        return out


def read_arrays(path: Path, scattered: tuple[str, ...] = ()) -> tuple[dict, dict[str, np.ndarray]]:
    """Map a file written by write_arrays: its meta and read-only views of its arrays.

    `scattered` names arrays read a few rows at a time: the kernel is told not to
    read ahead around them, or each row read brings its neighbours into the page
    cache, and the kernel then maps those too (64 KB around each fault), so a
    server's memory would fill with vectors no question used.
    """
    header, start = read_header(path)
    size = path.stat().st_size
    # Plain ndarray views (they keep the map alive): numpy's memmap subclass costs microseconds per slice.
    mapped = None
    if size:
        with open(path, "rb") as f:
            mapped = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    whole = np.frombuffer(mapped, dtype=np.uint8) if mapped is not None else np.zeros(0, np.uint8)
    arrays = {}
    for name, spec in header["arrays"].items():
        dtype, shape = np.dtype(spec["dtype"]), tuple(spec["shape"])
        n = int(np.prod(shape)) * dtype.itemsize
        at = start + spec["offset"]
        if at + n > size:
            raise ValueError(f"{path.name} is truncated (array {name} ends past the file)")
        arrays[name] = whole[at:at + n].view(dtype).reshape(shape)
        if name in scattered and n >= mmap.PAGESIZE and hasattr(mmap, "MADV_RANDOM"):
            lo = -(-at // mmap.PAGESIZE) * mmap.PAGESIZE
            mapped.madvise(mmap.MADV_RANDOM, lo, max(0, at + n - lo) // mmap.PAGESIZE * mmap.PAGESIZE)
    return header["meta"], arrays
