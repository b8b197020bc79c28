"""TIFF stacks and ThunderSTORM CSV files round-trip through tmp_path."""

import warnings

import numpy as np
import pandas as pd
import pytest
import tifffile

from smlm_diffusers.io import (
    iter_tiff_frames,
    read_thunderstorm_csv,
    read_tiff_stack,
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
