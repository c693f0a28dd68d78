"""Elasticsearch and upstream over TLS and with credentials: an ES_CA_BUNDLE that is a directory of hashed
certificates, an upstream certificate for another host, an ES_API_KEY given as id:api_key."""
from __future__ import annotations

import base64
import re
import shutil
import subprocess
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from kcing.errors import ConfigError
from kcing.http import RetryPolicy, new_session
from kcing.sources.requester import Requester
from kcing.urls import origins
from tests.fakes.elastic_server import ElasticsearchEmulator
from tests.faults.tls_front import TlsFront, TlsOnlyPort
from tests.feedrun import clean_environ, kcing, proxy_free_environ


def hashed_directory(certificate: Path, where: Path) -> Path:
    """A directory of hashed certificates (what `c_rehash`/`openssl rehash` make) holding `certificate`."""
    where.mkdir()
    subject_hash = subprocess.run(["openssl", "x509", "-hash", "-noout", "-in", str(certificate)],
                                  capture_output=True, text=True, check=True).stdout.strip()
    shutil.copy(certificate, where / ("%s.0" % subject_hash))
    return where


def test_es_ca_bundle_that_is_a_directory_of_hashed_certificates_is_trusted(certificate, tmp_path):
    """Every *_CA_BUNDLE may be a PEM file or a directory of hashed certificates (the setting's
    validation takes both; the README refuses only one that is neither). LS_CA_BUNDLE,
    KCI_CA_BUNDLE and KB_CA_BUNDLE work as directories; ES_CA_BUNDLE is handed to the client as
    a file (`ca_certs`), and drp, setup_es, reconcile and feed_es --verify failed:
    'TLS to Elasticsearch at ... failed: [Errno 21] Is a directory'."""
    directory = hashed_directory(certificate[0], tmp_path / "certs")
    with ElasticsearchEmulator() as es:
        front = TlsFront(urlsplit(es.url).port, *certificate)
        front.start()
        try:
            env = clean_environ(ES_HOST=front.url, KCING_DB=str(tmp_path / "kcing.db"))
            as_file = kcing(["drp", "--dry-run"], dict(env, ES_CA_BUNDLE=str(certificate[0])), tmp_path)
            as_directory = kcing(["drp", "--dry-run"], dict(env, ES_CA_BUNDLE=str(directory)), tmp_path)
        finally:
            front.stop()
    assert as_file.returncode == 0, as_file.stderr
    assert as_directory.returncode == 0, as_directory.stderr


@pytest.fixture
def certificate_for_another_address(tmp_path):
    """A self-signed CA certificate (and key) for 127.0.0.2, served here on 127.0.0.1."""
    certificate, key = tmp_path / "other.pem", tmp_path / "other.key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                    "-keyout", str(key), "-out", str(certificate), "-days", "2", "-subj", "/CN=127.0.0.2",
                    "-addext", "subjectAltName=IP:127.0.0.2", "-addext", "basicConstraints=critical,CA:TRUE"],
                   check=True, capture_output=True, timeout=60)
    return certificate, key


class _Empty(BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *args):
        pass


def test_an_upstream_certificate_for_another_host_is_not_blamed_on_kci_ca_bundle(certificate_for_another_address):
    """KCI_CA_BUNDLE names the very certificate the upstream host presents, but that certificate
    is for another address (OpenSSL: 'IP address mismatch'). The run was told to 'point
    KCI_CA_BUNDLE at the CA bundle that signed it', which it already did; Logstash and Kibana
    tell this case apart ('it is not valid for 127.0.0.1: name ... by a host name the
    certificate holds'), and the README promises a configuration error naming the setting to fix."""
    certificate, key = certificate_for_another_address
    server = HTTPServer(("127.0.0.1", 0), _Empty)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    front = TlsFront(server.server_address[1], certificate, key)
    front.start()
    try:
        session = new_session(verify=str(certificate), netrc=False)
        requester = Requester(session, RetryPolicy(attempts=1, base=0.01), 5, allowed_origins=origins([front.url]))
        with pytest.raises(ConfigError) as caught:
            requester.get(front.url + "/latest/nodes")
    finally:
        front.stop()
        server.shutdown()
        server.server_close()
    assert "point KCI_CA_BUNDLE at the CA bundle that signed it" not in str(caught.value), str(caught.value)
    assert "not valid for 127.0.0.1" in str(caught.value), str(caught.value)


def test_es_api_key_given_as_id_and_key_is_sent_in_the_form_elasticsearch_takes(tmp_path):
    """Elasticsearch reads `Authorization: ApiKey <base64 of id:api_key>`. An ES_API_KEY given as
    `id:api_key` (the form Logstash's elasticsearch output and Beats take, and the id and api_key
    fields the create API key call returns) was sent as it was, `ApiKey id:api_key`, which no node
    takes (':' is no base64 character): drp was told the credentials were refused."""
    encoded = base64.b64encode(b"VuaCfGcBCdbkQm-e5aOx:ui2lp2axTNmsyakw9tvNnw").decode("ascii")
    with ElasticsearchEmulator(api_key=encoded) as es:
        env = clean_environ(ES_HOST=es.url, KCING_DB=str(tmp_path / "kcing.db"),
                            ES_API_KEY="VuaCfGcBCdbkQm-e5aOx:ui2lp2axTNmsyakw9tvNnw")
        pruned = kcing(["drp", "--dry-run"], env, tmp_path)
        sent = [request.headers.get("authorization") for request in es.requests]
    assert pruned.returncode == 0, pruned.stderr
    assert sent and set(sent) == {"ApiKey " + encoded}


# -- an http:// URL at a port that speaks TLS (Elasticsearch 8's default) ---------------------------

@pytest.mark.parametrize("command", [["setup_es", "--wait", "20"], ["drp", "--dry-run"]])
def test_an_http_es_host_at_a_tls_port_is_a_scheme_to_fix_not_an_outage_to_wait_out(certificate, command, tmp_path):
    """ES_HOST left at http://localhost:9200 before an Elasticsearch 8, which serves TLS there
    and hangs up on plain HTTP: setup_es waited its whole --wait and said the node was not
    ready, drp said it could not reach it (exit 3)."""
    with ElasticsearchEmulator() as es, TlsOnlyPort(int(es.url.rsplit(":", 1)[1]), *certificate) as tls:
        plain = tls.url.replace("https://", "http://")
        done = kcing(command, proxy_free_environ(ES_HOST=plain, KCING_DB=str(tmp_path / "kcing.db")), tmp_path)
    assert done.returncode == 2, done.stdout + done.stderr
    assert done.stderr.splitlines()[-1] == (
        "kcing %s: Elasticsearch at %s closed the plain HTTP request unanswered and answers in TLS at that port: "
        "write https:// in ES_HOST" % (command[0], plain))


def test_an_http_kb_url_at_a_tls_port_is_a_scheme_to_fix_not_a_kibana_starting(certificate, tmp_path):
    from tests.fakes.kibana_server import KibanaEmulator
    with KibanaEmulator() as kibana, TlsOnlyPort(int(kibana.url.rsplit(":", 1)[1]), *certificate) as tls:
        plain = tls.url.replace("https://", "http://")
        done = kcing(["setup_kbn", "--wait", "20"], proxy_free_environ(KB_URL=plain), tmp_path)
    assert done.returncode == 2, done.stdout + done.stderr
    assert done.stderr.splitlines()[-1] == (
        "kcing setup_kbn: Kibana at %s closed the plain HTTP request unanswered and answers in TLS at that port: "
        "write https:// in KB_URL" % plain)


def feed_into_a_tls_only_input(certificate, tmp_path, **proxies) -> None:
    """feed_es of the samples to Logstash inputs named by http:// URLs at a port that speaks TLS
    only, with the proxy variables `proxies`: exit 2 at once, the line says to write https://,
    and nothing is recorded delivered."""
    from tests.fakes.logstash_emulator import LogstashEmulator
    from tests.feedrun import SAMPLES, ledger_states
    with LogstashEmulator() as logstash, TlsOnlyPort(int(logstash.url.rsplit(":", 1)[1]), *certificate) as tls:
        plain = tls.url.replace("https://", "http://")
        db = tmp_path / "kcing.db"
        done = kcing(["feed_es", "--source", "samples", "--samples-dir", str(SAMPLES)],
                     proxy_free_environ(ES_BUILD=plain, ES_LAVA=plain, ES_BOOT=plain, KCING_DB=str(db),
                                        ES_RETRY_BACKOFF="0.01", **proxies), tmp_path)
    assert done.returncode == 2, done.stdout + done.stderr
    assert re.fullmatch(r"kcing feed_es: Logstash at %s closed the plain HTTP request unanswered and answers in TLS "
                        r"at that port: write https:// in ES_(BUILD|LAVA|BOOT)" % re.escape(plain),
                        done.stderr.splitlines()[-1]), done.stderr
    assert "delivered" not in set(ledger_states(db).values())


def test_an_http_logstash_input_at_a_tls_port_is_a_scheme_to_fix_and_nothing_is_recorded_delivered(certificate,
                                                                                                   tmp_path):
    feed_into_a_tls_only_input(certificate, tmp_path)
