"""Reading upstream listings: the ids in them."""
from __future__ import annotations

import string


def is_object_id(value) -> bool:
    """A MongoDB ObjectId as text: 24 hexadecimal digits and nothing more. No regular expression
    (`$` would let a line end through), as it runs for every listed item."""
    return isinstance(value, str) and len(value) == 24 and not value.strip(string.hexdigits)
