"""Prometheus text-format metrics of one feed_es run, for a node exporter's textfile collector.

The collector reads every `*.prom` file in its directory at each scrape, so the file is replaced
atomically: a scrape never sees half a file.
"""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional

from kcing.files import write_atomically

# `listed` is what upstream listed; `retried`, the objects an earlier run did not deliver that the
# listing no longer lists, tried again from the ledger (a legacy crawl's, out of its window).
OUTCOMES = ("listed", "skipped", "downloaded", "delivered", "rejected", "failed", "too_large", "retried")


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def render(summary, source: str, exit_code: int, finished_at: float,
           last_success_at: Optional[float]) -> str:
    """The metrics of `summary` (a pipeline RunSummary) as Prometheus exposition text."""
    source_label = 'source="%s"' % _label(source)
    lines: List[str] = []

    def metric(name: str, help_text: str, samples) -> None:
        lines.append("# HELP %s %s" % (name, help_text))
        lines.append("# TYPE %s gauge" % name)
        for labels, value in samples:
            lines.append("%s{%s} %s" % (name, labels, _number(value)))

    metric("kcing_feed_objects", "Upstream objects in the last feed_es run, by what happened to them.",
           [('%s,outcome="%s"' % (source_label, outcome), getattr(summary, outcome)) for outcome in OUTCOMES])
    metric("kcing_feed_documents", "Documents the last feed_es run delivered.", [(source_label, summary.documents)])
    metric("kcing_feed_batches", "Batches the last feed_es run posted.", [(source_label, summary.batches)])
    metric("kcing_feed_bytes", "Bytes the last feed_es run posted.", [(source_label, summary.bytes_sent)])
    metric("kcing_feed_duration_seconds", "How long the last feed_es run took.", [(source_label, summary.elapsed)])
    metric("kcing_feed_exit_code", "Exit status of the last feed_es run (0: everything delivered).",
           [(source_label, exit_code)])
    metric("kcing_feed_last_run_timestamp_seconds", "When the last feed_es run finished (Unix time).",
           [(source_label, finished_at)])
    if last_success_at is not None:
        metric("kcing_feed_last_success_timestamp_seconds",
               "When a feed_es run of this source to the same destination last delivered everything it "
               "listed, and with --verify found it in Elasticsearch (Unix time); alert on its age.",
               [(source_label, last_success_at)])
    return "\n".join(lines) + "\n"


def _number(value) -> str:
    if isinstance(value, float):
        return repr(round(value, 3))
    return str(int(value))


def write(path: str, text: str) -> None:
    # Readable by the node exporter, which seldom runs as the user that runs kcing.
    write_atomically(Path(path), text.encode("utf-8"), mode=0o644)
