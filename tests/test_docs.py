"""The documentation as a user meets it: every shell block is run by a test or says why not, the cheap
ones run here as written, every relative link and anchor resolves, every config key the pages name
exists, and README.md stays short enough to find the two commands in (issue 22)."""

import ast
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from pipeline.settings import EvalConfig, JobConfig, SweepConfig, describe

REPO = Path(__file__).resolve().parents[1]
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md")), REPO / "infra" / "README.md"]
SHELL_LANGUAGES = {"bash", "sh", "shell", "console", "zsh"}
FENCE = re.compile(r"^\s*(```+|~~~+)\s*([\w+-]*)")
MARK = re.compile(r"^\s*<!--\s*(?:run by (?P<file>tests/[\w/]+\.py)::(?P<test>\w+)\b.*?"
                  r"|not run by tests: (?P<why>\S.*?))\s*-->\s*$")
CHEAP = "tests/test_docs.py::test_the_cheap_blocks_run_as_written"
README_MAX_LINES = 300
# Names in backticks that look like config keys but are not (Athena / Glue tables).
NOT_KEYS = {"musc.scores", "musc.scores_all", "musc.scores_latest", "musc.metrics",
            "musc.group_nights"}  # Athena tables and views


@dataclass(frozen=True)
class ShellBlock:
    page: Path
    line: int  # of the opening fence, 1-based
    text: str
    mark: str  # the HTML comment just above it, or "" when there is none

    @property
    def where(self) -> str:
        return f"{self.page.relative_to(REPO)}:{self.line}"


def comment_above(lines: list[str], fence: int) -> str:
    """The HTML comment that ends on the last non-blank line above line `fence`, joined into one line."""
    last = next((j for j in range(fence - 1, -1, -1) if lines[j].strip()), None)
    if last is None or not lines[last].rstrip().endswith("-->"):
        return ""
    first = next((j for j in range(last, -1, -1) if "<!--" in lines[j]), last)
    return " ".join(line.strip() for line in lines[first:last + 1])


def fenced_blocks(text: str) -> list[tuple[int, str, str, str]]:
    """(line of the opening fence, language, body, the comment just above the fence) per block."""
    blocks, lines, i = [], text.splitlines(), 0
    while i < len(lines):
        opening = FENCE.match(lines[i])
        if not opening:
            i += 1
            continue
        fence, start = opening.group(1), i
        end = next((j for j in range(i + 1, len(lines)) if lines[j].strip().startswith(fence)), len(lines))
        body = "\n".join(lines[start + 1:end])
        blocks.append((start + 1, opening.group(2).lower(), body, comment_above(lines, start)))
        i = end + 1
    return blocks


def shell_blocks() -> list[ShellBlock]:
    return [ShellBlock(page, line, body, comment)
            for page in PAGES for line, language, body, comment in fenced_blocks(page.read_text())
            if language in SHELL_LANGUAGES]


def functions_in(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    return {node.name for node in ast.walk(tree) if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)}


def test_every_shell_block_is_run_by_a_test_or_says_why_not():
    """A block a user can copy either has a test that would fail if it stopped working, or its mark says
    what it needs that this machine lacks; a new block without a mark fails here."""
    blocks = shell_blocks()
    assert len(blocks) >= 20  # the parser finds the blocks (README, docs/, infra/README.md)
    problems = []
    for block in blocks:
        mark = MARK.match(block.mark) if block.mark else None
        if mark is None:
            problems.append(f"{block.where}: no <!-- run by tests/...::test_... --> or "
                            "<!-- not run by tests: why --> just above it")
        elif mark.group("file"):
            test_file = REPO / mark.group("file")
            if not test_file.is_file() or mark.group("test") not in functions_in(test_file):
                problems.append(f"{block.where}: {mark.group('file')}::{mark.group('test')} does not exist")
    assert not problems, "\n".join(problems)


def cheap_blocks() -> list[ShellBlock]:
    return [block for block in shell_blocks() if block.mark.startswith(f"<!-- run by {CHEAP}")]


def test_the_cheap_blocks_run_as_written():
    """The blocks that take seconds run here exactly as the pages print them, from the project's root."""
    blocks = cheap_blocks()
    assert blocks, "no block is marked as run by this test"
    for block in blocks:
        done = subprocess.run(["bash", "-euo", "pipefail", "-c", block.text], cwd=REPO, capture_output=True,
                              text=True, timeout=120)
        assert done.returncode == 0, f"{block.where} exited {done.returncode}:\n{done.stderr[-3000:]}"
        assert done.stdout.strip(), f"{block.where} printed nothing"


def github_anchor(heading: str) -> str:
    """The id GitHub gives a heading: lower case, punctuation (backticks, colons, dots) dropped, spaces
    to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def without_fences(text: str) -> str:
    """The page without its fenced blocks (a shell comment is not a heading, a bracket in code not a link)."""
    return re.sub(r"^\s*(```+|~~~+).*?^\s*\1\s*$", "", text, flags=re.S | re.M)


def prose(text: str) -> str:
    """The page without any code, fenced or inline: what is left holds the links."""
    return re.sub(r"`[^`\n]*`", "", without_fences(text))


def anchors(page: Path) -> set[str]:
    """Every heading's id; GitHub numbers repeated ones (slug, slug-1, ...)."""
    found, seen = set(), {}
    for heading in re.findall(r"^#{1,6} (.+)$", without_fences(page.read_text()), re.M):
        slug = github_anchor(heading)
        found.add(f"{slug}-{seen[slug]}" if slug in seen else slug)
        seen[slug] = seen.get(slug, 0) + 1
    return found


def test_github_anchor_matches_githubs_rule():
    assert github_anchor("The nightly job (`jobs/musc.py`)") == "the-nightly-job-jobsmuscpy"
    assert github_anchor("Evaluation protocols: `protocol: project | paper`") == \
        "evaluation-protocols-protocol-project--paper"
    assert github_anchor("5. A failed night") == "5-a-failed-night"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(REPO)))
def test_every_relative_link_and_anchor_resolves(page):
    problems = []
    for target in re.findall(r"\]\(([^)\s]+)\)", prose(page.read_text())):
        if re.match(r"[a-z]+:", target):  # https:, mailto:
            continue
        path, _, anchor = target.partition("#")
        linked = (page.parent / path).resolve() if path else page
        if not linked.exists():
            problems.append(f"{target}: no such file")
        elif anchor and linked.suffix == ".md" and anchor not in anchors(linked):
            problems.append(f"{target}: no heading #{anchor} in {linked.relative_to(REPO)}")
    assert not problems, f"{page.relative_to(REPO)}: " + "; ".join(problems)


def config_keys() -> set[str]:
    text = "\n".join(describe(schema) for schema in (JobConfig, EvalConfig, SweepConfig))
    return set(re.findall(r"^([a-z_][a-z0-9_.]*) \(", text, re.M))


def test_every_config_key_the_pages_name_exists():
    """An operator searches the pages for a key: a renamed or misspelt one must not survive there."""
    keys = config_keys()
    assert {"inputs.uris", "flagging.policy", "scoring.max_subset_size", "protocol"} <= keys  # the parser works
    sections = {key.split(".")[0] for key in keys}
    problems = []
    for page in PAGES:
        for code in re.findall(r"`([^`\n]+)`", without_fences(page.read_text())):
            name = re.split(r"[=:\s]", code, maxsplit=1)[0]
            if (re.fullmatch(r"[a-z_]+(\.[a-z0-9_]+)+", name) and name.split(".")[0] in sections
                    and not re.search(r"\.(py|json|yaml|parquet|txt|csv|html)$", name) and name not in NOT_KEYS
                    and name not in keys and not any(key.startswith(name + ".") for key in keys)
                    and not any(name.startswith(key + ".") for key in keys)):  # inside a mapping's value
                problems.append(f"{page.relative_to(REPO)}: `{code}`")
    assert not problems, "not config keys (python -m pipeline.settings lists them): " + ", ".join(problems)


def test_the_readme_is_short_and_it_and_the_map_link_every_page():
    readme, the_map = (REPO / "README.md").read_text(), (REPO / "docs" / "architecture.md").read_text()
    assert len(readme.splitlines()) <= README_MAX_LINES
    pages = [p.name for p in sorted((REPO / "docs").glob("*.md"))]
    unlinked = [f"README.md: {name}" for name in pages if f"](docs/{name}" not in readme]
    unlinked += [f"docs/architecture.md: {name}" for name in pages
                 if name != "architecture.md" and f"]({name}" not in the_map]
    assert not unlinked, f"pages not linked: {unlinked}"


def test_the_readmes_two_commands_are_the_ones_ci_runs():
    """The quick start installs as CI does and the README's test command is CI's (.ci/run), so a newcomer
    who follows the README runs what CI checks."""
    ci = [line for line in (REPO / ".ci" / "run").read_text().splitlines() if line and not line.startswith("#")]
    readme = {body for _, language, body, _ in fenced_blocks((REPO / "README.md").read_text())
              if language in SHELL_LANGUAGES}
    install, tests = ci[-2:]
    assert tests in readme  # "Run the tests"
    assert any(body.startswith(f"{install} && ") for body in readme)  # the quick start
