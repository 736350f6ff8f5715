"""On-disk store of labelled step groups: safetensors shards plus a JSONL index, written as
groups are produced, resumable, one writer per process.

Layout of a groups directory::

    shard-r<rank>-<k>.safetensors   latents (S, N, T, d), latent_mask (S, N, T), labels (S, N, T),
                                    final_correct (S, N); T is the shard's longest group,
                                    shorter groups are zero-padded (mask False)
    index.r<rank>.jsonl             one line per question: index, id, question, gold, kept,
                                    shard, row   (kept=false lines have shard=null), and for
                                    kept groups texts, answers (each trajectory's decoded
                                    answer text and parsed answer)
    summary.json                    labelling settings and statistics (written at the end)

A shard is written before its index lines, so a crash loses at most the groups not yet indexed;
they are recomputed on resume (an orphan shard is simply never read).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file

from latentlit.runs.files import save_tensors
from latentlit.runs.records import read_unique
from latentlit.scoring.rollouts import LabelledGroup


class GroupShardWriter:
    """Buffers groups and writes a shard every ``shard_size`` groups (and on :meth:`flush`)."""

    def __init__(self, directory: str | Path, rank: int = 0, shard_size: int = 256):
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.rank, self.shard_size = rank, shard_size
        self.index_path = self.dir / f"index.r{rank}.jsonl"
        existing = sorted(self.dir.glob(f"shard-r{rank}-*.safetensors"))
        self._next = 1 + max((int(p.stem.split("-")[-1]) for p in existing), default=-1)
        self._groups: list[tuple[int, LabelledGroup]] = []
        self._dropped: list[dict] = []

    def add(self, index: int, problem_id: str, question: str, gold: str, group: LabelledGroup | None) -> None:
        """Queue one question's result (None: filtered out)."""
        if group is None:
            self._dropped.append({"index": index, "id": problem_id, "question": question, "gold": gold, "kept": False,
                                  "shard": None, "row": None})
        else:
            self._groups.append((index, group))
        if len(self._groups) >= self.shard_size:
            self.flush()

    def flush(self) -> None:
        """Write queued groups as one shard, then their index lines."""
        lines = list(self._dropped)
        if self._groups:
            name = f"shard-r{self.rank}-{self._next:05d}.safetensors"
            gs = [g for _, g in self._groups]
            save_tensors({
                "latents": _stack([g.latents for g in gs]),
                "latent_mask": _stack([g.latent_mask for g in gs]),
                "labels": _stack([g.labels for g in gs]),
                "final_correct": torch.stack([g.final_correct for g in gs]).contiguous(),
            }, str(self.dir / name))
            self._next += 1
            lines += [{"index": i, "id": g.id, "question": g.question, "gold": g.gold, "kept": True, "shard": name, "row": r,
                       **({"texts": g.texts, "answers": g.answers} if g.texts is not None else {})}
                      for r, (i, g) in enumerate(self._groups)]
        if lines:
            with self.index_path.open("a") as f:
                for line in sorted(lines, key=lambda x: x["index"]):
                    f.write(json.dumps(line) + "\n")
        self._groups, self._dropped = [], []


def _stack(tensors: list[torch.Tensor]) -> torch.Tensor:
    """Stack (N, T_g, ...) tensors, zero-padding the step dimension to the longest group
    (groups of a dynamic-stop backbone differ in length; the mask marks the padding)."""
    width = max(x.shape[1] for x in tensors)
    out = tensors[0].new_zeros(len(tensors), tensors[0].shape[0], width, *tensors[0].shape[2:])
    for i, x in enumerate(tensors):
        out[i, :, : x.shape[1]] = x
    return out


def read_index(directory: str | Path) -> list[dict]:
    """All index lines of all ranks, in problem order, each question once (``latentlit.runs.records``:
    a truncated last line is ignored, an identical repeated line is kept once with a warning).

    Raises:
        ValueError: a corrupt line that is not the last of its file, or two different lines for
            one question id (names the files, the id and both line numbers): two labelling runs
            wrote the directory, and its groups would be trained on twice.
    """
    out = read_unique(sorted(Path(directory).glob("index.r*.jsonl")))
    return sorted(out, key=lambda x: x["index"])


def load_groups(directory: str | Path) -> list[LabelledGroup]:
    """Every kept group in ``directory``, in problem order.

    Raises:
        FileNotFoundError: no index in ``directory``.
    """
    index = read_index(directory)
    if not index:
        raise FileNotFoundError(f"no labelled groups (index.r*.jsonl) in {directory}")
    shards: dict[str, dict] = {}
    groups = []
    for line in index:
        if not line["kept"]:
            continue
        if line["shard"] not in shards:
            shards[line["shard"]] = load_file(str(Path(directory) / line["shard"]))
        s, r = shards[line["shard"]], line["row"]
        # back to the group's own length (its longest trajectory), whatever its shard's padding
        steps = s["latent_mask"][r].any(0).nonzero()
        width = int(steps.max()) + 1 if len(steps) else 0
        groups.append(LabelledGroup(line["id"], line["question"], line["gold"], s["latents"][r][:, :width],
                                    s["latent_mask"][r][:, :width], s["labels"][r][:, :width], s["final_correct"][r],
                                    line.get("texts"), line.get("answers")))
    return groups


def groups_provenance(directory: str | Path | None) -> dict | None:
    """The backbone (and sampler) that labelled a groups directory, from its ``run.json``:
    ``{"backbone": path, "backbone_fingerprint": ..., "groups": directory, "sampler": describe()}``,
    or None when the directory records no
    fingerprint (labelled before run.json carried one, or no run.json)."""
    if directory is None:
        return None
    path = Path(directory) / "run.json"
    try:
        settings = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    if not settings.get("backbone_fingerprint"):
        return None
    out = {"backbone": settings.get("backbone"), "backbone_fingerprint": settings["backbone_fingerprint"],
           "groups": str(directory)}
    if settings.get("sampler"):  # what the RM's training trajectories were drawn with
        out["sampler"] = settings["sampler"]
    return out
