"""Token ids checked on the host: ``Task.check_batch`` before each batch's copy to the
device, the loss's own check skipped inside the training step
(``labels_checked_on_host``), and on CUDA a training step that never waits on the GPU."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import lightning as L
import pytest
import torch

import seqmamba.kernels.cross_entropy.op as cross_entropy_op
from seqmamba.config import load_config
from seqmamba.kernels.cross_entropy.op import check_labels_in_range, labels_checked_on_host
from seqmamba.tasks import IGNORE_INDEX, StepOutput, register_task
from seqmamba.tasks.base import check_ids
from seqmamba.train import train
from token_data import TokenTask, TokenTaskConfig, write_config


@dataclass
class HostCheckConfig(TokenTaskConfig):
    name: str = "test_host_check"
    seq_len: int = 17


@register_task
class HostCheckTask(TokenTask):
    """Next-token prediction that records, for each step, whether the loss's label
    check was left to the host."""

    name = "test_host_check"
    config_class = HostCheckConfig
    checked_on_host: ClassVar[list[bool]] = []

    def step(self, model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> StepOutput:
        HostCheckTask.checked_on_host.append(cross_entropy_op._labels_checked_on_host)
        return super().step(model, batch)


def run(tmp: Path, *overrides: str, accelerator: str = "cpu", precision: str = "32-true", callbacks=()):
    path = write_config(tmp, "host_check", "test_host_check", accelerator=accelerator, precision=precision)
    HostCheckTask.checked_on_host = []
    return train(load_config(path, ["trainer.overwrite=true", *overrides]), callbacks=callbacks)


# ---------------------------------------------------------------- check_ids


def test_check_ids_names_the_entry_and_its_value():
    ids = torch.tensor([[0, 3, 4], [2, 9, 1]])
    check_ids("batch['input_ids']", ids, 10)
    with pytest.raises(ValueError, match=r"batch\['input_ids'\]: entry \(1, 1\) is 9; ids must lie in \[0, 9\)"):
        check_ids("batch['input_ids']", ids, 9)
    with pytest.raises(ValueError, match=r"entry \(0, 0\) is -1"):
        check_ids("x", torch.tensor([[-1, 0]]), 5)


def test_check_ids_allows_the_ignore_index_only_where_asked():
    labels = torch.tensor([3, IGNORE_INDEX, 0])
    check_ids("labels", labels, 4, allowed=IGNORE_INDEX)
    with pytest.raises(ValueError, match=rf"entry \(1,\) is {IGNORE_INDEX - 1}; ids must lie in \[0, 4\) or equal {IGNORE_INDEX}\."):
        check_ids("labels", torch.tensor([3, IGNORE_INDEX - 1, 0]), 4, allowed=IGNORE_INDEX)
    with pytest.raises(ValueError, match=rf"entry \(1,\) is {IGNORE_INDEX}; ids must lie in \[0, 4\)\. "):
        check_ids("input_ids", labels, 4)


def test_check_ids_refuses_float_ids():
    with pytest.raises(ValueError, match="must hold integer token ids, got dtype torch.float32"):
        check_ids("batch['input_ids']", torch.zeros(2, 3), 5)


def test_task_check_batch_checks_input_ids_and_labels():
    task = HostCheckTask(HostCheckConfig(vocab=5))
    good = {"input_ids": torch.tensor([[0, 4]]), "labels": torch.tensor([[4, IGNORE_INDEX]])}
    task.check_batch(good)
    with pytest.raises(ValueError, match=r"task 'test_host_check': batch\['input_ids'\]: entry \(0, 1\) is 5"):
        task.check_batch({**good, "input_ids": torch.tensor([[0, 5]])})
    with pytest.raises(ValueError, match=r"task 'test_host_check': batch\['labels'\]: entry \(0, 0\) is 7"):
        task.check_batch({**good, "labels": torch.tensor([[7, 1]])})


# ---------------------------------------------------------------- labels_checked_on_host


def test_labels_checked_on_host_skips_the_loss_check_inside_the_block_only():
    labels = torch.tensor([1, 8])
    with pytest.raises(ValueError, match="label 8 at flat position 1"):
        check_labels_in_range("op", labels, 5, IGNORE_INDEX)
    with labels_checked_on_host():
        check_labels_in_range("op", labels, 5, IGNORE_INDEX)
        with labels_checked_on_host():
            pass
        check_labels_in_range("op", labels, 5, IGNORE_INDEX)  # still inside the outer block
    with pytest.raises(RuntimeError):
        with labels_checked_on_host():
            raise RuntimeError("leaves the block")
    with pytest.raises(ValueError, match="label 8"):
        check_labels_in_range("op", labels, 5, IGNORE_INDEX)


# ---------------------------------------------------------------- training runs


def test_training_steps_run_with_the_labels_checked_on_host(tmp_path):
    run(tmp_path)
    assert HostCheckTask.checked_on_host and all(HostCheckTask.checked_on_host)
    assert not cross_entropy_op._labels_checked_on_host  # reset after the run


def test_training_refuses_a_batch_with_ids_outside_the_vocabulary(tmp_path):
    with pytest.raises(ValueError, match=r"task 'test_host_check': batch\['input_ids'\]: entry \(\d+, \d+\) is 11; "
                                         r"ids must lie in \[0, 11\)"):
        run(tmp_path, "task.data_vocab=12", "task.seq_len=200")
    assert not HostCheckTask.checked_on_host  # refused before any step ran


class FailOnSync(L.Callback):
    """Makes any wait on the GPU an error from the start of each training batch (already
    on the device) to its end: forward, loss, backward, clipping and the optimizer step."""

    def __init__(self) -> None:
        self.batches = 0

    def on_train_batch_start(self, *args) -> None:
        torch.cuda.set_sync_debug_mode("error")

    def on_train_batch_end(self, *args) -> None:
        torch.cuda.set_sync_debug_mode("default")
        self.batches += 1

    def on_exception(self, *args) -> None:
        # Lightning's teardown after the error moves the model to the host: let it.
        torch.cuda.set_sync_debug_mode("default")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_training_step_never_waits_on_the_gpu(tmp_path):
    callback = FailOnSync()
    try:
        run(tmp_path, accelerator="gpu", precision="bf16-mixed", callbacks=[callback])
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert callback.batches == 3
