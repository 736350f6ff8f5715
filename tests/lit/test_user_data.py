"""Inputs that would corrupt or pollute a run (issue: "ids that cannot corrupt files"): question ids
are user data and never a file-format key; an empty question is refused at load, by id; every
entry point that tokenizes a question (predict, Python, labelling, LatentRM scoring) refuses words
the tokenizer cannot read, naming them."""

import json

import pytest
import torch

import latentlit
from latentlit.cli import main
from latentlit.data.loaders import DataFormatError, load_problems
from latentlit.models.checkpoints import load_backbone
from latentlit.runs.files import read_latents, save_latents
from latentlit.testing.tiny import write_tiny_backbone

ODD_IDS = ["__metadata__", "a/b", "ü-7", "0", "1", " "]


def test_latents_files_hold_any_id(tmp_path):
    latents = {qid: torch.full((2, 3, 4), float(i)) for i, qid in enumerate(ODD_IDS)}
    save_latents(latents, tmp_path / "x.safetensors")
    back = read_latents(tmp_path / "x.safetensors")
    assert list(back) == ODD_IDS
    for qid in ODD_IDS:
        assert torch.equal(back[qid], latents[qid])


def test_a_question_id_named_like_the_file_header_does_not_lose_the_batch(tmp_path):
    data = tmp_path / "odd.jsonl"
    data.write_text("".join(json.dumps({"id": qid, "question": "Ann has 3 apples . buys 2 . how many ?", "answer": "5"})
                            + "\n" for qid in ["__metadata__", "plain"]))
    backbone = write_tiny_backbone(tmp_path / "backbone")
    out = tmp_path / "out"
    main(["predict", "--model", "latentlit.lit.TTSPredictor", "--model.backbone", str(backbone),
          "--model.sampler", "latentlit.sampling.AGN", "--model.n_samples", "2", "--model.max_new_tokens", "2",
          "--model.save_latents", "true", "--model.output_dir", str(out), "--data", "latentlit.lit.ProblemDataModule",
          "--data.problems", "latentlit.data.sources.ProblemFile", "--data.problems.path", str(data),
          "--trainer.logger", "false", "--trainer.enable_progress_bar", "false"])
    saved = {k: v for f in (out / "latents").glob("*.safetensors") for k, v in read_latents(f).items()}
    assert sorted(saved) == ["__metadata__", "plain"] and saved["__metadata__"].shape == (2, 3, 32)


@pytest.mark.parametrize("question", ["", "   ", "\n\t"])
def test_an_empty_question_is_refused_at_load_by_id(tmp_path, question):
    data = tmp_path / "q.jsonl"
    data.write_text(json.dumps({"id": "ok", "question": "Ann has 3 .", "answer": "3"}) + "\n"
                    + json.dumps({"id": "blank", "question": question, "answer": "4"}) + "\n")
    with pytest.raises(DataFormatError, match=r"q.jsonl: 1 problem\(s\) with an empty question \(first: line 2 \(blank\)\)"):
        load_problems(data)
    gsm = tmp_path / "g.jsonl"
    gsm.write_text(json.dumps({"question": question, "answer": "#### 4"}) + "\n")
    with pytest.raises(DataFormatError, match=r"empty question \(first: line 1 \(g-0\)\)"):
        load_problems(gsm)


BANANAS = "Leo has 49 bananas . gives away 6 . how many ?"


def test_every_entry_point_refuses_words_the_tokenizer_cannot_read(tmp_path):
    backbone = load_backbone("quickstart")  # a word-level tokenizer: "bananas" is not in it
    with pytest.raises(ValueError, match=r"question 'Leo has 49 bananas .*'bananas'"):
        backbone.generate([BANANAS])
    with pytest.raises(ValueError, match=r"question 'q7' has words .*\['bananas'\]"):
        latentlit.sample(backbone, [BANANAS], ids=["q7"], n_samples=2)
    rm = latentlit.load_latent_rm("quickstart")
    with pytest.raises(ValueError, match=r"'bananas'"):
        rm.score_groups([BANANAS], torch.zeros(1, 2, 4, 128))
    with pytest.raises(ValueError, match=r"question 'e' is empty"):
        latentlit.sample(backbone, [" "], ids=["e"], n_samples=1)
    # what it can read runs
    fine = "Leo has 49 apples . gives away 6 . how many ?"
    assert len(backbone.generate([fine], max_new_tokens=4).answers_text) == 1


def test_labelling_refuses_them_before_any_work(tmp_path, capsys, monkeypatch):
    data = tmp_path / "b.jsonl"
    data.write_text(json.dumps({"id": "b1", "question": BANANAS, "answer": "43"}) + "\n")
    monkeypatch.delenv("LATENTLIT_DEBUG", raising=False)
    with pytest.raises(SystemExit) as exit_info:
        main(["predict", "--config", "configs/quickstart/label.yaml", "--data_file", str(data), "--output_dir",
              str(tmp_path / "groups"), "--trainer.logger", "false"])
    assert exit_info.value.code == 2
    assert "question 'b1' has words" in capsys.readouterr().err and not (tmp_path / "groups").exists()


def test_fit_refuses_validation_questions_its_tokenizer_cannot_read_before_training(tmp_path):
    import lightning as L

    from latentlit.data.sources import SyntheticProblems
    from latentlit.lit import CurriculumDataModule, LatentBackboneModule

    sizes = {"n_train": 16, "n_val": 8, "n_test": 8}  # a word tokenizer built from 16 problems lacks val's words
    dm = CurriculumDataModule(train=SyntheticProblems("train", **sizes), val=SyntheticProblems("val", **sizes), batch_size=8)
    module = LatentBackboneModule(arch={"n_layer": 1, "n_embd": 32, "n_head": 2, "n_positions": 128}, num_stages=1,
                                  thoughts_per_step=2)
    trainer = L.Trainer(max_steps=5, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, default_root_dir=tmp_path)
    with pytest.raises(ValueError, match=r"question 'syn-val-\d+' has words .* reads as its unknown token"):
        trainer.fit(module, datamodule=dm)
    assert trainer.global_step == 0  # refused before any training step
