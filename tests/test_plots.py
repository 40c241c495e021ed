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


def test_loss_curves_draw_raw_and_bias_corrected_ema_lines(rng):
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
        # m_t = 0.8 m_{t-1} + 0.2 x_t from m_{-1} = 0, divided by 1 - 0.8^(t+1)
        average, expected = 0.0, []
        for step, value in enumerate(log["loss"]):
            average = 0.8 * average + 0.2 * value
            expected.append(average / (1 - 0.8 ** (step + 1)))
        np.testing.assert_allclose(smoothed.get_ydata(), expected)
        assert smoothed.get_ydata()[0] == pytest.approx(log["loss"][0])  # no pull towards 0 or the first value
        assert raw.get_alpha() < 1.0 and smoothed.get_linewidth() > raw.get_linewidth()
        assert raw.get_color() == smoothed.get_color() and raw.get_linestyle() == smoothed.get_linestyle()
        assert smoothed.get_label() == name
    # two runs: two colours and two line styles, so that coinciding curves both show
    assert ax.lines[1].get_linestyle() != ax.lines[3].get_linestyle()
    assert ax.lines[1].get_color() != ax.lines[3].get_color()
    with pytest.raises(MRNetError, match="loss"):
        plots.plot_loss_curves({"run": pd.DataFrame({"step": [0, 1]})})
    with pytest.raises(MRNetError, match="EMA weight"):
        plots.plot_loss_curves(logs, smooth=1.0)


def test_the_default_ema_follows_a_falling_loss_closely():
    """Over about a tenth of the logged points: the smoothed loss ends near the logged one, not far above it."""
    steps = np.arange(0, 240, 10)
    log = pd.DataFrame({"step": steps, "loss": 0.3 * np.exp(-steps / 60) + 0.02})
    assert plots.default_smoothing(len(log)) == pytest.approx(1 - 1 / 2.4)
    assert plots.default_smoothing(8) == 0.0 and plots.default_smoothing(10_000) == pytest.approx(0.999)
    ema = plots.plot_loss_curves({"run": log}).axes[0].lines[1].get_ydata()
    assert ema[-1] < 1.2 * log["loss"].iloc[-1]
    unadjusted = log["loss"].ewm(alpha=0.1, adjust=False).mean().iloc[-1]  # TensorBoard 0.9 without correction
    assert unadjusted > 1.5 * log["loss"].iloc[-1]


def test_loss_panels_one_per_group_with_its_runs():
    log = pd.DataFrame({"step": [10, 20, 30], "loss": [1.0, 0.5, 0.25]})
    fig = plots.plot_loss_panels({"base64": {"Swin": log, "no Swin": log}, "sr1": {"Swin": log}}, title="Training loss")
    base, sr1 = fig.axes
    assert (base.get_title(), sr1.get_title(), fig.get_suptitle()) == ("base64", "sr1", "Training loss")
    assert [line.get_label() for line in base.lines[1::2]] == ["Swin", "no Swin"] and len(sr1.lines) == 2
    assert {line.get_linestyle() for line in base.lines[1::2]} == {"-", "--"}
    with pytest.raises(MRNetError, match="panels is empty"):
        plots.plot_loss_panels({})


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


def test_metric_intervals_draw_dots_and_intervals_on_axes_that_span_the_values():
    table = pd.DataFrame(
        {
            "PSNR_mean": [27.0, 25.0, "not computed: no samples"],
            "PSNR_ci_low": [26.0, 24.5, np.nan],
            "PSNR_ci_high": [28.0, 25.5, np.nan],
            "FID_mean": ["not computed: offline", "not computed: offline", "not computed: offline"],
            "ag_mean": [0.030, 0.025, 0.028],
        },
        index=["SR (Swin)", "bicubic", "SR (no Swin)"],
    )
    fig = plots.plot_metric_intervals(table, ["PSNR", "FID", "ag"], higher_is_better={"PSNR": True, "FID": False},
                                      targets={"ag": 0.04})
    psnr, ag = fig.axes  # FID has no number: no panel
    assert psnr.get_title() == "PSNR\n(higher is better)"
    assert ag.get_title() == "ag\n(closer to the dashed line is better)"
    assert [label.get_text() for label in psnr.get_yticklabels()] == list(table.index)
    intervals = [line for line in psnr.lines if line.get_marker() in ("None", "", None)]
    dots = [line for line in psnr.lines if line.get_marker() == "o"]
    assert sorted(tuple(line.get_xdata()) for line in intervals) == [(24.5, 25.5), (26.0, 28.0)]
    assert [(line.get_xdata()[0], line.get_ydata()[0]) for line in dots] == [(27.0, 2), (25.0, 1)]  # first row on top
    assert psnr.get_xlim()[0] > 20  # not from zero: the difference between the methods shows
    assert dots[0].get_color() != dots[1].get_color()
    (target,) = [line for line in ag.lines if line.get_linestyle() == "--"]
    assert list(target.get_xdata()) == [0.04, 0.04]
    caption = fig.get_supxlabel()
    assert caption.startswith("not computed: FID (the table says why)") and caption.count("not computed") == 1
    assert "PSNR: no value for SR (no Swin)" in caption and "dot: mean, line: its 95% interval" in caption
    assert caption.endswith("dashed line: the real slices' value")
    with pytest.raises(MRNetError, match="SSIM_mean"):
        plots.plot_metric_intervals(table, ["SSIM"], {"SSIM": True})
    with pytest.raises(MRNetError, match="no direction for 'ag'"):
        plots.plot_metric_intervals(table, ["ag"])


def test_generation_metrics_take_the_real_slices_as_the_target_where_there_is_no_better_direction():
    columns = {column: [1.0, 2.0, 0.5] for column in plots.GENERATION_CHART}
    table = pd.DataFrame(columns, index=["cascade", "single", "real"])
    table["fid"] = ["not computed: few", "not computed: few", np.nan]
    fig = plots.plot_generation_metrics(table, "real")
    titles = [ax.get_title() for ax in fig.axes]
    assert "FID" not in " ".join(titles) and len(fig.axes) == len(plots.GENERATION_CHART) - 1
    assert "diversity MS-SSIM\n(closer to the dashed line is better)" in titles
    assert "histogram W1\n(lower is better)" in titles
    diversity = fig.axes[titles.index("diversity MS-SSIM\n(closer to the dashed line is better)")]
    # the real row is not a row of dots but the dashed line
    assert [label.get_text() for label in fig.axes[0].get_yticklabels()] == ["cascade", "single"]
    assert any(list(line.get_xdata()) == [0.5, 0.5] for line in diversity.lines)


def test_comparison_forest_plot_colours_only_clear_differences():
    index = pd.MultiIndex.from_tuples(
        [("SR1", "lanczos", "psnr"), ("SR1", "lanczos", "ssim"), ("SR1", "bicubic", "psnr")], names=["a", "b", "metric"]
    )
    table = pd.DataFrame(
        {"difference": [2.0, 0.01, 1.5], "ci_low": [1.5, -0.02, np.nan], "ci_high": [2.5, 0.04, np.nan]}, index=index
    )
    fig = plots.plot_comparisons(table, title="paired", higher_is_better={"psnr": True})
    psnr, ssim = fig.axes
    assert (psnr.get_title(), ssim.get_title()) == ("psnr", "ssim")
    assert psnr.get_xlabel() == "A - B\n(A better to the right)" and ssim.get_xlabel() == "A - B"
    (legend,) = fig.legends  # what the colours mean
    assert [text.get_text() for text in legend.get_texts()] == [
        "difference, 95% interval excluding 0", "interval including 0 (or none)"]
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
    fig = plots.plot_comparisons(table, higher_is_better={"psnr": False})
    assert fig.axes[0].get_xlabel() == "A - B\n(A better to the left)"
    assert fig.legends[0].get_texts()[-1].get_text() == "each training seed"


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
    assert plots.saved_path(fig) == path.resolve()  # what a page links instead of embedding the figure again
    assert plots.saved_path(Figure()) is None
    with Image.open(path) as image:
        # a chart: its colours in a palette (a blue line, black text, their anti-aliased edges)
        assert image.format == "PNG" and image.mode == "P"
        assert image.info["dpi"] == pytest.approx((100, 100), abs=0.1)
        assert image.size == (640, 480)  # matplotlib's default 6.4 x 4.8 inches
        rendered = io.BytesIO()
        fig.savefig(rendered, dpi=100, format="png")
        exact = np.asarray(Image.open(rendered).convert("RGB"), dtype=float)
        # the palette keeps the pixels within 2 levels of the drawn ones, on average
        assert np.abs(np.asarray(image.convert("RGB"), dtype=float) - exact).mean() < 2
    assert fig.number not in plt.get_fignums()
    with pytest.raises(MRNetError, match="png"):
        plots.save_figure(plots.plot_image_grid(np.zeros((4, 4))), tmp_path / "grid.pdf")


def test_a_figure_without_colour_is_saved_as_the_same_pixels_in_grey(tmp_path):
    images = np.random.default_rng(0).uniform(-1, 1, (3, 1, 32, 32))
    fig = plots.plot_image_grid(images, labels=["a", "b", "c"])
    assert plots.save_dpi(fig) == plots.SLICES_DPI  # slices: about their own size on a page
    rendered = io.BytesIO()
    fig.savefig(rendered, dpi=plots.SLICES_DPI, format="png")
    with Image.open(rendered) as image:
        expected = np.asarray(image.convert("RGBA"))
    with Image.open(plots.save_figure(fig, tmp_path / "grid.png")) as saved:
        assert saved.mode == "L"
        assert np.array_equal(np.asarray(saved), expected[..., 0]) and (expected[..., 3] == 255).all()
        assert (expected[..., 0] == expected[..., 2]).all()


def test_slices_with_colour_keep_every_pixel_and_large_figures_are_drawn_at_screen_size(tmp_path):
    truth = np.random.default_rng(0).uniform(-1, 1, (1, 32, 32))
    fig = plots.plot_sr_comparison(truth[:, ::2, ::2], {"bicubic": truth}, truth, zoom=(8, 8, 8))
    with Image.open(plots.save_figure(fig, tmp_path / "sr.png")) as saved:
        assert saved.mode == "L"  # its zoom boxes are white edged in black: no colour
    fig = plots.plot_image_grid(truth, title="in red")
    fig.suptitle("in red", color="red")
    rendered = io.BytesIO()
    fig.savefig(rendered, dpi=plots.save_dpi(fig), format="png")
    with Image.open(rendered) as image, Image.open(plots.save_figure(fig, tmp_path / "red.png")) as saved:
        assert saved.mode == "RGB" and np.array_equal(np.asarray(saved), np.asarray(image.convert("RGB")))
    wide = plt.figure(figsize=(25, 4))
    with Image.open(plots.save_figure(wide, tmp_path / "wide.png")) as saved:
        assert saved.size == (plots.SAVE_WIDTH, 224)  # at most SAVE_WIDTH pixels wide
    tall = plots.plot_image_grid(np.zeros((36, 8, 8)), nrow=3)
    tall.set_size_inches(12, 30)  # 960 x 2400 pixels at SLICES_DPI: more than SAVE_PIXELS
    with Image.open(plots.save_figure(tall, tmp_path / "tall.png")) as saved:
        assert 0.95 * plots.SAVE_PIXELS < saved.size[0] * saved.size[1] <= plots.SAVE_PIXELS


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
