"""An HTML part as plain text, for a person to read: tags dropped, nothing rendered.

A reviewer deciding on a held message must see what it says without a
browser: no image, style sheet or script is ever fetched or run, because
nothing here interprets the markup beyond finding where tags end. The text
between tags is kept with its character references decoded; ``script``,
``style``, ``head`` and ``template`` elements are dropped whole; comments
are dropped; block elements (paragraphs, line breaks, list items, table
rows, headings) start a new line, and a link's target is shown after its
text as ``<https://...>``, since where a link leads is what a reviewer of
phishing must see.

One forward pass with ``str.find``: each character is looked at a bounded
number of times, so the time is linear in the input whatever the sender
wrote (unclosed tags, comments or scripts end the text where they start).
"""

from __future__ import annotations

import html
import re

# Elements whose content is not text for a reader.
_DROPPED = frozenset({"script", "style", "head", "template", "noscript", "title"})
# Elements that start a line of their own (and end one).
_BLOCKS = frozenset({
    "br", "p", "div", "li", "tr", "table", "ul", "ol", "h1", "h2", "h3", "h4", "h5", "h6",
    "blockquote", "pre", "hr", "section", "article", "header", "footer", "dd", "dt", "td",
    "th",
})
_TAG_NAME = re.compile(r"/?\s*([A-Za-z][A-Za-z0-9-]*)")
_HREF = re.compile(r"""\bhref\s*=\s*(?:"([^"]*)"|'([^']*)'|([^\s>]+))""", re.IGNORECASE)
_SPACES = re.compile(r"[ \t\r\f\v\u00a0]+")


def html_to_text(source: str) -> str:
    """The readable text of `source`, one paragraph or block per line."""
    lowered = source.lower()  # once, for finding the end of dropped elements
    out: list[str] = []
    link: str | None = None
    position, length = 0, len(source)
    while position < length:
        opening = source.find("<", position)
        if opening < 0:
            out.append(source[position:])
            break
        out.append(source[position:opening])
        if source.startswith("<!--", opening):
            end = source.find("-->", opening + 4)
            position = length if end < 0 else end + 3
            continue
        closing = source.find(">", opening + 1)
        if closing < 0:
            break  # an unclosed tag: the rest is inside it
        tag = source[opening + 1:closing]
        position = closing + 1
        name_match = _TAG_NAME.match(tag)
        if name_match is None:
            continue  # <!DOCTYPE ...>, <?xml ...?> and the like
        name = name_match.group(1).lower()
        end_tag = tag.lstrip().startswith("/")
        if name in _DROPPED and not end_tag and not tag.rstrip().endswith("/"):
            end = lowered.find(f"</{name}", position)
            after = source.find(">", end) if end >= 0 else -1
            position = length if after < 0 else after + 1
        elif name in _BLOCKS:
            out.append("\n")
        elif name == "a" and not end_tag:
            href = _HREF.search(tag)
            link = next((g for g in href.groups() if g is not None), None) if href else None
        elif name == "a" and link:
            out.append(f" <{link.strip()}>")
            link = None
    return _tidy(html.unescape("".join(out)))


def _tidy(text: str) -> str:
    """Runs of white space as one space, at most one blank line in a row."""
    lines: list[str] = []
    for line in text.split("\n"):
        line = _SPACES.sub(" ", line).strip()
        if line or (lines and lines[-1]):
            lines.append(line)
    return "\n".join(lines).strip("\n")
