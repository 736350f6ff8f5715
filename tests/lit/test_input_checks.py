"""Bad numbers caught where they enter, each with a message naming the condition that failed:
problem limits, batch sizes, problem sources that yield nothing, beam / DVTS widths."""

import pytest

from latentlit.data.sources import NoProblemsError, ProblemFile, SyntheticProblems
from latentlit.lit.curriculum_data import CurriculumDataModule
from latentlit.lit.latent_rm_data import LatentRMDataModule
from latentlit.lit.predict_data import ProblemDataModule
from latentlit.lit.predictor import TTSPredictor


@pytest.mark.parametrize("limit", [0, -1])
def test_every_problem_source_takes_a_limit_of_at_least_one(tmp_path, limit):
    with pytest.raises(ValueError, match=rf"SyntheticProblems\(split='test'\): limit={limit} must be >= 1"):
        SyntheticProblems("test", limit=limit)
    with pytest.raises(ValueError, match=rf"ProblemFile\(x.jsonl\): limit={limit} must be >= 1"):
        ProblemFile("x.jsonl", limit=limit)
    assert len(SyntheticProblems("test", limit=1).load()) == 1  # the smallest allowed


def test_a_run_over_no_problems_is_the_same_error_for_every_source(tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    one = tmp_path / "one.jsonl"
    one.write_text('{"question": "Ann has 3 .", "answer": "#### 3"}\n')
    for source in (SyntheticProblems("test", n_test=0), ProblemFile(str(empty)), ProblemFile(str(one), exclude=[str(one)])):
        with pytest.raises(NoProblemsError, match="no problems to run"):
            ProblemDataModule(source).setup("predict")
    dm = ProblemDataModule(ProblemFile(str(one)))
    dm.setup("predict")
    assert [p.answer for p in dm.problems] == ["3"]


@pytest.mark.parametrize("size", [0, -2])
def test_batch_sizes_must_be_positive(size):
    with pytest.raises(ValueError, match=rf"batch_size={size} must be >= 1"):
        ProblemDataModule(batch_size=size)
    with pytest.raises(ValueError, match=rf"^batch_size={size} must be >= 1"):
        CurriculumDataModule(batch_size=size)
    with pytest.raises(ValueError, match=rf"val_batch_size={size} must be >= 1"):
        CurriculumDataModule(val_batch_size=size)
    with pytest.raises(ValueError, match=rf"batch_size={size} must be >= 1"):
        LatentRMDataModule("groups", batch_size=size)


@pytest.mark.parametrize("name", ["beam_width", "dvts_width"])
def test_search_width_errors_say_which_condition_failed(name):
    # each message names its own condition only (these fail before any model is loaded)
    with pytest.raises(ValueError) as info:
        TTSPredictor(n_samples=64, **{name: 4})
    assert str(info.value).startswith(f"{name}=4 needs a LatentRM") and "divide" not in str(info.value)
    with pytest.raises(ValueError) as info:
        TTSPredictor(n_samples=64, latent_rm="quickstart", **{name: 5})
    assert str(info.value).startswith(f"{name}=5 must divide n_samples=64") and "LatentRM" not in str(info.value)
    with pytest.raises(ValueError, match=rf"^{name}=0 must be >= 1$"):
        TTSPredictor(n_samples=64, latent_rm="quickstart", **{name: 0})
