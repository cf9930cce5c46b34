"""IS, modified IS, AM score and FID against their definitions, computed directly."""
from __future__ import annotations

import math

import pytest
import torch

from seqmamba.tasks.audio.quality import am_score, frechet_distance, inception_score, modified_inception_score


def random_probs(n: int, classes: int, seed: int) -> torch.Tensor:
    logits = torch.randn(n, classes, generator=torch.Generator().manual_seed(seed)) * 2
    return torch.softmax(logits, -1).double()


def kl(p: list[float], q: list[float]) -> float:
    return sum(a * math.log(a / b) for a, b in zip(p, q))


def test_scores_match_their_definitions_written_as_loops():
    probs = random_probs(7, 5, seed=0)
    rows = probs.tolist()
    mean = [sum(col) / len(rows) for col in zip(*rows)]
    assert math.isclose(inception_score(probs), math.exp(sum(kl(r, mean) for r in rows) / 7), rel_tol=1e-9)
    pairs = [kl(a, b) for i, a in enumerate(rows) for j, b in enumerate(rows) if i != j]
    assert math.isclose(modified_inception_score(probs), math.exp(sum(pairs) / len(pairs)), rel_tol=1e-9)
    reference = random_probs(9, 5, seed=1).tolist()
    ref_mean = [sum(col) / len(reference) for col in zip(*reference)]
    entropy = sum(-sum(a * math.log(a) for a in r) for r in rows) / 7
    assert math.isclose(am_score(probs, torch.tensor(reference)), kl(ref_mean, mean) + entropy, rel_tol=1e-9)


def test_confident_even_predictions_score_the_number_of_classes():
    one_hot = torch.eye(4).repeat(3, 1) * 0.999 + 0.001 / 4
    assert math.isclose(inception_score(one_hot), 4, rel_tol=0.02)
    assert inception_score(torch.full((6, 4), 0.25)) == pytest.approx(1.0)
    assert am_score(one_hot, one_hot) < 0.02  # real proportions, confident samples


def test_frechet_distance_of_a_shifted_and_scaled_copy():
    """b = 2a + 3 with a centred: the means differ by 3 in each of d dims and S_b = 4 S_a,
    so FID = 9 d + tr(S_a) + 4 tr(S_a) - 2 tr(2 S_a) = 9 d + tr(S_a)."""
    mixing = torch.randn(6, 6, generator=torch.Generator().manual_seed(3)).double()
    a = torch.randn(50, 6, generator=torch.Generator().manual_seed(2)).double() @ mixing
    a = a - a.mean(0)
    expected = 9 * 6 + float(torch.cov(a.T).trace())
    assert frechet_distance(a, 2 * a + 3) == pytest.approx(expected, rel=1e-6)
    assert abs(frechet_distance(a, a.clone())) < 1e-6
    # More samples than dimensions is not needed: a rank-deficient covariance still works.
    assert frechet_distance(a[:3], a[3:9] + 1) > 0


def test_too_few_samples_are_clear_errors():
    with pytest.raises(ValueError, match="n >= 2"):
        modified_inception_score(random_probs(1, 3, seed=0))
    with pytest.raises(ValueError, match="at least 2 feature vectors"):
        frechet_distance(torch.randn(1, 4), torch.randn(5, 4))
    with pytest.raises(ValueError, match="3 classes in the samples but 4"):
        am_score(random_probs(2, 3, seed=0), random_probs(2, 4, seed=1))
