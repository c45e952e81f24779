"""Checksums: ``file_md5`` (what a split or a run records about its input files) and
``cache_key`` (the name of a cache file: its settings and its sequences)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path


def file_md5(path: str | Path) -> str:
    """The md5 hex digest of a file's bytes."""
    return hashlib.md5(Path(path).read_bytes()).hexdigest()


def cache_key(ident: dict, seqs: list[str]) -> str:
    """20 hex digits naming what a cache file holds: ``ident`` (settings) and the sequences."""
    digest = hashlib.sha1(json.dumps(ident, sort_keys=True).encode())
    for s in seqs:
        digest.update(s.encode() + b"\n")
    return digest.hexdigest()[:20]
