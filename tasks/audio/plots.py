"""A PNG per generated sample: the waveform over its log-magnitude spectrogram."""
from __future__ import annotations

from pathlib import Path

import torch


def spectrogram_db(samples: torch.Tensor, *, sample_rate: int) -> torch.Tensor:
    """samples (n,) -> power in dB (freq, frames): 32 ms Hann windows every 8 ms."""
    n_fft = max(16, 1 << (int(0.032 * sample_rate) - 1).bit_length())
    window = torch.hann_window(n_fft)
    spec = torch.stft(samples.float(), n_fft, hop_length=n_fft // 4, window=window, return_complex=True)
    return 10 * torch.log10(spec.abs().pow(2).clamp(min=1e-10))


def plot_sample(path: str | Path, samples: torch.Tensor, *, sample_rate: int, prompt_samples: int = 0, title: str = "") -> Path:
    """Write a PNG of samples (n,) float: waveform above, spectrogram below; a dashed
    line marks where a prompt of ``prompt_samples`` ends and generation begins."""
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    seconds = len(samples) / sample_rate
    fig, (wave_ax, spec_ax) = plt.subplots(2, 1, figsize=(6, 3.6), sharex=True, gridspec_kw={"height_ratios": [1, 1.4]})
    time = torch.arange(len(samples)) / sample_rate
    wave_ax.plot(time.numpy(), samples.float().numpy(), linewidth=0.4, color="tab:blue")
    wave_ax.set_ylim(-1, 1)
    wave_ax.set_ylabel("amplitude")
    if title:
        wave_ax.set_title(title, fontsize=9)
    if len(samples) >= 16:
        db = spectrogram_db(samples, sample_rate=sample_rate)
        top = float(db.max())
        spec_ax.imshow(db.numpy(), origin="lower", aspect="auto", cmap="magma", vmin=top - 80, vmax=top,
                       extent=(0, seconds, 0, sample_rate / 2000))
    spec_ax.set_ylabel("kHz")
    spec_ax.set_xlabel("seconds")
    if prompt_samples:
        for ax in (wave_ax, spec_ax):
            ax.axvline(prompt_samples / sample_rate, color="white" if ax is spec_ax else "gray", linestyle="--", linewidth=0.8)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path
