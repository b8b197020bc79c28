"""Per-molecule aggregation of sample localizations: association, probability, calibrated sigma."""

import numpy as np
import pandas as pd
import pytest

from smlm_diffusers.localization.uncertainty import aggregate_samples, small_sample_factor


def test_small_sample_factor_gives_exact_coverage():
    """Monte Carlo: truth and K posterior draws i.i.d. -> |truth - mean| <= sigma 68.3% of the time."""
    rng = np.random.default_rng(0)
    for k in (2, 4, 8, 32):
        draws = rng.normal(size=(200_000, k + 1))
        truth, samples = draws[:, 0], draws[:, 1:]
        sigma = samples.std(axis=1, ddof=1) * small_sample_factor(np.full(len(draws), k))
        coverage = np.mean(np.abs(truth - samples.mean(axis=1)) <= sigma)
        assert coverage == pytest.approx(0.6827, abs=0.005), k
    # without the correction 8 samples under-cover, which is what the factor fixes
    draws = rng.normal(size=(200_000, 9))
    naive = np.mean(np.abs(draws[:, 0] - draws[:, 1:].mean(1)) <= draws[:, 1:].std(1, ddof=1))
    assert naive < 0.65
    assert np.isnan(small_sample_factor(np.array([1]))[0])


def _sample_tables(positions, k, sigma, rng, drop=None):
    tables = []
    for s in range(k):
        rows = [(x + rng.normal(0, sigma), y + rng.normal(0, sigma)) for i, (x, y) in enumerate(positions)
                if not (drop and s in drop.get(i, ()))]
        tables.append(pd.DataFrame(rows, columns=["x_nm", "y_nm"]))
    return tables


def test_association_probability_and_spread():
    rng = np.random.default_rng(1)
    truth = [(100.0, 100.0), (400.0, 120.0), (250.0, 500.0)]
    k = 8
    # molecule 2 is missing from 6 of 8 samples
    dets = _sample_tables(truth, k, 5.0, rng, drop={2: range(6)})
    reference = pd.DataFrame(truth[:2], columns=["x_nm", "y_nm"])  # the mean KDE missed molecule 2
    mol = aggregate_samples(dets, reference, link_radius_nm=40.0).sort_values("x_nm").reset_index(drop=True)
    assert len(mol) == 3
    assert list(mol["probability"]) == [1.0, 0.25, 1.0]
    assert list(mol["n_samples"]) == [8, 2, 8]
    full = mol[mol["n_samples"] == 8]
    assert np.all(np.abs(full["x_nm"].to_numpy() - np.array([100.0, 400.0])) < 10)
    # reported sigma ~ 5 nm spread times the small-sample factor, not 0 and not the separation
    assert full["sigma_x_nm"].between(2, 12).all()
    assert len(aggregate_samples(dets, reference, 40.0, min_probability=0.5)) == 2


def test_no_detections_gives_an_empty_table():
    empty = pd.DataFrame(columns=["x_nm", "y_nm"])
    mol = aggregate_samples([empty] * 4, empty)
    assert len(mol) == 0 and "sigma_x_nm" in mol
