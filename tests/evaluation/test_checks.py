"""Numbers a prediction run must not get silently wrong (issue 10, items 2 and 4): non-finite
LatentRM scores, an answer format the checkpoint was not trained with, outputs without a
parsable answer, questions longer than the model's positions."""

from __future__ import annotations

import json
import math
import warnings

import lightning as L
import pytest
import torch

from latentlit.cli import main
from latentlit.data.answers import answer_format_warning
from latentlit.data.sources import SyntheticProblems
from latentlit.evaluation.checks import COUNTS, record_counts, summary_warnings
from latentlit.lit import ProblemDataModule, TTSPredictor
from latentlit.models.checkpoints import load_backbone
from latentlit.sampling import AGN
from latentlit.testing.tiny import tiny_backbone


def _run(model: TTSPredictor, limit: int = 4) -> tuple[list[dict], dict, list[str]]:
    trainer = L.Trainer(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False, enable_model_summary=False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.predict(model, datamodule=ProblemDataModule(SyntheticProblems("test", limit=limit), batch_size=2))
    out = model.output_path
    records = [json.loads(x) for x in (out / "predictions.jsonl").read_text().splitlines()]
    return records, json.loads((out / "metrics.json").read_text()), [str(w.message) for w in caught]


# ---------------------------------------------------------------------- item 4: answer format
def test_format_override_warns_and_no_answer_fraction_is_recorded(tmp_path):
    right = TTSPredictor(backbone="quickstart", sampler=AGN(sigma=0.5), n_samples=2, max_new_tokens=6,
                         output_dir=str(tmp_path / "coconut"))
    records, metrics, caught = _run(right)
    assert metrics["config"]["answer_format"] == "coconut"
    assert metrics["metrics"]["no_answer_greedy"] == 0.0 and metrics["metrics"]["no_answer_samples"] == 0.0
    assert metrics["metrics"]["greedy_accuracy"] == 1.0  # the shipped backbone gets these four right
    assert not any("no parsable answer" in w for w in caught)

    with pytest.warns(UserWarning, match=r"answer_format='gsm8k' overrides the format the checkpoint was trained with \('coconut'\)"):
        wrong = TTSPredictor(backbone="quickstart", sampler=AGN(sigma=0.5), n_samples=2, max_new_tokens=6,
                             answer_format="gsm8k", output_dir=str(tmp_path / "gsm8k"))
    records_g, metrics_g, caught = _run(wrong)
    # same texts, read in the wrong format: no answers, and the run says so
    assert [r["greedy"]["text"] for r in records_g] == [r["greedy"]["text"] for r in records]
    assert metrics_g["metrics"]["greedy_accuracy"] == 0.0
    assert metrics_g["metrics"]["no_answer_greedy"] == 1.0 and metrics_g["metrics"]["no_answer_samples"] == 1.0
    assert any("100.0% of the greedy answers have no parsable answer" in w for w in caught)
    assert any("100.0% of the sampled answers have no parsable answer" in w for w in caught)
    # independent recomputation from the records
    assert metrics_g["metrics"]["no_answer_samples"] == sum(a is None for r in records_g for a in r["answers"]) / 8


def test_run_check_functions():
    assert answer_format_warning(None, "coconut") is None and answer_format_warning("coconut", "coconut") is None
    assert "'colar'" in answer_format_warning("colar", "coconut") and "'coconut'" in answer_format_warning("colar", "coconut")
    record = {"greedy": {"answer": None}, "answers": ["1", None, None], "rm_scores": [None, 0.5, None],
              "beam_search": {"nonfinite_scores": 3}}
    assert record_counts(record) == {"no_answer_greedy": 1, "no_answer_samples": 2, "nonfinite_rm_scores": 2,
                                     "nonfinite_beam_scores": 3, "rm_near_ties": 0}  # one finite score: no tie
    # a best-of-N winner whose runner-up is within RM_TIE_TOLERANCE (1e-4) is a near tie; nulls are not scores
    near = {"greedy": {"answer": "1"}, "answers": ["1"] * 4}
    assert record_counts({**near, "rm_scores": [0.2, 1.0, None, 0.99995]})["rm_near_ties"] == 1
    assert record_counts({**near, "rm_scores": [1.0, 1.0, 0.5, 0.1]})["rm_near_ties"] == 1  # exact tie
    assert record_counts({**near, "rm_scores": [0.2, 1.0, None, 0.9998]})["rm_near_ties"] == 0
    assert record_counts({**near, "rm_scores": [0.99995, 0.5, 1.0]})["rm_near_ties"] == 1  # order-free
    assert set(record_counts({"greedy": {"answer": "1"}, "answers": []})) == set(COUNTS)
    assert summary_warnings({"no_answer_greedy": 0.1, "no_answer_samples": 0.0}, {}) == []  # at the threshold: quiet
    assert len(summary_warnings({"no_answer_greedy": 0.11, "no_answer_samples": 0.5}, {"nonfinite_rm_scores": 4})) == 3


# ---------------------------------------------------------------------- item 2: non-finite RM scores
@pytest.fixture(scope="module")
def rm_dir(tiny_backbone_dir, tmp_path_factory):
    from latentlit.models.latent_rm import LatentRM

    path = tmp_path_factory.mktemp("rm") / "rm"
    LatentRM.from_backbone(load_backbone(tiny_backbone_dir)).save_pretrained(path)
    return path


def test_non_finite_rm_scores_never_win_and_are_counted(tiny_backbone_dir, rm_dir, tmp_path):
    n = 4
    model = TTSPredictor(backbone=str(tiny_backbone_dir), sampler=AGN(sigma=1.0), n_samples=n, latent_rm=str(rm_dir),
                         beam_width=2, max_new_tokens=2, output_dir=str(tmp_path / "out"))
    score_groups, make_scorer = model.rm.score_groups, model._step_scorer

    def poisoned_groups(questions, latents, masks=None, **options):
        steps = score_groups(questions, latents, masks, **options).clone()
        steps[:, 0, 0] = math.nan  # an RM that diverged on sample 0
        steps[:, 1, -1] = math.inf  # an fp16 overflow on sample 1 (sum -> +inf: it would win)
        return steps

    class PoisonedScorer:
        def __init__(self, inner):
            self.inner = inner

        def reset(self, owners):
            self.inner.reset(owners)

        def extend(self, parents, latents):
            s = self.inner.extend(parents, latents).clone()
            s[::n] = math.nan  # the first of each question's B x K = 4 candidates
            return s

    model.rm.score_groups = poisoned_groups
    model._step_scorer = lambda questions: PoisonedScorer(make_scorer(questions))
    records, metrics, caught = _run(model)
    for r in records:
        assert r["rm_scores"][0] is None and r["rm_scores"][1] is None
        assert all(s is not None for s in r["rm_scores"][2:])
        assert r["best_of_n"]["index"] not in (0, 1)
        assert r["best_of_n"]["index"] == 2 + max(range(n - 2), key=lambda i: (r["rm_scores"][2 + i], -i))
        assert r["beam_search"]["score"] is not None and r["beam_search"]["nonfinite_scores"] == 3  # one per step, T = 3
    counts = metrics["counts"]
    assert counts["nonfinite_rm_scores"] == 2 * len(records) == sum(record_counts(r)["nonfinite_rm_scores"] for r in records)
    assert counts["nonfinite_beam_scores"] == sum(r["beam_search"]["nonfinite_scores"] for r in records) > 0
    assert any("8 LatentRM trajectory scores were NaN/inf" in w for w in caught)
    assert all(not isinstance(v, float) or math.isfinite(v) for v in metrics["metrics"].values())


def test_all_scores_non_finite_gives_no_answer(tiny_backbone_dir, rm_dir, tmp_path):
    model = TTSPredictor(backbone=str(tiny_backbone_dir), sampler=AGN(sigma=1.0), n_samples=3, latent_rm=str(rm_dir),
                         max_new_tokens=2, output_dir=str(tmp_path / "out"))
    model.rm.score_groups = lambda questions, latents, masks=None, **options: torch.full(latents.shape[:3], math.nan)
    records, metrics, _ = _run(model, limit=2)
    for r in records:
        assert r["best_of_n"] == {"answer": None, "correct": False, "index": None}
        assert r["weighted_vote"] == {"answer": None, "correct": False}
    assert metrics["metrics"]["best_of_n@3"] == 0.0 and metrics["counts"]["nonfinite_rm_scores"] == 6


# ---------------------------------------------------------------------- item 4: length check
def _endless(num_latents: int = 3):
    """A tiny backbone that never emits eos (only number tokens are scored), so that decoding runs
    all max_new_tokens positions."""
    bb = tiny_backbone(num_latents=num_latents)
    numbers = [i for t, i in bb.tokenizer.get_vocab().items() if t.isdigit()]
    head = torch.zeros(len(bb.tokenizer), bb.hidden_size)
    head[numbers] = torch.randn(len(numbers), bb.hidden_size, generator=torch.Generator().manual_seed(1))
    bb.lm.config.tie_word_embeddings = False
    bb.lm.lm_head.weight = torch.nn.Parameter(head)
    return bb


def test_length_check_both_sides():
    bb = _endless()
    question = SyntheticProblems("test", limit=1).load()[0].question
    prompt = len(bb.encode_prompts([question])[0][0])
    limit = bb.max_positions
    assert limit == 256
    fits = limit - prompt - 3
    bb.check_lengths(["q"], [question], fits)  # exactly the limit: fine, and it runs
    out = bb.generate([question], max_new_tokens=fits)
    assert out.answer_ids.shape[1] == fits
    with pytest.raises(IndexError):  # what the check prevents: a raw failure in the position embedding
        bb.generate([question], max_new_tokens=fits + 1)
    with pytest.raises(ValueError, match=rf"question q: its prompt is {prompt} tokens, \+ 3 latent steps \+ max_new_tokens "
                                         rf"{fits + 1} = {limit + 1} positions, but the model holds {limit}"):
        bb.check_lengths(["q"], [question], fits + 1)


def test_predict_refuses_too_long_before_any_work(tmp_path):
    out = tmp_path / "out"
    with pytest.raises(ValueError, match=r"question syn-test-00000: its prompt is \d+ tokens, \+ 4 latent steps \+ "
                                         r"max_new_tokens 200 = \d+ positions, but the model holds 128"):
        main(["predict", "--model", "latentlit.lit.TTSPredictor", "--model.n_samples", "1", "--model.max_new_tokens", "200",
              "--model.output_dir", str(out), "--data", "latentlit.lit.ProblemDataModule", "--data.problems",
              "latentlit.data.sources.SyntheticProblems", "--data.problems.limit", "2", "--trainer.logger", "false",
              "--trainer.enable_progress_bar", "false"])
    assert not (out / "predictions.jsonl").exists()
