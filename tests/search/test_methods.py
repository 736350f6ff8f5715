"""The table of search methods: a new method is its module plus one entry in ``SEARCHES``; the
predictor runs it, stores its fields, latent steps and compute, and names its settings, without an
edit to ``TTSPredictor``."""

import json

import lightning as L
import pytest

from latentlit.data.sources import SyntheticProblems
from latentlit.lit import ProblemDataModule, TTSPredictor
from latentlit.runs.directory import RUN_FILE
from latentlit.sampling import AGN
from latentlit.search import DVTS, SEARCHES, BeamSearch, Found, Search, enabled_searches
from latentlit.search.nway import sample_questions


class OneMore(Search):
    """A toy method: one extra trajectory per question, drawn with another seed."""

    name = "one_more"

    def __init__(self, seed_offset: int = 1):
        self.seed_offset = seed_offset

    def settings(self) -> dict:
        return {"one_more": {"seed_offset": self.seed_offset}}

    def run(self, batch):
        samples = sample_questions(batch.backbone, batch.sampler, batch.ids, batch.questions, 1,
                                   batch.seed + self.seed_offset, max_new_tokens=batch.max_new_tokens)
        found = []
        for s, gold in zip(samples, batch.golds):
            answer = batch.parse(s.texts[0])
            found.append(Found({"one_more": {"answer": answer, "text": s.texts[0]}}, int(s.latent_mask.sum()),
                               {"trajectories": 1}))
        return found


@pytest.fixture
def one_more_registered(monkeypatch):
    monkeypatch.setitem(SEARCHES, "one_more", OneMore)


def _predict(tmp_path, backbone, name, **options):
    model = TTSPredictor(backbone=str(backbone), sampler=AGN(sigma=2.0), n_samples=4, max_new_tokens=2,
                         output_dir=str(tmp_path / name), **options)
    data = ProblemDataModule(SyntheticProblems(n_train=10, n_val=2, n_test=3), batch_size=2)
    trainer = L.Trainer(logger=False, enable_progress_bar=False, enable_checkpointing=False,
                        default_root_dir=str(tmp_path))
    trainer.predict(model, datamodule=data, return_predictions=False)
    records = [json.loads(line) for line in (tmp_path / name / "predictions.jsonl").read_text().splitlines()]
    return model, records, json.loads((tmp_path / name / "metrics.json").read_text())


def test_a_method_in_the_table_reaches_records_settings_and_metrics(one_more_registered, tiny_backbone_dir, tmp_path):
    model, records, summary = _predict(tmp_path, tiny_backbone_dir, "with", searches=[OneMore(seed_offset=3)])
    plain, plain_records, _ = _predict(tmp_path, tiny_backbone_dir, "plain")
    assert len(records) == 3
    for r, p in zip(records, plain_records):
        assert set(r["one_more"]) == {"answer", "text"}
        assert r["compute"]["one_more"] == {"trajectories": 1}
        assert 0 <= r["latent_steps"]["one_more"] == sum(r["compute"]["latents"]) // 4  # one trajectory of fixed T
        # the method adds its fields and leaves the samples' alone
        assert {k: v for k, v in r.items() if k not in ("one_more",)} == {
            **{k: v for k, v in p.items()}, "latent_steps": {**p["latent_steps"], "one_more": r["latent_steps"]["one_more"]},
            "compute": {**p["compute"], "one_more": {"trajectories": 1}}}
    settings = json.loads((tmp_path / "with" / RUN_FILE).read_text())
    assert settings["one_more"] == {"seed_offset": 3} and "one_more" not in json.loads((tmp_path / "plain" / RUN_FILE).read_text())
    assert summary["config"]["one_more"] == {"seed_offset": 3}
    steps = summary["metrics"]["latent_steps_per_question"]
    assert steps["one_more"] == pytest.approx(sum(r["latent_steps"]["one_more"] for r in records) / 3, abs=1e-4)
    assert model.run_dir_name() != plain.run_dir_name()  # another setting, another default directory


def test_the_shorthands_are_the_table_entries(tiny_backbone_dir, tmp_path):
    rm = "quickstart"
    # the shipped RM reads 128-dim latents: check on the shipped backbone, no run needed
    by_option = TTSPredictor(n_samples=8, latent_rm=rm, beam_width=4, dvts_width=2)
    by_object = TTSPredictor(n_samples=8, latent_rm=rm, searches=[DVTS(width=2), BeamSearch(width=4)])
    assert by_option.run_settings() == by_object.run_settings()
    assert [s.name for s in by_object.searches] == ["beam_search", "dvts"]  # table order, not the order given
    assert by_option.run_settings()["beam_width"] == 4 and by_option.run_settings()["dvts_width"] == 2
    plain = TTSPredictor(n_samples=8).run_settings()
    assert plain["beam_width"] is None and "dvts_width" not in plain  # as in the run.json of earlier versions


def test_a_method_given_twice_or_outside_the_table_is_refused():
    with pytest.raises(ValueError, match=r"'beam_search' is given twice .*beam_width"):
        enabled_searches({"beam_width": 2}, [BeamSearch(width=2)], n_samples=4, has_latent_rm=True)
    with pytest.raises(ValueError, match=r"OneMore \('one_more'\) is not in latentlit.search.SEARCHES"):
        enabled_searches({}, [OneMore()], n_samples=4)
    with pytest.raises(ValueError, match=r"beam_width=3 must divide n_samples=4"):
        enabled_searches({"beam_width": 3}, n_samples=4, has_latent_rm=True)
    with pytest.raises(ValueError, match=r"dvts_width=2 needs a LatentRM"):
        enabled_searches({"dvts_width": 2}, n_samples=4, has_latent_rm=False)
    assert enabled_searches({"beam_width": None, "dvts_width": None}, n_samples=4) == []
