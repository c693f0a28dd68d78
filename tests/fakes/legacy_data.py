"""Hand-made legacy KernelCI listing items and storage files, shaped as upstream.md §1.3-1.9 shows.

`small_corpus(today)` is the built-in corpus used when `samples/` is absent: a few builds and
boots around `today`, with the pitfalls a crawler must survive (a `+` in a path, a boot with a
null `file_server_resource`, an item outside `date_range=2`, a non-LAVA lab).
`synthetic_corpus(...)` makes thousands of objects for benchmarks without holding their files
in memory, in the real shapes: results as block YAML, log lines as flow mappings, Decimal tags.
"""
from __future__ import annotations

import hashlib
import json
from datetime import date, datetime, time, timedelta, timezone
from functools import lru_cache
from typing import Any, Dict, Optional

from tests.fakes.legacy_corpus import LegacyCorpus

NON_LAVA_LAB = "lab-baylibre-seattle"


def object_id(seed: str) -> str:
    """A stable 24-hex ObjectId-like string derived from `seed`."""
    return hashlib.sha1(seed.encode()).hexdigest()[:24]


def object_id_at(created: datetime, seed: str) -> str:
    """An ObjectId as MongoDB makes them: the creation time's seconds in its first 4 bytes, so ids
    sort as the objects were created (as upstream's do), then 8 stable bytes from `seed`."""
    return "%08x%s" % (int(created.timestamp()), hashlib.sha1(seed.encode()).hexdigest()[:16])


def epoch_ms(when: datetime) -> int:
    return int(when.replace(tzinfo=when.tzinfo or timezone.utc).timestamp() * 1000)


def at(today: date, days_ago: int, hour: int, minute: int = 0) -> datetime:
    return datetime.combine(today - timedelta(days=days_ago), time(hour, minute), tzinfo=timezone.utc)


def resource(job: str, branch: str, kernel: str, arch: str, defconfig_full: str, build_env: str) -> str:
    return "/".join((job, branch, kernel, arch, defconfig_full, build_env))


def build_item(job: str, kernel: str, arch: str, defconfig_full: str, created: datetime,
               branch: str = "master", build_env: str = "gcc-8", status: str = "PASS") -> Dict[str, Any]:
    """A backend build document as `_ajax/build` returns it (BSON-style `_id`/`created_on`)."""
    fsr = resource(job, branch, kernel, arch, defconfig_full, build_env)
    return {
        "_id": {"$oid": object_id("build:" + fsr)},
        "created_on": {"$date": epoch_ms(created)},
        "version": "1.1", "job": job, "kernel": kernel, "git_branch": branch,
        "git_describe": kernel, "git_describe_v": kernel,
        "git_commit": hashlib.sha1(kernel.encode()).hexdigest(),
        "arch": arch, "defconfig": defconfig_full.split("+")[0], "defconfig_full": defconfig_full,
        "build_environment": build_env, "compiler": build_env.split("-")[0],
        "status": status, "errors": 0 if status == "PASS" else 1, "warnings": 2,
        "build_type": "kernel", "file_server_resource": fsr, "file_server_url": None,
        "dtb_dir_data": ["%s/board-%d.dtb" % (arch, n) for n in range(3)],
        "metadata": {},
    }


def build_json(item: Dict[str, Any]) -> bytes:
    """The early-2019 flat `build.json` for a build item (`build_result`, `git_describe_v`)."""
    doc = {
        "arch": item["arch"], "build_environment": item["build_environment"], "build_log": "build.log",
        "build_platform": ["Linux", "builder", "4.15.0", "#44-Ubuntu SMP", "x86_64", ""],
        "build_result": item["status"], "build_threads": 10, "build_time": 511.84,
        "compiler": item["compiler"], "compiler_version": "8",
        "compiler_version_full": "gcc (Debian 8.3.0-2) 8.3.0", "cross_compile": "",
        "defconfig": item["defconfig"], "defconfig_full": item["defconfig_full"], "dtb_dir": "dtbs",
        "file_server_resource": item["file_server_resource"], "git_branch": item["git_branch"],
        "git_commit": item["git_commit"], "git_describe": item["git_describe"],
        "git_describe_v": item["git_describe_v"],
        "git_url": "https://git.kernel.org/pub/scm/linux/kernel/git/%s.git" % item["job"],
        "job": item["job"], "kconfig_fragments": "", "kernel_config": "kernel.config",
        "kernel_image": "Image", "modules": "modules.tar.xz", "system_map": "System.map",
        "text_offset": "0x00080000", "vmlinux_bss_size": 1019904, "vmlinux_data_size": 5259712,
        "vmlinux_file_size": 152362184, "vmlinux_text_size": 13369344,
    }
    return json.dumps(doc, indent=4, sort_keys=True).encode()


def bmeta_json(item: Dict[str, Any]) -> bytes:
    """The nested `bmeta.json` (kernelci-core from 2020-09; alone on storage from 2021-04) of the
    same build as `build_json(item)`, in the shape kernelci-core's writer gave it."""
    doc = {
        "build": {"duration": 511.84, "status": item["status"]},
        "environment": {
            "arch": item["arch"], "compiler": item["compiler"], "compiler_version": "8",
            "compiler_version_full": "gcc (Debian 8.3.0-2) 8.3.0", "cross_compile": "",
            "cross_compile_compat": "", "make_opts": {"KBUILD_BUILD_USER": "KernelCI"},
            "name": item["build_environment"],
            "platform": {"uname": ["Linux", "builder", "4.15.0", "#44-Ubuntu SMP", "x86_64", ""]},
            "use_ccache": True,
        },
        "kernel": {
            "defconfig": item["defconfig"], "defconfig_expanded": item["defconfig_full"], "defconfig_extras": [],
            "defconfig_full": item["defconfig_full"], "fragments": [], "image": "Image",
            "publish_path": item["file_server_resource"], "system_map": "System.map", "text_offset": "0x00080000",
            "vmlinux_bss_size": 1019904, "vmlinux_data_size": 5259712, "vmlinux_file_size": 152362184,
            "vmlinux_text_size": 13369344,
        },
        "revision": {
            "branch": item["git_branch"], "commit": item["git_commit"], "describe": item["git_describe"],
            "describe_verbose": item["git_describe_v"], "tree": item["job"],
            "url": "https://git.kernel.org/pub/scm/linux/kernel/git/%s.git" % item["job"],
        },
    }
    return json.dumps(doc, indent=4, sort_keys=True).encode()


def boot_item(build: Dict[str, Any], lab_name: str, board: str, created: datetime,
              status: str = "PASS", null_resource: bool = False) -> Dict[str, Any]:
    """A backend boot document for `build` on `board` in `lab_name`."""
    copied = ("job", "kernel", "git_branch", "git_commit", "git_describe", "arch", "defconfig",
              "defconfig_full", "build_environment")
    item = {
        "_id": {"$oid": object_id("boot:%s:%s:%s" % (build["file_server_resource"], lab_name, board))},
        "created_on": {"$date": epoch_ms(created)},
        "version": "1.1", "lab_name": lab_name, "board": board, "board_instance": board + "-01",
        "device_type": board, "mach": "generic",
    }
    item.update({key: build[key] for key in copied})
    item.update({
        "build_id": build["_id"], "status": status, "time": {"$date": 10421}, "warnings": 0,
        "retries": 0, "boot_log": "boot-%s.txt" % board, "boot_log_html": "boot-%s.html" % board,
        "endian": "little", "fastboot": False, "kernel_image": "Image",
        "file_server_resource": None if null_resource else build["file_server_resource"],
        "metadata": {},
    })
    return item


def boot_path(item: Dict[str, Any], lava: bool = True) -> str:
    """Storage path of a boot's file; a null `file_server_resource` uses the backend's fallback."""
    base = item["file_server_resource"] or resource(
        item["job"], item["git_branch"], item["kernel"], item["arch"], item["defconfig_full"],
        item["build_environment"])
    name = ("lava-json-%s.json" if lava else "boot-%s.json") % item["board"]
    return "%s/%s/%s" % (base, item["lab_name"], name)


def _definition_yaml(item: Dict[str, Any]) -> str:
    fsr = item["file_server_resource"] or ""
    metadata = {
        "device.type": item["board"], "git.branch": item["git_branch"], "git.commit": item["git_commit"],
        "git.describe": item["git_describe"], "job.arch": item["arch"],
        "job.build_environment": item["build_environment"], "job.file_server_resource": fsr,
        "kernel.defconfig": item["defconfig"], "kernel.defconfig_full": item["defconfig_full"],
        "kernel.endian": "little", "kernel.tree": item["job"], "kernel.version": item["kernel"],
        "platform.mach": item["mach"], "test.plan": "baseline",
    }
    lines = ["device_type: %s" % item["board"], "job_name: %s-baseline" % item["kernel"], "metadata:"]
    lines += ["  %s: '%s'" % (key, value) for key, value in metadata.items()]
    return "\n".join(lines) + "\n"


def _results_yaml(job_id: int, status: str) -> Dict[str, str]:
    result = "pass" if status == "PASS" else "fail"
    lava = ("- id: '%d1'\n  job: '%d'\n  level: '2.4.4.1'\n  log_end_line: ''\n  log_start_line: ''\n"
            "  logged: '2020-11-19 07:05:01.210009+00:00'\n  measurement: '10.4100000000'\n"
            "  metadata: {case: login-action, definition: lava, duration: '10.41', level: 2.4.4.1, "
            "namespace: common, result: %s}\n  name: login-action\n  result: %s\n  suite: lava\n"
            "  unit: seconds\n  url: /results/testcase/%d1\n" % (job_id, job_id, result, result, job_id))
    dmesg = ("- id: '%d2'\n  job: '%d'\n  level: ''\n  log_end_line: '3'\n  log_start_line: '3'\n"
             "  logged: '2020-11-19 07:06:12.073984+00:00'\n  measurement: 'None'\n"
             "  metadata: {case: emerg, definition: 0_dmesg, result: pass}\n  name: emerg\n"
             "  result: pass\n  suite: 0_dmesg\n  unit: lines\n  url: /results/testcase/%d2\n"
             % (job_id, job_id, job_id))
    return {"lava": lava, "0_dmesg": dmesg}


@lru_cache(maxsize=8)
def _log_yaml(lines: int) -> str:
    head = ['- {"dt": "2020-11-19T07:03:25.393174", "lvl": "info", "msg": "lava-dispatcher, installed at version: 2020.07"}',
            '- {"dt": "2020-11-19T07:04:53.666337", "lvl": "target", "msg": "Trying 127.0.0.1..."}',
            '- {"dt": "2020-11-19T07:06:10.933187", "lvl": "results", "msg": {"case": "emerg", "definition": "0_dmesg", "result": "pass"}}']
    body = ['- {"dt": "2020-11-19T07:05:%02d.%06d", "lvl": "target", "msg": "[   %d.%06d] console line %d"}'
            % (n % 60, n, n // 100, n % 1000000, n) for n in range(max(0, lines - len(head)))]
    return "\n".join(head + body) + "\n"


# The `lava` suite of a real baseline job: (case, level, seconds or None, extra list) per step.
_REAL_LAVA_STEPS = (
    ("job", "", None, None), ("power-off", "5.1", "4.27", [{"status": "success"}]),
    ("1_bootrr", "", "1.02", None), ("0_dmesg", "", "0.03", None),
    ("login-action", "2.4.4.1", "14.74", [{"success": "/ #"}]),
    ("kernel-messages", "2.4.4.1", "14.73", [{"extra": [{"success": "/ #"}]}]),
    ("auto-login-action", "2.4.4", "14.75", None), ("pdu-reboot", "2.4.1.1", "11.64", [{"status": "success"}]),
    ("reset-device", "2.4.1", "11.65", None), ("bootloader-overlay", "2.2", "0.04",
                                                [{"dtb_addr": "0x1000000"}, {"kernel_addr": "0x1080000"},
                                                 {"ramdisk_addr": "0x13000000"}]),
    ("uboot-action", "2.4", "17.51", None), ("uboot-commands", "2.4.3", "3.12", None),
    ("bootloader-commands", "2.4.3.1", "3.11", None), ("expect-shell-connection", "3.1", "0.01", None),
    ("lava-test-shell", "3", "73.40", None), ("file-download", "1.1.1", "0.53", [{"size": 6852}]),
    ("http-download", "1.2.1", "0.21", None), ("test-overlay", "1.4.2", "0.01", None),
    ("validate", "", None, None),
)
# The `0_dmesg` suite: (case, measurement as stored: a quoted decimal string or a bare `0E-10`).
_REAL_DMESG_CASES = (("emerg", "'2.0000000000'"), ("alert", "0E-10"), ("crit", "0E-10"))


def _flow_yaml(value: Any) -> str:
    """A flow mapping as LAVA's dumper writes it: bare keys, strings quoted only when needed."""
    if isinstance(value, dict):
        return "{%s}" % ", ".join("%s: %s" % (key, _flow_yaml(item)) for key, item in value.items())
    if isinstance(value, list):
        return "[%s]" % ", ".join(_flow_yaml(item) for item in value)
    if isinstance(value, str) and (not value.replace("-", "").isalnum() or value[0].isdigit()):
        return "'%s'" % value
    return str(value)


def _real_results_yaml(job_id: int, status: str) -> Dict[str, str]:
    """Results as real callbacks store them: block YAML, quoted strings, nested metadata."""
    result = "pass" if status == "PASS" else "fail"
    lava = []
    for number, (case, level, seconds, extra) in enumerate(_REAL_LAVA_STEPS):
        outcome = result if case in ("job", "login-action") else "pass"
        lines = ["- id: '%d%02d'" % (job_id, number), "  job: '%d'" % job_id,
                 "  level: '%s'" % level if level.count(".") < 2 else "  level: %s" % level,
                 "  log_end_line: ''", "  log_start_line: ''",
                 "  logged: '2020-11-19 07:06:%02d.%06d+00:00'" % (number, 379641 + number),
                 "  measurement: %s" % ("None" if seconds is None else "'%s00000000'" % seconds)]
        if seconds is None:
            lines.append("  metadata: {case: %s, definition: lava, result: %s}" % (case, outcome))
        else:
            lines += ["  metadata:", "    case: %s" % case, "    definition: lava", "    duration: '%s'" % seconds]
            if extra:
                lines.append("    extra:")
                lines += ["    - %s" % _flow_yaml(entry) for entry in extra]
            lines += ["    level: '%s'" % level, "    namespace: common", "    result: %s" % outcome]
        lines += ["  name: %s" % case, "  result: %s" % outcome, "  suite: lava",
                  "  unit: %s" % ("''" if seconds is None else "seconds"),
                  "  url: /results/testcase/%d%02d" % (job_id, number)]
        lava.append("\n".join(lines))
    dmesg = []
    for number, (case, measurement) in enumerate(_REAL_DMESG_CASES):
        outcome = "fail" if measurement.startswith("'2") else "pass"
        count = 2 if outcome == "fail" else 0
        dmesg.append("\n".join((
            "- id: '%d9%d'" % (job_id, number), "  job: '%d'" % job_id, "  level: ''",
            "  log_end_line: '%d'" % (930 - 3 * number), "  log_start_line: '%d'" % (930 - 3 * number),
            "  logged: '2020-11-19 07:06:12.0739%02d+00:00'" % number, "  measurement: %s" % measurement,
            "  metadata: {case: %s, definition: 0_dmesg, measurement: '%d', result: %s, units: lines}"
            % (case, count, outcome),
            "  name: %s" % case, "  result: %s" % outcome, "  suite: 0_dmesg", "  unit: lines",
            "  url: /results/testcase/%d9%d" % (job_id, number))))
    bootrr = ("- id: '%d99'\n  job: '%d'\n  level: ''\n  log_end_line: '972'\n  log_start_line: '972'\n"
              "  logged: '2020-11-19 07:06:18.378199+00:00'\n  measurement: None\n"
              "  metadata: {case: deferred-probe-empty, definition: 1_bootrr, result: pass}\n"
              "  name: deferred-probe-empty\n  result: pass\n  suite: 1_bootrr\n  unit: ''\n"
              "  url: /results/testcase/%d99\n" % (job_id, job_id, job_id))
    return {"lava": "\n".join(lava) + "\n", "0_dmesg": "\n".join(dmesg) + "\n", "1_bootrr": bootrr}


@lru_cache(maxsize=8)
def _real_log_yaml(lines: int) -> str:
    """A log of `lines` flow mappings with the real mix of levels.

    About one line in 45 is a `results` line, as in the real files, and the dmesg ones carry
    `!!python/object/apply:decimal.Decimal` measurements, as the dispatcher's dumper wrote them.
    """
    out = ['- {"dt": "2020-11-19T07:03:25.393174", "lvl": "info", '
           '"msg": "lava-dispatcher, installed at version: 2020.07"}']
    cases = [case for case, *_ in _REAL_LAVA_STEPS]
    for n in range(1, lines):
        dt = "2020-11-19T07:%02d:%02d.%06d" % (3 + n // 600, (n // 10) % 60, (n * 7919) % 1000000)
        if n % 45 == 44:
            if (n // 45) % 3 == 0:
                out.append('- {"dt": "%s", "lvl": "results", "msg": {"case": "crit", "definition": "0_dmesg", '
                           '"measurement": !!python/object/apply:decimal.Decimal ["%d"], "result": "pass", '
                           '"units": "lines"}}' % (dt, n % 3))
            else:
                out.append('- {"dt": "%s", "lvl": "results", "msg": {"case": "%s", "definition": "lava", '
                           '"duration": "%d.%02d", "level": "2.4.%d", "namespace": "common", "result": "pass"}}'
                           % (dt, cases[n % len(cases)], n % 20, n % 100, n % 9))
        elif n % 3 == 1:
            out.append('- {"dt": "%s", "lvl": "debug", "msg": "start: 2.4.%d uboot-commands (timeout 00:%02d:00) '
                       '[common]"}' % (dt, n % 9, n % 60))
        elif n % 17 == 5:
            out.append('- {"dt": "%s", "lvl": "info", "msg": "end: 2.4.%d bootloader-commands (duration 00:00:%02d) '
                       '[common]"}' % (dt, n % 9, n % 60))
        else:
            out.append('- {"dt": "%s", "lvl": "target", "msg": "[   %d.%06d] usb %d-1: new high-speed USB device '
                       'number %d using ehci-platform"}' % (dt, n // 100, n % 1000000, n % 4, n))
    return "\n".join(out) + "\n"


def lava_json(item: Dict[str, Any], job_id: int, log_lines: int = 3, real_shapes: bool = False) -> bytes:
    """A stored-form LAVA callback (`lava-json-<board>.json`) for a boot item.

    With `real_shapes`, results and log take the full shapes of the real callbacks (22 test
    cases in block YAML, Decimal tags in the log) rather than the minimal ones.
    """
    doc = {
        "id": job_id, "status": 2 if item["status"] == "PASS" else 3,
        "status_string": "complete" if item["status"] == "PASS" else "incomplete",
        "submit_time": "2020-11-19 06:55:59.977315+00:00", "start_time": "2020-11-19 07:03:22.470908+00:00",
        "end_time": "2020-11-19 07:06:18.385678+00:00", "submitter_username": "kernel-ci",
        "description": "%s-%s-%s-baseline" % (item["kernel"], item["defconfig_full"], item["board"]),
        "actual_device_id": item["board_instance"], "priority": 50, "failure_comment": None,
        "metadata": [], "definition": _definition_yaml(item),
        "results": (_real_results_yaml if real_shapes else _results_yaml)(job_id, item["status"]),
        "log": (_real_log_yaml if real_shapes else _log_yaml)(log_lines),
        "lab_name": item["lab_name"], "version": "1.1", "boot_log_html": "baseline-%s.html" % item["board"],
    }
    return json.dumps(doc).encode()


def boot_json(item: Dict[str, Any]) -> bytes:
    """A non-LAVA `boot-<board>.json` (flavour a): loose types, strings for numbers and booleans."""
    doc = {
        "version": "1.0", "lab_name": item["lab_name"], "job": item["job"], "kernel": item["kernel"],
        "git_branch": item["git_branch"], "git_commit": item["git_commit"],
        "git_describe": item["git_describe"], "arch": item["arch"], "defconfig": item["defconfig"],
        "defconfig_full": item["defconfig_full"], "build_environment": item["build_environment"],
        "board": item["board"], "board_instance": item["board_instance"], "mach": item["mach"],
        "boot_result": item["status"], "boot_time": "7.62", "boot_warnings": 0, "boot_retries": 0,
        "boot_log": item["boot_log"], "boot_log_html": item["boot_log_html"],
        "dtb": "dtbs/%s.dtb" % item["board"], "dtb_addr": "0x81f00000", "dtb_append": "False",
        "endian": "little", "fastboot": "false", "initrd": None, "initrd_addr": "0x82000000",
        "kernel_image": "zImage", "loadaddr": "0x82000000",
        "file_server_resource": item["file_server_resource"],
    }
    return json.dumps(doc, indent="  ").encode()


def small_corpus(today: date) -> LegacyCorpus:
    """Four builds and four boots; `date_range=2` from `today` sees three builds and four boots."""
    corpus = LegacyCorpus()
    next_build = build_item("next", "next-20190531", "arm64", "defconfig", at(today, 0, 1))
    big_endian = build_item("mainline", "v5.2-rc2-24-gbec7550cca10", "arm",
                            "multi_v7_defconfig+CONFIG_CPU_BIG_ENDIAN=y", at(today, 1, 12))
    failed = build_item("mainline", "v5.2-rc2-24-gbec7550cca10", "x86_64", "x86_64_defconfig",
                        at(today, 1, 12, 30), build_env="clang-8", status="FAIL")
    old = build_item("stable", "v4.19.46", "x86_64", "x86_64_defconfig", at(today, 10, 8),
                     branch="linux-4.19.y")
    for build in (next_build, big_endian, failed, old):
        corpus.add_build(build, build_json(build))
    lava_boots = [
        (boot_item(next_build, "lab-baylibre", "meson-gxbb-p200", at(today, 0, 2)), 370874),
        (boot_item(big_endian, "lab-collabora", "beaglebone-black", at(today, 1, 13), status="FAIL"), 370875),
        (boot_item(next_build, "lab-baylibre", "meson-gxl-s905x-khadas-vim", at(today, 0, 3),
                   null_resource=True), 370876),
    ]
    for item, job_id in lava_boots:
        corpus.add_boot(item, boot_path(item), lava_json(item, job_id))
    seattle = boot_item(big_endian, NON_LAVA_LAB, "am335x-boneblack", at(today, 1, 14))
    corpus.add_boot(seattle, boot_path(seattle, lava=False), boot_json(seattle))
    return corpus


def synthetic_corpus(today: date, builds: int = 1000, lava_boots: int = 4000, other_boots: int = 0,
                     days: int = 2, lava_log_lines: int = 1500, corpus: Optional[LegacyCorpus] = None) -> LegacyCorpus:
    """Many objects spread over `today` and the `days` before; files are generated on each GET.

    With the default 1500 log lines a lava-json file is about 150 KB.
    """
    corpus = corpus or LegacyCorpus()
    slots = max(1, (days + 1) * 24 * 60)
    build_items = []
    for n in range(builds):
        created = at(today, days, 0) + timedelta(minutes=(n * slots) // max(1, builds))
        item = build_item("tree%d" % (n % 7), "v5.%d-%d" % (n % 20, n), "arm64", "defconfig", created)
        corpus.add_build(item, _lazy(build_json, item))
        build_items.append(item)
    for n in range(lava_boots + other_boots):
        build = build_items[n % len(build_items)] if build_items else build_item(
            "tree", "v5.0-%d" % n, "arm64", "defconfig", at(today, 0, 0))
        lava = n < lava_boots
        lab = "lab-%d" % (n % 5) if lava else NON_LAVA_LAB
        created = datetime.fromtimestamp(build["created_on"]["$date"] / 1000, tz=timezone.utc) + timedelta(seconds=30)
        item = boot_item(build, lab, "board-%d" % (n // max(1, len(build_items))), created)
        content = _lazy(lava_json, item, 400000 + n, lava_log_lines, True) if lava else _lazy(boot_json, item)
        corpus.add_boot(item, boot_path(item, lava=lava), content)
    return corpus


def _lazy(producer, *args):
    return lambda: producer(*args)
