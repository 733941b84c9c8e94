"""``leaderboard.html``: the leaderboard as one self-contained page.

The page is built from the same markdown the sections write (so it can never say something the
markdown does not), turned into HTML by a small converter for the subset the sections use:
``#`` headings, pipe tables, ``-`` lists (one level of nesting), paragraphs, ``<details>`` /
``<summary>`` lines, and inline code, bold, italics, links and backslash escapes. Each
section's figures are embedded after its text as base64 PNG data, tables sort on a click of
their header (a few lines of inline script), and nothing refers to anything outside the file:
no server and no network at view time.
"""

from __future__ import annotations

import base64
import html
import pathlib
import re
from collections.abc import Iterable, Sequence

_HEADING = re.compile(r"^(#{1,6})\s+(.*)$")
_LIST = re.compile(r"^(\s*)[-*]\s+(.*)$")
_RAW = re.compile(r"^\s*</?(details|summary)\b.*$", re.IGNORECASE)
_ESCAPED = re.compile(r"\\([\\`*_\[\]<>|#{}()+.!-])")
_PLACEHOLDER = "\x00{}\x00"

STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2rem auto;
max-width:78rem;padding:0 1rem;color:#1b1f23;line-height:1.45}
h1{border-bottom:2px solid #d0d7de;padding-bottom:.3rem}h2{margin-top:2.2rem;
border-bottom:1px solid #d0d7de;padding-bottom:.2rem}
table{border-collapse:collapse;margin:.6rem 0 1.2rem;font-size:.88rem}
th,td{border:1px solid #d0d7de;padding:.25rem .5rem}th{background:#f6f8fa;cursor:pointer;
user-select:none;position:sticky;top:0}th:after{content:" \\2195";color:#8c959f}
tr:nth-child(even) td{background:#fafbfc}td.r,th.r{text-align:right}td.c,th.c{text-align:center}
code{background:#f6f8fa;padding:.1rem .3rem;border-radius:4px;font-size:.85em}
details{margin:.4rem 0}summary{cursor:pointer;font-weight:600}
figure{margin:1rem 0}figure img{max-width:100%;border:1px solid #d0d7de}
figcaption{font-size:.8rem;color:#57606a}
"""

SORT_SCRIPT = """
document.querySelectorAll("table").forEach(function(table){
  table.querySelectorAll("th").forEach(function(th, column){
    th.addEventListener("click", function(){
      var body = table.tBodies[0], rows = Array.from(body.rows);
      var up = th.dataset.order !== "asc";
      th.dataset.order = up ? "asc" : "desc";
      function key(row){
        var text = row.cells[column] ? row.cells[column].textContent.trim() : "";
        var value = parseFloat(text.replace(/[^0-9eE.+\\-]/g, ""));
        return isNaN(value) || !/^[\\[\\-+0-9.]/.test(text) ? text.toLowerCase() : value;
      }
      rows.sort(function(a, b){
        var x = key(a), y = key(b);
        if (typeof x !== typeof y) return typeof x === "number" ? -1 : 1;
        return (x < y ? -1 : x > y ? 1 : 0) * (up ? 1 : -1);
      });
      rows.forEach(function(row){ body.appendChild(row); });
    });
  });
});
"""


def leaderboard_html(
    blocks: Sequence[tuple[str, Sequence[pathlib.Path]]], *, title: str = "importance-bench leaderboard"
) -> str:
    """The whole page: each ``(markdown, figures)`` block converted, its figures embedded after it.

    Args:
        blocks: In page order, a markdown text (the header, then each section's) and the PNG
            files that belong to it.
        title: The page title.
    """
    body = []
    for text, figures in blocks:
        body.append(markdown_to_html(text))
        body.extend(_figure(path) for path in figures)
    return (
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
        f"<title>{html.escape(title)}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n"
        + "\n".join(part for part in body if part)
        + f"\n<script>{SORT_SCRIPT}</script>\n</body>\n</html>\n"
    )


def markdown_to_html(text: str) -> str:
    """HTML for the markdown subset the leaderboard sections write (see the module docstring)."""
    lines = text.splitlines()
    out: list[str] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        if not line.strip():
            i += 1
        elif _RAW.match(line):
            out.append(_raw(line))
            i += 1
        elif match := _HEADING.match(line):
            level, content = len(match.group(1)), match.group(2).strip()
            out.append(f'<h{level} id="{_anchor(content)}">{inline(content)}</h{level}>')
            i += 1
        elif line.lstrip().startswith("|"):
            block = _take(lines, i, lambda s: s.lstrip().startswith("|"))
            out.append(_table(block))
            i += len(block)
        elif _LIST.match(line):
            block = _take(lines, i, lambda s: bool(_LIST.match(s)) or s.startswith("    "))
            out.append(_list(block))
            i += len(block)
        else:
            block = _take(lines, i, lambda s: bool(s.strip()) and not _starts_block(s))
            out.append(f"<p>{inline(' '.join(s.strip() for s in block))}</p>")
            i += len(block)
    return "\n".join(out)


def inline(text: str) -> str:
    """Inline markdown -> HTML: backslash escapes, code spans, images, links, bold, italics."""
    kept: list[str] = []

    def keep(fragment: str) -> str:
        kept.append(fragment)
        return _PLACEHOLDER.format(len(kept) - 1)

    text = _ESCAPED.sub(lambda m: keep(html.escape(m.group(1))), text)
    text = re.sub(r"`([^`]+)`", lambda m: keep(f"<code>{html.escape(m.group(1))}</code>"), text)
    text = re.sub(r"!\[([^\]]*)\]\(([^)\s]+)\)",
                  lambda m: keep(f'<em>[figure: {html.escape(m.group(1))}]</em>'), text)
    text = re.sub(r"\[([^\]]+)\]\(([^)\s]+)\)",
                  lambda m: keep(_link(m.group(1), m.group(2))), text)
    text = html.escape(text, quote=False)
    text = re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", text)
    text = re.sub(r"(?<![\w*])\*(?!\s)(.+?)(?<!\s)\*(?![\w*])", r"<em>\1</em>", text)
    text = re.sub(r"(?<![\w])_(?!\s)(.+?)(?<!\s)_(?![\w])", r"<em>\1</em>", text)
    return re.sub("\x00(\\d+)\x00", lambda m: kept[int(m.group(1))], text)


def _link(label: str, target: str) -> str:
    # Only links inside the page: anything else is shown as text, so the file stays offline.
    if target.startswith("#"):
        return f'<a href="{html.escape(target)}">{html.escape(label)}</a>'
    return f"{html.escape(label)} ({html.escape(target)})"


def _raw(line: str) -> str:
    """A ``<details>``/``<summary>`` line; the summary's text is escaped like any other."""
    match = re.match(r"^\s*<summary>(.*)</summary>\s*$", line, re.IGNORECASE)
    if match:
        return f"<summary>{inline(match.group(1))}</summary>"
    tag = re.match(r"^\s*(</?\w+)", line).group(1).lower()
    return f"{tag}>"


def _starts_block(line: str) -> bool:
    return bool(_HEADING.match(line) or _LIST.match(line) or _RAW.match(line)
                or line.lstrip().startswith("|"))


def _take(lines: list[str], start: int, keep) -> list[str]:
    end = start + 1
    while end < len(lines) and keep(lines[end]):
        end += 1
    return lines[start:end]


def _cells(row: str) -> list[str]:
    row = row.strip()
    if row.startswith("|"):
        row = row[1:]
    if row.endswith("|") and not row.endswith("\\|"):
        row = row[:-1]
    return [cell.strip() for cell in re.split(r"(?<!\\)\|", row)]


def _table(block: list[str]) -> str:
    header = _cells(block[0])
    aligns = [""] * len(header)
    rows = block[1:]
    if rows and re.fullmatch(r"[\s|:\-]+", rows[0]):
        aligns = [_align(cell) for cell in _cells(rows[0])]
        rows = rows[1:]

    def cell(tag: str, text: str, column: int) -> str:
        cls = aligns[column] if column < len(aligns) else ""
        return f"<{tag}{f' class={chr(34)}{cls}{chr(34)}' if cls else ''}>{inline(text)}</{tag}>"

    head = "".join(cell("th", text, j) for j, text in enumerate(header))
    body = "\n".join(
        "<tr>" + "".join(cell("td", text, j) for j, text in enumerate(_cells(row))) + "</tr>"
        for row in rows
    )
    return f"<table>\n<thead><tr>{head}</tr></thead>\n<tbody>\n{body}\n</tbody>\n</table>"


def _align(marker: str) -> str:
    marker = marker.strip()
    if marker.startswith(":") and marker.endswith(":"):
        return "c"
    return "r" if marker.endswith(":") else ""


def _list(block: list[str]) -> str:
    out = ["<ul>"]
    nested = False
    for line in block:
        match = _LIST.match(line)
        if not match:  # a continuation line of the previous item
            out[-1] = out[-1].replace("</li>", " " + inline(line.strip()) + "</li>")
            continue
        indent, content = len(match.group(1)), match.group(2)
        if indent and not nested:
            out.append("<ul>")
            nested = True
        elif not indent and nested:
            out.append("</ul>")
            nested = False
        out.append(f"<li>{inline(content)}</li>")
    if nested:
        out.append("</ul>")
    out.append("</ul>")
    return "\n".join(out)


def _anchor(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", _ESCAPED.sub(r"\1", text).lower()).strip("-") or "section"


def _figure(path: pathlib.Path) -> str:
    data = base64.b64encode(pathlib.Path(path).read_bytes()).decode("ascii")
    name = html.escape(pathlib.Path(path).name)
    return (f'<figure><img alt="{name}" src="data:image/png;base64,{data}">'
            f"<figcaption>{name}</figcaption></figure>")


def headings(text: str) -> Iterable[str]:
    """The text of every markdown heading in ``text`` (for checks that the page has them all)."""
    for line in text.splitlines():
        if match := _HEADING.match(line):
            yield match.group(2).strip()
