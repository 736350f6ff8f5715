"""Weight fingerprints (``latentlit.runs.fingerprint``): the same weights whatever float dtype
they were cast to or their layout, different after any change a bfloat16 value shows."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from latentlit.models.checkpoints import load_backbone
from latentlit.runs.fingerprint import provenance_match, same_weights, tensor_digest, weights_fingerprint
from latentlit.testing.tiny import tiny_backbone

ASSETS = Path(__file__).resolve().parents[2] / "latentlit" / "assets"


def test_same_weights_same_fingerprint_any_change_another(tiny_backbone_dir):
    a = load_backbone(tiny_backbone_dir)
    fp = weights_fingerprint(a)
    assert len(fp) == 16 and int(fp, 16) >= 0
    assert weights_fingerprint(load_backbone(tiny_backbone_dir)) == fp
    # a bfloat16 load of the same checkpoint: the same bfloat16 reading
    bf16 = weights_fingerprint(load_backbone(tiny_backbone_dir, dtype=torch.bfloat16))
    assert bf16[:8] == fp[:8] and same_weights(bf16, fp)
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


# ---------------------------------------------------------------- the float dtype of a load (issue 18, item 1)
def _cast(module, dtype):
    import copy

    return copy.deepcopy(module).to(dtype)


@pytest.mark.parametrize("backbone", ["quickstart", "quickstart_llama", "tiny"])
def test_float32_bfloat16_float16_of_the_same_weights_match(backbone, tiny_backbone_dir):
    name = str(tiny_backbone_dir) if backbone == "tiny" else backbone
    fp32 = weights_fingerprint(load_backbone(name))
    bf16 = weights_fingerprint(load_backbone(name, dtype=torch.bfloat16))
    fp16 = weights_fingerprint(load_backbone(name, dtype=torch.float16))
    assert len({fp32, bf16, fp16}) == 3  # each dtype reads its own values: plain equality tells them apart
    assert same_weights(fp32, bf16) and same_weights(fp32, fp16) and same_weights(fp32, fp32)
    assert bf16[:8] == fp32[:8] and fp16[8:] == fp32[8:]  # by the bfloat16 / the float16 reading
    # a cast in memory is what a load in that dtype holds
    model = load_backbone(name)
    assert weights_fingerprint(_cast(model, torch.bfloat16)) == bf16
    assert weights_fingerprint(_cast(model, torch.float16)) == fp16
    # a float16 load of a bfloat16 load's values is the same values: it matches the bfloat16 load
    assert same_weights(weights_fingerprint(_cast(_cast(model, torch.bfloat16), torch.float16)), bf16)


def test_a_one_element_change_another_name_or_shape_is_not_the_same_weights():
    torch.manual_seed(0)
    base = torch.nn.Linear(64, 32)
    fp = weights_fingerprint(base)
    casts = [weights_fingerprint(_cast(base, d)) for d in (torch.float32, torch.bfloat16, torch.float16)]
    assert all(same_weights(fp, c) for c in casts)
    changed = _cast(base, torch.float32)
    with torch.no_grad():
        changed.weight[3, 5] += 0.01 * abs(float(changed.weight[3, 5])) + 1e-2  # above bfloat16 rounding
    for dtype in (torch.float32, torch.bfloat16, torch.float16):
        other = weights_fingerprint(_cast(changed, dtype))
        assert not any(same_weights(other, c) for c in casts), dtype
    renamed = torch.nn.Module()
    renamed.lin = base  # the same tensors under other names ("lin.weight")
    assert not any(same_weights(weights_fingerprint(renamed), c) for c in casts)

    class Reshaped(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.weight = torch.nn.Parameter(base.weight.detach().reshape(16, 128).clone())
            self.bias = torch.nn.Parameter(base.bias.detach().clone())

    assert not any(same_weights(weights_fingerprint(Reshaped()), c) for c in casts)


def test_float16_reading_covers_values_beyond_its_range():
    """The float16 half reads a value beyond float16's range as an infinity and a tiny one as a
    subnormal, as a float16 cast holds them; the bfloat16 half still tells such weights apart."""
    big = torch.nn.Linear(4, 4)
    with torch.no_grad():
        big.weight.fill_(1e5)
    bigger = _cast(big, torch.float32)
    with torch.no_grad():
        bigger.weight[0, 0] = 2e5
    a, b = weights_fingerprint(big), weights_fingerprint(bigger)
    assert a[8:] == b[8:] and a[:8] != b[:8]  # both infinite in float16, apart in bfloat16
    assert same_weights(a, weights_fingerprint(_cast(big, torch.float16)))


def test_shipped_latentrm_matches_its_backbone_in_every_float_dtype():
    # was "LATENTRM / BACKBONE MISMATCH" with dtype=float16
    for rm, backbone in (("quickstart_latentrm", "quickstart"), ("quickstart_llama_latentrm", "quickstart_llama"),
                         ("quickstart_pairwise_latentrm", "quickstart")):
        provenance = json.loads((ASSETS / rm / "latent_rm.json").read_text())["provenance"]
        for dtype in (None, torch.float32, torch.bfloat16, torch.float16):
            fp = weights_fingerprint(load_backbone(backbone, dtype=dtype))
            assert provenance_match(provenance, fp, rm, backbone) == (True, None), (rm, dtype)
    other = weights_fingerprint(load_backbone("quickstart_llama", dtype=torch.float16))
    match, warning = provenance_match(provenance_of("quickstart_latentrm"), other, "quickstart_latentrm",
                                      "quickstart_llama")
    assert match is False and "MISMATCH" in warning


def provenance_of(rm: str) -> dict:
    return json.loads((ASSETS / rm / "latent_rm.json").read_text())["provenance"]


def test_same_weights_rule():
    assert same_weights("0123456789abcdef", "0123456789abcdef")
    assert same_weights("01234567ffffffff", "0123456700000000")  # bfloat16 halves equal
    assert same_weights("ffffffff89abcdef", "0000000089abcdef")  # float16 halves equal
    assert not same_weights("01234567ffffffff", "ffffffff01234567")  # halves are compared in place
    assert not same_weights(None, None) and not same_weights("", "") and not same_weights("0123456789abcdef", None)
    # a version-1 fingerprint (the bfloat16 digest alone) of the shipped backbone matches its first half
    assert same_weights("d94dafc68e0daa06", weights_fingerprint(load_backbone("quickstart")))
    assert same_weights("d94dafc68e0daa06", weights_fingerprint(load_backbone("quickstart", dtype=torch.bfloat16)))
