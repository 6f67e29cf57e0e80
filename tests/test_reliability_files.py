"""Bad input files: each gets a one-line reason, the rest is ingested, memory stays bounded."""

import json
import os
import tracemalloc

import pytest

from qa.ingest.articles import Article, Failure, discover, read_file
from qa.web.service import Service

BODY = "The harbour of Kelvik reopened on Tuesday after the storm, the mayor said."
CAFE = "Le café de la gare a fermé ses portes après quarante ans, ont annoncé les propriétaires lundi."


def html(charset_label: str, title: str, body: str) -> str:
    return (f'<html><head><meta charset="{charset_label}"><title>{title}</title></head><body>'
            f"<article><h1>{title}</h1><p>{body}</p><p>{body.replace('.', ' again.')}</p></article></body></html>")


@pytest.fixture
def folder(tmp_path, monkeypatch):
    monkeypatch.setenv("QA_MAX_FILE_BYTES", "20000")
    d = tmp_path / "in"
    d.mkdir()
    (d / "good.txt").write_text(f"Harbour reopens\n{BODY}")
    (d / "binary.txt").write_bytes(bytes(range(1, 32)) * 40 + b"\x80\x81\x82" * 50)
    (d / "nul.md").write_bytes(b"# Title\n\nSome text\x00with a NUL byte.")
    (d / "legacy.txt").write_bytes(f"Cafe closes\n{CAFE}".encode("cp1252"))  # not UTF-8: detected as cp1252
    (d / "label-latin1-is-utf8.html").write_bytes(html("iso-8859-1", "Café ferme", CAFE).encode("utf-8"))
    (d / "label-utf8-is-latin1.html").write_bytes(html("utf-8", "Café fermé", CAFE + " Fin.").encode("latin-1"))
    (d / "bom.txt").write_bytes(b"\xef\xbb\xbf" + f"BOM headline\n{BODY} BOM.".encode())
    (d / "bom16.txt").write_bytes(f"UTF-16 headline\n{BODY} Sixteen.".encode("utf-16"))
    (d / "bad-bom.txt").write_bytes(b"\xef\xbb\xbfok then \xff\xfe broken")
    (d / "empty.txt").write_bytes(b"")
    (d / "blank.md").write_text("   \n\n\t\n")
    (d / "malformed.html").write_text(f"<html><body><div><p>{BODY}<p>{BODY} Unclosed <b>bold <i>tags</div></span>")
    (d / "no-text.html").write_text("<html><head><title>Empty</title></head><body><nav>Menu</nav></body></html>")
    (d / "huge.txt").write_text("Huge headline\n" + "word " * 5000)  # 25 kB > 20 kB cap
    lines = [
        json.dumps({"title": "Line one", "text": f"{BODY} One."}),
        "{not json",
        json.dumps({"title": "No text"}),
        json.dumps({"title": "Too long", "text": "x" * 30000}),  # a line over the cap
        json.dumps({"title": "Surrogate \ud800", "text": f"{BODY} Lone \udc00 surrogate."}),
        "\xff\xfe garbage",
        json.dumps(["a list"]),
        json.dumps({"title": "Line eight", "text": f"{BODY} Eight.", "id": "line-eight"}),
    ]
    (d / "feed.jsonl").write_bytes("\n".join(lines).encode("utf-8", "surrogateescape").replace(b"\xc3\xbf\xc3\xbe", b"\xff\xfe"))
    (d / "bom.jsonl").write_bytes(b"\xef\xbb\xbf" + json.dumps({"title": "BOM line", "text": f"{BODY} Bom line."}).encode())
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("Secret\nThis must never be ingested because it lives outside.")
    (d / "link.txt").symlink_to(outside / "secret.txt")
    (d / "linkdir").symlink_to(outside, target_is_directory=True)
    os.mkfifo(d / "fifo.txt")  # would block a naive reader forever
    return d


def test_bad_files_get_one_line_reasons_and_the_rest_is_ingested(folder, tmp_path, fake_embedder):
    svc = Service(tmp_path / "index", "fake", embedder=fake_embedder)
    report = svc.ingest([folder])
    reasons = {f.origin.removeprefix(str(folder) + "/"): f.reason for f in report.failures}
    for origin, reason in reasons.items():
        assert reason and "\n" not in reason and len(reason) < 300, (origin, reason)
    assert "binary" in reasons["binary.txt"] or "not text" in reasons["binary.txt"]
    assert "NUL" in reasons["nul.md"]
    assert "invalid utf-8 after byte-order mark" in reasons["bad-bom.txt"]
    assert "empty file" in reasons["empty.txt"] and "empty file" in reasons["blank.md"]
    assert reasons["no-text.html"].startswith("no article text")
    assert "file too large" in reasons["huge.txt"] and "QA_MAX_FILE_BYTES" in reasons["huge.txt"]
    assert "not valid JSON" in reasons["feed.jsonl:2"]
    assert '"text"' in reasons["feed.jsonl:3"]
    assert "line too large" in reasons["feed.jsonl:4"]
    assert "feed.jsonl:6" in reasons and "feed.jsonl:7" in reasons
    assert "outside" in reasons["link.txt"] and "outside" in reasons["linkdir"]
    assert "not a regular file" in reasons["fifo.txt"]
    assert len(reasons) == 15, sorted(reasons.items())

    idx = svc.searcher().index
    titles = {r[0]: r[1] for r in idx.db.execute("SELECT title, text FROM articles")}
    assert titles.keys() >= {"Harbour reopens", "Cafe closes", "Café ferme", "Café fermé", "BOM headline",
                             "UTF-16 headline", "Line one", "Surrogate \ufffd", "Line eight", "BOM line"}
    assert len(titles) == 11  # and the malformed HTML page
    assert titles["Cafe closes"] == CAFE  # decoded right, not mojibake
    assert CAFE in titles["Café ferme"] and CAFE in titles["Café fermé"]
    assert "\ufeff" not in "".join(titles) + "".join(titles.values())
    assert "Secret" not in titles and report.added == len(titles)
    assert any(BODY in text and "Unclosed" in text for text in titles.values())  # malformed HTML still read


def test_a_huge_jsonl_line_is_skipped_without_reading_it_into_memory(tmp_path, monkeypatch):
    monkeypatch.setenv("QA_MAX_FILE_BYTES", str(64 * 1024))
    path = tmp_path / "big.jsonl"
    with path.open("wb") as f:
        f.write(json.dumps({"title": "First", "text": BODY}).encode() + b"\n")
        f.write(b'{"title": "Huge", "text": "' + b"y" * (20 * 1024 * 1024) + b'"}\n')
        f.write(json.dumps({"title": "Last", "text": BODY + " Last."}).encode() + b"\n")
    tracemalloc.start()
    try:
        items = list(read_file(path))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert [type(x) for x in items] == [Article, Failure, Article]
    assert "line too large (20,971,5" in items[1].reason
    assert peak < 4 * 1024 * 1024, peak  # a 20 MiB line never sat in memory


def test_a_file_over_the_cap_is_refused_before_it_is_read(tmp_path, monkeypatch):
    monkeypatch.setenv("QA_MAX_FILE_BYTES", "1000")
    path = tmp_path / "big.txt"
    path.write_text("Title\n" + "z" * 5000)
    [failure] = list(read_file(path))
    assert isinstance(failure, Failure) and "file too large (5,006 bytes; the limit is 1,000" in failure.reason


def test_symlinks_inside_the_folder_are_fine(tmp_path):
    d = tmp_path / "in"
    (d / "sub").mkdir(parents=True)
    (d / "sub" / "a.txt").write_text(f"Title\n{BODY}")
    (d / "alias.txt").symlink_to(d / "sub" / "a.txt")
    found = [p for p in discover([d]) if not isinstance(p, Failure)]
    assert sorted(p.name for p in found) == ["a.txt", "alias.txt"]
