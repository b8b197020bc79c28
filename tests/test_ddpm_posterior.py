"""benchmarks.ddpm_posterior: its metrics on synthetic detections with known answers, its sampling against DDPM
mode's own (sample_everywhere), and one tiny end-to-end run on the shipped model."""

import json

import numpy as np
import pandas as pd
import pytest
import torch
from tiny_models import tiny_pipeline

from benchmarks import ddpm_posterior as dp
from benchmarks import report


def table(rows, columns=("frame", "x_nm", "y_nm")) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=list(columns))


def detections(rows) -> pd.DataFrame:
    return table(rows, ("frame", "sample", "x_nm", "y_nm"))


def test_sample_hit_counts_samples_not_detections_and_stays_in_its_frame():
    gt = table([(0, 1000.0, 1000.0), (0, 1200.0, 1000.0), (1, 1000.0, 1000.0)])
    det = detections([(0, 0, 1030.0, 1000.0), (0, 0, 1000.0, 1040.0),  # sample 0 holds emitter 0 twice: counts once
                      (0, 1, 1000.0, 1000.0),
                      (0, 2, 1200.0, 1100.0),                         # 100 nm from emitter 1: no hit
                      (0, 3, 1000.0, 1000.0),                         # frame 0 only: not frame 1's emitter
                      (1, 3, 1050.0, 1000.0)])
    np.testing.assert_allclose(dp.sample_hit(gt, det, 4), [0.75, 0.0, 0.25])
    np.testing.assert_array_equal(dp.has_neighbour(gt), [True, True, False])  # 200 nm apart, within 300 nm
    np.testing.assert_allclose(dp.sample_hit(gt, detections([]), 4), [0.0, 0.0, 0.0])


def test_proposal_recall_is_one_when_the_samples_propose_exactly_the_missed_emitters():
    gt = table([(0, 1000.0, 1000.0), (0, 3000.0, 1000.0), (0, 5000.0, 5000.0), (1, 2000.0, 2000.0)])
    molecules = table([(0, 1010.0, 1000.0), (0, 3000.0, 1020.0)])  # emitters 2 and 3 are missed
    det = detections([(0, 0, 1000.0, 1000.0), (0, 1, 3000.0, 1000.0),  # copies of the existing molecules
                      (0, 0, 5020.0, 5000.0), (1, 1, 2000.0, 2030.0)])  # the misses, each by one sample
    out = dp.proposal_recall(gt, molecules, det)
    assert out["missed"] == 2 and out["proposal_recall"] == 1.0 and out["missed_hit"] == 1.0
    assert out["missed_apart"] == 1.0
    only_copies = dp.proposal_recall(gt, molecules, det.iloc[:2])
    assert only_copies["proposal_recall"] == 0.0 and only_copies["missed_hit"] == 0.0


def test_a_detection_near_an_existing_molecule_is_not_a_proposal():
    """The missed emitter of a close pair, hit only by a detection that is within 60 nm of the existing molecule."""
    gt = table([(0, 1000.0, 1000.0), (0, 1050.0, 1000.0)])
    molecules = table([(0, 1000.0, 1000.0)])
    near_both = dp.proposal_recall(gt, molecules, detections([(0, 0, 1040.0, 1000.0)]))
    assert near_both["missed"] == 1 and near_both["proposal_recall"] == 0.0 and near_both["missed_hit"] == 1.0
    assert near_both["missed_apart"] == 0.0
    far_side = dp.proposal_recall(gt, molecules, detections([(0, 0, 1100.0, 1000.0)]))  # 100 nm from the molecule
    assert far_side["proposal_recall"] == 1.0
    assert np.isnan(dp.proposal_recall(gt.iloc[:1], molecules, detections([]))["proposal_recall"])  # nothing missed


def test_link_samples_takes_one_detection_per_sample_and_cluster():
    det = detections([(0, 0, 1000.0, 1000.0), (0, 1, 1020.0, 1000.0), (0, 1, 1040.0, 1000.0),
                      (0, 2, 3000.0, 3000.0), (1, 0, 1000.0, 1000.0)])
    clusters = dp.link_samples(det).sort_values(["frame", "x_nm"]).reset_index(drop=True)
    assert list(clusters["n_samples"]) == [2, 1, 1, 1]  # sample 1's second detection starts its own cluster
    assert list(clusters["frame"]) == [0, 0, 0, 1]
    assert clusters.loc[0, "x_nm"] == pytest.approx(1010.0)


def frequency_detections(k: int, true_xy, frequencies, false_xy, false_frequencies):
    rows = []
    for (x, y), f in list(zip(true_xy, frequencies)) + list(zip(false_xy, false_frequencies)):
        rows += [(0, s, x, y) for s in range(round(f * k))]
    return detections(rows)


def test_calibrated_frequencies_give_zero_ece_and_confident_false_ones_do_not():
    k = 10
    truth = [(1000.0 * (i + 1), 1000.0) for i in range(12)]
    gt = table([(0, x, y) for x, y in truth])
    # 10 clusters in every sample, all true; 4 in half of them, 2 true and 2 where nothing is
    det = frequency_detections(k, truth[:12], [1.0] * 10 + [0.5] * 2, [(1000.0, 5000.0), (3000.0, 5000.0)], [0.5] * 2)
    clusters = dp.link_samples(det)
    assert len(clusters) == 14
    assert dp.frequency_ece(gt, clusters, k) == pytest.approx(0.0, abs=1e-12)
    wrong = frequency_detections(k, [], [], [(1000.0, 5000.0), (3000.0, 5000.0)], [1.0, 1.0])
    assert dp.frequency_ece(gt, dp.link_samples(wrong), k) == pytest.approx(1.0)
    # every sample holds two detections 50 nm apart beside one true emitter: two clusters at frequency 1, and
    # the one-to-one match makes one of them false
    twice = detections([(0, s, 1000.0, 1000.0) for s in range(k)] + [(0, s, 1050.0, 1000.0) for s in range(k)])
    assert dp.frequency_ece(gt.iloc[:1], dp.link_samples(twice), k) == pytest.approx(0.5)


def test_merge_label_replaces_only_its_own_rows(tmp_path):
    csv = tmp_path / "t.csv"
    pd.DataFrame({"label": ["before", "after"], "samples": [8, 8], "ece": [0.1, 0.2]}).to_csv(csv, index=False)
    merged = dp.merge_label(csv, pd.DataFrame({"label": ["after", "after"], "samples": [8, 16], "ece": [0.3, 0.4]}))
    assert list(merged["label"]) == ["before", "after", "after"] and list(merged["ece"]) == [0.1, 0.3, 0.4]


def test_posterior_draws_are_ddpm_modes_samples_everywhere():
    """The benchmark's draws are the pipeline's own with sample_everywhere=True: the same seed gives the
    pipeline's samples (after its phase-bias removal and clipping)."""
    from smlm_diffusers.models import layout
    from smlm_diffusers.pipelines.sampling import remove_phase_bias

    pipe = tiny_pipeline(in_channels=3, threshold=1e3, layout="camera")  # no molecules: nothing to weigh
    frames = np.random.default_rng(0).poisson(120.0, size=(1, 16, 16)).astype(np.float32)
    out = pipe(frames, num_samples=2, num_inference_steps=2, generator=torch.Generator().manual_seed(3),
               sample_everywhere=True, mixed_precision="no")
    _, residuals, covered, seconds = dp.posterior_draws(pipe, frames, 2, 2, torch.Generator().manual_seed(3),
                                                        mixed_precision="no")
    y_hat = pipe.kde_net.predict(frames, camera=pipe.camera, mixed_precision="no")
    mine = pipe.kde_scaling.from_unit(y_hat + remove_phase_bias(residuals, covered, layout.factor_of(pipe.unet.config)))
    np.testing.assert_allclose(mine.clamp(min=0.0).numpy(), out.samples, atol=1e-5)
    assert covered.all() and seconds > 0


def test_quick_run_writes_its_rows_command_and_report_section(tmp_path):
    """``--quick`` on the shipped model: 1 frame, K = 2, 1 step (a few seconds)."""
    torch.set_num_threads(1)
    table_out = dp.main(["--quick", "--out", str(tmp_path), "--label", "before"])
    assert len(table_out) == 1 and table_out.loc[0, "samples"] == 2 and table_out.loc[0, "steps"] == 1
    row = pd.read_csv(tmp_path / dp.CSV).iloc[0]
    assert row["label"] == "before" and row["emitters"] > 20
    assert 0.8 <= row["sample_hit"] <= 1.0 and 0.0 <= row["ece"] <= 1.0 and row["s_per_frame"] > 0
    meta = json.loads((tmp_path / "ddpm_posterior.json").read_text())
    assert meta["commands"]["before"].startswith("python -m benchmarks.ddpm_posterior --quick")
    md = "\n".join(report.posterior_markdown(tmp_path))
    assert "before" in md and "proposal recall" in md and meta["commands"]["before"] in md
