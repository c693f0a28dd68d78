"""Settings: defaults here, overridden by local_settings.py, by the environment, then by flags.

Precedence, lowest first (each layer only replaces what it names):

1. the defaults in `SPECS` below;
2. `local_settings.py` in the working directory: upper-case module-level names, or a dict named
   `settings` as the original tool used;
3. environment variables of the same names (`ES_LAVA=http://ls:8338 kcing feed_es`);
4. command-line flags (`--db`, `--threads`, ...), mapped to settings by the CLI.

Every value is parsed and validated once, here; a bad value is a `ConfigError` naming the
setting and where it came from. Secrets never appear in `repr()` or in error messages.
"""
from __future__ import annotations

import difflib
import logging
import math
import os
import runpy
import sys
from base64 import b64encode
from dataclasses import dataclass, fields, replace
from decimal import Decimal
from fractions import Fraction
from pathlib import Path
from types import ModuleType
from typing import Any, Callable, Dict, Mapping, Optional, Tuple
from urllib.parse import quote

from kcing import urls
from kcing.errors import ConfigError
from kcing.keptdays import FEWEST_DAYS_KEPT
from kcing.settingvalues import (MAX_ATTEMPTS, MAX_BYTES, MAX_CONCURRENCY, MAX_DAYS, MAX_JAVA_INT, MAX_PAGE_SIZE,
                                 MAX_REQUEST_SECONDS, MAX_SECONDS, SHOWN_VALUE_CHARACTERS, ca_bundle, credential,
                                 host, http_url, integer_between, kibana_space, ledger_file, masked_value,
                                 number_between, one_of, optional_path, optional_url, origin_list, plain_text,
                                 required_path, shortened, text_list, token, type_name, url_list, workers)

log = logging.getLogger(__name__)

SECRET_NAMES = frozenset({"LS_PASSWORD", "ES_PASSWORD", "ES_API_KEY", "KB_PASSWORD", "KB_API_KEY", "KCI_API_TOKEN"})
# Each basic-auth password and the user sent with it: a request carries the two together, in
# base64, and that form is as good as the password to whoever reads it.
BASIC_AUTH_SETTINGS = (("LS_USER", "LS_PASSWORD"), ("ES_USER", "ES_PASSWORD"), ("KB_USER", "KB_PASSWORD"))


def secret_texts(settings: Any) -> list:
    """Every text that gives a secret of `settings` away, for the logs and messages to mask: each
    secret as it is and percent-encoded (as in a URL), and each basic-auth `Authorization` value
    as a request carries it (base64 of `user:password` in UTF-8). A server that echoes its request
    back (a stub or an echo service at an input's URL, a proxy's error page) puts these in the
    answer an error message quotes."""
    texts = []
    for name in sorted(SECRET_NAMES):
        value = getattr(settings, name)
        if value:
            texts.append(value)
            texts.append(quote(value, safe=""))
    for user, password in BASIC_AUTH_SETTINGS:
        if getattr(settings, password):
            pair = "%s:%s" % (getattr(settings, user), getattr(settings, password))
            texts.append(b64encode(pair.encode("utf-8")).decode("ascii"))
    return list(dict.fromkeys(texts))


@dataclass(frozen=True)
class Spec:
    default: Any
    parse: Callable[[Any], Any]
    help: str


SPECS: Mapping[str, Spec] = {
    # Upstream (KernelCI)
    "KCI_SOURCE": Spec("legacy", one_of("legacy", "samples", "api"), "where feed_es reads from"),
    "KCI_HOST": Spec("kernelci.org", host, "legacy KernelCI web host (the _ajax API)"),
    "KCI_SCHEME": Spec("https", one_of("http", "https"), "scheme for KCI_HOST"),
    "KCI_STORAGE_URL": Spec("", optional_url, "storage base URL; empty means <scheme>://storage.<host>, "
                            "which a KCI_HOST that is an IP address has not: the legacy source refuses it"),
    "KCI_NON_LAVA_LABS": Spec("lab-baylibre-seattle", text_list, "comma-separated labs that publish boot-<board>.json"),
    "KCI_DAYS": Spec(2, integer_between(1, MAX_DAYS), "default crawl window in days"),
    "KCI_PAGE_SIZE": Spec(1000, integer_between(1, MAX_PAGE_SIZE), "listing items per _ajax page"),
    "KCI_THREADS": Spec(4, integer_between(1, MAX_CONCURRENCY), "concurrent downloads"),
    "KCING_WORKERS": Spec("auto", workers, "processes building documents while feeding; auto means one per usable "
                          "core; 1 builds them in the feed's own process but for a file of 4 MiB or more, "
                          "0 every file"),
    "KCING_BUILD_TIMEOUT": Spec(600.0, number_between(0, MAX_SECONDS), "seconds a worker process may take to build one "
                                "object's documents (a 100 MB LAVA log takes about 10); a slower one is killed and "
                                "its object rejected, so that no input stalls the run, and one not ready as long after "
                                "it started is killed too; 0 waits without limit"),
    "KCI_TIMEOUT": Spec(60.0, number_between(0.1, MAX_REQUEST_SECONDS),
                        "seconds to wait for an upstream response (for a connection, 10 at most)"),
    "KCI_MAX_RETRIES": Spec(3, integer_between(1, MAX_ATTEMPTS), "attempts per upstream request"),
    "KCI_RETRY_BACKOFF": Spec(1.0, number_between(0, MAX_REQUEST_SECONDS),
                              "seconds of the first upstream retry wait; each next one doubles, up to 30 s or this "
                              "value if larger (each drawn between half of it and all of it)"),
    "KCI_GIVE_UP_AFTER": Spec(10, integer_between(0, 1_000_000),
                              "upstream requests in a row one host may leave unanswered after all their attempts "
                              "(refused, timed out, no such host) before the run asks it nothing more: what is left to "
                              "fetch from it fails at once, for the next run; 0 never gives up"),
    "KCI_MAX_OBJECT_BYTES": Spec(100_000_000, integer_between(1024, MAX_BYTES), "largest upstream file or page taken "
                                 "(bytes); a larger one is rejected while it streams"),
    "KCI_DOWNLOAD_DEADLINE": Spec(300.0, number_between(0.1, MAX_SECONDS), "seconds one upstream download may take in "
                                  "all, from sending the request to the last byte; a slower one fails and the next "
                                  "run tries again"),
    "KCI_CA_BUNDLE": Spec("", ca_bundle, "CA bundle for upstream TLS; empty means certifi's bundle (Mozilla's CAs)"),
    "KCI_SAMPLES_DIR": Spec("samples", required_path, "directory of saved upstream files"),
    # Upstream: the current KernelCI API (--source api)
    "KCI_API_URL": Spec("https://api.kernelci.org/latest", http_url, "KernelCI API base URL, version included"),
    "KCI_API_TOKEN": Spec("", token, "token sent as `Authorization: Bearer`; reading needs none"),
    "KCI_API_STORAGE_URL": Spec("https://files.kernelci.org", optional_url,
                                "base URL for artifact paths the API gives as relative"),
    "KCI_ARTIFACT_ORIGINS": Spec(("https://files-staging.kernelci.org", "https://kciapistagingstorage1.file.core.windows.net"), origin_list,
                                 "other origins artifacts may be fetched from, besides those of KCI_HOST, "
                                 "KCI_STORAGE_URL, KCI_API_URL and KCI_API_STORAGE_URL"),
    "KCI_API_OVERLAP_MINUTES": Spec(10, integer_between(0, 7 * 24 * 60),
                                    "minutes before the watermark each run lists again"),
    "KCI_API_PAGE_SIZE": Spec(500, integer_between(1, MAX_PAGE_SIZE), "nodes per /nodes page"),
    # Delivery (Logstash HTTP inputs; the ES_* names are kept from the original tool)
    "ES_BUILD": Spec(("http://localhost:8337",), url_list, "Logstash input(s) for build documents"),
    "ES_LAVA": Spec(("http://localhost:8338",), url_list, "Logstash input(s) for LAVA documents"),
    "ES_BOOT": Spec(("http://localhost:8007",), url_list, "Logstash input(s) for boot documents"),
    "ES_REGRESSION": Spec(("http://localhost:8339",), url_list, "Logstash input(s) for regression documents"),
    "ES_MAX_RETRIES": Spec(3, integer_between(1, MAX_ATTEMPTS), "failed attempts on a batch before the run stops"),
    "ES_LOAD_INTERVAL": Spec(0.0, number_between(0, MAX_REQUEST_SECONDS), "seconds to wait between batches"),
    "ES_PARALLEL_POSTS": Spec(2, integer_between(1, MAX_CONCURRENCY),
                              "batches posted at the same time (spread over the route's URLs); "
                              "`--output` writes one at a time, in order"),
    "ES_MAX_DOCS_PER_SECOND": Spec(0.0, number_between(0, 1_000_000),
                                   "documents per second cap; 0 means no cap; one at which a whole batch "
                                   "(LS_PIPELINE_BATCH_SIZE) would wait more than 3600 s is refused"),
    "ES_RETRY_BACKOFF": Spec(1.0, number_between(0, MAX_REQUEST_SECONDS),
                             "seconds of the first delivery retry wait (and of an admin command's wait for a busy "
                             "Elasticsearch); each next one doubles, up to 30 s or this value if larger (each drawn "
                             "between half of it and all of it)"),
    "ES_TIMEOUT": Spec(60.0, number_between(0.1, MAX_REQUEST_SECONDS),
                       "seconds each wait for Logstash may take, to take more of a batch or to answer it (to "
                       "accept a connection, 10 at most)"),
    "ES_POST_DEADLINE": Spec(120.0, number_between(0.1, MAX_SECONDS),
                             "seconds Logstash may take in all to take a batch and answer it, from sending it "
                             "(ES_TIMEOUT bounds each wait); then the batch is retried"),
    "LS_PIPELINE_BATCH_SIZE": Spec(500, integer_between(1, 100_000), "documents per POST (and Logstash batch size)"),
    "LS_BATCH_MAX_BYTES": Spec(5_000_000, integer_between(1024, MAX_BYTES), "bytes per POST at most; a single document "
                           "larger than that is posted alone, and Logstash's max_content_length decides"),
    "ES_QUEUE_MAX_BYTES": Spec(200_000_000, integer_between(1024, MAX_BYTES),
                               "bytes of documents built and waiting to be sent at most: past it, downloads "
                               "pause until Logstash (or --output) takes them; the next object to be sent is "
                               "downloaded whatever its size"),
    "LS_USER": Spec("", credential, "basic-auth user for the Logstash inputs"),
    "LS_PASSWORD": Spec("", credential, "basic-auth password for the Logstash inputs"),
    "LS_CA_BUNDLE": Spec("", ca_bundle, "CA bundle for Logstash TLS (a PEM file, or a directory of hashed "
                         "certificates); empty means the system store (OpenSSL's default paths)"),
    # Ledger and retention
    "KCING_OUTPUT_MAX_BYTES": Spec(10_000_000, integer_between(1024, MAX_BYTES),
                                   "bytes an `--output` file takes before the next batch goes into the route's "
                                   "next file (`lava.part000002.ndjson`, ...); each file can be posted to `_bulk` "
                                   "whole to a node of 128 MB of heap or more (a node refuses a request whose "
                                   "documents need over a tenth of its heap, and past 100 MB whatever its heap)"),
    "KCING_DB": Spec("kcing.db", ledger_file, "SQLite ledger of what was delivered"),
    "KCING_DB_LOCK_WAIT": Spec(30.0, number_between(0, MAX_SECONDS), "seconds a ledger write waits for another process "
                               "holding its database lock before the run stops (exit 4)"),
    "KCING_PROGRESS_EVERY": Spec(10.0, number_between(1, 24 * 3600),
                                 "seconds between the `progress:` lines of feed_es, reconcile and gen_samples, and "
                                 "the `still waiting` lines of setup_es, setup_kbn and backup_kbn, when stderr is not "
                                 "a terminal (cron, a pipe, a log file)"),
    "DRP_DAYS": Spec(3, integer_between(FEWEST_DAYS_KEPT, MAX_DAYS), "days of data to keep (must exceed KCI_DAYS)"),
    # Elasticsearch and Kibana administration
    "ES_HOST": Spec("http://localhost:9200", http_url, "Elasticsearch URL for admin commands"),
    "ES_USER": Spec("", credential, "basic-auth user for Elasticsearch"),
    "ES_PASSWORD": Spec("", credential, "basic-auth password for Elasticsearch"),
    "ES_API_KEY": Spec("", token, "API key for Elasticsearch: its encoded value, or its id and key as id:api_key"),
    "ES_CA_BUNDLE": Spec("", ca_bundle, "CA bundle for Elasticsearch TLS, trusted with the system store; empty means "
                         "certifi's bundle (Mozilla's CAs), with the system store too"),
    "ES_REQUEST_DEADLINE": Spec(60.0, number_between(0.1, MAX_SECONDS), "seconds one request of setup_es, drp or "
                                "reconcile may take in all, from sending it to the last byte of the answer"),
    "ES_READY_TIMEOUT": Spec(60.0, number_between(0, MAX_SECONDS),
                             "seconds setup_es waits for the cluster to be ready"),
    "ES_VERIFY_DELAY": Spec(30.0, number_between(0, MAX_SECONDS), "seconds feed_es --verify waits for Logstash to pass "
                            "the events on before checking Elasticsearch"),
    "KB_URL": Spec("http://localhost:5601", http_url, "Kibana URL"),
    "KB_USER": Spec("", credential, "basic-auth user for Kibana"),
    "KB_PASSWORD": Spec("", credential, "basic-auth password for Kibana"),
    "KB_API_KEY": Spec("", token, "API key for Kibana, instead of KB_USER and KB_PASSWORD: its encoded value, or "
                       "its id and key as id:api_key"),
    "KB_CA_BUNDLE": Spec("", ca_bundle, "CA bundle for Kibana TLS; empty means certifi's bundle (Mozilla's CAs)"),
    "KB_SPACE": Spec("", kibana_space, "Kibana space id; empty means the default space"),
    "KB_REQUEST_DEADLINE": Spec(300.0, number_between(0.1, MAX_SECONDS), "seconds one request of setup_kbn or "
                                "backup_kbn may take in all, from sending it to the last byte of the answer"),
    # Logstash configuration written by setup_ls
    "LS_HOME": Spec("", optional_path, "Logstash home; setup_ls writes LS_HOME/config/pipelines.yml"),
    "LS_PATH_SETTINGS": Spec("", optional_path, "Logstash's settings directory (path.settings), where setup_ls writes "
                             "pipelines.yml instead of LS_HOME/config: /etc/logstash for the deb and rpm packages"),
    "LS_PATH_CONFIG": Spec("", optional_path, "pipeline file for pipelines.yml; empty means this checkout's logstash/pipeline/kcing.conf"),
    "LS_QUEUE_TYPE": Spec("persisted", one_of("persisted", "memory"), "Logstash queue type, written by setup_ls"),
    "LS_NUM_WORKERS": Spec(0, integer_between(0, 1024),
                           "Logstash pipeline workers, written by setup_ls; 0 writes none, leaving logstash.yml's "
                           "pipeline.workers (by default one per CPU core)"),
    "LS_QUEUE_MAX_EVENTS": Spec(0, integer_between(0, MAX_JAVA_INT),
                                "events the persisted queue holds, written by setup_ls; 0 writes none, leaving "
                                "logstash.yml's queue.max_events (by default no limit)"),
    "LS_QUEUE_MAX_BYTES": Spec("1gb", plain_text, "bytes the persisted queue holds, written by setup_ls, which alone reads and "
                               "checks it: a size Logstash reads, at least 64mb, e.g. 1gb"),
}


@dataclass(frozen=True)
class Settings:
    """Every setting, parsed and validated. Field names are the user-facing setting names."""

    KCI_SOURCE: str
    KCI_HOST: str
    KCI_SCHEME: str
    KCI_STORAGE_URL: str
    KCI_NON_LAVA_LABS: str
    KCI_DAYS: int
    KCI_PAGE_SIZE: int
    KCI_THREADS: int
    KCING_WORKERS: Any  # a number, or "auto"
    KCING_BUILD_TIMEOUT: float
    KCI_TIMEOUT: float
    KCI_MAX_RETRIES: int
    KCI_RETRY_BACKOFF: float
    KCI_GIVE_UP_AFTER: int
    KCI_MAX_OBJECT_BYTES: int
    KCI_DOWNLOAD_DEADLINE: float
    KCI_CA_BUNDLE: str
    KCI_SAMPLES_DIR: str
    KCI_API_URL: str
    KCI_API_TOKEN: str
    KCI_API_STORAGE_URL: str
    KCI_ARTIFACT_ORIGINS: tuple
    KCI_API_OVERLAP_MINUTES: int
    KCI_API_PAGE_SIZE: int
    ES_BUILD: tuple
    ES_LAVA: tuple
    ES_BOOT: tuple
    ES_REGRESSION: tuple
    ES_MAX_RETRIES: int
    ES_LOAD_INTERVAL: float
    ES_PARALLEL_POSTS: int
    ES_MAX_DOCS_PER_SECOND: float
    ES_RETRY_BACKOFF: float
    ES_TIMEOUT: float
    ES_POST_DEADLINE: float
    LS_PIPELINE_BATCH_SIZE: int
    LS_BATCH_MAX_BYTES: int
    ES_QUEUE_MAX_BYTES: int
    LS_USER: str
    LS_PASSWORD: str
    LS_CA_BUNDLE: str
    KCING_OUTPUT_MAX_BYTES: int
    KCING_DB: str
    KCING_DB_LOCK_WAIT: float
    KCING_PROGRESS_EVERY: float
    DRP_DAYS: int
    ES_HOST: str
    ES_USER: str
    ES_PASSWORD: str
    ES_API_KEY: str
    ES_CA_BUNDLE: str
    ES_REQUEST_DEADLINE: float
    ES_READY_TIMEOUT: float
    ES_VERIFY_DELAY: float
    KB_URL: str
    KB_USER: str
    KB_PASSWORD: str
    KB_API_KEY: str
    KB_CA_BUNDLE: str
    KB_SPACE: str
    KB_REQUEST_DEADLINE: float
    LS_HOME: str
    LS_PATH_SETTINGS: str
    LS_PATH_CONFIG: str
    LS_QUEUE_TYPE: str
    LS_NUM_WORKERS: int
    LS_QUEUE_MAX_EVENTS: int
    LS_QUEUE_MAX_BYTES: str

    def __repr__(self) -> str:
        shown = ("%s=%r" % (f.name, "***" if f.name in SECRET_NAMES and getattr(self, f.name) else getattr(self, f.name))
                 for f in fields(self))
        return "Settings(%s)" % ", ".join(shown)

    @property
    def storage_url(self) -> str:
        if self.KCI_STORAGE_URL:
            return self.KCI_STORAGE_URL
        return "%s://storage.%s" % (self.KCI_SCHEME, self.KCI_HOST)

    @property
    def frontend_url(self) -> str:
        return "%s://%s" % (self.KCI_SCHEME, self.KCI_HOST)

    @property
    def upstream_origins(self) -> frozenset:
        """The origins upstream requests and redirects may reach (kcing/urls.py)."""
        return urls.origins((self.frontend_url, self.storage_url, self.KCI_API_URL, self.KCI_API_STORAGE_URL)
                            + tuple(self.KCI_ARTIFACT_ORIGINS))

    @property
    def non_lava_labs(self) -> frozenset:
        return frozenset(lab.strip() for lab in self.KCI_NON_LAVA_LABS.split(",") if lab.strip())

    def with_overrides(self, overrides: Mapping[str, Any], origins: Optional[Mapping[str, str]] = None) -> "Settings":
        """Return a copy with `overrides` (raw values, e.g. from flags) parsed and applied;
        `origins` names where each came from (the flag), for error messages."""
        origins = origins or {}
        parsed = {name: _parse(name, value, origins.get(name, "command line"))
                  for name, value in overrides.items() if value is not None}
        settings = replace(self, **parsed)
        _check_pace(settings)
        return settings


def warn_short_retention(settings: Settings) -> None:
    """Warn when drp (DRP_DAYS) forgets what the legacy crawl (KCI_DAYS) lists again."""
    if settings.DRP_DAYS <= settings.KCI_DAYS:
        # feed_es lists the last KCI_DAYS days again on every run and skips what the ledger says
        # was delivered: forgetting those rows would download and send those objects again.
        log.warning("DRP_DAYS=%d is not more than KCI_DAYS=%d: ledger rows of objects the next crawl lists "
                    "again would be forgotten, and those objects downloaded and sent again",
                    settings.DRP_DAYS, settings.KCI_DAYS)


def warn_crawl_past_retention(settings: Settings) -> None:
    """Warn a legacy crawl whose window (KCI_DAYS, the feed's --days) begins before the first day
    drp (DRP_DAYS) keeps: said by each such run, since each lists those days again.

    Not when the two are equal, which a cron line chooses on purpose: both count whole UTC days
    before today, so the window begins on the first day drp keeps, and drp forgets only rows first
    seen before it, of objects the crawl no longer lists. drp and `setup_es --ilm`, where the
    retention is set, still ask for a day more than the window (`warn_short_retention`): a margin
    for the backend's clock, which dates the listing, against this host's, which dates drp. Said
    by every hourly feed, that advice would be cron's mail of the same line every hour, for a
    window that loses nothing."""
    if settings.DRP_DAYS < settings.KCI_DAYS:
        # The days before DRP_DAYS are deleted by drp and listed by every run: their objects, whose
        # rows drp forgot, are downloaded and sent again, and make the deleted indices again.
        log.warning("DRP_DAYS=%d is less than KCI_DAYS=%d: the crawl lists days whose indices drp deletes and whose "
                    "ledger rows it forgets; their objects are downloaded and sent again, and make those indices "
                    "again", settings.DRP_DAYS, settings.KCI_DAYS)


def _check_pace(settings: Settings) -> None:
    """Refuse a documents-per-second cap so low that the pause it makes before one batch (the
    batch's size over the cap) would outlast the longest pause between batches ES_LOAD_INTERVAL
    may ask for: ES_MAX_DOCS_PER_SECOND=1e-9 held the first batch's successor for centuries, and
    the run with it."""
    rate, batch = settings.ES_MAX_DOCS_PER_SECOND, settings.LS_PIPELINE_BATCH_SIZE
    if rate and batch / rate > MAX_REQUEST_SECONDS:
        raise ConfigError("ES_MAX_DOCS_PER_SECOND=%g would pause %.4g s before a batch of %d documents "
                          "(LS_PIPELINE_BATCH_SIZE, or --batch-size), more than the %d s a pause between batches may "
                          "last: set it to at least %s, or to 0 for no cap"
                          % (rate, batch / rate, batch, MAX_REQUEST_SECONDS, _rounded_up(batch / MAX_REQUEST_SECONDS)))


def _rounded_up(number: float) -> str:
    """`number` rounded up to three significant digits, as a message suggests a bound."""
    step = 10.0 ** (math.floor(math.log10(number)) - 2)
    return "%g" % (math.ceil(round(number / step, 6)) * step)


def _parse(name: str, value: Any, origin: str) -> Any:
    spec = SPECS.get(name)
    if spec is None:
        raise ConfigError("unknown setting %s (from %s)%s" % (name, origin, _misnamed(str(name), same_prefix=False)))
    try:
        if _too_many_digits(value):
            raise ValueError("a number of more than %d digits, which no setting takes" % sys.get_int_max_str_digits())
        return spec.parse(value)
    except (TypeError, ValueError) as error:
        if name in SECRET_NAMES:
            shown = "***"
        else:
            shown = repr(masked_value(value)) if isinstance(value, str) else masked_value(_repr(value))
            if len(shown) > SHOWN_VALUE_CHARACTERS:  # a value pasted twice, 10**400: the line stays readable
                # The reason may quote the value again ("'...' is not an http(s) URL"), whole or cut.
                error = str(error).replace(shown, "it").replace(shortened(shown), "it")
                shown = shortened(shown)
        raise ConfigError("invalid %s=%s (from %s): %s" % (name, shown, origin, error)) from None


def _repr(value: Any) -> str:
    """`repr(value)`, or what it is when Python will not write it out: an int of more digits
    than it converts to text (`10**5000` in local_settings.py), alone or inside a list or dict."""
    try:
        return repr(value)
    except ValueError:
        return "%s holding a number too long to show" % type_name(value)


def _too_many_digits(value: Any) -> bool:
    """Whether `value` holds an int of more digits than Python converts to text: every parser
    would fail on it with Python's own advice (sys.set_int_max_str_digits), and so would its
    quoting in the message."""
    try:
        repr(value)
    except ValueError:
        return True
    return False


def read_local_settings(path: Path) -> dict:
    """Return the settings a local_settings.py file names (empty when the file is absent)."""
    if not path.is_absolute() and not _working_directory_exists():
        # The file would read as absent, and the run go on with the defaults (Logstash on
        # localhost) where a cron line's `cd` meant its settings.
        raise ConfigError("cannot look for %s: the working directory is gone (removed, or replaced by a new one "
                          "of its name); change into it again" % path)
    if not path.is_file():
        if os.path.lexists(str(path)):
            # A link to a file moved away, a directory: the settings would go unread without a word.
            raise ConfigError("cannot load %s: %s" % (path, "it is a directory" if path.is_dir() else
                                                      "it is a link to nothing (%s)" % os.readlink(str(path))
                                                      if path.is_symlink() else "it is not a regular file"))
        return {}
    # As Python runs a script: the file's own directory first on the path, so that it may import
    # a module beside it (passwords kept in a file of their own, say).
    directory = str(path.resolve().parent)
    sys.path.insert(0, directory)
    try:
        namespace = runpy.run_path(str(path))
    except (Exception, SystemExit) as error:  # the user's file: any error in it (even sys.exit) is a configuration error
        # File, line and class only: the message of a NameError or SyntaxError quotes the
        # source (`name 'pw_...' is not defined`), which is where passwords are written.
        line = _failing_line(error, path)
        raise ConfigError("cannot load %s: %s%s (the text is not shown: it may hold a secret)"
                          % (path, type(error).__name__, " at line %d" % line if line else "")) from None
    finally:
        if directory in sys.path:
            sys.path.remove(directory)
    given = namespace.get("settings")
    # dict.items itself, not the user's: a subclass of dict may say otherwise, or raise.
    found = {_setting_name(name, path): value for name, value in dict.items(given)} if isinstance(given, dict) else {}
    if given is not None and not isinstance(given, (dict, ModuleType)):
        log.warning("%s: `settings` is %s, not a dict of settings; it is ignored", path, type_name(given))
    found.update({name: value for name, value in namespace.items() if _read_as_setting(name)})
    # A name that is no setting is refused as such (load), whatever its value: only a setting's is read.
    found = {name: _plain(value, name, path) if _read_as_setting(name) else value
             for name, value in found.items()}
    for name in sorted(namespace):
        if not _read_as_setting(name) and not name.startswith("_"):
            mistake = _misnamed(name, same_prefix=False)
            if mistake:
                log.warning("%s: %s is not a kcing setting and is ignored%s", path, name, mistake)
    return found


def _under_current_names(given: Mapping[str, Any], origin: str) -> Dict[str, Tuple[Any, str]]:
    """{name: (value, where it came from)} of `given` (settings from `origin`), each of the
    original tool's names (FORMER_NAMES) replaced by kcing's, whose own value, when given too,
    wins. A value given under a former name comes from `origin`, "as" that name: a message about
    it names the name the user wrote."""
    current = {name: (value, origin) for name, value in given.items() if name not in FORMER_NAMES}
    for former, name in FORMER_NAMES.items():
        if former in given:
            current.setdefault(name, (given[former], "%s, as %s" % (origin, former)))
    return current


# What a value of local_settings.py may be made of, which the parsers read (and a message quotes)
# without running any code of the user's: Python's own types.
_PLAIN_SCALARS = (str, int, float, bool, type(None), bytes, bytearray, complex, Decimal, Fraction)
_PLAIN_CONTAINERS = (list, tuple, set, frozenset)
_PLAIN_DEPTH = 8  # a list of URLs is one level; the dict `settings` two


def _plain(value: Any, name: str, path: Path, depth: int = 0) -> Any:
    """`value`, given to setting `name` in local_settings.py, as Python's own types: a subclass of
    str, int or float as its base type's value, a list's items so too, a path as its text. Any
    other object is refused (ConfigError) without being shown: reading it, even to quote it, runs
    the user's code (its __str__, __repr__ or __eq__), which may do anything, raise included."""
    kind = type(value)
    if kind in _PLAIN_SCALARS:
        return value
    # The base type's own conversion, which copies the value without calling the subclass's methods.
    for base, as_base in ((str, str.__str__), (int, int.__int__), (float, float.__float__)):
        if isinstance(value, base):
            return as_base(value)
    if isinstance(value, _PLAIN_CONTAINERS + (dict,)) and depth >= _PLAIN_DEPTH:
        # A list that holds itself (`x = []; x.append(x)`), or nested beyond any use: Python's own
        # repr() and the walk below would recurse without end (RecursionError).
        raise ConfigError("invalid %s (from %s): %s nested more than %d deep (or holding itself), which no setting "
                          "takes" % (name, path, type_name(value), _PLAIN_DEPTH))
    for base in _PLAIN_CONTAINERS:
        if isinstance(value, base):
            return base(_plain(item, name, path, depth + 1) for item in base.__iter__(value))
    if isinstance(value, dict):
        return {_plain(key, name, path, depth + 1): _plain(item, name, path, depth + 1)
                for key, item in dict.items(value)}
    if isinstance(value, os.PathLike):
        try:
            text = os.fspath(value)
        except Exception as error:  # the user's own __fspath__: their file's error, as any in running it
            raise ConfigError("invalid %s (from %s): a path whose __fspath__ raised %s"
                              % (name, path, type(error).__name__)) from None
        return _plain(text, name, path)
    raise ConfigError("invalid %s (from %s): %s, which no setting takes: give text, a number or a list of them"
                      % (name, path, type_name(value)))


def _setting_name(key: Any, path: Path) -> str:
    """A key of local_settings.py's `settings` dict: a setting's name, so text (a subclass's
    value as plain str); any other key is refused without running its code to show it."""
    if isinstance(key, str):
        return str.__str__(key)
    raise ConfigError("%s: `settings` has a key that is %s, not a setting's name" % (path, type_name(key)))


def _working_directory_exists() -> bool:
    try:
        os.getcwd()
    except FileNotFoundError:
        return False
    return True


# The original tool's names of settings kcing names otherwise, read as kcing's own, so that its
# local_settings.py and cron environment work unchanged: it took the one lab without LAVA, kcing a
# list of them. Where both names are given in one place, kcing's wins.
FORMER_NAMES = {"KCI_NON_LAVA_LAB": "KCI_NON_LAVA_LABS"}


def _read_as_setting(name: str) -> bool:
    """Whether `name` is read as a setting: kcing's own name, or the original tool's for one."""
    return name in SPECS or name in FORMER_NAMES


SETTING_PREFIXES = ("KCI_", "KCING_", "ES_", "LS_", "KB_", "DRP_")
# What Logstash reads from the environment for kcing's pipeline (logstash/pipeline/kcing.conf):
# set where kcing may run too, and no misspelt setting.
PIPELINE_VARIABLES = frozenset(("ES_HOSTS", "LS_HTTP_USER", "LS_HTTP_PASSWORD"))


def _misnamed(name: str, same_prefix: bool) -> str:
    """Why `name`, not a setting, looks meant as one (" (did you mean ES_HOST?)"), or "" when it
    does not: a setting's name in lower case, a near miss of one, or a name with a setting's
    prefix. With `same_prefix` (the environment, which other programs share: ES_JAVA_OPTS,
    LS_COLORS, ES_HOME, CURL_CA_BUNDLE), only a near miss of a setting of the same prefix counts.
    Without it (local_settings.py, whose upper-case names are meant for kcing), a near miss in
    upper case counts whatever its prefix: the typo may be in the prefix itself (KIC_HOST,
    DRPDAYS, KCNG_DB); a name in lower case is a helper of the file's own unless it is a setting's."""
    if name.upper() in SPECS:
        return " (setting names are upper-case: %s)" % name.upper()
    if same_prefix:
        if not name.startswith(SETTING_PREFIXES):
            return ""
        prefix = name.split("_", 1)[0] + "_"
        candidates = [known for known in SPECS if known.split("_", 1)[0] + "_" == prefix]
        close = difflib.get_close_matches(name, candidates, n=1, cutoff=0.8)
        return " (did you mean %s?)" % close[0] if close else ""
    close = difflib.get_close_matches(name, list(SPECS), n=1, cutoff=0.8) if name.isupper() else []
    if close:
        return " (did you mean %s?)" % close[0]
    return " (the README's settings table lists them all)" if name.startswith(SETTING_PREFIXES) else ""


def warn_of_unknown_environment(environ: Mapping[str, str]) -> None:
    """Warn of an environment variable that looks meant as a setting but is none (ES_HOTS):
    it would be ignored without a word, and the setting left at its default."""
    for name in sorted(environ):
        if not _read_as_setting(name) and name not in PIPELINE_VARIABLES:
            mistake = _misnamed(name, same_prefix=True)
            if mistake:
                log.warning("environment variable %s is not a kcing setting and is ignored%s", name, mistake)


def _failing_line(error: BaseException, path: Path) -> Optional[int]:
    """The line of `path` where running it failed, or None if it is not known."""
    if isinstance(error, SyntaxError):
        return error.lineno
    found = None
    traceback = error.__traceback__
    target = os.path.abspath(str(path))
    while traceback is not None:
        if os.path.abspath(traceback.tb_frame.f_code.co_filename) == target:
            found = traceback.tb_lineno
        traceback = traceback.tb_next
    return found


def load(environ: Optional[Mapping[str, str]] = None, local_file: Optional[Path] = None,
         overrides: Optional[Mapping[str, Any]] = None, origins: Optional[Mapping[str, str]] = None) -> Settings:
    """Build Settings from defaults <- local_settings.py <- environment <- overrides (flags).

    Only the value in effect is parsed: one a higher layer replaces is never used, so it must not
    stop the run. A CA bundle local_settings.py names that this host lacks, replaced by the
    environment's, or a KCING_DB the environment gives that --db replaces, refused every command
    while the value it would use was right."""
    environ = os.environ if environ is None else environ
    local_file = Path("local_settings.py") if local_file is None else local_file
    local = read_local_settings(local_file)
    for name, value in local.items():
        if not _read_as_setting(name):
            _parse(name, value, str(local_file))  # a key of `settings` that is no setting: refused
    # name -> (value as given, where it came from), the highest layer's
    given = _under_current_names(local, str(local_file))
    warn_of_unknown_environment(environ)
    given.update(_under_current_names({name: environ[name] for name in (*SPECS, *FORMER_NAMES)
                                       if name in environ and environ[name].strip() != ""}, "environment"))
    origins = origins or {}
    for name, value in (overrides or {}).items():
        if value is not None:
            given[name] = (value, origins.get(name, "command line"))
    chosen = {name: spec.default for name, spec in SPECS.items()}
    chosen.update((name, _parse(name, value, origin)) for name, (value, origin) in given.items())
    settings = Settings(**chosen)
    _check_pace(settings)
    return settings


def markdown_table() -> str:
    """The README's settings table, generated so the two can never disagree; a number's range
    is the one its parser enforces."""
    rows = ["| setting | default | allowed | meaning |", "| --- | --- | --- | --- |"]
    for name, spec in SPECS.items():
        default = spec.default
        if isinstance(default, tuple):
            default = ",".join(default)
        shown = "`%s`" % default if default != "" else "(empty)"
        allowed = getattr(spec.parse, "allowed", "")
        rows.append("| `%s` | %s | %s | %s |" % (name, shown, allowed, spec.help.replace("|", "\\|")))
    return "\n".join(rows) + "\n"


if __name__ == "__main__":
    print(markdown_table(), end="")
