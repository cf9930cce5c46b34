"""Generation speed and memory: seqmamba's Mamba vs mamba_ssm vs a Pythia-shaped Transformer.

Models with random weights (speed does not depend on them): Mamba-130M's shape
(d_model 768, 24 layers, vocab 50277) for seqmamba and, with the same weights,
mamba_ssm's ``MambaLMHeadModel``; Pythia-160M's shape for the Transformer
(benchmarks/transformer_decode.py: static KV cache, SDPA, CUDA graphs). All decode
greedily. Implementations:

    ours         MambaLM.generate (prefill with the scan, CUDA-graph decode step), SSM
                 states in float32 (the default)
    ours_lowp    the same with the SSM states in the model's dtype (bf16), as mamba_ssm's
                 cache keeps them: the like-for-like comparison with mamba_ssm
    mamba_ssm    MambaLMHeadModel.generate(cg=True) (when importable; CUDA only)
    transformer  prefill with causal SDPA, then a CUDA-graph step over a static KV cache

Workloads: prompt 128 with 1024 new tokens at batch 1, 16 and 64; then prompts of 2k,
8k and 32k tokens (batch 1, 256 new): Mamba's decode state and step time do not depend
on the context, the Transformer's grow with it. Per workload and implementation:
prefill ms (a one-token generation), decode ms per step and tokens/s (the rest of a
full generation), peak GPU memory, and decode state per sequence (Mamba: conv windows
and SSM states; Transformer: keys and values of the whole context).

Before timing, each model's cached path is checked against its own full forward.

    python benchmarks/bench_generate.py                      # on a GPU
    python benchmarks/bench_generate.py --device cpu --tiny  # seconds, a smoke test
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from bench_scan import environment, rel_err
from kernel_profile import format_kernels, profile_step, rank_kernels
from seqmamba.kernels import row_argmax
from seqmamba.models import graphs
from seqmamba.models import MambaLM, ModelConfig, allocate_inference_cache
from seqmamba.models.decode import decode_step, prefill
from seqmamba.models.graphs import CUDAGraphRecorder
from transformer_decode import KVCache, Transformer, TransformerShape

IMPLS = ("ours", "ours_lowp", "mamba_ssm", "transformer")
CHECK_LENGTH = 37  # tokens of the prompt that checks each cached path against its forward
ARGMAX = {"torch": graphs.torch_argmax_into, "row_argmax": row_argmax}
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
MAMBA = {"full": ModelConfig(d_model=768, n_layer=24, vocab_size=50277),
         "tiny": ModelConfig(d_model=32, n_layer=2, vocab_size=61, d_state=8)}
TRANSFORMER = {"full": TransformerShape(), "tiny": TransformerShape(d_model=32, n_layer=2, n_head=4, vocab_size=64)}
# (batch, prompt length, new tokens)
WORKLOADS = {
    "full": [(1, 128, 1024), (16, 128, 1024), (64, 128, 1024), (1, 2048, 256), (1, 8192, 256), (1, 32768, 256)],
    "tiny": [(1, 9, 12), (3, 9, 12), (1, 33, 6), (1, 65, 6)],
}
TOL = {torch.float32: 1e-3, torch.float64: 1e-6, torch.bfloat16: 3e-2, torch.float16: 1e-2}

Generate = Callable[[torch.Tensor, int], torch.Tensor]


@dataclass
class Impl:
    """What the benchmark runs of one implementation.

    generate(ids, new) -> (batch, L + new) greedy tokens; prefill(ids) -> a function
    that runs the prompt pass alone (its cache allocated beforehand, as in a generation);
    state_bytes(context) -> decode state per sequence at that context length;
    step(ids) -> a function that runs one eager decode step after the prompt ``ids``
    (prefilled beforehand), for ``--profile``.
    """

    generate: Generate
    prefill: Callable[[torch.Tensor], Callable[[], object]]
    state_bytes: Callable[[int], int]
    step: Callable[[torch.Tensor], Callable[[], object]]


def mamba_impl(model: MambaLM, state_dtype: torch.dtype | None = torch.float32) -> Impl:
    """seqmamba's generation with SSM states in ``state_dtype`` (None: the model's dtype)."""
    state = allocate_inference_cache(model, 1, state_dtype=state_dtype).state_bytes()

    def make_prefill(ids: torch.Tensor) -> Callable[[], object]:
        cache = allocate_inference_cache(model, ids.shape[0], state_dtype=state_dtype)
        return lambda: prefill(model, ids, cache)

    def generate(ids: torch.Tensor, new: int) -> torch.Tensor:
        return model.generate(ids, new, temperature=0, state_dtype=state_dtype)

    def make_step(ids: torch.Tensor) -> Callable[[], object]:
        cache = allocate_inference_cache(model, ids.shape[0], state_dtype=state_dtype)
        prefill(model, ids, cache)
        return lambda: decode_step(model, ids[:, -1], cache)

    return Impl(generate, make_prefill, lambda context: state, make_step)


def mamba_ssm_impl(model: MambaLM) -> tuple[Impl, torch.nn.Module]:
    """mamba_ssm's model with our weights (same parameter names)."""
    from mamba_ssm.models.config_mamba import MambaConfig
    from mamba_ssm.models.mixer_seq_simple import MambaLMHeadModel

    c = model.config
    config = MambaConfig(d_model=c.d_model, n_layer=c.n_layer, vocab_size=c.vocab_size, ssm_cfg={},
                         rms_norm=True, residual_in_fp32=True, fused_add_norm=True, pad_vocab_size_multiple=8)
    weight = model.lm_head.weight
    theirs = MambaLMHeadModel(config, device=weight.device, dtype=weight.dtype).eval()
    theirs.load_state_dict(model.state_dict())
    # Its cache holds conv windows and SSM states in the model's dtype.
    state = allocate_inference_cache(model, 1, state_dtype=None).state_bytes()

    recorded_for = None  # the (batch, max_length) of its current decoding cache

    def generate(ids: torch.Tensor, new: int) -> torch.Tensor:
        # Its graphs are recorded per (batch, max_length): warm-up and timed runs share both.
        # Its cache is kept for the largest batch seen, and a smaller batch after it fails
        # in its conv step (conv_state shape): a new workload starts from no cache.
        nonlocal recorded_for
        workload = (ids.shape[0], ids.shape[1] + new)
        if recorded_for != workload:
            theirs._decoding_cache = None
            recorded_for = workload
        return theirs.generate(ids, max_length=workload[1], cg=True, top_k=1)

    def make_prefill(ids: torch.Tensor) -> Callable[[], object]:
        return lambda: theirs(ids, num_last_tokens=1)

    def make_step(ids: torch.Tensor) -> Callable[[], object]:
        from mamba_ssm.utils.generation import InferenceParams

        params = InferenceParams(max_seqlen=ids.shape[1] + 1, max_batch_size=ids.shape[0])
        theirs(ids, inference_params=params, num_last_tokens=1)
        params.seqlen_offset = ids.shape[1]  # past the prompt: each layer takes its one-token path
        return lambda: theirs(ids[:, -1:], inference_params=params, num_last_tokens=1)

    return Impl(generate, make_prefill, lambda context: state, make_step), theirs


class TransformerGreedy:
    """Greedy generation with a static KV cache; the step is a CUDA graph on CUDA.

    As seqmamba's greedy graph: a replay runs ``block`` steps (one for the last few
    tokens), each taking its own argmax (the same function as seqmamba's greedy steps,
    ``graphs.argmax_into``) where the next step reads it and advancing the
    position, so a replay and one copy of its tokens are all that run for ``block``
    tokens. One decoder (cache, static buffers, graphs) per (batch, cache length), kept
    until :meth:`clear`, as a server would keep them."""

    def __init__(self, model: Transformer, block: int = 4) -> None:
        self.model = model
        self.block = block
        self.decoders: dict[tuple[int, int], tuple[KVCache, torch.Tensor, torch.Tensor, dict]] = {}

    def _decoder(self, batch: int, max_len: int):
        key = (batch, max_len)
        if key not in self.decoders:
            device = self.model.head.weight.device
            cache = self.model.allocate_cache(batch, max_len)
            tokens = torch.zeros(self.block, batch, dtype=torch.long, device=device)
            position = torch.zeros(1, dtype=torch.long, device=device)

            def steps(count: int) -> torch.Tensor:
                for k in range(count):  # step k reads the token step k - 1 wrote (the last row for k = 0)
                    graphs.argmax_into(self.model.step(tokens[k - 1], position, cache), tokens[k])
                    position.add_(1)
                return tokens

            runs = {}
            for count in {1, self.block}:
                if device.type == "cuda":
                    start = position.clone()
                    _, runs[count] = CUDAGraphRecorder().record(lambda count=count: steps(count))
                    position.copy_(start)  # recording advanced it
                else:
                    runs[count] = lambda count=count: steps(count)
            self.decoders[key] = (cache, tokens, position, runs)
        return self.decoders[key]

    def __call__(self, prompt: torch.Tensor, new: int) -> torch.Tensor:
        batch, length = prompt.shape
        cache, tokens, position, runs = self._decoder(batch, length + new)
        tokens[-1] = self.model.prefill(prompt, cache).argmax(-1)
        position.fill_(length)
        out = [tokens[-1:].clone()]
        done = 1
        while done < new:
            count = self.block if new - done >= self.block else 1
            runs[count]()
            # A single step wrote row 0 and reads the last row next: keep them in order.
            if count == 1:
                tokens[-1] = tokens[0]
            out.append(tokens[-count:].clone())
            done += count
        return torch.cat([prompt, torch.cat(out).T], dim=1)

    def clear(self) -> None:
        self.decoders.clear()


def transformer_impl(model: Transformer, kv_per_token: int) -> Impl:
    def make_prefill(ids: torch.Tensor) -> Callable[[], object]:
        cache = model.allocate_cache(ids.shape[0], ids.shape[1])
        return lambda: model.prefill(ids, cache)

    def make_step(ids: torch.Tensor) -> Callable[[], object]:
        cache = model.allocate_cache(ids.shape[0], ids.shape[1] + 1)
        model.prefill(ids, cache)
        position = torch.tensor([ids.shape[1]], device=ids.device)
        return lambda: model.step(ids[:, -1], position, cache)

    return Impl(TransformerGreedy(model), make_prefill, lambda context: kv_per_token * context, make_step)


@torch.no_grad()
def check_mamba(model: MambaLM, ids: torch.Tensor, state_dtype: torch.dtype | None = torch.float32) -> float:
    """Relative error of prefill + two recurrent steps against the full forward's logits."""
    full = model(ids)[:, -3:]
    cache = allocate_inference_cache(model, ids.shape[0], state_dtype=state_dtype)
    stepped = [prefill(model, ids[:, :-2], cache)] + [decode_step(model, ids[:, t], cache) for t in (-2, -1)]
    return rel_err(torch.stack(stepped, 1).float(), full.float())


@torch.no_grad()
def check_transformer(model: Transformer, ids: torch.Tensor) -> float:
    full = model(ids)[:, -3:]
    cache = model.allocate_cache(ids.shape[0], ids.shape[1])
    length = ids.shape[1]
    stepped = [model.prefill(ids[:, :-2], cache)]
    for t in (length - 2, length - 1):
        stepped.append(model.step(ids[:, t], torch.tensor([t], device=ids.device), cache))
    return rel_err(torch.stack(stepped, 1).float(), full.float())


def timed(fn: Callable[[], object], device: str, repeats: int) -> float:
    """Best wall-clock seconds of ``fn`` over ``repeats`` runs (device synchronised)."""
    best = float("inf")
    for _ in range(repeats):
        if device == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if device == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    return best


def bench_workload(name: str, impl: Impl, batch: int, prompt: int, new: int, args) -> dict:
    """Prefill time alone, then a whole generation; decoding is the difference."""
    ids = torch.randint(0, args.vocab, (batch, prompt), generator=torch.Generator().manual_seed(args.seed))
    ids = ids.to(args.device)
    with torch.inference_mode():
        out = impl.generate(ids, new)  # warm-up: compiles kernels, records this batch's graphs
        assert out.shape == (batch, prompt + new), (name, tuple(out.shape))
        if args.device == "cuda":
            torch.cuda.reset_peak_memory_stats()
        first = timed(impl.prefill(ids), args.device, args.repeats)
        total = timed(lambda: impl.generate(ids, new), args.device, args.repeats)
    rec = {"impl": name, "batch": batch, "prompt": prompt, "new": new, "prefill_ms": 1e3 * first,
           "state_bytes_per_seq": impl.state_bytes(prompt + new)}
    decode_s = total - first
    if decode_s > 0:  # a busy host can make the two timings overlap: then no rate is claimed
        rec["ms_per_step"] = 1e3 * decode_s / new
        rec["tokens_per_s"] = batch * new / decode_s
    if args.device == "cuda":
        rec["peak_gb"] = torch.cuda.max_memory_allocated() / 2**30
    if args.profile:
        with torch.inference_mode():
            step = impl.step(ids)
            step()  # warm-up
            ranked = rank_kernels(profile_step(step))
        print(f"  one eager decode step of {name} at batch {batch}: {len(ranked)} kernel names, "
              f"{sum(n for _, _, n in ranked)} launches, {sum(us for _, us, _ in ranked) / 1e3:.3f} ms of kernel time")
        print(format_kernels(ranked, args.profile), flush=True)
    return rec


def fmt_bytes(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError


COLUMNS = (
    ("batch", lambda r: str(r["batch"])),
    ("prompt", lambda r: str(r["prompt"])),
    ("new", lambda r: str(r["new"])),
    ("impl", lambda r: r["impl"]),
    ("prefill ms", lambda r: f"{r['prefill_ms']:.1f}"),
    ("ms/token", lambda r: f"{r['ms_per_step']:.3f}"),
    ("tokens/s", lambda r: f"{r['tokens_per_s']:.0f}"),
    ("peak GiB", lambda r: f"{r['peak_gb']:.2f}"),
    ("state/seq", lambda r: fmt_bytes(r["state_bytes_per_seq"])),
)


def format_table(records: Sequence[dict]) -> str:
    def cell(fn, r):
        try:
            return fn(r)
        except KeyError:
            return "-"

    rows = [[h for h, _ in COLUMNS]] + [[cell(fn, r) for _, fn in COLUMNS] for r in records]
    widths = [max(len(row[i]) for row in rows) for i in range(len(COLUMNS))]
    return "\n".join("| " + " | ".join(c.rjust(w) for c, w in zip(row, widths)) + " |" for row in rows)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", choices=("cuda", "cpu"))
    p.add_argument("--tiny", action="store_true", help="tiny models and workloads: a smoke test in seconds")
    p.add_argument("--dtype", default=None, choices=sorted(DTYPES), help="default: bf16 on CUDA, fp32 on the CPU")
    p.add_argument("--impls", default=",".join(IMPLS), help=f"comma-separated subset of {IMPLS}")
    p.add_argument("--workloads", default=None,
                   help="comma-separated BATCHxPROMPTxNEW (e.g. 1x128x1024); default: the module docstring's")
    p.add_argument("--repeats", type=int, default=3, help="timed runs per measurement (the best counts)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="write the records and environment as JSON to this file")
    p.add_argument("--profile", type=int, default=0, metavar="K",
                   help="also profile one eager decode step per workload and implementation (CUDA): "
                        "print its K costliest kernels")
    p.add_argument("--argmax", default="row_argmax", choices=sorted(ARGMAX),
                   help="the greedy steps' argmax, ours and the Transformer's alike: torch's or seqmamba's row_argmax")
    args = p.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda: no CUDA device is available; use --device cpu")
    if args.profile and args.device != "cuda":
        p.error("--profile ranks CUDA kernels: it needs --device cuda")
    args.size = "tiny" if args.tiny else "full"
    args.dtype = args.dtype or ("bf16" if args.device == "cuda" else "fp32")
    args.impls = args.impls.split(",")
    if any(i not in IMPLS for i in args.impls):
        p.error(f"--impls: got {','.join(args.impls)!r}; choose from {','.join(IMPLS)}")
    if args.workloads is None:
        args.workloads = WORKLOADS[args.size]
    else:
        try:
            args.workloads = [tuple(int(v) for v in w.split("x")) for w in args.workloads.split(",")]
        except ValueError:
            p.error(f"--workloads: expected BATCHxPROMPTxNEW items, got {args.workloads!r}")
        if any(len(w) != 3 or min(w) < 1 or w[2] < 2 for w in args.workloads):
            p.error("--workloads: each item is BATCHxPROMPTxNEW with positive values and NEW >= 2")
    if args.repeats < 1:
        p.error("--repeats must be at least 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    original, graphs.argmax_into = graphs.argmax_into, ARGMAX[args.argmax]
    try:
        return run(args)
    finally:
        graphs.argmax_into = original


def run(args: argparse.Namespace) -> int:
    dtype = DTYPES[args.dtype]
    torch.manual_seed(args.seed)
    mamba = MambaLM(MAMBA[args.size]).to(device=args.device, dtype=dtype).eval()
    shape = TRANSFORMER[args.size]
    # Rotary tables long enough for every workload and for the 37-token decoding check.
    max_len = max(CHECK_LENGTH, *(prompt + new for _, prompt, new in args.workloads))
    transformer = Transformer(shape, max_len=max_len).to(device=args.device, dtype=dtype).eval()
    args.vocab = min(mamba.config.vocab_size, shape.vocab_size)
    kv_per_token = 2 * shape.n_layer * shape.d_model * torch.finfo(dtype).bits // 8

    check_ids = torch.randint(0, args.vocab, (2, CHECK_LENGTH), generator=torch.Generator().manual_seed(args.seed + 1))
    check_ids = check_ids.to(args.device)
    impls: dict[str, Impl] = {}
    failed = []
    for name in args.impls:
        if name in ("ours", "ours_lowp"):
            state_dtype = torch.float32 if name == "ours" else None
            err = check_mamba(mamba, check_ids, state_dtype)
            impls[name] = mamba_impl(mamba, state_dtype)
        elif name == "mamba_ssm":
            if args.device != "cuda":
                print("skipping mamba_ssm: mamba_ssm runs on CUDA only", flush=True)
                continue
            try:
                impls[name], theirs = mamba_ssm_impl(mamba)
            except ImportError as e:
                print(f"skipping mamba_ssm: not importable ({e})", flush=True)
                continue
            with torch.no_grad():
                err = rel_err(theirs(check_ids).logits.float(), mamba(check_ids).float())
        else:
            err = check_transformer(transformer, check_ids)
            impls[name] = transformer_impl(transformer, kv_per_token)
        print(f"check {name}: cached decoding vs full forward, relative error {err:.2e}", flush=True)
        if not err <= TOL[dtype]:
            failed.append(f"{name}: relative error {err:.2e} above {TOL[dtype]:.0e}")
    if failed:
        for line in failed:
            print(f"MISMATCH: {line}", file=sys.stderr)
        return 1
    if not impls:
        print("nothing to run: no requested implementation is available", file=sys.stderr)
        return 1

    records = []
    for batch, prompt, new in args.workloads:
        for name, impl in impls.items():
            records.append(bench_workload(name, impl, batch, prompt, new, args))
            print(format_table(records[-1:]).splitlines()[-1], flush=True)
        if "transformer" in impls:
            impls["transformer"].generate.clear()  # free this workload's KV cache before the next one

    env = environment(args.device)
    print(f"\n{env}, dtype {args.dtype}")
    mamba_state = allocate_inference_cache(mamba, 1).state_bytes()
    print(f"decode state per sequence: Mamba {fmt_bytes(mamba_state)} at any context length; Transformer "
          f"{fmt_bytes(kv_per_token)} per token of context\n")
    print(format_table(records))
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"environment": env, "args": {k: v for k, v in vars(args).items()}, "records": records}, f,
                      indent=1, default=str)
    return 0


if __name__ == "__main__":
    sys.exit(main())
