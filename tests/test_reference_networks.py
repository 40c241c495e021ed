"""Tests for the reference study's network family (mrnet_utils/networks/reference.py).

Sizes against the reference's own counts, the two Swin token orders, shapes, gradients, errors.
"""

import dataclasses

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from mrnet_utils.config import DiffusionConfig, StageConfig, UNetConfig
from mrnet_utils.presets import stage_config
from mrnet_utils.diffusion import losses, samplers, schedules
from mrnet_utils.errors import MRNetError
from mrnet_utils.networks import build_network
from mrnet_utils.networks.reference import ReferenceSwinBlock, ReferenceUNet, reference_time_embedding
from mrnet_utils.networks.swin import SwinBottleneck
from mrnet_utils.networks.unet import UNet
from mrnet_utils.stages import STAGES

SUPER_RESOLUTION = ("sr1", "sr2")

# The reference's networks as its notebooks instantiate them, counted by the reference-facts
# sheet (../shared/REFERENCE.md): `AttentionUNet(1, 1, 128)` for base 64 and single-stage 256,
# `SuperResUNet(2, 1, 128)` for SR1 and SR2, parameters summed over `.parameters()`, FLOPs from
# torch's FlopCounterMode (2 x multiply-adds) for one image, batch 1.
# (stage, use_swin): (parameters, GFLOPs per image)
REFERENCE_SIZES = {
    ("base64", True): (11_118_373, 8.58),
    ("base64", False): (7_965_597, 8.17),
    ("sr1", True): (10_923_273, 22.40),
    ("sr1", False): (7_770_497, 20.78),
    ("sr2", True): (10_923_273, 89.58),
    ("sr2", False): (7_770_497, 83.11),
    ("single256", True): (10_922_697, 89.51),
}


def _reference_cfg(stage: str, use_swin: bool = True, token_order: str = "reference") -> UNetConfig:
    """The reference's network for a stage: self-attention and gates only in the base 64 model."""
    resolution = STAGES[stage].resolution
    return UNetConfig(
        resolution=resolution,
        channels=(64, 128, 256),
        bottleneck_channels=512,
        attention_resolutions=(64, 32, 16) if stage == "base64" else (),
        use_swin=use_swin,
        swin_heads=8,
        swin_window=4,
        swin_depth=1,
        time_embed_dim=128,
        cond_channels=1 if stage in SUPER_RESOLUTION else 0,
        family="reference",
        swin_token_order=token_order,
    )


def _tiny_cfg(stage: str, use_swin: bool = True, token_order: str = "reference", **changes) -> UNetConfig:
    """The same architecture, narrow enough for fast CPU tests."""
    cfg = dataclasses.replace(
        _reference_cfg(stage, use_swin, token_order),
        channels=(8, 16, 16),
        bottleneck_channels=16,
        swin_heads=2,
        time_embed_dim=16,
    )
    sides = tuple(cfg.resolution // 2**i for i in range(3))
    return dataclasses.replace(cfg, **{"attention_resolutions": sides if stage == "base64" else (), **changes})


def _inputs(cfg: UNetConfig, batch: int = 2, seed: int = 1) -> dict:
    generator = torch.Generator().manual_seed(seed)
    side = cfg.resolution
    args = {
        "x": torch.randn(batch, 1, side, side, generator=generator),
        "t": torch.randint(0, 1000, (batch,), generator=generator),
    }
    if cfg.cond_channels:
        args["cond"] = torch.rand(batch, cfg.cond_channels, side, side, generator=generator)
    return args


def _count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.mark.parametrize(("stage", "use_swin"), list(REFERENCE_SIZES))
def test_parameters_and_flops_match_the_reference_networks(stage, use_swin):
    parameters, gflops = REFERENCE_SIZES[(stage, use_swin)]
    torch.manual_seed(0)
    net = ReferenceUNet(_reference_cfg(stage, use_swin)).eval()
    assert _count(net) == parameters  # exact: same layers, same widths
    args = _inputs(net.cfg, batch=1)
    # Autograd stays on so that MONAI's window attention runs its explicit matmuls, which the
    # counter sees (the reference's are explicit too); under no_grad MONAI calls SDPA with a
    # bias, which FlopCounterMode on CPU does not count (2-34 MFLOPs of the total).
    counter = FlopCounterMode(display=False)
    with counter:
        out = net(**args)
    assert out.shape == (1, 1, net.cfg.resolution, net.cfg.resolution)
    assert counter.get_total_flops() / 1e9 == pytest.approx(gflops, rel=0.01)


def test_the_time_embedding_is_the_references_sines_then_cosines():
    t = torch.tensor([0, 1, 250, 1999])
    emb = reference_time_embedding(t, 128)
    assert emb.shape == (4, 128)
    # frequency k is 10000^(-k/63): 1 for k = 0 and exactly 1/10000 for the last one, k = 63
    torch.testing.assert_close(emb[:, 0], torch.sin(t.float()))
    torch.testing.assert_close(emb[:, 64], torch.cos(t.float()))
    torch.testing.assert_close(emb[:, 63], torch.sin(t.float() / 10000))
    torch.testing.assert_close(emb[:, 127], torch.cos(t.float() / 10000))
    torch.testing.assert_close(emb[:, 21], torch.sin(t.float() * 10000 ** (-21 / 63)))


def test_the_network_takes_the_tiled_embedding_after_image_and_condition():
    net = ReferenceUNet(_tiny_cfg("sr1"))
    first_conv = net.encoder[0][0]
    assert first_conv.in_channels == 1 + 1 + 16  # [x, cond, embedding]
    seen = {}
    first_conv.register_forward_hook(lambda module, inputs, output: seen.update(input=inputs[0]))
    args = _inputs(net.cfg)
    net(**args)
    torch.testing.assert_close(seen["input"][:, :1], args["x"])
    torch.testing.assert_close(seen["input"][:, 1:2], args["cond"])
    expected = reference_time_embedding(args["t"], 16)[:, :, None, None].expand(-1, -1, 128, 128)
    torch.testing.assert_close(seen["input"][:, 2:], expected)


def test_only_the_base_model_has_self_attention_and_gates():
    def kinds(stage):
        names = {type(m).__name__ for m in ReferenceUNet(_tiny_cfg(stage)).modules()}
        return {"SAGANSelfAttention", "AttentionGate"} & names

    assert kinds("base64") == {"SAGANSelfAttention", "AttentionGate"}
    for stage in ("sr1", "sr2", "single256"):
        assert kinds(stage) == set()
    gammas = [m.gamma for m in ReferenceUNet(_tiny_cfg("base64")).self_attention]
    assert len(gammas) == 3 and all(g.detach().eq(0).all() for g in gammas)  # SAGAN starts as the identity


# --- the Swin block's two token orders -------------------------------------------------------


def _swin_pair(channels=32, heads=4, window=4, seed=0):
    """The same weights in both token orders."""
    torch.manual_seed(seed)
    spatial = ReferenceSwinBlock(channels, heads, window, "spatial")
    reference = ReferenceSwinBlock(channels, heads, window, "reference")
    reference.load_state_dict(spatial.state_dict())
    return spatial, reference


def test_the_token_orders_give_different_outputs_on_the_same_weights():
    spatial, reference = _swin_pair()
    x = torch.randn(2, 32, 8, 8, generator=torch.Generator().manual_seed(3))
    out_spatial, out_reference = spatial(x), reference(x)
    assert out_spatial.shape == out_reference.shape == x.shape
    assert (out_spatial - out_reference).abs().max() > 0.1


@pytest.mark.parametrize(("channels", "side"), [(32, 8), (128, 8), (16, 16)])
def test_only_the_spatial_order_commutes_with_a_roll_by_one_window(channels, side):
    # Without shift, rolling the map by one window along H and W only permutes the windows,
    # so true windowed attention commutes with it; the reference's scrambled order does not.
    spatial, reference = _swin_pair(channels=channels)
    x = torch.randn(1, channels, side, side, generator=torch.Generator().manual_seed(4))

    def roll(t):
        return torch.roll(t, shifts=(4, 4), dims=(2, 3))

    torch.testing.assert_close(spatial(roll(x)), roll(spatial(x)), atol=1e-5, rtol=1e-5)
    assert (reference(roll(x)) - roll(reference(x))).abs().max() > 0.1


class _RecordingAttention(torch.nn.Module):
    """Stands in for the window attention: records its input, returns a tensor of known values."""

    def forward(self, windows, mask):
        self.windows = windows
        self.output = torch.arange(windows.numel(), dtype=windows.dtype).reshape(windows.shape)
        return self.output


def test_the_reference_order_by_index_arithmetic():
    # The notebooks' order, element by element, on a (1, C=8, S=4, S=4) map with 2 x 2 windows.
    c, s, w = 8, 4, 2
    block = ReferenceSwinBlock(c, 2, w, "reference")
    with torch.no_grad():  # identity layer norms and a zero MLP: what attention does is all that changes
        for norm in (block.block.norm1, block.block.norm2):
            norm.weight.fill_(1.0)
            norm.bias.zero_()
        for layer in (block.block.mlp.linear1, block.block.mlp.linear2):
            layer.weight.zero_()
            layer.bias.zero_()
    block.block.attn = _RecordingAttention()
    x = torch.randn(1, c, s, s, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        out = block(x)
    flat = x.flatten()
    # "Tokens" are runs of C consecutive numbers of the channel-major map, layer-normalised.
    runs = torch.nn.functional.layer_norm(flat.reshape(s * s, c), (c,)).flatten()
    windows, attended = block.block.attn.windows, block.block.attn.output
    assert windows.shape == (s * s // w**2, w * w, c)
    for n in range(s * s // w**2):
        for p in range(w * w):
            for f in range(c):
                # The window array's element (n, p, f) is element `i` of the permuted array
                # (S/w, C/w, w, w, S) = (qb, cb, qw, cw, r) ...
                i = (n * w * w + p) * c + f
                qb, rest = divmod(i, (c // w) * w * w * s)
                cb, rest = divmod(rest, w * w * s)
                qw, rest = divmod(rest, w * s)
                cw, r = divmod(rest, s)
                # ... which is entry (r, qb*w + qw, cb*w + cw) of the runs read as an (S, S, C) array.
                assert windows[n, p, f] == runs[(r * s + qb * w + qw) * c + cb * w + cw]
                # Attention output (n, p, f) lands at channel f of pixel p of the n-th w x w window.
                row = (n // (s // w)) * w + p // w
                col = (n % (s // w)) * w + p % w
                moved = float(out[0, f, row, col] - x[0, f, row, col])
                assert moved == pytest.approx(float(attended[n, p, f]), abs=1e-4)


def test_the_spatial_order_is_the_project_swin_bottleneck_with_one_block():
    torch.manual_seed(0)
    ours = ReferenceSwinBlock(32, 4, 4, "spatial")
    project = SwinBottleneck(32, side=8, heads=4, window=4, depth=1)
    assert _count(ours) == _count(project)
    project.blocks[0].load_state_dict(ours.block.state_dict())
    x = torch.randn(2, 32, 8, 8, generator=torch.Generator().manual_seed(6))
    torch.testing.assert_close(ours(x), project(x))


# --- the whole network ---------------------------------------------------------------------


# The token order only matters with Swin.
@pytest.mark.parametrize(("use_swin", "token_order"), [(True, "reference"), (True, "spatial"), (False, "spatial")])
@pytest.mark.parametrize("stage", STAGES)
def test_every_stage_gives_one_channel_at_its_resolution(stage, use_swin, token_order):
    net = ReferenceUNet(_tiny_cfg(stage, use_swin, token_order))
    args = _inputs(net.cfg)
    out = net(**args)
    assert out.shape == args["x"].shape
    assert torch.isfinite(out).all() and out.std() > 0


def test_a_scalar_timestep_is_the_same_for_every_image():
    net = ReferenceUNet(_tiny_cfg("sr1")).eval()
    args = _inputs(net.cfg)
    args["t"] = torch.tensor([7, 7])
    with torch.no_grad():
        torch.testing.assert_close(net(**args), net(**{**args, "t": torch.tensor(7)}))


def test_gradients_reach_every_parameter_through_the_project_loss():
    torch.manual_seed(0)
    net = ReferenceUNet(_tiny_cfg("base64"))
    with torch.no_grad():  # SAGAN's gamma starts at 0, which would hide its query, key and value
        for attention in net.self_attention:
            attention.gamma.fill_(0.5)
    schedule = schedules.NoiseSchedule.from_config(DiffusionConfig(timesteps=100))
    args = _inputs(net.cfg, batch=2)
    noise = torch.randn_like(args["x"])
    loss = losses.diffusion_loss(net, schedule, args["x"].clamp(-1, 1), args["t"] % 100, noise)
    loss.mean().backward()
    for name, parameter in net.named_parameters():
        assert parameter.grad is not None and torch.isfinite(parameter.grad).all(), name
        assert parameter.grad.abs().sum() > 0, name


def test_an_sr_stage_runs_in_the_projects_sampler_with_augmentation_off():
    torch.manual_seed(0)
    net = ReferenceUNet(_tiny_cfg("sr1")).eval()
    schedule = schedules.NoiseSchedule.from_config(DiffusionConfig(timesteps=50))
    noise = torch.randn(2, 1, 128, 128, generator=torch.Generator().manual_seed(7))
    # What pipeline.py passes with ConditioningConfig.enabled=False: the clean condition and level 0.
    extra = {"cond": torch.rand(2, 1, 128, 128), "aug_level": torch.zeros(2)}
    out = samplers.sample("ddpm", net, schedule, noise, 3, extra_args=extra)
    assert out.shape == noise.shape and torch.isfinite(out).all()


def test_swin_and_no_swin_share_every_other_weight_from_the_same_seed():
    torch.manual_seed(0)
    swin = ReferenceUNet(_tiny_cfg("sr1", use_swin=True))
    torch.manual_seed(0)
    plain = ReferenceUNet(_tiny_cfg("sr1", use_swin=False))
    plain_state = plain.state_dict()
    assert set(plain_state) == {key for key in swin.state_dict() if not key.startswith("swin.")}
    assert all(torch.equal(value, plain_state[key]) for key, value in swin.state_dict().items() if key in plain_state)


def test_build_network_follows_the_family():
    tiny = _tiny_cfg("sr1")
    assert type(build_network(tiny)) is ReferenceUNet
    project = stage_config("sr1", "smoke").unet
    assert project.family == "project" and type(build_network(project)) is UNet


# --- errors ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("stage", "change", "message"),
    [
        ("base64", {"x": torch.zeros(2, 1, 32, 32)}, r"takes \(B, 1, 64, 64\)"),
        ("base64", {"x": torch.zeros(2, 2, 64, 64)}, r"takes \(B, 1, 64, 64\)"),
        ("base64", {"cond": torch.zeros(2, 1, 64, 64)}, "cond_channels=0"),
        ("sr1", {"cond": None}, "needs cond of shape"),
        ("sr1", {"cond": torch.zeros(2, 1, 64, 64)}, "needs cond of shape"),
        ("sr1", {"t": torch.zeros(3, dtype=torch.long)}, r"t must be a scalar or have shape \(2,\)"),
        ("sr1", {"labels": torch.zeros(2, 3)}, "reference networks are unconditional"),
        ("sr1", {"aug_level": torch.tensor([0.0, 0.2])}, "non-zero aug_level"),
        ("sr1", {"aug_level": 0.1}, "non-zero aug_level"),
    ],
)
def test_bad_inputs_are_refused_with_what_to_do(stage, change, message):
    net = ReferenceUNet(_tiny_cfg(stage))
    args = {**_inputs(net.cfg), **change}
    if args.get("cond") is None:
        args.pop("cond", None)
    with pytest.raises(MRNetError, match=message):
        net(**args)


def test_a_zero_aug_level_is_accepted_as_no_augmentation():
    net = ReferenceUNet(_tiny_cfg("sr1")).eval()
    args = _inputs(net.cfg)
    with torch.no_grad():
        torch.testing.assert_close(net(**args, aug_level=torch.zeros(2)), net(**args))
        torch.testing.assert_close(net(**args, aug_level=0.0), net(**args))


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"attention_resolutions": (16,)}, "after every encoder stage"),
        ({"swin_depth": 2}, "swin_depth=2 is not available"),
        ({"num_res_blocks": 2}, "num_res_blocks=2 is not available"),
        ({"dropout": 0.1}, "dropout=0.1 is not available"),
        ({"num_labels": 3}, "num_labels=3 is not available"),
        ({"time_embed_dim": 15}, "time_embed_dim=15 must be even"),
        ({"bottleneck_channels": 18, "swin_heads": 2}, "cuts the bottleneck_channels=18 axis"),
        ({"channels": (4, 16, 16)}, "self-attention needs every width >= 8"),
        ({"family": "project", "swin_token_order": "spatial", "norm_groups": 4}, "builds family='reference' configs"),
        ({"swin_window": 3}, "swin_window=3 does not divide"),
    ],
)
def test_configs_the_reference_family_cannot_honour_are_refused(changes, message):
    with pytest.raises(MRNetError, match=message):
        ReferenceUNet(_tiny_cfg("base64", **changes))


def test_the_reference_family_ignores_norm_groups_and_the_spatial_order_any_width():
    ReferenceUNet(_tiny_cfg("sr1", norm_groups=32))  # widths 8 and 16: no group norm to divide
    ReferenceUNet(_tiny_cfg("sr1", token_order="spatial", bottleneck_channels=18, swin_heads=2))


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"family": "lucidrains"}, "family must be one of project, reference"),
        ({"swin_token_order": "rows"}, "swin_token_order must be one of spatial, reference"),
        ({"swin_token_order": "reference"}, "exists only in family='reference'"),
    ],
)
def test_config_validates_the_family_and_token_order(changes, message):
    with pytest.raises(MRNetError, match=message):
        stage_config("sr1", "smoke").replace(unet=changes)


def test_existing_configs_and_stored_ones_keep_the_project_family():
    for stage in STAGES:
        cfg = stage_config(stage, "full")
        assert (cfg.unet.family, cfg.unet.swin_token_order) == ("project", "spatial")
    stored = stage_config("sr1", "smoke").to_dict()
    for key in ("family", "swin_token_order"):  # a checkpoint written before these fields existed
        del stored["unet"][key]
    assert StageConfig.from_dict(stored) == stage_config("sr1", "smoke")


def test_a_reference_sr_stage_refuses_conditioning_augmentation():
    cfg = stage_config("sr1", "smoke")
    reference = {"family": "reference", "swin_depth": 1, "num_res_blocks": 1}
    with pytest.raises(MRNetError, match="set conditioning.enabled=False"):
        cfg.replace(unet=reference, conditioning={"enabled": True})
    assert cfg.replace(unet=reference, conditioning={"enabled": False}).unet.family == "reference"
    # generating stages have no condition, whatever the conditioning section says
    stage_config("base64", "smoke").replace(unet=reference, conditioning={"enabled": True})


@pytest.mark.parametrize(("stage", "use_swin"), sorted(REFERENCE_SIZES))
def test_the_reference_preset_builds_the_reference_networks(stage, use_swin):
    cfg = stage_config(stage, "reference", use_swin)
    net = build_network(cfg.unet)
    assert isinstance(net, ReferenceUNet) and cfg.unet.swin_token_order == "reference"
    assert sum(p.numel() for p in net.parameters()) == REFERENCE_SIZES[stage, use_swin][0]
    assert (cfg.diffusion.data_range, cfg.train.lr_schedule, cfg.train.ema_decay) == ("unit", "plateau", 0.0)
