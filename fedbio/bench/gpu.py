"""GPU benchmark: training throughput and model-FLOPs utilisation (MFU) of ESM-2 shapes.

    fedbio bench gpu                          # esm2-8m and esm2-650m shapes, 20 timed steps each
    fedbio bench gpu --full --out gpu.json    # 50 timed steps, results also as JSON
    python -m fedbio.bench.gpu --models esm2-650m --batch-size 16

On a CUDA machine it

1. measures this GPU's bf16 matmul peak: the best TFLOP/s of square bf16 matmuls
   (n = 8192, 2 n^3 FLOPs each) timed with CUDA events: the ceiling the MFU is measured against,
   on the same GPU, in the same run (not a datasheet number);
2. runs training steps (forward, backward, fused AdamW) of randomly initialised models of the
   ``esm2-8m`` and ``esm2-650m`` shapes (fedbio's Hugging Face backend, full tuning, the MLP
   head, bf16 autocast over fp32 master weights: the trainer's ``bf16-mixed`` from
   ``fedbio.training.device``, forward under autocast, loss in float32), on batches of ``batch x seq_len`` random
   residues with no padding, and reports tokens/s, proteins/s and MFU.

Model FLOPs per training step (the PaLM / Megatron convention, forward + backward = 3 x forward)::

    6 * N * T  +  12 * L * h * S * T

with ``N`` the parameters that multiply activations (every trainable parameter except the token
embedding, which is a lookup), ``T = batch * S`` the tokens of the step, ``S`` the sequence length
(``<cls>`` and ``<eos>`` included), ``L`` layers and ``h`` the hidden size. The second term is
attention's ``QK^T`` and ``AV`` (2 x 2 S h FLOPs per token and layer forward), counted in full
because ESM-2 attends in both directions. Re-computation (activation checkpointing) is not
counted: it would be hardware FLOPs, not model FLOPs. MFU = model FLOPs per second / measured
peak. The goal, >= 35 % of the measured peak, applies to the largest model of the run (the 8M
shape is too small to fill an H100-class GPU and is reported for reference).

On a machine without CUDA it stops with a clear message and a non-zero exit (2).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fedbio.errors import FedbioError

MFU_GOAL = 0.35
DEFAULT_MODELS = ("esm2-8m", "esm2-650m")
DEFAULT_BATCH = {"esm2-tiny": 64, "esm2-8m": 64, "esm2-35m": 64, "esm2-150m": 32,
                 "esm2-650m": 16, "esm2-3b": 4}
SEQ_LEN = 512          # residues per sequence; the model sees SEQ_LEN + 2 tokens
PEAK_N = 8192          # matmul size of the peak measure
N_OUTPUTS = 10         # classes of the head (the subcellular-location task)


# -- FLOPs arithmetic (pure; unit-tested) --------------------------------------------------------
@dataclass(frozen=True)
class Shape:
    """The sizes of an ESM-2 encoder that its FLOPs depend on."""

    layers: int
    hidden: int
    ffn: int

    @classmethod
    def of(cls, preset: str) -> Shape:
        from fedbio.models.presets import get_preset

        p = get_preset(preset)
        return cls(p.num_layers, p.hidden_size, p.ffn_size)


def encoder_params(shape: Shape) -> int:
    """Parameters of a Hugging Face ``EsmModel`` encoder that multiply activations.

    Per layer: query, key, value and output projections (4 h^2 + 4 h), the feed-forward
    (2 h f + f + h), two LayerNorms (4 h); plus the final LayerNorm (2 h). Token embeddings
    (a lookup), rotary tables and the contact head are not counted.
    """
    h, f = shape.hidden, shape.ffn
    per_layer = 4 * h * h + 4 * h + 2 * h * f + f + h + 4 * h
    return shape.layers * per_layer + 2 * h


def head_params(hidden: int, head_hidden: int = 256, n_outputs: int = N_OUTPUTS) -> int:
    """Parameters of fedbio's MLP head: Linear(h, m) -> ReLU -> Dropout -> Linear(m, n)."""
    return hidden * head_hidden + head_hidden + head_hidden * n_outputs + n_outputs


def attention_flops_per_token(shape: Shape, seq_len: int, training: bool = True) -> int:
    """``QK^T`` and ``AV``: 4 L h S FLOPs per token forward, 3x that for a training step."""
    forward = 4 * shape.layers * shape.hidden * seq_len
    return 3 * forward if training else forward


def train_flops_per_step(n_params: int, shape: Shape, batch: int, seq_len: int) -> int:
    """Model FLOPs of one training step on ``batch`` sequences of ``seq_len`` tokens:
    ``6 N T + 12 L h S T`` with ``T = batch * seq_len``."""
    tokens = batch * seq_len
    return 6 * n_params * tokens + attention_flops_per_token(shape, seq_len) * tokens


def forward_flops(n_params: int, shape: Shape, lengths) -> int:
    """Forward FLOPs over sequences of the given token lengths (no padding):
    ``sum_i (2 N S_i + 4 L h S_i^2)``."""
    lengths = [int(n) for n in lengths]
    return (2 * n_params * sum(lengths)
            + 4 * shape.layers * shape.hidden * sum(n * n for n in lengths))


def mfu(flops_per_step: float, step_seconds: float, peak_flops: float) -> float:
    """Model-FLOPs utilisation: achieved model FLOP/s over the peak FLOP/s."""
    if step_seconds <= 0 or peak_flops <= 0:
        raise ValueError("step time and peak must be positive")
    return flops_per_step / step_seconds / peak_flops


def matmul_flops(n: int) -> int:
    """FLOPs of one n x n by n x n matmul (a multiply and an add per term)."""
    return 2 * n ** 3


# -- the measures (need CUDA) --------------------------------------------------------------------
def require_cuda() -> None:
    """A FedbioError unless torch sees a CUDA GPU."""
    import torch

    if not torch.cuda.is_available():
        build = "a CPU-only build" if torch.version.cuda is None else f"built for CUDA {torch.version.cuda}"
        raise FedbioError(
            f"fedbio bench gpu measures a CUDA GPU, and torch {torch.__version__} ({build}) sees "
            "none on this machine. Run it on a GPU machine, e.g. in the container: "
            "`docker compose run --rm jupyter fedbio bench gpu` (docker/README.md)")


def _cuda_seconds(fn, reps: int) -> float:
    """Seconds for ``reps`` calls of ``fn``, timed with CUDA events after a synchronize."""
    import torch

    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    torch.cuda.synchronize()
    start.record()
    for _ in range(reps):
        fn()
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) / 1e3


def measure_peak(n: int = PEAK_N, reps: int = 50, rounds: int = 5) -> dict[str, Any]:
    """This GPU's bf16 matmul throughput: the best of ``rounds`` runs of ``reps`` matmuls."""
    import torch

    a = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    c = torch.empty(n, n, device="cuda", dtype=torch.bfloat16)
    _cuda_seconds(lambda: torch.matmul(a, b, out=c), 5)  # warm-up (cuBLAS heuristics, clocks)
    best = min(_cuda_seconds(lambda: torch.matmul(a, b, out=c), reps) for _ in range(rounds))
    flops = matmul_flops(n) * reps / best
    return {"n": n, "reps": reps, "rounds": rounds, "dtype": "bfloat16", "seconds": best,
            "tflops": flops / 1e12}


def counted_params(model) -> int:
    """Trainable parameters except the token embedding: ``N`` of the FLOPs formula."""
    return sum(p.numel() for name, p in model.named_parameters()
               if p.requires_grad and "word_embeddings" not in name)


def train_throughput(preset: str, batch: int, seq_len: int = SEQ_LEN, steps: int = 20,
                     warmup: int = 3, compile_model: bool = False, seed: int = 0) -> dict[str, Any]:
    """Time ``steps`` training steps of a random-init ``preset``-shaped model on the GPU."""
    import torch

    from fedbio.bench.common import random_model
    from fedbio.models.presets import CLS_ID, EOS_ID
    from fedbio.training.device import placement, to_device

    # The trainer's own device/precision handling (fedbio.training.device): bf16-mixed autocast on CUDA,
    # forward under autocast, loss in float32, fused AdamW.
    place = placement(device="cuda", precision="bf16-mixed")
    torch.manual_seed(seed)
    model = random_model(preset, N_OUTPUTS, "full", seed).to(place.device).train()
    n_params = counted_params(model)
    shape = Shape.of(preset)
    tokens = seq_len + 2
    ids = torch.randint(4, 24, (batch, tokens))  # the 20 standard residues
    ids[:, 0], ids[:, -1] = CLS_ID, EOS_ID
    mask = torch.ones_like(ids)
    y = torch.randint(0, N_OUTPUTS, (batch,))
    ids, mask, y = to_device((ids, mask, y), place.device)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4,
                                  fused=True)
    criterion = torch.nn.CrossEntropyLoss()
    forward = torch.compile(model) if compile_model else model

    def step() -> None:
        with place.autocast():
            out = forward(ids, mask)
        loss = criterion(out.float(), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    torch.cuda.reset_peak_memory_stats()
    _cuda_seconds(step, warmup)
    seconds = _cuda_seconds(step, steps)
    step_s = seconds / steps
    flops = train_flops_per_step(n_params, shape, batch, tokens)
    out = {"model": f"{preset} shape, random init", "preset": preset, "params_counted": n_params,
           "layers": shape.layers, "hidden": shape.hidden, "batch": batch, "seq_len": tokens,
           "steps": steps, "warmup": warmup, "compiled": compile_model, "seconds": seconds,
           "device": str(place.device), "precision": place.precision,
           "step_seconds": step_s, "tokens_per_s": batch * tokens / step_s,
           "proteins_per_s": batch / step_s, "model_flops_per_step": flops,
           "model_tflops_per_s": flops / step_s / 1e12,
           "peak_memory_gb": torch.cuda.max_memory_allocated() / 1e9}
    return out


def run_gpu_bench(models=DEFAULT_MODELS, batch: int | None = None, seq_len: int = SEQ_LEN,
                  steps: int = 20, warmup: int = 3, compile_model: bool = False,
                  log=None) -> dict[str, Any]:
    """The peak, then every model's training throughput and MFU; a JSON-ready dict."""
    require_cuda()
    import torch

    say = log or (lambda msg: print(f"bench gpu: {msg}", file=sys.stderr, flush=True))
    start = time.perf_counter()
    props = torch.cuda.get_device_properties(0)
    result: dict[str, Any] = {"device": torch.cuda.get_device_name(0),
                              "memory_gb": props.total_memory / 1e9, "torch": torch.__version__,
                              "cuda": torch.version.cuda, "mfu_goal": MFU_GOAL, "models": {}}
    say(f"{result['device']}: bf16 matmul peak (n={PEAK_N})")
    result["peak"] = measure_peak()
    peak = result["peak"]["tflops"] * 1e12
    for preset in models:
        torch.cuda.empty_cache()  # the previous measure's tensors are gone; hand back their memory
        b = batch or DEFAULT_BATCH.get(preset, 8)
        say(f"{preset} shape: {steps} training steps, batch {b} x {seq_len + 2} tokens")
        row = train_throughput(preset, b, seq_len, steps, warmup, compile_model)
        row["mfu"] = mfu(row["model_flops_per_step"], row["step_seconds"], peak)
        result["models"][preset] = row
    result["checks"] = checks(result)
    result["wall_seconds"] = time.perf_counter() - start
    return result


def checks(result: dict[str, Any]) -> list[dict[str, Any]]:
    """Rows for ``fedbio.bench.train.table``: the peak, then per model tokens/s, proteins/s and MFU."""
    rows = [{"measure": f"bf16 matmul peak, {result['device']}",
             "value": f"{result['peak']['tflops']:.0f} TFLOP/s", "goal": "-", "ok": None}]
    models = result["models"]
    largest = max(models, key=lambda m: models[m]["params_counted"]) if models else None
    for preset, r in models.items():
        rows.append({"measure": f"{preset} train, batch {r['batch']} x {r['seq_len']}",
                     "value": f"{r['tokens_per_s']:,.0f} tok/s, {r['proteins_per_s']:,.1f} proteins/s",
                     "goal": "-", "ok": None})
        goal = preset == largest
        rows.append({"measure": f"{preset} MFU (6N + attention, vs measured peak)",
                     "value": f"{100 * r['mfu']:.1f} % ({r['model_tflops_per_s']:.0f} TFLOP/s)",
                     "goal": f">= {100 * MFU_GOAL:.0f} %" if goal else "-",
                     "ok": r["mfu"] >= MFU_GOAL if goal else None})
    return rows


# -- command line --------------------------------------------------------------------------------
def _add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--models", default=",".join(DEFAULT_MODELS),
                   help="comma-separated presets whose shapes to train (default: %(default)s)")
    p.add_argument("--batch-size", type=int, default=None,
                   help="sequences per step for every model (default: 64 for 8m, 16 for 650m)")
    p.add_argument("--seq-len", type=int, default=SEQ_LEN, help="residues per sequence (+2 tokens)")
    p.add_argument("--steps", type=int, default=None, help="timed steps per model (20; --full 50)")
    p.add_argument("--compile", action="store_true", help="torch.compile the model first")
    p.add_argument("--full", action="store_true", help="more timed steps (50)")
    p.add_argument("--out", default=None, metavar="FILE", help="also write the results as JSON")


def cmd_bench_gpu(args: argparse.Namespace) -> int:
    """``fedbio bench gpu``: measure, print the table, optionally write JSON."""
    from fedbio.bench.common import table

    models = [m.strip() for m in args.models.split(",") if m.strip()]
    if not models:
        raise FedbioError("--models names no preset")
    from fedbio.models.presets import get_preset

    for name in models:
        get_preset(name)  # unknown names fail before any GPU work
    steps = args.steps or (50 if args.full else 20)
    result = run_gpu_bench(models, args.batch_size, args.seq_len, steps,
                           compile_model=args.compile)
    print(table(result["checks"]))
    print(f"{result['device']}, torch {result['torch']}, {result['wall_seconds']:.1f} s wall")
    if args.out:
        path = Path(args.out)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(result, indent=1) + "\n")
        print(f"wrote {path}")
    return 0


def register(bench_subparsers) -> None:
    """Add ``gpu`` to ``fedbio bench``'s actions."""
    p = bench_subparsers.add_parser("gpu", help="bf16 peak, ESM-2 training tokens/s and MFU "
                                                "on a CUDA GPU")
    _add_arguments(p)
    p.set_defaults(func=cmd_bench_gpu)


def main(argv=None) -> int:
    """``python -m fedbio.bench.gpu``: the same as ``fedbio bench gpu``."""
    parser = argparse.ArgumentParser(prog="python -m fedbio.bench.gpu",
                                     description=__doc__.splitlines()[0])
    _add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        return cmd_bench_gpu(args)
    except FedbioError as err:
        print(f"fedbio: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
