"""Text tokenizers: byte-level by default, or any ``tokenizer.json`` of the
``tokenizers`` library (one trained with :func:`train_bpe`, GPT-NeoX's, GPT-2's, ...).

Every tokenizer has an end-of-document token (EOD), appended after each document
when a corpus is ingested, and says how many UTF-8 bytes each token id stands for
(:meth:`Tokenizer.token_bytes`), which is what bits per byte divides by.

* ``byte``: ids 0..255 are the bytes of the UTF-8 text, 256 is EOD; vocabulary 257.
  Lossless for any text.
* ``tokenizer.json``: byte-level BPE tokenizers (their decoder is ``ByteLevel``) are
  lossless and their tokens' byte counts exact: each character of a byte-level token
  stands for one byte; added tokens (matched in the raw text, e.g. GPT-NeoX's runs of
  spaces) count the bytes of their content. For other models (WordPiece,
  SentencePiece-style) a token's bytes are those of its text decoded alone, which can
  differ by a space per word.

The ``tokenizers`` library is imported only for ``tokenizer.json`` files, so byte-level
runs do not need it.
"""
from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Protocol

import numpy as np

BYTE = "byte"
"""The name that selects the byte-level tokenizer (``--tokenizer byte``)."""

EOD_TOKEN = "<|endoftext|>"
"""Default end-of-document token: GPT-2's and GPT-NeoX's, and that of :func:`train_bpe`."""


class Tokenizer(Protocol):
    """What ingestion, training and generation need of a tokenizer."""

    name: str  # "byte" or the tokenizer file it was loaded from
    vocab_size: int
    eod_id: int

    def encode(self, text: str) -> np.ndarray:
        """Text -> ids (n,) int64, without EOD."""

    def decode(self, ids: Sequence[int]) -> str:
        """Ids -> text; special tokens (EOD) are dropped, broken UTF-8 becomes U+FFFD."""

    def token_bytes(self) -> np.ndarray:
        """(vocab_size,) int64: UTF-8 bytes each id stands for (0 for special tokens)."""


class ByteTokenizer:
    """UTF-8 bytes as ids 0..255, EOD = 256."""

    name = BYTE
    vocab_size = 257
    eod_id = 256

    def encode(self, text: str) -> np.ndarray:
        return np.frombuffer(text.encode("utf-8"), dtype=np.uint8).astype(np.int64)

    def decode(self, ids: Sequence[int]) -> str:
        return bytes(i for i in ids if 0 <= i < 256).decode("utf-8", errors="replace")

    def token_bytes(self) -> np.ndarray:
        counts = np.ones(self.vocab_size, dtype=np.int64)
        counts[self.eod_id] = 0
        return counts


class JsonTokenizer:
    """A ``tokenizers`` tokenizer loaded from a ``tokenizer.json`` file."""

    def __init__(self, path: str | Path, *, eod_token: str = EOD_TOKEN) -> None:
        from tokenizers import Tokenizer as HFTokenizer

        path = Path(path)
        if not path.is_file():
            raise ValueError(f"--tokenizer: {path} is not a file (give 'byte' or a tokenizer.json file)")
        try:
            self._tok = HFTokenizer.from_file(str(path))
        except Exception as exc:  # the library raises its own exception type for any bad file
            raise ValueError(f"--tokenizer: {path} is not a tokenizer.json the tokenizers library reads: {exc}") from None
        self.name = str(path)
        self._config = json.loads(self._tok.to_str())
        self._special = {t["id"]: t["content"] for t in self._config.get("added_tokens", []) if t.get("special")}
        eod_id = self._tok.token_to_id(eod_token)
        if eod_id is None:
            known = ", ".join(sorted(self._special.values())) or "none"
            raise ValueError(
                f"--eod-token: {path} has no token {eod_token!r} to end documents with "
                f"(its special tokens: {known}); name one with --eod-token"
            )
        self.eod_id = int(eod_id)
        self.vocab_size = int(self._tok.get_vocab_size(with_added_tokens=True))

    def encode(self, text: str) -> np.ndarray:
        return np.asarray(self._tok.encode(text, add_special_tokens=False).ids, dtype=np.int64)

    def encode_batch(self, texts: list[str]) -> list[np.ndarray]:
        """:meth:`encode` of each text, in one call into the library."""
        return [np.asarray(e.ids, dtype=np.int64) for e in self._tok.encode_batch(texts, add_special_tokens=False)]

    def decode(self, ids: Sequence[int]) -> str:
        return self._tok.decode([int(i) for i in ids], skip_special_tokens=True)

    def token_bytes(self) -> np.ndarray:
        counts = np.zeros(self.vocab_size, dtype=np.int64)
        byte_level = _has_byte_level_decoder(self._config.get("decoder"))
        alphabet = set(_byte_level_alphabet()) if byte_level else set()
        added = {t["id"]: t for t in self._config.get("added_tokens", [])}
        for i in range(self.vocab_size):
            if i in self._special:
                continue
            token = self._tok.id_to_token(i)
            if token is None:
                continue
            if i in added:  # matched in the raw text before the model runs: its content is the text
                counts[i] = len(added[i]["content"].encode("utf-8"))
            elif byte_level and set(token) <= alphabet:
                counts[i] = len(token)  # one byte per character of the byte-level alphabet
            else:
                counts[i] = len(self._tok.decode([i], skip_special_tokens=True).encode("utf-8"))
        return counts


def load_tokenizer(spec: str | Path, *, eod_token: str = EOD_TOKEN) -> Tokenizer:
    """``"byte"`` or the path of a ``tokenizer.json``."""
    if str(spec) == BYTE:
        return ByteTokenizer()
    return JsonTokenizer(spec, eod_token=eod_token)


def fingerprint(spec: str | Path) -> str:
    """Identifies a tokenizer for resumed ingestion: ``byte`` or the file's SHA-256."""
    if str(spec) == BYTE:
        return BYTE
    return hashlib.sha256(Path(spec).read_bytes()).hexdigest()


def train_bpe(documents: Iterable[str], out: str | Path, *, vocab_size: int, min_frequency: int = 2,
              eod_token: str = EOD_TOKEN) -> JsonTokenizer:
    """Train a byte-level BPE tokenizer on ``documents`` and write it to ``out``
    (a ``tokenizer.json``). Byte-level: every byte is in the initial alphabet, so any
    text encodes without unknown tokens and decodes back exactly.

    ``vocab_size`` counts the 256 byte tokens, the EOD token and the merges.
    """
    from tokenizers import Tokenizer as HFTokenizer
    from tokenizers import decoders, models, pre_tokenizers, trainers

    if vocab_size < 258:
        raise ValueError(f"--vocab-size: must be at least 258 (256 bytes, {eod_token} and a merge), got {vocab_size}")
    if min_frequency < 1:
        raise ValueError(f"--min-frequency: must be >= 1, got {min_frequency}")
    tokenizer = HFTokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, min_frequency=min_frequency, special_tokens=[eod_token],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False,
    )
    tokenizer.train_from_iterator(documents, trainer)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tokenizer.save(str(out))
    return JsonTokenizer(out, eod_token=eod_token)


def _has_byte_level_decoder(decoder: dict | None) -> bool:
    if not decoder:
        return False
    if decoder.get("type") == "ByteLevel":
        return True
    return any(_has_byte_level_decoder(d) for d in decoder.get("decoders", []) or [])


def _byte_level_alphabet() -> list[str]:
    from tokenizers import pre_tokenizers

    return pre_tokenizers.ByteLevel.alphabet()
