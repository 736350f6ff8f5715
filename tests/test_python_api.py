"""The Python API: the docs page's example runs as written and prints what the page shows, and
``latentlit.sample`` gives the trajectories, answers and scores of a ``latentlit predict`` run."""

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import latentlit
from latentlit.cli import main
from latentlit.runs.files import read_latents

PAGE = Path(__file__).resolve().parents[1] / "docs" / "python-api.md"


def test_the_docs_example_prints_what_the_page_shows():
    text = PAGE.read_text()
    code = re.search(r"```python\n(.*?)```", text, re.S).group(1)
    shown = re.search(r"```python\n.*?```.*?```text\n(.*?)```", text, re.S).group(1)
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600,
                         cwd=PAGE.parents[1])
    assert run.returncode == 0, run.stderr
    assert run.stdout == shown


def test_sample_gives_the_records_of_predict(tiny_backbone_dir, tmp_path):
    out = tmp_path / "run"
    main(["predict", "--model", "latentlit.lit.TTSPredictor", "--model.backbone", str(tiny_backbone_dir),
          "--model.sampler", "latentlit.sampling.MCDropout", "--model.sampler.p", "0.3", "--model.n_samples", "5",
          "--model.max_new_tokens", "3", "--model.seed", "4", "--model.output_dir", str(out),
          "--data", "latentlit.lit.ProblemDataModule", "--data.problems", "latentlit.data.sources.SyntheticProblems",
          "--data.problems.n_train", "10", "--data.problems.n_val", "2", "--data.problems.n_test", "4",
          "--data.batch_size", "3", "--model.save_latents", "true", "--trainer.logger", "false",
          "--trainer.enable_progress_bar", "false"])
    records = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    saved = {}
    for f in sorted((out / "latents").glob("*.safetensors")):
        saved.update(read_latents(f))
    backbone = latentlit.load_backbone(tiny_backbone_dir)
    questions = [r["question"] for r in records]
    runs = latentlit.sample(backbone, questions, ids=[r["id"] for r in records], n_samples=5,
                            sampler=latentlit.MCDropout(p=0.3), seed=4, max_new_tokens=3)
    assert [t.texts for t in runs] == [r["texts"] for r in records]
    assert [t.answers for t in runs] == [r["answers"] for r in records]
    for t, r in zip(runs, records):
        torch.testing.assert_close(t.latents, saved[r["id"]], rtol=0, atol=1e-5)  # other batch shapes: float noise
    # another seed is another draw; ids default to the texts: the question's place does not matter
    other = latentlit.sample(backbone, questions, n_samples=5, sampler=latentlit.MCDropout(p=0.3), seed=5,
                             max_new_tokens=3)
    assert all(not torch.allclose(a.latents, b.latents) for a, b in zip(other, runs))
    alone = latentlit.sample(backbone, [questions[2]], n_samples=5, sampler=latentlit.MCDropout(p=0.3), seed=5,
                             max_new_tokens=3)
    torch.testing.assert_close(alone[0].latents, other[2].latents, rtol=0, atol=1e-5)
    assert alone[0].id == questions[2]


def test_sample_refuses_what_predict_refuses(tiny_backbone_dir):
    backbone = latentlit.load_backbone(tiny_backbone_dir)
    with pytest.raises(ValueError, match="2 ids for 1 questions"):
        latentlit.sample(backbone, ["Ann has 3 ."], ids=["a", "b"])
    with pytest.raises(ValueError, match="no LatentRM scores"):
        latentlit.sample(backbone, ["Ann has 3 ."], n_samples=2)[0].best_of_n()
    with pytest.raises(ValueError, match=r"positions, but the model holds"):
        latentlit.sample(backbone, ["Ann has 3 . " * 400], n_samples=1)


def test_the_api_names_resolve_and_unknown_names_do_not():
    assert sorted(latentlit.__all__) == sorted(latentlit._API)
    for name in latentlit.__all__:
        assert getattr(latentlit, name) is not None
    with pytest.raises(AttributeError, match="no attribute 'sampel'"):
        latentlit.sampel  # noqa: B018
