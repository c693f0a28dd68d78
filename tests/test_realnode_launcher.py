"""How the tests get a real Elasticsearch node: clear reasons when they cannot (no Java needed)."""
from __future__ import annotations

import pytest

from tests import realnode


def test_without_java_the_reason_says_what_to_install(monkeypatch):
    monkeypatch.delenv("JAVA_HOME", raising=False)
    monkeypatch.setattr(realnode.shutil, "which", lambda name: None)
    with pytest.raises(realnode.NodeUnavailable, match="no Java found.*make realengine"):
        realnode.launcher_classpath()


def test_an_unbuilt_launcher_says_how_to_build_it(monkeypatch, tmp_path):
    monkeypatch.setattr(realnode.shutil, "which", lambda name: "/usr/bin/java")
    monkeypatch.delenv("JAVA_HOME", raising=False)
    monkeypatch.setattr(realnode, "CLASSPATH_FILE", tmp_path / "classpath.txt")
    with pytest.raises(realnode.NodeUnavailable, match="not built: run `make realengine`"):
        realnode.launcher_classpath()


def test_jars_gone_from_the_maven_cache_are_named(monkeypatch, tmp_path):
    monkeypatch.setattr(realnode.shutil, "which", lambda name: "/usr/bin/java")
    monkeypatch.delenv("JAVA_HOME", raising=False)
    classes = tmp_path / "classes"
    (classes / "kcing" / "realengine").mkdir(parents=True)
    (classes / "kcing" / "realengine" / "RealNode.class").write_bytes(b"")
    listing = tmp_path / "classpath.txt"
    listing.write_text(str(tmp_path / "gone.jar"))
    monkeypatch.setattr(realnode, "CLASSES", classes)
    monkeypatch.setattr(realnode, "CLASSPATH_FILE", listing)
    with pytest.raises(realnode.NodeUnavailable, match="1 launcher jars are missing.*gone.jar"):
        realnode.launcher_classpath()


@pytest.mark.parametrize("value, expected", [("true", True), ("1", True), ("", False), ("false", False)])
def test_ci_is_recognised_from_the_environment(monkeypatch, value, expected):
    monkeypatch.setenv("CI", value)
    assert realnode.in_ci() is expected


def test_a_launcher_that_dies_at_once_is_reported_with_its_output(monkeypatch, tmp_path):
    """A node that exits before listening: the error carries its last lines, nothing lingers."""
    monkeypatch.setattr(realnode, "launcher_classpath", lambda: "")
    monkeypatch.setattr(realnode, "java_command", lambda: "/bin/sh")
    monkeypatch.setattr(realnode, "MAIN_CLASS", "-c")
    original = realnode.subprocess.Popen

    def fake_popen(command, **options):
        return original(["/bin/sh", "-c", "echo 'boom: cannot start'; exit 7"], **options)

    monkeypatch.setattr(realnode.subprocess, "Popen", fake_popen)
    with pytest.raises(realnode.NodeUnavailable, match="exited with status 7(.|\n)*boom: cannot start"):
        realnode.start_node(tmp_path / "home")
