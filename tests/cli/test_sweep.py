"""Diversity sweep: grid expansion and checks, per-point figures against an independent
recomputation and against each point's own metrics.json, table and figure written, finished
points skipped on a re-run, an interrupted point resumed alone."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import yaml

from latentlit.cli import main
from latentlit.cli.sweep import load_sweep, point_metrics, run_sweep
from latentlit.data.synthetic import generate_problems
from latentlit.testing.tiny import write_numeric_backbone


def _record(answers, gold, greedy_ok=True, diversity=(0.1, 0.3)):
    return {"id": f"q{answers}", "answers": answers, "gold": gold, "correct": [a == gold for a in answers],
            "greedy": {"correct": greedy_ok}, "diversity": list(diversity)}


def test_point_metrics_by_hand():
    records = [_record(["1", "2", "2", "2"], "2"), _record(["3", "1", "1", "3"], "3", greedy_ok=False, diversity=(0.5, 0.5))]
    m = point_metrics(records, [1, 2, 4])
    assert m["questions"] == 2 and m["greedy"] == 0.5
    assert m["diversity"] == pytest.approx((0.2 + 0.5) / 2) and m["diversity_questions"] == 2
    # a step fewer than two trajectories reached (null) is left out, not averaged as 0
    ragged = point_metrics([_record(["1", "1"], "1", diversity=(0.4, None)), _record(["1", "2"], "1", diversity=(None, None)),
                            _record(["2", "2"], "1", diversity=(0.2, 0.4))], [1, 2])
    assert ragged["diversity"] == pytest.approx((0.4 + 0.3) / 2) and ragged["diversity_questions"] == 2
    # coverage@1: 3/4 and 2/4 correct; coverage@2 = 1 - C(n-c,2)/C(4,2): 1 and 1 - 1/6
    assert m["per_n"][1]["coverage"] == pytest.approx((0.75 + 0.5) / 2)
    assert m["per_n"][2]["coverage"] == pytest.approx((1 + 5 / 6) / 2)
    assert m["per_n"][4]["coverage"] == 1.0
    # expected vote over random k-subsets: k=1 3/4 and 1/2; k=2 (ties go to the earlier sample)
    # "1,2" x3 wrong, "2,2" x3 right: 1/2; "3,1" x2 and "3,3" right, "1,1", "1,3" x2 wrong: 1/2
    assert [m["per_n"][k]["majority_vote"] for k in (1, 2, 4)] == [pytest.approx(0.625), pytest.approx(0.5), 1.0]
    # first-k votes: k=1 "1" (wrong), "3" (right); k=2 tie -> first: "1", "3"; k=4 "2", "3" (tie 2-2, first)
    assert [m["per_n"][k]["majority_vote_first"] for k in (1, 2, 4)] == [0.5, 0.5, 1.0]
    assert [m["per_n"][k]["distinct_answers"] for k in (1, 2, 4)] == [1.0, 2.0, 2.0]
    with pytest.raises(ValueError, match="exceeds the 4 samples"):
        point_metrics(records, [8])
    with pytest.raises(ValueError, match="different numbers of samples"):
        point_metrics(records + [_record(["1"], "1")], [1])


@pytest.fixture(scope="module")
def sweep_env(tmp_path_factory):
    root = tmp_path_factory.mktemp("sweep")
    backbone = write_numeric_backbone(root / "backbone")
    problems = root / "problems.jsonl"
    golds = ["15", "46", "17", "15", "16"]
    problems.write_text("".join(json.dumps({"id": f"p{i}", "question": p.question, "answer": g}) + "\n"
                                for i, (p, g) in enumerate(zip(generate_problems(5, 4242), golds))))
    base = {"trainer": {"accelerator": "cpu", "devices": 1, "logger": False, "enable_progress_bar": False,
                        "enable_model_summary": False, "default_root_dir": str(root / "lightning")},
            "model": {"class_path": "latentlit.lit.TTSPredictor", "init_args": {
                "backbone": str(backbone), "n_samples": 2, "max_new_tokens": 3, "answer_format": "last_number",
                # the base's sampler is replaced by each point's (its p must not reach AGN)
                "sampler": {"class_path": "latentlit.sampling.MCDropout", "init_args": {"p": 0.1, "mask_scope": "trajectory"}}}},
            "data": {"class_path": "latentlit.lit.ProblemDataModule", "init_args": {
                "problems": {"class_path": "latentlit.data.sources.ProblemFile", "init_args": {"path": str(problems)}},
                "batch_size": 2}}}
    (root / "base.yaml").write_text(yaml.safe_dump(base))
    sweep = {"base": str(root / "base.yaml"), "output_dir": str(root / "out"), "n_samples": 8, "ns": [1, 4, 8],
             "samplers": {
                 "mc_dropout": {"sampler": {"class_path": "latentlit.sampling.MCDropout",
                                            "init_args": {"mask_scope": "step", "on_answer": True}},
                                "strength": "p", "values": [0.05, 0.3]},
                 "agn": {"sampler": {"class_path": "latentlit.sampling.AGN", "init_args": {"relative": True}},
                         "strength": "sigma", "values": [0.5]}}}
    path = root / "sweep.yaml"
    path.write_text(yaml.safe_dump(sweep, sort_keys=False))
    return {"root": root, "sweep": path}


def _predict(config_path: Path) -> None:
    main(["predict", "--config", str(config_path)])


def test_sweep_end_to_end_resume_and_skip(sweep_env):
    root, path = sweep_env["root"], sweep_env["sweep"]
    calls = []
    rows = run_sweep(path, run_predict=lambda p: (calls.append(p), _predict(p)), log=lambda *_: None)
    assert len(calls) == 3 and len(rows) == 3 * 3
    out = root / "out"
    for name in ("sweep.csv", "sweep.md", "sweet_spot.png"):
        assert (out / name).stat().st_size > 100
    assert (out / "sweet_spot.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    table = list(csv.DictReader((out / "sweep.csv").open()))
    assert [(r["sampler"], float(r["value"]), int(r["n"])) for r in table] == [
        (s, v, k) for s, v in (("mc_dropout", 0.05), ("mc_dropout", 0.3), ("agn", 0.5)) for k in (1, 4, 8)]
    # every point is a normal predict directory whose own metrics agree with the sweep's figures
    for point in load_sweep(path).points:
        metrics = json.loads((point.directory / "metrics.json").read_text())
        assert metrics["config"]["n_samples"] == 8
        assert metrics["config"]["sampler"][point.strength] == point.value
        if point.sampler == "mc_dropout":
            assert metrics["config"]["sampler"]["mask_scope"] == "step"
        mine = [r for r in rows if r["sampler"] == point.sampler and r["value"] == point.value]
        for r in mine:
            assert r["coverage"] == pytest.approx(metrics["metrics"][f"coverage@{r['n']}"], abs=1e-6)
            assert r["majority_vote"] == pytest.approx(metrics["metrics"][f"majority_vote@{r['n']}"], abs=1e-6)
            assert r["majority_vote_first"] == pytest.approx(metrics["metrics"][f"majority_vote_first@{r['n']}"], abs=1e-6)
            assert r["greedy"] == pytest.approx(metrics["metrics"]["greedy_accuracy"], abs=1e-6)
        per_step = metrics["metrics"]["diversity_per_step"]
        assert None not in per_step and metrics["metrics"]["diversity_questions_per_step"] == [metrics["counts"]["questions"]] * len(per_step)
        assert mine[0]["diversity"] == pytest.approx(sum(per_step) / len(per_step), abs=1e-4)
    # stronger MC-dropout gives more diverse latents
    div = {r["value"]: r["diversity"] for r in rows if r["sampler"] == "mc_dropout"}
    assert div[0.3] > div[0.05] > 0

    # a re-run skips every finished point and writes the same table
    before = (out / "sweep.csv").read_text()
    run_sweep(path, run_predict=lambda p: pytest.fail(f"finished point rerun: {p}"), log=lambda *_: None)
    assert (out / "sweep.csv").read_text() == before

    # an interrupted point (no marker, half its records) is the only one rerun, and resumes
    point = load_sweep(path).points[1]
    (point.directory / "sweep_point.json").unlink()
    lines = (point.directory / "predictions.jsonl").read_text().splitlines(keepends=True)
    (point.directory / "predictions.jsonl").write_text("".join(lines[:2]))
    calls.clear()
    run_sweep(path, run_predict=lambda p: (calls.append(p), _predict(p)), log=lambda *_: None)
    assert calls == [point.directory / "config.yaml"]
    assert json.loads((point.directory / "metrics.json").read_text())["counts"]["questions_this_run"] == 3
    assert (out / "sweep.csv").read_text() == before


@pytest.mark.parametrize("change, match", [
    ({"n_samples": 0}, "n_samples must be >= 1"),
    ({"ns": [1, 16]}, r"ns must be a list of integers in \[1, n_samples=8\]"),
    ({"base": "nowhere.yaml"}, "base config nowhere.yaml does not exist"),
    ({"samplers": {"agn": {"strength": "sigma", "values": [1.0]}}}, "missing field 'samplers.agn.sampler'"),
    ({"samplers": {"agn": {"sampler": {"class_path": "latentlit.sampling.AGN"}, "strength": "sigma", "values": []}}},
     "'samplers.agn.values' must be a non-empty list of numbers"),
    ({"grid": 1}, r"unknown field\(s\) \['grid'\]"),
])
def test_bad_sweep_files_name_the_field(sweep_env, tmp_path, change, match):
    spec = {**yaml.safe_load(sweep_env["sweep"].read_text()), **change}
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(spec))
    with pytest.raises((ValueError, FileNotFoundError), match=match):
        load_sweep(path)


def test_quickstart_sweep_config_expands():
    sweep = load_sweep("configs/quickstart/sweep.yaml")
    assert sweep.n_samples == 64 and sweep.ns == [1, 4, 16, 64]
    assert {(p.sampler, p.strength) for p in sweep.points} == {("mc_dropout", "p"), ("agn", "sigma")}
    for p in sweep.points:
        cfg = p.config
        assert cfg["data"]["init_args"]["problems"]["init_args"]["split"] == "val"
        assert cfg["model"]["init_args"]["sampler"]["init_args"][p.strength] == p.value
        assert cfg["model"]["init_args"]["output_dir"] == str(p.directory)


def test_split_option_moves_every_point_and_the_output_dir(tmp_path, sweep_env):
    repo = Path(__file__).resolve().parents[2]
    spec = yaml.safe_load((repo / "configs/quickstart/sweep.yaml").read_text())
    spec["base"] = str(repo / spec["base"])
    spec["output_dir"] = str(tmp_path / "sweep")
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(spec))
    own = load_sweep(path)
    test = load_sweep(path, "test")
    split = lambda p: p.config["data"]["init_args"]["problems"]["init_args"]["split"]
    assert {split(p) for p in own.points} == {"val"} and {split(p) for p in test.points} == {"test"}
    assert own.output_dir == tmp_path / "sweep" and test.output_dir == tmp_path / "sweep-test"
    assert all(p.directory.is_relative_to(tmp_path / "sweep-test") for p in test.points)
    # everything but the split and the directories is the same grid
    assert [(p.sampler, p.value, p.config["model"]["init_args"]["sampler"]) for p in test.points] == \
        [(p.sampler, p.value, p.config["model"]["init_args"]["sampler"]) for p in own.points]
    assert load_sweep(path, "val").output_dir == own.output_dir  # the YAML's own split: same directory
    with pytest.raises(ValueError, match="split=.bogus"):
        load_sweep(path, "bogus")
    # a data file has no splits: named, not silently ignored
    with pytest.raises(ValueError, match=r"--split test: the problems \(latentlit.data.sources.ProblemFile\) take no split"):
        load_sweep(sweep_env["sweep"], "test")
