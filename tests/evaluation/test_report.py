"""The report built from records: consistency guard, printed table, adaptive points, figures,
and the side-by-side comparison of runs (``scripts/compare_runs.py``)."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from latentlit.aggregation import registry
from latentlit.aggregation.registry import question_view
from latentlit.evaluation.compute import CostModel, ModelShape
from latentlit.evaluation.metrics import coverage_ks
from latentlit.evaluation.report import add_report, format_summary, make_figures, write_report
from latentlit.evaluation.values import metric_keys, question_values

N = 8
KS = coverage_ks(N)
AGGS = registry.enabled({"latent_rm": "rm", "beam_width": 2})
REPO = Path(__file__).resolve().parents[2]


def _records(q: int, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    out = []
    for i in range(q):
        gold = "5"
        answers = [rng.choice(["5", "5", "6", "7", None]) for _ in range(N)]
        correct = [a == gold for a in answers]
        r = {"index": i, "id": f"q{i}", "gold": gold, "answers": answers, "correct": correct,
             "greedy": {"answer": answers[0], "correct": correct[0]},
             "rm_scores": [round(rng.gauss(0, 1), 5) for _ in range(N)],
             "beam_search": {"answer": gold, "correct": rng.random() < 0.6},
             "compute": {"prompt": 10, "latents": [3] * N, "answers": [4] * N, "greedy": [3, 4], "rm_prompt": 10,
                         "beam_search": {"width": 2, "candidates": 4, "answers": [4, 4]}}}
        view = question_view(r, 0)
        from latentlit.aggregation import majority_vote

        vote = majority_vote(answers)
        r["vote_share"], r["distinct_answers"] = vote.share, vote.distinct
        for agg in AGGS:
            if agg.choose is not None:
                r[agg.name] = agg.choose(view)
        out.append(r)
    return out


def _summary(records: list[dict]) -> dict:
    keys = metric_keys(KS, N, AGGS)
    values = [question_values(r, KS, AGGS, 0).values for r in records]
    metrics = {k: round(sum(v[k] for v in values) / len(values), 6) for k in keys}
    return {"config": {"n_samples": N, "sampler": {"name": "AGN"}}, "metrics": metrics,
            "counts": {"questions": len(records)}, "trajectories_per_second": 100.0}


def _model() -> CostModel:
    shape = ModelShape(matrix_params=1000, n_layer=2, d_model=8, vocab=20)
    return CostModel(shape, ModelShape(matrix_params=500, n_layer=1, d_model=8, head_params=8), shared_prefill=True)


def test_report_sections_and_consistency_guard():
    records = _records(40)
    summary = add_report(_summary(records), records, ks=KS, aggregators=AGGS, seed=0, cost_model=_model())
    assert {"intervals", "monte_carlo", "estimators", "selective", "compute"} <= set(summary)
    # N = 8: C(8, 4) = 70 subsets, all enumerated
    assert summary["monte_carlo"]["standard_error"] == {}
    methods = {r["method"] for r in summary["compute"]["rows"]}
    assert methods == {"greedy", "coverage", "majority_vote", "random", "best_of_n", "weighted_vote", "beam_search"}
    # a metric that disagrees with its records is an error, not a number
    bad = _summary(records)
    bad["metrics"]["best_of_n@2"] += 0.01
    with pytest.raises(RuntimeError, match="best_of_n@2"):
        add_report(bad, records, ks=KS, aggregators=AGGS, seed=0, cost_model=_model())
    short = _summary(records)
    short["counts"]["questions"] = 41
    with pytest.raises(RuntimeError, match="40 records on disk but the metrics counted 41"):
        add_report(short, records, ks=KS, aggregators=AGGS, seed=0, cost_model=_model())


def test_monte_carlo_error_is_stated_when_subsets_are_sampled():
    records = []
    for r in _records(10):
        r = dict(r)
        r["answers"], r["correct"] = r["answers"] * 4, r["correct"] * 4  # N = 32: C(32, 4) * 4 > 2**17
        r["rm_scores"] = r["rm_scores"] * 4
        records.append(r)
    ks = coverage_ks(32)
    aggs = [registry.get("majority_vote"), registry.get("weighted_vote")]
    keys = metric_keys(ks, 32, aggs)
    values = [question_values(r, ks, aggs, 0) for r in records]
    summary = {"config": {"n_samples": 32, "sampler": {"name": "AGN"}}, "counts": {"questions": 10},
               "metrics": {k: sum(v.values[k] for v in values) / 10 for k in keys}}
    add_report(summary, records, ks=ks, aggregators=aggs, seed=0, cost_model=None)
    se = summary["monte_carlo"]["standard_error"]
    # majority vote@k is exact at every k; the weighted vote enumerates k = 1, 2, 32
    assert set(se) == {"weighted_vote@4", "weighted_vote@8", "weighted_vote@16"}
    assert all(0 < x < 0.02 for x in se.values())
    assert "compute" not in summary


def test_adaptive_points_join_the_compute_table_and_figure_when_present():
    records = _records(20)
    summary = _summary(records)
    summary["adaptive"] = {"leader_safe": {"0": {"accuracy": 0.7, "mean_trajectories": 3.2, "median_trajectories": 3}},
                           "beta": {"0.9": {"accuracy": 0.68, "mean_trajectories": 2.1, "median_trajectories": 2},
                                    "0.99": {"accuracy": 0.7, "mean_trajectories": 2.9, "median_trajectories": 3}}}
    add_report(summary, records, ks=KS, aggregators=AGGS, seed=0, cost_model=_model())
    rows = [r for r in summary["compute"]["rows"] if r["method"].startswith("adaptive:")]
    assert [(r["method"], r["threshold"], r["trajectories"]) for r in rows] == [
        ("adaptive:leader_safe", "0", 3.2), ("adaptive:beta", "0.9", 2.1), ("adaptive:beta", "0.99", 2.9)]
    fig = make_figures(summary)["accuracy_vs_compute"]
    labels = [t.get_text() for t in fig.axes[1].get_legend().get_texts()]
    assert "adaptive N (leader_safe)" in labels and "adaptive N (beta)" in labels
    # absent: no adaptive rows and no failure
    plain = add_report(_summary(records), records, ks=KS, aggregators=AGGS, seed=0, cost_model=_model())
    assert not any(r["method"].startswith("adaptive") for r in plain["compute"]["rows"])


def test_printed_summary_lines(tmp_path, capsys):
    records = _records(30)
    summary = add_report(_summary(records), records, ks=KS, aggregators=AGGS, seed=0, cost_model=_model())
    text = format_summary(summary)
    lines = text.splitlines()
    assert lines[0].split()[:3] == ["k", "coverage", "majority"]
    assert len([x for x in lines if x.strip() and x.split()[0] in {str(k) for k in KS}]) == len(KS)
    m, iv = summary["metrics"], summary["intervals"]
    d = iv["minus_greedy"]["majority_vote@8"]
    assert (f"  majority vote   {100 * m['majority_vote@8']:>6.1f} [{100 * iv['accuracy']['majority_vote@8']['low']:.1f}, "
            f"{100 * iv['accuracy']['majority_vote@8']['high']:.1f}]   {100 * d['diff']:+.1f} "
            f"[{100 * d['low']:+.1f}, {100 * d['high']:+.1f}]") in lines
    assert sum(x.startswith("selective, ") for x in lines) == 3
    written = write_report(summary, tmp_path)
    assert sorted(written) == ["accuracy_vs_compute", "calibration", "risk_coverage", "scaling"]
    assert json.loads((tmp_path / "metrics.json").read_text()) == json.loads(json.dumps(summary))
    assert capsys.readouterr().out == ""  # the caller says the table, when its progress bar has gone


def _compare_script():
    import importlib.util

    spec = importlib.util.spec_from_file_location("compare_runs", REPO / "scripts" / "compare_runs.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main


def test_compare_runs_script(tmp_path, capsys):
    for name, seed in (("run_a", 0), ("run_b", 1)):
        records = _records(25, seed)
        summary = add_report(_summary(records), records, ks=KS, aggregators=AGGS, seed=0, cost_model=_model())
        (tmp_path / name).mkdir()
        (tmp_path / name / "metrics.json").write_text(json.dumps(summary))
    compare = _compare_script()
    assert compare([str(tmp_path / "run_a"), str(tmp_path / "run_b"), "--csv", str(tmp_path / "rows.csv")]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "| | run_a | run_b |"
    a = json.loads((tmp_path / "run_a" / "metrics.json").read_text())
    iv = a["intervals"]["accuracy"]["best_of_n@8"]
    row = next(x for x in lines if x.startswith("| best-of-N@N (%) |"))
    assert row.split(" | ")[1] == f"{100 * a['metrics']['best_of_n@8']:.1f} [{100 * iv['low']:.1f}, {100 * iv['high']:.1f}]"
    assert any(x.startswith("| best-of-N@N - greedy (points) | ") for x in lines)
    assert any(x.startswith("| selective gain at 50% answered, vote (points) |") for x in lines)
    csv_lines = (tmp_path / "rows.csv").read_text().splitlines()
    assert csv_lines[0] == "run,metric,k,value,low,high,minus_greedy,diff_low,diff_high,threshold,trajectories"
    assert len(csv_lines) == 1 + 2 * 7  # greedy, coverage and five aggregators per run
    with pytest.raises(FileNotFoundError, match="nope/metrics.json does not exist"):  # one line from the script
        compare([str(tmp_path / "nope")])


def _run_dir(tmp_path, name: str, summary: dict) -> str:
    (tmp_path / name).mkdir()
    (tmp_path / name / "metrics.json").write_text(json.dumps(summary))
    return str(tmp_path / name)


def test_compare_runs_shows_adaptive_rules_sampler_strength_and_seed(tmp_path, capsys):
    import csv

    records = _records(25)
    fixed = add_report(_summary(records), records, ks=KS, aggregators=AGGS, seed=0, cost_model=_model())
    fixed["config"].update(sampler={"name": "AGN", "sigma": 0.5, "relative": True, "prefill": "shared"}, seed=0,
                           adaptive={"n_max": N, "round_size": 2, "live": False, "rule": None, "threshold": None})
    fixed["adaptive"] = {"beta": {"0.95": {"accuracy": 0.52, "mean_trajectories": 3.5, "median_trajectories": 2}},
                         "exact": {"-": {"accuracy": 0.5, "mean_trajectories": 6.25, "median_trajectories": 6}}}
    # the same run with another sigma and seed: every cell of the methods may coincide, the header may not
    other = json.loads(json.dumps(fixed))
    other["config"]["sampler"]["sigma"], other["config"]["seed"] = 1.0, 3
    # a live adaptive run: its methods are those of N = round size, its rule's result is the adaptive row
    live = json.loads(json.dumps(fixed))
    live["config"].update(n_samples=2, adaptive={"n_max": 64, "round_size": 2, "live": True, "rule": "beta",
                                                 "threshold": 0.95})
    live["metrics"] = {k: v for k, v in live["metrics"].items() if "@" not in k or int(k.split("@")[1]) <= 2}
    live["adaptive"] = {"beta": {"0.95": {"accuracy": 0.508, "mean_trajectories": 13.44, "median_trajectories": 4}}}
    dirs = [_run_dir(tmp_path, n, r) for n, r in (("fixed", fixed), ("other", other), ("live", live))]
    assert _compare_script()([*dirs, "--csv", str(tmp_path / "rows.csv")]) == 0
    lines = capsys.readouterr().out.splitlines()
    cells = {x.split(" | ")[0][2:]: [c.strip(" |") for c in x.split(" | ")[1:]] for x in lines[2:] if x.startswith("| ")}
    assert cells["sampler"] == ["AGN sigma=0.5 relative=True prefill=shared", "AGN sigma=1.0 relative=True prefill=shared",
                                "AGN sigma=0.5 relative=True prefill=shared"]
    assert cells["seed"] == ["0", "3", "0"]
    assert cells["N"] == ["8", "8", "2 (live adaptive run: every question's first 2 samples; budget N_max 64)"]
    assert cells["adaptive beta@0.95 (%, mean trajectories per question)"] == [
        "52.0 (3.50 trajectories, replayed)", "52.0 (3.50 trajectories, replayed)", "50.8 (13.44 trajectories, live)"]
    assert cells["adaptive exact (%, mean trajectories per question)"] == [
        "50.0 (6.25 trajectories, replayed)", "50.0 (6.25 trajectories, replayed)", ""]
    with (tmp_path / "rows.csv").open() as f:
        rows = [r for r in csv.DictReader(f) if r["metric"].startswith("adaptive:")]
    assert [(r["run"], r["metric"], r["threshold"], float(r["value"]), float(r["trajectories"])) for r in rows] == [
        ("fixed", "adaptive:beta", "0.95", 0.52, 3.5), ("fixed", "adaptive:exact", "-", 0.5, 6.25),
        ("other", "adaptive:beta", "0.95", 0.52, 3.5), ("other", "adaptive:exact", "-", 0.5, 6.25),
        ("live", "adaptive:beta", "0.95", 0.508, 13.44)]


def test_compare_runs_sampler_row_shows_dropout_settings_and_what_differs():
    from latentlit.evaluation.compare import sampler_cells

    base = {"name": "MCDropout", "p": 0.05, "mask_scope": "trajectory", "prefill": "per_sample", "attention_p": 0.0,
            "targets": ["*.mlp.dropout"], "target_modules": 2}
    runs = [{"config": {"sampler": base}}, {"config": {"sampler": {**base, "p": 0.1, "targets": ["*.drop"]}}},
            {"config": {"sampler": {"name": "Deterministic", "prefill": "shared"}}}]
    assert sampler_cells(runs) == [
        'MCDropout p=0.05 mask_scope=trajectory prefill=per_sample target_modules=2 targets=["*.mlp.dropout"]',
        'MCDropout p=0.1 mask_scope=trajectory prefill=per_sample target_modules=2 targets=["*.drop"]',
        "Deterministic prefill=shared"]


def test_printed_intervals_have_no_signed_zero_and_say_when_degenerate():
    records = _records(30)
    summary = add_report(_summary(records), records, ks=KS, aggregators=AGGS, seed=0, cost_model=_model())
    vote = summary["selective"]["vote"]
    vote["gain@50%"], vote["gain@50%_interval"] = -1e-18, [-0.0, 0.0]  # every question equally confident
    summary["intervals"]["minus_greedy"]["coverage@1"] = {"diff": 0.0, "low": -0.0004, "high": 0.0004}
    text = format_summary(summary)
    assert "-0.0" not in text and "+0.0" not in text
    line = next(x for x in text.splitlines() if x.startswith("selective, vote share"))
    assert "answering all (0.0 [0.0, 0.0] (zero width));" in line
    assert "0.0 [0.0, 0.0]\n" not in text  # coverage@1 - greedy: a real (if narrow) interval, no "zero width"


def test_scaling_figure_draws_each_aggregator_in_its_own_registry_style(tmp_path):
    from matplotlib.colors import to_hex

    aggs = registry.enabled({"latent_rm": "rm", "beam_width": 2, "dvts_width": 2})
    records = _records(20)
    for r in records:
        r["dvts"] = {"answer": "5", "correct": True}
        r["dvts_vote"] = {"answer": "6", "correct": False}
    keys = metric_keys(KS, N, aggs)
    values = [question_values(r, KS, aggs, 0).values for r in records]
    summary = {"config": {"n_samples": N, "sampler": {"name": "AGN"}}, "counts": {"questions": 20},
               "metrics": {k: round(sum(v[k] for v in values) / 20, 6) for k in keys}}
    ax = make_figures(summary)["scaling"].axes[0]
    drawn = {}
    for line in ax.lines:
        if line.get_label() in {"coverage@k", "greedy"} or line.get_label().startswith("_"):
            continue
        drawn[line.get_label()] = (to_hex(line.get_color()), line.get_marker(), float(line.get_xdata()[0]))
    for container in ax.containers:  # error-bar points (beam search, DVTS, DVTS vote)
        line = container.lines[0]
        drawn[container.get_label()] = (to_hex(line.get_color()), line.get_marker(), float(line.get_xdata()[0]))
    labels = {a.label: a.name for a in aggs}
    assert set(drawn) == set(labels)
    for label, (colour, marker, _) in drawn.items():
        want_colour, want_marker = registry.style(labels[label])
        assert (colour, marker) == (to_hex(want_colour), want_marker)
    styles = [(c, m) for c, m, _ in drawn.values()]
    assert len(set(styles)) == len(styles) and "#000000" not in {c for c, _ in styles}
    at_n = [x for label, (_, _, x) in drawn.items() if labels[label] in ("beam_search", "dvts", "dvts_vote")]
    assert len(set(at_n)) == 3 and all(0.9 * N < x < 1.1 * N for x in at_n)  # side by side around k = N


def test_a_newly_registered_aggregator_gets_a_style_of_its_own():
    from latentlit.aggregation.registry import AGGREGATORS, COVERAGE_STYLE, Aggregator, register, style

    saved = list(AGGREGATORS)
    try:
        register(Aggregator("median_pick", "median pick", False, "test only", choose=lambda q: {}))
        styles = [style(a.name) for a in AGGREGATORS]
        assert len(set(styles)) == len(styles) and COVERAGE_STYLE not in styles
        register(Aggregator("pinned", "pinned", False, "test only", choose=lambda q: {}, colour="k", marker="o"))
        assert style("pinned") == ("k", "o")
    finally:
        AGGREGATORS[:] = saved
    with pytest.raises(KeyError, match="median_pick"):
        style("median_pick")


def test_compare_runs_every_k_gives_adaptive_rows_per_rule_and_threshold(tmp_path, capsys):
    """Two thresholds of one rule in a replayed run and a live run: one row per (rule, threshold),
    each with its own values, and no row keyed by k (``@None``)."""
    records = _records(25)
    fixed = add_report(_summary(records), records, ks=KS, aggregators=AGGS, seed=0, cost_model=_model())
    fixed["config"]["adaptive"] = {"n_max": N, "round_size": 2, "live": False, "rule": None, "threshold": None}
    fixed["adaptive"] = {"beta": {"0.9": {"accuracy": 0.48, "mean_trajectories": 2.5, "median_trajectories": 2},
                                  "0.99": {"accuracy": 0.56, "mean_trajectories": 5.0, "median_trajectories": 4}},
                         "window": {"2": {"accuracy": 0.44, "mean_trajectories": 3.0, "median_trajectories": 2},
                                    "4": {"accuracy": 0.6, "mean_trajectories": 6.0, "median_trajectories": 6}}}
    live = json.loads(json.dumps(fixed))
    live["config"]["adaptive"] = {"n_max": N, "round_size": 2, "live": True, "rule": "beta", "threshold": 0.99}
    live["adaptive"] = {"beta": {"0.99": {"accuracy": 0.56, "mean_trajectories": 5.0, "median_trajectories": 4}}}
    dirs = [_run_dir(tmp_path, n, r) for n, r in (("replayed", fixed), ("live", live))]
    assert _compare_script()([*dirs, "--every-k"]) == 0
    out = capsys.readouterr().out
    assert "None" not in out
    cells = {x.split(" | ")[0][2:]: [c.strip(" |") for c in x.split(" | ")[1:]] for x in out.splitlines()[2:]}
    adaptive = {k: v for k, v in cells.items() if "adaptive" in k}
    assert adaptive == {
        "adaptive beta@0.9 (%, mean trajectories per question)": ["48.0 (2.50 trajectories, replayed)", ""],
        "adaptive beta@0.99 (%, mean trajectories per question)": ["56.0 (5.00 trajectories, replayed)",
                                                                   "56.0 (5.00 trajectories, live)"],
        "adaptive window@2 (%, mean trajectories per question)": ["44.0 (3.00 trajectories, replayed)", ""],
        "adaptive window@4 (%, mean trajectories per question)": ["60.0 (6.00 trajectories, replayed)", ""]}
    # the methods still have a row per k
    assert cells["best-of-N@2 (%)"][0] == f"{100 * fixed['metrics']['best_of_n@2']:.1f} " \
        f"[{100 * fixed['intervals']['accuracy']['best_of_n@2']['low']:.1f}, " \
        f"{100 * fixed['intervals']['accuracy']['best_of_n@2']['high']:.1f}]"
