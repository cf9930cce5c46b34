"""``seqmamba data``: build data sets, one subcommand per data set.

Each data set is an entry of :data:`DATASETS`: a one-line summary, a function adding
its arguments and a function building it. Add new data sets there.
"""
from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

SUMMARY = "build a data set (e.g. 'seqmamba data dna-species OUT', 'seqmamba data text INPUT... --out DIR')"
DESCRIPTION = """\
Build a data set into a folder, from sources installed on this machine, ready for a
config to point at. Run 'seqmamba data <dataset> --help' for one data set's options."""
EXAMPLES = """\
examples:
  seqmamba data dna-species data/dna_species
  seqmamba data dna-species data/dna_species --length 1024 4096 --train-windows 2000
  seqmamba data text corpus/ more.jsonl.gz 'extra/**/*.txt' --out data/text --workers 4
  seqmamba data train-tokenizer corpus/ --out data/bpe/tokenizer.json --vocab-size 8192
  seqmamba data spoken-digits data/spoken_digits --voices 24 --takes 1"""


@dataclass(frozen=True)
class DataSet:
    summary: str
    description: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    build: Callable[[argparse.Namespace], int]


# Defaults of seqmamba.tasks.dna.species.DEFAULT_SOURCE and seqmamba.tasks.audio.piano.
# DEFAULT_SOUNDFONT (tests check they agree), kept here so that building the parser
# imports no task package: every command builds it, and a machine for one domain need
# not have another's packages (pyfaidx for DNA, soundfile for audio).
SPECIES_SOURCE = Path("/usr/share/doc/ragout/examples")
PIANO_SOUNDFONT = Path("/usr/share/sounds/sf2/FluidR3_GM.sf2")


def _species_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("out", metavar="OUT", help="folder to write genomes.fa and windows_<L>.bed into")
    parser.add_argument("--source", default=str(SPECIES_SOURCE),
                        help="folder of <Species>/references/<strain>.fasta.gz genomes (default: %(default)s)")
    parser.add_argument("--length", type=int, nargs="+", default=[1024],
                        help="window length(s), 1024 .. 131072; one BED file each (default: 1024)")
    parser.add_argument("--train-windows", type=int, default=800,
                        help="train windows per species, spread over its training strains (default: 800)")
    parser.add_argument("--test-windows", type=int, default=200,
                        help="test windows per species, from its held-out strain (default: 200)")
    parser.add_argument("--val-fraction", type=float, default=0.1,
                        help="share of each training strain's contigs (their ends) held out for val windows, "
                        "and val windows per species as a share of --train-windows (default: 0.1)")
    parser.add_argument("--seed", type=int, default=0, help="seeds the held-out strains and the window positions")


def _build_species(args: argparse.Namespace) -> int:
    from pathlib import Path

    from seqmamba.tasks.dna.species import build_species_dataset

    summary = build_species_dataset(
        Path(args.out), source=Path(args.source), lengths=args.length, train_windows=args.train_windows,
        test_windows=args.test_windows,
        val_fraction=args.val_fraction, seed=args.seed,
    )
    print(f"species: {', '.join(summary['species'])}")
    print("test strains (never seen in training): " + ", ".join(f"{k}: {v}" for k, v in summary["test_strains"].items()))
    print(f"wrote {summary['fasta']}")
    for bed in summary["beds"]:
        print(f"wrote {bed}")
    return 0


def _corpus_arguments(parser: argparse.ArgumentParser) -> None:
    """The inputs and file filters that text ingestion and tokenizer training share."""
    parser.add_argument("inputs", metavar="INPUT", nargs="+",
                        help="files, folders (every file below) or glob patterns ('**' for any depth); "
                        "plain text, .jsonl (one JSON object a line), either optionally .gz")
    parser.add_argument("--include", action="append", default=[], metavar="GLOB",
                        help="in folders, read only files whose relative path or name matches (repeatable), e.g. '*.py'")
    parser.add_argument("--exclude", action="append", default=[], metavar="GLOB",
                        help="in folders, leave out files whose relative path or name matches (repeatable)")
    parser.add_argument("--text-field", default="text", help="the field of a .jsonl line that holds the document "
                        "(default: %(default)s)")
    parser.add_argument("--bad-files", choices=("skip", "error"), default="skip",
                        help="files that are not text (binary, not UTF-8, broken JSON Lines or gzip): skip them "
                        "with a warning and a count, or stop (default: %(default)s)")


def _text_arguments(parser: argparse.ArgumentParser) -> None:
    _corpus_arguments(parser)
    parser.add_argument("--out", required=True, metavar="DIR", help="folder for the shards and index.json")
    parser.add_argument("--tokenizer", default="byte",
                        help="'byte' (256 bytes + end of document) or a tokenizer.json file (default: %(default)s)")
    parser.add_argument("--eod-token", default="<|endoftext|>",
                        help="the tokenizer.json token appended after each document (default: %(default)s)")
    parser.add_argument("--val-fraction", type=float, default=0.01,
                        help="share of the documents held out for validation (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="seeds which documents are held out")
    parser.add_argument("--dtype", choices=("auto", "uint16", "uint32"), default="auto",
                        help="token id type of the shards; auto: uint16 when the vocabulary fits (default: %(default)s)")
    parser.add_argument("--shard-mib", type=float, default=8.0,
                        help="input MiB per shard, the unit of work and of resuming (default: %(default)s)")
    parser.add_argument("--workers", type=int, default=1, help="tokenizing processes (default: %(default)s)")


def _build_text(args: argparse.Namespace) -> int:
    import sys

    from seqmamba.tasks.text.ingest import Settings, ingest

    settings = Settings(tokenizer=args.tokenizer, eod_token=args.eod_token, text_field=args.text_field,
                        val_fraction=args.val_fraction, seed=args.seed, dtype=args.dtype,
                        shard_bytes=int(args.shard_mib * (1 << 20)))
    summary = ingest(args.inputs, args.out, settings, include=tuple(args.include), exclude=tuple(args.exclude),
                     workers=args.workers, bad_files=args.bad_files, progress=sys.stderr.isatty())
    for name, totals in summary.totals.items():
        print(f"{name}: {totals['documents']:,} documents, {totals['tokens']:,} tokens, {totals['bytes']:,} bytes")
    print(f"wrote {len(summary.written)} of {summary.shards} shards and {summary.out / 'index.json'}")
    return 0


def _tokenizer_arguments(parser: argparse.ArgumentParser) -> None:
    _corpus_arguments(parser)
    parser.add_argument("--out", required=True, metavar="FILE", help="the tokenizer.json to write")
    parser.add_argument("--vocab-size", type=int, default=8192,
                        help="tokens in all: 256 bytes, <|endoftext|> and the merges (default: %(default)s)")
    parser.add_argument("--min-frequency", type=int, default=2,
                        help="merge only pairs seen at least this often (default: %(default)s)")


def _build_tokenizer(args: argparse.Namespace) -> int:
    from seqmamba.tasks.text.corpus import corpus_documents
    from seqmamba.tasks.text.tokenizer import train_bpe

    skipped: list[str] = []
    documents = corpus_documents(args.inputs, include=args.include, exclude=args.exclude, text_field=args.text_field,
                                 bad_files=args.bad_files, skipped=skipped)
    tokenizer = train_bpe(documents, args.out, vocab_size=args.vocab_size, min_frequency=args.min_frequency)
    if skipped:
        print(f"warning: skipped {len(skipped)} files that are not text (first: {'; '.join(skipped[:3])})")
    print(f"wrote {args.out}: byte-level BPE, {tokenizer.vocab_size} tokens")
    return 0


def _audio_split_arguments(parser: argparse.ArgumentParser, *, unit: str, held_out: int) -> None:
    """OUT, the --val-<unit> and --test-<unit> counts held out, and --sample-rate."""
    parser.add_argument("out", metavar="OUT", help="folder to write train/, val/, test/ and manifest.json into")
    for split, what in (("val", "validation"), ("test", "the test")):
        parser.add_argument(f"--{split}-{unit}", type=int, default=held_out,
                            help=f"{unit} held out for {what} (default: %(default)s)")
    parser.add_argument("--sample-rate", type=int, default=16000, help="Hz (default: %(default)s)")


def _spoken_digits_arguments(parser: argparse.ArgumentParser) -> None:
    _audio_split_arguments(parser, unit="voices", held_out=8)
    parser.add_argument("--voices", type=int, default=None,
                        help="espeak-ng voice variants to use, drawn at random (default: all of them)")
    parser.add_argument("--takes", type=int, default=2, help="clips per voice and digit (default: %(default)s)")
    parser.add_argument("--seconds", type=float, default=1.0, help="clip length (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="seeds the voice split, accents, rates, pitches and offsets")


def _build_spoken_digits(args: argparse.Namespace) -> int:
    from seqmamba.tasks.audio.spoken_digits import build_spoken_digits

    manifest = build_spoken_digits(args.out, voices=args.voices, takes=args.takes, val_voices=args.val_voices,
                                   test_voices=args.test_voices, sample_rate=args.sample_rate, seconds=args.seconds,
                                   seed=args.seed)
    for split, voices in manifest["voices"].items():
        print(f"{split}: {manifest['clips'][split]} clips from {len(voices)} voices")
    print(f"test voices (never heard in training): {', '.join(manifest['voices']['test'])}")
    if manifest["silent_takes_skipped"]:
        print(f"skipped {len(manifest['silent_takes_skipped'])} takes that came out silent")
    print(f"wrote {args.out}/manifest.json")
    return 0


def _piano_arguments(parser: argparse.ArgumentParser) -> None:
    _audio_split_arguments(parser, unit="pieces", held_out=2)
    parser.add_argument("--pieces", type=int, default=24, help="pieces in all (default: %(default)s)")
    parser.add_argument("--seconds", type=float, default=60.0, help="length of a piece (default: %(default)s)")
    parser.add_argument("--soundfont", default=str(PIANO_SOUNDFONT), help="General MIDI soundfont (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="seeds the compositions")


def _build_piano(args: argparse.Namespace) -> int:
    from seqmamba.tasks.audio.piano import build_piano

    manifest = build_piano(args.out, pieces=args.pieces, seconds=args.seconds, val_pieces=args.val_pieces,
                           test_pieces=args.test_pieces, sample_rate=args.sample_rate, seed=args.seed,
                           soundfont=args.soundfont)
    for split, seconds in manifest["seconds_per_split"].items():
        print(f"{split}: {seconds / 60:.1f} minutes")
    print(f"wrote {args.out}/manifest.json")
    return 0


DATASETS: dict[str, DataSet] = {
    "dna-species": DataSet(
        summary="species classification windows from complete bacterial genomes (ragout-examples)",
        description=(
            "Decompress the strains' genomes of Debian's ragout-examples package once into OUT/genomes.fa and\n"
            "draw windows labelled by species into OUT/windows_<L>.bed (chrom start end split species).\n"
            "Test windows come from one held-out strain per species, so the test measures generalisation\n"
            "to unseen strains. Install the genomes with: apt-get update && apt-get install -y ragout-examples"
        ),
        add_arguments=_species_arguments,
        build=_build_species,
    ),
    "text": DataSet(
        summary="tokenize a text corpus into shards for text_pretrain (resumable, parallel)",
        description=(
            "Read every document of the inputs, tokenize it in worker processes, append the end-of-document\n"
            "token and write memory-mapped token shards (uint16 when the vocabulary fits, else uint32) with\n"
            "DIR/index.json and a held-out validation split. Running the same command again skips the shards\n"
            "already written. Point a config's task.data at DIR."
        ),
        add_arguments=_text_arguments,
        build=_build_text,
    ),
    "train-tokenizer": DataSet(
        summary="train a byte-level BPE tokenizer.json on a text corpus (offline)",
        description=(
            "Train a byte-level BPE tokenizer (the tokenizers library) on the documents of the inputs and write\n"
            "it as a tokenizer.json, for 'seqmamba data text --tokenizer FILE'. Any text encodes and decodes\n"
            "back exactly; <|endoftext|> ends documents."
        ),
        add_arguments=_tokenizer_arguments,
        build=_build_tokenizer,
    ),
    "spoken-digits": DataSet(
        summary="SC09-like spoken digits synthesised offline with espeak-ng (audio)",
        description=(
            "Synthesise 'zero' .. 'nine' with Debian's espeak-ng: every voice variant says every digit --takes\n"
            "times with a random English accent, rate and pitch, as 1 s mono clips at 16 kHz (16-bit FLAC) in the\n"
            "SC09 layout OUT/<split>/<digit>/. Splits are by voice: test voices are never heard in training.\n"
            "Install the synthesiser with: apt-get update && apt-get install -y espeak-ng"
        ),
        add_arguments=_spoken_digits_arguments,
        build=_build_spoken_digits,
    ),
    "piano": DataSet(
        summary="long piano recordings rendered from MIDI composed by code, with fluidsynth (audio, crop mode)",
        description=(
            "Compose piano pieces by code (chord progressions, left-hand chords or arpeggios, a melody), write\n"
            "them as MIDI and render them with fluidsynth and a General MIDI soundfont into\n"
            "OUT/<split>/piece_NNN.flac (16-bit mono), a YouTubeMix-like set for task.mode: crop.\n"
            "Install the renderer with: apt-get update && apt-get install -y fluidsynth fluid-soundfont-gm"
        ),
        add_arguments=_piano_arguments,
        build=_build_piano,
    ),
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    subparsers = parser.add_subparsers(dest="dataset", metavar="<dataset>", required=True)
    for name, dataset in DATASETS.items():
        sub = subparsers.add_parser(name, help=dataset.summary, description=dataset.description,
                                    formatter_class=argparse.RawDescriptionHelpFormatter)
        dataset.add_arguments(sub)


def run(args: argparse.Namespace) -> int:
    return DATASETS[args.dataset].build(args)
