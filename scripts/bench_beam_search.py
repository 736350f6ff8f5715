"""Latent beam search benchmark: LatentRM scoring with a KV cache against full recomputation.

Beam search scores every candidate prefix at every latent step. Recomputing the RM over
``prompt + h_1..h_t`` costs T passes over the prompt per candidate; the cached scorer
(``LatentRMStepScorer``) encodes each prompt once and feeds one latent per candidate per step.
Both give the same beams (tested in tests/models/test_latent_rm.py); this prints their speed.

Set-up: the random GPT-2-small-sized backbone of ``bench_sampling.py`` (12 layers, width 768,
T = 6, 8 answer tokens), a LatentRM initialised from it (12 layers, as the released COCONUT
LatentRM), real gsm_test questions, AGN, N = B x K trajectories per question.

    python scripts/bench_beam_search.py [--data ../shared/data] [--questions 4] [--beam 4] [--k 4] [--device cpu]
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
from latentlit.models.latent_rm import LatentRM, LatentRMStepScorer  # noqa: E402
from latentlit.sampling import AGN  # noqa: E402
from latentlit.search.beam_search import HistoryScorer, latent_beam_search  # noqa: E402


def main() -> None:
    parser = ScriptParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data")
    parser.add_argument("--questions", type=int, default=4)
    parser.add_argument("--beam", type=int, default=4)
    parser.add_argument("--k", type=int, default=4)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    if min(args.questions, args.beam, args.k) < 1:
        parser.error("--questions, --beam and --k must be >= 1")
    torch.set_grad_enabled(False)
    backbone = build_backbone("gpt2-small", args.data, args.device)
    rm = LatentRM.from_backbone(backbone).to(args.device).eval()
    pairs = questions_for("gsm_test", args.data)[: args.questions]
    ids, questions = [i for i, _ in pairs], [q for _, q in pairs]
    prompt_ids, prompt_mask = rm.encode_prompts(questions)

    def full(owners, prefix):
        return rm(prompt_ids[owners], prompt_mask[owners], prefix).sum(-1)

    n = args.beam * args.k
    print(f"beam search: {len(questions)} gsm_test questions (mean prompt {prompt_mask.sum(1).float().mean():.0f} tokens), "
          f"B={args.beam} x K={args.k} = N {n}, T={backbone.latent_config.num_latents}, {ANSWER_TOKENS} answer tokens, "
          f"12-layer RM, {args.device}")
    results = {}
    for name, make in (("cached RM (LatentRMStepScorer)", lambda: LatentRMStepScorer(rm, questions)),
                       ("full recompute (HistoryScorer)", lambda: HistoryScorer(full))):
        start = time.perf_counter()
        out = latent_beam_search(backbone, AGN(sigma=1.0, relative=True), ids, questions, make(), beam_width=args.beam,
                                 candidates=args.k, max_new_tokens=ANSWER_TOKENS)
        seconds = time.perf_counter() - start
        results[name] = (seconds, [r.latents for r in out])
        print(f"  {name:32s} {seconds:7.2f} s  {len(questions) * n / seconds:6.2f} trajectories/s")
    (a, la), (b, lb) = results.values()
    same = all(torch.allclose(x, y, atol=1e-4) for x, y in zip(la, lb))
    print(f"  speed-up {b / a:.1f}x; same winning trajectories: {same}")


if __name__ == "__main__":
    run(main)
