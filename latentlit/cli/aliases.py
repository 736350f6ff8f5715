"""Short options of ``latentlit`` (a table, rewritten into jsonargparse's long options before parsing) and its help.

``--n_samples 16 --sampler agn --sigma 0.5`` is parsed as ``--model.init_args.n_samples 16 --model.init_args.sampler
latentlit.sampling.AGN --model.init_args.sampler.init_args.sigma 0.5``: a short option gives exactly the config of its
long form, the later of two wins, and every ``--config`` is moved first (never overriding an option before it).
"""

from __future__ import annotations

import difflib
import importlib
import inspect
from typing import NamedTuple

from jsonargparse import ArgumentParser, Namespace


class UsageError(Exception):
    """A command line refused by latentlit itself; the message is the error line."""


class Alias(NamedTuple):
    """``FLAG VALUE`` stands for ``targets``, long options separated by spaces, each given VALUE or its own
    (``--x=value``). ``choices``: the names VALUE may be and what each stands for (a dotted class path passes
    through); ``const``: the value of FLAG given alone."""

    targets: str
    metavar: str
    help: str
    choices: dict[str, str] = {}  # noqa: RUF012 (never mutated)
    const: str | None = None


M, PROBLEMS = "--model.init_args.", "--data.init_args.problems"
SAMPLERS = {"dropout": "latentlit.sampling.MCDropout", "agn": "latentlit.sampling.AGN",
            "deterministic": "latentlit.sampling.Deterministic", "learned": "latentlit.sampling.LearnedSampler"}
ALIASES = {
    "predict": {
        "--backbone": Alias(M + "backbone", "PATH", "backbone directory (latentlit, COCONUT, CODI, CoLaR), hub id "
                            "or quickstart"),
        "--n_samples": Alias(M + "n_samples", "N", "N: trajectories sampled per question"),
        "--sampler": Alias(M + "sampler", "{dropout,agn,learned,deterministic}", "how the N trajectories differ: "
                           "MC-dropout, additive Gaussian noise, a learned sampler (--sampler_path), not at all", SAMPLERS),
        "--sampler_path": Alias(M + "sampler.init_args.path", "DIR", "a learned sampler's directory (--sampler learned)"),
        "--p": Alias(M + "sampler.init_args.p", "P", "MC-dropout probability (--sampler dropout)"),
        "--sigma": Alias(M + "sampler.init_args.sigma", "SIGMA", "AGN noise scale, x the latent's RMS (--sampler agn)"),
        "--seed": Alias(M + "seed", "SEED", "keys every random number: same seed, same trajectories"),
        "--data_file": Alias(f"{PROBLEMS}=latentlit.data.sources.ProblemFile {PROBLEMS}.init_args.path", "PATH",
                             "run on the problems of a data file (GSM8K .jsonl, COCONUT .json)"),
        "--limit": Alias(PROBLEMS + ".init_args.limit", "K", "run only the first K problems"),
        "--output_dir": Alias(M + "output_dir", "DIR", "where results go (default: outputs/<config>-<settings hash>)"),
        "--latent_rm": Alias(M + "latent_rm", "PATH", "LatentRM directory: adds best-of-N and weighted vote"),
        "--beam_width": Alias(M + "beam_width", "B", "latent beam search with B beams (needs --latent_rm)"),
        "--dvts_width": Alias(M + "dvts_width", "W", "DVTS: N / W subtrees of width W (needs --latent_rm)"),
        "--num_latents": Alias(M + "num_latents", "T", "latent steps T (default: the checkpoint's)"),
        "--save_latents": Alias(M + "save_latents", "[BOOL]", "also write the (N, T, d) latents", const="true"),
        "--n_rollouts": Alias(M + "n_rollouts", "M", "labelling: rollouts per (trajectory, step)"),
        "--dtype": Alias(M + "dtype", "{float32,bfloat16,float16}", "weights dtype (bfloat16 on GPUs)"),
        "--batch_size": Alias("--data.init_args.batch_size", "B", "questions per batch"),
    },
    "fit": {
        "--backbone": Alias(M + "backbone", "PATH", "LatentRM: the backbone it is initialised from and scores"),
        "--groups_dir": Alias("--data.init_args.groups_dir", "DIR", "LatentRM: the labelled step groups"),
        "--loss": Alias(M + "loss", "{contrastive,bce}", "LatentRM training loss"),
        "--export_dir": Alias(M + "export_dir", "DIR", "where the trained backbone or LatentRM is saved"),
        "--max_steps": Alias("--trainer.max_steps", "STEPS", "optimiser steps"),
        "--seed": Alias(M + "seed", "SEED", "seed of the model's initialisation"),
    },
}


def rewrite(argv: list[str], subcommands) -> tuple[list[str], list[tuple[str, list[str]]]]:
    """``argv`` as jsonargparse is to parse it (short options in their long forms, ``--config`` / ``-c`` first), and
    its options after the subcommand as ``(as given, as parsed)`` pairs, one per long option (UsageError: a short
    option without its value, or with a value outside its choices)."""
    start = next((i + 1 for i, a in enumerate(argv) if a in subcommands), len(argv))
    table, given, groups = ALIASES.get(argv[start - 1] if argv else "", {}), [], []
    for a in argv[start:]:  # an option and the values after it
        if a.startswith("--") or a in ("-c", "-h") or not given:
            given.append([a])
        else:
            given[-1].append(a)
    for tokens in given:
        flag, eq, value = tokens[0].partition("=")
        if (alias := table.get(flag)) is None:
            groups.append((" ".join(tokens), tokens))
            continue
        values = [value] * bool(eq) + tokens[1:] or [alias.const] * bool(alias.const)
        if len(values) != 1:
            raise UsageError(f"{flag} takes one value ({alias.metavar})")
        if alias.choices and values[0] not in alias.choices and "." not in values[0]:
            raise UsageError(f"{flag} {values[0]}: not one of {', '.join(alias.choices)}"
                             + did_you_mean(values[0], alias.choices))
        for target in alias.targets.split():
            option, fixed, own = target.partition("=")
            groups.append((" ".join(tokens), [option, own if fixed else alias.choices.get(values[0], values[0])]))
    groups.sort(key=lambda g: g[1][0].partition("=")[0] not in ("-c", "--config"))
    return argv[:start] + [t for _, tokens in groups for t in tokens], groups


def did_you_mean(word: str, names) -> str:
    close = difflib.get_close_matches(word, sorted(set(names)), n=1, cutoff=0.6)
    return f"; did you mean `{close[0]}`?" if close else ""


def load_class(path) -> type | None:
    """The class a dotted ``class_path`` names, or None."""
    module, _, name = str(path).rpartition(".")
    try:
        return getattr(importlib.import_module(module), name) if module else None
    except (ImportError, AttributeError, ValueError, TypeError):
        return None


def init_args(cls: type | None) -> list[str]:
    """The init arguments of ``cls`` (what its ``init_args`` take)."""
    skip = (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
    return [n for n, p in inspect.signature(cls).parameters.items() if p.kind not in skip] if cls else []


SUBCOMMANDS = {
    "fit": "train a latent backbone (COCONUT curriculum, or GRPO), a LatentRM or a learned sampler; SIGTERM saves a resumable checkpoint",
    "validate": "one validation pass of a backbone or LatentRM config",
    "predict": "parallel test-time scaling (TTSPredictor) or rollout labelling for LatentRM training (RolloutLabeller)",
    "study": "one table and overlay figures across finished runs (latentlit study --help)",
    "rescore": "score a finished run's saved latents with a LatentRM, without sampling again",
}
_GENERAL = [
    ("-c, --config CONFIG", "a YAML config (configs/...); read before the other options wherever it appears"),
    ("--model.init_args.NAME VALUE", "any option of the model (--model.help CLASS lists them); --data... likewise"),
    ("--trainer.NAME VALUE", "Lightning Trainer options (devices, accelerator, strategy, logger, ...)"),
    ("--ckpt_path PATH", "a Lightning checkpoint to resume (fit, validate; predict takes --backbone)"),
    ("-h, --help", "this help; --help_all: every option; --print_config: the config these options give"),
]


def overview() -> str:
    """``latentlit --help``."""
    return "\n".join([
        f"usage: latentlit {{{','.join(SUBCOMMANDS)}}} [--config CONFIG] [options]", "",
        "latentlit: parallel test-time scaling of latent reasoning models (COCONUT, CODI, CoLaR) on Lightning:",
        "N latent trajectories per question (MC-dropout or additive Gaussian noise), their answers aggregated",
        "(majority vote; best-of-N, weighted vote, beam search with a LatentRM), coverage@k and accuracy reported.", "",
        "subcommands:", *(f"  {name:<10}{text}" for name, text in SUBCOMMANDS.items()), "",
        "Start with:  latentlit predict --config configs/quickstart/predict_dropout.yaml",
        "Options of a subcommand:  latentlit predict --help  (every option: --help_all)", ""])


def command_help(command: str) -> str:
    """``latentlit COMMAND --help``: its short options with their long forms, and the general options."""
    lines = [f"usage: latentlit {command} [--config CONFIG] [options]", "", SUBCOMMANDS.get(command, ""), ""]
    if command in ALIASES:
        lines.append("everyday options (each is short for the long form after '='; a later option wins):")
        for flag, a in ALIASES[command].items():
            head = f"  {flag} {a.metavar}"
            lines += [f"{head:<32}{a.help}" if len(head) < 32 else f"{head}\n{'':<32}{a.help}",
                      f"{'':<32}= {a.targets.replace('=', ' ')}"]
    lines += ["", "general options:", *(f"  {head:<30}{text}" for head, text in _GENERAL), "",
              "Errors name the bad option in one line; LATENTLIT_DEBUG=1 shows the full parser message.", ""]
    return "\n".join(lines)


# the classes whose options --help_all lists where the command line configures none
DEFAULT_CLASSES = {
    "predict": {"model": "latentlit.lit.TTSPredictor", "model.init_args.sampler": "latentlit.sampling.MCDropout",
                "data": "latentlit.lit.ProblemDataModule",
                "data.init_args.problems": "latentlit.data.sources.SyntheticProblems"},
    "fit": {"model": "latentlit.lit.LatentBackboneModule", "data": "latentlit.lit.CurriculumDataModule"},
}
DEFAULT_CLASSES["validate"] = DEFAULT_CLASSES["fit"]


def class_options(command: str, namespace) -> str:
    """jsonargparse's help of the init arguments of the model and data classes (and of the classes nested in them)
    that ``namespace`` configures, else of ``command``'s defaults: what its own help leaves to ``--model.help``."""
    found = {}

    def walk(node, key):
        if isinstance(node, Namespace) and node.get("class_path"):
            found[key] = (node.class_path, "as configured")
            for name, value in vars(node.get("init_args") or Namespace()).items():
                walk(value, f"{key}.init_args.{name}")

    for part in ("model", "data"):
        walk(namespace.get(part), part)
        found.update({k: (v, "the default") for k, v in DEFAULT_CLASSES.get(command, {}).items()
                      if k.split(".")[0] == part and part not in found})
    sections = []
    for key, (path, how) in found.items():
        parser = ArgumentParser(add_help=False)
        parser.add_class_arguments(load_class(path), f"{key}.init_args", fail_untyped=False, sub_configs=True)
        lines = parser.format_help().splitlines()
        lines = lines[next((i for i, line in enumerate(lines) if line.startswith("  --")), 0):]
        sections.append(f"options of --{key} {path} ({how}; another class: --{key}.help CLASS):\n" + "\n".join(lines))
    return "\n\n".join(sections) + "\n"
