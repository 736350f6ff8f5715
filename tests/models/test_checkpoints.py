"""Released-checkpoint loaders (COCONUT / CODI / CoLaR layouts) against a plain transformers reference.

The reference below does not use latentlit's loop: it recomputes the whole sequence from
``inputs_embeds`` at every step (no cache), applies each layout's latent formula with
``torch.nn.functional`` to the raw safetensors tensors, and reads the first answer logits.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedTokenizerFast

from latentlit.models.backbone import LatentBackbone
from latentlit.models.checkpoints import RELEASED_LAYOUTS, detect_layout, load_backbone, load_released, save_backbone
from latentlit.models.latent_head import IdentityLatent, ProjectorLatent, ScaledLatentHead
from latentlit.testing import checkpoints
from latentlit.testing.checkpoints import write_tiny_coconut, write_tiny_codi, write_tiny_colar

WRITERS = {"coconut": write_tiny_coconut, "codi": write_tiny_codi, "colar": write_tiny_colar}
QUESTIONS = ["What is 3+4?", "Tom has 12 apples and eats 5. How many are left?"]
PROMPTS = {
    "coconut": "{q}\n<|start-latent|>",
    "codi": "{q}<|start-latent|>",
    "colar": "Question: {q} Let's think step by step:(Thinking speed: 2)###",
}
END_TOKEN = {"coconut": "<|end-latent|>", "codi": "<|end-latent|>", "colar": "###"}
TOL = 1e-5
ANSWER_TOKENS = 4


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    root = tmp_path_factory.mktemp("released")
    return {layout: WRITERS[layout](root / layout) for layout in RELEASED_LAYOUTS}


# ------------------------------------------------------------------------------------ reference
class Reference:
    """Transformers model + tokenizer + the layout's latent formula, run without any cache."""

    def __init__(self, path: Path, layout: str):
        self.layout = layout
        self.config = json.loads((path / "config.json").read_text())
        self.tok = AutoTokenizer.from_pretrained(path)
        self.lm = AutoModelForCausalLM.from_pretrained(path).eval()
        self.w = load_file(str(path / "model.safetensors"))
        self.end_id = self.tok.convert_tokens_to_ids(END_TOKEN[layout])
        self.stop_id = self.end_id if layout == "colar" else None

    def f(self, h: torch.Tensor) -> torch.Tensor:
        w = self.w
        if self.layout == "coconut":
            return h
        if self.layout == "codi":
            x = F.gelu(F.linear(h, w["projector.1.weight"], w["projector.1.bias"]))
            x = F.linear(x, w["projector.3.weight"], w["projector.3.bias"])
            return F.layer_norm(x, x.shape[-1:], w["projector.4.weight"], w["projector.4.bias"], eps=1e-5)
        x = F.gelu(F.linear(h, w["lt_head.fc.0.weight"], w["lt_head.fc.0.bias"]))
        x = F.linear(x, w["lt_head.fc.2.weight"], w["lt_head.fc.2.bias"])
        x = F.layer_norm(x, x.shape[-1:], w["lt_head.fc.3.weight"], w["lt_head.fc.3.bias"], eps=1e-5)
        return F.linear(x, w["lt_head.mean.weight"], w["lt_head.mean.bias"]) * self.config["latent_embedding_std"]

    def last(self, embeds: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Full forward over (1, S, d) -> (last hidden after the final norm (d,), logits (V,))."""
        out = self.lm(inputs_embeds=embeds, output_hidden_states=True)
        hidden, logits = out.hidden_states[-1][0, -1], out.logits[0, -1]
        # hidden_states[-1] is the post-final-norm state the LM head reads.
        torch.testing.assert_close(self.lm.get_output_embeddings()(hidden), logits, atol=1e-5, rtol=0)
        return hidden, logits

    @torch.no_grad()
    def run(self, question: str, max_steps: int) -> dict:
        emb = self.lm.get_input_embeddings()
        ids = self.tok(PROMPTS[self.layout].format(q=question), add_special_tokens=False, return_tensors="pt").input_ids
        embeds = emb(ids)
        latents, hiddens = [], []
        for _ in range(max_steps):
            hidden, logits = self.last(embeds)
            hiddens.append(hidden)
            if self.stop_id is not None and int(logits.argmax()) == self.stop_id:
                break
            z = self.f(hidden)
            latents.append(z)
            embeds = torch.cat([embeds, z[None, None]], dim=1)
        else:
            hiddens.append(self.last(embeds)[0])
        embeds = torch.cat([embeds, emb(torch.tensor([[self.end_id]]))], dim=1)
        answer, first = [], None
        for _ in range(ANSWER_TOKENS):
            _, logits = self.last(embeds)
            first = logits if first is None else first
            token = int(logits.argmax())
            answer.append(token)
            if token == self.tok.eos_token_id:
                break
            embeds = torch.cat([embeds, emb(torch.tensor([[token]]))], dim=1)
        d = self.lm.config.hidden_size
        return {
            "prompt_ids": ids[0].tolist(),
            "latents": torch.stack(latents) if latents else torch.zeros(0, d),
            "hiddens": hiddens,
            "first_logits": first,
            "answer": answer,
        }


def _assert_row_matches(out, row: int, ref: dict) -> None:
    n = ref["latents"].shape[0]
    assert out.latent_mask[row, :n].all() and not out.latent_mask[row, n:].any()
    assert (out.latents[row, :n] - ref["latents"]).abs().max() < TOL
    assert (out.latents[row, n:] == 0).all()
    assert (out.first_logits[row] - ref["first_logits"]).abs().max() < TOL
    assert out.answer_ids[row, : len(ref["answer"])].tolist() == ref["answer"]


# ------------------------------------------------------------------------------------ matching
@pytest.mark.parametrize("layout", RELEASED_LAYOUTS)
def test_latents_and_first_logits_match_reference(ckpt, layout):
    backbone = load_backbone(ckpt[layout])
    assert isinstance(backbone, LatentBackbone) and not backbone.training
    cfg = backbone.latent_config
    steps = cfg.max_latents if layout == "colar" else cfg.num_latents
    assert steps == (64 if layout == "colar" else 6)
    ref = Reference(ckpt[layout], layout)

    out = backbone.generate(QUESTIONS, max_new_tokens=ANSWER_TOKENS)
    assert out.latents.shape[0] == len(QUESTIONS)
    for row, question in enumerate(QUESTIONS):
        expected = ref.run(question, steps)
        # The prompt latentlit feeds (template, no BOS) is the layout's, token for token.
        ids, mask = backbone.encode_prompts([question])
        assert ids[0][mask[0].bool()].tolist() == expected["prompt_ids"]
        _assert_row_matches(out, row, expected)
    if layout != "colar":
        assert out.latents.shape[1] == 6 and out.latent_mask.all()
    # Deterministic: a second call gives the same latents.
    again = backbone.generate(QUESTIONS, max_new_tokens=ANSWER_TOKENS)
    assert torch.equal(again.latents, out.latents) and torch.equal(again.first_logits, out.first_logits)


@pytest.mark.parametrize("layout", RELEASED_LAYOUTS)
def test_mapped_config_and_head(ckpt, layout):
    backbone = load_released(ckpt[layout])
    cfg, tok = backbone.latent_config, backbone.tokenizer
    head = {"coconut": IdentityLatent, "codi": ProjectorLatent, "colar": ScaledLatentHead}[layout]
    assert type(backbone.latent_head) is head
    assert cfg.answer_format == {"coconut": "coconut", "codi": "last_number", "colar": "colar"}[layout]
    assert not cfg.add_bos
    assert cfg.end_latent_id == tok.convert_tokens_to_ids(END_TOKEN[layout])
    if layout == "colar":
        assert cfg.start_latent_id is None and cfg.latent_stop_id == cfg.end_latent_id
        assert backbone.latent_head.std == pytest.approx(0.018)
    else:
        raw = json.loads((ckpt[layout] / "config.json").read_text())
        assert (cfg.start_latent_id, cfg.latent_id, cfg.end_latent_id) == (
            raw["latent_start_id"], raw["latent_id"], raw["latent_end_id"])
        assert cfg.latent_stop_id is None
    # The head holds exactly the released tensors.
    weights = load_file(str(ckpt[layout] / "model.safetensors"))
    for key, value in backbone.latent_head.state_dict().items():
        assert torch.equal(value, weights[key])


def test_colar_dynamic_stop(ckpt):
    """Force "###" to be the greedy token after 3 latents for question 0 only: its row stops
    (mask False, zero latents afterwards), its answer equals the reference that stops at the same
    point and running it alone, while question 1 keeps going to the cap."""
    cap, k = 8, 3
    backbone = load_backbone(ckpt["colar"], num_latents=cap)
    assert backbone.latent_config.max_latents == cap
    ref = Reference(ckpt["colar"], "colar")
    free = ref.run(QUESTIONS[0], cap)
    assert free["latents"].shape[0] == cap  # the tiny model never stops on its own
    trigger = free["hiddens"][k]  # hidden state after k latents

    class ForceStop(nn.Module):
        def __init__(self, head, stop_id):
            super().__init__()
            self.head, self.stop_id = head, stop_id

        def forward(self, hidden):
            logits = self.head(hidden)
            hit = (hidden - trigger).abs().amax(-1, keepdim=True) < 1e-4
            bump = torch.zeros_like(logits)
            bump[..., self.stop_id] = 1e4
            return torch.where(hit, logits + bump, logits)

    stop_id = backbone.latent_config.latent_stop_id
    backbone.lm.lm_head = ForceStop(backbone.lm.lm_head, stop_id)
    ref.lm.lm_head = ForceStop(ref.lm.lm_head, stop_id)

    out = backbone.generate(QUESTIONS, max_new_tokens=ANSWER_TOKENS)
    assert out.latents.shape[1] == cap
    assert out.latent_mask[0].tolist() == [True] * k + [False] * (cap - k)
    assert out.latent_mask[1].all()
    stopped = ref.run(QUESTIONS[0], cap)
    assert stopped["latents"].shape[0] == k
    _assert_row_matches(out, 0, stopped)
    _assert_row_matches(out, 1, ref.run(QUESTIONS[1], cap))
    alone = backbone.generate(QUESTIONS[:1], max_new_tokens=ANSWER_TOKENS)
    assert alone.latents.shape[1] == k + 1 and alone.latent_mask[0].tolist() == [True] * k + [False]
    assert (alone.first_logits[0] - out.first_logits[0]).abs().max() < TOL


# ------------------------------------------------------------------------------------ detection
def test_detect_layout(ckpt, tmp_path):
    for layout in RELEASED_LAYOUTS:
        assert detect_layout(ckpt[layout]) == layout
        assert detect_layout(str(ckpt[layout])) == layout
    saved = tmp_path / "saved"
    save_backbone(load_backbone(ckpt["codi"]), saved)
    assert detect_layout(saved) == "latentlit"

    plain = tmp_path / "plain"
    plain.mkdir()
    (plain / "config.json").write_text(json.dumps({"model_type": "gpt2"}))
    with pytest.raises(ValueError) as err:
        detect_layout(plain)
    message = str(err.value)
    assert str(plain / "config.json") in message
    for key in ("latentlit", "projector", "latent_embedding_std", "latent_id"):
        assert key in message
    with pytest.raises(FileNotFoundError):
        detect_layout(tmp_path / "absent")


def test_latentlit_round_trip_and_from_pretrained(ckpt, tmp_path):
    original = load_backbone(ckpt["codi"])
    save_backbone(original, tmp_path / "saved")
    for reloaded in (load_backbone(tmp_path / "saved"), load_backbone(tmp_path / "saved")):
        a = original.generate(QUESTIONS, max_new_tokens=2)
        b = reloaded.generate(QUESTIONS, max_new_tokens=2)
        assert torch.allclose(a.latents, b.latents, atol=1e-6)
        assert reloaded.latent_config == original.latent_config
    # from_pretrained auto-detects released layouts too.
    assert isinstance(load_backbone(ckpt["colar"]).latent_head, ScaledLatentHead)
    with pytest.raises(ValueError, match="layout"):
        load_backbone(ckpt["codi"], layout="nope")
    with pytest.raises(ValueError, match="load_backbone"):
        load_released(tmp_path / "saved", layout="latentlit")


# ------------------------------------------------------------------------------------ strictness
def _rename(path: Path, old: str, new: str | None) -> None:
    file = path / "model.safetensors"
    tensors = load_file(str(file))
    value = tensors.pop(old)
    if new is not None:
        tensors[new] = value
    save_file(tensors, str(file), metadata={"format": "pt"})


@pytest.mark.parametrize(
    ("writer", "old", "new"),
    [
        (write_tiny_codi, "projector.3.weight", "projector.9.weight"),
        (write_tiny_colar, "lt_head.fc.3.bias", "lt_head.fc.4.bias"),
        (write_tiny_colar, "lt_head.mean.weight", None),
        (write_tiny_codi, "transformer.h.1.mlp.c_fc.weight", "transformer.h.1.mlp.c_fx.weight"),
        (write_tiny_coconut, "transformer.ln_f.bias", None),
        (write_tiny_colar, "model.layers.0.self_attn.q_proj.weight", "model.layers.0.self_attn.qq_proj.weight"),
    ],
)
def test_renamed_or_missing_tensor_fails_naming_key(tmp_path, writer, old, new):
    path = writer(tmp_path / "ckpt")
    _rename(path, old, new)
    with pytest.raises(ValueError) as err:
        load_backbone(path)
    message = str(err.value)
    assert old in message and str(path) in message
    if new is not None:
        assert new in message


def test_wrong_head_shape_fails(tmp_path):
    path = write_tiny_codi(tmp_path / "ckpt")
    config = json.loads((path / "config.json").read_text())
    config["projector_hidden_size"] = 40
    (path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="projector.1.weight"):
        load_backbone(path)


@pytest.mark.parametrize("layout", ["coconut", "codi"])
def test_tokenizer_without_latent_tokens_fails(tmp_path, layout):
    path = WRITERS[layout](tmp_path / "ckpt")
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (path / name).unlink()
    plain = PreTrainedTokenizerFast(tokenizer_object=checkpoints._byte_bpe([checkpoints.GPT2_EOS]),
                                    eos_token=checkpoints.GPT2_EOS)
    plain.save_pretrained(path)
    with pytest.raises(ValueError, match="lacks latent token") as err:
        load_backbone(path)
    assert str(path) in str(err.value)


def test_config_ids_must_agree_with_tokenizer(tmp_path):
    path = write_tiny_coconut(tmp_path / "ckpt")
    config = json.loads((path / "config.json").read_text())
    config["latent_end_id"] = config["latent_id"]
    (path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="latent_end_id"):
        load_backbone(path)


def test_colar_needs_single_marker_token(tmp_path):
    path = write_tiny_colar(tmp_path / "ckpt")
    data = json.loads((path / "tokenizer.json").read_text())
    data["model"]["merges"] = data["model"]["merges"][:1]  # "##" stays, "###" is gone
    (path / "tokenizer.json").write_text(json.dumps(data))
    with pytest.raises(ValueError, match="one token"):
        load_backbone(path)


# ------------------------------------------------------------------------------------ variants
def test_sharded_checkpoint_matches_single_file(ckpt, tmp_path):
    sharded = write_tiny_codi(tmp_path / "sharded", sharded=True)
    assert (sharded / "model.safetensors.index.json").exists() and not (sharded / "model.safetensors").exists()
    a = load_backbone(ckpt["codi"]).generate(QUESTIONS, max_new_tokens=2)
    b = load_backbone(sharded).generate(QUESTIONS, max_new_tokens=2)
    assert torch.equal(a.latents, b.latents) and torch.equal(a.first_logits, b.first_logits)


def test_writers_are_deterministic(tmp_path):
    for layout, writer in WRITERS.items():
        a = load_file(str(writer(tmp_path / f"{layout}_a") / "model.safetensors"))
        b = load_file(str(writer(tmp_path / f"{layout}_b") / "model.safetensors"))
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert not (tmp_path / "coconut_a" / "model.safetensors.index.json").exists()


def test_num_latents_and_dtype(ckpt):
    with pytest.warns(UserWarning, match="num_latents=3"):
        coconut = load_backbone(ckpt["coconut"], num_latents=3)
    assert coconut.generate(QUESTIONS[:1], max_new_tokens=1).latents.shape[1] == 3
    colar = load_backbone(ckpt["colar"], num_latents=5)
    assert colar.generate(QUESTIONS[:1], max_new_tokens=1).latents.shape[1] == 5
    half = load_backbone(ckpt["codi"], dtype=torch.bfloat16)
    assert half.lm.dtype == torch.bfloat16
    assert all(p.dtype == torch.bfloat16 for p in half.latent_head.parameters())
    assert half.generate(QUESTIONS[:1], max_new_tokens=1).latents.shape[1] == 6


def test_offline_local_path_and_hub_id(ckpt, tmp_path):
    """With HF_HUB_OFFLINE=1 (set before transformers is imported) a local path loads; a string
    that is not a local path goes to transformers as a hub id (and fails there, offline, with an
    error naming both the directory looked for and the hub failure)."""
    script = f"""
import sys
from latentlit.models.checkpoints import load_backbone
backbone = load_backbone({str(ckpt["colar"])!r}, num_latents=2)
print("loaded", backbone.generate(["What is 3+4?"], max_new_tokens=1).latents.shape[1])
try:
    load_backbone("latentlit-test/no-such-model")
except FileNotFoundError as err:
    print("hub-error", err)
try:
    load_backbone({str(tmp_path / "absent")!r})
except FileNotFoundError:
    print("missing-local")
"""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf_home"), "TRANSFORMERS_OFFLINE": "1"}
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300,
                            cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.splitlines()
    assert "loaded 2" in lines and "missing-local" in lines, result.stdout
    hub = next(line for line in lines if line.startswith("hub-error"))
    assert "'latentlit-test/no-such-model' is not a local directory" in hub
    assert str(tmp_path / "latentlit-test" / "no-such-model") in hub and "could not be loaded as a hub id" in hub

