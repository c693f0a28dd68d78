"""Checks of docker-compose.yml: schema validation by docker-compose 1.29 and the stack contract.

`docker-compose config -q` validates the file against the schema without a Docker engine; it
does not pull images, start containers or look inside mounted files.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
COMPOSE_FILE = REPO / "docker-compose.yml"
PIPELINE = REPO / "logstash" / "pipeline" / "kcing.conf"

STACK_IMAGES = {
    "elasticsearch": "docker.elastic.co/elasticsearch/elasticsearch",
    "logstash": "docker.elastic.co/logstash/logstash",
    "kibana": "docker.elastic.co/kibana/kibana",
}


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def docker_compose() -> str:
    path = shutil.which("docker-compose")
    if path is None:
        pytest.skip("docker-compose not on PATH (Debian: apt-get install docker-compose): schema not checked")
    return path


def run_config_check(docker_compose: str, compose_file: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [docker_compose, "-f", str(compose_file), "config", "-q"],
        cwd=compose_file.parent,
        capture_output=True,
        text=True,
        timeout=120,
    )


def published_ports(service: dict) -> list:
    """(host address, host port, container port) for each short-syntax `ports` entry."""
    result = []
    for entry in service.get("ports", []):
        parts = str(entry).split(":")
        assert len(parts) == 3, "publish as ADDRESS:HOST_PORT:CONTAINER_PORT, got %r" % entry
        result.append((parts[0], int(parts[1]), int(parts[2])))
    return result


def bind_mounts(service: dict) -> dict:
    """Container path -> host path for the short-syntax bind mounts of a service."""
    mounts = {}
    for entry in service.get("volumes", []):
        source, target = str(entry).split(":")[:2]
        if source.startswith((".", "/")):
            mounts[target] = source
    return mounts


# --- schema (docker-compose 1.29) ---------------------------------------------------------------


def test_compose_file_passes_docker_compose_config(docker_compose):
    result = run_config_check(docker_compose, COMPOSE_FILE)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize(
    "old, new, complaint",
    [
        pytest.param("    environment:\n", "    enviroment:\n", "enviroment", id="misspelled-key"),
        pytest.param(
            'xpack.security.enabled: "false"',
            "xpack.security.enabled: false",
            "invalid type",
            id="unquoted-boolean",
        ),
    ],
)
def test_config_check_can_fail(docker_compose, tmp_path, old, new, complaint):
    text = COMPOSE_FILE.read_text(encoding="utf-8")
    assert old in text
    broken = tmp_path / "docker-compose.yml"
    broken.write_text(text.replace(old, new, 1), encoding="utf-8")
    result = run_config_check(docker_compose, broken)
    assert result.returncode != 0, result.stderr
    assert complaint in result.stderr


# --- the stack ----------------------------------------------------------------------------------


def test_stack_images_share_one_8x_tag(compose):
    services = compose["services"]
    tags = set()
    for name, repository in STACK_IMAGES.items():
        image_repository, tag = services[name]["image"].split(":", 1)
        assert image_repository == repository
        tags.add(tag)
    assert len(tags) == 1, tags
    (tag,) = tags
    default = re.fullmatch(r"\$\{STACK_VERSION:-(\d+\.\d+\.\d+)\}", tag)
    assert default, tag
    assert default.group(1).startswith("8.")


def test_ports_are_published_on_localhost_only(compose):
    for name, service in compose["services"].items():
        for address, _, _ in published_ports(service):
            assert address == "127.0.0.1", name


def test_security_is_off_for_local_use(compose):
    environment = compose["services"]["elasticsearch"]["environment"]
    assert environment["xpack.security.enabled"] == "false"
    assert environment["discovery.type"] == "single-node"


def test_stack_services_have_healthchecks(compose):
    for name in STACK_IMAGES:
        test = compose["services"][name]["healthcheck"]["test"]
        assert test[0] == "CMD-SHELL" and "curl -fsS" in test[1], name


def one_shot(service: dict) -> bool:
    """A service that runs its command once and exits (kcing's setup commands)."""
    return service.get("restart") == "no" and "healthcheck" not in service


def test_services_wait_for_healthy_or_completed_dependencies(compose):
    services = compose["services"]
    for name, service in services.items():
        for dependency, condition in service.get("depends_on", {}).items():
            assert dependency in services, (name, dependency)
            # A server is waited for until its health check passes; a one-shot service until
            # it exited 0 (`service_started` would wait for neither).
            wanted = "service_completed_successfully" if one_shot(services[dependency]) else "service_healthy"
            assert condition == {"condition": wanted}, (name, dependency)
    assert set(services["kcing-setup-es"]["depends_on"]) == {"elasticsearch"}
    assert set(services["kcing-setup-kbn"]["depends_on"]) == {"kibana", "logstash"}


def services_running(compose: dict, command: str) -> list:
    return [name for name, service in compose["services"].items()
            if re.search(r"\bpython -m kcing %s\b" % command, " ".join(service.get("command", [])))]


def test_logstash_takes_documents_only_once_the_index_templates_are_installed(compose):
    # A document indexed before setup_es creates its day's index with guessed types (text for
    # every keyword), which the index keeps: the dashboards cannot aggregate on them.
    (setup_es,) = services_running(compose, "setup_es")
    assert one_shot(compose["services"][setup_es])
    assert compose["services"]["logstash"]["depends_on"][setup_es] == {"condition": "service_completed_successfully"}


def test_up_returns_only_once_logstash_is_healthy(compose):
    # `docker compose up -d` returns once it has started every service, each after its
    # dependencies' conditions held: a service that waits for Logstash's health check makes the
    # quick start's next step (feed_es) find the inputs listening.
    waiting = [name for name, service in compose["services"].items()
               if service.get("depends_on", {}).get("logstash") == {"condition": "service_healthy"}]
    assert waiting


def test_elasticsearch_data_is_a_named_volume(compose):
    volumes = compose["services"]["elasticsearch"]["volumes"]
    assert "esdata:/usr/share/elasticsearch/data" in volumes
    assert "esdata" in compose["volumes"]


def test_logstash_queues_are_on_a_named_volume(compose):
    # The persisted queue and the dead letter queue live under path.data (the image's
    # /usr/share/logstash/data): on the container's own layer, events Logstash acknowledged to
    # kcing would be lost with the container when `docker compose up` recreates it.
    volumes = compose["services"]["logstash"]["volumes"]
    assert "lsdata:/usr/share/logstash/data" in volumes
    assert "lsdata" in compose["volumes"]
    pipelines_yml = REPO / bind_mounts(compose["services"]["logstash"])["/usr/share/logstash/config/pipelines.yml"]
    for entry in yaml.safe_load(pipelines_yml.read_text(encoding="utf-8")):
        assert not {"path.data", "path.queue", "path.dead_letter_queue"} & set(entry), entry


def test_logstash_mounts_files_from_the_repository(compose):
    mounts = bind_mounts(compose["services"]["logstash"])
    assert set(mounts) == {"/usr/share/logstash/pipeline", "/usr/share/logstash/config/pipelines.yml"}
    for source in mounts.values():
        assert (REPO / source).exists(), source
    assert (REPO / mounts["/usr/share/logstash/pipeline"] / PIPELINE.name).is_file()
    assert (REPO / mounts["/usr/share/logstash/config/pipelines.yml"]).is_file()


def test_logstash_publishes_exactly_the_pipeline_ports(compose):
    text = PIPELINE.read_text(encoding="utf-8")
    pipeline_ports = {int(port) for port in re.findall(r"^\s*port\s*=>\s*(\d+)\s*$", text, re.M)}
    published = published_ports(compose["services"]["logstash"])
    assert pipeline_ports == {8337, 8338, 8007, 8339}
    assert {container for _, _, container in published} == pipeline_ports
    # Same number outside, so kcing's default URLs (http://localhost:8337, ...) reach them.
    assert all(host == container for _, host, container in published)


SETUP_SERVICES = {
    "kcing-setup-es": ("setup_es", {"ES_HOST": "http://elasticsearch:9200"}),
    "kcing-setup-kbn": ("setup_kbn", {"KB_URL": "http://kibana:5601"}),
}


@pytest.mark.parametrize("name", sorted(SETUP_SERVICES))
def test_setup_runs_once_against_the_stack(compose, name):
    command, environment = SETUP_SERVICES[name]
    setup = compose["services"][name]
    assert setup["image"] == "python:3.11-slim"
    assert setup["working_dir"] == "/kcing"
    assert bind_mounts(setup) == {"/kcing": "."}
    assert setup["restart"] == "no"
    assert setup["environment"] == environment
    assert services_running(compose, command) == [name]


# --- the one-shot setup, run as compose runs it ---------------------------------------------------

SETUP_MOUNT = "/kcing"
SETUP_COPY = "/tmp/kcing-src"


def _tree(root: Path) -> dict:
    return {str(path.relative_to(root)): path.read_bytes() for path in sorted(root.rglob("*")) if path.is_file()}


def _run_setup_script(compose: dict, name: str, mount: Path, copy: Path, es_url: str,
                      kb_url: str, pip: str = ":") -> subprocess.CompletedProcess:
    """The command of the setup service `name` with the container paths mapped onto `mount` and `copy`.

    The dependencies are already installed here, so `pip install` becomes `pip` (a no-op that
    succeeds, or `false` for a start without the network); everything else (copying, changing
    directory, `python -m kcing ...`) runs as written, from `working_dir`.
    """
    setup = compose["services"][name]
    script = setup["command"][-1]
    assert setup["command"][:2] == ["sh", "-c"]
    script = script.replace(SETUP_COPY, str(copy)).replace(SETUP_MOUNT, str(mount))
    script, installs = re.subn(r"pip install [^&|]*", pip + " ", script)
    assert installs == 1, setup["command"][-1]
    script = re.sub(r"\bpython\b", sys.executable, script)
    working_dir = Path(setup["working_dir"].replace(SETUP_MOUNT, str(mount)))
    environment = {name: value for name, value in os.environ.items() if not name.startswith(("ES_", "KB_"))}
    environment.update(setup["environment"], ES_HOST=es_url, KB_URL=kb_url, PYTHONDONTWRITEBYTECODE="1")
    environment.pop("PYTHONPATH", None)
    return subprocess.run(["sh", "-c", script], cwd=working_dir, env=environment, capture_output=True,
                          text=True, timeout=300)


def test_setup_runs_again_without_writing_into_the_read_only_checkout(compose, tmp_path):
    # Every `docker compose up` starts the exited setup services again. The second time Kibana holds
    # kcing's objects, and setup_kbn saves them before importing: that must not be into the
    # checkout, which is mounted read-only (and would otherwise get root-owned files).
    from tests.fakes.elastic_server import ElasticsearchEmulator
    from tests.fakes.kibana_server import KibanaEmulator

    mount = tmp_path / "mount"
    shutil.copytree(REPO, mount, ignore=shutil.ignore_patterns(
        ".git", ".venv", "__pycache__", "*.egg-info", "build", "backups", "tests", "bench", "samples", "docs"))
    before = _tree(mount)
    with ElasticsearchEmulator() as es, KibanaEmulator() as kibana:
        for run in (1, 2):
            for name in ("kcing-setup-es", "kcing-setup-kbn"):
                copy = tmp_path / ("copy-%s" % name)  # compose starts the same container again
                result = _run_setup_script(compose, name, mount, copy, es.url, kibana.url)
                assert result.returncode == 0, (run, name, result.stdout, result.stderr)
            assert "setup_kbn: imported" in result.stdout, result.stdout
        assert kibana.store, "nothing was imported"
        assert {"kcing-build", "kcing-boot", "kcing-test", "kcing-log", "kcing-regression"} <= set(es.templates)
    assert _tree(mount) == before, sorted(set(_tree(mount)) ^ set(before))



def test_a_restarted_setup_service_runs_the_checkout_as_it_is_now(compose, tmp_path):
    # `docker compose up` starts the exited container again, whose /tmp still holds the copy of
    # the first start: copying over it must not leave kcing running that old copy (the templates
    # and objects of the checkout as it was then, whatever `git pull` brought since).
    import json

    from tests.fakes.elastic_server import ElasticsearchEmulator
    from tests.fakes.kibana_server import KibanaEmulator

    mount = tmp_path / "mount"
    shutil.copytree(REPO, mount, ignore=shutil.ignore_patterns(
        ".git", ".venv", "__pycache__", "*.egg-info", "build", "backups", "tests", "bench", "samples", "docs"))
    copy = tmp_path / "copy-kbn"  # the same container both times
    added = {"type": "index-pattern", "id": "kcing-probe", "attributes": {"title": "probe-*", "name": "probe"},
             "references": []}
    with ElasticsearchEmulator() as es, KibanaEmulator() as kibana:
        first = _run_setup_script(compose, "kcing-setup-kbn", mount, copy, es.url, kibana.url)
        assert first.returncode == 0, (first.stdout, first.stderr)
        objects = mount / "kibana" / "saved_objects.ndjson"
        objects.write_text(objects.read_text(encoding="utf-8").rstrip("\n") + "\n" + json.dumps(added) + "\n",
                           encoding="utf-8")
        second = _run_setup_script(compose, "kcing-setup-kbn", mount, copy, es.url, kibana.url)
        assert second.returncode == 0, (second.stdout, second.stderr)
        assert ("default", "index-pattern", "kcing-probe") in kibana.store, second.stdout



@pytest.mark.parametrize("name", sorted(SETUP_SERVICES))
def test_a_start_without_the_network_runs_with_what_an_earlier_start_installed(compose, tmp_path, name):
    # pip needs PyPI at every start (the editable build's backend). Logstash waits for
    # kcing-setup-es to succeed, so a restart offline must not fail it when the dependencies an
    # earlier start installed are there.
    from tests.fakes.elastic_server import ElasticsearchEmulator
    from tests.fakes.kibana_server import KibanaEmulator

    mount = tmp_path / "mount"
    shutil.copytree(REPO, mount, ignore=shutil.ignore_patterns(
        ".git", ".venv", "__pycache__", "*.egg-info", "build", "backups", "tests", "bench", "samples", "docs"))
    with ElasticsearchEmulator() as es, KibanaEmulator() as kibana:
        result = _run_setup_script(compose, name, mount, tmp_path / "copy", es.url, kibana.url, pip="false")
        assert result.returncode == 0, (result.stdout, result.stderr)
        assert "running with what an earlier start installed" in result.stderr
        assert es.templates if name == "kcing-setup-es" else kibana.store


@pytest.mark.parametrize("name", sorted(SETUP_SERVICES))
def test_the_setup_services_read_no_local_settings_of_the_checkout(compose, tmp_path, name):
    # A local_settings.py in the checkout configures the kcing run on the host, from the checkout
    # (the quick start's feed_es), and is copied with it: its paths and space are the host's. Read
    # in the container, a CA bundle only the host has stopped setup_es (exit 2), and with it
    # Logstash, which waits for it; a space of another Kibana stopped setup_kbn.
    from tests.fakes.elastic_server import ElasticsearchEmulator
    from tests.fakes.kibana_server import KibanaEmulator

    mount = tmp_path / "mount"
    shutil.copytree(REPO, mount, ignore=shutil.ignore_patterns(
        ".git", ".venv", "__pycache__", "*.egg-info", "build", "backups", "tests", "bench", "samples", "docs"))
    (mount / "local_settings.py").write_text(
        'ES_CA_BUNDLE = "%s"\nKB_CA_BUNDLE = "%s"\nKB_SPACE = "production"\n'
        % (tmp_path / "host-only" / "ca.pem", tmp_path / "host-only" / "ca.pem"), encoding="utf-8")
    with ElasticsearchEmulator() as es, KibanaEmulator() as kibana:
        result = _run_setup_script(compose, name, mount, tmp_path / "copy", es.url, kibana.url)
        assert result.returncode == 0, (result.stdout, result.stderr)
        assert es.templates if name == "kcing-setup-es" else kibana.store
    assert (mount / "local_settings.py").exists()  # the checkout's own file is left alone


# --- the README's quick start ----------------------------------------------------------------------


def quick_start_commands() -> list:
    """The shell lines of the README's "Start a local stack" block, comments dropped."""
    text = (REPO / "README.md").read_text(encoding="utf-8")
    section = text.split("\n### Start a local stack\n", 1)[1]
    block = section.split("```sh\n", 1)[1].split("```", 1)[0]
    return [line.split("  #", 1)[0].strip() for line in block.splitlines() if line.strip()]


def test_the_quick_start_feeds_the_stack_from_a_source_that_still_publishes():
    # The default source, legacy KernelCI, was shut down in 2024: a bare `kcing feed_es` ends with
    # exit 1 and puts nothing on the dashboards the next step opens.
    import shlex

    from kcing import cli

    (line,) = [line for line in quick_start_commands() if "kcing feed_es" in line]
    argv = shlex.split(line.split("kcing feed_es", 1)[1])
    args = cli.parse_command("feed_es", argv)
    settings = cli.settings_from(args, environ={})
    assert settings.KCI_SOURCE != "legacy", line
    # Into the stack just started: Logstash, not NDJSON files, and not a dry run.
    assert args["--output"] is None and not args["--dry-run"], line
