"""Student content made inert before a person's browser renders it: the autograded notebook and the feedback.

Two pages show what a student wrote as HTML: formgrader (nbgrader's grading UI, which renders the autograded
.ipynb with nbconvert's HTMLExporter and its `formgrade` template, inside the instructor's logged-in Jupyter
session) and the student's feedback page (nbconvert with nbgrader's `feedback` template). Neither sanitises:
a markdown cell's raw HTML, a `text/html` or `image/svg+xml` output and an `application/javascript` output reach
the page as they are (stored cross-site scripting in the grading UI). SanitiseStudentContent rewrites the
notebook itself, so the page is safe whatever template or exporter settings render it:

- A markdown cell (or `text/markdown` output) is parsed with the very renderer nbconvert's templates use
  (mistune with nbconvert's math and plugins). When everything in it is markdown that this renderer escapes
  (text, emphasis, code, math, tables, lists, headings) and its links and images point where they may
  (links: http, https, mailto, #anchors; images: data: images and image attachments), the cell is left exactly
  as the student wrote it. Otherwise (raw HTML, a javascript: link, a remote image, a mermaid block) it is
  replaced by its rendered HTML as cleaned by nh3 (the ammonia sanitiser), on one line, which every markdown
  renderer passes through as one HTML block: the student's text and formatting stay, the active parts go.
- Rich outputs: `text/html` is cleaned by nh3; `image/svg+xml` becomes an <img> of the SVG as a data: URI (a
  browser runs no script and fetches nothing inside an SVG shown as an image); `text/markdown` as a markdown
  cell; `text/plain`, `image/png`, `image/jpeg`, `image/gif` (when base64) and the judge's record bundles stay
  as they are; anything else (application/javascript, widgets, text/latex, unknown types) is removed, with a
  line saying so when nothing else is left. Output metadata keeps only numeric image sizes (nbconvert turns
  `text/html: {isolated: true}` into an iframe).
- Raw cells (which nbconvert's HTML exporter renders as HTML) are cleaned as `text/html` outputs are; the notebook's widget state (which makes nbconvert load scripts from a CDN)
  is dropped.
- MathJax (which both pages load) typesets every `$...$` of the page's text, and some TeX commands link
  (`\\href`), set CSS (`\\style`, `\\bbox`: url() fetches) or load code (`\\require`): a cell or HTML output
  whose text holds one is shown as its source text in <pre>, which MathJax does not typeset.

The policy (what nh3 keeps) is written out below: formatting tags, tables and images; no script, style,
iframe, object, embed, form or event handler; no class or id (the page's own scripts and CSS key on them);
inline style only for colours, alignment and font style; images only from data: URIs, links only to http,
https, mailto and #anchors. Scores are never affected: the preprocessor runs after nbgrader has scored the
notebook (autograde.py) and changes only what is shown.
"""

from __future__ import annotations

import base64
import re
import time
from html import escape, unescape

import nbformat
import nh3
from nbconvert.filters.markdown_mistune import InvalidNotebook, IPythonRenderer, MarkdownWithMath
from nbgrader.preprocessors import NbGraderPreprocessor

from course_recorder import MIME as RECORD_MIME

# Tags nh3 keeps (ammonia's defaults, which hold no active element, less image maps: their <area> links).
TAGS = set(nh3.ALLOWED_TAGS) - {"area", "map"}
# Elements removed with their content (their text is code or CSS, not something the student meant to be read).
DROPPED_WITH_CONTENT = {"script", "style", "template", "iframe", "object", "embed", "noscript", "noembed",
                        "noframes", "xmp", "title", "textarea", "select", "option", "svg", "math"}
ATTRIBUTES = {**{tag: set(names) for tag, names in nh3.ALLOWED_ATTRIBUTES.items()},
              "*": {"style", "title", "lang", "dir"}}
# Inline style properties that cannot fetch anything or cover the page (no url(), no position).
STYLE_PROPERTIES = {"color", "background-color", "text-align", "font-weight", "font-style", "text-decoration",
                    "vertical-align", "white-space"}
URL_SCHEMES = {"http", "https", "mailto", "data"}

# What a link may point to, and an image be (an image is fetched as the page loads: only inline data).
_LINK = re.compile(r"(?i)^(https?:|mailto:|#)")
_IMAGE_DATA = re.compile(r"(?i)^data:image/(png|jpeg|gif|webp|svg\+xml);base64,[a-z0-9+/=\s]*$")
KEPT_OUTPUTS = {"text/plain", "image/png", "image/jpeg", "image/gif", RECORD_MIME}
IMAGES = ("image/png", "image/jpeg", "image/gif")
# A page with more tags than this is shown as text, unparsed: the HTML parser (html5ever's, in nh3, as a
# browser's) takes time that grows with the square of how deeply elements nest (100,000 nested <div>s: 16 s),
# so a student's output must not be able to stall the worker. A displayed pandas table (60 rows) has ~2,500.
MAX_TAGS = 10_000
_BASE64 = re.compile(r"^[A-Za-z0-9+/=\s]*$")
# The TeX commands with which MathJax (loaded by nbconvert's templates, typesetting every `$...$` in the page's
# text, wherever it came from) makes links, sets CSS (`url()` fetches), or loads code: a page holding one of them
# in its text shows that text in <pre>, which MathJax never typesets.
_ACTIVE_TEX = re.compile(r"\\(href|url|style|class|cssId|bbox|unicode|require|mmlToken|html|data|enclose)(?![A-Za-z])")


def _attribute(tag: str, name: str, value: str) -> str | None:
    """nh3's per-attribute check: images only from data: URIs, links only to http(s), mailto and anchors."""
    if tag == "img" and name == "src":
        return value if _IMAGE_DATA.match(value.strip()) else None
    if name == "href":
        return value if _LINK.match(value.strip()) else None
    return value


def _relative(url: str) -> str | None:
    """Relative URLs: an #anchor stays (a link within the page); anything else would be fetched from the server."""
    return url if url.startswith("#") else None


def clean_html(html: str) -> str:
    """`html` as nh3 (ammonia) cleans it under this module's policy: safe markup only. (Lone surrogates, which
    JSON can carry but UTF-8 cannot, become `?`: nh3 takes UTF-8.)"""
    html = html.encode("utf-8", "replace").decode("utf-8")
    return nh3.clean(html, tags=TAGS, clean_content_tags=DROPPED_WITH_CONTENT, attributes=ATTRIBUTES,
                     attribute_filter=_attribute, url_schemes=URL_SCHEMES, url_relative=_relative,
                     filter_style_properties=STYLE_PROPERTIES, strip_comments=True)


# The markdown token types whose rendering nbconvert escapes (mistune's core, nbconvert's math and its plugins:
# strikethrough, table, url, task_lists, def_list). Links and images are checked by their URL; anything else
# (block_html, inline_html, a type a later mistune adds) makes the cell go through nh3.
_ESCAPED_TOKENS = {
    "text", "emphasis", "strong", "codespan", "linebreak", "softbreak", "paragraph", "heading", "blank_line",
    "thematic_break", "block_text", "block_code", "block_quote", "list", "list_item", "strikethrough",
    "table", "table_head", "table_body", "table_row", "table_cell", "task_list_item", "def_list",
    "def_list_head", "def_list_item", "block_math", "inline_math", "latex_environment", "link", "image",
}


class _Inspector(IPythonRenderer):
    """nbconvert's own markdown renderer, noting whatever in the cell it would not escape (`unsafe`)."""

    def __init__(self, attachments: dict):
        super().__init__(escape=False, attachments=attachments)
        self.unsafe: list[str] = []

    def render_token(self, token, state):
        kind = token["type"]
        if kind not in _ESCAPED_TOKENS:
            self.unsafe.append(kind)
        elif kind == "block_code" and str(token.get("attrs", {}).get("info") or "").strip().startswith("mermaid"):
            self.unsafe.append("mermaid")  # rendered by a script the lab template loads from a CDN
        elif kind == "link" and not _LINK.match(str(token["attrs"]["url"]).strip()):
            self.unsafe.append("link")
        elif kind == "image" and not self._image_ok(str(token["attrs"]["url"]).strip()):
            self.unsafe.append("image")
        return super().render_token(token, state)

    def _image_ok(self, url: str) -> bool:
        if url.startswith("attachment:"):
            try:
                url = self._embed_image_or_attachment(url)
            except InvalidNotebook:
                return False
        return bool(_IMAGE_DATA.match(url))


def safe_html(html: str) -> str:
    """`html` as nh3 cleans it; shown as its text instead when it has too many tags to parse (MAX_TAGS) or holds an
    active TeX command (which MathJax would typeset). Text already shown that way is kept as it is."""
    if _text_only(html):
        return html
    if html.count("<") > MAX_TAGS:
        return as_text(html)
    cleaned = clean_html(html)
    return as_text(html) if _ACTIVE_TEX.search(unescape(cleaned)) else cleaned


def safe_markdown(source: str, attachments: dict | None = None) -> str:
    """The markdown `source` itself when nbconvert renders all of it escaped and its URLs are allowed;
    otherwise its rendered HTML cleaned by nh3, as one line that markdown passes through as an HTML block."""
    if source.count("<") > MAX_TAGS:
        return _block(as_text(source))
    # Already made safe (the feedback is built from the autograded copy, sanitised before): kept as it is.
    if _one_block(source):
        inner = source[len("<div>"):-len("</div>")]
        if _block(inner) == source and (_text_only(inner) or not _ACTIVE_TEX.search(unescape(source))):
            return source
    inspector = _Inspector(attachments or {})
    try:
        html = MarkdownWithMath(renderer=inspector).render(source)
    except Exception:  # noqa: BLE001 - whatever breaks nbconvert's renderer is shown as escaped text
        inspector.unsafe.append("unrenderable")
        html = as_text(source)
    if _ACTIVE_TEX.search(unescape(html)):
        return _block(as_text(source))
    if not inspector.unsafe:
        return source
    return _block(html)


def _block(html: str) -> str:
    """`html` cleaned by nh3 as one line `<div>...</div>`: an HTML block ends at a blank line, after which markdown
    would read the rest as markdown again, so newlines become character references, which the browser reads
    back as newlines (in <pre> too)."""
    return "<div>" + _one_line(clean_html(html).strip()) + "</div>"


def _one_line(html: str) -> str:
    """`html` with its newlines as character references (see _block)."""
    return html.replace("\r", "&#13;").replace("\n", "&#10;")


def _one_block(source: str) -> bool:
    """True for one line `<div>...</div>`: markdown passes it through as one HTML block, nothing in it parsed."""
    return source.startswith("<div>") and source.endswith("</div>") and not re.search(r"[\r\n]", source)


def as_text(text: str) -> str:
    """HTML that shows `text` as it is, in <pre> (which MathJax does not typeset)."""
    return "<pre>" + escape(text) + "</pre>"


def _text_only(html: str) -> bool:
    """True for as_text's HTML: one <pre> holding text only."""
    return re.fullmatch(r"<pre>[^<]*</pre>", html) is not None


def _svg_as_image(svg: str | list) -> str:
    svg = "".join(svg) if isinstance(svg, list) else str(svg)
    return f'<img src="data:image/svg+xml;base64,{base64.b64encode(svg.encode()).decode()}">'


def _size(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def safe_output(output: dict) -> dict:
    """A code cell's output with only what renders inert (in place; returned for convenience)."""
    if output.get("output_type") not in ("display_data", "execute_result"):
        return output  # stream and error text is escaped by every template (ansi2html)
    data = output.get("data", {})
    shown = {}
    for mime, value in data.items():
        if mime in IMAGES and not (isinstance(value, str) and _BASE64.match(value)):
            continue  # not base64: a template puts it in an attribute
        if mime in KEPT_OUTPUTS:
            shown[mime] = value
        elif mime == "text/html":
            shown[mime] = safe_html("".join(value) if isinstance(value, list) else str(value))
        elif mime == "text/markdown":
            shown[mime] = safe_markdown("".join(value) if isinstance(value, list) else str(value))
    if "image/svg+xml" in data and "text/html" not in shown:
        shown["text/html"] = _svg_as_image(data["image/svg+xml"])
    removed = sorted(set(data) - set(shown) - {"image/svg+xml"})
    if removed and not set(shown) - {RECORD_MIME}:
        shown["text/plain"] = f"[not shown: {', '.join(removed)} output]"
    output["data"] = shown
    metadata = output.get("metadata", {}) if isinstance(output.get("metadata"), dict) else {}
    output["metadata"] = {mime: {k: v for k, v in metadata[mime].items() if k in ("width", "height") and _size(v)}
                          for mime in IMAGES
                          if mime in shown and isinstance(metadata.get(mime), dict)}
    return output


def sanitise(nb) -> None:
    """Make every cell and output of notebook `nb` inert (in place)."""
    nb.metadata.pop("widgets", None)
    for cell in nb.cells:
        try:
            _sanitise_cell(cell)
        except Exception:  # noqa: BLE001 - content that breaks a parser is shown as text; grading never fails
            _as_plain_text(cell)


def _sanitise_cell(cell) -> None:
    if cell.cell_type == "markdown":
        cell.source = safe_markdown(str(cell.source), cell.get("attachments"))
    elif cell.cell_type == "raw":
        cell.source = safe_html(str(cell.source))  # nbconvert renders raw cells into the page as HTML
    elif cell.cell_type == "code":
        for output in cell.get("outputs", []):
            safe_output(output)


def _as_plain_text(cell) -> None:
    """The fallback (no parser involved): a text cell's source escaped in <pre>, a code cell's rich outputs as their
    text (the judge's record bundles kept)."""
    if cell.cell_type != "code":
        cell.source = "<div>" + _one_line(as_text(str(cell.get("source", "")))) + "</div>"
        return
    outputs = []
    for output in cell.get("outputs", []):
        if isinstance(output, dict) and output.get("output_type") not in ("stream", "error"):
            data = output.get("data", {}) if isinstance(output.get("data"), dict) else {}
            kept = {"text/plain": str(data.get("text/plain", ""))}
            if RECORD_MIME in data:
                kept[RECORD_MIME] = data[RECORD_MIME]
            output = nbformat.from_dict({**output, "data": kept, "metadata": {}})
        outputs.append(output)
    cell.outputs = outputs


class SanitiseStudentContent(NbGraderPreprocessor):
    """Make a graded notebook's student content inert for the browser that renders it (module docstring)."""

    def preprocess(self, nb, resources):
        started = time.perf_counter()
        sanitise(nb)
        self.log.debug("sanitised %s in %.1f ms", (resources or {}).get("unique_key", "a notebook"),
                       1000 * (time.perf_counter() - started))
        return nb, resources
