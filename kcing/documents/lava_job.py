"""What a LAVA callback says about its job: the kernel and board it ran (from the `definition`
YAML's `metadata:` mapping), the lab, the LAVA job id and the job's date.
"""
from __future__ import annotations

import re
from datetime import datetime
from typing import Any, Mapping, Optional
from urllib.parse import parse_qs, urlsplit

from kcing.documents import yamlsafe
from kcing.documents.coerce import as_date, as_int, as_keyword, as_verdict
from kcing.documents.identity import iso_timestamp
from kcing.errors import RejectedInput, shown

# Document field <- key of the definition's `metadata:` mapping (upstream.md §1.9.3).
METADATA_KEYS = {
    "job": "kernel.tree",
    "git_branch": "git.branch",
    "kernel": "kernel.version",
    "git_describe": "git.describe",
    "git_commit": "git.commit",
    "git_url": "git.url",
    "arch": "job.arch",
    "build_environment": "job.build_environment",
    "board": "device.type",
    "mach": "platform.mach",
    "endian": "kernel.endian",
    "platform_name": "platform.name",  # dropped from job metadata in 2020-09
    "file_server_resource": "job.file_server_resource",
    "plan": "test.plan",
}
# Only on the boot document.
BOOT_METADATA_KEYS = {
    "plan_variant": "test.plan_variant",
    "dtb": "platform.dtb",
    "kernel_image": "job.kernel_image",
    "initrd": "job.initrd_url",
}
REQUIRED = ("job", "kernel", "arch", "board")
STATUS_NAMES = {0: "submitted", 1: "running", 2: "complete", 3: "incomplete", 4: "canceled", 5: "canceling"}
# LAVA's job health (2018.1 on), beside the legacy `status` it still sends: 0 is "Unknown".
HEALTH_NAMES = {1: "complete", 2: "incomplete", 3: "canceled"}
# The file's own times, most telling first; the listing date is the last resort.
DATE_KEYS = ("end_time", "start_time", "submit_time")


def lava_job_id(callback: Mapping[str, Any]) -> int:
    value = callback.get("id")
    job_id = as_int(value)
    if job_id is None:
        raise RejectedInput(_job_id_problem(value))
    return job_id


# A whole number written as text: the digits 0-9 after one sign at most. "--5" is none, though
# lstrip("+-") took it for digits and called it beyond a 64-bit integer.
_WHOLE_NUMBER = re.compile(r"\s*[+-]?[0-9]+\s*", re.ASCII)


def _job_id_problem(value: Any) -> str:
    """Why `value` is no job id a document can hold, quoting it: a whole number beyond the
    64-bit integers of `lava_job_id` is one, and saying it has none would mislead."""
    if value is None:
        return "LAVA callback has no integer job id"
    whole = isinstance(value, int) and not isinstance(value, bool)
    if whole or (isinstance(value, str) and _WHOLE_NUMBER.fullmatch(value)):
        return "LAVA callback's job id %s is beyond a 64-bit integer" % shown(value)
    return "LAVA callback has no integer job id: %s" % shown(value)


def read_definition(callback: Mapping[str, Any], job_id: int) -> Mapping[str, Any]:
    """The job definition as a mapping, with a `metadata` mapping."""
    text = callback.get("definition")
    if not isinstance(text, str):
        raise RejectedInput("LAVA job %d has no definition text" % job_id)
    definition = yamlsafe.load(text, "definition")
    if not isinstance(definition, dict) or not isinstance(definition.get("metadata"), dict):
        raise RejectedInput("LAVA job %d: definition has no metadata mapping" % job_id)
    return definition


def job_fields(callback: Mapping[str, Any], definition: Mapping[str, Any], job_id: int,
               listed_lab: Optional[str] = None) -> dict:
    """Fields shared by every document of the job (before the boot outcome is known).

    The lab is the file's own `lab_name`, else the one its notify URL names, else `listed_lab`
    (from the listing item or the storage path). It is part of the documents' identity: LAVA job
    ids are only unique within a lab, so a file that names no lab at all is refused rather than
    given an empty one that another lab's job of the same id and board would overwrite.
    """
    metadata = definition["metadata"]
    fields = {name: as_keyword(metadata.get(key)) for name, key in METADATA_KEYS.items()}
    fields["board"] = fields["board"] or as_keyword(definition.get("device_type"))
    fields["git_describe"] = fields["git_describe"] or fields["kernel"]
    fields.update(_defconfigs(metadata))
    fields["board_instance"] = as_keyword(callback.get("actual_device_id"))
    fields["lab_name"] = (as_keyword(callback.get("lab_name")) or _lab_from_notify_url(definition)
                          or as_keyword(listed_lab))
    fields["lava_job_id"] = job_id
    missing = [name for name in REQUIRED if fields[name] is None]
    if missing:
        raise RejectedInput("LAVA job %d: definition metadata lacks %s" % (job_id, ", ".join(missing)))
    if fields["lab_name"] is None:
        raise RejectedInput("LAVA job %d names no lab: no lab_name, no lab_name= in its notify URL, and none "
                            "from the listing or the storage path" % job_id)
    return fields


def _defconfigs(metadata: Mapping[str, Any]) -> dict:
    # 2020: kernel.defconfig is the base name, kernel.defconfig_full the full one.
    # 2019: kernel.defconfig is the full name, kernel.defconfig_base the base one.
    full = as_keyword(metadata.get("kernel.defconfig_full"))
    named = as_keyword(metadata.get("kernel.defconfig"))
    base = as_keyword(metadata.get("kernel.defconfig_base"))
    if full is None:
        full = named
        named = base or (named.split("+")[0] if named else None)
    return {"defconfig": base or named, "defconfig_full": full}


def _lab_from_notify_url(definition: Mapping[str, Any]) -> Optional[str]:
    """The lab the callback was addressed to: `?lab_name=` in `notify.callback.url`, or in the
    URL of the first of `notify.callbacks` (LAVA's list of callbacks) that names one.

    The raw callback body has no `lab_name` (the backend added it when storing the file, from
    this very query parameter).
    """
    notify = definition.get("notify")
    if not isinstance(notify, dict):
        return None
    listed = notify.get("callbacks")
    callbacks = [notify.get("callback")] + (listed if isinstance(listed, list) else [])
    return next((lab for lab in map(_lab_of_callback, callbacks) if lab is not None), None)


def _lab_of_callback(callback: Any) -> Optional[str]:
    url = callback.get("url") if isinstance(callback, dict) else None
    if not isinstance(url, str):
        return None
    try:
        values = parse_qs(urlsplit(url).query).get("lab_name", [])
    except ValueError:
        return None
    return as_keyword(values[0]) if values else None


def boot_only_fields(callback: Mapping[str, Any], definition: Mapping[str, Any]) -> dict:
    metadata = definition["metadata"]
    fields = {name: as_keyword(metadata.get(key)) for name, key in BOOT_METADATA_KEYS.items()}
    fields.update({
        "device_type": as_keyword(definition.get("device_type")),
        "job_status": _status_name(callback),
        "lava_job_name": as_keyword(callback.get("description")),
        "priority": as_int(callback.get("priority")),
        "boot_log_html": as_keyword(callback.get("boot_log_html")),
        "version": as_keyword(callback.get("version")),
    })
    for key in DATE_KEYS:
        when = as_date(callback.get(key))
        fields[key] = iso_timestamp(when) if when is not None else None
    return fields


def _status_name(callback: Mapping[str, Any]) -> Optional[str]:
    """The job's status as KernelCI read it: the number `status` (kernelci-backend and
    kernelci-core map it, never `status_string`, to the job's result), else its text, else the
    job's health, which newer LAVA sends as well (`health_string` "Incomplete", `health` 2)."""
    name = STATUS_NAMES.get(as_int(callback.get("status")))
    if name is not None:
        return name
    name = as_verdict(callback.get("status_string"))
    if name is not None:
        return name
    health = as_verdict(callback.get("health_string"))
    if health in HEALTH_NAMES.values():
        return health
    return HEALTH_NAMES.get(as_int(callback.get("health")))


def job_date(callback: Mapping[str, Any], created: Optional[datetime], job_id: int) -> datetime:
    """The job's own date (end, start, then submit time), else the listing date."""
    for key in DATE_KEYS:
        when = as_date(callback.get(key))
        if when is not None:
            return when
    when = as_date(created) if created is not None else None
    if when is None:
        # Said as a build's or a boot report's is (typed.listing_date): a user of --lavas, who
        # lists nothing, learns that --date gives one.
        raise RejectedInput("no date: LAVA job %d has no end/start/submit time, and no usable date was given (the "
                            "listing's date, the samples manifest's, or --date for local files)" % job_id)
    return when
