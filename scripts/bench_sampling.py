"""Sampling throughput, memory and FLOP-bound benchmark (parallel TTS at predict time).

Each point samples N trajectories for each of a few questions with one sampler set-up and
prints trajectories per second, peak memory and the point's FLOP bound with the fraction of it
reached. Points run in fresh subprocesses, so that peak memory (max RSS, or CUDA max allocated)
is their own.

Set-ups: AGN (sigma 0.6 x RMS) with shared prefill, MC-dropout (p = 0.2) with per-sample
prefill (``--setups`` also takes ``dropout:shared``). Backbones: a random GPT-2-small-sized
COCONUT model (12 layers, width 768, vocab 50257, T = 6, answers fixed at 8 tokens because
random weights never stop; the default) and the shipped quickstart one. Prompts: the first
gsm_test questions (default) or synthetic ones.

FLOP bound of a point, in the point's own prefill mode: the forward FLOPs that cannot be
avoided (2 x non-embedding parameters per token, plus attention 4 x layers x width x context per
token) over the real prompt tokens -- once per question with shared prefill, once per
trajectory with per-sample prefill -- then T + A - 1 + 1 = 14 fed tokens per trajectory (T
latents, the end-of-latent token and the first A - 1 answer tokens; the last answer token is
never fed back), each attending to its whole context, plus the LM head on the A answer steps.
Divided by the machine's matmul rate it gives the time no implementation can beat; the bound in
trajectories per second and the fraction reached follow. A fraction above 100% means the rate
was measured wrong (the machine was busier while the rate was measured than during the point),
and is printed as a measurement error, not as a result.

Matmul rate: square matmuls in the run's dtype and thread count, several repeats before and
after all points (median used for the bounds, spread printed), and a few inside each point's
process just before and after it (``rate@pt``: how loaded the machine was during that point).

``--compare`` runs every point a second time, back to back, with latentlit as it was at
``--baseline REF`` (default: the commit before the sampling speed-ups of issue 14), extracted
to a temporary directory: before/after figures from one run on one machine.

``--real`` runs points shaped like real runs instead: 64 questions in the predictor's question
batches (``--batch_size``), the GPT-2-small-sized model at the predictor's defaults (N = 16, batches
of 16, ``max_trajectories`` 1024, gsm_test prompts) and the quickstart model at its configs' (N = 64, batches of 32,
``max_trajectories`` 2048, synthetic prompts), both samplers: at 8 questions x N = 8 a decode step has 64 rows, a
shape at which GEMMs run at about half the square rate (``bench_gemm_shapes.py``).

Usage::

    python scripts/bench_sampling.py [--quick | --real] [--compare] [--memory]
    python scripts/bench_sampling.py --device cuda --dtype bfloat16 [--compile]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from latentlit.cli.scripts import ScriptParser, run
from latentlit.models.checkpoints import load_backbone

ROOT = Path(__file__).resolve().parents[1]
ANSWER_TOKENS = 8
BASELINE_REF = "d92249d99dc2d5fa93b200dbfd01f4324fbf01bd"  # before issue 14 (keyed masks, ragged prefill, shared-prefix KV)
SETUPS = {"agn:shared": ("agn", "shared"), "dropout:per_sample": ("dropout", "per_sample"),
          "dropout:shared": ("dropout", "shared")}


# ---------------------------------------------------------------------- matmul rate
def matmul_rates(device: str, dtype: torch.dtype, repeats: int, n: int | None = None) -> list[float]:
    """``repeats`` measurements (GFLOP/s) of an n x n matmul, each timing 2 products (CPU) or 20
    (GPU, where one takes about a millisecond)."""
    n = n or (1536 if device == "cpu" else 8192)
    products = 2 if device == "cpu" else 20
    a = torch.randn(n, n, device=device).to(dtype)
    b = torch.randn(n, n, device=device).to(dtype)
    a @ b  # warm-up (allocations, kernel selection)
    rates = []
    for _ in range(repeats):
        if device == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        for _ in range(products):
            a @ b
        if device == "cuda":
            torch.cuda.synchronize()
        rates.append(products * 2 * n ** 3 / (time.perf_counter() - t) / 1e9)
    return rates


# ---------------------------------------------------------------------- one point (subprocess)
def build_backbone(name: str, data: Path, device: str, dtype: torch.dtype):
    from latentlit.models.backbone import LatentBackbone

    if name == "quickstart":
        return load_backbone("quickstart").to(device=device, dtype=dtype).eval()
    from transformers import GPT2Config, GPT2LMHeadModel

    from latentlit.data.loaders import load_problems
    from latentlit.data.tokenizer import END_LATENT, LATENT, START_LATENT, build_bpe_tokenizer, problem_corpus
    from latentlit.models.backbone import LatentConfig

    tok = build_bpe_tokenizer(problem_corpus(load_problems(data / "gsm8k" / "train.jsonl")[:2000]), vocab_size=4096)
    config = GPT2Config(vocab_size=50257, n_positions=1024, n_embd=768, n_layer=12, n_head=12,
                        activation_function="gelu_pytorch_tanh")
    torch.manual_seed(0)
    lm = GPT2LMHeadModel(config)
    ids = tok.convert_tokens_to_ids
    # eos_id -1: random weights never emit it, so every answer has exactly ANSWER_TOKENS tokens
    cfg = LatentConfig(num_latents=6, end_latent_id=ids(END_LATENT), eos_id=-1, pad_id=tok.pad_token_id,
                       start_latent_id=ids(START_LATENT), latent_id=ids(LATENT), prompt_template="{question}\n<|start-latent|>")
    return LatentBackbone(lm, tok, cfg).to(device=device, dtype=dtype).eval()


def questions_for(prompts: str, data: Path, count: int) -> list[tuple[str, str]]:
    if prompts == "gsm_test":
        from latentlit.data.loaders import load_problems

        problems = load_problems(data / "coconut_format" / "gsm_test.json")[:count]
    else:
        from latentlit.data.sources import SyntheticProblems

        problems = SyntheticProblems("test").load()[:count]
    return [(p.id, p.question) for p in problems]


def flop_bound(backbone, questions: list[str], n: int, prefill: str, answer_tokens: int) -> dict:
    """Unavoidable forward FLOPs of one point in its prefill mode (see module docstring).

    Returns:
        {"total": FLOPs, "prompt_tokens": real prompt tokens of the questions, "fed_per_trajectory": ...}
    """
    cfg, lm = backbone.latent_config, backbone.lm.config
    d, layers, vocab = lm.hidden_size, lm.num_hidden_layers, lm.vocab_size
    per_token = 2 * sum(p.numel() for name, p in backbone.lm.named_parameters()
                        if "wte" not in name and "wpe" not in name and "lm_head" not in name and "embed" not in name)
    attn = lambda ctx: 4 * layers * d * ctx  # noqa: E731  (QK^T and AV over ctx positions)
    fed = cfg.num_latents + answer_tokens  # T latents, <|end-latent|>, answer tokens 1..A-1
    total, prompt_tokens = 0.0, 0
    for q in questions:
        length = len(backbone.tokenizer(cfg.prompt_template.format(question=q), add_special_tokens=cfg.add_bos)["input_ids"])
        prompt_tokens += length
        prompt = sum(per_token + attn(i + 1) for i in range(length))
        total += prompt * (n if prefill == "per_sample" else 1)
        total += n * sum(per_token + attn(length + j) for j in range(1, fed + 1)) + n * answer_tokens * 2 * d * vocab
    return {"total": total, "prompt_tokens": prompt_tokens, "fed_per_trajectory": fed}


def _rss_gb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2 ** 30


def run_point(args) -> dict:
    from latentlit.sampling import AGN, MCDropout
    from latentlit.search.nway import sample_questions

    device, dtype = args.device, getattr(torch, args.dtype)
    backbone = build_backbone(args.backbone, Path(args.data), device, dtype)
    if args.compile:
        backbone.lm.base_model.compile(dynamic=True)
    items = questions_for(args.prompts, Path(args.data), args.questions)
    ids, questions = [i for i, _ in items], [q for _, q in items]
    sampler = AGN(sigma=0.6, prefill=args.prefill) if args.sampler == "agn" else MCDropout(p=0.2, prefill=args.prefill)
    step = args.batch_questions or len(questions)  # the predictor's question batches

    def sample(seed: int) -> None:
        for i in range(0, len(questions), step):
            sample_questions(backbone, sampler, ids[i:i + step], questions[i:i + step], args.n, seed=seed,
                             max_trajectories=args.max_trajectories, max_new_tokens=ANSWER_TOKENS)

    if args.compile:  # warm up on the point itself: compiled code is specialised to its shapes
        sample(seed=1)
    else:
        sample_questions(backbone, sampler, ids[:1], questions[:1], 2, seed=1, max_new_tokens=2)  # warm-up
    rates = matmul_rates(device, dtype, 3)
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    rss_start = _rss_gb() if device == "cpu" else torch.cuda.memory_allocated() / 2 ** 30
    cpu_start, start = time.process_time(), time.perf_counter()
    sample(seed=0)
    if device == "cuda":
        torch.cuda.synchronize()
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
    peak = (torch.cuda.max_memory_allocated() / 2 ** 30 if device == "cuda"
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 2 ** 30)
    rates += matmul_rates(device, dtype, 3)
    bound = flop_bound(backbone, questions, args.n, args.prefill, ANSWER_TOKENS)
    return {"seconds": seconds, "cpu_seconds": cpu_seconds, "trajectories": len(questions) * args.n, "traj_per_s": len(questions) * args.n / seconds,
            "peak_gb": peak, "start_gb": rss_start, "flops": bound["total"], "prompt_tokens": bound["prompt_tokens"],
            "rate_at_point": statistics.median(rates), "threads": torch.get_num_threads()}


# ---------------------------------------------------------------------- driver
def _point(args, backbone: str, setup: str, n: int, questions: int, max_traj: int, pythonpath: str,
           batch: int | None = None, prompts: str | None = None) -> dict | str:
    sampler, prefill = SETUPS[setup]
    cmd = [sys.executable, __file__, "--point", "--backbone", backbone, "--prompts", prompts or args.prompts, "--sampler", sampler,
           "--prefill", prefill, "--n", str(n), "--questions", str(questions), "--data", args.data, "--device",
           args.device, "--dtype", args.dtype, "--max_trajectories", str(max_traj)] + (["--compile"] if args.compile else [])
    cmd += ["--batch_questions", str(batch)] if batch else []
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false", "PYTHONPATH": pythonpath}
    out = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if out.returncode != 0:
        return "failed: " + out.stderr.strip().splitlines()[-1][-300:] if out.stderr.strip() else "failed"
    return json.loads(out.stdout.strip().splitlines()[-1])


HEADER = (f"{'point':<58} {'traj/s':>7} {'cpu-s':>7} {'peak GB':>7} {'+GB':>6} {'bound/s':>7} {'of bound':>8} "
          f"{'rate@pt':>7} {'of b@pt':>7} {'of b cpu':>8}")


def _fraction(value: float) -> str:
    return f"{value:>7.1%}" if value <= 1.0 else "meas.err"


def _row(label: str, r: dict | str, rate: float) -> str:
    if isinstance(r, str):
        return f"{label} {r}"
    bound = r["trajectories"] / (r["flops"] / (rate * 1e9))
    local = r["trajectories"] / (r["flops"] / (r["rate_at_point"] * 1e9))
    # the bound's time over the CPU time per thread: insensitive to time the process waited for a core
    cpu = (r["flops"] / (rate * 1e9)) / (r["cpu_seconds"] / r.get("threads", 1)) if r["cpu_seconds"] > 0 else float("nan")
    return (f"{label} {r['traj_per_s']:>7.2f} {r['cpu_seconds']:>7.2f} {r['peak_gb']:>7.2f} {r['peak_gb'] - r['start_gb']:>6.2f} "
            f"{bound:>7.2f} {_fraction(r['traj_per_s'] / bound):>8} {r['rate_at_point']:>7.1f} "
            f"{_fraction(r['traj_per_s'] / local):>7} {_fraction(cpu):>8}")


def _baseline_tree(ref: str) -> str:
    root = tempfile.mkdtemp(prefix="latentlit_baseline_")
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", ref], capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", root], input=archive, check=True)
    return root


def main() -> None:
    parser = ScriptParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "data"))
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    parser.add_argument("--quick", action="store_true",
                        help="GPT-2-small-sized model only: N = 8 on 8 questions and N = 64 on 2 questions, "
                             "AGN shared and MC-dropout per-sample")
    parser.add_argument("--real", action="store_true",
                        help="points shaped like real runs: 64 questions in the predictor's question batches, both "
                             "samplers, GPT-2-small-sized at the predictor's defaults and the quickstart at its configs'")
    parser.add_argument("--ns", default=None, help="comma-separated N (default 1,8,64; cuda: 1,8,64,256)")
    parser.add_argument("--questions", type=int, default=8)
    parser.add_argument("--backbones", default="gpt2-small", help="comma-separated: gpt2-small,quickstart")
    parser.add_argument("--prompts", default="gsm_test", choices=["gsm_test", "synthetic"])
    parser.add_argument("--setups", default="agn:shared,dropout:per_sample", help=f"comma-separated of {list(SETUPS)}")
    parser.add_argument("--max_trajectories", type=int, default=64, help="rows run at once (chunk size)")
    parser.add_argument("--memory", action="store_true",
                        help="instead: AGN shared at N = 64 and N = 1024 with max_trajectories 1024, the predictor's "
                             "default, so all N of a question run at once (peak memory; the copying baseline of "
                             "--compare needs ~13 GB at N = 1024)")
    parser.add_argument("--memory_questions", type=int, default=8, help="questions of the N = 64 memory point")
    parser.add_argument("--memory_questions_1024", type=int, default=8,
                        help="questions of the N = 1024 memory point (each runs alone: its peak is one question's)")
    parser.add_argument("--compare", action="store_true", help="run every point with --baseline too, back to back")
    parser.add_argument("--baseline", default=BASELINE_REF, help="git ref of the baseline for --compare")
    parser.add_argument("--compile", action="store_true",
                        help="torch.compile the transformer (dynamic shapes); the point then runs once untimed first")
    parser.add_argument("--point", action="store_true", help=argparse.SUPPRESS)
    for name in ("backbone", "sampler", "prefill"):
        parser.add_argument(f"--{name}", help=argparse.SUPPRESS)
    parser.add_argument("--n", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--batch_questions", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.point:
        print(json.dumps(run_point(args)))
        return

    dtype = getattr(torch, args.dtype)
    default_ns = "1,8,64,256" if args.device == "cuda" else "1,8,64"
    ns = [int(x) for x in (args.ns or default_ns).split(",")]
    points = []  # (backbone, setup, N, questions, max_trajectories[, questions per batch])
    if args.memory:
        points = [("gpt2-small", "agn:shared", n, q, 1024) for n, q in ((64, args.memory_questions),
                                                                         (1024, args.memory_questions_1024))]
    elif args.real:
        for setup in ("agn:shared", "dropout:per_sample"):
            points += [("gpt2-small", setup, 16, 64, 1024, 16), ("quickstart", setup, 64, 64, 2048, 32, "synthetic")]
    elif args.quick:
        for setup in ("agn:shared", "dropout:per_sample"):
            points += [("gpt2-small", setup, 8, 8, args.max_trajectories), ("gpt2-small", setup, 64, 2, args.max_trajectories)]
    else:
        for backbone in args.backbones.split(","):
            for n in ns:
                for setup in args.setups.split(","):
                    points.append((backbone, setup, n, args.questions, args.max_trajectories))

    ours = os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])
    base = _baseline_tree(args.baseline) if args.compare else None
    before = matmul_rates(args.device, dtype, 5)
    print(f"device {args.device}, dtype {args.dtype}, threads {torch.get_num_threads()}, prompts {args.prompts}"
          + (f", baseline {args.baseline[:10]} (in {base})" if base else ""), flush=True)
    print(HEADER)
    results = []
    for i, (backbone, setup, n, questions, max_traj, *batch) in enumerate(points):
        runs = [("new", ours)] + ([("baseline", base)] if base else [])
        if base and i % 2:  # alternate the order, so neither side always runs on a warmer machine
            runs.reverse()
        for tag, path in runs:
            r = _point(args, backbone, setup, n, questions, max_traj, path, *batch)
            label = (f"{backbone} {setup} N={n} q={questions}" + (f"/{batch[0]}" if batch else "") + f" chunk={max_traj}"
                     + (f" [{tag}]" if base else ""))
            results.append((label, r))
            print(_row(f"{label:<58}", r, statistics.median(before)), flush=True)
    after = matmul_rates(args.device, dtype, 5)
    rates = before + after
    rate = statistics.median(rates)
    unit = "GFLOP/s"
    print(f"\n{args.dtype} matmul rate: median {rate:.1f} {unit} over {len(rates)} measurements "
          f"(before the points {min(before):.1f}-{max(before):.1f}, after {min(after):.1f}-{max(after):.1f}; "
          f"spread {100 * (max(rates) - min(rates)) / rate:.0f}% of the median)")
    if (max(rates) - min(rates)) / rate > 0.2:
        print("warning: the matmul rate varied by more than 20%: the machine is busy, bounds and fractions are rough")
    print("\nFractions against that median rate (the rows above used the rate before the points):")
    print(HEADER)
    for label, r in results:
        print(_row(f"{label:<58}", r, rate))
    print("\ncpu-s: CPU seconds of the timed run (all threads). peak GB: max RSS of the point's process (CUDA: max "
          "allocated); +GB: above the memory held before the timed run (model, tokenizer, warm-up). bound/s: "
          "trajectories per second at the FLOP bound of the point's prefill mode (shared: prompt once per question; "
          f"per_sample: once per trajectory; real tokens only), {ANSWER_TOKENS} answer tokens, {ANSWER_TOKENS - 1} of "
          "them fed back; of bound: traj/s over bound/s. rate@pt: matmul GFLOP/s measured in the point's process just "
          "before and after it, and of b@pt the fraction against that rate. of b cpu: the bound's time over the CPU "
          "seconds per thread (on a busy machine this leaves out the time the point waited for a core; with several "
          "threads it is only as good as their load balance). meas.err: a fraction above 100%, i.e. the "
          "rate was measured lower than the machine ran the point (a busy machine), not a result.")


if __name__ == "__main__":
    run(main)
