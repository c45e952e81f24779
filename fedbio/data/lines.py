"""Text lines from a data file: the bytes of a plain or gzip file, decoded one line at a time.

    from fedbio.data.lines import read_lines
    for number, text in read_lines("data/scl/deeploc_valtest.fasta"): ...

Both readers (:mod:`fedbio.data.fasta`, :mod:`fedbio.data.csvfile`) and the format sniffing in
:mod:`fedbio.data.records` read through :func:`read_lines`, so a bad byte, a UTF-16 file or a
damaged gzip is a :class:`~fedbio.errors.DataError` naming the file and line. A leading
byte-order mark is dropped.
"""

from __future__ import annotations

import gzip
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from fedbio.errors import DataError

# a file without one record (or one blank line) in it; the CSV reader and the sniffing both say so
EMPTY_FILE = "file is empty; give a FASTA or CSV file that holds records"
_GZIP_MAGIC = b"\x1f\x8b"
_BOM = "\ufeff"
_UTF16_BOMS = (b"\xff\xfe", b"\xfe\xff")


class NotText(DataError):
    """A line that is not UTF-8 text (a binary file, or another encoding)."""


def _is_gzip(path: Path) -> bool:
    if path.suffix.lower() == ".gz":
        return True
    with open(path, "rb") as handle:   # a compressed file without .gz in its name
        return handle.read(2) == _GZIP_MAGIC


def _open_binary(path: Path) -> BinaryIO:
    return gzip.open(path, "rb") if _is_gzip(path) else open(path, "rb")


def _decode(path: Path, number: int, raw: bytes) -> str:
    """One line as text; the byte-order mark some editors put first is dropped."""
    if number == 1 and raw.startswith(_UTF16_BOMS):
        raise NotText(path, "file is UTF-16 text; save it as UTF-8", number)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise NotText(path, f"not UTF-8 text (byte 0x{raw[err.start]:02x}); "
                      "save the file as UTF-8", number) from None
    if "\x00" in text:
        raise NotText(path, "line holds a NUL byte (a binary file, or UTF-16 text); "
                      "give a UTF-8 text file", number)
    return text[1:] if number == 1 and text.startswith(_BOM) else text


def read_lines(path: str | Path) -> Iterator[tuple[int, str]]:
    """Yield ``(line number, text)`` with line ends kept (``\\n``, ``\\r\\n`` or ``\\r``).

    Plain or gzip files; any read failure is a :class:`DataError` naming the file (and the line
    where reading stopped), never a bare ``UnicodeDecodeError``, ``EOFError`` or ``zlib.error``.
    """
    path = Path(path)
    number = 0
    try:
        with _open_binary(path) as handle:
            for chunk in handle:                      # split at b"\n"; "\r\n" stays together
                for raw in chunk.splitlines(keepends=True):   # then at a lone "\r" too
                    number += 1
                    yield number, _decode(path, number, raw)
    except (EOFError, zlib.error, gzip.BadGzipFile) as err:
        raise DataError(path, f"compressed file is truncated or damaged ({err}); "
                        "download or compress it again", number + 1) from None
    except PermissionError as err:
        raise DataError(path, f"cannot read the file ({err.strerror or err}); check its "
                        "permissions") from None
    except OSError as err:
        raise DataError(path, f"cannot read the file ({err.strerror or err}); check the file "
                        "and the disk it is on") from None
