"""torch.compile runs the Triton selective scan as one custom op, without graph breaks.

On a GPU the function is compiled with Inductor; on a CPU the kernels run under the
Triton interpreter and the graph goes through Dynamo and AOT autograd ("aot_eager"),
which exercises the same custom-op registration (fake tensors, autograd) without
generating C++ code.
"""
from __future__ import annotations

import os

import torch

if not torch.cuda.is_available():
    # Before seqmamba's kernel modules are imported: Triton reads it at import.
    os.environ["TRITON_INTERPRET"] = "1"

import pytest  # noqa: E402

from seqmamba.kernels import selective_scan  # noqa: E402

ON_GPU = torch.cuda.is_available()
DEVICE = "cuda" if ON_GPU else "cpu"
COMPILE_BACKEND = "inductor" if ON_GPU else "aot_eager"
BATCH, DIM, LENGTH, N_STATE = (2, 64, 300, 16) if ON_GPU else (1, 2, 19, 4)


def inputs(seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)

    def rand(*shape: int, scale: float = 1.0) -> torch.Tensor:
        return (torch.randn(*shape, generator=g) * scale).to(DEVICE)

    return dict(
        x=rand(BATCH, DIM, LENGTH),
        delta=rand(BATCH, DIM, LENGTH, scale=0.5),
        A=-torch.exp(rand(DIM, N_STATE, scale=0.5)),
        B=rand(BATCH, N_STATE, LENGTH),
        C=rand(BATCH, N_STATE, LENGTH),
        D=rand(DIM),
        z=rand(BATCH, DIM, LENGTH),
        delta_bias=rand(DIM, scale=0.3),
        initial_state=rand(BATCH, DIM, N_STATE),
    )


def block(x, delta, A, B, C, D, z, delta_bias, initial_state):
    """A small Mamba-like step: elementwise ops around the scan, a loss on both outputs."""
    u = torch.nn.functional.silu(x) * 1.5
    out, final = selective_scan(
        u, delta, A, B, C, D=D, z=z, delta_bias=delta_bias, delta_softplus=True,
        initial_state=initial_state, return_final_state=True, backend="triton",
    )
    return (out * out.flip(-1)).mean() + final.square().mean()


def test_compiled_block_matches_eager_without_graph_breaks():
    torch._dynamo.reset()
    compiled = torch.compile(block, fullgraph=True, backend=COMPILE_BACKEND)
    results = []
    for fn in (block, compiled):
        leaves = {k: v.clone().requires_grad_(True) for k, v in inputs(seed=0).items()}
        loss = fn(**leaves)
        loss.backward()
        results.append((loss.detach(), {k: v.grad for k, v in leaves.items()}))
    (eager_loss, eager_grads), (comp_loss, comp_grads) = results
    torch.testing.assert_close(comp_loss, eager_loss, rtol=1e-5, atol=1e-6)
    for name, grad in eager_grads.items():
        torch.testing.assert_close(comp_grads[name], grad, rtol=1e-5, atol=1e-6, msg=name)


@pytest.mark.parametrize("with_optional", (True, False))
def test_custom_ops_pass_opcheck(with_optional):
    """Schema, fake-tensor shapes and autograd registration agree with the real ops."""
    x = inputs(seed=1)
    u = x["x"].requires_grad_(True)
    optional = (x["D"], x["z"], x["delta_bias"], x["initial_state"]) if with_optional else (None,) * 4
    fwd_args = (u, x["delta"], x["A"], x["B"], x["C"], *optional, True, True)
    torch.library.opcheck(torch.ops.seqmamba.selective_scan_fwd.default, fwd_args)
    out, final, states = torch.ops.seqmamba.selective_scan_fwd(*fwd_args)
    bwd_args = (
        u.detach(), x["delta"], x["A"], x["B"], x["C"], *optional[:3], states.detach(),
        torch.randn_like(out), torch.randn_like(final), True, None,
    )
    torch.library.opcheck(torch.ops.seqmamba.selective_scan_bwd.default, bwd_args)
    # dz written into a given buffer: a strided view of a larger one, as the mixer's backward passes it.
    buffer = torch.empty(BATCH, 2 * DIM, LENGTH, device=DEVICE)
    torch.library.opcheck(torch.ops.seqmamba.selective_scan_bwd.default, bwd_args[:-1] + (buffer[:, DIM:],))


def test_whole_model_compiles_without_graph_breaks_and_follows_use_backend(monkeypatch):
    """MambaLM under torch.compile(fullgraph=True) on the Triton ops: the backend lookup
    traces (no graph break). And a compiled model follows a later use_backend setting
    (a guard recompiles it) rather than keeping the backend it was traced with: told by
    whether the Triton scan runs (a compiled graph calls the custom op's body), since
    Inductor's fusions move the last bits of the other ops as much as the backends differ."""
    from seqmamba.kernels import use_backend
    from seqmamba.kernels.selective_scan import triton_fwd
    from seqmamba.models import MambaLM, ModelConfig

    torch.manual_seed(0)
    model = MambaLM(ModelConfig(d_model=16, n_layer=1, vocab_size=32)).to(DEVICE)
    tokens = torch.randint(0, 32, (1, 9), device=DEVICE)
    with use_backend("triton"):
        eager_triton = model(tokens)
    with use_backend("reference"):
        eager_reference = model(tokens)

    calls = []
    scan_fwd = triton_fwd.scan_fwd
    monkeypatch.setattr(triton_fwd, "scan_fwd", lambda *args, **kwargs: calls.append(1) or scan_fwd(*args, **kwargs))
    torch._dynamo.reset()
    with use_backend("triton"):
        full = torch.compile(model, fullgraph=True, backend=COMPILE_BACKEND)
        torch.testing.assert_close(full(tokens), eager_triton, rtol=1e-4, atol=1e-5)
    assert calls
    # The reference scan is not written for tracing (graph breaks): no fullgraph there.
    compiled = torch.compile(model, backend=COMPILE_BACKEND)
    calls.clear()
    with use_backend("triton"):
        torch.testing.assert_close(compiled(tokens), eager_triton, rtol=1e-4, atol=1e-5)
    assert calls
    calls.clear()
    with use_backend("reference"):
        torch.testing.assert_close(compiled(tokens), eager_reference, rtol=1e-4, atol=1e-5)
    assert not calls


def test_recomputing_mixer_compiles_without_graph_breaks():
    """mixer_recompute's hand-written autograd Function traces too: same loss and gradients."""
    from seqmamba.kernels import use_backend
    from seqmamba.models import MambaLM, ModelConfig

    torch.manual_seed(1)
    model = MambaLM(ModelConfig(d_model=16, n_layer=1, vocab_size=32, mixer_recompute=True)).to(DEVICE)
    tokens = torch.randint(0, 32, (1, 9), device=DEVICE)
    torch._dynamo.reset()
    compiled = torch.compile(model, fullgraph=True, backend=COMPILE_BACKEND)
    results = []
    with use_backend("triton"):
        for fn in (model, compiled):
            model.zero_grad()
            loss = fn(tokens).square().mean()
            loss.backward()
            results.append((loss.detach(), [p.grad.clone() for p in model.parameters()]))
    (eager_loss, eager_grads), (comp_loss, comp_grads) = results
    torch.testing.assert_close(comp_loss, eager_loss, rtol=1e-5, atol=1e-6)
    for got, want in zip(comp_grads, eager_grads):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
