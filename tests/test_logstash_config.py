"""Structure checks of the shipped Logstash pipeline, without a Logstash to run it.

The syntax check uses lscl, a parser of the Logstash configuration language; the contract
checks (ports, index/id routing, the id guard) walk its parse tree. None of this replaces
`bin/logstash -t`: plugin option names and values are not validated here.
"""
from __future__ import annotations

import re
from pathlib import Path
from types import SimpleNamespace
from typing import Iterator, NamedTuple

import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
PIPELINE = REPO / "logstash" / "pipeline" / "kcing.conf"
PIPELINES_YML = REPO / "logstash" / "config" / "pipelines.yml"

# The contract with kcing's settings: each kind of upstream object has its own input.
KCING_PORTS = {"ES_BUILD": 8337, "ES_LAVA": 8338, "ES_BOOT": 8007, "ES_REGRESSION": 8339}

ID_FIELD = ("@metadata", "id")
INDEX_FIELD = ("@metadata", "index")
VERSION_FIELD = ("@metadata", "version")
UNROUTED_INDEX = "kcing-unrouted-%{+YYYY.MM.dd}"


@pytest.fixture(scope="module")
def lscl():
    """The lscl modules; the tests that need them are skipped when lscl is not installed."""
    pytest.importorskip("lscl", reason="lscl (Logstash config parser) is not installed")
    from lscl import errors, lang, parser

    return SimpleNamespace(parser=parser, lang=lang, errors=errors)


class Plugin(NamedTuple):
    """A plugin block, the section it is in, and the conditions that must hold to reach it."""

    section: str
    block: object
    guards: tuple

    @property
    def options(self) -> dict:
        return {item.name: item.content for item in self.block.content if hasattr(item, "name")}


@pytest.fixture(scope="module")
def tree(lscl):
    return lscl.parser.parse_lscl(PIPELINE.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def plugins(lscl, tree) -> list:
    return list(iter_plugins(lscl, tree))


def iter_plugins(lscl, tree) -> Iterator[Plugin]:
    for section in tree:
        yield from _plugins_in(lscl, section.name, section.content, ())


def _plugins_in(lscl, section: str, content: list, guards: tuple) -> Iterator[Plugin]:
    """Yield every plugin block under `content` with the branch conditions known to be true there.

    Only the condition of the branch a block sits in is recorded: that is what Logstash has
    checked to be true. An `else` adds nothing, so a block there counts as unguarded, which keeps
    the guard check below strict rather than clever.
    """
    for item in content:
        if isinstance(item, lscl.lang.LsclBlock):
            yield Plugin(section, item, guards)
        elif isinstance(item, lscl.lang.LsclConditions):
            for condition, body in item.conditions:
                yield from _plugins_in(lscl, section, body, guards + (condition,))
            if item.default:
                yield from _plugins_in(lscl, section, item.default, guards)


def requires_field(lscl, guards: tuple, field: tuple) -> bool:
    """True if one of `guards` is `[field]` itself or an `and` with `[field]` as a direct term."""
    for condition in guards:
        terms = condition.conditions if isinstance(condition, lscl.lang.LsclAnd) else [condition]
        for term in terms:
            if isinstance(term, lscl.lang.LsclSelector) and tuple(term.names) == field:
                return True
    return False


def elasticsearch_outputs(plugins) -> list:
    return [p for p in plugins if p.section == "output" and p.block.name == "elasticsearch"]


# --- syntax -------------------------------------------------------------------------------------


def test_pipeline_parses(tree):
    assert tree, "empty pipeline"


@pytest.mark.parametrize(
    "break_it",
    [
        pytest.param(lambda text: text.rstrip()[:-1], id="missing-closing-brace"),
        pytest.param(lambda text: text.replace("port => 8337", "port = 8337"), id="equals-not-arrow"),
        pytest.param(lambda text: text.replace('"kcing_es_routed"', '"kcing_es_routed'), id="open-quote"),
        pytest.param(
            lambda text: text.replace("ecs_compatibility => disabled", 'codec => json { target => "d" }', 1),
            id="plugin-valued-attribute",
        ),
    ],
)
def test_parser_rejects_broken_variants(lscl, break_it):
    """The syntax check can fail: small edits of the real file must not parse."""
    text = PIPELINE.read_text(encoding="utf-8")
    broken = break_it(text)
    assert broken != text
    with pytest.raises(lscl.errors.DecodeError):
        lscl.parser.parse_lscl(broken)


# --- structure ----------------------------------------------------------------------------------


def test_only_input_filter_and_output_sections(lscl, tree):
    # lscl accepts any section name (e.g. `inputs { }`); Logstash does not.
    assert all(isinstance(section, lscl.lang.LsclBlock) for section in tree)
    assert sorted(section.name for section in tree) == ["filter", "input", "output"]


def test_one_http_input_per_kcing_port(plugins):
    inputs = [p for p in plugins if p.section == "input"]
    assert [p.block.name for p in inputs] == ["http"] * len(KCING_PORTS)
    assert sorted(p.options["port"] for p in inputs) == sorted(KCING_PORTS.values())
    for http in inputs:
        assert not http.guards
        options = http.options
        assert options["ecs_compatibility"] == "disabled"
        assert options["remote_host_target_field"].startswith("[@metadata]")
        assert options["request_headers_target_field"].startswith("[@metadata]")
        # application/json goes to the json codec through the default additional_codecs.
        assert "codec" not in options and "additional_codecs" not in options


def test_each_route_setting_defaults_to_its_own_input(plugins):
    """kcing's ES_* defaults reach the input of their kind, which names its origin in @metadata."""
    from urllib.parse import urlsplit

    from kcing.settings import SPECS

    inputs = {int(p.options["port"]): p.options for p in plugins if p.section == "input"}
    for setting, port in KCING_PORTS.items():
        (url,) = SPECS[setting].default
        assert urlsplit(url).port == port, setting
        origin = setting[len("ES_"):].lower()
        assert dict(inputs[port]["add_field"]) == {"[@metadata][origin]": origin}, setting


def test_http_auth_never_defaults_to_empty_credentials(plugins):
    """`${VAR:}` resolves to "", which the http input counts as set: auth with empty credentials."""
    for http in (p for p in plugins if p.section == "input"):
        for name in ("user", "password"):
            value = http.options.get(name)
            assert value is None or not (value.startswith("${") and value.endswith(":}")), (name, value)


def test_unroutable_events_are_tagged_for_the_unrouted_branch(lscl, plugins):
    (marker,) = [p for p in plugins if p.section == "filter" and "add_tag" in p.options]
    (condition,) = marker.guards
    assert isinstance(condition, lscl.lang.LsclOr)
    terms = condition.conditions
    tags = lscl.lang.LsclSelector(names=["tags"])
    assert lscl.lang.LsclIn(needle="_jsonparsefailure", haystack=tags) in terms
    assert lscl.lang.LsclNot(condition=lscl.lang.LsclSelector(names=list(INDEX_FIELD))) in terms
    assert lscl.lang.LsclNot(condition=lscl.lang.LsclSelector(names=list(ID_FIELD))) in terms

    # A version that is not a number (which Elasticsearch would refuse with the whole bulk request).
    (versioned,) = [term for term in terms if isinstance(term, lscl.lang.LsclAnd)]
    assert lscl.lang.LsclSelector(names=list(VERSION_FIELD)) in versioned.conditions

    (tag,) = marker.options["add_tag"]
    routed_outputs = [p for p in elasticsearch_outputs(plugins) if "document_id" in p.options]
    assert len(routed_outputs) == 2
    excluded = lscl.lang.LsclNotIn(needle=tag, haystack=tags)
    for routed in routed_outputs:
        assert any(excluded in getattr(guard, "conditions", [guard]) for guard in routed.guards)


def ruby_like(pattern: str) -> re.Pattern:
    """`pattern` as Logstash (Ruby) reads it: `^` and `$` match at every line's start and end
    there, `\\Z` at the end or before a last newline, and `\\z` at the end only."""
    pattern = pattern.replace("^", "(?m:^)").replace("$", "(?m:$)")
    return re.compile(pattern.replace(r"\Z", r"(?=\n?\Z)").replace(r"\z", r"\Z"))


@pytest.mark.parametrize("version, unrouted", [
    ("1729045378113000", False), ("0", False), ("9" * 18, False),
    ("9" * 19, True), ("-1", True), ("1.5", True), ("12a", True), ("", True), (" 1", True), ("1\n", True),
    ("x\n1", True), ("1\n1", True),
])
def test_the_version_pattern_lets_through_only_what_elasticsearch_takes_as_a_version(version, unrouted):
    """What the filter lets through as a version, Elasticsearch reads as a long (at most 18
    digits: below 2^63); anything else would make it refuse the whole bulk request."""
    (pattern,) = re.findall(r"\[@metadata\]\[version\] !~ /(.*?)/", PIPELINE.read_text(encoding="utf-8"))
    assert (ruby_like(pattern).search(version) is None) is unrouted


@pytest.mark.parametrize("pattern, text, matches", [
    (r"^1$", "x\n1\ny", True), (r"\A1\Z", "1\n", True), (r"\A1\z", "1\n", False), (r"\A1(?![\s\S])", "1\n", False),
])
def test_patterns_are_read_as_logstash_reads_them(pattern, text, matches):
    assert bool(ruby_like(pattern).search(text)) is matches


def test_fields_added_by_the_input_are_stripped(plugins):
    removed = [field for p in plugins if p.section == "filter" for field in p.options.get("remove_field", [])]
    assert {"[event][original]", "host", "headers"} <= set(removed)


def test_routed_outputs_use_metadata_index_and_id(plugins):
    routed_outputs = [p for p in elasticsearch_outputs(plugins) if "document_id" in p.options]
    assert len(routed_outputs) == 2
    for routed in routed_outputs:
        options = routed.options
        assert options["index"] == "%{[@metadata][index]}"
        assert options["document_id"] == "%{[@metadata][id]}"
        # index, not create: a resend overwrites (idempotent) instead of a 409 that Logstash drops.
        assert options["action"] == "index"


def test_a_versioned_document_is_written_with_its_version_and_only_then(lscl, plugins):
    """A document that carries a version goes to the output that writes it with external
    versioning (an older version then never replaces a newer); one without, to the other."""
    routed_outputs = [p for p in elasticsearch_outputs(plugins) if "document_id" in p.options]
    (versioned,) = [p for p in routed_outputs if "version" in p.options]
    assert versioned.options["version"] == "%{[@metadata][version]}"
    # external_gte, not external: a resend of the same version (a retry, reconcile) is taken.
    assert versioned.options["version_type"] == "external_gte"
    assert versioned.options["silence_errors_in_log"] == ["version_conflict_engine_exception"]
    assert requires_field(lscl, versioned.guards, VERSION_FIELD)
    (plain,) = [p for p in routed_outputs if "version" not in p.options]
    assert "version_type" not in plain.options


def is_true(value) -> bool:
    """A field in a Logstash condition: false when absent, null, false, "" or "false" (logstash/README.md)."""
    return value not in (None, False, "", "false")


def holds(lscl, condition, event: dict) -> bool:
    """Whether `condition` holds for `event` ({"@metadata": {...}, "tags": [...]}), as Logstash decides."""
    lang = lscl.lang

    def value(selector):
        found = event
        for name in selector.names:
            found = found.get(name) if isinstance(found, dict) else None
        return found

    if isinstance(condition, lang.LsclSelector):
        return is_true(value(condition))
    if isinstance(condition, lang.LsclAnd):
        return all(holds(lscl, term, event) for term in condition.conditions)
    if isinstance(condition, lang.LsclOr):
        return any(holds(lscl, term, event) for term in condition.conditions)
    if isinstance(condition, lang.LsclNot):
        return not holds(lscl, condition.condition, event)
    if isinstance(condition, (lang.LsclIn, lang.LsclNotIn)):
        found = condition.needle in (value(condition.haystack) or [])
        return found if isinstance(condition, lang.LsclIn) else not found
    if isinstance(condition, lang.LsclNotMatch):
        return ruby_like(condition.pattern.pattern).search(value(condition.value) or "") is None
    raise AssertionError("a condition this check does not evaluate: %r" % (condition,))


def reached(lscl, content: list, event: dict) -> Iterator:
    """The plugin blocks under `content` that `event` passes through, in order."""
    for item in content:
        if isinstance(item, lscl.lang.LsclBlock):
            yield item
        elif isinstance(item, lscl.lang.LsclConditions):
            body = next((body for condition, body in item.conditions if holds(lscl, condition, event)), item.default)
            yield from reached(lscl, body or [], event)


@pytest.mark.parametrize("metadata, output", [
    ({"index": "boot-2024.10.16", "id": "a1", "version": "1729045378113000"}, "kcing_es_versioned"),
    ({"index": "boot-2024.10.16", "id": "a1"}, "kcing_es_routed"),
    ({"index": "boot-2024.10.16", "id": "a1", "version": ""}, "kcing_es_routed"),
    ({"index": "boot-2024.10.16", "id": "a1", "version": "12a"}, "kcing_es_unrouted"),
    ({"index": "boot-2024.10.16", "version": "1729045378113000"}, "kcing_es_unrouted"),
])
def test_an_event_is_written_by_one_output_with_its_version_when_it_has_one(lscl, tree, metadata, output):
    """A versioned document goes to the versioned output alone: written by the plain one too, or
    instead, it would replace a newer version of its node with an older one."""
    event = {"@metadata": metadata, "tags": []}
    sections = {section.name: section.content for section in tree}
    for mutate in reached(lscl, sections["filter"], event):
        attributes = {item.name: item.content for item in mutate.content if hasattr(item, "name")}
        event["tags"] += attributes.get("add_tag", [])
    written = [dict((item.name, item.content) for item in block.content if hasattr(item, "name"))["id"]
               for block in reached(lscl, sections["output"], event)]
    assert written == [output]


def test_document_id_is_only_reached_with_an_id(lscl, plugins):
    for output in elasticsearch_outputs(plugins):
        if "document_id" in output.options or "@metadata" in output.options["index"]:
            assert requires_field(lscl, output.guards, ID_FIELD), output.options
            assert requires_field(lscl, output.guards, INDEX_FIELD), output.options


def test_unrouted_output_keeps_every_event(plugins):
    unrouted = [p for p in elasticsearch_outputs(plugins) if "document_id" not in p.options]
    assert [p.options["index"] for p in unrouted] == [UNROUTED_INDEX]
    assert not unrouted[0].guards, "the unrouted branch must be the plain else of the routed one"


def test_every_output_writes_plain_indices(plugins):
    outputs = elasticsearch_outputs(plugins)
    assert [p.block.name for p in plugins if p.section == "output"] == ["elasticsearch"] * len(outputs)
    for output in outputs:
        options = output.options
        assert options["hosts"] == ["${ES_HOSTS:http://elasticsearch:9200}"]
        assert options["data_stream"] == "false"
        assert options["ilm_enabled"] == "false"
        assert options["manage_template"] == "false"


def test_the_readme_names_every_output_a_secured_elasticsearch_needs_credentials_in(plugins):
    """logstash/README.md said "both" outputs once a third (the versioned one, every KernelCI API
    document) was added: one left without credentials retries its 401s for ever while the inputs
    answer `ok`."""
    text = " ".join((PIPELINE.parent.parent / "README.md").read_text(encoding="utf-8").split())
    section = text[text.index("## Elasticsearch address"):]
    section = section[:section.index("## ", 3)]
    ids = [output.options["id"] for output in elasticsearch_outputs(plugins)]
    assert len(ids) == 3 and "all three `elasticsearch` outputs" in section
    for output_id in ids:
        assert "`%s`" % output_id in section, output_id


@pytest.mark.parametrize(
    "output, guarded",
    [
        ("if [@metadata][id] { elasticsearch {} }", True),
        ("if [a] and [@metadata][id] { elasticsearch {} }", True),
        ("if [a] { stdout {} } else if [@metadata][id] { elasticsearch {} }", True),
        ("elasticsearch {}", False),
        ("if ![@metadata][id] { stdout {} } else { elasticsearch {} }", False),
        ("if [a] or [@metadata][id] { elasticsearch {} }", False),
        ("if [@metadata][idx] { elasticsearch {} }", False),
    ],
)
def test_guard_check_can_fail(lscl, output, guarded):
    (plugin,) = elasticsearch_outputs(iter_plugins(lscl, lscl.parser.parse_lscl("output { %s }" % output)))
    assert requires_field(lscl, plugin.guards, ID_FIELD) is guarded


# --- pipelines.yml ------------------------------------------------------------------------------


def test_pipelines_yml_declares_the_kcing_pipeline():
    pipelines = yaml.safe_load(PIPELINES_YML.read_text(encoding="utf-8"))
    assert isinstance(pipelines, list) and len(pipelines) == 1
    (kcing,) = pipelines
    assert kcing["pipeline.id"] == "kcing"
    # The official image reads pipelines from /usr/share/logstash/pipeline/ (docker-compose.yml
    # mounts logstash/pipeline there).
    assert kcing["path.config"] == "/usr/share/logstash/pipeline/" + PIPELINE.name
    assert kcing["pipeline.ecs_compatibility"] == "disabled"
    assert kcing["queue.type"] == "persisted"
    assert str(kcing["queue.max_bytes"]).endswith(("kb", "mb", "gb"))
    assert kcing["pipeline.batch.size"] == 500
    assert kcing["dead_letter_queue.enable"] is True


# --- plugin options -----------------------------------------------------------------------------
# lscl checks the grammar only; Logstash refuses to start a pipeline naming an option its plugin
# does not have, or a value outside an option's choices. These are the options of the plugin
# versions elk.md names (logstash-input-http 3.7+ and 4.x, logstash-filter-mutate,
# logstash-output-elasticsearch 11.x and 12.x), with the options every plugin of its section has.
# Only options valid on both lines of a plugin are listed: the file must load on either.

COMMON_OPTIONS = {
    "input": {"add_field", "codec", "enable_metric", "id", "tags", "type", "ecs_compatibility"},
    "filter": {"add_field", "add_tag", "enable_metric", "id", "periodic_flush", "remove_field", "remove_tag"},
    "output": {"codec", "enable_metric", "id"},
}
PLUGIN_OPTIONS = {
    ("input", "http"): {
        "additional_codecs", "host", "port", "threads", "user", "password", "max_pending_requests",
        "max_content_length", "response_code", "response_headers", "remote_host_target_field",
        "request_headers_target_field", "ssl_enabled", "ssl_certificate", "ssl_key", "ssl_key_passphrase",
        "ssl_certificate_authorities", "ssl_client_authentication", "ssl_keystore_path", "ssl_keystore_password",
        "ssl_keystore_type", "ssl_truststore_path", "ssl_truststore_password", "ssl_truststore_type",
        "ssl_supported_protocols", "ssl_cipher_suites", "ssl_handshake_timeout",
    },
    ("filter", "mutate"): {
        "capitalize", "coerce", "convert", "copy", "gsub", "join", "lowercase", "merge", "rename", "replace",
        "split", "strip", "tag_on_failure", "update", "uppercase",
    },
    ("output", "elasticsearch"): {
        "action", "api_key", "bulk_path", "ca_trusted_fingerprint", "cloud_auth", "cloud_id", "compression_level",
        "custom_headers", "data_stream", "data_stream_auto_routing", "data_stream_dataset", "data_stream_namespace",
        "data_stream_sync_fields", "data_stream_type", "dlq_custom_codes", "dlq_on_failed_indexname_interpolation",
        "doc_as_upsert", "document_id", "healthcheck_path", "hosts", "ilm_enabled", "ilm_pattern", "ilm_policy",
        "ilm_rollover_alias", "index", "manage_template", "parameters", "parent", "password", "path", "pipeline",
        "pool_max", "pool_max_per_route", "proxy", "resurrect_delay", "retry_initial_interval",
        "retry_max_interval", "retry_on_conflict", "routing", "script", "script_lang", "script_type",
        "script_var_name", "scripted_upsert", "silence_errors_in_log", "sniffing", "sniffing_delay",
        "sniffing_path", "ssl_certificate", "ssl_certificate_authorities", "ssl_cipher_suites", "ssl_enabled",
        "ssl_key", "ssl_keystore_password", "ssl_keystore_path", "ssl_keystore_type", "ssl_supported_protocols",
        "ssl_truststore_password", "ssl_truststore_path", "ssl_truststore_type", "ssl_verification_mode",
        "template", "template_api", "template_name", "template_overwrite", "timeout", "upsert", "user",
        "validate_after_inactivity", "version", "version_type",
    },
}
# Options whose value must be one of a few words (a bareword or a string alike).
CHOICES = {
    "ecs_compatibility": {"disabled", "v1", "v8"},
    "action": {"index", "create", "update", "delete"},
    "data_stream": {"true", "false", "auto"},
    "ilm_enabled": {"true", "false", "auto"},
    "manage_template": {"true", "false"},
    "template_overwrite": {"true", "false"},
    "enable_metric": {"true", "false"},
}


def option_problems(plugins) -> list:
    """What Logstash would refuse in the options of `plugins`, one text per problem."""
    problems = []
    for plugin in plugins:
        where = "%s %s" % (plugin.section, plugin.block.name)
        known = PLUGIN_OPTIONS.get((plugin.section, plugin.block.name))
        if known is None:
            problems.append("%s: not a plugin this check knows" % where)
            continue
        names = [item.name for item in plugin.block.content if hasattr(item, "name")]
        for name in sorted({name for name in names if names.count(name) > 1}):
            problems.append("%s: %s given twice" % (where, name))
        for name, value in plugin.options.items():
            if name not in known | COMMON_OPTIONS[plugin.section]:
                problems.append("%s: unknown option %s" % (where, name))
            elif name in CHOICES and str(value).lower() not in CHOICES[name]:
                problems.append("%s: %s => %r is not one of %s" % (where, name, value, sorted(CHOICES[name])))
            elif name == "port" and not (isinstance(value, int) and 0 < value < 65536):
                problems.append("%s: port => %r is not a TCP port" % (where, value))
            elif name in ("add_field", "additional_codecs", "response_headers") and not isinstance(value, dict):
                problems.append("%s: %s => %r is not a hash" % (where, name, value))
    return problems


def test_every_plugin_option_is_one_logstash_knows(plugins):
    assert option_problems(plugins) == []


@pytest.mark.parametrize(
    "config, problem",
    [
        ('input { http { port => 8337 remote_host_target_fiel => "x" } }', "unknown option remote_host_target_fiel"),
        ("input { http { port => 8337 ecs_compatibility => disable } }", "ecs_compatibility"),
        ("input { http { port => 80337 } }", "not a TCP port"),
        ('input { http { port => "8337" } }', "not a TCP port"),
        ("input { http { port => 8337 port => 8338 } }", "port given twice"),
        ('filter { mutate { remove_fields => ["host"] } }', "unknown option remove_fields"),
        ('filter { json { source => "message" } }', "not a plugin this check knows"),
        ('output { elasticsearch { action => "upsert" } }', "action"),
        ("output { elasticsearch { data_stream => no } }", "data_stream"),
        ('output { elasticsearch { document_ids => "x" } }', "unknown option document_ids"),
    ],
)
def test_option_check_can_fail(lscl, config, problem):
    problems = option_problems(iter_plugins(lscl, lscl.parser.parse_lscl(config)))
    assert len(problems) == 1 and problem in problems[0], problems


# --- the README's probe ---------------------------------------------------------------------------

LOGSTASH_README = REPO / "logstash" / "README.md"
TEMPLATES = REPO / "mapping_templates"


def searches_in(text: str) -> list:
    """(index expression, field) of each `curl ...:9200/<indices>/_search?q=<field>:...` in `text`."""
    import re

    return re.findall(r"curl [^\n]*:9200/([^/\s']+)/_(?:search|count|delete_by_query)\?q=([\w.@]+):", text)


def unsearchable_fields(index_expression: str, field: str) -> list:
    """The kcing templates whose indices the expression names and that do not index `field`.

    kcing's templates map only the field catalogue (`"dynamic": false`): a field they do not
    name stays in `_source` but is not indexed, so a query on it finds nothing there."""
    import fnmatch
    import json

    missing = []
    for path in sorted(TEMPLATES.glob("*.json")):
        template = json.loads(path.read_text(encoding="utf-8"))
        patterns = template["index_patterns"]
        named = [part for part in index_expression.split(",")
                 if any(fnmatch.fnmatchcase(part.replace("*", "x"), pattern) for pattern in patterns)]
        if named and field not in template["template"]["mappings"]["properties"]:
            missing.append("%s (%s)" % (path.name, ",".join(named)))
    return missing


def test_the_probe_searches_only_by_fields_the_searched_indices_index():
    searches = searches_in(LOGSTASH_README.read_text(encoding="utf-8"))
    assert searches, "no search in logstash/README.md"
    for index_expression, field in searches:
        assert unsearchable_fields(index_expression, field) == [], (index_expression, field)


@pytest.mark.parametrize(
    "expression, field, unsearchable",
    [
        ("build-2020.11.19", "probe", True),
        ("kcing-unrouted-*,boot-*", "probe", True),
        ("kcing-unrouted-*", "probe", False),
        ("build-2020.11.19", "job", False),
    ],
)
def test_the_searchable_field_check_can_fail(expression, field, unsearchable):
    assert bool(unsearchable_fields(expression, field)) is unsearchable
