"""Finding a corpus's files and reading their documents.

Inputs are files, folders (every file below them, filtered by ``include`` / ``exclude``
patterns on the path relative to the folder) or glob patterns (``**`` matches any
depth). Formats, by file name:

* ``*.jsonl``: one JSON object per line; its ``text_field`` is a document;
* anything else: plain UTF-8 text, the whole file one document;
* either with ``.gz`` appended: gzip-compressed.

A file that is binary (holds NUL bytes), not UTF-8, not valid JSON Lines or an
unreadable gzip stream raises :class:`BadFile`; ingestion skips it with a warning or
stops, as asked. Empty documents are dropped: an end-of-document token alone teaches
nothing.
"""
from __future__ import annotations

import fnmatch
import glob
import gzip
import json
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Optional


class BadFile(ValueError):
    """A file that cannot be read as text documents; the message says why."""


@dataclass(frozen=True)
class Piece:
    """Part of a file to read: the whole file, or the lines of an uncompressed JSON
    Lines file that start in bytes ``[start, end)``."""

    path: str
    size: int  # bytes of the file this piece covers
    start: int = 0
    end: Optional[int] = None


def find_files(inputs: Sequence[str], *, include: Sequence[str] = (), exclude: Sequence[str] = ()) -> list[Path]:
    """The files that ``inputs`` name, each once, in a stable order: files as given,
    folders' files sorted by relative path, glob matches sorted."""
    found: list[Path] = []
    for item in inputs:
        if glob.has_magic(item):
            matches = sorted(Path(p) for p in glob.glob(item, recursive=True) if Path(p).is_file())
            if not matches:
                raise ValueError(f"INPUT {item!r}: no file matches this pattern")
            found += matches
        elif Path(item).is_dir():
            root = Path(item)
            files = sorted(p for p in root.rglob("*") if p.is_file())
            found += [p for p in files if _selected(p.relative_to(root).as_posix(), include, exclude)]
        elif Path(item).is_file():
            found.append(Path(item))
        else:
            raise ValueError(f"INPUT {item!r}: no such file or folder")
    unique = list(dict.fromkeys(p.resolve() for p in found))
    if not unique:
        raise ValueError(f"no input files in {', '.join(inputs)} (check --include / --exclude)")
    return unique


def _selected(relative: str, include: Sequence[str], exclude: Sequence[str]) -> bool:
    name = relative.rsplit("/", 1)[-1]

    def matches(pattern: str) -> bool:
        return fnmatch.fnmatchcase(relative, pattern) or fnmatch.fnmatchcase(name, pattern)

    return (not include or any(map(matches, include))) and not any(map(matches, exclude))


def is_jsonl(path: str | Path) -> bool:
    name = str(path).lower()
    return name.endswith(".jsonl") or name.endswith(".jsonl.gz")


def split_file(path: Path, *, piece_bytes: int) -> list[Piece]:
    """``path`` as pieces of about ``piece_bytes``: uncompressed JSON Lines files are cut
    at line starts (so large files spread over shards and workers); other files are
    one piece."""
    size = path.stat().st_size
    if not is_jsonl(path) or str(path).endswith(".gz") or size <= piece_bytes:
        return [Piece(str(path), size)]
    starts = [0]
    with path.open("rb") as handle:
        while starts[-1] + piece_bytes < size:
            handle.seek(starts[-1] + piece_bytes)
            handle.readline()  # to the start of the next line
            if handle.tell() >= size:
                break
            starts.append(handle.tell())
    bounds = starts + [size]
    return [Piece(str(path), bounds[i + 1] - bounds[i], bounds[i], bounds[i + 1]) for i in range(len(starts))]


def read_documents(piece: Piece, *, text_field: str) -> Iterator[tuple[int, str]]:
    """``(key, text)`` of each non-empty document of ``piece``: ``key`` is the
    document's byte offset in the (decompressed) file, stable across runs.
    Raises BadFile naming the file (and line) and what is wrong."""
    path = piece.path
    try:
        if is_jsonl(path):
            yield from _jsonl_documents(piece, text_field=text_field)
            return
        with _open_binary(path) as handle:
            data = handle.read()
        text = _decode(data, path)
        if text:
            yield 0, text
    except (OSError, EOFError, zlib.error) as exc:
        raise BadFile(f"{path}: cannot be read: {exc}") from None


def _jsonl_documents(piece: Piece, *, text_field: str) -> Iterator[tuple[int, str]]:
    with _open_binary(piece.path) as handle:
        handle.seek(piece.start)
        offset = piece.start
        for line in handle:
            key, offset = offset, offset + len(line)
            if piece.end is not None and key >= piece.end:
                return
            text = _decode(line, piece.path).strip()
            if not text:
                continue
            try:
                record = json.loads(text)
            except json.JSONDecodeError as exc:
                raise BadFile(f"{piece.path}: byte {key}: not a JSON line ({exc.msg})") from None
            if not isinstance(record, dict) or not isinstance(record.get(text_field), str):
                raise BadFile(f"{piece.path}: byte {key}: no string field {text_field!r} (set --text-field)")
            if record[text_field]:
                yield key, record[text_field]


def _open_binary(path: str):
    return gzip.open(path, "rb") if path.lower().endswith(".gz") else open(path, "rb")


def _decode(data: bytes, path: str) -> str:
    if b"\0" in data:
        raise BadFile(f"{path}: binary file (NUL bytes), not text")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadFile(f"{path}: not UTF-8 text (byte 0x{data[exc.start]:02x} at offset {exc.start})") from None


def corpus_documents(inputs: Sequence[str], *, include: Sequence[str] = (), exclude: Sequence[str] = (),
                     text_field: str = "text", bad_files: str = "skip", skipped: Optional[list[str]] = None
                     ) -> Iterator[str]:
    """Every non-empty document of ``inputs``, in order (for tokenizer training).
    Files that are not text are skipped (their reasons appended to ``skipped``) or,
    with ``bad_files="error"``, raise BadFile."""
    if bad_files not in ("skip", "error"):
        raise ValueError(f"--bad-files: must be skip or error, got {bad_files!r}")
    for path in find_files(inputs, include=include, exclude=exclude):
        try:
            documents = [text for _, text in read_documents(Piece(str(path), path.stat().st_size), text_field=text_field)]
        except BadFile as exc:
            if bad_files == "error":
                raise
            if skipped is not None:
                skipped.append(str(exc))
            continue
        yield from documents
