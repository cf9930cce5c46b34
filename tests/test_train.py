"""The generic training module: optimizer groups, LR schedule, deterministic data order,
exact validation metrics, checkpoints and exact resume."""
from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import pytest
import torch
from torch.utils.data import DataLoader, IterableDataset

from seqmamba.config import ConfigError, OptimizerConfig, ScheduleConfig, load_config, to_experiment
from seqmamba.models import MambaLM, ModelConfig
from seqmamba.tasks import Report, StepOutput, register_task
from seqmamba.train import IndexPermutation, LRSchedule, TrainStream, build_optimizer, build_scheduler, param_groups
from seqmamba.train import check_resumable, train
from seqmamba.train.data import EvalStream, ShardSampler
from token_data import IndexedSequences, TokenTask, TokenTaskConfig

# ---------------------------------------------------------------- a recording task


@dataclass
class RecordingConfig(TokenTaskConfig):
    name: str = "test_recording"
    seq_len: int = 9
    train_size: int = 23
    val_size: int = 13
    vocab: int = 7


@register_task
class RecordingTask(TokenTask):
    """Next-token prediction on random tokens that records every training batch."""

    name = "test_recording"
    config_class = RecordingConfig
    seen: ClassVar[list[list[int]]] = []

    def step(self, model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> StepOutput:
        if model.training:
            RecordingTask.seen.append(batch["index"].tolist())
        return super().step(model, batch)

    def evaluate(self, model: torch.nn.Module, device: torch.device) -> Report:
        val = self.datasets()["val"]
        batch = {key: torch.stack([val[i][key] for i in range(len(val))]).to(device) for key in ("input_ids", "labels")}
        out = super().step(model, batch)
        return Report(title="recording", metrics={"val_loss": out.loss.item()})


CONFIG = """\
name: {name}
model: {{d_model: 8, n_layer: 2, d_state: 4}}
task: {{name: test_recording, batch_size: 3, eval_batch_size: 4}}
optimizer: {{lr: 5.0e-3, weight_decay: 0.1}}
schedule: {{warmup_steps: 2, min_lr: 1.0e-4, decay_steps: 10}}
trainer:
  max_steps: 10
  val_every_n_steps: 4
  log_every_n_steps: 1
  accelerator: cpu
  devices: 1
  progress_bar: false
  output_dir: {output_dir}
"""


def run_training(tmp: Path, name: str, *overrides: str):
    path = tmp / f"{name}.yaml"
    path.write_text(CONFIG.format(name=name, output_dir=tmp / "runs"))
    RecordingTask.seen = []
    result = train(load_config(path, list(overrides)))
    return result, list(RecordingTask.seen)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A straight 10-step run, and a run stopped at step 4 then resumed to step 10."""
    tmp = tmp_path_factory.mktemp("train")
    straight = run_training(tmp, "straight")
    first_half = run_training(tmp, "split", "trainer.max_steps=4")
    resumed = run_training(tmp, "split", "trainer.resume_from=last")
    return {"tmp": tmp, "straight": straight, "first_half": first_half, "resumed": resumed}


# ---------------------------------------------------------------- training runs


def test_run_writes_checkpoints_config_logs_and_report(runs):
    result, seen = runs["straight"]
    assert len(seen) == 10  # one batch per step
    assert result.last_checkpoint.is_file()
    assert result.best_checkpoint is not None and result.best_checkpoint.name.startswith("best-step")
    assert torch.load(result.last_checkpoint, weights_only=True)["global_step"] == 10
    saved = load_config(result.run_dir / "config.yaml")
    assert to_experiment(saved).trainer.max_steps == 10
    assert (result.run_dir / "eval.txt").read_text().startswith("recording\nval_loss: ")
    assert list((result.run_dir / "logs" / "tensorboard").glob("version_0/events.*"))
    rows = list(csv.DictReader(open(result.run_dir / "logs" / "csv" / "version_0" / "metrics.csv")))
    assert any(row["train/lr"] for row in rows) and any(row["val/loss"] for row in rows)


def test_resume_continues_at_the_same_step_and_data_position(runs):
    _, straight_seen = runs["straight"]
    _, first_seen = runs["first_half"]
    resumed, resumed_seen = runs["resumed"]
    assert first_seen == straight_seen[:4]
    assert resumed_seen == straight_seen[4:]
    # The data order crosses an epoch boundary (23 items, 3 per batch) and reshuffles.
    flat = [i for batch in straight_seen for i in batch]
    assert sorted(flat[:23]) == list(range(23)) and flat[23:30] != flat[:7]
    assert torch.load(resumed.last_checkpoint, weights_only=True)["global_step"] == 10


def test_resumed_run_reaches_the_same_weights(runs):
    straight = torch.load(runs["straight"][0].last_checkpoint, weights_only=True)
    resumed = torch.load(runs["resumed"][0].last_checkpoint, weights_only=True)
    assert straight["state_dict"].keys() == resumed["state_dict"].keys()
    for key, value in straight["state_dict"].items():
        assert torch.equal(value, resumed["state_dict"][key]), key


def test_validation_metrics_are_exact_totals_over_counts(runs):
    result, _ = runs["straight"]
    rows = list(csv.DictReader(open(result.run_dir / "logs" / "csv" / "version_0" / "metrics.csv")))
    logged = float([row for row in rows if row["val/loss"]][-1]["val/loss"])
    # The last validation saw the final weights; 13 items in batches of 4 (4+4+4+1).
    module_state = torch.load(result.last_checkpoint, weights_only=True)["state_dict"]
    model = MambaLM(ModelConfig(d_model=8, n_layer=2, vocab_size=7, d_state=4)).eval()
    model.load_state_dict({k.removeprefix("model."): v for k, v in module_state.items()})
    task = RecordingTask(RecordingConfig())
    with torch.no_grad():
        report = task.evaluate(model, torch.device("cpu"))  # the whole val set as one batch
    assert logged == pytest.approx(report.metrics["val_loss"], rel=1e-5)


def test_fresh_run_refuses_a_used_run_directory(runs):
    tmp = runs["tmp"]
    path = tmp / "again.yaml"
    path.write_text(CONFIG.format(name="straight", output_dir=tmp / "runs"))
    with pytest.raises(ConfigError, match="trainer.resume_from=last.*trainer.overwrite=true"):
        train(load_config(path))


def test_resume_refuses_another_model(runs):
    path = runs["tmp"] / "straight.yaml"
    experiment = to_experiment(load_config(path, ["model.d_model=16"]))
    with pytest.raises(ConfigError, match="model.d_model: checkpoint 8, config 16"):
        check_resumable(runs["straight"][0].last_checkpoint, experiment)


# ---------------------------------------------------------------- optimizer and schedule


def test_param_groups_exclude_norms_biases_A_log_and_D_from_weight_decay():
    model = MambaLM(ModelConfig(d_model=8, n_layer=2, vocab_size=11, d_state=4, bias=True))
    decay, no_decay = param_groups(model, 0.1)
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    assert all(name.endswith(("in_proj.weight", "out_proj.weight", "x_proj.weight", "dt_proj.weight",
                              "conv1d.weight", "embedding.weight")) for name in decay["param_names"])
    assert any(name.endswith("embedding.weight") for name in decay["param_names"])
    for suffix in ("A_log", ".D", "norm.weight", "norm_f.weight", "conv1d.bias", "dt_proj.bias", "in_proj.bias"):
        assert any(name.endswith(suffix) for name in no_decay["param_names"]), suffix
    named = dict(model.named_parameters())
    assert len(decay["params"]) + len(no_decay["params"]) == len(named)  # tied head counted once
    optimizer = build_optimizer(model, OptimizerConfig(lr=1e-3, weight_decay=0.25))
    assert [group["weight_decay"] for group in optimizer.param_groups] == [0.25, 0.0]


def test_cosine_schedule_warmup_peak_and_end():
    schedule = LRSchedule(ScheduleConfig(warmup_steps=4, min_lr=1e-4), lr=1e-2, max_steps=20)
    assert schedule.lr_at(0) == pytest.approx(1e-2 * 1 / 5)
    assert schedule.lr_at(3) == pytest.approx(1e-2 * 4 / 5)
    assert schedule.lr_at(4) == pytest.approx(1e-2)  # peak at the end of warmup
    assert schedule.lr_at(12) == pytest.approx(1e-4 + (1e-2 - 1e-4) * 0.5)  # half-way down the cosine
    assert schedule.lr_at(20) == pytest.approx(1e-4)
    assert schedule.lr_at(35) == pytest.approx(1e-4)
    values = [schedule.lr_at(s) for s in range(4, 21)]
    assert all(a > b for a, b in zip(values, values[1:]))


def test_constant_schedule_and_scheduler_steps():
    schedule = LRSchedule(ScheduleConfig(name="constant", warmup_steps=3), lr=0.5, max_steps=9)
    assert [schedule.lr_at(s) for s in (0, 2, 3, 8)] == pytest.approx([0.125, 0.375, 0.5, 0.5])
    param = torch.nn.Parameter(torch.randn(3, 5))
    optimizer = torch.optim.AdamW([param], lr=0.5)
    scheduler = build_scheduler(optimizer, ScheduleConfig(warmup_steps=3, min_lr=0.05), lr=0.5, max_steps=9)
    seen = []
    for _ in range(9):
        seen.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    expected = LRSchedule(ScheduleConfig(warmup_steps=3, min_lr=0.05), lr=0.5, max_steps=9)
    assert seen == pytest.approx([expected.lr_at(s) for s in range(9)])
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.05)


def test_restored_scheduler_follows_the_new_config():
    param = torch.nn.Parameter(torch.randn(3, 5))
    old = build_scheduler(torch.optim.AdamW([param], lr=0.5), ScheduleConfig(warmup_steps=2), lr=0.5, max_steps=10)
    for _ in range(6):
        old.optimizer.step()
        old.step()
    optimizer = torch.optim.AdamW([param], lr=0.5)
    longer = build_scheduler(optimizer, ScheduleConfig(warmup_steps=2), lr=0.5, max_steps=30)
    longer.load_state_dict(old.state_dict())
    assert longer.last_epoch == 6
    assert optimizer.param_groups[0]["lr"] == pytest.approx(LRSchedule(ScheduleConfig(warmup_steps=2), lr=0.5,
                                                                        max_steps=30).lr_at(6))


# ---------------------------------------------------------------- data order


@pytest.mark.parametrize("n", [1, 2, 7, 100, 1001])
def test_index_permutation_is_a_bijection(n):
    values = [IndexPermutation(n, seed=3, epoch=1)[i] for i in range(n)]
    assert sorted(values) == list(range(n))


def test_index_permutation_depends_on_seed_and_epoch():
    first = [IndexPermutation(97, seed=0, epoch=0)[i] for i in range(97)]
    assert first != list(range(97))
    assert first != [IndexPermutation(97, seed=0, epoch=1)[i] for i in range(97)]
    assert first != [IndexPermutation(97, seed=1, epoch=0)[i] for i in range(97)]


class CountingStream(IterableDataset):
    """A finite iterable: 0, 1, ..., size - 1 (restarted by the train stream)."""

    def __init__(self, size: int) -> None:
        self.size = size

    def __iter__(self):
        return iter(torch.arange(self.size) * 10 + 3)


def take(stream, count: int) -> list[list[int]]:
    """The first ``count`` batches as lists of item indices (or values)."""
    iterator = iter(stream)
    batches = [next(iterator) for _ in range(count)]
    return [(b["index"] if isinstance(b, dict) else b).tolist() for b in batches]


@pytest.mark.parametrize("dataset", [IndexedSequences(17, seq_len=3, vocab=5, seed=4), CountingStream(17)],
                         ids=["map", "iterable"])
def test_train_stream_resumes_at_any_batch(dataset):
    def batches(**kwargs):
        stream = TrainStream(dataset, batch_size=3, seed=9, **kwargs)
        return take(stream, 12 - kwargs.get("start_batch", 0))

    full = batches()
    assert batches(start_batch=5) == full[5:]
    # Two ranks split each global batch position range between them, without overlap.
    # Two ranks take alternate slices of the same stream: interleaved, they are it.
    rank0, rank1 = batches(rank=0, world_size=2), batches(rank=1, world_size=2)
    interleaved = [i for pair in zip(rank0, rank1) for batch in pair for i in batch]
    assert interleaved[:36] == [i for batch in full for i in batch]


def test_train_stream_order_does_not_depend_on_workers():
    dataset = IndexedSequences(29, seq_len=5, vocab=7, seed=2)
    stream = TrainStream(dataset, batch_size=4, seed=1, start_batch=3)
    alone = take(DataLoader(stream, batch_size=None, num_workers=0), 9)
    workers = take(DataLoader(stream, batch_size=None, num_workers=2), 9)
    assert alone == workers


def test_eval_shards_cover_every_item_once():
    shards = [list(ShardSampler(13, rank=r, world_size=3)) for r in range(3)]
    assert sorted(i for shard in shards for i in shard) == list(range(13))
    batches = [b.tolist() for r in range(2) for b in EvalStream(CountingStream(11), batch_size=3, rank=r, world_size=2)]
    assert sorted(i for b in batches for i in b) == [i * 10 + 3 for i in range(11)]


def test_lr_logged_follows_the_schedule(runs):
    result, _ = runs["straight"]
    rows = list(csv.DictReader(open(result.run_dir / "logs" / "csv" / "version_0" / "metrics.csv")))
    lrs = {int(row["step"]): float(row["train/lr"]) for row in rows if row["train/lr"]}
    schedule = LRSchedule(ScheduleConfig(warmup_steps=2, min_lr=1e-4, decay_steps=10), lr=5e-3, max_steps=10)
    assert lrs and all(math.isclose(lr, schedule.lr_at(step), rel_tol=1e-5) for step, lr in lrs.items())
