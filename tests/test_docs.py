"""The README and docs/ are the user's manual: the command reference documents every flag, the README
gives the command CI runs, and every link between them lands on a file and a heading that exist."""

import re
from pathlib import Path

from fastcycle.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
COMMAND_REFERENCE = (ROOT / "docs" / "commands.md").read_text()
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def _flags(command: str) -> set[str]:
    parser = build_parser().commands[command]
    return {a.option_strings[0] for a in parser.actions if a.option_strings and a.dest != "help"}


def test_command_reference_documents_every_flag():
    for command in ("train", "translate", "eval", "export", "sample", "plot", "distill", "serve"):
        documented = set(re.findall(r"^\| `(--[\w-]+)`", COMMAND_REFERENCE, flags=re.MULTILINE))
        missing = _flags(command) - documented
        assert not missing, f"docs/commands.md lacks `fastcycle {command}` flags {sorted(missing)}"


def test_quickstart_is_two_commands_and_ci_runs_the_test_one():
    quickstart = README.split("## Quickstart", 1)[1].split("\n## ", 1)[0]
    commands = re.findall(r"```bash\n(.+?)\n```", quickstart)
    assert len(commands) == 2 and "fastcycle train --amp" in commands[0]
    test_command = commands[1]
    assert "pytest" in test_command and "ruff check" in test_command
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert test_command in ci, ".ci/run must run the README's test command verbatim"


def _anchors(markdown: str) -> set[str]:
    """GitHub's anchors for the headings outside code blocks: lower case, punctuation other than - and _
    dropped, spaces as hyphens, a repeated heading numbered -1, -2, ..."""
    anchors: set[str] = set()
    for heading in re.findall(r"^#+ (.+)$", _prose(markdown), flags=re.MULTILINE):
        slug = re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
        n = 0
        while (candidate := slug if n == 0 else f"{slug}-{n}") in anchors:
            n += 1
        anchors.add(candidate)
    return anchors


def _prose(markdown: str) -> str:
    """The text outside fenced code blocks, where shell comments start with # and brackets are code."""
    return re.sub(r"^```.*?^```", "", markdown, flags=re.MULTILINE | re.DOTALL)


def test_every_relative_link_lands_on_a_file_and_heading():
    broken = []
    for page in PAGES:
        for target in re.findall(r"\]\(([^)\s]+)\)", _prose(page.read_text())):
            if re.match(r"[a-z]+:", target):  # https:, mailto:: not ours to check
                continue
            path, _, anchor = target.partition("#")
            linked = (page.parent / path).resolve() if path else page
            if not linked.exists():
                broken.append(f"{page.relative_to(ROOT)}: {target} (no such file)")
            elif anchor and anchor not in _anchors(linked.read_text()):
                broken.append(f"{page.relative_to(ROOT)}: {target} (no such heading)")
    assert not broken, "broken links:\n" + "\n".join(broken)
