"""Math on the feedback page without a network: TeX turned into MathML when the page is written.

nbgrader's feedback template loads MathJax from a CDN, so a student reading feedback offline (or behind a campus
proxy) sees raw `$\\mu_B$`. MathToMathML rewrites each `$...$` and `$$...$$` of the markdown cells into MathML
(latex2mathml, a pure-Python converter), which browsers render themselves (MathML Core: Chromium since 109,
Firefox, Safari) and screen readers read as math; the exporter (autograde.feedback_exporter) then loads no MathJax.

The MathML is data built from the page's text, which may be the student's: latex2mathml copies `\\text{...}` into
the markup as it is (`\\text{<script>}` becomes a script element), and MathML allows `href` on any element. So its
output is parsed and written again element by element: MathML elements only, a short list of presentation
attributes, text escaped. A formula that does not convert, or converts to anything else, stays as its TeX source
in a code span, shown as text.
"""

from __future__ import annotations

import html
import re
import xml.etree.ElementTree as ET

from nbgrader.preprocessors import NbGraderPreprocessor

NS = "{http://www.w3.org/1998/Math/MathML}"
ELEMENTS = {"math", "mrow", "mi", "mn", "mo", "ms", "mtext", "mspace", "msub", "msup", "msubsup", "mfrac", "msqrt",
            "mroot", "mover", "munder", "munderover", "mtable", "mtr", "mtd", "mstyle", "mpadded", "mphantom",
            "menclose", "merror", "semantics", "annotation"}
ATTRIBUTES = {"display", "mathvariant", "stretchy", "fence", "separator", "lspace", "rspace", "accent",
              "accentunder", "columnalign", "rowalign", "columnspacing", "rowspacing", "displaystyle", "scriptlevel",
              "linethickness", "width", "height", "depth", "movablelimits", "largeop", "symmetric", "minsize",
              "maxsize", "form", "notation", "columnlines", "rowlines", "frame", "encoding"}
# $$...$$ first, then $...$; a `\$` is a dollar sign, never a delimiter; no math across a blank line.
MATH = re.compile(r"(?<!\\)\$\$(?P<block>.+?)(?<!\\)\$\$|(?<![\\$])\$(?P<inline>[^$\n]+?)(?<!\\)\$(?!\$)", re.S)
FENCE = re.compile(r"(```.*?```|`[^`\n]*`)", re.S)  # code is not math
RAW_HTML = re.compile(r"<[A-Za-z!/?]")


def to_mathml(tex: str, block: bool = False) -> str | None:
    """The formula as clean MathML, or None when it does not convert to MathML alone."""
    from latex2mathml.converter import convert

    try:
        root = ET.fromstring(convert(tex, display="block" if block else "inline"))
    except Exception:  # noqa: BLE001 - any TeX the converter or the parser refuses stays as its source
        return None
    clean = _clean(root)
    if clean is None:
        return None
    clean.set("xmlns", NS[1:-1])
    return ET.tostring(clean, encoding="unicode", short_empty_elements=False)


def _clean(element: ET.Element) -> ET.Element | None:
    name = element.tag.removeprefix(NS)
    if name not in ELEMENTS:
        return None
    out = ET.Element(name, {k: v for k, v in element.attrib.items() if k in ATTRIBUTES and "(" not in v})
    out.text, out.tail = element.text, element.tail
    for child in element:
        cleaned = _clean(child)
        if cleaned is None:
            return None
        out.append(cleaned)
    return out


def convert_markdown(source: str) -> str:
    """Every formula of a markdown cell's source as MathML (code spans and fences left alone). A cell that holds
    HTML outside its math and code (SanitiseStudentContent's cleaned HTML of a cell it could not leave as markdown)
    is left as it is: a formula inside an attribute there must not become markup."""
    if RAW_HTML.search(MATH.sub("", FENCE.sub("", source))):
        return source
    parts = FENCE.split(source)
    for i in range(0, len(parts), 2):  # the even parts are outside code
        parts[i] = MATH.sub(_replace, parts[i])
    return "".join(parts)


def _replace(match: re.Match) -> str:
    block = match["block"] is not None
    tex = match["block"] if block else match["inline"]
    mathml = to_mathml(tex.strip(), block)
    if mathml is None:
        return f"<code>{html.escape(match[0])}</code>"
    return f"\n\n{mathml}\n\n" if block else mathml


class MathToMathML(NbGraderPreprocessor):
    """The feedback page's markdown cells with their math as MathML (after SanitiseStudentContent)."""

    def preprocess_cell(self, cell, resources, index):
        if cell.cell_type == "markdown" and "$" in cell.source:
            cell.source = convert_markdown(cell.source)
        return cell, resources
