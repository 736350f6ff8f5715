"""Adaptive-N sampling against fixed-N sampling: an adaptive run's k-th trajectory is the fixed
run's k-th (texts and latents, MC-dropout per-sample prefill and AGN shared prefill, rounds that
do not divide N_max, chunking by max_trajectories), the exact rule's answer is majority@N_max on
every question, and each round batches exactly the questions still open."""

from __future__ import annotations

import pytest
import torch

import latentlit.search.adaptive as adaptive_mod
from latentlit.aggregation import majority_vote
from latentlit.aggregation.stopping import StoppingRule, simulate
from latentlit.data.answers import extract_answer
from latentlit.data.synthetic import generate_problems
from latentlit.models.checkpoints import load_backbone
from latentlit.sampling import AGN, MCDropout
from latentlit.search.adaptive import sample_adaptive
from latentlit.search.nway import sample_questions
from latentlit.testing.tiny import write_numeric_backbone

N_MAX, SEED, MAX_NEW = 16, 3, 3


def parse(text: str):
    return extract_answer(text, "last_number")


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    bb = load_backbone(write_numeric_backbone(tmp_path_factory.mktemp("adaptive") / "backbone"))
    problems = generate_problems(10, 4242)
    return bb, [f"q{i}" for i in range(10)], [p.question for p in problems]


# dropout in the answer steps too, so that the tiny model's answers vary between samples
SAMPLERS = {"mc_dropout": lambda: MCDropout(p=0.3, mask_scope="step", prefill="per_sample", on_answer=True),
            "agn": lambda: AGN(sigma=0.5)}


@pytest.mark.parametrize("sampler_name", sorted(SAMPLERS))
@pytest.mark.parametrize("rule, round_size, max_trajectories", [
    (StoppingRule("exact"), 3, 1024),  # rounds of 3, 3, ..., 1: 16 is not a multiple of 3
    (StoppingRule("beta", 0.9), 2, 5),  # chunks of 2 questions x 2 samples
    (StoppingRule("window", 4), 4, 3),  # fewer rows than a round: a question's samples split
])
def test_adaptive_trajectory_k_equals_fixed_run_trajectory_k(setup, sampler_name, rule, round_size, max_trajectories):
    bb, ids, questions = setup
    sampler = SAMPLERS[sampler_name]()
    fixed = sample_questions(bb, sampler, ids, questions, N_MAX, SEED, max_new_tokens=MAX_NEW)
    drawn = sample_adaptive(bb, sampler, ids, questions, n_max=N_MAX, seed=SEED, rule=rule, round_size=round_size,
                            parse=parse, max_trajectories=max_trajectories, max_new_tokens=MAX_NEW)
    used = []
    for f, d in zip(fixed, drawn):
        n = len(d.samples.texts)
        used.append(n)
        assert d.samples.texts == f.texts[:n]
        assert d.answers == [parse(t) for t in f.texts[:n]]
        torch.testing.assert_close(d.samples.latents, f.latents[:n], rtol=0, atol=1e-5)
        assert torch.equal(d.samples.latent_mask, f.latent_mask[:n])
        # it stopped exactly where replaying the rule on the fixed run's answers stops
        fixed_answers = [parse(t) for t in f.texts]
        assert n == simulate(rule, fixed_answers, N_MAX, round_size).trajectories
        assert d.rounds == -(-n // round_size)
    assert min(used) < N_MAX  # some question stopped early


def test_exact_rule_answer_is_majority_at_n_max_on_every_question(setup):
    bb, ids, questions = setup
    # weaker noise than SAMPLERS': some questions unanimous, some split
    sampler = MCDropout(p=0.1, mask_scope="step", prefill="per_sample", on_answer=True)
    fixed = sample_questions(bb, sampler, ids, questions, N_MAX, SEED, max_new_tokens=MAX_NEW)
    rule = StoppingRule("exact")
    drawn = sample_adaptive(bb, sampler, ids, questions, n_max=N_MAX, seed=SEED, rule=rule, round_size=2, parse=parse,
                            max_new_tokens=MAX_NEW)
    full_votes = [majority_vote([parse(t) for t in f.texts]).answer for f in fixed]
    assert [rule.choose(d.answers) for d in drawn] == full_votes
    # the rule is not trivially "run everything": questions settle at different points
    used = [len(d.answers) for d in drawn]
    assert min(used) < N_MAX and len(set(used)) > 1
    # the bound needs the leader's votes (<= n) to cover the N_max - n samples left, so no question
    # settles before N_max / 2: the exact rule can at best halve the work; unanimous ones reach that
    assert min(used) >= N_MAX // 2
    unanimous = [d for f, d in zip(fixed, drawn) if len({parse(t) for t in f.texts[:N_MAX // 2]}) == 1]
    assert unanimous and all(len(d.answers) == N_MAX // 2 for d in unanimous)


def test_rounds_batch_the_open_questions_only(setup, monkeypatch):
    bb, ids, questions = setup
    calls = []
    real = adaptive_mod.sample_questions

    def spy(backbone, sampler, qids, qs, n, seed, **kwargs):
        calls.append((list(qids), n, kwargs["offset"]))
        return real(backbone, sampler, qids, qs, n, seed, **kwargs)

    monkeypatch.setattr(adaptive_mod, "sample_questions", spy)
    sampler = SAMPLERS["mc_dropout"]()
    rule = StoppingRule("beta", 0.9)
    drawn = sample_adaptive(bb, sampler, ids, questions, n_max=N_MAX, seed=SEED, rule=rule, round_size=4, parse=parse,
                            max_new_tokens=MAX_NEW)
    assert calls[0] == (ids, 4, 0)  # one call per round, all open questions together
    for (prev_ids, n, offset), (next_ids, next_n, next_offset) in zip(calls, calls[1:]):
        open_after = [q for q in prev_ids if len(drawn[ids.index(q)].answers) > offset + n]
        assert next_ids == open_after and next_offset == offset + n and next_n == 4
    assert len(calls[-1][0]) < len(ids)
    assert sum(len(q) * n for q, n, _ in calls) == sum(len(d.answers) for d in drawn)


def test_best_score_rule_uses_scores_of_each_round(setup):
    bb, ids, questions = setup
    sampler = SAMPLERS["mc_dropout"]()
    seen = []

    def score(rows, new):
        seen.append(list(rows))
        # a stand-in scorer: the answer's number / 10, so high answers stop the question early
        return [[float(parse(t) or 0) / 10 for t in s.texts] for s in new]

    rule = StoppingRule("best_score", 5.0)
    drawn = sample_adaptive(bb, sampler, ids, questions, n_max=8, seed=SEED, rule=rule, round_size=2, parse=parse,
                            score=score, max_new_tokens=MAX_NEW)
    assert seen[0] == list(range(len(ids)))
    for d in drawn:
        assert d.scores == [float(a or 0) / 10 for a in d.answers]
        settled_early = len(d.answers) < 8
        assert settled_early == (max(d.scores) >= 5.0)
        assert rule.choose(d.answers, d.scores) == d.answers[max(range(len(d.scores)), key=lambda i: (d.scores[i], -i))]
    with pytest.raises(ValueError, match="needs LatentRM scores"):
        sample_adaptive(bb, sampler, ids, questions, n_max=8, seed=SEED, rule=rule, round_size=2, parse=parse)
