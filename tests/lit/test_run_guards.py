"""Guards that keep a prediction directory consistent and catch bad options before any work."""

import json

import pytest

from latentlit.data.problem import Problem
from latentlit.lit.backbone_module import LatentBackboneModule, check_arch
from latentlit.lit.predictor import TTSPredictor
from latentlit.runs.directory import RUN_FILE, check_resumed_questions, check_run_settings


def test_run_settings_bind_a_directory_only_once_it_holds_results(tmp_path):
    check_run_settings(tmp_path, {"rm_score": "bogus"}, write=True, has_results=False)
    assert json.loads((tmp_path / RUN_FILE).read_text()) == {"rm_score": "bogus"}
    # that run failed before writing any result: the next one is free to use the directory
    check_run_settings(tmp_path, {"rm_score": "sum"}, write=True, has_results=False)
    assert json.loads((tmp_path / RUN_FILE).read_text()) == {"rm_score": "sum"}
    # a process that does not write (DDP rank > 0) neither reads nor writes before results exist
    check_run_settings(tmp_path, {"rm_score": "min"}, write=False, has_results=False)
    assert json.loads((tmp_path / RUN_FILE).read_text()) == {"rm_score": "sum"}
    with pytest.raises(ValueError, match=r'other settings: \{"rm_score": \{"stored": "sum", "now": "mean"\}\}'):
        check_run_settings(tmp_path, {"rm_score": "mean"}, write=True, has_results=True)
    check_run_settings(tmp_path, {"rm_score": "sum"}, write=False, has_results=True)


def test_resumed_records_must_be_this_runs_questions(tmp_path):
    problems = [Problem(id="q1", question="Ann has 3 .", steps=(), answer="3"),
                Problem(id="q2", question="Bob has 4 .", steps=(), answer="4")]
    check_resumed_questions(tmp_path, [{"id": "q1", "question": "Ann has 3 .", "gold": "3"}], problems)
    with pytest.raises(ValueError, match=r"holds 1 questions, 1 of them not among this run's 2 problems \(first: \['q9'\]\)\. "
                                         r"A smaller --limit than the earlier run's is the usual cause .*run with the "
                                         r"same --limit as before, a larger one or none, to resume it"):
        check_resumed_questions(tmp_path, [{"id": "q9", "question": "x", "gold": "1"}], problems)
    with pytest.raises(ValueError, match=r"another question or gold.*q2.*'5'.*'4'"):
        check_resumed_questions(tmp_path, [{"id": "q2", "question": "Bob has 4 .", "gold": "5"}], problems)


def test_bad_rm_score_fails_before_loading_anything():
    with pytest.raises(ValueError, match=r"rm_score='bogus'; expected one of \('sum', 'mean', 'last', 'min'\)"):
        TTSPredictor(backbone="/nonexistent", rm_score="bogus")


def test_arch_typos_and_bad_dropout_are_refused():
    check_arch({"n_layer": 2, "n_embd": 64, "resid_pdrop": 0.0, "n_positions": 128})
    with pytest.raises(ValueError, match=r"'n_lyer' is not a GPT-2 config field \(did you mean \['n_layer'"):
        LatentBackboneModule(arch={"n_lyer": 3})
    with pytest.raises(ValueError, match=r"resid_pdrop=1.5 must be a dropout rate"):
        LatentBackboneModule(arch={"resid_pdrop": 1.5})


def test_a_failed_start_releases_only_a_directory_without_results(tmp_path):
    from latentlit.runs.directory import RESULT_FILES, release_if_empty

    empty = tmp_path / "empty"
    (empty / "latents").mkdir(parents=True)
    (empty / RUN_FILE).write_text("{}")
    (empty / "predictions.jsonl").write_text("")  # opened, nothing written
    assert release_if_empty(empty, RESULT_FILES) and not empty.exists()
    kept = tmp_path / "kept"
    kept.mkdir()
    (kept / RUN_FILE).write_text("{}")
    (kept / "predictions.jsonl").write_text('{"id": "q1"}\n')
    (kept / "notes.txt").write_text("the user's")
    assert not release_if_empty(kept, RESULT_FILES)
    assert sorted(p.name for p in kept.iterdir()) == ["notes.txt", "predictions.jsonl", RUN_FILE]
    other = tmp_path / "other"  # no result but a file latentlit did not write: the file and folder stay
    other.mkdir()
    (other / RUN_FILE).write_text("{}")
    (other / "notes.txt").write_text("the user's")
    assert release_if_empty(other, RESULT_FILES) and sorted(p.name for p in other.iterdir()) == ["notes.txt"]
    assert not release_if_empty(tmp_path / "missing", RESULT_FILES)


def test_a_deterministic_sampler_with_n_above_one_warns_once(tiny_backbone_dir):
    import warnings

    from latentlit.models.hooks import Deterministic
    from latentlit.sampling import AGN, MCDropout

    def caught(sampler, n):
        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always")
            TTSPredictor(backbone=str(tiny_backbone_dir), sampler=sampler, n_samples=n)
        return [str(w.message) for w in seen if "trajectories of a question are identical" in str(w.message)]

    for sampler in (Deterministic(), AGN(sigma=0.0), MCDropout(p=0.0)):
        got = caught(sampler, 4)
        assert len(got) == 1 and "\n" not in got[0], type(sampler).__name__
        assert f"sampler {type(sampler).__name__} is deterministic" in got[0]
        assert "n_samples=4" in got[0] and "coverage@k = coverage@1" in got[0]
    assert caught(Deterministic(), 1) == []  # one trajectory: nothing to repeat
    assert caught(AGN(sigma=0.5), 4) == [] and caught(MCDropout(p=0.1), 4) == []
