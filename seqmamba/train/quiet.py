"""Silences the Lightning messages that never apply to this project's runs.

Each filter names one message and says why it does not apply; every other warning
and log line still shows.
"""
from __future__ import annotations

import logging
import warnings

from lightning.fabric.utilities.warnings import PossibleUserWarning

_IGNORED_WARNINGS: tuple[tuple[type[Warning], str], ...] = (
    # The worker count is a task config choice (task.num_workers); generated data
    # needs no workers to keep up.
    (PossibleUserWarning, r"The '\w+' does not have many workers"),
    # A resumed run writes into its own checkpoint directory on purpose, and a fresh
    # run only after emptying it (seqmamba.train.run refuses otherwise).
    (UserWarning, r"Checkpoint directory .* exists and is not empty"),
    # SequenceModule checks each batch in this hook; the data module has none of its
    # own, so nothing is overridden.
    (UserWarning, r"You have overridden `on_before_batch_transfer` in `LightningModule`"),
    # Lightning's own use of a deprecated torch API: nothing a user can change.
    (FutureWarning, r"`isinstance\(treespec, LeafSpec\)` is deprecated"),
)
_IGNORED_LOG_LINES = (
    # Advertises hosted services.
    "💡 Tip:",
    # Reaching max_steps is how every step-based run ends; the line would also cut
    # into the progress bar.
    "`Trainer.fit` stopped: `max_steps=",
)


class _DropLines(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(_IGNORED_LOG_LINES)


def quiet_lightning() -> None:
    """Install the filters (idempotent)."""
    for category, pattern in _IGNORED_WARNINGS:
        warnings.filterwarnings("ignore", message=pattern, category=category)
    for name in ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, _DropLines) for f in logger.filters):
            logger.addFilter(_DropLines())
