"""The package layout holds: five packages in one order (base -> nn, data -> hardware -> engine ->
search -> interfaces), each importing only those before it; no import cycle; Optuna only at the
search edge, optax only in the engine; no module imports another's private names. Checked by
parsing the imports, not by grep. (These import-graph rules replaced a 520-line cap, which split
modules to fit it rather than along concepts: issue 22.)"""

import ast
import pathlib
import re

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "codesign"
# Each part of codesign and its rank: a module may import a module of its own part or of a part
# of lower rank, never one of the same rank or above.
RANKS = {
    "errors": 0,
    "files": 1,
    "nn": 2, "data": 2,
    "hardware": 3,
    "engine": 4,
    "search": 5,
    "design": 6,
    "cli": 7,
    "__init__": 8,
}  # fmt: skip
OPTUNA_EDGE = {
    "search.study",
    "search.loop",
    "search.pareto",
    "search.journal",
    "search.proposers",
}


def modules() -> dict[str, pathlib.Path]:
    """Every module of the package by dotted name under codesign ("hardware.energy", "cli"),
    package `__init__`s named by their package ("hardware"), the top one "__init__"."""
    out = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE).with_suffix("").parts
        if parts[-1] == "__init__" and len(parts) > 1:
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def part(module: str) -> str:
    return module.split(".")[0]


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
    assert not _imports(imported_modules(probe), "codesign.search.space")


def test_every_module_belongs_to_a_ranked_part():
    assert {part(m) for m in modules()} <= set(RANKS), {part(m) for m in modules()} - set(RANKS)


@pytest.mark.parametrize("module", sorted(m for m in modules() if m not in OPTUNA_EDGE))
def test_only_the_search_edge_imports_optuna(module):
    assert not _imports(imported_modules(modules()[module]), "optuna"), module


@pytest.mark.parametrize("module", sorted(m for m in modules() if part(m) != "engine"))
def test_only_the_engine_imports_optax(module):
    assert not _imports(imported_modules(modules()[module]), "optax"), module


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
    """Pretraining, fine-tunes, rungs and the co-design program are calls of `codesign.engine.core`:
    no other module steps an optimizer or scans over training steps."""
    core = PACKAGE / "engine" / "core.py"
    found = [
        call for path in modules().values() if path != core for call in training_loop_calls(path)
    ]
    assert not found, found
    assert training_loop_calls(core)  # the rule sees the engine's own loop


def test_readme_layout_table_names_every_module_and_no_other():
    """README's Layout table is the map a newcomer reads: every module in it, none that is gone."""
    text = (ROOT / "README.md").read_text()
    table = text.split("## Layout", 1)[1].split("\n## ", 1)[0]
    named = set(re.findall(r"`codesign/([\w/]+)\.py`", table))
    files = {
        str(path.relative_to(PACKAGE).with_suffix(""))
        for path in PACKAGE.rglob("*.py")
        if path.name != "__init__.py"
    }
    assert named == files, {"missing": files - named, "gone": named - files}


def _codesign_imports(path: pathlib.Path) -> set[str]:
    """The codesign modules a file imports (dotted names as `modules()` gives them),
    type-checking-only imports included: `from codesign.nn import networks` names
    `nn.networks`, `from codesign.nn import Model` names `nn`."""
    known = modules()

    def module(dotted: str) -> str | None:  # "codesign.nn.networks" -> "nn.networks"
        name = dotted.removeprefix("codesign.")
        return name if dotted.startswith("codesign.") and name in known else None

    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out.update(filter(None, (module(a.name) for a in node.names)))
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("codesign"):
            for alias in node.names:
                found = module(f"{node.module}.{alias.name}") or module(node.module)
                out.update([found] if found else [])
    return out


def test_the_import_reader_resolves_modules_and_packages(tmp_path):
    probe = tmp_path / "probe.py"
    probe.write_text(
        "from codesign.nn import networks\nfrom codesign.hardware.energy import Design\n"
        "from codesign.search import Result\nimport codesign.files\n"
    )
    assert _codesign_imports(probe) == {"nn.networks", "hardware.energy", "search", "files"}


def import_graph() -> dict[str, set[str]]:
    return {m: _codesign_imports(p) - {m} for m, p in modules().items()}


def test_each_part_imports_only_parts_of_lower_rank():
    """The order hardware, nn, data -> engine -> search -> design, CLI: a module imports its own
    part or parts ranked below it."""
    wrong = [
        f"{m} imports {d}"
        for m, deps in import_graph().items()
        for d in deps
        if part(d) != part(m) and RANKS[part(d)] >= RANKS[part(m)]
    ]
    assert not wrong, wrong


def test_no_import_cycle_in_the_package():
    """Modules import each other one way only (a cycle through a TYPE_CHECKING import counts;
    a package's `__init__` counts as importing its modules)."""
    graph = import_graph()
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
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("codesign"):
                private = [a.name for a in node.names if a.name.startswith("_")]
                assert not private, (path.name, node.module, private)


def _string_constants(path: pathlib.Path) -> set[str]:
    nodes = ast.walk(ast.parse(path.read_text()))
    return {n.value for n in nodes if isinstance(n, ast.Constant) and isinstance(n.value, str)}


def test_the_loop_names_no_sampler_and_every_sampler_has_a_proposer():
    """The search loop asks the space's proposer (`codesign.search.proposers`); a sampler's
    name appears in its registry and the YAML schema, never in the loop."""
    from codesign.search.proposers import PROPOSERS
    from codesign.search.sampler import SAMPLERS

    assert set(PROPOSERS) == set(SAMPLERS)
    assert not _string_constants(PACKAGE / "search" / "loop.py") & set(SAMPLERS)


def family_comparisons(path: pathlib.Path) -> list[str]:
    """Comparisons of a `family` (a name or an attribute) with a string: dispatch by name."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if not isinstance(node, ast.Compare):
            continue
        sides = [node.left, *node.comparators]
        named = any(
            (isinstance(s, ast.Name) and s.id == "family")
            or (isinstance(s, ast.Attribute) and s.attr == "family")
            for s in sides
        )
        strings = any(
            (isinstance(s, ast.Constant) and isinstance(s.value, str))
            or (
                isinstance(s, ast.Tuple | ast.List | ast.Set)
                and any(isinstance(e, ast.Constant) and isinstance(e.value, str) for e in s.elts)
            )
            for s in sides
        )
        if named and strings:
            found.append(f"{path.name}:{node.lineno} {ast.unparse(node)}")
    return found


def test_the_family_reader_sees_dispatch_by_name(tmp_path):
    probe = tmp_path / "probe.py"
    probe.write_text('if spec.family == "mlp": pass\nif family in ("cnn", "resnet"): pass\n')
    assert len(family_comparisons(probe)) == 2
    probe.write_text("if family(spec.family).takes_depth: pass\nx = spec.family\n")
    assert family_comparisons(probe) == []


def test_no_module_dispatches_on_a_family_name():
    """Families are objects (`codesign.nn.families`): code asks a spec's family, it does not
    compare the family's name with strings."""
    found = [c for path in PACKAGE.rglob("*.py") for c in family_comparisons(path)]
    assert not found, found
