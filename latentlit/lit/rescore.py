"""Re-score a finished run with a LatentRM without sampling again (``latentlit rescore``).

The run's saved latents (``save_latents``) are scored by the RM and every record gets what a run
with that RM would have written (``rm_scores``, best-of-N, the weighted vote, the RM prompt's
size under ``compute``), in a derived directory: the parent's records are read, never touched.
The derived ``run.json`` is the parent's settings with the LatentRM (path, fingerprint,
``rm_score``) and ``rescored_from`` (the parent's directory and settings hash); it resumes as any
run directory does. Beam search and DVTS steer sampling with their RM, so they need a new run:
their fields (made with the parent's RM, if it had one) are left out.

A question is scored with the other questions of its latents file, as the predict batch that wrote
it scored them, so the scores (and every choice made on them) equal those of a fresh run with the
RM on the same samples.
"""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F

from latentlit.aggregation import registry
from latentlit.aggregation.registry import question_view
from latentlit.aggregation.selector import Selector
from latentlit.evaluation.compute import CostModel, backbone_shape, rm_shape
from latentlit.evaluation.metrics import coverage_ks
from latentlit.evaluation.report import add_report, format_summary, write_report
from latentlit.evaluation.run_metrics import RunMetrics
from latentlit.models.checkpoints import load_backbone
from latentlit.models.ensemble import load_latent_rm
from latentlit.models.latent_rm import TRAJECTORY_SCORES, LatentRM
from latentlit.runs.directory import RUN_FILE, check_run_settings, release_if_empty, settings_hash
from latentlit.runs.files import read_latents
from latentlit.runs.fingerprint import provenance_match, same_weights, sampler_mismatch, weights_fingerprint
from latentlit.runs.lock import acquire, release
from latentlit.runs.records import METRICS, PREDICTIONS, read_records
from latentlit.search import SHORTHANDS

# the fields a parent's own LatentRM (or the searches it steered) wrote: a derived run writes its own
# a selector was fitted to the parent's RM: the derived run has none
RM_FIELDS = ("rm_scores", "selector", "beam_search", "dvts", "dvts_vote", *(a.name for a in registry.AGGREGATORS if a.needs_rm))


def rescore(parent: str | Path, latent_rm: str, *, output_dir: str | Path | None = None, rm_score: str = "sum",
            selector: str | Path | None = None, log=print) -> Path:
    """Score the saved latents of run directory ``parent`` with ``latent_rm`` into a derived directory.

    Args:
        output_dir: default ``<parent>-rescored-<rm name>-<settings hash>`` beside the parent.
        rm_score: the trajectory score from the step scores (``sum``, paper; ``mean``, ``last``, ``min``).
        selector: a selector file fitted on validation (``scripts/fit_selector.py``) for this RM:
            adds the tempered vote and its calibrated confidence.

    Returns:
        the derived directory (``run.json``, ``predictions.jsonl``, ``metrics.json``, figures).

    Raises:
        FileNotFoundError: no ``run.json`` / records in ``parent``, or no saved latents.
        ValueError: a live adaptive run (its records hold what each question drew), an RM for other
            latents, an unknown ``rm_score``, the parent's backbone changed since, or a derived
            directory of other settings.
    """
    parent = Path(parent)
    if rm_score not in TRAJECTORY_SCORES:
        raise ValueError(f"rm_score={rm_score!r}; expected one of {TRAJECTORY_SCORES}")
    if not (parent / RUN_FILE).is_file():
        raise FileNotFoundError(f"{parent / RUN_FILE} does not exist: give the output directory of a latentlit predict run")
    base = json.loads((parent / RUN_FILE).read_text())
    if not base.get("save_latents") or not list((parent / "latents").glob("*.safetensors")):
        raise FileNotFoundError(f"{parent} holds no saved latents: run predict with --save_latents to re-score it later")
    if (base.get("adaptive") or {}).get("live"):
        raise ValueError(f"{parent} is a live adaptive run: its records hold the samples its rule drew; re-score a fixed-N "
                         "run (adaptive rules replayed on it are kept)")
    backbone = load_backbone(base["backbone"], dtype=getattr(torch, base.get("dtype") or "float32"))
    if not same_weights(weights_fingerprint(backbone), base["backbone_fingerprint"]):
        raise ValueError(f"{parent}: its backbone {base['backbone']} has other weights now (fingerprint "
                         f"{weights_fingerprint(backbone)}, run.json {base['backbone_fingerprint']}): the latents are not "
                         "that model's; use the backbone the run was made with")
    rm = load_latent_rm(latent_rm)
    if rm.latent_size != backbone.hidden_size:
        raise ValueError(f"latent_rm {latent_rm} reads {rm.latent_size}-dim latents but the run's latents are "
                         f"{backbone.hidden_size}-dim: use the RM trained on the run's backbone")
    match, warning = provenance_match(rm.provenance, base["backbone_fingerprint"], latent_rm, base["backbone"])
    for message in (warning, sampler_mismatch(rm.provenance, base.get("sampler") or {}, latent_rm)):
        if message is not None:
            warnings.warn(message, stacklevel=2)
    parent_rm = ("searches", "selector", "latent_rm_reads_answer")  # the parent's RM's, not this one's
    settings = {**{k: v for k, v in base.items() if k not in SHORTHANDS and k not in parent_rm},
                "beam_width": None,
                "latent_rm": str(latent_rm), "latent_rm_fingerprint": weights_fingerprint(rm), "rm_score": rm_score,
                "rescored_from": {"directory": str(parent.resolve()), "settings_hash": settings_hash(base)}}
    if selector is not None:
        settings["selector"] = Selector.load(selector).params()
    if rm.read_answer:  # latent_rm.json's setting, not in the weights fingerprint
        settings["latent_rm_reads_answer"] = True
    out = Path(output_dir) if output_dir else parent.parent / f"{parent.name}-rescored-{Path(str(latent_rm)).name}-{settings_hash(settings)}"
    acquire(out)
    try:
        return _rescore_into(out, parent, base, settings, backbone, rm, match, log)
    except BaseException:
        release_if_empty(out, (PREDICTIONS, METRICS))
        raise
    finally:
        release(out)


def _rescore_into(out: Path, parent: Path, base: dict, settings: dict, backbone, rm: LatentRM, match, log) -> Path:
    records = {r["id"]: r for r in read_records(parent)}
    done = read_records(out) if (out / PREDICTIONS).exists() else []
    check_run_settings(out, settings, write=True, has_results=bool(done))
    aggregators = registry.enabled(settings)
    seed, skip = int(settings.get("seed", 0)), {r["id"] for r in done}
    log(f"[latentlit] re-scoring {parent} with latent_rm {settings['latent_rm']} into {out}"
        + (f" (resuming: {len(done)} questions done)" if done else ""))
    with (out / PREDICTIONS).open("a") as file:
        for path in sorted((parent / "latents").glob("*.safetensors")):
            latents = {qid: x for qid, x in read_latents(path).items() if qid in records and qid not in skip}
            if not latents:
                continue
            for record in _rescored(latents, records, rm, settings["rm_score"], aggregators, seed, settings.get("selector")):
                file.write(json.dumps(record) + "\n")
            file.flush()
    derived = read_records(out)
    missing = sorted(set(records) - {r["id"] for r in derived})
    if missing:
        raise FileNotFoundError(f"{parent}: {len(missing)} of its questions have no saved latents (first: {missing[:3]})")
    n = len(derived[0]["answers"])
    ks = coverage_ks(n)
    cfg = backbone.latent_config
    metrics = RunMetrics(ks, n, aggregators, seed, cfg.num_latents if cfg.latent_stop_id is None else cfg.max_latents,
                         ["samples"], None)
    for record in derived:
        metrics.update(record)
    computed = metrics.compute()
    parent_summary = json.loads((parent / METRICS).read_text()) if (parent / METRICS).exists() else {}
    summary = {"config": {**{k: None for k in SHORTHANDS}, **settings, "n_samples": n,
                          "max_trajectories": (parent_summary.get("config") or {}).get("max_trajectories"),
                          "latent_rm_backbone_match": match},
               "metrics": computed["metrics"],
               "counts": {**computed["counts"], "questions_this_run": len(derived) - len(done), "trajectories_this_run": 0},
               "trajectories_per_second": None, "throughput": None}
    if "adaptive" in parent_summary:  # replayed rules on the same samples: the parent's table holds
        summary["adaptive"] = parent_summary["adaptive"]
    shared = (settings.get("sampler") or {}).get("prefill") != "per_sample" or n == 1
    add_report(summary, derived, ks=ks, aggregators=aggregators, seed=seed,
               cost_model=CostModel(backbone_shape(backbone), rm_shape(rm), shared,
                                    rm_prompt_once=rm.prompt_once))
    write_report(summary, out)
    log(format_summary(summary))
    log(f"[latentlit] re-scored {len(derived)} questions ({len(derived) - len(done)} this run) into {out}")
    return out


def _rescored(latents: dict, records: dict, rm: LatentRM, how: str, aggregators, seed: int,
              selector: dict | None = None) -> list[dict]:
    """The derived records of the questions of one latents file (in file order), scored together."""
    ids = list(latents)
    width = max(x.shape[1] for x in latents.values())
    stacked, masks = [], []
    for qid in ids:
        x, steps = latents[qid], records[qid]["compute"]["latents"]  # each trajectory's own number of steps
        stacked.append(F.pad(x, (0, 0, 0, width - x.shape[1])))
        masks.append(torch.arange(width)[None, :] < torch.tensor(steps)[:, None])
    masks = torch.stack(masks)
    scores = rm.score_trajectories([records[qid]["question"] for qid in ids], torch.stack(stacked), masks,
                                   [records[qid]["texts"] for qid in ids], how).cpu().tolist()
    prompts = rm.encode_prompts([records[qid]["question"] for qid in ids])[1].sum(1).tolist()
    out = []
    for qid, row, prompt in zip(ids, scores, prompts):
        record = {k: v for k, v in records[qid].items() if k not in RM_FIELDS}
        record["latent_steps"] = {k: v for k, v in record["latent_steps"].items() if k == "samples"}
        record["compute"] = {k: v for k, v in record["compute"].items() if k not in ("beam_search", "dvts")}
        record["compute"]["rm_prompt"] = int(prompt)
        record["rm_scores"] = [round(x, 5) if math.isfinite(x) else None for x in row]
        if selector is not None:
            record["selector"] = selector
        view = question_view(record, seed)
        for agg in aggregators:
            if agg.needs_rm and agg.choose is not None:
                record[agg.name] = agg.choose(view)
        out.append(record)
    return out
