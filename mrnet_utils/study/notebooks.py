"""What every notebook of the study calls first, and how an executed notebook becomes a page to read.

`setup_notebook()` is the first call of each notebook, right after its parameters cell: in
Jupyter (or under papermill) it shows the library's figures inline at screen resolution (charts
as PNG, figures of slices as JPEG, a quarter of the bytes), each with a description of what it
shows (`alt_text`), tables without pandas' "..." cuts, and a library error (`MRNetError`: a bad
parameter, a missing file) as its one-line message instead of a traceback through the library.
Outside IPython it does nothing.

`export_html` renders an executed notebook to a page that reads as a report: prose, tables and
figures first, each code cell folded under "code", the first heading as the page's title, no
script and nothing fetched from elsewhere. `run_all.sh` writes one next to every notebook it runs,
its figures embedded, and the evaluation pages beside their figures in the results folder, linking
the figure files the notebook saved instead of embedding them a second time.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

from mrnet_utils.errors import MRNetError
from mrnet_utils.evaluation import tables
from mrnet_utils.evaluation.plots import saved_path, shows_slices
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
# pandas' display limits in a notebook: every column and the whole of every cell, so that no "..." hides
# a number (tables.readable splits the wide tables into narrower ones); at most 500 rows.
TABLE_DISPLAY = {"display.max_columns": None, "display.max_colwidth": None, "display.max_rows": 500}


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
    import pandas as pd

    for option, value in TABLE_DISPLAY.items():
        pd.set_option(option, value)


def show_table(table, title: str | None = None) -> None:
    """Display a result table as a reader wants it, under `title` in bold: tables.readable's parts (values with
    their intervals in one cell, no part too wide for the page), each a Markdown table with its "not computed" reasons."""
    from IPython.display import Markdown, display

    parts = [tables.markdown(part) for part in tables.readable(table)]
    display(Markdown("\n\n".join(([f"**{title}**"] if title else []) + parts)))


def screen_dpi(fig) -> float:
    """SCREEN_DPI, or less for a figure that would be wider than SCREEN_WIDTH pixels."""
    return min(SCREEN_DPI, SCREEN_WIDTH / fig.get_figwidth())


def _chart_png(fig):
    from IPython.core.pylabtools import print_figure

    if shows_slices(fig):
        return None
    return print_figure(fig, "png", base64=True, dpi=screen_dpi(fig)), _figure_metadata(fig)


def _slices_jpeg(fig):
    from IPython.core.pylabtools import print_figure

    if not shows_slices(fig):
        return None
    data = print_figure(fig, "jpeg", base64=True, dpi=screen_dpi(fig), pil_kwargs={"quality": JPEG_QUALITY})
    return data, _figure_metadata(fig)


def _figure_metadata(fig) -> dict[str, str]:
    """The output's metadata: its alt text, and the file it was saved to (which export_html can link)."""
    path = saved_path(fig)
    return {"alt": alt_text(fig), **({SAVED_AS: str(path)} if path else {})}


def alt_text(fig) -> str:
    """What `fig` shows, in words, from its own text: title, panels, rows, axes, legends and caption.

    The alt text of its image on a page: a reader who cannot see the figure learns what each
    panel is, which way is better, and what the rows, lines and dots are.
    """
    axes = fig.axes
    parts = _distinct([fig.get_suptitle()])
    titles = _distinct(ax.get_title() for ax in axes)
    images = sum(len(ax.images) for ax in axes)
    if images:
        parts.append(f"{images} grey-scale image{'s' * (images > 1)}")
        if titles:
            parts.append("panels: " + "; ".join(titles[:12]) + ("; ..." if len(titles) > 12 else ""))
    elif len(axes) > 1:
        parts.append(f"chart in {len(axes)} panels" + (": " + "; ".join(titles) if titles else ""))
    else:
        parts.append("chart" + (": " + titles[0] if titles else ""))
    # Rows named on the y axis (methods, pairs, planes), not its numbers.
    rows = _distinct(label.get_text() for ax in axes[:1] for label in ax.get_yticklabels())
    rows = [row for row in rows if re.search("[A-Za-z]", row) and not row.startswith("$")]
    rows += _distinct(ax.get_ylabel() for ax in axes) if images else []
    if rows:
        parts.append("rows: " + "; ".join(rows))
    if not images:
        for name, labels in (("x", [ax.get_xlabel() for ax in axes]), ("y", [ax.get_ylabel() for ax in axes])):
            if _distinct(labels):
                parts.append(f"{name} axis: " + "; ".join(_distinct(labels)))
    legends = [legend for legend in [*(ax.get_legend() for ax in axes), *fig.legends] if legend is not None]
    entries = _distinct(text.get_text() for legend in legends for text in [legend.get_title(), *legend.get_texts()])
    if entries:
        parts.append("legend: " + "; ".join(entries))
    parts += _distinct([fig.get_supxlabel()])
    return ". ".join(parts) + "."


def _distinct(texts) -> list[str]:
    """The non-empty texts, each once, in order, on one line."""
    return list(dict.fromkeys(" ".join(text.split()) for text in texts if text and text.strip()))


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


# The page: nbconvert's classic cell markup (prompts left out), a short style sheet, each code cell
# folded in a <details> element, images with their alt text (classic reads output metadata "alt"), and
# neither scripts nor anything fetched: no require.js, MathJax or widget manager from a CDN.
PAGE_TEMPLATE = """{%- extends 'classic/base.html.j2' -%}
{%- block header -%}
<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{{ resources.page_title | escape_html }}</title>
<style>{{ resources.page_style }}</style>
</head>
<body>
<main>
{%- endblock header -%}
{% block input_group -%}
<details class="input"><summary>code</summary>
{{ self.input() }}
</details>
{%- endblock input_group %}
{%- block data_javascript scoped %}{% endblock data_javascript -%}
{%- block data_widget_view scoped %}{% endblock data_widget_view -%}
{%- block footer -%}
</main>
</body>
</html>
{%- endblock footer -%}
"""
PAGE_STYLE = """
body { font: 15px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: #1f1f1f; margin: 0; }
main { max-width: 72rem; margin: 0 auto; padding: 1rem 1.5rem 3rem; }
h1 { font-size: 1.6rem; } h2 { font-size: 1.25rem; margin-top: 2rem; }
a.anchor-link { display: none; }
img { max-width: 100%; height: auto; display: block; margin: 0.5rem 0 1rem; }
table { border-collapse: collapse; margin: 0.5rem 0 1rem; font-size: 13px; font-variant-numeric: tabular-nums; }
th, td { padding: 0.3em 0.7em; border-bottom: 1px solid #ddd; text-align: right; vertical-align: top; }
th { border-bottom: 2px solid #999; }
th:first-child, td:first-child { text-align: left; }
pre { font-size: 12.5px; white-space: pre-wrap; overflow-wrap: anywhere; margin: 0.3rem 0; }
.output_text pre, .output_stream pre { color: #444; }
.output_stderr pre { color: #8a6d00; font-size: 12px; }
details.input { margin: 0.4rem 0 0.2rem; }
details.input summary { color: #888; font-size: 12px; cursor: pointer; }
details.input .highlight pre { background: #f5f5f5; padding: 0.5rem; }
"""
# Output metadata naming the file a figure was saved to (plots.save_figure), which a page can link.
SAVED_AS = "saved_as"


def page_title(notebook) -> str:
    """The page's title: the notebook's first Markdown heading, as plain text (else its metadata title)."""
    for cell in notebook.cells:
        if cell.cell_type == "markdown":
            heading = re.search(r"^#+\s+(.+?)\s*$", cell.source, re.M)
            if heading:
                return re.sub(r"[`*_]", "", heading.group(1))
    return notebook.metadata.get("title", "")


def link_saved_figures(notebook, page_dir: Path) -> None:
    """Point each figure output that was saved to a file under `page_dir` at that file, dropping its
    embedded copy. A figure saved elsewhere, or not saved, stays embedded."""
    for cell in notebook.cells:
        for output in cell.get("outputs", []):
            for mime in ("image/png", "image/jpeg"):
                saved = output.get("metadata", {}).get(mime, {}).get(SAVED_AS)
                if mime not in output.get("data", {}) or not saved or not Path(saved).is_file():
                    continue
                try:
                    relative = Path(saved).resolve().relative_to(page_dir.resolve())
                except ValueError:  # not under the page's folder
                    continue
                output.metadata.setdefault("filenames", {})[mime] = relative.as_posix()
                output.data[mime] = ""


def export_html(notebook: str | Path, html: str | Path | None = None, link_figures: bool = False) -> Path:
    """Render an executed notebook to a page to read (see the module docstring); returns its path.

    `html` defaults to the notebook's path with the suffix .html (its folder is made). Figures are embedded, so that
    the page opens anywhere; with `link_figures`, those the notebook saved as files in the page's
    folder or below (plots.save_figure) are linked by relative path instead, so that a results
    folder holds each figure once.
    """
    import nbformat
    from jinja2 import DictLoader
    from nbconvert import HTMLExporter

    notebook = Path(notebook)
    if not notebook.is_file():
        raise MRNetError(f"notebook {notebook} does not exist; run it first (run_all.sh renders to runs/<preset>/)")
    html = Path(html) if html is not None else notebook.with_suffix(".html")
    try:
        content = nbformat.read(notebook, as_version=4)
    except (ValueError, UnicodeDecodeError, KeyError, TypeError, nbformat.ValidationError) as error:
        # NotJSONError is a ValueError; a JSON file that is not a notebook fails conversion or validation
        raise MRNetError(f"{notebook} is not a Jupyter notebook ({type(error).__name__}: "
                         f"{str(error).splitlines()[0][:120]}); give an executed .ipynb file") from None
    if link_figures:
        link_saved_figures(content, html.parent)
    exporter = HTMLExporter(template_name="classic", template_file="page.html.j2",
                            extra_loaders=[DictLoader({"page.html.j2": PAGE_TEMPLATE})],
                            exclude_input_prompt=True, exclude_output_prompt=True)
    resources = {"page_title": page_title(content) or notebook.stem, "page_style": PAGE_STYLE}
    body, _ = exporter.from_notebook_node(content, resources=resources)
    html.parent.mkdir(parents=True, exist_ok=True)
    return write_atomically(html, lambda handle: handle.write(body.encode()), what="HTML page")
