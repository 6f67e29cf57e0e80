"""Read files into clean `Article`s: decode, strip page chrome, pull metadata."""

from __future__ import annotations

import base64
import codecs
import hashlib
import json
import os
import re
import stat
import unicodedata
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from ..errors import IngestError

SUFFIXES = {".txt", ".md", ".markdown", ".html", ".htm", ".jsonl"}
MAX_FILE_BYTES = 32 * 1024 * 1024  # per file, and per line of a .jsonl (which is streamed, so has no file limit)
MAX_ARTICLE_CHARS = 2_000_000
MAX_TITLE_CHARS = 500  # longer "titles" are cut at a word, with an ellipsis
ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._~-]{0,127}$")
_SURROGATE = re.compile(r"[\ud800-\udfff]")


def max_file_bytes() -> int:
    """The size limit of one file or .jsonl line: $QA_MAX_FILE_BYTES, else MAX_FILE_BYTES."""
    try:
        return int(os.environ.get("QA_MAX_FILE_BYTES") or MAX_FILE_BYTES)
    except ValueError:
        return MAX_FILE_BYTES


def _size_error(what: str, size: int, limit: int) -> IngestError:
    return IngestError(f"{what} too large ({size:,} bytes; the limit is {limit:,}, set by QA_MAX_FILE_BYTES)")


@dataclass
class Article:
    title: str
    text: str
    id: str | None = None
    url: str | None = None
    source: str | None = None
    author: str | None = None
    published: str | None = None
    origin: str | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        if len(self.title) > MAX_TITLE_CHARS:
            self.title = self.title[:MAX_TITLE_CHARS - 1].rsplit(" ", 1)[0] + "…"

    @property
    def content_hash(self) -> str:
        """A fingerprint of everything stored about the article: the same id with the same hash is unchanged."""
        fields = [self.id, self.title, self.url, self.source, self.author, self.published, self.text]
        return hashlib.sha256(json.dumps(fields, ensure_ascii=False).encode()).hexdigest()

    def ensure_id(self) -> str:
        """Give the article a stable id when it has none: from its URL, else from its source, title and text."""
        if not self.id:
            if self.url:
                url = canonical_url(self.url)
                path = urlsplit(url).path.rstrip("/")
                self.id = derived_id(path.rsplit("/", 1)[-1] or urlsplit(url).hostname or "", url)
            else:
                # One agency story printed by two outlets is two articles, so the source is part of the key.
                self.id = derived_id(self.title, json.dumps([self.source, self.title, self.text], ensure_ascii=False))
        return self.id


# Query parameters that say how a reader came to a page, not which page it is.
_TRACKING = re.compile(r"utm_.*|fbclid|gclid", re.I)
_DEFAULT_PORTS = {"http": 80, "https": 443}


def canonical_url(url: str) -> str:
    """Drop tracking parameters, the fragment and a default port; lower-case the scheme and host."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:  # a malformed host or port: leave it as given
        return url
    scheme = parts.scheme.lower()
    netloc = parts.netloc
    if parts.hostname:
        userinfo = netloc.rpartition("@")[0]
        host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname  # hostname is lower-cased
        netloc = (userinfo + "@" if userinfo else "") + host
        if port is not None and port != _DEFAULT_PORTS.get(scheme):
            netloc += f":{port}"
    # Split by hand, not parse_qsl: the parameters kept keep their order and encoding byte for byte.
    query = "&".join(p for p in parts.query.split("&") if p and not _TRACKING.fullmatch(p.split("=", 1)[0]))
    path = parts.path or ("/" if netloc else "")
    return urlunsplit((scheme, netloc, path, query, ""))


def derived_id(readable: str, key: str) -> str:
    """An id made of a slug of `readable` and a hash of `key`, which alone decides which article it is."""
    slug = re.sub(r"[^a-z0-9]+", "-", unicodedata.normalize("NFKD", readable).encode("ascii", "ignore").decode().lower())
    slug = slug.strip("-")[:60].rstrip("-") or "article"
    # 80 bits: a collision among articles of one slug gets likely only near 10^12 of them (with 32 bits,
    # near 80,000, and the second article silently replaced the first). Base32 keeps it URL-safe.
    digest = base64.b32encode(hashlib.sha256(key.encode()).digest()[:10]).decode().lower()
    return f"{slug}-{digest}"


@dataclass
class Failure:
    origin: str
    reason: str


# --- decoding -------------------------------------------------------------------

_BOMS = [
    (b"\xef\xbb\xbf", "utf-8"),
    (b"\xff\xfe", "utf-16-le"),
    (b"\xfe\xff", "utf-16-be"),
]
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


# Code pages of Latin-script text, which detection confuses with each other on short text.
_LATIN = {"cp1250", "cp1252", "cp1254", "cp1257", "cp437", "cp775", "cp850", "cp852", "cp858", "mac-roman",
          "mac-latin2", "mac-iceland", "mac-turkish", *(f"iso8859-{n}" for n in (1, 2, 3, 4, 9, 10, 13, 14, 15, 16))}
# Python codecs that take any name a page declares but are no character set.
_NOT_CHARSETS = {"unicode-escape", "raw-unicode-escape", "idna", "punycode", "utf-7"}
_META_CHARSET = re.compile(rb"""<meta\b[^>]*?\bcharset\s*=\s*["']?\s*([\w.:-]+)""", re.I)
META_BYTES = 8192  # how far into a page to look for <meta charset>


def decode(data: bytes, declared: str | None = None) -> str:
    """Decode bytes to text: BOM, UTF-8, the declared charset, a <meta> charset, then detection; refuse binary.

    `declared` is the charset said outside the bytes (HTTP's Content-Type); an unknown one is ignored.
    """
    for bom, encoding in _BOMS:
        if data.startswith(bom):
            try:
                return data[len(bom):].decode(encoding)
            except UnicodeDecodeError as e:
                raise IngestError(f"invalid {encoding} after byte-order mark at byte {e.start}") from None
    if b"\x00" in data:
        raise IngestError("binary file (contains NUL bytes)")
    # Bytes that are valid UTF-8 are UTF-8 whatever is declared: legacy text almost never is, and a
    # server's default charset often is not the page's. A declaration that does not fit is ignored.
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        pass
    meta = _META_CHARSET.search(data[:META_BYTES])
    text = _decode_as(data, declared) or _decode_as(data, meta and meta.group(1).decode("ascii")) or _detect(data)
    if len(_CONTROL.findall(text[:10000])) > 10:
        raise IngestError("binary file (control characters)")
    return text


def _decode_as(data: bytes, charset: str | None) -> str | None:
    """Decode with a declared charset; None when it is unknown, no charset, or does not fit the bytes."""
    charset = (charset or "").strip(" \t'\"")
    try:
        if not charset or codecs.lookup(charset).name in _NOT_CHARSETS:
            return None
        return data.decode(charset)
    except (LookupError, ValueError):  # LookupError also for bytes-to-bytes codecs (base64)
        return None


def _detect(data: bytes) -> str:
    """Decode with the charset detected from the bytes."""
    from charset_normalizer import from_bytes

    best = from_bytes(data[:1_000_000]).best()
    if best is None:
        raise IngestError("not text: could not detect a character encoding")
    # Among Latin-script code pages the detected one is a guess, and windows-1252 is what the web means by
    # legacy 8-bit text, so prefer it when it fits. Cyrillic, Greek and the rest are told apart well, and
    # read as cp1252 they become mojibake ("Íîâîñòè").
    if codecs.lookup(best.encoding).name in _LATIN:
        try:
            return data.decode("cp1252")
        except UnicodeDecodeError:
            pass
    return data.decode(best.encoding, errors="replace")


# --- cleaning ---------------------------------------------------------------------

# Whole lines that are page furniture, never article prose.
_CHROME = re.compile(
    r"""^(
        skip\ to\ (main\ )?content
      | (please,?\ )?enter\ (a\ |your\ )?(valid\ |correct\ )?e-?mail(\ address)?(\ to\ subscribe)?\.?
      | \*?\ ?indicates\ required
      | subscribe(\ now|\ today|\ here)?!?
      | success(ful+y)?\ subscribed!?
      | thank\ you\ for\ (signing\ up|subscribing)\b.*
      | (sign\ up|subscribe)\ (for|to)\ (our|the)\b.*newsletter.*
      | .*\bnewsletter\b.{0,40}\bsign\ up\b.*
      | this\ (audio|article)\ (is|was)\ (created|generated|produced)\ with\ (the\ help\ of\ )?ai(\ assistance)?\.?
      | listen\ to\ (this\ )?article.*
      | news\ feed | more\ news | editors?'?’?s?\ picks | top\ stories | most\ read | trending(\ now)?
      | (read|see|show)\ more | related(\ (articles|stories|news|content))? | advertisement | sponsored(\ content)?
      | share(\ (this|on)\b.*)? | follow\ us\b.* | (accept|manage)\ cookies.* | we\ use\ cookies\b.*
      | \d{1,2}:\d{2}\ ?(am|pm)
      | (log|sign)\ ?in | (log|sign)\ ?out | menu | search | close | back\ to\ top | print
      | all\ rights\ reserved.* | ©.* | copyright\ ©?.*
    )$""",
    re.IGNORECASE | re.VERBOSE,
)
# Photo captions: "... (Name/Agency via Getty Images)".
_CAPTION = re.compile(r"\((photo(\ by)?:?\ )?[^()]{0,80}\b(getty images|ap photo|afp|reuters|shutterstock|epa)\b[^()]*\)\s*$", re.I | re.X)
_POST_BYLINE = re.compile(r"^[—–-]\s*[^()\n]{1,80}\(@\w{1,30}(@[\w.]+)?\)\s+\w+\s+\d{1,2},\s+\d{4}$")
_POST_LINK = re.compile(r"\bpic\.twitter\.com/\w+|\bt\.co/\w+|\binstagram\.com/p/\w+")
_TERMINAL = re.compile(r"[.!?:;\"”’)\]]\s*$")
SANDWICH_WORDS = 80
LIST_ITEMS = 12  # headlines taken as links under one list heading
# Ad slots sit between an article's own paragraphs.
_SLOT = re.compile(r"^(advertisement|sponsored(\ content)?)$", re.I)
_LIST_HEADING = re.compile(
    r"^(news\ feed|more\ news|editors?'?’?s?\ picks|top\ stories|most\ read|trending(\ now)?|read\ more"
    r"|related(\ (articles|stories|news|content))?|more\ (from|on)\b.{0,40}|recommended(\ for\ you)?)$", re.I | re.X)


def _is_headline(line: str, max_words: int = 14) -> bool:
    return len(line.split()) <= max_words and not _TERMINAL.search(line)


def clean_text(raw: str) -> str:
    """Normalise text and drop page chrome; paragraphs come back separated by one blank line."""
    text = unicodedata.normalize("NFC", raw.replace("\r\n", "\n").replace("\r", "\n"))
    text = _CONTROL.sub("", text).replace("\u00a0", " ").replace("\t", " ")
    lines = [re.sub(r" {2,}", " ", ln).strip() for ln in text.split("\n")]
    lines = [ln for ln in lines if ln]
    chrome = [bool(_CHROME.match(ln)) or bool(_CAPTION.search(ln)) for ln in lines]
    # An embedded post flattened to text: its words, then "— Name (@handle) December 8, 2024"; and
    # short lines that carry a post's picture link.
    for i, ln in enumerate(lines):
        if _POST_BYLINE.match(ln):
            chrome[i] = True
            if i > 0 and len(lines[i - 1]) <= 300:
                chrome[i - 1] = True
        elif _POST_LINK.search(ln) and len(ln) <= 300:
            chrome[i] = True

    # A short stretch of text boxed in by chrome on both sides is a teaser or a
    # newsletter name, not the article; ad slots interleave real paragraphs, so they box nothing.
    boxes = [i for i, c in enumerate(chrome) if c and not _SLOT.match(lines[i])]
    for a, b in zip(boxes, boxes[1:]):
        if b - a > 1 and sum(len(lines[i].split()) for i in range(a + 1, b)) < SANDWICH_WORDS:
            for i in range(a + 1, b):
                chrome[i] = True
    # A truncated teaser ("... quit…") and the headline above it.
    for i, ln in enumerate(lines):
        if ln.endswith(("…", "...")) and re.search(r"\w(…|\.\.\.)$", ln) and i > 0 and _is_headline(lines[i - 1], 24):
            chrome[i] = chrome[i - 1] = True
    # Under a list heading ("Most read", "Related"), the short headlines that follow are links
    # to other stories. Next to any other chrome a list of short lines is the article's own
    # (school closures after an ad, vote results before "Share"), so nothing else spreads.
    i = 0
    while i < len(lines):
        if _LIST_HEADING.match(lines[i]):
            j = i + 1
            while j < len(lines) and j - i <= LIST_ITEMS and _is_headline(lines[j]) and not chrome[j]:
                chrome[j] = True
                j += 1
            i = j
        else:
            i += 1
    kept = [ln for ln, c in zip(lines, chrome) if not c]
    return "\n\n".join(kept)


def _paragraphs_text(text: str) -> str:
    """Join blank-line-separated paragraphs, unwrapping the lines inside each."""
    blocks = re.split(r"\n\s*\n", text.replace("\r\n", "\n"))
    return "\n".join(" ".join(b.split()) for b in blocks if b.strip())


def _title_from(text: str) -> tuple[str, str]:
    """Take a title from the text: a leading headline line, else the first sentence."""
    first, _, rest = text.partition("\n\n")
    if _is_headline(first) and rest:
        return first, rest
    sentence = re.split(r"(?<=[.!?])\s", first, maxsplit=1)[0]
    if len(sentence) > 120:
        sentence = sentence[:120].rsplit(" ", 1)[0] + "…"
    return sentence.rstrip("."), text


# --- readers ---------------------------------------------------------------------

def _sidecar(path: Path, root: Path | None = None) -> dict:
    """The metadata in NAME.meta.json beside a file; a symlink may not lead out of the ingested folder."""
    meta = path.with_name(path.stem + ".meta.json")
    if not meta.is_file():
        return {}
    if meta.is_symlink():
        base = (root if root is not None and root.is_dir() else path.parent).resolve()
        target = meta.resolve()
        if not target.is_relative_to(base):
            raise IngestError(f"metadata file {meta.name} is a symlink leading outside {base} (to {target}); skipped")
    try:
        data = json.loads(meta.read_text("utf-8"))
    except (OSError, ValueError) as e:
        raise IngestError(f"bad metadata file {meta.name}: {e}") from None
    if not isinstance(data, dict):
        raise IngestError(f"bad metadata file {meta.name}: expected a JSON object")
    return data


def article_from_json(record: object, where: str) -> Article:
    """Build an article from one `.jsonl` record (a parsed JSON object); IngestError says what is wrong."""
    return _from_fields(record, where)


def _from_fields(d: dict, where: str, *, clean: bool = True) -> Article:
    """Build an article from `.jsonl`-style fields, validating each."""
    if not isinstance(d, dict):
        raise IngestError(f"{where}: expected a JSON object")
    # JSON can carry lone surrogates ("\ud800"), which no UTF-8 store or hash accepts.
    d = {k: _SURROGATE.sub("\ufffd", v) if isinstance(v, str) else v for k, v in d.items()}
    text, title = d.get("text"), d.get("title")
    if not isinstance(text, str) or not text.strip():
        raise IngestError(f"{where}: missing or empty \"text\"")
    if title is not None and not isinstance(title, str):
        raise IngestError(f"{where}: \"title\" must be a string")
    if len(text) > MAX_ARTICLE_CHARS:
        raise IngestError(f"{where}: text longer than {MAX_ARTICLE_CHARS:,} characters")
    body = clean_text(_paragraphs_text(text)) if clean else text
    if not body:
        raise IngestError(f"{where}: no article text left after removing page chrome")
    if not title or not title.strip():
        title, body = _title_from(body)
    art = Article(title=" ".join(title.split()), text=body, origin=where)
    for key in ("id", "url", "source", "author", "published"):
        value = d.get(key)
        if value is None or value == "":
            continue
        if not isinstance(value, str):
            raise IngestError(f"{where}: \"{key}\" must be a string")
        setattr(art, key, value if key == "id" else value.strip())  # an id is used as given, or refused
    if art.id is not None and not ID_RE.fullmatch(art.id):
        raise IngestError(f"{where}: id {art.id!r} must be 1-128 URL-safe characters (letters, digits, . _ ~ -)")
    if art.published:
        try:
            datetime.fromisoformat(art.published.replace("Z", "+00:00"))
        except ValueError:
            raise IngestError(f"{where}: \"published\" is not an ISO 8601 date: {art.published!r}") from None
    return art


def _read_html(raw: str, path: Path, root: Path | None) -> Article:
    return article_from_html(raw, str(path), None, {}, _sidecar(path, root))


# Embedded social posts: the page quotes them, they are not the article's words.
_EMBEDS = ("twitter-tweet", "twitter-video", "instagram-media", "tiktok-embed", "fb-post", "bluesky-embed",
           "threads-post", "reddit-embed-bq", "mastodon-embed")


def _drop_embeds(raw: str) -> str:
    """The HTML without embedded social posts (blockquotes and divs carrying the platforms' classes)."""
    if not any(e in raw for e in _EMBEDS):
        return raw
    import lxml.html

    try:
        tree = lxml.html.document_fromstring(raw)
    except (ValueError, lxml.etree.ParserError):
        return raw
    for el in tree.xpath("//*[@class]"):
        if any(e in el.get("class", "").split() for e in _EMBEDS) and el.getparent() is not None:
            el.drop_tree()
    return lxml.html.tostring(tree, encoding="unicode")


def article_from_html(raw: str, where: str, url: str | None = None, fallback: dict | None = None,
                      given: dict | None = None) -> Article:
    """An article from a web page: trafilatura's main text and metadata (canonical URL, title, author,
    date, site name), `fallback` (e.g. a feed entry's) where the page has none, `given` over both."""
    import trafilatura

    doc = trafilatura.bare_extraction(_drop_embeds(raw), url=url, with_metadata=True, include_comments=False,
                                      include_tables=False)
    if doc is None or not (doc.text or "").strip():
        raise IngestError("no article text found in the HTML")
    lines = [ln.strip() for ln in doc.text.split("\n") if ln.strip()]
    if lines and doc.title and lines[0] == doc.title.strip():
        lines = lines[1:]
    fields = {
        "title": doc.title or None,
        "text": "\n\n".join(lines),
        "url": doc.url or url,
        "author": doc.author,
        "published": doc.date,
        "source": doc.sitename or None,
    }
    for key, value in (fallback or {}).items():
        if value and not fields.get(key):
            fields[key] = value
    if url and not fields["source"]:
        fields["source"] = (urlsplit(fields["url"] or url).hostname or "").removeprefix("www.") or None
    fields.update(given or {})
    return _from_fields(fields, where)


def _strip_markdown(text: str) -> tuple[str | None, str]:
    title = None
    m = re.search(r"^#\s+(.+)$", text, re.M)
    if m:
        title = m.group(1).strip()
        text = text[: m.start()] + text[m.end():]
    text = re.sub(r"^---\n.*?\n---\n", "", text, flags=re.S)  # front matter
    # Linear time for any input: no try may scan past the next place another try starts (a "[" for
    # links, the same mark for emphasis), or a long line of openers without closers takes minutes.
    text = re.sub(r"!\[[^\[\]]*\]\([^)\[]*\)", "", text)
    text = re.sub(r"\[([^\[\]]+)\]\([^)\[]*\)", r"\1", text)
    text = re.sub(r"^\s{0,3}(#{1,6}|>|[-*+]|\d+\.)\s+", "", text, flags=re.M)
    text = re.sub(r"(\*\*|__|\*|_|`)(\S(?:(?!\1).)*?\S|\S)\1", r"\2", text)
    return title, text


def read_file(path: Path, root: Path | None = None) -> Iterator[Article | Failure]:
    """Yield the articles in one file, or a Failure for each part that cannot be read.

    `root` is the folder (or file) the run was given, which bounds where a sidecar's symlink may lead.
    A file's article is its resolved absolute path, so an edited file replaces its article, and the
    same file named through any folder (or directly) is the same article.
    """
    for item in _read_file(path, root):
        if isinstance(item, Article) and not item.id and not item.url and path.suffix.lower() != ".jsonl":
            item.id = derived_id(path.stem, "file:" + path.resolve().as_posix())
        yield item


def _read_file(path: Path, root: Path | None) -> Iterator[Article | Failure]:
    where = str(path)
    try:
        st = path.stat()
        if not stat.S_ISREG(st.st_mode):  # a FIFO or device would block or never end
            raise IngestError("not a regular file")
        if st.st_size == 0:
            raise IngestError("empty file")
        suffix = path.suffix.lower()
        if suffix == ".jsonl":
            yield from _read_jsonl(path)
            return
        limit = max_file_bytes()
        if st.st_size > limit:
            raise _size_error("file", st.st_size, limit)
        with path.open("rb") as f:
            data = f.read(limit + 1)  # never more than the limit in memory, even if the file grows meanwhile
        if len(data) > limit:
            raise _size_error("file", len(data), limit)
        raw = decode(data)
        if not raw.strip():
            raise IngestError("empty file (only whitespace)")
        if suffix in (".html", ".htm"):
            yield _read_html(raw, path, root)
            return
        title = None
        if suffix in (".md", ".markdown"):
            title, raw = _strip_markdown(raw)
        meta = _sidecar(path, root)
        # Plain text: every line break is a paragraph break (most captured pages
        # keep one paragraph a line).
        fields = {"title": title, **meta, "text": raw}
        yield _from_fields({**fields, "text": "\n\n".join(raw.splitlines())}, where)
    except IngestError as e:
        yield Failure(where, e.message.removeprefix(f"{where}: "))
    except OSError as e:
        yield Failure(where, f"cannot read: {e.strerror or e}")


def _lines(f, limit: int) -> Iterator[bytes | int]:
    """Yield the lines of a binary file, or the byte length of a line longer than `limit` (skipped unread)."""
    while True:
        line = f.readline(limit + 1)
        if not line:
            return
        if len(line) <= limit:
            yield line
            continue
        size = len(line)
        while not line.endswith(b"\n"):
            line = f.readline(1 << 20)
            if not line:
                break
            size += len(line)
        yield size


def _read_jsonl(path: Path) -> Iterator[Article | Failure]:
    limit = max_file_bytes()
    with path.open("rb") as f:
        for n, line in enumerate(_lines(f, limit), 1):
            where = f"{path}:{n}"
            if isinstance(line, int):
                yield Failure(where, _size_error("line", line, limit).message)
                continue
            if not line.strip():
                continue
            try:
                try:
                    record = json.loads(decode(line))
                except ValueError as e:
                    raise IngestError(f"{where}: not valid JSON ({e})") from None
                yield _from_fields(record, where)
            except IngestError as e:
                msg = e.message if e.message.startswith(where) else f"{where}: {e.message}"
                yield Failure(where, msg.removeprefix(f"{where}: "))


def discover(paths: Iterable[str | os.PathLike]) -> Iterator[Path | Failure]:
    """Expand files and folders into the ingestible files they hold, refusing symlinks that leave them."""
    for item in discover_roots(paths):
        yield item if isinstance(item, Failure) else item[0]


def discover_roots(paths: Iterable[str | os.PathLike]) -> Iterator[tuple[Path, Path] | Failure]:
    """discover(), with the folder or file given for each file found: (file, root)."""
    for given in paths:
        root = Path(given)
        if not root.exists():
            yield Failure(str(root), "no such file or folder")
            continue
        if root.is_file():
            if root.suffix.lower() in SUFFIXES:
                yield root, root
            else:
                yield Failure(str(root), f"unsupported file type {root.suffix or '(none)'}; use one of {', '.join(sorted(SUFFIXES))}")
            continue
        base = root.resolve()
        for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            for d in dirnames:  # os.walk does not enter linked folders; say so when one leads out
                link = Path(dirpath) / d
                if link.is_symlink() and not link.resolve().is_relative_to(base):
                    yield Failure(str(link), f"symlink leads outside {root} (to {link.resolve()}); skipped")
            for name in sorted(filenames):
                p = Path(dirpath) / name
                if name.startswith(".") or p.suffix.lower() not in SUFFIXES:
                    continue
                if p.is_symlink():
                    target = p.resolve()
                    if not target.is_relative_to(base):
                        yield Failure(str(p), f"symlink leads outside {root} (to {target}); skipped")
                        continue
                yield p, root
