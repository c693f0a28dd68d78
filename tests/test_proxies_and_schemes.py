"""Proxies of the environment and URL schemes: what a request really went through decides what the
one line says (the proxy named, a scheme to fix), and Elasticsearch's answers on data streams.
Each test runs the real program against the loopback emulators."""
from __future__ import annotations

from tests.fakes.elastic_server import ElasticsearchEmulator
from tests.fakes.serving import refusing_port
from tests.faults.tls_front import TlsOnlyPort
from tests.feedrun import SAMPLES, kcing, proxy_free_environ
from tests.test_credentials_tls import feed_into_a_tls_only_input

# -- an http:// URL at a TLS port, with proxy variables that do not apply to it ----------------
# requests' get_environ_proxies(url) holds every `*_proxy` variable of the environment: `no_proxy`
# itself (key "no"), an `https_proxy` an http:// URL never goes through, and proxies the
# Elasticsearch client never uses (elastic-transport's urllib3 node ignores the environment). The
# request went straight to the TLS port all the same: a scheme to fix, not an outage.

def test_an_http_logstash_input_at_a_tls_port_is_a_scheme_to_fix_with_only_no_proxy_exported(certificate, tmp_path):
    """NO_PROXY exported host-wide (no HTTP_PROXY): the feed posts to the input directly, yet the
    TLS port was reported as 'cannot connect ... connection closed without an answer' (exit 3)."""
    feed_into_a_tls_only_input(certificate, tmp_path, no_proxy="intranet.example")


def test_an_http_logstash_input_at_a_tls_port_is_a_scheme_to_fix_with_only_https_proxy_exported(certificate,
                                                                                                tmp_path):
    """HTTPS_PROXY alone: an http:// input is posted to directly (select_proxy finds no proxy for
    http), but the probe was skipped as if the request had gone through the proxy."""
    with refusing_port() as proxy_port:
        feed_into_a_tls_only_input(certificate, tmp_path, https_proxy="http://127.0.0.1:%d" % proxy_port)


def test_an_http_es_host_at_a_tls_port_is_a_scheme_to_fix_with_http_proxy_exported(certificate, tmp_path):
    """HTTP_PROXY exported host-wide: the Elasticsearch client ignores it and connects to ES_HOST
    directly, which hangs up on plain HTTP; the probe, deciding by requests' proxy rules, was
    skipped, and drp said it could not reach Elasticsearch (exit 3)."""
    with refusing_port() as proxy_port, ElasticsearchEmulator() as es, \
            TlsOnlyPort(int(es.url.rsplit(":", 1)[1]), *certificate) as tls:
        plain = tls.url.replace("https://", "http://")
        done = kcing(["drp", "--dry-run"],
                     proxy_free_environ(http_proxy="http://127.0.0.1:%d" % proxy_port,
                                            ES_HOST=plain, KCING_DB=str(tmp_path / "kcing.db")), tmp_path)
    assert done.returncode == 2, done.stdout + done.stderr
    assert done.stderr.splitlines()[-1] == (
        "kcing drp: Elasticsearch at %s closed the plain HTTP request unanswered and answers in TLS at that port: "
        "write https:// in ES_HOST" % plain)


def test_an_http_kb_url_at_a_tls_port_is_a_scheme_to_fix_with_only_no_proxy_exported(certificate, tmp_path):
    from tests.fakes.kibana_server import KibanaEmulator
    with KibanaEmulator() as kibana, TlsOnlyPort(int(kibana.url.rsplit(":", 1)[1]), *certificate) as tls:
        plain = tls.url.replace("https://", "http://")
        done = kcing(["setup_kbn", "--wait", "3"],
                     proxy_free_environ(no_proxy="intranet.example", KB_URL=plain), tmp_path)
    assert done.returncode == 2, done.stdout + done.stderr
    assert done.stderr.splitlines()[-1] == (
        "kcing setup_kbn: Kibana at %s closed the plain HTTP request unanswered and answers in TLS at that port: "
        "write https:// in KB_URL" % plain)


# -- proxy_note: a proxy that cannot reach Kibana (502/503/504) is not named ----------------------

SQUID_CONNECT_FAIL_PAGE = (b"<!DOCTYPE html><html><head><title>ERROR: The requested URL could not be retrieved</title>"
                           b"</head><body><p>Connection to 127.0.0.1 failed.</p></body></html>")
SQUID_CONNECT_FAIL_HEADERS = (("Content-Type", "text/html;charset=utf-8"),
                              ("X-Squid-Error", "ERR_CONNECT_FAIL 111"), ("Via", "1.1 proxy (squid/5.7)"))


def test_a_proxy_that_cannot_reach_kibana_is_named_as_it_is_for_logstash(tmp_path):
    """HTTP_PROXY exported host-wide, no NO_PROXY, and a proxy that
    cannot reach the Kibana host: squid answers 503 (ERR_CONNECT_FAIL). The Logstash sink adds
    proxy_note to its 'unreachable' line for such answers; the Kibana client adds it only to
    connection failures and 401/403/407, so setup_kbn waits out --wait for a Kibana 'not ready'
    and ends blaming Kibana, without a word of the proxy the request went through."""
    from tests.fakes.kibana_server import KibanaEmulator
    from tests.fakes.rogue_http import RogueFront, answer
    with KibanaEmulator() as kibana, RogueFront() as proxy:
        for method in ("GET", "POST"):
            proxy.on(method, "http://", answer(503, SQUID_CONNECT_FAIL_HEADERS, SQUID_CONNECT_FAIL_PAGE))
        done = kcing(["setup_kbn", "--wait", "2"],
                     proxy_free_environ(http_proxy=proxy.url, KB_URL=kibana.url), tmp_path)
        assert kibana.requests.snapshot() == []  # the proxy answered every request
    line = done.stderr.strip().splitlines()[-1]
    assert done.returncode == 3, done.stderr
    assert "the request went through the proxy %s" % proxy.url in line and "add 127.0.0.1 to NO_PROXY" in line, line


# -- the ES emulator: a template whose patterns no longer match a data stream ----------------------

def test_the_emulator_refuses_a_template_that_leaves_a_data_stream_matched_by_no_template(tmp_path):
    """A node counts a data stream that no template matches any more as one left without a
    data-stream template (MetadataIndexTemplateService.validateDataStreamsStillReferenced:
    findV2Template(...) == null is unreferenced, as its own test 'Change the pattern to one that
    doesn't match the data stream' checks). _check_data_streams_kept flags a stream only when some
    template still matches it, so the emulator takes such a template, which a node refuses."""
    import requests
    stream = "build-2024.01.01"
    with ElasticsearchEmulator() as es:
        made = requests.put(es.url + "/_index_template/user-streams",
                            json={"index_patterns": ["build-*"], "priority": 100, "data_stream": {}}, timeout=30)
        assert made.status_code == 200, made.text
        written = requests.post(es.url + "/_bulk", timeout=30, headers={"Content-Type": "application/x-ndjson"},
                                data=b'{"create":{"_index":"%s"}}\n{"@timestamp":"2024-01-01T00:00:00Z"}\n'
                                     % stream.encode())
        assert written.status_code == 200 and not written.json()["errors"], written.text
        moved = requests.put(es.url + "/_index_template/user-streams",
                             json={"index_patterns": ["other-*"], "priority": 100, "data_stream": {}}, timeout=30)
    assert moved.status_code == 400, moved.text
    assert moved.json()["error"]["reason"] == (
        "composable template [user-streams] with index patterns [other-*], priority [100] would cause data streams "
        "[%s] to no longer match a data stream template" % stream)


def test_a_proxy_asking_for_its_own_credentials_before_logstash_is_named(tmp_path):
    """README: 'a request to Logstash or Kibana that fails through such a proxy, unreachable or
    refused for credentials, ends with a line naming the proxy and the host to add to NO_PROXY'.
    A proxy of the environment asking for its own credentials (407, squid's `auth_param`) before a
    Logstash on 127.0.0.1: the Kibana client adds proxy_note to a 407, the Logstash sink does not
    (it names 401 and 403 only), and the run ends 'Logstash at ... rejected a batch with 407',
    blaming Logstash, which was never asked."""
    from tests.fakes.logstash_emulator import LogstashEmulator
    from tests.fakes.rogue_http import RogueFront, answer
    page = (b"<!DOCTYPE html><html><head><title>ERROR: Cache Access Denied</title></head>"
            b"<body><p>Sorry, you are not currently allowed to request this URL until you have "
            b"authenticated yourself.</p></body></html>")
    headers = (("Content-Type", "text/html;charset=utf-8"), ("Proxy-Authenticate", 'Basic realm="proxy"'),
               ("X-Squid-Error", "ERR_CACHE_ACCESS_DENIED 0"), ("Via", "1.1 proxy (squid/5.7)"))
    with LogstashEmulator() as logstash, RogueFront() as proxy:
        for method in ("GET", "POST"):
            proxy.on(method, "http://", answer(407, headers, page))
        done = kcing(["feed_es", "--source", "samples", "--samples-dir", str(SAMPLES)],
                     proxy_free_environ(http_proxy=proxy.url, ES_BUILD=logstash.url, ES_LAVA=logstash.url,
                                            ES_BOOT=logstash.url, KCING_DB=str(tmp_path / "kcing.db"),
                                            ES_RETRY_BACKOFF="0.01"), tmp_path)
        assert logstash.requests.snapshot() == []  # the proxy answered every post
    line = done.stderr.strip().splitlines()[-1]
    assert done.returncode in (2, 3), done.stderr
    assert "the request went through the proxy %s" % proxy.url in line and "add 127.0.0.1 to NO_PROXY" in line, line


def test_a_proxy_exported_without_a_scheme_is_named_by_its_address(tmp_path):
    """HTTP_PROXY=host:port without `http://` (as curl and requests take it, and many
    /etc/environment files have it): the posts go through http://host:port, but proxy_note names
    it by urldefragauth of the raw value, `//127.0.0.1:3128` (or `proxy.example://3128` for a
    host name), where the transport prepends the scheme first (prepend_scheme_if_needed)."""
    from tests.fakes.logstash_emulator import LogstashEmulator
    from tests.fakes.rogue_http import RogueFront, answer
    with LogstashEmulator() as logstash, RogueFront() as proxy:
        proxy.on("POST", "http://", answer(403, (("Content-Type", "text/plain"),), b"Access Denied"))
        schemeless = proxy.url.split("://", 1)[1]
        done = kcing(["feed_es", "--source", "samples", "--samples-dir", str(SAMPLES)],
                     proxy_free_environ(http_proxy=schemeless, ES_BUILD=logstash.url, ES_LAVA=logstash.url,
                                            ES_BOOT=logstash.url, KCING_DB=str(tmp_path / "kcing.db")), tmp_path)
        assert logstash.requests.snapshot() == []  # went through the proxy
    line = done.stderr.strip().splitlines()[-1]
    assert done.returncode == 2, done.stderr
    assert "the request went through the proxy http://%s " % schemeless in line, line
