"""dna_pretrain and dna_classify: datasets from each layout, steps on a tiny model,
evaluation reports, fine-tuning from a pretraining checkpoint."""
from __future__ import annotations

import math
import random

import pytest
import torch

from seqmamba.models import ModelConfig
from seqmamba.tasks import IGNORE_INDEX, get_task
from seqmamba.tasks.dna import DNAClassifyConfig, DNAPretrainConfig
from seqmamba.tasks.dna.classify import matthews_corrcoef
from seqmamba.tasks.dna.tokenizer import BASES, MASK, PAD

MODEL = ModelConfig(d_model=16, n_layer=1, d_state=4)


def random_dna(rng: random.Random, n: int) -> str:
    return "".join(rng.choice("ACGT") for _ in range(n))


@pytest.fixture
def fasta(tmp_path):
    rng = random.Random(5)
    path = tmp_path / "g.fa"
    path.write_text(">c1\n" + random_dna(rng, 700) + "\n>c2\n" + random_dna(rng, 301) + "\n")
    return path


def make(cls_name, **fields):
    task_cls = get_task(cls_name)
    return task_cls(task_cls.config_class(**fields))


def check_step(task, batch_size: int = 3):
    model = task.build_model(MODEL)
    data = task.datasets()["train"]
    batch = {k: torch.stack([data[i][k] for i in range(batch_size)]) for k in data[0]}
    out = task.step(model, batch)
    assert torch.isfinite(out.loss) and out.loss > 0
    out.loss.backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)
    return model, batch


def test_pretrain_next_base(fasta):
    task = make("dna_pretrain", fasta=str(fasta), seq_len=45, stride=40, val_fraction=0.1, batch_size=3)
    splits = task.datasets()
    assert set(splits) == {"train", "val"} and len(splits["train"]) > len(splits["val"]) > 0
    assert not task.masked
    item = splits["train"][0]
    assert torch.equal(item["labels"][:-1], item["input_ids"][1:])
    model, _ = check_step(task)
    report = task.evaluate(model, torch.device("cpu"))
    bits = report.metrics["val_bits_per_base"]
    # An untrained model over a 12-token vocabulary: about log2(12) bits, far from 0.
    assert 2.0 < bits < 6.0
    assert math.isclose(report.metrics["val_perplexity"], 2**bits, rel_tol=1e-6)


def test_pretrain_masked_for_bidirectional(fasta):
    task = make("dna_pretrain", fasta=str(fasta), seq_len=201, backbone="bidirectional", data_seed=3)
    assert task.masked
    data = task.datasets()["train"]
    chosen = masked = total = 0
    for i in range(len(data)):
        item = data[i]
        scored = item["labels"] != IGNORE_INDEX
        assert torch.equal(item["labels"], data[i]["labels"])  # same masking every time
        assert set(item["labels"][scored].tolist()) <= set(BASES)
        unscored_ids = item["input_ids"][~scored]
        assert MASK not in unscored_ids.tolist()
        chosen += int(scored.sum())
        masked += int((item["input_ids"][scored] == MASK).sum())
        total += int((item["input_ids"] != PAD).sum())
    assert 0.10 < chosen / total < 0.20
    assert 0.65 < masked / chosen < 0.95
    check_step(task)


def test_pretrain_from_bed_regions_with_test_split(fasta, tmp_path):
    bed = tmp_path / "r.bed"
    bed.write_text("c1\t0\t500\ttrain\nc1\t500\t700\tval\nc2\t0\t301\ttest\n")
    task = make("dna_pretrain", fasta=str(fasta), bed=str(bed), seq_len=64)
    splits = task.datasets()
    assert set(splits) == {"train", "val", "test"}
    assert all(w.end <= 500 for w in task.windows if w.split == "train")
    model = task.build_model(MODEL)
    report = task.evaluate(model, torch.device("cpu"))
    assert [row["split"] for row in report.rows] == ["val", "test"]


def write_table(path, rows, delimiter):
    path.write_text("\n".join(delimiter.join(r) for r in rows) + "\n")


@pytest.mark.parametrize("suffix", [".csv", ".tsv"])
def test_classify_from_table(tmp_path, suffix):
    rng = random.Random(1)
    rows = [("sequence", "label", "split")]
    rows += [(random_dna(rng, rng.randint(20, 60)), rng.choice(["x", "y", "z"]), rng.choice(["train", "train", "test"])) for _ in range(40)]
    path = tmp_path / f"data{suffix}"
    write_table(path, rows, "\t" if suffix == ".tsv" else ",")
    task = make("dna_classify", source=str(path), seq_len=33, val_fraction=0.25, batch_size=4)
    splits = task.datasets()
    assert task.classes == ["x", "y", "z"]
    assert len(splits["train"]) + len(splits["val"]) + len(splits["test"]) == 40
    assert len(splits["val"]) > 0
    item = splits["train"][0]
    assert item["input_ids"].shape == (33,) and item["label"].dim() == 0
    model, _ = check_step(task)
    report = task.evaluate(model, torch.device("cpu"))
    assert 0 <= report.metrics["test_accuracy"] <= 1
    assert [row["class"] for row in report.rows] == ["x", "y", "z"]


def test_classify_table_errors(tmp_path):
    path = tmp_path / "bad.csv"
    path.write_text("seq,label\nACGT,a\n")
    with pytest.raises(ValueError, match="no 'sequence' column"):
        make("dna_classify", source=str(path))
    path.write_text("sequence,label\nACGT,a\nACGT,a\n")
    with pytest.raises(ValueError, match="at least 2"):
        make("dna_classify", source=str(path))
    with pytest.raises(ValueError, match="does not exist"):
        make("dna_classify", source=str(tmp_path / "none.csv"))


def test_classify_bed_without_label_column(fasta, tmp_path):
    bed = tmp_path / "regions.bed"
    bed.write_text("c1\t0\t50\ttrain\nc1\t50\t100\ttest\n")
    with pytest.raises(ValueError, match=r"regions.bed: interval c1:0-50 has no label \(5th field\)"):
        make("dna_classify", source=str(bed), fasta=str(fasta), seq_len=50).datasets()


def test_classify_genomic_benchmarks_folder_with_cls(tmp_path):
    rng = random.Random(2)
    for split, count in (("train", 6), ("test", 3)):
        for label in ("negative", "positive"):
            folder = tmp_path / "bench" / split / label
            folder.mkdir(parents=True)
            for i in range(count):
                (folder / f"{i}.txt").write_text(random_dna(rng, 37))
    task = make("dna_classify", source=str(tmp_path / "bench"), seq_len=41, pooling="cls", backbone="bidirectional", val_fraction=0.3)
    splits = task.datasets()
    assert len(splits["test"]) == 6 and len(splits["train"]) + len(splits["val"]) == 12
    item = splits["test"][0]
    assert item["input_ids"][0] == 0 and (item["input_ids"][38:] == PAD).all()
    check_step(task)


def test_classify_from_bed_crops_to_centre(fasta, tmp_path):
    bed = tmp_path / "labels.bed"
    bed.write_text("c1\t0\t100\ttrain\ta\nc1\t100\t300\ttrain\tb\nc2\t0\t50\tval\ta\nc2\t50\t100\tval\tb\n")
    task = make("dna_classify", source=str(bed), fasta=str(fasta), seq_len=80, backbone="rc_equivariant", rc_augment=True)
    data = task.split("val")
    assert int((data[0]["input_ids"] != PAD).sum()) == 50
    ids = task.split("train")[1]["input_ids"]
    assert (ids != PAD).all()  # 200 bases cut to the central 80
    check_step(task, batch_size=2)
    bed.write_text("c1\t0\t100\ttrain\n")
    with pytest.raises(ValueError, match="no label"):
        make("dna_classify", source=str(bed), fasta=str(fasta))


def test_finetune_from_pretraining_checkpoint(fasta, tmp_path):
    pretrain = make("dna_pretrain", fasta=str(fasta), seq_len=64, backbone="bidirectional")
    lm = pretrain.build_model(MODEL)
    ckpt = tmp_path / "pre.ckpt"
    torch.save({"state_dict": {f"model.{k}": v for k, v in lm.state_dict().items()}}, ckpt)
    bed = tmp_path / "labels.bed"
    bed.write_text("c1\t0\t100\ttrain\ta\nc1\t100\t300\ttrain\tb\nc2\t0\t50\tval\ta\n")
    task = make("dna_classify", source=str(bed), fasta=str(fasta), backbone="bidirectional", init_from=str(ckpt))
    model = task.build_model(MODEL)
    for key, value in lm.backbone.state_dict().items():
        assert torch.equal(model.backbone.state_dict()[key], value)
    bad = make("dna_classify", source=str(bed), fasta=str(fasta), backbone="bidirectional", init_from=str(ckpt))
    with pytest.raises(ValueError, match="init_from"):
        bad.build_model(ModelConfig(d_model=32, n_layer=1, d_state=4))


def test_matthews_corrcoef_against_hand_values():
    y = torch.tensor([0, 0, 1, 1])
    assert matthews_corrcoef(y, y, 2) == pytest.approx(1.0)
    assert matthews_corrcoef(y, 1 - y, 2) == pytest.approx(-1.0)
    # Binary: TP=2, TN=1, FP=1, FN=0 -> (2*1 - 1*0) / sqrt(3 * 2 * 1 * 2) = 2 / sqrt(12).
    p = torch.tensor([0, 1, 1, 1])
    assert matthews_corrcoef(y, p, 2) == pytest.approx(2 / math.sqrt(12))
    assert matthews_corrcoef(y, torch.zeros(4, dtype=torch.long), 2) == 0.0


def test_config_validation_errors():
    with pytest.raises(ValueError, match="task.backbone"):
        DNAPretrainConfig(fasta="x", backbone="sideways").validate()
    with pytest.raises(ValueError, match="task.mask_prob"):
        DNAPretrainConfig(fasta="x", mask_prob=1.5).validate()
    with pytest.raises(ValueError, match="task.pooling"):
        DNAClassifyConfig(source="x", pooling="max").validate()


def test_language_model_embeddings_mean_over_bases(fasta):
    from seqmamba.tasks.dna.embed import embed_sequences, read_inputs

    task = make("dna_pretrain", fasta=str(fasta), seq_len=50)
    model = task.build_model(MODEL)
    sequences = read_inputs(str(fasta), fasta=None)
    assert [name for name, _ in sequences] == ["c1", "c2"]
    short = [("s", "ACGTTGCAACG")]
    ids, emb = embed_sequences(model, sequences + short, length=50, cls=False, batch_size=2, device=torch.device("cpu"))
    assert ids == ["c1", "c2", "s"] and emb.shape == (3, MODEL.d_model)
    with torch.no_grad():
        hidden = model.forward_hidden(torch.tensor([[7, 8, 9, 10, 10, 9, 8, 7, 7, 8, 9]]))
    torch.testing.assert_close(emb[2], hidden[0].mean(0))
