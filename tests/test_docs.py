"""Every relative link and anchor in README.md and docs/*.md resolves, and so does every
``docs/<page>.md#<anchor>`` named in the package's docstrings and comments, in scripts and in configs.

Anchors follow GitHub's heading slugs: the heading's text as rendered (inline code, links and
emphasis reduced to their text), lower-cased, every character that is not a letter, digit, space,
hyphen or underscore removed, each space replaced by a hyphen; a repeated slug gets -1, -2, ...
Headings inside fenced code blocks are not headings. External links (http, https, mailto) are not
checked."""

import re
import sys
from functools import lru_cache
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README_MAX_LINES = 250

_FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})")
_HEADING = re.compile(r"^ {0,3}(#{1,6})[ \t]+(.*?)[ \t]*#*[ \t]*$")
_CODE_SPAN = re.compile(r"(`+)(.+?)\1")
_CODE_SPAN_MULTILINE = re.compile(r"(`+)(?!`)(.+?)(?<!`)\1(?!`)", re.DOTALL)
# [text](target) and ![alt](target); the text may hold one level of brackets (e.g. a badge)
_LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\[\]]*\])*\]\(\s*(<[^>]*>|[^()\s]*(?:\([^()\s]*\)[^()\s]*)*)(?:\s+\"[^\"]*\")?\s*\)")
_EXTERNAL = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")  # http:, https:, mailto:, ...
# a docs page named from code: docs/<page>.md or docs/<page>.md#<anchor>
_CODE_REF = re.compile(r"(?<![\w/.-])docs/([\w./-]+?\.md)(?:#([\w-]+))?")


def doc_files():
    return [ROOT / "README.md"] + sorted((ROOT / "docs").glob("*.md"))


def _lines_outside_fences(text):
    """(line number, line) of every line that is not inside a fenced code block, fences excluded."""
    fence = None
    for number, line in enumerate(text.splitlines(), 1):
        m = _FENCE.match(line)
        if fence is None and m:
            fence = m.group(1)
            continue
        if fence is not None:
            if m and m.group(1)[0] == fence[0] and len(m.group(1)) >= len(fence) and not line.strip()[len(m.group(1)):].strip():
                fence = None
            continue
        yield number, line


def _rendered(text):
    """Heading text as GitHub renders it, before slugging: code spans, links, images, HTML tags
    and emphasis markers reduced to their text."""
    text = _CODE_SPAN.sub(lambda m: m.group(2).strip(), text)
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", text)
    text = re.sub(r"<[^>]+>", "", text)
    text = re.sub(r"(\*+|(?<!\w)_+|_+(?!\w))", "", text)  # emphasis, not snake_case underscores
    return text


def slug(heading):
    """GitHub's anchor for a heading's text (without the duplicate suffix)."""
    text = _rendered(heading).strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)  # \w: letters, digits (any script) and underscore
    return text.replace(" ", "-")


@lru_cache(maxsize=None)
def anchors(path):
    """Every anchor of a Markdown file: heading slugs with GitHub's -1, -2 suffixes for repeats,
    plus explicit ``<a name="...">`` / ``id="..."`` anchors."""
    text = Path(path).read_text(encoding="utf-8")
    found, counts = set(), {}
    for _, line in _lines_outside_fences(text):
        m = _HEADING.match(line)
        if m:
            base = slug(m.group(2))
            n = counts.get(base, 0)
            counts[base] = n + 1
            found.add(base if n == 0 else f"{base}-{n}")
        found.update(re.findall(r"<a\s+(?:name|id)=\"([^\"]+)\"", line))
    return frozenset(found)


def _blank_code_span(m):
    return re.sub(r"[^\n]", " ", m.group(0))  # keeps offsets and line breaks


def links(path):
    """(line number, target) of every Markdown link and image outside code blocks and code spans;
    a link's text may run over several lines of a paragraph."""
    text = path.read_text(encoding="utf-8")
    lines = [""] * len(text.splitlines())
    for number, line in _lines_outside_fences(text):
        lines[number - 1] = line
    start = 0
    for paragraph in "\n".join(lines).split("\n\n"):
        masked = _CODE_SPAN_MULTILINE.sub(_blank_code_span, paragraph)
        for m in _LINK.finditer(masked):
            yield start + masked.count("\n", 0, m.start()) + 1, m.group(1).strip("<>")
        start += paragraph.count("\n") + 2


def check_target(source, target):
    """None when ``target`` (relative to the file ``source``) resolves, else why not."""
    path_part, _, anchor = target.partition("#")
    dest = (source.parent / path_part).resolve() if path_part else source
    if not dest.exists():
        return f"{path_part} does not exist"
    if anchor:
        if dest.is_dir() or dest.suffix.lower() != ".md":
            return None  # anchors of code files (#L10) and folders are not checked
        if anchor not in anchors(dest):
            return f"no heading with anchor #{anchor} in {dest.relative_to(ROOT)}"
    return None


def broken_links():
    broken = []
    for path in doc_files():
        for number, target in links(path):
            if not target or _EXTERNAL.match(target):
                continue
            why = check_target(path, target)
            if why:
                broken.append(f"{path.relative_to(ROOT)}:{number}: ({target}): {why}")
    return broken


def code_files():
    files = sorted((ROOT / "latentlit").rglob("*.py")) + sorted((ROOT / "scripts").glob("*"))
    files += sorted((ROOT / "configs").rglob("*.yaml"))
    return [f for f in files if f.is_file()]


def broken_code_references():
    broken = []
    for path in code_files():
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue
        for number, line in enumerate(text.splitlines(), 1):
            for m in _CODE_REF.finditer(line):
                target = f"docs/{m.group(1)}" + (f"#{m.group(2)}" if m.group(2) else "")
                why = check_target(ROOT / "README.md", target)
                if why:
                    broken.append(f"{path.relative_to(ROOT)}:{number}: {target}: {why}")
    return broken


def test_every_relative_link_and_anchor_in_the_docs_resolves():
    broken = broken_links()
    assert not broken, f"{len(broken)} broken link(s):\n" + "\n".join(broken)


def test_every_docs_reference_in_the_code_resolves():
    broken = broken_code_references()
    assert not broken, f"{len(broken)} broken docs reference(s):\n" + "\n".join(broken)


def test_every_docs_page_starts_with_a_title():
    untitled = [p.name for p in sorted((ROOT / "docs").glob("*.md"))
                if not p.read_text(encoding="utf-8").startswith("# ")]
    assert not untitled, f"docs pages without a '# Title' first line: {untitled}"


def test_the_readme_is_a_landing_page():
    n = len((ROOT / "README.md").read_text(encoding="utf-8").splitlines())
    assert n <= README_MAX_LINES, f"README.md has {n} lines; at most {README_MAX_LINES} (move material to docs/)"


def test_slugs_follow_github():
    assert slug("Outputs of `latentlit predict`") == "outputs-of-latentlit-predict"
    assert slug("Training: losses, resume, DDP") == "training-losses-resume-ddp"
    assert slug("Why majority vote barely beats greedy here.") == "why-majority-vote-barely-beats-greedy-here"
    assert slug("Adaptive N and selective prediction") == "adaptive-n-and-selective-prediction"
    assert slug("k < N: estimators") == "k--n-estimators"
    assert slug("`rm_score` and `rollout_prefix`") == "rm_score-and-rollout_prefix"
    assert slug("*Per-rollout* prefixes [on Llama](x.md)") == "per-rollout-prefixes-on-llama"
    assert slug("MC-dropout (p = 0.05)") == "mc-dropout-p--005"


def test_the_checker_finds_broken_links(tmp_path, monkeypatch):
    (tmp_path / "docs").mkdir()
    (tmp_path / "latentlit").mkdir()
    (tmp_path / "README.md").write_text(
        "# T\n\n## A b\n\n## A b\n\n[ok](#a-b-1) [ok](docs/p.md#x) [bad](#a-b-2) [bad](docs/q.md)\n"
        "[web](https://example.org/#nothing) `[code](#nowhere)`\n\n```\n# Not a heading\n[x](#nowhere)\n```\n"
        "A [link over\ntwo lines](#not-a-heading) and `code over\ntwo lines [x](#nowhere)`.\n")
    (tmp_path / "docs" / "p.md").write_text("# X\n\n[up](../README.md#a-b) [bad](../README.md#not-a-heading)\n")
    (tmp_path / "latentlit" / "m.py").write_text('"""See docs/p.md#x and docs/p.md#y."""\n')
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    anchors.cache_clear()
    try:
        found = broken_links()
        code = broken_code_references()
    finally:
        anchors.cache_clear()
    assert [b.split(": ", 1)[0] for b in found] == ["README.md:7", "README.md:7", "README.md:14", "docs/p.md:3"], found
    assert "#a-b-2" in found[0] and "docs/q.md" in found[1] and "#not-a-heading" in found[2]
    assert "#not-a-heading" in found[3]
    assert len(code) == 1 and "docs/p.md#y" in code[0], code
