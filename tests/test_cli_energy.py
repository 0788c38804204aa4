"""`codesign energy`: the table, the JSON, the presets list, and one-line errors for bad input."""

import json

import pytest

from codesign.cli import main
from tests.cli_run import as_process, in_process


def test_table_shows_layers_components_total_and_gradients(capsys):
    assert (
        main(
            [
                "energy",
                "--layers",
                "64x256,256x256,256x10",
                "--tile",
                "16x16",
                "--analog",
                "0.5",
                "--adc-bits",
                "6",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    for text in (
        "layer1",
        "layer3",
        "adc",
        "digital_mac",
        "dram",
        "TOPS/W",
        "dE/d(width)",
        "dE/d(analog fraction)",
        "shrink first",
        "tile 16x16",
        "22 nm, 0.8 V, idle converters gated",
    ):
        assert text in out


def test_json_matches_the_table_and_adds_up(capsys):
    assert main(["energy", "--layers", "64x256,256x256,256x10", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert len(data["layers"]) == 3
    assert sum(layer["total_j"] for layer in data["layers"]) == pytest.approx(data["total_j"])
    assert sum(data["components_j"].values()) == pytest.approx(data["total_j"])
    assert all(layer["d_energy_d_width_j_per_unit"] > 0 for layer in data["layers"])


def test_width_gradient_at_full_width_matches_one_unit_narrower_layer(capsys):
    # The CLI evaluates at full width, where jnp.clip's tie rule used to halve the gradient
    # (issue 10). One unit narrower is the same network with N - 1 outputs. At the default 50/50
    # split, removing a unit of layers 1 and 2 (256 -> 255 outputs) removes a digital column
    # (round(127.5) = round(128) = 128 analog columns); the last layer's unit (10 -> 9) would go
    # analog instead, which test_energy checks as a two-unit difference.
    def run(layers):
        main(["energy", "--layers", layers, "--json"])
        return json.loads(capsys.readouterr().out)

    full = run("64x256,256x256,256x10")
    for layer, narrower in ((0, "64x255,255x256,256x10"), (1, "64x256,256x255,255x10")):
        diff = full["total_j"] - run(narrower)["total_j"]
        grad = full["layers"][layer]["d_energy_d_width_j_per_unit"]
        assert diff > 0 and grad > 0
        assert 0.5 <= grad / diff <= 2.0, (layer, grad, diff)


def test_the_report_says_where_the_width_gradient_is_not_a_guide(capsys):
    """Beside each gradient, the saving of one unit fewer, computed as a narrower network would
    be; where the two differ by more than 2x (a step: tiles, bands, re-programming) the table
    says so. Issue 23's cases: zigzag-aimc-28nm as shipped (one tile, re-programmed every
    inference) and ania-22nm (one unit saves nothing) are flagged; a hybrid chip's wide layers
    are not."""

    def run(*argv):
        main(["energy", *argv, "--json"])
        return json.loads(capsys.readouterr().out)

    full = run("--preset", "hybrid-22nm", "--layers", "64x256,256x256,256x10")
    narrower = run("--preset", "hybrid-22nm", "--layers", "64x255,255x256,256x10")
    first = full["layers"][0]
    assert first["one_unit_fewer_saves_j"] == pytest.approx(
        full["total_j"] - narrower["total_j"], rel=1e-4
    )
    assert first["width_gradient_is_a_guide"] and full["layers"][1]["width_gradient_is_a_guide"]
    for preset in ("zigzag-aimc-28nm", "ania-22nm"):
        data = run("--preset", preset, "--layers", "64x256,256x10")
        assert data["layers"][0]["width_gradient_is_a_guide"] is False, preset
        main(["energy", "--preset", preset, "--layers", "64x256,256x10"])
        assert "not a guide here: one unit fewer saves" in capsys.readouterr().out
    for layer in full["layers"]:  # the flag is the 2x rule on the reported numbers
        ratio = layer["one_unit_fewer_saves_j"] / layer["d_energy_d_width_j_per_unit"]
        assert layer["width_gradient_is_a_guide"] == (0.5 <= ratio <= 2.0)


def test_every_preset_flags_exactly_the_layers_where_a_unit_saves_other_than_the_gradient(capsys):
    """Every preset, at a tile edge (129 outputs) or on a conv-sized layer (presets take turns):
    the saving of one unit fewer, computed here as a narrower network given by its shapes,
    against the gradient; the report flags a layer as not a guide exactly where the two differ
    by more than 2x, and says so."""
    from codesign.hardware.presets import PRESETS

    cases = (
        ("256x129,129x10", "256x128,128x10"),
        ("576x64@64,64x10", "576x63@64,63x10"),  # a 3x3 conv's rows at 8x8 positions
    )
    for i, (preset, acc) in enumerate(PRESETS.items()):
        analog = "1" if float(acc.tiles) > 0 else "0"
        for layers, narrower in (cases[i % 2],):
            args = ["energy", "--preset", preset, "--analog", analog, "--json", "--layers"]
            main([*args, layers])
            full = json.loads(capsys.readouterr().out)
            main([*args, narrower])
            saving = full["total_j"] - json.loads(capsys.readouterr().out)["total_j"]
            first = full["layers"][0]
            ulps = 4 * 2**-24 * full["total_j"]  # float32 totals, subtracted
            assert first["one_unit_fewer_saves_j"] == pytest.approx(saving, rel=1e-3, abs=ulps)
            gradient, saving = first["d_energy_d_width_j_per_unit"], first["one_unit_fewer_saves_j"]
            guide = gradient == saving if 0 in (gradient, saving) else 0.5 <= saving / gradient <= 2
            assert first["width_gradient_is_a_guide"] == guide, (preset, layers)
            main(["energy", "--preset", preset, "--analog", analog, "--layers", layers])
            said = capsys.readouterr().out.split("\n")
            assert any("not a guide here" in line for line in said) == (
                not all(layer["width_gradient_is_a_guide"] is not False for layer in full["layers"])
            ), (preset, layers)


def test_smaller_tiles_keep_the_chip_area(capsys):
    main(["energy", "--layers", "64x256", "--tile", "16x16", "--json"])
    data = json.loads(capsys.readouterr().out)
    assert data["chip_tiles"] == 64 * 256 * 256 // (16 * 16)


def test_list_presets(capsys):
    assert main(["energy", "--list-presets"]) == 0
    out = capsys.readouterr().out
    assert "ania-22nm" in out and "Horowitz" in out and "TOPS/W" in out
    lines = {line.split()[0]: line for line in out.splitlines()}
    # A chip without analog tiles has no tile to quote a peak for.
    for name in ("digital-int8-45nm", "zigzag-dimc-28nm"):
        assert "no analog tiles" in lines[name] and "TOPS/W" not in lines[name]
    assert "peak" in lines["hybrid-22nm"] and "no analog tiles" not in lines["hybrid-22nm"]


def test_all_digital_chip_gets_no_analog_peak_or_advice(capsys):
    argv = ["energy", "--layers", "64x256,256x10", "--preset", "digital-int8-45nm", "--analog", "0"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "no analog tiles" in out and "peak tile" not in out
    assert "move to analog" not in out and "shrink first" in out
    assert main([*argv, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["peak_tops_per_w"] is None


def test_hybrid_chip_still_advises_moving_to_analog(capsys):
    argv = ["energy", "--layers", "64x256,256x256", "--analog", "0"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "peak tile" in out and "move to analog first" in out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--preset", "hybrid"], "unknown preset 'hybrid' (did you mean 'hybrid-22nm'?)"),
        (["--layers", "64x"], "not ROWSxCOLS"),
        (["--layers", "64x256,abc"], "layer 2"),
        (["--layers", "64x256@0"], "positions"),
        (["--adc-bits", "-3"], "--adc-bits must be an integer in [1, 16]"),
        (["--analog", "1.5"], "--analog: values must lie in [0.0, 1.0]"),
        (["--analog", "0.1,0.2"], "2 values for 1 layers"),
        (["--tile", "0x16"], "--tile"),
        (["--preset", "digital-int8-45nm"], "has no analog tiles"),
        (["--granularity", "blocky"], "invalid choice"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(argv, message, capsys):
    """In-process (the first case also as its own process): see `tests.cli_run`."""
    if "--layers" not in argv:
        argv = [*argv, "--layers", "64x256"]
    argv = ["energy", *argv]
    if message.startswith("unknown preset"):
        code, out, err = as_process(argv)
    else:
        code, out, err = in_process(argv, capsys)
    assert code == 2
    assert out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err
    assert lines[0].startswith("codesign: error:") and message in lines[0]
