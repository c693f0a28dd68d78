"""The ledger's tables, bound to a database at open time (no connection at import)."""
from peewee import (CharField, DatabaseProxy, DateTimeField, IntegerField, Model, TextField)

database = DatabaseProxy()

# Object states. Only `delivered` is final; every other state is picked up again by the next run.
DOWNLOADED = "downloaded"
DELIVERED = "delivered"
FAILED = "failed"
REJECTED = "rejected"
STATES = (DOWNLOADED, DELIVERED, FAILED, REJECTED)


class BaseModel(Model):
    class Meta:
        database = database
        legacy_table_names = False


class UpstreamFile(BaseModel):
    """One upstream object (a file) and how far it got."""

    source = CharField()
    kind = CharField()
    upstream_id = CharField()
    url = TextField()
    sha256 = CharField(null=True)
    state = CharField(index=True)
    attempts = IntegerField(default=0)
    last_error = TextField(null=True)
    object_date = DateTimeField(null=True)
    first_seen = DateTimeField(index=True)
    delivered_at = DateTimeField(null=True)
    document_count = IntegerField(null=True)

    class Meta:
        indexes = ((("source", "kind", "upstream_id"), True),)


class Run(BaseModel):
    """One feed run, for `kcing status` and for cron trails."""

    command = CharField()
    started = DateTimeField()
    ended = DateTimeField(null=True)
    outcome = CharField(null=True)
    counts = TextField(null=True)


class Watermark(BaseModel):
    """How far an incremental source (the KernelCI API) got: every object it listed whose
    `updated` time is at or before `position` (naive UTC) was delivered."""

    source = CharField(unique=True)
    position = DateTimeField()
    moved_at = DateTimeField()


# A ledger made before Watermark existed gets its table from create_tables(safe=True) on open.
TABLES = (UpstreamFile, Run, Watermark)
# Stored as SQLite's user_version, so a later release can tell which migrations a file needs.
SCHEMA_VERSION = 1
