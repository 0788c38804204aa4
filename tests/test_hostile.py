"""A growing suite of hostile inputs: every one ends in exit code 2 and one line naming the file,
key or flag, with no traceback, nothing written and an existing study byte-for-byte unchanged.

Explicit cases cover flags, data files, design files, journals and storage URLs; generated cases
(hypothesis) fuzz search-space YAML and design.json. `CASE_COUNT` is what docs/storage.md's
reliability section quotes.
"""

import copy
import hashlib
import json
import pathlib

import numpy as np
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from codesign.cli import main
from codesign.design import FORMAT, FORMAT_VERSION, FoundDesign
from codesign.errors import CodesignError
from codesign.search.problem import Candidate
from codesign.search.space import parse_space
from tests.test_failures import existing  # noqa: F401  (a fixture: a run with a finished study)
from tests.test_search import TINY

YAML_EXAMPLES = 120
DESIGN_EXAMPLES = 60


def _snapshot(root: pathlib.Path) -> dict:
    """Every file under root and a hash of its bytes."""
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def _write(path: pathlib.Path, content) -> pathlib.Path:
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content if isinstance(content, str) else yaml.safe_dump(content))
    return path


def _npz(t: pathlib.Path, name: str, **arrays) -> str:
    np.savez(t / name, **arrays)
    return str(t / name)


def _space_with(t: pathlib.Path, **changes) -> str:
    return str(_write(t / "hostile.yaml", {**TINY, **changes}))


def _design_file(t: pathlib.Path, **changes) -> str:
    data = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "space": TINY,
        "space_path": "tiny.yaml",
        "candidate": {
            "widths": [8, 8],
            "sparsity": [0.0, 0.0, 0.0],
            "granularity": ["unstructured"] * 3,
            "analog_fraction": [0.5, 0.5, 0.5],
            "tile": [16, 16],
            "adc_bits": 6,
        },
        "seeds": {"finetune": 0, "data": 0},
    }
    for key, value in changes.items():
        target = data
        *parents, leaf = key.split(".")
        for parent in parents:
            target = target[parent]
        target[leaf] = value
    return str(_write(t / "hostile-design.json", json.dumps(data)))


RNG = np.random.default_rng(0)
X, Y = RNG.normal(size=(60, 4)).astype(np.float32), np.arange(60) % 6

# name -> (argv builder (existing run, tmp dir), text the one line must contain)
CASES = {
    # --- search flags ---
    "trials zero is fine but huge batch is not": (
        lambda e, t: ["search", str(e["space"]), "--out", str(e["run"]), "--batch", "100000000"],
        "--batch must be in [1, 1024]",
    ),
    "trials above the cap": (
        lambda e, t: ["search", str(e["space"]), "--out", str(e["run"]), "--trials", "10000000"],
        "--trials must be in [0, ",
    ),
    "trials not a number": (
        lambda e, t: ["search", str(e["space"]), "--trials", "ten"],
        "invalid int value",
    ),
    "seed not a number": (lambda e, t: ["search", str(e["space"]), "--seed", "x"], "--seed"),
    "unknown flag": (lambda e, t: ["search", str(e["space"]), "--trails", "3"], "--trails"),
    "no space file": (lambda e, t: ["search", str(t / "missing.yaml")], "no such search space"),
    "space is a directory": (lambda e, t: ["search", str(t)], "no such search space"),
    "space is binary": (
        lambda e, t: ["search", str(_write(t / "b.yaml", bytes(range(256))))],
        "b.yaml",
    ),
    "out under /proc": (
        lambda e, t: ["search", str(e["space"]), "--out", "/proc/nope/run"],
        "--out '/proc/nope/run'",
    ),
    "storage sqlite in a missing directory": (
        lambda e, t: ["search", str(e["space"]), "--storage", f"sqlite:///{t}/no/such/dir/s.db"],
        "--storage",
    ),
    "storage unknown scheme": (
        lambda e, t: ["search", str(e["space"]), "--storage", "mongodb://x/y"],
        "--storage",
    ),
    "storage refused": (
        lambda e, t: ["search", str(e["space"]), "--storage", "postgresql://u@127.0.0.1:1/db"],
        "--storage",
    ),
    "storage garbage": (lambda e, t: ["search", str(e["space"]), "--storage", "::"], "--storage"),
    "journal storage in a missing directory": (
        lambda e, t: ["pareto", "--storage", str(t / "no" / "x.journal")],
        "no such journal file",
    ),
    # --- changed space on resume ---
    "resume with narrower widths": (
        lambda e, t: [
            "search",
            _space_with(
                t, model={"family": "mlp", "widths": [8, 8]}, search={**TINY["search"], "widths": 8}
            ),
            "--out",
            str(e["run"]),
            "--study",
            "tiny",
        ],
        "was made with another search space (model.widths: [16, 16] -> [8, 8]",
    ),  # fmt: skip
    "resume with another dataset": (
        lambda e, t: [
            "search",
            _space_with(t, task={"dataset": "mnist1d", "seed": 0}),
            "--out",
            str(e["run"]),
            "--study",
            "tiny",
        ],
        "task.dataset",
    ),  # fmt: skip
    "resume with another preset": (
        lambda e, t: [
            "search",
            _space_with(t, hardware={"preset": "ania-22nm"}),
            "--out",
            str(e["run"]),
            "--study",
            "tiny",
        ],
        "preset: 'hybrid-22nm' -> 'ania-22nm'",
    ),  # fmt: skip
    # --- pareto / export / worker ---
    "pareto format": (lambda e, t: ["pareto", "--out", str(e["run"]), "--format", "xml"], "xml"),
    "plot without suffix": (
        lambda e, t: ["pareto", "--out", str(e["run"]), "--plot", str(t / "front")],
        "give a file ending in .png or .html",
    ),
    "plot as text": (
        lambda e, t: ["pareto", "--out", str(e["run"]), "--plot", str(t / "front.txt")],
        "give a file ending in .png or .html",
    ),
    "plot into a missing directory": (
        lambda e, t: ["pareto", "--out", str(e["run"]), "--plot", str(t / "no" / "f.png")],
        "does not exist",
    ),
    "pareto of a missing run": (lambda e, t: ["pareto", "--out", str(t / "none")], "no study"),
    "pick empty": (lambda e, t: ["export", "--out", str(e["run"]), "--pick", ""], "empty"),
    "pick blank": (lambda e, t: ["export", "--out", str(e["run"]), "--pick", "  "], "empty"),
    "pick unknown metric": (
        lambda e, t: ["export", "--out", str(e["run"]), "--pick", "foo>=1"],
        "unknown metric 'foo'",
    ),
    "pick unknown goal metric": (
        lambda e, t: ["export", "--out", str(e["run"]), "--pick", "accuracy>=0:min-speed"],
        "unknown metric 'speed'",
    ),
    "pick not a number": (
        lambda e, t: ["export", "--out", str(e["run"]), "--pick", "accuracy>=high"],
        "is not a number",
    ),
    "pick bad goal": (
        lambda e, t: ["export", "--out", str(e["run"]), "--pick", "accuracy>=0:best-energy"],
        "min-METRIC or max-METRIC",
    ),
    "negative trial": (
        lambda e, t: ["export", "--out", str(e["run"]), "--trial", "-1"],
        "no such trial",
    ),
    "export needs trial or pick": (lambda e, t: ["export", "--out", str(e["run"])], "--trial"),
    "worker negative trials": (
        lambda e, t: ["worker", "--out", str(e["run"]), "--trials", "-2"],
        "--trials must be in [0, ",
    ),
    "worker huge batch": (
        lambda e, t: ["worker", "--out", str(e["run"]), "--batch", "5000"],
        "--batch must be in [1, 1024]",
    ),
    # --- journals that are not journals ---
    "journal of random bytes": (
        lambda e, t: ["pareto", "--out", str(_journal_dir(t, bytes(RNG.integers(0, 256, 500))))],
        "not an Optuna journal",
    ),
    "journal of text": (
        lambda e, t: ["pareto", "--out", str(_journal_dir(t, "hello\nworld\n"))],
        "not an Optuna journal",
    ),
    "journal of json without ops": (
        lambda e, t: ["pareto", "--out", str(_journal_dir(t, '{"a": 1}\n{"b": 2}\n'))],
        "not an Optuna journal",
    ),
    "journal of an unrelated study": (
        lambda e, t: ["pareto", "--out", str(_foreign_study(t))],
        "not a codesign study",
    ),
    "worker on an unrelated study": (
        lambda e, t: ["worker", "--out", str(_foreign_study(t))],
        "not a codesign study",
    ),
    # --- train ---
    "train zero steps": (lambda e, t: ["train", _design_file(t), "--steps", "0"], "--steps"),
    "train negative inferences": (
        lambda e, t: ["train", _design_file(t), "--inferences", "-1"],
        "--inferences must be >= 0",
    ),
    "train nan inferences": (
        lambda e, t: ["train", _design_file(t), "--inferences", "nan"],
        "--inferences must be >= 0",
    ),
    "design version as text": (
        lambda e, t: ["train", _design_file(t, format_version="1")],
        "format_version must be a whole number",
    ),
    "design version zero": (
        lambda e, t: ["train", _design_file(t, format_version=0)],
        "format_version must be a whole number",
    ),
    "design tile zero": (
        lambda e, t: ["train", _design_file(t, **{"candidate.tile": 0})],
        "candidate.tile",
    ),
    "design tile off the space": (
        lambda e, t: ["train", _design_file(t, **{"candidate.tile": [64, 64]})],
        "candidate.tile",
    ),
    "design widths above the maximum": (
        lambda e, t: ["train", _design_file(t, **{"candidate.widths": [64, 64]})],
        "candidate.widths",
    ),
    "design of another model": (
        lambda e, t: ["train", _design_file(t, **{"candidate.widths": [8, 8, 8]})],
        "candidate.widths has 3 values",
    ),
    "design with unknown granularity": (
        lambda e, t: ["train", _design_file(t, **{"candidate.granularity": ["x"] * 3})],
        "candidate.granularity",
    ),
    "design with nan sparsity": (
        lambda e, t: ["train", _design_file(t, **{"candidate.sparsity": [float("nan")] * 3})],
        "candidate.sparsity",
    ),
    "design with extra candidate key": (
        lambda e, t: ["train", _design_file(t, **{"candidate.colour": "red"})],
        "malformed design file",
    ),
    "design seed not a number": (
        lambda e, t: ["train", _design_file(t, **{"seeds.finetune": "x"})],
        "malformed design file",
    ),
    "design space broken": (
        lambda e, t: ["train", _design_file(t, space={"model": {"family": "rnn"}})],
        "model.family",
    ),
    "design space not a mapping": (
        lambda e, t: ["train", _design_file(t, space=[1, 2])],
        "must be a mapping",
    ),
    "design is a directory": (lambda e, t: ["train", str(t)], "no such design file"),
    "design binary": (
        lambda e, t: ["train", str(_write(t / "d.json", bytes(range(200, 256))))],
        "not valid JSON",
    ),
    "train out is a file": (
        lambda e, t: ["train", _design_file(t), "--out", str(_write(t / "o", "x"))],
        "is not a directory",
    ),
}


def _data_case(name, arrays, message):
    """A search on an .npz the test writes: it must fail before anything is written."""

    def argv(e, t):
        path = _npz(t, f"{name.replace(' ', '_')}.npz", **arrays)
        space = _write(t / "data.yaml", {**TINY, "task": {"dataset": path, "seed": 0,
                       "source_classes": [0, 1, 2], "target_classes": [3, 4, 5]}})  # fmt: skip
        return ["search", str(space), "--out", str(t / "data-run")]

    CASES[f"data: {name}"] = (argv, message)


_data_case("no arrays", {"a": np.zeros(3)}, "missing array(s) x, y")
_data_case("labels only", {"y": Y}, "missing array(s) x")
_data_case("lengths differ", {"x": X, "y": Y[:-5]}, "x has 60 examples but y has 55")
_data_case("float labels", {"x": X, "y": Y + 0.5}, "y must be integer labels")
_data_case("nan inputs", {"x": np.full_like(X, np.nan), "y": Y}, "x holds NaN")
_data_case("one class", {"x": X, "y": np.zeros(60, int)}, "needs at least 2 classes")
_data_case("classes missing", {"x": X, "y": Y % 3}, "[3, 4, 5] not in the data")
_data_case("string labels", {"x": X, "y": np.array(["a"] * 60)}, "y must be integer")
_data_case("scalar inputs", {"x": np.float32(1.0), "y": Y}, "x must be numeric")
_data_case("empty", {"x": np.zeros((0, 4)), "y": np.zeros(0, int)}, "needs at least 2")
CASES["data: not a zip"] = (
    lambda e, t: ["search", _space_with(t, task={"dataset": str(_write(t / "z.npz", "text"))}),
                  "--out", str(t / "data-run")],
    "not a valid .npz file",
)  # fmt: skip
CASES["data: relative path that is not beside the space"] = (
    lambda e, t: ["search", _space_with(t, task={"dataset": "nowhere/x.npz"}),
                  "--out", str(t / "data-run")],
    "no such file or folder 'nowhere/x.npz'",
)  # fmt: skip


def _design_copy(t: pathlib.Path, key: str, value) -> str:
    """A design file with its readable copies (`network`, `pruning`, `accelerator`), one field
    of them edited (or removed, for value `...`) and the candidate left as it was."""
    data = FoundDesign.from_json(json.loads(pathlib.Path(_design_file(t)).read_text())).to_json()
    *parents, leaf = key.split(".")
    target = data
    for parent in parents:
        target = target[parent]
    if value is ...:
        del target[leaf]
    else:
        target[leaf] = value
    return str(_write(t / "hostile-design.json", json.dumps(data)))


_EDITED_COPIES = {
    "network.widths": ([4096, 4096], "network.widths is [4096, 4096] but the design's candidate"),
    "network.family": ("resnet", "network.family is 'resnet'"),
    "network.max_widths": ([8, 8], "network.max_widths is [8, 8]"),
    "pruning.sparsity": ([-0.5] * 3, "pruning.sparsity is [-0.5, -0.5, -0.5]"),
    "pruning.granularity": (["row"] * 3, "pruning.granularity is ['row', 'row', 'row']"),
    "accelerator.adc_bits": (99, "accelerator.adc_bits is 99"),
    "accelerator.tile_rows": (float("nan"), "accelerator.tile_rows is nan"),
    "accelerator.tile_cols": (1e9, "accelerator.tile_cols is 1000000000.0"),
    "accelerator.dac_bits": ("8", "accelerator.dac_bits is '8'"),
    "accelerator.vdd": (..., "accelerator.vdd is '<missing>'"),
}
for _key, (_value, _says) in _EDITED_COPIES.items():
    CASES[f"design copy edited: {_key}"] = (
        lambda e, t, k=_key, v=_value: ["train", _design_copy(t, k, v)],
        _says,
    )
CASES["yaml key given twice"] = (
    lambda e, t: ["search", str(_write(t / "dup.yaml", "name: a\ntrials: 2\nname: b\n"))],
    "key 'name' appears twice (lines 1 and 3)",
)
CASES["yaml key given twice in a flow mapping"] = (
    lambda e, t: ["search", str(_write(t / "dup.yaml", "search: {tile: 1, tile: 2}\n"))],
    "key 'tile' appears twice (lines 1 and 1)",
)
CASES["yaml nested key given twice"] = (
    lambda e, t: [
        "search",
        str(_write(t / "dup.yaml", "finetune:\n  steps: 5\n  batch_size: 8\n  steps: 50\n")),
    ],
    "key 'steps' appears twice (lines 2 and 4)",
)
CASES["search out under /proc"] = (
    lambda e, t: ["search", str(e["space"]), "--out", "/proc/codesign-run"],
    "--out '/proc/codesign-run': not a writable folder",
)
CASES["train out under /proc"] = (
    lambda e, t: ["train", _design_file(t), "--out", "/proc/codesign-trained"],
    "--out '/proc/codesign-trained': not a writable folder",
)
CASES["pareto plot into /proc"] = (
    lambda e, t: ["pareto", "--out", str(e["run"]), "--plot", "/proc/codesign-front.png"],
    "/proc/codesign-front.png: could not write it",
)


def _journal_dir(t: pathlib.Path, content) -> pathlib.Path:
    run = t / "garbage-run"
    run.mkdir(exist_ok=True)
    _write(run / "study.journal", content)
    return run


def _foreign_study(t: pathlib.Path) -> pathlib.Path:
    import optuna

    from codesign.search import study as studies

    run = t / "foreign"
    storage = studies.storage_for(None, run)
    study = optuna.create_study(study_name="foreign", storage=storage)
    study.optimize(lambda trial: trial.suggest_float("x", 0, 1), n_trials=2)
    return run


@pytest.mark.parametrize("name", sorted(CASES))
def test_hostile_input_is_one_clean_line(name, existing, tmp_path, capsys):  # noqa: F811
    argv = CASES[name][0](existing, tmp_path)
    message = CASES[name][1]
    before = _snapshot(tmp_path)
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("codesign: error:"), err
    assert message in err[0], err[0]
    assert "Traceback" not in err[0]
    assert _snapshot(tmp_path) == before, "a file was written or changed"


# --- generated: search-space YAML ---

VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(10**12), 10**12),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=8),
    st.lists(st.integers(-3, 300), max_size=4),
    st.dictionaries(st.text(max_size=5), st.integers(-2, 2), max_size=2),
)
PATHS = [
    ("name",), ("task",), ("task", "dataset"), ("task", "seed"), ("task", "source_classes"),
    ("task", "target_classes"), ("model",), ("model", "family"), ("model", "widths"),
    ("pretrain", "steps"), ("pretrain", "learning_rate"), ("finetune", "batch_size"),
    ("finetune", "eval_draws"), ("hardware",), ("hardware", "preset"),
    ("hardware", "overrides"), ("hardware", "overrides", "adc_bits"),
    ("hardware", "overrides", "cell_bits"), ("hardware", "overrides", "weight_bits"),
    ("hardware", "overrides", "tiles"), ("hardware", "overrides", "vdd"),
    ("search",), ("search", "widths"), ("search", "sparsity"), ("search", "sparsity", "high"),
    ("search", "tile"), ("search", "tile", "choices"), ("search", "adc_bits", "low"),
    ("search", "analog_fraction"), ("objectives",), ("budgets",), ("budgets", "max_tiles"),
    ("budgets", "min_accuracy"), ("sampler",), ("sampler", "name"), ("sampler", "seed"),
    ("trials",), ("batch",), ("lifecycle_inferences",), ("unknown_key",),
]  # fmt: skip


def _mutated(path, value) -> dict:
    data = copy.deepcopy(TINY)
    target = data
    for key in path[:-1]:
        if not isinstance(target.get(key), dict):
            target[key] = {}
        target = target[key]
    target[path[-1]] = value
    return data


@settings(max_examples=YAML_EXAMPLES, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow])  # fmt: skip
@given(path=st.sampled_from(PATHS), value=VALUES)
def test_any_space_yaml_is_accepted_and_priced_or_refused_in_one_line(path, value):
    """A YAML edit either parses into a space whose designs price to finite energies, or is
    refused with one CodesignError line naming the key."""
    try:
        text = yaml.safe_dump(_mutated(path, value))
        data = yaml.safe_load(text)
    except (yaml.YAMLError, ValueError):
        return  # not expressible as YAML: nothing to feed the parser
    try:
        space = parse_space(data, "fuzz.yaml")
    except CodesignError as err:
        message = str(err)
        assert "\n" not in message and message.startswith("fuzz.yaml:"), message
        return
    if path[0] == "hardware":
        # A chip the file can describe prices designs of the space to finite energies.
        cands = [space.candidate(p) for p in space.sample_params(np.random.default_rng(0), 4)]
        energies = [r.energy_j for r in space.evaluator().estimate(cands)]
        assert np.all(np.isfinite(energies)) and min(energies) >= 0, energies


# --- generated: design.json ---

DESIGN_KEYS = [
    "candidate.widths", "candidate.sparsity", "candidate.granularity",
    "candidate.analog_fraction", "candidate.tile", "candidate.adc_bits", "seeds.finetune",
    "format_version", "space", "candidate", "seeds",
]  # fmt: skip


@settings(
    max_examples=DESIGN_EXAMPLES,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(key=st.sampled_from(DESIGN_KEYS), value=VALUES)  # fmt: skip
def test_any_design_json_loads_as_a_point_of_its_space_or_is_refused(key, value, tmp_path):
    path = pathlib.Path(_design_file(tmp_path, **{key: value}))
    try:
        design = FoundDesign.from_json(json.loads(path.read_text()), str(path))
    except CodesignError as err:
        assert "\n" not in str(err)
        return
    except ValueError:  # NaN/inf are not JSON: the file itself cannot hold them
        return
    design.search_space().check(design.candidate, "ok")  # loaded: then it is a valid point
    assert isinstance(design.candidate, Candidate)


CASE_COUNT = len(CASES) + YAML_EXAMPLES + DESIGN_EXAMPLES


def test_the_suite_has_at_least_150_cases():
    assert CASE_COUNT >= 150, CASE_COUNT


def test_readme_quotes_the_suite_size():
    readme = (pathlib.Path(__file__).resolve().parents[1] / "docs" / "storage.md").read_text()
    generated = f"{YAML_EXAMPLES} generated search-space edits and\n  {DESIGN_EXAMPLES} generated"
    assert f"holds {CASE_COUNT} cases ({len(CASES)} written by hand, {generated}" in readme


def test_zero_trials_is_a_valid_empty_search(tmp_path, capsys):
    space = _write(tmp_path / "s.yaml", TINY)
    assert main(["search", str(space), "--out", str(tmp_path / "run"), "--trials", "0"]) == 0
    assert "the front is empty" in capsys.readouterr().out
    assert (tmp_path / "run" / "pareto.png").stat().st_size > 1000  # a plot saying so, no crash


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("adc_bits", float("nan"), "must be a finite number"),
        ("cell_bits", 0, "hardware.overrides.cell_bits: must be a finite number in [1, 16]"),
        ("weight_bits", 0, "hardware.overrides.weight_bits: must be a finite number in [1, 32]"),
        ("tiles", 2.5, "must be a whole number"),
        ("vdd", -1, "hardware.overrides.vdd"),
    ],
)
def test_hardware_overrides_out_of_range_are_refused(key, value, message, tmp_path, capsys):
    space = _write(tmp_path / "s.yaml", {**TINY, "hardware": {"overrides": {key: value}}})
    assert main(["search", str(space), "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("cache", ["a-file", "/proc/codesign-cache"])
def test_an_unusable_cache_fails_before_the_study_is_touched(cache, existing, tmp_path, capsys):  # noqa: F811
    """CODESIGN_CACHE a regular file, or somewhere nothing can be written: one line naming it,
    before the study is created or changed (no trial claimed and left RUNNING)."""
    if cache == "a-file":
        cache = str(_write(tmp_path / "a-file", "not a folder"))
    run = tmp_path / "fresh-run"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("CODESIGN_CACHE", cache)
        assert main(["search", str(existing["space"]), "--out", str(run)]) == 2
        assert main(["search", str(existing["space"]), "--out", str(existing["run"])]) == 2
    assert existing["journal"].read_bytes() == existing["bytes"]  # a resume changes nothing
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2, err
    said = "exists and is not a directory" if cache.endswith("a-file") else "not a writable folder"
    assert all(f"CODESIGN_CACHE {cache!r}" in line and said in line for line in err), err
    assert not run.exists()
