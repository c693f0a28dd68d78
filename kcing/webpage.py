"""What an HTML page answered in place of an API's answer is, in a few words: a proxy's or a
plain web server's error or login page before Elasticsearch, Kibana or Logstash, which never
answer their APIs with one. Its markup, flattened into an error line, would bury the one thing
it says."""
from __future__ import annotations

import re
from typing import Optional

# One optional comment matches what any number of them does (see sources/api.py's _WEB_PAGE),
# without trying every way of cutting the text into comments, which took time exponential in them.
_HTML_START = re.compile(r"\s*(?:<!--.*?-->\s*)?<(?:!doctype\s+html|html|head|body)\b", re.IGNORECASE | re.DOTALL)
# A page's title, found by three scans (`_title`): the expression `<title[^>]*>(.*?)</title>`
# scanned to the end from each `<title` when none was closed, in time quadratic in them.
_TITLE_OPEN = re.compile(r"<title", re.IGNORECASE)
_TITLE_CLOSE = re.compile(r"</title>", re.IGNORECASE)


def html_page(text: str) -> Optional[str]:
    """`an HTML page "<its title>"` when `text` is an HTML page, else None."""
    title = page_title(text)
    if title is None:
        return None
    return 'an HTML page "%s"' % title if title else "an HTML page"


def page_title(text: str) -> Optional[str]:
    """The title of the HTML page `text`, on one line: "" when it has none, None when `text` is
    no HTML page."""
    if not _HTML_START.match(text):
        return None
    return " ".join(_title(text).split())


def _title(text: str) -> str:
    """What `<title[^>]*>(.*?)</title>` finds first in `text`, or "": the first `<title`, the first
    `>` after it and the first `</title>` after that. When those are missing, no later `<title`
    has them either."""
    opening = _TITLE_OPEN.search(text)
    if opening is None:
        return ""
    start = text.find(">", opening.end())
    closing = _TITLE_CLOSE.search(text, start + 1) if start >= 0 else None
    return text[start + 1:closing.start()] if closing is not None else ""
