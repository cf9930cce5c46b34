"""Training on several processes: DDP on the CPU (gloo) gives the single-process losses
for the same global batch, a checkpoint written by two processes resumes in one, and
the FSDP configuration path. With two or more GPUs, the same checks run FSDP (and the
Triton kernels) on them."""
from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from seqmamba.config import ConfigError, TrainerConfig, load_config, to_container
from seqmamba.models import Block
from seqmamba.train import SequenceModule, param_groups, train
from seqmamba.train.module import PLACEMENT_KEY
from seqmamba.train.strategy import accelerator_and_strategy, planned_world_size

CONFIG = """\
name: {name}
model: {{d_model: 16, n_layer: 2, d_state: 4}}
task:
  name: induction_heads
  vocab_size: 6
  seq_len: 17
  batch_size: 4
  eval_batch_size: 3
  val_size: 11
  test_size: 4
  test_lengths: [17]
optimizer: {{lr: 1.0e-2, weight_decay: 0.1}}
schedule: {{warmup_steps: 1, min_lr: 1.0e-3, decay_steps: 6}}  # the same for runs of 3 and 6 steps
trainer:
  max_steps: 6
  val_every_n_steps: 3
  limit_val_batches: 3
  log_every_n_steps: 1
  accelerator: {accelerator}
  devices: 1
  progress_bar: false
  evaluate: false
  output_dir: {output_dir}
"""


def write_config(tmp: Path, name: str, *, accelerator: str = "cpu") -> Path:
    path = tmp / f"{name}.yaml"
    path.write_text(CONFIG.format(name=name, accelerator=accelerator, output_dir=tmp / "runs"))
    return path


def run_cli(*args: str) -> None:
    """``seqmamba train ...`` in a fresh process (Lightning then starts the other ranks)."""
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    done = subprocess.run([sys.executable, "-m", "seqmamba.cli", "train", *args], env=env, capture_output=True,
                          text=True, timeout=240)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]


def logged(run_dir: Path, key: str, *, version: int = 0) -> dict[int, float]:
    """``{step: value}`` of one logged metric."""
    with open(run_dir / "logs" / "csv" / f"version_{version}" / "metrics.csv") as f:
        return {int(row["step"]): float(row[key]) for row in csv.DictReader(f) if row.get(key)}


def weights(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, map_location="cpu", weights_only=True)["state_dict"]


def assert_close_weights(a: Path, b: Path, *, atol: float) -> None:
    left, right = weights(a), weights(b)
    assert left.keys() == right.keys()
    for key in left:
        torch.testing.assert_close(left[key], right[key], atol=atol, rtol=0, msg=key)


@pytest.fixture(scope="module")
def cpu_runs(tmp_path_factory):
    """Six steps in one process (global batch 4); three steps on two DDP processes
    (2 per process), resumed for three more in one process (4 per step)."""
    tmp = tmp_path_factory.mktemp("distributed")
    single = train(load_config(write_config(tmp, "single")))
    run_cli(str(write_config(tmp, "ddp")), "trainer.devices=2", "trainer.strategy=ddp", "task.batch_size=2",
            "trainer.max_steps=3")
    ddp_dir = tmp / "runs" / "ddp"
    written_by_two = weights(ddp_dir / "checkpoints" / "last.ckpt")
    placement = torch.load(ddp_dir / "checkpoints" / "last.ckpt", weights_only=True)[PLACEMENT_KEY]
    resumed = train(load_config(write_config(tmp, "ddp"), ["trainer.resume_from=last"]))
    return {"tmp": tmp, "single": single, "ddp_dir": ddp_dir, "written_by_two": written_by_two,
            "placement": placement, "resumed": resumed}


def test_ddp_on_two_processes_logs_the_single_process_losses(cpu_runs):
    single = logged(cpu_runs["single"].run_dir, "train/loss")
    ddp = logged(cpu_runs["ddp_dir"], "train/loss")
    assert sorted(ddp) == [0, 1, 2]
    for step, loss in ddp.items():
        assert loss == pytest.approx(single[step], rel=1e-5, abs=1e-6), step
    # The losses move, so equal curves are not equal constants.
    assert len({round(v, 4) for v in single.values()}) > 3
    # Validation at step 3 ran on the same 9 items (limit 3 batches of 3), split over two.
    assert logged(cpu_runs["ddp_dir"], "val/loss")[2] == pytest.approx(logged(cpu_runs["single"].run_dir, "val/loss")[2],
                                                                       rel=1e-5)


def test_a_checkpoint_of_two_processes_resumes_in_one(cpu_runs):
    assert cpu_runs["placement"] == {"world_size": 2, "batch_size": 2, "accumulate_grad_batches": 1}
    single = logged(cpu_runs["single"].run_dir, "train/loss")
    # (Lightning's logger step after a resume is off by one; the order is what counts.)
    resumed = [loss for _, loss in sorted(logged(cpu_runs["ddp_dir"], "train/loss", version=1).items())]
    assert resumed == pytest.approx([single[step] for step in (3, 4, 5)], rel=1e-5, abs=1e-6)
    assert_close_weights(cpu_runs["resumed"].last_checkpoint, cpu_runs["single"].last_checkpoint, atol=2e-5)
    # Resuming changed them: the comparison is not of the checkpoint with itself.
    moved = weights(cpu_runs["resumed"].last_checkpoint)
    assert any(not torch.equal(moved[k], v) for k, v in cpu_runs["written_by_two"].items())


def test_resume_refuses_another_global_batch(cpu_runs):
    path = write_config(cpu_runs["tmp"], "ddp")
    cfg = load_config(path, ["trainer.resume_from=last", "trainer.max_steps=8", "task.batch_size=2"])
    with pytest.raises(ConfigError, match=r"global batch of 4 .* this run has 2 .*task.batch_size"):
        train(cfg)


def test_fsdp_is_refused_on_the_cpu_with_the_way_out(tmp_path):
    cfg = load_config(write_config(tmp_path, "fsdp"), ["trainer.strategy=fsdp"])
    with pytest.raises(ConfigError, match="fsdp .* cannot run on the CPU.*trainer.strategy=ddp"):
        train(cfg)
    with pytest.raises(ConfigError, match="trainer.fsdp.sharding_strategy: must be one of FULL_SHARD"):
        load_config(write_config(tmp_path, "fsdp"), ["trainer.fsdp.sharding_strategy=SHARD_ALL"])


def test_fsdp_strategy_wraps_blocks_and_writes_full_checkpoints(tmp_path, monkeypatch):
    from torch.distributed.fsdp import ShardingStrategy

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # the strategy object needs no GPU to exist
    cfg = load_config(write_config(tmp_path, "fsdp", accelerator="auto"),
                      ["trainer.strategy=fsdp", "trainer.fsdp.sharding_strategy=SHARD_GRAD_OP"])
    accelerator, strategy = accelerator_and_strategy(cfg.trainer)
    assert accelerator == "gpu"
    assert strategy.sharding_strategy == ShardingStrategy.SHARD_GRAD_OP
    assert strategy._state_dict_type == "full"
    assert strategy.kwargs["auto_wrap_policy"]._module_classes == {Block}


def test_planned_world_size_counts_processes():
    assert planned_world_size(TrainerConfig(devices="3", accelerator="cpu")) == 3
    assert planned_world_size(TrainerConfig(devices="0,2", accelerator="gpu")) == 2
    assert planned_world_size(TrainerConfig(devices="auto", accelerator="cpu")) == 1


def test_optimizer_groups_survive_flattened_parameters(tmp_path):
    """FSDP turns every parameter into a flat 1-D view of its shard; weight decay must
    still follow the layer each parameter belongs to."""
    module = SequenceModule(to_container(load_config(write_config(tmp_path, "flat"))))
    expected = [group["param_names"] for group in param_groups(module.model, 0.1)]
    for param in module.model.parameters():
        param.data = param.data.reshape(-1)
    optimizer = module.configure_optimizers()["optimizer"]
    assert [group["param_names"] for group in optimizer.param_groups] == expected
    assert expected[0] and expected[1]
    names = dict(module.model.named_parameters())
    assert all(names[name].ndim == 1 for name in expected[0])  # a shape rule would now decay nothing


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="FSDP on two GPUs needs two CUDA devices")
def test_fsdp_on_two_gpus_matches_one_gpu_and_resumes_on_one(tmp_path):
    """FSDP (Triton kernels on each GPU) against one GPU for the same global batch; its
    full checkpoint resumes on one GPU without FSDP."""
    single = train(load_config(write_config(tmp_path, "gpu_single", accelerator="gpu")))
    run_cli(str(write_config(tmp_path, "gpu_fsdp", accelerator="gpu")), "trainer.devices=2",
            "trainer.strategy=fsdp", "task.batch_size=2", "trainer.max_steps=3", "trainer.evaluate=true")
    fsdp_dir = tmp_path / "runs" / "gpu_fsdp"
    reference = logged(single.run_dir, "train/loss")
    for step, loss in logged(fsdp_dir, "train/loss").items():
        assert loss == pytest.approx(reference[step], rel=1e-3), step
    assert (fsdp_dir / "eval.txt").read_text().startswith("Induction heads")
    resumed = train(load_config(write_config(tmp_path, "gpu_fsdp", accelerator="gpu"), ["trainer.resume_from=last"]))
    assert_close_weights(resumed.last_checkpoint, single.last_checkpoint, atol=1e-3)
