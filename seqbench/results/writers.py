r"""Render a report, given as a list of blocks, to Markdown, to one self-contained HTML page
(images embedded as base64, inline CSS, no external reference), and tables to LaTeX (booktabs).

The report's content is built once (:mod:`seqbench.results.report`); these writers only decide
how it looks, so the Markdown, HTML and LaTeX versions cannot disagree.

Every string may come from a row (a task name, a device name, an error message), so each format
escapes at the writer, with one helper per format: :func:`md_escape` (Markdown: HTML and Markdown
syntax, one line), :func:`html.escape` (HTML), :func:`tex_escape` and :func:`tex_comment`
(LaTeX text and ``%`` comment lines), :func:`tex_label` (``\label`` keys), :func:`safe_filename`
(a file name inside the report folder) and :func:`mpl_escape` (matplotlib text, where ``$``
starts mathtext). Blocks hold plain text; no block is raw markup.
"""

from __future__ import annotations

import base64
import hashlib
import html
import re
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from seqbench.recording.schema import STATUSES


@dataclass
class Heading:
    text: str
    level: int = 2


@dataclass
class Paragraph:
    text: str


@dataclass
class Bullets:
    items: list[str]


@dataclass
class Table:
    frame: pd.DataFrame  # string cells
    caption: str = ""
    # same shape: True or "best" where the cell is the best of its column (bold), "tie" where it
    # is tied for the best (italic)
    bold: pd.DataFrame | None = None


BEST, TIE = "best", "tie"


def mark_of(value: object) -> str:
    """``'best'``, ``'tie'`` or ``''`` from a cell of :attr:`Table.bold`."""
    if value is True or value == BEST:
        return BEST
    return TIE if value == TIE else ""


# --- escaping, one helper per format -------------------------------------------------------
_LINE_BREAKS = re.compile(r"[\r\n\v\f\x85\u2028\u2029]+")
_CONTROL = re.compile(r"[\x00-\x08\x0e-\x1f\x7f]")


def one_line(text: object) -> str:
    """``text`` as one line: line breaks become spaces, control characters go."""
    return _CONTROL.sub("", _LINE_BREAKS.sub(" ", str(text)))


_MD_SPECIAL = re.compile(r"([\\`*_\[\]{}|#~!])")
# a link seqbench itself writes (nightly index): safe text, a relative path of safe characters
_SAFE_LINK = re.compile(r"\[[A-Za-z0-9 ._-]{1,40}\]\([A-Za-z0-9._/-]{1,200}\)")


def md_escape(text: object) -> str:
    """Text for Markdown, read literally: one line, ``&``/``<``/``>`` as HTML entities (no raw
    HTML such as ``<script>`` survives), and Markdown's syntax characters backslash-escaped
    (no emphasis, link, image, code span, table cell or heading)."""
    return _MD_SPECIAL.sub(r"\\\1", html.escape(one_line(text), quote=False))


def safe_filename(text: object, limit: int = 80) -> str:
    """A file name that stays inside its folder: letters, digits, ``.``, ``_`` and ``-`` only,
    no leading dot, at most ``limit`` characters; a name that had to change gets a short hash
    of the original, so two different strings never share a file."""
    raw = str(text)
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", raw).lstrip(".-") or "x"
    if name != raw or len(name) > limit:
        digest = hashlib.sha256(raw.encode("utf-8", "surrogatepass")).hexdigest()[:8]
        name = f"{name[:limit - 9]}-{digest}"
    return name


def tex_label(text: object) -> str:
    """A ``\\label``/``\\ref`` key: letters, digits, ``:``, ``.`` and ``-`` only."""
    return re.sub(r"[^A-Za-z0-9:.-]+", "-", str(text)).strip("-") or "x"


def mpl_escape(text: object) -> str:
    """Text for a matplotlib label or caption, drawn literally (``$`` would start mathtext)."""
    return one_line(text).replace("$", r"\$")


@dataclass
class Image:
    path: str  # relative to the report directory
    caption: str
    alt: str = ""
    width_px: int | None = None  # CSS pixels to show it at (its size in inches x 96)


@dataclass
class Document:
    title: str
    blocks: list = field(default_factory=list)

    def add(self, *blocks) -> None:
        self.blocks.extend(blocks)


# --- Markdown ----------------------------------------------------------------------------------
def _md_cell(text: object) -> str:
    text = str(text)
    return text if _SAFE_LINK.fullmatch(text) else md_escape(text)


def _md_marked(text: object, mark: str) -> str:
    cell = _md_cell(text)
    if not str(text):
        return cell
    return f"**{cell}**" if mark == BEST else f"*{cell}*" if mark == TIE else cell


def md_table(table: Table) -> str:
    frame = table.frame
    bold = table.bold if table.bold is not None else frame.map(lambda _: False)
    head = "| " + " | ".join(_md_cell(c) for c in frame.columns) + " |"
    align = "|" + "|".join("---:" if n else "---" for n in numeric_columns(frame)) + "|"
    body = []
    for (_, row), (_, marks) in zip(frame.iterrows(), bold.iterrows(), strict=True):
        cells = [_md_marked(v, mark_of(m)) for v, m in zip(row, marks, strict=True)]
        body.append("| " + " | ".join(cells) + " |")
    caption = f"\n*{md_escape(table.caption)}*\n" if table.caption else ""
    return "\n".join([head, align, *body]) + "\n" + caption


def write_table(table: pd.DataFrame, shown: pd.DataFrame, out: Path, name: str) -> list[Path]:
    """``table`` unrounded as ``out/<name>.csv`` and ``shown`` (its text cells) as
    ``out/<name>.md``; the two paths."""
    out.mkdir(parents=True, exist_ok=True)
    table.to_csv(out / f"{name}.csv", index=False)
    (out / f"{name}.md").write_text(md_table(Table(shown)), encoding="utf-8")
    return [out / f"{name}.csv", out / f"{name}.md"]


def to_markdown(doc: Document) -> str:
    out = [f"# {md_escape(doc.title)}\n"]
    for block in doc.blocks:
        if isinstance(block, Heading):
            out.append(f"{'#' * block.level} {md_escape(block.text)}\n")
        elif isinstance(block, Paragraph):
            out.append(md_escape(block.text) + "\n")
        elif isinstance(block, Bullets):
            out.append("\n".join(f"- {md_escape(item)}" for item in block.items) + "\n")
        elif isinstance(block, Table):
            out.append(md_table(block))
        elif isinstance(block, Image):
            path = "/".join(safe_filename(part) for part in block.path.split("/"))
            out.append(f"![{md_escape(block.alt or block.caption)}]({path})\n\n"
                       f"*{md_escape(block.caption)}*\n")
    return "\n".join(out)


# --- HTML --------------------------------------------------------------------------------------
CSS = """
body { font: 15px/1.5 system-ui, -apple-system, "Segoe UI", sans-serif; color: #1b1b1b;
       max-width: 1200px; margin: 2em auto; padding: 0 1.5em; }
h1 { font-size: 1.7em; border-bottom: 2px solid #ddd; padding-bottom: .3em; }
h2 { font-size: 1.35em; margin-top: 2em; border-bottom: 1px solid #eee; }
h3 { font-size: 1.1em; margin-top: 1.5em; }
table { border-collapse: collapse; margin: .8em 0; font-size: 13.5px; }
th, td { border-bottom: 1px solid #e3e3e3; padding: .3em .8em; text-align: left;
         white-space: nowrap; }
th { background: #f4f4f4; border-bottom: 2px solid #ccc; }
.num { text-align: right; font-variant-numeric: tabular-nums; }
tr:nth-child(even) td { background: #fafafa; }
figure { margin: 1.5em 0; }
figure img { max-width: 100%; height: auto; border: 1px solid #eee; }
figcaption, .caption { color: #555; font-size: 13px; }
code { background: #f4f4f4; padding: 0 .25em; border-radius: 3px; }
.tablewrap { overflow-x: auto; }
"""


def _e(text: object) -> str:
    return html.escape(str(text), quote=True)


def numeric_columns(frame: pd.DataFrame) -> list[bool]:
    """Which columns hold numbers (right-aligned): every non-empty cell starts with one."""

    def number(text: str) -> bool:  # a number, or a status in a column of numbers
        head = text.split(" ")[0].replace(",", "")
        try:
            float(head)
        except ValueError:
            return head in ("", "-") or text in STATUSES
        return True

    return [i > 0 and all(number(str(v)) for v in frame[c]) for i, c in enumerate(frame.columns)]


def html_table(table: Table) -> str:
    frame = table.frame
    bold = table.bold if table.bold is not None else frame.map(lambda _: False)
    align = [' class="num"' if n else "" for n in numeric_columns(frame)]
    head = "".join(f"<th{a}>{_e(c)}</th>" for c, a in zip(frame.columns, align, strict=True))
    rows = []
    for (_, row), (_, marks) in zip(frame.iterrows(), bold.iterrows(), strict=True):
        tags = {BEST: ("<b>", "</b>"), TIE: ("<i>", "</i>"), "": ("", "")}
        cells = "".join(f"<td{a}>{tags[mark_of(m) if v else ''][0]}{_e(v)}"
                        f"{tags[mark_of(m) if v else ''][1]}</td>"
                        for v, m, a in zip(row, marks, align, strict=True))
        rows.append(f"<tr>{cells}</tr>")
    caption = f'<p class="caption">{_e(table.caption)}</p>' if table.caption else ""
    return (f'<div class="tablewrap"><table><thead><tr>{head}</tr></thead>'
            f'<tbody>{"".join(rows)}</tbody></table></div>{caption}')


def _data_uri(path: Path) -> str:
    mime = {".png": "image/png", ".svg": "image/svg+xml", ".jpg": "image/jpeg"}[path.suffix]
    return f"data:{mime};base64,{base64.b64encode(path.read_bytes()).decode('ascii')}"


def to_html(doc: Document, root: Path) -> str:
    """One page that needs no other file: every image of ``root`` is embedded."""
    out = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
           '<meta name="viewport" content="width=device-width, initial-scale=1">',
           f"<title>{_e(doc.title)}</title><style>{CSS}</style></head><body>",
           f"<h1>{_e(doc.title)}</h1>"]
    for block in doc.blocks:
        if isinstance(block, Heading):
            out.append(f"<h{block.level}>{_e(block.text)}</h{block.level}>")
        elif isinstance(block, Paragraph):
            out.append(f"<p>{_e(block.text)}</p>")
        elif isinstance(block, Bullets):
            out.append("<ul>" + "".join(f"<li>{_e(i)}</li>" for i in block.items) + "</ul>")
        elif isinstance(block, Table):
            out.append(html_table(block))
        elif isinstance(block, Image):
            width = f' width="{block.width_px}"' if block.width_px else ""
            out.append(f'<figure><img src="{_data_uri(root / block.path)}"{width} '
                       f'alt="{_e(block.alt or block.caption)}">'
                       f"<figcaption>{_e(block.caption)}</figcaption></figure>")
    out.append("</body></html>")
    return "\n".join(out) + "\n"


# --- LaTeX -------------------------------------------------------------------------------------
_TEX = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
        "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
        "<": r"\textless{}", ">": r"\textgreater{}", "|": r"\textbar{}",
        "±": r"$\pm$", "↑": r"$\uparrow$", "↓": r"$\downarrow$", "…": r"\ldots{}"}


def tex_escape(text: object) -> str:
    """Text for LaTeX, typeset literally: one line (a blank line would end a table row's
    paragraph), every special character escaped, so no command can start."""
    return "".join(_TEX.get(ch, ch) for ch in one_line(text))


def tex_comment(text: object) -> str:
    """A ``%`` comment line: whatever ``text`` holds stays on this one line, so nothing after
    it is read as LaTeX."""
    return "% " + one_line(text)


def latex_table(table: Table, label: str, note: str = "") -> str:
    """A booktabs table (``\\usepackage{booktabs}``); bold (best) and italic (tied) cells keep
    their parenthesised note outside the mark, so columns of numbers stay aligned."""
    frame = table.frame
    bold = table.bold if table.bold is not None else frame.map(lambda _: False)
    spec = "".join("r" if n else "l" for n in numeric_columns(frame))
    lines = [tex_comment(note) if note else "", r"\begin{table}[t]", r"\centering",
             rf"\caption{{{tex_escape(table.caption)}}}", rf"\label{{{tex_label(label)}}}",
             rf"\begin{{tabular}}{{{spec}}}", r"\toprule",
             " & ".join(tex_escape(c) for c in frame.columns) + r" \\", r"\midrule"]
    for (_, row), (_, marks) in zip(frame.iterrows(), bold.iterrows(), strict=True):
        cells = []
        for value, best in zip(row, marks, strict=True):
            text = str(value)
            mark = mark_of(best)
            if mark and text:
                main, sep, rest = text.partition(" (")
                command = r"\textbf" if mark == BEST else r"\textit"
                text = rf"{command}{{{tex_escape(main)}}}" + (
                    tex_escape(sep + rest) if sep else "")
            else:
                text = tex_escape(text)
            cells.append(text)
        lines.append(" & ".join(cells) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}", r"\end{table}"]
    return "\n".join(line for line in lines if line) + "\n"
