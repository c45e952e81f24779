"""Errors that fedbio reports to the user as one clear line (the CLI exits non-zero, no traceback)."""

from __future__ import annotations

from pathlib import Path


class FedbioError(Exception):
    """A problem the user can fix: bad input, a missing file, a refused option."""


class DataError(FedbioError):
    """Bad input data. The message names the file and, where there is one, the line."""

    def __init__(self, path: str | Path | None, message: str, line: int | None = None):
        self.path = None if path is None else Path(path)
        self.line = line
        self.reason = message
        where = "" if path is None else f"{path}" + (f":{line}" if line is not None else "")
        super().__init__(f"{where}: {message}" if where else message)
