"""The multi-scale (U-Net) backbone: causality, step mode against the parallel forward,
parameter names, gradients, and generation through the pooled network."""
from __future__ import annotations

import pytest
import torch

from seqmamba.models import MambaLM, ModelConfig
from seqmamba.tasks.audio.models import AudioUNetLM, build_audio_lm

CONFIG = ModelConfig(d_model=8, n_layer=1, d_state=4, vocab_size=256)


def tiny(pool=(2, 3), seed: int = 0) -> AudioUNetLM:
    torch.manual_seed(seed)
    return AudioUNetLM(CONFIG, pool=list(pool), expand=2).eval()


def test_output_never_depends_on_later_inputs():
    model = tiny(pool=(3, 2))
    ids = torch.randint(0, 256, (2, 97), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        before = model(ids)
        for t in (0, 5, 41, 96):  # inside and at the edges of coarse positions
            changed = ids.clone()
            changed[:, t] = (changed[:, t] + 101) % 256
            after = model(changed)
            assert torch.equal(after[:, :t], before[:, :t]), f"outputs before {t} changed"
            assert not torch.allclose(after[:, t], before[:, t])  # the input itself does count


@pytest.mark.parametrize("prompt", [1, 37])
def test_step_mode_reproduces_the_parallel_forward(prompt):
    """Prefill ``prompt`` positions with the parallel network, then step to 331: every
    step's logits match the parallel forward's at that position (fp32, rel. err < 1e-4)."""
    model = tiny()
    ids = torch.randint(0, 256, (3, 331), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        parallel = model(ids)
        state = model.allocate_state(3)
        stepped = [model.prefill(ids[:, :prompt], state)]
        for t in range(prompt, ids.shape[1]):
            stepped.append(model.step(ids[:, t], state))
    stepped = torch.stack(stepped, dim=1)
    expected = parallel[:, prompt - 1:]
    error = (stepped - expected).abs().max() / expected.abs().max()
    assert error < 1e-4, f"relative error {error:.2e}"
    assert state.levels[0].pool.steps == 331 and state.levels[1].pool.steps == 331 // 2


def test_parameter_names_widths_and_gradients():
    model = tiny(pool=(4, 4))
    names = dict(model.named_parameters())
    assert names["backbone.down.0.layers.0.mixer.in_proj.weight"].shape == (2 * 2 * 8, 8)
    assert names["backbone.center.layers.0.mixer.A_log"].shape == (2 * 32, 4)  # width 8 * 2 * 2
    assert names["backbone.up.1.layers.0.mixer.out_proj.weight"].shape == (8, 16)  # the last up stack: level 0
    assert names["backbone.down_pools.0.linear.weight"].shape == (16, 4 * 8)
    assert names["backbone.up_pools.1.linear.weight"].shape == (4 * 16, 32)
    assert model.lm_head.weight is model.backbone.embedding.weight
    model.train()
    ids = torch.randint(0, 256, (2, 67), generator=torch.Generator().manual_seed(3))
    loss = torch.nn.functional.cross_entropy(model(ids)[:, :-1].flatten(0, 1), ids[:, 1:].flatten())
    loss.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())
    assert isinstance(build_audio_lm(CONFIG, backbone="plain", pool=[4], expand=2), MambaLM)
    with pytest.raises(ValueError, match="task.backbone"):
        build_audio_lm(CONFIG, backbone="wavenet", pool=[4], expand=2)
    with pytest.raises(ValueError, match="task.pool"):
        AudioUNetLM(CONFIG, pool=[4, 1], expand=2)


def test_greedy_generation_follows_the_parallel_argmax():
    model = tiny()
    prompt = torch.randint(0, 256, (2, 13), generator=torch.Generator().manual_seed(4))
    out = model.generate(prompt, 40, temperature=0)
    assert out.shape == (2, 53) and torch.equal(out[:, :13], prompt)
    with torch.no_grad():
        chosen = model(out[:, :-1])[:, 12:, :256].argmax(-1)
    assert torch.equal(chosen, out[:, 13:])


def test_sampling_is_seeded_and_uses_top_p():
    model = tiny()
    prompt = [torch.tensor([128]), torch.tensor([3])]
    a = model.generate(prompt, 25, temperature=1.3, top_p=0.9, seed=7)
    b = model.generate(prompt, 25, temperature=1.3, top_p=0.9, seed=7)
    assert torch.equal(a, b) and int(a.max()) < 256
    assert not torch.equal(a, model.generate(prompt, 25, temperature=1.3, top_p=0.9, seed=8))


def test_generation_options_that_cannot_apply_are_refused():
    model = tiny()
    with pytest.raises(ValueError, match="same length"):
        model.generate([torch.tensor([1, 2]), torch.tensor([3])], 4)
    with pytest.raises(ValueError, match="eos_token_id"):
        model.generate(torch.tensor([[1]]), 4, eos_token_id=0)
    with pytest.raises(ValueError, match="cuda_graph"):
        model.generate(torch.tensor([[1]]), 4, cuda_graph=True)
    with pytest.raises(ValueError, match="top_p"):
        model.generate(torch.tensor([[1]]), 4, top_p=0)
    with pytest.raises(ValueError, match=r"\[0, 256\)"):
        model.generate(torch.tensor([[300]]), 4)
