"""``seqmamba compare``: config loading and checks, the report with one row per task,
the plots, missing data, and accuracy by position."""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.utils.data import Dataset

from seqmamba.cli import main
from seqmamba.compare import compare, load_compare_config
from seqmamba.compare.measure import accuracy_by_position
from seqmamba.config import ConfigError, load_config
from seqmamba.tasks import IGNORE_INDEX, Report, Task, TaskConfig

CONFIG = """\
name: tiny
model: {{d_model: 16, n_layer: 1, d_state: 4}}
tokens: 500
evals: 2
tasks:
  induction_heads:
    task: {{name: induction_heads, vocab_size: 6, seq_len: 17, batch_size: 4, eval_batch_size: 8, val_size: 16,
            test_size: 8, test_lengths: [17, 33]}}
  dna:
    task: {{name: dna_pretrain, fasta: {fasta}, seq_len: 33, batch_size: 2, eval_batch_size: 4, val_fraction: 0.3,
            eval_max_windows: 4}}
    needs: [{fasta}]
    build: seqmamba data dna-species data/dna_species
  copying_without_data:
    task: {{name: selective_copying, vocab_size: 6, num_data_tokens: 2, seq_len: 17, batch_size: 4, test_lengths: [17]}}
    needs: [{missing}]
    build: make-the-copying-data {missing}
optimizer: {{lr: 5.0e-3}}
schedule: {{warmup_steps: 1}}
trainer:
  accelerator: cpu
  devices: 1
  limit_val_batches: 2
  progress_bar: false
  output_dir: {output_dir}
"""

SHIPPED = sorted((Path(__file__).resolve().parent.parent / "configs" / "compare").glob("*.yaml"))


def write_config(tmp: Path) -> Path:
    generator = torch.Generator().manual_seed(3)
    fasta = tmp / "genome.fa"
    contigs = ["".join("ACGT"[i] for i in torch.randint(0, 4, (n,), generator=generator).tolist()) for n in (301, 157)]
    fasta.write_text("".join(f">contig{k}\n{seq}\n" for k, seq in enumerate(contigs)))
    path = tmp / "tiny.yaml"
    path.write_text(CONFIG.format(fasta=fasta, missing=tmp / "nowhere" / "copying.txt", output_dir=tmp / "runs"))
    return path


@pytest.fixture(scope="module")
def compared(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("compare")
    path = write_config(tmp)
    messages: list[str] = []
    result = compare(load_compare_config(path), source=str(path), say=messages.append)
    return result, messages, tmp


def test_report_has_one_row_per_task_and_the_plots_exist(compared):
    result, _, tmp = compared
    assert result.report == tmp / "runs" / "tiny" / "report.md"
    text = result.report.read_text()
    rows = [line for line in text.splitlines() if line.startswith("| ") and not line.startswith("| task ")]
    assert [row.split("|")[1].strip() for row in rows] == ["induction_heads", "dna", "copying_without_data"]
    assert {p.name for p in result.plots} == {"val_loss_vs_tokens.png", "bits.png", "throughput.png",
                                              "accuracy_by_length.png"}
    for plot in result.plots:
        assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and plot.stat().st_size > 5000
        assert f"![{plot.stem}]({plot.name})" in text


def test_each_task_trains_for_the_token_budget(compared):
    result, _, _ = compared
    trained = {r.label: r for r in result.results if r.trained}
    assert trained["induction_heads"].tokens_per_step == 4 * 17
    assert trained["dna"].tokens_per_step == 2 * 33
    for r in trained.values():
        assert r.tokens >= 500 > r.tokens - r.tokens_per_step  # the fewest steps reaching the budget
        assert (r.run_dir / "checkpoints" / "last.ckpt").is_file()
        tokens = [t for t, _ in r.curve]
        assert tokens == sorted(tokens) and tokens[-1] == r.tokens and len(tokens) >= 2
        assert all(math.isfinite(loss) and loss > 0 for _, loss in r.curve)
        assert r.tokens_per_second > 0
    dna = trained["dna"]
    assert dna.unit == "base" and dna.bits_per_unit == pytest.approx(dna.curve[-1][1] / math.log(2))
    assert trained["induction_heads"].unit == "token"


def test_accuracy_by_length_from_the_sweep_or_by_position(compared):
    result, _, _ = compared
    trained = {r.label: r for r in result.results if r.trained}
    assert [n for n, _ in trained["induction_heads"].by_length] == [17, 33]
    assert trained["induction_heads"].length_kind == "test length"
    dna = trained["dna"]
    assert dna.length_kind == "position" and [n for n, _ in dna.by_length] == [1, 2, 4, 8, 16, 32]
    assert all(0 <= accuracy <= 1 for _, accuracy in dna.by_length)


def test_missing_data_is_named_with_its_build_command(compared):
    result, messages, tmp = compared
    missing = tmp / "nowhere" / "copying.txt"
    skipped = [r for r in result.results if not r.trained]
    assert [r.label for r in skipped] == ["copying_without_data"]
    line = next(m for m in messages if "copying_without_data" in m)
    assert str(missing) in line and f"make-the-copying-data {missing}" in line
    assert f"Build it with: `make-the-copying-data {missing}`" in result.report.read_text()


def test_cli_select_runs_only_the_chosen_task(tmp_path, capsys):
    path = write_config(tmp_path)
    assert main(["compare", str(path), "select=[copying_without_data]", "name=only_missing"]) == 0
    out = capsys.readouterr().out
    assert "skipped" in out and "report:" in out
    text = (tmp_path / "runs" / "only_missing" / "report.md").read_text()
    assert "| copying_without_data |" in text and "| induction_heads |" not in text


@pytest.mark.parametrize("path", SHIPPED, ids=[p.name for p in SHIPPED])
def test_every_shipped_comparison_loads(path):
    cfg = load_compare_config(path)
    assert cfg.labels() and cfg.tokens > 0


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("tasks.induction_heads.task.seq_lenn=5", r"tasks.induction_heads.task.seq_lenn: unknown key; did you mean 'seq_len'"),
        ("trainer.max_steps=10", r"trainer.max_steps: set per task from 'tokens'"),
        ("select=[induction_heads,dnaa]", r"select: no task labelled 'dnaa'"),
        ("tokens=0", r"tokens: must be a positive integer"),
        ("tasks.dna.task.name=dna_pretrainn", r"tasks.dna.task.name: unknown task 'dna_pretrainn'"),
        ("tasks.dna.task.seq_len=-3", r"tasks.dna: .*task.seq_len: must be a positive integer"),
    ],
)
def test_config_errors_name_the_key(tmp_path, override, message):
    with pytest.raises(ConfigError, match=message):
        load_compare_config(write_config(tmp_path), [override])


def test_train_points_a_comparison_to_compare(tmp_path):
    path = write_config(tmp_path)
    with pytest.raises(ConfigError, match="seqmamba compare"):
        load_config(path)


# ---------------------------------------------------------------- accuracy by position


@dataclass
class PeekConfig(TaskConfig):
    name: str = "peek"
    length: int = 13


class PeekTask(Task):
    """Next-token prediction on random tokens; not registered (used directly)."""

    name = "peek"
    config_class = PeekConfig

    @property
    def vocab_size(self) -> int:
        return 5

    def datasets(self) -> dict[str, Dataset]:
        generator = torch.Generator().manual_seed(0)
        tokens = torch.randint(0, 5, (7, self.cfg.length), generator=generator)
        labels = torch.cat([tokens[:, 1:], torch.full((7, 1), IGNORE_INDEX)], dim=1)  # nothing after the end
        items = [{"input_ids": t, "labels": y} for t, y in zip(tokens, labels)]
        return {"train": items, "val": items}

    def evaluate(self, model: nn.Module, device: torch.device) -> Report:
        return Report()


class PeekingModel(nn.Module):
    """Right from position ``first_right`` on (it reads the next input), wrong before."""

    def __init__(self, first_right: int) -> None:
        super().__init__()
        self.first_right = first_right

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        upcoming = torch.cat([ids[:, 1:], ids[:, :1]], dim=1)
        answer = torch.where(torch.arange(ids.shape[1]) >= self.first_right, upcoming, (upcoming + 1) % 5)
        return nn.functional.one_hot(answer, 5).float()


def test_accuracy_by_position_buckets_context_lengths():
    task = PeekTask(PeekConfig(eval_batch_size=3))
    rows = accuracy_by_position(task, PeekingModel(3), device=torch.device("cpu"), max_batches=2)
    # Positions 0 | 1 | 2-3 | 4-7 | 8-11 (12 is not scored) read 1 | 2 | 4 | 8 | 16 tokens at most.
    assert rows == [(1, 0.0), (2, 0.0), (4, 0.5), (8, 1.0), (16, 1.0)]


def test_accuracy_by_position_skips_per_sequence_labels():
    class Classify(PeekTask):
        def datasets(self) -> dict[str, Dataset]:
            return {"train": [], "val": [{"input_ids": torch.arange(7), "labels": torch.tensor(1)}] * 3}

    assert accuracy_by_position(Classify(PeekConfig()), PeekingModel(0), device=torch.device("cpu"), max_batches=1) == []
