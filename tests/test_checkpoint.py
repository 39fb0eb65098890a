"""Checkpoint files: code-carrying pickles are refused, garbage is named, saves are atomic."""

import os
import pickle

import pytest
import torch

from fastcycle.checkpoint import atomic_save, safe_load
from fastcycle.errors import UserError


class _RunsACommand:
    def __reduce__(self):  # what a malicious .pth does: call a function while unpickling
        return (os.system, ("echo pwned > /dev/null",))


def test_a_pickle_that_imports_code_is_refused(tmp_path):
    path = tmp_path / "evil.pth"
    path.write_bytes(pickle.dumps({"w": _RunsACommand()}, protocol=2))
    with pytest.raises(UserError, match=r"was refused: it would import (posix|os)\.system"):
        safe_load(path)


@pytest.mark.parametrize("content", [b"", b"not a checkpoint", b"PK\x03\x04 truncated zip"])
def test_garbage_is_one_clear_error(tmp_path, content):
    path = tmp_path / "junk.pt"
    path.write_bytes(content)
    with pytest.raises(UserError, match="is not a readable checkpoint"):
        safe_load(path)


def test_missing_file(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        safe_load(tmp_path / "nothing.pt")


def test_a_failed_save_keeps_the_old_file(tmp_path):
    path = tmp_path / "checkpoint.pt"
    atomic_save({"step": 1}, path)

    class Unsaveable:
        def __reduce__(self):
            raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        atomic_save({"step": 2, "x": Unsaveable()}, path)
    assert torch.load(path, weights_only=True) == {"step": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.pt"]  # no temporary file left behind
