"""The notebooks in Jupyter: the project's kernel, setup_notebook (inline figures, one-line errors), a notebook
run top to bottom with its defaults as Jupyter runs it, its HTML page, and that page in a real browser."""

import ast
import base64
import io
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import nbformat
import numpy as np
import pandas as pd
import pytest
import torch
from IPython.core.interactiveshell import InteractiveShell
from nbclient import NotebookClient
from PIL import Image

from mrnet_utils.errors import MRNetError
from mrnet_utils.evaluation import plots
from mrnet_utils.study import notebooks
from mrnet_utils.study.layout import StudyPaths

from browser import ABSENT, CHROMIUM, chromium, probe

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ["notebooks/00_preprocess.ipynb", "notebooks/01_train_stage.ipynb", "notebooks/02_pipeline.ipynb",
             "evaluation/sr_vs_interpolation.ipynb", "evaluation/generation.ipynb", "evaluation/swin_question.ipynb",
             "evaluation/labels.ipynb"]


def kernel_name() -> str:
    """The kernel scripts/setup_env.sh registers: the one name every other place must use."""
    return re.search(r"^kernel_name=(\S+)$", (ROOT / "scripts" / "setup_env.sh").read_text(encoding="utf-8"), re.M).group(1)


def parameters(path: Path) -> dict[str, object]:
    cell = next(c for c in nbformat.read(path, as_version=4).cells if c.cell_type == "code")
    return {s.targets[0].id: ast.literal_eval(s.value) for s in ast.parse(cell.source).body}


# ---------------------------------------------------------------------------
# One kernel name everywhere, registered in the project's environment
# ---------------------------------------------------------------------------


def test_one_kernel_name_in_the_notebooks_run_all_lab_and_readme():
    name = kernel_name()
    assert name == "mrnet-diffusion"
    for path in NOTEBOOKS:
        spec = nbformat.read(ROOT / path, as_version=4).metadata.kernelspec
        assert (spec.name, spec.display_name) == (name, f"Python ({name})"), path
    run_all = (ROOT / "run_all.sh").read_text(encoding="utf-8")
    assert '--kernel "$kernel_name"' in run_all and "--kernel python3" not in run_all
    assert '--MappingKernelManager.default_kernel_name="$kernel_name"' in (ROOT / "scripts" / "lab.sh").read_text(encoding="utf-8")
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "bash scripts/lab.sh" in readme and f"`{name}` kernel" in readme


def test_the_kernel_is_registered_in_the_projects_environment():
    venv = ROOT / ".venv"
    if not venv.exists() or Path(sys.prefix).resolve() != venv.resolve():
        pytest.skip(f"not running in the project's {venv} (scripts/setup_env.sh registers the kernel there)")
    from jupyter_client.kernelspec import KernelSpecManager

    spec = KernelSpecManager().get_kernel_spec(kernel_name())
    assert Path(spec.argv[0]).resolve() == Path(sys.executable).resolve()  # this environment's Python


# ---------------------------------------------------------------------------
# setup_notebook: the first call of every notebook
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("path", NOTEBOOKS)
def test_every_notebook_calls_setup_notebook_once_before_anything_else(path):
    code = [c.source for c in nbformat.read(ROOT / path, as_version=4).cells if c.cell_type == "code"]
    assert sum(source.count("setup_notebook()") for source in code) == 1
    statements = ast.parse(code[1]).body
    first_call = next(s for s in statements if not isinstance(s, (ast.Import, ast.ImportFrom)))
    assert ast.unparse(first_call) == "setup_notebook()", path


@pytest.mark.parametrize("path", NOTEBOOKS)
def test_default_out_dir_is_the_repository_seen_from_the_notebooks_folder(path):
    """Jupyter starts a kernel in the notebook's folder: OUT_DIR=".." must then be the repository."""
    values = parameters(ROOT / path)
    notebook_folder = (ROOT / path).parent
    paths = StudyPaths(notebook_folder / values["OUT_DIR"], values["PRESET"], values["RESULTS_DIR"])
    assert paths.root == ROOT
    assert paths.results == ROOT / "results" / values["PRESET"]  # git-ignored: a run leaves the checkout clean


@pytest.fixture
def shell():
    shell = InteractiveShell.instance()
    yield shell
    shell.set_custom_exc((), None)
    InteractiveShell.clear_instance()


def test_an_mrnet_error_in_a_cell_is_one_line_naming_the_parameter(shell, capsys):
    notebooks.setup_notebook()
    shell.run_cell('PRESET = "huge"')
    result = shell.run_cell("from mrnet_utils.study.layout import StudyPaths\nStudyPaths('.', PRESET)")
    assert isinstance(result.error_in_exec, MRNetError)  # still an error: papermill and run_all.sh stop on it
    shown = capsys.readouterr().out.strip().splitlines()
    assert shown == ["MRNetError: unknown preset 'huge'; choose one of smoke, demo, gpu, full, reference "
                     "(set PRESET in the parameters cell) [the full traceback: %tb]"]
    assert sys.last_value is result.error_in_exec  # what %tb shows
    # any other exception keeps its full traceback
    shell.run_cell("1 / 0")
    assert "Traceback" in capsys.readouterr().out


def test_figures_display_at_screen_resolution_charts_as_png_and_slices_as_jpeg(shell):
    notebooks.setup_notebook()
    slices = plots.plot_image_grid(torch.rand(4, 1, 64, 64) * 2 - 1, nrow=2, labels=list("abcd"))
    formats, _ = shell.display_formatter.format(slices)
    assert set(formats) == {"text/plain", "image/jpeg"}
    assert Image.open(io.BytesIO(base64.b64decode(formats["image/jpeg"]))).format == "JPEG"
    fig = plots.plot_loss_curves({"run": pd.DataFrame({"step": [1, 2], "loss": [1.0, 0.5]})})
    formats, _ = shell.display_formatter.format(fig)
    assert set(formats) == {"text/plain", "image/png"}
    width, height = Image.open(io.BytesIO(base64.b64decode(formats["image/png"]))).size
    # a 7 x 4.5 inch chart at 80 dpi, cut to its contents with a 0.1-inch margin: screen-sized, not the
    # saved file (plots.save_figure: 100 dpi, 700 pixels wide)
    assert 400 < width <= 7.2 * notebooks.SCREEN_DPI and 250 < height <= 4.7 * notebooks.SCREEN_DPI
    # a figure 25 inches wide (the SR comparison panels) is drawn at most SCREEN_WIDTH pixels wide
    wide = plots.plot_image_grid(torch.rand(12, 1, 64, 64) * 2 - 1, nrow=12)
    wide.set_size_inches(25, 3)
    formats, _ = shell.display_formatter.format(wide)
    width, _ = Image.open(io.BytesIO(base64.b64decode(formats["image/jpeg"]))).size
    assert notebooks.screen_dpi(wide) == 56 and 1200 < width <= notebooks.SCREEN_WIDTH + 20


def test_a_figure_shows_with_its_alt_text_and_the_file_it_was_saved_to(shell, tmp_path):
    notebooks.setup_notebook()
    fig = plots.plot_loss_curves({"run": pd.DataFrame({"step": [1, 2], "loss": [1.0, 0.5]})})
    _, metadata = shell.display_formatter.format(fig)
    assert metadata["image/png"] == {"alt": notebooks.alt_text(fig)} and "Training loss" in metadata["image/png"]["alt"]
    path = plots.save_figure(fig, tmp_path / "loss.png")
    _, metadata = shell.display_formatter.format(fig)
    assert metadata["image/png"][notebooks.SAVED_AS] == str(path.resolve())  # what a page can link instead


def test_tables_show_whole_in_a_notebook(shell):
    notebooks.setup_notebook()
    wide = pd.DataFrame([["x" * 80] * 40], columns=[f"column_{i}" for i in range(40)])
    html = shell.display_formatter.format(wide)[0]["text/html"]
    assert "..." not in html and html.count("x" * 80) == 40  # every column, every cell whole


def test_setup_notebook_does_nothing_outside_ipython():
    assert InteractiveShell.initialized() is False
    notebooks.setup_notebook()  # no shell: nothing to set up, and no error


def test_error_line_names_a_notebook_parameter_only_when_there_is_one():
    error = MRNetError("output folder x is not writable", parameter="out_dir")
    assert notebooks.error_line(error, {"OUT_DIR"}).endswith("(set OUT_DIR in the parameters cell) [the full traceback: %tb]")
    assert "parameters cell" not in notebooks.error_line(error, {"PRESET"})
    assert "parameters cell" not in notebooks.error_line(MRNetError("no parameter"), {"PRESET"})


# ---------------------------------------------------------------------------
# A notebook as Jupyter runs it, its HTML page, and the page in a browser
# ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def preprocess_run(tmp_path_factory) -> Path:
    """notebooks/00_preprocess.ipynb copied into a fresh study folder and run top to bottom as Jupyter does:
    on the kernel its metadata names, in its own folder, with its defaults but for PRESET = "smoke"."""
    study = tmp_path_factory.mktemp("study")
    (study / "notebooks").mkdir()
    notebook = nbformat.read(ROOT / "notebooks" / "00_preprocess.ipynb", as_version=4)
    cell = next(c for c in notebook.cells if c.cell_type == "code")
    assert 'PRESET = "demo"' in cell.source
    cell.source = cell.source.replace('PRESET = "demo"', 'PRESET = "smoke"')
    # The kernel imports this checkout's mrnet_utils, whichever one the environment has installed.
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    client = NotebookClient(notebook, timeout=900, kernel_name=notebook.metadata.kernelspec.name,
                            resources={"metadata": {"path": str(study / "notebooks")}})
    client.execute(env=env)
    path = study / "notebooks" / "00_preprocess.ipynb"
    nbformat.write(notebook, path)
    return path


@pytest.mark.slow
def test_a_notebook_run_with_its_defaults_writes_into_the_study_folder_above_it(preprocess_run):
    study = preprocess_run.parent.parent
    assert (study / "data" / "phantom" / "train" / "coronal").is_dir()  # OUT_DIR=".." seen from notebooks/
    assert (study / "data" / "smoke" / "slices_coronal.npz").is_file()
    assert (study / "results" / "smoke" / "data.csv").is_file()
    notebook = nbformat.read(preprocess_run, as_version=4)
    code = [c for c in notebook.cells if c.cell_type == "code"]
    assert [c.execution_count for c in code] == list(range(1, len(code) + 1))  # top to bottom, in order
    figures = [sorted(set(o.get("data", {})) & {"image/png", "image/jpeg"}) for c in code for o in c.outputs]
    # planes and cached slices as JPEG, the histograms as PNG
    assert [kind for kind in figures if kind] == [["image/jpeg"], ["image/jpeg"], ["image/png"]]
    # progress bars are widgets (tqdm.auto with ipywidgets), not text and no IProgress warning
    outputs = [o for c in code for o in c.outputs]
    assert any("application/vnd.jupyter.widget-view+json" in o.get("data", {}) for o in outputs)
    assert not any("IProgress not found" in o.get("text", "") for o in outputs)


@pytest.mark.slow
def test_export_html_embeds_the_figures_and_keeps_the_code(preprocess_run, tmp_path):
    page = notebooks.export_html(preprocess_run, tmp_path / "page.html")
    html = page.read_text(encoding="utf-8")
    assert len(re.findall(r'src="data:image/(?:png|jpeg);base64,', html)) == 3
    assert "setup_notebook" in html  # inputs kept
    assert page.stat().st_size < 1_000_000
    with pytest.raises(MRNetError, match="does not exist"):
        notebooks.export_html(tmp_path / "missing.ipynb")


@pytest.mark.slow
@pytest.mark.skipif(not CHROMIUM.exists(), reason=ABSENT)
def test_the_html_page_shows_its_figures_in_a_real_browser(preprocess_run, tmp_path):
    page = notebooks.export_html(preprocess_run, tmp_path / "page.html")
    counts = probe(page, tmp_path)  # what the browser loaded: every <img> with its natural width
    assert counts["images"] == "3" and counts["loaded"] == "3" and counts["described"] == "3", counts
    assert counts["cut"] == "0" and int(counts["text"]) > 500  # the markdown and tables are there
    # What a reader sees: a screenshot that is not blank, with dark (image) pixels in it
    shot = tmp_path / "page.png"
    chromium("--window-size=1200,2400", f"--screenshot={shot}", page.as_uri(), profile=tmp_path / "profile")
    grey = np.asarray(Image.open(shot).convert("L"), dtype=np.float32)
    assert grey.shape == (2400, 1200)
    assert grey.std() > 20 and (grey < 60).mean() > 0.01, "the page renders blank or without its figures"


@pytest.mark.slow
def test_lab_sh_starts_jupyterlab_with_the_project_kernel_as_default(tmp_path):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    token = "test-token"
    lab = subprocess.Popen(
        ["bash", str(ROOT / "scripts" / "lab.sh"), "--no-browser", f"--port={port}", "--ip=127.0.0.1",
         f"--IdentityProvider.token={token}"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True,
        env={**os.environ, "JUPYTER_RUNTIME_DIR": str(tmp_path / "runtime"), "JUPYTER_CONFIG_DIR": str(tmp_path)},
    )
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/kernelspecs?token={token}", timeout=5) as reply:
                    specs = json.load(reply)
                break
            except OSError:
                assert lab.poll() is None, lab.stdout.read().decode()[-3000:]
                assert time.monotonic() < deadline, "JupyterLab did not answer within 180 s"
                time.sleep(1)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/lab?token={token}", timeout=30) as reply:
            assert reply.status == 200 and b"JupyterLab" in reply.read()
    finally:
        if lab.poll() is None:
            os.killpg(lab.pid, signal.SIGTERM)
        lab.wait(timeout=60)
    assert specs["default"] == kernel_name() and kernel_name() in specs["kernelspecs"]
