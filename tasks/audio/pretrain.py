"""``audio_pretrain``: autoregressive modelling of raw waveforms, one class per sample.

Each example of ``seq_len`` quantized samples x_0 .. x_{L-1} is read after a start
token, silence (the class of a zero sample): inputs ``[silence, x_0, .., x_{L-2}]``,
targets ``x_0 .. x_{L-1}``, so every sample of a clip is scored, the first one
given nothing but silence, which is also how unconditional generation starts. Padding
(``task.short: pad``) is not scored. Training and evaluation report the negative
log-likelihood in bits per sample (``val/bits_per_sample``; 8 bits is a uniform guess
over 256 classes).

``seqmamba generate`` takes ``prompt=`` (empty: unconditional) or ``prompt=PATH`` (an
audio file whose start the model continues, cut to ``task.prompt_seconds``); it writes
``sample_NNN.wav`` at ``task.sample_rate`` and ``sample_NNN.png`` (waveform and
spectrogram) per sample under ``output_dir``.
"""
# No ``from __future__ import annotations`` here: OmegaConf reads the config's
# annotations at runtime.
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from ..base import IGNORE_INDEX, Metric, Report, StepOutput, Task, language_model_step
from .codec import dequantize, quantize, silence_id
from .data import AudioData, AudioDataConfig, AudioWindows, spread
from .files import read_audio, write_wav
from .models import BACKBONES, build_audio_lm
from .plots import plot_sample


@dataclass
class AudioPretrainConfig(AudioDataConfig):
    """Waveform language modelling. Besides :class:`~.data.AudioDataConfig`:

    Attributes:
        backbone: ``unet`` (multi-scale, :mod:`.unet`) or ``plain`` (one stack).
        pool: the U-Net's pooling factors, finest first.
        pool_expand: width multiplier at each down-pool.
        prompt_seconds: ``seqmamba generate`` cuts prompt files to their first this
            many seconds (``null``: whole files; prompts generated together must then
            be equally long).
    """

    name: str = "audio_pretrain"
    backbone: str = "unet"
    pool: List[int] = field(default_factory=lambda: [4, 4])
    pool_expand: int = 2
    prompt_seconds: Optional[float] = None

    def validate(self) -> None:
        super().validate()
        if self.backbone not in BACKBONES:
            raise ValueError(f"task.backbone: must be one of {', '.join(BACKBONES)}, got {self.backbone!r}")
        if not self.pool or any(p < 2 for p in self.pool):
            raise ValueError(f"task.pool: must be a non-empty list of pooling factors >= 2, got {list(self.pool)}")
        if self.pool_expand < 1:
            raise ValueError(f"task.pool_expand: must be a positive integer, got {self.pool_expand}")
        if self.prompt_seconds is not None and not self.prompt_seconds > 0:
            raise ValueError(f"task.prompt_seconds: must be > 0 or null, got {self.prompt_seconds}")


class NextSample(Dataset):
    """``{"input_ids", "labels"}`` (seq_len,) int64 from :class:`AudioWindows`: the
    start token then the samples shifted by one; padding labelled IGNORE_INDEX."""

    def __init__(self, windows: AudioWindows, *, start_id: int) -> None:
        self.windows = windows
        self.start = torch.tensor([start_id])

    def __len__(self) -> int:
        return len(self.windows)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        item = self.windows[index]
        ids = item["ids"]
        labels = ids.clone()
        labels[int(item["valid"]):] = IGNORE_INDEX
        return {"input_ids": torch.cat([self.start, ids[:-1]]), "labels": labels}


class AudioPretrain(Task):
    """Next-sample prediction over quantized waveforms; bits per sample."""

    name = "audio_pretrain"
    config_class = AudioPretrainConfig
    cfg: AudioPretrainConfig

    def __init__(self, cfg: AudioPretrainConfig) -> None:
        cfg.validate()
        super().__init__(cfg)
        self.data = AudioData(cfg)
        self.start_id = silence_id(quantization=cfg.quantization, bits=cfg.bits)

    @property
    def vocab_size(self) -> int:
        return 1 << self.cfg.bits

    def datasets(self) -> dict[str, Dataset]:
        return {split: NextSample(self.data.windows(split), start_id=self.start_id) for split in self.data.split_names()}

    def build_model(self, model_cfg) -> nn.Module:
        return build_audio_lm(model_cfg.with_vocab_size(self.vocab_size), backbone=self.cfg.backbone,
                              pool=list(self.cfg.pool), expand=self.cfg.pool_expand)

    def step(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> StepOutput:
        """batch["input_ids"], batch["labels"]: (batch, L) int64."""
        out = language_model_step(model(batch["input_ids"]), batch["labels"])
        loss = out.metrics["loss"]
        out.metrics["bits_per_sample"] = Metric(loss.total / math.log(2), loss.count)
        return out

    def loss_unit(self) -> tuple[str, float]:
        return "sample", 1.0

    def evaluate(self, model: nn.Module, device: torch.device) -> Report:
        """Bits per sample (negative log-likelihood) and accuracy on val and test."""
        rows = []
        for split, data in self.datasets().items():
            if split == "train":
                continue
            data = spread(data, self.cfg.eval_max_examples)
            nats, right, scored = 0.0, 0.0, 0
            for batch in DataLoader(data, batch_size=self.cfg.eval_batch_size, shuffle=False):
                out = self.step(model, {key: value.to(device) for key, value in batch.items()})
                nats += float(out.metrics["loss"].total)
                right += float(out.metrics["accuracy"].total)
                scored += int(out.metrics["loss"].count)
            rows.append({"split": split, "bits_per_sample": nats / scored / math.log(2), "accuracy": right / scored,
                         "examples": len(data), "samples": scored})
        metrics = {f"{row['split']}_{key}": row[key] for row in rows for key in ("bits_per_sample", "accuracy")}
        cfg = self.cfg
        shape = f"{cfg.backbone} backbone" + (f", pooling {list(cfg.pool)} x{cfg.pool_expand}" if cfg.backbone == "unet" else "")
        return Report(
            title=f"Audio waveform model ({shape}; {cfg.bits}-bit {cfg.quantization}, {cfg.seq_len} samples at {cfg.sample_rate} Hz)",
            metrics=metrics,
            rows=rows,
        )

    # --- generation: prompts are audio files, outputs WAV + PNG files ---

    def encode_prompt(self, prompt: str) -> torch.Tensor:
        """``""`` -> the start token alone (unconditional); a path to an audio file ->
        the start token then the file's samples (its first ``task.prompt_seconds``)."""
        start = torch.tensor([self.start_id])
        if not prompt.strip():
            return start
        path = Path(prompt)
        if not path.is_file():
            raise ValueError(f"prompt: no audio file at {path}; give a WAV/FLAC file to continue, or prompt= (empty) "
                             "for unconditional generation")
        seconds = self.cfg.prompt_seconds
        length = None if seconds is None else max(1, round(seconds * self.cfg.sample_rate))
        samples = read_audio(path, sample_rate=self.cfg.sample_rate, length=length)
        if len(samples) == 0:
            raise ValueError(f"prompt: {path} holds no samples")
        return torch.cat([start, quantize(samples, quantization=self.cfg.quantization, bits=self.cfg.bits)])

    def decode_output(self, ids: torch.Tensor, *, prompt_length: int, output_dir: Path, index: int) -> str:
        """Write ``sample_NNN.wav`` (the prompt's samples, then the generated ones; not
        the start token) and ``sample_NNN.png``; return a line naming them."""
        rate = self.cfg.sample_rate
        samples = dequantize(ids[1:], quantization=self.cfg.quantization, bits=self.cfg.bits)
        prompt = prompt_length - 1
        wav = write_wav(Path(output_dir) / f"sample_{index:03d}.wav", samples, sample_rate=rate)
        what = f"{prompt / rate:.2f} s prompt + {(len(samples) - prompt) / rate:.2f} s generated" if prompt else "unconditional"
        png = plot_sample(wav.with_suffix(".png"), samples, sample_rate=rate, prompt_samples=prompt,
                          title=f"sample {index}: {what}")
        return f"sample {index}: {wav} ({len(samples) / rate:.2f} s at {rate} Hz, {what}), {png}"

    def describe_speed(self, tokens_per_second: float, *, sequences: int) -> str:
        rate = self.cfg.sample_rate
        return (f"{tokens_per_second:,.0f} samples/s per sequence = {tokens_per_second / rate:.3f}x real time at {rate} Hz "
                f"({sequences} sequences: {sequences * tokens_per_second / rate:.3f}x real time in all)")
