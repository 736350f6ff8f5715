"""Throughput of adaptive N against fixed N (target: trajectories/s at least 0.8x fixed-N's).

Samples the first ``--questions`` synthetic test problems with the quickstart MC-dropout sampler
of ``configs/quickstart/predict_dropout.yaml`` (N_max = 64), in question batches of
``--batch-size`` as ``latentlit predict`` does, once with fixed N and per adaptive rule in two
modes, back to back in one process, and prints trajectories/s of each, the ratio to fixed N, the
trajectories run and the wall time. Only sampling is timed (the greedy pass and records are the
same work in both modes). Modes: ``rounds``, each batch's questions drawn in rounds until all
settle (late rounds hold few questions; latentlit before continuous batching), and ``continuous``,
one :class:`~latentlit.search.adaptive.AdaptivePool` of ``--max-trajectories`` rows fed batch by
batch, as ``latentlit predict`` runs a live adaptive rule now.

Each adaptive rule is also checked against the fixed run: every drawn trajectory's text must
equal the fixed run's trajectory of the same index (the script fails otherwise).

Usage::

    python scripts/bench_adaptive.py [--questions 128] [--batch-size 32 128] [--rules exact beta:0.95]
"""

from __future__ import annotations

import time

import torch

from latentlit.cli.scripts import ScriptParser, run
from latentlit.models.checkpoints import load_backbone


def main() -> None:
    parser = ScriptParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--questions", type=int, default=128)
    parser.add_argument("--batch-size", type=int, nargs="+", default=[32, 128],
                        help="questions per predict batch (each value is its own point)")
    parser.add_argument("--rules", nargs="+", default=["exact", "beta:0.95", "window:4"], help="rule[:threshold]")
    parser.add_argument("--round-size", type=int, default=4)
    parser.add_argument("--n-max", type=int, default=64)
    parser.add_argument("--max-trajectories", type=int, default=2048)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    from latentlit.aggregation.stopping import StoppingRule
    from latentlit.data.answers import extract_answer
    from latentlit.data.sources import SyntheticProblems
    from latentlit.sampling import MCDropout
    from latentlit.search.adaptive import AdaptivePool, sample_adaptive
    from latentlit.search.nway import sample_questions

    backbone = load_backbone("quickstart").to(args.device).eval()
    sampler = MCDropout(p=0.05, targets=["*.attn.resid_dropout", "*.mlp.dropout", "transformer.drop"],
                        mask_scope="trajectory", prefill="per_sample")
    sampler.bind(backbone)
    fmt = backbone.latent_config.answer_format
    problems = SyntheticProblems(split="test", limit=args.questions).load()
    rules = []
    for text in args.rules:
        name, _, t = text.partition(":")
        rules.append(StoppingRule(name, None if not t else (int(t) if name == "window" else float(t))))
    print(f"quickstart MC-dropout (p=0.05, per-sample prefill), {len(problems)} test questions, N_max={args.n_max}, "
          f"round size {args.round_size}, max_trajectories {args.max_trajectories}, {torch.get_num_threads()} threads")
    print(f"{'batch':>5} {'mode':<24} {'trajectories':>12} {'seconds':>8} {'traj/s':>8} {'vs fixed':>8}")
    with torch.no_grad():
        for batch_size in args.batch_size:
            batches = [problems[i:i + batch_size] for i in range(0, len(problems), batch_size)]
            fixed_texts, start = {}, time.perf_counter()
            for batch in batches:
                out = sample_questions(backbone, sampler, [p.id for p in batch], [p.question for p in batch], args.n_max, 0,
                                       max_trajectories=args.max_trajectories, max_new_tokens=6)
                fixed_texts.update({p.id: s.texts for p, s in zip(batch, out)})
            fixed_s = time.perf_counter() - start
            fixed_rate = len(problems) * args.n_max / fixed_s
            print(f"{batch_size:>5} {'fixed':<24} {len(problems) * args.n_max:>12} {fixed_s:>8.2f} {fixed_rate:>8.1f} {1:>8.2f}")
            for rule in rules:
                for mode in ("rounds", "continuous"):
                    used, start, drawn = 0, time.perf_counter(), {}
                    if mode == "rounds":
                        for batch in batches:
                            out = sample_adaptive(backbone, sampler, [p.id for p in batch], [p.question for p in batch],
                                                  n_max=args.n_max, seed=0, rule=rule, round_size=args.round_size,
                                                  parse=lambda t: extract_answer(t, fmt),
                                                  max_trajectories=args.max_trajectories, max_new_tokens=6)
                            drawn.update({p.id: d for p, d in zip(batch, out)})
                    else:
                        pool = AdaptivePool(backbone, sampler, n_max=args.n_max, seed=0, rule=rule,
                                            round_size=args.round_size, parse=lambda t: extract_answer(t, fmt),
                                            rows=args.max_trajectories, max_new_tokens=6)
                        for i, batch in enumerate(batches):
                            pool.admit([p.id for p in batch], [p.id for p in batch], [p.question for p in batch])
                            drawn.update(pool.run(drain=i == len(batches) - 1))
                    seconds = time.perf_counter() - start
                    for p in problems:
                        n = len(drawn[p.id].samples.texts)
                        if drawn[p.id].samples.texts != fixed_texts[p.id][:n]:
                            raise SystemExit(f"{p.id}: adaptive trajectories differ from the fixed run's first {n}")
                        used += n
                    rate = used / seconds
                    label = f"{rule.name}@{rule.key} {mode}"
                    print(f"{batch_size:>5} {label:<24} {used:>12} {seconds:>8.2f} {rate:>8.1f} {rate / fixed_rate:>8.2f}")


if __name__ == "__main__":
    run(main)
