"""The `kernelci_api` sub-object: what a KernelCI API node says that no legacy field holds.

Also the small readers nodes.py shares: a node's id, its `data`, lists of keywords, file names.
"""
from __future__ import annotations

from typing import Any, List, Mapping, Optional
from urllib.parse import unquote, urlsplit

from kcing.documents.coerce import as_bool, as_date, as_int, as_keyword, as_text
from kcing.documents.identity import iso_timestamp
from kcing.objectid import node_id

# kernelci_api field <- artifact name (the artifact names are the API's own).
ARTIFACT_URL_FIELDS = {
    "build_log": "build_log_url",
    "_config": "config_url",
    "kernel": "kernel_url",
    "modules": "modules_url",
    "metadata": "metadata_url",
    "tarball": "tarball_url",
    "lava_log": "lava_log_url",
    "lava_logs": "lava_logs_url",
    "callback_data": "callback_data_url",
    "test_log": "test_log_url",
}
# The node's main log, the first present (as KCIDB's log_url picks it).
LOG_ARTIFACTS = ("build_log", "lava_log", "test_log")
# What each log-line document repeats of its job: enough to find the job, not the whole node
# (a job has thousands of lines; the legacy fields already name the kernel, board and lab).
LOG_API_FIELDS = ("node_id", "kind", "name")
NODE_KEYWORDS = ("kind", "name", "group", "state", "result", "owner", "submitter", "treeid")
NODE_DATES = ("created", "updated", "timeout", "holdoff")
DATA_KEYWORDS = ("runtime", "platform", "device", "job_id", "job_context", "kernel_type", "error_code",
                 "test_source", "regression")


EMPTY: Mapping[str, Any] = {}


def mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, dict) else {}


def data_of(node: Mapping[str, Any]) -> Mapping[str, Any]:
    return mapping(node.get("data"))


def keywords(value: Any) -> Optional[List[str]]:
    """A list of keywords from a list (items that are not keywords are left out), else None."""
    if not isinstance(value, list):
        return None
    return [keyword for keyword in (as_keyword(item) for item in value) if keyword is not None]


def file_name(url: Any) -> Optional[str]:
    """The last path segment of an artifact URL (`build.log`), as legacy documents named files."""
    if not isinstance(url, str):
        return None
    try:
        path = urlsplit(url).path
    except ValueError:
        return None
    return as_keyword(unquote(path.rstrip("/").rsplit("/", 1)[-1]))


def kernelci_api_fields(node: Mapping[str, Any], envelope: Mapping[str, Any],
                        revision: Optional[Mapping[str, Any]] = None) -> dict:
    """The `kernelci_api` sub-object of every document made from `node` (fields.KERNELCI_API).

    `revision` is the kernel revision the documents name, when it is not `data.kernel_revision`
    (a regression's failing revision)."""
    data = data_of(node)
    if revision is None:
        revision = mapping(data.get("kernel_revision"))
    fields = {"node_id": node_id(node), "parent": as_keyword(node.get("parent"))}
    fields.update({name: as_keyword(node.get(name)) for name in NODE_KEYWORDS})
    fields.update({name: _iso(node.get(name)) for name in NODE_DATES})
    fields.update({name: as_keyword(data.get(name)) for name in DATA_KEYWORDS})
    fields.update({
        "path": keywords(node.get("path")),
        "test_path": test_path(node),
        "user_groups": keywords(node.get("user_groups")),
        "retry_counter": as_int(node.get("retry_counter")),
        "processed_by_kcidb_bridge": as_bool(node.get("processed_by_kcidb_bridge")),
        # "job-filter" is how one real node spells it.
        "jobfilter": keywords(node.get("jobfilter", node.get("job-filter"))),
        "platform_filter": keywords(node.get("platform_filter")),
        "fragments": keywords(data.get("fragments")),
        "architecture_filter": keywords(data.get("architecture_filter")),
        "error_msg": as_text(data.get("error_msg")),
        "test_revision": revision_name(data.get("test_revision")),
        "kernel_version": _kernel_version(revision.get("version")),
        "patchset": as_keyword(revision.get("patchset")),
        "commit_tags": keywords(revision.get("commit_tags")),
        "commit_message": as_text(revision.get("commit_message")),
        "tip_of_branch": as_bool(revision.get("tip_of_branch")),
        "viewer_url": as_keyword(envelope.get("viewer_url")),
    })
    fields.update(_artifact_fields(mapping(node.get("artifacts"))))
    errors = mapping(envelope.get("artifact_errors"))
    fields["artifact_errors"] = ["%s: %s" % (name, as_text(why)) for name, why in sorted(errors.items())]
    return {name: value for name, value in fields.items() if value is not None and value != []}


def revision_name(revision: Any) -> Optional[str]:
    """The revision of the tests a node ran: KernelCI's models make `test_revision` a revision
    object, as `kernel_revision` (tree, url, branch, commit, describe), whose `commit` names it;
    a plain value names it itself."""
    if isinstance(revision, dict):
        return as_keyword(revision.get("commit")) or as_keyword(revision.get("describe"))
    return as_keyword(revision)


def _artifact_fields(artifacts: Mapping[str, Any]) -> dict:
    urls = {name: url for name, url in artifacts.items() if isinstance(url, str) and url}
    fields = {field: urls.get(name) for name, field in ARTIFACT_URL_FIELDS.items()}
    fields["artifacts"] = sorted(urls)
    fields["log_url"] = next((urls[name] for name in LOG_ARTIFACTS if name in urls), None)
    return fields


def test_path(node: Mapping[str, Any]) -> Optional[str]:
    """The node's path from its job down (`baseline-arm64.setup.login`); None above the jobs."""
    path, group = keywords(node.get("path")), as_keyword(node.get("group"))
    if not path or group is None or group not in path:
        return None
    return ".".join(path[path.index(group):])


def _kernel_version(version: Any) -> Optional[str]:
    # Numbers are ints today and were strings before 2023: both read the same. Anything else
    # (a boolean, a word, "-rc3") names no version: its text would make one up ("true.false").
    version = mapping(version)
    parts = [_version_number(version.get(name)) for name in ("version", "patchlevel", "sublevel")]
    if parts[0] is None or parts[1] is None:
        return None
    return ".".join(str(part) for part in parts if part is not None)


def _version_number(value: Any) -> Optional[int]:
    number = as_int(value)  # 6, "6" and 6.0 alike; never a boolean
    return number if number is not None and number >= 0 else None


def _iso(value: Any) -> Optional[str]:
    when = as_date(value)
    return iso_timestamp(when) if when is not None else None
