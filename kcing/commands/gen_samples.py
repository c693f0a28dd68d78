"""kcing gen_samples: save upstream files into the samples directory for offline work."""
from __future__ import annotations

from pathlib import Path

from kcing.commands import said
from kcing.errors import ConfigError
from kcing.progress import Progress
from kcing.runlock import RunLock
from kcing.shutdown import Stop
from kcing.samples import SamplesWriter, create_samples_dir, gen_samples as save_samples
from kcing.wiring import make_source, source_named

SUMMARY = "save upstream files into samples/ for offline work"

USAGE = """\
Usage:
  kcing gen_samples [options] [--sample-size=N | --days=N | --since=DATE] [--with-logs]

Save upstream files (and a manifest.json describing them) into the samples directory, for
offline work and tests: `kcing feed_es --source samples` replays them. A run adds to what the
directory holds: an object whose file is there with the sha256 its entry records is not
downloaded again, even if upstream changed it since (a changed KernelCI API node is a new
version, saved beside the older); remove a file to have it saved again. A file that changed
since (edited without recording its new sha256 and size, or corrupted) is replaced by
upstream's, with a warning naming it. A file linked from outside the directory is saved again
in the link's place: the replay never follows such a link. A web page answered in place of a
file (a proxy's error or login page, sent with 200), or a file that is no JSON object (one cut
short, as storage serves a file still being written), is not saved: it counts as failed, and the
next run asks for the file again.

Settings read (from the environment or ./local_settings.py; the README's table says each):
every KCI_* setting (KCI_SOURCE, KCI_HOST, KCI_SCHEME, KCI_STORAGE_URL, KCI_API_URL,
KCI_API_TOKEN, KCI_DAYS, KCI_THREADS, KCI_SAMPLES_DIR, ...) and KCING_PROGRESS_EVERY.

Options:
  --source=NAME        legacy (a legacy KernelCI's _ajax API + storage at KCI_HOST; kernelci.org's
                       was retired in 2024) or api (the current KernelCI API at KCI_API_URL)
                       (setting KCI_SOURCE, default legacy).
  --sample-size=N      Save the newest N objects of each kind instead of the last --days
                       (with --source api, the newest N of those updated in the last KCI_DAYS
                       days: the API has no other order).
  --days=N             Save the last N days (setting KCI_DAYS, default 2).
  --since=DATE         With --source api: save nodes updated since DATE.
  --with-logs          With --source api: also save the logs documents need (a job's or
                       kbuild's sample saved without its log is saved again, with it).
  --samples-dir=DIR    Samples directory (setting KCI_SAMPLES_DIR, default samples).
  --threads=N          Concurrent downloads (setting KCI_THREADS, default 4).
  -d --debug           Log debug messages (every request, every retry decision).
  -l --log-file=FILE   Also write the log to FILE (for cron jobs).
  -q --quiet           Print only warnings and errors (for cron, which mails what a job
                       prints): no progress, and no summary unless the command fails;
                       with -l, FILE still gets everything.
  -h --help            Show this help.

Exit status: 0 all saved; 1 some files failed or were refused, or upstream's listing stopped
part-way (what it listed before was saved); 2 usage or configuration error; 4 another
gen_samples writes into the same directory; 5 a file could not be written (a full disk: each
file is whole or absent); 130 stopped by a signal.

Examples:
  kcing gen_samples --sample-size 5               # the newest 5 builds and boots into samples/
  kcing gen_samples --source api --days 1 --samples-dir /tmp/api-samples
"""


def run(args: dict, settings) -> int:
    if settings.KCI_SOURCE == "samples":
        raise ConfigError("gen_samples saves from an upstream source; %s would copy the samples onto themselves"
                          % source_named(args, "samples"))
    stop = Stop()  # set when the run is interrupted: downloads and retry waits end at once
    source = make_source(args, settings, how_many_flag="--sample-size", stop=stop)
    create_samples_dir(settings.KCI_SAMPLES_DIR)
    # Two runs writing one manifest would lose entries: lock the samples directory, before the
    # manifest is read, so that a run never reads it while another is about to rewrite it.
    with RunLock(str(Path(settings.KCI_SAMPLES_DIR) / "manifest.json")):
        writer = SamplesWriter(settings.KCI_SAMPLES_DIR, source.name, settings.KCI_MAX_OBJECT_BYTES,
                               with_logs=bool(args.get("--with-logs")))
        run = save_samples(source, writer, threads=settings.KCI_THREADS,
                           progress=Progress("gen_samples", every=settings.KCING_PROGRESS_EVERY), stop=stop)
    said("gen_samples: %d saved, %d already present, %d failed, %d refused (unsafe or unusable) in %s"
         % (run.saved, run.unchanged, run.failed, run.refused, settings.KCI_SAMPLES_DIR))
    if run.listing_failure is not None:
        raise run.listing_failure  # after the summary, as a feed says it: exit 1, one line naming the page
    return 1 if (run.failed or run.refused) else 0
