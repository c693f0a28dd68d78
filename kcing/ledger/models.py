"""The ledger's tables, bound to a database at open time (no connection at import)."""
from peewee import (BlobField, CharField, DatabaseProxy, DateTimeField, ForeignKeyField, IntegerField, Model,
                    TextField)

database = DatabaseProxy()

# Object states. Only `delivered` is final; every other state is picked up again by the next run.
DOWNLOADED = "downloaded"
DELIVERED = "delivered"
FAILED = "failed"
REJECTED = "rejected"
# Logstash refused one of the object's documents as too large (413): a limit of the sink, not a
# fault of the object, so it stays undelivered (and holds an API watermark) until the limit is raised.
TOO_LARGE = "too_large"
STATES = (DOWNLOADED, DELIVERED, FAILED, REJECTED, TOO_LARGE)
# The last_error of an object `kcing reconcile` found incomplete in Elasticsearch (state failed),
# or its start ("missing in Elasticsearch; <why the re-send failed>"): only a delivery clears it.
MISSING_IN_ELASTICSEARCH = "missing in Elasticsearch"


def ledger_text(raw: bytes) -> str:
    """Text SQLite holds as bytes that are not UTF-8 (a ledger edited by hand: `CAST(X'ff' AS
    TEXT)`, a BLOB in a text column), with those bytes written as `\\xff`: read as it is, where
    a strict decoding would end every command that reads the row with an internal error."""
    return raw.decode("utf-8", "backslashreplace")


def column_text(value) -> str:
    """A text column's value as text whatever the row holds: bytes (a BLOB) as `ledger_text`
    makes them, a number as its digits, and NULL as the empty text, which names nothing."""
    if value is None:
        return ""
    if isinstance(value, bytes):
        return ledger_text(value)
    return str(value)


class _ReadAsText:
    """A text column read by `column_text`, but for NULL in a column that may hold it: NULL in
    one kcing never leaves NULL (a table edited by hand without the constraint) is the empty text."""

    def adapt(self, value):
        if isinstance(value, bytes):
            return ledger_text(value)
        return super().adapt(value)

    def python_value(self, value):
        return None if value is None and self.null else column_text(value)


class LedgerCharField(_ReadAsText, CharField):
    pass


class LedgerTextField(_ReadAsText, TextField):
    pass


class BaseModel(Model):
    class Meta:
        database = database
        legacy_table_names = False


class UpstreamFile(BaseModel):
    """One upstream object (a file) and how far it got."""

    source = LedgerCharField()
    kind = LedgerCharField()
    upstream_id = LedgerCharField()
    url = LedgerTextField()
    sha256 = LedgerCharField(null=True)
    state = LedgerCharField(index=True)
    attempts = IntegerField(default=0)
    last_error = LedgerTextField(null=True)
    object_date = DateTimeField(null=True)
    first_seen = DateTimeField(index=True)
    delivered_at = DateTimeField(null=True)
    document_count = IntegerField(null=True)
    # How many document ids `DeliveredDocuments` keeps for this delivered object. NULL: not
    # delivered, or delivered before the ledger kept ids (schema 1), so reconcile cannot check it.
    kept_ids = IntegerField(null=True)
    # Where the object went: "logstash <input URLs>" or "ndjson <directory>" (kcing/sinks). One
    # object has a row per destination: delivered to one is not delivered to another.
    destination = LedgerCharField(default="")

    class Meta:
        indexes = (
            (("source", "kind", "upstream_id", "destination"), True),
            # The question every run asks of every listed object (which of these ids are delivered
            # here?) answered from this index alone, without a visit to each row for its state:
            # a third of the cost of a re-listing's ledger reads. A ledger from before it gets it
            # when opened (create_tables); a kcing without it keeps it up to date unawares.
            (("source", "kind", "upstream_id", "destination", "state"), False),
        )


class DeliveredDocuments(BaseModel):
    """The ids of the documents a delivered object produced in one index (see ledger/docids.py).

    Written in the transaction that marks the object delivered, deleted with its row (drp) or
    when reconcile finds the object incomplete in Elasticsearch.
    """

    upstream_file = ForeignKeyField(UpstreamFile, on_delete="CASCADE", index=False)
    index_name = LedgerCharField()
    ids = BlobField()  # 20-byte binary ids, sorted, concatenated

    class Meta:
        indexes = ((("upstream_file", "index_name"), True),)


class Run(BaseModel):
    """One run of feed_es or reconcile, for `kcing status` and for cron trails."""

    command = LedgerCharField()
    started = DateTimeField()
    ended = DateTimeField(null=True)
    outcome = LedgerCharField(null=True)
    counts = LedgerTextField(null=True)


class Watermark(BaseModel):
    """How far an incremental source (the KernelCI API) got: every object it listed whose
    `updated` time is at or before `position` (naive UTC) was delivered."""

    source = LedgerCharField()
    position = DateTimeField()
    moved_at = DateTimeField()
    # The destinations of the run that moved it (kcing/sinks: the sink's `destinations_key`).
    destination = LedgerCharField(default="")

    class Meta:
        indexes = ((("source", "destination"), True),)


# A ledger made before Watermark or DeliveredDocuments existed gets the table from
# create_tables(safe=True) on open; new columns of existing tables are added by Ledger.open.
TABLES = (UpstreamFile, DeliveredDocuments, Run, Watermark)
# Stored as SQLite's user_version, so a later release can tell which migrations a file needs.
# 1: upstream_file, run, watermark. 2: upstream_file.kept_ids and delivered_documents.
# 3: upstream_file.destination and watermark.destination, part of their unique keys.
# 4: the destinations named as kcing names them now (ledger/migration.py: rename_destinations).
SCHEMA_VERSION = 4
# Stored as SQLite's application_id ("kcin"): marks the file as a kcing ledger (ledger/identity.py).
APPLICATION_ID = int.from_bytes(b"kcin", "big")
