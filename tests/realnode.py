"""A real Elasticsearch node for the tests marked `realengine`: build, start, wait, stop.

The node is `tests/realengine/` (a small Java launcher around Elasticsearch's own server and
test-framework artifacts from Maven Central), built by `make realengine` into
`tests/realengine/target/`. One node serves the whole test session; each test deletes what it
made (`wipe`). Without Java a developer's run skips these tests with the reason; with
`CI=true` in the environment a node that cannot start fails them instead, so CI never passes
without having met a real Elasticsearch.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import IO, List, Optional
from urllib.parse import quote

LAUNCHER_DIR = Path(__file__).resolve().parent / "realengine"
CLASSES = LAUNCHER_DIR / "target" / "classes"
CLASSPATH_FILE = LAUNCHER_DIR / "target" / "classpath.txt"
MAIN_CLASS = "kcing.realengine.RealNode"
# Small and fixed: the node holds a few thousand documents. Both bounds equal, so RSS is stable.
HEAP = os.environ.get("KCING_REALENGINE_HEAP", "512m")
START_TIMEOUT = float(os.environ.get("KCING_REALENGINE_START_TIMEOUT", "180"))


class NodeUnavailable(Exception):
    """The node could not be built or started; the message says why and what to do."""


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


def java_command() -> Optional[str]:
    home = os.environ.get("JAVA_HOME")
    if home and (Path(home) / "bin" / "java").is_file():
        return str(Path(home) / "bin" / "java")
    return shutil.which("java")


def launcher_classpath() -> str:
    """The launcher's classpath, or NodeUnavailable saying how to build it."""
    if java_command() is None:
        raise NodeUnavailable("no Java found (install a JDK 17+ and Maven, then `make realengine`)")
    if not CLASSPATH_FILE.is_file() or not (CLASSES / "kcing" / "realengine" / "RealNode.class").is_file():
        raise NodeUnavailable("the real-engine launcher is not built: run `make realengine` (needs Maven)")
    jars = CLASSPATH_FILE.read_text(encoding="utf-8").strip()
    missing = [jar for jar in jars.split(os.pathsep) if jar and not os.path.isfile(jar)]
    if missing:
        raise NodeUnavailable("%d launcher jars are missing from ~/.m2 (e.g. %s): run `make realengine`"
                              % (len(missing), missing[0]))
    return os.pathsep.join([str(CLASSES), jars])


def http_json(method: str, url: str, body: Optional[object] = None, timeout: float = 60) -> tuple:
    """(status, parsed JSON body or None) of one plain HTTP request, errors included."""
    data = None if body is None else json.dumps(body).encode("utf-8")
    request = urllib.request.Request(url, data=data, method=method,
                                     headers={"Content-Type": "application/json"} if data else {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as answer:
            raw = answer.read()
            status = answer.status
    except urllib.error.HTTPError as error:
        raw, status = error.read(), error.code
    return status, (json.loads(raw) if raw.strip() else None)


@dataclass
class RealNode:
    """A started node: its URL, process, home directory and what starting it cost."""

    url: str
    process: subprocess.Popen
    home: Path
    log: IO[bytes]
    start_seconds: float

    def rss_bytes(self) -> int:
        """Resident memory of the node's JVM now (Linux /proc)."""
        status = Path("/proc/%d/status" % self.process.pid).read_text()
        for line in status.splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        return 0

    def log_tail(self, lines: int = 30) -> str:
        path = self.home / "node.log"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.is_file() else ""

    def indices(self) -> List[str]:
        """Every index that is not a system or hidden one."""
        status, rows = http_json("GET", self.url + "/_cat/indices?format=json&h=index&expand_wildcards=open,closed")
        return sorted(row["index"] for row in rows or [] if not row["index"].startswith("."))

    def wipe(self) -> None:
        """Delete the indices, templates (legacy ones too) and hidden test indices a test made, by exact name.

        Listed through `_resolve/index` and unblocked first: a metadata block left by a failed test
        makes the node refuse `_cat/indices`, and a read-only or metadata block refuses a delete.
        Names go in the URL quoted: a test's template may be named `a?b`."""
        status, found = http_json("GET", self.url + "/_resolve/index/*?expand_wildcards=all")
        # A data stream first (the launcher serves its DELETE): it keeps its hidden backing
        # indices and the template that made it, which the node refuses to delete before it.
        for stream in (found or {}).get("data_streams", []):
            http_json("DELETE", self.url + "/_data_stream/" + quote(stream["name"], safe=""))
        if (found or {}).get("data_streams"):
            status, found = http_json("GET", self.url + "/_resolve/index/*?expand_wildcards=all")
        names = [item["name"] for item in (found or {}).get("indices", []) if not item["name"].startswith(".") or
                 item["name"].startswith(".kcing")]
        for start in range(0, len(names), 50):
            chunk = ",".join(quote(name, safe="") for name in names[start:start + 50])
            # Only these three may be changed together on an index with a metadata block.
            http_json("PUT", self.url + "/" + chunk + "/_settings?expand_wildcards=all",
                      {"index.blocks.metadata": None, "index.blocks.read_only": None,
                       "index.blocks.read_only_allow_delete": None})
            http_json("DELETE", self.url + "/" + chunk)
        status, found = http_json("GET", self.url + "/_index_template")
        for item in (found or {}).get("index_templates", []):
            if not item["name"].startswith("."):
                http_json("DELETE", self.url + "/_index_template/" + quote(item["name"], safe=""))
        status, legacy = http_json("GET", self.url + "/_template")
        for name in legacy or {}:
            if not name.startswith("."):
                http_json("DELETE", self.url + "/_template/" + quote(name, safe=""))

    def stop(self, timeout: float = 30) -> None:
        """Close the node's stdin (it shuts down cleanly on EOF); kill it if it lingers."""
        try:
            if self.process.stdin:
                self.process.stdin.close()
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        finally:
            self.log.close()


def start_node(home: Path) -> RealNode:
    """Start the launcher with `home` as the node's home; return once the cluster is yellow."""
    classpath = launcher_classpath()
    home.mkdir(parents=True, exist_ok=True)
    log = open(home / "node.log", "wb")
    started = time.monotonic()
    command = [java_command(), "-Xms" + HEAP, "-Xmx" + HEAP, "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1",
               "-Djava.awt.headless=true", "-Dfile.encoding=UTF-8", "-cp", classpath, MAIN_CLASS, str(home)]
    process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=log, stderr=subprocess.STDOUT,
                               cwd=str(home))
    node = RealNode("", process, home, log, 0.0)
    try:
        node.url = _wait_for_url(node, started)
        _wait_for_yellow(node, started)
    except BaseException:
        node.stop(timeout=10)
        raise
    node.start_seconds = time.monotonic() - started
    return node


def _wait_for_url(node: RealNode, started: float) -> str:
    url_file = node.home / "http.url"
    while not url_file.is_file():
        if node.process.poll() is not None:
            raise NodeUnavailable("the Elasticsearch node exited with status %s before listening:\n%s"
                                  % (node.process.returncode, node.log_tail()))
        if time.monotonic() - started > START_TIMEOUT:
            raise NodeUnavailable("the Elasticsearch node was not listening after %.0fs:\n%s"
                                  % (START_TIMEOUT, node.log_tail()))
        time.sleep(0.2)
    return url_file.read_text(encoding="utf-8").strip()


def _wait_for_yellow(node: RealNode, started: float) -> None:
    remaining = max(1.0, START_TIMEOUT - (time.monotonic() - started))
    status, health = http_json("GET", node.url + "/_cluster/health?wait_for_status=yellow&timeout=%ds"
                               % int(remaining), timeout=remaining + 10)
    if status != 200 or (health or {}).get("status") not in ("yellow", "green"):
        raise NodeUnavailable("the Elasticsearch node did not become yellow: %s %s" % (status, health))
