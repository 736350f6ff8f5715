"""LatentRM scoring benchmark: latent beam search and best-of-N scoring, prompt read once against repeated.

Beam search scores every candidate prefix at every latent step. Recomputing the RM over
``prompt + h_1..h_t`` costs T passes over the prompt per candidate; the cached scorer
(``LatentRMStepScorer``) encodes each prompt once and feeds one latent per candidate per step, its
candidates reading the prompt's keys/values in place (``share_prompt``; before: a copy per
candidate). All give the same beams (tests/models/test_latent_rm.py); this prints their speed.

Best-of-N scores N finished trajectories per question (``LatentRM.score_groups``): the prompt once
and each trajectory's T latents over it, against the prompt repeated for each trajectory (before).
It prints forward positions, FLOPs (``latentlit.evaluation.compute``), wall time and the largest
score difference.

Set-up: the random GPT-2-small-sized backbone of ``bench_sampling.py`` (12 layers, width 768,
T = 6, 8 answer tokens), a LatentRM initialised from it (12 layers, as the released COCONUT
LatentRM), real gsm_test questions, AGN, N = B x K trajectories per question.

    python scripts/bench_beam_search.py [--data ../shared/data] [--questions 4] [--beam 4] [--k 4] [--n 64]\n        [--device cpu] [--dtype float32]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_sampling import ANSWER_TOKENS, build_backbone, questions_for  # noqa: E402

from latentlit.cli.scripts import ScriptParser, run
from latentlit.evaluation.compute import rm_shape  # noqa: E402
from latentlit.models.latent_rm import LatentRM, LatentRMStepScorer  # noqa: E402
from latentlit.sampling import AGN  # noqa: E402
from latentlit.search.beam_search import HistoryScorer, latent_beam_search  # noqa: E402


def main() -> None:
    parser = ScriptParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data")
    parser.add_argument("--questions", type=int, default=4)
    parser.add_argument("--beam", type=int, default=4)
    parser.add_argument("--k", type=int, default=4)
    parser.add_argument("--n", type=int, default=64, help="best-of-N: trajectories scored per question")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    args = parser.parse_args()
    if min(args.questions, args.beam, args.k, args.n) < 1:
        parser.error("--questions, --beam, --k and --n must be >= 1")
    torch.set_grad_enabled(False)
    backbone = build_backbone("gpt2-small", args.data, args.device, getattr(torch, args.dtype))
    rm = LatentRM.from_backbone(backbone).to(args.device).eval()  # the RM scores in float32 (latent_rm.py)
    pairs = questions_for("gsm_test", args.data, args.questions)
    ids, questions = [i for i, _ in pairs], [q for _, q in pairs]
    prompt_ids, prompt_mask = rm.encode_prompts(questions)
    t = backbone.latent_config.num_latents

    def full(owners, prefix):
        return rm(prompt_ids[owners], prompt_mask[owners], prefix).sum(-1)

    n = args.beam * args.k
    print(f"{len(questions)} gsm_test questions (mean RM prompt {prompt_mask.sum(1).float().mean():.0f} tokens), T={t}, "
          f"12-layer RM, backbone {args.dtype}, {args.device}, {torch.get_num_threads()} threads")
    print(f"beam search: B={args.beam} x K={args.k} = N {n}, {ANSWER_TOKENS} answer tokens")
    results = {}
    for name, make in (("cached RM, prompt shared", lambda: LatentRMStepScorer(rm, questions)),
                       ("cached RM, prompt copied (before)", lambda: LatentRMStepScorer(rm, questions, share_prompt=False)),
                       ("full recompute (HistoryScorer)", lambda: HistoryScorer(full))):
        start = time.perf_counter()
        out = latent_beam_search(backbone, AGN(sigma=1.0, relative=True), ids, questions, make(), beam_width=args.beam,
                                 candidates=args.k, max_new_tokens=ANSWER_TOKENS)
        seconds = time.perf_counter() - start
        results[name] = (seconds, [r.latents for r in out])
        print(f"  {name:34s} {seconds:7.2f} s  {len(questions) * n / seconds:6.2f} trajectories/s")
    (a, la), *others = results.values()
    same = all(torch.allclose(x, y, atol=1e-4) for _, lb in others for x, y in zip(la, lb))
    print(f"  speed-up over copied {others[0][0] / a:.2f}x, over recompute {others[1][0] / a:.1f}x; "
          f"same winning trajectories: {same}")
    best_of_n(rm, questions, args.n, t, backbone.hidden_size)


def best_of_n(rm, questions: list[str], n: int, t: int, d: int) -> None:
    """Score N random T-step trajectories per question with the prompt read once and repeated; print the cost."""
    shape, lengths = rm_shape(rm), rm.encode_prompts(questions)[1].sum(1).tolist()
    latents = torch.randn(len(questions), n, t, d, generator=torch.Generator().manual_seed(0)).to(rm.device)
    latent_positions = len(questions) * n * t
    print(f"best-of-N scoring: N={n} trajectories of T={t} latents per question "
          f"(latents alone: {latent_positions} positions, {sum(n * shape.pass_flops(t) for _ in lengths) / 1e9:.1f} GFLOP)")
    scores = {}
    for name, share in (("prompt once", True), ("prompt per trajectory (before)", False)):
        rm.score_groups(questions[:1], latents[:1, :2], share_prompt=share)  # warm-up
        start = time.perf_counter()
        scores[name] = rm.score_groups(questions, latents, share_prompt=share)
        seconds = time.perf_counter() - start
        positions = sum(lengths) + latent_positions if share else sum(n * (p + t) for p in lengths)
        flops = sum(shape.pass_flops(p) + n * shape.pass_flops(t, past=p) if share else n * shape.pass_flops(p + t)
                    for p in lengths)
        print(f"  {name:34s} {seconds:7.2f} s  {positions:7d} positions ({positions / latent_positions:.2f}x the latents'), "
              f"{flops / 1e9:8.1f} GFLOP")
    a, b = scores.values()
    print(f"  largest score difference {float((a - b).abs().max()):.2e}")


if __name__ == "__main__":
    run(main)
