"""``audio_classify``: one label per clip (the spoken digit), and sample-quality scores.

The classifier reads log-mel frames (25 ms windows every 10 ms, ``task.n_mels`` bands)
through a Linear, a stack of the backbone's Mamba blocks and a final norm; the frames'
mean is its feature vector, a Linear of it the class logits. Its input is the clip
after the task's quantization round trip, the same as a generated sample's.

Its evaluation reports accuracy on the test split (val without one) and the SC09
scores of :mod:`.quality` for the real test clips and, with ``task.score_dir``, for
every audio file in that folder (e.g. what ``seqmamba generate`` wrote): IS, mIS, AM
score (against the training clips' mean prediction) and FID (against the training
clips' features).
"""
# No ``from __future__ import annotations`` here: OmegaConf reads the config's
# annotations at runtime.
from dataclasses import dataclass
from typing import Optional

import torch
import torchaudio
from torch import nn
from torch.utils.data import DataLoader, Dataset

from seqmamba.models import ModelConfig, make_norm

from ..base import Report, StepOutput, Task, check_ids, language_model_step
from .codec import dequantize, quantize
from .data import AudioData, AudioDataConfig, AudioWindows, spread
from .files import find_audio_files, read_audio
from .quality import am_score, frechet_distance, inception_score, modified_inception_score
from .stack import MambaStack


@dataclass
class AudioClassifyConfig(AudioDataConfig):
    """Clip classification. Besides :class:`~.data.AudioDataConfig`:

    Attributes:
        n_mels: mel bands of the classifier's input frames.
        score_dir: a folder of audio files (generated samples) to score in the
            evaluation; ``null``: score the real test clips only.
    """

    name: str = "audio_classify"
    n_mels: int = 40
    score_dir: Optional[str] = None

    def validate(self) -> None:
        super().validate()
        if self.n_mels < 1:
            raise ValueError(f"task.n_mels: must be a positive integer, got {self.n_mels}")


class AudioClassifier(nn.Module):
    """audio (batch, L) float -> class logits (batch, num_classes)."""

    def __init__(self, config: ModelConfig, *, sample_rate: int, n_mels: int, num_classes: int) -> None:
        super().__init__()
        window = round(0.025 * sample_rate)
        self.mel = torchaudio.transforms.MelSpectrogram(sample_rate, n_fft=window, hop_length=round(0.010 * sample_rate),
                                                        n_mels=n_mels)
        # Log-mel values span tens of units; a norm per frame keeps the projection's input at unit scale.
        self.frame_norm = nn.LayerNorm(n_mels)
        self.proj = nn.Linear(n_mels, config.d_model)
        self.stack = MambaStack(config, n_layer=config.n_layer, first_layer=0)
        self.norm_f = make_norm(config.d_model, eps=config.norm_epsilon, rms_norm=config.rms_norm)
        self.head = nn.Linear(config.d_model, num_classes)

    def features(self, audio: torch.Tensor) -> torch.Tensor:
        """audio (batch, L) -> (batch, d_model): the mean over frames of the normed hidden states."""
        frames = torch.log(self.mel(audio.float()) + 1e-6).transpose(1, 2)  # (batch, frames, n_mels)
        hidden = self.stack(self.proj(self.frame_norm(frames)))
        return self.norm_f(hidden).mean(1)

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(audio))


class Waveforms(Dataset):
    """``{"audio": (seq_len,) float32, "label": () int64}``: the clips after the codec."""

    def __init__(self, windows: AudioWindows) -> None:
        self.windows = windows
        self.cfg = windows.config

    def __len__(self) -> int:
        return len(self.windows)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        item = self.windows[index]
        audio = dequantize(item["ids"], quantization=self.cfg.quantization, bits=self.cfg.bits)
        return {"audio": audio, "label": item["label"]}


class AudioClassify(Task):
    """Classify clips by their folder; IS, mIS, AM and FID of real and generated clips."""

    name = "audio_classify"
    config_class = AudioClassifyConfig
    cfg: AudioClassifyConfig

    def __init__(self, cfg: AudioClassifyConfig) -> None:
        cfg.validate()
        super().__init__(cfg)
        self.data = AudioData(cfg)
        if "" in self.data.classes:
            raise ValueError(f"task.data: files directly in a split folder of {cfg.data} have no label; put each "
                             "class in its own folder (train/<label>/...)")
        if len(self.data.classes) < 2:
            raise ValueError(f"task.data: {cfg.data} has {len(self.data.classes)} class; classification needs at least 2")

    @property
    def vocab_size(self) -> int:
        return 1 << self.cfg.bits  # the input's quantization classes; nothing is embedded

    def datasets(self) -> dict[str, Dataset]:
        return {split: Waveforms(self.data.windows(split)) for split in self.data.split_names()}

    def build_model(self, model_cfg: ModelConfig) -> nn.Module:
        return AudioClassifier(model_cfg, sample_rate=self.cfg.sample_rate, n_mels=self.cfg.n_mels,
                               num_classes=len(self.data.classes))

    def check_batch(self, batch: dict[str, torch.Tensor]) -> None:
        """As ``Task.check_batch``, and batch["label"] (batch,) in [0, number of classes)."""
        super().check_batch(batch)
        check_ids(f"task {self.name!r}: batch['label']", batch["label"], len(self.data.classes))

    def step(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> StepOutput:
        """Cross-entropy of the logits (batch, classes) against batch["label"] (batch,)."""
        return language_model_step(model(batch["audio"])[:, None], batch["label"][:, None])

    def _run(self, model: nn.Module, data: "Dataset | list", device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(probabilities (n, classes), features (n, d), labels (n,)) of a data set's items."""
        probs, features, labels = [], [], []
        data = spread(data, self.cfg.eval_max_examples)
        for batch in DataLoader(data, batch_size=self.cfg.eval_batch_size, shuffle=False):
            feats = model.features(batch["audio"].to(device))
            probs.append(torch.softmax(model.head(feats).float(), -1).cpu())
            features.append(feats.float().cpu())
            labels.append(batch["label"])
        return torch.cat(probs), torch.cat(features), torch.cat(labels)

    def score_files(self, folder: str) -> list[dict[str, torch.Tensor]]:
        """Every audio file under ``folder`` as classifier inputs (cut or padded to
        ``seq_len``, through the codec like the training clips); labels are -1."""
        cfg = self.cfg
        items = []
        for path in find_audio_files(folder):
            samples = read_audio(path, sample_rate=cfg.sample_rate, length=cfg.seq_len)
            samples = torch.cat([samples, samples.new_zeros(cfg.seq_len - len(samples))])
            audio = dequantize(quantize(samples, quantization=cfg.quantization, bits=cfg.bits),
                               quantization=cfg.quantization, bits=cfg.bits)
            items.append({"audio": audio, "label": torch.tensor(-1)})
        return items  # a list is a map-style data set for DataLoader

    def evaluate(self, model: nn.Module, device: torch.device) -> Report:
        """Accuracy per class, and IS / mIS / AM / FID of the real clips and of ``score_dir``."""
        splits = self.datasets()
        split = "test" if "test" in splits else "val"
        train_probs, train_features, _ = self._run(model, splits["train"], device)
        probs, features, labels = self._run(model, splits[split], device)
        predicted = probs.argmax(-1)
        rows = [self._scores(f"{split} (real)", probs, features, train_probs, train_features)]
        metrics = {f"{split}_accuracy": float((predicted == labels).float().mean())}
        metrics.update({f"{split}_{k.lower()}": v for k, v in rows[0].items() if k in ("IS", "mIS", "AM", "FID")})
        if self.cfg.score_dir:
            sample_probs, sample_features, _ = self._run(model, self.score_files(self.cfg.score_dir), device)
            rows.append(self._scores(f"samples ({self.cfg.score_dir})", sample_probs, sample_features, train_probs, train_features))
            metrics.update({f"samples_{k.lower()}": v for k, v in rows[1].items() if k in ("IS", "mIS", "AM", "FID")})
            counts = torch.bincount(sample_probs.argmax(-1), minlength=len(self.data.classes)).tolist()
            metrics["samples_classes"] = " ".join(f"{c}:{n}" for c, n in zip(self.data.classes, counts) if n)
        per_class = ", ".join(
            f"{name} {float((predicted[labels == i] == i).float().mean()):.2f}"
            for i, name in enumerate(self.data.classes) if (labels == i).any()
        )
        return Report(
            title=f"Audio classification on the {split} split ({len(labels)} clips, {len(self.data.classes)} classes); "
                  f"accuracy per class: {per_class}. Scores: IS, mIS (high is good), AM, FID against train (low is good)",
            metrics=metrics,
            rows=rows,
        )

    def _scores(self, name: str, probs: torch.Tensor, features: torch.Tensor, train_probs: torch.Tensor,
                train_features: torch.Tensor) -> dict:
        return {
            "set": name,
            "clips": len(probs),
            "IS": inception_score(probs),
            "mIS": modified_inception_score(probs) if len(probs) > 1 else float("nan"),
            "AM": am_score(probs, train_probs),
            "FID": frechet_distance(features, train_features) if len(features) > 1 else float("nan"),
        }
