"""Sampling throughput and memory benchmark (issue: parallel TTS at predict time).

For N in {1, 8, 64}, three sampler set-ups (AGN with shared prefill, MC-dropout with shared and
with per-sample prefill), two prompt sets (8 real gsm_test questions; 8 synthetic questions) and
two backbones (the shipped quickstart one; a random GPT-2-small-sized one: 12 layers, width 768,
vocab 50257, T = 6, answers fixed at 8 tokens since random weights never stop), it prints
trajectories per second, peak memory, and the FLOP bound of the point with the fraction reached.

FLOP bound: this machine's measured fp32 matmul rate applied to the work that cannot be avoided:
the real prompt tokens prefilled once per question, then N trajectories of T latent steps and A
answer steps (LM head only on answer steps), with attention over the context each token sees.

Each point runs in a fresh subprocess so that peak memory (max RSS, or CUDA max allocated) is its
own. Usage::

    python scripts/bench_sampling.py [--data ../shared/data] [--quick] [--device cpu|cuda]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch

ANSWER_TOKENS = 8
QUESTIONS = 8


def matmul_gflops(device: str, dtype=torch.float32) -> float:
    n = 2048 if device == "cpu" else 8192
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    best = float("inf")
    for _ in range(5):
        if device == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        a @ b
        if device == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t)
    return 2 * n ** 3 / best / 1e9


def build_backbone(name: str, data: Path, device: str):
    from latentlit.models.backbone import LatentBackbone

    if name == "quickstart":
        return LatentBackbone.from_pretrained("quickstart").to(device).eval()
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
    return LatentBackbone(lm, tok, cfg).to(device).eval()


def questions_for(prompts: str, data: Path) -> list[tuple[str, str]]:
    if prompts == "gsm_test":
        from latentlit.data.loaders import load_problems

        problems = load_problems(data / "coconut_format" / "gsm_test.json")[:QUESTIONS]
    else:
        from latentlit.data.sources import SyntheticProblems

        problems = SyntheticProblems("test").load()[:QUESTIONS]
    return [(p.id, p.question) for p in problems]


def flop_bound(backbone, questions: list[str], n: int) -> float:
    """Unavoidable forward FLOPs of one point (see module docstring)."""
    cfg, lm = backbone.latent_config, backbone.lm.config
    d, layers, vocab = lm.hidden_size, lm.num_hidden_layers, lm.vocab_size
    per_token = 2 * sum(p.numel() for name, p in backbone.lm.named_parameters()
                        if "wte" not in name and "wpe" not in name and "lm_head" not in name)
    attn = lambda ctx: 4 * layers * d * ctx  # noqa: E731  (QK^T and AV over ctx positions)
    total = 0.0
    T = cfg.num_latents
    for q in questions:
        length = len(backbone.tokenizer(cfg.prompt_template.format(question=q))["input_ids"])
        total += sum(per_token + attn(i + 1) for i in range(length))
        steps = [length + t for t in range(1, T + 1 + ANSWER_TOKENS)]
        total += n * sum(per_token + attn(c) for c in steps) + n * ANSWER_TOKENS * 2 * d * vocab
    return total


def run_point(args) -> dict:
    from latentlit.sampling import AGN, MCDropout
    from latentlit.sampling.nway import sample_questions

    device = args.device
    backbone = build_backbone(args.backbone, Path(args.data), device)
    items = questions_for(args.prompts, Path(args.data))
    ids, questions = [i for i, _ in items], [q for _, q in items]
    sampler = AGN(sigma=1.0) if args.sampler == "agn" else MCDropout(p=0.1, prefill=args.prefill)
    if args.sampler == "agn":
        sampler.prefill = args.prefill
    budget = args.max_trajectories
    sample_questions(backbone, sampler, ids[:1], questions[:1], 2, seed=1, max_new_tokens=2)  # warm-up
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    sample_questions(backbone, sampler, ids, questions, args.n, seed=0, max_trajectories=budget,
                     max_new_tokens=ANSWER_TOKENS)
    if device == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    peak = (torch.cuda.max_memory_allocated() if device == "cuda"
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024) / 2 ** 30
    return {"seconds": seconds, "traj_per_s": len(questions) * args.n / seconds, "peak_gb": peak,
            "flops": flop_bound(backbone, questions, args.n)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared" / "data"))
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--quick", action="store_true", help="only N=64 on the GPT-2-small-sized model")
    parser.add_argument("--point", action="store_true", help=argparse.SUPPRESS)
    for name in ("backbone", "prompts", "sampler", "prefill"):
        parser.add_argument(f"--{name}", help=argparse.SUPPRESS)
    parser.add_argument("--n", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--max_trajectories", type=int, default=64)
    args = parser.parse_args()
    if args.point:
        print(json.dumps(run_point(args)))
        return
    rate = matmul_gflops(args.device)
    print(f"device {args.device}, threads {torch.get_num_threads()}, fp32 matmul {rate:.0f} GFLOP/s, "
          f"max_trajectories {args.max_trajectories}")
    print(f"{'backbone':<11} {'prompts':<9} {'sampler':<8} {'prefill':<10} {'N':>3} {'traj/s':>8} {'peak GB':>8} "
          f"{'bound/s':>8} {'of bound':>8}")
    backbones = ["gpt2-small"] if args.quick else ["quickstart", "gpt2-small"]
    ns = [64] if args.quick else [1, 8, 64]
    setups = [("agn", "shared"), ("dropout", "shared"), ("dropout", "per_sample")]
    for backbone in backbones:
        for prompts in ("gsm_test", "synthetic"):
            for n in ns:
                for sampler, prefill in setups:
                    cmd = [sys.executable, __file__, "--point", "--backbone", backbone, "--prompts", prompts, "--sampler",
                           sampler, "--prefill", prefill, "--n", str(n), "--data", args.data, "--device", args.device,
                           "--max_trajectories", str(args.max_trajectories)]
                    out = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "TOKENIZERS_PARALLELISM": "false"})
                    if out.returncode != 0:
                        print(f"{backbone} {prompts} {sampler} {prefill} N={n}: failed\n{out.stderr[-2000:]}")
                        continue
                    r = json.loads(out.stdout.strip().splitlines()[-1])
                    bound = QUESTIONS * n / (r["flops"] / (rate * 1e9))
                    print(f"{backbone:<11} {prompts:<9} {sampler:<8} {prefill:<10} {n:>3} {r['traj_per_s']:>8.1f} "
                          f"{r['peak_gb']:>8.2f} {bound:>8.1f} {r['traj_per_s'] / bound:>8.1%}", flush=True)


if __name__ == "__main__":
    main()
