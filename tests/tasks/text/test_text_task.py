"""text_pretrain: windows (deterministic, resumable), bits per byte on a hand-computed
case, the config's checks, and a short training run that lowers validation bits per
byte, then generation of text."""
from __future__ import annotations

import csv
import importlib.util
import json
import math
import random
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from seqmamba.cli import main
from seqmamba.config import load_config, to_experiment
from seqmamba.models import ModelConfig
from seqmamba.tasks import get_task
from seqmamba.tasks.text import TextPretrainConfig, bits_per_byte
from seqmamba.tasks.text.ingest import Settings, ingest
from seqmamba.tasks.text.shards import Corpus
from seqmamba.tasks.text.windows import Windows
from seqmamba.train import TrainStream

EOD = 256


def hand_corpus(root, splits: dict[str, list[list[int]]]):
    """A byte-tokenizer corpus folder written by hand in the documented format."""
    (root / "shards").mkdir(parents=True)
    index = {"format": 1, "tokenizer": "byte", "eod_token": "<|endoftext|>", "eod_id": EOD, "vocab_size": 257,
             "dtype": "uint16", "splits": {}}
    for split, shards in splits.items():
        index["splits"][split] = []
        for k, tokens in enumerate(shards):
            name = f"shards/{split}-{k:05d}.bin"
            np.asarray(tokens, dtype=np.uint16).tofile(root / name)
            index["splits"][split].append({"file": name, "tokens": len(tokens), "documents": tokens.count(EOD),
                                           "bytes": sum(t < 256 for t in tokens)})
    (root / "index.json").write_text(json.dumps(index))
    return root


def random_tokens(rng: random.Random, n: int) -> list[int]:
    return [rng.randrange(257) for _ in range(n)]


@pytest.fixture
def corpus(tmp_path):
    rng = random.Random(0)
    return Corpus(hand_corpus(tmp_path / "c", {"train": [random_tokens(rng, 101), random_tokens(rng, 60)],
                                               "val": [random_tokens(rng, 37)]}))


def test_stream_reads_across_shards(corpus):
    stream = corpus.stream("train")
    whole = np.concatenate([np.fromfile(corpus.root / s.file, dtype=np.uint16) for s in corpus.splits["train"]])
    assert len(stream) == 161
    for start, count in ((0, 161), (95, 13), (101, 7), (3, 1)):
        assert stream.read(start, count).tolist() == whole[start:start + count].tolist()


def test_windows_are_functions_of_their_index(corpus):
    stream = corpus.stream("train")
    whole = stream.read(0, len(stream))
    sequential = Windows(stream, length=9, mode="sequential")
    random_windows = Windows(stream, length=9, mode="random")
    assert len(sequential) == 160 // 9 and sequential.in_order
    assert len(random_windows) == 161 - 9 and not random_windows.in_order
    for windows, index, start in ((sequential, 11, 99), (random_windows, 97, 97), (random_windows, 151, 151)):
        item = windows[index]
        assert item["input_ids"].tolist() == whole[start:start + 9].tolist()
        assert item["labels"].tolist() == whole[start + 1:start + 10].tolist()
        assert torch.equal(item["input_ids"], windows[index]["input_ids"])
    with pytest.raises(ValueError, match=r"task.seq_len: the val split holds 37 tokens, fewer than seq_len \+ 1 = 41"):
        Windows(corpus.stream("val"), length=40, mode="random", split="val")


@pytest.mark.parametrize("mode", ["random", "sequential"])
def test_training_order_is_deterministic_and_resumes(corpus, mode):
    windows = Windows(corpus.stream("train"), length=7, mode=mode)

    def batches(seed: int, start: int, count: int) -> list[torch.Tensor]:
        stream = iter(TrainStream(windows, batch_size=5, seed=seed, start_batch=start))
        return [next(stream)["input_ids"] for _ in range(count)]

    run = batches(3, 0, 9)
    assert all(torch.equal(a, b) for a, b in zip(run, batches(3, 0, 9)))
    assert all(torch.equal(a, b) for a, b in zip(run[6:], batches(3, 6, 3)))  # a resume at batch 6
    if mode == "sequential":  # corpus order: batch b holds windows 5b .. 5b + 4
        expected = torch.stack([windows[(5 * 4 + i) % len(windows)]["input_ids"] for i in range(5)])
        assert torch.equal(run[4], expected)
        assert all(torch.equal(a, b) for a, b in zip(run, batches(4, 0, 9)))
    else:
        assert not torch.equal(run[0], batches(4, 0, 1)[0])


class Uniform(nn.Module):
    """Logits that are equal everywhere: every token has probability 1/257."""

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return torch.zeros(*ids.shape, 257)


def test_bits_per_byte_on_a_hand_computed_case(tmp_path):
    # val stream: "héllo" EOD "ab" EOD = h C3 A9 l l o EOD a b EOD (10 tokens, across two shards).
    val = [list("héllo".encode()) + [EOD], list(b"ab") + [EOD]]
    rng = random.Random(1)
    root = hand_corpus(tmp_path / "c", {"train": [random_tokens(rng, 50)], "val": val})
    task = get_task("text_pretrain")(TextPretrainConfig(data=str(root), seq_len=3, eval_batch_size=2,
                                                        eval_max_tokens=None))
    # Windows of 3 at 0, 3, 6 score the targets C3 A9 l | l o EOD | a b EOD: 9 tokens, 7 bytes,
    # each at -log2(1/257) bits: 9 * 8.005624549193879 / 7 = 10.29294584896356 bits per byte.
    report = task.evaluate(Uniform(), torch.device("cpu"))
    assert report.metrics["val_bits_per_byte"] == pytest.approx(10.29294584896356, rel=1e-6)
    assert report.metrics["val_tokens"] == 9
    assert report.metrics["val_bytes_per_token"] == pytest.approx(7 / 9)
    assert report.metrics["val_bits_per_token"] == pytest.approx(math.log2(257), rel=1e-6)
    assert report.metrics["val_perplexity"] == pytest.approx(257, rel=1e-5)
    # The training step's metric (what val/bits_per_byte logs) sums the same way.
    batch = {key: torch.stack([task.datasets()["val"][i][key] for i in range(3)]) for key in ("input_ids", "labels")}
    metric = task.step(Uniform(), batch).metrics["bits_per_byte"]
    assert int(metric.count) == 7 and float(metric.total / metric.count) == pytest.approx(10.29294584896356, rel=1e-6)
    assert task.loss_unit() == ("byte", 8 / 10)  # the whole split: 8 bytes in 10 tokens
    assert bits_per_byte(8 * math.log(2), 4) == pytest.approx(2.0)
    with pytest.raises(ValueError, match="decode to 0 bytes"):
        bits_per_byte(1.0, 0)


def test_config_errors(tmp_path):
    with pytest.raises(ValueError, match="task.windows: must be one of random, sequential"):
        TextPretrainConfig(data="x", windows="shuffled").validate()
    with pytest.raises(ValueError, match=r"task.eval_max_tokens: must be >= task.seq_len \(64\)"):
        TextPretrainConfig(data="x", seq_len=64, eval_max_tokens=10).validate()
    with pytest.raises(ValueError, match="has no index.json; build it with 'seqmamba data text"):
        get_task("text_pretrain")(TextPretrainConfig(data=str(tmp_path)))


TINY = """\
name: text_test
model: {{d_model: 16, n_layer: 1, d_state: 4}}
task: {{name: text_pretrain, data: {data}, seq_len: 32, batch_size: 8, eval_batch_size: 8, eval_max_tokens: 512}}
optimizer: {{lr: 1.0e-2, betas: [0.9, 0.95], weight_decay: 0.1}}
schedule: {{warmup_steps: 3, min_lr: 1.0e-5}}
trainer: {{max_steps: 40, val_every_n_steps: 20, limit_val_batches: 2, log_every_n_steps: 5, accelerator: cpu,
          devices: 1, progress_bar: false, output_dir: {runs}}}
"""


def load_benchmark():
    spec = importlib.util.spec_from_file_location("text_train", Path(__file__).parents[3] / "benchmarks" / "text_train.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_training_lowers_bits_per_byte_then_generates_text(tmp_path, capsys, monkeypatch):
    rng = random.Random(2)
    words = ["the", "mamba", "reads", "bytes", "état", "日本"]
    folder = tmp_path / "corpus"
    folder.mkdir()
    for i in range(60):
        (folder / f"{i}.txt").write_text(" ".join(rng.choice(words) for _ in range(rng.randrange(5, 40))) + ".\n")
    ingest([str(folder)], tmp_path / "data", Settings(val_fraction=0.2), say=lambda _: None)
    config = tmp_path / "tiny.yaml"
    config.write_text(TINY.format(data=tmp_path / "data", runs=tmp_path / "runs"))
    cfg = load_config(config)
    task = get_task("text_pretrain")(to_experiment(cfg).task)
    torch.manual_seed(cfg.trainer.seed)
    before = task.evaluate(task.build_model(ModelConfig(d_model=16, n_layer=1, d_state=4)).eval(), torch.device("cpu"))
    # Trained through benchmarks/text_train.py, which measures tokens/s and the curve.
    bench = load_benchmark()
    monkeypatch.setattr(sys, "argv", ["text_train", str(config), "--json", str(tmp_path / "run.json")])
    bench.main()
    printed = capsys.readouterr().out
    row = json.loads((tmp_path / "run.json").read_text())
    after = row["eval"]["val_bits_per_byte"]
    assert before.metrics["val_bits_per_byte"] > 7.0 and after < 0.6 * before.metrics["val_bits_per_byte"]
    curve = [p["val_bits_per_byte"] for p in row["curve"]]
    assert [p["step"] for p in row["curve"]] == [20, 40] and curve[1] < curve[0]
    with open(next((tmp_path / "runs" / "text_test" / "logs" / "csv").glob("version_*/metrics.csv"))) as handle:
        logged = [float(r["val/bits_per_byte"]) for r in csv.DictReader(handle) if r["val/bits_per_byte"]]
    assert logged == pytest.approx(curve)
    assert row["tokens_per_step"] == 8 * 32 and row["train_tokens_per_s"] > 0
    assert "| val bits per byte | " in printed and f"{curve[1]:.3f}" in printed

    capsys.readouterr()
    assert main(["generate", str(config), "ckpt=last", "prompt=the mamba", "prompt=日本", "max_new_tokens=12",
                 "temperature=0"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("--- sample 0 ---\nthe mamba") and "--- sample 1 ---\n日本" in out
    prompt = task.encode_prompt("é")
    assert prompt.tolist() == [EOD, 0xC3, 0xA9]
    ids = torch.tensor([EOD, 0xC3, 0xA9, ord("x"), EOD, ord("y")])
    assert task.decode_output(ids, prompt_length=3, output_dir=tmp_path, index=4) == "--- sample 4 ---\néx"
