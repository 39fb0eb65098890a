"""The pieces every `fastcycle` subcommand's parser is made of: one-line errors, flag groups that are
also listed (for the docs test), switches with modes, config fields as flags, the device flags.

Torch-free, like fastcycle.cli: `fastcycle --help` imports neither torch nor a backend."""

from __future__ import annotations

import argparse
import dataclasses
from typing import Any

from fastcycle.config import field_index, flag
from fastcycle.errors import UserError


class Parser(argparse.ArgumentParser):
    """A parser whose errors are one line, and which keeps what it declares: `commands`, each subcommand's
    parser by name, and `actions`, every flag declared on it (argparse lists neither publicly)."""

    def __init__(self, *args: Any, **kw: Any):
        self.commands: dict[str, Parser] = {}
        self.actions: list[argparse.Action] = []  # before super().__init__, which declares --help
        super().__init__(*args, **kw)

    def add_argument(self, *args: Any, **kw: Any) -> argparse.Action:
        self.actions.append(action := super().add_argument(*args, **kw))
        return action

    def error(self, message: str):  # one line instead of usage + message
        raise UserError(f"{message} (see `{self.prog} --help`)")


class Group:
    """An argument group of `parser` (a heading in its --help) whose flags go to `parser.actions` too."""

    def __init__(self, parser: Parser, title: str):
        self.parser, self.group = parser, parser.add_argument_group(title)

    def add_argument(self, *args: Any, **kw: Any) -> argparse.Action:
        self.parser.actions.append(action := self.group.add_argument(*args, **kw))
        return action


class SwitchOrMode(argparse.Action):
    """`--flag` (True), `--flag MODE` (one of `modes`) or `--no-flag` (False): a switch with modes."""

    def __init__(self, option_strings, dest, modes=(), **kw):
        self.modes = tuple(modes)
        negated = [s.replace("--", "--no-", 1) for s in option_strings]
        super().__init__([*option_strings, *negated], dest, nargs="?", metavar="|".join(modes), **kw)

    def __call__(self, parser, namespace, value, option_string=None):
        if option_string.startswith("--no-"):
            if value is not None:
                parser.error(f"{option_string} takes no value (got {value!r})")
            value = False
        elif value is None:
            value = True
        elif value not in self.modes:
            parser.error(f"{option_string} takes no value or one of: {', '.join(self.modes)} (got {value!r})")
        setattr(namespace, self.dest, value)


def config_flag(g: Group, name: str, f: dataclasses.Field, default: str | None = None) -> None:
    """The flag of config field `name` (default SUPPRESS: only what the user gives overrides)."""
    help = f"{f.metadata['help']} (default: {f.default if default is None else default})"
    kw = dict(default=argparse.SUPPRESS, help=help)
    if f.type == "bool":
        action = "store_true" if name.startswith("no_") else argparse.BooleanOptionalAction
        g.add_argument(flag(name), action=action, **kw)
    elif f.type == "bool | str":
        g.add_argument(flag(name), action=SwitchOrMode, modes=f.metadata["modes"], **kw)
    else:
        typ = {"int": int, "float": float}.get(str(f.type), str)
        g.add_argument(flag(name), type=typ, choices=f.metadata.get("choices"), metavar=name.upper(), **kw)


def device_flags(p: Parser, kernels: bool, device_use: str = "") -> None:
    """--device, and with `kernels` --kernels, of a command that runs a trained generator: training's
    default, choices and help (RuntimeConfig's), so each flag means the same in every command.
    device_use: what the device is for besides running the generator."""
    index = field_index()
    d, k = index["device"][1], index["kernels"][1]
    p.add_argument(
        "--device", default=d.default, help=d.metadata["help"] + (f" ({device_use})" if device_use else "")
    )
    if kernels:
        p.add_argument("--kernels", default=k.default, choices=k.metadata["choices"], help=k.metadata["help"])
