"""Compute spent per question: forward token positions and FLOPs of the backbone and LatentRM.

What a question costs is counted from its record (``predictions.jsonl`` field ``compute``), not
measured on the machine, so the count does not depend on batching, padding or the number of
processes:

* ``prompt``: the backbone prompt's tokens P; ``latents``: latent steps T_j of each of the N
  trajectories; ``answers``: forward passes A_j that decoded each answer (up to and including
  its eos, or ``max_new_tokens``); ``greedy``: [T, A] of the greedy pass;
* with a LatentRM, ``rm_prompt``: the RM prompt's tokens; with beam search, ``beam_search``:
  ``{"width": B, "candidates": K, "answers": [A_b for each final beam], "prefills", "fed",
  "proposed", "stop_checks", "beam_latents"}`` (what the search ran,
  :class:`latentlit.search.beam_search.BeamResult`); with DVTS, ``dvts``: the same with
  ``"width": W`` (the DVTS width as set), ``"subtrees": S = N / W`` and ``"beam_width": 1``,
  K = W (each subtree is a beam search keeping 1 prefix and proposing W candidates a step).
  Records written before ``beam_width`` existed hold ``"width": 1`` there (the subtree's beam
  width), which counts the same.

Token positions are what latentlit runs (padding excluded): a trajectory is P (its own prefill,
only with per-sample prefill) + T_j + A_j positions; shared prefill adds P once per question;
the LatentRM encodes each question's prompt once (P_rm) and scores each trajectory's latents over
it (T_j positions; an RM whose attention cannot read a shared prefix, and runs recorded before it
could, pass over prompt and latents for each trajectory: P_rm + T_j); beam
search (and DVTS) prefills once (or per step-1 candidate with per-sample prefill), feeds each
step's candidates' latents (counted per step in the record), decodes the final beams, and its RM
scorer encodes the prompt once then one position per proposed latent.

FLOPs are matrix-multiply FLOPs (2 per multiply-add), following Kaplan et al. (2020, Table 1)
and Hoffmann et al. (2022, App. F): per forward position 2 x (non-embedding matrix parameters);
per layer, attention scores QK^T and the weighted sum AV cost 2 x d x (context) each, where a
pass of ``new`` positions over ``past`` cached ones has context ``past + new`` for each position
(dense kernels compute the masked part of a prefill square too); 2 x d x V per position whose
vocabulary logits are computed (answer steps, and latent steps with a dynamic stop); 2 x (latent
head parameters) per latent step. Biases, norms, activations and softmax (~1% here) are left out.
``test_compute.py`` checks the count against torch's ``FlopCounterMode``.

An aggregator at k < N spends the expected cost of k of the N trajectories (k x their mean), as
its accuracy is the expectation over k-subsets.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ModelShape:
    """What the FLOP count needs of a transformer.

    Attributes:
        matrix_params: parameters of the weight matrices of the transformer blocks (no
            embeddings, biases or norms). n_layer, d_model: depth and width.
        vocab: rows of the LM head (0 for a scorer without one).
        head_params: matrix parameters applied once per latent step (the backbone's latent
            projection f; the LatentRM's classifier).
        logits_on_latents: vocabulary logits are computed at every latent step (dynamic stop).
        reads_answer: a LatentRM that also reads each trajectory's answer.
    """

    matrix_params: int
    n_layer: int
    d_model: int
    vocab: int = 0
    head_params: int = 0
    logits_on_latents: bool = False
    reads_answer: bool = False

    copies = 1  # one model (an EnsembleShape runs several)

    def to_dict(self) -> dict:
        return dict(self.__dict__)

    def pass_flops(self, new: int, past: int = 0) -> float:
        """FLOPs of one pass of ``new`` positions over ``past`` cached positions (no heads)."""
        if new <= 0:
            return 0.0
        return 2.0 * self.matrix_params * new + 4.0 * self.n_layer * self.d_model * new * (past + new)

    def steps_flops(self, start: int, steps: int) -> float:
        """FLOPs of ``steps`` one-position passes whose contexts are start+1 .. start+steps."""
        if steps <= 0:
            return 0.0
        contexts = steps * start + steps * (steps + 1) / 2
        return 2.0 * self.matrix_params * steps + 4.0 * self.n_layer * self.d_model * contexts

    def logits_flops(self, positions: int) -> float:
        """LM-head FLOPs of ``positions`` positions."""
        return 2.0 * self.d_model * self.vocab * positions


def _matrix_params(module) -> int:
    return sum(p.numel() for p in module.parameters() if p.dim() >= 2)


def backbone_shape(backbone) -> ModelShape:
    """:class:`ModelShape` of a :class:`latentlit.models.backbone.LatentBackbone` (any
    transformers decoder: the blocks are the base model's matrices minus its embeddings)."""
    base = backbone.lm.base_model
    embeddings = {id(p) for m in base.modules() if type(m).__name__ == "Embedding" for p in m.parameters()}
    matrix = sum(p.numel() for p in base.parameters() if p.dim() >= 2 and id(p) not in embeddings)
    cfg = backbone.lm.config
    return ModelShape(matrix_params=matrix, n_layer=cfg.num_hidden_layers, d_model=cfg.hidden_size,
                      vocab=backbone.lm.get_output_embeddings().weight.shape[0],
                      head_params=_matrix_params(backbone.latent_head),
                      logits_on_latents=backbone.latent_config.latent_stop_id is not None)


@dataclass(frozen=True)
class EnsembleShape:
    """The shapes of an ensemble's K LatentRMs, counted as one: every pass runs in each member, so
    FLOPs are the members' sum and forward positions K times one member's (``copies``)."""

    members: tuple[ModelShape, ...]

    @property
    def copies(self) -> int:
        return len(self.members)

    @property
    def head_params(self) -> int:
        return sum(m.head_params for m in self.members)

    def pass_flops(self, new: int, past: int = 0) -> float:
        return sum(m.pass_flops(new, past) for m in self.members)

    def steps_flops(self, start: int, steps: int) -> float:
        return sum(m.steps_flops(start, steps) for m in self.members)

    def to_dict(self) -> dict:
        return {"ensemble": [m.to_dict() for m in self.members]}


def rm_shape(rm) -> ModelShape | EnsembleShape:
    """:class:`ModelShape` of a :class:`latentlit.models.latent_rm.LatentRM` (the blocks of any
    transformers decoder, plus a scalar head, and the latent projection when it has one, on each
    latent position); an :class:`EnsembleShape` of an ensemble's members."""
    if hasattr(rm, "members"):
        return EnsembleShape(tuple(rm_shape(m) for m in rm.members))
    t = rm.transformer
    embeddings = {id(p) for m in t.modules() if type(m).__name__ == "Embedding" for p in m.parameters()}
    matrix = sum(p.numel() for p in t.parameters() if p.dim() >= 2 and id(p) not in embeddings)
    head = _matrix_params(rm.classifier) + (0 if rm.projection is None else _matrix_params(rm.projection))
    return ModelShape(matrix_params=matrix, n_layer=t.config.num_hidden_layers, d_model=t.config.hidden_size, vocab=0,
                      head_params=head, reads_answer=bool(rm.read_answer))


@dataclass(frozen=True)
class Cost:
    """Compute of one question: forward token positions of the backbone and of the LatentRM, and
    their FLOPs."""

    backbone_tokens: float = 0.0
    rm_tokens: float = 0.0
    flops: float = 0.0

    def __add__(self, other: "Cost") -> "Cost":
        return Cost(self.backbone_tokens + other.backbone_tokens, self.rm_tokens + other.rm_tokens,
                    self.flops + other.flops)

    def __mul__(self, factor: float) -> "Cost":
        return Cost(self.backbone_tokens * factor, self.rm_tokens * factor, self.flops * factor)

    @property
    def tokens(self) -> float:
        """Backbone and RM positions together."""
        return self.backbone_tokens + self.rm_tokens


class CostModel:
    """Turns a record's ``compute`` entry into :class:`Cost` s.

    Args:
        backbone: the backbone's shape. rm: the LatentRM's shape (None without one).
        shared_prefill: the sampler prefills each question once and copies its cache
            (``prefill: shared``, or N = 1); else every trajectory prefills its own prompt.
        rm_prompt_once: the LatentRM encodes a question's prompt once for all its trajectories
            (:meth:`LatentRM.score_groups` where its attention reads a shared prefix).
    """

    def __init__(self, backbone: ModelShape, rm: ModelShape | EnsembleShape | None = None, shared_prefill: bool = True,
                 rm_prompt_once: bool = True):
        self.backbone, self.rm, self.shared_prefill, self.rm_prompt_once = backbone, rm, shared_prefill, rm_prompt_once

    def _prefill(self, p: int) -> Cost:
        return Cost(backbone_tokens=p, flops=self.backbone.pass_flops(p))

    def _decode(self, p: int, t: int, a: int) -> Cost:
        """T latent steps and A answer passes after a prompt of P tokens."""
        bb = self.backbone
        flops = bb.steps_flops(p, t) + bb.steps_flops(p + t, a) + bb.logits_flops(a) + 2.0 * bb.head_params * t
        if bb.logits_on_latents:
            flops += bb.logits_flops(t)
        return Cost(backbone_tokens=t + a, flops=flops)

    def trajectory(self, record: dict, j: int) -> Cost:
        """Backbone cost of trajectory j (with its own prefill under per-sample prefill)."""
        c = record["compute"]
        own = self._decode(c["prompt"], c["latents"][j], c["answers"][j])
        return own if self.shared_prefill else own + self._prefill(c["prompt"])

    def samples(self, record: dict, k: int) -> Cost:
        """Expected backbone cost of k of the question's N trajectories."""
        c = record["compute"]
        n = len(c["answers"])
        mean = sum((self.trajectory(record, j) for j in range(n)), Cost()) * (1.0 / n)
        return (self._prefill(c["prompt"]) if self.shared_prefill else Cost()) + mean * k

    def rm_scoring(self, record: dict, k: int) -> Cost:
        """Expected LatentRM cost of scoring k of the N trajectories, as ``LatentRM.score_groups`` runs: the prompt
        once, then each trajectory's latents over it (with ``rm_prompt_once`` False: prompt and latents per
        trajectory)."""
        return self._rm_prompt(record) + self._rm_trajectory(record) * k

    def _rm_prompt(self, record: dict) -> Cost:
        if self.rm is None:
            raise ValueError("rm_scoring needs the LatentRM's shape")
        p = record["compute"]["rm_prompt"]
        return Cost(rm_tokens=p * self.rm.copies, flops=self.rm.pass_flops(p)) if self.rm_prompt_once else Cost()

    def _rm_trajectory(self, record: dict) -> Cost:
        """Mean LatentRM cost of one more trajectory (each member of an ensemble)."""
        if self.rm is None:
            raise ValueError("rm_scoring needs the LatentRM's shape")
        c = record["compute"]
        p, n = c["rm_prompt"], len(c["latents"])
        cost = Cost()
        for rm in getattr(self.rm, "members", (self.rm,)):
            # an answer-reading RM also reads the end token and the decoded answer: at most A_j + 1 positions
            extra = [a + 1 for a in c["answers"]] if rm.reads_answer else [0] * n
            pairs = list(zip(c["latents"], extra))
            # the prompt once per question (cached, read by every trajectory), or with each trajectory
            own_prompt = 0 if self.rm_prompt_once else p
            tokens = sum(own_prompt + t + e for t, e in pairs) / n
            # the head on every latent step (and the answer step)
            flops = sum(rm.pass_flops(own_prompt + t + e, past=p - own_prompt) + 2.0 * rm.head_params * (t + (e > 0))
                        for t, e in pairs) / n
            cost = cost + Cost(rm_tokens=tokens, flops=flops)
        return cost

    def greedy(self, record: dict) -> Cost:
        """The greedy pass: prefill, T latent steps, answer."""
        c = record["compute"]
        t, a = c["greedy"]
        return self._prefill(c["prompt"]) + self._decode(c["prompt"], t, a)

    def beam_search(self, record: dict, name: str = "beam_search") -> Cost:
        """Latent beam search or DVTS (``latentlit.search.beam_search``; ``name`` is the
        record's ``compute`` entry): the prompt prefilled once (or by each of the step-1
        candidates with per-sample prefill), the latents each step's candidates fed (a child
        feeds its parent's last latent; the kept beams feed theirs at the end), f on every
        candidate at each step, the LM head's stop decisions (dynamic stop), the final beams'
        answers; the RM scorer encodes its prompt once, then one position per proposed latent.
        Entries without the per-step counts (older records) are counted as B x K candidates at
        each of T steps."""
        c = record["compute"]
        e = c[name]
        p, bb = c["prompt"], self.backbone
        # candidate rows per step: B x K per beam, times the DVTS subtrees (a DVTS entry's
        # "width" is W, its beam width is "beam_width" = 1; a beam search entry's "width" is B)
        rows = e.get("beam_width", e["width"]) * e["candidates"] * e.get("subtrees", 1)
        t_max = max(c["latents"])
        fed = e.get("fed", [rows] * t_max)
        proposed = e.get("proposed", [rows] * t_max)
        beam_latents = e.get("beam_latents", [t_max] * len(e["answers"]))
        cost = self._prefill(p) * e.get("prefills", 1)
        flops = sum(n * bb.steps_flops(p + j - 1, 1) for j, n in enumerate(fed, start=1))
        flops += 2.0 * bb.head_params * rows * len(proposed)
        if bb.logits_on_latents:
            flops += bb.logits_flops(e.get("stop_checks", rows * t_max))
        cost = cost + Cost(backbone_tokens=sum(fed), flops=flops)
        for a, t in zip(e["answers"], beam_latents):
            cost = cost + Cost(backbone_tokens=a, flops=bb.steps_flops(p + t, a) + bb.logits_flops(a))
        if self.rm is not None:
            q = c["rm_prompt"]
            rm_flops = self.rm.pass_flops(q) + sum(m * (self.rm.steps_flops(q + t - 1, 1) + 2.0 * self.rm.head_params)
                                                   for t, m in enumerate(proposed, start=1))
            cost = cost + Cost(rm_tokens=(q + sum(proposed)) * self.rm.copies, flops=rm_flops)
        return cost

    def spent(self, spends, record: dict, ks: list[int]) -> list[Cost]:
        """Cost of an aggregator at each k by its registry ``spends`` entry.

        Raises:
            ValueError: an unknown ``spends``.
        """
        if spends in ("samples", "samples+rm"):
            # linear in k: prefill + k x (mean trajectory [+ its RM scoring])
            base, one = self._prefill(record["compute"]["prompt"]) if self.shared_prefill else Cost(), self.samples(record, 1)
            per = one + base * -1.0
            if spends == "samples+rm":
                base, per = base + self._rm_prompt(record), per + self._rm_trajectory(record)
            return [base + per * k for k in ks]
        if callable(spends):
            return [spends(self, record, k) for k in ks]
        raise ValueError(f"unknown spends={spends!r}")

    def describe(self) -> dict:
        """JSON-able: the shapes and the prefill mode the counts use."""
        return {"backbone": self.backbone.to_dict(), "latent_rm": None if self.rm is None else self.rm.to_dict(),
                "shared_prefill": self.shared_prefill, "rm_prompt_once": self.rm_prompt_once}

    @classmethod
    def from_description(cls, d: dict) -> "CostModel":
        """Inverse of :meth:`describe`."""
        # descriptions written before the LatentRM read its prompt once describe runs that repeated it
        rm = d.get("latent_rm")
        if rm is not None:
            rm = EnsembleShape(tuple(ModelShape(**m) for m in rm["ensemble"])) if "ensemble" in rm else ModelShape(**rm)
        return cls(ModelShape(**d["backbone"]), rm, d["shared_prefill"], d.get("rm_prompt_once", False))
