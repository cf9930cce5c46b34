"""Text tokenizers: byte-level and BPE round trips (non-ASCII, empty documents), any
tokenizer.json through the same loader, per-token byte counts, shard dtypes."""
from __future__ import annotations

import json
import random

import numpy as np
import pytest

from seqmamba.tasks.text.shards import shard_dtype
from seqmamba.tasks.text.tokenizer import ByteTokenizer, load_tokenizer, train_bpe

ALPHABETS = ["abcdefghij XYZ_(){}:=\n\t", "äöüßéèñçÅØ", "日本語のテキスト中文", "😀💡🚀", "\x00\x01\x7f\u200b"]


def random_text(rng: random.Random, n: int) -> str:
    return "".join(rng.choice(rng.choice(ALPHABETS)) for _ in range(n))


def documents(seed: int) -> list[str]:
    rng = random.Random(seed)
    return ["", " ", "x"] + [random_text(rng, rng.randrange(1, 200)) for _ in range(40)]


def check_round_trip(tokenizer, texts: list[str]) -> None:
    counts = tokenizer.token_bytes()
    assert counts.shape == (tokenizer.vocab_size,) and counts[tokenizer.eod_id] == 0
    for text in texts:
        ids = tokenizer.encode(text)
        assert ids.dtype == np.int64 and ((0 <= ids) & (ids < tokenizer.vocab_size)).all()
        assert tokenizer.eod_id not in ids.tolist()
        assert tokenizer.decode(ids.tolist()) == text
        # Bits per byte divide by this: the bytes of the tokens are the bytes of the text.
        assert counts[ids].sum() == len(text.encode("utf-8"))


def test_byte_tokenizer_round_trip():
    tokenizer = ByteTokenizer()
    assert (tokenizer.vocab_size, tokenizer.eod_id) == (257, 256)
    check_round_trip(tokenizer, documents(1))
    assert tokenizer.encode("").shape == (0,)
    assert tokenizer.encode("é").tolist() == [0xC3, 0xA9]


def test_byte_decode_drops_eod_and_replaces_broken_utf8():
    tokenizer = ByteTokenizer()
    assert tokenizer.decode([104, 256, 105]) == "hi"
    assert tokenizer.decode([0xC3, 104]) == "\ufffdh"


@pytest.fixture(scope="module")
def bpe(tmp_path_factory):
    path = tmp_path_factory.mktemp("bpe") / "tokenizer.json"
    corpus = documents(2) * 3 + ["def function(argument):\n    return argument\n"] * 20
    return train_bpe(corpus, path, vocab_size=501), path


def test_bpe_round_trip_on_unseen_text(bpe):
    tokenizer, path = bpe
    assert tokenizer.vocab_size <= 501 and tokenizer.eod_id == 0
    check_round_trip(tokenizer, documents(3))
    # Merges learnt: a frequent line takes fewer tokens than bytes.
    line = "def function(argument):\n"
    assert len(tokenizer.encode(line)) < len(line.encode()) / 2
    # The file loads through the generic tokenizer.json path with the same ids.
    again = load_tokenizer(path)
    text = documents(4)[5]
    assert again.encode(text).tolist() == tokenizer.encode(text).tolist()


def test_bpe_with_added_tokens_counts_their_bytes(bpe, tmp_path):
    """Like GPT-NeoX's tokenizer: runs of spaces added as whole tokens on a byte-level BPE."""
    from tokenizers import Tokenizer

    _, path = bpe
    tokenizer = Tokenizer.from_file(str(path))
    tokenizer.add_tokens(["        ", "    "])
    tokenizer.save(str(tmp_path / "tokenizer.json"))
    loaded = load_tokenizer(tmp_path / "tokenizer.json")
    code = "class A:\n    def f(self):\n        return 'é'\n" + documents(5)[7]
    check_round_trip(loaded, [code, *documents(6)])
    eight_spaces = tokenizer.token_to_id("        ")
    assert eight_spaces in loaded.encode(code).tolist() and loaded.token_bytes()[eight_spaces] == 8


def test_bpe_vocab_size_too_small(tmp_path):
    with pytest.raises(ValueError, match="--vocab-size: must be at least 258"):
        train_bpe(["abc"], tmp_path / "t.json", vocab_size=257)


def word_level(path, words: list[str], *, added: tuple[str, ...] = (), special: tuple[str, ...] = ("</doc>",)):
    """A tokenizer.json that is not byte-level (a word-level model), written with the library."""
    from tokenizers import Tokenizer, models, pre_tokenizers

    vocab = {w: i for i, w in enumerate(["[UNK]", *words])}
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer.add_tokens(list(added))
    tokenizer.add_special_tokens(list(special))
    tokenizer.save(str(path))
    return path


def test_any_tokenizer_json_loads(tmp_path):
    path = word_level(tmp_path / "tokenizer.json", ["alpha", "béta", "gamma"], added=["<code>"])
    tokenizer = load_tokenizer(path, eod_token="</doc>")
    assert tokenizer.vocab_size == 6 and tokenizer.eod_id == 5
    ids = tokenizer.encode("gamma béta <code> alpha")
    assert ids.tolist() == [3, 2, 4, 1]
    assert tokenizer.decode(ids.tolist() + [5]) == "gamma béta <code> alpha"
    counts = tokenizer.token_bytes()
    # Not byte-level: each token counts the bytes of its own text ("béta": 5 bytes).
    assert counts.tolist() == [len("[UNK]"), 5, 5, 5, 6, 0]


def test_tokenizer_errors(tmp_path):
    path = word_level(tmp_path / "tokenizer.json", ["a"])
    with pytest.raises(ValueError, match=r"no token '<\|endoftext\|>'.*special tokens: </doc>.*--eod-token"):
        load_tokenizer(path)
    with pytest.raises(ValueError, match="is not a file"):
        load_tokenizer(tmp_path / "missing.json")
    (tmp_path / "broken.json").write_text(json.dumps({"model": 3}))
    with pytest.raises(ValueError, match="not a tokenizer.json"):
        load_tokenizer(tmp_path / "broken.json")


def test_shard_dtype_fits_the_vocabulary(tmp_path):
    assert shard_dtype(257) == "uint16"
    assert shard_dtype(65536) == "uint16"
    assert shard_dtype(65537) == "uint32"
    assert shard_dtype(300, "uint32") == "uint32"
    with pytest.raises(ValueError, match="--dtype uint16: holds token ids below 65536, but the tokenizer has 65537"):
        shard_dtype(65537, "uint16")
    with pytest.raises(ValueError, match="--dtype: must be auto, uint16 or uint32"):
        shard_dtype(10, "int8")
    # A real tokenizer.json with more ids than uint16 holds.
    big = load_tokenizer(word_level(tmp_path / "big.json", [f"w{i}" for i in range(70_001)]), eod_token="</doc>")
    assert big.vocab_size == 70_003 and shard_dtype(big.vocab_size) == "uint32"
