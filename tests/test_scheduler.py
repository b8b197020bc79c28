"""The gamma-conditioned DDPM scheduler against closed forms and Monte Carlo."""

import math

import numpy as np
import pytest
import torch

from smlm_diffusers import GammaDDPMScheduler
from smlm_diffusers.schedulers import gammas_for


def test_paper_schedule_never_reaches_noise():
    # docs/conventions.md: T = 100, beta 1e-4..1e-2 gives gamma_T ~ 0.60 and L_T ~ 0.67 bits/dim
    s = GammaDDPMScheduler(num_train_timesteps=100, beta_schedule="paper", beta_start=1e-4, beta_end=1e-2)
    expected = np.prod(1 - np.linspace(1e-4, 1e-2, 100))
    assert s.gamma_T == pytest.approx(expected, rel=1e-5)
    assert s.gamma_T == pytest.approx(0.60, abs=0.01)
    assert s.prior_kl_bits() == pytest.approx(0.67, abs=0.01)


def test_default_schedule_reaches_noise():
    s = GammaDDPMScheduler()
    assert s.prior_kl_bits() <= 1e-5
    # closed form of the KL for a tiny gamma: ~ 0.5 * gamma * x0^2 / ln 2 (+ O(gamma^2))
    assert s.prior_kl_bits(data_rms=3.0) == pytest.approx(0.5 * s.gamma_T * 9 / math.log(2), rel=1e-3)


@pytest.mark.parametrize("name", ["cosine", "linear", "paper"])
def test_named_schedules_decrease(name):
    g = gammas_for(name, 50)
    assert np.all(np.diff(g) < 0) and 0 < g[-1] < g[0] < 1


def test_training_gammas_follow_the_piecewise_uniform_law():
    s = GammaDDPMScheduler(num_train_timesteps=20)
    gen = torch.Generator().manual_seed(0)
    g = s.sample_gammas(200_000, generator=gen)
    tg = s.train_gammas.double()
    assert float(g.min()) >= float(tg[-1]) and float(g.max()) <= 1.0
    # p(gamma) = 1/T sum_t U(gamma_t, gamma_{t-1}): mean is the mean of the interval midpoints
    expected_mean = float(((tg[1:] + tg[:-1]) / 2).mean())
    assert float(g.double().mean()) == pytest.approx(expected_mean, abs=3e-3)
    # each interval gets 1/T of the draws
    counts = torch.histc(g.double(), bins=1, min=float(tg[5]), max=float(tg[4]))
    assert float(counts) / len(g) == pytest.approx(1 / 20, abs=3e-3)


def test_noise_level_embedding_is_a_spread_float():
    s = GammaDDPMScheduler()
    t = s.set_timesteps(20)
    assert t.dtype == torch.float32 and len(t) == 20
    assert torch.all(t[1:] < t[:-1])  # high noise (large embedding) first
    assert float(t.min()) >= 0 and float(t.max()) <= 1000
    # UNet2DModel's sinusoidal embedding needs distinct values well apart, not all in [0, 1]
    assert float((t[:-1] - t[1:]).min()) > 5


@pytest.mark.parametrize("prediction_type", ["v_prediction", "epsilon"])
def test_exact_model_output_recovers_the_clean_sample(prediction_type):
    s = GammaDDPMScheduler(prediction_type=prediction_type)
    gen = torch.Generator().manual_seed(1)
    x0 = torch.randn(4, 1, 8, 8, generator=gen)
    eps = torch.randn(4, 1, 8, 8, generator=gen)
    s.set_timesteps(10)
    i = 3
    gamma = s.gammas[i].expand(4)
    y_t = s.add_noise(x0, eps, gamma)
    target = s.training_target(x0, eps, gamma)
    out = s.step(target, i, y_t, sampler="ddim")
    torch.testing.assert_close(out.pred_original_sample, x0, atol=1e-5, rtol=1e-5)
    g_prev = s.gammas[i + 1]
    torch.testing.assert_close(out.prev_sample, g_prev.sqrt() * x0 + (1 - g_prev).sqrt() * eps, atol=1e-5, rtol=1e-5)


def test_ancestral_chain_has_the_forward_marginals():
    """With an oracle that always predicts the true y_0 (a point mass), every ancestral
    step must land on q(y_s | y_0) = N(sqrt(g_s) y_0, 1 - g_s): Monte Carlo over many chains."""
    s = GammaDDPMScheduler(prediction_type="epsilon")
    s.set_timesteps(12)
    gen = torch.Generator().manual_seed(2)
    n = 200_000
    x0 = torch.full((n, 1, 1, 1), 0.7)
    y = torch.randn(n, 1, 1, 1, generator=gen)
    for i in range(len(s.gammas) - 1):
        g = s.gammas[i]
        eps_oracle = (y - g.sqrt() * x0) / (1 - g).sqrt()
        y = s.step(eps_oracle, i, y, generator=gen).prev_sample
        gp = float(s.gammas[i + 1])
        assert float(y.mean()) == pytest.approx(math.sqrt(gp) * 0.7, abs=5e-3)
        assert float(y.var()) == pytest.approx(1 - gp, rel=2e-2, abs=2e-4)


def test_set_timesteps_limits_and_explicit_schedules():
    s = GammaDDPMScheduler(max_inference_steps=100)
    with pytest.raises(ValueError, match="max_inference_steps"):
        s.set_timesteps(101)
    with pytest.raises(ValueError, match="increase"):
        s.set_timesteps(gammas=[0.5, 0.1])
    s.set_timesteps(gammas=[1e-4, 0.1, 0.9, 0.999])
    assert s.num_inference_steps == 4
    for name in ("cosine", "linear", "logsnr"):
        s.set_timesteps(15, schedule=name)
        assert len(s.timesteps) == 15 and torch.all(s.gammas[1:] > s.gammas[:-1])
    with pytest.raises(ValueError, match="searched"):
        s.set_timesteps(10, schedule="searched")


def test_config_round_trip(tmp_path):
    s = GammaDDPMScheduler(num_train_timesteps=100, beta_schedule="paper", searched_gammas=[1e-3, 0.5, 0.99])
    s.save_pretrained(tmp_path)
    t = GammaDDPMScheduler.from_pretrained(tmp_path)
    assert t.gamma_T == pytest.approx(s.gamma_T)
    t.set_timesteps(schedule="searched")
    assert t.num_inference_steps == 3


def test_bad_arguments():
    with pytest.raises(ValueError, match="prediction_type"):
        GammaDDPMScheduler(prediction_type="sample")
    with pytest.raises(ValueError, match="schedule"):
        gammas_for("quadratic", 10)
    with pytest.raises(RuntimeError, match="set_timesteps"):
        GammaDDPMScheduler().step(torch.zeros(1), 0, torch.zeros(1))
