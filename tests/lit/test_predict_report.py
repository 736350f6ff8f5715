"""``latentlit predict``'s report end to end on a tiny backbone with a LatentRM and beam search:
every accuracy in metrics.json equals an independent recomputation from predictions.jsonl (brute
force over all k-subsets), intervals cover their estimates, and the figures reach the disk and
TensorBoard."""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path

import pytest
import torch
import yaml

from latentlit.aggregation import best_of_n, majority_vote, weighted_vote
from latentlit.aggregation.selector import Selector
from latentlit.cli import main
from latentlit.data.answers import answers_match, extract_answer
from latentlit.data.synthetic import generate_problems
from latentlit.evaluation.metrics import pass_at_k
from latentlit.models.checkpoints import load_backbone, save_backbone
from latentlit.models.ensemble import save_ensemble
from latentlit.models.latent_rm import LatentRM
from latentlit.sampling import AGN
from latentlit.search.nway import sample_questions
from latentlit.testing.tiny import tiny_backbone

N, Q, MAX_NEW = 4, 8, 3
SAMPLER = {"class_path": "latentlit.sampling.AGN", "init_args": {"sigma": 3.0, "relative": True}}


def _numeric_backbone(path: Path) -> Path:
    # an untied LM head that only scores number tokens: every trajectory answers with a number
    bb = tiny_backbone(num_latents=3)
    numbers = sorted(i for t, i in bb.tokenizer.get_vocab().items() if t.isdigit())
    head = torch.zeros(len(bb.tokenizer), bb.hidden_size)
    head[numbers] = torch.randn(len(numbers), bb.hidden_size, generator=torch.Generator().manual_seed(1))
    bb.lm.config.tie_word_embeddings = False
    bb.lm.lm_head.weight = torch.nn.Parameter(head)
    save_backbone(bb, path)
    return path


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("report")
    backbone_dir = _numeric_backbone(root / "backbone")
    bb = load_backbone(backbone_dir)
    rm_dir = root / "rm"
    LatentRM.from_backbone(bb, seed=3).save_pretrained(rm_dir)
    problems = generate_problems(Q, 77)
    ids, questions = [f"p{i}" for i in range(Q)], [p.question for p in problems]
    samples = sample_questions(bb, AGN(sigma=3.0, relative=True), ids, questions, N, 0, max_new_tokens=MAX_NEW)
    answers = [[extract_answer(t, "last_number") for t in s.texts] for s in samples]
    # golds that make the questions differ: the majority answer, a minority one, the last sample's
    golds = []
    for i, a in enumerate(answers):
        minority = [x for x in a if not answers_match(x, majority_vote(a).answer)]
        golds.append([majority_vote(a).answer, minority[0] if minority else a[0], a[-1], "98765"][i % 4])
    path = root / "problems.jsonl"
    path.write_text("".join(json.dumps({"id": i, "question": q, "answer": g}) + "\n" for i, q, g in zip(ids, questions, golds)))
    out = root / "out"
    cfg = {
        "trainer": {"accelerator": "cpu", "devices": 1, "enable_progress_bar": False, "enable_model_summary": False,
                    "logger": {"class_path": "lightning.pytorch.loggers.TensorBoardLogger",
                               "init_args": {"save_dir": str(root / "runs"), "name": "report"}}},
        "model": {"class_path": "latentlit.lit.TTSPredictor", "init_args": {
            "backbone": str(backbone_dir), "sampler": SAMPLER, "n_samples": N, "seed": 0, "max_new_tokens": MAX_NEW,
            "answer_format": "last_number", "output_dir": str(out), "latent_rm": str(rm_dir), "beam_width": 2}},
        "data": {"class_path": "latentlit.lit.ProblemDataModule", "init_args": {
            "problems": {"class_path": "latentlit.data.sources.ProblemFile", "init_args": {"path": str(path)}},
            "batch_size": 3}},
    }
    (root / "config.yaml").write_text(yaml.safe_dump(cfg))
    return root, out


def _subset_mean(records, k, pick) -> float:
    """Mean over questions of the mean over all k-subsets of pick(record, subset) (0/1)."""
    total = 0.0
    for r in records:
        subsets = list(itertools.combinations(range(N), k))
        total += sum(pick(r, list(s)) for s in subsets) / len(subsets)
    return total / len(records)


def _softmax(xs):
    top = max(xs)
    e = [math.exp(x - top) for x in xs]
    return [x / sum(e) for x in e]


def test_metrics_equal_an_independent_recomputation_from_the_records(run, capsys):
    root, out = run
    main(["predict", "--config", str(root / "config.yaml")])
    printed = capsys.readouterr().out
    records = [json.loads(x) for x in (out / "predictions.jsonl").read_text().splitlines()]
    summary = json.loads((out / "metrics.json").read_text())
    m = summary["metrics"]
    assert len(records) == Q
    # the run is not degenerate: answers differ within questions and questions differ
    assert any(len(set(r["answers"])) > 1 for r in records)
    assert 0 < m["coverage@1"] < m["coverage@4"] <= 1

    def gold_ok(r, answer):
        return float(answers_match(answer, r["gold"]))

    expected = {"greedy_accuracy": sum(r["greedy"]["correct"] for r in records) / Q,
                f"beam_search@{N}": sum(r["beam_search"]["correct"] for r in records) / Q}
    for k in (1, 2, 4):
        expected[f"coverage@{k}"] = sum(pass_at_k(N, sum(r["correct"]), k) for r in records) / Q
        expected[f"majority_vote@{k}"] = _subset_mean(
            records, k, lambda r, s: gold_ok(r, majority_vote([r["answers"][i] for i in s]).answer))
        expected[f"weighted_vote@{k}"] = _subset_mean(records, k, lambda r, s: gold_ok(
            r, weighted_vote([r["answers"][i] for i in s], _softmax([r["rm_scores"][i] for i in s])).answer))
        expected[f"best_of_n@{k}"] = _subset_mean(
            records, k, lambda r, s: float(r["correct"][s[best_of_n([r["rm_scores"][i] for i in s])]]))
        expected[f"random@{k}"] = _subset_mean(records, k, lambda r, s: sum(r["correct"][i] for i in s) / k)
        expected[f"majority_vote_first@{k}"] = sum(gold_ok(r, majority_vote(r["answers"][:k]).answer) for r in records) / Q
    for key, value in expected.items():
        assert m[key] == pytest.approx(value, abs=1e-6), key
    # selection_gap@k: coverage@k minus accuracy@k from the same recomputation, and the share of coverage reached
    gaps = summary["selection_gap"]
    for name in ("majority_vote", "best_of_n", "weighted_vote", "random"):
        for k in (1, 2, 4):
            g, cov, acc = gaps[name][str(k)], expected[f"coverage@{k}"], expected[f"{name}@{k}"]
            assert g["gap"] == pytest.approx(cov - acc, abs=2e-6) and g["low"] <= g["gap"] <= g["high"]
            assert g["converted"] == pytest.approx(acc / cov, abs=2e-6)
    assert gaps["random"]["1"]["gap"] == pytest.approx(0, abs=2e-6)  # one random sample is coverage@1 itself
    assert gaps["random"]["4"]["gap"] > 0  # one random pick of 4 reaches only coverage@1 of what they found
    assert "coverage" not in gaps and "beam_search" in gaps
    # at k = N the curves end at the aggregators' own record fields
    for name in ("majority_vote", "best_of_n", "weighted_vote"):
        assert m[f"{name}@{N}"] == pytest.approx(sum(r[name]["correct"] for r in records) / Q, abs=1e-6)
    for r in records:
        assert r["best_of_n"]["index"] == max(range(N), key=lambda i: (r["rm_scores"][i], -i))
    # the methods are not all equal here, so the checks above tell them apart
    assert len({round(m[f"{a}@2"], 6) for a in ("majority_vote", "weighted_vote", "best_of_n", "random")}) >= 3

    iv = summary["intervals"]
    assert iv["level"] == 0.95 and iv["resamples"] == 2000
    for key, value in m.items():
        if key in iv["accuracy"]:
            assert iv["accuracy"][key]["low"] <= value <= iv["accuracy"][key]["high"], key
    for key, d in iv["minus_greedy"].items():
        assert d["diff"] == pytest.approx(m[key] - m["greedy_accuracy"], abs=2e-6)
        assert d["low"] <= d["diff"] <= d["high"]
    assert summary["monte_carlo"]["standard_error"] == {}  # N = 4: every subset enumerated
    assert set(summary["estimators"]) >= {"coverage", "majority_vote", "best_of_n", "weighted_vote", "beam_search"}

    sel = summary["selective"]
    assert sorted(sel) == ["rm", "vote", "vote+rm"]
    assert sel["vote"]["accuracy_all"] == pytest.approx(m[f"majority_vote@{N}"], abs=1e-6)
    assert sel["rm"]["accuracy_all"] == pytest.approx(m[f"best_of_n@{N}"], abs=1e-6)
    shares = [r["vote_share"] for r in records]
    ok = [r["majority_vote"]["correct"] for r in records]
    ece = 0.0
    for b in range(10):
        members = [i for i, c in enumerate(shares) if min(int(c * 10), 9) == b]
        if members:
            ece += len(members) / Q * abs(sum(ok[i] for i in members) / len(members) -
                                           sum(shares[i] for i in members) / len(members))
    assert sel["vote"]["ece"] == pytest.approx(ece, abs=1e-6)

    rows = {(r["method"], r["k"]): r for r in summary["compute"]["rows"]}
    c = [r["compute"] for r in records]
    # AGN prefills once per question; a trajectory costs its latent steps and answer passes
    per_traj = [sum(t + a for t, a in zip(x["latents"], x["answers"])) / N for x in c]
    for k in (1, 2, 4):
        assert rows[("majority_vote", k)]["backbone_tokens"] == pytest.approx(
            sum(x["prompt"] + k * t for x, t in zip(c, per_traj)) / Q, abs=0.01)
        # coverage@k, the ceiling on the compute figure, at the cost of its k samples
        assert rows[("coverage", k)]["accuracy"] == pytest.approx(expected[f"coverage@{k}"], abs=1e-6)
        assert rows[("coverage", k)]["flops"] == rows[("majority_vote", k)]["flops"]
        assert rows[("coverage", k)]["rm_tokens"] == 0
        # the LatentRM encodes the prompt once, then each trajectory's latents over it
        assert rows[("best_of_n", k)]["rm_tokens"] == pytest.approx(
            sum(x["rm_prompt"] + k * sum(x["latents"]) / N for x in c) / Q, abs=0.01)
    # beam search 2 x 2, T = 3: steps 2 and 3 feed 4 candidates each, the 2 kept beams feed their last latent
    assert rows[("beam_search", N)]["backbone_tokens"] == pytest.approx(
        sum(x["prompt"] + 4 * 2 + 2 + sum(x["beam_search"]["answers"]) for x in c) / Q, abs=0.01)
    assert rows[("greedy", 1)]["flops"] > 0

    for name in ("scaling", "risk_coverage", "calibration", "accuracy_vs_compute"):
        png = (out / f"{name}.png").read_bytes()
        assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000, name
    assert (out / "accuracy_vs_compute.csv").read_text().startswith("method,k,threshold,accuracy")

    def _points(x):  # signed points; a value that rounds to zero is "0.0" (no "+0.0" / "-0.0")
        return "0.0" if f"{100 * x:+.1f}" in ("+0.0", "-0.0") else f"{100 * x:+.1f}"

    assert f"at N = {N}: accuracy % [95% bootstrap CI]; minus greedy, paired [95% CI]" in printed
    a, d = iv["accuracy"][f"best_of_n@{N}"], iv["minus_greedy"][f"best_of_n@{N}"]
    assert (f"  best-of-N       {100 * m[f'best_of_n@{N}']:>6.1f} [{100 * a['low']:.1f}, {100 * a['high']:.1f}]   "
            f"{_points(d['diff'])} [{_points(d['low'])}, {_points(d['high'])}]") in printed
    assert "selective, vote share (majority vote): 50% most confident" in printed


def test_figures_are_tensorboard_images(run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    root, out = run
    if not (out / "metrics.json").exists():
        main(["predict", "--config", str(root / "config.yaml")])
    events = sorted((root / "runs").rglob("events.out.tfevents.*"))
    assert events
    tags = set()
    for e in events:
        acc = EventAccumulator(str(e), size_guidance={"images": 0, "scalars": 0})
        acc.Reload()
        tags |= set(acc.Tags()["images"]) | set(acc.Tags()["scalars"])
    assert {"predict/scaling", "predict/risk_coverage", "predict/calibration", "predict/accuracy_vs_compute"} <= tags
    assert {"predict/best_of_n@4", "predict/selective/vote/gain@50%", "predict/selective/rm/ece"} <= tags


def test_tempered_vote_calibrated_confidence_and_answer_reading_rm_through_predict(run):
    root, _ = run
    cfg = yaml.safe_load((root / "config.yaml").read_text())
    bb = load_backbone(cfg["model"]["init_args"]["backbone"])
    LatentRM.from_backbone(bb, seed=4, read_answer=True).save_pretrained(root / "rm_answer")
    tau, cal = 0.5, (1.0, 0.5, 0.2, -0.3)
    Selector(tau, cal, {"run": "hand-made"}).save(root / "selector.json")
    out = root / "out_selector"
    cfg["model"]["init_args"].update(latent_rm=str(root / "rm_answer"), selector=str(root / "selector.json"),
                                     beam_width=None, output_dir=str(out))
    (root / "config_selector.yaml").write_text(yaml.safe_dump(cfg))
    main(["predict", "--config", str(root / "config_selector.yaml")])
    records = [json.loads(x) for x in (out / "predictions.jsonl").read_text().splitlines()]
    summary = json.loads((out / "metrics.json").read_text())
    assert summary["config"]["selector"] == {"temperature": tau, "calibration": list(cal)}
    # the RM's read_answer (latent_rm.json, not the weights) is part of the run's identity; absent for other RMs
    assert json.loads((out / "run.json").read_text())["latent_rm_reads_answer"] is True
    assert "latent_rm_reads_answer" not in json.loads((root / "out" / "run.json").read_text())

    # the answer-reading RM's scores, recomputed with one full forward per trajectory (no shared prompt)
    rm = LatentRM.from_pretrained(root / "rm_answer")
    ids, questions = [r["id"] for r in records], [r["question"] for r in records]
    samples = sample_questions(bb, AGN(sigma=3.0, relative=True), ids, questions, N, 0, max_new_tokens=MAX_NEW)
    for r, s in zip(records, samples):
        prompt, mask = rm.encode_prompts([r["question"]])
        answer_ids, answer_mask = rm.encode_answers(s.texts)
        with torch.no_grad():
            steps = rm(prompt.repeat(N, 1), mask.repeat(N, 1), s.latents, s.latent_mask, answer_ids, answer_mask)
        assert steps.shape == (N, s.latents.shape[1] + 1)
        assert r["rm_scores"] == pytest.approx(steps.sum(1).tolist(), abs=2e-5)
        assert r["texts"] == s.texts

    def tempered(r, subset):
        w = _softmax([r["rm_scores"][i] / tau for i in subset])
        return weighted_vote([r["answers"][i] for i in subset], w).answer

    m = summary["metrics"]
    for k in (1, 2, 4):
        want = _subset_mean(records, k, lambda r, s: float(answers_match(tempered(r, s), r["gold"])))
        assert m[f"tempered_vote@{k}"] == pytest.approx(want, abs=1e-6)
    # the calibrated confidence of the chosen answer, by hand: sigmoid(w . (logit share, logit mass, top) + b)
    conf, ok = [], []
    for r in records:
        chosen = r["tempered_vote"]
        assert answers_match(chosen["answer"], tempered(r, list(range(N)))) or chosen["answer"] is None
        inside = [i for i in range(N) if r["answers"][i] is not None and answers_match(r["answers"][i], chosen["answer"])]
        w = _softmax([x / tau for x in r["rm_scores"]])
        share, mass = len(inside) / N, sum(w[i] for i in inside)

        def logit(x):
            x = min(1 - 1 / (2 * N), max(1 / (2 * N), x))
            return math.log(x / (1 - x))

        z = cal[0] * logit(share) + cal[1] * logit(mass) + cal[2] * max(r["rm_scores"][i] for i in inside) + cal[3]
        assert chosen["confidence"] == pytest.approx(1 / (1 + math.exp(-z)), abs=1e-6)
        conf.append(chosen["confidence"])
        ok.append(chosen["correct"])
    # the answer-reading RM's compute: the prompt once, then each trajectory's latents, end token and answer
    rows = {(r["method"], r["k"]): r for r in summary["compute"]["rows"]}
    c = [r["compute"] for r in records]
    assert rows[("best_of_n", N)]["rm_tokens"] == pytest.approx(
        sum(x["rm_prompt"] + sum(t + a + 1 for t, a in zip(x["latents"], x["answers"])) for x in c) / Q, abs=0.01)
    sel = summary["selective"]["calibrated"]
    assert sel["accuracy_all"] == pytest.approx(sum(ok) / Q, abs=1e-6)
    ece = 0.0
    for b in range(10):
        members = [i for i, c in enumerate(conf) if min(int(c * 10), 9) == b]
        if members:
            ece += len(members) / Q * abs(sum(ok[i] for i in members) / len(members) - sum(conf[i] for i in members) / len(members))
    assert sel["ece"] == pytest.approx(ece, abs=1e-6)


def test_an_ensemble_of_latent_rms_through_predict(run):
    root, _ = run
    cfg = yaml.safe_load((root / "config.yaml").read_text())
    bb = load_backbone(cfg["model"]["init_args"]["backbone"])
    members = [LatentRM.from_backbone(bb, seed=6), LatentRM.from_backbone(bb, seed=7, read_answer=True)]
    for i, m in enumerate(members):
        m.save_pretrained(root / f"member{i}")
    save_ensemble(root / "ensemble", ["../member0", str(root / "member1")])  # relative to the ensemble directory, or not
    out = root / "out_ensemble"
    cfg["model"]["init_args"].update(latent_rm=str(root / "ensemble"), beam_width=2, output_dir=str(out))
    (root / "config_ensemble.yaml").write_text(yaml.safe_dump(cfg))
    main(["predict", "--config", str(root / "config_ensemble.yaml")])
    records = [json.loads(x) for x in (out / "predictions.jsonl").read_text().splitlines()]
    summary = json.loads((out / "metrics.json").read_text())
    loaded = [LatentRM.from_pretrained(root / f"member{i}") for i in range(2)]
    samples = sample_questions(bb, AGN(sigma=3.0, relative=True), [r["id"] for r in records],
                               [r["question"] for r in records], N, 0, max_new_tokens=MAX_NEW)
    for r, s in zip(records, samples):
        each = [m.score_trajectories([r["question"]], s.latents[None], s.latent_mask[None], [s.texts])[0] for m in loaded]
        assert r["rm_scores"] == pytest.approx(((each[0] + each[1]) / 2).tolist(), abs=2e-5)
        assert r["beam_search"]["answer"] is not None or r["beam_search"]["score"] is None
    # every member counted: the latent-only member reads the latents, the answer-reading one also the answers
    rows = {(x["method"], x["k"]): x for x in summary["compute"]["rows"]}
    c = [r["compute"] for r in records]
    one = sum(x["rm_prompt"] + sum(x["latents"]) for x in c) / Q
    answers = sum(sum(a + 1 for a in x["answers"]) for x in c) / Q
    assert rows[("best_of_n", N)]["rm_tokens"] == pytest.approx(2 * one + answers, abs=0.02)
    assert len(summary["compute"]["models"]["latent_rm"]["ensemble"]) == 2
