"""Optics (camera + PSF): derivatives, the 3D CRLB against the 3D MLE, z calibration, optics.yaml in the CLI."""

import numpy as np
import pandas as pd
import pytest
import tifffile
import torch

import smlm_diffusers as sd
from smlm_diffusers import cli
from smlm_diffusers.fisher import crlb, crlb_3d
from smlm_diffusers.io import read_picasso_hdf5, read_thunderstorm_csv, write_picasso_hdf5, write_thunderstorm_csv
from smlm_diffusers.localization.spot_fit import fit_3d
from smlm_diffusers.optics import AstigmaticPSF, GaussianPSF, Optics, psf_from_dict
from smlm_diffusers.optics.calibration import crossing_nm, shift_origin

ASTIG = AstigmaticPSF(1.1, 1.25, -320.0, 280.0, 420.0, 380.0, 0.1, 0.05, -0.1, 0.02, (0.0, 0.3, 0.1), (0.0, -0.2),
                      (-700.0, 700.0))
CAM = sd.Camera(pixel_size_nm=100.0)


@pytest.mark.parametrize("psf", [GaussianPSF(1.3), ASTIG], ids=["gaussian", "astigmatic"])
def test_derivatives_match_finite_differences(psf):
    g = torch.Generator().manual_seed(0)
    x = 5.0 + torch.rand(6, generator=g, dtype=torch.float64)
    y = 5.0 + torch.rand(6, generator=g, dtype=torch.float64)
    z = -500.0 + 1000.0 * torch.rand(6, generator=g, dtype=torch.float64)
    frac, d = psf.fractions(x, y, (11, 12), z_nm=z, derivatives=True)
    assert frac.shape == (6, 11, 12)
    for name, h in (("x", 1e-5), ("y", 1e-5), ("z", 1e-3)):
        args = {"x": x, "y": y, "z": z}
        plus, minus = dict(args), dict(args)
        plus[name], minus[name] = args[name] + h, args[name] - h
        num = (psf.fractions(plus["x"], plus["y"], (11, 12), z_nm=plus["z"])
               - psf.fractions(minus["x"], minus["y"], (11, 12), z_nm=minus["z"])) / (2 * h)
        scale = num.abs().max()
        if name == "z" and psf.ndim == 2:
            assert scale == 0 and d["z"].abs().max() == 0
            continue
        assert scale > 0
        torch.testing.assert_close(d[name], num, atol=1e-6 * float(scale), rtol=1e-5)


def test_gaussian_psf_is_the_simulator_and_the_2d_crlb():
    x, y = torch.tensor([[3.3, 7.9]]), torch.tensor([[4.1, 2.2]])
    ph = torch.tensor([[1000.0, 500.0]])
    a = GaussianPSF(1.2).render(x, y, ph, (10, 12))
    b = sd.simulation.render_psfs(x, y, ph, (10, 12), 1.2)
    torch.testing.assert_close(a, b)
    # the 3D CRLB of a z-independent PSF is singular in z; x, y of a 2D fit through the PSF object agree
    cx, cy = crlb(1000.0, 20.0, 1.2, camera=CAM)
    info = sd.fisher_information(1000.0, 20.0, 1.2)
    assert cx > 0 and cy == pytest.approx(cx) and info.shape == (4, 4)


@pytest.mark.parametrize("photons, z", [(5000.0, -400.0), (1000.0, 250.0)])
def test_3d_crlb_matches_monte_carlo_of_the_3d_mle(photons, z):
    rng = np.random.default_rng(0)
    r, k = 13, 2000
    x, y = r / 2 + rng.uniform(-0.5, 0.5, k), r / 2 + rng.uniform(-0.5, 0.5, k)
    zz = np.full(k, z)
    frac = ASTIG.fractions(torch.tensor(x), torch.tensor(y), (r, r), z_nm=torch.tensor(zz)).numpy()
    mu = photons * frac + 20.0
    data = rng.poisson(mu) + rng.normal(0.0, CAM.read_noise, mu.shape)
    fit = fit_3d(data, ASTIG, CAM.read_noise)
    assert fit.ok.mean() > 0.99
    cx, cy, cz = crlb_3d(photons, 20.0, ASTIG, zz, CAM, x_px=x, y_px=y, roi_size=r)
    ok = fit.ok
    for err, bound in (((fit.theta[:, 0] - x) * 100.0, cx), ((fit.theta[:, 1] - y) * 100.0, cy),
                       (fit.theta[:, 2] - zz, cz)):
        assert np.var(err[ok]) / np.mean(bound[ok]) == pytest.approx(1.0, abs=0.10)
    # the reported sigma_z is the CRLB at the fit: about 68% coverage
    assert np.mean(np.abs(fit.theta[ok, 2] - z) <= np.sqrt(fit.crlb[ok, 2])) == pytest.approx(0.683, abs=0.04)


def _bead_stack(psf, nz=61, step=25.0, seed=1):
    rng = np.random.default_rng(seed)
    z = (np.arange(nz) - (nz - 1) / 2) * step
    img = np.full((nz, 64, 64), 30.0)
    for r, c in [(12.3, 15.7), (40.2, 20.9), (25.5, 48.1), (50.4, 50.2)]:
        img += 20000.0 * psf.fractions(torch.full((nz,), c), torch.full((nz,), r), (64, 64),
                                       z_nm=torch.tensor(z)).numpy()
    return CAM.photons_to_adu(rng.poisson(img) + rng.normal(0, CAM.read_noise, img.shape))


def test_calibrate_z_recovers_a_known_astigmatic_model(tmp_path, capsys):
    path = tmp_path / "beads.tif"
    tifffile.imwrite(path, _bead_stack(ASTIG).astype(np.float32))
    out = tmp_path / "optics.yaml"
    assert cli.main(["calibrate-z", str(path), "--z-step", "25", "-o", str(out), "--pixel-size", "100"]) == 0
    assert (tmp_path / "optics.png").stat().st_size > 10_000
    optics = Optics.from_yaml(out)
    assert optics.camera.pixel_size_nm == 100.0 and optics.psf.ndim == 3
    truth = shift_origin(ASTIG, crossing_nm(ASTIG))  # the calibration puts z = 0 where sigma_x = sigma_y
    zz = torch.linspace(-500.0, 500.0, 21, dtype=torch.float64)
    a, b = truth.axes(zz), optics.psf.axes(zz)
    for key in ("sx", "sy"):
        assert (a[key] - b[key]).abs().max() < 0.03, key
    for key in ("ox", "oy"):
        assert (a[key] - b[key]).abs().max() < 0.02, key
    assert "beads" in capsys.readouterr().out


def test_optics_yaml_round_trip_and_component(tmp_path):
    optics = Optics(CAM, ASTIG)
    optics.to_yaml(tmp_path / "o.yaml", {"note": {"a": 1}})
    assert Optics.from_yaml(tmp_path / "o.yaml") == optics
    assert psf_from_dict(GaussianPSF(1.4).to_dict()) == GaussianPSF(1.4)
    with pytest.raises(ValueError, match="unknown astigmatic PSF keys"):
        psf_from_dict({"type": "astigmatic", "sigma0_px": 1.0})
    from smlm_diffusers.optics.component import OpticsConfig

    OpticsConfig.from_optics(optics).save_pretrained(tmp_path / "optics")
    assert OpticsConfig.from_pretrained(tmp_path / "optics").optics == optics


def test_a_2d_folder_saved_before_optics_still_loads(tiny_model_dir):
    pipe = sd.SMLMDiffusionPipeline.from_pretrained(tiny_model_dir)
    cfg = pipe.kde_net.config
    optics = Optics.from_flat(**dict(cfg))
    assert optics.psf == GaussianPSF(cfg.psf_sigma_px)
    assert optics.camera.isclose(pipe.kde_net.camera)


def test_estimate_optics_yaml_makes_localize_use_its_psf(tmp_path, tiny_model_dir, monkeypatch):
    cam = sd.Camera(pixel_size_nm=100.0, offset=200.0, gain=2.0, read_noise=2.0)
    frames, _ = sd.simulate(n_frames=40, shape=(40, 40), density=0.15, photons=2000, background=20, sigma_px=1.4,
                            seed=3, camera=cam)
    path = tmp_path / "movie.tif"
    tifffile.imwrite(path, frames)
    out = tmp_path / "optics.yaml"
    assert cli.main(["estimate", str(path), "--pixel-size", "100", "--offset", "200", "--gain", "2",
                     "--read-noise", "2", "--out", str(out)]) == 0
    optics = Optics.from_yaml(out)
    assert optics.psf.sigma_px == pytest.approx(1.4, rel=0.05) and optics.camera == cam
    seen = {}
    import smlm_diffusers.movie as movie

    def spy(pipe, stack, work, **kwargs):
        # one resolved Optics reaches the runner; the network's config is not rewritten to pass it
        seen["sigma"], seen["camera"] = float(kwargs["optics"].psf.sigma_px), kwargs["optics"].camera
        seen["net_sigma"] = float(pipe.kde_net.config.psf_sigma_px)
        raise KeyboardInterrupt  # stop after the setup: what the run would use is what is asserted

    monkeypatch.setattr(movie, "localize_movie", spy)
    cli.main(["localize", str(path), "-o", str(tmp_path / "l.csv"), "--model", str(tiny_model_dir), "--mode",
              "deepstorm", "-q", "--optics", str(out), "--skip-camera-check"])
    assert seen["sigma"] == pytest.approx(optics.psf.sigma_px) and seen["camera"] == cam
    cli.main(["localize", str(path), "-o", str(tmp_path / "l.csv"), "--model", str(tiny_model_dir), "--mode",
              "deepstorm", "-q", "--optics", str(out), "--psf-sigma", "1.7", "--skip-camera-check"])
    assert seen["sigma"] == 1.7 and seen["net_sigma"] != 1.7


def test_3d_localize_from_the_cli_writes_z_columns(tmp_path):
    frames, gt = sd.simulate(n_frames=6, shape=(48, 48), photons=4000, background=20, seed=4, structure="grid",
                             spacing_px=16, jitter_px=2, camera=CAM, psf=ASTIG, z_nm=(-500, 500))
    assert "z_nm" in gt and gt["z_nm"].between(-500, 500).all()
    path = tmp_path / "as.tif"
    tifffile.imwrite(path, frames)
    yml = tmp_path / "optics.yaml"
    Optics(CAM, ASTIG).to_yaml(yml)
    csv = tmp_path / "l.csv"
    assert cli.main(["localize", str(path), "-o", str(csv), "--optics", str(yml), "-q"]) == 0
    head = csv.read_text().splitlines()[0]
    assert '"z [nm]"' in head and '"uncertainty_z [nm]"' in head
    locs = read_thunderstorm_csv(csv)
    assert len(locs) == len(gt)
    m = locs.merge(gt, on="frame", suffixes=("", "_gt"))
    m = m[np.hypot(m["x_nm"] - m["x_nm_gt"], m["y_nm"] - m["y_nm_gt"]) < 100]
    assert len(m) == len(gt) and np.sqrt(np.mean((m["z_nm"] - m["z_nm_gt"]) ** 2)) < 40
    assert (locs["sigma_z_nm"] > 0).all()


def test_3d_tables_round_trip(tmp_path):
    df = pd.DataFrame({"frame": [0, 2], "x_nm": [150.0, 920.0], "y_nm": [30.0, 480.0], "z_nm": [-120.5, 330.0],
                       "sigma_x_nm": [5.0, 6.0], "sigma_y_nm": [5.5, 6.5], "sigma_z_nm": [20.0, 25.0],
                       "photons": [1000.0, 2000.0]})
    write_thunderstorm_csv(df, tmp_path / "t.csv")
    back = read_thunderstorm_csv(tmp_path / "t.csv")
    np.testing.assert_allclose(back["z_nm"], df["z_nm"])
    np.testing.assert_allclose(back["sigma_z_nm"], df["sigma_z_nm"])
    h5, _ = write_picasso_hdf5(df.assign(background=5.0), tmp_path / "t.hdf5", 3, 10, 10, 100.0, 1.2)
    import h5py

    with h5py.File(h5) as f:
        locs = f["locs"][...]
    np.testing.assert_allclose(locs["z"], df["z_nm"], rtol=1e-6)  # Picasso: z and lpz in nm
    np.testing.assert_allclose(locs["lpz"], df["sigma_z_nm"], rtol=1e-6)
    back, _ = read_picasso_hdf5(h5, 100.0)
    np.testing.assert_allclose(back["z_nm"], df["z_nm"], rtol=1e-6)


def test_3d_localizer_takes_seeds_such_as_a_networks():
    frames, gt = sd.simulate(n_frames=3, shape=(48, 48), photons=4000, background=20, seed=5, structure="grid",
                             spacing_px=16, jitter_px=2, camera=CAM, psf=ASTIG, z_nm=(-500, 500))
    from smlm_diffusers.localization.localize3d import localize_3d

    seeded = localize_3d(frames, Optics(CAM, ASTIG), seeds=gt[["frame", "x_nm", "y_nm"]] + [0, 60.0, -60.0],
                         detect_too=False)
    both = localize_3d(frames, Optics(CAM, ASTIG), seeds=gt[["frame", "x_nm", "y_nm"]])  # duplicates merged
    assert len(seeded) == len(gt) == len(both)
    np.testing.assert_allclose(np.sort(seeded["z_nm"]), np.sort(gt["z_nm"]), atol=60)


def test_3d_localizer_drops_seeds_in_plain_background():
    """A seed where no molecule is fits a few hundred photons of noise at an SNR near 2: dropped (``min_snr``)."""
    from smlm_diffusers.localization.localize3d import localize_3d

    frames, gt = sd.simulate(n_frames=4, shape=(48, 48), photons=3000, background=100, seed=6, structure="grid",
                             spacing_px=24, jitter_px=1, camera=CAM, psf=ASTIG, z_nm=(-300, 300))
    empty = pd.DataFrame({"frame": np.repeat(np.arange(4), 2), "x_nm": np.tile([2400.0, 2400.0], 4),
                          "y_nm": np.tile([2400.0, 600.0], 4)})
    empty = empty[np.min(np.hypot(empty["x_nm"].to_numpy()[:, None] - gt["x_nm"].to_numpy()[None],
                                  empty["y_nm"].to_numpy()[:, None] - gt["y_nm"].to_numpy()[None]), axis=1) > 1000]
    assert len(empty) == 8
    seeds = pd.concat([gt[["frame", "x_nm", "y_nm"]], empty], ignore_index=True)
    kept = localize_3d(frames, Optics(CAM, ASTIG), seeds=seeds, detect_too=False)
    everything = localize_3d(frames, Optics(CAM, ASTIG), seeds=seeds, detect_too=False, min_snr=0.0, min_photons=0.0)
    assert len(kept) == len(gt)
    assert len(everything) > len(gt)  # without the test, the empty seeds' noise fits are kept
