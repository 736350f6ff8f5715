"""One error line for a command line jsonargparse refuses, found from the parser's structures, not its message text.

jsonargparse reads options left to right, so the option to blame is the first at which the command line stops
parsing (a binary search over re-parses without validation; a config file's keys likewise). What is wrong with it
comes from the parser's option names, the signatures of the classes configured before it and, where that is one
clear line, jsonargparse's innermost message (``Expected a <class 'int'>. Got value: abc``).
"""

from __future__ import annotations

import difflib
import json
import re
import sys
import typing
from argparse import ArgumentError
from pathlib import Path

import yaml
from jsonargparse import Namespace

from latentlit.cli.aliases import ALIASES, UsageError, did_you_mean, init_args, load_class


def explain(parser, argv: list[str], groups: list[tuple[str, list[str]]], error: Exception) -> str:
    """The error line for ``error``, raised by the top-level ``parser`` on ``argv`` (``groups``: its options after
    the subcommand, as :func:`latentlit.cli.aliases.rewrite` gives them)."""
    commands = parser._subcommands_action.choices
    if (command := next((a for a in argv if a in commands), None)) is None:
        word = next((a for a in argv if not a.startswith("-")), None)
        if word is None:
            return f"a subcommand is needed: one of {', '.join(commands)}"
        return f"{word!r} is not a subcommand of latentlit" + did_you_mean(word, commands)
    groups = [g for g in groups if g[1][0].partition("=")[0] not in ("-h", "--help", "--help_all", "--print_config")]
    found = _first_failing(parser, command, [], groups)
    return _blame(parser, command, groups, *found) if found else _innermost(error)


def _first_failing(parser, command: str, head: list[str], groups):
    """``(k, config before groups[k], error)`` for the first of ``groups`` (after the tokens ``head``) at which the
    command line stops parsing; None when it all parses."""
    results = {}

    def parse(k: int):
        if k not in results:
            try:
                args = [command, *head, *(t for _, tokens in groups[:k] for t in tokens)]
                results[k] = parser.parse_args(args, _skip_validation=True)[command]
            except ArgumentError as err:
                results[k] = err
        return results[k]

    lo, hi = 0, len(groups)
    if not groups or not isinstance(parse(hi), Exception) or isinstance(parse(lo), Exception):
        return None
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if isinstance(parse(mid), Exception) else (mid, hi)
    return lo, parse(lo), parse(hi)


def _blame(parser, command: str, groups, k: int, before, failure: Exception) -> str:
    """What is wrong with ``groups[k]``, the first option that does not parse (``before``: the config up to it)."""
    shown, tokens = groups[k]
    option, eq, inline = tokens[0].partition("=")
    option = option.removesuffix("+")  # --x+=CLASS appends to a list option x
    value = inline if eq else (tokens[1] if len(tokens) > 1 else None)
    actions = parser._subcommands_action.choices[command]._option_string_actions

    def takes(name: str) -> list[type]:  # the classes an option of the parser takes (none for a group: --trainer)
        return _classes(getattr(actions.get(name), "_typehint", None))

    if option in ("-c", "--config"):
        return _config_file(parser, command, [t for _, ts in groups[:k] for t in ts], Path(value or ""), failure)
    if option in actions:
        return _not_a_class(shown, value, takes(option)) or f"{shown}: {_innermost(failure)}"
    parts = option.split(".")  # else the longest option it extends into a class's init args
    prefix = next((p for p in (".".join(parts[:i]) for i in range(len(parts) - 1, 0, -1)) if takes(p)), None)
    if prefix is None:
        names = [o for o in actions if o.startswith("--")] + list(ALIASES.get(command, {}))
        return f"{shown}: not an option of latentlit {command}" + did_you_mean(option, names)
    key, node, hint = prefix[2:], before.get(prefix[2:]), None
    for name in [n for n in option[len(prefix) + 1:].split(".") if n != "init_args"]:
        node = node[-1] if isinstance(node, list) and node else node  # a list option: its last item (what +=, or x.y, set)
        if (cls := load_class(node.get("class_path")) if isinstance(node, Namespace) else None) is None:
            break
        if name not in (names := init_args(cls)):
            return (f"{shown}: {cls.__name__} has no option {name!r}" + (did_you_mean(name, names)
                    or taken_by(command, key, name) or f"; its options: {', '.join(names)}"))
        hint = _hints(cls).get(name)
        key, node = f"{key}.init_args.{name}", (node.get("init_args") or Namespace()).get(name)
    if value in ("null", "None"):  # jsonargparse reads a nested null on the command line as the string 'None'
        group, name = option.rsplit(".", 1)
        return (f"{shown}: null cannot be given to a nested option on the command line; give its group whole, "
                f"e.g. {group.removesuffix('.init_args')} \"{{..., {name}: null}}\", or set it in a config file")
    return _not_a_class(shown, value, _classes(hint)) or f"{shown}: {_innermost(failure)}"


def refuse(line: str, command: str | None = None) -> typing.NoReturn:
    """Exit with status 2 after the one ``latentlit: error:`` line and where to look (``command``'s help)."""
    sys.stderr.write(f"latentlit: error: {line}\n(latentlit {command + ' ' if command else ''}--help lists the options; "
                     "LATENTLIT_DEBUG=1 shows the parser's full message)\n")
    raise SystemExit(2) from None


def missing_config(path: Path) -> str | None:
    """The error line for a ``--config`` file that does not exist (with a close name), else None."""
    if path.is_file():
        return None
    near = [str(p) for p in path.parent.glob("*.y*ml")] if path.parent.is_dir() else []
    return f"--config: file does not exist: {path}" + did_you_mean(str(path), near)


def _config_file(parser, command: str, head: list[str], path: Path, failure: Exception) -> str:
    """A ``--config`` file that does not exist (with a close name), or the first of its keys that does not parse."""
    if (line := missing_config(path)) is not None:
        return line
    try:
        groups = [(f"{o[2:]} (in {path})", [o, v]) for o, v in _flatten(yaml.safe_load(path.read_text()) or {})]
    except (yaml.YAMLError, OSError) as err:
        return f"--config {path}: {' '.join(str(err).split())}"
    found = _first_failing(parser, command, head, groups)
    return _blame(parser, command, groups, *found) if found else f"--config {path}: {_innermost(failure)}"


def _flatten(node, key: str = "") -> list[tuple[str, str]]:
    """A config as ``(--key, value)`` options; a class as ``--key CLASS`` followed by its init args."""
    if not isinstance(node, dict) or not node:
        return [(f"--{key}", node if isinstance(node, str) else json.dumps(node, default=str))]
    if "class_path" in node:
        return [(f"--{key}", node["class_path"]), *_flatten(node.get("init_args") or {}, f"{key}.init_args")]
    return [pair for k, v in node.items() for pair in _flatten(v, f"{key}.{k}" if key else str(k))]


def check_applied(command: str, config, groups) -> None:
    """Raise :class:`UsageError` for a short option that a later option made void by choosing a class without it
    (``--p 0.2 --sampler agn``): jsonargparse would drop its value without a word."""
    for shown, (option, *_) in groups:
        if shown.split()[0] in ALIASES.get(command, {}) and ".init_args." in option and option[2:] not in config:
            parent, name = option[2:].rsplit(".init_args.", 1)
            cls = str(config.get(f"{parent}.class_path")).rsplit(".", 1)[-1]
            raise UsageError(f"{shown}: {cls} (the {parent} this command line ends with) has no option {name!r}"
                             + taken_by(command, parent, name))


def taken_by(command: str, key: str, name: str) -> str:
    """``; 'sigma' belongs to --sampler agn (AGN)``: the choices of the short option setting ``key`` that take it."""
    for flag, alias in ALIASES.get(command, {}).items():
        if alias.choices and alias.targets == f"--{key}":
            takers = [f"{flag} {c} ({p.rsplit('.', 1)[-1]})" for c, p in alias.choices.items()
                      if name in init_args(load_class(p))]
            return f"; {name!r} belongs to {' or '.join(takers)}" if takers else ""
    return ""


def _not_a_class(shown: str, value: str | None, bases: list[type]) -> str | None:
    """The error line when ``value``, given where a subclass of ``bases`` goes, names no class."""
    if not bases or not value or not value.replace(".", "").replace("_", "").isalnum() or load_class(value):
        return None
    todo, short = [c for base in bases for c in base.__subclasses__()], {}
    while todo:
        short.setdefault((cls := todo.pop()).__name__, f"{cls.__module__}.{cls.__qualname__}")
        todo += cls.__subclasses__()
    if value in short:
        return None
    close = difflib.get_close_matches(value.rsplit(".", 1)[-1], [n for n in short if n[0] != "_"], n=1, cutoff=0.5)
    hint = f"; did you mean `{short[close[0]]}`?" if close else ""
    if shown.startswith("--data ") and Path(value).suffix in (".json", ".jsonl"):
        hint = "; to run on a problems file give --data_file PATH"
    return f"{shown}: no class {value!r} can be imported" + hint


def _classes(hint) -> list[type]:
    """The classes outside the standard library that a type hint takes (``Sampler | None`` -> [Sampler];
    ``list[Search] | None`` -> [Search]: an item of a list option)."""
    found = []
    for t in typing.get_args(hint) or (hint,):
        if typing.get_origin(t) in (list, tuple) and typing.get_args(t):
            found += _classes(typing.get_args(t)[0])
        elif isinstance(t, type) and t.__module__.split(".")[0] not in sys.stdlib_module_names:
            found.append(t)
    return found


def _hints(cls: type) -> dict:
    try:
        return typing.get_type_hints(cls.__init__)
    except (NameError, TypeError, AttributeError):  # an annotation that does not resolve: no class to suggest
        return {}


TYPE_WORDS = {"int": "an integer", "float": "a number", "bool": "true or false", "str": "a string"}


def _innermost(error: BaseException) -> str:
    """jsonargparse's innermost message (the one that names the value), on one line; a plain type mismatch in words."""
    while error.__cause__ or error.__context__:
        error = error.__cause__ or error.__context__
    text = " ".join(str(error).split()) or type(error).__name__
    # worded here only when it is this exact form; any other message passes through unchanged
    if (m := re.fullmatch(r"Expected a <class '(\w+)'>\. Got value: (.*)", text)) and m[1] in TYPE_WORDS:
        return f"expects {TYPE_WORDS[m[1]]}, got {m[2]!r}"
    return text
