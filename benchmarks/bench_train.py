"""Training throughput and peak memory, end to end: forward, loss, backward, AdamW step.

Sections (``--sections``, all by default):

    lm          the Mamba-130M shape (d_model 768, 24 layers, vocab 50277) at batch 8 x 2048:
                  seqmamba            seqmamba.models.MambaLM, its loss from MambaLM.loss
                                      (the head's logits a block of tokens at a time),
                                      which checks the labels on the GPU (a wait each step)
                  seqmamba, labels checked on the host  the same loss as ``seqmamba train``
                                      runs it: batches checked on the host, no wait
                  seqmamba recompute  the same with ``mixer_recompute=True``
                  seqmamba, logits loss  the plain model with the (batch, L, vocab) logits
                                      and F.cross_entropy, as the others compute their loss
                  ..., CUDA graph     seqmamba (its loss without the label check) and mamba_ssm with
                                      the whole step captured in one CUDA graph and replayed
                                      (seqmamba.train.graphed_step.CudaGraphStep): the kernels'
                                      time without the host's, which eager steps can exceed
                  seqmamba, graphed forward and backward  as ``seqmamba train`` runs with
                                      ``trainer.cuda_graph=true``: the loss's forward and
                                      backward replayed from graphs (GraphedTaskStep), the
                                      AdamW step eager
                  mamba_ssm           mamba_ssm's MambaLMHeadModel (Mamba1, fused add+norm,
                                      residual in fp32), when importable, loaded with the
                                      seqmamba model's initial weights
                  transformer         a Pythia-160M-shaped GPT-NeoX model (benchmarks/gpt_neox.py,
                                      SDPA causal attention), same batch and length
    long        the longest sequence a DNA-sized Mamba (d_model 128, 6 layers, vocab 16)
                trains on at batch 1, L = 2^16 ... 2^22, plain, with ``mixer_recompute``, with
                every block checkpointed (``checkpoint_every=1``), and trained ``--long-chunk``
                steps at a time with the states passed between chunks
                (seqmamba.models.chunked.backward_in_chunks); out-of-memory is reported, and
                a variant stops at its first failing length.

Every model trains with fp32 weights under bf16 autocast (``--autocast off`` for fp32),
AdamW (lr 6e-4, weight decay 0.1), on random tokens (the same ones for every model of a
section). After ``--warmup`` steps, ``--steps`` steps are timed one by one (CUDA events
on the GPU, wall clock on the CPU); the table shows the median step, tokens/s from it,
the peak allocated memory over all steps (CUDA only), and the first and last loss: the
seqmamba and mamba_ssm rows start from the same weights, so their first losses must
agree. The script exits with status 1 when they differ by more than 2% or a case fails
with an error other than out-of-memory (the other cases still run).

    python benchmarks/bench_train.py                       # CUDA, all sections
    python benchmarks/bench_train.py --sections long       # only the sequence-length sweep
    python benchmarks/bench_train.py --sections long --long-variants chunked --long-exponents 23
    python benchmarks/bench_train.py --device cpu --tiny   # tiny shapes on the CPU, seconds
    python benchmarks/bench_train.py --sections lm --profile 25   # + where one step's time goes

With ``--profile K`` one more step of each ``lm`` model runs under torch.profiler, and the
K operators with the most device time (their own kernels, by input shapes) and the K
costliest kernels are printed after the model's line.

The table is printed as markdown; ``--out FILE`` also writes the records as JSON.
"""
from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import pathlib
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

from gpt_neox import NeoXConfig, NeoXLM  # noqa: E402
from kernel_profile import format_kernels, rank_kernels  # noqa: E402

from seqmamba.models import MambaLM, ModelConfig  # noqa: E402
from seqmamba.models.chunked import backward_in_chunks  # noqa: E402
from seqmamba.tasks import StepOutput  # noqa: E402
from seqmamba.train.graphed_step import CudaGraphStep  # noqa: E402
from seqmamba.train.graphed_task_step import GraphedTaskStep  # noqa: E402

LOSS_AGREEMENT = 0.02  # relative; bf16 autocast rounding moves the first loss by ~1e-3
SECTIONS = ("lm", "long")


@dataclass
class Case:
    """One model to train: ``build()`` returns it (fp32, on the CPU); ``loss(model, ids,
    labels)`` its mean next-token cross-entropy, which the step then backpropagates,
    unless ``loss_runs_backward`` (the loss has filled the gradients itself)."""

    section: str
    name: str
    build: Callable[[], nn.Module]
    loss: Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]
    batch: int
    length: int
    vocab: int
    loss_runs_backward: bool = False
    # The whole step captured once in a CUDA graph and replayed (seqmamba.train.CudaGraphStep).
    cuda_graph: bool = False
    # The loss's forward and backward replayed from graphs, the optimizer eager
    # (seqmamba.train.graphed_task_step.GraphedTaskStep, as trainer.cuda_graph=true runs).
    graphed_forward: bool = False


@dataclass
class Record:
    section: str
    name: str
    batch: int
    length: int
    status: str  # "ok", "OOM", "skipped: <why>" or "failed: <error>"
    step_ms: float | None = None
    tokens_per_s: float | None = None
    peak_gib: float | None = None
    first_loss: float | None = None
    last_loss: float | None = None


@dataclass
class Settings:
    device: str
    autocast: bool
    warmup: int
    steps: int
    profile: int = 0  # rows of the profile of one extra step; 0: no profile


# --- models ------------------------------------------------------------------------


def mamba_config(d_model: int, n_layer: int, vocab: int, **options) -> ModelConfig:
    return ModelConfig(d_model=d_model, n_layer=n_layer, vocab_size=vocab, **options)


def build_seqmamba(config: ModelConfig) -> Callable[[], nn.Module]:
    def build() -> nn.Module:
        torch.manual_seed(0)
        return MambaLM(config)

    return build


def build_mamba_ssm(config: ModelConfig) -> Callable[[], nn.Module]:
    """mamba_ssm's model of the same shape, holding seqmamba's initial weights (same
    parameter names), so that the two first losses can be compared."""

    def build() -> nn.Module:
        from mamba_ssm.models.config_mamba import MambaConfig
        from mamba_ssm.models.mixer_seq_simple import MambaLMHeadModel

        ssm_config = MambaConfig(
            d_model=config.d_model, n_layer=config.n_layer, vocab_size=config.vocab_size,
            ssm_cfg={"layer": "Mamba1"}, rms_norm=True, fused_add_norm=True, residual_in_fp32=True,
            pad_vocab_size_multiple=config.pad_vocab_size_multiple,
        )
        model = MambaLMHeadModel(ssm_config)
        model.load_state_dict(build_seqmamba(config)().state_dict())
        return model

    return build


def logits_loss(logits: Callable[[nn.Module, torch.Tensor], torch.Tensor]):
    """The usual loss: the head's (batch, L, vocab) logits, then F.cross_entropy."""

    def loss(model: nn.Module, ids: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        out = logits(model, ids)
        return F.cross_entropy(out.reshape(-1, out.shape[-1]), labels.reshape(-1))

    return loss


plain_logits_loss = logits_loss(lambda model, ids: model(ids))
mamba_ssm_loss = logits_loss(lambda model, ids: model(ids).logits)


def seqmamba_loss(model: nn.Module, ids: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """MambaLM.loss: the same cross-entropy without the logits in memory."""
    out = model.loss(ids, labels)
    return out.total / out.count


def seqmamba_loss_unchecked(model: nn.Module, ids: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """MambaLM.loss without its label check, which reads labels back to the host: as
    ``seqmamba train`` runs it (batches checked on the host when made; the benchmark's
    labels are random vocabulary ids), and as a CUDA graph capture needs it."""
    out = model.loss(ids, labels, check_labels=False)
    return out.total / out.count


def chunked_loss(chunk_len: int) -> Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]:
    """The same loss with its backward run ``chunk_len`` steps at a time (backward_in_chunks)."""
    def loss(model: nn.Module, ids: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        out = backward_in_chunks(model, ids, labels, chunk_len)
        return out.total / out.count

    return loss


def build_transformer(config: NeoXConfig) -> Callable[[], nn.Module]:
    def build() -> nn.Module:
        torch.manual_seed(0)
        return NeoXLM(config)

    return build


def lm_cases(args: argparse.Namespace) -> list[Case]:
    config = mamba_config(args.d_model, args.n_layer, args.vocab)
    common = dict(section="lm", batch=args.batch, length=args.length, vocab=args.vocab)
    neox = NeoXConfig(
        vocab_size=-(-args.vocab // 128) * 128,  # GPT-NeoX pads its vocabulary to a multiple of 128
        d_model=args.neox_d_model, n_layer=args.neox_n_layer, n_head=args.neox_n_head,
    )
    return [
        Case(name="seqmamba", build=build_seqmamba(config), loss=seqmamba_loss, **common),
        Case(name="seqmamba, labels checked on the host", build=build_seqmamba(config),
             loss=seqmamba_loss_unchecked, **common),
        Case(
            name="seqmamba recompute",
            build=build_seqmamba(dataclasses.replace(config, mixer_recompute=True)),
            loss=seqmamba_loss, **common,
        ),
        Case(name="seqmamba, logits loss", build=build_seqmamba(config), loss=plain_logits_loss, **common),
        Case(name="mamba_ssm", build=build_mamba_ssm(config), loss=mamba_ssm_loss, **common),
        # The same two steps captured in CUDA graphs: what the kernels take without the host.
        Case(name="seqmamba, CUDA graph", build=build_seqmamba(config), loss=seqmamba_loss_unchecked,
             cuda_graph=True, **common),
        Case(name="mamba_ssm, CUDA graph", build=build_mamba_ssm(config), loss=mamba_ssm_loss, cuda_graph=True,
             **common),
        Case(name="seqmamba, graphed forward and backward", build=build_seqmamba(config),
             loss=seqmamba_loss_unchecked, graphed_forward=True, **common),
        Case(
            name=f"transformer ({neox.n_layer}L d{neox.d_model} {neox.n_head}h)",
            build=build_transformer(neox), loss=plain_logits_loss, **common,
        ),
    ]


LONG_VARIANTS = {
    "seqmamba": {},
    "seqmamba recompute": dict(mixer_recompute=True),
    "seqmamba checkpoint": dict(checkpoint_every=1),
    # The sequence trained a chunk at a time with the layers' states passed between
    # chunks (seqmamba.models.chunked): memory grows with the chunk, not the sequence.
    "seqmamba chunked": {},
}
# --long-variants names them by what they add to the plain model.
LONG_VARIANT_KEYS = {
    "plain": "seqmamba", "recompute": "seqmamba recompute", "checkpoint": "seqmamba checkpoint",
    "chunked": "seqmamba chunked",
}


# --- training steps ------------------------------------------------------------------


class LossTask:
    """A case's loss as a task's step (the part of Task that GraphedTaskStep uses)."""

    name = "bench_train"

    def __init__(self, loss: Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]) -> None:
        self.loss = loss

    def step(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> StepOutput:
        return StepOutput(loss=self.loss(model, batch["input_ids"], batch["labels"]))


def train(case: Case, settings: Settings) -> Record:
    """Builds the case's model and optimizer, runs the steps; raises on out-of-memory."""
    device = settings.device
    cuda = device == "cuda"
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    model = case.build().to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=6e-4, weight_decay=0.1, fused=cuda, capturable=case.cuda_graph)
    g = torch.Generator().manual_seed(1)
    tokens = torch.randint(0, case.vocab, (case.batch, case.length + 1), generator=g).to(device)
    inputs, labels = tokens[:, :-1], tokens[:, 1:]

    if case.graphed_forward:  # the same loss, its forward and backward replayed from graphs
        graphed_loss = GraphedTaskStep(LossTask(case.loss), model,
                                       autocast_dtype=torch.bfloat16 if settings.autocast else None)
        batch = {"input_ids": inputs, "labels": labels}
        compute_loss = lambda: graphed_loss(batch).loss  # noqa: E731
    else:
        compute_loss = lambda: case.loss(model, inputs, labels)  # noqa: E731

    def eager_step() -> torch.Tensor:
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device, dtype=torch.bfloat16, enabled=settings.autocast):
            loss = compute_loss()
        if not case.loss_runs_backward:
            loss.backward()
        optimizer.step()
        return loss.detach()

    def graph_loss(ids: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        with torch.autocast(device, dtype=torch.bfloat16, enabled=settings.autocast, cache_enabled=False):
            return case.loss(model, ids, targets)

    step = eager_step
    if case.cuda_graph:
        graphed = CudaGraphStep(graph_loss, optimizer, (inputs, labels))
        step = lambda: graphed(inputs, labels).clone()  # noqa: E731

    losses, times_ms = [], []
    for i in range(settings.warmup + settings.steps):
        if cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            losses.append(step())
            end.record()
            times_ms.append((start, end))
        else:
            begin = time.perf_counter()
            losses.append(step())
            times_ms.append(1e3 * (time.perf_counter() - begin))
    if cuda:
        torch.cuda.synchronize()
        times_ms = [start.elapsed_time(end) for start, end in times_ms]
    step_ms = statistics.median(times_ms[settings.warmup :])
    if settings.profile:
        print_profile(case.name, step, settings)
    return Record(
        section=case.section, name=case.name, batch=case.batch, length=case.length, status="ok",
        step_ms=step_ms, tokens_per_s=case.batch * case.length / (step_ms * 1e-3),
        peak_gib=torch.cuda.max_memory_allocated() / 2**30 if cuda else None,
        first_loss=losses[0].item(), last_loss=losses[-1].item(),
    )


def print_profile(name: str, step: Callable[[], torch.Tensor], settings: Settings) -> None:
    """Runs ``step`` once under torch.profiler; prints the costliest operators and kernels.

    Operators are ranked by the device time of their own kernels (self time), grouped by
    input shapes, which names the strided copies and casts a step launches (the ranking
    lists kernels too, under their own names); kernels by their total time. Times are of
    the profiled step (CPU time on the CPU).
    """
    from torch.profiler import ProfilerActivity, profile

    cuda = settings.device == "cuda"
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    with profile(activities=activities, record_shapes=True) as prof:
        step()
        if cuda:
            torch.cuda.synchronize()
    key = "self_device_time_total" if cuda else "self_cpu_time_total"
    events = prof.key_averages(group_by_input_shape=True)
    ops = sorted((e for e in events if getattr(e, key) > 0), key=lambda e: -getattr(e, key))
    if cuda:  # the kernels alone: an operator's self device time is its kernels' time again
        total_us = sum(e.device_time_total for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA)
    else:
        total_us = sum(e.self_cpu_time_total for e in events)
    print(f"  profile of one {name} step: {total_us / 1e3:.1f} ms of {'kernel' if cuda else 'CPU'} time")
    print(f"    {'ms':>8} {'calls':>6}  operator [input shapes]")
    for e in ops[: settings.profile]:
        shapes = str(e.input_shapes)[:90]
        print(f"    {getattr(e, key) / 1e3:8.2f} {e.count:6d}  {e.key} {shapes}")
    if cuda:
        # The host's share: operators by their own CPU time (under the profiler, which
        # slows the host), then one step timed without it, from an idle GPU: the time to
        # queue every launch against the time to finish. A step whose queueing takes
        # longer than its kernels leaves the GPU waiting on the host.
        host_ops = sorted(events, key=lambda e: -e.self_cpu_time_total)
        print(f"    {'host ms':>8} {'calls':>6}  operator (CPU time of its own, under the profiler)")
        for e in host_ops[: settings.profile]:
            print(f"    {e.self_cpu_time_total / 1e3:8.2f} {e.count:6d}  {e.key}")
        torch.cuda.synchronize()
        begin = time.perf_counter()
        step()
        queued = time.perf_counter()
        torch.cuda.synchronize()
        done = time.perf_counter()
        print(f"  one {name} step from an idle GPU: launches queued in {1e3 * (queued - begin):.1f} ms, "
              f"done in {1e3 * (done - begin):.1f} ms")
        print(format_kernels(rank_kernels(prof), settings.profile))


def measure(case: Case, settings: Settings) -> Record:
    """``train``, with out-of-memory and unavailable models turned into records."""
    status = None
    try:
        return train(case, settings)
    except torch.OutOfMemoryError:
        status = "OOM"
    except ImportError as e:
        status = f"skipped: {e}"
    except RuntimeError as e:
        # Reported in the table (and in the exit status) so that the other cases still run.
        status = f"failed: {type(e).__name__}: {str(e).splitlines()[0][:100]}"
    finally:
        # Drop what the failed run left behind before the next case measures its peak.
        gc.collect()
        if settings.device == "cuda":
            torch.cuda.empty_cache()
    return Record(section=case.section, name=case.name, batch=case.batch, length=case.length, status=status)


def run_lm(args: argparse.Namespace, settings: Settings) -> list[Record]:
    records = []
    for case in lm_cases(args):
        if (case.name.startswith("mamba_ssm") or case.cuda_graph or case.graphed_forward) and settings.device != "cuda":
            what = "mamba_ssm runs" if case.name.startswith("mamba_ssm") else "CUDA graphs run"
            records.append(Record("lm", case.name, case.batch, case.length, f"skipped: {what} on CUDA only"))
            continue
        records.append(measure(case, settings))
        print(format_progress(records[-1]), flush=True)
    return records


def run_long(args: argparse.Namespace, settings: Settings) -> list[Record]:
    records = []
    for name in args.long_variants:
        options = LONG_VARIANTS[name]
        config = mamba_config(args.long_d_model, args.long_n_layer, args.long_vocab, **options)
        failed_at = None
        for exponent in args.long_exponents:
            length = 2**exponent
            chunked = name == LONG_VARIANT_KEYS["chunked"]
            case = Case(
                "long", name, build_seqmamba(config), chunked_loss(args.long_chunk) if chunked else seqmamba_loss,
                1, length, args.long_vocab, loss_runs_backward=chunked,
            )
            if failed_at is not None:
                records.append(Record("long", name, 1, length, f"skipped: OOM at L=2^{failed_at}"))
                continue
            records.append(measure(case, dataclasses.replace(settings, warmup=1, steps=args.long_steps)))
            print(format_progress(records[-1]), flush=True)
            if records[-1].status == "OOM":
                failed_at = exponent
    return records


# --- report ------------------------------------------------------------------------------


def format_progress(r: Record) -> str:
    if r.status != "ok":
        return f"  {r.section} {r.name} {r.batch}x{r.length}: {r.status}"
    return f"  {r.section} {r.name} {r.batch}x{r.length}: {r.tokens_per_s:,.0f} tokens/s"


def markdown_table(records: list[Record]) -> str:
    header = ("section", "model", "batch x L", "tokens/s", "step ms", "peak GiB", "loss first -> last", "status")
    rows = [header]
    for r in records:
        ok = r.status == "ok"
        rows.append((
            r.section, r.name, f"{r.batch} x {r.length}",
            f"{r.tokens_per_s:,.0f}" if ok else "-",
            f"{r.step_ms:.1f}" if ok else "-",
            f"{r.peak_gib:.2f}" if ok and r.peak_gib is not None else "-",
            f"{r.first_loss:.4f} -> {r.last_loss:.4f}" if ok else "-",
            r.status,
        ))
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = ["| " + " | ".join(c.ljust(w) for c, w in zip(row, widths)) + " |" for row in rows]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)


def first_losses_agree(records: list[Record]) -> bool:
    """seqmamba and mamba_ssm start from the same weights and data: same first loss."""
    by_name = {r.name: r for r in records if r.section == "lm" and r.status == "ok"}
    ours, theirs = by_name.get("seqmamba"), by_name.get("mamba_ssm")
    if ours is None or theirs is None:
        return True
    diff = abs(ours.first_loss - theirs.first_loss) / abs(theirs.first_loss)
    print(
        f"first loss: seqmamba {ours.first_loss:.5f}, mamba_ssm {theirs.first_loss:.5f} "
        f"(relative difference {diff:.1e})"
    )
    return diff <= LOSS_AGREEMENT


# --- command line --------------------------------------------------------------------------

FULL = dict(
    batch=8, length=2048, d_model=768, n_layer=24, vocab=50277, neox_d_model=768, neox_n_layer=12, neox_n_head=12,
    long_d_model=128, long_n_layer=6, long_vocab=16, long_exponents="16,18,20,21,22", warmup=3, steps=10, long_steps=3,
    long_chunk=2**20,
)
TINY = dict(
    batch=2, length=64, d_model=32, n_layer=2, vocab=64, neox_d_model=32, neox_n_layer=2, neox_n_head=2,
    long_d_model=16, long_n_layer=2, long_vocab=16, long_exponents="8,10", warmup=1, steps=2, long_steps=2,
    long_chunk=96,
)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", choices=["cuda", "cpu"], default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--tiny", action="store_true", help="tiny shapes (defaults below become TINY's), for a CPU check")
    p.add_argument("--sections", default=",".join(SECTIONS), help=f"comma-separated subset of {SECTIONS}")
    p.add_argument("--autocast", choices=["bf16", "off"], default="bf16")
    p.add_argument("--out", type=pathlib.Path, help="also write the records as JSON")
    p.add_argument("--long-variants", default=",".join(LONG_VARIANT_KEYS),
                   help=f"comma-separated subset of {','.join(LONG_VARIANT_KEYS)} for the long section")
    p.add_argument("--profile", type=int, default=0, metavar="K",
                   help="profile one more step of each lm model; print its K costliest operators and kernels")
    for key, value in FULL.items():
        flag, help_text = "--" + key.replace("_", "-"), f"default {value} ({TINY[key]} with --tiny)"
        p.add_argument(flag, type=type(value), help=help_text)
    args = p.parse_args(argv)
    defaults = TINY if args.tiny else FULL
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    args.long_exponents = [int(e) for e in str(args.long_exponents).split(",")]
    args.sections = [s for s in args.sections.split(",") if s]
    variants = [v for v in args.long_variants.split(",") if v]
    unknown_variants = sorted(set(variants) - set(LONG_VARIANT_KEYS))
    if unknown_variants or not variants:
        p.error(f"--long-variants: unknown {unknown_variants or 'empty list'}; choose from {list(LONG_VARIANT_KEYS)}")
    args.long_variants = [LONG_VARIANT_KEYS[v] for v in variants]
    unknown = sorted(set(args.sections) - set(SECTIONS))
    if unknown:
        p.error(f"--sections: unknown {unknown}; choose from {SECTIONS}")
    if args.device == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda: no CUDA device here; use --device cpu")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    settings = Settings(device=args.device, autocast=args.autocast == "bf16", warmup=args.warmup, steps=args.steps)
    records: list[Record] = []
    if "lm" in args.sections:
        records += run_lm(args, dataclasses.replace(settings, profile=args.profile))
    if "long" in args.sections:
        records += run_long(args, settings)

    device = torch.cuda.get_device_name() if args.device == "cuda" else "CPU"
    precision = "bf16 autocast, fp32 weights" if settings.autocast else "fp32"
    print(f"\ndevice: {device}; torch {torch.__version__}; {precision}; AdamW; "
          f"median of {args.steps} steps after {args.warmup} warm-up ({args.long_steps} after 1 for 'long')")
    print(markdown_table(records))
    ok = first_losses_agree(records)
    failed = [f"{r.section} {r.name} {r.batch}x{r.length}" for r in records if r.status.startswith("failed")]
    if args.out:
        environment = {"device": device, "torch": torch.__version__, "precision": precision}
        args.out.write_text(json.dumps(
            {"environment": environment, "records": [dataclasses.asdict(r) for r in records]}, indent=2
        ))
    if not ok:
        print(f"first losses differ by more than {LOSS_AGREEMENT:.0%}", file=sys.stderr)
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
    return 0 if ok and not failed else 1


if __name__ == "__main__":
    sys.exit(main())
