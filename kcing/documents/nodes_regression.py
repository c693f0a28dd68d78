"""A KernelCI API `regression` node -> one `regression` document.

KernelCI's regression tracker makes a regression node when a run of a test (or job, or build)
fails after the previous run of the same test, tree, branch, configuration and platform passed.
It keeps the node: later runs are appended to `data.node_sequence`, and its `result` turns from
`fail` (the regression is active) to `pass` once the test passes again. Its document therefore
keeps one id (from the node id) and is overwritten with each new version.

The node names its runs by id only. The source adds what the document needs of them to the
envelope (sources/api_related.py): `fail_node` (the first failing run: its lab, device, error),
`fail_job_node` (the job it ran in: the LAVA job id), `pass_node` (the last passing run: its
kernel revision) and `viewer_urls` (links to both). Without them the document still holds what
the regression node says itself. What the tracker copied from the failing run (its kernel
revision and configuration) is read from that run when the regression node lacks it, as nodes
moved from the 2023 `regression` collection do (their `data` holds only the two runs' ids).
"""
from __future__ import annotations

from typing import Any, Mapping, Optional

from kcing.documents import nodes, nodes_api
from kcing.documents.coerce import as_date, as_keyword, as_text, as_verdict
from kcing.documents.identity import iso_timestamp

# The failing kernel revision, as the regression data model spelled it over time: today's name,
# the name one 2024 migration wrote, and the name of the first regression trackers.
REVISION_KEYS = ("failed_kernel_revision", "kernel_revision", "failed_kernel_version")
# The configuration the regression node copies from its failing run.
CONFIGURATION_KEYS = ("arch", "defconfig", "config_full", "compiler")
# Regression `result`: the test still fails, or passed again since.
STATUSES = {"fail": "active", "pass": "inactive"}


def regression_fields(node: Mapping[str, Any], envelope: Mapping[str, Any]) -> dict:
    """The `regression` document fields (fields.REGRESSION) of a regression node and its runs."""
    data = nodes_api.data_of(node)
    fail = nodes_api.mapping(envelope.get("fail_node"))
    fail_data = nodes_api.data_of(fail)
    job_data = nodes_api.data_of(nodes_api.mapping(envelope.get("fail_job_node")))
    passed = nodes_api.mapping(envelope.get("pass_node"))
    pass_revision = nodes_api.mapping(nodes_api.data_of(passed).get("kernel_revision"))
    links = nodes_api.mapping(envelope.get("viewer_urls"))
    sequence = nodes_api.keywords(data.get("node_sequence"))

    def first(name: str, *sources: Mapping[str, Any]) -> Optional[str]:
        return next((value for value in (as_keyword(source.get(name)) for source in sources) if value), None)

    # The error as one node gives it: a code from the regression node and a message from its
    # failing run may be about two different failures.
    erring = next((source for source in (data, fail_data)
                   if as_keyword(source.get("error_code")) or as_text(source.get("error_msg"))), {})
    # What the tracker copied from the failing run (Regression.create_regression), else the run's own.
    own = {name: data.get(name) for name in CONFIGURATION_KEYS}
    failing = dict({name: fail_data.get(name) for name in CONFIGURATION_KEYS},
                   **{name: value for name, value in own.items() if as_keyword(value)})
    failing["kernel_revision"] = failed_revision(data) or nodes_api.mapping(fail_data.get("kernel_revision"))
    fields = nodes.revision_fields(failing)
    fields.update({
        "board": first("platform", data, fail_data),
        "board_instance": first("device", data, fail_data, job_data),
        "lab_name": first("runtime", fail_data, job_data),
        "lava_job_id": nodes.lava_job_number(first("job_id", fail_data, job_data)),
        "plan": as_keyword(node.get("group")),
        "name": as_keyword(node.get("name")),
        "test_path": nodes_api.test_path(node),
        "status": STATUSES.get(as_verdict(node.get("result")) or "", "unknown"),
        "error_type": as_keyword(erring.get("error_code")),
        "error_msg": as_text(erring.get("error_msg")),
        "fail_node": _node_id(data.get("fail_node")),
        "pass_node": _node_id(data.get("pass_node")),
        "fail_node_url": _link(links.get("fail_node")),
        "pass_node_url": _link(links.get("pass_node")),
        "pass_git_commit": as_keyword(pass_revision.get("commit")),
        "pass_git_describe": as_keyword(pass_revision.get("describe")),
        "pass_kernel": as_keyword(pass_revision.get("describe")),
        "pass_time": _iso(passed.get("created")),
        "runs_since": len(sequence) if sequence is not None else None,
        "node_sequence": sequence or None,
    })
    return fields


def failed_revision(data: Mapping[str, Any]) -> Mapping[str, Any]:
    """The kernel revision of the first failing run, whichever name the node gives it (empty
    when it gives none)."""
    return next((data[key] for key in REVISION_KEYS if isinstance(data.get(key), dict) and data[key]), {})


def _link(value: Any) -> Optional[str]:
    # Kibana shows these as links: only web addresses qualify.
    return as_keyword(value) if isinstance(value, str) and value.startswith(("https://", "http://")) else None


def _node_id(value: Any) -> Optional[str]:
    return nodes_api.node_id({"id": value})


def _iso(value: Any) -> Optional[str]:
    when = as_date(value)
    return iso_timestamp(when) if when is not None else None
