"""setup_ls: write the kcing entry of Logstash's `pipelines.yml`, keeping every other pipeline.

`pipeline_entry` turns settings into the entry, `merge_pipeline_entry` puts it into the existing
YAML text (both pure). The entry replaces the old kcing entry in place, so the other entries
and their comments stay as they were; only YAML too unusual to edit in place (flow style) is
written out again whole. The file is written through a rename, after a backup of the old one.
"""
from __future__ import annotations

import glob
import os
import re
import time
from pathlib import Path
from typing import List, Optional

import yaml

from kcing.errors import ConfigError

PIPELINE_ID = "kcing"
CHECKOUT_PIPELINE = Path(__file__).resolve().parents[2] / "logstash" / "pipeline" / "kcing.conf"
# Logstash reads sizes with these suffixes, lower case only (logstash-core util/byte_value.rb),
# and digits 0-9 only: re.ASCII keeps `\d` from taking other scripts' digits, which float() reads.
_SIZE = re.compile(r"^(\d+(?:\.\d+)?)\s*(b|kb?|mb?|gb?|tb?|pb?)$", re.IGNORECASE | re.ASCII)
_UNITS = {"b": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40, "p": 1 << 50}
# Logstash refuses to start when queue.max_bytes is below queue.page_capacity (default 64mb).
PAGE_CAPACITY = 64 << 20


def queue_size(text: str) -> str:
    """`text` as Logstash spells a size (e.g. "1gb"); ValueError unless at least 64mb."""
    found = _SIZE.match(str(text).strip())
    if not found:
        raise ValueError("%r is not a size such as 512mb or 1gb" % text)
    number, unit = found.group(1), found.group(2).lower()
    if float(number) * _UNITS[unit[0]] < PAGE_CAPACITY:
        raise ValueError("%r is less than queue.page_capacity (64mb), which Logstash refuses" % text)
    return number + unit


def pipeline_entry(settings, default_config: Path = CHECKOUT_PIPELINE) -> dict:
    """The kcing pipeline's settings, in the order of logstash/config/pipelines.yml."""
    path_config = settings.LS_PATH_CONFIG
    if path_config and not Path(path_config).is_absolute():
        # Logstash would resolve it against its own working directory, whatever that is.
        raise ConfigError("LS_PATH_CONFIG=%s must be an absolute path" % path_config)
    if not path_config:
        if not default_config.is_file():
            raise ConfigError("no pipeline file at %s: set LS_PATH_CONFIG" % default_config)
        path_config = str(default_config)
    entry = {
        "pipeline.id": PIPELINE_ID,
        "path.config": path_config,
        # kcing.conf relies on it: with ECS on, the http input adds fields to every document.
        "pipeline.ecs_compatibility": "disabled",
        "pipeline.batch.size": settings.LS_PIPELINE_BATCH_SIZE,
    }
    if settings.LS_NUM_WORKERS:
        entry["pipeline.workers"] = settings.LS_NUM_WORKERS
    entry["queue.type"] = settings.LS_QUEUE_TYPE
    if settings.LS_QUEUE_TYPE == "persisted":
        # Both limits apply to the persisted queue only; 0 events means no limit.
        if settings.LS_QUEUE_MAX_EVENTS:
            entry["queue.max_events"] = settings.LS_QUEUE_MAX_EVENTS
        try:
            entry["queue.max_bytes"] = queue_size(settings.LS_QUEUE_MAX_BYTES)
        except ValueError as error:
            raise ConfigError("invalid LS_QUEUE_MAX_BYTES: %s" % error) from None
    entry["dead_letter_queue.enable"] = True
    return entry


# The patterns a path.config's braces may stand for before setup_ls stops checking it.
MAX_GLOB_ALTERNATIVES = 1000


def names_no_file(path_config: str) -> bool:
    """Whether `path_config` (a file, a directory or a glob, as Logstash reads path.config) names
    no file Logstash would read on this host: it would then refuse to start the pipeline ("No
    config files found in path"). Checked only when said, since the file may be put there after
    pipelines.yml."""
    # As Logstash reads it: a directory stands for the files in it, and of what a glob matches
    # it skips the directories and the editors' backups (a name ending in ~).
    pattern = os.path.join(path_config, "*") if os.path.isdir(path_config) else path_config
    # Each group of braces multiplies the patterns: a path.config of dozens of groups is not
    # worth a check that would never end (Logstash would not read it in one life either).
    alternatives = expand_braces(pattern)
    if len(alternatives) > MAX_GLOB_ALTERNATIVES:
        return False
    return not any(os.path.isfile(path) and not path.endswith("~")
                   for alternative in alternatives
                   for path in glob.glob(_python_glob(alternative), recursive=True))


def expand_braces(pattern: str, limit: int = MAX_GLOB_ALTERNATIVES) -> List[str]:
    """The patterns `pattern` stands for once each `{a,b}` is taken apart, as Ruby's Dir.glob
    (which Logstash reads path.config with) takes it: `conf.d/{kcing,extra}.conf` names two files,
    where Python's glob looks for one named with the braces. A `{` without its `}` is itself.
    Past `limit` patterns the rest are left out (one more than `limit` are returned)."""
    depth, start, commas = 0, 0, []
    position = 0
    while position < len(pattern):
        char = pattern[position]
        if char == "\\":
            position += 2  # an escaped brace or comma is a character of the name
            continue
        if char == "{":
            if depth == 0:
                start, commas = position, []
            depth += 1
        elif char == "}" and depth:
            depth -= 1
            if depth == 0:
                cuts = [start, *commas, position]
                head, tail = pattern[:start], pattern[position + 1:]
                expanded: List[str] = []
                for left, right in zip(cuts, cuts[1:]):
                    if len(expanded) > limit:
                        break
                    expanded += expand_braces(head + pattern[left + 1:right] + tail, limit - len(expanded))
                return expanded[:limit + 1]
        elif char == "," and depth == 1:
            commas.append(position)
        position += 1
    return [pattern]


def _python_glob(pattern: str) -> str:
    """`pattern` for Python's recursive glob, reading `**` as Ruby's Dir.glob does: `**/` is any
    number of directories (none too), and a `**` that ends the pattern is `*`, where Python's would
    take every file beneath. A character escaped with `\\` is itself, as in Ruby's: Python's glob
    takes the backslash for part of the name."""
    pattern = pattern[:-2] + "*" if pattern == "**" or pattern.endswith("/**") else pattern
    return re.sub(r"\\(.)", lambda escaped: glob.escape(escaped.group(1)), pattern)


def _pipeline_id(item: dict) -> Optional[str]:
    nested = item.get("pipeline")
    return item.get("pipeline.id", nested.get("id") if isinstance(nested, dict) else None)


def _content_end(node: yaml.Node) -> int:
    """Where a node's own text ends (a block node's end mark runs on past trailing comments)."""
    if isinstance(node, yaml.MappingNode) and node.value and not node.flow_style:
        return _content_end(node.value[-1][1])
    if isinstance(node, yaml.SequenceNode) and node.value and not node.flow_style:
        return _content_end(node.value[-1])
    return node.end_mark.index


def _render(entry: dict, indent: int) -> str:
    """The entry as block YAML whose lines after the first are indented by `indent`."""
    lines = yaml.safe_dump(entry, sort_keys=False, default_flow_style=False, width=4096).splitlines()
    return ("\n" + " " * indent).join(lines)


def merge_pipeline_entry(existing_yaml_text: str, entry: dict) -> str:
    """`existing_yaml_text` with `entry` in place of the entry of the same pipeline.id.

    Raises ValueError when the text is not YAML, not a list of mappings, or names the pipeline
    twice. Without such an entry, `entry` is appended.
    """
    try:
        root = yaml.compose(existing_yaml_text)
        items = yaml.safe_load(existing_yaml_text)
    except yaml.YAMLError as error:
        raise ValueError("not valid YAML (%s)" % " ".join(str(error).split())) from None
    except RecursionError:  # PyYAML composes and builds a document recursively
        raise ValueError("not a YAML list of pipelines (nested too deeply)") from None
    items = [] if items is None else items
    if not isinstance(items, list):
        raise ValueError("not a YAML list of pipelines (found a %s)" % type(items).__name__)
    for number, item in enumerate(items, 1):
        if not isinstance(item, dict):
            raise ValueError("pipeline %d is not a mapping of settings" % number)
    positions = [index for index, item in enumerate(items) if _pipeline_id(item) == entry["pipeline.id"]]
    if len(positions) > 1:
        raise ValueError("pipeline.id %s appears %d times" % (entry["pipeline.id"], len(positions)))
    wanted: List[dict] = list(items)
    if positions:
        wanted[positions[0]] = entry
    else:
        wanted.append(entry)
    text = _edit_in_place(existing_yaml_text, root, positions[0] if positions else None, entry)
    if text is None or yaml.safe_load(text) != wanted:
        text = yaml.safe_dump(wanted, sort_keys=False, default_flow_style=False, width=4096)
    return text


def _edit_in_place(text: str, root: Optional[yaml.Node], position: Optional[int], entry: dict) -> Optional[str]:
    if root is None:
        separator = "" if not text or text.endswith("\n") else "\n"
        return text + separator + "- " + _render(entry, 2) + "\n"
    if not isinstance(root, yaml.SequenceNode) or root.flow_style:
        return None
    if position is not None:
        node = root.value[position]
        if node.flow_style:
            return None
        start, end = node.start_mark.index, _content_end(node)
        return text[:start] + _render(entry, node.start_mark.column) + text[end:]
    column = root.value[0].start_mark.column if root.value else 2
    separator = "" if text.endswith("\n") else "\n"
    return text + separator + " " * (column - 2) + "- " + _render(entry, column) + "\n"


def free_backup_path(directory: Path, when: float) -> Path:
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(when))
    path, number = directory / ("pipelines.yml.%s.bak" % stamp), 2
    while path.exists():
        path, number = directory / ("pipelines.yml.%s-%d.bak" % (stamp, number)), number + 1
    return path
