"""The samplers: exact with a perfect model, seeded and batch-independent, stored full loops."""

import math
from fractions import Fraction
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from diffusers import DDIMScheduler

from mrnet_utils.config import DiffusionConfig
from mrnet_utils.diffusion.samplers import (
    SAMPLERS,
    generators_from_seeds,
    noise_from_seeds,
    sample,
    trailing_timesteps,
)
from mrnet_utils.diffusion.schedules import NoiseSchedule, linear_betas
from mrnet_utils.errors import MRNetError

SEEDS = [3, 5, 7, 11]


def exact_trailing(T: int, steps: int) -> list[int]:
    """Lin et al. (2023), Table 2, "trailing": t_k = round(T (steps - k) / steps) - 1, k = 0 .. steps-1, computed
    with exact fractions, halves rounded up."""
    return [math.floor(Fraction(T * (steps - k), steps) + Fraction(1, 2)) - 1 for k in range(steps)]


class Oracle:
    """Knows the one data point x0 of each image, so predicts the true epsilon (or v) from x_t.

    Records every timestep it is called at, and checks how the samplers call it.
    """

    def __init__(self, schedule: NoiseSchedule, x0: torch.Tensor):
        self.schedule, self.x0, self.calls = schedule, x0, []

    def __call__(self, x_t, t, cond):
        assert torch.is_inference_mode_enabled()
        assert t.dtype == torch.long and t.shape == (len(x_t),) and t.device == x_t.device
        assert cond == "passed through"
        self.calls.append(int(t[0]))
        abar = self.schedule.alphas_cumprod[t].view(-1, 1, 1, 1)
        eps = (x_t.double() - abar.sqrt() * self.x0) / (1 - abar).sqrt()
        out = eps if self.schedule.prediction == "epsilon" else abar.sqrt() * eps - (1 - abar).sqrt() * self.x0
        return out.float()


@pytest.mark.parametrize("name", list(SAMPLERS))
@pytest.mark.parametrize("prediction", ["epsilon", "v"])
@pytest.mark.parametrize("schedule_name", ["linear", "cosine"])
def test_perfect_model_recovers_x0(name, prediction, schedule_name):
    # ddpm_large adds noise of variance beta_t even on its last step unless that step is t = 0:
    # exact only as the reference ran it, over the whole chain.
    T, steps = 50, 50 if name == "ddpm_large" else 10
    schedule = NoiseSchedule.from_config(
        DiffusionConfig(timesteps=T, schedule=schedule_name, prediction=prediction, beta_start=1e-4, beta_end=0.02)
    )
    x0 = torch.rand(3, 1, 8, 8, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 2 - 1
    oracle = Oracle(schedule, x0)
    noise = noise_from_seeds(SEEDS[:3], (1, 8, 8), "cpu")
    generators = generators_from_seeds(SEEDS[:3], "cpu")
    out = sample(name, oracle, schedule, noise, steps, extra_args={"cond": "passed through"}, generators=generators)
    assert out.shape == noise.shape and out.dtype == torch.float32
    torch.testing.assert_close(out.double(), x0, rtol=0, atol=1e-4)
    assert oracle.calls == exact_trailing(T, steps)  # one network evaluation per step, at trailing timesteps


def test_trailing_timesteps():
    assert trailing_timesteps(10, 10) == list(range(9, -1, -1))
    assert trailing_timesteps(1000, 4) == [999, 749, 499, 249]
    # diffusers' own trailing list for a divisor (it adds a step at t = -1 for e.g. (1000, 61))
    ddim = DDIMScheduler(num_train_timesteps=1000, timestep_spacing="trailing")
    ddim.set_timesteps(25)
    assert trailing_timesteps(1000, 25) == ddim.timesteps.tolist()
    odd = trailing_timesteps(1000, 61)
    assert len(odd) == 61 and odd[0] == 999 and odd[-1] == 15 and all(a > b for a, b in zip(odd, odd[1:]))


def test_trailing_timesteps_match_exact_fractions_with_halves_rounded_up():
    # By hand: T = 10, 4 steps: 10 j / 4 = 10, 7.5, 5, 2.5 -> 10, 8, 5, 3 (halves up) -> minus 1.
    assert trailing_timesteps(10, 4) == [9, 7, 4, 2]
    # 1000 / 3 = 333.3: 1000, 666.7, 333.3 -> 1000, 667, 333
    assert trailing_timesteps(1000, 3) == [999, 666, 332]
    assert trailing_timesteps(7, 1) == [6]
    for T in range(2, 65):
        for steps in range(1, T + 1):
            assert trailing_timesteps(T, steps) == exact_trailing(T, steps), (T, steps)
    for T, steps in ((1000, 61), (1000, 7), (2000, 25), (2000, 999), (1000, 1000), (4, 4)):
        assert trailing_timesteps(T, steps) == exact_trailing(T, steps), (T, steps)


@pytest.mark.parametrize("name", ["ddpm", "dpmpp", "dpmpp_sde"])
def test_steps_not_dividing_T(name):
    """DDPM and both DPM-Solver++ take any steps <= T, each step one network evaluation at t >= 0."""
    schedule = NoiseSchedule(linear_betas(100, 1e-4, 0.02), "epsilon")
    oracle = Oracle(schedule, torch.zeros(1, 1, 4, 4, dtype=torch.float64))
    noise = noise_from_seeds([0], (1, 4, 4), "cpu")
    out = sample(name, oracle, schedule, noise, 29, {"cond": "passed through"}, generators_from_seeds([0], "cpu"))
    assert oracle.calls == exact_trailing(100, 29) and min(oracle.calls) >= 0
    assert out.abs().max() < 1e-4


def test_full_ddpm_chain_visits_every_timestep():
    schedule = NoiseSchedule(linear_betas(30, 1e-4, 0.2), "epsilon")
    oracle = Oracle(schedule, torch.zeros(2, 1, 4, 4, dtype=torch.float64))
    sample("ddpm", oracle, schedule, noise_from_seeds([1, 2], (1, 4, 4), "cpu"), 30, {"cond": "passed through"})
    assert oracle.calls == list(range(29, -1, -1))


def _tiny_model(schedule: NoiseSchedule):
    """A fixed, seeded 3x3 convolution, scaled so that the samples stay mostly inside [-1, 1]."""
    weight = 0.2 * torch.randn(1, 1, 3, 3, generator=torch.Generator().manual_seed(0))
    abar = schedule.alphas_cumprod.float()

    def model(x_t, t):
        return (x_t + F.conv2d(x_t, weight, padding=1)) / (1 - abar[t]).sqrt().view(-1, 1, 1, 1)

    return model


# (steps, sum, sum of absolute values) of 4 seeded 8x8 samples with _tiny_model on the CPU, computed once.
STORED = {
    "ddpm": (20, -2.20753, 36.38641),  # the full ancestral chain, T = 20
    "ddpm_large": (20, -2.87029, 45.23195),  # the same with variance beta_t
    "ddim": (10, -2.73289, 81.18408),
    "dpmpp": (10, -0.75151, 56.47884),
    "dpmpp_sde": (10, 0.17598, 103.78292),
}


@pytest.mark.parametrize("name", list(SAMPLERS))
def test_seeded_loop_matches_stored_values(name):
    schedule = NoiseSchedule(linear_betas(20, 1e-4, 0.2), "epsilon")
    steps, total, abs_total = STORED[name]
    noise = noise_from_seeds(SEEDS, (1, 8, 8), "cpu")
    out = sample(name, _tiny_model(schedule), schedule, noise, steps, generators=generators_from_seeds(SEEDS, "cpu"))
    assert out.sum().item() == pytest.approx(total, abs=1e-4)
    assert out.abs().sum().item() == pytest.approx(abs_total, abs=1e-4)


def _per_pixel_model(x_t, t):
    # Elementwise ops only: bitwise the same at any batch size (a convolution's kernels may not be).
    return 0.5 * x_t + 0.3 * torch.roll(x_t, 1, dims=-1) + 0.1 * torch.sin(t / 10).view(-1, 1, 1, 1)


@pytest.mark.parametrize("name", list(SAMPLERS))
def test_sample_depends_only_on_its_seed(name):
    schedule = NoiseSchedule(linear_betas(20, 1e-4, 0.2), "v")

    def draw(seeds, stream=0):
        noise = noise_from_seeds(seeds, (1, 8, 8), "cpu")
        return sample(name, _per_pixel_model, schedule, noise, 10, None, generators_from_seeds(seeds, "cpu", stream))

    batch = draw(SEEDS)
    assert torch.equal(batch[2:3], draw([SEEDS[2]]))
    assert not torch.equal(batch[0], batch[1])
    # Only the stochastic samplers draw per-step noise, so only they change with the generators' stream.
    assert torch.equal(batch, draw(SEEDS, stream=1)) == (name not in ("ddpm", "ddpm_large", "dpmpp_sde"))


def test_seed_streams_are_distinct():
    start = noise_from_seeds([7], (1, 4, 4), "cpu")
    step = torch.randn((1, 1, 4, 4), generator=generators_from_seeds([7], "cpu")[0])
    assert not torch.allclose(start, step, atol=0.1)
    assert torch.equal(start, noise_from_seeds([7], (1, 4, 4), "cpu"))  # reproducible
    assert not torch.allclose(start, noise_from_seeds([7], (1, 4, 4), "cpu", stream=1), atol=0.1)
    assert torch.equal(noise_from_seeds([5, 7], (1, 4, 4), "cpu")[1:], start)  # independent of the other seeds
    with pytest.raises(MRNetError, match="non-negative"):
        noise_from_seeds([-1], (1, 4, 4), "cpu")


def test_bad_arguments_raise():
    schedule = NoiseSchedule(linear_betas(20, 1e-4, 0.2), "epsilon")
    noise = noise_from_seeds([0, 1], (1, 4, 4), "cpu")
    for steps in (0, 21):
        with pytest.raises(MRNetError, match="steps"):
            sample("ddpm", _per_pixel_model, schedule, noise, steps)
    with pytest.raises(MRNetError, match="divide"):
        sample("ddim", _per_pixel_model, schedule, noise, 3)
    with pytest.raises(MRNetError, match="one per image"):
        sample("ddpm", _per_pixel_model, schedule, noise, 5, generators=generators_from_seeds([0], "cpu"))
    with pytest.raises(MRNetError, match="unknown sampler .euler.; choose one of ddpm, ddpm_large, ddim, dpmpp, dpmpp_sde"):
        sample("euler", _per_pixel_model, schedule, noise, 5)


def test_each_draw_has_its_own_start_and_step_noise():
    """draws > 1 (the posterior mean) needs fresh noise per draw, for x_T and for each step."""
    start = [noise_from_seeds([7], (1, 4, 4), "cpu", draw=draw) for draw in (0, 1, 2)]
    step = [torch.randn((1, 1, 4, 4), generator=generators_from_seeds([7], "cpu", draw=draw)[0]) for draw in (0, 1)]
    assert not torch.allclose(start[0], start[1], atol=0.1) and not torch.allclose(start[1], start[2], atol=0.1)
    assert not torch.allclose(step[0], step[1], atol=0.1)
    assert not torch.allclose(start[1], step[0], atol=0.1) and not torch.allclose(start[1], step[1], atol=0.1)
    assert torch.equal(start[1], noise_from_seeds([7], (1, 4, 4), "cpu", draw=1))  # reproducible


def test_argument_errors_name_their_parameter_and_one_step_is_allowed():
    schedule = NoiseSchedule(linear_betas(20, 1e-4, 0.2), "epsilon")
    noise = noise_from_seeds([0], (1, 4, 4), "cpu")
    assert sample("ddpm", _per_pixel_model, schedule, noise, 1).shape == noise.shape
    for name, steps, message, parameter in [
        ("euler", 5, "unknown sampler 'euler'", "sampler"),
        ("ddpm", 21, "steps=21 must be between 1 and the schedule's T=20", "steps"),
        ("ddim", 3, "DDIM steps=3 must divide the schedule's T=20 (diffusers' DDIMScheduler strides by T // steps); "
                    "choose a divisor or the 'dpmpp' sampler", "steps"),
    ]:
        with pytest.raises(MRNetError) as error:
            sample(name, _per_pixel_model, schedule, noise, steps)
        assert message in str(error.value) and error.value.parameter == parameter
    with pytest.raises(MRNetError, match=r"^noise must be a \(B, C, H, W\) tensor, got shape \(4, 4\)$"):
        sample("ddpm", _per_pixel_model, schedule, noise[0, 0], 5)
    elsewhere = [SimpleNamespace(device=torch.device("cuda"))]  # a generator on another device, as _check sees it
    with pytest.raises(MRNetError, match=r"^generators must be on cpu: use generators_from_seeds\(seeds, device\)$"):
        sample("ddpm", _per_pixel_model, schedule, noise, 5, generators=elsewhere)


def test_progress_bar(capsys):
    schedule = NoiseSchedule(linear_betas(20, 1e-4, 0.2), "epsilon")
    noise = noise_from_seeds([0], (1, 4, 4), "cpu")
    sample("ddim", _per_pixel_model, schedule, noise, 5, progress=True)
    assert "ddim" in capsys.readouterr().err
    sample("ddim", _per_pixel_model, schedule, noise, 5)
    assert capsys.readouterr().err == ""
