"""Pages to read: result tables as a reader sees them, figures described in words, the HTML page of an executed
notebook, and the committed results (their pages in a real browser, their size)."""

import re
import subprocess
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import nbformat  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
from PIL import Image  # noqa: E402

from browser import ABSENT, CHROMIUM, probe  # noqa: E402
from mrnet_utils.evaluation import plots, tables  # noqa: E402
from mrnet_utils.study import notebooks  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "evaluation" / "results"
BUDGET = 6_000_000  # bytes of tracked files under evaluation/results
PAGES = ["demo/sr_vs_interpolation.html", "demo/generation.html"]  # the evaluation pages committed at least


# ---------------------------------------------------------------------------
# Tables: "value [low, high]" at the interval's precision, none too wide
# ---------------------------------------------------------------------------


def test_a_value_and_its_interval_share_one_cell_rounded_to_the_narrowest_interval_of_the_metric():
    table = pd.DataFrame(
        {"exams": [6, 6], "psnr_mean": [25.942836, 33.114491], "psnr_ci_low": [25.805333, 32.805690],
         "psnr_ci_high": [26.062389, 33.420962], "ssim_mean": [0.844692, 0.927001], "ssim_ci_low": [0.839186, 0.922793],
         "ssim_ci_high": [0.849324, 0.930368], "lpips_mean": ["not computed: no weights", "not computed: no weights"],
         "lpips_ci_low": [np.nan, np.nan], "lpips_ci_high": [np.nan, np.nan], "seconds_per_image": [1.7774e-05, 0.10512]},
        index=pd.Index(["nearest", "SR1 (Swin), sample"], name="method"),
    )
    (part,) = tables.readable(table)
    assert part.loc["nearest", "psnr"] == "25.94\N{NO-BREAK SPACE}[25.81,\N{NO-BREAK SPACE}26.06]"  # never wrapped
    part = plain(part)
    assert list(part.columns) == ["exams", "psnr", "ssim", "lpips", "seconds_per_image"]
    # narrowest PSNR interval 0.26 dB: 2 decimals; SSIM 0.0076: 4 decimals (two digits of the interval)
    assert list(part["psnr"]) == ["25.94 [25.81, 26.06]", "33.11 [32.81, 33.42]"]
    assert list(part["ssim"]) == ["0.8447 [0.8392, 0.8493]", "0.9270 [0.9228, 0.9304]"]
    assert list(part["exams"]) == ["6", "6"] and list(part["seconds_per_image"]) == ["1.78e-05", "0.105"]
    assert part.loc["nearest", "lpips"] == "not computed: no weights"  # markdown() footnotes it
    assert "not computed [1]" in tables.markdown(part) and "- [1] not computed: no weights" in tables.markdown(part)


def plain(part: pd.DataFrame) -> pd.DataFrame:
    """A readable table with its no-break spaces as spaces."""
    return part.replace("\N{NO-BREAK SPACE}", " ", regex=True)


def test_differences_read_signed_each_metric_at_its_own_precision_under_a_one_line_row_name():
    index = pd.MultiIndex.from_tuples(
        [("SR1", "lanczos", "psnr"), ("SR1", "lanczos", "ssim"), ("SR1", "bicubic", "psnr")], names=["a", "b", "metric"])
    table = pd.DataFrame({"difference": [4.4162, 0.035389, -0.00012], "ci_low": [4.19798, 0.034139, -0.0911],
                          "ci_high": [4.66192, 0.036628, 0.0909], "verdict": ["SR1 better", "SR1 better", "none"]},
                         index=index)
    (part,) = map(plain, tables.readable(table))
    assert part.index.name == "a / b / metric" and list(part.index)[0] == "SR1 / lanczos / psnr"
    # psnr's narrowest interval is 0.18: 2 decimals for both psnr rows; ssim's 0.0025: 4
    assert list(part["difference"]) == ["+4.42 [+4.20, +4.66]", "+0.0354 [+0.0341, +0.0366]", "-0.00 [-0.09, +0.09]"]
    auc = pd.DataFrame({"auc": [0.8, 0.6], "ci_low": [0.7, np.nan], "ci_high": [0.9, np.nan], "exams": [6, 6]})
    assert list(plain(tables.readable(auc)[0])["auc"]) == ["0.80 [0.70, 0.90]", "0.60"]  # no interval: the value alone


def test_a_wide_table_is_split_into_narrower_ones_each_with_the_row_names():
    columns = {f"metric_{k}_mean": [0.5 + k, 0.25] for k in range(12)}
    columns.update({f"metric_{k}_ci_low": [0.4 + k, 0.2] for k in range(12)})
    columns.update({f"metric_{k}_ci_high": [0.6 + k, 0.3] for k in range(12)})
    table = pd.DataFrame(columns, index=pd.Index(["a method", "another"], name="method"))
    parts = tables.readable(table, width=80)
    assert len(parts) > 1 and [c for part in parts for c in part.columns] == [f"metric_{k}" for k in range(12)]
    for part in parts:
        assert list(part.index) == ["a method", "another"]
        width = len("a method") + 3 + sum(max(len(c), *(len(v) for v in part[c])) + 3 for c in part.columns)
        assert width <= 80 or len(part.columns) == 1


# ---------------------------------------------------------------------------
# Figures in words
# ---------------------------------------------------------------------------


def test_alt_text_names_a_charts_panels_directions_rows_and_caption():
    table = pd.DataFrame({"psnr_mean": [27.0, 25.0], "psnr_ci_low": [26.0, 24.5], "psnr_ci_high": [28.0, 25.5],
                          "lpips_mean": ["not computed: x"] * 2}, index=["SR1 (Swin)", "bicubic"])
    fig = plots.plot_metric_intervals(table, ["psnr", "lpips"], {"psnr": True, "lpips": False}, title="SR1: 64 -> 128")
    fig.canvas.draw()
    text = notebooks.alt_text(fig)
    assert text.startswith("SR1: 64 -> 128. chart: psnr (higher is better). rows: SR1 (Swin); bicubic.")
    assert "not computed: lpips" in text and "line: its 95% interval" in text


def test_alt_text_of_a_grid_of_slices_counts_them_and_names_the_rows():
    fig = plots.plot_planes({"cascade (Swin)": [np.zeros((8, 8))] * 3, "real (valid)": [np.zeros((8, 8))] * 3},
                            value_range=plots.MODEL_RANGE, title="Generated slices and real ones")
    assert notebooks.alt_text(fig) == ("Generated slices and real ones. 6 grey-scale images. "
                                       "rows: cascade (Swin); real (valid).")


# ---------------------------------------------------------------------------
# The page of an executed notebook
# ---------------------------------------------------------------------------


def executed_notebook(figure: Path) -> nbformat.NotebookNode:
    """A notebook as papermill leaves it: a heading, code with a printed line, a Markdown table and a figure
    saved to `figure` (with the metadata setup_notebook's display gives it)."""
    png = Image.new("RGB", (40, 20), "navy")
    png.save(figure)
    encoded = __import__("base64").b64encode(figure.read_bytes()).decode()
    outputs = [
        nbformat.v4.new_output("stream", name="stdout", text="held out: 6 exams\n"),
        nbformat.v4.new_output("display_data", data={"text/markdown": "| m | psnr |\n|---|---|\n| a | 27.00 [26.00, 28.00] |",
                                                    "text/plain": "table"}),
        nbformat.v4.new_output("display_data", data={"image/png": encoded, "text/plain": "<Figure>"},
                               metadata={"image/png": {"alt": "A navy rectangle: the chart of this test.",
                                                       notebooks.SAVED_AS: str(figure.resolve())}}),
    ]
    return nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_markdown_cell("# Super-resolution against `interpolation`\n\nProse first."),
        nbformat.v4.new_code_cell("PRESET = 'demo'\nprint('held out: 6 exams')", outputs=outputs),
    ], metadata={"kernelspec": {"name": "mrnet-diffusion", "display_name": "Python (mrnet-diffusion)"}})


def test_the_page_reads_as_a_report_code_folded_nothing_fetched(tmp_path):
    (tmp_path / "results").mkdir()
    notebook = tmp_path / "03_sr_vs_interpolation.ipynb"
    nbformat.write(executed_notebook(tmp_path / "results" / "chart.png"), notebook)
    html = notebooks.export_html(notebook).read_text(encoding="utf-8")
    assert "<title>Super-resolution against interpolation</title>" in html  # the heading, not "03_..."
    assert re.search(r'<details class="input"><summary>code</summary>.*PRESET', html, re.S)  # folded, still there
    assert html.index("Prose first") < html.index("<details")
    assert "<script" not in html and "<link" not in html and not re.search(r'src="(https?:)?//', html)
    (image,) = re.findall(r"<img[^>]*>", html)
    assert 'alt="A navy rectangle: the chart of this test."' in image and 'src="data:image/png;base64,' in image
    assert "<td>27.00 [26.00, 28.00]</td>" in html and "held out: 6 exams" in html
    assert "In&nbsp;[" not in html  # no prompts


def test_a_page_beside_its_figures_links_them_instead_of_embedding_them_again(tmp_path):
    results = tmp_path / "results"
    results.mkdir()
    notebook = tmp_path / "run.ipynb"
    nbformat.write(executed_notebook(results / "chart.png"), notebook)
    linked = notebooks.export_html(notebook, results / "page.html", link_figures=True).read_text(encoding="utf-8")
    (image,) = re.findall(r"<img[^>]*>", linked)
    assert 'src="chart.png"' in image and "base64" not in linked and "alt=" in image
    # a page elsewhere than its figures' folder, or without link_figures, embeds them
    elsewhere = notebooks.export_html(notebook, tmp_path / "elsewhere" / "page.html", link_figures=True).read_text(encoding="utf-8")
    assert 'src="data:image/png;base64,' in elsewhere
    (results / "chart.png").unlink()
    assert 'src="data:image/png;base64,' in notebooks.export_html(notebook, results / "page.html", link_figures=True).read_text(encoding="utf-8")


# ---------------------------------------------------------------------------
# The committed results: pages a browser shows whole, within a size budget
# ---------------------------------------------------------------------------


def tracked(pattern: str = "") -> list[Path]:
    listed = subprocess.run(["git", "ls-files", "-z", "--", str(RESULTS)], cwd=ROOT, capture_output=True, text=True)
    if listed.returncode != 0:
        pytest.skip(f"not a git checkout ({listed.stderr.strip()}): the tracked results are not known")
    paths = [ROOT / name for name in listed.stdout.split("\0") if name]
    return [path for path in paths if path.exists() and path.name.endswith(pattern)]


def test_the_committed_results_fit_the_budget_with_pngs_at_screen_size():
    files = tracked()
    total = sum(path.stat().st_size for path in files)
    assert total <= BUDGET, f"{total / 1e6:.2f} MB tracked under evaluation/results; at most {BUDGET / 1e6:.0f} MB"
    for path in tracked(".png"):
        with Image.open(path) as image:
            width, height = image.size
        assert width <= plots.SAVE_WIDTH and width * height <= plots.SAVE_PIXELS, (path, image.size)


def test_the_committed_pages_are_self_contained_and_link_their_figures():
    pages = tracked(".html")
    assert {str(page.relative_to(RESULTS)) for page in pages} >= set(PAGES)
    for page in pages:
        html = page.read_text(encoding="utf-8")
        assert "<script" not in html and "<link" not in html and not re.search(r'src="(https?:)?//', html), page
        assert "base64," not in html, f"{page} embeds a figure again (export_html --link-figures links the PNG)"
        assert not re.search(r"<title>\d", html), f"{page}: its title is a file name"


@pytest.mark.slow
@pytest.mark.skipif(not CHROMIUM.exists(), reason=ABSENT)
def test_every_committed_page_shows_every_figure_and_no_table_cut(tmp_path):
    pages = tracked(".html")
    assert pages
    for page in pages:
        counts = probe(page, tmp_path)
        assert int(counts["images"]) > 0 and counts["loaded"] == counts["images"], (page, counts)
        assert counts["described"] == counts["images"], (page, "an image without alt text")
        assert int(counts["tables"]) > 0 and counts["cut"] == "0", (page, counts)
        assert int(counts["text"]) > 1000, (page, "no prose")
