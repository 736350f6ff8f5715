"""Weight fingerprints (``latentlit.models.fingerprint``): equal for equal weights whatever their
dtype or layout, different after any change a bfloat16 value shows."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from latentlit.models.checkpoints import load_backbone
from latentlit.models.fingerprint import provenance_match, tensor_digest, weights_fingerprint
from latentlit.testing.tiny import tiny_backbone

ASSETS = Path(__file__).resolve().parents[2] / "latentlit" / "assets"


def test_same_weights_same_fingerprint_any_change_another(tiny_backbone_dir):
    a = load_backbone(tiny_backbone_dir)
    fp = weights_fingerprint(a)
    assert len(fp) == 16 and int(fp, 16) >= 0
    assert weights_fingerprint(load_backbone(tiny_backbone_dir)) == fp
    # a bfloat16 load of the same checkpoint: values compared at bfloat16 precision
    assert weights_fingerprint(load_backbone(tiny_backbone_dir, dtype=torch.bfloat16)) == fp
    w = a.lm.transformer.h[1].mlp.c_fc.weight
    with torch.no_grad():
        w[3, 5] += 0.01 * abs(float(w[3, 5])) + 1e-2  # one element, well above bfloat16 rounding
    changed = weights_fingerprint(a)
    assert changed != fp
    with torch.no_grad():  # a row permutation keeps the checksum; the sampled values still show it
        w[3, 5] -= 0.01 * abs(float(w[3, 5])) + 1e-2
        w.copy_(w.flip(0))
    assert weights_fingerprint(a) not in (fp, changed)


def test_tensor_digest_checksum_is_exact_and_order_free():
    x = torch.randn(1000, generator=torch.Generator().manual_seed(0))
    # same values, other summation order (a chunk boundary): the integer checksum is the same
    assert tensor_digest(x) == tensor_digest(x.clone())
    y = x.clone()
    y[999] = y[999] * 2  # the last element, past the last full group of 4 bf16 values
    assert tensor_digest(y, samples=0) != tensor_digest(x, samples=0)
    # a change below bfloat16 precision is not seen (documented)
    z = x.clone()
    z[0] = torch.nextafter(z[0], torch.tensor(10.0))
    assert tensor_digest(z) == tensor_digest(x)


def test_shipped_latentrms_record_the_fingerprint_of_their_backbone():
    # computed from the shipped backbones, not typed: retraining a quickstart model in place fails here
    for rm, backbone in (("quickstart_latentrm", "quickstart"), ("quickstart_llama_latentrm", "quickstart_llama")):
        provenance = json.loads((ASSETS / rm / "latent_rm.json").read_text())["provenance"]
        assert provenance["backbone"] == backbone
        assert provenance["backbone_fingerprint"] == weights_fingerprint(load_backbone(backbone))
    # and the two backbones are told apart
    assert weights_fingerprint(load_backbone("quickstart")) != weights_fingerprint(
        load_backbone("quickstart_llama"))


def test_provenance_match():
    assert provenance_match(None, "ab", "rm", "bb") == (None, None)
    assert provenance_match({"backbone": "x"}, "ab", "rm", "bb") == (None, None)  # no fingerprint: unknown
    assert provenance_match({"backbone": "x", "backbone_fingerprint": "ab"}, "ab", "rm", "bb") == (True, None)
    match, warning = provenance_match({"backbone": "x", "backbone_fingerprint": "cd"}, "ab", "rm", "bb")
    assert match is False and "\n" not in warning
    assert "cd" in warning and "ab" in warning and "'x'" in warning and "bb" in warning


def test_tied_embeddings_are_read_once():
    bb = tiny_backbone(num_latents=2)
    assert bb.lm.lm_head.weight.data_ptr() == bb.lm.transformer.wte.weight.data_ptr()  # tied
    fp = weights_fingerprint(bb)
    # untied with the same values: another model (training moves the two apart), another fingerprint
    bb.lm.lm_head.weight = torch.nn.Parameter(bb.lm.transformer.wte.weight.detach().clone())
    assert weights_fingerprint(bb) != fp
