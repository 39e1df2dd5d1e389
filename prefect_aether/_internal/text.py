"""Untrusted text made safe to show: sanitized one-line previews, markdown-inert text
and table cells (private). Goals, ids, literals, step outputs and errors pass through
here before they reach a log, an event, the store, a prompt or the Prefect UI.
"""

from __future__ import annotations

import re
from typing import Any

from prefect_aether._internal.canonical import canonical_json

_ANSI = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07]*\x07?")
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u200b-\u200f\u2028-\u202e\u2060-\u2064\ufeff]")
# The same characters once JSON has escaped them (`"\x1b[31m"` becomes `\u001b[31m`).
_JSON_ANSI = re.compile(
    r"\\u001[bB]\[[0-?]*[ -/]*[@-~]|\\u001[bB]\][^\\]*(?:\\u0007|\\u001[bB]\\\\)?"
)
_JSON_CONTROL = re.compile(r"\\u00(?:0[0-8bBcCeEfF]|1[0-9a-fA-F]|7[fF])")
PREVIEW_CHARS = 200


def sanitize(text: str, limit: int = PREVIEW_CHARS) -> str:
    """Strip ANSI escapes and control/invisible characters; truncate to `limit` characters.

    >>> sanitize("\\x1b[31mred\\x1b[0m\\x07 text", limit=6)
    'red t…'
    """
    clean = _CONTROL.sub("", _ANSI.sub("", text)).replace("\n", " ").replace("\t", " ")
    return clean if len(clean) <= limit else clean[: limit - 1] + "…"


def preview(value: Any, limit: int = PREVIEW_CHARS) -> str:
    """A short, sanitized one-line preview of any value (JSON when it can be).

    >>> preview({"msg": "\x1b[31mred\x1b[0m\x07!"})
    '{"msg":"red!"}'
    """
    try:
        text = canonical_json(value)
        text = _JSON_CONTROL.sub("", _JSON_ANSI.sub("", text))
    except (TypeError, ValueError):
        text = repr(value)
    return sanitize(text, limit)


# Every ASCII punctuation mark markdown may read (CommonMark lets all of them be
# escaped); ":", "/" and "@" too, so no autolinker finds a URL or an address.
_MARKDOWN_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+\-.!|~>:/@=$%^'\"])")
# After escaping: where a scheme's "://", a "www." or an e-mail's "@" begins.
_AUTOLINK = re.compile(r"(\\:\\/\\/|(?<=www)\\\.|\\@)", re.IGNORECASE)


def inert(text: str, limit: int = PREVIEW_CHARS) -> str:
    """Untrusted text made inert for markdown and HTML: sanitized (`sanitize`), `&`,
    `<` and `>` as entities, every markdown punctuation mark backslash-escaped, so it
    can never open a tag, a link, an image, a code span or a table cell. Renderers that
    turn URLs, `www.` names and e-mail addresses in plain text into links (GitHub's
    autolink literals, as Prefect's new UI does after escapes are read) find none: a
    zero-width space splits each of them.

    >>> print(inert("<b>**hi**</b> [x](http://e) `y`|"))
    &lt;b&gt;\\*\\*hi\\*\\*&lt;\\/b&gt; \\[x\\]\\(http\u200b\\:\\/\\/e\\) \\`y\\`\\|
    """
    clean = sanitize(text, limit).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return _AUTOLINK.sub("\u200b\\1", _MARKDOWN_SPECIAL.sub(r"\\\1", clean))


# Where a table cell's text could start a tag, an autolink, a link or an image: `<`,
# "](", and the autolink literals (a scheme's "://", "www.", an e-mail's "@").
_CELL_BREAKS = re.compile(r"(?<=<)|(?<=\])(?=\()|(?=://)|(?<=www)(?=\.)|(?=@)", re.IGNORECASE)


def cell(text: str, limit: int = PREVIEW_CHARS) -> str:
    """Untrusted text for a table artifact cell: sanitized, and inert where Prefect's
    classic UI reads the cell as markdown, yet plain to read where the new UI shows it
    as text: a zero-width space breaks every tag, link, image and autolink.

    >>> cell("[x](http://e) <img src=y>") == "[x]\u200b(http\u200b://e) <\u200bimg src=y>"
    True
    """
    return _CELL_BREAKS.sub("\u200b", sanitize(text, limit))
