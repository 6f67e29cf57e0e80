"""Search filters from a request: which sources, which dates, which order."""

from __future__ import annotations

import re
from datetime import date

from ..errors import BadRequest
from ..index import Where
from ..index.terms import day_of

MAX_SOURCES = 20
MAX_SOURCE_CHARS = 200
SORTS = ("relevance", "newest")


def sources(value: object) -> tuple[str, ...]:
    """One source or a list of them (None: any), each a non-empty name."""
    if value is None:
        return ()
    values = value if isinstance(value, list) else [value]
    if len(values) > MAX_SOURCES:
        raise BadRequest(f"at most {MAX_SOURCES} sources at once (got {len(values)})", code="invalid_source")
    out = []
    for v in values:
        if not isinstance(v, str) or not v.strip() or len(v) > MAX_SOURCE_CHARS or "\x00" in v:
            raise BadRequest(f"source must be a source's name, as in the results' citation.source (got {v!r:.80})",
                             code="invalid_source")
        out.append(v.strip())
    return tuple(dict.fromkeys(out))


def day(value: object, name: str) -> int | None:
    """A `YYYY-MM-DD` bound as days since 1970 (None: no bound)."""
    if value is None:
        return None
    if not isinstance(value, str) or not re.fullmatch(r"\d{4}-\d{2}-\d{2}", value.strip()):
        raise BadRequest(f"{name} must be a date written YYYY-MM-DD, e.g. 2024-12-08 (got {value!r:.40})",
                         code="invalid_date")
    try:
        date.fromisoformat(value.strip())
    except ValueError:
        raise BadRequest(f"{name} is not a calendar date: {value!r:.40}", code="invalid_date") from None
    return day_of(value.strip())


def parse(source: object = None, from_: object = None, to: object = None, sort: object = None) -> tuple[Where | None, str]:
    """The filter and order a request asks for; BadRequest with the contract's codes when a value is wrong."""
    first, last = day(from_, "from"), day(to, "to")  # from after to: an empty range, so no results
    if sort is None:
        sort = "relevance"
    if not isinstance(sort, str) or sort not in SORTS:
        raise BadRequest(f"sort must be one of {', '.join(SORTS)} (got {sort!r:.40})", code="invalid_sort")
    where = Where(sources(source), first, last)
    return (where if where else None), sort
