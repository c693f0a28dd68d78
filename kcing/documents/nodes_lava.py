"""A lab job's LAVA callback (its `callback_data` artifact) -> what it adds to the job's documents.

The callback has the shape of a legacy lava-json file without the backend's extra keys
(upstream.md §2.7), so the legacy readers do the work: the boot outcome and boot time from the
`lava` suite's login step, the job's status and times, bootloader addresses, and the log lines.
Its definition's `metadata:` need not follow the legacy keys: the node already names the kernel
and the board. An unreadable part is reported as a problem instead of refusing the node.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Optional

from kcing.documents import lava_job, lava_results, yamlsafe
from kcing.documents.coerce import as_int, as_keyword
from kcing.documents.lava import read_log
from kcing.documents.lava_log import LogText
from kcing.errors import RejectedInput

__all__ = ["Callback", "read_callback"]


@dataclass(frozen=True)
class Callback:
    """Boot document fields and the log from one callback, or why they are missing."""

    boot_fields: Mapping[str, Any] = field(default_factory=dict)
    log: LogText = field(default_factory=lambda: LogText.of_items([]))
    problem: Optional[str] = None


def read_callback(text: Any) -> Callback:
    """Read the callback JSON `text`; None (not fetched) gives an empty Callback."""
    if text is None:
        return Callback()
    if not isinstance(text, str):
        return Callback(problem="not text")
    try:
        callback = _json_object(text)
        boot_fields = _boot_fields(callback)
    except RejectedInput as error:
        return Callback(problem=str(error))
    try:
        log = read_log(callback.get("log"))
    except RejectedInput as error:
        return Callback(boot_fields, problem="log: %s" % error)
    return Callback(boot_fields, log)


def _json_object(text: str) -> Mapping[str, Any]:
    # Imported here because the package imports this module while it initialises.
    from kcing.documents import json_object

    return json_object(text.encode("utf-8", "surrogatepass"))


def _boot_fields(callback: Mapping[str, Any]) -> dict:
    fields = lava_job.boot_only_fields(callback, _definition(callback))
    lava_suite = lava_results.read_suites(callback.get("results")).get("lava", [])
    fields.update(lava_results.boot_outcome(lava_suite, fields["job_status"]))
    fields.update(lava_results.bootloader_addresses(lava_suite))
    fields["board_instance"] = as_keyword(callback.get("actual_device_id"))
    fields["lava_job_id"] = as_int(callback.get("id"))
    return fields


def _definition(callback: Mapping[str, Any]) -> dict:
    """The job definition as a mapping with a `metadata` mapping, empty where it has none."""
    text = callback.get("definition")
    definition: Any = {}
    if isinstance(text, str):
        try:
            definition = yamlsafe.load(text, "definition")
        except RejectedInput:
            definition = {}
    definition = dict(definition) if isinstance(definition, dict) else {}
    if not isinstance(definition.get("metadata"), dict):
        definition["metadata"] = {}
    return definition
