"""The notebook figures: panel counts, fixed grey-scale limits, and what each panel draws."""

import errno
import io

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.patches import StepPatch  # noqa: E402
from PIL import Image  # noqa: E402

from mrnet_utils.errors import MRNetError  # noqa: E402
from mrnet_utils.evaluation import plots  # noqa: E402


@pytest.fixture
def rng():
    return np.random.default_rng(0)


def _single_image(ax):
    assert len(ax.images) == 1
    return ax.images[0]


def test_image_grid_has_one_axes_per_image_with_fixed_limits():
    torch.manual_seed(0)
    # A narrow range: autoscaling would stretch it to full contrast.
    images = torch.rand(10, 1, 8, 8) * 0.2
    fig = plots.plot_image_grid(images, nrow=4, title="samples", labels=[f"#{i}" for i in range(10)])
    assert isinstance(fig, Figure)
    assert len(fig.axes) == 10  # 3 rows of 4, the two unused cells removed
    for index, ax in enumerate(fig.axes):
        image = _single_image(ax)
        assert image.get_clim() == (-1.0, 1.0)
        np.testing.assert_allclose(image.get_array(), images[index, 0].numpy())
        assert ax.get_title() == f"#{index}"
        assert len(ax.get_xticks()) == 0 and len(ax.get_yticks()) == 0
    assert fig.get_suptitle() == "samples"


def test_image_grid_accepts_a_single_slice_and_checks_labels():
    assert len(plots.plot_image_grid(np.zeros((8, 8))).axes) == 1
    with pytest.raises(MRNetError, match="labels"):
        plots.plot_image_grid(np.zeros((3, 8, 8)), labels=["a"])
    with pytest.raises(MRNetError, match="shape"):
        plots.plot_image_grid(np.zeros((2, 3, 8, 8)))


def test_planes_rows_are_planes_with_uint8_limits(rng):
    examples = {
        plane: [rng.integers(0, 256, (16, 16), dtype=np.uint8) for _ in range(3)]
        for plane in ("coronal", "sagittal", "axial")
    }
    fig = plots.plot_planes(examples, title="one central slice per exam")
    assert len(fig.axes) == 9
    assert [fig.axes[row * 3].get_ylabel() for row in range(3)] == ["coronal", "sagittal", "axial"]
    assert all(_single_image(ax).get_clim() == (0.0, 255.0) for ax in fig.axes)
    narrow = plots.plot_planes({"coronal": [np.zeros((4, 4))]}, value_range=(-1.0, 1.0))
    assert _single_image(narrow.axes[0]).get_clim() == (-1.0, 1.0)


def test_loss_curves_draw_raw_and_ema_lines(rng):
    logs = {
        name: pd.DataFrame({"step": np.arange(50), "loss": rng.uniform(0.05, 1.0, 50), "lr": 1e-4})
        for name in ("swin", "no swin")
    }
    fig = plots.plot_loss_curves(logs, smooth=0.8)
    (ax,) = fig.axes
    assert ax.get_yscale() == "log"
    assert len(ax.lines) == 4
    for index, (name, log) in enumerate(logs.items()):
        raw, smoothed = ax.lines[2 * index], ax.lines[2 * index + 1]
        np.testing.assert_allclose(raw.get_ydata(), log["loss"])
        expected = [log["loss"][0]]
        for value in log["loss"][1:]:
            expected.append(0.8 * expected[-1] + 0.2 * value)
        np.testing.assert_allclose(smoothed.get_ydata(), expected)
        assert raw.get_alpha() < 1.0 and smoothed.get_linewidth() > raw.get_linewidth()
        assert raw.get_color() == smoothed.get_color()
        assert smoothed.get_label() == name
    with pytest.raises(MRNetError, match="loss"):
        plots.plot_loss_curves({"run": pd.DataFrame({"step": [0, 1]})})


def test_grids_over_training_are_ordered_and_titled_by_step(rng):
    grids = {
        1000: rng.integers(0, 256, (20, 20), dtype=np.uint8),
        0: rng.integers(0, 256, (20, 20, 3), dtype=np.uint8),
    }
    fig = plots.plot_grids_over_training(grids)
    assert [ax.get_title() for ax in fig.axes] == ["step 0", "step 1,000"]
    assert _single_image(fig.axes[1]).get_clim() == (0.0, 255.0)
    np.testing.assert_array_equal(_single_image(fig.axes[0]).get_array(), grids[0])


def test_sr_comparison_layout_insets_and_scores():
    torch.manual_seed(0)
    methods = ["nearest", "bilinear", "bicubic", "lanczos", "SR (Swin)", "SR (no Swin)"]
    truth = torch.rand(2, 1, 32, 32) * 2 - 1
    candidates = {name: truth + 0.01 * index for index, name in enumerate(methods)}
    scores = {"bicubic": [25.5, 26.25]}
    fig = plots.plot_sr_comparison(truth[:, :, ::4, ::4], candidates, truth, zoom=(16, 4, 8), scores=scores)
    assert len(fig.axes) == 2 * 8
    first_row = fig.axes[:8]
    assert [ax.get_title().split("\n")[0] for ax in first_row] == ["low-res input", *methods, "ground truth"]
    assert fig.axes[3].get_title() == "bicubic\nPSNR 25.50 dB"
    assert fig.axes[8 + 3].get_title() == "PSNR 26.25 dB"
    for ax in fig.axes:
        (inset,) = ax.child_axes
        assert _single_image(ax).get_clim() == (-1.0, 1.0)
        assert _single_image(inset).get_clim() == (-1.0, 1.0)
    # The ground truth's inset shows rows 16..23, columns 4..11; the 8x8 low-res one the same region / 4.
    truth_inset, low_inset = fig.axes[7].child_axes[0], fig.axes[0].child_axes[0]
    assert truth_inset.get_xlim() == (3.5, 11.5) and truth_inset.get_ylim() == (23.5, 15.5)
    assert low_inset.get_xlim() == (0.5, 2.5) and low_inset.get_ylim() == (5.5, 3.5)


def test_sr_comparison_single_example_and_bad_inputs():
    truth = np.zeros((16, 16))
    fig = plots.plot_sr_comparison(np.zeros((8, 8)), {"bicubic": truth}, truth)
    assert len(fig.axes) == 3 and all(not ax.child_axes for ax in fig.axes)
    with pytest.raises(MRNetError, match="candidates"):
        plots.plot_sr_comparison(np.zeros((8, 8)), {"bicubic": np.zeros((8, 8))}, truth)
    with pytest.raises(MRNetError, match="zoom"):
        plots.plot_sr_comparison(np.zeros((8, 8)), {"bicubic": truth}, truth, zoom=(10, 0, 8))
    with pytest.raises(MRNetError, match="scores"):
        plots.plot_sr_comparison(np.zeros((8, 8)), {"bicubic": truth}, truth, scores={"bicubic": [1.0, 2.0]})


def _texts(ax):
    return [text.get_text() for text in ax.texts]


def test_metric_bars_skip_non_numeric_cells():
    table = pd.DataFrame(
        {
            "PSNR_mean": [27.0, 25.0, "not computed: no samples"],
            "PSNR_ci_low": [26.0, 24.5, np.nan],
            "PSNR_ci_high": [28.0, 25.5, np.nan],
            "FID_mean": ["not computed: offline", "not computed: offline", "not computed: offline"],
        },
        index=["SR (Swin)", "bicubic", "SR (no Swin)"],
    )
    fig = plots.plot_metric_bars(table, ["PSNR", "FID"], higher_is_better={"PSNR": True})
    psnr, fid = fig.axes
    assert [bar.get_height() for bar in psnr.patches] == [27.0, 25.0]
    assert _texts(psnr) == ["not computed"]
    assert psnr.get_title() == "PSNR (higher is better)"
    assert [label.get_text() for label in psnr.get_xticklabels()] == list(table.index)
    # The error bars span exactly [ci_low, ci_high].
    (bars,) = psnr.collections
    spans = sorted(tuple(segment[:, 1]) for segment in bars.get_segments())
    assert spans == [(24.5, 25.5), (26.0, 28.0)]
    assert not fid.patches and _texts(fid) == ["not computed"] and fid.get_title() == "FID"
    with pytest.raises(MRNetError, match="SSIM_mean"):
        plots.plot_metric_bars(table, ["SSIM"])


def test_comparison_forest_plot_colours_only_clear_differences():
    index = pd.MultiIndex.from_tuples(
        [("SR1", "lanczos", "psnr"), ("SR1", "lanczos", "ssim"), ("SR1", "bicubic", "psnr")], names=["a", "b", "metric"]
    )
    table = pd.DataFrame(
        {"difference": [2.0, 0.01, 1.5], "ci_low": [1.5, -0.02, np.nan], "ci_high": [2.5, 0.04, np.nan]}, index=index
    )
    fig = plots.plot_comparisons(table, title="paired")
    psnr, ssim = fig.axes
    assert (psnr.get_title(), ssim.get_title()) == ("psnr", "ssim")
    assert [label.get_text() for label in psnr.get_yticklabels()] == ["SR1 - lanczos", "SR1 - bicubic"]
    interval, point = psnr.lines[0], psnr.lines[1]
    assert list(point.get_xdata()) == [2.0]
    assert list(interval.get_xdata()) == [1.5, 2.5] and interval.get_color() == "C3"  # excludes zero: coloured
    assert ssim.lines[0].get_color() == "0.55"  # straddles zero: grey
    assert len(psnr.lines) == 2 + 1 + 1  # SR1 - bicubic has no interval: its point only, then the zero line
    with pytest.raises(MRNetError, match="empty"):
        plots.plot_comparisons(table.iloc[:0])
    # each training seed's difference beside the interval, when the table has them
    table["per_seed"] = ["+1, +3", "-0.5, +0.5", "+2, +2"]
    psnr, ssim = plots.plot_comparisons(table).axes
    crosses = [line for line in psnr.lines if line.get_marker() == "x"]
    assert [list(line.get_xdata()) for line in crosses] == [[1.0, 3.0], [2.0, 2.0]]
    assert ssim.get_legend().get_texts()[0].get_text() == "each training seed"


def test_label_agreement_draws_each_requests_shares_against_the_scale_and_the_real_share():
    index = pd.MultiIndex.from_product([["acl=1", "acl=0"], [0.0, 1.0, 3.0]], names=["request", "guidance"])
    table = pd.DataFrame({"share": [0.1, 0.4, 0.7, 0.9, 0.8, 0.95], "real_share": [0.6] * 3 + [0.9] * 3}, index=index)
    first, second = plots.plot_label_agreement(table).axes
    assert (first.get_title(), second.get_title()) == ("acl=1", "acl=0")
    shares, real = first.lines
    assert list(shares.get_xdata()) == [0.0, 1.0, 3.0] and list(shares.get_ydata()) == [0.1, 0.4, 0.7]
    assert list(real.get_ydata()) == [0.6, 0.6] and list(second.lines[1].get_ydata()) == [0.9, 0.9]
    with pytest.raises(MRNetError, match="empty"):
        plots.plot_label_agreement(table.iloc[:0])


def test_auc_plot_draws_each_training_sets_interval_where_there_is_one():
    index = pd.MultiIndex.from_product([["real", "synthetic"], ["acl", "meniscus"]], names=["trained on", "task"])
    table = pd.DataFrame({"auc": [0.8, 0.7, 0.6, 0.5], "ci_low": [0.7, np.nan, 0.4, 0.3],
                          "ci_high": [0.9, np.nan, 0.8, 0.7]}, index=index)
    acl, meniscus = plots.plot_auc(table).axes
    assert [label.get_text() for label in acl.get_yticklabels()] == ["real", "synthetic"]
    assert [list(line.get_xdata()) for line in acl.lines[:-1]] == [[0.7, 0.9], [0.8], [0.4, 0.8], [0.6]]
    assert [list(line.get_xdata()) for line in meniscus.lines[:-1]] == [[0.7], [0.3, 0.7], [0.5]]  # no interval: point


def test_histograms_share_bins_and_integrate_to_one(rng):
    real = rng.uniform(-1, 1, (4, 1, 8, 8))
    samples = {"cascade": torch.from_numpy(rng.normal(0, 0.5, (4, 1, 8, 8))), "single": rng.uniform(-1, 0, 256)}
    fig = plots.plot_histograms(samples, real, bins=16)
    (ax,) = fig.axes
    steps = [patch for patch in ax.patches if isinstance(patch, StepPatch)]
    assert len(steps) == 3
    for step in steps:
        values, edges, _ = step.get_data()
        np.testing.assert_allclose(edges, np.linspace(-1, 1, 17))
        assert np.sum(values * np.diff(edges)) == pytest.approx(1.0)
    outside = np.mean(np.abs(samples["cascade"].numpy()) > 1)
    labels = ax.get_legend_handles_labels()[1]
    assert labels[0] == "real" and labels[1] == f"cascade ({outside:.1%} clipped)" and labels[2] == "single"


def test_save_figure_writes_a_screen_resolution_png_and_closes(tmp_path):
    fig, ax = plt.subplots()
    ax.plot([0, 1], [1, 0])
    path = plots.save_figure(fig, tmp_path / "new" / "folder" / "line.png")
    assert path == tmp_path / "new" / "folder" / "line.png"
    assert path.stat().st_size > 0
    with Image.open(path) as image:
        assert image.format == "PNG" and image.mode == "RGB"  # a blue line: colour, opaque
        assert image.info["dpi"] == pytest.approx((100, 100), abs=0.1)
        assert image.size == (640, 480)  # matplotlib's default 6.4 x 4.8 inches
    assert fig.number not in plt.get_fignums()
    with pytest.raises(MRNetError, match="png"):
        plots.save_figure(plots.plot_image_grid(np.zeros((4, 4))), tmp_path / "grid.pdf")


def test_a_figure_without_colour_is_saved_as_the_same_pixels_in_grey(tmp_path):
    images = np.random.default_rng(0).uniform(-1, 1, (3, 1, 32, 32))
    fig = plots.plot_image_grid(images, labels=["a", "b", "c"])
    rendered = io.BytesIO()
    fig.savefig(rendered, dpi=100, format="png")
    with Image.open(rendered) as image:
        expected = np.asarray(image.convert("RGBA"))
    with Image.open(plots.save_figure(fig, tmp_path / "grid.png")) as saved:
        assert saved.mode == "L"
        assert np.array_equal(np.asarray(saved), expected[..., 0]) and (expected[..., 3] == 255).all()
        assert (expected[..., 0] == expected[..., 2]).all()
    wide = plt.figure(figsize=(25, 4))
    with Image.open(plots.save_figure(wide, tmp_path / "wide.png")) as saved:
        assert saved.size[0] == 2000  # at most SAVE_WIDTH pixels wide


def test_disk_full_while_saving_a_figure_is_one_line_and_keeps_the_previous_file(tmp_path, monkeypatch):
    path = tmp_path / "line.png"
    path.write_bytes(b"the previous figure")
    fig, ax = plt.subplots()
    ax.plot([0, 1], [1, 0])

    def full(self, handle, **kwargs):
        handle.write(b"half a PNG")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Figure, "savefig", full)
    with pytest.raises(MRNetError, match=f"^cannot write figure line.png to {tmp_path}: No space left on device"):
        plots.save_figure(fig, path)
    assert path.read_bytes() == b"the previous figure" and sorted(tmp_path.iterdir()) == [path]
