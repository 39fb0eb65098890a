"""`pytest benchmarks/ --budget SECONDS`: as much of the performance record as fits in a time budget.

A GPU is lent for minutes, and `pytest benchmarks/` in full (11 training cases, max-autotune compiles,
AOTInductor builds, loaders) takes longer. With `--budget` the same suites run, reordered by RULES
(most valuable first: the ceilings, the reference step, the expected-best step at batch 1 and 8, the
rest of the training ladder, inference at batch 1 and 32, the kernels, the loaders), and a case starts
only if its estimated cost still fits in what is left of the budget; every other case is skipped with
its reason. The clock starts with the pytest process, so start-up and collection (importing torch and
the suites) are paid from the budget too.

A case's estimated cost (fixtures, compile, warm-up and timed rounds: its whole setup, call and
teardown) comes from the cases of its group that already passed, the largest of their costs
rescaled to its batch (`Cost.at`: the timed rounds and the warm-up grow with the batch, compiling
does not); before any case of its group has passed, from the rule's stated guess (`gpu_s` at the real
sizes on an H100/H200, `cpu_s` at the smoke sizes) times the ratio of measured to guessed cost over
the groups seen so far. A case that matches no rule runs last, with DEFAULT_GUESS.
`compile_mode("max-autotune")` gives "default" instead when the autotuning would not fit.

After every case the results file is rewritten (`partial: true`, the skips so far); the last write at
the end of the session says `partial: false`. The run ends with one short table (benchmarks.report's,
cases with a throughput only) and the list of budget skips.
"""

from __future__ import annotations

import fnmatch
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path

import pytest


def _process_age() -> float:
    """Seconds since this process started (Linux /proc), so interpreter and pytest start-up count too."""
    try:
        fields = Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()
        start_s = int(fields[19]) / os.sysconf("SC_CLK_TCK")  # field 22, starttime, in clock ticks
        return max(0.0, float(Path("/proc/uptime").read_text().split()[0]) - start_s)
    except (OSError, ValueError, IndexError):  # not Linux: count from this import instead
        return 0.0


STARTED = time.monotonic() - _process_age()


@dataclass(frozen=True)
class Rule:
    pattern: str  # fnmatch pattern on "<file>::<test name>", e.g. "bench_infer.py::test_infer[aoti-1]"
    group: str  # cases whose measured costs predict each other's
    gpu_s: float  # stated guess of a first case's cost on an H100/H200 at the real sizes, seconds
    cpu_s: float  # the same on a CPU at the smoke sizes (a shared 2-core machine)


_T = "bench_train_step.py::test_train_step"
_I = "bench_infer.py::test_infer"
# Priority order: a case takes the first rule it matches and runs in that rule's place (in collection
# order among the rule's cases). Cases of one file stay together, so module fixtures are built once.
# The GPU guesses: compiling four networks (inductor, 16 cores) ~1-2 min, cuDNN autotuning and 10
# rounds of 20 steps ~10-30 s, max-autotune of a generator ~3-4 min, an AOTInductor build ~1.5 min.
RULES = (
    Rule("bench_ceilings.py::*", "ceilings", 15, 2),
    Rule(f"{_T}[[]reference]", "train-eager", 45, 10),
    Rule(f"{_T}[[]best-b1]", "train-graphs", 180, 100),
    Rule(f"{_T}[[]best-b8]", "train-graphs", 180, 100),
    Rule(f"{_T}[[]fastcycle_fp32]", "train-eager", 45, 10),
    Rule(f"{_T}[[]bf16]", "train-eager", 45, 10),
    Rule(f"{_T}[[]channels_last]", "train-eager", 45, 10),
    Rule(f"{_T}[[]compile]", "train-compile", 150, 20),
    Rule(f"{_T}[[]*]", "train-graphs", 180, 100),  # triton (interpreted on a CPU), cudagraphs, best-b4/16
    Rule("bench_train_step.py::test_family_step[[]*]", "train-family", 40, 15),
    Rule(f"{_I}[[]eager*-1]", "infer-eager", 20, 6),
    Rule(f"{_I}[[]eager*-32]", "infer-eager", 20, 6),
    Rule(f"{_I}[[]compile-1]", "infer-compile", 90, 50),
    Rule(f"{_I}[[]compile-32]", "infer-compile", 90, 50),
    Rule(f"{_I}[[]aoti-1]", "infer-aoti", 120, 45),
    Rule(f"{_I}[[]aoti-32]", "infer-aoti", 120, 45),
    Rule(f"{_I}[[]onnxruntime-*]", "infer-onnx", 40, 6),
    Rule(f"{_I}[[]tensorrt-*]", "infer-tensorrt", 240, 5),
    Rule(f"{_I}[[]*]", "infer-rest", 90, 30),  # batch 8 (batch 2 in smoke mode)
    Rule("bench_kernels.py::*-triton-*", "kernels", 5, 1),  # fastcycle's kernels, then their baselines
    Rule("bench_kernels.py::*-eager-*", "kernels", 5, 1),
    Rule("bench_kernels.py::*", "kernels-compile", 20, 3),
    Rule("bench_loaders.py::test_loader[[]*]", "loaders", 45, 3),
    Rule("bench_loaders.py::test_train_step[[]*]", "loaders-step", 60, 30),
)
DEFAULT_GUESS = Rule("*", "unlisted", 60, 10)
# Kept back from the budget for what follows the last case: the final write, the summary and the
# interpreter's exit (seconds on a loaded CPU; torch's teardown).
FINISH_S = {"gpu": 10.0, "cpu": 5.0}
# What max-autotune adds to a default-mode compile of a generator (Triton GEMM/conv autotuning); a
# CPU smoke run compiles with Dynamo's eager backend whatever is asked.
MAX_AUTOTUNE_EXTRA_S = {"gpu": 180.0, "cpu": 30.0}


@dataclass(frozen=True)
class Cost:
    """What a passed case took: its whole setup, call and teardown, of which the timed rounds."""

    total_s: float
    timed_s: float
    batch: int
    rounds: int = 1

    def at(self, batch: int) -> float:
        """This cost at another batch: the timed rounds and the warm-up (about one more round: the
        suites warm up by running one) grow with it; building, compiling and counting FLOPs do not,
        nor does anything shrink at a smaller batch (launch-bound work does not)."""
        grows = self.timed_s * (self.rounds + 1) / self.rounds if self.rounds else 0.0
        return self.total_s + grows * (max(1.0, batch / self.batch) - 1)


def case_id(item) -> str:
    return f"{Path(str(item.path)).name}::{item.name}"


def rule_of(case: str) -> tuple[int, Rule]:
    """(priority, rule): the first rule matching the case, or (len(RULES), DEFAULT_GUESS)."""
    for i, rule in enumerate(RULES):
        if fnmatch.fnmatchcase(case, rule.pattern):
            return i, rule
    return len(RULES), DEFAULT_GUESS


def priority_order(cases: list[str]) -> list[int]:
    """Indices of `cases` in the order a budgeted run takes them: by rule, then as collected."""
    return sorted(range(len(cases)), key=lambda i: (rule_of(cases[i])[0], i))


def _params(item) -> dict:
    return getattr(getattr(item, "callspec", None), "params", {})


def batch_of(case: str, params: dict) -> int:
    """The case's batch: its `batch` parameter, else a `-b<N>` in its name (best-b8), else 1."""
    if isinstance(params.get("batch"), int):
        return params["batch"]
    m = re.search(r"-b(\d+)\]$", case)
    return int(m.group(1)) if m else 1


class Estimator:
    """Predicts a case's cost from the passed cases of its group, or from its rule's guess scaled by how
    the guesses compared with the costs measured so far (a loaded CPU, a slower GPU: guesses grow)."""

    # Bounds of that scale: guesses only grow (a cheap first case must not shrink the guesses of
    # expensive ones, and overrunning the budget costs more than leaving a case out), and by at most
    # 4x, so that one odd first case cannot make every guess absurd.
    SCALE = (1.0, 4.0)

    def __init__(self, gpu: bool):
        self.gpu = gpu
        self.costs: dict[str, list[Cost]] = {}
        self.guessed_s = 0.0  # sum of the guesses behind the cases that passed on a guess
        self.measured_s = 0.0  # what those cases took

    def guess(self, rule: Rule) -> float:
        return rule.gpu_s if self.gpu else rule.cpu_s

    def scale(self) -> float:
        if not self.guessed_s:
            return 1.0
        return min(max(self.measured_s / self.guessed_s, self.SCALE[0]), self.SCALE[1])

    def learn(self, rule: Rule, cost: Cost) -> None:
        if rule.group not in self.costs:
            self.guessed_s += self.guess(rule)
            self.measured_s += cost.total_s
        self.costs.setdefault(rule.group, []).append(cost)

    def estimate(self, rule: Rule, batch: int) -> tuple[float, str]:
        """(seconds, what the number rests on)."""
        seen = self.costs.get(rule.group)
        if not seen:
            scale = self.scale()
            return self.guess(rule) * scale, f"first guess for {rule.group} x{scale:.1f}"
        seconds = max(c.at(batch) for c in seen)
        return seconds, f"learned from {len(seen)} case{'s' if len(seen) > 1 else ''} of {rule.group}"


def skip_reason(estimate: float, basis: str, left: float) -> str | None:
    """None when a case estimated at `estimate` seconds fits in `left`; else why it is skipped."""
    if estimate <= left:
        return None
    return f"budget: needs ~{estimate:.0f} s ({basis}), {max(left, 0):.0f} s left"


_active: BudgetPlugin | None = None


def compile_mode(preferred: str = "max-autotune") -> str:
    """`preferred`, or "default" in a budgeted run whose current case has no time left for autotuning.

    max-autotune's compile time is unbounded in practice (minutes per shape); "default" is bounded."""
    if _active is None or preferred != "max-autotune":
        return preferred
    return preferred if _active.spare() >= MAX_AUTOTUNE_EXTRA_S[_active.kind] else "default"


def start(config, budget_s: float, gpu: bool, write) -> BudgetPlugin:
    """Register the plugin for this session (benchmarks/conftest.py, when --budget is given)."""
    global _active
    _active = BudgetPlugin(budget_s, gpu, write)
    config.pluginmanager.register(_active, "fastcycle-budget")
    config.add_cleanup(stop)
    return _active


def stop() -> None:
    global _active
    _active = None


def active() -> BudgetPlugin | None:
    return _active


class BudgetPlugin:
    """The hooks of a budgeted run; `write(partial, skipped)` rewrites the results file, returns its path."""

    def __init__(self, budget_s: float, gpu: bool, write, clock=time.monotonic, started: float = STARTED):
        self.budget_s = budget_s
        self.kind = "gpu" if gpu else "cpu"
        self.estimator = Estimator(gpu)
        self.write = write
        self.clock, self.started = clock, started
        self.skipped: list[dict] = []  # {"name", "file", "reason"} in run order
        self.path: Path | None = None
        self._current_estimate = 0.0
        self._timed_s, self._rounds = 0.0, 0
        self._passed = False
        self._bench = None

    def left(self) -> float:
        """Seconds a case may still take."""
        return self.budget_s - FINISH_S[self.kind] - (self.clock() - self.started)

    def spare(self) -> float:
        """Budget left once the current case's estimate is paid."""
        return self.left() - self._current_estimate

    @pytest.hookimpl(trylast=True)
    def pytest_collection_modifyitems(self, session, config, items):
        order = priority_order([case_id(item) for item in items])
        items[:] = [items[i] for i in order]

    def decide(self, case: str, params: dict) -> str | None:
        """Before a case: None if it may start (its estimate is then current), else the skip reason."""
        estimate, basis = self.estimator.estimate(rule_of(case)[1], batch_of(case, params))
        reason = skip_reason(estimate, basis, self.left())
        self._current_estimate = 0.0 if reason else estimate
        return reason

    def finished(self, case: str, params: dict, total_s: float, timed_s: float, rounds: int) -> dict:
        """After a case passed: learn its cost; returns what the record keeps of it."""
        self.estimator.learn(rule_of(case)[1], Cost(total_s, timed_s, batch_of(case, params), rounds))
        estimate, self._current_estimate = self._current_estimate, 0.0
        return {"wall_s": total_s, "estimated_s": estimate}

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtest_setup(self, item):
        reason = self.decide(case_id(item), _params(item))
        if reason:
            pytest.skip(reason)

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_call(self, item):
        yield
        self._bench = item.funcargs.get("benchmark")
        stats = getattr(getattr(self._bench, "stats", None), "stats", None)
        self._timed_s = float(sum(stats.data)) if stats is not None else 0.0
        self._rounds = len(stats.data) if stats is not None else 0

    def pytest_runtest_logreport(self, report):
        if report.when == "call":
            self._passed = report.passed
        if report.skipped:
            path, name = report.nodeid.split("::", 1)
            reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
            reason = reason.removeprefix("Skipped: ")
            self.skipped.append({"name": name, "file": Path(path).name, "reason": reason})

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_protocol(self, item, nextitem):
        self._timed_s, self._rounds, self._passed, self._current_estimate, self._bench = (
            0.0,
            0,
            False,
            0.0,
            None,
        )
        start = self.clock()
        yield
        if self._passed:
            total_s = self.clock() - start
            kept = self.finished(case_id(item), _params(item), total_s, self._timed_s, self._rounds)
            if self._bench is not None:  # the record says what each case cost and how good the guess was
                self._bench.extra_info.update(kept)
        self._current_estimate, self._bench = 0.0, None
        self.path = self.write(True, self.skipped)

    def pytest_sessionfinish(self, session, exitstatus):
        self.path = self.write(exitstatus == pytest.ExitCode.INTERRUPTED, self.skipped)

    @pytest.hookimpl(hookwrapper=True, tryfirst=True)
    def pytest_terminal_summary(self, terminalreporter):
        yield  # after pytest's own summary: the table is the last thing printed
        from benchmarks.report import load, table, throughput

        tr = terminalreporter
        budget_skips = [s for s in self.skipped if s["reason"].startswith("budget:")]
        tr.write_sep("=", f"benchmarks --budget {self.budget_s:g} s")
        if self.path is not None:
            record = load(self.path)
            shown = [c for c in record["cases"] if throughput(c)]
            tr.write_line(table({**record, "cases": shown}))
            tr.write_line(f"results: {self.path} ({len(record['cases'])} cases)")
        tr.write_line(
            f"wall {self.clock() - self.started:.0f} s of {self.budget_s:g} s; "
            f"{len(budget_skips)} cases skipped for the budget, "
            f"{len(self.skipped) - len(budget_skips)} for other reasons (all listed in the results file)"
        )
        for s in budget_skips[:12]:
            tr.write_line(f"  skipped {s['file']}::{s['name']}: {s['reason']}")
        if len(budget_skips) > 12:
            tr.write_line(f"  ... and {len(budget_skips) - 12} more")
