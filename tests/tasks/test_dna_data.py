"""DNA tokenizer and genome loaders: ids, round trips, tiling, BED errors, workers."""
from __future__ import annotations

import gzip
import random

import pyfaidx
import pytest
import torch
from torch.utils.data import DataLoader

from seqmamba.tasks import IGNORE_INDEX
from seqmamba.tasks.dna import tokenizer as tok
from seqmamba.tasks.dna.genome import FastaFile, GenomeWindows, Interval, read_bed, tile, whole_contigs


def random_dna(rng: random.Random, n: int, alphabet: str = "ACGTacgt") -> str:
    return "".join(rng.choice(alphabet) for _ in range(n))


def write_fasta(path, records: dict[str, str], width: int = 61) -> None:
    with open(path, "w") as handle:
        for name, seq in records.items():
            handle.write(f">{name} some description\n")
            for i in range(0, len(seq), width):
                handle.write(seq[i : i + width] + "\n")


@pytest.fixture
def genome(tmp_path):
    rng = random.Random(3)
    records = {"chr1": random_dna(rng, 1003), "chr2": random_dna(rng, 517), "tiny": random_dna(rng, 37)}
    path = tmp_path / "genome.fa"
    write_fasta(path, records)
    return path, records


def test_token_ids_match_hyenadna_caduceus():
    assert (tok.CLS, tok.SEP, tok.BOS, tok.MASK, tok.PAD, tok.RESERVED, tok.UNK) == (0, 1, 2, 3, 4, 5, 6)
    assert tok.encode("ACGTN").tolist() == [7, 8, 9, 10, 11]
    assert tok.VOCAB_SIZE == 12


def test_encode_lowercase_and_iupac():
    assert tok.encode("acgt").tolist() == tok.encode("ACGT").tolist()
    assert tok.encode("RYSWKMBDHVNryn").tolist() == [tok.N] * 14
    with pytest.raises(ValueError, match="'X' at position 2"):
        tok.encode("ACXGT")
    with pytest.raises(ValueError, match="position 1"):
        tok.encode("Aé")


def test_round_trip_and_reverse_complement():
    rng = random.Random(0)
    seq = random_dna(rng, 101, "ACGTN")
    ids = tok.encode(seq)
    assert tok.decode(ids) == seq
    comp = {"A": "T", "C": "G", "G": "C", "T": "A", "N": "N"}
    rc = "".join(comp[c] for c in reversed(seq))
    assert tok.decode(tok.reverse_complement(ids)) == rc
    assert torch.equal(tok.reverse_complement(tok.reverse_complement(ids)), ids)
    assert tok.decode([tok.CLS, tok.A, tok.PAD]) == "[CLS]A[PAD]"
    with pytest.raises(ValueError, match="99"):
        tok.decode([99])


def test_next_base_labels_ignore_padding():
    ids, valid = tok.pad_to(tok.encode("ACGTA"), 9)
    labels = tok.next_base_labels(ids)
    assert labels[:4].tolist() == ids[1:5].tolist()
    assert (labels[4:] == IGNORE_INDEX).all()
    assert valid.tolist() == [True] * 5 + [False] * 4


def test_tiling_shifts_last_window_inside_and_keeps_short_contigs():
    lengths = {"a": 103, "b": 20}
    windows = tile(whole_contigs(lengths, val_fraction=0.0), length=25, stride=20)
    a = [(w.start, w.end) for w in windows if w.chrom == "a"]
    assert a == [(0, 25), (20, 45), (40, 65), (60, 85), (78, 103)]
    assert [(w.start, w.end) for w in windows if w.chrom == "b"] == [(0, 20)]
    assert all(w.end - w.start == 25 for w in windows if w.chrom == "a")


def test_whole_contigs_val_does_not_overlap_train():
    regions = whole_contigs({"a": 1000}, val_fraction=0.1)
    assert regions == [Interval("a", 0, 900, "train"), Interval("a", 900, 1000, "val")]


def test_windows_read_right_bases_pad_and_lowercase(genome):
    path, records = genome
    fasta = FastaFile(path)
    assert fasta.lengths == {k: len(v) for k, v in records.items()}
    windows = tile(whole_contigs(fasta.lengths, val_fraction=0.0), length=64, stride=50)
    data = GenomeWindows(fasta, windows, length=64)
    for i in (0, 5, len(data) - 1):
        w = windows[i]
        item = data[i]
        expected = tok.encode(records[w.chrom][w.start : w.end].upper())
        n = expected.numel()
        assert torch.equal(item["input_ids"][:n], expected)
        assert (item["input_ids"][n:] == tok.PAD).all() and item["valid"].sum() == n
    tiny = [i for i, w in enumerate(windows) if w.chrom == "tiny"]
    assert len(tiny) == 1 and int(data[tiny[0]]["valid"].sum()) == 37


def test_rc_augmentation_is_seeded_and_per_index(genome):
    path, records = genome
    fasta = FastaFile(path)
    windows = tile(whole_contigs(fasta.lengths, val_fraction=0.0), length=31, stride=31)
    plain = GenomeWindows(fasta, windows, length=31)
    aug = GenomeWindows(fasta, windows, length=31, rc_augment=True, seed=7)
    again = GenomeWindows(fasta, windows, length=31, rc_augment=True, seed=7)
    flipped = 0
    for i in range(len(plain)):
        p, a = plain[i]["input_ids"], aug[i]["input_ids"]
        assert torch.equal(a, again[i]["input_ids"])
        if not torch.equal(a, p):
            assert torch.equal(a, tok.reverse_complement(p))
            flipped += 1
    assert 0.3 < flipped / len(plain) < 0.7


def test_multi_worker_reads_match_direct_reads(genome):
    path, records = genome
    fasta = FastaFile(path)
    fasta.fetch("chr1", 0, 10)  # the parent opens a handle before the workers fork
    windows = tile(whole_contigs(fasta.lengths, val_fraction=0.0), length=40, stride=13)
    data = GenomeWindows(fasta, windows, length=40)
    loader = DataLoader(data, batch_size=3, num_workers=2, shuffle=False)
    got = torch.cat([batch["input_ids"] for batch in loader])
    direct = pyfaidx.Fasta(str(path))
    for i, w in enumerate(windows):
        expected = tok.encode(str(direct[w.chrom][w.start : w.end]))
        assert torch.equal(got[i, : expected.numel()], expected), i


def test_fasta_errors(tmp_path, genome):
    with pytest.raises(ValueError, match="not found"):
        FastaFile(tmp_path / "missing.fa")
    path, records = genome
    gz = tmp_path / "genome.fa.gz"
    gz.write_bytes(gzip.compress(path.read_bytes()))
    with pytest.raises(ValueError, match="gzip.*seqmamba data"):
        FastaFile(gz)
    with pytest.raises(ValueError, match="unknown chromosome 'chrX'"):
        FastaFile(path).fetch("chrX", 0, 5)
    text = tmp_path / "notes.fa"
    text.write_text("these are notes\nnot sequences\n")
    with pytest.raises(ValueError, match=r"notes.fa: cannot index this FASTA file: .*line 1"):
        FastaFile(text)


def test_empty_sequence_in_bed_is_past_its_end(tmp_path):
    fasta = tmp_path / "g.fa"
    fasta.write_text(">full\nACGTACGTAC\n>empty\n\n")
    bed = tmp_path / "regions.bed"
    bed.write_text("full\t0\t8\ttrain\nempty\t0\t4\ttrain\n")
    with pytest.raises(ValueError, match=r"regions.bed:2: end 4 is past the end of empty \(length 0\)"):
        read_bed(bed, FastaFile(fasta).lengths)


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("chr1\t10\t5\ttrain", "start < end"),
        ("chr1\t10\t10\ttrain", "start < end"),
        ("chr1\tten\t20\ttrain", "must be integers"),
        ("chrX\t0\t20\ttrain", "unknown chromosome 'chrX'"),
        ("chr1\t0\t2000\ttrain", "past the end"),
        ("chr1\t0\t20\ttraining", "split must be one of"),
        ("chr1\t0\t20", "expected 4 or 5 fields"),
    ],
)
def test_bed_errors_name_file_and_line(tmp_path, genome, line, message):
    path, _ = genome
    bed = tmp_path / "regions.bed"
    bed.write_text("# header\nchr1\t0\t100\ttrain\tx\n" + line + "\n")
    with pytest.raises(ValueError, match=f"regions.bed:3: .*{message}"):
        read_bed(bed, FastaFile(path).lengths)


def test_bed_parses_splits_and_labels(tmp_path, genome):
    path, _ = genome
    bed = tmp_path / "regions.bed"
    bed.write_text("track name=x\nchr1 5 99 val promoter\nchr2\t0\t517\ttest\n")
    assert read_bed(bed, FastaFile(path).lengths) == [
        Interval("chr1", 5, 99, "val", "promoter"),
        Interval("chr2", 0, 517, "test", None),
    ]
    with pytest.raises(ValueError, match="not found"):
        read_bed(tmp_path / "none.bed", {})
