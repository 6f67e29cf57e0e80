"""The image (#31): bench/container.sh builds it with podman, starts it, waits for /readyz and asks a question.

It takes minutes (ten on two cores from nothing) and needs root with podman, runc and mmdebstrap (or a
registry for BASE), so it runs only when asked: QA_CONTAINER_TESTS=1 python -m pytest tests/test_container.py
"""

import os
import re
import shutil
import subprocess

import pytest

from .conftest import ROOT

pytestmark = pytest.mark.slow


def _why_not() -> str | None:
    if os.environ.get("QA_CONTAINER_TESTS") != "1":
        return "builds an image for minutes: set QA_CONTAINER_TESTS=1 to run it"
    missing = [t for t in ("podman", "runc") if shutil.which(t) is None]
    if not os.environ.get("BASE") and shutil.which("mmdebstrap") is None:
        missing.append("mmdebstrap (or BASE=an image with Python 3.11)")
    if missing:
        return f"needs {', '.join(missing)}: apt-get install podman runc mmdebstrap"
    if os.geteuid() != 0:
        return "needs root (podman with runc and cgroupfs, as bench/container.sh sets it up)"
    return None


@pytest.mark.skipif(_why_not() is not None, reason=_why_not() or "")
def test_the_image_builds_starts_and_answers():
    run = subprocess.run(["bash", str(ROOT / "bench" / "container.sh")], cwd=ROOT, capture_output=True, text=True,
                         timeout=3600)
    out = run.stdout + run.stderr
    assert run.returncode == 0, out[-4000:]
    assert re.search(r'/readyz: \{"status": "ready", "generation": \d+, "articles": 2, "passages": \d+', out), out
    assert "A: HTS leader Abu Mohammed al-Golani" in out, out  # the answer, from the seeds, in the container
    assert "HEALTHCHECK: healthy" in out and "runs as qa" in out, out
    summary = re.search(r"image ([\d.]+) GB .* build (\d+) s; first start to ready ([\d.]+) s", out)
    assert summary, out
    print("\n" + out[out.index("== summary"):])
