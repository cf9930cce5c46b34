"""Memory-saving training options of the backbone: the recomputing mixer
(``mixer_recompute``) and per-block activation checkpointing (``checkpoint_every``).

Each must give the plain model's loss and gradients, and hold fewer bytes between the
forward and the backward. The held bytes are measured with the profiler's allocation
record on the CPU: the net bytes allocated during the forward, i.e. what stays alive
for the backward (saved tensors, checkpoint inputs, kept op outputs) plus the loss.
"""
from __future__ import annotations

import contextlib
import dataclasses
import os

import torch

if not torch.cuda.is_available():
    # Before seqmamba's kernel modules are imported: Triton reads it at import. Only the
    # test that names backend "triton" uses it; the others run on the CPU reference.
    os.environ["TRITON_INTERPRET"] = "1"

import pytest  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch.profiler import ProfilerActivity, profile  # noqa: E402

from seqmamba.kernels import use_backend  # noqa: E402
from seqmamba.models import Mamba, MambaLM, MixerState, ModelConfig  # noqa: E402
from seqmamba.models import mixer as mixer_module  # noqa: E402
from seqmamba.models.recompute import RegionWeights, mixer_region  # noqa: E402

VOCAB = 37
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
pytestmark = pytest.mark.filterwarnings("ignore:.*Profiler clears events")


@pytest.fixture(autouse=True)
def one_thread():
    """These shapes are tiny: one thread beats several on cores other work also uses."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def config(**overrides) -> ModelConfig:
    fields = dict(d_model=16, n_layer=3, vocab_size=VOCAB, d_state=5, dt_rank=3)
    return ModelConfig(**(fields | overrides))


def twin(reference: MambaLM, **options) -> MambaLM:
    """A model of the same shape built with other training options, holding the same weights."""
    model = MambaLM(dataclasses.replace(reference.config, **options)).to(next(reference.parameters()).dtype)
    model.load_state_dict(reference.state_dict())
    return model


@contextlib.contextmanager
def op_by_op(monkeypatch: pytest.MonkeyPatch):
    """The mixers run their region op by op under autograd, the plain mixer's behaviour
    before the region became one Function: the baseline its gradients must match."""
    def region_op_by_op(region, xz, conv_state, ssm_state, weights, *, recompute):
        return region(xz, conv_state, ssm_state, weights)

    with monkeypatch.context() as patch:
        patch.setattr(mixer_module, "mixer_region", region_op_by_op)
        yield


def loss_and_grads(model: MambaLM, ids: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, dict]:
    model.zero_grad(set_to_none=True)
    logits = model(ids)
    loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1))
    loss.backward()
    return loss.detach(), {name: p.grad for name, p in model.named_parameters()}


def held_bytes(model: MambaLM, ids: torch.Tensor) -> int:
    """Bytes still allocated after the forward (and loss) that were allocated during it,
    on the device the model runs on (the CPU profiler sees no CUDA allocations)."""
    if ids.is_cuda:
        torch.cuda.synchronize()
        before = torch.cuda.memory_allocated(ids.device)
        loss = model(ids).square().mean()  # kept alive, and with it the autograd graph
        held = torch.cuda.memory_allocated(ids.device) - before
        del loss
        return held
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        loss = model(ids).square().mean()
    held = sum(event.self_cpu_memory_usage for event in prof.events())
    del loss
    return held


def random_model(seed: int, dtype: torch.dtype = torch.float64, **overrides) -> MambaLM:
    torch.manual_seed(seed)
    model = MambaLM(config(**overrides)).to(dtype)
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for param in model.parameters():
            param.add_(0.1 * torch.randn(param.shape, generator=gen, dtype=param.dtype))
    return model


@pytest.mark.parametrize(
    "options",
    [dict(mixer_recompute=True), dict(checkpoint_every=1), dict(checkpoint_every=2),
     dict(mixer_recompute=True, checkpoint_every=2)],
)
def test_same_loss_and_gradients_as_the_plain_model(options):
    plain = random_model(seed=0)
    other = twin(plain, **options)
    ids, labels = torch.randint(0, VOCAB, (2, 23)), torch.randint(0, VOCAB, (2, 23))
    plain_loss, plain_grads = loss_and_grads(plain, ids, labels)
    loss, grads = loss_and_grads(other, ids, labels)
    torch.testing.assert_close(loss, plain_loss)
    assert plain_grads.keys() == grads.keys()
    for name, grad in plain_grads.items():
        assert grad.abs().sum() > 0, name
        torch.testing.assert_close(grads[name], grad, msg=name)


def mixer_pair(dtype: torch.dtype, *, seed: int, **kwargs) -> tuple[Mamba, Mamba]:
    """A plain and a recomputing mixer holding the same weights, moved off their init."""
    torch.manual_seed(seed)
    plain = Mamba(12, **kwargs).to(DEVICE, dtype)
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for param in plain.parameters():
            param.add_(0.2 * torch.randn(param.shape, generator=gen, dtype=param.dtype).to(DEVICE))
    recomputing = Mamba(12, recompute=True, **kwargs).to(DEVICE, dtype)
    recomputing.load_state_dict(plain.state_dict())
    return plain, recomputing


def run_mixer(mixer: Mamba, h: torch.Tensor, state: MixerState | None, seed: int) -> list[torch.Tensor]:
    """Output and final states, and the gradients of a random linear loss on all three
    (so that gradient also flows in through the final states)."""
    mixer.zero_grad(set_to_none=True)
    h = h.clone().requires_grad_(True)
    if state is not None:
        state = MixerState(conv=state.conv.clone().requires_grad_(True), ssm=state.ssm.clone().requires_grad_(True))
    out, last = mixer(h, state=state, return_state=True)
    gen = torch.Generator().manual_seed(seed)
    outputs = (out, last.conv, last.ssm)
    weights = [torch.randn(t.shape, generator=gen, dtype=t.dtype).to(DEVICE) for t in outputs]
    sum(((t * g).sum() for t, g in zip(outputs, weights))).backward()
    grads = [h.grad] + ([] if state is None else [state.conv.grad, state.ssm.grad])
    grads += [p.grad for _, p in sorted(mixer.named_parameters())]
    return [t.detach() for t in outputs] + grads


@pytest.mark.parametrize(
    "backend, dtype, length, with_state, d_conv, conv_bias, recompute",
    [
        ("reference", torch.float64, 9, True, 3, True, True),
        ("reference", torch.float64, 1, True, 4, True, True),  # shorter than the conv state
        ("reference", torch.float64, 23, False, 4, False, True),
        ("triton", torch.float32, 9, True, 3, True, True),
        ("triton", torch.float32, 2, True, 4, True, True),  # shorter than the conv state
        ("triton", torch.float32, 67, False, 4, False, True),  # two chunk states
        ("triton", torch.float32, 9, True, 3, True, False),
        ("triton", torch.float32, 2, True, 4, True, False),
        ("triton", torch.float32, 67, False, 4, False, False),
    ],
)
def test_mixer_region_gives_the_op_by_op_outputs_and_gradients(
    monkeypatch, backend, dtype, length, with_state, d_conv, conv_bias, recompute
):
    """Outputs, final states and the gradients of every parameter, the input and the
    initial states, against the region run op by op under autograd: recomputing on the
    reference (float64), and on the Triton kernels (the interpreter without a GPU)
    both mixers, which take the hand-written backward."""
    kwargs = dict(d_state=4, d_conv=d_conv, dt_rank=2, conv_bias=conv_bias)
    plain, recomputing = mixer_pair(dtype, seed=length, **kwargs)
    gen = torch.Generator().manual_seed(length + 7)
    h = torch.randn(2, length, 12, generator=gen, dtype=dtype).to(DEVICE)
    state = None
    if with_state:
        state = MixerState(
            conv=torch.randn(2, 24, d_conv - 1, generator=gen, dtype=dtype).to(DEVICE),
            ssm=torch.randn(2, 24, 4, generator=gen, dtype=dtype).to(DEVICE),
        )
    with use_backend(backend):
        with op_by_op(monkeypatch):
            expected = run_mixer(plain, h, state, seed=3)
        got = run_mixer(recomputing if recompute else plain, h, state, seed=3)
    assert len(got) == len(expected)
    for i, (g, e) in enumerate(zip(got, expected)):
        assert e.abs().sum() > 0, i
        torch.testing.assert_close(g, e, msg=f"result {i}")


@pytest.mark.parametrize("backend, recompute", [("reference", True), ("triton", True), ("triton", False)])
def test_region_saves_xz_and_small_tensors_only(backend, recompute):
    """What the region's Function keeps for the backward, listed by saved-tensor hooks:
    xz, the weights, the initial states, and on the Triton kernels x_proj's output
    (batch * L, dt_rank + 2 * d_state), the scan's chunk states and, not recomputing,
    the convolution output and Δ; no other tensor of (batch, d_inner, L) elements. Its
    xz gradient is laid out like xz."""
    batch, length, d_state, dt_rank = 2, 13, 4, 2
    mixer = Mamba(12, d_state=d_state, d_conv=4, dt_rank=dt_rank, recompute=True).to(DEVICE)
    d_inner = mixer.d_inner
    # xz as the mixer makes it: a (batch, 2 * d_inner, L) view of a (2 * d_inner, batch * L) product.
    product = torch.randn(2 * d_inner, batch * length, device=DEVICE, requires_grad=True)
    xz = product.view(2 * d_inner, batch, length).permute(1, 0, 2)
    conv = torch.randn(batch, d_inner, 3, device=DEVICE, requires_grad=True)
    ssm = torch.randn(batch, d_inner, d_state, device=DEVICE, requires_grad=True)
    weights = RegionWeights(
        mixer.conv1d.weight, mixer.conv1d.bias, mixer.x_proj.weight, mixer.dt_proj.weight, mixer.dt_proj.bias,
        mixer.A_log, mixer.D,
    )
    saved = []

    def pack(t: torch.Tensor) -> torch.Tensor:
        saved.append(t)
        return t

    with use_backend(backend), torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        y, conv_final, ssm_final = mixer_region(mixer._after_in_proj, xz, conv, ssm, weights, recompute=recompute)
    inputs = [xz, conv, ssm, *(w for w in weights if w is not None)]
    small = [t for t in saved if not any(t is i for i in inputs)]
    assert all(any(t is s for s in saved) for t in inputs)
    if backend == "triton":
        n_chunks = -(-length // 64)
        conv_output_and_delta = [] if recompute else [(batch, d_inner, length)] * 2
        assert sorted(tuple(t.shape) for t in small) == sorted(
            [(batch * length, dt_rank + 2 * d_state), (batch, d_inner, n_chunks, d_state)] + conv_output_and_delta
        )
    else:
        assert small == []
    assert sum(t.numel() >= batch * d_inner * length for t in small) == (0 if recompute else 2)

    xz_leaf = xz.detach().requires_grad_(True)
    with use_backend(backend):
        y, conv_final, ssm_final = mixer_region(mixer._after_in_proj, xz_leaf, conv, ssm, weights, recompute=recompute)
        (grad,) = torch.autograd.grad(y.sum() + conv_final.sum() + ssm_final.sum(), xz_leaf)
    assert grad.stride() == xz.stride()


def test_options_hold_fewer_bytes_for_the_backward():
    plain = random_model(seed=1, dtype=torch.float32)
    ids = torch.randint(0, VOCAB, (2, 129))
    base = held_bytes(plain, ids)
    recompute = held_bytes(twin(plain, mixer_recompute=True), ids)  # the reference reruns its scan
    every_block = held_bytes(twin(plain, checkpoint_every=1), ids)
    every_other = held_bytes(twin(plain, checkpoint_every=2), ids)
    # Measured on this shape: about 0.41x (recompute: xz and out_proj's input per mixer),
    # 0.13x (every block), 0.41x (blocks 0, 2).
    assert recompute < 0.5 * base
    assert every_block < 0.25 * base
    assert every_block < every_other < 0.8 * base


def test_fused_regions_run_the_triton_scan_forward_once(monkeypatch):
    """With the Triton scan (on the interpreter without a GPU), the mixer's region is
    one Function whose backward rebuilds the scan's inputs and runs the scan's backward
    from the kept chunk states: one forward kernel per layer, plain or recomputing. Both
    give the loss and gradients of the region run op by op under autograd, hold fewer
    bytes for the backward than it (the recomputing one fewer still), and run on the
    backend of the forward, also outside the forward's ``use_backend`` block."""
    from seqmamba.kernels.selective_scan import triton_fwd

    launches = []
    scan_fwd = triton_fwd.scan_fwd

    def counted(*args, **kwargs):
        launches.append(1)
        return scan_fwd(*args, **kwargs)

    monkeypatch.setattr(triton_fwd, "scan_fwd", counted)
    plain = random_model(seed=2, dtype=torch.float32, n_layer=2, d_model=8).to(DEVICE)
    recomputing = twin(plain, mixer_recompute=True).to(DEVICE)
    ids, labels = (torch.randint(0, VOCAB, (1, 19), device=DEVICE) for _ in range(2))
    long_ids = torch.randint(0, VOCAB, (1, 131), device=DEVICE)
    with use_backend("triton"), op_by_op(monkeypatch):
        expected_loss, expected_grads = loss_and_grads(plain, ids, labels)
        held = {"op by op": held_bytes(plain, long_ids)}
    for name, model in (("plain", plain), ("recompute", recomputing)):
        model.zero_grad(set_to_none=True)
        with use_backend("triton"):
            held[name] = held_bytes(model, long_ids)
            launches.clear()
            logits = model(ids)
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1))
        loss.backward()
        assert len(launches) == 2, name  # one per layer
        torch.testing.assert_close(loss.detach(), expected_loss)
        for param_name, param in model.named_parameters():
            torch.testing.assert_close(param.grad, expected_grads[param_name], msg=f"{name}: {param_name}")
    # Measured here, logits included: plain 0.93x, recompute 0.72x the op-by-op bytes (xz,
    # the conv output and Δ, x_proj's output, the chunk states and out_proj's input, or
    # the same without the conv output and Δ, against every intermediate of the mixer).
    assert held["recompute"] < 0.8 * held["op by op"]
    assert held["recompute"] < held["plain"] < held["op by op"]


def test_options_under_bf16_autocast_on_the_triton_kernels():
    """The training set-up the benchmark runs: fp32 weights, bf16 autocast, every op on
    its Triton kernel. The recomputation must see the same casts as the forward."""
    device = "cuda" if torch.cuda.is_available() else "cpu"
    plain = random_model(seed=3, dtype=torch.float32, n_layer=2, d_model=16).to(device)
    ids, labels = (torch.randint(0, VOCAB, (1, 21), device=device) for _ in range(2))
    results = []
    for options in ({}, dict(mixer_recompute=True), dict(checkpoint_every=1)):
        model = twin(plain, **options).to(device)
        # A checkpointed block reruns its forward in the backward on the backend in force
        # then: the backward runs in the same block as the forward.
        with use_backend("triton"), torch.autocast(device, dtype=torch.bfloat16):
            results.append(loss_and_grads(model, ids, labels))
    (plain_loss, plain_grads), *others = results
    for loss, grads in others:
        torch.testing.assert_close(loss, plain_loss)
        for name, grad in plain_grads.items():
            torch.testing.assert_close(grads[name], grad, msg=name)


def test_checkpointed_blocks_run_the_plain_mixer():
    """A checkpointed block keeps only its input, so a recomputing mixer inside it
    would recompute for nothing: those blocks use the plain mixer, the others recompute."""
    model = MambaLM(config(n_layer=5, mixer_recompute=True, checkpoint_every=2))
    assert [layer.mixer.recompute for layer in model.backbone.layers] == [False, True, False, True, False]
    assert [model.config.checkpoints_layer(i) for i in range(5)] == [True, False, True, False, True]
    assert not any(MambaLM(config(n_layer=2)).config.checkpoints_layer(i) for i in range(2))
