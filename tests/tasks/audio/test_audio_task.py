"""audio_pretrain and audio_classify end to end on tiny clips: bits per sample, prompts
and generated WAV/PNG files, ``seqmamba train``/``generate``/``evaluate`` on the CLI."""
from __future__ import annotations

import math

import pytest
import soundfile
import torch
from audio_helpers import tone, write

from seqmamba.cli import main
from seqmamba.models import ModelConfig
from seqmamba.tasks import get_task
from seqmamba.tasks.audio.codec import quantize
from seqmamba.tasks.audio.files import read_audio

MODEL = ModelConfig(d_model=8, n_layer=1, d_state=4)

CONFIG = """\
name: {name}
model: {{d_model: 8, n_layer: 1, d_state: 4}}
task: {{name: {task}, data: {data}, sample_rate: 8000, seq_len: 301, batch_size: 4, eval_batch_size: 8{extra}}}
optimizer: {{lr: 3.0e-3}}
trainer: {{max_steps: 2, val_every_n_steps: 2, log_every_n_steps: 1, accelerator: cpu, devices: 1,
          progress_bar: false, output_dir: {output_dir}}}
"""


def make(task_name, **fields):
    cls = get_task(task_name)
    return cls(cls.config_class(**fields))


def test_bits_per_sample_in_steps_and_evaluation(clips):
    task = make("audio_pretrain", data=str(clips), sample_rate=8000, seq_len=301, batch_size=3)
    torch.manual_seed(0)
    model = task.build_model(MODEL)
    data = task.datasets()["train"]
    batch = {k: torch.stack([data[i][k] for i in range(3)]) for k in data[0]}
    out = task.step(model, batch)
    bits = out.metrics["bits_per_sample"]
    assert int(bits.count) == 3 * 301
    assert math.isclose(float(bits.total / bits.count), float(out.loss.detach()) / math.log(2), rel_tol=1e-5)
    out.loss.backward()
    with torch.no_grad():
        report = task.evaluate(model.eval(), torch.device("cpu"))
    assert [row["split"] for row in report.rows] == ["val", "test"]
    for row in report.rows:
        assert 0 < row["bits_per_sample"] < 12 and row["samples"] == row["examples"] * 301
    assert report.metrics["test_bits_per_sample"] == report.rows[1]["bits_per_sample"]
    assert task.loss_unit() == ("sample", 1.0)


def test_prompts_and_generated_files(clips, tmp_path):
    task = make("audio_pretrain", data=str(clips), sample_rate=8000, seq_len=301, prompt_seconds=0.01)
    start = quantize(torch.zeros(1))
    assert torch.equal(task.encode_prompt(""), start)
    prompt_file = sorted((clips / "test" / "low").iterdir())[0]
    prompt = task.encode_prompt(str(prompt_file))
    assert prompt.shape == (81,) and prompt[0] == start[0]
    assert torch.equal(prompt[1:], quantize(read_audio(prompt_file, sample_rate=8000)[:80]))
    with pytest.raises(ValueError, match="no audio file at"):
        task.encode_prompt(str(tmp_path / "nothing.wav"))

    ids = torch.cat([prompt, torch.randint(0, 256, (113,), generator=torch.Generator().manual_seed(0))])
    line = task.decode_output(ids, prompt_length=len(prompt), output_dir=tmp_path / "out", index=4)
    wav, png = tmp_path / "out" / "sample_004.wav", tmp_path / "out" / "sample_004.png"
    assert str(wav) in line and "0.01 s prompt" in line
    data, rate = soundfile.read(str(wav))
    assert rate == 8000 and data.shape == (80 + 113,)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "x real time at 8000 Hz" in task.describe_speed(4000.0, sequences=2)
    other = make("induction_heads", name="induction_heads")
    assert other.describe_speed(4000.0, sequences=2) == ""  # the default says nothing


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Two-step runs of both tasks on the tiny clips, through the CLI."""
    root = tmp_path_factory.mktemp("audio_runs")
    for split, count in (("train", 4), ("val", 1), ("test", 2)):
        for label, freq in (("low", 300.0), ("high", 1500.0)):
            for k in range(count):
                write(root / "data" / split / label / f"v{k}.wav", tone(0.05, 11025, freq=freq, seed=k), 11025)
    configs = {}
    for name, task, extra in (("lm", "audio_pretrain", ", pool: [2, 3]"),
                              ("clf", "audio_classify", f", n_mels: 16, score_dir: {root / 'samples'}")):
        configs[name] = root / f"{name}.yaml"
        configs[name].write_text(CONFIG.format(name=name, task=task, data=root / "data", extra=extra,
                                               output_dir=root / "runs"))
    assert main(["train", str(configs["lm"])]) == 0
    return root, configs


def test_cli_generates_wavs_and_scores_them(runs, capsys):
    root, configs = runs
    capsys.readouterr()
    prompt = root / "data" / "test" / "low" / "v0.wav"
    argv = ["generate", str(configs["lm"]), "ckpt=last", "prompt=", "max_new_tokens=301", "num_samples=2", "seed=1",
            "top_p=0.95", f"output_dir={root / 'samples'}"]
    assert main(argv) == 0
    out, err = capsys.readouterr()
    assert out.count("unconditional") == 2 and "x real time at 8000 Hz" in err
    for index in range(2):
        data, rate = soundfile.read(str(root / "samples" / f"sample_{index:03d}.wav"))
        assert rate == 8000 and data.shape == (301,)
        assert (root / "samples" / f"sample_{index:03d}.png").is_file()
    assert main(["generate", str(configs["lm"]), "ckpt=last", f"prompt={prompt}", "max_new_tokens=20",
                 f"output_dir={root / 'continued'}", "task.prompt_seconds=0.02"]) == 0
    assert soundfile.read(str(root / "continued" / "sample_000.wav"))[0].shape == (160 + 20,)

    assert main(["train", str(configs["clf"]), "trainer.evaluate=false"]) == 0
    capsys.readouterr()
    assert main(["evaluate", str(configs["clf"]), "ckpt=last"]) == 0
    report = capsys.readouterr().out
    for key in ("test_accuracy", "test_is", "samples_is", "samples_mis", "samples_am", "samples_fid"):
        assert f"{key}: " in report
    assert "samples (" in report and "test (real)" in report


def test_cli_refuses_mismatched_prompts(runs, capsys):
    root, configs = runs
    long_prompt = root / "data" / "train" / "low" / "v0.wav"
    capsys.readouterr()
    code = main(["generate", str(configs["lm"]), "ckpt=last", f"prompt={long_prompt}", "prompt=", "max_new_tokens=3"])
    err = capsys.readouterr().err
    assert code == 2 and "same length" in err and "task.prompt_seconds" in err
