"""``latentlit predict``: parallel test-time scaling of a latent backbone inside ``predict_step``.

Paper Sec. 3: each question gets N latent trajectories from a sampler (MC-dropout or AGN), the
answers are aggregated (majority vote; LatentRM-based ones when a LatentRM is given) and coverage@k
and every aggregator@k are measured against a greedy pass. What spends a question's budget beyond
its N samples (beam search, DVTS) comes from the table of :mod:`latentlit.search`; how answers are
chosen from the samples, from :mod:`latentlit.aggregation.registry`; the report, from
:mod:`latentlit.evaluation.report`. The module wires them: one record per question, metrics summed
as it goes (exact under DDP), ``metrics.json`` and the figures at the end.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.utilities import rank_zero_warn

from latentlit.aggregation import registry
from latentlit.aggregation.selector import Selector
from latentlit.aggregation.stopping import AdaptiveOptions, parse_adaptive
from latentlit.data.answers import ANSWER_FORMATS, answer_format_warning, extract_answer
from latentlit.data.problem import Problem
from latentlit.data.tokenizer import check_questions
from latentlit.evaluation.checks import summary_warnings
from latentlit.evaluation.compute import CostModel, backbone_shape, rm_shape
from latentlit.evaluation.metrics import coverage_ks
from latentlit.evaluation.report import add_report, format_summary, write_report
from latentlit.evaluation.run_metrics import RunMetrics
from latentlit.lit.callbacks import ClosingLines
from latentlit.lit.options import check_at_least, check_inference_run, refuse_checkpoint
from latentlit.lit.records import compute_sizes, greedy_sizes, question_record, sample_sizes
from latentlit.lit.writer import PredictionWriter
from latentlit.models.checkpoints import load_backbone
from latentlit.models.ensemble import load_latent_rm
from latentlit.models.hooks import Sampler
from latentlit.models.latent_rm import TRAJECTORY_SCORES, LatentRM, LatentRMStepScorer
from latentlit.runs.directory import OutputDirectory, earlier_throughput, let_go_output_dir
from latentlit.runs.files import save_latents
from latentlit.runs.fingerprint import provenance_match, sampler_mismatch, weights_fingerprint
from latentlit.runs.records import METRICS, read_records
from latentlit.sampling.learned import LearnedSampler
from latentlit.sampling.mc_dropout import MCDropout
from latentlit.search import SHORTHANDS, Search, SearchBatch, draw, enabled_searches
from latentlit.search.adaptive import AdaptivePool, adaptive_settings, head_record

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


class TTSPredictor(ClosingLines, OutputDirectory, L.LightningModule):
    """Parallel test-time scaling of a latent backbone.

    Args:
        backbone: a backbone directory (latentlit or released COCONUT/CODI/CoLaR layout), a hub
            id, or ``"quickstart"`` (the shipped embedded default).
        sampler: Deterministic | MCDropout | AGN (``class_path`` in YAML).
        n_samples: N trajectories per question.
        max_trajectories: at most this many trajectories run at once (memory budget). A live
            adaptive run keeps ``max_trajectories // round_size`` questions in flight across
            batches (continuous batching: a settled question's place goes to a waiting one; its
            record is written when it settles, and the file is put in problem order at the end).
        seed: keys every random number: results depend on (seed, question id, sample index)
            only, not on batch size, chunking or the number of processes.
        num_latents: T at inference (default: the checkpoint's; a different value warns).
        max_new_tokens: answer tokens decoded per trajectory.
        answer_format: override the checkpoint's answer format (``latentlit.data.answers``).
        output_dir: where outputs go; re-running into the same directory resumes. Default
            ``outputs/<run_name>-<hash>`` (:meth:`run_dir_name`): the same settings resume, other
            settings (or another problem set) get their own directory.
        dtype: ``float32`` | ``bfloat16`` | ``float16`` weights (bf16 for GPUs).
        latent_rm: a LatentRM directory (or ``"quickstart"``): enables best-of-N (highest
            trajectory score) and weighted majority vote (votes weighted by softmax over the N
            trajectory scores).
        rm_score: trajectory score from step scores: ``sum`` (paper) | ``mean`` | ``last`` | ``min``.
        selector: a selector file fitted on a validation run (``scripts/fit_selector.py``; needs
            ``latent_rm``): adds the tempered vote and, when it has a calibration, its calibrated
            confidence (:mod:`latentlit.aggregation.selector`).
        save_latents: also write each question's (N, T, d) latent trajectories to
            ``<output_dir>/latents/*.safetensors`` (one file per batch; :func:`latentlit.runs.files.read_latents`).
        beam_width: B for latent beam search (needs ``latent_rm``); K = N // B candidates per
            beam, so beam search spends the same N trajectories' worth of latent steps
            (:class:`latentlit.search.BeamSearch`).
        dvts_width: W for diverse verifier tree search (needs ``latent_rm``): N // W subtrees,
            each keeping its best prefix and expanding it into W candidates per step
            (:class:`latentlit.search.DVTS`).
        adaptive: adaptive N, :class:`~latentlit.aggregation.stopping.AdaptiveOptions` (or a
            mapping of its fields): ``round_size`` (default 4), ``rule`` and ``threshold`` (a rule
            run live: each question is sampled ``round_size`` at a time, up to ``n_samples`` =
            N_max, until the rule settles it), and ``table`` (rule -> thresholds replayed on the
            samples of a fixed-N run). A live run's metrics are those of a fixed run with N =
            round_size, from every question's first round (its ``metrics.json``
            ``config.n_samples``; ``config.adaptive.n_max`` is N_max).
        searches: further search methods of :data:`latentlit.search.SEARCHES`, as objects
            (``beam_width`` / ``dvts_width`` are shorthands for the built-in two).

    With a dynamic latent stop the N trajectories have their own lengths; best-of-N and the
    weighted vote score each over its own steps, and a trajectory with no latent step has no
    score (``null`` in ``rm_scores``). Each record's ``latent_steps`` holds the latents each method
    proposed (``samples`` = sum of T_n).

    Raises:
        ValueError: bad N / dtype / rm_score, a search method the run cannot have (beam search or
            DVTS without a LatentRM, B / W not dividing N), a bad ``adaptive`` mapping, or a live
            adaptive rule with a search method; at setup, an output directory holding results of
            other settings or other questions.
    """

    run_name = "predict"
    # without a LatentRM
    latent_rm_fingerprint = latent_rm_backbone_match = None

    def __init__(self, backbone: str = "quickstart", sampler: Sampler | None = None, n_samples: int = 16,
                 max_trajectories: int = 1024, seed: int = 0, num_latents: int | None = None, max_new_tokens: int = 8,
                 answer_format: str | None = None, output_dir: str | None = None, dtype: str = "float32",
                 latent_rm: str | None = None, rm_score: str = "sum", beam_width: int | None = None,
                 save_latents: bool = False, adaptive: AdaptiveOptions | None = None, dvts_width: int | None = None,
                 searches: list[Search] | None = None, selector: str | None = None):
        super().__init__()
        # every option is checked before anything is loaded or written: a failed start leaves
        # no output directory behind
        check_at_least("TTSPredictor", n_samples=(n_samples, 1), max_trajectories=(max_trajectories, 1),
                       max_new_tokens=(max_new_tokens, 1), num_latents=(num_latents, 0))
        if answer_format is not None and answer_format not in ANSWER_FORMATS:
            raise ValueError(f"TTSPredictor: answer_format={answer_format!r}; expected one of {ANSWER_FORMATS}")
        if dtype not in DTYPES:
            raise ValueError(f"dtype={dtype!r}; expected one of {sorted(DTYPES)}")
        if rm_score not in TRAJECTORY_SCORES:
            raise ValueError(f"rm_score={rm_score!r}; expected one of {TRAJECTORY_SCORES}")
        self.searches = enabled_searches({"beam_width": beam_width, "dvts_width": dvts_width}, searches or (),
                                         n_samples, latent_rm is not None)
        self.adaptive = parse_adaptive(adaptive, has_scores=latent_rm is not None, n_max=n_samples)
        self.live = self.adaptive is not None and self.adaptive.run is not None
        if self.live and self.searches:
            given = ", ".join(getattr(s, "option", s.name) for s in self.searches)
            raise ValueError(f"adaptive.rule (live adaptive N) cannot be combined with {given}: search methods spend "
                             "a fixed budget; use the replayed adaptive table (no adaptive.rule) instead")
        # only plain values go into hyperparameters: a checkpoint must load with weights_only=True
        self.save_hyperparameters(ignore=["sampler", "adaptive", "searches"])
        self.hparams["adaptive"] = adaptive.to_dict() if isinstance(adaptive, AdaptiveOptions) else adaptive
        self.sampler = sampler if sampler is not None else MCDropout()
        if isinstance(self.sampler, LearnedSampler) and self.sampler.path is None:
            rank_zero_warn(f"LearnedSampler without a path is untrained: it samples as relative AGN with sigma "
                           f"{self.sampler.sigma}; give the trained sampler's directory (--sampler_path DIR)")
        if n_samples > 1 and not self.sampler.stochastic:
            rank_zero_warn(f"sampler {type(self.sampler).__name__} is deterministic ({self.sampler.describe()}): all "
                           f"n_samples={n_samples} trajectories of a question are identical, so coverage@k = coverage@1 "
                           "and every aggregate is one trajectory's answer; set a noise level > 0 or n_samples 1")
        self.backbone = load_backbone(backbone, dtype=DTYPES[dtype])
        # what the weights are, not where they came from (run.json; latentlit.runs.fingerprint)
        self.backbone_fingerprint = weights_fingerprint(self.backbone)
        if num_latents is not None:
            self.backbone.set_num_latents(num_latents)
        self.answer_format = answer_format or self.backbone.latent_config.answer_format
        if (warning := answer_format_warning(answer_format, self.backbone.latent_config.answer_format)) is not None:
            rank_zero_warn(warning)
        self.rm = self._load_latent_rm(latent_rm) if latent_rm is not None else None
        if selector is not None and latent_rm is None:
            raise ValueError(f"selector={selector!r} weighs LatentRM scores: give latent_rm too")
        self.selector = None if selector is None else Selector.load(selector)
        # the samples every question's metrics use: N, or in a live run the first round's
        self.n_metrics = min(self.adaptive.round_size, n_samples) if self.live else n_samples
        self.ks = coverage_ks(self.n_metrics)
        self.output_path: Path | None = None
        self._seconds = 0.0
        # live adaptive N: the pool of questions in flight, and what their records need, by question id
        self._pool: AdaptivePool | None = None
        self._waiting: dict[str, tuple] = {}
        self._trajectories = 0
        self._new_questions = 0

    def _load_latent_rm(self, path: str) -> LatentRM:
        """The LatentRM at ``path``, checked against the backbone (width; provenance, a warning)."""
        rm = load_latent_rm(path)
        if rm.latent_size != self.backbone.hidden_size:
            raise ValueError(f"latent_rm {path} reads {rm.latent_size}-dim latents but backbone {self.hparams.backbone} "
                             f"writes {self.backbone.hidden_size}-dim ones: use the RM trained on this backbone")
        self.latent_rm_fingerprint = weights_fingerprint(rm)
        self.latent_rm_backbone_match, warning = provenance_match(rm.provenance, self.backbone_fingerprint, path,
                                                                  self.hparams.backbone)
        if warning is not None:
            rank_zero_warn(warning)
        self.sampler.bind(self.backbone)
        if (warning := sampler_mismatch(rm.provenance, self.sampler.describe(), path)) is not None:
            rank_zero_warn(warning)
        if (rm.provenance or {}).get("trained_steps") == 0:
            rank_zero_warn(f"latent_rm {path} was exported by latentlit fit after 0 training steps "
                           "(latent_rm.json provenance.trained_steps): its head is randomly initialised, so "
                           "best-of-N, weighted vote and beam search rank on noise")
        return rm

    # ------------------------------------------------------------------ settings
    def run_settings(self) -> dict:
        """Everything that decides a question's record or what the directory holds: stored in
        ``run.json`` (a resumed run must match it), hashed into the default directory name, and
        the core of ``metrics.json``'s ``config``. The backbone and LatentRM are named by path and
        by the fingerprint of the weights loaded (:mod:`latentlit.runs.fingerprint`).

        Options left out change neither: ``max_trajectories`` (chunking; the records are the
        same), ``output_dir``; ``tests/lit/test_run_naming.py`` checks that every option is one
        or the other."""
        hp = self.hparams
        self.sampler.bind(self.backbone)  # describe() counts the hooked modules once bound
        settings = {"backbone": str(hp.backbone), "backbone_fingerprint": self.backbone_fingerprint,
                    "sampler": self.sampler.describe(), "n_samples": hp.n_samples, "seed": hp.seed,
                    "num_latents": self.backbone.latent_config.num_latents, "max_new_tokens": hp.max_new_tokens,
                    "answer_format": self.answer_format, "dtype": hp.dtype, "latent_rm": hp.latent_rm,
                    "latent_rm_fingerprint": self.latent_rm_fingerprint, "rm_score": hp.rm_score,
                    # present when unset too, as in the run.json (and directory hashes) of earlier versions
                    "beam_width": None,
                    "adaptive": adaptive_settings(self.adaptive, hp.n_samples),
                    # what the directory holds: a run with latents/ must not resume one without
                    "save_latents": bool(hp.save_latents)}
        for search in self.searches:
            settings.update(search.settings())
        if self.selector is not None:  # absent otherwise: earlier runs keep their hash
            settings["selector"] = self.selector.params()
        if self.rm is not None and self.rm.read_answer:  # latent_rm.json's setting, not in the weights fingerprint
            settings["latent_rm_reads_answer"] = True
        return settings

    def report_config(self) -> dict:
        """``metrics.json``'s ``config``: :meth:`run_settings`, with the N the metrics describe (a
        live adaptive run's first round), every search option (None when unset), and what the
        run reports beyond its identity (``max_trajectories``; the LatentRM's provenance check:
        null when the RM records none)."""
        return {**{option: None for option in SHORTHANDS}, **self.run_settings(), "n_samples": self.n_metrics,
                "max_trajectories": self.hparams.max_trajectories,
                "latent_rm_backbone_match": self.latent_rm_backbone_match}

    def enabled_aggregators(self) -> list[str]:
        """Names of the aggregators this configuration runs (``latentlit.aggregation.registry``;
        the same on every process)."""
        return [a.name for a in registry.enabled(self.run_settings())]

    def cost_model(self) -> CostModel:
        """The :class:`~latentlit.evaluation.compute.CostModel` of this backbone, LatentRM and sampler."""
        shared = self.sampler.prefill != "per_sample" or self.hparams.n_samples == 1
        return CostModel(backbone_shape(self.backbone), None if self.rm is None else rm_shape(self.rm), shared,
                         rm_prompt_once=self.rm is not None and self.rm.prompt_once)

    # ------------------------------------------------------------------ lightning plumbing
    def configure_callbacks(self):
        return [PredictionWriter(self._resolve_output_dir())]

    def setup(self, stage: str) -> None:
        check_inference_run(self._trainer, "TTSPredictor")
        self.backbone.eval()
        self.sampler.bind(self.backbone)
        self.aggregators = registry.enabled(self.run_settings())
        cfg = self.backbone.latent_config
        self.metrics = RunMetrics(self.ks, self.n_metrics, self.aggregators, self.hparams.seed,
                                  cfg.num_latents if cfg.latent_stop_id is None else cfg.max_latents,
                                  ["samples", *(s.name for s in self.searches)], self.adaptive, self._metrics_record)
        problems = getattr(getattr(self._trainer, "datamodule", None), "problems", None)
        if problems:  # every question, before any work and before run.json binds the directory
            ids, questions = [p.id for p in problems], [p.question for p in problems]
            self.backbone.check_lengths(ids, questions, self.hparams.max_new_tokens)
            check_questions(self.backbone.tokenizer, questions, ids)
        done = self.open_output_dir(read_records, subset_ok=True)
        for r in done:
            if not (self.live and 1 <= len(r["answers"]) <= self.hparams.n_samples) and len(r["answers"]) != self.hparams.n_samples:
                raise ValueError(f"{self.output_path}: question {r['id']} has {len(r['answers'])} samples but this run "
                                 f"asks for n_samples={self.hparams.n_samples}; use another output_dir")
        # a run over fewer questions than the directory holds (a smaller --limit) is answered from its
        # records: nothing is sampled, no result is written, and the report covers this run's questions only
        wanted = {p.id for p in problems or []}
        self._held = len(done) if problems and len(done) > len(wanted) >= 1 and wanted <= {r["id"] for r in done} else 0
        if self._held:
            done = [r for r in done if r["id"] in wanted]
        self._earlier_throughput = earlier_throughput(self.output_path) if done else None
        self._skip = {r["id"] for r in done}
        zero = self._trainer is None or self.trainer.is_global_zero
        self._resumed = done if zero else []
        if zero:
            state = (f" (answered from its records: {len(done)} of its {self._held} questions; no result is written)"
                     if self._held else f" (resuming: {len(done)} questions done)" if done else "")
            print(f"[latentlit] {self.sampler.describe()['name']}, N = {self.hparams.n_samples}, seed {self.hparams.seed}, "
                  f"backbone {self.hparams.backbone}: output directory {self.output_path}{state}", flush=True)

    def on_predict_start(self) -> None:
        for r in self._resumed:
            self.metrics.update(r)

    def on_predict_end(self) -> None:
        """After the writer has merged the records: the metrics (every process), then on rank
        zero ``metrics.json``, the report and the figures; the directory is let go last."""
        if self._pool is not None and len(self._pool):  # the last batch drains the pool: never lose a question
            raise RuntimeError(f"{len(self._pool)} questions of the live adaptive run were never settled "
                               f"(e.g. {next(iter(self._waiting))!r}); the loop ended before its last batch")
        summary = self.finish_metrics()
        out = self._resolve_output_dir()
        if self.trainer.is_global_zero and self._held:  # the directory's own metrics.json stays
            records = [self._metrics_record(r) for r in self._resumed]
            add_report(summary, records, ks=self.ks, aggregators=self.aggregators, seed=self.hparams.seed,
                       cost_model=self.cost_model())
            self.say_at_end(format_summary(summary))
            self.say_at_end(f"[latentlit] {len(records)} of the {self._held} questions of {out}, from its records; "
                            "no result written")
        elif self.trainer.is_global_zero:
            (out / METRICS).write_text(json.dumps(summary, indent=2))
            self.report(summary, out)
        self.trainer.strategy.barrier()
        let_go_output_dir(self.trainer, out)

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        refuse_checkpoint(self._trainer, "TTSPredictor")

    # ------------------------------------------------------------------ the job
    @torch.no_grad()
    def predict_step(self, batch: list[tuple[int, Problem]], batch_idx: int) -> list[dict]:
        hp = self.hparams
        batch = [(i, p) for i, p in batch if p is not None and p.id not in self._skip]  # placeholders, resume
        if self.live:
            return self._adaptive_step(batch, batch_idx == self.trainer.num_predict_batches[0] - 1)
        if not batch:
            return []
        start = time.perf_counter()
        problems = [p for _, p in batch]
        ids, questions = [p.id for p in problems], [p.question for p in problems]
        self.backbone.check_lengths(ids, questions, hp.max_new_tokens)
        greedy = self.backbone.generate(questions, max_new_tokens=hp.max_new_tokens)
        search = SearchBatch(self.backbone, self.sampler, ids, questions, [p.answer for p in problems], hp.n_samples,
                             hp.seed, hp.max_trajectories, hp.max_new_tokens,
                             parse=lambda text: extract_answer(text, self.answer_format),
                             score_samples=None if self.rm is None else self._rm_scores,
                             step_scorer=None if self.rm is None else self._step_scorer)
        drawn = draw(search)
        found = {s.name: s.run(search) for s in self.searches}
        rm_prompts = None if self.rm is None else self.rm.encode_prompts(questions)[1].sum(1).tolist()
        compute = compute_sizes(self.backbone.encode_prompts(questions)[1].sum(1).tolist(), greedy, drawn.samples,
                                self.backbone.latent_config.eos_id, hp.max_new_tokens, rm_prompts)
        records = []
        for i, ((index, problem), greedy_text, samples) in enumerate(zip(batch, greedy.answers_text, drawn.samples)):
            record = question_record(index, problem, greedy_text, samples, search.parse, self.aggregators, hp.seed,
                                     scores=None if drawn.scores is None else drawn.scores[i], adaptive=self.adaptive,
                                     n_max=hp.n_samples, n_metrics=self.n_metrics, selector=self._selector_params)
            for name, per_question in found.items():
                record.update(per_question[i].fields)
                record["latent_steps"][name] = per_question[i].latent_steps
                compute[i][name] = per_question[i].compute
            record["compute"] = compute[i]
            records.append(record)
        if hp.save_latents:
            self._save_latents(batch, drawn.samples)
        self._seconds += time.perf_counter() - start
        self._trajectories += sum(len(s.texts) for s in drawn.samples)
        self._new_questions += len(problems)
        for r in records:
            self.metrics.update(r)
        return records

    def _adaptive_step(self, batch: list[tuple[int, Problem]], last: bool) -> list[dict]:
        """A live adaptive run: the batch's questions join the :class:`AdaptivePool` (continuous batching: a settled
        question's place goes to a waiting one, from this batch or a later one); the records of the questions
        settled by the rounds run now are returned (on the last batch every question is run to the end)."""
        hp, start = self.hparams, time.perf_counter()
        if self._pool is None:
            self._pool = AdaptivePool(self.backbone, self.sampler, n_max=hp.n_samples, seed=hp.seed,
                                      rule=self.adaptive.run, round_size=self.adaptive.round_size,
                                      parse=lambda text: extract_answer(text, self.answer_format),
                                      score=None if self.rm is None else lambda keys, new: self._rm_scores(
                                          [self._waiting[k][1].question for k in keys], new),
                                      rows=hp.max_trajectories, max_new_tokens=hp.max_new_tokens)
        if batch:
            problems = [p for _, p in batch]
            ids, questions = [p.id for p in problems], [p.question for p in problems]
            self.backbone.check_lengths(ids, questions, hp.max_new_tokens)
            greedy = self.backbone.generate(questions, max_new_tokens=hp.max_new_tokens)
            sizes = greedy_sizes(greedy, self.backbone.latent_config.eos_id, hp.max_new_tokens)
            prompts = self.backbone.encode_prompts(questions)[1].sum(1).tolist()
            rm_prompts = [None] * len(batch) if self.rm is None else self.rm.encode_prompts(questions)[1].sum(1).tolist()
            for (index, problem), text, size, prompt, rm_prompt in zip(batch, greedy.answers_text, sizes, prompts,
                                                                       rm_prompts):
                self._waiting[problem.id] = (index, problem, text, size, prompt, rm_prompt)
            self._pool.admit(ids, ids, questions)
        records, settled = [], []
        for qid, drawn in self._pool.run(drain=last):
            index, problem, text, size, prompt, rm_prompt = self._waiting.pop(qid)
            record = question_record(index, problem, text, drawn.samples, self._pool.parse, self.aggregators, hp.seed,
                                     scores=drawn.scores, adaptive=self.adaptive, n_max=hp.n_samples,
                                     n_metrics=self.n_metrics, live=True, selector=self._selector_params)
            record["compute"] = sample_sizes(prompt, size, drawn.samples, rm_prompt)
            records.append(record)
            settled.append(((index, problem), drawn.samples))
            self._trajectories += len(drawn.samples.texts)
        if hp.save_latents and settled:
            self._save_latents(*map(list, zip(*settled)))
        self._seconds += time.perf_counter() - start
        self._new_questions += len(records)
        for r in records:
            self.metrics.update(r)
        return records

    @property
    def _selector_params(self) -> dict | None:
        return None if self.selector is None else self.selector.params()

    def _rm_scores(self, questions: list[str], samples) -> list[list[float]]:
        """LatentRM trajectory scores (``rm_score`` of the step scores) of each question's samples
        (every question of the call has the same number), rounded as records store them (NaN
        where non-finite), so that every choice made on them, adaptive stops included, can be
        recomputed from ``predictions.jsonl``."""
        # with a dynamic latent stop (CoLaR) questions can run different numbers of steps
        width = max(x.latents.shape[1] for x in samples)
        latents = torch.stack([F.pad(x.latents, (0, 0, 0, width - x.latents.shape[1])) for x in samples])
        masks = torch.stack([F.pad(x.latent_mask, (0, width - x.latent_mask.shape[1])) for x in samples])
        scores = self.rm.score_trajectories(questions, latents, masks, [x.texts for x in samples],
                                            self.hparams.rm_score).cpu().tolist()
        return [[round(x, 5) if math.isfinite(x) else math.nan for x in row] for row in scores]

    def _step_scorer(self, questions: list[str]) -> LatentRMStepScorer:
        return self.rm.step_scorer(questions, how=self.hparams.rm_score)

    def _save_latents(self, batch, samples) -> None:
        folder = self._resolve_output_dir() / "latents"
        folder.mkdir(parents=True, exist_ok=True)
        save_latents({p.id: s.latents for (_, p), s in zip(batch, samples)},
                     folder / f"{batch[0][0]:07d}-r{self.global_rank}.safetensors")

    # ------------------------------------------------------------------ metrics
    def _metrics_record(self, r: dict) -> dict:
        """The record the N-sample metrics read: the record itself, or in a live adaptive run the
        record a fixed run with N = round_size would have written (its first round)."""
        return head_record(r, self.n_metrics, self.aggregators, self.hparams.seed) if self.live else r

    def finish_metrics(self) -> dict:
        """``metrics.json`` (before the report's sections): the config, every metric (reduced across
        processes; call on every process), counts and throughput."""
        work = torch.tensor([self._trajectories, self._new_questions], device=self.device, dtype=torch.float64)
        seconds = torch.tensor([self._seconds], device=self.device, dtype=torch.float64)
        if self._trainer is not None:
            work = self.trainer.strategy.reduce(work, reduce_op="sum")
            seconds = self.trainer.strategy.reduce(seconds, reduce_op="max")
        computed = self.metrics.compute()
        summary = {"config": self.report_config(), "metrics": computed["metrics"],
                   "counts": {**computed["counts"], "questions_this_run": int(work[1]), "trajectories_this_run": int(work[0])},
                   **self._throughput(int(work[0]), float(seconds[0]))}
        if "adaptive" in computed:
            summary["adaptive"] = computed["adaptive"]
        for warning in summary_warnings(summary["metrics"], summary["counts"]):
            rank_zero_warn(warning)
        if self.latent_rm_backbone_match is False:  # said at the start too; repeated next to the numbers
            rank_zero_warn(f"these LatentRM results come from latent_rm {self.hparams.latent_rm}, trained on another "
                           f"backbone than {self.hparams.backbone} (config.latent_rm_backbone_match = false)")
        return summary

    def _throughput(self, trajectories: int, seconds: float) -> dict:
        """``trajectories_per_second`` and ``throughput`` (trajectories, seconds, which run
        measured them) of ``metrics.json``: this run's when it sampled anything, else those an
        earlier run into the directory measured (a re-run of a finished directory keeps them),
        else None."""
        if trajectories > 0 and seconds > 0:
            return {"trajectories_per_second": round(trajectories / seconds, 3),
                    "throughput": {"trajectories": trajectories, "seconds": round(seconds, 3), "measured_by": "this run"}}
        earlier = getattr(self, "_earlier_throughput", None)
        if earlier is None:
            return {"trajectories_per_second": None, "throughput": None}
        return {"trajectories_per_second": earlier["trajectories_per_second"],
                "throughput": {k: earlier[k] for k in ("trajectories", "seconds", "measured_by")}}

    def report(self, summary: dict, output_dir: Path) -> None:
        """Rank zero, after the merge: add intervals, selective prediction and compute from the
        records on disk, then write ``metrics.json``, print the table, save the PNGs and log them
        to TensorBoard (:mod:`latentlit.evaluation.report`)."""
        records = [self._metrics_record(r) for r in read_records(output_dir)]
        add_report(summary, records, ks=self.ks, aggregators=self.aggregators, seed=self.hparams.seed,
                   cost_model=self.cost_model())
        write_report(summary, output_dir, self.logger)
        self.say_at_end(format_summary(summary))
        n = self.hparams.n_samples
        for rule, rows in summary.get("adaptive", {}).items():
            for key, row in rows.items():
                name = rule if key == "-" else f"{rule}@{key}"  # the exact rule has no threshold
                self.say_at_end(f"adaptive {name} (N_max = {n}): accuracy {100 * row['accuracy']:.1f}%, trajectories mean "
                      f"{row['mean_trajectories']:.2f} / median {row['median_trajectories']:g}")
        if self.live:
            self.say_at_end(f"(a live adaptive run: the table above is that of N = {self.n_metrics}, every question's first round)")
        self.say_at_end(f"[latentlit] predictions and metrics written to {output_dir}")
