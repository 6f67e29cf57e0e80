"""Exceptions that say what went wrong and what to do about it.

Each carries a stable machine-readable `code` and the HTTP status it maps to;
they are translated to JSON or a CLI message only at the edges.
"""


class QAError(Exception):
    """Base class: a failure the user can act on."""

    code = "error"
    status = 500

    def __init__(self, message: str, *, code: str | None = None, status: int | None = None):
        super().__init__(message)
        self.message = message
        if code:
            self.code = code
        if status:
            self.status = status


class BadRequest(QAError):
    code = "bad_request"
    status = 400


class Unauthorized(QAError):
    """No credentials were sent (401); wrong ones are Forbidden (403)."""

    code = "unauthorized"
    status = 401


class Forbidden(QAError):
    code = "forbidden"
    status = 403


class NotFound(QAError):
    code = "not_found"
    status = 404


class IndexError_(QAError):
    """The index directory cannot be used as it is."""

    code = "index_error"
    status = 503


class ModelMismatch(IndexError_):
    code = "model_mismatch"


class IndexCorrupt(IndexError_):
    code = "index_corrupt"


class IndexBusy(IndexError_):
    """The database could not be read just now (locked, busy, out of file handles): worth a retry."""

    code = "index_busy"


class IndexLocked(IndexError_):
    code = "index_locked"


class NotReady(IndexError_):
    code = "not_ready"


class ReaderUnusable(QAError):
    """The trained reader's folder holds no model this code can run (re-export it with train/export_reader.py)."""

    code = "reader_unusable"


class IngestError(QAError):
    """One input file or record could not be ingested; the run goes on."""

    code = "ingest_error"
    status = 400
