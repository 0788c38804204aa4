"""The module layout holds: the core imports neither Optuna nor the YAML layer, Optuna stays at
the edge, modules import each other one way (no cycle) and never another module's private
names. Checked by parsing the imports, not by grep. (These import-graph rules replaced a
520-line cap, which split modules to fit it rather than along concepts: issue 22.)"""

import ast
import pathlib
import re

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "codesign"
CORE = (
    "hardware",
    "presets",
    "energy",
    "networks",
    "pruning",
    "checks",
    "dimensions",
    "resnet",
    "conv",
    "nnx_model",
    "analog",
    "data",
    "formats",
    "files",
    "engine",
    "pretrain",
    "transfer",
    "checkpoint",
    "early_stop",
    "gradient",
    "sampler",
    "problem",
    "evaluate",
    "screening",
)
OPTUNA_EDGE = {"study", "search", "pareto", "journal"}  # journal: the study's storage backend


def imported_modules(path: pathlib.Path) -> set[str]:
    """Every module an `import` or `from ... import` statement in the file names."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def _imports(names: set[str], module: str) -> bool:
    return any(n == module or n.startswith(module + ".") for n in names)


def test_the_parser_sees_imports_inside_functions_but_not_comments(tmp_path):
    probe = tmp_path / "probe.py"
    probe.write_text("# import optuna\n'''import optuna'''\ndef f():\n    from optuna import x\n")
    assert _imports(imported_modules(probe), "optuna")
    probe.write_text("# import optuna\n'''from codesign import space'''\n")
    assert not _imports(imported_modules(probe), "optuna")
    assert not _imports(imported_modules(probe), "codesign.space")


@pytest.mark.parametrize("module", CORE)
def test_core_modules_import_neither_optuna_nor_the_space(module):
    names = imported_modules(PACKAGE / f"{module}.py")
    assert not _imports(names, "optuna"), f"codesign/{module}.py imports optuna"
    assert not _imports(names, "codesign.space"), f"codesign/{module}.py imports codesign.space"


def test_only_the_study_edge_imports_optuna():
    importers = {
        path.stem for path in PACKAGE.glob("*.py") if _imports(imported_modules(path), "optuna")
    }
    assert importers <= OPTUNA_EDGE, importers - OPTUNA_EDGE


def training_loop_calls(path: pathlib.Path) -> list[str]:
    """Calls in a file that only a training loop makes: an optimizer's update (three arguments:
    grads, state, params), `apply_updates`, `value_and_grad`, and `lax.scan`."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Attribute):
            continue
        name = node.func.attr
        if (name == "update" and len(node.args) == 3) or name in (
            "apply_updates",
            "value_and_grad",
            "scan",
        ):
            found.append(f"{path.name}:{node.lineno} {name}")
    return found


def test_the_parser_sees_training_loop_calls(tmp_path):
    probe = tmp_path / "probe.py"
    probe.write_text(
        "u, s = opt.update(g, s, p)\np = optax.apply_updates(p, u)\n"
        "jax.lax.scan(f, c, xs)\njax.value_and_grad(f)\nd.update(x)\n# lax.scan(f)\n"
    )
    assert [c.split()[1] for c in training_loop_calls(probe)] == [
        "update", "apply_updates", "scan", "value_and_grad"
    ]  # fmt: skip


def test_only_the_engine_runs_training_loops():
    """Pretraining, fine-tunes, rungs and the co-design program are calls of `codesign.engine`:
    no other module steps an optimizer or scans over training steps."""
    found = [
        call
        for path in PACKAGE.glob("*.py")
        if path.name != "engine.py"
        for call in training_loop_calls(path)
    ]
    assert not found, found
    assert training_loop_calls(PACKAGE / "engine.py")  # the rule sees the engine's own loop


def test_readme_layout_table_names_every_module_and_no_other():
    """README's Layout table is the map a newcomer reads: every module in it, none that is gone."""
    text = (ROOT / "README.md").read_text()
    table = text.split("## Layout", 1)[1].split("\n## ", 1)[0]
    named = set(re.findall(r"`codesign/(\w+)\.py`", table))
    modules = {path.stem for path in PACKAGE.glob("*.py")} - {"__init__"}
    assert named == modules, {"missing": modules - named, "gone": named - modules}


def _codesign_imports(path: pathlib.Path) -> set[str]:
    """The codesign modules a file imports, type-checking-only imports included."""
    out = set()
    for name in imported_modules(path):
        parts = name.split(".")
        if parts[0] == "codesign" and len(parts) > 1 and (PACKAGE / f"{parts[1]}.py").exists():
            out.add(parts[1])
    return out - {path.stem}


def test_no_import_cycle_in_the_package():
    """Modules import each other one way only (a cycle through a TYPE_CHECKING import counts)."""
    graph = {p.stem: _codesign_imports(p) for p in PACKAGE.glob("*.py") if p.stem != "__init__"}
    done, path = set(), []

    def visit(module):
        assert module not in path, " -> ".join([*path[path.index(module) :], module])
        if module in done:
            return
        path.append(module)
        for dep in sorted(graph.get(module, ())):
            visit(dep)
        path.pop()
        done.add(module)

    for module in sorted(graph):
        visit(module)


def test_no_private_name_is_imported_from_another_module():
    """`from codesign.x import _name` couples a module to another's internals."""
    for path in PACKAGE.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("codesign"):
                private = [a.name for a in node.names if a.name.startswith("_")]
                assert not private, (path.name, node.module, private)
