"""Rollout labelling of latent steps (paper Sec. 3.3, "data collection").

For each question: sample N trajectories with the sampler; drop the question when all N final
answers are correct or all wrong (each filter switchable); for each kept trajectory n and step
t, run M rollouts that continue from the prefix h_1..h_t (remaining latent steps sampled, answer
decoded greedily); the label y_t^(n) is the fraction of rollouts reaching the gold answer.

Where a rollout branches: *before* the forward pass that consumes h_t. Each rollout feeds h_t
through the model with its own keys (``LatentBackbone.feed_latent``), proposes its own h_{t+1}
(``latent_step``) and so on, then decodes. Under MC-dropout the randomness of a step lives in its
forward pass, so this is what makes the M rollouts differ from h_{t+1} on (the reference
re-runs the whole prefix with dropout on, so its rollouts differ from h_{t+1} on too). Branching
after that forward pass would give all M rollouts the trajectory's own h_{t+1}: they would first
differ at h_{t+2}, and with 2-4 latents the labels would stay close to the trajectory's final
correctness (measured: docs/results.md#labelling). Under AGN (noise on the proposed latent) feeding h_t is
deterministic and both branch points give the same rollouts.

The prefix a rollout continues from (``rollout_prefix``): the latents h_1..h_t are always the
trajectory's own, fixed; what the setting chooses is how the prompt and h_1..h_{t-1} are encoded.
``per_rollout`` (default; the paper's definition, as the reference runs it): each rollout
prefills the prompt with its own keys (as the sampler prefills a sample, ``Sampler.prefill``)
and feeds h_1..h_t as input embeddings with its own keys, then continues; the M rollouts of all
rolled-out trajectories of a step run as one batch (rows = rollouts). ``shared``: each rollout
starts from a copy of the trajectory's cached keys/values of the prompt and h_1..h_{t-1}
(computed once, with the trajectory's own randomness), then feeds h_t with its own keys. With
one dropout mask per trajectory that shared encoding holds much of a sample's randomness, so
shared-prefix labels mostly copy the trajectory's final correctness (measured on the
quickstarts, docs/results.md#llama-family). Without forward-pass randomness (AGN, Deterministic) the
two are the same rollouts and the shared path runs for both.

Dynamic latent length (CoLaR: the latent phase ends when the LM head emits the stop token):
trajectory n has its own length T_n <= ``max_latents`` and labels exist for t = 1..T_n only
(``latent_mask``). Rollouts from h_1..h_t continue with the backbone's own stopping (decided on
each rollout's own hidden state after feeding h_t), so each rollout has its own length too.
Groups keep their N candidates aligned by step index.

The last step, t = T_n (one rule, :func:`rollouts_at_last_step`): what is left after the prefix
h_1..h_{T_n} is feeding h_{T_n} (then, with a dynamic stop, the LM head's greedy stop decision)
and greedy answer decoding. Under a sampler that acts in forward passes (MC-dropout, attention
dropout) feeding is random, so the last step is rolled out like the others. Otherwise (AGN,
Deterministic; ``on_answer`` changes nothing there, as such a sampler has no forward hooks) the M
rollouts all equal the trajectory itself: its own correctness is the label and no rollout is run.

Cost: with ``shared`` prefixes rollouts start from a copy of the KV cache of (question,
h_1..h_{t-1}), so the question is prefilled once per trajectory, never per rollout; each rollout
runs h_t, the rest of its latents and its answer. With ``per_rollout`` prefixes every rollout
also runs the prompt and h_1..h_{t-1}, like the reference implementation, which re-prefills the
whole prefix for every rollout (sum_n T_n * M per question); :func:`reference_forward_tokens`
estimates that count for comparison. ``LabelStats.forward_tokens`` counts the positions
actually run (padding included).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from latentlit.data.answers import answers_match, extract_answer
from latentlit.data.problem import Problem
from latentlit.models.backbone import LatentBackbone, LatentState
from latentlit.models.hooks import Sampler
from latentlit.rng import derive_keys, trajectory_keys

_ROLLOUT_STREAM = 0x2011
# Where rollouts branch, stored in a labelling run's run.json: a groups directory labelled by an
# earlier version (rollouts branched after h_t was fed) is refused on resume, not mixed in.
ROLLOUT_BRANCH = "before_feeding_h_t"
# How a rollout gets the prefix (prompt, h_1..h_{t-1}) it continues from (:func:`label_problems`).
ROLLOUT_PREFIXES = ("shared", "per_rollout")


@dataclass
class LabelledGroup:
    """One question's labelled step group.

    Attributes:
        latents: (N, T, d) float32. latent_mask: (N, T) bool. labels: (N, T) float32 in [0, 1].
        final_correct: (N,) bool, correctness of each trajectory's own answer.
        texts: N decoded answer texts; answers: N parsed answers (None: no answer found). None in
            groups labelled before they were stored (the answer-reading RM and the answer-group loss
            need them).
    """

    id: str
    question: str
    gold: str
    latents: torch.Tensor
    latent_mask: torch.Tensor
    labels: torch.Tensor
    final_correct: torch.Tensor
    texts: list[str] | None = None
    answers: list[str | None] | None = None


@dataclass
class LabelStats:
    """Counts from a labelling run.

    ``pre_final``: labels of steps t < T_n (before a trajectory's last step);
    ``pre_final_equal_final``: those equal to the trajectory's own final correctness (0 or 1).
    Their ratio near 1 means the labels carry the outcome only, nothing step-specific.
    """

    questions: int = 0
    kept: int = 0
    all_correct: int = 0
    all_wrong: int = 0
    forward_tokens: int = 0
    reference_forward_tokens: int = 0
    labels: list[float] = field(default_factory=list)
    pre_final: int = 0
    pre_final_equal_final: int = 0

    def merge(self, other: "LabelStats") -> None:
        self.questions += other.questions
        self.kept += other.kept
        self.all_correct += other.all_correct
        self.all_wrong += other.all_wrong
        self.forward_tokens += other.forward_tokens
        self.reference_forward_tokens += other.reference_forward_tokens
        self.labels += other.labels
        self.pre_final += other.pre_final
        self.pre_final_equal_final += other.pre_final_equal_final

    def summary(self) -> dict:
        """The run's figures; label statistics rounded to :data:`DECIMALS` decimals (float32 noise
        hidden) and ``None`` when no label was made (every question dropped), never a made-up 0."""
        lab = torch.tensor(self.labels, dtype=torch.float64)
        labelled = lab.numel() > 0

        def stat(value) -> float | None:
            return round(float(value), DECIMALS) if labelled else None

        return {
            "questions": self.questions, "kept": self.kept,
            "kept_fraction": round(self.kept / self.questions, DECIMALS) if self.questions else None,
            "dropped_all_correct": self.all_correct, "dropped_all_wrong": self.all_wrong,
            "labels": lab.numel(),
            "label_mean": stat(lab.mean()) if labelled else None,
            "label_std": stat(lab.std()) if lab.numel() > 1 else None,
            "label_fraction_0": stat((lab == 0).double().mean()) if labelled else None,
            "label_fraction_1": stat((lab == 1).double().mean()) if labelled else None,
            "label_fraction_pre_final_equal_final": (round(self.pre_final_equal_final / self.pre_final, DECIMALS)
                                                     if self.pre_final else None),
            "forward_tokens": self.forward_tokens, "reference_forward_tokens": self.reference_forward_tokens,
            "saving_vs_reference": (round(self.reference_forward_tokens / self.forward_tokens, DECIMALS)
                                    if self.forward_tokens else None),
        }


# decimals of the label statistics in summary.json (labels are means of M rollouts, exact in float64)
DECIMALS = 6


def reference_forward_tokens(prompt_len: int, n: int, t: int, m: int, answer_steps: int) -> int:
    """Token positions the reference implementation runs for the rollouts of N = ``n``
    trajectories of T = ``t`` latents each: each of the N*T*M rollouts (every step, the last
    included) re-runs prompt, T latents and the answer from scratch (no cache reuse)."""
    return n * t * m * (prompt_len + t + answer_steps)


def rollouts_at_last_step(sampler: Sampler) -> bool:
    """Whether the M rollouts from a whole trajectory h_1..h_{T_n} are run: the one rule for the
    last step. They can differ from the trajectory only when feeding h_{T_n} (and decoding) is
    random, i.e. when the sampler acts in forward passes (``Sampler.stochastic_forward``:
    MC-dropout, attention dropout). Otherwise every rollout equals the trajectory and its own
    correctness is the label."""
    return sampler.stochastic_forward


def rollout_keys(keys: torch.Tensor, step: int, m: int) -> torch.Tensor:
    """Keys of the M rollouts from h_1..h_t of each trajectory: ``keys`` (R,) trajectory keys
    -> (R*M,) int64, trajectory-major, a function of (trajectory key, rollout stream, t,
    rollout index) only."""
    rkeys = derive_keys(keys.repeat_interleave(m), _ROLLOUT_STREAM, step)
    return derive_keys(rkeys ^ torch.arange(m, device=rkeys.device).repeat(len(keys)), _ROLLOUT_STREAM)


def _correct(backbone: LatentBackbone, answer_ids: torch.Tensor, golds: list[str], fmt: str) -> torch.Tensor:
    texts = backbone.decode(answer_ids)
    return torch.tensor([answers_match(extract_answer(x, fmt), g) for x, g in zip(texts, golds)])


@torch.no_grad()
def roll_out(backbone: LatentBackbone, sampler: Sampler, before: LatentState, latent: torch.Tensor, step: int,
             keys: torch.Tensor, *, max_new_tokens: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    """Rollouts that branch before latent ``step`` is fed: feed ``latent`` (R, d), i.e. h_t, with
    each row's own ``keys`` (R,) (:meth:`LatentBackbone.feed_latent`), continue the latent steps
    (the backbone's dynamic stop where it has one, up to the step cap) and decode the answer
    (the sampler acts on it only with ``on_answer``).

    Args:
        before: the state of R rows after h_1..h_{t-1} (after the prompt when t = 1), every row
            still thinking; it is advanced in place, pass a copy to keep it.

    Returns:
        the rollout latents (R, 1 + T', d) (h_t, then each row's own h_{t+1}.. ; zeros after its
        stop) and the answer ids (R, L).
    """
    cfg = backbone.latent_config
    cap = cfg.max_latents if cfg.latent_stop_id is not None else cfg.num_latents
    state = backbone.feed_latent(before, latent, step, sampler=sampler, keys=keys)
    state, rest, _ = backbone.run_latents(state, cap, sampler=sampler, keys=keys, start_step=step + 1)
    answer_ids, _ = backbone.decode_answer(state, max_new_tokens=max_new_tokens, sampler=sampler, keys=keys,
                                           first_step=cap + 1)
    return torch.cat([latent[:, None].to(rest.dtype), rest], 1), answer_ids


@torch.no_grad()
def label_problems(backbone: LatentBackbone, sampler: Sampler, problems: list[Problem], *, n_samples: int = 8,
                   n_rollouts: int = 8, seed: int = 0, drop_all_correct: bool = True, drop_all_wrong: bool = True,
                   max_new_tokens: int = 8, answer_format: str | None = None,
                   rollout_prefix: str = "per_rollout") -> tuple[list[LabelledGroup | None], LabelStats]:
    """Label the latent steps of ``problems`` (processed together; callers chunk them).

    Args:
        rollout_prefix: how each rollout from h_1..h_t gets its prefix (module docstring).
            ``"per_rollout"`` (the paper's definition, as the reference runs it): the rollout
            prefills the prompt with its own keys (as the sampler prefills samples:
            ``Sampler.prefill``) and feeds the trajectory's h_1..h_t with its own keys, then
            continues. ``"shared"``: the rollout starts from a copy of the trajectory's cached
            prompt and h_1..h_{t-1} (encoded once, with the trajectory's keys) and feeds h_t
            with its own keys; cheaper, but under MC-dropout with one mask per trajectory the
            labels then mostly copy the trajectory's outcome. When the sampler has no forward-pass
            randomness (``Sampler.stochastic_forward`` False: AGN, Deterministic) re-encoding gives
            the cached prefix again, the two settings label alike, and the shared path runs.

    Returns:
        one entry per problem (None when filtered out) and the run's :class:`LabelStats`. A
        group's step dimension is its own longest trajectory (T for a fixed-T backbone).
        Results depend only on (seed, question id, sample index, step, rollout index), not on
        which problems share the call.

    Raises:
        ValueError: n_samples or n_rollouts < 1, unknown ``rollout_prefix``.
    """
    if n_samples < 1 or n_rollouts < 1:
        raise ValueError(f"n_samples ({n_samples}) and n_rollouts ({n_rollouts}) must be >= 1")
    if rollout_prefix not in ROLLOUT_PREFIXES:
        raise ValueError(f"rollout_prefix={rollout_prefix!r}; expected one of {ROLLOUT_PREFIXES}")
    # Without forward-pass randomness (AGN, Deterministic) re-encoding a prefix reproduces the
    # cached one, so both settings give the same labels and the cheaper path runs.
    shared = rollout_prefix == "shared" or not sampler.stochastic_forward
    cfg = backbone.latent_config
    fmt = answer_format or cfg.answer_format
    sampler.bind(backbone)
    stats = LabelStats(questions=len(problems))
    start_tokens = backbone.forward_tokens
    q, n, m = len(problems), n_samples, n_rollouts
    cap = cfg.max_latents if cfg.latent_stop_id is not None else cfg.num_latents
    roll_last = rollouts_at_last_step(sampler)
    keys = trajectory_keys(seed, [p.id for p in problems], n).to(backbone.device)
    state = backbone.prefill_samples([p.question for p in problems], n, sampler, keys)
    # real prompt lengths (rows are question-major), for the reference's re-prefill count
    prompt_lens = state.attention_mask[::n].sum(1).tolist()
    # befores[t - 1]: the state before h_t is fed, where shared-prefix rollouts from h_1..h_t
    # branch (not kept for t = cap when the last step is not rolled out: no row has t < T_n there;
    # never kept for per-rollout prefixes, which rebuild it)
    befores, fed, latents, masks = [], [], [], []
    for t in range(1, cap + 1):
        before = state.select(torch.arange(state.rows)) if shared and (t < cap or roll_last) else None
        state, h = backbone.latent_step(state, t, sampler=sampler, keys=keys)
        if not bool(state.active.any()):
            break
        befores.append(before)
        fed.append(h)
        latents.append(h.float().cpu())
        masks.append(state.active.cpu())
    answer_ids, _ = backbone.decode_answer(state, max_new_tokens=max_new_tokens, sampler=sampler, keys=keys, first_step=cap + 1)
    golds = [p.answer for p in problems for _ in range(n)]
    texts = backbone.decode(answer_ids)
    parsed = [extract_answer(x, fmt) for x in texts]
    final = torch.tensor([answers_match(a, g) for a, g in zip(parsed, golds)]).reshape(q, n)
    answer_steps = answer_ids.shape[1]
    steps = len(latents)
    traj = torch.stack(latents, 1) if steps else torch.zeros(q * n, 0, backbone.hidden_size)
    mask = torch.stack(masks, 1) if steps else torch.zeros(q * n, 0, dtype=torch.bool)
    lengths = mask.sum(1)  # T_n of each row

    keep = torch.ones(q, dtype=torch.bool)
    all_c, all_w = final.all(1), ~final.any(1)
    stats.all_correct, stats.all_wrong = int(all_c.sum()), int(all_w.sum())
    if drop_all_correct:
        keep &= ~all_c
    if drop_all_wrong:
        keep &= ~all_w
    stats.kept = int(keep.sum())
    labels = torch.zeros(q * n, steps)
    if not roll_last:
        has = lengths > 0
        labels[has.nonzero().flatten(), lengths[has] - 1] = final.flatten()[has].float()
    kept = keep.repeat_interleave(n)
    for t in range(1, steps + 1):
        # rows that took step t and are rolled out there: t < T_n, or t = T_n when rolled out
        rows = torch.nonzero(kept & (lengths >= t + (0 if roll_last else 1))).flatten()
        if not len(rows):
            continue
        rows_dev = rows.to(backbone.device)
        rkeys = rollout_keys(keys[rows_dev], t, m)
        if shared:
            before = befores[t - 1].select(rows_dev).repeat_interleave(m)
        else:
            # each rollout (rows trajectory-major) encodes the prompt and h_1..h_{t-1} itself
            before = backbone.prefill_samples([problems[i // n].question for i in rows.tolist()], m, sampler, rkeys)
            for s in range(1, t):
                before = backbone.feed_latent(before, fed[s - 1][rows_dev].repeat_interleave(m, 0), s, sampler=sampler,
                                              keys=rkeys)
        _, out = roll_out(backbone, sampler, before, fed[t - 1][rows_dev].repeat_interleave(m, 0), t, rkeys,
                          max_new_tokens=max_new_tokens)
        rgolds = [golds[i] for i in rows.tolist() for _ in range(m)]
        labels[rows, t - 1] = _correct(backbone, out, rgolds, fmt).float().reshape(len(rows), m).mean(1)
    stats.forward_tokens = backbone.forward_tokens - start_tokens
    groups: list[LabelledGroup | None] = []
    for i, p in enumerate(problems):
        rows = slice(i * n, (i + 1) * n)
        own = lengths[rows].tolist()
        # the reference samples the N trajectories the same way before its rollouts
        stats.reference_forward_tokens += sum(prompt_lens[i] + t_n + answer_steps for t_n in own)
        if not keep[i]:
            groups.append(None)
            continue
        stats.reference_forward_tokens += sum(reference_forward_tokens(prompt_lens[i], 1, t_n, m, answer_steps) for t_n in own)
        width = max(own)  # the group's own longest trajectory: no dependence on its batch
        g_mask = mask[rows, :width]
        g_labels = labels[rows, :width]
        stats.labels += g_labels[g_mask].tolist()
        pre = g_mask & (torch.arange(width)[None] < lengths[rows, None] - 1)
        stats.pre_final += int(pre.sum())
        stats.pre_final_equal_final += int((pre & (g_labels == final[i, :, None].float())).sum())
        groups.append(LabelledGroup(p.id, p.question, p.answer, traj[rows, :width], g_mask, g_labels, final[i],
                                    texts[rows], parsed[rows]))
    return groups, stats
