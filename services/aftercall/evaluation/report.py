"""JSON + self-contained HTML reports: tables, and matplotlib figures embedded as PNG data URIs, so a report is
one file a person can open or mail without the rest of the folder."""

from __future__ import annotations

import base64
import html
import io
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence


@dataclass
class Table:
    headers: Sequence[str]
    rows: Sequence[Sequence[Any]]
    caption: str = ""


@dataclass
class Section:
    title: str
    paragraphs: Sequence[str] = ()
    tables: Sequence[Table] = ()
    figures: Sequence[str] = ()  # PNG data URIs from `figure_uri`
    notes: Sequence[str] = field(default=())  # bullet points under the tables


def new_figure(width: float = 7.0, height: float = 3.6):
    """A matplotlib figure on the Agg backend (no display on an appliance)."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=100, layout="constrained")


def figure_uri(figure) -> str:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def format_cell(value: Any) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.3f}" if abs(value) < 10 else f"{value:.1f}"
    return str(value)


def markdown_table(table: Table) -> str:
    lines = ["| " + " | ".join(table.headers) + " |", "|" + "---|" * len(table.headers)]
    lines += ["| " + " | ".join(format_cell(cell) for cell in row) + " |" for row in table.rows]
    return "\n".join(lines)


_STYLE = """
body{font-family:system-ui,sans-serif;max-width:72rem;margin:2rem auto;padding:0 1rem;color:#222}
table{border-collapse:collapse;margin:.6rem 0 1rem}th,td{border:1px solid #ccc;padding:.25rem .6rem;text-align:left}
th{background:#f2f2f2}td.num{text-align:right;font-variant-numeric:tabular-nums}caption{text-align:left;color:#555}
.fail{color:#b00020;font-weight:600}.pass{color:#1b7a1b;font-weight:600}img{max-width:100%}
"""


def _cell(value: Any) -> str:
    text = html.escape(format_cell(value))
    if text in ("PASS", "FAIL"):
        return f'<td class="{text.lower()}">{text}</td>'
    numeric = isinstance(value, (int, float)) and not isinstance(value, bool)
    return f'<td class="num">{text}</td>' if numeric else f"<td>{text}</td>"


def render_html(title: str, sections: Sequence[Section], meta: dict[str, Any]) -> str:
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>",
             f"<style>{_STYLE}</style></head><body><h1>{html.escape(title)}</h1><p>",
             " &middot; ".join(f"{html.escape(k)}: {html.escape(str(v))}" for k, v in meta.items()), "</p>"]
    for section in sections:
        parts.append(f"<h2>{html.escape(section.title)}</h2>")
        parts += [f"<p>{html.escape(p)}</p>" for p in section.paragraphs]
        for table in section.tables:
            parts.append("<table>")
            if table.caption:
                parts.append(f"<caption>{html.escape(table.caption)}</caption>")
            parts.append("<tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in table.headers) + "</tr>")
            parts += ["<tr>" + "".join(_cell(c) for c in row) + "</tr>" for row in table.rows]
            parts.append("</table>")
        if section.notes:
            parts.append("<ul>" + "".join(f"<li>{html.escape(n)}</li>" for n in section.notes) + "</ul>")
        parts += [f"<p><img alt='{html.escape(section.title)}' src='{uri}'></p>" for uri in section.figures]
    parts.append("</body></html>\n")
    return "".join(parts)


def write_report(out_dir: Path, name: str, title: str, data: dict[str, Any], sections: Sequence[Section],
                 meta: dict[str, Any]) -> tuple[Path, Path]:
    """`out_dir/name.json` (the figures, for machines and for comparing runs) and `out_dir/name.html`. Each file is
    written to a temporary name and renamed, so a reader never sees half a report."""
    out_dir.mkdir(parents=True, exist_ok=True)
    outputs = ((out_dir / f"{name}.json", json.dumps({"meta": meta, **data}, indent=2, ensure_ascii=False) + "\n"),
               (out_dir / f"{name}.html", render_html(title, sections, meta)))
    for path, text in outputs:
        partial = path.with_suffix(path.suffix + ".partial")
        partial.write_text(text, encoding="utf-8")
        os.replace(partial, path)
    return outputs[0][0], outputs[1][0]
