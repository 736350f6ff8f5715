"""Verifier-guided latent refinement against best-of-N at equal compute, on a finished run's saved latents.

    python scripts/refine_study.py RUN_DIR [--latent_rm quickstart] [--k 4] [--steps 0,3,10] [--lr 0.05]
                                   [--proximity 0.0] [--limit 500]

For each question: the first k saved trajectories are scored by the LatentRM, the best is refined by
gradient steps on its latents (latentlit.search.refine) and decoded again. Prints accuracy and forward
FLOPs per question (sampling the k trajectories + RM scoring + refinement + the new decode) beside
best-of-N@k' of the same run at every k' (docs/results.md#verifier-guided-latent-refinement).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from latentlit.cli.scripts import ScriptParser, run
from latentlit.data.answers import answers_match, extract_answer
from latentlit.evaluation.compute import CostModel, backbone_shape, rm_shape
from latentlit.models.checkpoints import load_backbone
from latentlit.models.ensemble import load_latent_rm
from latentlit.runs.files import read_latents
from latentlit.runs.records import read_records
from latentlit.search.refine import decode_from_latents, refine_latents, refinement_flops


def main(argv: list[str] | None = None) -> int:
    parser = ScriptParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", help="output directory of latentlit predict made with --save_latents")
    parser.add_argument("--latent_rm", default="quickstart")
    parser.add_argument("--k", type=int, default=4, help="trajectories per question before refinement")
    parser.add_argument("--steps", default="0,3,10", help="refinement steps to report (comma-separated)")
    parser.add_argument("--lr", type=float, default=0.05, help="step size in units of the latents' RMS size")
    parser.add_argument("--proximity", type=float, default=0.0, help="weight of the pull back to the sampled latents")
    parser.add_argument("--limit", type=int, default=None)
    args = parser.parse_args(argv)
    run_dir = Path(args.run_dir)
    settings = json.loads((run_dir / "run.json").read_text())
    records = {r["id"]: r for r in read_records(run_dir)}
    latents = {}
    for path in sorted((run_dir / "latents").glob("*.safetensors")):
        latents.update(read_latents(path))
    if not latents:
        raise FileNotFoundError(f"{run_dir} holds no saved latents: run predict with --save_latents")
    ids = [i for i in records if i in latents][: args.limit]
    backbone = load_backbone(settings["backbone"]).eval()
    rm = load_latent_rm(args.latent_rm)
    fmt = settings.get("answer_format") or backbone.latent_config.answer_format
    steps_list = [int(x) for x in args.steps.split(",")]
    questions = [records[i]["question"] for i in ids]
    lat = torch.stack([latents[i][: args.k] for i in ids])  # (Q, k, T, d)
    mask = torch.stack([torch.arange(lat.shape[2])[None] < torch.tensor(records[i]["compute"]["latents"][: args.k])[:, None]
                        for i in ids])
    texts = [records[i]["texts"][: args.k] for i in ids]
    scores = rm.score_trajectories(questions, lat, mask, texts if rm.read_answer else None)
    top = scores.argmax(1)
    best, best_mask = lat[torch.arange(len(ids)), top], mask[torch.arange(len(ids)), top]
    cost = CostModel.from_description(json.loads((run_dir / "metrics.json").read_text())["compute"]["models"])
    base = sum(cost.spent("samples+rm", records[i], [args.k])[0].flops for i in ids) / len(ids)
    prompt_rm = [int(x) for x in rm.encode_prompts(questions)[1].sum(1).tolist()]
    print(f"{len(ids)} questions, best of the first {args.k} trajectories by {args.latent_rm}, then refined:")
    print("| refinement steps | mean RM score before -> after | accuracy | forward FLOPs per question (M) |")
    print("| --- | --- | --- | --- |")
    for steps in steps_list:
        refined, traj = refine_latents(rm, questions, best, best_mask, steps=steps, lr=args.lr, proximity=args.proximity)
        out = decode_from_latents(backbone, questions, refined, best_mask,
                                  max_new_tokens=int(settings.get("max_new_tokens", 8)))
        acc = sum(answers_match(extract_answer(t, fmt), records[i]["gold"]) for t, i in zip(out, ids)) / len(ids)
        shape = rm_shape(rm)
        extra = sum(refinement_flops(shape, p, int(m.sum()), steps) for p, m in zip(prompt_rm, best_mask)) / len(ids)
        # the new decode: prompt, the latents, the answer (as one sampled trajectory costs)
        decode = sum(cost.samples(records[i], 1).flops for i in ids) / len(ids)
        print(f"| {steps} | {traj[:, 0].mean():.3f} -> {traj[:, -1].mean():.3f} | {100 * acc:.1f} | "
              f"{(base + extra + decode) / 1e6:.0f} |")
    rows = json.loads((run_dir / "metrics.json").read_text())["compute"]["rows"]
    print("best-of-N of the same run: " + ", ".join(f"@{r['k']} {100 * r['accuracy']:.1f} ({r['flops'] / 1e6:.0f} M)"
                                                   for r in rows if r["method"] == "best_of_n"))
    return 0


if __name__ == "__main__":
    run(main)
