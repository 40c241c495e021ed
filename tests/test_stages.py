"""The stage table: every stage's facts in one place, so that a new stage is one row."""

import dataclasses

import pytest
import torch

from mrnet_utils import stages as stage_table
from mrnet_utils.config import PRESETS, stage_config
from mrnet_utils.diffusion import processes
from mrnet_utils.diffusion.samplers import SAMPLERS
from mrnet_utils.errors import MRNetError
from mrnet_utils.networks.unet import UNet
from mrnet_utils.pipeline import TrainedStage, sample_cascade, sample_stage
from mrnet_utils.stages import (
    CASCADE,
    STAGES,
    StageSpec,
    check_chain,
    run_name,
    stage_spec,
)
from mrnet_utils.study import layout, super_resolution


def test_every_random_stream_is_used_once():
    streams = [spec.noise_stream for spec in STAGES.values()]
    streams += [spec.condition_stream for spec in STAGES.values() if spec.condition_stream is not None]
    assert len(streams) == len(set(streams))
    assert all((spec.condition_stream is not None) == spec.is_super_resolution for spec in STAGES.values())


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_default_samplers_exist_and_fit_every_presets_schedule(preset):
    for name, spec in STAGES.items():
        assert spec.sampler[0] in SAMPLERS  # the default of a ddpm stage
        cfg = stage_config(name, preset)
        sampler, steps = processes.default_sampler(cfg)
        assert processes.takes_sampler(cfg.diffusion, sampler) and 1 <= steps <= cfg.diffusion.timesteps


def test_a_stage_samples_with_the_stage_tables_default_unless_its_preset_or_process_says_otherwise():
    demo = {name: processes.default_sampler(stage_config(name, "demo")) for name in STAGES}
    assert demo == {"base64": ("dpmpp_sde", 25), "sr1": ("resshift", 4), "sr2": ("resshift", 4),
                    "single256": ("dpmpp_sde", 100)}
    # the reference's ancestral chain over all T steps, for its ddpm stages (all of them: T = 2000 and 1000)
    assert processes.default_sampler(stage_config("base64", "reference")) == ("ddpm_large", 2000)
    assert processes.default_sampler(stage_config("sr1", "reference")) == ("ddpm_large", 1000)
    # the smoke preset's few steps replace the table's only where the process is ddpm
    assert processes.default_sampler(stage_config("single256", "smoke")) == ("dpmpp_sde", 5)
    assert processes.default_sampler(stage_config("sr2", "smoke")) == ("resshift", 4)
    assert processes.default_sampler(stage_config("sr1", "demo", process="regression")) == ("regression", 1)


def test_the_cascade_chains_and_bad_chains_are_refused():
    check_chain(CASCADE)
    with pytest.raises(MRNetError, match="starts with a stage that generates"):
        check_chain(("sr1", "sr2"))
    with pytest.raises(MRNetError, match="stage sr2 takes 128x128 inputs, but base64 before it makes 64x64"):
        check_chain(("base64", "sr2"))
    with pytest.raises(MRNetError, match="unknown stage 'sr3'; choose one of base64, sr1, sr2, single256"):
        stage_spec("sr3")
    assert run_name("sr1", False) == "sr1_noswin" == stage_config("sr1", "smoke", False).name


@pytest.fixture
def with_a_512_stage(monkeypatch):
    """A 256 -> 512 SR3 stage added to the table (and to the cascade), as a user would add one: one row."""
    sr3 = StageSpec("sr3", 512, 256, ("dpmpp", 3), 7, 8, False, 1000, 100)
    monkeypatch.setitem(STAGES, "sr3", sr3)
    monkeypatch.setattr(stage_table, "CASCADE", (*CASCADE, "sr3"))
    monkeypatch.setattr(layout, "CASCADE", (*CASCADE, "sr3"))
    monkeypatch.setattr(layout, "GENERATORS", tuple(
        dataclasses.replace(g, stages=(*g.stages, ("sr3", g.stages[0][1]))) if len(g.stages) > 1 else g
        for g in layout.GENERATORS
    ))
    monkeypatch.setattr(super_resolution, "CASCADE", (*CASCADE, "sr3"))
    return sr3


def _untrained(name: str) -> TrainedStage:
    cfg = stage_config(name, "smoke")
    torch.manual_seed(0)
    model = UNet(cfg.unet)
    model.output[-1].reset_parameters()  # so that the untrained network predicts something
    return TrainedStage(model.eval(), cfg, 0, None)


def test_a_new_stage_is_one_row_of_the_table(with_a_512_stage):
    cfg = stage_config("sr3", "smoke")
    assert (cfg.resolution, cfg.low_resolution, cfg.unet.cond_channels, cfg.name) == (512, 256, 1, "sr3_swin")
    assert {"sr3_256_to_512", "cascade_64_to_512"} <= set(super_resolution._sr_tasks())
    assert {("sr3", True, None), ("sr3", False, None), ("sr3", True, "regression")} <= set(layout.study_runs())
    with pytest.raises(MRNetError, match="the reference study has no run of stage sr3"):
        stage_config("sr3", "reference")
    stages = [_untrained(name) for name in (*CASCADE, "sr3")]
    images = sample_cascade(stages, [0, 1], progress=False)
    assert sorted(images) == [64, 128, 256, 512] and images[512].shape == (2, 1, 512, 512)


def test_a_new_stage_leaves_the_noise_of_the_others_as_it_was(monkeypatch):
    sr1 = _untrained("sr1")
    low_res = torch.zeros(2, 1, 64, 64)
    before = sample_stage(sr1.model, sr1.config, [0, 1], low_res, progress=False)
    monkeypatch.setitem(STAGES, "sr3", StageSpec("sr3", 512, 256, ("dpmpp", 3), 7, 8, False, 1000, 100))
    after = sample_stage(sr1.model, sr1.config, [0, 1], low_res, progress=False)
    assert torch.equal(before, after)
