"""The one error-line helper: an exception (or error text) reduced to the line a user reads.

Lives apart from the command line's consoles (results/console.py) so that the store, the upload
and the harness's spool use it without loading typer and rich.
"""

from __future__ import annotations


def first_line(e: BaseException | str | None) -> str:
    """The first non-empty line of an error (a database driver's `orig` first, without
    SQLAlchemy's statement and parameters), else its type."""
    if isinstance(e, str) or e is None:
        text = (e or "").strip()
        return text.splitlines()[0] if text else "error"
    text = str(getattr(e, "orig", None) or e).strip()
    return text.splitlines()[0] if text else type(e).__name__
