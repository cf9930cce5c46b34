"""kernel_op: eager calls skip the dispatcher, everything else goes through the custom op,
and both paths give the same outputs and gradients.

The kernel ops run on the GPU when there is one, else on the Triton interpreter
(tests/conftest.py).
"""
from __future__ import annotations

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from seqmamba.kernels import causal_conv1d, rms_norm, selective_scan
from seqmamba.kernels import kernel_op as kernel_op_module
from seqmamba.kernels.kernel_op import kernel_op

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"

calls: list[str] = []


@kernel_op("seqmamba_test::scaled_square")
def scaled_square(x: torch.Tensor, scale: float) -> torch.Tensor:
    calls.append("fwd")
    return scale * x * x


@scaled_square.register_fake
def _(x, scale):
    return torch.empty_like(x)


def _setup(ctx, inputs, output):
    x, scale = inputs
    ctx.save_for_backward(x)
    ctx.scale = scale


def _backward(ctx, grad):
    (x,) = ctx.saved_tensors
    calls.append("bwd")
    return 2 * ctx.scale * x * grad, None


scaled_square.register_autograd(_backward, setup_context=_setup)


@pytest.fixture
def through_dispatcher(monkeypatch):
    monkeypatch.setattr(kernel_op_module, "DIRECT_EAGER_CALLS", False)


def test_eager_call_skips_the_dispatcher_and_runs_the_registered_backward():
    calls.clear()
    x = torch.randn(5, requires_grad=True)
    y = scaled_square(x, 3.0)
    assert type(y.grad_fn).__name__ == "seqmamba_test_scaled_squareBackward"
    (g,) = torch.autograd.grad(y.sum(), x)
    torch.testing.assert_close(g, 6.0 * x.detach())
    assert calls == ["fwd", "bwd"]


def test_without_grad_the_function_is_called_as_it_is():
    x = torch.randn(5)
    y = scaled_square(x, 2.0)
    assert y.grad_fn is None
    torch.testing.assert_close(y, 2.0 * x * x)


def test_dispatch_modes_and_the_switch_send_calls_through_the_custom_op(monkeypatch):
    class Seen(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.ops = []

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            self.ops.append(str(func))
            return func(*args, **(kwargs or {}))

    x = torch.randn(4)
    with Seen() as seen:
        scaled_square(x, 2.0)
    assert "seqmamba_test.scaled_square.default" in seen.ops
    monkeypatch.setattr(kernel_op_module, "DIRECT_EAGER_CALLS", False)
    y = scaled_square(x.requires_grad_(), 2.0)
    assert type(y.grad_fn).__name__.startswith("GeneratedBackwardFor_seqmamba_test_scaled_square")


def test_compiled_calls_put_the_custom_op_in_the_graph():
    x = torch.randn(6, requires_grad=True)
    compiled = torch.compile(lambda t: scaled_square(t, 1.5).sum(), backend="aot_eager", fullgraph=True)
    (g,) = torch.autograd.grad(compiled(x), x)
    torch.testing.assert_close(g, 3.0 * x.detach())


def _kernel_ops_loss(seed: int) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """The three trained kernel ops chained, on random inputs (Triton backend)."""
    gen = torch.Generator().manual_seed(seed)
    batch, dim, length, n = 2, 8, 37, 4
    t = {
        "x": torch.randn(batch, dim, length, generator=gen),
        "w": torch.randn(dim, 4, generator=gen) * 0.5,
        "b": torch.randn(dim, generator=gen),
        "delta": torch.randn(batch, dim, length, generator=gen) * 0.5,
        "A": -torch.rand(dim, n, generator=gen) - 0.5,
        "B": torch.randn(batch, n, length, generator=gen),
        "C": torch.randn(batch, n, length, generator=gen),
        "z": torch.randn(batch, dim, length, generator=gen),
        "norm_w": 1 + 0.2 * torch.randn(dim, generator=gen),
    }
    leaves = [v.to(DEVICE).requires_grad_() for v in t.values()]
    x, w, b, delta, A, B, C, z, norm_w = leaves
    u = causal_conv1d(x, w, b, activation="silu", backend="triton")
    y = selective_scan(u, delta, A, B, C, z=z, delta_softplus=True, backend="triton")
    normed, _ = rms_norm(y.transpose(1, 2), norm_w, backend="triton")
    return (normed * torch.linspace(-1, 1, dim, device=DEVICE)).sum(), leaves


def _grads(seed: int) -> list[torch.Tensor]:
    loss, leaves = _kernel_ops_loss(seed)
    return [loss.detach(), *torch.autograd.grad(loss, leaves)]


def test_direct_and_dispatched_calls_agree_on_the_kernel_ops(monkeypatch):
    direct = _grads(7)
    monkeypatch.setattr(kernel_op_module, "DIRECT_EAGER_CALLS", False)
    dispatched = _grads(7)
    for a, b in zip(direct, dispatched):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
