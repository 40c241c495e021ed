"""Tests for the UNet family (mrnet_utils/networks/: unet, swin): shapes, conditioning, Swin ablation, errors."""

import copy
import dataclasses

import pytest
import torch

from mrnet_utils.config import UNetConfig
from mrnet_utils.presets import stage_config
from mrnet_utils.errors import MRNetError
from mrnet_utils.networks.unet import UNet
from mrnet_utils.stages import STAGES


def _net(stage: str, preset: str = "smoke", use_swin: bool = True, seed: int = 0, **changes) -> UNet:
    cfg = dataclasses.replace(stage_config(stage, preset, use_swin).unet, **changes)
    torch.manual_seed(seed)
    return UNet(cfg)


def _inputs(net: UNet, batch: int = 2, seed: int = 1) -> dict:
    """Noisy image, timesteps and (for SR nets) a condition, as the samplers pass them."""
    generator = torch.Generator().manual_seed(seed)
    side = net.cfg.resolution
    args = {
        "x": torch.randn(batch, 1, side, side, generator=generator),
        "t": torch.randint(0, 100, (batch,), generator=generator),
    }
    if net.cfg.cond_channels:
        args["cond"] = torch.randn(batch, net.cfg.cond_channels, side, side, generator=generator)
    return args


def _unzero_output(net: UNet) -> UNet:
    """Give the zero-initialised output conv weights, so the output depends on the inputs."""
    generator = torch.Generator().manual_seed(2)
    with torch.no_grad():
        conv = net.output[-1]
        conv.weight.copy_(torch.randn(conv.weight.shape, generator=generator) * 0.1)
    return net


@pytest.mark.parametrize("use_swin", [True, False])
@pytest.mark.parametrize("stage", STAGES)
def test_smoke_preset_output_shape(stage, use_swin):
    net = _unzero_output(_net(stage, "smoke", use_swin))
    args = _inputs(net)
    out = net(**args)
    assert out.shape == args["x"].shape
    assert torch.isfinite(out).all()
    assert out.abs().sum() > 0


@pytest.mark.parametrize("use_swin", [True, False])
@pytest.mark.parametrize("stage", STAGES)
def test_demo_preset_output_shape(stage, use_swin):
    net = _net(stage, "demo", use_swin)
    args = _inputs(net, batch=1)
    with torch.no_grad():
        assert net(**args).shape == args["x"].shape


def test_full_base64_forward():
    net = _net("base64", "full")
    assert 20_000_000 < sum(p.numel() for p in net.parameters()) < 30_000_000
    args = _inputs(net, batch=1)
    with torch.no_grad():
        assert net(**args).shape == (1, 1, 64, 64)


@pytest.mark.parametrize("stage", ["base64", "sr1"])
def test_no_swin_is_swin_minus_the_swin_module(stage):
    swin, plain = _net(stage, use_swin=True), _net(stage, use_swin=False)
    swin_keys, plain_keys = set(swin.state_dict()), set(plain.state_dict())
    under_swin = {key for key in swin_keys if key.startswith("swin.")}
    assert under_swin and plain_keys == swin_keys - under_swin
    count = lambda module: sum(p.numel() for p in module.parameters())  # noqa: E731
    assert count(swin) - count(plain) == count(swin.swin) > 0
    # Same seed -> identical shared weights: the ablation changes only the Swin module.
    plain_state = plain.state_dict()
    assert all(torch.equal(value, plain_state[key]) for key, value in swin.state_dict().items() if key in plain_state)


def test_swin_model_with_identity_blocks_equals_no_swin_model():
    swin = _unzero_output(_net("sr1", use_swin=True))
    plain = _unzero_output(_net("sr1", use_swin=False))
    args = _inputs(swin)
    assert not torch.allclose(swin(**args), plain(**args), atol=1e-4)
    with torch.no_grad():
        # Each MONAI block is x + attn(x) + mlp(x); zero output projections leave x unchanged.
        for block in swin.swin.blocks:
            for linear in (block.attn.proj, block.mlp.linear2):
                linear.weight.zero_()
                linear.bias.zero_()
    torch.testing.assert_close(swin(**args), plain(**args), atol=1e-6, rtol=0)


def test_swin_blocks_alternate_regular_and_shifted_windows_with_a_mask():
    net = _net("sr1", swin_depth=2, swin_window=4)
    blocks = net.swin.blocks
    assert [tuple(block.shift_size) for block in blocks] == [(0, 0), (2, 2)]
    mask = net.swin.attn_mask
    side = net.cfg.bottleneck_resolution
    assert mask.shape == ((side // 4) ** 2, 16, 16)
    assert (mask < 0).any() and (mask == 0).any()
    # The bottleneck must pass the mask on: without it, pixels wrapped across the border mix.
    h = torch.randn(1, net.cfg.bottleneck_channels, side, side, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        masked = net.swin(h)
        mask.zero_()
        assert not torch.allclose(masked, net.swin(h), atol=1e-5)


def test_super_resolution_net_needs_a_condition_of_the_right_shape():
    net = _net("sr1")
    args = _inputs(net)
    with pytest.raises(MRNetError, match="needs cond"):
        net(args["x"], args["t"])
    with pytest.raises(MRNetError, match="needs cond"):
        net(args["x"], args["t"], cond=args["cond"][..., :64, :64])


def test_base_net_rejects_a_condition_and_an_aug_level():
    net = _net("base64")
    args = _inputs(net)
    with pytest.raises(MRNetError, match="cond_channels=0"):
        net(**args, cond=torch.zeros_like(args["x"]))
    with pytest.raises(MRNetError, match="cond_channels=0"):
        net(**args, aug_level=torch.zeros(2))


def test_output_depends_on_timestep():
    net = _unzero_output(_net("base64"))
    args = _inputs(net)
    out = net(**args)
    assert not torch.allclose(out, net(args["x"], args["t"] + 10), atol=1e-4)
    # A scalar t is broadcast over the batch.
    torch.testing.assert_close(net(args["x"], torch.tensor(7)), net(args["x"], torch.tensor([7, 7])))


def test_aug_level_matters_and_defaults_to_zero():
    net = _unzero_output(_net("sr1"))
    args = _inputs(net)
    default = net(**args)
    torch.testing.assert_close(default, net(**args, aug_level=torch.zeros(2)))
    assert not torch.allclose(default, net(**args, aug_level=torch.tensor([0.3, 0.3])), atol=1e-4)


def test_label_embedding():
    net = _unzero_output(_net("base64", num_labels=3))
    args = _inputs(net)
    null = net(**args)
    labelled = net(**args, labels=torch.tensor([[1, 0, 1], [0, 1, 0]]))
    assert not torch.allclose(null, labelled, atol=1e-4)
    # A negative entry is that label's null state: every label null is the unconditional model (CFG),
    # one label null leaves that label unsaid, for each sample of a batch on its own.
    mixed = net(**args, labels=torch.tensor([[1, 0, 1], [-1, -1, -1]]))
    torch.testing.assert_close(mixed[0], labelled[0])
    torch.testing.assert_close(mixed[1], null[1])
    partial = net(**args, labels=torch.tensor([[1, -1, 1], [0, 1, 0]]))
    torch.testing.assert_close(partial[1], labelled[1])
    assert not torch.allclose(partial[0], labelled[0], atol=1e-4) and not torch.allclose(partial[0], null[0], atol=1e-4)
    with pytest.raises(MRNetError, match="labels must have shape"):
        net(**args, labels=torch.ones(2, 2))
    with pytest.raises(MRNetError, match="num_labels=0"):
        _net("base64")(**args, labels=torch.ones(2, 3))


@pytest.mark.parametrize("stage", ["base64", "sr1"])
def test_zero_initialised_output(stage):
    net = _net(stage)
    assert torch.count_nonzero(net(**_inputs(net))) == 0


def test_gradients_reach_every_parameter():
    # SR net with labels and Swin, plus a base net with self-attention: every module in use.
    for net in (_net("sr1", num_labels=3), _net("base64")):
        _unzero_output(net)
        with torch.no_grad():  # so the zero-initialised convs do not block gradients upstream
            for param in net.parameters():
                param.add_(torch.randn_like(param) * 0.01)
        labels = torch.tensor([[1, 0, 0], [0, 1, 1]]) if net.cfg.num_labels else None
        aug_level = torch.tensor([0.1, 0.4]) if net.cfg.cond_channels else None
        net(**_inputs(net), aug_level=aug_level, labels=labels).square().mean().backward()
        missing = [name for name, p in net.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
        assert not missing


def test_channels_last_matches_contiguous():
    net = _unzero_output(_net("base64"))
    args = _inputs(net)
    fast = copy.deepcopy(net).to(memory_format=torch.channels_last)
    args_cl = {k: v.to(memory_format=torch.channels_last) if v.ndim == 4 else v for k, v in args.items()}
    with torch.no_grad():
        torch.testing.assert_close(fast(**args_cl), net(**args), atol=1e-5, rtol=0)


def test_bf16_autocast_runs_close_to_float32():
    net = _unzero_output(_net("sr1"))
    args = _inputs(net)
    with torch.no_grad():
        reference = net(**args)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            mixed = net(**args)
    assert torch.isfinite(mixed).all()
    assert (mixed.float() - reference).abs().max() < 0.05 * reference.abs().max()


def test_errors_for_sizes_the_net_cannot_take():
    net = _net("base64")
    with pytest.raises(MRNetError, match="takes \\(B, 1, 64, 64\\)"):
        net(torch.zeros(1, 1, 128, 128), torch.zeros(1, dtype=torch.long))
    small = dict(channels=(8, 16, 16), bottleneck_channels=16, norm_groups=4, swin_heads=2)
    with pytest.raises(MRNetError, match="not divisible by 2\\*\\*3"):
        UNet(UNetConfig(resolution=60, **small))
    with pytest.raises(MRNetError, match="swin_window=3 does not divide"):
        UNet(UNetConfig(resolution=64, swin_window=3, **small))
    UNet(UNetConfig(resolution=64, swin_window=3, use_swin=False, **small))  # no Swin, no window constraint
