"""A report's blocks (:mod:`pvar.experiment.document`) as Markdown and as self-contained HTML."""

from __future__ import annotations

import base64
import html
import re
from pathlib import Path

from pvar.experiment.blocks import Block


def to_markdown(blocks: list[Block], figs: dict[str, Path], fig_rel: str = "figures") -> str:
    """The blocks as Markdown, figures linked beside the file."""
    out: list[str] = []
    for b in blocks:
        kind = b[0]
        if kind in ("h1", "h2", "h3"):
            out.append(f"{'#' * int(kind[1])} {b[1]}\n")
        elif kind == "p":
            out.append(b[1] + "\n")
        elif kind == "table":
            header, rows = b[1], b[2]
            out.append("| " + " | ".join(header) + " |")
            out.append("|" + "---|" * len(header))
            out += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
            out.append("")
        elif kind == "fig" and b[1] in figs:
            out.append(f"![{b[2]}]({fig_rel}/{figs[b[1]].name})\n\n*{b[2]}*\n")
        elif kind == "pre":
            out.append("```yaml\n" + b[1].rstrip() + "\n```\n")
    return "\n".join(out)


def _inline(text: str) -> str:
    t = html.escape(text)
    t = re.sub(r"`([^`]+)`", r"<code>\1</code>", t)
    return re.sub(r"\*\*([^*]+)\*\*", r"<strong>\1</strong>", t)


_CSS = """body{font:15px/1.5 system-ui,-apple-system,Segoe UI,sans-serif;max-width:1040px;margin:2em auto;padding:0 1em;
color:#222}h1{font-size:1.6em}h2{margin-top:1.8em;border-bottom:1px solid #ddd}table{border-collapse:collapse;
margin:.8em 0;font-size:.92em}th,td{border:1px solid #ccc;padding:.3em .6em;text-align:left}th{background:#f4f4f4}
tr:nth-child(even) td{background:#fafafa}figure{margin:1em 0}img{max-width:100%}figcaption{color:#555;font-size:.9em}
code,pre{background:#f5f5f5;border-radius:3px}pre{padding:.8em;overflow:auto;font-size:.85em}"""


def to_html(blocks: list[Block], figs: dict[str, Path]) -> str:
    """The blocks as one self-contained HTML page: figures inlined as PNG data URIs, no external assets."""
    body: list[str] = []
    title = "pvar report"
    for b in blocks:
        kind = b[0]
        if kind in ("h1", "h2", "h3"):
            title = b[1] if kind == "h1" else title
            body.append(f"<{kind}>{_inline(b[1])}</{kind}>")
        elif kind == "p":
            body.append(f"<p>{_inline(b[1])}</p>")
        elif kind == "table":
            head = "".join(f"<th>{_inline(str(h))}</th>" for h in b[1])
            rows = "".join("<tr>" + "".join(f"<td>{_inline(str(c))}</td>" for c in row) + "</tr>" for row in b[2])
            body.append(f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>")
        elif kind == "fig" and b[1] in figs:
            data = base64.b64encode(figs[b[1]].read_bytes()).decode()
            body.append(f'<figure><img alt="{html.escape(b[2])}" src="data:image/png;base64,{data}">'
                        f"<figcaption>{_inline(b[2])}</figcaption></figure>")
        elif kind == "pre":
            body.append(f"<pre>{html.escape(b[1])}</pre>")
    return (f"<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{html.escape(title)}</title>"
            f"<style>{_CSS}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n")
