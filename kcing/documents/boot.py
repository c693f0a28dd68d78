"""A `boot-<board>.json` report from a lab without LAVA (until 2020-07) -> one `boot` document.

A LAVA lab's boot from before the backend stored LAVA callbacks (2017-12-21) has only its boot
report too: the legacy source fetches that for the boot's lava object, and `documents_for`
reads it here (`is_boot_report`), to the same document a boot report gives.

Needed: `lab_name`, `board`, `job`, `kernel`, `arch` and a defconfig (`defconfig_full`, else
`defconfig`), plus the listing date, since the report carries no date of its own.

Labs posted numbers and booleans as strings ("boot_time": "4.30", "fastboot": "false",
"dtb_append": "False"); they are read as numbers and booleans. `boot_result` is lowercased to
match the documents made from LAVA callbacks (`unknown` when the report has none).
`fastboot` is kept, as a boolean: the original kcing dropped it because its mixed
string/boolean values broke the index mapping, which reading it as a boolean avoids.
`boot_failure` says who failed as on LAVA boots (`lava_results.boot_outcome`): `kernel` for a
`fail` (the lab reported the kernel did not boot, which the backend counted as a boot failure
like a LAVA job's), `infrastructure` for `offline` (the lab had the board offline: the kernel
was never tried) and for an `unknown` the report says (only the backend wrote UNKNOWN, in a LAVA
lab's report, for a job LAVA canceled or that failed for its lab's reason: the verdict the job's
lava-json file gives); absent otherwise (`untried`, or no result at all). `git_describe` falls
back to `kernel`, as the original did; `boot_retries` is read from `retries` when the report has
no `boot_retries` (real lava-ci reports wrote `retries`), and the lab from the listing item or the
storage path when the report names none. Other fields (`metadata`, `qemu`, ...) are left out.
"""
from __future__ import annotations

from datetime import datetime
from typing import Any, List, Mapping, Optional

from kcing.documents.build import PATH_FIELDS
from kcing.documents.coerce import as_int, as_keyword, as_verdict
from kcing.documents.fields import BOOT
from kcing.documents.lava_results import INFRASTRUCTURE_FAILURE, KERNEL_FAILURE
from kcing.documents.identity import document_id, index_name, iso_timestamp
from kcing.documents.typed import listing_date, typed_fields, without_missing
from kcing.errors import RejectedInput
from kcing.records import Document

REPORT_FIELDS = (
    "lab_name", "board", "board_instance", "device_type", "mach", "job", "git_branch", "kernel",
    "git_describe", "git_commit", "git_url", "arch", "defconfig", "defconfig_full",
    "build_environment", "file_server_resource", "boot_time", "boot_retries", "boot_warnings",
    "boot_result_description", "boot_log", "boot_log_html", "dtb", "dtb_addr", "dtb_append",
    "endian", "fastboot", "initrd", "initrd_addr", "kernel_image", "loadaddr", "version",
)
REQUIRED = ("lab_name", "board", "job", "kernel", "arch", "defconfig_full")
# Keys only a boot report has at its top level: a LAVA callback names its board and outcome in
# its job `definition` and `results`, which a boot report never has.
REPORT_ONLY_KEYS = ("board", "boot_result")
# Who failed, by the report's boot result (upstream.md §1.8: labs posted PASS, FAIL, OFFLINE,
# UNTRIED; the backend wrote UNKNOWN into a LAVA lab's report for a canceled job or one whose
# `job` step failed with `error_type: Infrastructure`, never for the kernel).
REPORT_FAILURES = {"fail": KERNEL_FAILURE, "offline": INFRASTRUCTURE_FAILURE, "unknown": INFRASTRUCTURE_FAILURE}


def is_boot_report(record: Mapping[str, Any]) -> bool:
    """Whether `record` is a boot report rather than a LAVA callback (which always carries its
    job `definition`, even with LAVA's smallest notify dataset)."""
    return "definition" not in record and any(key in record for key in REPORT_ONLY_KEYS)


def boot_report_documents(report: Mapping[str, Any], created: Optional[datetime],
                          listed_lab: Optional[str] = None) -> List[Document]:
    """`listed_lab` (from the listing item or the storage path) names the lab when the report does not."""
    fields = typed_fields(report, BOOT, REPORT_FIELDS)
    fields["lab_name"] = fields["lab_name"] or as_keyword(listed_lab)
    reported = as_verdict(report.get("boot_result"))
    fields["boot_result"] = reported or "unknown"
    # Who failed is the report's to say: a report without a result names nobody.
    fields["boot_failure"] = REPORT_FAILURES.get(reported) if reported else None
    fields["git_describe"] = fields["git_describe"] or fields["kernel"]
    fields["defconfig_full"] = fields["defconfig_full"] or fields["defconfig"]
    fields["loadaddr"] = fields["loadaddr"] or as_keyword(report.get("load_addr"))
    # lava-ci and the labs' own scripts wrote `retries`; the backend's schema says `boot_retries`.
    if fields["boot_retries"] is None:
        fields["boot_retries"] = as_int(report.get("retries"))
    missing = [name for name in REQUIRED if not fields[name]]
    if missing:
        raise RejectedInput("boot report lacks %s" % ", ".join(missing))
    when = listing_date(created, "boot report")
    return [Document(
        "boot",
        index=index_name("boot", when),
        doc_id=document_id("boot", *_identity(fields)),
        timestamp=iso_timestamp(when),
        body=without_missing(fields),
    )]


def _identity(fields: Mapping[str, Any]) -> tuple:
    """The report's storage path: lab, board and the build's directory."""
    resource = fields["file_server_resource"]
    build = (resource,) if resource else tuple(fields[name] or "" for name in PATH_FIELDS)
    return (fields["lab_name"], fields["board"]) + build
