"""TIFF stacks, ThunderSTORM CSV and Picasso HDF5 files round-trip through tmp_path."""

import json
import warnings

import numpy as np
import pandas as pd
import pytest
import tifffile

from smlm_diffusers.io import (
    iter_tiff_frames,
    localization_format,
    read_picasso_hdf5,
    read_thunderstorm_csv,
    read_tiff_stack,
    tiff_pixel_size_nm,
    write_localizations,
    write_picasso_hdf5,
    write_thunderstorm_csv,
    write_tiff,
)


# --------------------------------------------------------------------------- TIFF


@pytest.mark.parametrize("dtype", [np.uint16, np.float32])
@pytest.mark.parametrize("shape", [(12, 9), (5, 12, 9)])
def test_tiff_round_trip(tmp_path, dtype, shape):
    rng = np.random.default_rng(0)
    data = (rng.uniform(0, 4000, shape)).astype(dtype)
    path = tmp_path / "stack.tif"
    tifffile.imwrite(path, data, photometric="minisblack")
    out = read_tiff_stack(path)
    assert out.dtype == np.float32 and out.shape == (1, *shape) if len(shape) == 2 else out.shape == shape
    np.testing.assert_array_equal(out.reshape(data.shape), data.astype(np.float32))


def test_write_tiff_and_limits(tmp_path):
    data = np.random.default_rng(1).normal(size=(7, 6, 5)).astype(np.float32)
    path = tmp_path / "w.tif"
    write_tiff(path, data)
    np.testing.assert_array_equal(read_tiff_stack(path), data)
    np.testing.assert_array_equal(read_tiff_stack(path, max_frames=3), data[:3])
    with pytest.raises(ValueError, match="max_pixels"):
        read_tiff_stack(path, max_pixels=6 * 5 * 7 - 1)
    assert read_tiff_stack(path, max_frames=2, max_pixels=60).shape == (2, 6, 5)
    with pytest.raises(ValueError):
        write_tiff(tmp_path / "bad.tif", np.zeros((2, 2, 3, 3)))


def test_iter_tiff_frames_batches(tmp_path):
    data = np.arange(10 * 4 * 3, dtype=np.uint16).reshape(10, 4, 3)
    path = tmp_path / "it.tif"
    tifffile.imwrite(path, data, photometric="minisblack")
    batches = list(iter_tiff_frames(path, batch_size=4))
    assert [b.shape[0] for b in batches] == [4, 4, 2]
    assert all(b.dtype == np.float32 for b in batches)
    np.testing.assert_array_equal(np.concatenate(batches), data)
    assert sum(b.shape[0] for b in iter_tiff_frames(path, batch_size=3, max_frames=5)) == 5
    tifffile.imwrite(tmp_path / "one.tif", data[0])
    assert [b.shape for b in iter_tiff_frames(tmp_path / "one.tif", 8)] == [(1, 4, 3)]


def test_tiff_errors(tmp_path):
    rgb = tmp_path / "rgb.tif"
    tifffile.imwrite(rgb, np.zeros((8, 8, 3), np.uint8), photometric="rgb")
    rgba = tmp_path / "rgba.tif"
    tifffile.imwrite(rgba, np.zeros((8, 8, 4), np.uint8), photometric="rgb", extrasamples=["unassalpha"])
    four_d = tmp_path / "4d.tif"
    tifffile.imwrite(four_d, np.zeros((2, 3, 8, 8), np.uint16), photometric="minisblack")
    empty = tmp_path / "empty.tif"
    empty.write_bytes(b"")
    text = tmp_path / "text.tif"
    text.write_text("not a tiff")
    nan = tmp_path / "nan.tif"
    tifffile.imwrite(nan, np.array([[1.0, np.nan], [0.0, 2.0]], np.float32))
    zero = tmp_path / "zero.tif"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tifffile warns about writing a zero-size image
        tifffile.imwrite(zero, np.zeros((0, 5), np.uint16))
    for path, msg in [
        (rgb, "colour"),
        (rgba, "colour"),
        (four_d, "4D"),
        (empty, "not a readable TIFF"),
        (text, "not a readable TIFF"),
        (nan, "NaN"),
        (zero, "zero-size"),
    ]:
        with pytest.raises(ValueError, match=msg):
            read_tiff_stack(path)
    with pytest.raises(ValueError, match="colour"):
        next(iter_tiff_frames(rgb, 2))
    with pytest.raises(ValueError, match="NaN"):
        next(iter_tiff_frames(nan, 2))
    with pytest.raises(FileNotFoundError):
        read_tiff_stack(tmp_path / "missing.tif")


# --------------------------------------------------------------------------- CSV


def test_thunderstorm_csv_round_trip(tmp_path):
    rng = np.random.default_rng(2)
    n = 50
    df = pd.DataFrame(
        {
            "frame": rng.integers(0, 100, n),
            "x_nm": rng.uniform(0, 6912, n),
            "y_nm": rng.uniform(0, 6912, n),
            "photons": rng.uniform(200, 6000, n),
            "sigma_x_nm": rng.uniform(3, 30, n),
            "sigma_y_nm": rng.uniform(3, 30, n),
        }
    )
    path = tmp_path / "locs.csv"
    write_thunderstorm_csv(df, path)
    lines = path.read_text().splitlines()
    assert lines[0] == '"id","frame","x [nm]","y [nm]","sigma [nm]","intensity [photon]","uncertainty [nm]"'
    assert lines[1].split(",")[:2] == ["1", str(df.frame[0] + 1)]  # 1-based ids and frames

    back = read_thunderstorm_csv(path)
    assert list(back.columns[:3]) == ["frame", "x_nm", "y_nm"]
    np.testing.assert_array_equal(back.frame, df.frame)
    np.testing.assert_array_equal(back.x_nm, df.x_nm)  # exact, not approx
    np.testing.assert_array_equal(back.y_nm, df.y_nm)
    np.testing.assert_array_equal(back.intensity, df.photons)
    np.testing.assert_array_equal(back.uncertainty_nm, np.sqrt((df.sigma_x_nm**2 + df.sigma_y_nm**2) / 2))
    assert back.sigma_nm.isna().all()

    # the read table writes back to the same file
    write_thunderstorm_csv(back, tmp_path / "again.csv")
    assert (tmp_path / "again.csv").read_text() == path.read_text()


def test_csv_intensity_column_and_empty(tmp_path):
    df = pd.DataFrame({"frame": [0, 2], "x_nm": [1.5, 2.0], "y_nm": [3.0, 4.25], "intensity": [0.9, 1.1]})
    write_thunderstorm_csv(df, tmp_path / "a.csv")
    back = read_thunderstorm_csv(tmp_path / "a.csv")
    np.testing.assert_array_equal(back.intensity, df.intensity)
    assert back.uncertainty_nm.isna().all()
    write_thunderstorm_csv(df.iloc[:0], tmp_path / "empty.csv")
    empty = read_thunderstorm_csv(tmp_path / "empty.csv")
    assert empty.empty and {"frame", "x_nm", "y_nm"} <= set(empty.columns)
    with pytest.raises(ValueError, match="y_nm"):
        write_thunderstorm_csv(df.drop(columns="y_nm"), tmp_path / "b.csv")


def test_read_handwritten_thunderstorm_file(tmp_path):
    # the header ThunderSTORM's simulator and exporter write, with its extra columns
    text = (
        '"id","frame","x [nm]","y [nm]","sigma [nm]","intensity [photon]","offset [photon]",'
        '"bkgstd [photon]","chi2","uncertainty [nm]"\n'
        "1,1,67.843,2484.15594,111.28713,2458.46515,50,4.47214,1.2,9.5\n"
        "2,1.0,28.94544,3531.11794,107.34945,2253.50657,50,4.47214,0.8,10.25\n"
        "3,7,1000,2000,110.0,1500.0,48.5,4.4,1.0,12\n"
    )
    path = tmp_path / "ts.csv"
    path.write_text(text)
    df = read_thunderstorm_csv(path)
    assert df.frame.tolist() == [0, 0, 6] and df.frame.dtype == np.int64
    assert df.x_nm.tolist() == [67.843, 28.94544, 1000.0] and df.x_nm.dtype == np.float64
    assert df.y_nm.tolist() == [2484.15594, 3531.11794, 2000.0]
    for column in ("id", "sigma_nm", "intensity", "offset", "bkgstd", "chi2", "uncertainty_nm"):
        assert column in df.columns
    assert df.intensity[0] == 2458.46515 and df.uncertainty_nm[1] == 10.25


def test_read_pixel_unit_file_and_errors(tmp_path):
    path = tmp_path / "px.csv"
    path.write_text('"frame","x [px]","y [px]"\n1,1.5,2.25\n')
    with pytest.raises(ValueError, match="pixel_size_nm"):
        read_thunderstorm_csv(path)
    df = read_thunderstorm_csv(path, pixel_size_nm=100.0)
    assert (df.x_nm[0], df.y_nm[0]) == (150.0, 225.0)
    bad = tmp_path / "bad.csv"
    bad.write_text('"frame","x [nm]"\n1,2\n')
    with pytest.raises(ValueError, match="y_nm"):
        read_thunderstorm_csv(bad)
    zero = tmp_path / "zero.csv"
    zero.write_text('"frame","x [nm]","y [nm]"\n0,2,3\n')
    with pytest.raises(ValueError, match="1-based"):
        read_thunderstorm_csv(zero)


# --------------------------------------------------------------------------- calibration, Picasso


@pytest.mark.parametrize("shape", [(6, 5), (3, 6, 5)])
def test_write_tiff_carries_the_pixel_size(tmp_path, shape):
    """Fiji reads the ImageJ calibration: X/Y resolution in pixels per nm and unit nm."""
    data = np.random.default_rng(3).normal(size=shape).astype(np.float32)
    path = tmp_path / "cal.tif"
    write_tiff(path, data, pixel_size_nm=27.0)
    with tifffile.TiffFile(path) as tif:
        assert tif.is_imagej and tif.imagej_metadata["unit"] == "nm"
        x_res, y_res = tif.pages[0].get_resolution()
        assert x_res == pytest.approx(1 / 27.0) and y_res == pytest.approx(1 / 27.0)
        assert tif.series[0].axes == ("TYX" if len(shape) == 3 else "YX")
    assert tiff_pixel_size_nm(path) == pytest.approx(27.0)
    np.testing.assert_array_equal(read_tiff_stack(path).reshape(shape), data)
    write_tiff(tmp_path / "plain.tif", data)  # no pixel size given: no calibration
    assert tiff_pixel_size_nm(tmp_path / "plain.tif") is None
    with pytest.raises(ValueError, match="pixel_size_nm"):
        write_tiff(tmp_path / "bad.tif", data, pixel_size_nm=-1)


def test_extra_thunderstorm_columns(tmp_path):
    df = pd.DataFrame({"frame": [0, 1], "x_nm": [1.0, 2.0], "y_nm": [3.0, 4.0]})
    write_thunderstorm_csv(df, tmp_path / "e.csv", extra_columns={"offset [photon]": [20.0, 21.5], "kde_mass": [1, 2]})
    assert tmp_path.joinpath("e.csv").read_text().splitlines()[0].endswith('"offset [photon]","kde_mass"')
    back = read_thunderstorm_csv(tmp_path / "e.csv")
    assert back["offset"].tolist() == [20.0, 21.5]
    with pytest.raises(ValueError, match="shape"):
        write_thunderstorm_csv(df, tmp_path / "f.csv", extra_columns={"kde_mass": [1.0]})


def _molecules(n=40, seed=4, size_px=32, a=108.0):
    rng = np.random.default_rng(seed)
    return pd.DataFrame({
        "frame": np.sort(rng.integers(0, 10, n)),
        "x_nm": rng.uniform(0.6 * a, (size_px - 0.1) * a, n), "y_nm": rng.uniform(0.6 * a, (size_px - 0.1) * a, n),
        "sigma_x_nm": rng.uniform(3, 30, n), "sigma_y_nm": rng.uniform(3, 30, n),
        "photons": rng.uniform(200, 6000, n), "background": rng.uniform(5, 60, n),
        "kde_mass": rng.uniform(0.5, 1.5, n), "probability": rng.uniform(0.5, 1, n),
        "n_samples": rng.integers(1, 9, n),
    })


def test_picasso_round_trip_and_pixel_convention(tmp_path):
    from smlm_diffusers import Camera

    df = _molecules()
    path = tmp_path / "locs.hdf5"
    h5, yml = write_picasso_hdf5(df, path, n_frames=10, height=32, width=32, pixel_size_nm=108.0, psf_sigma_px=1.0,
                                 camera=Camera(offset=400.0, gain=2.0), source="movie.tif", extra_info={"Mode": "ddpm"})
    assert (h5, yml) == (path, tmp_path / "locs.yaml")
    back, info = read_picasso_hdf5(path)
    assert info[0]["Frames"] == 10 and info[0]["Width"] == 32 and info[0]["File"] == "movie.tif"
    assert info[1]["Pixelsize"] == 108.0 and info[1]["Baseline"] == 400.0 and info[1]["Sensitivity"] == 0.5
    np.testing.assert_array_equal(back["frame"], df["frame"])
    for c in ("x_nm", "y_nm", "sigma_x_nm", "sigma_y_nm"):
        np.testing.assert_allclose(back[c], df[c], atol=2e-3)
    for c in ("photons", "background", "kde_mass", "probability"):
        np.testing.assert_allclose(back[c], df[c], rtol=1e-6)
    np.testing.assert_array_equal(back["n_samples"], df["n_samples"])
    # Picasso's pixel centres are integers: the centre of pixel (row 2, column 5) is x = 5, y = 2
    centre = pd.DataFrame({"frame": [0], "x_nm": [5.5 * 108.0], "y_nm": [2.5 * 108.0]})
    with pytest.warns(UserWarning, match="Picasso drops"):  # no photometry, no uncertainty: NaN
        write_picasso_hdf5(centre, tmp_path / "c.hdf5", 1, 8, 8, 108.0, 1.0)
    import h5py

    with h5py.File(tmp_path / "c.hdf5") as f:
        assert (float(f["locs"]["x"][0]), float(f["locs"]["y"][0])) == (5.0, 2.0)
        assert json.loads(f["metadata"][()])[0]["Height"] == 8  # Picasso >= 0.11 also embeds the metadata


def test_picasso_opens_our_file(tmp_path):
    io_picasso = pytest.importorskip("picasso.io")
    df = _molecules()
    write_localizations(df, tmp_path / "locs.hdf5", pixel_size_nm=108.0, shape=(10, 32, 32), psf_sigma_px=1.0,
                        samples=True)
    locs, info = io_picasso.load_locs(str(tmp_path / "locs.hdf5"))
    assert len(locs) == len(df)
    np.testing.assert_allclose((locs["x"].to_numpy() + 0.5) * 108.0, df["x_nm"], atol=2e-3)
    np.testing.assert_allclose(locs["lpy"].to_numpy() * 108.0, df["sigma_y_nm"], rtol=1e-5)
    assert {"frame", "x", "y", "photons", "sx", "sy", "bg", "lpx", "lpy"} <= set(locs.columns)


def test_picasso_keeps_molecules_without_a_kde_mass(tmp_path):
    """A molecule the weighing added (a pair member) has no KDE peak of its own: kde_mass NaN in the table, 0 in
    the Picasso file, whose loader drops every row holding a NaN."""
    io_picasso = pytest.importorskip("picasso.io")
    df = _molecules(12)
    df.loc[[3, 7], "kde_mass"] = np.nan
    write_localizations(df, tmp_path / "locs.hdf5", pixel_size_nm=108.0, shape=(10, 32, 32), psf_sigma_px=1.0,
                        samples=False)
    locs, _ = io_picasso.load_locs(str(tmp_path / "locs.hdf5"))
    assert len(locs) == len(df) and (locs["kde_mass"].to_numpy()[[3, 7]] == 0).all()


def test_write_localizations_by_suffix(tmp_path):
    df = _molecules(5)
    kw = dict(pixel_size_nm=108.0, shape=(10, 32, 32), psf_sigma_px=1.2)
    (csv,) = write_localizations(df, tmp_path / "a.csv", samples=False, **kw)
    header = csv.read_text().splitlines()[0]
    # probability wherever the table has it (DeepSTORM mode's arbitration weighs molecules too); n_samples with samples
    assert header.endswith('"uncertainty [nm]","offset [photon]","kde_mass","probability"')
    assert read_thunderstorm_csv(csv)["sigma_nm"].eq(1.2 * 108.0).all()
    (csv,) = write_localizations(df, tmp_path / "b.csv", samples=True, **kw)
    assert csv.read_text().splitlines()[0].endswith('"kde_mass","probability","n_samples"')
    assert [p.name for p in write_localizations(df, tmp_path / "c.h5", samples=True, **kw)] == ["c.h5", "c.yaml"]
    assert localization_format("x.HDF5") == "picasso"
    with pytest.raises(ValueError, match=r"\.csv.*\.hdf5"):
        write_localizations(df, tmp_path / "d.txt", samples=True, **kw)
