"""``seqmamba data dna-species`` on small fake genomes in the ragout-examples layout,
and the shipped species config trained for a few steps on its output."""
from __future__ import annotations

import gzip
import random
from pathlib import Path

import numpy as np
import pyfaidx
import pytest
import torch

from seqmamba.cli import main
from seqmamba.tasks.dna.species import DEFAULT_SOURCE, build_species_dataset

CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "dna"
STRAINS = {"Alpha.one": ["s1", "s2", "s3"], "Beta.two": ["t1", "t2"], "Gamma": ["only"]}


@pytest.fixture
def source(tmp_path):
    rng = random.Random(11)
    genomes = {}
    for species, strains in STRAINS.items():
        folder = tmp_path / "src" / species / "references"
        folder.mkdir(parents=True)
        for strain in strains:
            contigs = {f"gi|{strain}|chr": "".join(rng.choice("ACGTacgtN") for _ in range(rng.randint(7000, 8001)))}
            if strain == "s2":
                contigs["plasmid x"] = "".join(rng.choice("ACGT") for _ in range(1500))
            text = "".join(f">{name} {species} {strain}\n{seq[:70]}\n{seq[70:]}\n" for name, seq in contigs.items())
            (folder / f"{strain}.fasta.gz").write_bytes(gzip.compress(text.encode()))
            genomes[(species, strain)] = contigs
    return tmp_path / "src", genomes


def read_bed(path):
    return [(c, int(s), int(e), split, label) for c, s, e, split, label in (line.split("\t") for line in path.read_text().splitlines())]


def test_species_dataset_holds_out_strains(source, tmp_path):
    src, genomes = source
    out = tmp_path / "out"
    summary = build_species_dataset(out, source=src, lengths=[1024, 2048], train_windows=9, test_windows=5, val_fraction=0.3, seed=3)
    assert summary["species"] == ["Alpha.one", "Beta.two"]  # Gamma has one strain only
    fasta = pyfaidx.Fasta(str(out / "genomes.fa"))
    assert (out / "genomes.fa.fai").is_file()
    for (species, strain), contigs in genomes.items():
        if species == "Gamma":
            continue
        for name, seq in contigs.items():
            safe = "".join(c if c.isalnum() or c in "._-" else "_" for c in name.split()[0])
            assert str(fasta[f"{species}__{strain}__{safe}"]) == seq
    for length in (1024, 2048):
        rows = read_bed(out / f"windows_{length}.bed")
        strains_by_split: dict[str, set] = {"train": set(), "val": set(), "test": set()}
        for chrom, start, end, split, label in rows:
            species, strain, _ = chrom.split("__")
            assert label == species and end - start == length and 0 <= start and end <= len(fasta[chrom])
            strains_by_split[split].add((species, strain))
        assert strains_by_split["test"] == {(s, t) for s, t in summary["test_strains"].items()}
        assert not strains_by_split["test"] & (strains_by_split["train"] | strains_by_split["val"])
        for species in summary["species"]:
            counts = {split: sum(1 for r in rows if r[4] == species and r[3] == split) for split in ("train", "val", "test")}
            assert counts == {"train": 9, "val": 3, "test": 5}


def test_species_dataset_errors(source, tmp_path):
    src, _ = source
    with pytest.raises(ValueError, match="1024 .. 131072"):
        build_species_dataset(tmp_path / "o", source=src, lengths=[512])
    with pytest.raises(ValueError, match="has no (train|test|val) region of 4096 bases"):
        build_species_dataset(tmp_path / "o", source=src, lengths=[4096], val_fraction=0.3)
    assert main(["data", "dna-species", str(tmp_path / "o"), "--source", str(tmp_path / "nothing")]) == 2
    if not DEFAULT_SOURCE.is_dir():
        with pytest.raises(ValueError, match="apt-get install -y ragout-examples"):
            build_species_dataset(tmp_path / "o")


def test_species_config_trains_on_the_output(source, tmp_path, capsys):
    src, _ = source
    out = tmp_path / "data"
    assert main(["data", "dna-species", str(out), "--source", str(src), "--train-windows", "6", "--test-windows", "3", "--val-fraction", "0.3"]) == 0
    status = main([
        "train", str(CONFIGS / "species_classify.yaml"),
        f"task.source={out / 'windows_1024.bed'}", f"task.fasta={out / 'genomes.fa'}",
        f"trainer.output_dir={tmp_path / 'runs'}", "trainer.max_steps=2", "trainer.val_every_n_steps=2",
        "trainer.progress_bar=false", "model.d_model=16", "model.n_layer=1", "task.batch_size=2",
    ])
    assert status == 0
    printed = capsys.readouterr().out
    assert "test_accuracy" in printed and "test_mcc" in printed

    # Embeddings of the trained classifier: FASTA records to .pt, BED intervals to .npy.
    common = [str(CONFIGS / "species_classify.yaml"), "ckpt=last", f"trainer.output_dir={tmp_path / 'runs'}",
              f"task.source={out / 'windows_1024.bed'}", f"task.fasta={out / 'genomes.fa'}"]
    assert main(["embed", *common, f"input={out / 'genomes.fa'}", f"out={tmp_path / 'e.pt'}"]) == 0
    saved = torch.load(tmp_path / "e.pt")
    names = list(pyfaidx.Fasta(str(out / "genomes.fa")).keys())
    assert saved["ids"] == names and saved["embeddings"].shape == (len(names), 16)
    assert torch.isfinite(saved["embeddings"]).all()
    bed = tmp_path / "two.bed"
    bed.write_text(f"{names[0]}\t10\t900\ttest\n{names[1]}\t0\t2000\ttest\n")
    assert main(["embed", *common, f"input={bed}", f"out={tmp_path / 'e.npy'}"]) == 0
    array = np.load(tmp_path / "e.npy")
    assert array.shape == (2, 16)
    assert (tmp_path / "e.npy.ids.txt").read_text().split() == [f"{names[0]}:10-900", f"{names[1]}:0-2000"]
    assert main(["embed", *common, f"input={bed}"]) == 2  # out= missing


def test_pretrain_config_then_finetune_from_its_checkpoint(source, tmp_path, capsys):
    src, _ = source
    out = tmp_path / "data"
    build_species_dataset(out, source=src, train_windows=4, test_windows=2, val_fraction=0.3)
    tiny = ["model.d_model=16", "model.n_layer=1", "trainer.max_steps=2", "trainer.val_every_n_steps=2",
            "trainer.progress_bar=false", f"trainer.output_dir={tmp_path / 'runs'}", "task.backbone=bidirectional"]
    assert main(["train", str(CONFIGS / "pretrain_tiny.yaml"), f"task.fasta={out / 'genomes.fa'}",
                 "task.batch_size=2", "task.eval_max_windows=4", "task.val_fraction=0.2", *tiny]) == 0
    assert "val_bits_per_base" in capsys.readouterr().out
    checkpoint = tmp_path / "runs" / "dna_pretrain_tiny" / "checkpoints" / "last.ckpt"
    assert main(["train", str(CONFIGS / "species_classify.yaml"), f"task.source={out / 'windows_1024.bed'}",
                 f"task.fasta={out / 'genomes.fa'}", f"task.init_from={checkpoint}", "task.batch_size=2", *tiny]) == 0
    assert "test_accuracy" in capsys.readouterr().out
    # A backbone of another size is refused with a one-line error.
    assert main(["train", str(CONFIGS / "species_classify.yaml"), f"task.source={out / 'windows_1024.bed'}",
                 f"task.fasta={out / 'genomes.fa'}", f"task.init_from={checkpoint}", *tiny, "model.d_model=24",
                 "name=other"]) == 2
    assert "task.init_from" in capsys.readouterr().err


def test_accuracy_by_length_sweep_prints_one_row_per_length(source, tmp_path, capsys, monkeypatch):
    """benchmarks/dna_accuracy_by_length.py: one tiny training run per length, one table."""
    import importlib.util
    import sys

    spec = importlib.util.spec_from_file_location(
        "dna_accuracy_by_length", CONFIGS.parents[1] / "benchmarks" / "dna_accuracy_by_length.py"
    )
    sweep = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(sweep)
    src, _ = source
    data = tmp_path / "data"
    build_species_dataset(data, source=src, lengths=[1024, 2048], train_windows=8, test_windows=4, val_fraction=0.3, seed=1)
    tiny = ["model.d_model=8", "model.n_layer=1", "model.d_state=4", "trainer.precision=32-true",
            "task.num_workers=0", "trainer.val_every_n_steps=2", "trainer.limit_val_batches=1"]
    monkeypatch.setattr(sys, "argv", ["sweep", "--data", str(data), "--lengths", "1024", "2048", "--steps", "2",
                                      "--tokens-per-step", "4096", "--eval-tokens", "8192",
                                      "--output-dir", str(tmp_path / "runs"), *tiny])
    sweep.main()
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| ")]
    assert lines[0].startswith("| length | batch x steps |") and "test_accuracy" in lines[0]
    assert [line.split(" | ")[0] for line in lines[2:]] == ["| 1024", "| 2048"]
    assert [line.split(" | ")[1] for line in lines[2:]] == ["4 x 2", "2 x 2"]
    with pytest.raises(SystemExit, match=r"windows_4096.bed is missing: build it with 'seqmamba data dna-species"):
        monkeypatch.setattr(sys, "argv", ["sweep", "--data", str(data), "--lengths", "4096"])
        sweep.main()


@pytest.mark.skipif(not DEFAULT_SOURCE.is_dir(), reason="needs Debian's ragout-examples genomes (apt-get install ragout-examples)")
def test_small_classifier_beats_the_majority_class_on_real_genomes(tmp_path):
    """The real data set at L = 1024: a one-layer model trained for 40 steps (seconds on a
    CPU) classifies windows of unseen strains well above the majority class (0.25)."""
    import json

    out = tmp_path / "data"
    assert main(["data", "dna-species", str(out), "--train-windows", "200", "--test-windows", "50"]) == 0
    status = main([
        "train", str(CONFIGS / "species_classify.yaml"), "name=species_small",
        f"task.source={out / 'windows_1024.bed'}", f"task.fasta={out / 'genomes.fa'}",
        f"trainer.output_dir={tmp_path / 'runs'}", "trainer.max_steps=40", "trainer.val_every_n_steps=40",
        "trainer.limit_val_batches=1", "trainer.progress_bar=false", "model.d_model=16", "model.n_layer=1",
    ])
    assert status == 0
    metrics = json.loads((tmp_path / "runs" / "species_small" / "eval.json").read_text())["metrics"]
    assert metrics["test_accuracy"] > 0.4, metrics
