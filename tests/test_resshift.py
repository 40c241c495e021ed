"""ResShift (Yue et al. 2023): its schedule, forward chain, posterior, loss and sampler match their formulas."""

import math
import re
from types import SimpleNamespace

import pytest
import torch

from mrnet_utils.presets import stage_config
from mrnet_utils.diffusion.conditioning import upsample
from mrnet_utils.errors import MRNetError
from mrnet_utils.networks.unet import UNet
from mrnet_utils.diffusion.processes.resshift import (
    NETWORK_TIME_SCALE,
    ResShiftSchedule,
    network_inputs,
    posterior_mean,
    posterior_mean_variance,
    predict_x0,
    q_sample,
    resshift_loss,
    resshift_schedule,
    sample_resshift,
    training_target,
)
from mrnet_utils.diffusion.samplers import generators_from_seeds, noise_from_seeds, trailing_timesteps
from torch_threads import one_thread

SEEDS = [3, 1, 4, 1000]


def _pair(batch=4, side=8, seed=0):
    """A high-res x0 and a y0 that differs from it, both in [-1, 1]."""
    g = torch.Generator().manual_seed(seed)
    x0 = torch.rand((batch, 1, side, side), generator=g) * 1.6 - 0.8
    y0 = (x0 + 0.3 * torch.randn(x0.shape, generator=g)).clamp(-1, 1)
    return x0, y0


@pytest.mark.parametrize("T", [4, 15])
@pytest.mark.parametrize("kappa", [0.5, 1.0, 2.0])
def test_schedule_formula_and_invariants(T, kappa):
    p = 0.3
    etas = resshift_schedule(T, kappa, p).etas
    assert etas.dtype == torch.float64 and etas.shape == (T,)
    assert (etas[1:] > etas[:-1]).all()  # monotone
    eta_1 = min((0.04 / kappa) ** 2, 0.001)
    assert etas[0].item() == pytest.approx(eta_1, rel=1e-12)
    assert kappa * math.sqrt(etas[0].item()) <= 0.04 + 1e-12  # x_1 is x_0 up to noise of std <= 0.04
    assert etas[-1].item() == pytest.approx(0.99, rel=1e-12)  # x_T is nearly y_0 + noise
    # sqrt(eta_t) = sqrt(eta_1) b0^{beta_t}, beta_t = ((t-1)/(T-1))^p (T-1), b0 = exp(log(eta_T/eta_1) / (2(T-1)))
    b0 = math.exp(math.log(0.99 / eta_1) / (2 * (T - 1)))
    expected = [(math.sqrt(eta_1) * b0 ** (((t - 1) / (T - 1)) ** p * (T - 1))) ** 2 for t in range(1, T + 1)]
    torch.testing.assert_close(etas, torch.tensor(expected, dtype=torch.float64), rtol=1e-12, atol=0)
    alphas = resshift_schedule(T, kappa, p).alphas
    assert (alphas > 0).all() and alphas[0] == etas[0]
    assert alphas.sum().item() == pytest.approx(0.99, rel=1e-12)


def test_schedule_power_shifts_early_and_single_step():
    # A larger p keeps eta small for longer (slower shifting early on); the ends do not move.
    slow, fast = resshift_schedule(15, 1.0, p=1.0).etas, resshift_schedule(15, 1.0, p=0.3).etas
    assert (slow[1:-1] < fast[1:-1]).all()
    assert slow[0] == fast[0] and slow[-1] == fast[-1]
    # p = 1: a geometric sequence in sqrt(eta)
    ratios = (slow[1:] / slow[:-1]).sqrt()
    torch.testing.assert_close(ratios, torch.full_like(ratios, ratios[0].item()), rtol=1e-10, atol=0)
    assert resshift_schedule(1, 1.0).etas.tolist() == [0.99]


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(T=0), "T must be"),
        (dict(T=2.5), "T must be"),
        (dict(kappa=0.0), "kappa"),
        (dict(p=-1.0), "p must be"),
        (dict(eta_1=0.5, eta_T=0.4), "eta_1 < eta_T"),
        (dict(eta_T=1.0), "eta_T < 1"),
        (dict(prediction="epsilon"), "prediction"),
    ],
)
def test_schedule_validation(kwargs, match):
    with pytest.raises(MRNetError, match=match):
        resshift_schedule(**kwargs)


def test_schedule_refuses_non_increasing_etas():
    with pytest.raises(MRNetError, match="increase"):
        ResShiftSchedule(torch.tensor([0.1, 0.1, 0.5], dtype=torch.float64), 1.0)
    with pytest.raises(MRNetError, match="increase"):
        ResShiftSchedule(torch.tensor([0.1, 1.0], dtype=torch.float64), 1.0)


def test_forward_marginal_has_stated_mean_and_variance():
    """q(x_t | x_0, y_0) = N(x_0 + eta_t e_0, kappa^2 eta_t I), drawn directly (eq. 2) and by chaining
    the transitions x_t = x_{t-1} + alpha_t e_0 + kappa sqrt(alpha_t) noise (eq. 1)."""
    schedule = resshift_schedule(T=6, kappa=1.5, p=0.5)
    x0 = torch.tensor([-0.7, 0.0, 0.2, 0.9]).view(1, 1, 2, 2)
    y0 = torch.tensor([-0.2, 0.5, 0.2, -0.4]).view(1, 1, 2, 2)
    n = 200_000
    g = torch.Generator().manual_seed(0)
    x0s, y0s = x0.expand(n, -1, -1, -1), y0.expand(n, -1, -1, -1)
    chained = x0s.double()
    for t in range(schedule.timesteps):
        alpha = schedule.alphas[t].item()
        step_noise = torch.randn(x0s.shape, generator=g)
        chained = chained + alpha * (y0s - x0s) + schedule.kappa * math.sqrt(alpha) * step_noise
        direct = q_sample(schedule, x0s, y0s, torch.full((n,), t), torch.randn(x0s.shape, generator=g)).double()
        eta = schedule.etas[t].item()
        mean, variance = (x0 + eta * (y0 - x0)).double()[0], schedule.kappa**2 * eta
        se_mean, se_var = math.sqrt(variance / n), variance * math.sqrt(2 / n)
        for draws in (direct, chained):
            assert (draws.mean(0) - mean).abs().max() < 5 * se_mean
            assert (draws.var(0) - variance).abs().max() < 5 * se_var


@pytest.mark.parametrize("t, s", [(3, 2), (5, 2), (4, -1), (0, -1)])
def test_posterior_is_the_conditional_of_the_forward_chain(t, s):
    """Draw (x_s, x_t) from the forward chain; x_s minus the stated posterior mean must be
    uncorrelated with x_t, centred, and of the stated variance (eq. 6 for s = t - 1)."""
    schedule = resshift_schedule(T=6, kappa=2.0, p=0.3)
    n = 200_000
    g = torch.Generator().manual_seed(1)
    x0 = torch.full((n, 1, 1, 1), 0.3, dtype=torch.float64)
    y0 = torch.full((n, 1, 1, 1), -0.5, dtype=torch.float64)
    etas = schedule.etas
    eta_s = etas[s].item() if s >= 0 else 0.0
    eta_t = etas[t].item()
    first, second = torch.randn((2, *x0.shape), generator=g, dtype=torch.float64)
    x_s = x0 + eta_s * (y0 - x0) + schedule.kappa * math.sqrt(eta_s) * first
    x_t = x_s + (eta_t - eta_s) * (y0 - x0) + schedule.kappa * math.sqrt(eta_t - eta_s) * second
    mean, variance = posterior_mean_variance(schedule, x_t, x0, t, s)
    residual = (x_s - mean).flatten()
    assert variance == pytest.approx(schedule.kappa**2 * eta_s * (eta_t - eta_s) / eta_t, rel=1e-12)
    if s == -1:  # the clean image: the posterior is a point mass at x_0
        assert variance == 0 and residual.abs().max() < 1e-12
        return
    assert abs(residual.mean().item()) < 5 * math.sqrt(variance / n)
    assert residual.var().item() == pytest.approx(variance, rel=0.02)
    assert abs(torch.corrcoef(torch.stack([residual, x_t.flatten()]))[0, 1].item()) < 0.02
    if s == t - 1:  # eq. 6's coefficients
        alpha_t = schedule.alphas[t].item()
        torch.testing.assert_close(mean, eta_s / eta_t * x_t + alpha_t / eta_t * x0)


@pytest.mark.parametrize("prediction", ["residual", "x0"])
@pytest.mark.parametrize("T", [4, 15])
def test_perfect_predictor_recovers_x0_in_any_number_of_steps(prediction, T):
    schedule = resshift_schedule(T, kappa=1.0, prediction=prediction)
    x0, y0 = _pair()
    target = training_target(schedule, x0, y0)
    perfect = lambda x, t, **kwargs: target  # noqa: E731
    noise = noise_from_seeds(SEEDS, (1, 8, 8), "cpu")
    for steps in range(1, T + 1):
        out = sample_resshift(perfect, schedule, y0, noise, steps, generators=generators_from_seeds(SEEDS, "cpu"))
        torch.testing.assert_close(out, x0, rtol=0, atol=1e-6)
    mean = posterior_mean(perfect, schedule, y0, torch.stack([noise, -noise]))
    torch.testing.assert_close(mean, x0, rtol=0, atol=1e-6)
    t = torch.tensor([0, 1, 2, T - 1])
    assert resshift_loss(perfect, schedule, x0, y0, t, torch.randn_like(x0)).abs().max() < 1e-12


def test_network_inputs_and_timesteps():
    """The network sees x_t / sqrt(1 + kappa^2 eta_t) and time 1000 eta_t at the trailing timesteps,
    starting from x_T = y_0 + kappa sqrt(eta_T) noise."""
    schedule = resshift_schedule(15, kappa=2.0)
    x0, y0 = _pair(batch=2)
    noise = noise_from_seeds([0, 1], (1, 8, 8), "cpu")
    calls = []

    def model(x, t, cond):
        calls.append((x.clone(), t.clone()))
        return torch.zeros_like(x)

    sample_resshift(model, schedule, y0, noise, steps=4, extra_args={"cond": y0})
    visited = trailing_timesteps(15, 4)
    assert visited == [14, 10, 7, 3]
    times = torch.stack([c[1] for c in calls]).double()
    expected = torch.stack([torch.full((2,), NETWORK_TIME_SCALE * schedule.etas[t].item()) for t in visited]).double()
    torch.testing.assert_close(times, expected, rtol=1e-6, atol=0)
    eta_T = schedule.etas[-1].item()
    torch.testing.assert_close(calls[0][0], (y0 + 2.0 * math.sqrt(eta_T) * noise) / math.sqrt(1 + 4.0 * eta_T))


def test_untrained_unet_returns_the_upsampled_input():
    """The UNet's output layer starts at zero, so the residual parameterisation starts as interpolation."""
    cfg = stage_config("sr1", "smoke")
    torch.manual_seed(0)
    with one_thread():
        model = UNet(cfg.unet).eval()
        schedule = resshift_schedule(4, kappa=1.0)
        _, y0 = _pair(batch=2, side=128)
        noise = noise_from_seeds([0, 1], (1, 128, 128), "cpu")
        extra = {"cond": y0, "aug_level": torch.zeros(2)}
        generators = generators_from_seeds([0, 1], "cpu")
        out = sample_resshift(model, schedule, y0, noise, extra_args=extra, generators=generators)
        torch.testing.assert_close(out, y0, rtol=0, atol=0)
        torch.testing.assert_close(posterior_mean(model, schedule, y0, noise, extra_args=extra), y0, rtol=0, atol=0)


def _per_pixel_model(x, t):
    # Elementwise only: bitwise the same at any batch size (a convolution's kernels may not be).
    return 0.2 * torch.tanh(x) - 0.1 * torch.roll(x, 1, dims=-1) + 0.05 * torch.cos(t / 100).view(-1, 1, 1, 1)


# (sum, sum of absolute values) of 4 seeded 8x8 samples of _per_pixel_model, T = 15, kappa = 2, computed once.
STORED = {4: (6.02953, 128.28433), 15: (8.39207, 131.13956)}


@pytest.mark.parametrize("steps", [4, 15])
def test_seeded_loop_matches_stored_values(steps):
    schedule = resshift_schedule(15, kappa=2.0)
    _, y0 = _pair()
    noise = noise_from_seeds(SEEDS, (1, 8, 8), "cpu")
    out = sample_resshift(_per_pixel_model, schedule, y0, noise, steps, generators=generators_from_seeds(SEEDS, "cpu"))
    total, abs_total = STORED[steps]
    assert out.sum().item() == pytest.approx(total, abs=1e-4)
    assert out.abs().sum().item() == pytest.approx(abs_total, abs=1e-4)


def test_sample_depends_only_on_its_seed():
    schedule = resshift_schedule(15, kappa=1.0)
    _, y0 = _pair()

    def sample(index, stream=0):
        seeds = [SEEDS[i] for i in index]
        noise = noise_from_seeds(seeds, (1, 8, 8), "cpu")
        generators = generators_from_seeds(seeds, "cpu", stream)
        return sample_resshift(_per_pixel_model, schedule, y0[index], noise, 4, None, generators)

    batch = sample([0, 1, 2, 3])
    assert torch.equal(batch, sample([0, 1, 2, 3]))  # reproducible
    assert torch.equal(batch[2:3], sample([2]))  # independent of the other images
    assert not torch.equal(batch, sample([0, 1, 2, 3], stream=1))  # the per-step noise comes from the generators


def test_posterior_mean_averages_draws():
    """steps = 1: the mean of the one-step predictions at t = T; more steps: the mean of full samples."""
    schedule = resshift_schedule(15, kappa=1.0)
    _, y0 = _pair()
    draws = torch.stack([noise_from_seeds(SEEDS, (1, 8, 8), "cpu", stream=k) for k in range(3)])
    T_index = torch.full((4,), 14)
    one_step = [predict_x0(_per_pixel_model, schedule, y0 + math.sqrt(0.99) * d, T_index, y0) for d in draws]
    torch.testing.assert_close(
        posterior_mean(_per_pixel_model, schedule, y0, draws), torch.stack(one_step).clamp(-1, 1).mean(0)
    )
    generators = generators_from_seeds(SEEDS, "cpu")
    samples = [sample_resshift(_per_pixel_model, schedule, y0, d, 4, generators=generators) for d in draws]
    generators = generators_from_seeds(SEEDS, "cpu")
    torch.testing.assert_close(
        posterior_mean(_per_pixel_model, schedule, y0, draws, 4, generators=generators), torch.stack(samples).mean(0)
    )


def test_loss_values():
    schedule = resshift_schedule(4, kappa=1.0)
    x0, y0 = _pair()
    t = torch.tensor([0, 1, 2, 3])
    zero = lambda x, t, **kwargs: torch.zeros_like(x)  # noqa: E731  predicts x_0 = y_0
    noise = torch.randn_like(x0)
    torch.testing.assert_close(resshift_loss(zero, schedule, x0, y0, t, noise), (y0 - x0).square().mean((1, 2, 3)))
    torch.testing.assert_close(resshift_loss(zero, schedule, x0, y0, t, noise, loss="l1"), (y0 - x0).abs().mean((1, 2, 3)))
    with pytest.raises(MRNetError, match="loss"):
        resshift_loss(zero, schedule, x0, y0, t, torch.randn_like(x0), loss="huber")


def test_bicubic_upsampling_of_the_residual_formulations():
    low = torch.rand((2, 1, 8, 8)) * 2 - 1
    up = upsample(low, 16, "bicubic")
    assert up.shape == (2, 1, 16, 16) and up.min() >= -1 and up.max() <= 1
    torch.testing.assert_close(up, torch.nn.functional.interpolate(low, size=16, mode="bicubic").clamp(-1, 1))
    torch.testing.assert_close(upsample(torch.full((1, 1, 4, 4), 0.25), 8, "bicubic"), torch.full((1, 1, 8, 8), 0.25))
    with pytest.raises(MRNetError, match="upsampling mode"):
        upsample(low, 16, "lanczos")


def test_bad_inputs_raise():
    schedule = resshift_schedule(4, kappa=1.0)
    x0, y0 = _pair(batch=2)
    noise = torch.randn_like(y0)
    for steps in (0, 5, 2.0):
        with pytest.raises(MRNetError, match="steps"):
            sample_resshift(_per_pixel_model, schedule, y0, noise, steps)
    with pytest.raises(MRNetError, match="one shape"):
        sample_resshift(_per_pixel_model, schedule, y0, noise[:, :, :4])
    with pytest.raises(MRNetError, match="one per image"):
        sample_resshift(_per_pixel_model, schedule, y0, noise, generators=generators_from_seeds([0], "cpu"))
    with pytest.raises(MRNetError, match=r"\[0, 4\)"):
        q_sample(schedule, x0, y0, torch.tensor([0, 4]), noise)
    with pytest.raises(MRNetError, match="integer tensor"):
        q_sample(schedule, x0, y0, torch.tensor([0.5, 1.0]), noise)
    with pytest.raises(MRNetError, match="one shape"):
        q_sample(schedule, x0, y0[:1], torch.tensor([0, 1]), noise)
    with pytest.raises(MRNetError, match="K"):
        posterior_mean(_per_pixel_model, schedule, y0, noise[:1])
    with pytest.raises(MRNetError, match="s < t"):
        posterior_mean_variance(schedule, y0, x0, t=2, s=2)


def test_progress(capsys):
    schedule = resshift_schedule(4, kappa=1.0)
    _, y0 = _pair(batch=1)
    sample_resshift(_per_pixel_model, schedule, y0, torch.randn_like(y0), progress=True)
    assert "resshift" in capsys.readouterr().err
    sample_resshift(_per_pixel_model, schedule, y0, torch.randn_like(y0))
    assert capsys.readouterr().err == ""


def test_the_default_schedule_is_the_papers_image_sr_setting():
    schedule = resshift_schedule()
    assert (schedule.timesteps, schedule.kappa, schedule.prediction) == (15, 2.0, "residual")
    assert resshift_schedule(1, prediction="x0").prediction == "x0"  # the single-level schedule keeps its prediction


def test_chain_formulas_by_hand_at_a_kappa_whose_square_is_not_its_double():
    """kappa = 1.5: kappa^2 = 2.25, kappa * 2 = 3 (at the default kappa = 2 the two agree). The noise enters with
    its sign (a symmetric noise hides a flipped sign from any test of the distribution), and the posterior's
    default earlier index is t - 1."""
    kappa = 1.5
    schedule = resshift_schedule(6, kappa=kappa, p=0.5)
    eta = schedule.etas.tolist()
    x0 = torch.tensor([[[[-0.7, 0.0], [0.2, 0.9]]]], dtype=torch.float64)
    y0 = torch.tensor([[[[-0.2, 0.5], [0.2, -0.4]]]], dtype=torch.float64)
    noise = torch.tensor([[[[1.0, -2.0], [0.5, 0.0]]]], dtype=torch.float64)
    x_t = q_sample(schedule, x0, y0, torch.tensor([3]), noise)
    by_hand = [[[[a + eta[3] * (b - a) + kappa * math.sqrt(eta[3]) * n for a, b, n in zip(ra, rb, rn)]
                 for ra, rb, rn in zip(x0[0, 0].tolist(), y0[0, 0].tolist(), noise[0, 0].tolist())]]]
    torch.testing.assert_close(x_t, torch.tensor(by_hand, dtype=torch.float64), rtol=1e-12, atol=1e-12)
    mean, variance = posterior_mean_variance(schedule, x_t, x0, 3)
    assert variance == pytest.approx(2.25 * eta[2] * (eta[3] - eta[2]) / eta[3], rel=1e-12)
    torch.testing.assert_close(mean, eta[2] / eta[3] * x_t + (1 - eta[2] / eta[3]) * x0, rtol=1e-12, atol=1e-12)
    scaled, time = network_inputs(schedule, x_t, torch.tensor([3]))
    torch.testing.assert_close(scaled, x_t / math.sqrt(1 + 2.25 * eta[3]), rtol=1e-12, atol=1e-12)
    assert time.dtype == torch.float32 and time.item() == pytest.approx(1000 * eta[3], rel=1e-6)


def test_the_loss_passes_the_condition_to_the_network_and_predictions_keep_the_chains_dtype():
    schedule = resshift_schedule(4, kappa=1.0)
    x0, y0 = _pair()
    t, noise = torch.tensor([0, 1, 2, 3]), torch.randn_like(x0)
    copies_cond = lambda x, t, cond: cond - y0  # noqa: E731  predicts x_0 = cond: exact when cond is x0
    assert resshift_loss(copies_cond, schedule, x0, y0, t, noise, {"cond": x0}).abs().max() == 0
    bf16 = lambda x, t: torch.zeros_like(x, dtype=torch.bfloat16)  # noqa: E731  the network under bf16 autocast
    x0_schedule = resshift_schedule(4, kappa=1.0, prediction="x0")  # the output itself, not added to y0
    assert predict_x0(bf16, x0_schedule, q_sample(schedule, x0, y0, t, noise), t, y0).dtype == torch.float32


@pytest.mark.parametrize(
    "etas, kappa, match",
    [
        ([0.1, 0.5], 0.0, "^kappa must be positive, not 0.0$"),
        ([[0.1, 0.5]], 1.0, r"^etas must be a 1-D tensor of at least one step, got shape \(1, 2\)$"),
        ([], 1.0, r"^etas must be a 1-D tensor of at least one step, got shape \(0,\)$"),
        ([0.0, 0.5], 1.0, r"^etas must increase strictly within \(0, 1\)$"),
        ([0.1, 0.5, 0.3], 1.0, r"^etas must increase strictly within \(0, 1\)$"),
    ],
)
def test_a_schedule_refuses_etas_or_kappa_outside_the_chain(etas, kappa, match):
    with pytest.raises(MRNetError, match=match):
        ResShiftSchedule(torch.tensor(etas, dtype=torch.float64), kappa)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(p=0.0), "p must be positive, not 0.0"),
        (dict(eta_1=0.0), "need 0 < eta_1 < eta_T < 1, got eta_1=0.0, eta_T=0.99"),
        (dict(eta_1=0.5, eta_T=0.5), "need 0 < eta_1 < eta_T < 1, got eta_1=0.5, eta_T=0.5"),
    ],
)
def test_the_schedule_formula_refuses_boundary_values(kwargs, message):
    with pytest.raises(MRNetError, match=f"^{re.escape(message)}$"):
        resshift_schedule(**kwargs)


def test_indices_outside_the_chain_are_refused_not_wrapped():
    """A negative index would silently read eta_T (Python indexing); one past the end would raise an IndexError."""
    schedule = resshift_schedule(4, kappa=1.0)
    x0, y0 = _pair(batch=2)
    with pytest.raises(MRNetError, match=r"timesteps must lie in \[0, 4\)"):
        q_sample(schedule, x0, y0, torch.tensor([-1, 0]), torch.randn_like(x0))
    for t, s in ((2, -2), (4, 2)):
        with pytest.raises(MRNetError, match=rf"^need -1 <= s < t < T=4, got s={s}, t={t}$"):
            posterior_mean_variance(schedule, y0, x0, t=t, s=s)


def test_shape_errors_name_the_tensors_that_disagree():
    schedule = resshift_schedule(4, kappa=1.0)
    x0, y0 = _pair(batch=2)
    with pytest.raises(MRNetError, match=r"^x0 and noise must be \(B, C, H, W\) tensors of one shape"):
        q_sample(schedule, x0, y0, torch.tensor([0, 1]), torch.randn(2, 1, 4, 4))
    with pytest.raises(MRNetError, match=r"^x0 and y0 must be"):
        q_sample(schedule, x0, y0[:, :, :4], torch.tensor([0, 1]), torch.randn_like(x0))
    with pytest.raises(MRNetError, match=r"^y0 and noise must be"):
        sample_resshift(_per_pixel_model, schedule, y0, torch.randn(2, 1, 4, 4))
    on_gpu = [SimpleNamespace(device=torch.device("cuda"))] * 2  # stand-ins: only their device is read
    with pytest.raises(MRNetError, match=r"^generators must be on cpu: use samplers.generators_from_seeds"):
        sample_resshift(_per_pixel_model, schedule, y0, torch.randn_like(y0), generators=on_gpu)
