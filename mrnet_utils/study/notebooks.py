"""What every notebook of the study calls first, and how an executed notebook becomes a page to read.

`setup_notebook()` is the first call of each notebook, right after its parameters cell: in
Jupyter (or under papermill) it shows the library's figures inline at screen resolution (charts
as PNG, figures of slices as JPEG, a quarter of the bytes) and a library error (`MRNetError`: a
bad parameter, a missing file) as its one-line message instead of a traceback through the
library. Outside IPython it does nothing.

`export_html` renders an executed notebook to one HTML file that opens anywhere: its figures
are embedded in it, its code cells are kept. `run_all.sh` writes one next to every notebook it
runs.
"""

from __future__ import annotations

import sys
from pathlib import Path

from mrnet_utils.errors import MRNetError
from mrnet_utils.files import write_atomically

# Inline figures are drawn at this many dots per inch (a 7 x 4.5 inch chart is 560 x 360 pixels), and
# at most SCREEN_WIDTH pixels wide: wider figures (the SR comparison panels are 25 inches) are drawn at
# a lower resolution, as the browser would shrink them to the page anyway. The PNG files the notebooks
# save are at most 100 dpi (plots.save_figure); these are for reading on a screen and keep an executed
# notebook, and the HTML made from it, small.
SCREEN_DPI = 80
SCREEN_WIDTH = 1400
# Figures that show slices (images on their axes) are JPEG at this quality: noisy grey images compress
# about 4x better than as PNG, with no visible loss at screen size. Charts stay PNG (sharp lines, smaller).
JPEG_QUALITY = 85


def setup_notebook() -> None:
    """Show figures inline at screen resolution and an MRNetError as one line; nothing outside IPython.

    The full traceback of the last error stays one `%tb` away. Calling it again changes nothing.
    """
    try:
        from IPython import get_ipython
    except ImportError:  # no IPython: a plain script
        return
    shell = get_ipython()
    if shell is None:
        return
    # The library draws on matplotlib Figure objects without pyplot, so the inline backend never
    # registers a display format for them; these do.
    from matplotlib.figure import Figure

    formatters = shell.display_formatter.formatters
    formatters["image/png"].for_type(Figure, _chart_png)
    formatters["image/jpeg"].for_type(Figure, _slices_jpeg)
    shell.set_custom_exc((MRNetError,), _show_one_line)


def shows_slices(fig) -> bool:
    """Whether a figure holds images (slices), which display as JPEG, rather than only a chart."""
    return any(ax.images for ax in fig.axes)


def screen_dpi(fig) -> float:
    """SCREEN_DPI, or less for a figure that would be wider than SCREEN_WIDTH pixels."""
    return min(SCREEN_DPI, SCREEN_WIDTH / fig.get_figwidth())


def _chart_png(fig) -> str | None:
    from IPython.core.pylabtools import print_figure

    return None if shows_slices(fig) else print_figure(fig, "png", base64=True, dpi=screen_dpi(fig))


def _slices_jpeg(fig) -> str | None:
    from IPython.core.pylabtools import print_figure

    if not shows_slices(fig):
        return None
    return print_figure(fig, "jpeg", base64=True, dpi=screen_dpi(fig), pil_kwargs={"quality": JPEG_QUALITY})


def error_line(error: MRNetError, parameters: set[str] = frozenset()) -> str:
    """The line a notebook shows for `error`; names the notebook parameter at fault when `parameters` has it."""
    line = f"{type(error).__name__}: {error}"
    if error.parameter and error.parameter.upper() in parameters:
        line += f" (set {error.parameter.upper()} in the parameters cell)"
    return line + " [the full traceback: %tb]"


def _show_one_line(shell, etype, value, tb, tb_offset=None) -> None:
    # Keep the exception where %tb and %debug look for it, as IPython does for any error.
    sys.last_type, sys.last_value, sys.last_traceback = etype, value, tb
    if sys.version_info >= (3, 12):
        sys.last_exc = value
    parameters = {name for name in shell.user_ns if name.isupper()}
    # _showtraceback is where IPython and ipykernel send an error to the front end (an "error" output
    # with ename and evalue, which papermill and run_all.sh read); it is the documented override point.
    shell._showtraceback(etype, value, [error_line(value, parameters)])


def export_html(notebook: str | Path, html: str | Path | None = None) -> Path:
    """Render an executed notebook to self-contained HTML (inputs kept, figures embedded); returns its path.

    `html` defaults to the notebook's path with the suffix .html. The page uses JupyterLab's
    look (nbconvert's `lab` template, its style sheet inlined); nothing it shows is fetched.
    """
    from nbconvert import HTMLExporter

    notebook = Path(notebook)
    if not notebook.is_file():
        raise MRNetError(f"notebook {notebook} does not exist; run it first (run_all.sh renders to runs/<preset>/)")
    html = Path(html) if html is not None else notebook.with_suffix(".html")
    body, _ = HTMLExporter(template_name="lab", embed_images=True).from_filename(str(notebook))
    return write_atomically(html, lambda handle: handle.write(body.encode()), what="HTML page")
