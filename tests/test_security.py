"""Secrets stay secret, TLS is verified, and nothing from upstream becomes a local path unchecked.

Every test here runs the real `kcing` program against the emulators, as cron would.
"""
from __future__ import annotations

import base64
import json
import shutil
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from urllib.parse import quote, urlsplit

import certifi
import pytest

from kcing.http import new_session
from tests.fakes.api_data import checkout_tree
from tests.fakes.api_replica import ApiReplica
from tests.fakes.elastic_server import ElasticsearchEmulator
from tests.fakes.kibana_server import KibanaEmulator
from tests.fakes.legacy_data import at, boot_item, build_item
from tests.fakes.logstash_emulator import LogstashCluster, LogstashEmulator
from tests.fakes.rogue_http import RogueFront, answer
from tests.faults.tls_front import TlsFront
from tests.faults.world import World
from tests.feedrun import SAMPLES, api_feed_environ, clean_environ, kcing, ledger_states

pytestmark = pytest.mark.skipif(not (SAMPLES / "manifest.json").is_file(), reason="samples/ has no manifest")

LS_USER = "kcing-feeder"
SECRETS = {
    "LS_PASSWORD": "ls-pass-Q7w9Zr4x",
    "ES_PASSWORD": "es-pass-M3k8Td2v",
    "ES_API_KEY": "es-apikey-Vb6Nq1Hs5Lp0",
    "KB_PASSWORD": "kb-pass-Cx2Wf7Jm",
    "KCI_API_TOKEN": "api-token-Hd8Kw3Ys6",
}
# Variables through which requests would pick its own CA bundle instead of kcing's setting.
REQUESTS_BUNDLE_VARIABLES = ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE")


def secret_forms() -> dict:
    """Each secret, and the forms it could leak in: Basic auth header, percent-encoded."""
    forms = {}
    for name, value in SECRETS.items():
        forms[name] = value
        forms[name + " (percent-encoded)"] = quote(value, safe="")
    forms["LS basic auth"] = base64.b64encode(("%s:%s" % (LS_USER, SECRETS["LS_PASSWORD"])).encode()).decode()
    forms["API bearer header"] = "Bearer " + SECRETS["KCI_API_TOKEN"]
    return forms


def leaks(text: str) -> list:
    return [name for name, form in secret_forms().items() if form in text]


def files_beside(db: Path) -> list:
    """The ledger and everything SQLite and the run lock keep beside it."""
    return [path for path in db.parent.iterdir() if path.name.startswith(db.name)]


def world_environ(world: World, **extra) -> dict:
    env = world.environ(LS_USER=LS_USER, **SECRETS)
    env.update(extra)
    for name in REQUESTS_BUNDLE_VARIABLES:
        env.pop(name, None)
    return env


# Secrets ----------------------------------------------------------------------------------------

@pytest.fixture
def secured_world(tmp_path):
    """A world whose Logstash inputs demand LS_USER / LS_PASSWORD."""
    world = World(tmp_path)
    world.logstash = LogstashCluster(store=world.store, user=LS_USER, password=SECRETS["LS_PASSWORD"])
    with world:
        yield world


def _wrong_password(world):
    return world_environ(world, LS_PASSWORD="not-" + SECRETS["LS_PASSWORD"]), 2


def _accepted(world):
    return world_environ(world), 0


def _logstash_down(world):
    for emulator in world.emulators.values():
        emulator.down()
    return world_environ(world, ES_MAX_RETRIES="2"), 3


def _broken_upstream(world):
    build = next(obj for obj in world.catalog.values() if obj.kind == "build")
    lava = next(obj for obj in world.catalog.values() if obj.kind == "lava")
    world.set_file(build.path, None)
    world.set_file(lava.path, b'{"id": 1, "definition": ')
    return world_environ(world), 1


@pytest.mark.parametrize("situation", [_wrong_password, _accepted, _logstash_down, _broken_upstream],
                         ids=["wrong password", "accepted", "Logstash down", "404 and a rejected file"])
def test_secrets_never_reach_output_logs_or_the_ledger(secured_world, tmp_path, situation):
    env, exit_code = situation(secured_world)
    log = tmp_path / "feed.log"
    result = secured_world.run(env, args=["-d", "-l", str(log)])
    assert result.returncode == exit_code, result.stderr
    assert "DEBUG" in log.read_text()  # -d also logs the error's traceback: that text is checked too
    assert_nothing_leaked(result, log, secured_world.db)
    if exit_code == 0:
        expected_header = "Basic " + secret_forms()["LS basic auth"]
        assert all(request.headers.get("authorization") == expected_header
                   for emulator in secured_world.emulators.values() for request in emulator.requests)


def assert_nothing_leaked(result, log: Path, db: Path) -> None:
    for name, text in (("stdout", result.stdout), ("stderr", result.stderr), ("the -l log", log.read_text())):
        assert not leaks(text), "%s shows %s" % (name, leaks(text))
    ledger_files = files_beside(db)
    assert db in ledger_files
    for path in ledger_files:
        text = path.read_bytes().decode("latin-1")
        assert not leaks(text), "%s holds %s" % (path.name, leaks(text))


@pytest.fixture
def api_replica():
    replica = ApiReplica(token=SECRETS["KCI_API_TOKEN"])
    replica.start()
    checkout_tree(replica.corpus, replica.files_url, datetime.now(timezone.utc) - timedelta(days=1))
    yield replica
    replica.stop()


@pytest.mark.parametrize("token, exit_code", [("not-" + SECRETS["KCI_API_TOKEN"], 2), (SECRETS["KCI_API_TOKEN"], 0)],
                         ids=["refused token", "accepted token"])
def test_the_api_token_never_reaches_output_logs_or_the_ledger(api_replica, logstash, tmp_path, token, exit_code):
    db, log = tmp_path / "kcing.db", tmp_path / "feed.log"
    env = api_feed_environ(api_replica, logstash, db, LS_USER=LS_USER, **dict(SECRETS, KCI_API_TOKEN=token))
    result = kcing(["feed_es", "--with-logs", "-d", "-l", str(log)], env, tmp_path)
    assert result.returncode == exit_code, result.stderr
    assert bool(logstash.store) == (exit_code == 0)
    assert_nothing_leaked(result, log, db)


NETRC_PASSWORDS = ("netrc-host-pass-Zq81", "netrc-default-pass-Pw77")


def netrc_naming_every_host(tmp_path: Path) -> Path:
    """A ~/.netrc such as a developer's machine has: an entry for the loopback host every server
    here listens on, and a `default` entry, which netrc readers apply to any other host."""
    path = tmp_path / "netrc"
    path.write_text("machine 127.0.0.1 login me password %s\ndefault login anyone password %s\n" % NETRC_PASSWORDS)
    path.chmod(0o600)
    return path


def carries_netrc_credentials(request) -> bool:
    header = request.headers.get("authorization", "")
    return header.startswith("Basic ") and any(password in base64.b64decode(header[6:]).decode()
                                               for password in NETRC_PASSWORDS)


def test_netrc_credentials_never_go_upstream_nor_replace_the_api_token(api_replica, logstash, tmp_path):
    """requests sent ~/.netrc's credentials with every upstream request, its `default` entry to
    any host (the KernelCI API, storage, an artifact host, a redirect's target); and an entry
    for the API's host replaced KCI_API_TOKEN, which the API then refused (exit 2)."""
    db = tmp_path / "kcing.db"
    env = api_feed_environ(api_replica, logstash, db, NETRC=str(netrc_naming_every_host(tmp_path)),
                           KCI_API_TOKEN=SECRETS["KCI_API_TOKEN"])
    result = kcing(["feed_es", "--with-logs"], env, tmp_path)
    assert result.returncode == 0, result.stderr
    assert api_replica.listing_requests() and api_replica.file_requests()
    assert not any(carries_netrc_credentials(request) for request in api_replica.requests)
    assert all(request.headers.get("authorization") == "Bearer " + SECRETS["KCI_API_TOKEN"]
               for request in api_replica.listing_requests())
    assert not any("authorization" in request.headers for request in api_replica.file_requests())


def test_a_redirect_to_another_origin_carries_neither_the_token_nor_netrc_credentials(tmp_path, monkeypatch):
    """Upstream sessions (no ~/.netrc) follow a redirect as requests does, less the netrc: the
    Authorization header given for one origin (KCI_API_TOKEN) is dropped for another origin,
    and nothing from the netrc replaces it there."""
    from tests.fakes.rogue_http import redirect
    monkeypatch.setenv("NETRC", str(netrc_naming_every_host(tmp_path)))
    seen = []

    def recorded(front, sock, request) -> bool:
        seen.append({name.lower(): value for name, value in request.headers.items()})
        return answer(200, (("Content-Type", "application/json"),), b"{}")(front, sock, request)

    with RogueFront() as target, RogueFront() as first:
        target.on("GET", "/file", recorded)
        first.on("GET", "/file", redirect(302, target.url + "/file"))
        session = new_session(netrc=False)
        answered = session.get(first.url + "/file", headers={"Authorization": "Bearer tok-Xq41"}, timeout=10)
    assert answered.status_code == 200 and len(seen) == 1
    assert "authorization" not in seen[0], seen[0]


def test_netrc_credentials_never_go_to_the_legacy_site_or_its_storage(tmp_path):
    with World(tmp_path) as world:
        result = world.run(world_environ(world, NETRC=str(netrc_naming_every_host(tmp_path))))
        assert result.returncode == 0, result.stderr
        upstream = list(world.replica.frontend.requests) + list(world.replica.storage.requests)
        assert upstream and not any("authorization" in request.headers for request in upstream)


def test_kibana_gets_credentials_from_the_netrc_entry_for_its_host_alone(tmp_path):
    """With KB_USER unset, requests sent Kibana the netrc `default` entry, meant for any host."""
    netrc = tmp_path / "netrc"
    netrc.write_text("machine elsewhere.example login me password netrc-host-pass-Zq81\n"
                     "default login anyone password netrc-default-pass-Pw77\n")
    netrc.chmod(0o600)
    with KibanaEmulator() as kibana:
        exported = kcing(["backup_kbn", "--dry-run", "--kibana-dir", str(tmp_path / "kibana")],
                         clean_environ(KB_URL=kibana.url, NETRC=str(netrc)), tmp_path)
        assert exported.returncode == 0, exported.stderr
        assert kibana.requests and not any("authorization" in request.headers for request in kibana.requests)
        netrc.write_text("machine 127.0.0.1 login me password netrc-host-pass-Zq81\n")
        exported = kcing(["backup_kbn", "--dry-run", "--kibana-dir", str(tmp_path / "kibana")],
                         clean_environ(KB_URL=kibana.url, NETRC=str(netrc)), tmp_path)
        assert exported.returncode == 0, exported.stderr
        assert kibana.requests[-1].headers["authorization"] == "Basic " + base64.b64encode(
            b"me:netrc-host-pass-Zq81").decode()


def test_credentials_written_into_a_logstash_url_are_refused_without_being_shown(tmp_path):
    with World(tmp_path) as world:
        url = "http://%s:%s@127.0.0.1:%d" % (LS_USER, SECRETS["LS_PASSWORD"], world.emulators["lava"].port)
        env = world_environ(world, ES_LAVA=url)
        result = kcing(["feed_es", "-l", str(tmp_path / "feed.log")], env, tmp_path)
        assert result.returncode == 2
        assert "ES_LAVA" in result.stderr and len(result.stderr.strip().splitlines()) == 1
        assert not leaks(result.stderr + result.stdout + (tmp_path / "feed.log").read_text())


def echoing_credentials(status: int):
    """An answer quoting the credentials its request carried, as an echo service or stub at the
    wrong URL does, or an error page naming what it refused: the header as sent, and decoded, as
    the `detail` of a JSON error (what the KernelCI API answers and kcing quotes)."""
    def echoed(front, sock, request) -> bool:
        header = next((value for name, value in request.headers.items() if name.lower() == "authorization"), "")
        scheme, _, credentials = header.partition(" ")
        decoded = base64.b64decode(credentials).decode() if scheme == "Basic" else credentials
        body = json.dumps({"detail": "refused %s, Authorization: %s" % (decoded, header)}).encode()
        return answer(status, (("Content-Type", "application/json"),), body)(front, sock, request)
    return echoed


def _feed_to_an_echoing_input(front_url, tmp_path):
    routes = {"ES_%s" % route: front_url for route in ("BUILD", "LAVA", "BOOT", "REGRESSION")}
    env = clean_environ(KCI_SOURCE="samples", KCI_SAMPLES_DIR=str(SAMPLES), KCING_DB=str(tmp_path / "kcing.db"),
                        LS_USER=LS_USER, ES_MAX_RETRIES="1", **SECRETS, **routes)
    return ["feed_es"], env


def _api_behind_an_echoing_proxy(front_url, tmp_path):
    env = clean_environ(KCI_SOURCE="api", KCI_API_URL=front_url, KCING_DB=str(tmp_path / "kcing.db"),
                        KCI_MAX_RETRIES="1", **SECRETS)
    return ["feed_es", "--output", str(tmp_path / "out")], env


def _elasticsearch_behind_an_echoing_proxy(front_url, tmp_path):
    env = clean_environ(ES_HOST=front_url, ES_USER=LS_USER, KCING_DB=str(tmp_path / "kcing.db"),
                        **dict(SECRETS, ES_API_KEY=""))
    return ["drp", "--dry-run"], env


def _kibana_behind_an_echoing_proxy(front_url, tmp_path):
    env = clean_environ(KB_URL=front_url, KB_USER="elastic", **SECRETS)
    return ["backup_kbn", "--dry-run", "--wait", "5", "--kibana-dir", str(tmp_path / "kibana")], env


@pytest.mark.parametrize("situation, status, exit_code", [
    (_feed_to_an_echoing_input, 200, 2), (_feed_to_an_echoing_input, 400, 3),
    (_api_behind_an_echoing_proxy, 401, 2), (_elasticsearch_behind_an_echoing_proxy, 400, 3),
    (_kibana_behind_an_echoing_proxy, 400, 2),
], ids=["Logstash URL answering 200", "Logstash URL answering 400", "KernelCI API", "Elasticsearch", "Kibana"])
def test_credentials_a_server_echoes_back_are_masked_in_the_error(tmp_path, situation, status, exit_code):
    """The error quoting the answer printed the password on stderr (only the log masked it), and
    the Authorization header, base64 of user:password, on stderr and in the log alike."""
    with RogueFront() as front:
        front.on("POST", "", echoing_credentials(status)).on("GET", "", echoing_credentials(status))
        args, env = situation(front.url, tmp_path)
        log = tmp_path / "run.log"
        result = kcing(args + ["-l", str(log)], env, tmp_path)
    assert result.returncode == exit_code, result.stderr
    assert "refused " in result.stderr  # the answer is quoted, what it echoed masked
    for name, text in (("stdout", result.stdout), ("stderr", result.stderr), ("the -l log", log.read_text())):
        assert not leaks(text) and not partial_leaks(text), "%s shows %s: %s" % (name, leaks(text), text)


NETRC_USER, NETRC_PASSWORD = "netrc-user", "netrc-pass-Rt5Yh2Wq"


def _feed_with_netrc_credentials(front_url, tmp_path):
    routes = {"ES_%s" % route: front_url for route in ("BUILD", "LAVA", "BOOT", "REGRESSION")}
    env = clean_environ(KCI_SOURCE="samples", KCI_SAMPLES_DIR=str(SAMPLES), KCING_DB=str(tmp_path / "kcing.db"),
                        ES_MAX_RETRIES="1", **routes)
    return ["feed_es"], env


def _kibana_with_netrc_credentials(front_url, tmp_path):
    env = clean_environ(KB_URL=front_url)
    return ["backup_kbn", "--dry-run", "--wait", "5", "--kibana-dir", str(tmp_path / "kibana")], env


@pytest.mark.parametrize("situation, status, exit_code", [
    (_feed_with_netrc_credentials, 200, 2), (_kibana_with_netrc_credentials, 400, 2),
], ids=["Logstash", "Kibana"])
def test_netrc_credentials_a_server_echoes_back_are_masked_in_the_error(tmp_path, situation, status, exit_code):
    """Credentials taken from ~/.netrc were not masked as LS_PASSWORD and KB_PASSWORD are: an
    echoing server got its Authorization header printed on stderr and in the log."""
    netrc = tmp_path / "netrc"
    netrc.write_text("machine 127.0.0.1 login %s password %s\n" % (NETRC_USER, NETRC_PASSWORD))
    netrc.chmod(0o600)
    encoded = base64.b64encode(("%s:%s" % (NETRC_USER, NETRC_PASSWORD)).encode()).decode()
    with RogueFront() as front:
        front.on("POST", "", echoing_credentials(status)).on("GET", "", echoing_credentials(status))
        args, env = situation(front.url, tmp_path)
        log = tmp_path / "run.log"
        result = kcing(args + ["-l", str(log)], dict(env, NETRC=str(netrc)), tmp_path)
    assert result.returncode == exit_code, result.stderr
    assert "refused " in result.stderr  # the answer is quoted, what it echoed masked
    for name, text in (("stdout", result.stdout), ("stderr", result.stderr), ("the -l log", log.read_text())):
        assert NETRC_PASSWORD not in text and encoded not in text, "%s shows them: %s" % (name, text)


PROXY_USER, PROXY_PASSWORD = "proxy-user", "proxy-pass-Kd9Wm3Vz"


def echoing_proxy_credentials(status: int):
    """A proxy's answer quoting the Proxy-Authorization its request carried, as an error page
    naming what it refused does, in a JSON error's `detail`."""
    def echoed(front, sock, request) -> bool:
        header = next((value for name, value in request.headers.items() if name.lower() == "proxy-authorization"), "")
        body = json.dumps({"detail": header}).encode()
        return answer(status, (("Content-Type", "application/json"),), body)(front, sock, request)
    return echoed


def _feed_through_an_echoing_proxy(tmp_path):
    routes = {"ES_%s" % route: "http://logstash.test:8080" for route in ("BUILD", "LAVA", "BOOT", "REGRESSION")}
    env = clean_environ(KCI_SOURCE="samples", KCI_SAMPLES_DIR=str(SAMPLES), KCING_DB=str(tmp_path / "kcing.db"),
                        ES_MAX_RETRIES="1", **routes)
    return ["feed_es"], env, 2


def _api_through_an_echoing_proxy(tmp_path):
    env = clean_environ(KCI_SOURCE="api", KCI_API_URL="http://api.test", KCING_DB=str(tmp_path / "kcing.db"),
                        KCI_MAX_RETRIES="1")
    return ["feed_es", "--output", str(tmp_path / "out")], env, 2


@pytest.mark.parametrize("situation", [_feed_through_an_echoing_proxy, _api_through_an_echoing_proxy],
                         ids=["Logstash", "KernelCI API"])
def test_proxy_credentials_a_proxy_echoes_back_are_masked_in_the_error(tmp_path, situation):
    """The Proxy-Authorization sent for HTTP_PROXY's user and password, quoted back by the proxy,
    was printed on stderr and in the log: no setting holds them, so nothing masked them."""
    encoded = base64.b64encode(("%s:%s" % (PROXY_USER, PROXY_PASSWORD)).encode()).decode()
    with RogueFront() as front:
        front.on("POST", "", echoing_proxy_credentials(200)).on("GET", "", echoing_proxy_credentials(401))
        args, env, exit_code = situation(tmp_path)
        proxy = "http://%s:%s@127.0.0.1:%d" % (PROXY_USER, PROXY_PASSWORD, urlsplit(front.url).port)
        log = tmp_path / "run.log"
        result = kcing(args + ["-l", str(log)], dict(env, HTTP_PROXY=proxy, NO_PROXY=""), tmp_path)
    assert result.returncode == exit_code, result.stderr
    assert "Basic ***" in result.stderr  # the answer is quoted, what it echoed masked
    for name, text in (("stdout", result.stdout), ("stderr", result.stderr), ("the -l log", log.read_text())):
        assert PROXY_PASSWORD not in text and encoded not in text, "%s shows them: %s" % (name, text)


def test_proxy_credentials_sent_in_latin_1_and_echoed_back_are_masked_in_the_error(tmp_path):
    """requests sends a proxy's user and password in latin-1 where they fit: a password of
    non-ASCII letters gives another Proxy-Authorization than its UTF-8, and that one is echoed."""
    password = "proxy-p\u00e4ss-Kd9Wm3Vz"
    encoded = base64.b64encode(("%s:%s" % (PROXY_USER, password)).encode("latin-1")).decode()
    with RogueFront() as front:
        front.on("POST", "", echoing_proxy_credentials(200)).on("GET", "", echoing_proxy_credentials(401))
        args, env, exit_code = _feed_through_an_echoing_proxy(tmp_path)
        proxy = "http://%s:%s@127.0.0.1:%d" % (PROXY_USER, quote(password, safe=""), urlsplit(front.url).port)
        result = kcing(args, dict(env, HTTP_PROXY=proxy, NO_PROXY=""), tmp_path)
    assert result.returncode == exit_code, result.stderr
    assert "Basic ***" in result.stderr, result.stderr
    assert encoded not in result.stderr and password not in result.stderr, result.stderr


# A password whose Authorization value (base64 of user:password) holds a "/", which JSON may escape.
SLASHED_PASSWORD = "l?s-pass-Q7w9Zr4x"


def _folded(header: str) -> bytes:
    return ("Authorization: " + "\n".join(header[start:start + 6] for start in range(0, len(header), 6))).encode()


def _escaped_in_json(header: str) -> bytes:
    return json.dumps({"authorization": header}).replace("/", "\\/").encode()


@pytest.mark.parametrize("quoted", [_folded, _escaped_in_json], ids=["split across lines", "escaped in JSON"])
def test_credentials_an_echo_quotes_in_another_form_are_masked_in_the_error(tmp_path, quoted):
    """An answer quoting the Authorization header folded over lines, or written in JSON with its
    "/" escaped (as PHP writes it), got most of it printed: only the exact text was masked."""
    def echoed(front, sock, request) -> bool:
        header = next((value for name, value in request.headers.items() if name.lower() == "authorization"), "")
        return answer(200, (("Content-Type", "text/plain"),), quoted(header))(front, sock, request)
    encoded = base64.b64encode(("%s:%s" % (LS_USER, SLASHED_PASSWORD)).encode()).decode()
    assert "/" in encoded
    with RogueFront() as front:
        front.on("POST", "", echoed)
        args, env = _feed_to_an_echoing_input(front.url, tmp_path)
        log = tmp_path / "run.log"
        result = kcing(args + ["-l", str(log)], dict(env, LS_PASSWORD=SLASHED_PASSWORD), tmp_path)
    assert result.returncode == 2, result.stderr
    assert "***" in result.stderr  # the answer is quoted, what it echoed masked
    # What is left of the header once the quote is read back as it was sent.
    for name, text in (("stdout", result.stdout), ("stderr", result.stderr), ("the -l log", log.read_text())):
        joined = "".join(text.replace("\\/", "/").split())
        assert not any(encoded[start:start + 8] in joined for start in range(len(encoded) - 7)), \
            "%s shows part of it: %s" % (name, text)


def partial_leaks(text: str) -> list:
    """The secrets of which a part is in `text`: an answer quoted cut short must not cut a secret
    short either. Basic auth forms are looked for past what encodes the user alone."""
    parts = {}
    for name, value in SECRETS.items():
        parts.update({(name, start): value[start:start + 6] for start in range(len(value) - 5)})
    for user, password in ((LS_USER, SECRETS["LS_PASSWORD"]), (LS_USER, SECRETS["ES_PASSWORD"]),
                           ("elastic", SECRETS["KB_PASSWORD"])):
        encoded = base64.b64encode(("%s:%s" % (user, password)).encode()).decode()
        first = len(base64.b64encode(user.encode())) // 4 * 4
        parts.update({("basic auth of " + user, start): encoded[start:start + 8]
                      for start in range(first, len(encoded) - 7)})
    return sorted({name for (name, _), part in parts.items() if part in text})


# TLS ------------------------------------------------------------------------------------------

def test_sessions_verify_certificates_unless_given_a_bundle(tmp_path):
    # certifi's bundle by name: a session's `True` gives way to REQUESTS_CA_BUNDLE and CURL_CA_BUNDLE.
    assert new_session(verify="").verify == certifi.where()
    bundle = tmp_path / "ca.pem"
    assert new_session(verify=str(bundle)).verify == str(bundle)


@pytest.fixture
def https_logstash(tmp_path, certificate):
    """A world whose three Logstash inputs are reached over https with a self-signed certificate."""
    with World(tmp_path) as world:
        fronts = {route: TlsFront(emulator.port, *certificate) for route, emulator in world.emulators.items()}
        for front in fronts.values():
            front.start()
        world.fronts = fronts
        yield world
        for front in fronts.values():
            front.stop()


def https_routes(world) -> dict:
    return {"ES_%s" % route.upper(): front.url for route, front in world.fronts.items()}


def one_line_error(result) -> str:
    assert "Traceback" not in result.stderr, result.stderr
    return result.error_line or ""


def test_a_self_signed_logstash_is_refused_cleanly_without_a_bundle(https_logstash):
    world = https_logstash
    result = world.run(world_environ(world, ES_MAX_RETRIES="3", **https_routes(world)))
    # An untrusted certificate is configuration, not an outage: no retries, and the fix is named.
    assert result.returncode == 2
    error = one_line_error(result)
    assert "not trusted" in error and "LS_CA_BUNDLE" in error, result.stderr
    assert not world.store.snapshot()
    assert not any(emulator.requests for emulator in world.emulators.values())
    assert sum(front.handshake_failures for front in world.fronts.values()) >= 1
    assert "delivered" not in set(ledger_states(world.db).values())


def test_ls_ca_bundle_makes_the_self_signed_logstash_trusted(https_logstash, certificate):
    world = https_logstash
    result = world.run(world_environ(world, LS_CA_BUNDLE=str(certificate[0]), **https_routes(world)))
    assert result.returncode == 0, result.stderr
    assert world.stored() == world.expected()


@pytest.fixture
def https_upstream(tmp_path, certificate):
    """A world whose replica (frontend and storage) is reached over https with a self-signed certificate."""
    with World(tmp_path) as world:
        fronts = [TlsFront(urlsplit(server.url).port, *certificate)
                  for server in (world.replica.frontend, world.replica.storage)]
        for front in fronts:
            front.start()
        world.upstream_settings = {"KCI_SCHEME": "https", "KCI_HOST": fronts[0].url.split("://", 1)[1],
                                   "KCI_STORAGE_URL": fronts[1].url}
        yield world
        for front in fronts:
            front.stop()


def test_a_self_signed_upstream_is_refused_cleanly_without_a_bundle(https_upstream):
    world = https_upstream
    result = world.run(world_environ(world, KCI_MAX_RETRIES="3", **world.upstream_settings))
    assert result.returncode == 2
    error = one_line_error(result)
    assert "not trusted" in error and "KCI_CA_BUNDLE" in error, result.stderr
    assert not world.replica.frontend.requests


def test_kci_ca_bundle_makes_the_self_signed_upstream_trusted(https_upstream, certificate):
    world = https_upstream
    result = world.run(world_environ(world, KCI_CA_BUNDLE=str(certificate[0]), **world.upstream_settings))
    assert result.returncode == 0, result.stderr
    assert world.stored() == world.expected()


@pytest.mark.parametrize("variable", REQUESTS_BUNDLE_VARIABLES)
def test_ls_ca_bundle_wins_over_the_requests_bundle_variables(https_logstash, certificate, variable):
    world = https_logstash
    env = world_environ(world, LS_CA_BUNDLE=str(certificate[0]), **https_routes(world))
    env[variable] = certifi.where()  # the usual public bundle, as many machines set it
    result = world.run(env)
    assert result.returncode == 0, result.stderr


def test_kci_ca_bundle_wins_over_requests_ca_bundle(https_upstream, certificate):
    world = https_upstream
    env = world_environ(world, KCI_CA_BUNDLE=str(certificate[0]), **world.upstream_settings)
    env["REQUESTS_CA_BUNDLE"] = certifi.where()
    result = world.run(env)
    assert result.returncode == 0, result.stderr


def test_a_missing_ls_ca_bundle_is_a_one_line_configuration_error(https_logstash, tmp_path):
    world = https_logstash
    missing = tmp_path / "no-such-ca.pem"
    result = world.run(world_environ(world, LS_CA_BUNDLE=str(missing), **https_routes(world)))
    assert result.returncode == 2
    assert "LS_CA_BUNDLE" in one_line_error(result)


def test_a_missing_kci_ca_bundle_is_a_one_line_configuration_error(https_upstream, tmp_path):
    world = https_upstream
    missing = tmp_path / "no-such-ca.pem"
    result = world.run(world_environ(world, KCI_CA_BUNDLE=str(missing), **world.upstream_settings))
    assert result.returncode == 2
    assert "KCI_CA_BUNDLE" in one_line_error(result)


def test_a_kci_ca_bundle_without_a_certificate_is_a_one_line_configuration_error(https_upstream, tmp_path):
    """It was found only by the first download: every one failed as if upstream were down
    ("failed 3 times (last: connection failed)", exit 1), without a word of KCI_CA_BUNDLE."""
    world = https_upstream
    bundle = tmp_path / "ca.pem"
    bundle.write_text("not a certificate\n")
    result = world.run(world_environ(world, KCI_CA_BUNDLE=str(bundle), **world.upstream_settings))
    assert result.returncode == 2, result.stderr
    assert one_line_error(result) == ("kcing feed_es: KCI_CA_BUNDLE %s holds no CA certificate that can be loaded "
                                      "(NO_CERTIFICATE_OR_CRL_FOUND)" % bundle)
    assert not world.replica.frontend.requests


@pytest.mark.parametrize("variable", REQUESTS_BUNDLE_VARIABLES)
def test_the_requests_bundle_variables_never_make_an_upstream_trusted(https_upstream, certificate, variable):
    """With KCI_CA_BUNDLE empty they replaced certifi's bundle, as requests reads them."""
    world = https_upstream
    env = world_environ(world, **world.upstream_settings)
    env[variable] = str(certificate[0])
    result = world.run(env)
    assert result.returncode == 2, result.stderr
    assert "not trusted" in one_line_error(result) and "KCI_CA_BUNDLE" in one_line_error(result)
    assert not world.replica.frontend.requests


@pytest.fixture
def https_kibana(certificate):
    with KibanaEmulator() as kibana:
        front = TlsFront(urlsplit(kibana.url).port, *certificate)
        front.start()
        yield front
        front.stop()


def backup_kbn(kibana_url: str, tmp_path: Path, **settings: str):
    return kcing(["backup_kbn", "--dry-run", "--wait", "30", "--kibana-dir", str(tmp_path / "kibana")],
                 clean_environ(KB_URL=kibana_url, **settings), tmp_path, timeout=60)


@pytest.mark.parametrize("variable", (None, *REQUESTS_BUNDLE_VARIABLES))
def test_a_self_signed_kibana_is_refused_at_once_naming_kb_ca_bundle(https_kibana, certificate, tmp_path, variable):
    """Kibana had no CA bundle setting: its certificate refused was waited on as a Kibana not yet
    ready, for all of --wait, then exit 3; and REQUESTS_CA_BUNDLE or CURL_CA_BUNDLE applied to it."""
    started = time.monotonic()
    refused = backup_kbn(https_kibana.url, tmp_path, **({variable: str(certificate[0])} if variable else {}))
    assert refused.returncode == 2, refused.stderr
    assert refused.stderr == ("kcing backup_kbn: the TLS certificate of Kibana at %s is not trusted: point "
                              "KB_CA_BUNDLE at the CA bundle that signed it\n" % https_kibana.url)
    assert time.monotonic() - started < 20


def test_an_https_kb_url_at_a_plain_http_kibana_is_refused_at_once_naming_the_scheme(tmp_path):
    """An https:// KB_URL at a Kibana serving plain HTTP was waited on as a Kibana not yet ready,
    for all of --wait ("no TLS at that port" every 10 s), then exit 3: no wait makes it speak TLS."""
    with KibanaEmulator() as kibana:
        https_url = kibana.url.replace("http://", "https://")
        started = time.monotonic()
        refused = backup_kbn(https_url, tmp_path)
    assert refused.returncode == 2, refused.stderr
    assert refused.stderr == ("kcing backup_kbn: Kibana at %s answers without TLS at that port: check KB_URL's "
                              "scheme (is it an http:// server?)\n" % https_url)
    assert time.monotonic() - started < 20


def test_kb_ca_bundle_makes_the_self_signed_kibana_trusted(https_kibana, certificate, tmp_path):
    done = backup_kbn(https_kibana.url, tmp_path, KB_CA_BUNDLE=str(certificate[0]))
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("backup_kbn: dry run: would write 0 objects")
    (tmp_path / "ca.pem").write_text("not a certificate\n")
    refused = backup_kbn(https_kibana.url, tmp_path, KB_CA_BUNDLE=str(tmp_path / "ca.pem"))
    assert refused.returncode == 2
    assert refused.stderr == ("kcing backup_kbn: KB_CA_BUNDLE %s holds no CA certificate that can be loaded "
                              "(NO_CERTIFICATE_OR_CRL_FOUND)\n" % (tmp_path / "ca.pem"))


def test_an_empty_es_ca_bundle_trusts_the_system_store_as_well_as_certifis_bundle(certificate, tmp_path):
    """The Elasticsearch client trusts the system store whatever ES_CA_BUNDLE says (SSL_CERT_FILE
    names it here), where the settings table said that an empty one meant certifi's bundle alone,
    as it does for Kibana."""
    from kcing.settings import SPECS
    with ElasticsearchEmulator() as es:
        front = TlsFront(urlsplit(es.url).port, *certificate)
        front.start()
        try:
            env = clean_environ(ES_HOST=front.url, KCING_DB=str(tmp_path / "kcing.db"))
            refused = kcing(["drp", "--dry-run"], env, tmp_path)
            trusted = kcing(["drp", "--dry-run"], dict(env, SSL_CERT_FILE=str(certificate[0])), tmp_path)
        finally:
            front.stop()
    assert refused.returncode == 2 and "CERTIFICATE_VERIFY_FAILED" in refused.stderr, refused.stderr
    assert trusted.returncode == 0, trusted.stderr
    assert SPECS["ES_CA_BUNDLE"].help.endswith("empty means certifi's bundle (Mozilla's CAs), with the "
                                                      "system store too")


@pytest.mark.parametrize("password", ["pässwort", "пароль"])
def test_elasticsearch_and_kibana_passwords_beyond_ascii_are_sent_as_they_read_them(password, tmp_path):
    """In UTF-8: the Elasticsearch client refused any such password as "cannot use ES_HOST ...:
    'ascii' codec can't encode", and requests sent Kibana Latin-1 (401) or failed (exit 70)."""
    with ElasticsearchEmulator(user="elastic", password=password) as es, \
            KibanaEmulator(user="elastic", password=password) as kibana:
        env = clean_environ(ES_HOST=es.url, ES_USER="elastic", ES_PASSWORD=password, KB_URL=kibana.url,
                            KB_USER="elastic", KB_PASSWORD=password, KCING_DB=str(tmp_path / "kcing.db"))
        pruned = kcing(["drp", "--dry-run"], env, tmp_path)
        assert pruned.returncode == 0, pruned.stderr
        exported = kcing(["backup_kbn", "--dry-run", "--kibana-dir", str(tmp_path / "kibana")], env, tmp_path)
        assert exported.returncode == 0, exported.stderr
        assert not es.errors and not kibana.errors


@pytest.mark.parametrize("setting, value, reason", [
    ("LS_PASSWORD", "pass\udcffword", "it holds bytes that are not UTF-8 text"),  # byte 0xff, as cron passes it
    ("KB_USER", "\udce4dmin", "it holds bytes that are not UTF-8 text"),
    ("KCI_API_TOKEN", "токен", "a token is printable ASCII without spaces"),
    ("ES_API_KEY", "key with spaces", "a token is printable ASCII without spaces"),
])
def test_a_credential_no_request_can_carry_is_refused_at_start_naming_it(setting, value, reason, tmp_path):
    """Refused by every command, as any bad setting is: it failed in the first request that
    carried it (an internal error, exit 70), or went unseen until a command sent it."""
    given = dict(KCI_SOURCE="samples", KCI_SAMPLES_DIR=str(SAMPLES), KCING_DB=str(tmp_path / "kcing.db"),
                 LS_USER="kcing", LS_PASSWORD="secret-ls")
    env = clean_environ(**dict(given, **{setting: value}))
    refused = kcing(["feed_es"], env, tmp_path)
    assert refused.returncode == 2, refused.stderr
    shown = "***" if setting in SECRETS else repr(value)
    assert refused.stderr.splitlines()[-1] == "kcing feed_es: invalid %s=%s (from environment): %s" % (
        setting, shown, reason)
    assert not (tmp_path / "kcing.db").exists()


# Upstream names never become paths unchecked -----------------------------------------------------

@pytest.fixture
def canary():
    """A server that must never be asked anything: hostile listing items point at it."""
    with LogstashEmulator(name="canary") as server:
        yield server


def hostile_items(world: World, canary_host: str) -> list:
    """Listing items whose storage path pieces try to leave the storage root or the storage host."""
    today = world.today
    resources = ["../../../../etc", "next/../../../../etc/passwd", "%2e%2e/%2e%2e/etc", "..\\..\\windows",
                 "next/master/v1\x00/arm", "next/master/a?b=c", "next/master/a#x", "next/master/v1\r\nX-Evil: 1",
                 "http://%s/x" % canary_host, "next/@%s/x" % canary_host, ""]
    items = []
    for number, resource in enumerate(resources):
        item = build_item("hostile", "v0.%d" % number, "arm64", "defconfig", at(today, 0, 1))
        item["file_server_resource"] = resource
        if not resource:
            item["job"] = "../.."  # the fallback path must be checked too
        items.append(("build", item))
    base = build_item("hostile", "v0.base", "arm64", "defconfig", at(today, 0, 1))
    for lab, board in (("../../../../tmp/evil-lab", "b"), ("lab/../../x", "b"), ("lab-x", "../../../x"),
                       ("lab-x", "x/../../../y"), ("..", "b"), ("lab-x", "b?c=d"), ("http:", "//%s" % canary_host)):
        items.append(("boot", boot_item(base, lab, board, at(today, 0, 2))))
    return items


def test_hostile_storage_paths_are_rejected_and_never_requested(tmp_path, canary):
    with World(tmp_path) as world:
        hostile = hostile_items(world, "127.0.0.1:%d" % canary.port)
        for collection, item in hostile:
            world.corpus.add_item(collection, item)
        result = world.run(world_environ(world))
        assert result.returncode == 1, result.stderr
        assert "Traceback" not in result.stderr and result.error_line is None
        ids = {item["_id"]["$oid"] for _, item in hostile}
        rows = world.ledger_rows()
        assert {upstream_id for (_, upstream_id) in result.problems} == ids
        for (kind, upstream_id), reason in result.problems.items():
            assert rows[(kind, upstream_id)]["state"] == "rejected"
            assert reason.startswith("unsafe storage path segment"), reason
        served = set(world.corpus.paths())
        asked = {request.path.lstrip("/") for request in world.replica.storage.requests}
        assert asked <= served, "storage was asked for %s" % sorted(asked - served)
        assert not canary.requests
        assert world.stored() == world.expected()
    assert not Path("/tmp/evil-lab").exists()


def test_a_samples_manifest_cannot_make_the_feed_read_outside_its_directory(tmp_path):
    """`--source samples` replays a manifest gen_samples wrote from upstream data: its paths are checked."""
    samples = tmp_path / "samples"
    shutil.copytree(SAMPLES, samples)
    secret_build = json.loads((SAMPLES / "build" / "5fa2773359b5140d3b3a61d1.json").read_text())
    secret_build["kernel"] = "outside-the-samples-directory"
    outside = tmp_path / "outside.json"
    outside.write_text(json.dumps(secret_build))
    (samples / "build" / "link.json").symlink_to(outside)
    manifest = json.loads((samples / "manifest.json").read_text())
    template = next(entry for entry in manifest["objects"] if entry["kind"] == "build")
    hostile_paths = ["../outside.json", str(outside), "build/../../outside.json", "build/link.json", "build/\x00.json"]
    for number, path in enumerate(hostile_paths):
        manifest["objects"].append(dict(template, upstream_id="%024x" % (number + 1), path=path))
    (samples / "manifest.json").write_text(json.dumps(manifest))
    out = tmp_path / "out"
    result = kcing(["feed_es", "--source", "samples", "--samples-dir", str(samples), "--output", str(out),
                    "--db", str(tmp_path / "kcing.db")], clean_environ(), tmp_path)
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert result.stdout.count("is not a file inside") == len(hostile_paths), result.stdout
    assert result.stdout.count("a symbolic link on the way leads out of it") == 1, result.stdout  # build/link.json
    written = "".join(path.read_text() for path in out.glob("*.ndjson"))
    assert written and "outside-the-samples-directory" not in written
    states = ledger_states(tmp_path / "kcing.db")
    assert all(states[("build", "%024x" % (number + 1))] == "rejected" for number in range(len(hostile_paths)))



@pytest.mark.parametrize("secret, message, expected", [
    ("p", "run stopped: http://kcing:p@127.0.0.1:9/ refused p", "run stopped: http://***@127.0.0.1:9/ refused ***"),
    ("ab1", "the key ab1, and abc1 or xab1 are other words", "the key ***, and abc1 or xab1 are other words"),
    ("s3cret-value", "token=s3cret-value;xs3cret-valuex", "token=***;x***x"),
    # Seven characters are still short: masked inside a longer word, it would tell the password.
    ("kernel7", "GET kernel7ci.org with kernel7", "GET kernel7ci.org with ***"),
    # Eight are not: masked wherever they appear.
    ("12345678", "id=x12345678y", "id=x***y"),
])
def test_a_secret_is_masked_in_logs_and_a_short_one_only_where_it_stands_alone(secret, message, expected):
    # A one-letter password masked everywhere made each line unreadable ("htt***://") and told
    # which letter it is; a long one is masked wherever it appears.
    import logging
    from kcing.logs import RedactSecrets
    record = logging.LogRecord("kcing", logging.INFO, __file__, 1, "%s", (message,), None)
    assert RedactSecrets([secret, ""]).filter(record)
    assert record.getMessage() == expected


def test_a_secret_is_masked_also_as_a_url_carries_it():
    """An echoed request quotes a password percent-encoded (in a URL, a form) as often as plain."""
    from types import SimpleNamespace
    from kcing.secrecy import Masker
    from kcing.settings import SECRET_NAMES, secret_texts
    values = dict(dict.fromkeys(SECRET_NAMES, ""), ES_PASSWORD="pa/ss@word 1")
    given = SimpleNamespace(**values, LS_USER="", ES_USER="", KB_USER="")
    masked = Masker(secret_texts(given))
    assert masked("proxy refused pa%2Fss%40word%201 and pa/ss@word 1") == "proxy refused *** and ***"


def test_a_secret_holding_another_is_masked_whole():
    """Two settings' secrets, one inside the other (a password and the same with a suffix, as
    for two services): the shorter one masked first left the longer one's rest readable."""
    from kcing.secrecy import Masker
    masked = Masker(["hunter2hunter2", "hunter2hunter2-for-kibana"])
    assert masked("refused hunter2hunter2-for-kibana and hunter2hunter2") == "refused *** and ***"
    # Short ones alike: "pw" matched first within "pw-1" left "-1" readable.
    assert Masker(["pw", "pw-1"])("refused pw-1 and pw") == "refused *** and ***"


@pytest.mark.parametrize("quoted", [
    "p\\u00e4ss+w/ord-1", "p\\u00E4ss\\u002bw\\/ord-1", "p\u00e4ss\\+w/ord-1", "p\u00e4s\ns+w/\r\n ord-1", "p\u00e4ss+w/or\\nd-1",
], ids=["non-ASCII escaped in JSON", "every sign escaped", "a sign escaped by a backslash", "split by line breaks",
        "split by an escaped line break"])
def test_a_secret_is_masked_in_the_forms_an_answer_quotes_it(quoted):
    from kcing.secrecy import Masker
    assert Masker(["p\u00e4ss+w/ord-1"])("refused %s, try again" % quoted) == "refused ***, try again"
    assert Masker(["p\u00e4ss+w/ord-1"])("refused p\u00e4ss-w/ord-1") == "refused p\u00e4ss-w/ord-1"


def test_a_secret_is_masked_in_time_linear_in_the_runs_of_breaks_in_the_text():
    """A passphrase's first word, or a password's characters before its backslash and n, then a
    long run of what may split a quoted secret (a page's indentation, escaped line breaks): each
    way of cutting the run between the breaks and the secret's own space (or backslash and n) was
    tried, in time quadratic in the run (4,000 spaces took 0.2 s, a megabyte would take hours)."""
    from kcing.secrecy import Masker
    masked = Masker(["correct horse battery staple", "C:\\new-pass"])

    def cpu(run: int) -> float:
        # The same size of text in runs `run` long: the time may grow with the text, not the runs.
        text = ("correct" + " " * run + "x C:" + "\\n" * (run // 2) + "x ") * (160_000 // run)
        taken = []
        for _ in range(3):
            started = time.process_time()
            masked(text)
            taken.append(time.process_time() - started)
        return min(taken)

    short = cpu(25)
    assert cpu(800) < 4 * short + 0.005
    assert masked("refused correct\n  horse battery  staple and C:\\\\new-pass") == "refused *** and ***"
