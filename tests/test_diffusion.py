"""Schedules, forward noising, targets and the training loss match their formulas."""

import math

import pytest
import torch
from diffusers import DDPMScheduler

from mrnet_utils.config import DiffusionConfig
from mrnet_utils.diffusion.losses import (
    diffusion_loss,
    loss_weight,
    sample_timesteps,
    training_target,
)
from mrnet_utils.diffusion.schedules import (
    NoiseSchedule,
    cosine_betas,
    linear_betas,
    q_sample,
    snr,
)
from mrnet_utils.errors import MRNetError


def _schedule(schedule="linear", prediction="epsilon", T=1000):
    return NoiseSchedule.from_config(DiffusionConfig(timesteps=T, schedule=schedule, prediction=prediction))


def test_linear_betas_formula_and_diffusers():
    betas = linear_betas(2000, 0.00085, 0.012)
    assert betas.dtype == torch.float64 and betas.shape == (2000,)
    expected = torch.tensor([0.00085 + (0.012 - 0.00085) * i / 1999 for i in range(2000)], dtype=torch.float64)
    torch.testing.assert_close(betas, expected, rtol=0, atol=1e-12)
    # diffusers' "linear" is linear in beta (its "scaled_linear" would be linear in sqrt(beta)).
    reference = DDPMScheduler(num_train_timesteps=2000, beta_start=0.00085, beta_end=0.012, beta_schedule="linear")
    assert (betas - reference.betas.double()).abs().max() < 1e-6


def test_cosine_betas_formula_and_diffusers():
    T, s = 1000, 0.008
    betas = cosine_betas(T)
    f = [math.cos((t / T + s) / (1 + s) * math.pi / 2) ** 2 for t in range(T + 1)]
    abar = torch.tensor([f[t] / f[0] for t in range(1, T + 1)], dtype=torch.float64)
    uncapped = betas < 0.999
    assert uncapped[:-1].all() and not uncapped[-1]  # only the very last step hits the cap
    torch.testing.assert_close(torch.cumprod(1 - betas, 0)[uncapped], abar[uncapped], rtol=1e-9, atol=1e-12)
    reference = DDPMScheduler(num_train_timesteps=T, beta_schedule="squaredcos_cap_v2")
    assert (betas - reference.betas.double()).abs().max() < 1e-6


@pytest.mark.parametrize("schedule", ["linear", "cosine"])
@pytest.mark.parametrize("T", [100, 2000])
def test_alphas_cumprod_decreasing_in_unit_interval(schedule, T):
    abar = _schedule(schedule, T=T).alphas_cumprod
    assert abar.shape == (T,)
    assert (abar > 0).all() and (abar < 1).all()
    assert (abar[1:] < abar[:-1]).all()


def test_from_config_and_validation():
    schedule = NoiseSchedule.from_config(DiffusionConfig(timesteps=50, schedule="cosine", prediction="v"))
    assert schedule.timesteps == 50 and schedule.prediction == "v"
    torch.testing.assert_close(schedule.betas, cosine_betas(50))
    with pytest.raises(MRNetError, match="prediction"):
        NoiseSchedule(linear_betas(10, 1e-4, 0.02), "x0")
    with pytest.raises(MRNetError, match="beta_end"):
        NoiseSchedule.from_config(DiffusionConfig(timesteps=10, beta_end=1.5))
    # betas must lie in the open interval (0, 1): beta = 0 adds no noise, beta = 1 leaves no signal
    for start, end in ((0.0, 0.02), (1e-4, 1.0)):
        with pytest.raises(MRNetError, match=rf"betas must lie in \(0, 1\): check beta_start={start}, beta_end={end}"):
            NoiseSchedule.from_config(DiffusionConfig(timesteps=10, beta_start=start, beta_end=end))
    for betas in (torch.full((1,), 0.1, dtype=torch.float64), torch.full((2, 3), 0.1, dtype=torch.float64)):
        with pytest.raises(MRNetError, match=rf"betas must be a 1-D tensor of at least 2 steps, got shape "
                                             rf"\{tuple(betas.shape)}".replace(",)", r",\)").replace("3)", r"3\)")):
            NoiseSchedule(betas, "epsilon")


@pytest.mark.parametrize("t_value", [0, 300, 999])
def test_q_sample_mean_and_variance(t_value):
    """Over many noise draws with x0 fixed, x_t has mean sqrt(abar) x0 and variance 1 - abar."""
    schedule = _schedule()
    n = 20_000
    x0 = torch.tensor([[[[-1.0, -0.3], [0.4, 1.0]]]]).expand(n, 1, 2, 2)
    t = torch.full((n,), t_value)
    noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(t_value))
    x_t = q_sample(schedule, x0, t, noise).double()
    abar = schedule.alphas_cumprod[t_value]
    var = 1 - abar
    # Five standard errors of the sample mean and of the sample variance (Gaussian: var * sqrt(2 / (n - 1))).
    torch.testing.assert_close(x_t.mean(0), abar.sqrt() * x0[0].double(), rtol=0, atol=5 * math.sqrt(var / n))
    torch.testing.assert_close(
        x_t.var(0), torch.full_like(x_t[0], var.item()), rtol=0, atol=5 * var.item() * math.sqrt(2 / (n - 1))
    )


def test_v_target_identities():
    schedule = _schedule(prediction="v")
    g = torch.Generator().manual_seed(0)
    x0 = torch.rand(8, 1, 4, 4, generator=g, dtype=torch.float64) * 2 - 1
    noise = torch.randn(x0.shape, generator=g, dtype=torch.float64)
    t = torch.tensor([0, 1, 10, 100, 500, 800, 998, 999])
    x_t = q_sample(schedule, x0, t, noise)
    v = training_target(schedule, x0, noise, t)
    abar = schedule.alphas_cumprod[t].view(-1, 1, 1, 1)
    torch.testing.assert_close(abar.sqrt() * x_t - (1 - abar).sqrt() * v, x0)
    torch.testing.assert_close(abar.sqrt() * v + (1 - abar).sqrt() * x_t, noise)
    assert torch.equal(training_target(_schedule(), x0, noise, t), noise)  # epsilon prediction: the noise itself


def test_min_snr_weights_by_hand_on_a_two_step_schedule():
    """betas (0.1, 0.5): abar = (0.9, 0.45), SNR = (9, 9/11). With gamma = 5 (Hang et al. 2023): epsilon weights
    min(SNR, 5) / SNR = (5/9, 1); v weights min(SNR, 5) / (SNR + 1) = (5/10, (9/11) / (20/11) = 0.45)."""
    t = torch.tensor([0, 1])
    for prediction, expected in (("epsilon", [5 / 9, 1.0]), ("v", [0.5, 0.45])):
        schedule = NoiseSchedule(torch.tensor([0.1, 0.5], dtype=torch.float64), prediction)
        torch.testing.assert_close(snr(schedule, t), torch.tensor([9.0, 9 / 11], dtype=torch.float64))
        weights = loss_weight(schedule, t, 5.0)
        assert weights.dtype == torch.float64
        torch.testing.assert_close(weights, torch.tensor(expected, dtype=torch.float64), rtol=1e-12, atol=0)
        torch.testing.assert_close(loss_weight(schedule, t, 0.0), torch.ones(2, dtype=torch.float64), rtol=0, atol=0)
        assert torch.equal(loss_weight(schedule, t), loss_weight(schedule, t, 0.0))  # off by default
        # gamma = 1 clips the first step's SNR of 9 to 1: epsilon weights (1/9, 1), v weights (1/10, 0.45)
        torch.testing.assert_close(loss_weight(schedule, t, 1.0), torch.tensor(
            [1 / 9, 1.0] if prediction == "epsilon" else [0.1, 0.45], dtype=torch.float64), rtol=1e-12, atol=0)
        # gamma above every SNR: nothing clipped, epsilon weights 1 and v weights SNR / (SNR + 1) = abar
        unclipped = loss_weight(schedule, t, 100.0)
        torch.testing.assert_close(unclipped, torch.tensor([1.0, 1.0] if prediction == "epsilon" else [0.9, 0.45],
                                                           dtype=torch.float64), rtol=1e-12, atol=0)


@pytest.mark.parametrize("prediction", ["epsilon", "v"])
def test_min_snr_weights_down_weight_only_the_nearly_clean_steps(prediction):
    weights = loss_weight(_schedule(prediction=prediction), torch.arange(1000), 5.0)
    assert (weights <= 1).all() and (weights > 0).all()
    assert weights[0] < 0.01  # the nearly clean step is down-weighted
    if prediction == "epsilon":
        assert (weights[-500:] == 1).all()  # SNR below gamma: unchanged


def test_forward_noising_and_targets_keep_the_images_dtype():
    """The schedule is float64; what reaches the network must stay in the images' precision."""
    schedule = _schedule(prediction="v")
    x0, noise, t = torch.zeros(2, 1, 4, 4), torch.ones(2, 1, 4, 4), torch.tensor([3, 700])
    assert q_sample(schedule, x0, t, noise).dtype == torch.float32
    assert training_target(schedule, x0, noise, t).dtype == torch.float32


def test_q_sample_by_hand():
    """x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) epsilon with betas (0.19, 0.5): abar = (0.81, 0.405)."""
    schedule = NoiseSchedule(torch.tensor([0.19, 0.5], dtype=torch.float64), "v")
    x0, noise = torch.full((2, 1, 1, 1), 1.0, dtype=torch.float64), torch.full((2, 1, 1, 1), 2.0, dtype=torch.float64)
    x_t = q_sample(schedule, x0, torch.tensor([0, 1]), noise)
    expected = [0.9 + 2 * math.sqrt(0.19), math.sqrt(0.405) + 2 * math.sqrt(0.595)]
    torch.testing.assert_close(x_t.flatten(), torch.tensor(expected, dtype=torch.float64))
    v = training_target(schedule, x0, noise, torch.tensor([0, 1]))  # sqrt(abar) epsilon - sqrt(1 - abar) x_0
    expected_v = [0.9 * 2 - math.sqrt(0.19), math.sqrt(0.405) * 2 - math.sqrt(0.595)]
    torch.testing.assert_close(v.flatten(), torch.tensor(expected_v, dtype=torch.float64))


@pytest.mark.parametrize("prediction", ["epsilon", "v"])
def test_diffusion_loss(prediction):
    schedule = _schedule(prediction=prediction)
    g = torch.Generator().manual_seed(1)
    x0 = torch.rand(4, 1, 8, 8, generator=g) * 2 - 1
    noise = torch.randn(x0.shape, generator=g)
    t = torch.tensor([5, 50, 500, 995])
    cond = torch.randn(x0.shape, generator=g)
    target = training_target(schedule, x0, noise, t)

    def oracle(x_t, t_in, cond):
        assert t_in is t and torch.equal(x_t, q_sample(schedule, x0, t, noise))
        return target + cond  # off by `cond`, so the loss is the weighted mean square of cond

    loss = diffusion_loss(oracle, schedule, x0, t, noise, min_snr_gamma=5.0, extra_args={"cond": cond})
    assert loss.shape == (4,)
    expected = loss_weight(schedule, t, 5.0).float() * cond.square().mean(dim=(1, 2, 3))
    torch.testing.assert_close(loss, expected)


def test_diffusion_loss_is_the_plain_mse_by_default():
    schedule = _schedule()
    x0, noise, t = torch.zeros(2, 1, 2, 2), torch.ones(2, 1, 2, 2), torch.tensor([0, 999])
    loss = diffusion_loss(lambda x_t, t_in: torch.full_like(x_t, 3.0), schedule, x0, t, noise)
    torch.testing.assert_close(loss, torch.full((2,), 4.0))  # (3 - 1)^2 at every pixel, unweighted


def test_sample_timesteps():
    assert sample_timesteps(5, 10).shape == (5,)  # without a generator: torch's global one, on the CPU
    t = sample_timesteps(10_000, 100, torch.Generator().manual_seed(0))
    assert t.dtype == torch.int64 and t.min() == 0 and t.max() == 99
    assert torch.equal(t, sample_timesteps(10_000, 100, torch.Generator().manual_seed(0)))


def test_the_unit_data_range_is_the_references_zero_to_one():
    from mrnet_utils.diffusion.schedules import from_process, to_process

    images = torch.linspace(-1, 1, 9).view(1, 1, 3, 3)
    assert torch.equal(to_process(images, "symmetric"), images)
    unit = to_process(images, "unit")
    assert unit.min() == 0 and unit.max() == 1
    torch.testing.assert_close(from_process(unit, "unit"), images)
    assert torch.equal(from_process(images, "symmetric"), images)
