"""Ingestion: a corpus's files -> token shards with an index (``seqmamba data text``).

The input files are cut into pieces and packed, in order, into shards of about
``shard_bytes`` of input each; the plan depends only on the inputs and the settings,
so a second run of the same command finds the same shards, skips those already
complete and writes only the rest (see :mod:`.shards` for the layout). Worker
processes tokenize one shard at a time.

Each document goes to the validation split with probability ``val_fraction``,
decided by a hash of (seed, file, position in the file), the file named by its path
below the input files' common folder: the same documents every run, wherever the
corpus lies, spread over the whole corpus.
"""
from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import shutil
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .corpus import BadFile, Piece, find_files, read_documents, split_file
from .shards import DTYPES, FORMAT, SPLITS, shard_dtype, write_atomic, write_json
from .tokenizer import BYTE, EOD_TOKEN, Tokenizer, fingerprint, load_tokenizer

BAD_FILES = ("skip", "error")


@dataclass(frozen=True)
class Settings:
    """What decides the shards' contents (saved in ``plan.json``)."""

    tokenizer: str = BYTE
    eod_token: str = EOD_TOKEN
    text_field: str = "text"
    val_fraction: float = 0.01
    seed: int = 0
    dtype: str = "auto"
    shard_bytes: int = 8 << 20


@dataclass
class Summary:
    """What an ingestion did: shards written now and found complete, per-split totals,
    and the files skipped as not text."""

    out: Path
    shards: int
    written: list[int]
    totals: dict[str, dict[str, int]]
    bad_files: list[tuple[str, str]] = field(default_factory=list)


def ingest(inputs: list[str], out: str | Path, settings: Settings = Settings(), *, include: tuple[str, ...] = (),
           exclude: tuple[str, ...] = (), workers: int = 1, bad_files: str = "skip", progress: bool = False,
           say: Callable[[str], None] = print) -> Summary:
    """Tokenize the documents of ``inputs`` into ``out`` (see the module docstring).

    ``bad_files``: ``skip`` files that are not text (binary, not UTF-8, broken JSON
    Lines or gzip) with a warning and a count, or stop at the first with an ``error``.
    """
    _check(settings, workers=workers, bad_files=bad_files)
    tokenizer = load_tokenizer(settings.tokenizer, eod_token=settings.eod_token)
    dtype = shard_dtype(tokenizer.vocab_size, settings.dtype)
    files = find_files(inputs, include=include, exclude=exclude)
    pieces = [piece for path in files for piece in split_file(path, piece_bytes=settings.shard_bytes)]
    shards = _pack(pieces, settings.shard_bytes)
    root = os.path.commonpath([str(path.parent) for path in files])
    out = Path(out)
    (out / "shards").mkdir(parents=True, exist_ok=True)
    _check_plan(out, _plan(settings, dtype, shards))
    if tokenizer.name != BYTE and not (out / "tokenizer.json").is_file():
        shutil.copyfile(settings.tokenizer, out / "tokenizer.json")

    pending = [k for k in range(len(shards)) if not _stats_path(out, k).is_file()]
    say(f"{len(files)} files in {len(shards)} shards" + (f"; {len(shards) - len(pending)} already written, skipped"
                                                          if len(pending) < len(shards) else ""))
    jobs = [_Job(k, shards[k], str(out), settings, dtype, bad_files, root) for k in pending]
    _run(jobs, workers=workers, progress=progress)

    stats = [_read_stats(out, k) for k in range(len(shards))]
    summary = _summarise(out, stats, written=pending)
    for name in SPLITS:
        if summary.totals[name]["tokens"] == 0:
            _raise_empty(name, summary, files=len(files), settings=settings)
    if summary.bad_files:
        shown = "; ".join(reason for _, reason in summary.bad_files[:3])
        say(f"warning: skipped {len(summary.bad_files)} files that are not text (first: {shown})")
    write_json(out / "index.json", _index(settings, tokenizer, dtype, stats))
    return summary


def _check(settings: Settings, *, workers: int, bad_files: str) -> None:
    if not 0 < settings.val_fraction < 1:
        raise ValueError(f"--val-fraction: must be in (0, 1), got {settings.val_fraction}")
    if settings.shard_bytes < 1:
        raise ValueError(f"--shard-mib: must be positive, got {settings.shard_bytes / (1 << 20)}")
    if workers < 1:
        raise ValueError(f"--workers: must be >= 1, got {workers}")
    if bad_files not in BAD_FILES:
        raise ValueError(f"--bad-files: must be skip or error, got {bad_files!r}")


def _pack(pieces: list[Piece], shard_bytes: int) -> list[list[Piece]]:
    """Consecutive pieces grouped into shards; a shard is closed once it holds
    ``shard_bytes`` or more (so only the last one may hold less)."""
    shards: list[list[Piece]] = [[]]
    size = 0
    for piece in pieces:
        if size >= shard_bytes:
            shards.append([])
            size = 0
        shards[-1].append(piece)
        size += piece.size
    return shards


# How documents are assigned to the validation split (recorded in plan.json, so that a
# resumed ingestion never mixes two rules): by their path below the inputs' common folder.
VAL_SPLIT = "relative-path"


def _plan(settings: Settings, dtype: str, shards: list[list[Piece]]) -> dict[str, Any]:
    files = {p.path: os.stat(p.path).st_mtime_ns for shard in shards for p in shard}
    return {
        "format": FORMAT, "settings": {**asdict(settings), "tokenizer": fingerprint(settings.tokenizer)},
        "dtype": dtype, "modified_ns": files, "shards": [[asdict(p) for p in shard] for shard in shards],
        "val_split": VAL_SPLIT,
    }


def _check_plan(out: Path, plan: dict[str, Any]) -> None:
    """A folder holds one ingestion: resuming it needs the same inputs and settings."""
    path = out / "plan.json"
    if path.is_file():
        old = json.loads(path.read_text())
        if old != plan:
            if old.get("val_split") != plan["val_split"]:
                detail = "an earlier version's rule for the validation split"
            elif old.get("settings") != plan["settings"] or old.get("dtype") != plan["dtype"]:
                detail = "other settings (tokenizer, --dtype, --val-fraction, --seed, --text-field, --shard-mib)"
            else:
                detail = "other input files, or files that have changed since"
            raise ValueError(
                f"--out: {out} holds an ingestion made with {detail}; to resume it, run the same command on the "
                "same files; otherwise write to another --out or delete that folder"
            )
    else:
        write_json(path, plan)


def _stats_path(out: Path, k: int) -> Path:
    return out / "shards" / f"{k:05d}.json"


@dataclass(frozen=True)
class _Job:
    index: int
    pieces: list[Piece]
    out: str
    settings: Settings
    dtype: str
    bad_files: str
    root: str  # the input files' common folder: split decisions hash paths below it


def _run(jobs: list[_Job], *, workers: int, progress: bool) -> None:
    from tqdm import tqdm

    total = sum(p.size for job in jobs for p in job.pieces)
    with tqdm(total=total, unit="B", unit_scale=True, desc="tokenizing", disable=not progress or not jobs) as bar:
        if workers == 1 or len(jobs) <= 1:
            for job in jobs:
                bar.update(_tokenize_shard(job))
            return
        # fork: workers start at once, without importing the project again.
        method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
        with multiprocessing.get_context(method).Pool(min(workers, len(jobs)), initializer=_quiet_worker) as pool:
            for done in pool.imap_unordered(_tokenize_shard, jobs):
                bar.update(done)


def _quiet_worker() -> None:
    # Each worker tokenizes on its own core; the library's own thread pool would oversubscribe.
    os.environ["TOKENIZERS_PARALLELISM"] = "false"


_TOKENIZERS: dict[tuple[str, str], Tokenizer] = {}


def _tokenize_shard(job: _Job) -> int:
    """Tokenize one shard's pieces, write its split files, then its stats file
    (which marks it complete). Returns the input bytes it covered."""
    key = (job.settings.tokenizer, job.settings.eod_token)
    if key not in _TOKENIZERS:
        _TOKENIZERS[key] = load_tokenizer(key[0], eod_token=key[1])
    tokenizer = _TOKENIZERS[key]
    parts: dict[str, list[np.ndarray]] = {name: [] for name in SPLITS}
    counts = {name: {"tokens": 0, "documents": 0, "bytes": 0} for name in SPLITS}
    bad: list[tuple[str, str]] = []
    eod = np.array([tokenizer.eod_id], dtype=np.int64)
    for piece in job.pieces:
        try:  # a whole piece is read before any of it is kept, so a bad file leaves nothing behind
            documents = list(read_documents(piece, text_field=job.settings.text_field))
        except BadFile as exc:
            if job.bad_files == "error":
                raise BadFile(f"{exc} (--bad-files skip skips such files)") from None
            bad.append((piece.path, str(exc)))
            continue
        texts = [text for _, text in documents]
        encode_batch = getattr(tokenizer, "encode_batch", None)
        encoded = encode_batch(texts) if encode_batch else [tokenizer.encode(text) for text in texts]
        for (position, text), ids in zip(documents, encoded):
            split = "val" if _is_val(job.settings, os.path.relpath(piece.path, job.root), position) else "train"
            parts[split] += [ids, eod]
            counts[split]["tokens"] += len(ids) + 1
            counts[split]["documents"] += 1
            counts[split]["bytes"] += len(text.encode("utf-8"))
    files = {}
    for name in SPLITS:
        if counts[name]["tokens"]:
            path = Path(job.out) / "shards" / f"{name}-{job.index:05d}.bin"
            write_atomic(path, np.concatenate(parts[name]).astype(DTYPES[job.dtype]).tobytes())
            files[name] = path.name
    write_json(_stats_path(Path(job.out), job.index),
               {"shard": job.index, "files": files, "counts": counts, "bad_files": bad})
    return sum(p.size for p in job.pieces)


def _is_val(settings: Settings, path: str, position: int) -> bool:
    """Whether document ``position`` of the file at ``path`` (below the inputs' common
    folder) is held out."""
    digest = hashlib.blake2b(f"{settings.seed}\0{path}\0{position}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") < settings.val_fraction * 2**64


def _read_stats(out: Path, k: int) -> dict[str, Any]:
    return json.loads(_stats_path(out, k).read_text())


def _summarise(out: Path, stats: list[dict[str, Any]], *, written: list[int]) -> Summary:
    totals = {name: {key: sum(s["counts"][name][key] for s in stats) for key in ("tokens", "documents", "bytes")}
              for name in SPLITS}
    bad = [(path, reason) for s in stats for path, reason in s["bad_files"]]
    return Summary(out=out, shards=len(stats), written=written, totals=totals, bad_files=bad)


def _raise_empty(split: str, summary: Summary, *, files: int, settings: Settings) -> None:
    documents = sum(t["documents"] for t in summary.totals.values())
    if documents == 0:
        raise ValueError(
            f"empty corpus: no document with text in {files} input files ({len(summary.bad_files)} skipped as not "
            "text, the others empty)"
        )
    hint = "raise --val-fraction" if split == "val" else "lower --val-fraction"
    raise ValueError(
        f"--val-fraction {settings.val_fraction}: the {split} split got none of the {documents} documents; "
        f"{hint} (or add documents), writing to a new --out"
    )


def _index(settings: Settings, tokenizer: Tokenizer, dtype: str, stats: list[dict[str, Any]]) -> dict[str, Any]:
    splits: dict[str, list[dict[str, Any]]] = {name: [] for name in SPLITS}
    for s in stats:
        for name, file in s["files"].items():
            splits[name].append({"file": f"shards/{file}", **s["counts"][name]})
    return {
        "format": FORMAT, "tokenizer": BYTE if tokenizer.name == BYTE else "tokenizer.json",
        "eod_token": settings.eod_token, "eod_id": tokenizer.eod_id, "vocab_size": tokenizer.vocab_size,
        "dtype": dtype, "splits": splits,
    }
