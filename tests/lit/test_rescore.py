"""Re-scoring a finished run (latentlit rescore): its saved latents scored by a LatentRM give the
records a fresh run with that RM writes on the same samples, in a derived directory that records its
parent; the parent is not touched; the derived run resumes; what cannot be re-scored is refused."""

import json
import warnings
from pathlib import Path

import pytest

from latentlit.cli import main
from latentlit.lit.rescore import rescore
from latentlit.models.checkpoints import load_backbone
from latentlit.models.latent_rm import LatentRM


def _predict(backbone: Path, out: Path, *extra: str) -> list[dict]:
    main(["predict", "--model", "latentlit.lit.TTSPredictor", "--model.backbone", str(backbone),
          "--model.sampler", "latentlit.sampling.MCDropout", "--model.sampler.p", "0.3", "--model.n_samples", "4",
          "--model.max_new_tokens", "2", "--model.output_dir", str(out), "--data", "latentlit.lit.ProblemDataModule",
          "--data.problems", "latentlit.data.sources.SyntheticProblems", "--data.problems.n_train", "10",
          "--data.problems.n_val", "2", "--data.problems.n_test", "7", "--data.batch_size", "3",
          "--trainer.logger", "false", "--trainer.enable_progress_bar", "false", *extra])
    return [json.loads(x) for x in (out / "predictions.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def runs(tiny_backbone_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("rescore")
    rm = root / "rm"
    LatentRM.from_backbone(load_backbone(tiny_backbone_dir), seed=2).save_pretrained(rm)
    parent = root / "parent"
    _predict(tiny_backbone_dir, parent, "--model.save_latents", "true")
    fresh = _predict(tiny_backbone_dir, root / "fresh", "--model.latent_rm", str(rm))
    return {"root": root, "rm": rm, "parent": parent, "fresh": fresh, "backbone": tiny_backbone_dir}


def _files(directory: Path) -> dict:
    return {p.relative_to(directory): p.read_bytes() for p in directory.rglob("*") if p.is_file()}


def test_a_rescored_run_equals_a_fresh_run_with_the_rm(runs):
    before = _files(runs["parent"])
    out = rescore(runs["parent"], str(runs["rm"]), output_dir=runs["root"] / "derived", log=lambda *_: None)
    assert _files(runs["parent"]) == before  # the parent is read, never written
    derived = [json.loads(x) for x in (out / "predictions.jsonl").read_text().splitlines()]
    assert len(derived) == 7
    # the same questions and samples scored in the same groups: every record as the fresh run wrote it
    assert derived == runs["fresh"]
    assert [r["best_of_n"] for r in derived] == [r["best_of_n"] for r in runs["fresh"]]
    settings = json.loads((out / "run.json").read_text())
    parent = json.loads((runs["parent"] / "run.json").read_text())
    assert settings["latent_rm"] == str(runs["rm"]) and settings["latent_rm_fingerprint"]
    assert settings["rescored_from"]["directory"] == str(runs["parent"].resolve())
    own = ("latent_rm", "latent_rm_fingerprint", "rescored_from")
    assert {k: v for k, v in settings.items() if k not in own} == {k: v for k, v in parent.items() if k not in own}
    fresh_metrics = json.loads((runs["root"] / "fresh" / "metrics.json").read_text())["metrics"]
    metrics = json.loads((out / "metrics.json").read_text())["metrics"]
    for key in ("best_of_n@4", "weighted_vote@4", "best_of_n@2", "coverage@4", "majority_vote@4"):
        assert metrics[key] == fresh_metrics[key], key


def test_a_rescored_run_resumes(runs):
    out = rescore(runs["parent"], str(runs["rm"]), output_dir=runs["root"] / "resumed", log=lambda *_: None)
    full = (out / "predictions.jsonl").read_text().splitlines()
    (out / "predictions.jsonl").write_text("\n".join(full[:3]) + "\n")  # stopped after 3 questions
    (out / "metrics.json").unlink()
    said = []
    rescore(runs["parent"], str(runs["rm"]), output_dir=out, log=said.append)
    assert "resuming: 3 questions done" in said[0]
    assert sorted((out / "predictions.jsonl").read_text().splitlines()) == sorted(full)
    with pytest.raises(ValueError, match="other settings"):  # another trajectory score: another run
        rescore(runs["parent"], str(runs["rm"]), output_dir=out, rm_score="mean", log=lambda *_: None)


def test_the_default_directory_names_its_parent_and_rm(runs):
    out = rescore(runs["parent"], str(runs["rm"]), log=lambda *_: None)
    assert out.parent == runs["parent"].parent and out.name.startswith("parent-rescored-rm-")


def test_what_cannot_be_rescored_is_refused(runs, tmp_path):
    no_latents = tmp_path / "plain"
    _predict(runs["backbone"], no_latents)
    with pytest.raises(FileNotFoundError, match="holds no saved latents: run predict with --save_latents"):
        rescore(no_latents, str(runs["rm"]))
    with pytest.raises(FileNotFoundError, match="run.json does not exist"):
        rescore(tmp_path / "nothing", str(runs["rm"]))
    with pytest.raises(ValueError, match=r"reads 128-dim latents but the run's latents are 32-dim"):
        rescore(runs["parent"], "quickstart", output_dir=tmp_path / "x")
    assert not (tmp_path / "x").exists()  # a refused start leaves no directory


def test_an_rm_of_another_sampler_warns(runs, tmp_path):
    rm = tmp_path / "rm_dropout"
    trained = LatentRM.from_pretrained(runs["rm"])
    trained.provenance = {"sampler": {"name": "AGN", "sigma": 1.0}}
    trained.save_pretrained(rm)
    with pytest.warns(UserWarning, match=r"trained on trajectories of name=AGN sigma=1.0 but scores trajectories of "
                                         r"name=MCDropout p=0.3") as caught:
        rescore(runs["parent"], str(rm), output_dir=tmp_path / "warned", log=lambda *_: None)
    assert sum("trained on trajectories of" in str(w.message) for w in caught) == 1
    # the same weights without that provenance: no warning, and the warning changed no score
    with warnings.catch_warnings(record=True) as quiet:
        warnings.simplefilter("always")
        rescore(runs["parent"], str(runs["rm"]), output_dir=tmp_path / "quiet", log=lambda *_: None)
    assert not any("trained on trajectories of" in str(w.message) for w in quiet)
    warned, plain = ([json.loads(x) for x in (tmp_path / d / "predictions.jsonl").read_text().splitlines()]
                     for d in ("warned", "quiet"))
    assert [r["rm_scores"] for r in warned] == [r["rm_scores"] for r in plain] and len(warned) == 7


def test_the_command_line(runs, capsys):
    main(["rescore", str(runs["parent"]), "--latent_rm", str(runs["rm"]), "--output_dir", str(runs["root"] / "cli")])
    assert (runs["root"] / "cli" / "metrics.json").exists()
    assert "re-scored 7 questions" in capsys.readouterr().out


def test_an_answer_reading_rm_with_a_selector_rescored_equals_a_fresh_run(runs):
    from latentlit.aggregation.selector import Selector

    root = runs["root"]
    rm = root / "rm_answer"
    LatentRM.from_backbone(load_backbone(runs["backbone"]), seed=5, read_answer=True).save_pretrained(rm)
    Selector(0.7, (0.5, 0.5, 0.1, 0.0)).save(root / "selector.json")
    fresh = _predict(runs["backbone"], root / "fresh_answer", "--model.latent_rm", str(rm),
                     "--model.selector", str(root / "selector.json"))
    out = rescore(runs["parent"], str(rm), output_dir=root / "derived_answer", selector=str(root / "selector.json"),
                  log=lambda *_: None)
    derived = [json.loads(x) for x in (out / "predictions.jsonl").read_text().splitlines()]
    assert derived == fresh  # the answer step read from the records' texts, the tempered vote from the selector
    assert all("tempered_vote" in r and "confidence" in r["tempered_vote"] for r in derived)
    derived_settings = json.loads((out / "run.json").read_text())
    assert derived_settings["selector"] == {"temperature": 0.7, "calibration": [0.5, 0.5, 0.1, 0.0]}
    assert derived_settings["latent_rm_reads_answer"] is True
    # a run re-scored from one with a selector drops it: the selector was fitted to the parent's RM
    _predict(runs["backbone"], root / "parent_selector", "--model.latent_rm", str(rm), "--model.selector",
             str(root / "selector.json"), "--model.save_latents", "true")
    again = rescore(root / "parent_selector", str(runs["rm"]), output_dir=root / "no_selector", log=lambda *_: None)
    assert not {"selector", "latent_rm_reads_answer"} & set(json.loads((again / "run.json").read_text()))
    assert not any("selector" in json.loads(x) or "tempered_vote" in json.loads(x)
                   for x in (again / "predictions.jsonl").read_text().splitlines())
