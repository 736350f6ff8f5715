"""``latentlit predict`` end to end through the CLI: output contract, reproducibility, batching
and chunking invariance, resume, ``--ckpt_path`` and DDP on CPU.

The backbone is the tiny random GPT-2 with an untied LM head that only scores number tokens, so
every trajectory answers with numbers (``answer_format last_number``) and the answers vary with
the dropout masks; the gold answers of the problem file are picked from what the model says, so
that correctness, votes and coverage take non-trivial values.
"""

from __future__ import annotations

import json
import re
import os
import shutil
from pathlib import Path

import pytest
import torch
import yaml

from latentlit.aggregation import majority_vote
from latentlit.cli import main
from latentlit.data.answers import answers_match, extract_answer
from latentlit.data.synthetic import generate_problems
from latentlit.evaluation.metrics import pass_at_k
from latentlit.models.checkpoints import load_backbone, save_backbone
from latentlit.sampling import MCDropout
from latentlit.search.nway import sample_questions
from latentlit.testing.ddp import run_cli_ddp
from latentlit.testing.tiny import tiny_backbone

N, SEED, MAX_NEW = 4, 0, 3
TIMING_KEYS = {"trajectories_per_second", "throughput"}
THIS_RUN_COUNTS = {"questions_this_run", "trajectories_this_run"}


def _numeric_backbone(path: Path) -> Path:
    bb = tiny_backbone(num_latents=3)
    tok = bb.tokenizer
    numbers = sorted(i for t, i in tok.get_vocab().items() if t.isdigit())
    head = torch.zeros(len(tok), bb.hidden_size)
    head[numbers] = torch.randn(len(numbers), bb.hidden_size, generator=torch.Generator().manual_seed(1))
    bb.lm.config.tie_word_embeddings = False
    bb.lm.lm_head.weight = torch.nn.Parameter(head)
    save_backbone(bb, path)
    return path


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    root = tmp_path_factory.mktemp("predict")
    backbone_dir = _numeric_backbone(root / "backbone")
    bb = load_backbone(backbone_dir)
    assert bb.lm.lm_head.weight.data_ptr() != bb.lm.transformer.wte.weight.data_ptr()
    problems = generate_problems(8, 4242)
    ids, questions = [f"p{i}" for i in range(8)], [p.question for p in problems]
    greedy = [extract_answer(t, "last_number") for t in bb.generate(questions, max_new_tokens=MAX_NEW).answers_text]
    samples = sample_questions(bb, MCDropout(p=0.1, mask_scope="step", prefill="per_sample"), ids, questions, N, SEED,
                               max_new_tokens=MAX_NEW)
    answers = [[extract_answer(t, "last_number") for t in s.texts] for s in samples]
    # golds: the greedy answer, the majority answer, a minority answer, nothing the model says
    golds = []
    for i, a in enumerate(answers):
        minority = [x for x in a if x != majority_vote(a).answer]
        choice = [greedy[i], majority_vote(a).answer, minority[0] if minority else a[-1], "98765"][i % 4]
        golds.append(choice)
    path = root / "problems.jsonl"
    with path.open("w") as f:
        for pid, q, g in zip(ids, questions, golds):
            f.write(json.dumps({"id": pid, "question": q, "answer": g}) + "\n")
    return {"root": root, "backbone": backbone_dir, "problems": path, "answers": answers, "greedy": greedy,
            "golds": golds, "ids": ids, "questions": questions, "runs": {}}


def _config(env, out: Path, *, batch_size: int = 6, max_trajectories: int = 64, seed: int = SEED, limit: int = 6,
            sampler: dict | None = None, n_samples: int = N) -> Path:
    cfg = {
        "trainer": {"accelerator": "cpu", "devices": 1, "logger": False, "enable_progress_bar": False,
                    "enable_model_summary": False, "default_root_dir": str(out.parent / f"{out.name}_root")},
        "model": {"class_path": "latentlit.lit.TTSPredictor", "init_args": {
            "backbone": str(env["backbone"]),
            "sampler": sampler or {"class_path": "latentlit.sampling.MCDropout",
                                   "init_args": {"p": 0.1, "mask_scope": "step", "prefill": "per_sample"}},
            "n_samples": n_samples, "max_trajectories": max_trajectories, "seed": seed, "max_new_tokens": MAX_NEW,
            "answer_format": "last_number", "output_dir": str(out)}},
        "data": {"class_path": "latentlit.lit.ProblemDataModule", "init_args": {
            "problems": {"class_path": "latentlit.data.sources.ProblemFile",
                         "init_args": {"path": str(env["problems"]), "limit": limit}},
            "batch_size": batch_size}},
    }
    path = out.parent / f"{out.name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _predict(env, name: str, *extra: str, **kwargs) -> Path:
    out = env["root"] / name
    main(["predict", "--config", str(_config(env, out, **kwargs)), *extra])
    return out


def _baseline(env) -> Path:
    if "base" not in env["runs"]:
        env["runs"]["base"] = _predict(env, "base")
    return env["runs"]["base"]


def _records(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]


def _metrics(out: Path) -> dict:
    return json.loads((out / "metrics.json").read_text())


def _assert_same_records(a: Path, b: Path) -> None:
    """Equal records, except that ``diversity`` (rounded to 6 decimals from float32 latents) may
    move by one unit in the last place when the batch composition changes: latents of a question
    agree to ~1e-7 between batch compositions, not bit for bit."""
    ra, rb = _records(a), _records(b)
    assert [r["id"] for r in ra] == [r["id"] for r in rb]
    for x, y in zip(ra, rb):
        assert {k: v for k, v in x.items() if k != "diversity"} == {k: v for k, v in y.items() if k != "diversity"}
        assert x["diversity"] == pytest.approx(y["diversity"], abs=2.5e-6)


def _assert_same_metrics(a: dict, b: dict) -> None:
    a, b = _comparable(a), _comparable(b)
    da, db = a["metrics"].pop("diversity_per_step"), b["metrics"].pop("diversity_per_step")
    assert da == pytest.approx(db, abs=2.5e-6)
    assert a == b


def _comparable(summary: dict) -> dict:
    summary = json.loads(json.dumps(summary))
    for k in TIMING_KEYS:
        summary.pop(k, None)
    for k in THIS_RUN_COUNTS:
        summary["counts"].pop(k, None)
    return summary


# ---------------------------------------------------------------------- contract
def test_output_contract(env):
    out = _baseline(env)
    records = _records(out)
    assert [r["id"] for r in records] == env["ids"][:6]
    for i, r in enumerate(records):
        assert r["question"] == env["questions"][i]
        assert r["gold"] == env["golds"][i]
        assert len(r["answers"]) == len(r["correct"]) == N
        # the answers are the ones N-way sampling gives outside Lightning
        assert r["answers"] == env["answers"][i]
        assert r["correct"] == [answers_match(a, r["gold"]) for a in r["answers"]]
        vote = majority_vote(r["answers"])
        assert r["majority_vote"] == {"answer": vote.answer, "correct": answers_match(vote.answer, r["gold"])}
        assert r["vote_share"] == pytest.approx(vote.share, abs=1e-6)
        assert len(r["diversity"]) == 3 and all(d >= 0 for d in r["diversity"])
        assert r["greedy"]["answer"] == env["greedy"][i]
    # the golds were chosen so that the run is not all-wrong nor all-right
    assert records[0]["greedy"]["correct"] and records[1]["majority_vote"]["correct"]
    assert not any(records[3]["correct"])
    assert any(d > 0 for r in records for d in r["diversity"])

    summary = _metrics(out)
    cfg = summary["config"]
    assert cfg["sampler"]["name"] == "MCDropout" and cfg["sampler"]["p"] == 0.1
    assert cfg["n_samples"] == N and cfg["seed"] == SEED
    m = summary["metrics"]
    assert m["greedy_accuracy"] == pytest.approx(sum(r["greedy"]["correct"] for r in records) / 6, abs=1e-6)
    for k in (1, 2, 4):
        expected = sum(pass_at_k(N, sum(r["correct"]), k) for r in records) / 6
        assert m[f"coverage@{k}"] == pytest.approx(expected, abs=1e-6)
    assert m["coverage@4"] > 0 and m["coverage@1"] < 1
    assert m["majority_vote@4"] == pytest.approx(sum(r["majority_vote"]["correct"] for r in records) / 6, abs=1e-6)
    assert summary["counts"]["questions"] == 6
    assert summary["trajectories_per_second"] > 0
    png = (out / "scaling.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 1000


# ---------------------------------------------------------------------- reproducibility
def test_same_seed_identical_and_batching_invariance(env):
    base = (_baseline(env) / "predictions.jsonl").read_bytes()
    again = _predict(env, "again")
    assert (again / "predictions.jsonl").read_bytes() == base
    assert _comparable(_metrics(again)) == _comparable(_metrics(env["runs"]["base"]))
    # one question per batch, at most 4 trajectories at once (one question per chunk)
    small = _predict(env, "bs1_mt4", batch_size=1, max_trajectories=4)
    _assert_same_records(small, env["runs"]["base"])
    # N > max_trajectories: samples of one question split into chunks of 3 and 1
    split = _predict(env, "bs6_mt3", batch_size=6, max_trajectories=3)
    _assert_same_records(split, env["runs"]["base"])
    assert _metrics(split)["config"]["max_trajectories"] == 3
    _assert_same_metrics({**_metrics(split), "config": None}, {**_metrics(env["runs"]["base"]), "config": None})
    # another seed gives other trajectories
    other = _records(_predict(env, "seed1", seed=1))
    assert [r["diversity"] for r in other] != [r["diversity"] for r in _records(env["runs"]["base"])]


def test_resume_after_crash(env):
    base = _baseline(env)
    out = env["root"] / "resume"
    out.mkdir()
    lines = (base / "predictions.jsonl").read_text().splitlines(keepends=True)
    assert len(lines) == 6
    (out / "predictions.jsonl").write_text("".join(lines[:3]) + lines[3][: len(lines[3]) // 2])
    _predict(env, "resume")
    text = (out / "predictions.jsonl").read_text()
    assert text.startswith("".join(lines[:3])) and text.endswith("\n") and text.count("\n") == 6
    ids = [r["id"] for r in _records(out)]
    assert ids == env["ids"][:6] and len(set(ids)) == 6
    _assert_same_records(out, base)
    resumed, full = _metrics(out), _metrics(base)
    assert resumed["counts"]["questions_this_run"] == 3 and resumed["counts"]["trajectories_this_run"] == 3 * N
    _assert_same_metrics(resumed, full)
    # a finished directory re-run does no new work and keeps its records and metrics (with no
    # question left Lightning skips the predict loop, so metrics.json is the previous run's)
    _predict(env, "resume")
    assert (out / "predictions.jsonl").read_text() == text
    assert _metrics(out)["counts"]["questions"] == 6
    _assert_same_metrics(_metrics(out), full)


def test_resume_rejects_other_n(env):
    out = env["root"] / "other_n"
    shutil.copytree(_baseline(env), out)
    with pytest.raises(ValueError, match="n_samples"):
        _predict(env, "other_n", n_samples=2)


def test_a_smaller_limit_is_answered_from_the_records(env, capsys):
    """A run over fewer questions than the directory holds reads them from its records: nothing is
    sampled or written, and the printed report covers exactly those questions."""
    out = env["root"] / "fewer"
    shutil.copytree(_baseline(env), out)
    results = ("predictions.jsonl", "metrics.json", "run.json", "accuracy_vs_compute.csv", "scaling.png")
    before = {name: (out / name).read_bytes() for name in results if (out / name).exists()}
    capsys.readouterr()
    _predict(env, "fewer", limit=3)
    printed = capsys.readouterr().out
    assert {name: (out / name).read_bytes() for name in results if (out / name).exists()} == before  # no result written
    assert "answered from its records: 3 of its 6 questions; no result is written" in printed
    assert "[latentlit] 3 of the 6 questions of" in printed and "from its records; no result written" in printed
    first3 = _records(out)[:3]
    greedy = 100 * sum(r["greedy"]["correct"] for r in first3) / 3
    assert re.search(rf"^  greedy +{greedy:.1f} ", printed, re.M)


def test_resume_refuses_other_questions(env):
    # another file whose ids collide with the stored ones (ids are "<stem>-<index>" for GSM8K files)
    out = env["root"] / "collide"
    shutil.copytree(_baseline(env), out)
    other = env["root"] / "other_problems.jsonl"
    lines = [json.loads(x) for x in env["problems"].read_text().splitlines()]
    other.write_text("".join(json.dumps({**x, "question": x["question"] + " ."}) + "\n" for x in lines))  # words the tokenizer knows
    cfg = yaml.safe_load(_config(env, out).read_text())
    cfg["data"]["init_args"]["problems"]["init_args"]["path"] = str(other)
    (env["root"] / "collide.yaml").write_text(yaml.safe_dump(cfg))
    with pytest.raises(ValueError, match=r"6 question id\(s\) hold another question or gold.*first: p0"):
        main(["predict", "--config", str(env["root"] / "collide.yaml")])


def test_resume_counts_repeated_records_once(env, capsys):
    # a copied directory with 3 of its own lines appended again (the fresh-user trial's case)
    out = env["root"] / "repeated"
    shutil.copytree(_baseline(env), out)
    lines = (out / "predictions.jsonl").read_text().splitlines(keepends=True)
    (out / "predictions.jsonl").write_text("".join(lines + lines[:3]))
    with pytest.warns(UserWarning, match=r"3 record\(s\) repeat an identical earlier one and are counted once"):
        _predict(env, "repeated")
    assert "(resuming: 6 questions done)" in capsys.readouterr().out
    assert (out / "predictions.jsonl").read_text() == "".join(lines)  # each question once again
    _assert_same_metrics(_metrics(out), _metrics(_baseline(env)))
    assert _metrics(out)["counts"]["questions"] == 6


def test_resume_refuses_two_different_records_of_one_question(env, capsys, monkeypatch):
    monkeypatch.delenv("LATENTLIT_DEBUG")
    out = env["root"] / "conflict"
    shutil.copytree(_baseline(env), out)
    records = _records(out)
    other = {**records[1], "greedy": {**records[1]["greedy"], "correct": not records[1]["greedy"]["correct"]}}
    with (out / "predictions.jsonl").open("a") as f:
        f.write(json.dumps(other) + "\n")
    before = (out / "predictions.jsonl").read_text()
    with pytest.raises(SystemExit) as exit_info:
        _predict(env, "conflict")
    assert exit_info.value.code == 2
    err = [x for x in capsys.readouterr().err.splitlines() if x.startswith("latentlit: error")]
    assert err == [(f"latentlit: error: DuplicateRecords: id 'p1' has two different records ({out / 'predictions.jsonl'}, "
                      "lines 2 and 7): two runs wrote this directory, or a file was edited; keep one of the lines (or "
                      "use another output directory), never both")]
    assert (out / "predictions.jsonl").read_text() == before


def test_a_directory_in_use_by_another_run_is_refused(env, capsys, monkeypatch):
    import subprocess
    import sys

    monkeypatch.delenv("LATENTLIT_DEBUG")
    out = env["root"] / "busy"
    shutil.copytree(_baseline(env), out)
    files = {p.name: p.read_bytes() for p in out.iterdir()}
    hold = ("import sys, time; from latentlit.runs import lock; lock.acquire(sys.argv[1]); print('held', flush=True); "
            "time.sleep(60)")
    holder = subprocess.Popen([sys.executable, "-c", hold, str(out)], stdout=subprocess.PIPE, text=True,
                              env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])})
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(SystemExit) as exit_info:
            _predict(env, "busy")
        assert exit_info.value.code == 2
        err = [x for x in capsys.readouterr().err.splitlines() if x.startswith("latentlit: error")]
        assert err == [(f"latentlit: error: DirectoryInUse: {out} is in use by another latentlit run (process "
                          f"{holder.pid}): wait for it to end (or stop it), or give another output directory")]
        # nothing of the refused run in the directory (no config, no log folder, records untouched)
        assert {p.name: p.read_bytes() for p in out.iterdir() if p.name != ".latentlit.lock"} == files
    finally:
        holder.kill()
        holder.wait()
    _predict(env, "busy")  # the holder is gone: the same command runs (nothing left to do)
    assert _metrics(out)["counts"]["questions"] == 6


# ---------------------------------------------------------------------- --ckpt_path
def test_a_checkpoint_cannot_replace_the_weights_a_run_names(env):
    """A prediction's weights are its backbone directory, named by fingerprint in run.json; Lightning
    would restore a --ckpt_path's weights after that (docs/determinism.md#what-decides-the-numbers)."""
    import lightning as L

    from latentlit.data.sources import ProblemFile
    from latentlit.lit import ProblemDataModule, TTSPredictor
    from latentlit.sampling import AGN

    out = env["root"] / "with_ckpt"
    model = TTSPredictor(backbone=str(env["backbone"]), sampler=AGN(sigma=0.5), n_samples=2, max_new_tokens=2,
                         output_dir=str(out))
    dm = ProblemDataModule(ProblemFile(str(env["problems"]), limit=1), batch_size=1)
    trainer = L.Trainer(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False)
    ckpt = env["root"] / "some.ckpt"
    trainer.strategy.connect(model)
    trainer.save_checkpoint(ckpt)
    with pytest.raises(ValueError, match=r"--ckpt_path .*some.ckpt would replace them after that: export the trained "
                                         r"model with latentlit fit --export_dir"):
        L.Trainer(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False).predict(
            model, datamodule=dm, ckpt_path=str(ckpt))
    assert not out.exists()


# ---------------------------------------------------------------------- DDP on CPU
@pytest.mark.slow
def test_ddp_two_cpu_processes_match_one(env):
    single = _predict(env, "single_bs2", batch_size=2)
    out = env["root"] / "ddp"
    proc = run_cli_ddp("predict", _config(env, out, batch_size=2), env["root"])
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    assert "world_size=2" in proc.stderr or "distributed_backend=gloo" in proc.stderr, proc.stderr[-3000:]
    assert not list(out.glob("predictions.rank*.jsonl"))  # merged and removed
    # rank 0 ran batches (p0, p1), (p4, p5) and rank 1 (p2, p3): the merged file is in problem order
    _assert_same_records(out, single)
    ddp, one = _metrics(out), _metrics(single)
    assert ddp["counts"]["questions"] == 6 and ddp["counts"]["trajectories_this_run"] == 6 * N
    _assert_same_metrics(ddp, one)


@pytest.mark.slow
def test_ddp_fewer_questions_than_processes(env):
    """One question on two processes: the idle process runs to the end with the other (it used to
    stop on a bare AssertionError in Lightning's sampler, and the other on a gloo disconnect)."""
    single = _predict(env, "single_limit1", limit=1)
    out = env["root"] / "ddp_limit1"
    proc = run_cli_ddp("predict", _config(env, out, limit=1), env["root"])
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    assert "AssertionError" not in proc.stderr
    assert [r["id"] for r in _records(out)] == ["p0"]
    _assert_same_records(out, single)
    ddp = _metrics(out)
    assert ddp["counts"]["questions"] == 1 and ddp["counts"]["trajectories_this_run"] == N
    _assert_same_metrics(ddp, _metrics(single))
