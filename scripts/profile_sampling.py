"""Where the time of a sampling point goes (torch.profiler), by phase and by kind of work.

Runs one point of ``bench_sampling.py`` (same model, prompts and sampler settings) under
``torch.profiler`` and prints: time per phase (prefill, latent steps, answer), time by kind
(matmuls, attention, keyed dropout masks inside the MC-dropout hooks, KV-cache writes, copies,
other elementwise work, the rest), the top operators, and the share of prefill token positions
that were padding. Fractions of time are meaningful on a busy machine; absolute times are not.

Run it against another version of latentlit with ``PYTHONPATH=<that tree>`` (e.g. the tree
``bench_sampling.py --compare`` extracts) to compare breakdowns.

Usage::

    python scripts/profile_sampling.py --sampler dropout --prefill per_sample --n 8 --questions 8
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import defaultdict
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile, record_function

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_sampling as bench  # noqa: E402

from latentlit.cli.scripts import ScriptParser, run

KINDS = {
    "matmul": ("aten::addmm", "aten::mm", "aten::bmm", "aten::baddbmm"),
    "attention (sdpa kernels, softmax)": ("aten::_scaled_dot_product_flash_attention_for_cpu",
                                          "aten::_scaled_dot_product_efficient_attention", "aten::_softmax"),
    "gelu / layer norm": ("aten::gelu", "aten::native_layer_norm"),
    "copies (copy_, index, cat, fill)": ("aten::copy_", "aten::index", "aten::_index_put_impl_", "aten::cat",
                                         "aten::fill_", "aten::index_select"),
}


def _wrap(owner, name: str, label: str) -> None:
    original = getattr(owner, name)

    def wrapped(*args, **kwargs):
        with record_function(label):
            return original(*args, **kwargs)

    setattr(owner, name, wrapped)


def main() -> None:
    parser = ScriptParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(bench.ROOT.parent / "shared" / "data"))
    parser.add_argument("--backbone", default="gpt2-small")
    parser.add_argument("--prompts", default="gsm_test")
    parser.add_argument("--sampler", default="dropout", choices=["dropout", "agn"])
    parser.add_argument("--prefill", default="per_sample", choices=["per_sample", "shared"])
    parser.add_argument("--n", type=int, default=8)
    parser.add_argument("--questions", type=int, default=8)
    parser.add_argument("--max_trajectories", type=int, default=64)
    parser.add_argument("--top", type=int, default=15)
    args = parser.parse_args()

    import latentlit
    from latentlit.models import cache as cache_module
    from latentlit.sampling import AGN, MCDropout
    from latentlit.search.nway import sample_questions

    backbone = bench.build_backbone(args.backbone, Path(args.data), "cpu", torch.float32)
    items = bench.questions_for(args.prompts, Path(args.data), args.questions)
    ids, questions = [i for i, _ in items], [q for _, q in items]
    # hooks and phases are wrapped before the sampler binds, so both old and new code are timed
    original_hook = MCDropout._make_hook

    def make_hook(self, index):
        hook = original_hook(self, index)

        def timed(*a):
            with record_function("latentlit: MC-dropout hook (keyed mask)"):
                return hook(*a)
        return timed

    MCDropout._make_hook = make_hook
    _wrap(cache_module.PreallocatedLayer, "update", "latentlit: KV cache write")
    for name, label in (("prefill", "phase: prefill"), ("latent_step", "phase: latent step"),
                        ("decode_answer", "phase: answer")):
        _wrap(backbone, name, label)
    sampler = AGN(sigma=0.6, prefill=args.prefill) if args.sampler == "agn" else MCDropout(p=0.2, prefill=args.prefill)
    sample_questions(backbone, sampler, ids[:1], questions[:1], 2, seed=1, max_new_tokens=2)  # warm-up

    real = sum(len(r) for r in backbone.tokenizer([backbone.latent_config.prompt_template.format(question=q)
                                                   for q in questions])["input_ids"])
    real *= args.n if args.prefill == "per_sample" else 1
    fed = len(questions) * args.n * (backbone.latent_config.num_latents + bench.ANSWER_TOKENS)
    start_tokens = backbone.forward_tokens
    start = time.perf_counter()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        sample_questions(backbone, sampler, ids, questions, args.n, seed=0, max_trajectories=args.max_trajectories,
                         max_new_tokens=bench.ANSWER_TOKENS)
    seconds = time.perf_counter() - start
    prefill_positions = backbone.forward_tokens - start_tokens - fed

    events = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in events)
    by_key = {e.key: e for e in events}
    print(f"latentlit from {Path(latentlit.__file__).parent}; {args.backbone}, {args.sampler} {args.prefill}, "
          f"N={args.n}, {len(questions)} {args.prompts} questions, chunk {args.max_trajectories}, "
          f"threads {torch.get_num_threads()}: {seconds:.1f} s profiled ({total / 1e6:.1f} s of op time)")
    print("\nby phase (inclusive):")
    for label in ("phase: prefill", "phase: latent step", "phase: answer"):
        if label in by_key:
            e = by_key[label]
            print(f"  {label:<44} {e.cpu_time_total / 1e6:8.2f} s {e.cpu_time_total / total:7.1%}  ({e.count} calls)")
    print("\nby kind (operator self time; hooks and cache writes inclusive):")
    shown = 0.0
    for kind, ops in KINDS.items():
        t = sum(by_key[o].self_cpu_time_total for o in ops if o in by_key)
        shown += t
        print(f"  {kind:<44} {t / 1e6:8.2f} s {t / total:7.1%}")
    for label in ("latentlit: MC-dropout hook (keyed mask)", "latentlit: KV cache write"):
        if label in by_key:
            e = by_key[label]
            print(f"  {label:<44} {e.cpu_time_total / 1e6:8.2f} s {e.cpu_time_total / total:7.1%}  ({e.count} calls)")
    print(f"  {'everything else':<44} {(total - shown) / 1e6:8.2f} s {(total - shown) / total:7.1%}  "
          "(includes the hooks' and cache writes' own ops)")
    print(f"\nprefill token positions computed: {prefill_positions}, real prompt tokens: {real} "
          f"(padding {1 - real / max(prefill_positions, 1):.1%})")
    rows = defaultdict(float)
    for e in events:
        if e.key.startswith("aten::"):
            rows[e.key] += e.self_cpu_time_total
    print(f"\ntop {args.top} operators by self time:")
    for key, t in sorted(rows.items(), key=lambda kv: -kv[1])[: args.top]:
        print(f"  {key:<56} {t / 1e6:8.2f} s {t / total:7.1%}")


if __name__ == "__main__":
    run(main)
