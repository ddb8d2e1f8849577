"""The report's HTML: one self-contained page (inline style and script, images as base64 data URIs, no URL to
anywhere), tables whose headers sort them, and a self-check that browser tests run with `?selfcheck`.
"""
from __future__ import annotations

import base64
import html
import math
import re
from typing import Any, Mapping, Sequence

STYLE = """
body{font-family:system-ui,sans-serif;margin:0;color:#1d2330;background:#fafbfc}
header{background:#1d2330;color:#fff;padding:14px 24px}header h1{margin:0;font-size:1.4em}
nav{padding:6px 24px;background:#e8ecf2;position:sticky;top:0;z-index:2}nav a{margin-right:14px;color:#1d2330}
main{padding:8px 24px 40px}section{margin:18px 0 30px}h2{border-bottom:2px solid #c9d1dd;padding-bottom:4px}
table{border-collapse:collapse;margin:8px 0;font-size:.88em}td,th{border:1px solid #c9d1dd;padding:3px 7px}
th{background:#eef1f6;text-align:left}td.num{text-align:right;font-variant-numeric:tabular-nums}
table.sortable th{cursor:pointer;user-select:none}table.sortable th[data-order=asc]::after{content:" \\25B2"}
table.sortable th[data-order=desc]::after{content:" \\25BC"}
.headline{font-size:1.15em;background:#fff;border-left:5px solid #2f6fdf;padding:8px 14px}
.note{background:#fff6dd;border-left:4px solid #e0a800;padding:6px 12px}
figure{display:inline-block;margin:6px 12px 12px 0;vertical-align:top}figcaption{font-size:.85em;color:#444}
pre{background:#fff;border:1px solid #c9d1dd;padding:8px;overflow-x:auto;font-size:.82em}
img{max-width:100%}.thumbs figure{width:170px}[id]{scroll-margin-top:48px}
"""

SCRIPT = """
var xtlErrors = [];
window.addEventListener('error', function (e) { if (e.message) { xtlErrors.push(String(e.message)); } });
(function () {
  var original = console.error;
  console.error = function () { xtlErrors.push(Array.prototype.join.call(arguments, ' ')); original.apply(console, arguments); };
})();
function cellKey(cell) {
  var v = cell.getAttribute('data-value');
  if (v === null) { v = cell.textContent.trim(); }
  if (v === '') { return null; }
  var n = Number(v);
  return isNaN(n) ? v.toLowerCase() : n;
}
function sortBy(th) {
  var table = th.closest('table'), body = table.tBodies[0];
  var col = Array.prototype.indexOf.call(th.parentNode.children, th);
  var asc = th.getAttribute('data-order') !== 'asc';
  Array.prototype.forEach.call(table.tHead.rows[0].cells, function (h) { h.removeAttribute('data-order'); });
  th.setAttribute('data-order', asc ? 'asc' : 'desc');
  var rows = Array.prototype.slice.call(body.rows);
  rows.sort(function (a, b) {
    var x = cellKey(a.cells[col]), y = cellKey(b.cells[col]);
    if (x === null || y === null) { return (x === null) - (y === null); }
    if (typeof x !== typeof y) { x = String(x); y = String(y); }
    return (x < y ? -1 : x > y ? 1 : 0) * (asc ? 1 : -1);
  });
  rows.forEach(function (r) { body.appendChild(r); });
}
function selfCheck() {
  var out = {errors: xtlErrors.slice(), images: 0, broken: [], sorted: null};
  Array.prototype.forEach.call(document.images, function (img) {
    out.images += 1;
    if (!img.complete || img.naturalWidth === 0) { out.broken.push(img.alt || img.id || 'image'); }
  });
  var table = document.getElementById('case-table') || document.querySelector('table.sortable');
  if (table) {
    var th = table.tHead.rows[0].cells[1];
    th.click();
    var read = function () {
      return Array.prototype.map.call(table.tBodies[0].rows, function (r) { return cellKey(r.cells[1]); });
    };
    var up = read();
    th.click();
    var down = read();
    out.sorted = {column: th.textContent.replace(/[\\u25B2\\u25BC]/g, '').trim(), ascending: up, descending: down};
  }
  var pre = document.createElement('pre');
  pre.id = 'selfcheck';
  pre.textContent = JSON.stringify(out);
  document.body.appendChild(pre);
}
window.addEventListener('load', function () {
  Array.prototype.forEach.call(document.querySelectorAll('table.sortable th'), function (th) {
    th.addEventListener('click', function () { sortBy(th); });
  });
  if (/[?&]selfcheck/.test(window.location.search)) { selfCheck(); }
});
"""


def esc(value: Any) -> str:
    """Text escaped for HTML (quotes too)."""
    return html.escape(str(value), quote=True)


def anchor(prefix: str, key: str) -> str:
    """An element id from a key: letters, digits, '-' and '_' only."""
    return f"{prefix}-{re.sub(r'[^A-Za-z0-9_-]', '_', key)}"


def data_uri(png: bytes) -> str:
    """A PNG as a data: URI (the page needs no file next to it)."""
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def image(png: bytes, alt: str, caption: str = "", element_id: str | None = None, width: int | None = None) -> str:
    """A <figure> holding an embedded PNG and its caption."""
    ident = f' id="{esc(element_id)}"' if element_id else ""
    size = f' width="{width}"' if width else ""
    cap = f"<figcaption>{caption}</figcaption>" if caption else ""
    return f'<figure{ident}><img src="{data_uri(png)}" alt="{esc(alt)}"{size}>{cap}</figure>'


def number(value: Any, digits: int = 3) -> str:
    """A cell's text: floats with `digits` decimals, NaN/None as an empty string."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return ""
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _cell(value: Any, link: str | None = None) -> str:
    """One <td>: numbers right-aligned with their exact value for sorting, text escaped, an optional in-page link."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        finite = not (isinstance(value, float) and not math.isfinite(value))
        text = esc(number(value))
        inner = f'<a href="#{esc(link)}">{text}</a>' if link else text
        return f'<td class="num" data-value="{repr(float(value)) if finite else ""}">{inner}</td>'
    text = esc("" if value is None else value)
    return f'<td><a href="#{esc(link)}">{text}</a></td>' if link else f"<td>{text}</td>"


def table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str], headers: Sequence[str] | None = None,
          sortable: bool = False, links: Sequence[str | None] | None = None, link_column: str | None = None,
          element_id: str | None = None) -> str:
    """An HTML table of the rows; `links[i]` makes row i's `link_column` cell an in-page link."""
    head = "".join(f"<th>{esc(h)}</th>" for h in (headers or columns))
    body = []
    for i, row in enumerate(rows):
        link = links[i] if links else None
        body.append("<tr>" + "".join(_cell(row.get(c), link if c == link_column else None) for c in columns)
                    + "</tr>")
    attrs = (' class="sortable"' if sortable else "") + (f' id="{esc(element_id)}"' if element_id else "")
    return f"<table{attrs}><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def page(title: str, subtitle: str, sections: Sequence[tuple[str, str, str]]) -> str:
    """The whole document: header, a navigation bar over the sections (id, heading, body HTML), style, script."""
    nav = "".join(f'<a href="#{esc(i)}">{esc(h)}</a>' for i, h, _ in sections)
    body = "".join(f'<section id="{esc(i)}"><h2>{esc(h)}</h2>{content}</section>' for i, h, content in sections)
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{esc(title)}</title><style>{STYLE}</style><script>{SCRIPT}</script></head>"
            f"<body><header><h1>{esc(title)}</h1><div>{esc(subtitle)}</div></header><nav>{nav}</nav>"
            f"<main>{body}</main></body></html>\n")
