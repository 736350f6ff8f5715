"""Predict and best-of-N end to end on tiny checkpoints in the released layouts."""

import json
import shutil

import pytest
import torch

from latentlit.cli import main
from latentlit.models.latent_rm import LatentRM
from latentlit.runs.files import read_latents
from latentlit.testing.checkpoints import (
    write_tiny_coconut,
    write_tiny_codi,
    write_tiny_colar,
    write_tiny_released_latentrm,
)


def _predict(backbone, out, *extra):
    main(["predict", "--model", "latentlit.lit.TTSPredictor", "--model.backbone", str(backbone),
          "--model.n_samples", "4", "--model.max_new_tokens", "3", "--model.output_dir", str(out),
          "--data", "latentlit.lit.ProblemDataModule", "--data.problems", "latentlit.data.sources.SyntheticProblems",
          "--data.problems.n_train", "20", "--data.problems.n_val", "4", "--data.problems.n_test", "3",
          "--trainer.logger", "false", "--trainer.enable_progress_bar", "false",
          "--trainer.default_root_dir", str(out.parent), *extra])
    lines = [json.loads(x) for x in (out / "predictions.jsonl").read_text().splitlines()]
    return lines, json.loads((out / "metrics.json").read_text())


@pytest.mark.parametrize("writer,sampler", [
    (write_tiny_coconut, ["--model.sampler", "latentlit.sampling.MCDropout", "--model.sampler.p", "0.2"]),
    (write_tiny_codi, ["--model.sampler", "latentlit.sampling.AGN", "--model.sampler.sigma", "1.4",
                       "--model.sampler.relative", "false"]),
    (write_tiny_colar, ["--model.sampler", "latentlit.sampling.MCDropout", "--model.sampler.p", "0.03",
                        "--model.num_latents", "6"]),
])
def test_predict_runs_on_released_layouts(tmp_path, writer, sampler):
    ckpt = writer(tmp_path / "ckpt")
    records, metrics = _predict(ckpt, tmp_path / "out", *sampler)
    assert len(records) == 3 and all(len(r["answers"]) == 4 for r in records)
    assert metrics["config"]["n_samples"] == 4 and "coverage@4" in metrics["metrics"]


def test_best_of_n_and_beam_search_with_released_latentrm(tmp_path, capsys):
    ckpt = write_tiny_coconut(tmp_path / "coconut")
    rm_dir = write_tiny_released_latentrm(tmp_path / "rm")
    rm = LatentRM.from_pretrained(rm_dir)
    assert rm.prompt_template == "{question}\n<|start-latent|>"
    records, metrics = _predict(ckpt, tmp_path / "out", "--model.sampler", "latentlit.sampling.AGN",
                                "--model.latent_rm", str(rm_dir), "--model.beam_width", "2")
    for r in records:
        assert len(r["rm_scores"]) == 4
        assert r["best_of_n"]["index"] == max(range(4), key=lambda i: (r["rm_scores"][i], -i))
        assert "beam_search" in r and "weighted_vote" in r
    for key in ("best_of_n@4", "weighted_vote@4", "beam_search@4"):
        assert 0.0 <= metrics["metrics"][key] <= 1.0
    m = metrics["metrics"]
    printed = capsys.readouterr().out
    for label, key in (("random pick", "random@4"), ("best-of-N", "best_of_n@4"), ("weighted vote", "weighted_vote@4"),
                       ("beam search", "beam_search@4")):
        assert f"  {label:<16}{100 * m[key]:>6.1f} [" in printed


def test_released_latentrm_scores_match_transformers_reference(tmp_path):
    from safetensors.torch import load_file
    from transformers import GPT2Config, GPT2Model

    rm_dir = write_tiny_released_latentrm(tmp_path / "rm")
    rm = LatentRM.from_pretrained(rm_dir)
    ref = GPT2Model(GPT2Config.from_pretrained(rm_dir)).eval()
    state = load_file(str(rm_dir / "model.safetensors"))
    ref.load_state_dict({k[len("transformer."):]: v for k, v in state.items() if k.startswith("transformer.")}, strict=False)
    latents = torch.randn(1, 3, ref.config.n_embd)
    ids, mask = rm.encode_prompts(["a b c"])
    with torch.no_grad():
        ours = rm(ids, mask, latents)
        embeds = torch.cat([ref.wte(ids), latents], 1)
        hidden = ref(inputs_embeds=embeds).last_hidden_state[:, -3:]
        expected = hidden @ state["classifier.weight"].T + state["classifier.bias"]
    assert torch.allclose(ours, expected.squeeze(-1), atol=1e-5)


def test_latentrm_with_misnamed_tensor_fails_naming_it(tmp_path):
    from safetensors.torch import load_file, save_file

    rm_dir = write_tiny_released_latentrm(tmp_path / "rm")
    state = load_file(str(rm_dir / "model.safetensors"))
    state["classifierX.weight"] = state.pop("classifier.weight")
    save_file(state, str(rm_dir / "model.safetensors"))
    with pytest.raises(ValueError, match="missing tensor.*classifier.weight.*unexpected tensor.*classifierX.weight"):
        LatentRM.from_pretrained(rm_dir)


def test_latentrm_without_latent_tokens_or_of_another_width_is_refused(tmp_path):
    from latentlit.lit.predictor import TTSPredictor

    rm_dir = write_tiny_released_latentrm(tmp_path / "rm")
    plain = tmp_path / "rm_plain"
    shutil.copytree(rm_dir, plain)
    tok = json.loads((plain / "tokenizer.json").read_text())
    tok["added_tokens"] = [t for t in tok["added_tokens"] if "latent" not in t["content"]]
    (plain / "tokenizer.json").write_text(json.dumps(tok))
    config = json.loads((plain / "tokenizer_config.json").read_text())
    for key in ("extra_special_tokens", "additional_special_tokens", "added_tokens_decoder"):
        config.pop(key, None)
    (plain / "tokenizer_config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=str(plain)):
        LatentRM.from_pretrained(plain)
    # an RM for the 128-wide quickstart backbone cannot score the 32-wide tiny COCONUT latents
    with pytest.raises(ValueError, match=r"reads 128-dim latents but backbone .* writes 32-dim"):
        TTSPredictor(backbone=str(write_tiny_coconut(tmp_path / "coconut")), latent_rm="quickstart")


def test_save_latents_writes_trajectories(tmp_path):
    ckpt = write_tiny_coconut(tmp_path / "coconut")
    records, _ = _predict(ckpt, tmp_path / "out", "--model.sampler", "latentlit.sampling.AGN", "--model.save_latents", "true")
    files = sorted((tmp_path / "out" / "latents").glob("*.safetensors"))
    tensors = {k: v for f in files for k, v in read_latents(f).items()}
    assert sorted(tensors) == sorted(r["id"] for r in records)
    latents = next(iter(tensors.values()))
    assert latents.shape == (4, 6, 32)  # N, T (COCONUT), width of the tiny checkpoint
    assert latents[0].ne(latents[1]).any()  # AGN: the samples differ


def test_best_of_n_on_codi_with_a_latentrm_initialised_from_it(tmp_path):
    from latentlit.models.checkpoints import load_backbone

    ckpt = write_tiny_codi(tmp_path / "codi")
    rm_dir = tmp_path / "rm"
    LatentRM.from_backbone(load_backbone(ckpt)).save_pretrained(rm_dir)
    records, metrics = _predict(ckpt, tmp_path / "out", "--model.sampler", "latentlit.sampling.AGN",
                                "--model.sampler.sigma", "1.4", "--model.sampler.relative", "false",
                                "--model.latent_rm", str(rm_dir))
    assert all(len(r["rm_scores"]) == 4 for r in records)
    assert "best_of_n@4" in metrics["metrics"]


def test_resume_refuses_other_settings(tmp_path):
    import pytest

    ckpt = write_tiny_coconut(tmp_path / "coconut")
    _predict(ckpt, tmp_path / "out", "--model.sampler", "latentlit.sampling.AGN", "--model.sampler.sigma", "1.0")
    with pytest.raises(ValueError, match=r"other settings.*sigma"):
        _predict(ckpt, tmp_path / "out", "--model.sampler", "latentlit.sampling.AGN", "--model.sampler.sigma", "0.5")
    with pytest.raises(ValueError, match=r"other settings.*seed"):
        _predict(ckpt, tmp_path / "out", "--model.sampler", "latentlit.sampling.AGN", "--model.sampler.sigma", "1.0",
                 "--model.seed", "3")


def test_sigterm_stops_predict_after_the_current_batch(tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import time

    ckpt = write_tiny_coconut(tmp_path / "coconut")
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "latentlit.cli", "predict", "--model", "latentlit.lit.TTSPredictor",
           "--model.backbone", str(ckpt), "--model.sampler", "latentlit.sampling.AGN", "--model.n_samples", "8",
           "--model.max_new_tokens", "3", "--model.output_dir", str(out), "--data", "latentlit.lit.ProblemDataModule",
           "--data.problems", "latentlit.data.SyntheticProblems", "--data.problems.n_train", "20",
           "--data.problems.n_val", "4", "--data.problems.n_test", "400", "--data.batch_size", "1",
           "--trainer.logger", "false", "--trainer.enable_progress_bar", "false", "--trainer.default_root_dir", str(tmp_path)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    path = out / "predictions.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and not (path.exists() and path.read_text().count("\n") >= 2):
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    stdout, _ = proc.communicate(timeout=60)
    lines = path.read_text().splitlines()
    assert proc.returncode != 0
    assert f"stopped (SIGTERMException); results written so far are in {out}: run the same command again" in stdout
    assert stdout.count("[latentlit] stopped") == 1, stdout  # said once
    assert 2 <= len(lines) < 400  # stopped early, every written line whole
    assert all(json.loads(x)["id"] for x in lines)


def test_colar_layout_label_rm_and_every_aggregator(tmp_path):
    """CoLaR layout (Llama, prompt without latent tokens, BOS-adding tokenizer, dynamic stop):
    labelling, a LatentRM initialised from it (a LlamaModel), and best-of-N / weighted vote /
    beam search / DVTS in predict."""
    from transformers import LlamaModel

    from latentlit.data.synthetic import generate_problems
    from latentlit.models.checkpoints import detect_layout, load_backbone
    from latentlit.sampling import AGN
    from latentlit.scoring.rollouts import label_problems

    ckpt = write_tiny_colar(tmp_path / "colar")
    backbone = load_backbone(ckpt, num_latents=6)
    groups, _ = label_problems(backbone, AGN(sigma=1.0), generate_problems(2, seed=3), n_samples=2, n_rollouts=2,
                               drop_all_correct=False, drop_all_wrong=False, max_new_tokens=3)
    assert all(g.latents.shape[1] <= 6 and g.latent_mask.any() for g in groups)
    rm_dir = tmp_path / "rm"
    LatentRM.from_backbone(backbone).save_pretrained(rm_dir)
    config = json.loads((rm_dir / "config.json").read_text())
    assert "latent_embedding_std" not in config and "latent_intermediate_size" not in config
    with pytest.raises(ValueError, match="is a LatentRM"):
        detect_layout(rm_dir)  # an RM directory is never taken for a CoLaR backbone
    rm = LatentRM.from_pretrained(rm_dir)
    assert isinstance(rm.transformer, LlamaModel) and rm.prompt_template.startswith("Question: {question}")
    records, metrics = _predict(ckpt, tmp_path / "out", "--model.sampler", "latentlit.sampling.AGN",
                                "--model.num_latents", "6", "--model.latent_rm", str(rm_dir), "--model.beam_width", "2",
                                "--model.dvts_width", "2")
    for r in records:
        assert len(r["rm_scores"]) == 4 and {"beam_search", "dvts", "dvts_vote", "weighted_vote"} <= set(r)
        assert 0 < r["latent_steps"]["dvts"] <= 4 * 6
    for key in ("best_of_n@4", "weighted_vote@4", "beam_search@4", "dvts@4", "dvts_vote@4"):
        assert metrics["metrics"][key] == pytest.approx(sum(r[key[:-2]]["correct"] for r in records) / 3, abs=1e-6)
