"""The default mode (issue 32, item 5): what ``pipe(frames)`` and ``localize`` without ``--mode`` run, that it is
the mode the README names, and that the README's dense table supports that choice."""

import json
import re
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest
import tifffile

import smlm_diffusers as sd
from smlm_diffusers import cli
from smlm_diffusers.defaults import default_model_path
from smlm_diffusers.pipelines.modes import DDPM, DEEPSTORM, DEEPSTORM_ARBITRATION, call_mode

ROOT = Path(__file__).resolve().parents[1]
# the dense table's names for the pipeline's modes (benchmarks/dense.py MODES)
TABLE_MODES = {"DeepSTORM": DEEPSTORM, "DeepSTORM+arb": DEEPSTORM_ARBITRATION, "DDPM": DDPM}
# issue 32: DDPM mode must beat DeepSTORM + arbitration by this much Jaccard at density 4 to be worth its time
DDPM_TARGETS = {"2000/20 density 4": 0.01, "1000/50 density 4": 0.015}


@pytest.fixture(scope="module")
def shipped():
    if default_model_path() is None:
        pytest.skip("the shipped pipeline folder is missing")
    return sd.SMLMDiffusionPipeline.from_pretrained(default_model_path())


@pytest.fixture(scope="module")
def frames():
    """Two small crowded frames, where the arbitration has pairs to weigh."""
    f, _ = sd.simulate(n_frames=2, shape=(24, 24), density=4.0, seed=1)
    return f


def readme_default() -> str:
    """The mode the README's marker line names: ``Default mode: <name>.``"""
    found = re.findall(r"^Default mode: ([^.\n]+)\.", (ROOT / "README.md").read_text(), re.M)
    assert len(found) == 1, f"the README states its default mode once, found {found}"
    return found[0]


def readme_dense_table() -> pd.DataFrame:
    """The README's dense table (benchmarks/dense.py, rendered by benchmarks/report.py) as scenario, mode, Jaccard,
    s per frame."""
    lines = (ROOT / "README.md").read_text().splitlines()
    head = next(i for i, line in enumerate(lines) if line.startswith("| scenario | mode | Jaccard |"))
    names = [c.strip() for c in lines[head].strip("|").split("|")]
    rows = []
    for line in lines[head + 2:]:
        if not line.startswith("|"):
            break
        rows.append(dict(zip(names, (c.strip() for c in line.strip("|").split("|")))))
    table = pd.DataFrame(rows)
    return table.assign(Jaccard=table["Jaccard"].astype(float), seconds=table["s per frame"].astype(float))


def measured_default(table: pd.DataFrame) -> str:
    """The mode the dense table says should be the default: DDPM mode where it meets issue 32's Jaccard targets over
    DeepSTORM + arbitration at density 4, else DeepSTORM + arbitration where its arbitration gains Jaccard over plain
    DeepSTORM from density 1 up, else plain DeepSTORM."""
    jac = table.pivot(index="scenario", columns="mode", values="Jaccard")
    if all(jac.loc[s, "DDPM"] - jac.loc[s, "DeepSTORM+arb"] >= gain for s, gain in DDPM_TARGETS.items()):
        return DDPM
    dense = [s for s in jac.index if (m := re.search(r"density ([\d.]+)", s)) and float(m.group(1)) >= 1]
    assert dense, "no dense rows in the README's dense table"
    gain = (jac.loc[dense, "DeepSTORM+arb"] - jac.loc[dense, "DeepSTORM"]).mean()
    return DEEPSTORM_ARBITRATION if gain > 0 else DEEPSTORM


def test_the_default_mode_is_the_one_the_readme_names_and_its_table_supports(shipped):
    table = readme_dense_table()
    assert set(TABLE_MODES) <= set(table["mode"]), "the dense table shows the three modes side by side"
    assert {"share abs(z) > 3", "s per frame"} <= set(table.columns), "with the tail and the time"
    named = readme_default()
    assert named == measured_default(table), f"the README names {named}; its dense table says otherwise"
    assert shipped.call_mode().name == named
    # the CLI without --mode, as its parser leaves the options
    args = cli.build_parser().parse_args(["localize", "s.tif", "-o", "l.csv"])
    assert cli._localize_mode(args, shipped).name == named
    # every shipped 2D folder with a DDPM has the same default
    for name in ("smlm-ddpm-2d", "smlm-ddpm-2d-100nm"):
        index = json.loads((ROOT / "pretrained" / name / "model_index.json").read_text())
        assert call_mode(index).name == named, name


def test_default_call_is_deepstorm_with_arbitration(shipped, frames):
    default = shipped(frames)
    explicit = shipped(frames, num_samples=0, arbitrate=True)
    assert default.mode == explicit.mode == DEEPSTORM_ARBITRATION
    pd.testing.assert_frame_equal(default.localizations, explicit.localizations)
    assert default.samples is None and default.kde_var is None
    # the arbitration weighed something here: probabilities below 1, as plain DeepSTORM never has
    assert (default.localizations["probability"] < 1).any()


def test_arbitrate_false_is_plain_deepstorm(shipped, frames):
    plain = shipped(frames, arbitrate=False)
    assert plain.mode == DEEPSTORM
    shipped.register_to_config(deepstorm_arbitrate=False)  # the folder's setting, as before the default changed
    try:
        folder_plain = shipped(frames, num_samples=0)
    finally:
        shipped.register_to_config(deepstorm_arbitrate=True)
    pd.testing.assert_frame_equal(plain.localizations, folder_plain.localizations)
    assert (plain.localizations["probability"] == 1).all()
    assert len(plain.localizations) != len(shipped(frames).localizations)


def test_call_mode_rules():
    folder = {"default_num_samples": 0, "deepstorm_arbitrate": True, "refine": True}
    assert call_mode(folder).name == DEEPSTORM_ARBITRATION
    assert call_mode(folder, num_samples=8) == sd.pipelines.modes.CallMode(8, False)
    assert call_mode(folder, arbitrate=False).name == DEEPSTORM
    assert call_mode({}).name == DEEPSTORM  # a folder saved before the setting: no samples, no arbitration
    assert call_mode(folder | {"default_num_samples": 4}).name == DDPM
    assert call_mode(folder | {"refine": False}).name == DEEPSTORM  # the arbitration fits on the frame
    with pytest.raises(ValueError, match="needs refine"):
        call_mode(folder, arbitrate=True, refine=False)
    with pytest.raises(ValueError, match=">= 0"):
        call_mode(folder, num_samples=-1)


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    frames, _ = sd.simulate(n_frames=4, shape=(24, 24), density=3.0, seed=2)
    path = tmp_path_factory.mktemp("default_stack") / "movie.tif"
    tifffile.imwrite(path, np.round(frames).clip(0, 65535).astype(np.uint16), photometric="minisblack")
    return path


def localize(stack, out, *extra):
    return cli.main(["localize", str(stack), "-o", str(out), "-q", "--mixed-precision", "no", *extra])


def test_cli_without_mode_writes_what_mode_deepstorm_writes(shipped, stack, tmp_path):
    assert localize(stack, tmp_path / "default.csv") == 0
    assert localize(stack, tmp_path / "deepstorm.csv", "--mode", "deepstorm") == 0
    assert localize(stack, tmp_path / "plain.hdf5", "--no-arbitrate") == 0
    default = (tmp_path / "default.csv").read_bytes()
    assert default == (tmp_path / "deepstorm.csv").read_bytes()
    assert (tmp_path / "default_render.tif").read_bytes() == (tmp_path / "deepstorm_render.tif").read_bytes()
    assert not (tmp_path / "default_render_uncertainty.tif").exists()  # no samples
    assert (pd.read_csv(tmp_path / "default.csv")["probability"] < 1).any()  # the arbitration's weights
    with h5py.File(tmp_path / "plain.hdf5") as fh:
        assert (fh["locs"]["probability"] == 1).all()
    assert f"Mode: {DEEPSTORM}\n" in (tmp_path / "plain.yaml").read_text()  # the Picasso metadata names the mode


def test_cli_samples_without_mode_run_ddpm_and_no_arbitrate_is_for_deepstorm(shipped, stack, tmp_path, capsys):
    opts = ["--max-frames", "2"]
    assert localize(stack, tmp_path / "k.csv", *opts, "--samples", "2", "--steps", "2") == 0
    assert (tmp_path / "k_render_uncertainty.tif").exists()  # DDPM mode's variance render
    with pytest.raises(SystemExit) as stop:
        localize(stack, tmp_path / "x.csv", *opts, "--mode", "ddpm", "--no-arbitrate")
    assert stop.value.code == 2 and "--no-arbitrate is for --mode deepstorm" in capsys.readouterr().err


def test_a_run_begun_in_the_old_default_restarts_with_a_message(shipped, stack, tmp_path, capsys):
    """A partial run of DDPM mode (the default before) is not continued in the new default: the checkpoint records
    the mode, and the message names its change."""
    csv = tmp_path / "l.csv"
    opts = ["--batch-size", "2"]
    assert localize(stack, csv, *opts, "--mode", "ddpm", "--samples", "2", "--steps", "2", "--max-frames", "2") == 0
    progress = json.loads((tmp_path / "l.csv.partial" / "progress.json").read_text())
    assert progress["signature"]["options"]["mode"] == DDPM
    capsys.readouterr()
    assert cli.main(["localize", str(stack), "-o", str(csv), "--mixed-precision", "no", *opts]) == 0
    err = capsys.readouterr().err
    assert "discarding partial results" in err and f"mode 'DDPM' -> '{DEEPSTORM_ARBITRATION}'" in err
