"""The report's document model and its two renderers, HTML and Markdown.

``report._sections`` builds a report once as a ``Document``: a flat list of blocks
(headings, paragraphs, callouts, tables, figures, preformatted text, link lists).
``render_html`` and ``render_markdown`` only decide how each block looks, so both
outputs hold the same sections in the same order. Both link the figure files (the HTML
does not embed them, which keeps it small: the report folder is opened as a whole). Headings with a ``toc`` label make
the table of contents (the HTML sidebar, the Markdown "Contents" line).

Sits at the end of the flow: ``documents.build_report`` writes what these return.
"""

from __future__ import annotations

import html
import re
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Union

__all__ = [
    "Code",
    "Strong",
    "Link",
    "Heading",
    "Paragraph",
    "Callout",
    "Table",
    "Figure",
    "Preformatted",
    "LinkList",
    "Document",
    "render_html",
    "render_markdown",
    "GENERATOR",
    "png_size",
]

# The HTML's generator tag: marks a folder as one this package wrote (documents.build_report).
GENERATOR = '<meta name="generator" content="recourse_ray.report">'


# ---------------------------------------------------------------------------- inline text
@dataclass(frozen=True)
class Code:
    """Inline code (a path, a command)."""

    text: str


@dataclass(frozen=True)
class Strong:
    """Emphasised text."""

    text: str


@dataclass(frozen=True)
class Link:
    """A link: ``href`` is a path relative to the report folder, or ``#anchor`` of a heading or figure."""

    text: str
    href: str


Inline = Union[str, Code, Strong, Link]


# ---------------------------------------------------------------------------- blocks
@dataclass(frozen=True)
class Heading:
    """A section heading.

    Attributes:
        level: 1 (the title) to 4.
        text: the heading's text.
        anchor: its id in the HTML (None: not linkable).
        toc: its label in the table of contents (None: not listed). Level-2 entries
            are the contents; level-3 entries nest under the level-2 entry before them.
        toc_group: level-2 entries of the same group are listed under this label.
    """

    level: int
    text: str
    anchor: str | None = None
    toc: str | None = None
    toc_group: str | None = None


@dataclass(frozen=True)
class Paragraph:
    """Running text; ``style`` ``"notice"`` (a warning) or ``"muted"`` (small print) or None."""

    parts: Sequence[Inline]
    style: str | None = None


@dataclass(frozen=True)
class Callout:
    """The banner at the top: ``kind`` ``"notice"`` (something is missing) or ``"ok"``."""

    parts: Sequence[Inline]
    kind: str


@dataclass(frozen=True)
class Table:
    """A table. Cells are text, or ``(text, sort_value)`` for numeric cells.

    ``row_classes`` marks rows (``"missing"``, ``"incomplete"``, ``"disagree"`` or None);
    only the HTML colours them.
    """

    headers: Sequence[str]
    rows: Sequence[Sequence]
    sortable: bool = True
    row_classes: Sequence[str | None] | None = None


@dataclass(frozen=True)
class Figure:
    """A figure written to disk: ``files`` maps a format (``png``, ``svg``) to its path."""

    anchor: str
    title: str
    caption: str
    files: dict[str, Path]

    def main_file(self) -> Path:
        """The file shown: the PNG when written, else the SVG."""
        return self.files.get("png") or self.files["svg"]


@dataclass(frozen=True)
class Preformatted:
    """Verbatim text (a spec, a traceback), folded under ``summary`` when given."""

    text: str
    summary: str | None = None
    open: bool = False
    language: str = ""


@dataclass(frozen=True)
class LinkList:
    """A bulleted list of links."""

    links: Sequence[Link]


Block = Union[Heading, Paragraph, Callout, Table, Figure, Preformatted, LinkList]


@dataclass(frozen=True)
class Document:
    """A whole report: its title (the sweep's name) and its blocks in reading order."""

    title: str
    blocks: Sequence[Block]

    def headings(self) -> list[Heading]:
        return [b for b in self.blocks if isinstance(b, Heading)]


def _contents(doc: Document) -> list[tuple[str | None, list[tuple[Heading, list[Heading]]]]]:
    """The table of contents: groups (label or None) of level-2 entries with their level-3 entries."""
    groups: list[tuple[str | None, list[tuple[Heading, list[Heading]]]]] = []
    for h in doc.headings():
        if h.toc is None:
            continue
        if h.level == 2:
            if not groups or h.toc_group is None or groups[-1][0] != h.toc_group:
                groups.append((h.toc_group, []))
            groups[-1][1].append((h, []))
        elif h.level == 3 and groups and groups[-1][1]:
            groups[-1][1][-1][1].append(h)
    return groups


class _Renderer:
    """Walks a document; a subclass says how each kind of inline text and block is written."""

    _INLINE = {Code: "code", Strong: "strong", Link: "link", str: "text"}
    _BLOCKS = {Heading: "heading", Paragraph: "paragraph", Callout: "callout", Table: "table", Figure: "figure",
               Preformatted: "preformatted", LinkList: "link_list"}

    def __init__(self, doc: Document, base: Path) -> None:
        self.doc, self.base = doc, base

    def rel(self, path: Path) -> str:
        """A file's link, relative to the report folder."""
        return path.relative_to(self.base).as_posix()

    def inline(self, parts: Sequence[Inline]) -> str:
        return "".join(getattr(self, self._INLINE.get(type(part), "text"))(part) for part in parts)

    def block(self, block: Block) -> str:
        name = self._BLOCKS.get(type(block))
        if name is None:
            raise TypeError(f"Unknown report block {type(block).__name__}.")
        return getattr(self, name)(block)


# ---------------------------------------------------------------------------- HTML
_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;color:#1a1a1a;line-height:1.45}
nav{position:fixed;top:0;left:0;bottom:0;width:15rem;overflow-y:auto;background:#f6f6f6;border-right:1px solid #ddd;
padding:1rem;font-size:.85rem;box-sizing:border-box}
nav ul{padding-left:1rem;margin:.2rem 0}nav a{color:#0b4f8a;text-decoration:none}nav a:hover{text-decoration:underline}
main{margin-left:15rem;padding:1rem 2rem;max-width:72rem}
h1{font-size:1.6rem}h2{border-bottom:2px solid #0072B2;padding-bottom:.2rem;margin-top:2.5rem}
h3{margin-top:1.8rem}h4{margin:1.2rem 0 .3rem}
table{border-collapse:collapse;font-size:.82rem;margin:.5rem 0 1rem}
th,td{border:1px solid #d6d6d6;padding:.25rem .5rem;text-align:left;vertical-align:top}
th{background:#eef3f8;position:sticky;top:0}td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
table.sortable th{cursor:pointer}table.sortable th:after{content:" \\2195";color:#999;font-size:.75em}
tr:nth-child(even) td{background:#fafafa}
tr.missing td{background:#fde2e1}tr.incomplete td{background:#fff4d6}tr.disagree td{background:#fbe3d0}
.notice{border-left:4px solid #D55E00;background:#fff1e8;padding:.6rem 1rem;margin:1rem 0}
.ok{border-left:4px solid #009E73;background:#e9f7f2;padding:.6rem 1rem;margin:1rem 0}
.scroll{overflow-x:auto}figure{margin:1rem 0}figure img,figure svg{max-width:100%;height:auto}
figcaption{font-size:.85rem;color:#444}pre{background:#f6f6f6;padding:.8rem;overflow-x:auto;font-size:.8rem}
code{font-size:.85em}.muted{color:#666}
@media print{nav{display:none}main{margin-left:0}}
"""

_SORT_JS = """
document.querySelectorAll('table.sortable th').forEach(function(th){
 th.addEventListener('click',function(){
  var table=th.closest('table'),body=table.tBodies[0];
  var idx=Array.prototype.indexOf.call(th.parentNode.children,th);
  var asc=th.getAttribute('data-order')!=='asc';
  th.parentNode.querySelectorAll('th').forEach(function(h){h.removeAttribute('data-order');});
  th.setAttribute('data-order',asc?'asc':'desc');
  function key(row){var c=row.cells[idx];if(!c)return '';var v=c.getAttribute('data-v');
   if(v===null)v=c.textContent.trim();var n=parseFloat(v);return isNaN(n)?v.toLowerCase():n;}
  var rows=Array.prototype.slice.call(body.rows);
  rows.sort(function(a,b){var x=key(a),y=key(b);
   if(typeof x!==typeof y){return typeof x==='number'?-1:1;}
   return (x<y?-1:x>y?1:0)*(asc?1:-1);});
  rows.forEach(function(r){body.appendChild(r);});
 });
});
"""


def _e(text: object) -> str:
    return html.escape(str(text), quote=True)


class _Html(_Renderer):
    def text(self, part: str) -> str:
        return _e(part)

    def code(self, part: Code) -> str:
        return f"<code>{_e(part.text)}</code>"

    def strong(self, part: Strong) -> str:
        return f"<b>{_e(part.text)}</b>"

    def link(self, part: Link) -> str:
        return f'<a href="{_e(part.href)}">{_e(part.text)}</a>'

    def heading(self, block: Heading) -> str:
        ident = f' id="{_e(block.anchor)}"' if block.anchor else ""
        return f"<h{block.level}{ident}>{_e(block.text)}</h{block.level}>"

    def paragraph(self, block: Paragraph) -> str:
        cls = f' class="{block.style}"' if block.style else ""
        return f"<p{cls}>{self.inline(block.parts)}</p>"

    def callout(self, block: Callout) -> str:
        return f'<div class="{block.kind}">{self.inline(block.parts)}</div>'

    def table(self, block: Table) -> str:
        table_open = '<table class="sortable">' if block.sortable else "<table>"
        out = [f'<div class="scroll">{table_open}<thead><tr>']
        out += [f"<th>{_e(h)}</th>" for h in block.headers]
        out.append("</tr></thead><tbody>")
        for i, row in enumerate(block.rows):
            cls = block.row_classes[i] if block.row_classes else None
            out.append(f'<tr class="{cls}">' if cls else "<tr>")
            for cell in row:
                if isinstance(cell, tuple):
                    text, value = cell
                    v = "" if value is None or value != value else repr(float(value))
                    out.append(f'<td class="num" data-v="{v}">{_e(text)}</td>')
                else:
                    out.append(f"<td>{_e(cell)}</td>")
            out.append("</tr>")
        out.append("</tbody></table></div>")
        return "".join(out)

    def figure(self, block: Figure) -> str:
        shown = block.main_file()
        size = png_size(shown) if shown.suffix == ".png" else None
        # width/height reserve the space before the image loads; CSS scales it down to the column
        dims = f' width="{size[0]}" height="{size[1]}"' if size else ""
        body = f'<img src="{_e(self.rel(shown))}" alt="{_e(block.title)}"{dims} loading="lazy">'
        links = " \u00b7 ".join(f'<a href="{_e(self.rel(p))}">{kind.upper()}</a>' for kind, p in block.files.items())
        return (f'<figure id="{_e(block.anchor)}">{body}<figcaption><b>{_e(block.title)}.</b> {_e(block.caption)} '
                f'<span class="muted">[{links}]</span></figcaption></figure>')

    def preformatted(self, block: Preformatted) -> str:
        pre = f"<pre>{_e(block.text)}</pre>"
        if block.summary is None:
            return pre
        return f"<details{' open' if block.open else ''}><summary>{_e(block.summary)}</summary>{pre}</details>"

    def link_list(self, block: LinkList) -> str:
        return "<ul>" + "".join(f"<li>{self.link(link)}</li>" for link in block.links) + "</ul>"

    def contents(self) -> str:
        def entry(heading: Heading, children: list[Heading]) -> str:
            sub = "".join(entry(c, []) for c in children)
            return (f'<li><a href="#{_e(heading.anchor)}">{_e(heading.toc)}</a>'
                    + (f"<ul>{sub}</ul>" if sub else "") + "</li>")

        out = []
        for group, entries in _contents(self.doc):
            items = "".join(entry(h, children) for h, children in entries)
            out.append(f"<li>{_e(group)}<ul>{items}</ul></li>" if group else items)
        return "".join(out)

    def render(self) -> str:
        title, body = _e(self.doc.title), "".join(self.block(b) for b in self.doc.blocks)
        return (
            "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">" + GENERATOR +
            f"<title>{title}: recourse dynamics report</title><style>{_CSS}</style></head><body>"
            f"<nav><b>{title}</b><ul>{self.contents()}</ul></nav><main>{body}</main>"
            f"<script>{_SORT_JS}</script></body></html>\n"
        )


def png_size(path: Path) -> tuple[int, int] | None:
    """(width, height) in pixels from a PNG's header, or None when the file is not a PNG."""
    with path.open("rb") as handle:
        head = handle.read(24)
    if len(head) < 24 or head[:8] != b"\x89PNG\r\n\x1a\n" or head[12:16] != b"IHDR":
        return None
    width, height = struct.unpack(">II", head[16:24])
    return width, height


def render_html(doc: Document, base: Path) -> str:
    """One HTML page: a sidebar of contents, sortable tables, figures linked from the report folder.

    Args:
        doc: the report.
        base: the report folder; links to files are written relative to it.
    """
    return _Html(doc, base).render()


# ---------------------------------------------------------------------------- Markdown
def _md_heading_anchors(doc: Document) -> dict[str, str]:
    """HTML anchor -> the anchor a Markdown viewer gives the heading (GitHub's rule, duplicates numbered)."""
    seen: dict[str, int] = {}
    out = {}
    for h in doc.headings():
        base = re.sub(r"[^\w\- ]", "", h.text.lower()).replace(" ", "-")
        n = seen.get(base, 0)
        seen[base] = n + 1
        if h.anchor:
            out[h.anchor] = base if n == 0 else f"{base}-{n}"
    return out


class _Markdown(_Renderer):
    """Internal links are resolved against the document's headings and figures."""

    def __init__(self, doc: Document, base: Path) -> None:
        super().__init__(doc, base)
        self.targets = {a: f"#{md}" for a, md in _md_heading_anchors(doc).items()}
        # a figure has no anchor in Markdown: a link to it opens its file
        self.targets |= {b.anchor: self.rel(b.main_file()) for b in doc.blocks if isinstance(b, Figure)}

    def text(self, part: str) -> str:
        return str(part)

    def code(self, part: Code) -> str:
        return f"``{part.text}``" if "`" in part.text else f"`{part.text}`"

    def strong(self, part: Strong) -> str:
        return f"**{part.text}**"

    def link(self, part: Link) -> str:
        href = self.targets.get(part.href[1:], part.href) if part.href.startswith("#") else part.href
        return f"[{part.text}]({href})"

    def heading(self, block: Heading) -> str:
        return f"{'#' * block.level} {block.text}"

    def paragraph(self, block: Paragraph) -> str:
        text = self.inline(block.parts)
        return f"> {text}" if block.style == "notice" else text

    def callout(self, block: Callout) -> str:
        return f"> {self.inline(block.parts)}"

    def table(self, block: Table) -> str:
        def cell(text: object) -> str:
            return str(text).replace("|", "\\|").replace("\n", " ")

        lines = ["| " + " | ".join(cell(h) for h in block.headers) + " |", "|" + "---|" * len(block.headers)]
        lines += ["| " + " | ".join(cell(c[0] if isinstance(c, tuple) else c) for c in row) + " |" for row in block.rows]
        return "\n".join(lines)

    def figure(self, block: Figure) -> str:
        others = ", ".join(f"[{kind.upper()}]({self.rel(p)})" for kind, p in block.files.items())
        return f"![{block.title}]({self.rel(block.main_file())})\n\n*{block.title}.* {block.caption} ({others})"

    def preformatted(self, block: Preformatted) -> str:
        longest = max((len(run) for run in re.findall(r"`+", block.text)), default=0)
        fence = "`" * max(3, longest + 1)
        code = f"{fence}{block.language}\n{block.text.rstrip()}\n{fence}"
        return f"*{block.summary}*\n\n{code}" if block.summary else code

    def link_list(self, block: LinkList) -> str:
        return "\n".join(f"- {self.link(link)}" for link in block.links)

    def contents(self) -> str:
        links = [Link(h.toc, f"#{h.anchor}") for _, entries in _contents(self.doc) for h, _ in entries]
        return "Contents: " + " \u00b7 ".join(self.link(link) for link in links)

    def render(self) -> str:
        chunks, listed = [], False
        for block in self.doc.blocks:
            if not listed and isinstance(block, Heading) and block.level == 2:
                chunks.append(self.contents())  # right before the first section
                listed = True
            chunks.append(self.block(block))
        return "\n\n".join(chunks) + "\n"


def render_markdown(doc: Document, base: Path) -> str:
    """The report as Markdown: figures linked from ``figures/``, the same sections as the HTML.

    Args:
        doc: the report.
        base: the report folder; links to files are written relative to it.
    """
    return _Markdown(doc, base).render()
