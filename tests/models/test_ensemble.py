"""LatentRM ensembles: the mean of the members' scores, in search too; their directory and errors."""

from __future__ import annotations

import json

import pytest
import torch

from latentlit.models.ensemble import ENSEMBLE_FILE, LatentRMEnsemble, load_latent_rm, save_ensemble
from latentlit.models.latent_rm import LatentRM
from latentlit.testing.tiny import tiny_backbone

QUESTIONS = ["Ann has 18 stones . multiplies by 2 . gives away 6 . how many ?", "Sam has 9 books . loses 4 . how many ?"]


@pytest.fixture(scope="module")
def members():
    bb = tiny_backbone(num_latents=3)
    return [LatentRM.from_backbone(bb, seed=s).eval() for s in (1, 2, 3)]


def test_scores_are_the_mean_of_the_members(members):
    ens = LatentRMEnsemble(members).eval()
    torch.manual_seed(0)
    latents = torch.randn(2, 4, 3, members[0].latent_size)
    mask = torch.ones(2, 4, 3, dtype=torch.bool)
    mask[1, 2, 2] = False
    each = torch.stack([m.score_trajectories(QUESTIONS, latents, mask) for m in members])
    torch.testing.assert_close(ens.score_trajectories(QUESTIONS, latents, mask), each.mean(0))
    # step-wise (beam search): the mean of the members' running trajectory scores
    scorer = ens.step_scorer(QUESTIONS)
    singles = [m.step_scorer(QUESTIONS) for m in members]
    owners = torch.tensor([0, 0, 1, 1])
    scorer.reset(owners)
    for s in singles:
        s.reset(owners)
    parents = torch.arange(4)
    for t in range(3):
        got = scorer.extend(parents, latents.reshape(8, 3, -1)[[0, 1, 4, 5], t])
        want = torch.stack([s.extend(parents, latents.reshape(8, 3, -1)[[0, 1, 4, 5], t]) for s in singles]).mean(0)
        torch.testing.assert_close(got, want)
    assert ens.prompt_once and ens.latent_size == members[0].latent_size


def test_directory_round_trip_and_errors(members, tmp_path):
    for i, m in enumerate(members[:2]):
        m.save_pretrained(tmp_path / f"m{i}")
    save_ensemble(tmp_path / "ens", [str(tmp_path / "m0"), "../m1"])
    assert json.loads((tmp_path / "ens" / ENSEMBLE_FILE).read_text()) == {"members": [str(tmp_path / "m0"), "../m1"]}
    ens = load_latent_rm(tmp_path / "ens")
    assert isinstance(ens, LatentRMEnsemble) and len(ens.members) == 2
    assert isinstance(load_latent_rm(tmp_path / "m0"), LatentRM)
    with pytest.raises(ValueError, match="at least 2 LatentRMs, got 1"):
        save_ensemble(tmp_path / "one", [str(tmp_path / "m0")])
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / ENSEMBLE_FILE).write_text(json.dumps({"rms": []}))
    with pytest.raises(ValueError, match=r"bad/latent_rm_ensemble.json: expected"):
        load_latent_rm(tmp_path / "bad")
    (tmp_path / "bad" / ENSEMBLE_FILE).write_text(json.dumps({"members": [str(tmp_path / "m0"), str(tmp_path / "gone")]}))
    with pytest.raises(FileNotFoundError, match="gone"):
        load_latent_rm(tmp_path / "bad")
    wide = LatentRM.from_backbone(tiny_backbone(num_latents=3, n_embd=48), seed=0)
    with pytest.raises(ValueError, match="different widths"):
        LatentRMEnsemble([members[0], wide])


def test_the_ensemble_fingerprint_names_every_member(members):
    from latentlit.runs.fingerprint import weights_fingerprint

    same = weights_fingerprint(LatentRMEnsemble(members[:2]))
    assert weights_fingerprint(LatentRMEnsemble(members[:2])) == same
    assert weights_fingerprint(LatentRMEnsemble([members[0], members[2]])) != same  # another member
    assert weights_fingerprint(LatentRMEnsemble(members[:1] + members[1:2] * 2)) != same  # one more member
