"""Every `codesign` command and Python block in README.md and docs/*.md runs as written, or as
its quick version.

Each `codesign` command of a bash block is parsed by the CLI's own parser, so every subcommand
and flag is one the CLI has. The `codesign energy` commands run whole. The README's walk-through
(search, resume, pareto, export, train, then its Python blocks) runs in order in a scratch
folder, on a quick copy of the space it names (`search_spaces/digits_mlp.yaml` with the steps
and trials of QUICK), and with the numbers QUICK_ARGS names made small; everything else as
written. Commands that need a PostgreSQL server or a GPU are parsed only.
"""

import pathlib
import re
import shlex

import pytest
import yaml

from codesign.cli import build_parser, main
from codesign.search import pareto
from codesign.search import study as studies

ROOT = pathlib.Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
SEPARATORS = {"&&", "||", "&", ";", "|", "do", "done"}

# The quick copy of digits_mlp.yaml: every search key as shipped, shorter training, 8 trials.
QUICK = {
    "pretrain": {"steps": 300, "learning_rate": 0.003, "batch_size": 64},
    "finetune": {"steps": 60, "learning_rate": 0.003, "batch_size": 64, "eval_draws": 1},
    "trials": 6,
    "batch": 3,
}
# Numbers of the README's commands that would take minutes: (flag, as written) -> quick value.
# `train --steps 300`: what the Python API's train_design defaults to on the quick space (5 x 60
# steps), so the CLI's train and the API's compile one set of programs (~10 s, not twice).
QUICK_ARGS = {("--trials", "80"): "8", ("--steps", "750"): "300", ("--trial", "17"): None}


def blocks(language: str):
    """(file, text) of every fenced block of `language` in the README and the docs."""
    for path in DOCS:
        pattern = rf"^```{language}\n(.*?)^```"
        for text in re.findall(pattern, path.read_text(), flags=re.M | re.S):
            yield path, text


def commands():
    """(file, argv after `codesign`) of every codesign command in the bash blocks; a line may
    chain several commands (&&, ;, &) or set variables first."""
    for path, text in blocks("bash"):
        for line in text.replace("\\\n", " ").splitlines():
            lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
            lexer.whitespace_split = True
            segment = []
            for token in [*lexer, ";"]:
                if token not in SEPARATORS:
                    segment.append(token)
                    continue
                if "codesign" in segment:
                    yield path, segment[segment.index("codesign") + 1 :]
                segment = []


ALL = list(commands())


def test_the_docs_hold_the_commands_a_newcomer_runs():
    subcommands = {argv[0] for _, argv in ALL}
    assert {"search", "pareto", "export", "train", "energy", "worker"} <= subcommands
    assert any(path.name == "README.md" for path, _ in ALL)


@pytest.mark.parametrize(
    "argv", [argv for _, argv in ALL], ids=[f"{p.name}:{' '.join(a)[:60]}" for p, a in ALL]
)
def test_every_command_parses_as_written(argv):
    build_parser().parse_args(argv)  # an unknown flag or a bad choice exits here


@pytest.mark.parametrize("argv", [argv for _, argv in ALL if argv[0] == "energy"])
def test_every_energy_command_runs_as_written(argv, capsys):
    assert main(argv) == 0, capsys.readouterr().err
    assert capsys.readouterr().out


def _quick(argv: list[str], front_trial: int) -> list[str]:
    out = list(argv)
    for i in range(1, len(out)):
        if (out[i - 1], out[i]) in QUICK_ARGS:
            value = QUICK_ARGS[out[i - 1], out[i]]
            out[i] = str(front_trial) if value is None else value
    return out


@pytest.mark.slow
def test_readme_walkthrough_runs_as_written(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CODESIGN_CACHE", str(tmp_path / "cache"))
    space = yaml.safe_load((ROOT / "search_spaces" / "digits_mlp.yaml").read_text())
    (tmp_path / "search_spaces").mkdir()
    (tmp_path / "search_spaces" / "digits_mlp.yaml").write_text(yaml.safe_dump(space | QUICK))
    walk = [
        argv
        for path, argv in ALL
        if path.name == "README.md"
        and argv[0] in ("search", "pareto", "export", "train")
        and "--storage" not in argv
        and "SPACE.yaml" not in argv
    ]
    assert [a[0] for a in walk] == ["search"] * 3 + ["pareto"] * 3 + ["export"] * 2 + ["train"]
    front_trial = None
    for argv in walk:
        if argv[0] == "export" and front_trial is None:
            study = studies.find_study(studies.storage_for(None, "runs/digits_mlp"), "digits_mlp")
            front_trial = pareto.front(study)[0].number
        rc = main(_quick(argv, front_trial))
        out, err = capsys.readouterr()
        assert rc == 0, (argv, err[-2000:])
    assert pathlib.Path("front.png").stat().st_size > 10_000
    assert pathlib.Path("trained/weights.npz").is_file()

    # The Python blocks, in order, in one namespace (the API's search resumes the same study).
    namespace = {}
    for _, text in blocks("python"):
        if "trained/weights.npz" in text or "codesign.run_search" in text:
            exec(compile(text.replace("trials=40", "trials=8"), "README.md", "exec"), namespace)
    assert len(namespace["results"]) == 4 and all(r.trained for r in namespace["results"])
    assert float(namespace["energy"].energy_j) > 0
