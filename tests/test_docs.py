"""The README is the user's manual: it must document every flag and give the command CI runs."""

import re
from pathlib import Path

from fastcycle.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def _flags(command: str) -> set[str]:
    parser = build_parser().commands[command]
    return {a.option_strings[0] for a in parser.actions if a.option_strings and a.dest != "help"}


def test_readme_documents_every_flag():
    for command in ("train", "translate", "export", "sample", "plot", "distill"):
        documented = set(re.findall(r"^\| `(--[\w-]+)`", README, flags=re.MULTILINE))
        missing = _flags(command) - documented
        assert not missing, f"README lacks `fastcycle {command}` flags {sorted(missing)}"


def test_quickstart_is_two_commands_and_ci_runs_the_test_one():
    quickstart = README.split("## Quickstart", 1)[1].split("\n## ", 1)[0]
    commands = re.findall(r"```bash\n(.+?)\n```", quickstart)
    assert len(commands) == 2 and "fastcycle train --amp" in commands[0]
    test_command = commands[1]
    assert "pytest" in test_command and "ruff check" in test_command
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert test_command in ci, ".ci/run must run the README's test command verbatim"
