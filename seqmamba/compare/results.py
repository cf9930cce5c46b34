"""What a comparison keeps of each task: its outcome and measurements."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

from seqmamba.tasks import Report


@dataclass
class TaskResult:
    """One task of a comparison, trained or skipped.

    Losses are in nats per scored token, as the tasks log them; ``curve`` holds
    ``(tokens seen, val loss)``; ``by_length`` holds ``(context length, accuracy)``,
    from the task's length sweep (``length_kind`` "test length") or by position in
    the validation sequences ("position").
    """

    label: str
    task_name: str
    skipped: str = ""
    build: str = ""
    steps: int = 0
    tokens_per_step: int = 0
    unit: str = "token"
    units_per_token: float = 1.0
    curve: list[tuple[int, float]] = field(default_factory=list)
    tokens_per_second: float = 0.0
    wall_seconds: float = 0.0
    report: Report | None = None
    by_length: list[tuple[int, float]] = field(default_factory=list)
    length_kind: str = ""
    run_dir: Path | None = None

    @property
    def trained(self) -> bool:
        return not self.skipped

    @property
    def tokens(self) -> int:
        """Training tokens seen by the end of the run."""
        return self.steps * self.tokens_per_step

    @property
    def bits_per_token(self) -> float:
        """The last validation loss in bits per scored token (nan if none)."""
        return self.curve[-1][1] / math.log(2) if self.curve else math.nan

    @property
    def bits_per_unit(self) -> float:
        """The last validation loss in bits per domain unit (byte, base, sample, ...)."""
        return self.bits_per_token / self.units_per_token
