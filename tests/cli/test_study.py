"""latentlit study: one table across runs whose values are the runs' own metrics.json values, paired
differences against a baseline run, runs labelled by what differs, and the overlay figures."""

import csv
import json
from pathlib import Path

import pytest

from latentlit.cli import main
from latentlit.evaluation.paired import paired_difference
from latentlit.evaluation.study import labels
from latentlit.runs.records import read_records


def _predict(backbone: Path, out: Path, *sampler: str) -> Path:
    main(["predict", "--model", "latentlit.lit.TTSPredictor", "--model.backbone", str(backbone), *sampler,
          "--model.n_samples", "4", "--model.max_new_tokens", "2", "--model.output_dir", str(out),
          "--data", "latentlit.lit.ProblemDataModule", "--data.problems", "latentlit.data.sources.SyntheticProblems",
          "--data.problems.n_train", "10", "--data.problems.n_val", "2", "--data.problems.n_test", "6",
          "--trainer.logger", "false", "--trainer.enable_progress_bar", "false"])
    return out


def test_the_study_table_is_the_runs_metrics_with_paired_differences(tiny_backbone_dir, tmp_path, capsys):
    a = _predict(tiny_backbone_dir, tmp_path / "a", "--model.sampler", "latentlit.sampling.MCDropout",
                 "--model.sampler.p", "0.3")
    b = _predict(tiny_backbone_dir, tmp_path / "b", "--model.sampler", "latentlit.sampling.AGN",
                 "--model.sampler.sigma", "2.0")
    capsys.readouterr()
    main(["study", str(a), str(b), "--baseline", str(a), "--k", "1,2,4", "--methods", "greedy,coverage,majority_vote",
          "--output", str(tmp_path / "study")])
    printed = capsys.readouterr().out
    rows = list(csv.DictReader((tmp_path / "study" / "study.csv").open()))
    assert {r["run"] for r in rows} == {"MCDropout p=0.3", "AGN sigma=2.0"}
    assert len(rows) == 2 * (1 + 3 + 3)  # greedy once, coverage and majority vote at k = 1, 2, 4
    for r in rows:
        summary = json.loads((Path(r["directory"]) / "metrics.json").read_text())
        key = "greedy_accuracy" if r["method"] == "greedy" else f"{r['method']}@{r['k']}"
        assert float(r["accuracy"]) == summary["metrics"][key]
        assert float(r["low"]) == summary["intervals"]["accuracy"][key]["low"]
        assert float(r["high"]) == summary["intervals"]["accuracy"][key]["high"]
        if Path(r["directory"]) == a:
            assert r["minus_baseline"] == ""
        else:
            d = paired_difference(read_records(a), read_records(b), key)
            assert float(r["minus_baseline"]) == pytest.approx(d["diff"]) and float(r["minus_low"]) == pytest.approx(d["low"])
    assert "| AGN sigma=2.0 | majority_vote | 4 |" in printed and "minus MCDropout p=0.3 [95% CI]" in printed
    for name in ("study.md", "study_accuracy_vs_k.png", "study_accuracy_vs_compute.png"):
        assert (tmp_path / "study" / name).stat().st_size > 0


def test_labels_say_what_differs():
    dropout = {"sampler": {"name": "MCDropout", "p": 0.05, "prefill": "per_sample"}, "n_samples": 16, "seed": 0}
    assert labels([dropout, {**dropout, "n_samples": 64}], ["a", "b"]) == ["N 16", "N 64"]
    agn = {"sampler": {"name": "AGN", "sigma": 0.5, "prefill": "shared"}, "n_samples": 16, "seed": 0}
    assert labels([dropout, agn], ["a", "b"]) == ["MCDropout p=0.05", "AGN sigma=0.5"]
    steps = {**dropout, "sampler": {**dropout["sampler"], "prefill": "shared"}}
    assert labels([dropout, steps], ["a", "b"]) == ["MCDropout p=0.05 prefill=per_sample", "MCDropout p=0.05 prefill=shared"]
    assert labels([dropout, dropout], ["a", "b"]) == ["a", "b"]  # nothing differs: the directories


def test_a_bad_method_or_run_is_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("LATENTLIT_DEBUG", raising=False)
    with pytest.raises(SystemExit) as stop:
        main(["study", str(tmp_path / "missing")])
    assert stop.value.code == 2 and "metrics.json does not exist" in capsys.readouterr().err
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "metrics.json").write_text(json.dumps({"config": {"n_samples": 4}, "metrics": {}}))
    with pytest.raises(SystemExit):
        main(["study", str(tmp_path / "run"), "--methods", "best_of_m"])
    err = capsys.readouterr().err
    assert err.startswith("latentlit: error: ValueError: --methods: no method 'best_of_m'; known: greedy, coverage")
