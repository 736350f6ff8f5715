"""Adaptive N through ``latentlit predict``: the replayed table of a fixed-N run (records and
metrics.json against an independent recomputation), a live adaptive run against the fixed-N run
(same first trajectories, exact rule == majority@N_max on every question, same trajectories used
as the replay), what a live run reports and leaves out, resume, and refused settings."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import pytest
import yaml

from latentlit.aggregation.stopping import StoppingRule, simulate
from latentlit.cli import main
from latentlit.data.answers import answers_match
from latentlit.data.synthetic import generate_problems
from latentlit.evaluation.metrics import pass_at_k
from latentlit.models.checkpoints import load_backbone
from latentlit.testing.tiny import write_numeric_backbone

N, ROUND, MAX_NEW = 16, 4, 3
SAMPLER = {"class_path": "latentlit.sampling.MCDropout",
           "init_args": {"p": 0.1, "mask_scope": "step", "prefill": "per_sample", "on_answer": True}}


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    root = tmp_path_factory.mktemp("adaptive_predict")
    backbone = write_numeric_backbone(root / "backbone")
    problems = generate_problems(10, 4242)
    path = root / "problems.jsonl"
    # golds that the tiny model sometimes says (its answers are numbers from its vocabulary)
    # (some the samples' majority, some a minority answer, one nothing it says)
    golds = ["15", "46", "17", "15", "56", "16", "31", "15", "25", "10"]
    path.write_text("".join(json.dumps({"id": f"p{i}", "question": p.question, "answer": g}) + "\n"
                            for i, (p, g) in enumerate(zip(problems, golds))))
    return {"root": root, "backbone": backbone, "problems": path, "runs": {}}


def _run(env, name: str, adaptive: dict | None, *, batch_size: int = 4, beam: dict | None = None,
         latent_rm: str | None = None, n_samples: int = N) -> Path:
    out = env["root"] / name
    args = {"backbone": str(env["backbone"]), "sampler": SAMPLER, "n_samples": n_samples, "max_trajectories": 24, "seed": 0,
            "max_new_tokens": MAX_NEW, "answer_format": "last_number", "output_dir": str(out), **(beam or {})}
    if adaptive is not None:
        args["adaptive"] = adaptive
    if latent_rm is not None:
        args["latent_rm"] = latent_rm
    cfg = {"trainer": {"accelerator": "cpu", "devices": 1, "logger": False, "enable_progress_bar": False,
                       "enable_model_summary": False, "default_root_dir": str(env["root"] / f"{name}_root")},
           "model": {"class_path": "latentlit.lit.TTSPredictor", "init_args": args},
           "data": {"class_path": "latentlit.lit.ProblemDataModule", "init_args": {
               "problems": {"class_path": "latentlit.data.sources.ProblemFile", "init_args": {"path": str(env["problems"])}},
               "batch_size": batch_size}}}
    config = env["root"] / f"{name}.yaml"
    config.write_text(yaml.safe_dump(cfg))
    main(["predict", "--config", str(config)])
    return out


def _fixed(env) -> Path:
    if "fixed" not in env["runs"]:
        env["runs"]["fixed"] = _run(env, "fixed", {"round_size": ROUND, "table": {"exact": [None], "beta": [0.9],
                                                                                  "window": [4, 8]}})
    return env["runs"]["fixed"]


def _records(out: Path) -> list[dict]:
    return [json.loads(x) for x in (out / "predictions.jsonl").read_text().splitlines()]


def _summary(out: Path) -> dict:
    return json.loads((out / "metrics.json").read_text())


def test_fixed_run_reports_the_replayed_table(env):
    out = _fixed(env)
    records, summary = _records(out), _summary(out)
    rules = [StoppingRule("exact"), StoppingRule("beta", 0.9), StoppingRule("window", 4), StoppingRule("window", 8)]
    for r in records:
        assert len(r["answers"]) == N
        for rule in rules:
            sim = simulate(rule, r["answers"], N, ROUND)
            assert r["adaptive"][rule.name][rule.key] == {"answer": sim.answer, "trajectories": sim.trajectories,
                                                          "correct": answers_match(sim.answer, r["gold"])}
        # the exact rule's answer is majority@N on every question
        assert r["adaptive"]["exact"]["-"]["answer"] == r["majority_vote"]["answer"]
    # metrics.json's section, recomputed from the records
    assert set(summary["adaptive"]) == {"exact", "beta", "window"}
    for rule in rules:
        rows = [r["adaptive"][rule.name][rule.key] for r in records]
        assert summary["adaptive"][rule.name][rule.key] == {
            "accuracy": pytest.approx(sum(x["correct"] for x in rows) / len(rows), abs=1e-6),
            "mean_trajectories": pytest.approx(statistics.fmean(x["trajectories"] for x in rows), abs=1e-6),
            "median_trajectories": pytest.approx(statistics.median(x["trajectories"] for x in rows), abs=1e-6)}
    exact = summary["adaptive"]["exact"]["-"]
    assert exact["accuracy"] == pytest.approx(summary["metrics"][f"majority_vote@{N}"], abs=1e-6)
    assert exact["mean_trajectories"] < N  # something was saved
    assert summary["config"]["adaptive"] == {"n_max": N, "round_size": ROUND, "live": False, "rule": None, "threshold": None,
                                             "table": {"exact": [None], "beta": [0.9], "window": [4, 8]}}
    # a fixed-N run keeps its usual N-sample metrics
    assert f"coverage@{N}" in summary["metrics"] and f"random@{N}" in summary["metrics"]


@pytest.mark.parametrize("rule", [StoppingRule("exact"), StoppingRule("beta", 0.9)])
def test_live_run_draws_the_fixed_runs_trajectories_and_stops_where_the_replay_does(env, rule):
    fixed = {r["id"]: r for r in _records(_fixed(env))}
    out = _run(env, f"live_{rule.name}", {"round_size": ROUND, "rule": rule.name, "threshold": rule.threshold})
    records, summary = _records(out), _summary(out)
    assert [r["id"] for r in records] == list(fixed)
    for r in records:
        f, n = fixed[r["id"]], len(r["answers"])
        assert r["texts"] == f["texts"][:n] and r["answers"] == f["answers"][:n]
        assert r["adaptive"] == {rule.name: {rule.key: f["adaptive"][rule.name][rule.key]}}
        assert n == f["adaptive"][rule.name][rule.key]["trajectories"]
        if rule.name == "exact":
            assert r["adaptive"]["exact"]["-"]["answer"] == f["majority_vote"]["answer"]
        # no N-sample aggregate in a record that holds fewer samples
        assert not {"majority_vote", "random", "best_of_n", "weighted_vote"} & set(r)
        assert len(r["compute"]["latents"]) == len(r["compute"]["answers"]) == n
        assert r["greedy"] == f["greedy"]
    assert summary["adaptive"] == {rule.name: {rule.key: _summary(_fixed(env))["adaptive"][rule.name][rule.key]}}
    assert summary["counts"]["trajectories_this_run"] == sum(len(r["answers"]) for r in records) < N * len(records)
    assert summary["config"]["adaptive"]["live"] is True and summary["config"]["adaptive"]["n_max"] == N
    assert summary["config"]["n_samples"] == ROUND  # the N its metrics describe
    # the N-sample metrics are exactly those of a fixed run with N = round size (first round)
    first = _summary(_first_round_run(env))
    m, f = summary["metrics"], first["metrics"]
    assert sorted(k for k in m if k.startswith("coverage@")) == ["coverage@1", "coverage@2", "coverage@4"]
    assert f"majority_vote@{N}" not in m
    drawn_no_answer = sum(a is None for r in records for a in r["answers"]) / sum(len(r["answers"]) for r in records)
    assert m.pop("no_answer_samples") == pytest.approx(drawn_no_answer, abs=1e-6)
    f.pop("no_answer_samples")
    assert m == f
    for section in ("intervals", "selective"):
        assert summary[section] == first[section]
    for k in (1, 2, 4):
        expected = statistics.fmean(pass_at_k(ROUND, sum(r["correct"][:ROUND]), k) for r in records)
        assert m[f"coverage@{k}"] == pytest.approx(expected, abs=1e-6)
        # the vote of the first k samples is the N_max run's too (same samples)
        assert m[f"majority_vote_first@{k}"] == _summary(_fixed(env))["metrics"][f"majority_vote_first@{k}"]


def test_live_run_admits_waiting_questions_in_the_place_of_settled_ones(env, monkeypatch):
    """Continuous batching: max_trajectories 24 / round 4 = 6 questions in flight, batches of 4: a round mixes
    questions of two batches, holds 6 while others wait, and the records equal a run with all 10 in one batch."""
    import latentlit.search.adaptive as adaptive_mod

    rounds, real = [], adaptive_mod.sample_questions

    def spy(backbone, sampler, qids, qs, n, seed, **kwargs):
        rounds.append(list(qids))
        return real(backbone, sampler, qids, qs, n, seed, **kwargs)

    monkeypatch.setattr(adaptive_mod, "sample_questions", spy)
    rule = {"round_size": ROUND, "rule": "beta", "threshold": 0.9}
    records = _records(_run(env, "live_continuous", rule))
    monkeypatch.setattr(adaptive_mod, "sample_questions", real)
    first, second = {"p0", "p1", "p2", "p3"}, {"p4", "p5", "p6", "p7"}
    assert any(first & set(r) and second & set(r) for r in rounds)
    assert max(len(r) for r in rounds) == 6 and len(rounds[0]) == 6  # the first round waited for a full pool
    assert records == _records(_run(env, "live_one_batch", rule, batch_size=10))
    assert [r["index"] for r in records] == list(range(10))  # written as they settle, then put in problem order


def _first_round_run(env) -> Path:
    if "first_round" not in env["runs"]:
        env["runs"]["first_round"] = _run(env, "first_round", None, n_samples=ROUND)
    return env["runs"]["first_round"]


def test_best_score_rule_with_a_latent_rm_live_and_replayed(env):
    from latentlit.models.latent_rm import LatentRM

    rm_dir = env["root"] / "rm"
    LatentRM.from_backbone(load_backbone(env["backbone"]), seed=1).save_pretrained(rm_dir)
    fixed = _records(_run(env, "rm_fixed", {"round_size": ROUND, "table": {"exact": [None]}}, latent_rm=str(rm_dir)))
    # a threshold half-way between two stored scores, so float noise cannot put a score on it
    scores = sorted({s for r in fixed for s in r["rm_scores"]})
    mid = len(scores) * 3 // 4
    threshold = round((scores[mid] + scores[mid + 1]) / 2, 6)
    rule = StoppingRule("best_score", threshold)
    out = _run(env, "rm_live", {"round_size": ROUND, "rule": "best_score", "threshold": threshold}, latent_rm=str(rm_dir))
    used = []
    for r, f in zip(_records(out), fixed):
        n = len(r["answers"])
        used.append(n)
        assert r["answers"] == f["answers"][:n]
        assert r["rm_scores"] == pytest.approx(f["rm_scores"][:n], abs=2e-5)
        sim = simulate(rule, f["answers"], N, ROUND, f["rm_scores"])
        assert r["adaptive"]["best_score"][rule.key] == {"answer": sim.answer, "trajectories": sim.trajectories,
                                                         "correct": answers_match(sim.answer, r["gold"])}
        best = max(range(n), key=lambda i: (r["rm_scores"][i], -i))
        assert sim.answer == r["answers"][best]
    assert min(used) < N and max(used) == N  # some settle early, some never reach the score
    with pytest.raises(ValueError, match="cannot be combined with beam_width"):
        _run(env, "rm_beam", {"rule": "exact"}, latent_rm=str(rm_dir), beam={"beam_width": 4})


def test_live_run_resumes_and_refuses_other_adaptive_settings(env):
    out = _run(env, "live_resume", {"rule": "exact", "round_size": ROUND})
    full = (out / "predictions.jsonl").read_text()
    lines = full.splitlines(keepends=True)
    (out / "predictions.jsonl").write_text("".join(lines[:5]) + lines[5][:20])
    _run(env, "live_resume", {"rule": "exact", "round_size": ROUND})
    assert (out / "predictions.jsonl").read_text() == full
    assert _summary(out)["adaptive"] == _summary(_run(env, "live_exact_again", {"rule": "exact", "round_size": ROUND}))["adaptive"]
    with pytest.raises(ValueError, match="adaptive"):
        _run(env, "live_resume", {"rule": "exact", "round_size": 2})
    with pytest.raises(ValueError, match="adaptive"):
        _run(env, "live_resume", None)


def test_bad_adaptive_settings_are_refused(env):
    with pytest.raises(ValueError, match=r"adaptive rule 'beta' needs a threshold in \(0, 1\), got 2"):
        _run(env, "bad_beta", {"rule": "beta", "threshold": 2})
    with pytest.raises(ValueError, match="set latent_rm"):
        _run(env, "bad_rm", {"rule": "best_score", "threshold": 1.0})
