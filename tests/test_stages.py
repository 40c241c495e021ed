"""The stage table and the presets: a new stage is one row of the table, a new preset one entry of the registry,
and a stage's default sampler is decided in one place (presets.default_sampler)."""

import dataclasses
import re

import pytest
import torch

from mrnet_utils import presets
from mrnet_utils import stages as stage_table
from mrnet_utils.config import run_name
from mrnet_utils.diffusion.processes import process_class
from mrnet_utils.errors import MRNetError
from mrnet_utils.networks.unet import UNet
from mrnet_utils.pipeline import TrainedStage, sample_cascade, sample_stage
from mrnet_utils.presets import PRESETS, default_sampler, stage_config
from mrnet_utils.stages import CASCADE, STAGES, StageSpec, check_chain, stage_spec
from mrnet_utils.study import layout, super_resolution


def test_every_random_stream_is_used_once():
    streams = [spec.noise_stream for spec in STAGES.values()]
    streams += [spec.condition_stream for spec in STAGES.values() if spec.condition_stream is not None]
    assert len(streams) == len(set(streams))
    assert all((spec.condition_stream is not None) == spec.is_super_resolution for spec in STAGES.values())


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_default_samplers_exist_and_fit_every_presets_schedule(preset):
    for name in STAGES:
        # the regression baseline works in [-1, 1], which the reference's [0, 1] stages do not; every generating
        # stage can be distilled
        baseline = STAGES[name].is_super_resolution and preset != "reference"
        switched = ("regression",) if baseline else () if STAGES[name].is_super_resolution else ("distilled",)
        for process in (None, *switched):
            cfg = stage_config(name, preset, process=process)
            process_class(cfg.diffusion.process).check_sampler(cfg.diffusion, default_sampler(cfg))


def test_a_stage_samples_with_its_presets_choice_where_its_process_takes_it_else_the_process_chain():
    # by default, the chain unless a faster sampler was shown equivalent to it (demo: the SR stages' 3 steps)
    demo = {name: default_sampler(stage_config(name, "demo")) for name in STAGES}
    assert demo == {"base64": ("ddpm", 1000), "sr1": ("resshift", 3), "sr2": ("resshift", 3),
                    "single256": ("ddpm", 1000)}
    # quick (training grids, the demo study's samples): the quick samplers first, the defaults elsewhere
    quick = {name: default_sampler(stage_config(name, "demo"), quick=True) for name in STAGES}
    assert quick == {"base64": ("dpmpp_sde", 25), "sr1": ("resshift", 3), "sr2": ("resshift", 3),
                     "single256": ("dpmpp_sde", 100)}
    # the gpu preset: quick samplers for its study's time, and no verdict on its checkpoints (the SR chain: 4 steps)
    assert default_sampler(stage_config("single256", "gpu"), quick=True) == ("dpmpp_sde", 100)
    assert default_sampler(stage_config("sr2", "gpu"), quick=True) == ("resshift", 4)
    # the reference's ancestral chain over all T steps, for its ddpm stages (all of them: T = 2000 and 1000)
    assert default_sampler(stage_config("base64", "reference")) == ("ddpm_large", 2000)
    assert default_sampler(stage_config("sr1", "reference")) == ("ddpm_large", 1000)
    # the smoke preset's few steps where the process is ddpm (its images claim nothing), quick or not; a resshift
    # stage's own chain
    assert default_sampler(stage_config("single256", "smoke")) == ("dpmpp_sde", 5)
    assert default_sampler(stage_config("single256", "smoke"), quick=True) == ("dpmpp_sde", 5)
    assert default_sampler(stage_config("sr2", "smoke")) == ("resshift", 4)
    assert default_sampler(stage_config("sr1", "demo", process="regression")) == ("regression", 1)
    # a distilled generator: DDIM in the steps it was distilled to, the preset's (demo: 32 -> 4, three rounds), quick
    # or not (the quick dpmpp_sde is not its sampler)
    assert default_sampler(stage_config("base64", "demo", process="distilled")) == ("ddim", 4)
    assert default_sampler(stage_config("base64", "demo", process="distilled"), quick=True) == ("ddim", 4)
    assert stage_config("base64", "demo", process="distilled").diffusion.distilled_from == 32
    # a stage switched to ddpm where its preset names no sampler: the ancestral chain over all T steps
    assert default_sampler(stage_config("sr1", "demo", process="ddpm")) == ("ddpm", 1000)
    # a config whose preset is no longer registered samples with its process's own chain
    assert default_sampler(stage_config("base64", "demo").replace(preset="retired")) == ("ddpm", 1000)


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
    sr3 = StageSpec("sr3", 512, 256, noise_stream=7, condition_stream=8)
    monkeypatch.setitem(STAGES, "sr3", sr3)
    monkeypatch.setattr(stage_table, "CASCADE", (*CASCADE, "sr3"))
    monkeypatch.setattr(layout, "CASCADE", (*CASCADE, "sr3"))
    monkeypatch.setattr(layout, "GENERATORS", tuple(
        dataclasses.replace(g, stages=(*g.stages, ("sr3", g.stages[0][1], None))) if len(g.stages) > 1 else g
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
    with pytest.raises(MRNetError, match="the reference preset has no run of stage sr3 with Swin"):
        stage_config("sr3", "reference")
    stages = [_untrained(name) for name in (*CASCADE, "sr3")]
    images = sample_cascade(stages, [0, 1], progress=False)
    assert sorted(images) == [64, 128, 256, 512] and images[512].shape == (2, 1, 512, 512)


def test_a_new_stage_leaves_the_noise_of_the_others_as_it_was(monkeypatch):
    sr1 = _untrained("sr1")
    low_res = torch.zeros(2, 1, 64, 64)
    before = sample_stage(sr1.model, sr1.config, [0, 1], low_res, progress=False)
    monkeypatch.setitem(STAGES, "sr3", StageSpec("sr3", 512, 256, noise_stream=7, condition_stream=8))
    after = sample_stage(sr1.model, sr1.config, [0, 1], low_res, progress=False)
    assert torch.equal(before, after)


def test_a_new_preset_is_one_entry_built_from_another_by_replace(monkeypatch, tiny_cache, tmp_path):
    """A user's preset: the smoke preset with a wider network, another learning rate for SR1 and its own
    sampler for base 64. Every stage builds, trains through the real loop and samples with the preset's choice."""
    import dataclasses

    from mrnet_utils.training.checkpoint import load_stage
    from mrnet_utils.training.loop import train

    wide = dataclasses.replace(
        presets.SMOKE, name="wide", network={**presets.SMOKE.network, "channels": (8, 16, 32), "bottleneck_channels": 32},
        stages={**presets.SMOKE.stages, "sr1": {"train.lr": 5e-4}}, samplers={"base64": ("ddim", 10)},
    )
    monkeypatch.setitem(PRESETS, "wide", wide)
    configs = {name: stage_config(name, "wide") for name in STAGES}
    assert {cfg.unet.channels for cfg in configs.values()} == {(8, 16, 32)}
    assert configs["sr1"].train.lr == 5e-4 and configs["sr2"].train.lr == presets.SMOKE.train.lr
    assert configs["base64"].unet.attention_resolutions == (16,)
    assert default_sampler(configs["base64"]) == ("ddim", 10) and default_sampler(configs["sr1"]) == ("resshift", 4)
    result = train(configs["base64"].replace(train={"steps": 2}), tiny_cache, tmp_path / "base", progress=False,
                   grids=False)
    stage = load_stage(result.checkpoint)
    assert stage.config.preset == "wide" and stage.config.unet.channels == (8, 16, 32)
    assert default_sampler(stage.config) == ("ddim", 10)  # the checkpoint's preset decides its default
    assert sample_stage(stage.model, stage.config, [0], progress=False).shape == (1, 1, 64, 64)


def test_settings_change_by_dotted_name_with_their_types_and_unknown_ones_are_refused():
    cfg = stage_config("sr1", "smoke")
    changed = cfg.with_settings({"train.lr": "2e-4", "unet.channels": "8,16,32", "unet.use_swin": "false",
                                 "conditioning.enabled": "False", "diffusion.kappa": 2})
    assert (changed.train.lr, changed.unet.channels, changed.unet.use_swin) == (2e-4, (8, 16, 32), False)
    assert (changed.conditioning.enabled, changed.diffusion.kappa, changed.name) == (False, 2, "sr1_noswin")
    for settings, message in [({"train.learning_rate": 1}, "unknown setting 'train.learning_rate'"),
                              ({"stage": "sr2"}, "unknown setting 'stage'"),
                              ({"train.steps": "many"}, "--set train.steps=many: not a value of type int"),
                              ({"unet.use_swin": "maybe"}, "--set unet.use_swin=maybe: not a value of type bool"),
                              ({"unet.channels": "8,10,16"}, "channel width 10 is not divisible by norm_groups=4")]:
        with pytest.raises(MRNetError, match=re.escape(message)):
            cfg.with_settings(settings)
