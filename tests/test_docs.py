"""The README and docs/ are the user's manual: the command reference documents every flag and the
README gives the command CI runs."""

import re
from pathlib import Path

from fastcycle.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
COMMAND_REFERENCE = (ROOT / "docs" / "commands.md").read_text()


def _flags(command: str) -> set[str]:
    parser = build_parser()._subparsers._group_actions[0].choices[command]
    return {a.option_strings[0] for a in parser._actions if a.option_strings and a.dest != "help"}


def test_command_reference_documents_every_flag():
    for command in ("train", "translate", "export", "sample", "plot", "distill"):
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
