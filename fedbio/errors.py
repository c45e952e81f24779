"""Errors that fedbio reports to the user as one clear line (the CLI exits non-zero, no traceback).

``FedbioError``: a problem the user can fix (bad input, a refused option); the CLI prints
``fedbio: error: <message>`` and exits 2. ``DataError`` names the file and line. ``TrainingDiverged``
stops a run whose loss is not finite or far above its start. ``Interrupted`` is what SIGTERM
(and SIGHUP) raise in the ``fedbio`` command, so a terminated run cleans up as Ctrl-C does.
``Parser``: argparse whose usage errors are such a line too.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


class Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one ``fedbio: error:`` line (exit 2), like every other."""

    def error(self, message: str):
        print(f"fedbio: error: {self.prog}: {message}; see `{self.prog} --help`", file=sys.stderr)
        raise SystemExit(2)


class FedbioError(Exception):
    """A problem the user can fix: bad input, a missing file, a refused option.

    ``kept``: where a failed command left what it had written (``OUT.failed/``), if anywhere.
    """

    kept: Path | None = None


class DataError(FedbioError):
    """Bad input data. The message names the file and, where there is one, the line."""

    def __init__(self, path: str | Path | None, message: str, line: int | None = None):
        self.path = None if path is None else Path(path)
        self.line = line
        self.reason = message
        where = "" if path is None else f"{path}" + (f":{line}" if line is not None else "")
        super().__init__(f"{where}: {message}" if where else message)


class TrainingDiverged(FedbioError):
    """The training loss became non-finite, or rose far above where it started.

    The message holds only where (site, round, epoch, step) and scalar losses, so a federated
    site may send it to the server.
    """


class Interrupted(KeyboardInterrupt):
    """SIGTERM or SIGHUP, raised like Ctrl-C's ``KeyboardInterrupt`` so every cleanup runs."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum
