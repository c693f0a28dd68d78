"""The command line: the global part (`kcing --help`, `--version`, the command name), then the
command's own usage (kcing/commands/<name>.py) parses the rest; errors become exit codes here."""
from __future__ import annotations

import codecs
import contextlib
import difflib
import errno
import gc
import io
import logging
import os
import re
import sys
from typing import List, Optional, Tuple

from docopt import DocoptExit, docopt, parse_docstring_sections, parse_options

from kcing import __version__, commands, logs, settings as settings_module
from kcing.errors import (INTERNAL_ERROR, STDOUT_CLOSED, ConfigError, KcingError, StorageFailed, kept_on_one_line,
                          stdout_reader_gone, to_devnull)
from kcing.settingvalues import directory_name_problem, home_expanded

log = logging.getLogger(__name__)

USAGE_ERROR = 2

HELP = """\
kcing: put KernelCI results into Elasticsearch (through Logstash) for search and dashboards.

Usage:
  kcing <command> [<options>...]
  kcing <command> --help
  kcing --help | --version

Commands:
%(commands)s

`kcing <command> --help` shows a command's options, the settings it reads, exit codes and
examples.

Settings come from kcing/settings.py defaults, then ./local_settings.py (in the working
directory), then environment variables of the same name (an empty one counts as unset), then a
command's flags. The main ones: KCI_HOST, ES_BUILD, ES_LAVA, ES_BOOT (comma-separated URLs
spread the load), LS_USER, LS_PASSWORD, KCING_DB, DRP_DAYS, ES_HOST, KB_URL. The README lists
them all.

Exit status: 0 all done; 1 some objects failed or were rejected, or upstream's listing stopped
part-way (reconcile, feed_es --verify: some documents are missing in Elasticsearch); 2 usage or
configuration error (a Logstash input, Elasticsearch or Kibana that redirects included); 3
Logstash, Elasticsearch or Kibana unreachable or refusing (a document too large for Logstash
included: its object is sent again by the next run), or an answer of Elasticsearch or Kibana too
large or unreadable; 4 another run holds the lock, or another process held the ledger's database
lock longer than KCING_DB_LOCK_WAIT; 5 the ledger, an output file (of --output) or a file kcing
replaces (pipelines.yml, a Kibana export or backup, a sample) could not be written (disk full,
I/O error; what was written is whole), or stdout could not (any command's, on a full disk); 6
reconcile could check nothing; 70 an internal error (a bug; -d shows the traceback); 130 stopped
by SIGINT/SIGTERM after recording the batch in flight.
"""

# Flags that override a setting of the same meaning: flag -> (setting name).
FLAG_SETTINGS = {
    "--db": "KCING_DB",
    "--source": "KCI_SOURCE",
    "--days": "KCI_DAYS",
    "--threads": "KCI_THREADS",
    "--workers": "KCING_WORKERS",
    "--samples-dir": "KCI_SAMPLES_DIR",
    "--batch-size": "LS_PIPELINE_BATCH_SIZE",
    "--drp-days": "DRP_DAYS",
}


class UsageError(Exception):
    """A command line kcing cannot run; the message is one line, without the program name."""


def global_help() -> str:
    lines = ["  %-12s %s" % (name, commands.load(name).SUMMARY) for name in commands.NAMES]
    return HELP % {"commands": "\n".join(lines)}


def command_options(usage: str) -> dict:
    """{'--long' or '-s': takes a value} for every option the command's usage text lists."""
    sections = parse_docstring_sections(usage)
    known = {}
    for option in parse_options(sections.after_usage):
        for name in (option.short, option.longer):
            if name:
                known[name] = option.argcount > 0
    return known


# Options one command names otherwise: feed_es crawls the newest `--how-many`, gen_samples saves
# the newest `--sample-size`.
SAME_MEANING = {"--how-many": "--sample-size", "--sample-size": "--how-many"}


def option_meant(typed: str, known) -> str:
    """` (did you mean --source?)` for a mistyped long option (`--sorce`, `--how_many`), or one
    another command spells otherwise (`gen_samples --how-many`), as for a mistyped command;
    nothing when no option of the command is near."""
    if not typed.startswith("--"):
        return ""
    spelled = typed.replace("_", "-").lower()
    other = SAME_MEANING.get(spelled)
    if other in known:
        return " (did you mean %s?)" % other
    longs = [name for name in known if name.startswith("--")]
    # The start of one option only (`--log` for --log-file), which difflib finds too far from it.
    started = [name for name in longs if name.startswith(spelled)] if len(spelled) > 3 else []
    near = started if len(started) == 1 else difflib.get_close_matches(spelled, longs, n=1, cutoff=0.75)
    if near and (spelled, near[0]) in NOT_MEANT:
        owners = [name for name in commands.NAMES if spelled in command_options(commands.load(name).USAGE)]
        return " (an option of %s)" % " and ".join(owners)
    return " (did you mean %s?)" % near[0] if near else ""


# Options spelt near one of the command's that another command has, with another meaning: the
# days drp keeps are no crawl window, and `feed_es --days 30` for `--drp-days 30` crawls 30 days.
NOT_MEANT = {("--drp-days", "--days")}


def unknown_option(token: str, flag: str, known) -> str:
    """What is said of `flag`, no option of the command, met in `token`. A long option written
    with one dash (`-dry-run`, as some tools take them) is read as grouped letters, -d then -r:
    it is named as typed, with the option meant, not as a letter the user never wrote alone."""
    word = token.partition("=")[0]
    if not word.startswith("--") and len(word) > 2:
        # Only a word long enough is matched loosely: -dz is no misspelt --db.
        loosely = len(word) > 4 or ("-" + word).replace("_", "-").lower() in known
        return "unknown option %s%s" % (word, option_meant("-" + word, known) if loosely else "")
    return "unknown option %s%s" % (flag, option_meant(flag, known))


def check_tokens(name: str, usage: str, argv: List[str]) -> bool:
    """Refuse, in one line, what docopt would answer with its internals; True for --help."""
    known = command_options(usage)
    seen = set()
    tokens = iter(argv)
    for token in tokens:
        if token == "--":
            break
        if not token.startswith("-") or token == "-":
            continue
        if token.startswith("--"):
            flag, eq, value = token.partition("=")
            flags = [(flag, eq == "=")]
        else:
            # -dl FILE: short flags may be grouped; one taking a value takes the rest or the next.
            flags = []
            for position, letter in enumerate(token[1:], start=1):
                short = "-" + letter
                flags.append((short, position < len(token) - 1 and known.get(short, False)))
                if known.get(short):
                    break
        # Every letter of a group is known before any acts: `-how-many 3` was -h, and the help.
        unknown = [flag for flag, _ in flags if flag not in known]
        if unknown:
            if token == "-help":  # as many tools take it
                return True
            raise UsageError(unknown_option(token, unknown[0], known))
        for flag, has_value in flags:
            if flag in ("-h", "--help"):
                return True
            if known[flag] and not has_value:
                value = next(tokens, None)
                if value is None:
                    raise UsageError("%s needs a value" % flag)
                if value.split("=", 1)[0] in known:
                    # `--output --dry-run` would write into a directory named --dry-run, and not
                    # as a dry run: the value was forgotten (`--output=--dry-run` is taken as given).
                    raise UsageError("%s needs a value, not the option %s" % (flag, value))
            if not known[flag] and has_value:
                raise UsageError("%s takes no value" % flag)
            canonical = _canonical(flag, usage)
            if canonical in seen:
                raise UsageError("%s given twice" % flag)
            seen.add(canonical)
    return False


def _canonical(flag: str, usage: str) -> str:
    for option in parse_options(parse_docstring_sections(usage).after_usage):
        if flag in (option.short, option.longer):
            return option.longer or option.short
    return flag


def parse_command(name: str, argv: List[str]) -> Optional[dict]:
    """The command's arguments as docopt gives them, or None when --help was printed."""
    module = commands.load(name)
    if getattr(module, "RAW_ARGUMENTS", False):
        if argv in (["-h"], ["--help"]):
            print(module.USAGE, end="")
            return None
        return {"<pytest-arg>": list(argv), "--debug": False, "--log-file": None}
    if check_tokens(name, module.USAGE, argv):
        print(module.USAGE, end="")
        return None
    parsed = _fits(name, module.USAGE, argv)
    if parsed is None:
        raise UsageError(_mismatch(name, module.USAGE, argv))
    for flag, value in parsed.items():
        # `--output ""` would otherwise read as no --output at all, and post to Logstash.
        if flag.startswith("-") and isinstance(value, str) and not value.strip() and flag not in MAY_BE_EMPTY:
            raise UsageError("%s needs a value, not an empty one" % flag)
        if flag in PATH_OPTIONS and isinstance(value, str):
            # `--output=~/out` in a crontab: cron's sh expands no `~` after an `=`.
            try:
                parsed[flag] = home_expanded(value)
            except ValueError as error:
                raise UsageError("%s %s: %s" % (flag, value, error)) from None
        if flag in FILE_OPTIONS and isinstance(value, str):
            problem = directory_name_problem(value, FILE_OPTIONS[flag])
            if problem:
                raise UsageError("%s %s %s" % (flag, value, problem))
    if "" in (parsed.get("<file>") or ()):
        # `--builds "$FILE"` with FILE unset: no file has an empty name, and read as one it
        # became the working directory ("cannot read .: Is a directory").
        raise UsageError("a <file> needs a name, not an empty one")
    if "-" in (parsed.get("<file>") or ()):
        # `curl ... | kcing feed_es --lavas -`: no standard input is read (a local file is known by
        # its name and content), and `-` read as a name was rejected into the ledger as missing.
        raise UsageError("a <file> named - is not read from standard input: save it to a file and name that")
    return parsed


# Options whose empty value means something: the Kibana space, where empty is the default space.
MAY_BE_EMPTY = frozenset(("--space",))
# Options naming a file or directory (--db and --samples-dir are settings, which expand `~` too).
PATH_OPTIONS = frozenset(("--output", "--metrics", "--kibana-dir", "--log-file"))
# Options naming a file kcing writes, with the name a file of its kind would take in a directory.
FILE_OPTIONS = {"--metrics": "kcing.prom", "--log-file": "kcing.log"}


# What an option that goes with one way of running a command only is for, said when it is given
# with another: `feed_es --source samples --date DAY` dates nothing, a manifest dates its samples.
ONLY_WITH = {
    "--date": "--date dates the files of --builds, --lavas or --boots only (a crawl's objects take upstream's "
              "listing date, samples their manifest's)",
}


def _fits(name: str, usage: str, argv: List[str]) -> Optional[dict]:
    try:
        return dict(docopt(usage, argv=[name, *argv], default_help=False))
    except DocoptExit:
        return None


def _mismatch(name: str, usage: str, argv: List[str]) -> str:
    """Say which given flags clash (--days with --how-many), or what is missing or extra."""
    known = command_options(usage)
    groups, position = [], 0
    while position < len(argv):
        token = argv[position]
        size = 2 if token in known and known[token] else 1
        groups.append(argv[position:position + size])
        position += size
    flags = [group for group in groups if group[0].startswith("-")]
    for first in range(len(flags)):
        for second in range(first + 1, len(flags)):
            without = [group for group in groups if group is not flags[first] and group is not flags[second]]
            alone = [[*without, flags[first]], [*without, flags[second]]]
            if all(_fits(name, usage, [token for group in option for token in group]) is not None
                   for option in alone):
                return "%s and %s do not go together" % (flags[first][0].split("=")[0], flags[second][0].split("=")[0])
    if "<file>" in usage and not any(not group[0].startswith("-") for group in groups) and \
            _fits(name, usage, [*argv, "file"]) is not None:
        return "%s needs at least one file" % " ".join(group[0] for group in flags if group[0] in
                                                       ("--builds", "--lavas", "--boots"))
    for flag in flags:
        if _fits(name, usage, [token for group in groups if group is not flag for token in group]) is not None:
            option = flag[0].split("=")[0]
            return ONLY_WITH.get(option, "%s does not go with the other arguments given" % option)
    extra = [group[0] for group in groups if not group[0].startswith("-")]
    if extra:
        return "unexpected argument %r" % extra[0]
    return "these arguments do not go together: %s" % " ".join(argv)


def split_global(argv: List[str]) -> Tuple[Optional[str], List[str]]:
    """(command name, the rest); None when a global --help or --version was answered."""
    if not argv:
        raise UsageError("no command given")
    leading = _leading_log_options(argv)
    if leading:
        # `kcing -l FILE feed_es ...` as cron lines written for earlier versions have it: the
        # logging options every command takes may come before the command's name.
        return split_global(argv[len(leading):])[0], [*argv[len(leading) + 1:], *leading]
    first, rest = argv[0], argv[1:]
    if first in ("-h", "--help") and not rest:
        print(global_help(), end="")
        return None, []
    if first == "--version" and not rest:
        print("kcing %s" % __version__)
        return None, []
    if first in ("-h", "--help") and len(rest) == 1 and rest[0] in commands.NAMES:
        # `kcing --help feed_es`, as `git --help commit`: the command's help.
        return rest[0], ["--help"]
    if first in ("-h", "--help"):
        raise UsageError("%s takes at most a command's name (%s): %s" % (
            first, ", ".join(commands.NAMES), " ".join(rest)))
    if first == "--version":
        raise UsageError("--version takes nothing after it")
    after = _after_log_options(argv)
    if after == len(argv):
        # Every command takes them, before its name too; only the command is missing.
        raise UsageError("no command given (kcing %s <command> ...)" % " ".join(argv))
    if after and not argv[after].startswith("-") and argv[after] not in commands.NAMES:
        raise unknown_command(argv[after])
    if first.startswith("-"):
        if any(word in commands.NAMES for word in rest):
            raise UsageError("options go after the command name (kcing <command> %s ...)" % first)
        raise UsageError("unknown option %s" % first)
    if first not in commands.NAMES:
        raise unknown_command(first)
    return first, rest


def _leading_log_options(argv: List[str]) -> List[str]:
    """The -d/--debug and -l/--log-file FILE options before the command name (if one follows)."""
    taken, position = [], 0
    while position < len(argv):
        token = argv[position]
        if token in ("-d", "--debug") or token.startswith("--log-file="):
            size = 1
        elif token in ("-l", "--log-file"):
            size = 2
        else:
            break
        taken += argv[position:position + size]
        position += size
    follows = argv[position] if position < len(argv) else None
    return taken if taken and follows in commands.NAMES and follows != "test" else []


# The services as commands abbreviate them: `setup_elastic` means setup_es, though its spelling
# is nearer to setup_ls.
SERVICE_WORDS = {"elasticsearch": "es", "elastic": "es", "logstash": "ls", "kibana": "kbn"}
# A shorter start (`s`, `se`) would name half the commands.
SHORTEST_START = 3


def meant_commands(word: str) -> List[str]:
    """The commands `word` most likely means: the one it names with a service's full name, those
    it begins, else the nearest spelling."""
    typed = "_".join(SERVICE_WORDS.get(part, part) for part in word.lower().replace("-", "_").split("_"))
    if typed in commands.NAMES:
        return [typed]
    started = [name for name in commands.NAMES if len(typed) >= SHORTEST_START and name.startswith(typed)]
    return started or difflib.get_close_matches(typed, commands.NAMES, n=1, cutoff=0.75)


# Words that are options of kcing itself, typed as a command (`kcing help feed_es`, as git has it).
GLOBAL_OPTION_WORDS = {"help": "kcing --help, or kcing <command> --help", "version": "kcing --version"}


def unknown_command(word: str) -> UsageError:
    if word.lower() in GLOBAL_OPTION_WORDS:
        return UsageError("unknown command %r (did you mean %s?)" % (word, GLOBAL_OPTION_WORDS[word.lower()]))
    meant = meant_commands(word)
    if not meant:
        return UsageError("unknown command %r" % word)
    listed = meant[0] if len(meant) == 1 else "%s or %s" % (", ".join(meant[:-1]), meant[-1])
    return UsageError("unknown command %r (did you mean %s?)" % (word, listed))


def _after_log_options(argv: List[str]) -> int:
    """Where the -d/--debug and -l/--log-file FILE options opening `argv` end: len(argv) for a
    command line lacking only the command (`kcing -l /var/log/kcing.log`)."""
    position = 0
    while position < len(argv):
        token = argv[position]
        if token in ("-d", "--debug") or token.startswith("--log-file="):
            position += 1
        elif token in ("-l", "--log-file"):
            position += 2
        else:
            return position
    return len(argv)


def _escape_unencodable(error: UnicodeError):
    """The `kcing-escape` error handler: a character stdout's encoding lacks becomes `\\u0131`
    (as stderr writes it), and a byte of a name that is not UTF-8 (a lone surrogate) goes out as
    that byte (as `surrogateescape` sends it), instead of ending the command with an error."""
    if not isinstance(error, UnicodeEncodeError):
        raise error
    code = ord(error.object[error.start])
    if 0xDC80 <= code <= 0xDCFF:
        return bytes([code - 0xDC00]), error.start + 1
    return "\\u%04x" % code if code <= 0xFFFF else "\\U%08x" % code, error.start + 1


codecs.register_error("kcing-escape", _escape_unencodable)


class StdoutFailing:
    """sys.stdout, whose failure to write (`kcing status > file` on a full disk, an I/O error) is
    a StorageFailed, said in one line with exit 5: a command took it for a bug (internal error,
    exit 70), and a failure of Python's last flush at exit printed two lines of its own and exit
    120. The output that could not be written then goes to /dev/null, so that no later flush,
    the interpreter's at exit included, fails again. A reader gone (BrokenPipeError) is left to
    stdout_reader_gone."""

    def __init__(self, stream):
        self._stream = stream

    def write(self, text: str) -> int:
        try:
            return self._stream.write(text)
        except BrokenPipeError:
            raise
        except OSError as error:
            raise self._failed(error) from None

    def flush(self) -> None:
        try:
            self._stream.flush()
        except BrokenPipeError:
            raise
        except OSError as error:
            raise self._failed(error) from None

    def _failed(self, error: OSError) -> StorageFailed:
        to_devnull(self._stream)
        return StorageFailed("cannot write to stdout: %s; what it did not take is lost" % (error.strerror or error))

    def __getattr__(self, name: str):
        return getattr(self._stream, name)


def told(line: str) -> None:
    """Write `line` on stderr, or nothing when stderr cannot take it (`>> kcing.log 2>&1` on a full
    disk): the -l log file and the exit status still say it, where the failed write raised out of
    kcing and ended every such run with exit 1, which says that objects failed. stderr then goes
    to /dev/null, so that the interpreter's last flush of it does not fail again."""
    try:
        print(line, file=sys.stderr, flush=True)
    except OSError:
        to_devnull(sys.stderr)


def stdout_flushed(status: int, command: Optional[str] = None) -> int:
    """`status`, or 5 with one line on stderr when what is left of stdout cannot be written. The
    line names `command` as a failed write during it does: whether the write fails there or in
    this last flush depends only on stdout's buffering (PYTHONUNBUFFERED, a terminal)."""
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        return STDOUT_CLOSED if stdout_reader_gone() else status
    except StorageFailed as error:
        told("%s: %s" % ("kcing %s" % command if command else "kcing", error))
        return status or StorageFailed.exit_code  # a command that failed has said why already
    return status


def tolerant_stdout() -> None:
    """Under a locale whose encoding is not UTF-8 (LC_ALL=C with PYTHONUTF8=0, a Latin-1 locale,
    PYTHONIOENCODING=ascii), a non-ASCII path or name in what a command prints (the ledger's path
    and destinations in `status`) made stdout raise UnicodeEncodeError: an internal error and exit
    70 after the work was done. stdout keeps its encoding; what it cannot hold is escaped."""
    reconfigure = getattr(sys.stdout, "reconfigure", None)
    if reconfigure is not None:
        reconfigure(errors="kcing-escape")


def standard_descriptors_open() -> None:
    """A crontab line that closes stdout or stderr (`>&-`, `2>&-`) starts kcing without
    descriptor 1 or 2. Python then leaves sys.stdout or sys.stderr None, and printing the summary
    through the -l copy of stdout failed after the run was done (exit 1, the summary and the ending
    missing from the log file); and the first file kcing opened (the log file, the run lock, an
    NDJSON file) took the closed number, where anything writing to stdout or stderr (a worker
    process, a library) would have written into it. /dev/null takes the closed numbers first."""
    for number in (0, 1, 2):
        try:
            os.fstat(number)
        except OSError:
            opened = os.open(os.devnull, os.O_RDWR)  # the lowest free number: `number` itself
            if opened != number:
                os.dup2(opened, number)
                os.close(opened)
    if sys.stdout is None:
        sys.stdout = open(1, "w", encoding="utf-8", errors="backslashreplace", closefd=False)
    if sys.stderr is None:
        sys.stderr = open(2, "w", encoding="utf-8", errors="backslashreplace", closefd=False)


def settings_from(args: dict, environ=None):
    """Load settings and apply the flags the user gave (docopt leaves absent ones as None)."""
    overrides = {name: args.get(flag) for flag, name in FLAG_SETTINGS.items() if args.get(flag) is not None}
    origins = {name: flag for flag, name in FLAG_SETTINGS.items()}
    return settings_module.load(environ=environ, overrides=overrides, origins=origins)


def main(argv: Optional[List[str]] = None) -> int:
    """Run one command; return its exit status. The only place that turns errors into exit codes.

    Without `argv`, the process is kcing (`kcing`, `python -m kcing`, `kcing.py`): its arguments are
    sys.argv, and what it imported is kept out of the collector's way."""
    as_program = argv is None
    if as_program:
        standard_descriptors_open()
        tolerant_stdout()
        sys.stdout = StdoutFailing(sys.stdout)
        status = _main(sys.argv[1:], as_program)
        commands.ending_with(status)  # what a signal from now on leaves it (kcing/shutdown.py)
        status = stdout_flushed(status, _command_run[0])
        commands.ending_with(status)
        return status
    return _main(list(argv), as_program)


# The command the process runs, once its command line named one: its last flush of stdout says it.
_command_run: List[Optional[str]] = [None]


def _main(argv: List[str], as_program: bool) -> int:
    command = None
    try:
        command, rest = split_global(argv)
        _command_run[0] = command
        if command is None:
            return 0
        args = parse_command(command, rest)
        if args is None:
            return 0
        if as_program:
            # What the imports made lives as long as the process: the cyclic collector need not
            # walk it again in every full collection of a run.
            gc.freeze()
            # A signal once the command is done no longer ends the process by itself.
            commands.hold_signals_after_the_end(command)
    except UsageError as error:
        where = "kcing %s" % command if command else "kcing"
        told("%s: %s (see %s --help)" % (where, kept_on_one_line(str(error)), where))
        return USAGE_ERROR
    except StorageFailed as error:  # --help printed into a full disk
        where = "kcing %s" % command if command else "kcing"
        told("%s: %s" % (where, error))
        return error.exit_code
    except Exception as error:  # a bug in reading the command line: one line too, not a traceback
        if isinstance(error, BrokenPipeError) and stdout_reader_gone():
            return STDOUT_CLOSED  # `kcing feed_es --help | head -0`: as a reader gone ends a command's output
        if "-d" in argv or "--debug" in argv:
            import traceback
            traceback.print_exc()
        where = "kcing %s" % command if command else "kcing"
        told("%s: internal error (%s); run again with -d for the traceback, and report it"
             % (where, type(error).__name__))
        return INTERNAL_ERROR
    if not args.get("--quiet"):
        if not args.get("--log-file"):
            return run_command(command, args)
        copied = logs.CopiedToLogFile(sys.stdout, __name__)
        try:
            with contextlib.redirect_stdout(copied):
                return run_command(command, args)
        finally:
            copied.finish()
    # --quiet (cron, which mails whatever a job prints): what the command prints is held, kept
    # in the -l log file, and shown only when the command ends in failure.
    held = io.StringIO()
    status = INTERNAL_ERROR
    try:
        with contextlib.redirect_stdout(held):
            status = run_command(command, args)
    finally:
        release(held.getvalue(), status, command)
    return status


def release(printed: str, status: int, command: str) -> None:
    """What a --quiet `command` printed: in the -l log file, and on stdout after a failure."""
    for line in printed.splitlines():
        logs.in_log_file_only(logging.INFO, line, __name__)
    if status == 0 or not printed:
        # Nothing held is nothing lost: a write of nothing into a full disk (/dev/full refuses even
        # that) is no output to say could not be written.
        return
    try:
        sys.stdout.write(printed)
        sys.stdout.flush()
    except BrokenPipeError:
        stdout_reader_gone()
    except StorageFailed as error:  # a full disk: the run's own status stands, it said why it failed
        told("kcing %s: %s" % (command, error))


def log_file_problem(path: str, error: OSError) -> str:
    """Why the -l file could not be opened, said so that the user knows what to do."""
    if error.errno == errno.ENXIO:
        # A FIFO or socket no process reads ("No such device or address" says nothing of it).
        return "no process reads it (a FIFO without a reader, or a socket)"
    if error.errno == errno.ENOENT:
        # A cron line's log directory (/var/log/kcing) that nobody made: kcing makes no directories
        # for a log, as a mistyped one would then collect the trail where nobody looks.
        directory = os.path.dirname(os.path.abspath(os.path.expanduser(path)))
        if not os.path.isdir(directory):
            return "directory %s does not exist; create it (mkdir -p %s) or check the name" % (directory, directory)
    return error.strerror or str(error)


def _log_file_refused(command: str, path: str, why: str) -> int:
    # One line whatever the name holds (`-l $'a\nb'`), as the line a failed command ends with.
    print(kept_on_one_line("kcing %s: cannot open log file %s: %s" % (command, path, why)), file=sys.stderr)
    return USAGE_ERROR


def run_command(command: str, args: dict) -> int:
    """Set up logging, load the settings and run `command`; return its exit status."""
    quiet = bool(args.get("--quiet"))
    refused = args.get("--log-file") and logs.log_file_refusal(args["--log-file"])
    if refused:
        return _log_file_refused(command, args["--log-file"], refused)
    made_by_this_run = bool(args.get("--log-file")) and not os.path.lexists(args["--log-file"])
    try:
        logs.configure(debug=args.get("--debug"), log_file=args.get("--log-file"), quiet=quiet)
    except OSError as error:
        return _log_file_refused(command, args["--log-file"], log_file_problem(args["--log-file"], error))
    try:
        if not getattr(commands.load(command), "READS_SETTINGS", True):
            # `kcing test`: pytest's run, which a setting it never reads (a typo in
            # local_settings.py, an exported ES_HOST) must not refuse.
            return commands.run(command, args, None)
        settings = settings_from(args)
        # The ledger's name is known once the settings are: a ledger not made yet (`-l kcing.db`
        # for `--db kcing.db` in a first run) took the log lines, and the next run refused it.
        refused = args.get("--log-file") and logs.log_file_refusal(args["--log-file"], settings.KCING_DB)
        if refused:
            logs.configure(debug=args.get("--debug"), quiet=quiet)
            if made_by_this_run:  # left, the ledger would be made in a file of log lines
                try:
                    os.remove(args["--log-file"])
                except OSError:
                    pass
            return _log_file_refused(command, args["--log-file"], refused)
        logs.configure(debug=args.get("--debug"), log_file=args.get("--log-file"), quiet=quiet,
                       secrets=settings_module.secret_texts(settings))
        status = commands.run(command, args, settings)
        if status:
            # A command that ends so without an error (objects rejected, documents missing,
            # Kibana objects not imported) has said why above; the trail gets its status too.
            logs.in_log_file_only(logging.WARNING, "kcing %s: exit %d (%s)"
                                  % (command, status, exit_meaning(command, status)), __name__)
        return status
    except KcingError as error:
        log.debug("error details", exc_info=True)
        return ended(command, str(error), error.exit_code)
    except KeyboardInterrupt:
        status = ended(command, "interrupted", 130)
        commands.interruption_told()
        return status
    except BrokenPipeError:
        if not stdout_reader_gone():
            log.debug("internal error", exc_info=True)
            return ended(command, "internal error (BrokenPipeError); run again with -d for the traceback, and report "
                                  "it", INTERNAL_ERROR)
        # `kcing status | head`: the reader took what it wanted, as with any tool SIGPIPE ends.
        return STDOUT_CLOSED
    except Exception as error:  # a bug: one line for cron; the message may quote anything, so not shown
        log.debug("internal error", exc_info=True)
        return ended(command, "internal error (%s); run again with -d for the traceback, and report it"
                     % type(error).__name__, INTERNAL_ERROR)


def exit_meaning(command: str, status: int) -> str:
    """What `status` means for `command`, as its help's "Exit status:" paragraph says it."""
    paragraph = " ".join(commands.load(command).USAGE.split("Exit status:", 1)[-1].split("\n\n", 1)[0].split())
    for code, meaning in re.findall(r"(?:^|; )(\d+) (.*?)(?=; \d+ |\.?$)", paragraph):
        if int(code) == status:
            return meaning
    return "see kcing %s --help" % command


def ended(command: str, why: str, status: int) -> int:
    """Say in one line on stderr why the command ends with `status`, and in the -l log file too:
    its trail is what a cron job's reader has, and a run refused at start (a setting gone wrong)
    left nothing in it."""
    # Masked as the log masks it: an error can quote a server's answer, and a server that echoes
    # its request (a stub at an input's URL, a proxy's error page) quotes the credentials sent.
    why = kept_on_one_line(logs.masked(why))
    told("kcing %s: %s" % (command, why))
    logs.in_log_file_only(logging.ERROR, "kcing %s: %s (exit %d)" % (command, why, status), __name__)
    return status


__all__ = ["main", "ConfigError"]
