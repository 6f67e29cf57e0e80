import json

import pytest

from qa.errors import IngestError
from qa.ingest.articles import Article, Failure, _strip_markdown, canonical_url, clean_text, decode, discover, read_file

from .conftest import SEEDS

CHROME = [
    "Skip to content", "Subscribe", "indicates required", "Enter your email", "Successfuly subscribed",
    "Thank you for signing up", "This audio is created with AI assistance", "News Feed", "MORE NEWS",
    "Editors' Picks", "Explaining Ukraine with Kate Tsurkan", "5:04 PM", "really quit",
    "How will Russia’s war end?", "Getty Images",
]


def read_one(path):
    items = list(read_file(path))
    assert len(items) == 1, items
    return items[0]


def test_seed_chrome_is_stripped():
    art = read_one(SEEDS / "000_19a6f400316db695.txt")
    assert isinstance(art, Article)
    for junk in CHROME:
        assert junk.lower() not in art.text.lower(), junk
    assert art.text.startswith("Editor's note: This is a developing story")
    assert art.text.endswith("Human rights groups have documented numerous war crimes committed by Russian forces in Syria.")
    assert "boarded a plane out of Damascus on Dec. 8" in art.text


def test_seed_metadata_comes_from_sidecar():
    art = read_one(SEEDS / "004_fc6aece6c7f21e80.txt")
    assert art.id == "assad-lands-in-russia"
    assert art.published == "2024-12-08"
    assert art.url is None
    assert "has fled the country to his allies in Moscow" in art.text


def test_clean_text_keeps_prose_and_paragraphs():
    text = clean_text("First paragraph here.\r\n\r\nSecond one, with words.\n")
    assert text == "First paragraph here.\n\nSecond one, with words."


def test_derived_id_is_stable():
    a = Article(title="Big News: Today!", text="Body text.")
    b = Article(title="Big News: Today!", text="Body text.")
    assert a.ensure_id() == b.ensure_id()
    assert a.id.startswith("big-news-today-")


@pytest.mark.parametrize("data, expected", [
    (b"\xef\xbb\xbfhello", "hello"),
    ("caf\u00e9".encode("utf-16"), "caf\u00e9"),
    ("na\u00efve caf\u00e9 r\u00e9sum\u00e9 d\u00e9j\u00e0 vu, tr\u00e8s \u00e9l\u00e9gant".encode("latin-1"),
     "na\u00efve caf\u00e9 r\u00e9sum\u00e9 d\u00e9j\u00e0 vu, tr\u00e8s \u00e9l\u00e9gant"),
])
def test_decode(data, expected):
    assert decode(data) == expected


def test_decode_refuses_binary():
    with pytest.raises(IngestError, match="binary"):
        decode(b"\x89PNG\r\n\x1a\n\x00\x00\x00")


def test_bad_files_get_one_line_reasons(tmp_path):
    (tmp_path / "good.txt").write_text("A headline\nThe body of a good article is here.")
    (tmp_path / "empty.txt").write_bytes(b"")
    (tmp_path / "nul.txt").write_bytes(b"abc\x00def")
    (tmp_path / "lines.jsonl").write_text(
        json.dumps({"title": "T1", "text": "Text one."}) + "\n"
        + "{not json\n"
        + json.dumps({"title": "T3"}) + "\n"
        + json.dumps({"title": "T4", "text": "Text four.", "id": "bad id!"}) + "\n"
        + json.dumps({"title": "T5", "text": "Text five.", "published": "yesterday"}) + "\n"
    )
    items = [x for p in discover([tmp_path]) for x in (read_file(p) if not isinstance(p, Failure) else [p])]
    good = [x for x in items if isinstance(x, Article)]
    bad = {x.origin.rsplit("/", 1)[-1]: x.reason for x in items if isinstance(x, Failure)}
    assert sorted(a.title for a in good) == ["A headline", "T1"]
    assert "empty" in bad["empty.txt"]
    assert "NUL" in bad["nul.txt"]
    assert "not valid JSON" in bad["lines.jsonl:2"]
    assert '"text"' in bad["lines.jsonl:3"]
    assert "URL-safe" in bad["lines.jsonl:4"]
    assert "ISO 8601" in bad["lines.jsonl:5"]
    assert all("\n" not in r for r in bad.values())


def test_symlink_out_of_folder_is_refused(tmp_path):
    outside = tmp_path / "outside.txt"
    outside.write_text("secret text that must not be ingested.")
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "link.txt").symlink_to(outside)
    items = list(discover([folder]))
    assert len(items) == 1 and isinstance(items[0], Failure)
    assert "outside" in items[0].reason


def test_html_main_text_and_metadata(tmp_path):
    page = tmp_path / "page.html"
    page.write_text(
        "<html><head><title>Site | Story</title><link rel='canonical' href='https://news.example/story'>"
        "<meta property='article:published_time' content='2024-12-08T10:00:00Z'></head><body>"
        "<nav>Home News Sport Subscribe</nav><article><h1>Rebels enter the capital</h1>"
        "<p>Rebel forces entered the capital in the early hours of Sunday, witnesses said.</p>"
        "<p>The president left the country on a plane, two officers said on Sunday.</p></article>"
        "<footer>Copyright 2024 Example News. All rights reserved.</footer></body></html>"
    )
    art = read_one(page)
    assert art.title == "Rebels enter the capital"
    assert art.url == "https://news.example/story"
    assert art.published.startswith("2024-12-08")
    assert "Rebel forces entered the capital" in art.text
    assert "Home News Sport" not in art.text and "All rights reserved" not in art.text


def test_markdown_title_and_text(tmp_path):
    md = tmp_path / "story.md"
    md.write_text("# The headline\n\nSome **bold** text with a [link](https://x.example).\n")
    art = read_one(md)
    assert art.title == "The headline"
    assert art.text == "Some bold text with a link."


# --- ids (#27) ---------------------------------------------------------------------------------

def ingest_jsonl(tmp_path, fake_embedder, *records, name="lines.jsonl"):
    """Ingest `records` as one .jsonl file into tmp_path/ix through Service; return the report."""
    from qa.web.service import Service

    path = tmp_path / name
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return Service(tmp_path / "ix", "fake", embedder=fake_embedder).ingest([path])


def test_two_urls_whose_32_bit_hashes_collide_are_two_articles(tmp_path, fake_embedder):
    # These two URLs shared a 32-bit id hash: story-php-5d943026.
    report = ingest_jsonl(tmp_path, fake_embedder,
                          {"title": "Dam opens", "text": "The dam opened on Monday.",
                           "url": "https://news.example.com/story.php?id=52526"},
                          {"title": "Mayor resigns", "text": "The mayor resigned on Tuesday.",
                           "url": "https://news.example.com/story.php?id=130133"})
    assert (report.added, report.updated, report.failed) == (2, 0, 0)


@pytest.mark.parametrize("url, expected", [
    ("https://news.example/news/ferry?utm_source=rss&utm_medium=feed&utm_campaign=x#comments",
     "https://news.example/news/ferry"),
    ("HTTPS://News.Example:443/News/Ferry?b=2&fbclid=IwAR0&a=1&gclid=Cj0&UTM_Term=y",
     "https://news.example/News/Ferry?b=2&a=1"),
    ("http://news.example:80/a?id=5&x", "http://news.example/a?id=5&x"),
    ("http://news.example:8080/a", "http://news.example:8080/a"),
    ("https://news.example", "https://news.example/"),
    ("https://news.example/a?utm_source=rss", "https://news.example/a"),
    ("https://[2001:DB8::1]:443/a", "https://[2001:db8::1]/a"),
])
def test_canonical_url(url, expected):
    assert canonical_url(url) == expected


def test_tracking_parameters_do_not_make_a_second_article(tmp_path, fake_embedder):
    ferry = {"title": "Ferry returns", "text": "The ferry returned to service on Friday."}
    report = ingest_jsonl(tmp_path, fake_embedder, {**ferry, "url": "https://News.Example/news/ferry"},
                          {**ferry, "url": "https://news.example/news/ferry?utm_source=rss&utm_medium=feed#top"})
    assert report.added == 1 and report.failed == 0


# --- legacy encodings (#27.11) -----------------------------------------------------------------

RUSSIAN = ("Новости\nПравительство России объявило в понедельник о новых мерах поддержки для жителей "
           "пострадавших районов. Министр заявил, что помощь получат все семьи до конца месяца.")
GREEK = ("Ειδήσεις\nΗ κυβέρνηση της Ελλάδας ανακοίνωσε τη Δευτέρα νέα μέτρα στήριξης για τους κατοίκους "
         "των πληγεισών περιοχών. Ο υπουργός δήλωσε ότι όλες οι οικογένειες θα λάβουν βοήθεια.")
GERMAN = "Brücke über die Straße\nDie Bürger müssen größere Straßen über die Brücke bauen, sagte der Bürgermeister."


@pytest.mark.parametrize("text, encoding", [(RUSSIAN, "cp1251"), (GREEK, "cp1253"), (GERMAN, "cp1252")])
def test_undeclared_legacy_text_is_detected(tmp_path, text, encoding):
    assert decode(text.encode(encoding)) == text
    (tmp_path / "story.txt").write_bytes(text.encode(encoding))
    art = read_one(tmp_path / "story.txt")
    assert art.title == text.split("\n")[0] and art.text == text.split("\n")[1]


@pytest.mark.parametrize("meta, text, encoding", [
    ('<meta charset="windows-1251">', RUSSIAN, "cp1251"),
    ("<meta http-equiv='Content-Type' content='text/html; charset=windows-1253'>", GREEK, "cp1253"),
])
def test_html_meta_charset_is_read(tmp_path, meta, text, encoding):
    title, body = text.split("\n")
    page = tmp_path / "page.html"
    page.write_bytes(f"<html><head>{meta}<title>{title}</title></head><body><article><h1>{title}</h1>"
                     f"<p>{body}</p></article></body></html>".encode(encoding))
    art = read_one(page)
    assert art.title == title and art.text == body


@pytest.mark.parametrize("word, declared", [("Новости", "windows-1251"), ("Ειδήσεις", "WINDOWS-1253"),
                                            ("Новости", "koi8-r")])
def test_declared_charset_is_trusted(word, declared):
    assert decode(word.encode(declared), declared=declared) == word  # too short for detection


@pytest.mark.parametrize("declared", ["x-no-such-charset", "base64", "utf-8", "", None])
def test_a_useless_declared_charset_is_ignored(declared):
    assert decode(RUSSIAN.encode("cp1251"), declared=declared) == RUSSIAN  # unknown, not text, or wrong


def test_one_wire_story_from_two_sources_is_two_articles(tmp_path, fake_embedder):
    story = {"title": "Quake hits coast", "text": "A strong earthquake struck the coast on Sunday, officials said."}
    printed = [{**story, "source": "Daily Post"}, {**story, "source": "Evening Star"}]
    report = ingest_jsonl(tmp_path, fake_embedder, *printed, printed[0])
    assert (report.added, report.updated, report.duplicates) == (2, 0, 1)  # the same line again is a duplicate
    again = ingest_jsonl(tmp_path, fake_embedder, *printed, name="again.jsonl")
    assert (again.added, again.updated, again.duplicates) == (0, 0, 2)


def test_a_file_is_one_article_whichever_folder_is_named(tmp_path, fake_embedder):
    from qa.web.service import Service

    sub = tmp_path / "news" / "sub"
    sub.mkdir(parents=True)
    (sub / "fire.txt").write_text("Warehouse fire\nFive people were hurt in a warehouse fire on Monday.\n")
    svc = Service(tmp_path / "ix", "fake", embedder=fake_embedder)
    assert svc.ingest([tmp_path / "news"]).added == 1
    for named in (sub, sub / "fire.txt", tmp_path / "news" / "sub" / ".." / "sub"):
        report = svc.ingest([named])
        assert (report.added, report.updated, report.duplicates) == (0, 0, 1), named
    (sub / "fire.txt").write_text("Warehouse fire\nTwo people were hurt in a warehouse fire on Monday.\n")
    report = svc.ingest([sub])  # an edited file replaces its article, whichever folder is named
    assert (report.added, report.updated, report.duplicates) == (0, 1, 0)
    from qa.index import Index

    idx = Index.load(tmp_path / "ix", "fake", 64)
    assert idx.article_count == 1
    assert idx.article(read_one(sub / "fire.txt").id)["text"].startswith("Two people were hurt")


# --- markdown (#27.18) -------------------------------------------------------------------------

@pytest.mark.parametrize("markdown, text", [
    ("Some **bold**, *italic*, __strong__, _em_ and `a_b` code.", "Some bold, italic, strong, em and a_b code."),
    ("**bold *and* italic** then *x*", "bold *and* italic then x"),
    ("![photo](a.jpg)See [the report](https://x.example/r?a=1) and [more](u).", "See the report and more."),
])
def test_markdown_emphasis_and_links(markdown, text):
    assert _strip_markdown(markdown) == (None, text)


def test_markdown_cleanup_is_not_quadratic():
    # Each line is one long paragraph of openers with no closer; a quadratic pattern takes minutes on
    # 200 KB (7 s at 48 KB), a linear one milliseconds. A hang check, not a benchmark.
    import subprocess
    import sys

    code = ("from qa.ingest.articles import _strip_markdown\n"
            "for unit in ['`a ', '**a ', '_a ', '[a', '![', '[a](', '[']:\n"
            "    _strip_markdown(unit * (200_000 // len(unit)))\n")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=20)
