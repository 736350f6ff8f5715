"""LatentRM scoring: full-prefix forward and the incremental (KV-cached) step scorer agree."""

import pytest
import torch

from latentlit.models.latent_rm import LatentRM, LatentRMStepScorer, trajectory_score
from latentlit.sampling import AGN
from latentlit.search.beam_search import HistoryScorer, latent_beam_search
from latentlit.testing.tiny import tiny_backbone

QUESTIONS = ["Ann has 18 stones . multiplies by 2 . gives away 6 . how many ?", "Sam has 9 books . loses 4 . how many ?"]


@pytest.fixture(scope="module")
def backbone():
    return tiny_backbone(num_latents=3)


@pytest.fixture(scope="module")
def rm(backbone):
    return LatentRM.from_backbone(backbone, seed=3).eval()


@pytest.mark.parametrize("how", ["sum", "min"])
def test_step_scorer_equals_full_forward(rm, how):
    torch.manual_seed(0)
    d = rm.transformer.config.n_embd
    owners = torch.tensor([0, 0, 1])
    parents1, parents2 = torch.tensor([2, 0, 0, 1]), torch.tensor([3, 3, 1])
    h1, h2 = torch.randn(4, d), torch.randn(3, d)
    scorer = LatentRMStepScorer(rm, QUESTIONS, how=how)
    scorer.reset(owners)
    s1 = scorer.extend(parents1, h1)
    s2 = scorer.extend(parents2, h2)
    # rebuild each row's question and prefix by hand and score it in one full pass
    ids, mask = rm.encode_prompts(QUESTIONS)
    own1 = owners[parents1]
    with torch.no_grad():
        full1 = trajectory_score(rm(ids[own1], mask[own1], h1[:, None]), how=how)
        own2, prefix2 = own1[parents2], torch.stack([h1[parents2], h2], dim=1)
        full2 = trajectory_score(rm(ids[own2], mask[own2], prefix2), how=how)
    torch.testing.assert_close(s1, full1, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(s2, full2, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(s2[0], s2[2])


def test_beam_search_with_cached_rm_matches_full_recompute(backbone, rm):
    ids, mask = rm.encode_prompts(QUESTIONS)

    def full(owners, prefix):
        with torch.no_grad():
            return rm(ids[owners], mask[owners], prefix).sum(-1)

    run = lambda scorer: latent_beam_search(backbone, AGN(sigma=1.0), ["a", "b"], QUESTIONS, scorer,  # noqa: E731
                                            beam_width=2, candidates=3, seed=1, max_new_tokens=3)
    cached, recomputed = run(LatentRMStepScorer(rm, QUESTIONS)), run(HistoryScorer(full))
    for x, y in zip(cached, recomputed):
        torch.testing.assert_close(x.latents, y.latents)
        assert x.score == pytest.approx(y.score, abs=1e-5) and x.text == y.text


# ---------------------------------------------------------------- any causal LM, strict loading
from latentlit.testing.tiny import tiny_llama_backbone  # noqa: E402


@pytest.fixture(scope="module")
def llama():
    return tiny_llama_backbone()


def test_rm_from_llama_backbone_uses_its_transformer_and_round_trips(llama, tmp_path):
    import json

    from transformers import LlamaModel

    rm = LatentRM.from_backbone(llama, seed=1).eval()
    assert isinstance(rm.transformer, LlamaModel) and rm.projection is None
    for key, value in llama.lm.model.state_dict().items():
        assert torch.equal(rm.transformer.state_dict()[key], value)
    torch.manual_seed(0)
    latents, mask = torch.randn(2, 3, 4, llama.hidden_size), torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0], [1, 0, 0, 0]]).bool()
    scores = rm.score_groups(QUESTIONS, latents, mask.expand(2, 3, 4))
    rm.save_pretrained(tmp_path / "rm")
    config = json.loads((tmp_path / "rm" / "config.json").read_text())
    assert config["model_type"] == "llama" and "latentlit" not in config
    assert json.loads((tmp_path / "rm" / "latent_rm.json").read_text())["latent_size"] == llama.hidden_size
    loaded = LatentRM.from_pretrained(tmp_path / "rm")
    torch.testing.assert_close(loaded.score_groups(QUESTIONS, latents, mask.expand(2, 3, 4)), scores)
    # a step's score depends only on its prefix: the masked steps of shorter rows do not move r_1
    assert scores[0, 1, :2].tolist() == pytest.approx(rm.score_groups(QUESTIONS[:1], latents[:1, 1:2, :2])[0, 0].tolist(),
                                                      abs=1e-5)


def test_rm_with_its_first_layers_only(llama):
    rm = LatentRM.from_backbone(llama, n_layer=1)
    assert rm.transformer.config.num_hidden_layers == 1 and len(rm.transformer.layers) == 1
    assert torch.equal(rm.transformer.layers[0].mlp.up_proj.weight, llama.lm.model.layers[0].mlp.up_proj.weight)
    with pytest.raises(ValueError, match="n_layer=3 must be in 1..2"):
        LatentRM.from_backbone(llama, n_layer=3)


def _small_gpt2_lm(path):
    from transformers import GPT2Config, GPT2LMHeadModel

    from latentlit.data.synthetic import generate_problems
    from latentlit.data.tokenizer import build_word_tokenizer, problem_corpus

    tok = build_word_tokenizer(problem_corpus(generate_problems(50, 5)))
    torch.manual_seed(4)
    GPT2LMHeadModel(GPT2Config(vocab_size=len(tok), n_embd=16, n_layer=1, n_head=2, n_positions=64)).save_pretrained(path)
    tok.save_pretrained(path)
    return path


def test_smaller_rm_from_another_lm_learns_a_projection(llama, tmp_path):
    from transformers import GPT2Model

    small = _small_gpt2_lm(tmp_path / "small_lm")
    rm = LatentRM.from_backbone(llama, transformer=str(small), seed=2).eval()
    assert isinstance(rm.transformer, GPT2Model) and rm.width == 16 and rm.latent_size == llama.hidden_size
    assert rm.projection.weight.shape == (16, llama.hidden_size)
    # the step scorer projects the latents the same way as the full forward
    torch.manual_seed(1)
    h1, h2 = torch.randn(2, llama.hidden_size), torch.randn(2, llama.hidden_size)
    scorer = LatentRMStepScorer(rm, QUESTIONS)
    scorer.reset(torch.tensor([0, 1]))
    scorer.extend(torch.tensor([0, 1]), h1)
    s2 = scorer.extend(torch.tensor([0, 1]), h2)
    ids, mask = rm.encode_prompts(QUESTIONS)
    with torch.no_grad():
        full = rm(ids, mask, torch.stack([h1, h2], 1)).sum(-1)
    torch.testing.assert_close(s2, full, atol=1e-5, rtol=1e-5)
    rm.save_pretrained(tmp_path / "rm")
    loaded = LatentRM.from_pretrained(tmp_path / "rm")
    assert loaded.projection is not None
    with torch.no_grad():
        torch.testing.assert_close(loaded(ids, mask, torch.stack([h1, h2], 1)).sum(-1), full)


def test_step_scorer_keeps_a_finished_rows_score(llama):
    """extend(..., active) appends nothing for a finished row: its score is its prefix's."""
    rm = LatentRM.from_backbone(llama, seed=3).eval()
    torch.manual_seed(2)
    h1, h2, h3 = (torch.randn(2, llama.hidden_size) for _ in range(3))
    scorer = LatentRMStepScorer(rm, QUESTIONS, how="mean")
    scorer.reset(torch.tensor([0, 1]))
    s1 = scorer.extend(torch.tensor([0, 1]), h1)
    s2 = scorer.extend(torch.tensor([0, 1]), h2, torch.tensor([True, False]))
    s3 = scorer.extend(torch.tensor([0, 1]), h3, torch.tensor([True, False]))
    assert s2[1] == s1[1] and s3[1] == s1[1]
    ids, mask = rm.encode_prompts(QUESTIONS)
    with torch.no_grad():
        full = rm(ids[:1], mask[:1], torch.stack([h1[:1], h2[:1], h3[:1]], 1)).mean(-1)
    torch.testing.assert_close(s3[:1], full, atol=1e-5, rtol=1e-5)


def _edit_weights(rm_dir, edit):
    from safetensors.torch import load_file, save_file

    state = load_file(str(rm_dir / "model.safetensors"))
    edit(state)
    save_file(state, str(rm_dir / "model.safetensors"))


@pytest.mark.parametrize("layout", ["released", "llama"])
def test_latentrm_loading_is_strict(layout, llama, tmp_path):
    """Issue 10 item 3: a missing or unexpected tensor, or a shape mismatch, is an error naming the key."""
    from latentlit.testing.checkpoints import write_tiny_released_latentrm

    def fresh(name):
        path = tmp_path / name
        if layout == "released":
            return write_tiny_released_latentrm(path)
        LatentRM.from_backbone(llama).save_pretrained(path)
        return path

    key = "transformer.h.1.mlp.c_fc.weight" if layout == "released" else "transformer.layers.1.mlp.down_proj.weight"
    LatentRM.from_pretrained(fresh("ok"))  # the untouched directory loads
    missing = fresh("missing")
    _edit_weights(missing, lambda s: s.pop(key))
    with pytest.raises(ValueError, match=rf"missing tensor\(s\) \['{key}'\]"):
        LatentRM.from_pretrained(missing)
    extra = fresh("extra")
    _edit_weights(extra, lambda s: s.__setitem__("classifier.scale", torch.ones(1)))
    with pytest.raises(ValueError, match=r"unexpected tensor\(s\) \['classifier.scale'\]"):
        LatentRM.from_pretrained(extra)
    shape = fresh("shape")
    _edit_weights(shape, lambda s: s.__setitem__("classifier.weight", torch.zeros(1, 7)))
    with pytest.raises(ValueError, match=r"shape mismatch \['classifier.weight: file \(1, 7\), model \(1, \d+\)'\]"):
        LatentRM.from_pretrained(shape)
    # a projection in an RM whose settings say the widths agree is unexpected as well
    proj = fresh("proj")
    _edit_weights(proj, lambda s: s.update({"projection.weight": torch.zeros(32, 32), "projection.bias": torch.zeros(32)}))
    with pytest.raises(ValueError, match=r"unexpected tensor\(s\) \['projection.bias', 'projection.weight'\]"):
        LatentRM.from_pretrained(proj)


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_score_groups_reads_each_prompt_once_and_scores_as_the_full_forward(family, backbone, llama):
    source = backbone if family == "gpt2" else llama
    rm = LatentRM.from_backbone(source, seed=5).eval()
    torch.manual_seed(4)
    n, t = 3, 4
    latents = torch.randn(1, n, t, source.hidden_size).expand(2, n, t, -1)  # the same latents under both prompts
    mask = torch.ones(2, n, t, dtype=torch.bool)
    mask[0, 1, 2:], mask[1, 2, 3] = False, False  # trajectories that stopped early
    fed = []
    hook = rm.transformer.register_forward_pre_hook(
        lambda module, args, kwargs: fed.append(next(kwargs[k] for k in ("inputs_embeds", "input_ids")
                                                     if kwargs.get(k) is not None).shape[:2]), with_kwargs=True)
    scores = rm.score_groups(QUESTIONS, latents, mask)
    hook.remove()
    ids, prompt_mask = rm.encode_prompts(QUESTIONS)
    with torch.no_grad():
        full = rm(ids.repeat_interleave(n, 0), prompt_mask.repeat_interleave(n, 0), latents.reshape(2 * n, t, -1),
                  mask.reshape(2 * n, t)).reshape(2, n, t)
    torch.testing.assert_close(scores[mask], full[mask], atol=1e-5, rtol=1e-5)
    assert sum(rows * positions for rows, positions in fed) == 2 * ids.shape[1] + 2 * n * t  # prompts once, then latents
    assert not torch.allclose(scores[0, 0], scores[1, 0], atol=1e-3)  # each trajectory reads its own question's prompt


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_answer_reading_rm_scores_the_answer_after_the_latents(family, backbone, llama, tmp_path):
    source = backbone if family == "gpt2" else llama
    rm = LatentRM.from_backbone(source, seed=5, read_answer=True).eval()
    torch.manual_seed(4)
    n, t = 2, 3
    latents = torch.randn(2, n, t, source.hidden_size)
    mask = torch.ones(2, n, t, dtype=torch.bool)
    mask[1, 0, 2] = False  # a trajectory that stopped early: its answer follows its own last latent
    texts = [["### 30", "### 31"], ["### 5", ""]]
    shared = rm.score_groups(QUESTIONS, latents, mask, texts=texts)
    copied = rm.score_groups(QUESTIONS, latents, mask, texts=texts, share_prompt=False)
    assert shared.shape == (2, n, t + 1)
    full = torch.cat([mask, mask.new_ones(2, n, 1)], -1)
    torch.testing.assert_close(shared[full], copied[full], atol=1e-5, rtol=1e-5)
    # the latent steps are causal: the answer cannot change them, only the answer step reads it
    latents_only = rm.score_groups(QUESTIONS, latents, mask)
    torch.testing.assert_close(shared[..., :t][mask], latents_only[mask], atol=1e-5, rtol=1e-5)
    other = rm.score_groups(QUESTIONS, latents, mask, texts=[["### 31", "### 30"], ["### 5", ""]])
    torch.testing.assert_close(other[1], shared[1])  # the other question's answers are unchanged
    assert abs(float(other[0, 0, -1] - shared[0, 0, -1])) > 1e-4  # another answer, another score
    # by hand for one row: the answer step is the head at the last answer token of one sequence
    ids, pm = rm.encode_prompts(QUESTIONS[1:])
    ans, am = rm.encode_answers(["### 5"])
    row = torch.cat([ids[0][pm[0].bool()], torch.zeros(0, dtype=torch.long)])
    embeds = torch.cat([rm.transformer.get_input_embeddings()(row), rm.embed_latents(latents[1, 0, :2]),
                        rm.transformer.get_input_embeddings()(ans[0])])[None]
    with torch.no_grad():
        hidden = rm.transformer(inputs_embeds=embeds).last_hidden_state
        want = rm.classifier(hidden[0, -1]).item()
    assert shared[1, 0, -1].item() == pytest.approx(want, abs=1e-4)
    # trajectory score: the answer is one more step of the sum; without texts the RM refuses
    traj = rm.score_trajectories(QUESTIONS, latents, mask, texts)
    torch.testing.assert_close(traj, (shared * full).sum(-1), atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="reads each trajectory's answer"):
        rm.score_trajectories(QUESTIONS, latents, mask)
    rm.save_pretrained(tmp_path / "rm")
    again = LatentRM.from_pretrained(tmp_path / "rm")
    assert again.read_answer and again.settings()["read_answer"] is True
    torch.testing.assert_close(again.score_trajectories(QUESTIONS, latents, mask, texts), traj)
