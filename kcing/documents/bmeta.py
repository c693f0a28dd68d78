"""A nested `bmeta.json` (kernelci-core, 2020-09 on; the only build file on storage from 2021-04)
-> the same fields a flat `build.json` gives.

Its sections (`build`, `environment`, `kernel`, `revision`) hold what build.json held at the top
level, under other names; `BMETA_KEYS` maps each build document field to its place (the verbose
describe was first written `revision.describe_v`, later `revision.describe_verbose`: both are
read). What only the companion files `steps.json` and `artifacts.json` say (the build log's
name, the dtb directory, modules, thread count) is left out.
"""
from __future__ import annotations

from typing import Any, Dict, Mapping

from kcing.documents.coerce import as_keyword, as_verdict
from kcing.documents.fields import BUILD
from kcing.documents.typed import READERS, typed_fields

SECTIONS = ("build", "environment", "kernel", "revision")
# The verbose describe's name in the first nested bmeta.json files kernelci-core wrote (its
# RevisionData step, late 2020), before it became `describe_verbose` (the backend's reader).
REVISION_DESCRIBE_V = "describe_v"

# Build document field <- (section, key) in bmeta.json.
BMETA_KEYS = {
    "job": ("revision", "tree"),
    "git_branch": ("revision", "branch"),
    "git_commit": ("revision", "commit"),
    "git_describe": ("revision", "describe"),
    "kernel": ("revision", "describe"),  # what the backend stored as `kernel`
    "git_describe_v": ("revision", "describe_verbose"),  # else REVISION_DESCRIBE_V
    "git_url": ("revision", "url"),
    "arch": ("environment", "arch"),
    "build_environment": ("environment", "name"),
    "compiler": ("environment", "compiler"),
    "compiler_version": ("environment", "compiler_version"),
    "compiler_version_full": ("environment", "compiler_version_full"),
    "cross_compile": ("environment", "cross_compile"),
    "defconfig": ("kernel", "defconfig"),
    "defconfig_full": ("kernel", "defconfig_full"),
    "kernel_image": ("kernel", "image"),
    "system_map": ("kernel", "system_map"),
    "text_offset": ("kernel", "text_offset"),
    "vmlinux_bss_size": ("kernel", "vmlinux_bss_size"),
    "vmlinux_data_size": ("kernel", "vmlinux_data_size"),
    "vmlinux_file_size": ("kernel", "vmlinux_file_size"),
    "vmlinux_text_size": ("kernel", "vmlinux_text_size"),
    "file_server_resource": ("kernel", "publish_path"),
    "build_time": ("build", "duration"),
}


def is_bmeta(record: Mapping[str, Any]) -> bool:
    """Whether `record` has the nested shape (any of its sections as an object)."""
    return any(isinstance(record.get(section), dict) for section in SECTIONS)


def bmeta_fields(record: Mapping[str, Any]) -> Dict[str, Any]:
    """Build document fields from a bmeta.json, typed as `fields.BUILD` declares them."""
    sections = {name: _section(record, name) for name in SECTIONS}
    fields = {name: READERS[BUILD[name]](sections[section].get(key)) for name, (section, key) in BMETA_KEYS.items()}
    fields["git_describe_v"] = fields["git_describe_v"] or as_keyword(sections["revision"].get(REVISION_DESCRIBE_V))
    fields.update(typed_fields({"build_platform": _uname(sections["environment"])}, BUILD, ("build_platform",)))
    fragments = sections["kernel"].get("fragments")
    if isinstance(fragments, list):
        names = [as_keyword(fragment) for fragment in fragments]
        fields["kconfig_fragments"] = "+".join(name for name in names if name) or None
    status = as_verdict(sections["build"].get("status"))
    fields["build_result"] = status.upper() if status else "UNKNOWN"
    return fields


def missing_names(fields: Mapping[str, Any], required) -> list:
    """Where in bmeta.json each missing required field should have been (`revision.tree`)."""
    return ["%s.%s" % BMETA_KEYS[name] for name in required if not fields.get(name)]


def _section(record: Mapping[str, Any], name: str) -> Mapping[str, Any]:
    section = record.get(name)
    return section if isinstance(section, dict) else {}


def _uname(environment: Mapping[str, Any]) -> Any:
    platform = environment.get("platform")
    return platform.get("uname") if isinstance(platform, dict) else None
