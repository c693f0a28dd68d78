"""Settings precedence (defaults < local_settings.py < environment < flags) and validation."""
import random
import re
import time

import pytest

from kcing import settings as settings_module, settingvalues
from kcing.errors import ConfigError


def load(tmp_path, environ=None, local=None, overrides=None):
    local_file = tmp_path / "local_settings.py"
    if local is not None:
        local_file.write_text(local)
    return settings_module.load(environ=environ or {}, local_file=local_file, overrides=overrides)


def test_defaults_follow_the_original_tool(tmp_path):
    s = load(tmp_path)
    assert s.KCI_HOST == "kernelci.org" and s.KCI_SCHEME == "https"
    assert s.storage_url == "https://storage.kernelci.org"
    assert s.ES_BUILD == ("http://localhost:8337",)
    assert s.ES_LAVA == ("http://localhost:8338",)
    assert s.ES_BOOT == ("http://localhost:8007",)
    assert s.ES_MAX_RETRIES == 3 and s.KCING_DB == "kcing.db"


def test_each_layer_overrides_the_one_below(tmp_path):
    local = "KCI_HOST = 'local.example'\nES_MAX_RETRIES = 5\nKCING_DB = 'local.db'\n"
    s = load(tmp_path, environ={"ES_MAX_RETRIES": "7", "KCING_DB": "env.db"}, local=local,
             overrides={"KCING_DB": "flag.db"})
    assert s.KCI_HOST == "local.example"  # local beats default
    assert s.ES_MAX_RETRIES == 7  # environment beats local
    assert s.KCING_DB == "flag.db"  # flag beats environment


def test_an_empty_environment_variable_counts_as_unset(tmp_path):
    """The README: a wrapper script that exports a variable empty (or blank) leaves the setting
    as local_settings.py, or the default, gives it."""
    local = "KCI_HOST = 'local.example'\nES_MAX_RETRIES = 5\n"
    s = load(tmp_path, environ={"KCI_HOST": "", "ES_MAX_RETRIES": "  ", "KCI_DAYS": "", "KB_SPACE": ""}, local=local)
    assert (s.KCI_HOST, s.ES_MAX_RETRIES, s.KCI_DAYS, s.KB_SPACE) == ("local.example", 5, 2, "")


def test_a_value_a_higher_layer_replaces_is_never_read_so_cannot_stop_the_run(tmp_path):
    """A CA bundle this host lacks, in local_settings.py, replaced by the environment's: every
    command was refused for the value it would not use."""
    bundle = tmp_path / "ca.pem"
    bundle.write_text("")
    local = "ES_CA_BUNDLE = '/nonexistent/elastic-ca.pem'\nES_MAX_RETRIES = 'three'\nKCING_DB = ':memory:'\n"
    s = load(tmp_path, environ={"ES_CA_BUNDLE": str(bundle), "ES_MAX_RETRIES": "5", "KCING_DB": ""}, local=local,
             overrides={"KCING_DB": "flag.db"})
    assert (s.ES_CA_BUNDLE, s.ES_MAX_RETRIES, s.KCING_DB) == (str(bundle), 5, "flag.db")
    # What is in effect is still checked, wherever it comes from.
    with pytest.raises(ConfigError, match="invalid ES_MAX_RETRIES='three' [(]from .*local_settings.py[)]"):
        load(tmp_path, environ={"ES_CA_BUNDLE": str(bundle), "KCING_DB": "env.db"})
    with pytest.raises(ConfigError, match="invalid KCING_DB=':memory:' [(]from environment[)]"):
        load(tmp_path, environ={"ES_CA_BUNDLE": str(bundle), "ES_MAX_RETRIES": "5", "KCING_DB": ":memory:"})


def test_status_runs_with_a_local_setting_the_environment_replaces(tmp_path):
    from tests.feedrun import clean_environ, kcing

    (tmp_path / "local_settings.py").write_text("ES_CA_BUNDLE = '/nonexistent/elastic-ca.pem'\n")
    bundle = tmp_path / "ca.pem"
    bundle.write_text("")
    done = kcing(["status"], clean_environ(ES_CA_BUNDLE=str(bundle), KCING_DB=str(tmp_path / "k.db")), tmp_path)
    assert done.returncode == 2 and done.stderr == "kcing status: no ledger at %s yet: run `kcing feed_es` first " \
        "(or pass --db)\n" % (tmp_path / "k.db"), done.stderr


def test_original_settings_dict_form_is_read(tmp_path):
    s = load(tmp_path, local="settings = {'KCI_SCHEME': 'http', 'KCI_HOST': 'h'}\n")
    assert s.storage_url == "http://storage.h"


def test_the_original_tools_name_of_the_labs_without_lava_is_read_as_kcing_s_own(tmp_path, caplog):
    """The original tool named the lab without LAVA KCI_NON_LAVA_LAB: its settings dict naming it
    was refused (exit 2) and the name elsewhere ignored, its lab's boots then read as LAVA boots."""
    s = load(tmp_path, local="settings = {'KCI_HOST': 'h', 'KCI_NON_LAVA_LAB': 'lab-a'}\n")
    assert s.non_lava_labs == frozenset({"lab-a"})
    assert load(tmp_path, local="KCI_NON_LAVA_LAB = 'lab-b'\n").non_lava_labs == frozenset({"lab-b"})
    assert load(tmp_path, environ={"KCI_NON_LAVA_LAB": "lab-c"}).non_lava_labs == frozenset({"lab-c"})
    assert warnings_of(caplog) == []
    # kcing's own name wins where both are given in one place; a higher layer wins whichever it uses.
    both = "KCI_NON_LAVA_LAB = 'lab-b'\nKCI_NON_LAVA_LABS = 'lab-d,lab-e'\n"
    assert load(tmp_path, local=both).non_lava_labs == frozenset({"lab-d", "lab-e"})
    assert load(tmp_path, environ={"KCI_NON_LAVA_LAB": "lab-c", "KCI_NON_LAVA_LABS": "lab-f"},
                local=both).non_lava_labs == frozenset({"lab-f"})
    assert load(tmp_path, environ={"KCI_NON_LAVA_LAB": "lab-c"}, local=both).non_lava_labs == frozenset({"lab-c"})


@pytest.mark.parametrize("value, name", [("lab-a lab-b", "lab-a lab-b"), ("lab-a;lab-b", "lab-a;lab-b"),
                                         ("lab-c, lab-a\tlab-b", "lab-a\tlab-b"),
                                         (["lab-c", "lab-a lab-b"], "lab-a lab-b")])
def test_labs_run_together_otherwise_than_by_commas_are_refused(tmp_path, value, name):
    """`KCI_NON_LAVA_LABS="lab-a lab-b"` was one lab of that name, which none is: both labs'
    boots were then looked for as LAVA ones without a word."""
    with pytest.raises(ConfigError) as caught:
        if isinstance(value, list):
            load(tmp_path, local="KCI_NON_LAVA_LABS = %r\n" % value)
        else:
            load(tmp_path, environ={"KCI_NON_LAVA_LABS": value})
    assert str(caught.value).endswith(": %r holds several names: separate them with commas" % name), str(caught.value)
    assert load(tmp_path, environ={"KCI_NON_LAVA_LABS": " lab-a , lab-b ,"}).non_lava_labs == frozenset({"lab-a",
                                                                                                         "lab-b"})


@pytest.mark.parametrize("local, environ", [
    ("KCI_NON_LAVA_LAB = b'lab-a'\n", {}),
    ("settings = {'KCI_NON_LAVA_LAB': {'lab': 'a'}}\n", {}),
    ("KCI_NON_LAVA_LAB = [object()]\n", {}),
])
def test_a_refused_value_given_under_the_original_tools_name_is_said_to_be_given_so(tmp_path, local, environ):
    """A message naming only KCI_NON_LAVA_LABS sent the user looking for a name their file does not hold."""
    with pytest.raises(ConfigError) as error:
        load(tmp_path, environ=environ, local=local)
    assert "KCI_NON_LAVA_LAB " in str(error.value) or "as KCI_NON_LAVA_LAB)" in str(error.value), str(error.value)


def test_numbers_from_the_environment_are_parsed(tmp_path):
    s = load(tmp_path, environ={"ES_LOAD_INTERVAL": "0.25", "LS_PIPELINE_BATCH_SIZE": "50"})
    assert s.ES_LOAD_INTERVAL == 0.25 and s.LS_PIPELINE_BATCH_SIZE == 50


@pytest.mark.parametrize("name, value", [
    ("ES_MAX_RETRIES", "three"), ("ES_MAX_RETRIES", "0"), ("ES_LOAD_INTERVAL", "-1"),
    ("ES_LOAD_INTERVAL", "nan"), ("KCI_SCHEME", "ftp"), ("ES_LAVA", "localhost:8338"),
    ("ES_BUILD", " , "), ("ES_BOOT", "http://user:pw@ls:8007"), ("LS_PIPELINE_BATCH_SIZE", "1.5"),
])
def test_a_bad_value_names_the_setting_and_its_origin(tmp_path, name, value):
    with pytest.raises(ConfigError) as error:
        load(tmp_path, environ={name: value})
    assert name in str(error.value) and "environment" in str(error.value)


def test_a_long_bad_value_is_shown_cut_with_its_length(tmp_path):
    with pytest.raises(ConfigError) as error:
        load(tmp_path, environ={"ES_MAX_RETRIES": "9" * 500})
    assert str(error.value) == ("invalid ES_MAX_RETRIES='%s... (502 characters) (from environment): expected a whole "
                                "number from 1 to 100" % ("9" * 79))


def test_several_logstash_urls_are_a_list(tmp_path):
    s = load(tmp_path, environ={"ES_LAVA": "http://a:8338, http://b:8338/"})
    assert s.ES_LAVA == ("http://a:8338", "http://b:8338")


@pytest.mark.parametrize("separator", [";", " ", " ; ", "|"])
def test_logstash_urls_separated_otherwise_than_by_commas_are_refused_saying_so(tmp_path, separator):
    # `http://a:8338;http://b:8338` was refused as "the port must be a number from 1 to 65535",
    # with a space as "whitespace in its host part": neither says to use commas.
    value = "http://a:8338%shttp://b:8338" % separator
    with pytest.raises(ConfigError) as refused:
        load(tmp_path, environ={"ES_LAVA": value})
    assert str(refused.value) == ("invalid ES_LAVA=%r (from environment): %r holds several URLs: separate them "
                                  "with commas" % (value, value.strip()))


def test_secrets_never_show(tmp_path):
    s = load(tmp_path, environ={"LS_PASSWORD": "hunter2-secret"})
    assert "hunter2-secret" not in repr(s) and "LS_PASSWORD='***'" in repr(s)


def test_a_broken_local_settings_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError) as error:
        load(tmp_path, local="KCI_HOST = (\n")
    assert "local_settings.py" in str(error.value)


@pytest.mark.parametrize("name", ["KCI_CA_BUNDLE", "LS_CA_BUNDLE", "ES_CA_BUNDLE"])
def test_a_ca_bundle_must_exist(tmp_path, name):
    bundle = tmp_path / "ca.pem"
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, environ={name: str(bundle)})
    assert name in str(caught.value) and "no such file" in str(caught.value)
    bundle.write_text("-----BEGIN CERTIFICATE-----\n")
    assert getattr(load(tmp_path, environ={name: str(bundle)}), name) == str(bundle)
    assert getattr(load(tmp_path, environ={name: str(tmp_path)}), name) == str(tmp_path)  # a hashed dir


@pytest.mark.parametrize("name", ["KCI_CA_BUNDLE", "LS_CA_BUNDLE", "ES_CA_BUNDLE", "KB_CA_BUNDLE"])
def test_a_ca_bundle_that_is_a_fifo_is_refused_before_a_connection_waits_on_it(tmp_path, name):
    import os

    fifo = tmp_path / "ca.pem"
    os.mkfifo(str(fifo))
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, environ={name: str(fifo)})
    assert str(caught.value).startswith("invalid %s=" % name)
    assert str(caught.value).endswith("neither a regular file (a PEM bundle) nor a directory of certificates")


def test_feed_es_with_a_logstash_ca_bundle_that_is_a_fifo_ends_at_once(tmp_path):
    import os

    from tests.feedrun import SAMPLES, clean_environ, kcing

    fifo = tmp_path / "ca.pem"
    os.mkfifo(str(fifo))
    env = clean_environ(LS_CA_BUNDLE=str(fifo), ES_BUILD="https://127.0.0.1:1", ES_LAVA="https://127.0.0.1:1",
                        ES_BOOT="https://127.0.0.1:1", KCING_DB=str(tmp_path / "k.db"), KCI_SAMPLES_DIR=str(SAMPLES))
    done = kcing(["feed_es", "--source", "samples"], env, tmp_path, timeout=30)
    assert done.returncode == 2 and "invalid LS_CA_BUNDLE=" in done.stderr, done.stderr


def test_a_bad_url_is_quoted_without_its_credentials(tmp_path):
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, environ={"ES_LAVA": "ftp://kcing:hunter2@ls:8338"})
    assert "hunter2" not in str(caught.value) and "ES_LAVA" in str(caught.value)
    assert settingvalues.mask_credentials("see http://u:p@h:1/x and https://h/y") == "see http://***@h:1/x and https://h/y"


URL_SETTINGS = ("KCI_STORAGE_URL", "KCI_API_URL", "KCI_API_STORAGE_URL", "KCI_ARTIFACT_ORIGINS", "ES_BUILD", "ES_LAVA",
                "ES_BOOT", "ES_REGRESSION", "ES_HOST", "KB_URL")


@pytest.mark.parametrize("name", URL_SETTINGS)
@pytest.mark.parametrize("port", ["99999", "abc", "0", "-1"])
def test_every_url_setting_refuses_a_port_no_connection_can_use(tmp_path, name, port):
    """urlsplit reads a port only when asked: unread, `:99999` passed and failed later, as if the
    host were down or (for an upstream URL) as another origin."""
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, environ={name: "http://127.0.0.1:%s" % port})
    assert str(caught.value) == ("invalid %s='http://127.0.0.1:%s' (from environment): the port must be a number "
                                 "from 1 to 65535" % (name, port))


@pytest.mark.parametrize("port", ["99999", "abc", "0"])
def test_the_host_setting_refuses_a_port_no_connection_can_use(tmp_path, port):
    with pytest.raises(ConfigError, match="KCI_HOST.*the port must be a number from 1 to 65535"):
        load(tmp_path, environ={"KCI_HOST": "127.0.0.1:%s" % port})


@pytest.mark.parametrize("name", URL_SETTINGS)
@pytest.mark.parametrize("value, reason", [
    ("http://127.0.0.1\\x:8337", "a backslash in its host part"),
    ("http://127.0.0.1\t:8337", "a control character"),
    ("http://bücher.example:8337", "a character beyond ASCII in its host part"),
], ids=["backslash", "tab", "non-ASCII"])
def test_every_url_setting_refuses_a_host_part_parsers_read_differently(tmp_path, name, value, reason):
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, environ={name: value})
    assert name in str(caught.value) and str(caught.value).endswith("is not a usable URL: %s" % reason)


@pytest.mark.parametrize("value", ["127.0.0.1\\x", "127.0.0.1\\x:80", "bücher.example", "[::1"])
def test_the_host_setting_refuses_a_host_parsers_read_differently(tmp_path, value):
    with pytest.raises(ConfigError, match="KCI_HOST.*expected a host name"):
        load(tmp_path, environ={"KCI_HOST": value})


LONG_LABEL = "a" * 64


@pytest.mark.parametrize("name", URL_SETTINGS + ("KCI_HOST",))
@pytest.mark.parametrize("host", ["a..b", ".example.org", "%s.example.org" % LONG_LABEL, "example.org.."])
def test_a_host_name_no_http_client_can_encode_is_refused_naming_the_setting(tmp_path, name, host):
    value = host if name == "KCI_HOST" else "http://%s:8337" % host
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, environ={name: value})
    assert str(caught.value).startswith("invalid %s=" % name)
    assert str(caught.value).endswith("has an empty part or a part longer than 63 characters")


LIST_SETTINGS = ("ES_BUILD", "ES_LAVA", "ES_BOOT", "ES_REGRESSION", "KCI_ARTIFACT_ORIGINS")


@pytest.mark.parametrize("name, host, odd", [
    (name, host, odd) for name in URL_SETTINGS + ("KCI_HOST",)
    for host, odd in [("es,http", ","), ("a;b", ";"), ("a!b", "!"), ("a%2cb", "%")]
    if odd != "," or name not in LIST_SETTINGS  # a comma separates the URLs of a list
])
def test_a_host_name_holding_a_character_no_host_name_has_is_refused_naming_the_setting(tmp_path, name, host, odd):
    """urlsplit takes `es,http` for the host of `http://es,http://es2`: no resolver finds it."""
    value = host if name == "KCI_HOST" else "http://%s:8337" % host
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, environ={name: value})
    assert str(caught.value) == ("invalid %s=%r (from environment): the host name %r holds %r, which no host name has"
                                 % (name, value, host, odd))


@pytest.mark.parametrize("name", ("KCI_STORAGE_URL", "KCI_API_URL", "KCI_API_STORAGE_URL", "ES_HOST", "KB_URL"))
@pytest.mark.parametrize("value", ["http://es1:9200,http://es2:9200", "http://es1,http://es2",
                                   "http://es1:9200 https://es2:9200", "http://es1:9200; http://es2:9200"])
def test_several_urls_in_a_setting_that_takes_one_are_refused_as_such(tmp_path, name, value):
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, environ={name: value})
    assert str(caught.value) == ("invalid %s=%r (from environment): %r holds several URLs: this setting takes one URL"
                                 % (name, value, value))


@pytest.mark.parametrize("name", ("KCI_STORAGE_URL", "KCI_API_URL", "KCI_API_STORAGE_URL", "ES_HOST", "KB_URL"))
@pytest.mark.parametrize("value", ["http://es:9200,", "http://es,", "http://es:9200/ , ", "http://es:9200;"])
def test_a_url_ending_with_a_list_separator_in_a_setting_that_takes_one_says_so(tmp_path, name, value):
    """`ES_HOST=http://es:9200,`, written as the ES_LAVA list beside it is, was refused for a port
    that is no number from 1 to 65535, or taken with a host named `es,`."""
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, environ={name: value})
    assert str(caught.value) == ("invalid %s=%r (from environment): %r ends with %r: this setting takes one URL"
                                 % (name, value, value.strip(), value.strip()[-1]))


@pytest.mark.parametrize("name", LIST_SETTINGS)
@pytest.mark.parametrize("value", ["http://a:8338;", "http://a:8338,http://b:8338|"])
def test_a_url_of_a_list_setting_ending_with_another_separator_says_to_use_commas(tmp_path, name, value):
    # A list setting takes several URLs: "this setting takes one URL" would send the user astray.
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, environ={name: value})
    assert str(caught.value).endswith("ends with %r: separate them with commas" % value[-1]), str(caught.value)

@pytest.mark.parametrize("name", LIST_SETTINGS)
@pytest.mark.parametrize("separator", [";", " ", " | "])
def test_urls_of_a_list_setting_run_together_otherwise_than_by_commas_say_how_to_separate_them(tmp_path, name,
                                                                                                separator):
    value = "http://a:8338%shttp://b:8338" % separator
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, environ={name: value})
    assert str(caught.value).endswith("%r holds several URLs: separate them with commas" % value)
    assert load(tmp_path, environ={name: "http://a:8338, http://b:8338"}).__getattribute__(name) == (
        "http://a:8338", "http://b:8338")


def test_several_urls_with_credentials_are_refused_without_showing_them(tmp_path):
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, environ={"ES_HOST": "http://elastic:s3cret@es1:9200,http://es2:9200"})
    assert "s3cret" not in str(caught.value) and "holds several URLs" in str(caught.value)


def test_a_long_run_of_whitespace_in_a_url_setting_is_checked_in_linear_time(tmp_path):
    """60,000 spaces in ES_HOST (an environment variable may hold 128 KiB) took twelve seconds to
    refuse, quadratic in them, while the check for several URLs run together tried each place."""
    value = "http://es.example:9200" + " " * 60000 + "x"
    started = time.process_time()
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, environ={"ES_HOST": value})
    assert time.process_time() - started < 1
    assert str(caught.value).endswith("is not a usable URL: whitespace in its host part"), str(caught.value)[-200:]


# What said a value holds several URLs before each URL's start was looked back from instead.
_ANOTHER_URL_BEFORE = re.compile(r"\S.*?[\s,;|]\s*https?://", re.IGNORECASE)


def test_several_urls_are_found_in_the_values_the_regular_expression_found_them_in():
    rng = random.Random(8338)
    pieces = ("http://", "HTTPS://", "http\u017f://", "https:/", "h", "a", ":", "/", " ", "  ", "\t", "\n", "\r",
              "\u00a0", "\x1c", ",", ";", "|", ", ", " ;\n")
    for _ in range(20000):
        text = "".join(rng.choice(pieces) for _ in range(rng.randrange(12)))
        assert settingvalues._holds_another_url(text) == bool(_ANOTHER_URL_BEFORE.match(text)), repr(text)


def test_a_host_name_with_an_underscore_as_container_names_have_is_taken(tmp_path):
    loaded = load(tmp_path, environ={"ES_HOST": "http://kcing_es:9200", "ES_BUILD": "http://kcing_ls:8337",
                                     "KCI_STORAGE_URL": "https://my_storage.example"})
    assert (loaded.ES_HOST, loaded.ES_BUILD, loaded.KCI_STORAGE_URL) == (
        "http://kcing_es:9200", ("http://kcing_ls:8337",), "https://my_storage.example")


def test_a_host_name_with_a_label_of_63_characters_or_a_final_dot_is_taken(tmp_path):
    host = "a" * 63 + ".example.org."
    loaded = load(tmp_path, environ={"ES_HOST": "http://%s:9200" % host, "KCI_HOST": host})
    assert loaded.ES_HOST == "http://%s:9200" % host and loaded.KCI_HOST == host


def test_drp_with_an_elasticsearch_host_name_no_client_can_encode_is_a_one_line_usage_error(tmp_path):
    from tests.feedrun import clean_environ, kcing

    done = kcing(["drp", "--dry-run"], clean_environ(ES_HOST="http://a..b:9200", KCING_DB=str(tmp_path / "k.db")),
                 tmp_path)
    assert done.returncode == 2, done.stderr
    assert done.stderr == ("kcing drp: invalid ES_HOST='http://a..b:9200' (from environment): the host name 'a..b' "
                           "has an empty part or a part longer than 63 characters\n")


def test_ports_and_addresses_connections_can_use_are_taken(tmp_path):
    s = load(tmp_path, environ={"ES_BUILD": "http://127.0.0.1:65535", "KCI_API_URL": "http://[::1]:8001/latest",
                                "KCI_HOST": "[::1]:8000", "KCI_API_STORAGE_URL": "https://files.example:1/base"})
    assert s.ES_BUILD == ("http://127.0.0.1:65535",) and s.frontend_url == "https://[::1]:8000"
    assert ("http", "::1", 8001) in s.upstream_origins and ("https", "files.example", 1) in s.upstream_origins


def numeric_specs():
    """(name, minimum, maximum, is whole) of every setting whose parser bounds a number."""
    found = []
    for name, spec in settings_module.SPECS.items():
        allowed = getattr(spec.parse, "allowed", "")
        low, _, high = allowed.rpartition(", or ")[2].partition(" to ")
        if high:
            whole = "." not in low + high and not isinstance(spec.default, float)
            found.append((name, float(low), float(high), whole))
    return found


def test_every_numeric_setting_has_an_upper_bound():
    assert {name for name, *_ in numeric_specs()} == {
        name for name, spec in settings_module.SPECS.items()
        if isinstance(spec.default, (int, float)) or name == "KCING_WORKERS"}


@pytest.mark.parametrize("name, minimum, maximum, whole", numeric_specs(), ids=[spec[0] for spec in numeric_specs()])
def test_a_numeric_setting_takes_its_bounds_and_nothing_beyond(tmp_path, name, minimum, maximum, whole):
    shown = (lambda number: "%d" % number) if whole else repr
    for inside in (minimum, maximum):
        assert getattr(load(tmp_path, environ={name: shown(inside)}), name) == inside
    step = 1 if whole else 0.001
    beyond = [shown(maximum + step), "1" + "0" * 400, "-1" + "0" * 400] + ([] if whole else ["inf", "nan", "1e400"])
    if minimum > 0:
        beyond.append(shown(minimum - step))
    for value in beyond:
        with pytest.raises(ConfigError) as caught:
            load(tmp_path, environ={name: value})
        assert str(caught.value).endswith("from %s to %s" % (
            settingvalues.number_text(minimum), settingvalues.number_text(maximum))), str(caught.value)


def test_a_number_from_local_settings_is_bounded_too(tmp_path):
    with pytest.raises(ConfigError, match=r"invalid KCI_THREADS=.*local_settings.py.*from 1 to 256"):
        load(tmp_path, local="KCI_THREADS = 10 ** 20\n")
    with pytest.raises(ConfigError, match=r"invalid ES_TIMEOUT=.*local_settings.py.*from 0.1 to 3600"):
        load(tmp_path, local="ES_TIMEOUT = float('inf')\n")


@pytest.mark.parametrize("line, name, shown, expected", [
    ("LS_USER = None", "LS_USER", "None", "expected text (a string), not None"),
    ("KCING_DB = None", "KCING_DB", "None", "expected text (a string), not None"),
    ("LS_PASSWORD = None", "LS_PASSWORD", "***", "expected text (a string), not None"),
    ("LS_HOME = ['/usr/share/logstash']", "LS_HOME", "['/usr/share/logstash']", "expected text (a string), not a list"),
    ("KB_SPACE = True", "KB_SPACE", "True", "expected text (a string), not a bool"),
    ("ES_CA_BUNDLE = None", "ES_CA_BUNDLE", "None", "expected text (a string), not None"),
    ("KCI_HOST = None", "KCI_HOST", "None", "expected a host name, optionally with :port, as a string"),
    # A URL setting so given was told it lacked its scheme ("give its scheme, e.g. http://None").
    ("ES_HOST = None", "ES_HOST", "None", "expected text (a string), not None"),
    ("KB_URL = True", "KB_URL", "True", "expected text (a string), not a bool"),
    ("ES_HOST = ['http://es:9200']", "ES_HOST", "['http://es:9200']", "expected text (a string), not a list"),
    ("KCI_API_STORAGE_URL = None", "KCI_API_STORAGE_URL", "None", "expected text (a string), not None"),
    ("ES_BUILD = None", "ES_BUILD", "None", "expected text (a string), not None"),
    ("ES_LAVA = ['http://ls:8338', None]", "ES_LAVA", "['http://ls:8338', None]", "expected text (a string), not None"),
])
def test_a_text_setting_of_another_type_in_local_settings_is_refused_not_written_out(tmp_path, line, name, shown,
                                                                                     expected):
    """Once `LS_USER = None` made the user "None", and `KCING_DB = None` a ledger file named None."""
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, local=line + "\n")
    assert str(caught.value) == "invalid %s=%s (from %s): %s" % (name, shown, tmp_path / "local_settings.py", expected)


OBJECTS_OF_THE_USERS = """
class Raising:
    def __str__(self): raise RuntimeError('str')
    def __repr__(self): raise RuntimeError('repr')
    def __eq__(self, other): raise RuntimeError('eq')
    def __hash__(self): return 1
class Text(str):
    def strip(self, *args): raise RuntimeError('strip')
class Number(int):
    def __repr__(self): raise RuntimeError('repr')
class Settings(dict):
    def keys(self): raise RuntimeError('keys')
    def __iter__(self): raise RuntimeError('iter')
    def items(self): raise RuntimeError('items')
class Name(str):
    def __eq__(self, other): raise RuntimeError('eq')
    __hash__ = str.__hash__
class Place:
    def __fspath__(self): raise RuntimeError('fspath')
"""


@pytest.mark.parametrize("line, expected", [
    ("KCI_DAYS = Raising()", "invalid KCI_DAYS (from local_settings.py): a Raising, which no setting takes: give text, "
                             "a number or a list of them"),
    ("ES_BUILD = ['http://ls:8337', Raising()]", "invalid ES_BUILD (from local_settings.py): a Raising, which no "
                                                 "setting takes: give text, a number or a list of them"),
    ("settings = {Raising(): 3}", "local_settings.py: `settings` has a key that is a Raising, not a setting's name"),
    ("settings = Settings(KCI_DAYS=Number(0))", "invalid KCI_DAYS=0 (from local_settings.py): expected a whole number "
                                                "from 1 to 36500"),
    ("KCI_HOST = Text('ci example')", "invalid KCI_HOST='ci example' (from local_settings.py): expected a host name, "
                                      "optionally with :port (no scheme or path)"),
    ("KCING_DB = Place()", "invalid KCING_DB (from local_settings.py): a path whose __fspath__ raised RuntimeError"),
])
def test_an_object_of_the_users_in_local_settings_is_refused_unread_not_an_internal_error(tmp_path, line, expected):
    """Reading a value, or quoting it, ran the user's own __str__, __repr__ or strip, whose error
    ended the run as an internal error (exit 70)."""
    from tests.feedrun import clean_environ, kcing

    (tmp_path / "local_settings.py").write_text(OBJECTS_OF_THE_USERS + line + "\n")
    done = kcing(["status"], clean_environ(), tmp_path)
    assert done.returncode == 2, done.stderr
    assert done.stderr.splitlines() == ["kcing status: " + expected]


@pytest.mark.parametrize("source, kind", [("x = []\nx.append(x)\nKCI_DAYS = x", "a list"),
                                          ("x = {}\nx['a'] = x\nsettings = {'KCI_DAYS': x}", "a dict"),
                                          ("x = 1\nfor _ in range(100000):\n    x = [x]\nKCI_DAYS = x", "a list")])
def test_a_value_holding_itself_or_nested_without_end_in_local_settings_is_refused(tmp_path, source, kind):
    """Walking it, or Python's own repr() quoting it, recursed until RecursionError: exit 70."""
    from tests.feedrun import clean_environ, kcing

    (tmp_path / "local_settings.py").write_text(source + "\n")
    done = kcing(["status"], clean_environ(), tmp_path)
    assert done.returncode == 2, done.stderr
    assert done.stderr.splitlines() == ["kcing status: invalid KCI_DAYS (from local_settings.py): %s nested more "
                                        "than 8 deep (or holding itself), which no setting takes" % kind]


def test_a_subclass_of_text_or_a_number_in_local_settings_is_read_as_its_value(tmp_path):
    s = load(tmp_path, local=OBJECTS_OF_THE_USERS + "KCI_DAYS = Number(5)\nKCI_HOST = Text('ci.example')\n"
                                                    "settings = Settings(DRP_DAYS=Number(9))\n")
    assert (s.KCI_DAYS, s.KCI_HOST, s.DRP_DAYS) == (5, "ci.example", 9)
    assert type(s.KCI_HOST) is str
    # A key of the settings dict is read as its text: looking it up runs none of its methods.
    s = load(tmp_path, local=OBJECTS_OF_THE_USERS + "settings = {Name('KCI_DAYS'): 4}\n")
    assert s.KCI_DAYS == 4


def test_a_number_of_pythons_own_exact_types_in_local_settings_is_read_as_its_value(tmp_path):
    s = load(tmp_path, local="from decimal import Decimal\nfrom fractions import Fraction\n"
                             "KCI_DAYS = Decimal(5)\nDRP_DAYS = Fraction(9)\nES_RETRY_BACKOFF = Decimal('0.5')\n")
    assert (s.KCI_DAYS, s.DRP_DAYS, s.ES_RETRY_BACKOFF) == (5, 9, 0.5)


@pytest.mark.parametrize("name", ["KCING_DB", "KCI_SAMPLES_DIR", "LS_PASSWORD", "ES_USER"])
def test_half_a_character_in_a_text_setting_of_local_settings_is_refused(name, tmp_path):
    """`'\\ud800'` in local_settings.py is no character any encoding writes: a ledger, a samples
    directory or a password holding it ended every command as an internal error (exit 70)."""
    from tests.feedrun import clean_environ, kcing

    (tmp_path / "local_settings.py").write_text("%s = 'kcing\\ud800'\n" % name)
    done = kcing(["status"], clean_environ(), tmp_path)
    assert done.returncode == 2, done.stderr
    shown = "***" if name == "LS_PASSWORD" else "'kcing\\ud800'"
    assert done.stderr.splitlines() == [
        "kcing status: invalid %s=%s (from local_settings.py): it holds half of a character (a lone surrogate, "
        "\\ud800 to \\udfff), which no text can be written with" % (name, shown)]


def test_a_url_setting_holding_bytes_that_are_not_utf8_is_refused(tmp_path):
    """An environment in another encoding (`ES_BUILD=http://ls/caf\\xe9`): the URL went into the
    ledger's name of the destination, which SQLite takes as UTF-8 only (exit 70)."""
    from tests.feedrun import SAMPLES, clean_environ, kcing

    env = clean_environ(ES_BUILD="http://127.0.0.1:9/caf\udce9", KCING_DB=str(tmp_path / "k.db"),
                        KCI_SAMPLES_DIR=str(SAMPLES))
    done = kcing(["feed_es", "--source", "samples"], env, tmp_path)
    assert done.returncode == 2, done.stderr
    assert done.stderr.splitlines() == [
        "kcing feed_es: invalid ES_BUILD='http://127.0.0.1:9/caf\\udce9' (from environment): "
        "'http://127.0.0.1:9/caf\\udce9' holds bytes that are not UTF-8 text: write the URL in UTF-8 (or "
        "percent-encoded)"]
    assert not (tmp_path / "k.db").exists()


@pytest.mark.parametrize("name", ["KCING_DB", "KCI_SAMPLES_DIR", "LS_HOME", "LS_PATH_SETTINGS", "LS_PATH_CONFIG",
                                  "KCI_CA_BUNDLE", "LS_CA_BUNDLE", "ES_CA_BUNDLE", "KB_CA_BUNDLE"])
def test_a_path_setting_holding_a_nul_character_is_refused(tmp_path, name):
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, local="%s = 'samples\\x00x'\n" % name)
    assert str(caught.value) == ("invalid %s='samples\\x00x' (from %s): a file name cannot hold a NUL character"
                                 % (name, tmp_path / "local_settings.py"))


def test_feed_es_and_gen_samples_with_a_samples_dir_holding_a_nul_character_are_usage_errors(tmp_path):
    from tests.feedrun import clean_environ, kcing

    (tmp_path / "local_settings.py").write_text("KCI_SAMPLES_DIR = 'samples\\x00x'\n")
    env = clean_environ(KCING_DB=str(tmp_path / "k.db"))
    for args in (["feed_es", "--source", "samples", "--output", str(tmp_path / "out")], ["gen_samples", "--source", "api"]):
        done = kcing(args, env, tmp_path)
        assert done.returncode == 2, done.stderr
        assert "a file name cannot hold a NUL character" in done.stderr


@pytest.mark.parametrize("name", ["KCI_DAYS", "ES_TIMEOUT", "LS_USER", "KCI_HOST", "ES_BUILD", "KCI_SOURCE",
                                  "KCING_WORKERS", "KCI_NON_LAVA_LABS"])
@pytest.mark.parametrize("given, shown", [("10**5000", "an int"), ("[10**5000]", "a list"),
                                          ("{'a': 10**5000}", "a dict")])
def test_a_number_of_more_digits_than_python_writes_out_is_refused_naming_the_setting(tmp_path, name, given, shown):
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, local="%s = %s\n" % (name, given))
    assert str(caught.value) == ("invalid %s=%s holding a number too long to show (from %s): a number of more than "
                                 "4300 digits, which no setting takes" % (name, shown, tmp_path / "local_settings.py"))


def test_text_settings_take_paths_numbers_and_a_list_of_labs_from_local_settings(tmp_path):
    s = load(tmp_path, local="from pathlib import Path\nKCING_DB = Path('/srv/kcing/kcing.db')\nKB_SPACE = 7\n"
                             "KCI_NON_LAVA_LABS = ['lab-a', ' lab-b ']\n")
    assert s.KCING_DB == "/srv/kcing/kcing.db" and s.KB_SPACE == "7"
    assert s.non_lava_labs == frozenset({"lab-a", "lab-b"})


def warnings_of(caplog):
    return [record.getMessage() for record in caplog.records if record.levelname == "WARNING"]


def test_an_environment_variable_that_looks_meant_as_a_setting_is_warned_of(tmp_path, caplog):
    s = load(tmp_path, environ={"ES_HOTS": "http://es.example:9200", "kci_host": "kernelci.example",
                                "DRP_DAY": "9"})
    assert s.ES_HOST == "http://localhost:9200" and s.KCI_HOST == "kernelci.org" and s.DRP_DAYS == 3
    assert warnings_of(caplog) == [
        "environment variable DRP_DAY is not a kcing setting and is ignored (did you mean DRP_DAYS?)",
        "environment variable ES_HOTS is not a kcing setting and is ignored (did you mean ES_HOST?)",
        "environment variable kci_host is not a kcing setting and is ignored (setting names are upper-case: KCI_HOST)",
    ]


def test_other_programs_variables_of_the_same_prefixes_are_not_warned_of(tmp_path, caplog):
    load(tmp_path, environ={name: "x" for name in ("LS_COLORS", "ES_JAVA_OPTS", "LS_JAVA_OPTS", "ES_HOME",
                                                   "ES_PATH_CONF", "ES_TMPDIR", "LS_SETTINGS_DIR", "KCI_SETTINGS",
                                                   # kcing's Logstash pipeline reads these
                                                   "ES_HOSTS", "LS_HTTP_USER", "LS_HTTP_PASSWORD")})
    assert warnings_of(caplog) == []


def test_a_name_in_local_settings_that_looks_meant_as_a_setting_is_warned_of(tmp_path, caplog):
    s = load(tmp_path, local="import os\nkci_host = 'kernelci.example'\nES_HOTS = 'http://es.example:9200'\n"
                             "ES_URL = 'http://es.example:9200'\nBASE = 'http://ls.example'\n"
                             "ES_BUILD = BASE + ':8337'\n_private = 1\n")
    assert s.KCI_HOST == "kernelci.org" and s.ES_BUILD == ("http://ls.example:8337",)
    path = tmp_path / "local_settings.py"
    assert warnings_of(caplog) == [
        "%s: ES_HOTS is not a kcing setting and is ignored (did you mean ES_HOST?)" % path,
        "%s: ES_URL is not a kcing setting and is ignored (the README's settings table lists them all)" % path,
        "%s: kci_host is not a kcing setting and is ignored (setting names are upper-case: KCI_HOST)" % path,
    ]


def test_a_name_in_local_settings_misspelt_in_its_prefix_is_warned_of(tmp_path, caplog):
    s = load(tmp_path, local="KIC_HOST = 'kernelci.example'\nDRPDAYS = 9\nKCNG_DB = 'other.db'\n"
                             "timeout = 5\n_ES_BASE = 'http://es.example'\n")
    assert s.KCI_HOST == "kernelci.org" and s.DRP_DAYS == 3 and s.KCING_DB == "kcing.db"
    path = tmp_path / "local_settings.py"
    # A helper in lower case, or beginning with "_", is the file's own business.
    assert warnings_of(caplog) == [
        "%s: DRPDAYS is not a kcing setting and is ignored (did you mean DRP_DAYS?)" % path,
        "%s: KCNG_DB is not a kcing setting and is ignored (did you mean KCING_DB?)" % path,
        "%s: KIC_HOST is not a kcing setting and is ignored (did you mean KCI_HOST?)" % path,
    ]


def test_a_key_of_the_settings_dict_misspelt_in_its_prefix_says_which_was_meant(tmp_path):
    with pytest.raises(ConfigError) as error:
        load(tmp_path, local="settings = {'KIC_HOST': 'kernelci.example'}\n")
    assert str(error.value) == ("unknown setting KIC_HOST (from %s) (did you mean KCI_HOST?)"
                                % (tmp_path / "local_settings.py"))


def test_a_settings_name_in_local_settings_that_is_no_dict_is_warned_of(tmp_path, caplog):
    load(tmp_path, local="settings = [('KCI_HOST', 'kernelci.example')]\n")
    assert warnings_of(caplog) == ["%s: `settings` is a list, not a dict of settings; it is ignored"
                                   % (tmp_path / "local_settings.py")]


def test_every_variable_the_logstash_pipeline_reads_is_known_not_to_be_a_misspelt_setting():
    import re
    from pathlib import Path
    pipeline = (Path(__file__).resolve().parents[1] / "logstash" / "pipeline" / "kcing.conf").read_text()
    read = set(re.findall(r"\$\{([A-Z_]+)", pipeline))
    assert read and {name for name in read if name.startswith(settings_module.SETTING_PREFIXES)} <= (
        settings_module.PIPELINE_VARIABLES | set(settings_module.SPECS))


@pytest.mark.parametrize("value, hint", [
    ("https://kernelci.org", "without a scheme: set KCI_SCHEME=https and KCI_HOST=kernelci.org"),
    ("HTTP://127.0.0.1:8080/", "without a scheme: set KCI_SCHEME=http and KCI_HOST=127.0.0.1:8080"),
    ("::1", "an IPv6 address goes in brackets: [::1]"),
])
def test_a_kci_host_given_as_a_url_or_a_bare_ipv6_address_says_what_to_set(tmp_path, value, hint):
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, environ={"KCI_HOST": value})
    assert str(caught.value).startswith("invalid KCI_HOST=%r (from environment): expected a host name" % value)
    assert str(caught.value).endswith(hint)


@pytest.mark.parametrize("name", ["KCING_DB", "KCI_SAMPLES_DIR"])
def test_an_empty_file_or_directory_setting_in_local_settings_is_refused(tmp_path, name):
    """An empty KCING_DB named the working directory ("KCING_DB . is a directory", a `.lock`
    left in it); an empty KCI_SAMPLES_DIR had gen_samples save among whatever is there."""
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, local="%s = ' '\n" % name)
    assert str(caught.value) == "invalid %s=' ' (from %s): expected a file or directory name, not an empty one" % (
        name, tmp_path / "local_settings.py")


def test_local_settings_may_import_a_module_beside_it(tmp_path):
    """As when Python runs a script: passwords may be kept in a file of their own."""
    (tmp_path / "kcing_secrets_for_test.py").write_text("PASSWORD = 'from-beside'\n")
    s = load(tmp_path, local="from kcing_secrets_for_test import PASSWORD\nLS_USER = 'kcing'\nLS_PASSWORD = PASSWORD\n")
    assert s.LS_PASSWORD == "from-beside"
    import sys
    assert str(tmp_path) not in sys.path
    sys.modules.pop("kcing_secrets_for_test", None)


def test_a_local_settings_link_to_nothing_or_directory_is_refused_not_skipped(tmp_path):
    """The settings it once named would go unread, and the run use the defaults."""
    link = tmp_path / "local_settings.py"
    link.symlink_to(tmp_path / "moved" / "local_settings.py")
    with pytest.raises(ConfigError) as caught:
        load(tmp_path)
    assert str(caught.value) == "cannot load %s: it is a link to nothing (%s)" % (link, tmp_path / "moved" / "local_settings.py")
    link.unlink()
    link.mkdir()
    with pytest.raises(ConfigError, match="cannot load .*local_settings.py: it is a directory$"):
        load(tmp_path)


def test_an_unknown_name_in_the_settings_dict_says_which_was_meant(tmp_path):
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, local="settings = {'ES_HOTS': 'http://es.example:9200'}\n")
    assert str(caught.value) == "unknown setting ES_HOTS (from %s) (did you mean ES_HOST?)" % (
        tmp_path / "local_settings.py")


@pytest.mark.parametrize("entry, expected", [
    ("'ES_HOTS': datetime.timedelta(days=2)", "unknown setting ES_HOTS (from %s) (did you mean ES_HOST?)"),
    ("'kci_days': datetime.date(2024, 1, 1)", "unknown setting kci_days (from %s) (setting names are upper-case: "
                                              "KCI_DAYS)"),
])
def test_an_unknown_name_in_the_settings_dict_is_refused_as_one_whatever_its_value(tmp_path, entry, expected):
    """A value no setting takes under a name that is no setting was refused for its value ("invalid
    ES_HOTS: a timedelta, which no setting takes"), where the mistake is the name."""
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, local="import datetime\nsettings = {%s}\n" % entry)
    assert str(caught.value) == expected % (tmp_path / "local_settings.py")


def test_a_kibana_space_id_kibana_cannot_have_is_refused_naming_kb_space(tmp_path):
    """It was refused only when a Kibana command made its URL, naming neither KB_SPACE nor where it came from."""
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, environ={"KB_SPACE": "Team A"})
    assert str(caught.value) == ("invalid KB_SPACE='Team A' (from environment): a Kibana space id takes lowercase "
                                 "letters, digits, '_' and '-'")
    assert load(tmp_path, environ={"KB_SPACE": "team_a-2"}).KB_SPACE == "team_a-2"


@pytest.mark.parametrize("value, what", [(":memory:", "a database in memory, forgotten when the run ends"),
                                         ("file:kcing.db", "a URI, not a file name"),
                                         ("file:kcing.db?mode=memory", "a URI, not a file name")])
def test_a_ledger_name_sqlite_would_not_take_for_a_file_is_refused(tmp_path, value, what):
    """SQLite kept `:memory:` and `file:...?mode=memory` in memory: every run delivered
    everything again, exit 0, and recorded nothing; `file:kcing.db` was kcing.db for SQLite and
    `file:kcing.db.lock` for the run lock, a second lock on the same ledger."""
    from tests.feedrun import REPO, clean_environ, kcing
    for given in ({"environ": {"KCING_DB": value}}, {"overrides": {"KCING_DB": value}}):
        with pytest.raises(ConfigError) as caught:
            load(tmp_path, **given)
        assert ("SQLite would take it for %s: name the ledger file (./%s for a file so named)" % (what, value)
                in str(caught.value))
    fed = kcing(["feed_es", "--source", "samples", "--output", str(tmp_path / "out")],
                clean_environ(KCING_DB=value, KCI_SAMPLES_DIR=str(REPO / "samples")), tmp_path)
    assert fed.returncode == 2, fed.stdout + fed.stderr
    [line] = fed.stderr.splitlines()
    # (The value is shown as settings show any URL: without its query.)
    assert line.startswith("kcing feed_es: invalid KCING_DB=%r (from environment): " % value.split("?")[0]), line
    assert line.endswith("SQLite would take it for %s: name the ledger file (./%s for a file so named)"
                         % (what, value))
    assert sorted(path.name for path in tmp_path.iterdir()) == []


def test_a_ledger_file_whose_name_begins_like_a_uri_is_named_with_its_directory(tmp_path):
    from tests.feedrun import REPO, clean_environ, kcing
    fed = kcing(["feed_es", "--source", "samples", "--output", str(tmp_path / "out")],
                clean_environ(KCING_DB="./file:kcing.db", KCI_SAMPLES_DIR=str(REPO / "samples")), tmp_path)
    assert fed.returncode == 0, fed.stdout + fed.stderr
    assert (tmp_path / "file:kcing.db").is_file() and (tmp_path / "file:kcing.db.lock").is_file()


# A password holding "/", "?" or "#" written into a URL unencoded: urllib.parse ends the host part
# there, so the userinfo is no userinfo to it, and the password was shown, or taken as a port and
# a path and kept in the ledger as the destination's name.
@pytest.mark.parametrize("name", URL_SETTINGS)
@pytest.mark.parametrize("url", ["http://kcing:1234/pw-part@127.0.0.1:8337", "http://kcing:ab/pw-part@127.0.0.1:8337",
                                 "http://kcing:ab?pw-part@127.0.0.1:8337", "http://kcing:ab#pw-part@127.0.0.1:8337"],
                         ids=["digits-slash", "slash", "question-mark", "hash"])
def test_a_password_with_a_delimiter_in_a_url_is_refused_as_credentials_without_being_shown(tmp_path, name, url):
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, environ={name: url})
    message = str(caught.value)
    assert "pw-part" not in message and ":ab" not in message and ":1234" not in message, message
    assert message.endswith("put credentials in their own settings, not in the URL"), message


# A passphrase holding a space, a comma or a quote: the masking of a URL within a text stops there,
# and showed the user and the start of the password, `http://kcing:first ***@es:9200`.
@pytest.mark.parametrize("name", URL_SETTINGS + ("KCI_HOST",))
@pytest.mark.parametrize("password", ["first pw-part", "first,pw-part", "first'pw-part", 'first"pw-part',
                                      "first, https://pw-part"],
                         ids=["space", "comma", "quote", "double-quote", "url-like"])
def test_a_password_holding_a_space_comma_or_quote_in_a_url_is_never_shown(tmp_path, name, password):
    value = ("kcing:%s@127.0.0.1:8337" if name == "KCI_HOST" else "http://kcing:%s@127.0.0.1:8337") % password
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, environ={name: value})
    message = str(caught.value)
    assert "first" not in message and "pw-part" not in message and "kcing" not in message, message
    assert message.startswith("invalid %s=" % name) and "***@127.0.0.1:8337" in message, message


@pytest.mark.parametrize("local", ['ES_BUILD = ["http://kcing:first pw-part@ls:8337"]\n',
                                   "ES_LAVA = (\"http://kcing:first'pw-part@ls:8338\",)\n",
                                   'ES_HOST = "http://kcing:first pw-part@es:9200"\n'])
def test_a_password_in_a_url_of_local_settings_is_never_shown(tmp_path, local):
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, local=local)
    message = str(caught.value)
    assert "first" not in message and "pw-part" not in message and "kcing" not in message, message


@pytest.mark.parametrize("name", LIST_SETTINGS)
def test_a_password_holding_a_comma_in_a_url_of_a_list_is_refused_as_credentials_not_split_at_it(tmp_path, name):
    """Split at the comma first, `http://kcing:first` was refused for its port `first`: advice
    about a port, for a password."""
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, environ={name: "http://kcing:first,pw-part@127.0.0.1:8337"})
    assert str(caught.value) == ("invalid %s='http://***@127.0.0.1:8337' (from environment): put credentials in "
                                 "their own settings, not in the URL" % name)


@pytest.mark.parametrize("name", URL_SETTINGS)
def test_a_password_holding_an_at_sign_in_a_url_is_never_shown(tmp_path, name):
    """The userinfo ends at the last "@": masked up to the first, the rest of the password showed."""
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, environ={name: "http://kcing:first@pw-part@127.0.0.1:8337"})
    message = str(caught.value)
    assert "pw-part" not in message and "first" not in message, message
    assert message.startswith("invalid %s='http://***@127.0.0.1:8337' (from environment): " % name), message


def test_a_kibana_api_key_no_request_can_carry_is_refused_without_being_shown(tmp_path):
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, environ={"KB_API_KEY": "kb-key pw-part"})
    assert str(caught.value) == ("invalid KB_API_KEY=*** (from environment): a token is printable ASCII without "
                                 "spaces")


def test_a_list_of_urls_in_local_settings_is_quoted_with_its_scheme_and_host_and_the_password_masked(tmp_path):
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, local='ES_BUILD = ["http://kcing:first pw-part@ls:8337"]\n')
    assert str(caught.value) == ("invalid ES_BUILD=['http://***@ls:8337'] (from %s): 'http://***@ls:8337' is not a "
                                 "usable URL: whitespace in its host part" % (tmp_path / "local_settings.py"))


def test_drp_with_a_passphrase_in_the_elasticsearch_url_ends_without_showing_it(tmp_path):
    from tests.feedrun import clean_environ, kcing

    done = kcing(["drp", "--dry-run"], clean_environ(ES_HOST="http://elastic:correct horse@es.example:9200",
                                                     KCING_DB=str(tmp_path / "k.db")), tmp_path)
    assert done.returncode == 2, done.stderr
    assert done.stderr == ("kcing drp: invalid ES_HOST='http://***@es.example:9200' (from environment): "
                           "'http://***@es.example:9200' is not a usable URL: whitespace in its host part\n")


@pytest.mark.parametrize("name", URL_SETTINGS)
@pytest.mark.parametrize("tail", ["?api_key=pw-part", "#access_token=pw-part", "/#pw-part", "#x?token=pw-part"])
def test_a_url_setting_with_a_query_or_a_fragment_is_refused_without_showing_them(tmp_path, name, tail):
    """A fragment was quoted whole: `https://h/#access_token=...`, as an OAuth sign-in leaves a
    token in a URL, showed the token in the error line."""
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, environ={name: "https://kernelci.example" + tail})
    message = str(caught.value)
    assert "pw-part" not in message, message
    assert message.endswith("a base URL takes no query string or fragment (tokens go in their own settings)"), message


def test_masking_takes_a_userinfo_up_to_its_last_at_sign():
    mask = settingvalues.mask_credentials
    assert mask("http://u:1/p?w#x@h:1/y") == "http://***@h:1/y"
    assert mask("a http://u:p/w@h, b http://h2/z") == "a http://***@h, b http://h2/z"
    assert mask("u:p/w@host") == "***@host"


@pytest.mark.parametrize("name, minimum, maximum, whole", numeric_specs(), ids=[spec[0] for spec in numeric_specs()])
def test_a_numeric_setting_spelt_as_only_python_reads_a_number_is_refused_naming_it(tmp_path, name, minimum, maximum,
                                                                                   whole):
    """int() and float() read "1_0" as 10 and "+2" as 2, float() "infinity" and "nan" too; no other
    tool that writes or reads a setting does, so such a value was not meant as that number."""
    spellings = ["1_0", "+2", "0_2", "2 0"] + ([] if whole else ["+.5", "1_0.5", "infinity", "-nan", "1e1_0"])
    for value in spellings:
        with pytest.raises(ConfigError) as caught:
            load(tmp_path, environ={name: value})
        assert str(caught.value).startswith("invalid %s=%r (from environment): expected " % (name, value))


@pytest.mark.parametrize("name, minimum, maximum, whole", numeric_specs(), ids=[spec[0] for spec in numeric_specs()])
def test_a_numeric_setting_takes_the_spellings_every_tool_writes(tmp_path, name, minimum, maximum, whole):
    """Whitespace around a value is dropped, and a decimal number may have a point or an exponent."""
    low = int(max(minimum, 2))
    spellings = {" %d " % low: low, "0%d" % low: low}
    if not whole:
        spellings.update({"%d." % low: low, "%d.50" % low: low + 0.5, "%de0" % low: low, "%dE+0" % low: low})
    for value, number in spellings.items():
        assert getattr(load(tmp_path, environ={name: value}), name) == number


def test_a_number_of_local_settings_is_read_as_python_wrote_it(tmp_path):
    """A float there is written out by Python (1e-05, 1e+16): its exponent is a number's spelling."""
    s = load(tmp_path, local="ES_MAX_DOCS_PER_SECOND = 0.00001 * 10 ** 5\nKCI_DAYS = 7\nES_LOAD_INTERVAL = 1e-05\n")
    assert (s.ES_MAX_DOCS_PER_SECOND, s.KCI_DAYS, s.ES_LOAD_INTERVAL) == (1.0, 7, 1e-05)


@pytest.mark.parametrize("name, minimum, maximum, whole", numeric_specs(), ids=[spec[0] for spec in numeric_specs()])
def test_a_numeric_setting_written_in_other_digits_is_refused_naming_it(tmp_path, name, minimum, maximum, whole):
    """Python's int() and float() read "٣" (Arabic-Indic) or "３" (full-width) as 3; no other
    tool does, so such a value is a pasted mistake, not a number."""
    for value in ("\u0663", "\uff13", "1\u0660", "\u0663.\u0665"):
        with pytest.raises(ConfigError) as caught:
            load(tmp_path, environ={name: value})
        assert str(caught.value).startswith("invalid %s=%r (from environment): expected " % (name, value))


@pytest.mark.parametrize("command", [["feed_es", "--days", "30"], ["feed_es", "--days", "30", "--dry-run"],
                                     ["gen_samples", "--sample-size", "1"]])
def test_a_legacy_crawl_of_a_host_given_as_an_ip_address_needs_its_storage_url(legacy_replica, logstash, tmp_path,
                                                                             command):
    """storage.<IP address> names no host: every file failed, after its retries, as an unknown host."""
    from tests.feedrun import feed_environ, kcing

    env = feed_environ(legacy_replica, logstash, tmp_path / "kcing.db", KCI_SAMPLES_DIR=str(tmp_path / "saved"))
    del env["KCI_STORAGE_URL"]  # the replica's frontend is at 127.0.0.1:<port>
    done = kcing(command, env, tmp_path)
    assert done.returncode == 2, done.stderr
    assert done.stderr == ("kcing %s: KCI_HOST=%s is an IP address, from which no storage URL can be made "
                           "(http://storage.%s names no host): set KCI_STORAGE_URL to the URL of the legacy storage\n"
                           % (command[0], env["KCI_HOST"], env["KCI_HOST"]))
    assert not logstash.store and not (tmp_path / "saved").exists()


@pytest.mark.parametrize("host", ["192.0.2.7", "192.0.2.7:8080", "[::1]", "[2001:db8::7]:8080"])
def test_a_kci_host_that_is_an_ip_address_takes_the_storage_url_it_is_given(tmp_path, host):
    from kcing.wiring import check_storage_url

    with pytest.raises(ConfigError, match=r"^KCI_HOST=%s is an IP address, from which no storage URL can be made"
                                          % re.escape(host)):
        check_storage_url(load(tmp_path, environ={"KCI_HOST": host}))
    check_storage_url(load(tmp_path, environ={"KCI_HOST": host, "KCI_STORAGE_URL": "https://storage.example"}))
    check_storage_url(load(tmp_path, environ={"KCI_HOST": "kernelci.example"}))


@pytest.mark.parametrize("rate, batch, pause", [("1e-300", "500", "5e+302"), ("0.1", "500", "5000"),
                                                ("1", "5000", "5000")])
def test_a_documents_per_second_cap_pausing_a_batch_longer_than_any_pause_may_last_is_refused(tmp_path, rate, batch,
                                                                                              pause):
    """A batch waits its size over ES_MAX_DOCS_PER_SECOND: 1e-300 held the run for good."""
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, environ={"ES_MAX_DOCS_PER_SECOND": rate, "LS_PIPELINE_BATCH_SIZE": batch})
    assert str(caught.value) == (
        "ES_MAX_DOCS_PER_SECOND=%s would pause %s s before a batch of %s documents (LS_PIPELINE_BATCH_SIZE, or "
        "--batch-size), more than the 3600 s a pause between batches may last: set it to at least %s, or to 0 for no "
        "cap" % (rate, pause, batch, {"500": "0.139", "5000": "1.39"}[batch]))


def test_the_documents_per_second_cap_a_refusal_suggests_is_taken(tmp_path):
    """7 documents over 3600 s is 0.0019444 a second: the bound is rounded up, as 0.00194 is refused."""
    with pytest.raises(ConfigError, match=r"set it to at least 0\.00195, or to 0 for no cap$"):
        load(tmp_path, environ={"ES_MAX_DOCS_PER_SECOND": "0.0001", "LS_PIPELINE_BATCH_SIZE": "7"})
    assert load(tmp_path, environ={"ES_MAX_DOCS_PER_SECOND": "0.00195",
                                   "LS_PIPELINE_BATCH_SIZE": "7"}).ES_MAX_DOCS_PER_SECOND == 0.00195
    with pytest.raises(ConfigError, match=r"ES_MAX_DOCS_PER_SECOND=0\.00194 would pause"):
        load(tmp_path, environ={"ES_MAX_DOCS_PER_SECOND": "0.00194", "LS_PIPELINE_BATCH_SIZE": "7"})


def test_a_documents_per_second_cap_is_checked_against_the_batch_size_the_flag_gives(tmp_path):
    environ = {"ES_MAX_DOCS_PER_SECOND": "1", "LS_PIPELINE_BATCH_SIZE": "5000"}
    assert load(tmp_path, environ=environ, overrides={"LS_PIPELINE_BATCH_SIZE": "3600"}).ES_MAX_DOCS_PER_SECOND == 1
    with pytest.raises(ConfigError, match="ES_MAX_DOCS_PER_SECOND=0.1 would pause 5000 s"):
        load(tmp_path, environ={"ES_MAX_DOCS_PER_SECOND": "0.1", "LS_PIPELINE_BATCH_SIZE": "10"},
             overrides={"LS_PIPELINE_BATCH_SIZE": "500"})
    assert load(tmp_path, environ={"ES_MAX_DOCS_PER_SECOND": "0.1"},
                overrides={"LS_PIPELINE_BATCH_SIZE": "360"}).LS_PIPELINE_BATCH_SIZE == 360


def test_feed_es_with_a_documents_per_second_cap_that_would_hold_it_for_good_ends_at_once(tmp_path):
    from tests.feedrun import SAMPLES, clean_environ, kcing

    done = kcing(["feed_es", "--source", "samples", "--samples-dir", str(SAMPLES), "--output", str(tmp_path / "out")],
                 clean_environ(ES_MAX_DOCS_PER_SECOND="1e-9", KCING_DB=str(tmp_path / "kcing.db")), tmp_path,
                 timeout=60)
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith("kcing feed_es: ES_MAX_DOCS_PER_SECOND=1e-09 would pause 5e+11 s")
    assert not (tmp_path / "out").exists()


def test_a_long_url_of_a_list_refused_is_quoted_cut_as_the_value_is(tmp_path):
    # An item pasted with the rest of a line was quoted whole after the value's cut start.
    item = "ftp://" + "c" * 300
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, environ={"ES_BUILD": "http://ok, " + item})
    message = str(caught.value)
    assert message.endswith(": %s... (%d characters) is not an http(s) URL" % (repr(item)[:80], len(repr(item))))
    assert len(message) < 300, message


def test_a_long_item_of_a_list_refused_for_any_reason_is_quoted_cut(tmp_path):
    # Each reason a URL is refused for quotes it: an item pasted with the rest of a line, cut.
    for name, item, reason in (
            ("ES_BUILD", "http://a.example/" + "c" * 300 + " http://b.example", "holds several URLs"),
            ("ES_BUILD", "http://a.example\\" + "c" * 300, "is not a usable URL"),
            ("ES_BUILD", "http://a.example/" + "c" * 300 + "caf\udce9", "holds bytes that are not UTF-8 text"),
            ("KCI_ARTIFACT_ORIGINS", "https://a.example/" + "c" * 300, "is not an origin")):
        with pytest.raises(ConfigError) as caught:
            load(tmp_path, environ={name: "https://ok.example, " + item})
        message = str(caught.value)
        assert "%s... (%d characters) %s" % (repr(item)[:80], len(repr(item)), reason) in message, message
        assert len(message) < 400, message


def test_a_long_url_holding_bytes_that_are_not_utf8_is_quoted_once_and_cut(tmp_path):
    value = "http://es.example/" + "x" * 300 + "caf\udce9"
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, environ={"ES_HOST": value})
    assert str(caught.value) == ("invalid ES_HOST=%s... (%d characters) (from environment): it holds bytes that are "
                                 "not UTF-8 text: write the URL in UTF-8 (or percent-encoded)"
                                 % (repr(value)[:80], len(repr(value))))


def test_an_item_as_long_as_a_value_is_shown_is_quoted_whole(tmp_path):
    item = "ftp://" + "c" * (settingvalues.SHOWN_VALUE_CHARACTERS - 8)  # quoted: two characters more
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, environ={"ES_BUILD": "http://ok, " + item})
    assert str(caught.value).endswith(": %r is not an http(s) URL" % item)


def test_a_text_setting_holding_bytes_of_another_encoding_than_utf8_is_taken_as_those_bytes(tmp_path):
    # A file name from an environment in Latin-1 (`caf\xe9`) names that file: only half of a
    # character (\ud800 to \udfff but for the bytes Python keeps as \udc80 to \udcff) is refused.
    s = load(tmp_path, environ={"KCING_DB": str(tmp_path / "caf\udce9.db"), "LS_HOME": "/opt/jos\udce9"})
    assert (s.KCING_DB, s.LS_HOME) == (str(tmp_path / "caf\udce9.db"), "/opt/jos\udce9")
    for half in ("\\ud800", "\\udc7f", "\\udd00", "\\udfff"):
        with pytest.raises(ConfigError, match="it holds half of a character"):
            load(tmp_path, local="KCING_DB = 'kcing%s.db'\n" % half)


def test_a_leading_tilde_naming_a_long_user_name_is_quoted_cut(tmp_path):
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, environ={"KCING_DB": "~" + "u" * 300 + "/kcing.db"})
    message = str(caught.value)
    assert message.endswith(" names no user of this host, so no home directory") and len(message) < 300, message


def test_a_flag_takes_a_number_as_every_tool_writes_it_whitespace_around_dropped():
    """A decimal may start at its point (`.5`, as C, JSON and Java read it), and a value a
    script quoted with a space around it is the number inside."""
    from kcing import flags
    assert flags.seconds({"--wait": ".5"}, "--wait", 1.0) == 0.5
    assert flags.seconds({"--wait": " 2.5e1 "}, "--wait", 1.0) == 25.0
    assert flags.positive_int({"--how-many": " 3 "}, "--how-many") == 3
