"""Quantization of waveforms: mu-law and linear round trips within their error bounds."""
from __future__ import annotations

import pytest
import torch

from seqmamba.tasks.audio.codec import dequantize, quantize, silence_id


def random_waveform(n: int = 4001, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, generator=g) * 2 - 1
    x[:3] = torch.tensor([-1.0, 0.0, 1.0])  # the ends and the middle of the range
    return x * torch.rand(n, generator=g).pow(3)  # many quiet samples, as in speech


@pytest.mark.parametrize("bits", [8, 5])
def test_mulaw_round_trip_error_is_within_its_bound(bits):
    x = random_waveform()
    ids = quantize(x, quantization="mulaw", bits=bits)
    mu = (1 << bits) - 1
    assert ids.dtype == torch.int64 and int(ids.min()) >= 0 and int(ids.max()) <= mu
    back = dequantize(ids, quantization="mulaw", bits=bits)
    # Half a step in the companded domain: a relative error that grows with |x|.
    bound = ((1 + mu) ** (1 / mu) - 1) * (x.abs() + 1 / mu)
    assert bool(((back - x).abs() <= bound * 1.0001 + 1e-7).all())
    # Quiet samples come back far more precisely than loud ones (the point of mu-law).
    quiet, loud = x.abs() < 0.01, x.abs() > 0.5
    assert (back - x)[quiet].abs().max() < (back - x)[loud].abs().max() / 10


def test_linear_round_trip_error_is_half_a_step():
    x = random_waveform(seed=1)
    ids = quantize(x, quantization="linear", bits=8)
    back = dequantize(ids, quantization="linear", bits=8)
    assert int(ids.min()) >= 0 and int(ids.max()) <= 255
    assert float((back - x).abs().max()) <= 1 / 255 + 1e-6


def test_out_of_range_samples_are_clipped_and_silence_has_an_id():
    ids = quantize(torch.tensor([-3.0, 2.5]), quantization="mulaw")
    assert ids.tolist() == [0, 255]
    for quantization in ("mulaw", "linear"):
        zero = silence_id(quantization=quantization)
        # An even number of classes has no level at 0: silence is the nearest, half a step away at most.
        assert abs(float(dequantize(torch.tensor([zero]), quantization=quantization))) <= 1 / 255 + 1e-6


def test_bad_codec_input_is_a_clear_error():
    with pytest.raises(ValueError, match="task.quantization"):
        quantize(torch.zeros(3), quantization="alaw")
    with pytest.raises(ValueError, match="task.bits"):
        quantize(torch.zeros(3), bits=1)
    with pytest.raises(ValueError, match="float tensor"):
        quantize(torch.zeros(3, dtype=torch.long))
    with pytest.raises(ValueError, match=r"\[0, 256\)"):
        dequantize(torch.tensor([0, 256]))
