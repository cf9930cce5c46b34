"""``softmax_cross_entropy``: per-row cross-entropy of logits and its gradient, in one op."""
from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

from ..backend import resolve_backend
from ..checks import check_tensor, first_id_outside
from .reference import softmax_cross_entropy_reference

OP = "softmax_cross_entropy"
BACKENDS = ("triton", "reference")


def softmax_cross_entropy(
    logits: torch.Tensor,
    labels: torch.Tensor,
    ignore_index: int = -100,
    *,
    with_grad: bool = True,
    out: torch.Tensor | None = None,
    backend: str | None = None,
    check_labels: bool = True,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Cross-entropy of each row of ``logits`` against its label, and the gradient of the
    rows' sum with respect to the logits, without autograd (a fused loss calls this on a
    block of rows and uses the gradient at once).

    Args:
        logits: (T, V) float, unit stride along V.
        labels: (T,) int64 in [0, V), or ``ignore_index`` for a row that is not scored.
        with_grad: also return ``softmax(row) - onehot(label)`` (zero on ignored rows).
        out: (T, V) tensor of logits' dtype for the gradient; may be ``logits`` itself
            (the gradient then overwrites the logits).
        backend: None (Triton on CUDA, the reference elsewhere), "triton" or "reference".
        check_labels: check that every scored label lies in [0, V) (reads the labels
            back to the host: a caller that runs this op on many blocks checks once).

    Returns:
        ``(losses (T,), correct (T,) bool, dlogits (T, V) or None)``: losses are
        logsumexp(row) - row[label], 0 on ignored rows, in fp32 (fp64 for fp64 logits on
        the reference); correct: the row's first largest logit is at its label.

    Raises:
        ValueError: naming the argument whose shape, dtype, device or value is wrong.
    """
    check_tensor(OP, "logits", logits, (None, None), dims="(T, V)")
    rows, vocab = logits.shape
    check_tensor(OP, "labels", labels, (rows,), dims="(T,)", dtypes=(torch.int64,), device=logits.device)
    if vocab == 0:
        raise ValueError(f"{OP}: logits must have at least one column, got shape {tuple(logits.shape)}")
    if logits.stride(1) != 1 and vocab > 1:
        raise ValueError(f"{OP}: logits must have unit stride along V, got strides {logits.stride()}")
    if out is not None:
        check_tensor(OP, "out", out, (rows, vocab), dims="logits' shape (T, V)", dtypes=(logits.dtype,),
                     device=logits.device)
        if out.stride(1) != 1 and vocab > 1:
            raise ValueError(f"{OP}: out must have unit stride along V, got strides {out.stride()}")
    if check_labels:
        check_labels_in_range(OP, labels, vocab, ignore_index)
    name = resolve_backend(OP, backend, logits.device, BACKENDS)
    if name == "triton":
        from .kernel import softmax_cross_entropy_triton

        return softmax_cross_entropy_triton(logits, labels, ignore_index, with_grad, out)
    return softmax_cross_entropy_reference(logits, labels, ignore_index, with_grad, out)


# Set by labels_checked_on_host(): a module global, as backend.use_backend's default is.
_labels_checked_on_host = False


@contextlib.contextmanager
def labels_checked_on_host() -> Iterator[None]:
    """Inside the block, :func:`check_labels_in_range` checks nothing: the caller has
    checked the labels where they were made, on the host before their copy to the GPU.

    Why: checking labels that live on the GPU reads a result back to the host, and that
    read waits for every kernel queued before it; once a training step, the host then
    stops queueing ahead of the GPU and the GPU idles while it catches up. The training
    module checks each batch on the host (``Task.check_batch``) and runs the step
    inside this block. Process-wide (threads share it), like ``use_backend``.
    """
    global _labels_checked_on_host
    previous, _labels_checked_on_host = _labels_checked_on_host, True
    try:
        yield
    finally:
        _labels_checked_on_host = previous


def check_labels_in_range(op: str, labels: torch.Tensor, vocab: int, ignore_index: int) -> None:
    """Raises ValueError naming the first label outside [0, vocab) that is not ignore_index
    (nothing inside :func:`labels_checked_on_host`)."""
    if _labels_checked_on_host:
        return
    found = first_id_outside(labels, vocab, allowed=ignore_index)
    if found is not None:
        index, value = found
        raise ValueError(
            f"{op}: labels must lie in [0, {vocab}) or equal ignore_index ({ignore_index}); "
            f"label {value} at flat position {index} does not"
        )
