"""One exception root; the CLI maps each class to an exit code in one place."""


class KcingError(Exception):
    """Base of every error kcing raises on purpose."""

    exit_code = 1


class ConfigError(KcingError):
    """A setting, flag or local file is wrong; nothing was changed."""

    exit_code = 2


class UpstreamError(KcingError):
    """The upstream listing or storage did not give what was asked for."""

    exit_code = 1


class RejectedInput(KcingError):
    """An upstream file cannot become documents (not JSON, or lacks a needed field).

    The reason is recorded in the ledger and the run goes on.
    """

    exit_code = 1


class SinkUnavailable(KcingError):
    """Logstash could not be reached (or kept failing) after all retries."""

    exit_code = 3


class SinkRejected(KcingError):
    """Logstash refused a request in a way that retrying cannot fix (a 4xx)."""

    exit_code = 3


class LockHeld(KcingError):
    """Another kcing run holds the lock beside the database."""

    exit_code = 4


class NothingChecked(KcingError):
    """reconcile found nothing it could check: no object delivered to Logstash in its window, or
    only objects in indices past the retention or from before the ledger kept ids."""

    exit_code = 6


class Interrupted(KcingError):
    """SIGINT or SIGTERM: the batch in flight was finished and recorded, then the run stopped."""

    exit_code = 130


class ElasticsearchError(KcingError):
    """Elasticsearch could not be reached, was not ready in time, or refused an admin request
    (setup_es, drp) in a way that retrying cannot fix. Bad credentials, TLS or versions are ConfigError."""

    exit_code = 3
