"""``seqmamba data text`` / ingestion: formats, document separators and counts, the
validation split, parallel workers, resuming without rewriting, and bad input."""
from __future__ import annotations

import gzip
import json
import random

import numpy as np
import pytest

from seqmamba.cli import main
from seqmamba.tasks.text import ingest as ingest_module
from seqmamba.tasks.text.corpus import Piece, read_documents, split_file
from seqmamba.tasks.text.ingest import Settings, ingest
from seqmamba.tasks.text.shards import Corpus
from seqmamba.tasks.text.tokenizer import train_bpe

EOD = 256


def random_text(rng: random.Random, n: int) -> str:
    return "".join(rng.choice("abc xyz\n\té日😀") for _ in range(n))


def write_corpus(root, seed: int = 0) -> list[str]:
    """A folder of every supported format plus an empty file and a binary one;
    returns the documents it holds (non-empty ones, in no particular order)."""
    rng = random.Random(seed)
    docs = []
    (root / "sub" / "deeper").mkdir(parents=True)
    for i in range(23):
        text = random_text(rng, rng.randrange(1, 90))
        (root / ("sub/deeper" if i % 3 else "sub") / f"doc{i}.txt").write_text(text, encoding="utf-8")
        docs.append(text)
    lines = [random_text(rng, rng.randrange(1, 40)) for _ in range(9)]
    records = [{"text": t, "id": i} for i, t in enumerate(lines)] + [{"text": ""}]
    (root / "records.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records) + "\n")
    docs += lines
    packed = random_text(rng, 57)
    (root / "packed.txt.gz").write_bytes(gzip.compress(packed.encode()))
    docs.append(packed)
    zipped = [random_text(rng, 11), random_text(rng, 7)]
    (root / "more.jsonl.gz").write_bytes(gzip.compress("".join(json.dumps({"text": t}) + "\n" for t in zipped).encode()))
    docs += zipped
    (root / "empty.txt").write_text("")
    (root / "image.bin").write_bytes(bytes([0, 159, 146, 150] * 20))
    return docs


def split_documents(tokens: np.ndarray) -> list[bytes]:
    """The documents of a token stream: byte runs each closed by the EOD token."""
    assert len(tokens) and tokens[-1] == EOD
    cuts = np.flatnonzero(tokens == EOD)
    starts = np.concatenate([[0], cuts[:-1] + 1])
    return [bytes(tokens[s:e].astype(np.uint8).tolist()) for s, e in zip(starts, cuts)]


@pytest.fixture
def corpus_dir(tmp_path):
    root = tmp_path / "corpus"
    root.mkdir()
    return root, write_corpus(root)


def test_ingest_folder_counts_and_separators(corpus_dir, tmp_path):
    root, docs = corpus_dir
    said = []
    summary = ingest([str(root)], tmp_path / "out", Settings(val_fraction=0.25, shard_bytes=300), say=said.append)
    expected_bytes = sum(len(d.encode()) for d in docs)
    totals = summary.totals
    assert totals["train"]["documents"] + totals["val"]["documents"] == len(docs)
    assert totals["train"]["bytes"] + totals["val"]["bytes"] == expected_bytes
    # One token per byte, plus one end-of-document token per document.
    assert totals["train"]["tokens"] + totals["val"]["tokens"] == expected_bytes + len(docs)
    assert totals["val"]["documents"] > 0 and totals["train"]["documents"] > totals["val"]["documents"]
    assert [path for path, _ in summary.bad_files] == [str((root / "image.bin").resolve())]
    assert any("skipped 1 files that are not text" in line and "image.bin" in line for line in said)

    corpus = Corpus(tmp_path / "out")
    assert corpus.dtype == "uint16" and corpus.vocab_size == 257 and summary.shards > 2
    found = []
    for split in ("train", "val"):
        stream = corpus.stream(split)
        tokens = stream.read(0, len(stream))
        assert len(tokens) == totals[split]["tokens"] == corpus.count(split, "tokens")
        found += [d.decode("utf-8") for d in split_documents(tokens)]
    assert sorted(found) == sorted(docs)


def test_workers_write_the_same_shards(corpus_dir, tmp_path):
    root, _ = corpus_dir
    settings = Settings(val_fraction=0.3, seed=4, shard_bytes=200)
    one = ingest([str(root)], tmp_path / "one", settings, say=lambda _: None)
    two = ingest([str(root)], tmp_path / "two", settings, workers=2, say=lambda _: None)
    assert one.totals == two.totals
    for split in ("train", "val"):
        a, b = Corpus(tmp_path / "one").stream(split), Corpus(tmp_path / "two").stream(split)
        assert np.array_equal(a.read(0, len(a)), b.read(0, len(b)))
    # Another seed holds out other documents.
    other = ingest([str(root)], tmp_path / "three", Settings(val_fraction=0.3, seed=5, shard_bytes=200),
                   say=lambda _: None)
    assert other.totals != one.totals


def test_resume_writes_nothing_twice(corpus_dir, tmp_path, monkeypatch):
    root, _ = corpus_dir
    settings = Settings(val_fraction=0.25, shard_bytes=250)
    out = tmp_path / "out"
    real = ingest_module._tokenize_shard
    written = []

    def interrupted(job):
        if job.index == 2:
            raise KeyboardInterrupt
        written.append(job.index)
        return real(job)

    monkeypatch.setattr(ingest_module, "_tokenize_shard", interrupted)
    with pytest.raises(KeyboardInterrupt):
        ingest([str(root)], out, settings, say=lambda _: None)
    assert written == [0, 1] and not (out / "index.json").exists()
    before = {p.name: p.stat().st_mtime_ns for p in (out / "shards").iterdir()}

    def counted(job):
        written.append(job.index)
        return real(job)

    monkeypatch.setattr(ingest_module, "_tokenize_shard", counted)
    said = []
    summary = ingest([str(root)], out, settings, say=said.append)
    assert summary.written == list(range(2, summary.shards)) and written[2:] == summary.written
    assert "2 already written, skipped" in said[0]
    for name, mtime in before.items():
        assert (out / "shards" / name).stat().st_mtime_ns == mtime, name
    # The resumed corpus is the one an uninterrupted run writes.
    fresh = ingest([str(root)], tmp_path / "fresh", settings, say=lambda _: None)
    assert fresh.totals == summary.totals
    for split in ("train", "val"):
        a, b = Corpus(out).stream(split), Corpus(tmp_path / "fresh").stream(split)
        assert np.array_equal(a.read(0, len(a)), b.read(0, len(b)))
    # Everything done: a third run writes no shard.
    assert ingest([str(root)], out, settings, say=lambda _: None).written == []


def test_resume_refuses_other_settings_or_changed_files(corpus_dir, tmp_path):
    root, _ = corpus_dir
    out = tmp_path / "out"
    ingest([str(root)], out, Settings(val_fraction=0.25), say=lambda _: None)
    with pytest.raises(ValueError, match="other settings"):
        ingest([str(root)], out, Settings(val_fraction=0.5), say=lambda _: None)
    (root / "sub" / "doc0.txt").write_text("changed")
    with pytest.raises(ValueError, match="other input files, or files that have changed since"):
        ingest([str(root)], out, Settings(val_fraction=0.25), say=lambda _: None)


def test_bpe_tokenizer_json_and_include_exclude(corpus_dir, tmp_path):
    root, docs = corpus_dir
    path = train_bpe(docs, tmp_path / "bpe" / "tokenizer.json", vocab_size=300).name
    summary = ingest([str(root)], tmp_path / "out", Settings(tokenizer=path, val_fraction=0.3),
                     include=("*.txt",), exclude=("sub/deeper/*",), say=lambda _: None)
    assert summary.bad_files == []
    chosen = [d for i, d in enumerate(docs[:23]) if i % 3 == 0]  # sub/doc*.txt (empty.txt has no document)
    corpus = Corpus(tmp_path / "out")
    assert (tmp_path / "out" / "tokenizer.json").is_file()
    tokenizer = corpus.tokenizer()
    texts = []
    for split in ("train", "val"):
        stream = corpus.stream(split)
        tokens = stream.read(0, len(stream)).tolist()
        assert tokens[-1] == tokenizer.eod_id
        text = tokenizer.decode(tokens)  # EOD dropped
        texts.append(text)
        assert corpus.count(split, "bytes") == len(text.encode())
    assert sum(summary.totals[s]["documents"] for s in ("train", "val")) == len(chosen)
    assert sorted("".join(texts)) == sorted("".join(chosen))
    # The folder's tokenizer replaced by another one: refused, not read with the wrong ids.
    train_bpe(docs, tmp_path / "out" / "tokenizer.json", vocab_size=290)
    with pytest.raises(ValueError, match="but the shards were written with 300 and 0; ingest the corpus again"):
        Corpus(tmp_path / "out").tokenizer()


def test_large_jsonl_is_split_at_line_starts(tmp_path):
    rng = random.Random(3)
    lines = [random_text(rng, rng.randrange(1, 60)) for _ in range(101)]
    path = tmp_path / "big.jsonl"
    path.write_text("".join(json.dumps({"body": t}) + "\n" for t in lines))
    pieces = split_file(path, piece_bytes=700)
    assert len(pieces) > 3 and pieces[0].start == 0 and pieces[-1].end == path.stat().st_size
    assert all(a.end == b.start for a, b in zip(pieces, pieces[1:]))
    read = [text for piece in pieces for _, text in read_documents(piece, text_field="body")]
    assert read == lines
    summary = ingest([str(path)], tmp_path / "out", Settings(text_field="body", val_fraction=0.2, shard_bytes=700),
                     say=lambda _: None)
    assert summary.shards == len(pieces)
    assert sum(t["documents"] for t in summary.totals.values()) == len(lines)


def test_bad_input_errors(corpus_dir, tmp_path):
    root, _ = corpus_dir
    with pytest.raises(ValueError, match=r"image.bin: binary file \(NUL bytes\).*--bad-files skip"):
        ingest([str(root)], tmp_path / "a", bad_files="error", say=lambda _: None)
    (tmp_path / "latin1.txt").write_bytes("caf\xe9".encode("latin-1"))
    with pytest.raises(ValueError, match=r"latin1.txt: not UTF-8 text \(byte 0xe9 at offset 3\)"):
        ingest([str(tmp_path / "latin1.txt")], tmp_path / "b", bad_files="error", say=lambda _: None)
    with pytest.raises(ValueError, match=r"empty corpus: no document with text in 2 input files \(1 skipped"):
        ingest([str(root / "empty.txt"), str(root / "image.bin")], tmp_path / "c", say=lambda _: None)
    (tmp_path / "bad.jsonl").write_text('{"text": "fine"}\n{"text": oops}\n')
    with pytest.raises(ValueError, match="bad.jsonl: byte 17: not a JSON line"):
        list(read_documents(Piece(str(tmp_path / "bad.jsonl"), 35), text_field="text"))
    with pytest.raises(ValueError, match="no string field 'content'"):
        list(read_documents(Piece(str(root / "records.jsonl"), 10), text_field="content"))
    with pytest.raises(ValueError, match="the val split got none of the 1 documents; raise --val-fraction"):
        ingest([str(root / "sub" / "doc0.txt")], tmp_path / "d", Settings(val_fraction=0.01), say=lambda _: None)
    with pytest.raises(ValueError, match="no such file or folder"):
        ingest([str(tmp_path / "nowhere")], tmp_path / "e", say=lambda _: None)
    with pytest.raises(ValueError, match="no file matches"):
        ingest([str(tmp_path / "*.nothing")], tmp_path / "f", say=lambda _: None)


def test_vocabulary_too_large_for_the_dtype(corpus_dir, tmp_path):
    from tokenizers import Tokenizer, models, pre_tokenizers

    root, _ = corpus_dir
    vocab = {f"w{i}": i for i in range(70_000)} | {"[UNK]": 70_000, "<|endoftext|>": 70_001}
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer.save(str(tmp_path / "big.json"))
    with pytest.raises(ValueError, match="--dtype uint16: holds token ids below 65536, but the tokenizer has 70002"):
        ingest([str(root)], tmp_path / "out", Settings(tokenizer=str(tmp_path / "big.json"), dtype="uint16"),
               say=lambda _: None)
    ingest([str(root / "sub")], tmp_path / "out32", Settings(tokenizer=str(tmp_path / "big.json"), val_fraction=0.3),
           say=lambda _: None)
    assert Corpus(tmp_path / "out32").dtype == "uint32"


def test_data_text_and_train_tokenizer_commands(corpus_dir, tmp_path, capsys):
    root, _ = corpus_dir
    bpe = tmp_path / "tok" / "tokenizer.json"
    assert main(["data", "train-tokenizer", str(root), "--out", str(bpe), "--vocab-size", "280"]) == 0
    out = capsys.readouterr().out
    assert "byte-level BPE, 280 tokens" in out and "skipped 1 files that are not text" in out
    code = main(["data", "text", f"{root}/**/*.txt", str(root / "records.jsonl"), "--out", str(tmp_path / "data"),
                 "--tokenizer", str(bpe), "--val-fraction", "0.3", "--workers", "2", "--shard-mib", "0.0002"])
    out = capsys.readouterr().out
    assert code == 0 and "train: " in out and "val: " in out and "index.json" in out
    assert main(["data", "text", str(root), "--out", str(tmp_path / "x"), "--dtype", "uint16", "--tokenizer",
                 str(tmp_path / "nope.json")]) == 2
    assert "error: --tokenizer:" in capsys.readouterr().err


def test_validation_split_does_not_depend_on_where_the_corpus_lies(tmp_path):
    """Split decisions hash each file's path below the inputs' common folder: the same
    corpus in two places (and named by its folder or by its files) holds out the same
    documents; an ingestion folder made under another split rule is refused."""
    splits = []
    for place in ("here", "elsewhere/deeper"):
        root = tmp_path / place / "corpus"
        root.mkdir(parents=True)
        write_corpus(root)
        for k, inputs in enumerate(([str(root)], sorted(str(p) for p in root.rglob("*") if p.is_file()))):
            out = tmp_path / place / f"out{k}"
            ingest(inputs, out, Settings(val_fraction=0.3), say=lambda _: None)
            corpus = Corpus(out)
            splits.append({s: sorted(split_documents(corpus.stream(s).read(0, len(corpus.stream(s))))) for s in
                           ("train", "val")})
    assert all(split == splits[0] for split in splits[1:])
    assert splits[0]["val"] and splits[0]["train"]
    plan = json.loads((tmp_path / "here" / "out0" / "plan.json").read_text())
    del plan["val_split"]
    (tmp_path / "here" / "out0" / "plan.json").write_text(json.dumps(plan))
    with pytest.raises(ValueError, match="an earlier version's rule for the validation split"):
        ingest([str(tmp_path / "here" / "corpus")], tmp_path / "here" / "out0", Settings(val_fraction=0.3),
               say=lambda _: None)
