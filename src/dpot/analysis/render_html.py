"""Self-contained HTML report: the Markdown report as HTML with the plots embedded as base64 PNGs."""

from __future__ import annotations

import base64
import html
import re

_CSS = """body{font-family:system-ui,sans-serif;max-width:1000px;margin:2em auto;padding:0 1em;color:#222}
h1{font-size:1.5em}h2{border-bottom:1px solid #ccc;margin-top:1.6em}code{background:#f3f3f3;padding:0 3px}
li{margin:2px 0}img.plot{max-width:100%;border:1px solid #ddd;margin:8px 0}
.alarm{color:#b00}.warn{color:#a60}.info{color:#046}"""


def _inline(text: str) -> str:
    text = html.escape(text)
    text = re.sub(r"`([^`]+)`", r"<code>\1</code>", text)
    text = re.sub(r"\*\*\[(alarm|warn|info)\] ([^*]+)\*\*", r'<b class="\1">[\1] \2</b>', text)
    return re.sub(r"\*\*([^*]+)\*\*", r"<b>\1</b>", text)


def markdown_to_html(md: str) -> str:
    """Just enough Markdown for our reports: headings, nested bullet lists, paragraphs, code spans."""
    out, depth = [], 0
    for line in md.splitlines():
        m = re.match(r"^( *)- (.*)$", line)
        if m:
            level = len(m.group(1)) // 2 + 1
            while depth < level:
                out.append("<ul>")
                depth += 1
            while depth > level:
                out.append("</ul>")
                depth -= 1
            out.append(f"<li>{_inline(m.group(2))}</li>")
            continue
        while depth:
            out.append("</ul>")
            depth -= 1
        h = re.match(r"^(#{1,4}) (.*)$", line)
        if h:
            n = len(h.group(1))
            out.append(f"<h{n}>{_inline(h.group(2))}</h{n}>")
        elif line.strip():
            out.append(f"<p>{_inline(line)}</p>")
    out += ["</ul>"] * depth
    return "\n".join(out)


def render_html(md: str, plots: dict[str, bytes], title: str, lang: str = "en") -> str:
    """A single HTML page (no external resources) with the report and its plots."""
    figs = "\n".join(
        f'<figure><img class="plot" id="plot-{name.removesuffix(".png")}" alt="{name}" '
        f'src="data:image/png;base64,{base64.b64encode(png).decode()}"><figcaption>{name}</figcaption></figure>'
        for name, png in plots.items())
    return (f'<!DOCTYPE html><html lang="{lang}"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
            f"<style>{_CSS}</style></head><body>\n{markdown_to_html(md)}\n<h2>Plots</h2>\n{figs}\n</body></html>\n")
