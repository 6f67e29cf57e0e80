import hashlib
import os
import re
import shutil
import signal
import subprocess
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest

from qa.web import create_app

ROOT = Path(__file__).resolve().parent.parent
SEEDS = ROOT / "seeds"
SQUAD_DEV = ROOT.parent / "shared" / "eval" / "squad-dev.json"
_TOKEN = re.compile(r"\w+|[^\w\s]")


class FakeEmbedder:
    """A deterministic bag-of-words embedder: fast, and similar texts get similar vectors."""

    name = "fake"
    dim = 64
    max_tokens = 256

    def count_tokens(self, texts):
        return [len(_TOKEN.findall(t)) + 2 for t in texts]

    def encode(self, texts, batch_size=32):
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for row, text in enumerate(texts):
            for word in re.findall(r"\w+", text.lower()):
                h = int.from_bytes(hashlib.blake2b(word.encode(), digest_size=8).digest(), "little")
                out[row, h % self.dim] += 1.0 if (h >> 32) & 1 else -1.0
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        norms[norms == 0] = 1.0
        return out / norms


@pytest.fixture(scope="session")
def fake_embedder():
    return FakeEmbedder()


@pytest.fixture(scope="session")
def seeded_index(tmp_path_factory, fake_embedder):
    """An index folder built from the real seeds with the fake embedder."""
    from qa.web.service import Service

    path = tmp_path_factory.mktemp("index")
    svc = Service(path, "fake", embedder=fake_embedder)
    report = svc.ingest([SEEDS])
    assert report.added == 2 and not report.failures
    return path


@pytest.fixture
def app(tmp_path, seeded_index, fake_embedder):
    index = tmp_path / "index"
    shutil.copytree(seeded_index, index)
    return create_app({"TESTING": True, "INDEX_DIR": str(index), "MODEL": "fake", "EMBEDDER": fake_embedder,
                       "SEEDS_DIR": str(SEEDS)})


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def runner(app):
    return Runner(app)


class Runner:
    """Invoke the `qa` command in-process against the test app."""

    def __init__(self, app):
        from click.testing import CliRunner

        self.app, self.cli = app, CliRunner()

    def invoke(self, args, **kw):
        from qa.cli import cli

        return self.cli.invoke(cli, args, obj={"app": self.app}, catch_exceptions=False, **kw)


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, proc: subprocess.Popen, timeout: float = 180) -> None:
    """Until something listens on 127.0.0.1:port (a head node's GCS)."""
    import socket

    deadline = time.monotonic() + timeout
    while True:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        assert proc.poll() is None and time.monotonic() < deadline, "the head node never started"
        time.sleep(0.2)


def session_pids(sid: int) -> list[int]:
    """The processes of a session (a node started with start_new_session: its raylet, GCS, and the workers,
    which Ray puts in process groups of their own)."""
    out = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/stat") as f:
                if int(f.read().rsplit(")", 1)[1].split()[3]) == sid:
                    out.append(int(pid))
        except (OSError, ValueError, IndexError):
            pass
    return out


def kill_session(sid: int) -> None:
    """SIGKILL every process of a session."""
    for pid in session_pids(sid):
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass


@contextmanager
def qa_server(index: Path, env: dict | None = None, probe=None, timeout: float = 300):
    """Run a real `qa serve` on a free port for the block; yield (port, log file) once it is ready.

    `probe(port)` decides readiness (default: /readyz answers 200); it may record what it sees.
    """
    import http.client
    import os
    import signal
    import subprocess
    import sys
    import time

    def readyz(port: int) -> bool:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        try:
            conn.request("GET", "/readyz")
            return conn.getresponse().status == 200
        finally:
            conn.close()

    port = free_port()
    log = open(Path(index).parent / f"serve-{port}.log", "w+")
    proc = subprocess.Popen([sys.executable, "-m", "qa", "serve", "--index", str(index), "--port", str(port)],
                            cwd=ROOT, env={**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})},
                            stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                log.seek(0)
                pytest.fail(f"qa serve exited with {proc.returncode}:\n{log.read()}")
            try:
                if (probe or readyz)(port):
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"qa serve did not become ready in {timeout:.0f} s")
            time.sleep(0.1)
        yield port, log
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
