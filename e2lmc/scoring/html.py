"""The pieces of a self-contained HTML page: what the report and diagnose's page are made of.

A participant opens these pages offline, and Codabench shows the report in an iframe, so
a page loads nothing from outside: figures are inline PNGs, there is no script, the style
is inline, and `outside_resources` finds anything a browser would fetch (the tests and
`scripts/render_report.py` check every page with it). Cells and titles from the
submission are escaped by the callers; `page` escapes its title.
"""

from __future__ import annotations

import base64
import csv
import io
import re
from html import escape

import matplotlib
import matplotlib.pyplot as plt

matplotlib.use("Agg")  # no display: figures are drawn into PNG bytes

STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,Arial,sans-serif;max-width:980px;margin:24px auto;
padding:0 16px;color:#222;line-height:1.45}
h1{font-size:1.5em;margin-bottom:4px}h2{font-size:1.15em;margin-top:28px;border-bottom:1px solid #ddd}
table{border-collapse:collapse;margin:8px 0}td,th{border:1px solid #ddd;padding:4px 10px;text-align:right}
th{background:#f5f5f5}td.l,th.l{text-align:left}.big{font-size:2em;font-weight:600}
.bad{color:#b00020;font-weight:600}.ok{color:#1b7f3b;font-weight:600}.note{color:#666;font-size:.9em}
img{max-width:100%}code,pre{background:#f3f3f3;padding:1px 4px}pre{white-space:pre-wrap}
"""
EXTERNAL = re.compile(r"<(script|link|iframe|object|embed)\b|url\(|@import", re.IGNORECASE)
ATTRIBUTE = re.compile(r"\b(src|href)\s*=\s*\"([^\"]*)\"", re.IGNORECASE)


def page(title: str, body: str) -> str:
    """A self-contained HTML page: the title is escaped, the body is HTML already."""
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        f"<title>{escape(title)}</title><style>{STYLE}</style></head>"
        f"<body>\n{body}\n</body></html>\n"
    )


def png_image(fig: plt.Figure, alt: str) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight", metadata={"Software": None})
    plt.close(fig)
    return f'<img alt="{escape(alt)}" src="data:image/png;base64,{base64.b64encode(buf.getvalue()).decode()}">'


def html_table(header: list[str], rows: list[list[str]], left: int = 1) -> str:
    """An HTML table; the first `left` columns are left-aligned. Cells are pre-escaped."""
    th = "".join(f'<th class="{"l" if i < left else ""}">{h}</th>' for i, h in enumerate(header))
    trs = "".join(
        "<tr>" + "".join(f'<td class="{"l" if i < left else ""}">{c}</td>' for i, c in enumerate(r)) + "</tr>"
        for r in rows
    )
    return f"<table><tr>{th}</tr>{trs}</table>"


def csv_text(rows: list[list[object]]) -> str:
    """Rows as CSV (a metric key such as acc,none is quoted)."""
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerows(rows)
    return buffer.getvalue()


def outside_resources(html: str) -> list[str]:
    """Everything in a page that a browser would fetch from elsewhere: a script, a link,
    a frame, a CSS url() or import, or a src/href that is neither a data: URI nor an anchor."""
    found = [m.group(0) for m in EXTERNAL.finditer(html)]
    found += [value[:80] for _, value in ATTRIBUTE.findall(html) if not value.startswith(("data:", "#"))]
    return found
