"""Sample-quality scores from a classifier, as SaShiMi reports them on SC09.

Given the class probabilities p(y|x) a trained classifier gives each sample (rows of
``probs``, (n, classes)) and its penultimate features:

* IS, Inception Score (Salimans et al., 2016): ``exp(E_x KL(p(y|x) || p(y)))`` with
  p(y) the mean over the samples. High when each sample is clearly one class and the
  classes are used evenly; at most the number of classes.
* mIS, modified IS (Gurumurthy et al., 2017): ``exp(E_{x, x'} KL(p(y|x) || p(y|x')))``
  over pairs of distinct samples; also rewards variety within a class's samples.
* AM score (Zhou et al., 2018): ``KL(p_ref(y) || p(y)) + E_x H(p(y|x))`` with p_ref
  the mean prediction on real data; low is good (real classes in real proportions,
  each sample confidently one class).
* FID, Fréchet distance between Gaussians fitted to the features of the samples and of
  real data (Heusel et al., 2017); low is good.
"""
from __future__ import annotations

import torch

_EPS = 1e-12


def _check_probs(name: str, probs: torch.Tensor, *, at_least: int) -> torch.Tensor:
    if probs.dim() != 2 or probs.shape[0] < at_least:
        raise ValueError(f"{name}: needs probabilities of shape (n >= {at_least}, classes), got {tuple(probs.shape)}")
    return probs.double().clamp(min=_EPS)


def _kl_rows(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """KL(p_i || q_i) per row, (n,)."""
    return (p * (p.log() - q.log())).sum(-1)


def inception_score(probs: torch.Tensor) -> float:
    """probs: (n, classes), rows summing to 1."""
    p = _check_probs("inception_score", probs, at_least=1)
    return float(_kl_rows(p, p.mean(0, keepdim=True).expand_as(p)).mean().exp())


def modified_inception_score(probs: torch.Tensor) -> float:
    """probs: (n >= 2, classes). Averages KL over all ordered pairs of distinct rows."""
    p = _check_probs("modified_inception_score", probs, at_least=2)
    n = p.shape[0]
    # KL(p_i || p_j) = sum_c p_ic log p_ic - sum_c p_ic log p_jc, for all pairs at once.
    kl = (p * p.log()).sum(-1, keepdim=True) - p @ p.log().T
    return float((kl.sum() / (n * (n - 1))).exp())


def am_score(probs: torch.Tensor, reference_probs: torch.Tensor) -> float:
    """probs: (n, classes) of the samples; reference_probs: (m, classes) of real data."""
    p = _check_probs("am_score", probs, at_least=1)
    ref = _check_probs("am_score (reference)", reference_probs, at_least=1)
    if ref.shape[1] != p.shape[1]:
        raise ValueError(f"am_score: {p.shape[1]} classes in the samples but {ref.shape[1]} in the reference")
    kl = _kl_rows(ref.mean(0, keepdim=True), p.mean(0, keepdim=True))
    entropy = -(p * p.log()).sum(-1).mean()
    return float(kl.squeeze(0) + entropy)


def frechet_distance(features: torch.Tensor, reference: torch.Tensor) -> float:
    """features: (n >= 2, d), reference: (m >= 2, d) ->
    ``|mu_a - mu_b|^2 + Tr(S_a + S_b - 2 (S_a^1/2 S_b S_a^1/2)^1/2)``, in float64."""
    if features.dim() != 2 or reference.dim() != 2 or features.shape[1] != reference.shape[1]:
        raise ValueError(f"frechet_distance: needs (n, d) and (m, d) features, got {tuple(features.shape)} "
                         f"and {tuple(reference.shape)}")
    if features.shape[0] < 2 or reference.shape[0] < 2:
        raise ValueError("frechet_distance: needs at least 2 feature vectors on each side to estimate a covariance")
    a, b = features.double(), reference.double()
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = torch.cov(a.T).reshape(a.shape[1], -1), torch.cov(b.T).reshape(b.shape[1], -1)
    root_a = _psd_sqrt(cov_a)
    # The trace of sqrt(S_a S_b) equals that of the symmetric sqrt(S_a^1/2 S_b S_a^1/2).
    cross = _psd_sqrt(root_a @ cov_b @ root_a)
    return float((mu_a - mu_b).pow(2).sum() + cov_a.trace() + cov_b.trace() - 2 * cross.trace())


def _psd_sqrt(matrix: torch.Tensor) -> torch.Tensor:
    """Square root of a symmetric positive semi-definite matrix (eigenvalues below 0
    from rounding are taken as 0)."""
    values, vectors = torch.linalg.eigh((matrix + matrix.T) / 2)
    return (vectors * values.clamp(min=0).sqrt()) @ vectors.T
