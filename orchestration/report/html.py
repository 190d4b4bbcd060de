"""The report page: one static, offline HTML file; figures and tables are files beside it (relative links)."""

from __future__ import annotations

import html
from dataclasses import dataclass, field
from typing import Any

_CSS = """
body{font:15px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#222;max-width:1100px;
margin:2em auto;padding:0 1em}
h1{margin-bottom:.2em}h2{border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:2em}
.sub{color:#666;margin-top:0}
table{border-collapse:collapse;font-size:13px;margin:.6em 0}
th,td{padding:3px 9px;border-bottom:1px solid #e4e4e4;text-align:right;white-space:nowrap}
th{border-bottom:2px solid #888;background:#fafafa}
td.t,th.t{text-align:left}
.scroll{overflow-x:auto}
figure{margin:1em 0}figure img{max-width:100%;height:auto;border:1px solid #eee}
figcaption{color:#555;font-size:13px}
.skip{color:#8a5a00;background:#fff8e6;border-left:4px solid #f0b400;padding:.3em .8em}
.partial{background:#fff0f0;border-left:4px solid #d33;padding:.5em 1em}
.files{font-size:13px;color:#555}
dl.cfg{display:grid;grid-template-columns:max-content auto;gap:2px 16px;font-size:14px}
dl.cfg dt{font-weight:600}dl.cfg dd{margin:0}
"""


@dataclass
class Section:
    """One part of the report: figures (PNG names relative to the page) and tables, or the reason it is left out."""

    key: str
    title: str
    text: str = ""
    figures: list[str] = field(default_factory=list)
    tables: list[tuple[list[str], list[list[str]], dict[str, str]]] = field(default_factory=list)  # head, body, files
    skipped: str | None = None
    notes: list[str] = field(default_factory=list)


def _e(s: Any) -> str:
    return html.escape(str(s))


def table_html(head: list[str], body: list[list[str]], text_cols: int = 3) -> str:
    def cls(i: int) -> str:
        return ' class="t"' if i < text_cols else ""

    rows = ["<tr>" + "".join(f"<th{cls(i)}>{_e(h)}</th>" for i, h in enumerate(head)) + "</tr>"]
    rows += ["<tr>" + "".join(f"<td{cls(i)}>{_e(c)}</td>" for i, c in enumerate(r)) + "</tr>" for r in body]
    return '<div class="scroll"><table>' + "".join(rows) + "</table></div>"


def section_html(s: Section) -> str:
    out = [f'<section id="{_e(s.key)}"><h2>{_e(s.title)}</h2>']
    if s.skipped:
        out.append(f'<p class="skip">Left out: {_e(s.skipped)}</p></section>')
        return "".join(out)
    if s.text:
        out.append(f"<p>{_e(s.text)}</p>")
    out += [f'<p class="skip">{_e(n)}</p>' for n in s.notes]
    for png in s.figures:
        svg = png[:-4] + ".svg"
        out.append(
            f'<figure><a href="{_e(png)}"><img src="{_e(png)}" alt="{_e(png)}"></a>'
            f'<figcaption>{_e(png.split("/")[-1])} · <a href="{_e(svg)}">SVG</a></figcaption></figure>'
        )
    for head, body, files in s.tables:
        out.append(table_html(head, body))
        links = " · ".join(f'<a href="{_e(p)}">{_e(fmt.upper())}</a>' for fmt, p in files.items())
        out.append(f'<p class="files">This table as {links}</p>')
    out.append("</section>")
    return "".join(out)


def nav_labels(sections: list[Section]) -> list[str]:
    """The section links' text: each title up to its colon, or the whole title where that short form
    would repeat (two ablations both read "e. Ablation")."""
    short = [s.title.split(":")[0] for s in sections]
    return [t if short.count(t) == 1 else s.title for s, t in zip(sections, short)]


def page(title: str, subtitle: str, config: list[tuple[str, str]], partial: list[str], sections: list[Section]) -> str:
    """The whole page: title, config summary, missing items (partial sweep), then the sections."""
    cfg = "".join(f"<dt>{_e(k)}</dt><dd>{_e(v)}</dd>" for k, v in config)
    toc = " · ".join(f'<a href="#{_e(s.key)}">{_e(label)}</a>' for s, label in zip(sections, nav_labels(sections)))
    part = ""
    if partial:
        part = (
            '<div class="partial"><b>Partial sweep.</b> The figures show the finished items only. Missing:<ul>'
            + "".join(f"<li>{_e(p)}</li>" for p in partial)
            + "</ul></div>"
        )
    return (
        f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{_e(title)}</title>'
        f'<meta name="viewport" content="width=device-width, initial-scale=1"><style>{_CSS}</style></head><body>'
        f'<h1>{_e(title)}</h1><p class="sub">{_e(subtitle)}</p>{part}'
        f'<section id="config"><h2>Configuration</h2><dl class="cfg">{cfg}</dl></section>'
        f'<p class="files">Sections: {toc}</p>' + "".join(section_html(s) for s in sections) + "</body></html>\n"
    )
