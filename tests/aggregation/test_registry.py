"""The aggregator registry: which aggregators a run has, and a new one is one entry away from
records, metrics, intervals, the printed table, the compute table and the plots."""

from __future__ import annotations

import json

import pytest

from latentlit.aggregation import registry
from latentlit.aggregation.at_k import random_pick_at_k
from latentlit.aggregation.registry import Aggregator
from latentlit.cli import main


@pytest.fixture
def restore_registry():
    saved = list(registry.AGGREGATORS)
    yield
    registry.AGGREGATORS[:] = saved


def test_enabled_aggregators_follow_the_settings():
    names = lambda s: [a.name for a in registry.enabled(s)]  # noqa: E731
    assert names({"latent_rm": None, "beam_width": None}) == ["majority_vote", "random"]
    assert names({"latent_rm": "rm", "beam_width": None}) == ["majority_vote", "random", "best_of_n", "weighted_vote"]
    assert names({"latent_rm": "rm", "beam_width": 2}) == ["majority_vote", "random", "best_of_n", "weighted_vote",
                                                          "beam_search"]
    assert names({"latent_rm": "rm", "beam_width": 2, "dvts_width": 4}) == [
        "majority_vote", "random", "best_of_n", "weighted_vote", "beam_search", "dvts", "dvts_vote"]
    assert registry.get("best_of_n").needs_rm and registry.get("beam_search").at_k is None
    assert registry.get("dvts").choose is None and registry.get("dvts_vote").at_k is None
    with pytest.raises(KeyError, match="no aggregator 'adaptive_n'; registered"):
        registry.get("adaptive_n")


def test_register_checks_and_replaces(restore_registry):
    with pytest.raises(ValueError, match="spends='tokens'"):
        registry.register(Aggregator("x", "x", False, "none", choose=lambda q: {}, spends="tokens"))
    new = Aggregator("random", "random again", False, "exact", choose=lambda q: {"answer": None, "correct": False})
    registry.register(new)
    assert registry.get("random") is new and len(registry.AGGREGATORS) == 8


def test_a_registered_aggregator_reaches_every_output(restore_registry, tiny_backbone_dir, tmp_path, capsys):
    def first_sample(q):
        return {"answer": q.answers[0], "correct": q.correct[0]}

    # the first sample of a random k-subset is a uniformly random sample: exact c/N
    registry.register(Aggregator("first_sample", "first sample", False, "exact: c/N", choose=first_sample,
                                 at_k=lambda q, ks: random_pick_at_k(q.correct, ks)))
    out = tmp_path / "out"
    main(["predict", "--model", "latentlit.lit.TTSPredictor", "--model.backbone", str(tiny_backbone_dir),
          "--model.sampler", "latentlit.sampling.AGN", "--model.sampler.sigma", "2.0", "--model.n_samples", "4",
          "--model.max_new_tokens", "2", "--model.output_dir", str(out), "--data", "latentlit.lit.ProblemDataModule",
          "--data.problems", "latentlit.data.sources.SyntheticProblems", "--data.problems.n_train", "10",
          "--data.problems.n_val", "2", "--data.problems.n_test", "5", "--trainer.logger", "false",
          "--trainer.enable_progress_bar", "false", "--trainer.default_root_dir", str(tmp_path)])
    records = [json.loads(x) for x in (out / "predictions.jsonl").read_text().splitlines()]
    assert all(r["first_sample"] == {"answer": r["answers"][0], "correct": r["correct"][0]} for r in records)
    summary = json.loads((out / "metrics.json").read_text())
    for k in (1, 2, 4):
        assert summary["metrics"][f"first_sample@{k}"] == pytest.approx(summary["metrics"]["coverage@1"], abs=1e-6)
        assert f"first_sample@{k}" in summary["intervals"]["accuracy"]
    assert summary["estimators"]["first_sample"] == "exact: c/N"
    assert {r["method"] for r in summary["compute"]["rows"]} >= {"first_sample"}
    printed = capsys.readouterr().out
    table = [line for line in printed.splitlines() if not line.startswith("[latentlit]")]  # after the start line
    assert "first sample" in table[0] and "  first sample  " in printed

    from latentlit.evaluation.report import make_figures

    legend = [t.get_text() for t in make_figures(summary)["scaling"].axes[0].get_legend().get_texts()]
    assert "first sample" in legend
