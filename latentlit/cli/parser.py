"""The ``latentlit`` command line parser: short options, concise help, one-line errors.

Short options are the settings a user changes on every run (``--n_samples 16 --sampler agn
--sigma 0.5 --data_file gsm_test.json --limit 50``). Each one is a real argument of its
subcommand's parser (so ``--help`` lists it), whose action hands the value to the parser's own
action for the full path (``--model.init_args.n_samples``...), at the same position on the
command line: a short option gives exactly the config its long form gives, and short and long
forms mix with the usual rule (the later one wins). Config files are read before every other
option wherever ``--config`` appears (:func:`config_files_first`).

Parser errors (an unknown option, a typo in a config key, a missing config file, a value of the
wrong type) become one ``latentlit: error: ...`` line naming the key or path, with a "did you
mean" from the accepted names, instead of jsonargparse's usage dump; ``LATENTLIT_DEBUG=1`` keeps
the full message.
"""

from __future__ import annotations

import argparse
import difflib
import inspect
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path

from lightning.pytorch.cli import LightningArgumentParser

DESCRIPTION = (
    "latentlit: parallel test-time scaling of latent reasoning models (COCONUT, CODI, CoLaR) on Lightning. "
    "A latent model thinks for T steps in continuous space; latentlit samples N latent trajectories per "
    "question (MC-dropout or additive Gaussian noise), aggregates their answers (majority vote; best-of-N, "
    "weighted vote and latent beam search with a LatentRM) and reports coverage@k and vote accuracy."
)

SUBCOMMANDS = {
    "fit": "train a latent backbone (COCONUT curriculum) or a LatentRM; SIGTERM saves a resumable checkpoint",
    "validate": "one validation pass of a backbone or LatentRM config",
    "predict": "parallel test-time scaling (TTSPredictor) or rollout labelling for LatentRM training (RolloutLabeller)",
}

SAMPLERS = {"dropout": "latentlit.sampling.MCDropout", "agn": "latentlit.sampling.AGN",
            "deterministic": "latentlit.sampling.Deterministic"}


@dataclass(frozen=True)
class ShortOption:
    """A short form of one or more full option paths.

    Attributes:
        flag: the short option (``--n_samples``).
        targets: ``(full option, value)`` pairs applied in order; a value of ``None`` stands for
            the value given on the command line (mapped through ``choices`` when given).
        metavar / help: how ``--help`` shows it (one line).
        choices: accepted names and the value each one stands for (``agn`` -> the AGN class).
        const: the value of the flag given alone (``--save_latents`` = ``--save_latents true``);
            None: a value is required.
    """

    flag: str
    targets: tuple[tuple[str, str | None], ...]
    metavar: str
    help: str
    choices: tuple[tuple[str, str], ...] = ()
    const: str | None = None

    def expand(self, value: str) -> list[tuple[str, str]]:
        """The ``(full option, value)`` pairs that ``flag value`` stands for.

        Raises:
            ValueError: a value outside ``choices``.
        """
        if self.choices:
            names = dict(self.choices)
            if value not in names and "." not in value:
                close = difflib.get_close_matches(value, list(names), n=1)
                raise ValueError(f"{value!r} is not one of {list(names)}" + (f"; did you mean `{close[0]}`?" if close else ""))
            value = names.get(value, value)  # a full class path passes through
        return [(option, value if fixed is None else fixed) for option, fixed in self.targets]

    @property
    def long_form(self) -> str:
        """The full option path(s) it sets, as shown in ``--help``."""
        return " ".join(option if fixed is None else f"{option} {fixed.rsplit('.', 1)[-1]}" for option, fixed in self.targets)


def _model(name: str) -> tuple[tuple[str, None], ...]:
    return ((f"--model.init_args.{name}", None),)


_PREDICT = (
    ShortOption("--backbone", _model("backbone"), "PATH", "backbone directory (latentlit, COCONUT, CODI, CoLaR), hub id, or quickstart"),
    ShortOption("--n_samples", _model("n_samples"), "N", "N: trajectories sampled per question"),
    ShortOption("--sampler", _model("sampler"), "{dropout,agn,deterministic}",
                "how the N trajectories differ: MC-dropout, additive Gaussian noise, not at all",
                choices=tuple(SAMPLERS.items())),
    ShortOption("--p", _model("sampler.init_args.p"), "P", "MC-dropout probability (sampler dropout)"),
    ShortOption("--sigma", _model("sampler.init_args.sigma"), "SIGMA", "AGN noise scale, x the latent's RMS when relative (sampler agn)"),
    ShortOption("--seed", _model("seed"), "SEED", "keys every random number: same seed, same trajectories"),
    ShortOption("--data_file", (("--data.init_args.problems", "latentlit.data.sources.ProblemFile"),
                                ("--data.init_args.problems.init_args.path", None)),
                "PATH", "run on the problems of a data file (GSM8K .jsonl, COCONUT .json) instead of the config's"),
    ShortOption("--limit", (("--data.init_args.problems.init_args.limit", None),), "K", "run only the first K problems"),
    ShortOption("--output_dir", _model("output_dir"), "DIR",
                "where results go (default: outputs/<config name>-<settings hash>, one per setting)"),
    ShortOption("--latent_rm", _model("latent_rm"), "PATH", "LatentRM directory: adds best-of-N and weighted vote"),
    ShortOption("--beam_width", _model("beam_width"), "B", "latent beam search with B beams (needs --latent_rm; B divides N)"),
    ShortOption("--dvts_width", _model("dvts_width"), "W", "DVTS: N / W subtrees of width W (needs --latent_rm; W divides N)"),
    ShortOption("--num_latents", _model("num_latents"), "T", "latent steps T (default: the checkpoint's)"),
    ShortOption("--save_latents", _model("save_latents"), "[BOOL]",
                "also write the (N, T, d) latent trajectories (for scripts/plot_trajectories.py)", const="true"),
    ShortOption("--n_rollouts", _model("n_rollouts"), "M", "labelling: rollouts per (trajectory, step)"),
    ShortOption("--dtype", _model("dtype"), "{float32,bfloat16,float16}", "weights dtype (bfloat16 on GPUs)"),
    ShortOption("--batch_size", (("--data.init_args.batch_size", None),), "B", "questions per batch"),
)

_FIT = (
    ShortOption("--backbone", _model("backbone"), "PATH", "LatentRM: the backbone it is initialised from and scores"),
    ShortOption("--groups_dir", (("--data.init_args.groups_dir", None),), "DIR", "LatentRM: the labelled step groups"),
    ShortOption("--loss", _model("loss"), "{contrastive,bce}", "LatentRM training loss"),
    ShortOption("--export_dir", _model("export_dir"), "DIR", "where the trained backbone or LatentRM is saved"),
    ShortOption("--max_steps", (("--trainer.max_steps", None),), "STEPS", "optimiser steps"),
    ShortOption("--seed", _model("seed"), "SEED", "seed of the model's initialisation"),
)

SHORT_OPTIONS: dict[str, tuple[ShortOption, ...]] = {"predict": _PREDICT, "fit": _FIT, "validate": ()}


# ---------------------------------------------------------------------------------------- actions
def _full_option_action(parser: argparse.ArgumentParser, option: str) -> argparse.Action:
    """The parser's action for ``option``: itself, or the class-typed option it is an init arg of
    (``--model`` for ``--model.init_args.n_samples``), as jsonargparse finds it."""
    parts = option.split(".")
    for i in range(len(parts), 0, -1):
        action = parser._option_string_actions.get(".".join(parts[:i]))
        if action is not None:
            return action
    raise KeyError(option)


def _class_of(spec) -> type | None:
    """The class named by a parsed ``class_path`` spec (None when there is none)."""
    import importlib

    path = spec.get("class_path") if hasattr(spec, "get") else None
    if not isinstance(path, str) or "." not in path:
        return None
    module, _, name = path.rpartition(".")
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError):
        return None


def accepted_options(cls: type) -> list[str]:
    """The init arguments of ``cls`` (what ``init_args`` accepts)."""
    return [p for p in inspect.signature(cls.__init__).parameters if p not in ("self", "args", "kwargs")]


def check_short_target(namespace, option: str) -> str | None:
    """Why ``option`` (a full ``--x.init_args.y`` path) cannot be set in ``namespace`` as parsed so
    far: the class it belongs to is missing or has no such init argument. None when it can."""
    path = option[2:].split(".")
    node, where = namespace, []
    while "init_args" in path:
        i = path.index("init_args")
        key = ".".join(path[:i])
        node = node.get(key) if node is not None and hasattr(node, "get") else None
        where.append(key)
        cls = _class_of(node) if node is not None else None
        if cls is None:
            return f"no class is set for {'.'.join(where)} at this point of the command line"
        name = path[i + 1]
        if name not in accepted_options(cls):
            return f"{cls.__name__} (the {'.'.join(where)} set at this point of the command line) has no option {name!r}"
        node, path = node.get("init_args"), path[i + 1:]
    return None


class ShortOptionAction(argparse.Action):
    """Applies a :class:`ShortOption` through the parser's actions for its full paths."""

    def __init__(self, option_strings, dest, short: ShortOption | None = None, **kwargs):
        self.short = short
        if short is not None and short.const is not None:
            kwargs.update(nargs="?", const=short.const)
        super().__init__(option_strings, dest, default=argparse.SUPPRESS, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None):
        try:
            pairs = self.short.expand(values)
        except ValueError as err:
            raise argparse.ArgumentError(self, str(err)) from None
        for option, value in pairs:
            problem = check_short_target(namespace, option) if option.startswith(("--model.", "--data.")) else None
            if problem is not None:
                fix = sampler_fix(option) if ".sampler." in option else "set that class before it"
                raise argparse.ArgumentError(self, f"sets {option}, but {problem}: {fix}")
            action = _full_option_action(parser, option)
            action(parser, namespace, parser._get_values(action, [value]), option)
        # a class this option switched to (--sampler agn) must still take every value an earlier
        # short option gave (--p 0.2): jsonargparse would drop it without a word
        given = parser.__dict__.setdefault("_short_given", [])
        problem = dropped_short_option(namespace, given)
        if problem is not None:
            raise argparse.ArgumentError(self, f"{values} chooses a class without the option that {problem}")
        given += [(f"{self.short.flag} {values}", option) for option, fixed in self.short.targets
                  if fixed is None and option.startswith(("--model.", "--data."))]


def sampler_fix(option: str) -> str:
    """What to do about a sampler option the sampler chosen so far does not take: the
    ``--sampler`` choices whose class takes it (``--p`` belongs to ``--sampler dropout``)."""
    name = option.rsplit(".", 1)[-1]
    takers = [f"--sampler {short} ({path.rsplit('.', 1)[-1]})" for short, path in SAMPLERS.items()
              if (cls := _class_of({"class_path": path})) is not None and name in accepted_options(cls)]
    if not takers:
        return "no sampler takes it"
    return f"--{name} belongs to {' or '.join(takers)}: choose that sampler (before --{name}) or leave --{name} out"


def dropped_short_option(namespace, given: list[tuple[str, str]]) -> str | None:
    """Why one of the short options ``given`` earlier (``("--p 0.2", full option)`` pairs) no
    longer applies to the classes in ``namespace`` (a later option chose a class without that
    option); None when all still do."""
    for shown, option in given:
        problem = check_short_target(namespace, option)
        if problem is not None:
            return f"{shown} (given before it) sets: {problem.replace(' at this point of the command line', ' now')}"
    return None


# ---------------------------------------------------------------------------------------- config order
def config_files_first(args: list[str], subcommands) -> list[str]:
    """``args`` with each ``--config FILE`` (``-c FILE``, ``--config=FILE``) of the subcommand moved
    before its other options, keeping their order, so that a config file never overrides an
    option given before it on the command line (jsonargparse applies arguments left to right)."""
    args = list(args)
    start = next((i + 1 for i, a in enumerate(args) if a in subcommands), None)
    if start is None:
        return args
    configs, rest, i = [], [], start
    while i < len(args):
        a = args[i]
        if a in ("-c", "--config") and i + 1 < len(args):
            configs += args[i:i + 2]
            i += 2
            continue
        (configs if a.startswith("--config=") else rest).append(a)
        i += 1
    return args[:start] + configs + rest


# ---------------------------------------------------------------------------------------- inputs
def config_folders() -> list[Path]:
    """Where shipped configs are looked up: ``configs/`` in the working directory and next to the
    package (a source checkout)."""
    folders = [Path.cwd() / "configs", Path(__file__).resolve().parents[2] / "configs"]
    seen, out = set(), []
    for folder in folders:
        if folder.is_dir() and folder.resolve() not in seen:
            seen.add(folder.resolve())
            out.append(folder)
    return out


def producer_command(path: str) -> str | None:
    """The command of a shipped config that writes ``path`` (its model's ``export_dir`` or
    ``output_dir``), e.g. ``latentlit fit --config configs/gsm8k/backbone.yaml`` for
    ``outputs/gsm8k_backbone``; None when no config does."""
    import yaml

    want = os.path.normpath(str(path))
    for folder in config_folders():
        for config in sorted(folder.rglob("*.yaml")):
            try:
                model = (yaml.safe_load(config.read_text()) or {}).get("model") or {}
            except (OSError, yaml.YAMLError):
                continue
            init = model.get("init_args") or {}
            if any(init.get(k) and os.path.normpath(str(init[k])) == want for k in ("export_dir", "output_dir")):
                command = "predict" if str(model.get("class_path", "")).endswith(("TTSPredictor", "RolloutLabeller")) else "fit"
                try:
                    shown = config.relative_to(Path.cwd())
                except ValueError:
                    shown = config
                return f"latentlit {command} --config {shown}"
    return None


def check_input_paths(config) -> None:
    """Before anything is built: a backbone, LatentRM or groups directory that does not exist yet
    but that a shipped config makes (``outputs/gsm8k_backbone``...) fails here, naming the command
    that makes it; a released checkpoint expected under ``checkpoints/`` says how to give it.
    (Otherwise the loaders would first try such a path as a hub id, with network retries.)

    Args:
        config: the subcommand's parsed config (``model`` / ``data`` with ``init_args``).

    Raises:
        FileNotFoundError: naming the option, the path and what to do.
    """
    checks = [("model", "backbone", "--backbone"), ("model", "latent_rm", "--latent_rm"),
              ("model", "init_from", "--model.init_args.init_from"), ("data", "groups_dir", "--groups_dir")]
    for part, key, flag in checks:
        spec = config.get(part) if hasattr(config, "get") else None
        init = spec.get("init_args") if hasattr(spec, "get") else None
        value = init.get(key) if hasattr(init, "get") else None
        if not isinstance(value, str) or value == "quickstart" or Path(value).expanduser().exists():
            continue
        producer = producer_command(value)
        if producer is not None:
            verb = "train it first" if producer.startswith("latentlit fit") else "make it first"
            raise FileNotFoundError(f"{key} {value} does not exist yet: {verb} with `{producer}` (or give another one "
                                    f"with {flag})")
        if Path(value).parts[:1] == ("checkpoints",):
            raise FileNotFoundError(f"{key} {value} does not exist: this config expects a released checkpoint there; "
                                    f"download it (README, 'Using released checkpoints') and give its directory with {flag}")


def unwritable_directory(path: Path) -> OSError | None:
    """Why the directory ``path`` cannot be created or written into, or None when it can.

    Tried for real: a temporary directory is made (and removed at once) in ``path`` or in its
    nearest existing parent, so read-only file systems, ``/proc``, missing permissions and a
    file in the way are all caught, and nothing is left behind.

    Returns:
        an ``OSError`` of the kind the attempt raised (``NotADirectoryError`` for a file in the
        way), whose message names the directory where creating failed, or None.
    """
    import tempfile

    path = Path(path).expanduser()
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if existing.exists() and not existing.is_dir():
        return NotADirectoryError(f"{existing} is a file, not a directory")
    try:
        Path(tempfile.mkdtemp(prefix=".latentlit-check-", dir=existing)).rmdir()
    except OSError as err:
        return type(err)(f"creating a directory in {existing} fails: {err.strerror or err}")
    return None


def check_output_paths(config) -> None:
    """Before anything is built or run: the directories the run will write (the model's
    ``output_dir`` / ``export_dir``, else the default ``<default_root_dir>/outputs`` of predict
    and labelling, and the trainer's ``default_root_dir``) can be created and written.

    Args:
        config: the subcommand's parsed config.

    Raises:
        OSError (of the kind the attempt raised): naming the option, the path and why.
    """
    def get(node, *keys):
        for key in keys:
            node = node.get(key) if hasattr(node, "get") else None
        return node

    model = get(config, "model", "init_args")
    root = get(config, "trainer", "default_root_dir")
    checks = [("--model.init_args.export_dir", get(model, "export_dir"))]
    if hasattr(model, "get") and "output_dir" in model:  # predict and labelling
        out = get(model, "output_dir")
        checks.append(("--output_dir", out) if out else ("the default output directory under",
                                                        str(Path(root or ".") / "outputs")))
    checks.append(("--trainer.default_root_dir", root))
    for flag, value in checks:
        if isinstance(value, str) and value:
            err = unwritable_directory(Path(value))
            if err is not None:
                raise type(err)(f"{flag} {value} cannot be created or written ({err}); give another directory")


# ---------------------------------------------------------------------------------------- errors
_NOISE = ("Does not validate against any of the Union subtypes", "Subtypes:", "Errors:", "Given value type:",
          "Given value:", "- Expected a <class 'NoneType'>", "Subclass types expect one of:", "- a class path (str)",
          "- a dict with class_path entry", "- a dict without class_path", "- a dict with parameters accepted")


# the lines of a jsonargparse error that open a nested level: a key, or a class tried for it
_NODE_LINES = (("key", r'^(?:- )?Parser key "([^"]+)":\s*(.*)$'),
               ("class", r"^(?:- )?Problem with given class_path '([^']+)':\s*(.*)$"))


def _leaves(message: str) -> list[tuple[list[str], str | None, str, str]]:
    """(key path, innermost class path, leaf text, given value type) of each error leaf in a
    nested jsonargparse message."""
    stack: list[tuple[int, str, str]] = []  # (indent, kind, name)
    leaves, value_type = [], ""
    for raw in message.splitlines():
        if not raw.strip():
            continue
        indent = len(raw) - len(raw.lstrip())
        line = raw.strip()
        if line.startswith("Given value type:"):
            value_type = value_type or line
        while stack and stack[-1][0] >= indent:
            stack.pop()
        node = next(((kind, m) for kind, pattern in _NODE_LINES if (m := re.match(pattern, line))), None)
        if node is not None:
            kind, m = node
            stack.append((indent, kind, m.group(1)))
            if m.group(2):
                leaves.append((_path(stack), _cls(stack), m.group(2), value_type))
            continue
        if line.startswith(_NOISE) or line.endswith(":"):
            continue
        leaves.append((_path(stack), _cls(stack), line.lstrip("- "), value_type))
    return [(p, c, t, value_type) for p, c, t, _ in leaves]


def _path(stack) -> list[str]:
    out = []
    for _, kind, name in stack:
        out.append("init_args" if kind == "class" else name)
    return out


def _cls(stack) -> str | None:
    return next((name for _, kind, name in reversed(stack) if kind == "class"), None)


def _did_you_mean(word: str, names) -> str:
    close = difflib.get_close_matches(word, sorted(set(names)), n=1, cutoff=0.6)
    return f"; did you mean `{close[0]}`?" if close else ""


def _prog(parser) -> str:
    sub = getattr(parser, "subcommand", None)
    return f"latentlit {sub}" if sub else "latentlit"


def _option_names(parser) -> list[str]:
    return [s for a in parser._actions for s in a.option_strings if s.startswith("--")]


def describe_parse_error(message: str, parser=None) -> str:
    """One line for a jsonargparse error ``message``: the bad key or path first, then what is wrong
    with it, with a "did you mean" from the accepted names where one is close.

    Args:
        message: the (multi-line) message jsonargparse passes to ``ArgumentParser.error``.
        parser: the (sub)command parser, for the names an unknown option is compared with.
    """
    text = message.strip()
    m = re.match(r"^unrecognized arguments: (\S+)", text, re.IGNORECASE)
    if m:
        bad = m.group(1).split("=", 1)[0]
        names = _option_names(parser) if parser is not None else []
        return f"{bad} is not an option of {_prog(parser)}" + _did_you_mean(bad, names)
    m = re.match(r"^argument (\S+): invalid choice: '([^']*)' \(choose from (.*)\)$", text)
    if m:
        choices = re.findall(r"'([^']*)'", m.group(3))
        return f"{m.group(2)!r} is not a {m.group(1)}; choose from {', '.join(choices)}" + _did_you_mean(m.group(2), choices)
    m = re.match(r'^expected "subcommand" to be one of \{([^}]*)\}', text)
    if m:
        return f"a subcommand is needed: one of {m.group(1)} (e.g. latentlit predict --config configs/quickstart/predict_dropout.yaml)"
    m = re.match(r"^argument (\S+?)(?:/\S+)?: (.*)$", text, re.DOTALL)
    if m and "\n" not in m.group(2):
        return f"{m.group(1)}: {m.group(2)}"
    leaves = [leaf for leaf in _leaves(text) if leaf[0]]
    if not leaves:  # not a nested key report: the message itself, on one line
        return " ".join(text.split())
    not_a_class = [x for x in leaves if x[2].startswith("Expected a path but ")]
    path, cls, leaf, value_type = not_a_class[0] if not_a_class else leaves[0]
    from_config = "<class 'dict'>" in value_type
    key = ".".join(path)
    where = key if from_config else f"--{key}"
    m = re.match(r"^Option '([^']+)' is not accepted$", leaf)
    if m and cls is not None:
        name = m.group(1)
        klass = _class_of({"class_path": cls})
        names = accepted_options(klass) if klass is not None else []
        where = f"{key}.{name}" if from_config else f"--{key}.{name}"
        return (f"{where}{' (in the config file)' if from_config else ''}: {cls.rsplit('.', 1)[-1]} has no option "
                f"{name!r}" + (_did_you_mean(name, names) or (f"; its options: {', '.join(names)}" if names else "")))
    m = re.match(r"^File does not exist: '?([^']+)'?$", leaf)
    if m:
        missing = Path(m.group(1))
        near = sorted(p.name for p in missing.parent.glob("*.y*ml")) if missing.parent.is_dir() else []
        hint = _did_you_mean(missing.name, near)
        return f"--{key}: file does not exist: {missing}" + (hint.replace("`", f"`{missing.parent}/", 1) if hint else "")
    m = re.match(r"^Expected a path but (\S+) either not accessible or invalid$", leaf)
    if key == "data" and ("<class 'list'>" in value_type or (m and re.search(r"\.jsonl?$", m.group(1)))):
        return ("--data takes a data module class or its config, not a problems file; to run on a data file give "
                "--data_file PATH")
    if m:
        names = _subclass_paths(text[text.find(leaf):])
        short = {n.rsplit(".", 1)[-1]: n for n in names}
        close = difflib.get_close_matches(m.group(1).rsplit(".", 1)[-1], list(short), n=1, cutoff=0.5)
        return (f"{where}: no class {m.group(1)!r} can be imported"
                + (f"; did you mean `{short[close[0]]}`?" if close else (f"; one of {', '.join(names)}" if names else "")))
    leaf = re.sub(r"Expected a <class '([\w.]+)'>(\. Got value:)?", lambda m: f"expected {m.group(1)}" + (", got" if m.group(2) else ""), leaf)
    if re.search(r"^\s*Given value: None$", text, re.M) and "<class 'NoneType'>" in text and not from_config:
        # jsonargparse reads a nested `null` from the command line as the string 'None'; the
        # enclosing group given whole (as YAML) takes it
        parent = re.sub(r"(\.init_args)?\.[^.]+$", "", key)
        name = key.rsplit(".", 1)[-1]
        return (f"{where}: null cannot be given to this nested option on the command line; give its group whole, "
                f"e.g. --{parent} \"{{..., {name}: null}}\", or set it in a config file")
    return f"{where}: {leaf}"


def _subclass_paths(text: str) -> list[str]:
    """Class paths of the subclasses (at any depth) of the first base class in a jsonargparse
    ``Subtypes: [<class '...'>, ...]`` line of ``text``."""
    import importlib

    m = re.search(r"Subtypes: \[<class '([\w.]+)'>", text)
    if not m:
        return []
    module, _, name = m.group(1).rpartition(".")
    try:
        base = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError):
        return []
    found, todo = [], list(base.__subclasses__())
    while todo:
        cls = todo.pop(0)
        todo += cls.__subclasses__()
        if not cls.__name__.startswith("_"):
            found.append(f"{cls.__module__}.{cls.__qualname__}")
    return sorted(set(found))


class LatentLitParser(LightningArgumentParser):
    """The parser of ``latentlit`` and of each subcommand: concise ``--help`` (``--help_all``
    lists every option), short options, one-line errors.

    Args:
        command: the subcommand this parser reads (None otherwise); kept as ``parser.subcommand``.
        overview: this is the top-level ``latentlit`` parser, whose ``--help`` is the overview of
            the subcommands. Parsers with neither (jsonargparse makes one for ``--model.help
            CLASS``) print jsonargparse's full help.
    """

    def __init__(self, *args, command: str | None = None, overview: bool = False, **kwargs):
        kwargs.setdefault("allow_abbrev", False)  # a misspelt option must fail, not match a longer one
        super().__init__(*args, **kwargs)
        self.subcommand = subcommand = command
        self.overview = overview
        if subcommand is not None:
            self.add_argument("--help_all", action=_HelpAllAction, help="every option (Trainer, model, data) and exit")

    def parse_args(self, *args, **kwargs):
        """jsonargparse's parse, then: every short option given still applies to the classes the
        whole command line chose (a later ``--model.init_args.sampler`` may have switched one)."""
        self._short_given = []
        config = super().parse_args(*args, **kwargs)
        problem = dropped_short_option(config, self._short_given) if self._short_given else None
        if problem is not None:
            self.error(f"a later option chose a class without the option that {problem}")
        return config

    def add_short_options(self, options) -> None:
        """Register ``options`` (:class:`ShortOption`) in an "everyday options" group."""
        group = self.add_argument_group("everyday options")
        for short in options:
            group.add_argument(short.flag, action=ShortOptionAction, short=short, metavar=short.metavar,
                               help=f"{short.help} (= {short.long_form})")
        self._short_options = tuple(options)

    def format_full_help(self) -> str:
        """jsonargparse's full help (every option)."""
        return super().format_help()

    def format_help(self, formatter=None) -> str:
        if self.overview:
            return self._format_overview()
        if self.subcommand is None:  # --model.help CLASS and other per-class helps: every option of the class
            return self.format_full_help()
        return self._format_subcommand()

    def _format_overview(self) -> str:
        width = max(len(n) for n in SUBCOMMANDS) + 2
        lines = [f"usage: latentlit {{{','.join(SUBCOMMANDS)}}} [--config CONFIG] [options]", "", *_wrap(DESCRIPTION, 0), "",
                 "subcommands:"]
        lines += [f"  {name:<{width}}{text}" for name, text in SUBCOMMANDS.items()]
        lines += ["", "Start with:  latentlit predict --config configs/quickstart/predict_dropout.yaml",
                  "Options of a subcommand:  latentlit predict --help  (every option: --help_all)"]
        return "\n".join(lines) + "\n"

    def _format_subcommand(self) -> str:
        sub = self.subcommand
        lines = [f"usage: latentlit {sub} [--config CONFIG] [options]", "", *_wrap(SUBCOMMANDS.get(sub, ""), 0), ""]
        shorts = getattr(self, "_short_options", ())
        if shorts:
            lines.append("everyday options (each is short for the full path after '='; a later option wins):")
            for s in shorts:
                head = f"  {s.flag} {s.metavar}"
                lines += _two_columns(head, s.help)
                lines += _two_columns("", f"= {s.long_form}")
            lines.append("")
        model_help = "TTSPredictor (or RolloutLabeller)" if sub == "predict" else "LatentBackboneModule (or LatentRMModule)"
        data_help = "ProblemDataModule" if sub == "predict" else "CurriculumDataModule (or LatentRMDataModule)"
        general = [
            ("-c, --config CONFIG", "a YAML config (configs/...); read before the other options wherever it appears"),
            ("--print_config", "print the config these options give, and exit"),
            ("--model.init_args.NAME VALUE", f"any option of the model; --model.help {model_help} lists them"),
            ("--data.init_args.NAME VALUE", f"any option of the data module; --data.help {data_help} lists them"),
            ("--trainer.NAME VALUE", "Lightning Trainer options (devices, accelerator, strategy, logger, ...)"),
            ("--ckpt_path PATH", "a Lightning checkpoint to resume (fit) or load weights from"),
            ("-h, --help", "this help; --help_all lists every option (Trainer, and the model's and data's classes)"),
        ]
        lines.append("general options:")
        for head, text in general:
            lines += _two_columns(f"  {head}", text)
        lines += ["", "Errors name the bad option in one line; LATENTLIT_DEBUG=1 shows the full parser message."]
        return "\n".join(lines) + "\n"

    def error(self, message: str, ex: Exception | None = None):
        """One ``latentlit: error:`` line and a hint, exit status 2 (the full jsonargparse report,
        usage included, with ``LATENTLIT_DEBUG=1``)."""
        if os.environ.get("LATENTLIT_DEBUG") or not self.exit_on_error:
            # nested parsers (a class's init args) raise, so that the outer parse reports the error
            return super().error(message, ex)
        parser = getattr(ex, "subcommand_parser", None) or self
        try:
            line = describe_parse_error(message, parser)
        except Exception:  # the report must never hide the error it reports
            line = " ".join(message.split())
        command = f"latentlit {parser.subcommand} --help" if getattr(parser, "subcommand", None) else "latentlit --help"
        sys.stderr.write(f"latentlit: error: {line}\n({command} lists the options; LATENTLIT_DEBUG=1 shows the "
                         "parser's full message)\n")
        self.exit(2)


# the classes whose options --help_all lists when the command line configures none
DEFAULT_CLASSES = {
    "predict": {"model": "latentlit.lit.TTSPredictor", "model.init_args.sampler": "latentlit.sampling.MCDropout",
                "data": "latentlit.lit.ProblemDataModule", "data.init_args.problems": "latentlit.data.sources.SyntheticProblems"},
    "fit": {"model": "latentlit.lit.LatentBackboneModule", "data": "latentlit.lit.CurriculumDataModule"},
    "validate": {"model": "latentlit.lit.LatentBackboneModule", "data": "latentlit.lit.CurriculumDataModule"},
}
_NESTED = {"model": ("sampler",), "data": ("problems", "train", "val")}


def class_options_help(parser, namespace) -> str:
    """The options of the model and data classes (and of their sampler / problem source) that
    ``namespace`` configures, or of the subcommand's default classes (``DEFAULT_CLASSES``), as
    ``--model.init_args.NAME`` lines with jsonargparse's descriptions: the part of ``--help_all``
    that jsonargparse's own full help leaves out (it shows ``--model.help CLASS`` instead)."""
    defaults = DEFAULT_CLASSES.get(getattr(parser, "subcommand", None), {})
    sections = []
    for part in ("model", "data"):
        keys = [part] + [f"{part}.init_args.{name}" for name in _NESTED[part]]
        for key in keys:
            spec = namespace.get(key) if namespace is not None and hasattr(namespace, "get") else None
            configured = _class_of(spec) if spec is not None else None
            path = spec.get("class_path") if configured is not None else defaults.get(key)
            cls = configured or _class_of({"class_path": path})
            if cls is None:
                continue
            how = "as configured" if configured is not None else "the default"
            if key == part:
                how += f"; another class: --{part}.help CLASS"
            sections.append(f"options of --{key} {path} ({how}):\n" + _class_arguments_help(cls, f"{key}.init_args"))
    return "\n".join(sections)


def _class_arguments_help(cls: type, prefix: str) -> str:
    """jsonargparse's help lines of ``cls``'s init arguments under ``--<prefix>.`` (no usage)."""
    sub = LatentLitParser(add_help=False, prog="latentlit")
    sub.add_class_arguments(cls, prefix, fail_untyped=False, sub_configs=True)
    text = sub.format_full_help()
    lines = text.splitlines()
    start = next((i for i, line in enumerate(lines) if line.startswith("  --")), len(lines))
    out, skip = [], False
    for line in lines[start:]:
        if re.match(rf"^  --{re.escape(prefix)} CONFIG$", line):  # the class's own config-file option
            skip = True
            continue
        if skip and line.startswith(" " * 6):
            continue
        skip = False
        out.append(line)
    return "\n".join(out).rstrip() + "\n"


class _HelpAllAction(argparse.Action):
    def __init__(self, option_strings, dest, **kwargs):
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None):
        sys.stdout.write(parser.format_full_help())
        sys.stdout.write("\n" + class_options_help(parser, namespace))
        parser.exit(0)


def _wrap(text: str, indent: int, width: int = 100) -> list[str]:
    import textwrap

    return textwrap.wrap(text, width=width, initial_indent=" " * indent, subsequent_indent=" " * indent) or [""]


def _two_columns(head: str, text: str, column: int = 32) -> list[str]:
    if len(head) + 2 <= column:
        return [f"{head:<{column}}{text}"]
    return [head, f"{'':<{column}}{text}"]
