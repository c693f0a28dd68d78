#!/usr/bin/env python3
"""The parsing floor: CPU to decode every upstream file of a corpus and encode kcing's documents.

    python bench/floor.py MANIFEST_JSON [PASSES]

MANIFEST_JSON lists the corpus as [{"kind": "build"|"lava"|"boot", "path": FILE, "created": ISO}].
In this one process, with every file already in memory and no I/O while timed, it measures the
CPU time (`time.process_time`) of

- decoding: each file with a JSON decoder; in a LAVA file, the YAML texts (`definition`, each
  `results` suite, `log`) with libyaml's C safe loader (`yaml.CSafeLoader`, plus a constructor
  for the Decimal tags the real logs carry). The log is one flow mapping per line, nearly all of
  them plain JSON: the floor decodes each line with the JSON decoder and gives the C YAML loader
  only the lines JSON cannot read, which is the fastest exact decoding available (the whole log
  through the C YAML loader is also measured and printed, for scale);
- encoding: every document kcing makes from those files (`to_wire()`: body, @timestamp and
  @metadata, what is posted) with a JSON encoder, to UTF-8 bytes.

Each phase is timed with every JSON library installed (the standard library's C decoder and
encoder, msgspec, which kcing depends on, and orjson where present: `make bench` installs it,
as the `bench` extra), and the fastest library of each phase counts: the floor is the fastest
available.
Each is timed over three passes (or PASSES) and the fastest pass counts; `fastest_of` combines
the figures of several runs, made at different times, in the same way.

Prints one JSON line: objects, documents, decode and encode CPU seconds, and which libraries.
What kcing spends beyond this floor is its own work: fields, ids, validation, batching, ledger,
HTTP.
"""
from __future__ import annotations

import json
import sys
import time
from datetime import datetime
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from kcing.documents import documents_for  # noqa: E402
from kcing.errors import RejectedInput  # noqa: E402

_STDLIB_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))


def _stdlib_dumps(value) -> bytes:
    return _STDLIB_ENCODER.encode(value).encode("utf-8")


def json_libraries() -> dict:
    """name -> (loads, dumps) for every JSON library installed."""
    libraries = {"json": (json.loads, _stdlib_dumps)}
    try:
        import msgspec
    except ImportError:
        pass
    else:
        libraries["msgspec"] = (msgspec.json.decode, msgspec.json.Encoder().encode)
    try:
        import orjson
    except ImportError:
        pass
    else:
        libraries["orjson"] = (orjson.loads, orjson.dumps)
    return libraries


REPEATS = 3
WHOLE_LOG_SAMPLE = 50


class FloorYamlLoader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):
    """The C safe loader, reading `!!python/object/apply:decimal.Decimal [x]` as x."""


def _python_tag(loader, suffix, node):
    if isinstance(node, yaml.SequenceNode):
        arguments = loader.construct_sequence(node, deep=True)
        return arguments[0] if len(arguments) == 1 else arguments
    if isinstance(node, yaml.MappingNode):
        return loader.construct_mapping(node, deep=True)
    return loader.construct_scalar(node)


FloorYamlLoader.add_multi_constructor("tag:yaml.org,2002:python/", _python_tag)


def load_yaml(text: str):
    return yaml.load(text, Loader=FloorYamlLoader)  # noqa: S506 - a safe loader


def decode_log_by_line(text: str, loads) -> list:
    items = []
    for line in text.split("\n"):
        if not line:
            continue
        try:
            items.append(loads(line[2:]))
        except ValueError:
            items.extend(load_yaml(line) or ())
    return items


def decode_file(kind: str, content: bytes, loads=json.loads, whole_log: bool = False) -> None:
    outer = loads(content)
    if kind != "lava" or not isinstance(outer, dict):
        return
    for name in ("definition",):
        if isinstance(outer.get(name), str):
            load_yaml(outer[name])
    results = outer.get("results")
    if isinstance(results, dict):
        for text in results.values():
            if isinstance(text, str):
                load_yaml(text)
    log = outer.get("log")
    if isinstance(log, str):
        load_yaml(log) if whole_log else decode_log_by_line(log, loads)


def fastest(work, repeats: int = REPEATS) -> float:
    """The least CPU time `work` took over `repeats` passes (a floor: noise only adds)."""
    best = float("inf")
    for _ in range(repeats):
        started = time.process_time()
        work()
        best = min(best, time.process_time() - started)
    return best


def measure(manifest: list, repeats: int = REPEATS) -> dict:
    files = [(entry["kind"], Path(entry["path"]).read_bytes(), datetime.fromisoformat(entry["created"]))
             for entry in manifest]
    wires = []
    for kind, content, created in files:
        try:
            wires.extend(document.to_wire() for document in documents_for(kind, content, created))
        except RejectedInput:
            continue

    decode, encode = {}, {}
    for name, (loads, dumps) in json_libraries().items():
        decode[name] = fastest(lambda: [decode_file(kind, content, loads) for kind, content, _ in files], repeats)
        encode[name] = fastest(lambda: [dumps(wire) for wire in wires], repeats)
    # For scale only, and slow (about 100 ms a LAVA file): timed on the first LAVA files alone.
    sample = [(kind, content) for kind, content, _ in files if kind == "lava"][:WHOLE_LOG_SAMPLE]
    whole_log_decode = fastest(lambda: [decode_file(kind, content, whole_log=True) for kind, content in sample], 1)
    return _figures(len(files), len(wires), decode, encode, 1000 * whole_log_decode / max(1, len(sample)),
                    passes=repeats)


def fastest_of(measured: list) -> dict:
    """The figures of several `measure` runs over the same corpus as one: each library's fastest
    decoding and encoding of them all."""
    first = measured[0]
    decode = {name: min(each["decode_by_library"][name] for each in measured) for name in first["decode_by_library"]}
    encode = {name: min(each["encode_by_library"][name] for each in measured) for name in first["encode_by_library"]}
    whole_log = min(each["whole_log_yaml_decode_ms_per_lava_file"] for each in measured)
    return _figures(first["objects"], first["documents"], decode, encode, whole_log, runs=len(measured),
                    passes=sum(each["passes"] for each in measured))


def _figures(objects: int, documents: int, decode: dict, encode: dict, whole_log_ms: float, passes: int,
             runs: int = 1) -> dict:
    decoder, encoder = min(decode, key=decode.get), min(encode, key=encode.get)
    return {"objects": objects, "documents": documents, "decode_cpu_seconds": decode[decoder],
            "encode_cpu_seconds": encode[encoder], "decoder": decoder, "encoder": encoder,
            "decode_by_library": decode, "encode_by_library": encode,
            "whole_log_yaml_decode_ms_per_lava_file": whole_log_ms, "runs": runs, "passes": passes,
            "yaml": "libyaml CSafeLoader" if yaml.__with_libyaml__ else "pure-Python SafeLoader"}


def main() -> None:
    if len(sys.argv) not in (2, 3):
        raise SystemExit(__doc__)
    repeats = int(sys.argv[2]) if len(sys.argv) == 3 else REPEATS
    print(json.dumps(measure(json.loads(Path(sys.argv[1]).read_text()), repeats)))


if __name__ == "__main__":
    main()
