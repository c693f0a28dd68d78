"""Legacy storage paths: what a path segment from upstream may be, and the lab a file's storage
directory names. The feed takes a LAVA file's lab from there when the file names none, whatever
the source, so this is kept apart from the legacy source and its HTTP stack."""
from __future__ import annotations

import re
from typing import Optional
from urllib.parse import unquote, urlsplit

# Storage path segments come from upstream: allow what real ones contain, nothing that moves
# up a directory or starts a new URL component.
SAFE_SEGMENT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+,=:@~-]*$")
# A lab's file in a build's storage directory: `<lab>/lava-json-<board>.json`, `<lab>/boot-<board>.json`.
LAB_FILE = re.compile(r"^(?:lava-json|boot)-.+\.json$")


def lab_in_storage_path(url) -> Optional[str]:
    """The lab a LAVA file or boot report belongs to, from the directory holding it on storage
    (`<storage>/.../<lab>/lava-json-<board>.json`); None when `url` is not such a storage URL.

    A local file's directory is never taken for a lab: a copy can sit anywhere.
    """
    if not isinstance(url, str):
        return None
    try:
        parts = urlsplit(url)
    except ValueError:
        return None
    if parts.scheme not in ("http", "https"):
        return None
    path = parts.path
    segments = [unquote(segment) for segment in path.split("/")]
    if len(segments) < 3 or not LAB_FILE.match(segments[-1]):
        return None
    lab = segments[-2]
    return lab if SAFE_SEGMENT.match(lab) and ".." not in lab else None
