"""Reading back a run's record files (each question once) and the output directory's run lock."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from latentlit.models.checkpoints import save_backbone
from latentlit.runs import lock as run_lock
from latentlit.runs.records import DuplicateRecords, merge_rank_files, read_records, read_unique
from latentlit.scoring.shards import read_index


def _write(path: Path, records: list[dict], tail: str = "") -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in records) + tail)


def _rec(i: int, correct: bool = True) -> dict:
    return {"index": i, "id": f"q{i}", "greedy": {"correct": correct}}


def test_identical_repeats_count_once_with_a_warning(tmp_path):
    # an interrupted DDP merge: the part's records are already in predictions.jsonl
    _write(tmp_path / "predictions.jsonl", [_rec(0), _rec(1), _rec(2)])
    _write(tmp_path / "predictions.rank0.jsonl", [_rec(1), _rec(3)], tail='{"index": 4, "id"')
    with pytest.warns(UserWarning, match=r"1 record\(s\) repeat .*'q1' at .*predictions.jsonl:2 and "
                                         r".*predictions.rank0.jsonl:1"):
        records = read_records(tmp_path)
    assert [r["id"] for r in records] == ["q0", "q1", "q2", "q3"]  # the truncated q4 is redone


def test_two_different_records_of_one_question_are_refused(tmp_path):
    _write(tmp_path / "predictions.jsonl", [_rec(0), _rec(1), _rec(2), _rec(1, correct=False)])
    with pytest.raises(DuplicateRecords, match=r"id 'q1' has two different records \(.*predictions.jsonl, "
                                               r"lines 2 and 4\)"):
        read_records(tmp_path)
    _write(tmp_path / "predictions.jsonl", [_rec(0), _rec(1)])
    _write(tmp_path / "predictions.rank1.jsonl", [_rec(1, correct=False)])
    with pytest.raises(DuplicateRecords, match=r"'q1' .*predictions.jsonl:2 and .*predictions.rank1.jsonl:1"):
        read_records(tmp_path)


def test_corrupt_line_before_the_last_is_an_error(tmp_path):
    (tmp_path / "a.jsonl").write_text('{"id": "a"}\n{"id": \n{"id": "b"}\n')
    with pytest.raises(ValueError, match=r"a.jsonl:2: corrupt record"):
        read_unique([tmp_path / "a.jsonl"])


def test_merge_writes_each_question_once(tmp_path):
    _write(tmp_path / "predictions.jsonl", [_rec(0), _rec(2)])
    _write(tmp_path / "predictions.rank0.jsonl", [_rec(2), _rec(4)])  # q2: merged before an interruption
    _write(tmp_path / "predictions.rank1.jsonl", [_rec(3), _rec(1)])
    merge_rank_files(tmp_path)
    lines = [json.loads(x)["id"] for x in (tmp_path / "predictions.jsonl").read_text().splitlines()]
    assert lines == ["q0", "q1", "q2", "q3", "q4"]  # the whole file in problem order
    assert not list(tmp_path.glob("predictions.rank*"))


def test_labelling_index_refuses_a_question_indexed_twice(tmp_path):
    line = {"index": 0, "id": "q0", "question": "?", "gold": "1", "kept": True, "shard": "shard-r0-00000.safetensors",
            "row": 0}
    _write(tmp_path / "index.r0.jsonl", [line])
    _write(tmp_path / "index.r1.jsonl", [{**line, "shard": "shard-r1-00000.safetensors"}])
    with pytest.raises(DuplicateRecords, match=r"id 'q0' .*index.r0.jsonl:1 and .*index.r1.jsonl:1"):
        read_index(tmp_path)
    _write(tmp_path / "index.r1.jsonl", [line])
    with pytest.warns(UserWarning, match="counted once"):
        assert len(read_index(tmp_path)) == 1


# --------------------------------------------------------------------------- run lock
_HOLD = ("import sys, time; from latentlit.runs import lock; lock.acquire(sys.argv[1]); print('held', flush=True); "
         "time.sleep(60)")


def _holder(directory: Path) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", _HOLD, str(directory)], stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])})
    assert proc.stdout.readline().strip() == "held"
    return proc


@pytest.mark.skipif(run_lock.fcntl is None, reason="no fcntl on this platform: no lock (documented)")
def test_a_directory_held_by_another_process_is_refused_until_it_ends(tmp_path):
    out = tmp_path / "out"
    proc = _holder(out)
    try:
        with pytest.raises(run_lock.DirectoryInUse, match=rf"{out} is in use by another latentlit run \(process "
                                                          rf"{proc.pid}\)"):
            run_lock.acquire(out)
        assert not run_lock.holds(out)
    finally:
        proc.send_signal(signal.SIGKILL)  # a crash: the OS releases the flock
        proc.wait()
    assert (out / run_lock.LOCK_FILE).exists()  # left by the killed run: harmless
    run_lock.acquire(out)
    try:
        assert run_lock.holds(out) and os.environ[run_lock.ENV] == str(out.resolve())
        run_lock.acquire(out)  # re-entrant
        run_lock.release(out)
        assert run_lock.holds(out)
    finally:
        run_lock.release(out)
    assert not run_lock.holds(out) and run_lock.ENV not in os.environ
    assert not (out / run_lock.LOCK_FILE).exists()


def test_processes_started_by_the_holder_are_part_of_its_run(tmp_path, monkeypatch):
    # DDP ranks inherit the holder's environment and never wait on their own run's lock
    monkeypatch.setenv(run_lock.ENV, str((tmp_path / "out").resolve()))
    run_lock.acquire(tmp_path / "out")
    assert run_lock.holds(tmp_path / "out") and not (tmp_path / "out").exists()
    run_lock.release(tmp_path / "out")
    assert os.environ[run_lock.ENV] == str((tmp_path / "out").resolve())


# --------------------------------------------------------------------------- file modes
@pytest.mark.parametrize("mask", [0o022, 0o077])
def test_tensor_files_get_the_umask_mode(tmp_path, mask):
    import torch

    from latentlit.scoring.rollouts import LabelledGroup
    from latentlit.scoring.shards import GroupShardWriter
    from latentlit.testing.tiny import tiny_backbone

    old = os.umask(mask)
    try:
        writer = GroupShardWriter(tmp_path / "groups")
        group = LabelledGroup("q0", "?", "1", torch.zeros(2, 3, 4), torch.ones(2, 3, dtype=torch.bool), torch.zeros(2, 3),
                              torch.zeros(2, dtype=torch.bool))
        writer.add(0, "q0", "?", "1", group)
        writer.flush()
        save_backbone(tiny_backbone(), tmp_path / "backbone")
        (tmp_path / "plain.txt").write_text("x")
    finally:
        os.umask(old)
    written = [*(tmp_path / "groups").glob("shard-*.safetensors"), tmp_path / "backbone" / "model.safetensors",
               tmp_path / "plain.txt"]
    assert len(written) == 3
    assert {oct(p.stat().st_mode & 0o777) for p in written} == {oct(0o666 & ~mask)}


def test_latentrm_data_warning_points_at_latentlit_not_lightning(tmp_path):
    import torch

    from latentlit.lit.latent_rm_data import LatentRMDataModule
    from latentlit.scoring.rollouts import LabelledGroup
    from latentlit.scoring.shards import GroupShardWriter

    writer = GroupShardWriter(tmp_path)
    group = LabelledGroup("q0", "?", "1", torch.zeros(2, 3, 4), torch.ones(2, 3, dtype=torch.bool), torch.zeros(2, 3),
                          torch.zeros(2, dtype=torch.bool))
    writer.add(0, "q0", "?", "1", group)
    writer.flush()
    with pytest.warns(UserWarning, match="1 groups and none fell in the validation split") as caught:
        LatentRMDataModule(str(tmp_path), val_fraction=0.001).setup()
    assert Path(caught[0].filename).name == "latent_rm_data.py"


@pytest.mark.skipif(run_lock.fcntl is None, reason="no fcntl on this platform: no lock (documented)")
def test_the_lock_removes_only_a_directory_it_created_and_the_run_left_empty(tmp_path):
    new = tmp_path / "new" / "export"
    run_lock.acquire(new)
    assert (new / run_lock.LOCK_FILE).is_file()
    run_lock.release(new)
    assert not new.exists() and (tmp_path / "new").is_dir()  # only the directory the lock made
    existing = tmp_path / "existing"
    existing.mkdir()
    run_lock.acquire(existing)
    run_lock.release(existing)
    assert existing.is_dir() and not any(existing.iterdir())
    written = tmp_path / "written"
    run_lock.acquire(written)
    (written / "model.safetensors").write_bytes(b"x")
    run_lock.release(written)
    assert [p.name for p in written.iterdir()] == ["model.safetensors"]
