"""JSON as its other readers take it: Python's json reads NaN, Infinity and -Infinity, which
RFC 8259 and JavaScript's JSON.parse (Kibana's), Go's and serde's decoders refuse."""
from __future__ import annotations


def no_constants(constant: str):
    """For `json.loads(text, parse_constant=no_constants)`: a ValueError, as for any other text
    that is no JSON."""
    raise ValueError("%s is not a JSON value" % constant)
