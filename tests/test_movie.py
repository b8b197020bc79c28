"""The movie runner: tiles without seams, resume, bounded memory, streamed tables."""

import gc
import tracemalloc
import weakref
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tifffile
import torch

import smlm_diffusers as sd
from smlm_diffusers.io import write_localizations
from smlm_diffusers.movie import (
    LocalizationWriter,
    keep_core,
    localize_frames,
    localize_movie,
    tile_frame,
)
from smlm_diffusers.simulation.emitters import Emitters
from smlm_diffusers.simulation.simulator import FrameSimulator

TINY = dict(mixed_precision="no")  # the tiny random DeepSTORM's KDE varies below a bfloat16 step


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """One torch thread: with the other core busy, two threads run the tiny network 10x slower here."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    """The tiny random pipeline with a peak threshold at the 99.9th percentile of its nearly flat KDE:
    about ten molecules per 32 x 32 frame (at a lower one it finds every maximum, thousands per frame)."""
    pipe = sd.SMLMDiffusionPipeline.from_pretrained(tiny_model_dir)
    pipe.set_progress_bar_config(disable=True)
    frames, _ = sd.simulate(n_frames=4, shape=(32, 32), density=1.0, seed=0)
    kde = pipe(frames, num_samples=0, threshold=float("inf"), **TINY).kde_mean
    TINY["threshold"] = float(np.quantile(kde, 0.999))
    return pipe


@pytest.fixture(scope="module")
def shipped():
    folder = Path(__file__).resolve().parents[1] / "pretrained" / "smlm-ddpm-2d"
    if not folder.is_dir():
        pytest.skip("the shipped pipeline folder is not in this checkout")
    pipe = sd.SMLMDiffusionPipeline.from_pretrained(folder)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def movie(tmp_path, n_frames=40, shape=(24, 24), seed=0):
    frames, gt = sd.simulate(n_frames=n_frames, shape=shape, density=1.0, seed=seed)
    path = tmp_path / "movie.tif"
    tifffile.imwrite(path, np.round(frames).clip(0, 65535).astype(np.uint16))
    return path, gt


# -- tiles ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("h, w, size, margin", [(64, 64, 256, 16), (512, 512, 256, 16), (300, 97, 64, 8),
                                                (65, 40, 32, 12)])
def test_tiles_partition_the_frame_with_a_margin(h, w, size, margin):
    tiles = tile_frame(h, w, size, margin)
    owner = np.zeros((h, w), int)
    for t in tiles:
        r0, r1, c0, c1 = t.core
        owner[r0:r1, c0:c1] += 1
        wr0, wr1, wc0, wc1 = t.window
        assert 0 <= wr0 <= r0 and r1 <= wr1 <= h and 0 <= wc0 <= c0 and c1 <= wc1 <= w
        assert r1 - r0 <= size and c1 - c0 <= size
        # context on every side that is not the frame's edge
        assert (r0 == 0 or r0 - wr0 >= margin) and (r1 == h or wr1 - r1 >= margin)
        assert (c0 == 0 or c0 - wc0 >= margin) and (c1 == w or wc1 - c1 >= margin)
    assert (owner == 1).all()
    assert len({(t.window[1] - t.window[0], t.window[3] - t.window[2]) for t in tiles}) == 1
    if max(h, w) <= size:
        assert len(tiles) == 1 and tiles[0].window == (0, h, 0, w)


def test_keep_core_resolves_a_molecule_seen_by_two_tiles():
    tiles = tile_frame(64, 64, 32, 8)  # seams at 32 px
    a = 108.0
    rows = [  # (frame, x_px, y_px, tile), tile 0 left of the seam at x = 32, tile 1 right of it
        (0, 31.99, 10.0, 0), (0, 32.01, 10.0, 1),  # on the seam, each estimate in its own core: one kept
        (0, 32.02, 20.0, 0), (0, 31.98, 20.0, 1),  # each estimate in the other's core: the lower tile's
        (0, 32.30, 25.0, 0), (0, 32.31, 25.0, 1),  # in tile 1's core, seen by tile 0 in its band
        (0, 31.50, 5.0, 1),  # in tile 0's core, seen by tile 1 only (in its band)
        (0, 33.10, 5.0, 0),  # beyond tile 0's band: tile 1's business
        (0, 31.40, 40.0, 2), (0, 31.45, 40.0, 3), (0, 32.60, 40.0, 3),  # lower tiles: two molecules
        # the corner: only tile 2's estimate lies in its own core
        (0, 32.00, 32.00, 0), (0, 32.0, 32.01, 1), (0, 31.99, 32.0, 2), (0, 32.01, 31.99, 3),
        (1, 31.99, 10.0, 0), (1, 32.01, 10.0, 1),  # another frame
    ]
    locs = pd.DataFrame({"frame": [r[0] for r in rows], "x_nm": [r[1] * a for r in rows],
                         "y_nm": [r[2] * a for r in rows]})
    keep = keep_core(locs, np.array([r[3] for r in rows]), tiles, a)
    assert keep.tolist() == [True, False, True, False, False, True, True, False, True, False, True,
                             False, False, True, False, True, False]
    # only the pair on the seam, both estimates in their own cores (no row in a band)
    pair = locs.iloc[:2]
    assert keep_core(pair, np.array([0, 1]), tiles, a).tolist() == [True, False]


def _render_frames(xy_px, shape, seed=0, photons=3000.0):
    """Frames (ADU) of given emitters per frame (camera px), with the project's simulator."""
    n = max(len(f) for f in xy_px)
    x = torch.full((len(xy_px), n), -100.0)
    y = torch.full((len(xy_px), n), -100.0)
    mask = torch.zeros(len(xy_px), n, dtype=torch.bool)
    for f, pts in enumerate(xy_px):
        for k, (xi, yi) in enumerate(pts):
            x[f, k], y[f, k], mask[f, k] = xi, yi, True
    emitters = Emitters(x_px=x, y_px=y, photons=torch.full_like(x, photons) * mask, mask=mask)
    batch = FrameSimulator(shape=shape).render(emitters, generator=torch.Generator().manual_seed(seed))
    return batch.frames_adu.numpy()


def test_molecule_on_a_seam_is_found_once_at_the_right_place(shipped):
    # 64 x 64 frames in 2 x 2 tiles of 32 (+ 12 px margin): seams at x = 32 and y = 32 px
    truth = [[(32.0, 10.3), (32.0, 32.0), (50.6, 32.0), (31.97, 47.2), (8.4, 8.8), (45.5, 50.5)],
             [(32.03, 20.0), (20.0, 32.0), (32.0, 55.1), (12.2, 40.7)]]
    frames = _render_frames(truth, (64, 64))
    tiled = localize_frames(shipped, frames, mixed_precision="no", tile_size=32, tile_margin=12).localizations
    whole = localize_frames(shipped, frames, mixed_precision="no").localizations
    assert len(tiled) == len(whole) == sum(len(t) for t in truth)
    for f, pts in enumerate(truth):
        got = tiled[tiled.frame == f][["x_nm", "y_nm"]].to_numpy() / 108.0
        for xy in pts:
            d = np.hypot(*(got - np.array(xy)).T)
            assert (d < 0.5).sum() == 1, (f, xy, got)  # once
            assert d.min() * 108 < 20.0  # at the right place (sub-pixel, 3000 photons)
    # the same molecules as one pass over the whole frame, to a small fraction of a nanometre
    a, b = tiled.sort_values(["frame", "x_nm"]), whole.sort_values(["frame", "x_nm"])
    np.testing.assert_array_equal(a.frame, b.frame)
    np.testing.assert_allclose(a[["x_nm", "y_nm"]], b[["x_nm", "y_nm"]], atol=2.0)


def test_tiled_render_is_the_stitched_kde(shipped):
    frames = _render_frames([[(32.0, 32.0), (10.0, 50.0)]] * 3, (64, 64))
    tiled = localize_frames(shipped, frames, mixed_precision="no", tile_size=32, tile_margin=12, keep_images=True)
    whole = localize_frames(shipped, frames, mixed_precision="no", keep_images=True)
    np.testing.assert_allclose(tiled.kde_sum, tiled.images["kde_mean"].sum(0), atol=1e-5)
    # per-window median normalization: within a percent of a peak (about 0.15 per KDE pixel)
    assert np.abs(tiled.images["kde_mean"] - whole.images["kde_mean"]).max() < 5e-3


def test_untiled_chunk_is_the_pipeline_call(tiny):
    frames, _ = sd.simulate(n_frames=6, shape=(24, 24), density=1.0, seed=2)
    ref = tiny(frames, num_samples=0, **TINY)
    res = localize_frames(tiny, frames, 100, **TINY)
    pd.testing.assert_frame_equal(res.localizations.assign(frame=res.localizations.frame - 100), ref.localizations)
    np.testing.assert_array_equal(res.kde_sum, np.sum(ref.kde_mean, axis=0, dtype=np.float64))
    assert res.kde_var is None and (res.start, res.stop) == (100, 106)


# -- whole movies -------------------------------------------------------------------------------
def run_and_write(pipe, stack, tmp_path, name, **kwargs):
    run = localize_movie(pipe, stack, tmp_path / f"{name}.partial", progress=False, **TINY, **kwargs)
    csv = tmp_path / f"{name}.csv"
    run.write_table(csv, pixel_size_nm=108.0, shape=(run.frames_run, run.height, run.width), psf_sigma_px=1.0,
                    samples=False)
    return run, csv


def test_resume_after_a_failure_is_byte_identical(tiny, tmp_path, monkeypatch):
    stack, _ = movie(tmp_path)
    full, full_csv = run_and_write(tiny, stack, tmp_path, "full", batch_size=8)
    full_render = full.render()[0]
    full.finish()
    assert not (tmp_path / "full.partial").exists()

    calls = {"n": 0}
    original = sd.SMLMDiffusionPipeline.__call__

    def failing(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise RuntimeError("simulated failure")
        return original(self, *args, **kwargs)

    monkeypatch.setattr(sd.SMLMDiffusionPipeline, "__call__", failing)
    with pytest.raises(RuntimeError, match="simulated failure"):
        localize_movie(tiny, stack, tmp_path / "part.partial", batch_size=8, progress=False, **TINY)
    monkeypatch.setattr(sd.SMLMDiffusionPipeline, "__call__", original)
    messages = []
    part, part_csv = run_and_write(tiny, stack, tmp_path, "part", batch_size=8, log=messages.append)
    assert any("resuming" in m and "16 of 40" in m for m in messages)
    assert part.frames_new == 24
    assert part_csv.read_bytes() == full_csv.read_bytes()
    np.testing.assert_array_equal(part.render()[0], full_render)


def test_max_frames_then_the_rest(tiny, tmp_path):
    stack, _ = movie(tmp_path)
    full, full_csv = run_and_write(tiny, stack, tmp_path, "full", batch_size=8)
    cut, cut_csv = run_and_write(tiny, stack, tmp_path, "rest", batch_size=8, max_frames=20)
    assert not cut.complete and cut.localizations()["frame"].max() <= 19
    cut.finish()
    rest, rest_csv = run_and_write(tiny, stack, tmp_path, "rest", batch_size=8)
    assert rest.frames_new == 24  # the tail [16, 20) is redone
    assert rest_csv.read_bytes() == full_csv.read_bytes()
    np.testing.assert_array_equal(rest.render()[0], full.render()[0])


@pytest.mark.slow
def test_stack_larger_than_the_memory_budget_streams_in_batches(tiny, tmp_path, monkeypatch):
    """One batch of frames in memory at a time, and the same peak for a stack 8x longer."""
    import smlm_diffusers.movie.runner as runner

    frames, _ = sd.simulate(n_frames=64, shape=(16, 16), density=2.0, seed=3)
    frames = np.round(frames).clip(0, 65535).astype(np.uint16)
    alive, sizes, refs = [], [], []
    original = runner._frame_source

    def spying_source(source):  # records the size of each batch read and how many earlier ones are alive
        shape, info, read = original(source)

        def spy(ranges):
            for batch in read(ranges):
                gc.collect()
                alive.append(sum(r() is not None for r in refs))
                sizes.append(len(batch))
                refs.append(weakref.ref(batch))
                yield batch

        return shape, info, spy

    monkeypatch.setattr(runner, "_frame_source", spying_source)
    peaks = {}
    for repeats in (1, 8):  # the same frames over and over: every batch costs the same
        path = tmp_path / f"stack{repeats}.tif"
        tifffile.imwrite(path, np.concatenate([frames] * repeats))
        alive.clear(), sizes.clear(), refs.clear()
        gc.collect()
        tracemalloc.start()
        run = localize_movie(tiny, path, tmp_path / f"w{repeats}", batch_size=64, progress=False, **TINY)
        n_rows = sum(len(t) for t in run.iter_localizations())
        peaks[repeats] = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        assert sizes == [64] * repeats and max(alive) == 0  # one batch at a time
        assert n_rows > 0
    frame_bytes = 16 * 16 * 4  # float32, as the pipeline sees it
    stack_bytes = 8 * 64 * frame_bytes  # 0.5 MB
    budget = 128_000
    assert stack_bytes > 4 * budget
    # the long stack costs what the short one does (numpy, pandas and tifffile allocations, traced), up to
    # the index of the file's pages (about 150 bytes per page: 3 MB for 20,000 frames)
    growth_per_frame = (peaks[8] - peaks[1]) / (7 * 64)
    assert growth_per_frame < 256, peaks
    assert peaks[8] - peaks[1] < budget, peaks


def test_writer_streams_the_same_bytes_as_the_whole_table_writer(tmp_path):
    rng = np.random.default_rng(0)
    n = 50
    locs = pd.DataFrame({"frame": np.sort(rng.integers(0, 10, n)), "x_nm": rng.uniform(0, 3000, n),
                         "y_nm": rng.uniform(0, 3000, n), "sigma_x_nm": rng.uniform(1, 9, n),
                         "sigma_y_nm": rng.uniform(1, 9, n), "probability": 1.0, "n_samples": 0,
                         "kde_mass": rng.uniform(0.5, 1, n), "photons": rng.uniform(500, 5000, n),
                         "background": rng.uniform(5, 30, n)})
    kw = dict(pixel_size_nm=108.0, shape=(10, 32, 32), psf_sigma_px=1.0, samples=False)
    (whole,) = write_localizations(locs, tmp_path / "whole.csv", **kw)
    with LocalizationWriter(tmp_path / "chunks.csv", **kw) as out:
        for part in np.array_split(np.arange(n), [7, 8, 30]):
            out.write(locs.iloc[part])
        out.close()
    assert (tmp_path / "chunks.csv").read_bytes() == whole.read_bytes()

    h5py = pytest.importorskip("h5py")
    write_localizations(locs, tmp_path / "whole.hdf5", **kw)
    with LocalizationWriter(tmp_path / "chunks.hdf5", **kw) as out:
        for part in np.array_split(np.arange(n), 3):
            out.write(locs.iloc[part])
        out.close()
    with h5py.File(tmp_path / "whole.hdf5") as a, h5py.File(tmp_path / "chunks.hdf5") as b:
        np.testing.assert_array_equal(a["locs"][()], b["locs"][()])
        assert a["metadata"][()] == b["metadata"][()]
    assert (tmp_path / "chunks.yaml").read_text() == (tmp_path / "whole.yaml").read_text()


def test_progress_reports_frames_per_second(tiny, tmp_path, capsys):
    stack, _ = movie(tmp_path, n_frames=12)
    seen = []
    run = localize_movie(tiny, stack, tmp_path / "p.partial", batch_size=4,
                         on_progress=lambda done, total: seen.append((done, total)), **TINY)
    assert seen == [(4, 12), (8, 12), (12, 12)]
    err = capsys.readouterr().err
    assert "frame/s" in err and "12/12" in err
    assert run.frames_per_second > 0


def test_checkpoint_rows_keep_the_refinement_columns_exactly():
    """The float64 checkpoint rows carry the frame refinement's text and bool columns (fit_flag as a
    code of its fixed values): the table read back equals the one written; an unknown flag is refused."""
    from smlm_diffusers.movie.resume import MovieError, rows_bytes, rows_table, table_columns

    locs = pd.DataFrame({"frame": np.array([0, 0, 3], dtype=np.int64), "x_nm": [1.5, 2.25, 1e4 / 3],
                         "refine_ok": [True, False, True], "fit_flag": ["ok", "runaway", "seed_kept"],
                         "split": [False, False, True], "cluster_size": np.array([1, 2, 2], dtype=np.int64)})
    back = rows_table(rows_bytes(locs), table_columns(locs))
    pd.testing.assert_frame_equal(back, locs)
    with pytest.raises(MovieError, match="fit_flag"):
        rows_bytes(locs.assign(fit_flag=["ok", "odd", "ok"]))


def test_movie_with_frame_refinement_writes_its_columns_and_resumes(tmp_path):
    """A folder with refine on (the shipped one) streams through the runner (its checkpoints hold the
    refinement's text and bool columns), every molecule gets the fit's bound as its uncertainty, and
    a run cut short then resumed gives the same bytes."""
    folder = Path(__file__).resolve().parents[1] / "pretrained" / "smlm-ddpm-2d"
    if not folder.is_dir():
        pytest.skip("the shipped pipeline folder is not in this checkout")
    shipped = sd.SMLMDiffusionPipeline.from_pretrained(folder)  # its own copy: other tests change settings
    shipped.set_progress_bar_config(disable=True)
    assert shipped.config.refine
    frames, _ = sd.simulate(n_frames=6, shape=(32, 32), density=1.0, seed=4, camera=shipped.camera)
    stack = tmp_path / "movie.tif"
    tifffile.imwrite(stack, np.round(frames).clip(0, 65535).astype(np.uint16))
    opts = dict(progress=False, batch_size=2, mixed_precision="no")  # not TINY: it carries the tiny model's threshold

    def write(run, name):
        csv = tmp_path / f"{name}.csv"
        run.write_table(csv, pixel_size_nm=shipped.camera.pixel_size_nm, shape=(run.frames_run, 32, 32),
                        psf_sigma_px=1.0, samples=False)
        return csv

    csv = write(localize_movie(shipped, stack, tmp_path / "whole.partial", **opts), "whole")
    table = pd.read_csv(csv)
    sigma = table[[c for c in table.columns if c.startswith("uncertainty")][0]]
    assert len(table) > 0 and np.isfinite(sigma).all() and (sigma > 0).all()
    localize_movie(shipped, stack, tmp_path / "cut.partial", max_frames=4, **opts)
    cut = write(localize_movie(shipped, stack, tmp_path / "cut.partial", **opts), "cut")
    assert cut.read_bytes() == csv.read_bytes()
