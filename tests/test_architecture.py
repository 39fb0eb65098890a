"""The import graph of fastcycle.* (docs/ARCHITECTURE.md, "Layers"): no circle, and no layer importing one
above it. Read from the source with `ast`, imports inside functions included, so a deferred import
cannot hide a circle."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# The installed package is spread over three folders (setup.py's package_dir).
PACKAGES = {
    "fastcycle": ROOT / "fastcycle",
    "fastcycle.kernels": ROOT / "kernels",
    "fastcycle.export": ROOT / "export",
}


def _modules() -> dict[str, Path]:
    modules = {}
    for package, folder in PACKAGES.items():
        for path in sorted(folder.rglob("*.py")):
            parts = [p for p in path.relative_to(folder).with_suffix("").parts if p != "__init__"]
            modules[".".join([package, *parts])] = path
    return modules


def import_graph() -> dict[str, set[str]]:
    """module -> the fastcycle modules it imports (`from fastcycle.data import demo`: fastcycle.data.demo)."""
    modules = _modules()

    def owner(name: str) -> str | None:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or None

    graph = {}
    for name, path in modules.items():
        targets = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets |= {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                targets |= {f"{node.module}.{a.name}" for a in node.names}
        graph[name] = {m for t in targets if (m := owner(t)) and m != name}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_no_import_circle():
    graph = import_graph()
    assert len(graph) > 50 and "fastcycle.data.contract" in graph["fastcycle.data.loader"]  # it can fail
    assert cycles(graph) == []


# docs/ARCHITECTURE.md's layers, bottom up: a module imports from its own layer or the ones below. In
# "applications" each of the three stands alone: training, translation and sampling share only what
# lies below them.
LAYERS = [
    (
        "foundation",
        [
            "fastcycle.version",
            "fastcycle.errors",
            "fastcycle.atomic",
            "fastcycle.generator_specs",
            "fastcycle.choices",
            "fastcycle.config",
            "fastcycle.presets",
        ],
    ),
    ("kernels", ["fastcycle.kernels"]),
    ("models", ["fastcycle.models", "fastcycle.runtime"]),
    (
        "components",
        [
            "fastcycle.losses",
            "fastcycle.pool",
            "fastcycle.data",
            "fastcycle.checkpoint",
            "fastcycle.trained",
            "fastcycle.runner",
            "fastcycle.gallery",
            "fastcycle.plot",
            "fastcycle.noise",
            "fastcycle.video",
            "fastcycle.tiling",
            "fastcycle.translator",
            "fastcycle.ranks",
            "fastcycle.quality",
        ],
    ),
    ("applications", ["fastcycle.train", "fastcycle.translate", "fastcycle.sample"]),
    ("export", ["fastcycle.export"]),
    # The package itself is the public API: `fastcycle.load_translator` comes from the export layer.
    (
        "command",
        [
            "fastcycle.cli",
            "fastcycle.cli_flags",
            "fastcycle.cli_generators",
            "fastcycle.__main__",
            "fastcycle",
        ],
    ),
]


def place(module: str) -> tuple[int, str]:
    """(layer index, group) of a module: the longest group name it is or lies under."""
    hits = [
        (len(group), i, group)
        for i, (_, groups) in enumerate(LAYERS)
        for group in groups
        if module == group or module.startswith(group + ".")
    ]
    assert hits, f"{module} is in no layer of docs/ARCHITECTURE.md; add it to LAYERS and to the document"
    _, layer, group = max(hits)
    return layer, group


def test_each_layer_imports_only_its_own_and_the_ones_below():
    wrong = []
    for module, targets in import_graph().items():
        layer, group = place(module)
        for target in targets:
            t_layer, t_group = place(target)
            sibling = LAYERS[layer][0] == "applications" and t_layer == layer and t_group != group
            if t_layer > layer or sibling:
                wrong.append(f"{module} -> {target}")
    assert wrong == []


def test_the_layer_check_can_fail():
    assert place("fastcycle.export.command") > place("fastcycle.translate") > place("fastcycle.trained")
    assert place("fastcycle.train.loop")[1] != place("fastcycle.translate")[1]


def test_the_cycle_finder_finds_a_circle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
