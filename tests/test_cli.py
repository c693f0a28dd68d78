"""The command line as a user meets it: help per command, one-line usage errors, messages a
person reads, waiting and progress lines, no silent success. Every test runs the real program."""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import pty
import re
import shlex
import shutil
import signal
import socket
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path
from typing import Dict, List, Set

import pytest

from kcing import cli, commands
from tests.fakes.serving import refusing_port
from tests.feedrun import REPO, SAMPLES, clean_environ, kcing, ledger_states

README = REPO / "README.md"
PYTHON_INTERNALS = re.compile(r"invalid literal|Traceback|HTTPConnection|object at 0x|kept at None|"
                              r"Option\(|DocoptExit|Errno|\(ConnectionError\)")


def options_of(name: str) -> Set[str]:
    """The long options a command's help lists."""
    return {option for option, _ in cli.command_options(commands.load(name).USAGE).items()
            if option.startswith("--")}


def samples_environ(tmp_path: Path, **settings: str) -> Dict[str, str]:
    """A ledger in `tmp_path` and the bundled samples, whatever the working directory."""
    return clean_environ(KCING_DB=str(tmp_path / "kcing.db"), KCI_SAMPLES_DIR=str(SAMPLES), **settings)


def closed_port() -> int:
    """A port for a setting the command refuses before it connects (`refusing_port` for one it asks)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def one_line(result: subprocess.CompletedProcess) -> str:
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


# Help per command (2) ---------------------------------------------------------------------------

def test_kcing_help_lists_every_command_on_one_line_and_how_to_get_more(tmp_path):
    shown = kcing(["--help"], clean_environ(), tmp_path)
    assert shown.returncode == 0 and shown.stderr == ""
    listed = re.findall(r"^  (\w+) +\S.*$", shown.stdout.split("Commands:")[1].split("\n\n")[0], re.M)
    assert listed == list(commands.NAMES)
    assert "kcing <command> --help" in shown.stdout
    assert "--source" not in shown.stdout  # options belong to each command's help


@pytest.mark.parametrize("name", ["feed_es", "gen_samples"])
def test_a_help_never_offers_kernelcis_retired_frontend_as_a_live_source(name):
    # `kcing feed_es --help` opened its examples with "kcing feed_es  # last 2 days of
    # kernelci.org into Logstash", which since 2024 ends saying that frontend was retired.
    text = " ".join(commands.load(name).USAGE.split())
    for mention in re.finditer(r"kernelci\.org", text):
        assert "retired" in text[mention.start():mention.start() + 40], text[mention.start() - 80:mention.end() + 40]


@pytest.mark.parametrize("name", commands.NAMES)
def test_a_commands_help_shows_its_usage_options_and_examples_only(name, tmp_path):
    shown = kcing([name, "--help"], clean_environ(), tmp_path)
    assert shown.returncode == 0 and shown.stderr == ""
    assert shown.stdout.startswith("Usage:\n  kcing %s" % name)
    assert "Examples:\n  " in shown.stdout and "Exit status:" in shown.stdout
    others = [other for other in commands.NAMES if other != name]
    assert not [other for other in others if re.search(r"^  kcing %s\b" % other, shown.stdout, re.M)]


def example_lines(name: str) -> List[str]:
    """The command lines of a command's Examples, without their comments."""
    examples = commands.load(name).USAGE.split("\nExamples:\n", 1)[1]
    return [line.split(" # ", 1)[0].strip() for line in examples.splitlines()
            if re.match(r"  (?:[A-Z_]+=\S+ )*kcing ", line)]


@pytest.mark.parametrize("name", commands.NAMES)
def test_every_example_of_a_commands_help_is_a_command_line_it_takes(name):
    """An example is what a user copies first: each names settings kcing has, and its options
    and arguments are ones the command's usage takes, together."""
    from kcing.settings import SPECS
    lines = example_lines(name)
    assert lines, name
    for line in lines:
        words = shlex.split(line.split(" | ", 1)[0])  # `kcing status --json | jq .objects`
        while "=" in words[0]:
            setting, value = words.pop(0).split("=", 1)
            assert setting in SPECS, line
            SPECS[setting].parse(value)  # a value the setting takes
        assert words[:2] == ["kcing", name], line
        assert cli.parse_command(name, words[2:]) is not None, line


@pytest.mark.parametrize("name", [name for name in commands.NAMES if name != "test"])
def test_every_option_listed_is_accepted_by_its_command_and_refused_by_the_others(name):
    # In-process: the parser is what decides, and a process per option would take minutes.
    known = cli.command_options(commands.load(name).USAGE)
    for option, takes_value in known.items():
        if option in ("-h", "--help"):
            continue
        argv = [option, "1"] if takes_value else [option]
        if option in ("--builds", "--lavas", "--boots"):
            argv.append("file.json")
        try:
            parsed = cli.parse_command(name, argv)
        except cli.UsageError:  # an option of the local-files form goes with its files
            parsed = cli.parse_command(name, [*argv, "--builds", "file.json"])
        assert parsed is not None, (name, argv)
    listed_elsewhere = set().union(*(options_of(other) for other in commands.NAMES if other not in (name, "test")))
    for option in sorted(listed_elsewhere - set(known)):
        with pytest.raises(cli.UsageError, match="unknown option %s" % re.escape(option)):
            cli.parse_command(name, [option, "1"])


def settings_read(name: str) -> str:
    text = commands.load(name).USAGE
    return " ".join(text.split("Settings read", 1)[1].split("\n\n", 1)[0].split()) if "Settings read" in text else ""


@pytest.mark.parametrize("name", [name for name in commands.NAMES if name != "test"])
def test_a_commands_help_lists_the_settings_it_reads(name):
    from kcing.settings import SPECS
    listed = settings_read(name)
    named = set(re.findall(r"\b(?:KCI|KCING|ES|LS|KB|DRP)_[A-Z_]*[A-Z]\b", listed))
    assert named and named <= set(SPECS), named - set(SPECS)
    # What the command's own module, and the client module it makes, read of the settings.
    modules = {"drp": ["admin/elastic.py"], "setup_es": ["admin/elastic.py"], "reconcile": ["admin/elastic.py"],
               "setup_ls": ["admin/logstash_setup.py"], "setup_kbn": ["commands/_kibana.py"],
               "backup_kbn": ["commands/_kibana.py"]}.get(name, [])
    read = set()
    for module in ["commands/%s.py" % name, *modules]:
        read |= set(re.findall(r"settings\.([A-Z][A-Z_]+)", (REPO / "kcing" / module).read_text()))
    assert not {setting for setting in read if setting not in named and not (
        setting.startswith("KCI_") and "KCI_*" in listed)}, read - named


@pytest.mark.parametrize("name", ["feed_es", "reconcile", "setup_kbn", "backup_kbn"])
def test_a_commands_help_says_it_reads_credentials_from_netrc(name):
    """Without LS_USER (or KB_USER), the Logstash inputs' (or Kibana's) credentials come from the
    ~/.netrc entry of their host: a help listing the settings alone left a user with a ~/.netrc
    unable to tell why kcing sent credentials that none of them names."""
    assert "the ~/.netrc entry of" in settings_read(name)


# Runs kcing's command line recording each setting the run reads, but for the reads that make
# the settings (kcing/settings.py, dataclasses) and the secrets cli.py hides in every log line.
READ_SETTINGS = r"""
import json, sys
from kcing import cli, settings
read, plain = set(), settings.Settings.__getattribute__

def recorded(self, name):
    if name in settings.SPECS and not sys._getframe(1).f_code.co_filename.endswith(
            ("dataclasses.py", "kcing/settings.py", "kcing/cli.py")):
        read.add(name)
    return plain(self, name)

settings.Settings.__getattribute__ = recorded
try:
    status = cli.main(sys.argv[1:])
finally:
    sys.stderr.write("\nread: %s\n" % json.dumps(sorted(read)))
sys.exit(status)
"""


@pytest.mark.parametrize("argv", [["status"], ["drp", "--dry-run"], ["drp"], ["reconcile", "--dry-run"],
                                  ["reconcile"]], ids=" ".join)
def test_a_command_reads_no_setting_its_help_leaves_out(argv, tmp_path, es):
    """What a run reads, not only what its module names: opening a ledger written before
    destinations were recorded reads the Logstash inputs, which it records as that ledger's."""
    env = samples_environ(tmp_path, ES_HOST=es.url)
    fed = kcing(["feed_es", "--source", "samples", "--output", "out"], env, tmp_path)
    assert fed.returncode == 0, fed.stderr
    ran = subprocess.run([sys.executable, "-c", READ_SETTINGS, *argv], env=dict(env, PYTHONPATH=str(REPO)), cwd=str(tmp_path),
                         capture_output=True, text=True, timeout=60)
    assert "Traceback" not in ran.stderr, ran.stderr
    read = set(json.loads(ran.stderr.rsplit("read: ", 1)[1]))
    named = set(re.findall(r"\b(?:KCI|KCING|ES|LS|KB|DRP)_[A-Z_]*[A-Z]\b", settings_read(argv[0])))
    assert "KCING_DB" in read and not read - named, read - named


@pytest.mark.parametrize("argv", [["setup_es", "--ilm", "--wait", "5"], ["setup_ls"], ["setup_kbn", "--wait", "5"],
                                  ["backup_kbn", "--wait", "5"]], ids=" ".join)
def test_an_admin_command_reads_no_setting_its_help_leaves_out(argv, tmp_path, es):
    """What a run reads, through the clients it makes, against the emulators (a Logstash home
    in `tmp_path`): the help's "Settings read" names each setting."""
    from tests.fakes.kibana_server import KibanaEmulator
    (tmp_path / "logstash" / "config").mkdir(parents=True)
    kibana_dir = tmp_path / "kibana"
    shutil.copytree(REPO / "kibana", kibana_dir, ignore=shutil.ignore_patterns("backups"))
    if argv[0].endswith("_kbn"):  # backup_kbn into a new directory: this Kibana holds no objects
        argv = [*argv, "--kibana-dir", str(kibana_dir if argv[0] == "setup_kbn" else tmp_path / "export")]
    with KibanaEmulator() as kibana:
        env = clean_environ(ES_HOST=es.url, KB_URL=kibana.url, LS_HOME=str(tmp_path / "logstash"))
        ran = subprocess.run([sys.executable, "-c", READ_SETTINGS, *argv], env=dict(env, PYTHONPATH=str(REPO)),
                             cwd=str(tmp_path), capture_output=True, text=True, timeout=60)
    assert ran.returncode == 0 and "Traceback" not in ran.stderr, ran.stderr
    read = set(json.loads(ran.stderr.rsplit("read: ", 1)[1]))
    named = set(re.findall(r"\b(?:KCI|KCING|ES|LS|KB|DRP)_[A-Z_]*[A-Z]\b", settings_read(argv[0])))
    assert read and not read - named, read - named


@pytest.mark.parametrize("argv", [["--output", "out"], [], ["--dry-run"]], ids=lambda argv: " ".join(argv) or "logstash")
def test_a_feed_reads_no_setting_its_help_leaves_out(argv, tmp_path, logstash):
    """The feed's reads go through its sinks and pipeline too: how much waits to be sent
    (ES_QUEUE_MAX_BYTES), how large an --output file grows (KCING_OUTPUT_MAX_BYTES)."""
    env = samples_environ(tmp_path, ES_BUILD=logstash.urls["build"], ES_LAVA=logstash.urls["lava"],
                          ES_BOOT=logstash.urls["boot"], ES_REGRESSION=logstash.urls["regression"])
    ran = subprocess.run([sys.executable, "-c", READ_SETTINGS, "feed_es", "--source", "samples", *argv],
                         env=dict(env, PYTHONPATH=str(REPO)), cwd=str(tmp_path), capture_output=True, text=True,
                         timeout=120)
    assert ran.returncode == 0 and "Traceback" not in ran.stderr, ran.stderr
    read = set(json.loads(ran.stderr.rsplit("read: ", 1)[1]))
    listed = settings_read("feed_es")
    named = set(re.findall(r"\b(?:KCI|KCING|ES|LS|KB|DRP)_[A-Z_]*[A-Z]\b", listed))
    unlisted = {setting for setting in read - named if not (setting.startswith("KCI_") and "KCI_*" in listed)}
    assert "KCING_DB" in read and not unlisted, unlisted


def option_entries(name: str) -> Dict[str, str]:
    """{'--days': its help text on one line} for each option a command's help lists."""
    options = commands.load(name).USAGE.split("\nOptions:\n", 1)[1].split("\n\n", 1)[0]
    entries = re.split(r"\n(?=  -)", options)
    return {re.findall(r"--[\w-]+", entry)[0]: " ".join(entry.split()) for entry in entries}


@pytest.mark.parametrize("name, flag", [("feed_es", "--how-many"), ("gen_samples", "--sample-size")])
def test_a_count_of_the_newest_objects_says_the_api_takes_them_within_its_window(name, flag, tmp_path):
    """`gen_samples --source api --sample-size 2` saved the newest 2 nodes of the last KCI_DAYS
    days, not of all the API holds, where the help said "instead of the last --days"."""
    assert "with --source api, the newest N of" in option_entries(name)[flag]
    assert "KCI_DAYS" in option_entries(name)[flag]


# Flags whose default is a setting's without setting it: each stands for one run only.
FLAG_DEFAULTS = {"--verify-delay": "ES_VERIFY_DELAY", "--wait": "ES_READY_TIMEOUT"}


@pytest.mark.parametrize("name", [name for name in commands.NAMES if name != "test"])
def test_a_setting_and_default_a_commands_help_names_for_an_option_are_the_ones_it_has(name):
    from kcing.settings import SPECS
    named = 0
    for flag, text in option_entries(name).items():
        for setting, default in re.findall(r"\(setting (\w+), default ([^):]+)", text):
            assert cli.FLAG_SETTINGS.get(flag, FLAG_DEFAULTS.get(flag)) == setting, (name, flag)
            assert SPECS[setting].parse(default) == SPECS[setting].default, (name, flag, default)
            named += 1
    assert named or name in ("setup_ls", "setup_kbn", "backup_kbn")


def test_feed_es_help_says_kci_days_starts_only_an_api_crawl_without_a_watermark():
    # The API source resumes from its watermark whatever KCI_DAYS says (docs/api-source.md: "how
    # far back the first run lists"); only --days itself lists the last N days instead.
    days = option_entries("feed_es")["--days"]
    assert "setting KCI_DAYS" in days and "--source api" in days
    assert "first run (no watermark yet)" in days and "instead of from the watermark" in days


def test_an_option_of_another_command_is_refused_by_the_program(tmp_path):
    refused = kcing(["status", "--source", "api"], clean_environ(), tmp_path)
    assert refused.returncode == 2 and refused.stdout == ""
    assert one_line(refused) == "kcing status: unknown option --source (see kcing status --help)"


@pytest.mark.parametrize("argv, message", [
    # One dash, as some tools take long options: read as -d then -r, it was "unknown option -r".
    (["feed_es", "-dry-run"], "kcing feed_es: unknown option -dry-run (did you mean --dry-run?)"),
    (["feed_es", "-days", "2"], "kcing feed_es: unknown option -days (did you mean --days?)"),
    (["status", "-db", "kcing.db"], "kcing status: unknown option -db (did you mean --db?)"),
    # -h first: the help was printed, exit 0, and the option meant left unsaid.
    (["gen_samples", "-how-many", "3"], "kcing gen_samples: unknown option -how-many (did you mean --sample-size?)"),
    # A letter that is no option among others that are: the group as typed, no option guessed.
    (["feed_es", "-dz"], "kcing feed_es: unknown option -dz"),
    # Another case, or the start of one option only, which difflib finds too far from it.
    (["status", "--JSON"], "kcing status: unknown option --JSON (did you mean --json?)"),
    (["drp", "--log", "drp.log"], "kcing drp: unknown option --log (did you mean --log-file?)"),
    # The start of two options (--sample-size, --samples-dir) is neither: none is guessed.
    (["gen_samples", "--samp", "5"], "kcing gen_samples: unknown option --samp"),
    # A value given with `=` is no part of the option's name.
    (["feed_es", "-days=2"], "kcing feed_es: unknown option -days (did you mean --days?)"),
])
def test_an_option_mistyped_otherwise_than_by_a_letter_names_the_option_meant(argv, message, tmp_path):
    refused = kcing(argv, clean_environ(), tmp_path)
    assert refused.returncode == 2 and refused.stdout == ""
    assert one_line(refused) == "%s (see kcing %s --help)" % (message, argv[0])


@pytest.mark.parametrize("name", ["feed_es", "reconcile", "gen_samples"])
def test_the_retention_days_of_another_command_are_not_taken_for_the_crawl_window(name, tmp_path):
    """`feed_es --drp-days 30` was answered "did you mean --days?": followed, it crawled 30 days."""
    refused = kcing([name, "--drp-days", "30"], clean_environ(), tmp_path)
    assert refused.returncode == 2 and refused.stdout == ""
    assert one_line(refused) == "kcing %s: unknown option --drp-days (an option of drp and setup_es) (see kcing %s " \
                                "--help)" % (name, name)
    # The other way round the guess holds: drp keeps days, and has one option for them.
    assert one_line(kcing(["drp", "--days", "30"], clean_environ(), tmp_path)) == \
        "kcing drp: unknown option --days (did you mean --drp-days?) (see kcing drp --help)"



@pytest.mark.parametrize("name", [name for name in commands.NAMES
                                  if "-q" in cli.command_options(commands.load(name).USAGE)])
def test_grouped_letters_every_one_an_option_are_taken_and_h_among_them_is_the_help(name):
    # Each letter of a group is checked before any acts: valid groups must still pass as they did.
    usage = commands.load(name).USAGE
    for argv in (["-dq"], ["-qd"], ["-ql", "x.log"], ["-dql", "x.log"], ["-l", "x.log", "-q"], ["-qlx.log"]):
        assert cli.check_tokens(name, usage, argv) is False, argv
    for argv in (["-dh"], ["-qh"], ["-hd"], ["-qdh"]):
        assert cli.check_tokens(name, usage, argv) is True, argv

def test_help_with_one_dash_is_the_help(tmp_path):
    shown = kcing(["feed_es", "-help"], clean_environ(), tmp_path)
    assert shown.returncode == 0 and shown.stdout == commands.load("feed_es").USAGE, shown.stderr


@pytest.mark.parametrize("how", [["kcing.py", "--help"], ["-m", "kcing", "status"]])
def test_a_python_without_kcings_dependencies_says_to_install_them_in_one_line(how, tmp_path):
    """`python3 kcing.py --help` in a fresh clone, before `make install` (the README's "python
    kcing.py"), ended with the traceback of `import docopt`. -S leaves the site-packages out."""
    done = subprocess.run([sys.executable, "-S", *how], cwd=str(REPO), env=clean_environ(), capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 2 and done.stdout == "", done.stderr
    assert done.stderr.splitlines() == [
        "kcing: the Python module docopt, which kcing needs, is not installed for %s: run `make install` in the "
        "clone, then .venv/bin/kcing (or `pip install -e .` into a Python 3.11 or later)" % sys.executable]



def test_a_module_of_kcings_own_missing_is_no_dependency_to_install(monkeypatch):
    # A broken clone (a module of kcing's deleted) shows its traceback: `make install` would not
    # bring the module back, and "the Python module kcing.cli is not installed" would say it does.
    from kcing import launch
    monkeypatch.setitem(sys.modules, "kcing.cli", None)
    with pytest.raises(ModuleNotFoundError):
        launch.cli_main()

def test_a_python_older_than_311_is_refused_in_one_line(monkeypatch, capsys):
    from kcing import launch
    monkeypatch.setattr(launch.sys, "version_info", (3, 9, 18))
    monkeypatch.setattr(launch.sys, "version", "3.9.18 (main)")
    assert launch.cli_main() == 2
    assert capsys.readouterr().err == ("kcing: kcing needs Python 3.11 or later, not 3.9.18: run `make install` in "
                                       "the clone, then .venv/bin/kcing (or `pip install -e .` into a Python 3.11 "
                                       "or later)\n")


# Usage errors in one line (3) -------------------------------------------------------------------

@pytest.mark.parametrize("typed, meant", [("feed-es", "feed_es"), ("setup-kbn", "setup_kbn"), ("Status", "status")])
def test_a_command_name_mistyped_says_which_was_meant(typed, meant, tmp_path):
    refused = kcing([typed], clean_environ(), tmp_path)
    assert refused.returncode == 2 and refused.stdout == ""
    assert one_line(refused) == "kcing: unknown command %r (did you mean %s?) (see kcing --help)" % (typed, meant)


@pytest.mark.parametrize("typed, meant", [
    ("setup_elastic", "setup_es"), ("setup-elasticsearch", "setup_es"), ("setup_logstash", "setup_ls"),
    ("backup_kibana", "backup_kbn"), ("feed", "feed_es"), ("recon", "reconcile"), ("gen", "gen_samples"),
    ("setup", "setup_es, setup_ls or setup_kbn"), ("help", "kcing --help, or kcing <command> --help"),
    ("version", "kcing --version"),
])
def test_a_command_named_by_its_service_or_its_start_suggests_the_commands_meant(typed, meant):
    """Not the nearest spelling (`setup_elastic` is nearer to setup_ls than to setup_es): the
    service's name in the command's words, or the commands a word begins."""
    from kcing.cli import unknown_command
    assert str(unknown_command(typed)) == "unknown command %r (did you mean %s?)" % (typed, meant)


@pytest.mark.parametrize("argv, message", [
    (["-l", "kcing.log"], "kcing: no command given (kcing -l kcing.log <command> ...) (see kcing --help)"),
    (["-d"], "kcing: no command given (kcing -d <command> ...) (see kcing --help)"),
    (["-d", "feed-es"], "kcing: unknown command 'feed-es' (did you mean feed_es?) (see kcing --help)"),
])
def test_log_options_before_no_command_or_an_unknown_one_say_what_is_wrong(argv, message, tmp_path):
    """Not "unknown option -l": every command takes -l and -d, before its name too."""
    refused = kcing(argv, clean_environ(), tmp_path)
    assert refused.returncode == 2 and refused.stdout == ""
    assert one_line(refused) == message


@pytest.mark.parametrize("argv, message", [
    (["feed_es", "--source", "samples", "--output", "--dry-run"],
     "kcing feed_es: --output needs a value, not the option --dry-run (see kcing feed_es --help)"),
    (["status", "--db", "--json"], "kcing status: --db needs a value, not the option --json (see kcing status --help)"),
    (["drp", "-l", "-d"], "kcing drp: -l needs a value, not the option -d (see kcing drp --help)"),
])
def test_an_option_given_where_a_value_belongs_is_refused(argv, message, tmp_path):
    """`--output --dry-run` once wrote into a directory named --dry-run, and not as a dry run."""
    refused = kcing(argv, samples_environ(tmp_path), tmp_path)
    assert refused.returncode == 2 and refused.stdout == ""
    assert one_line(refused) == message
    assert sorted(path.name for path in tmp_path.iterdir()) == []


@pytest.mark.parametrize("flag", ["--help", "-h"])
def test_help_before_a_commands_name_shows_that_commands_help(flag, tmp_path):
    shown = kcing([flag, "drp"], clean_environ(), tmp_path)
    assert shown.returncode == 0 and shown.stderr == ""
    assert shown.stdout == commands.load("drp").USAGE


@pytest.mark.parametrize("argv, message", [
    (["--version", "status"], "kcing: --version takes nothing after it (see kcing --help)"),
    (["--help", "feed"], "kcing: --help takes at most a command's name (%s): feed (see kcing --help)"
     % ", ".join(commands.NAMES)),
])
def test_global_options_given_more_say_what_they_take(argv, message, tmp_path):
    refused = kcing(argv, clean_environ(), tmp_path)
    assert refused.returncode == 2 and refused.stdout == ""
    assert one_line(refused) == message


@pytest.mark.parametrize("argv, message", [
    (["feed_es", "--frobnicate"], "kcing feed_es: unknown option --frobnicate (see kcing feed_es --help)"),
    # A typo in an option is answered as one in a command's name: with the option meant.
    (["feed_es", "--sorce", "api"],
     "kcing feed_es: unknown option --sorce (did you mean --source?) (see kcing feed_es --help)"),
    (["feed_es", "--how_many", "5"],
     "kcing feed_es: unknown option --how_many (did you mean --how-many?) (see kcing feed_es --help)"),
    (["drp", "--days", "5"], "kcing drp: unknown option --days (did you mean --drp-days?) (see kcing drp --help)"),
    # The days drp keeps, typed with an underscore, are no window of days to crawl either.
    (["feed_es", "--drp_days", "5"],
     "kcing feed_es: unknown option --drp_days (an option of drp and setup_es) (see kcing feed_es --help)"),
    # The newest N objects, as the other command names it.
    (["gen_samples", "--how-many", "5"],
     "kcing gen_samples: unknown option --how-many (did you mean --sample-size?) (see kcing gen_samples --help)"),
    (["feed_es", "--sample-size", "5"],
     "kcing feed_es: unknown option --sample-size (did you mean --how-many?) (see kcing feed_es --help)"),
    (["feed_es", "--days"], "kcing feed_es: --days needs a value (see kcing feed_es --help)"),
    (["feed_es", "--days", "1", "--how-many", "2"],
     "kcing feed_es: --days and --how-many do not go together (see kcing feed_es --help)"),
    (["feed_es", "--lavas"], "kcing feed_es: --lavas needs at least one file (see kcing feed_es --help)"),
    # "--date does not go with the other arguments given" left a user guessing which of them.
    (["feed_es", "--source", "samples", "--date", "2020-11-04"],
     "kcing feed_es: --date dates the files of --builds, --lavas or --boots only (a crawl's objects take upstream's "
     "listing date, samples their manifest's) (see kcing feed_es --help)"),
    (["feed_es", "--dry-run=yes"], "kcing feed_es: --dry-run takes no value (see kcing feed_es --help)"),
    (["status", "--json", "--json"], "kcing status: --json given twice (see kcing status --help)"),
    (["drp", "extra"], "kcing drp: unexpected argument 'extra' (see kcing drp --help)"),
    (["feed"], "kcing: unknown command 'feed' (did you mean feed_es?) (see kcing --help)"),
    ([], "kcing: no command given (see kcing --help)"),
    # An empty --output would read as none: the run would post to Logstash instead.
    (["feed_es", "--source", "samples", "--output", ""],
     "kcing feed_es: --output needs a value, not an empty one (see kcing feed_es --help)"),
    (["feed_es", "--output=", "--metrics", "m.prom"],
     "kcing feed_es: --output needs a value, not an empty one (see kcing feed_es --help)"),
    (["feed_es", "--metrics", " "], "kcing feed_es: --metrics needs a value, not an empty one (see kcing feed_es --help)"),
    (["status", "--db", ""], "kcing status: --db needs a value, not an empty one (see kcing status --help)"),
    # `--builds "$FILE"` with FILE unset: read as a name, it was the working directory.
    (["feed_es", "--builds", "build.json", "", "--date", "2020-11-04", "--output", "out"],
     "kcing feed_es: a <file> needs a name, not an empty one (see kcing feed_es --help)"),
    # `curl ... | kcing feed_es --lavas -`: `-` was read as a file name and rejected into the ledger.
    (["feed_es", "--lavas", "-", "--output", "out"],
     "kcing feed_es: a <file> named - is not read from standard input: save it to a file and name that (see kcing "
     "feed_es --help)"),
])
def test_usage_errors_are_one_line_and_exit_2(argv, message, tmp_path):
    refused = kcing(argv, clean_environ(), tmp_path)
    assert refused.returncode == 2
    assert refused.stdout == ""
    assert one_line(refused) == message


# Messages a person reads (4) --------------------------------------------------------------------

def test_a_bad_setting_or_flag_says_what_value_is_expected(tmp_path):
    env = clean_environ(KCING_DB=str(tmp_path / "kcing.db"))
    from_flag = kcing(["feed_es", "--source", "samples", "--threads", "many", "--dry-run"], env, tmp_path)
    assert from_flag.returncode == 2
    assert one_line(from_flag) == ("kcing feed_es: invalid KCI_THREADS='many' (from --threads): "
                                   "expected a whole number from 1 to 256")
    from_environment = kcing(["feed_es", "--dry-run"], dict(env, ES_TIMEOUT="soon"), tmp_path)
    assert from_environment.returncode == 2
    assert one_line(from_environment) == ("kcing feed_es: invalid ES_TIMEOUT='soon' (from environment): "
                                          "expected a number from 0.1 to 3600")
    assert not PYTHON_INTERNALS.search(from_flag.stderr + from_environment.stderr)


@pytest.mark.parametrize("args, environ, message", [
    (["drp", "--dry-run"], {"DRP_DAYS": "\u0663"},
     "kcing drp: invalid DRP_DAYS='\u0663' (from environment): expected a whole number from 1 to 36500, in the "
     "digits 0-9"),
    (["feed_es", "--source", "samples", "--dry-run"], {"ES_MAX_RETRIES": "\u0663"},
     "kcing feed_es: invalid ES_MAX_RETRIES='\u0663' (from environment): expected a whole number from 1 to 100, in "
     "the digits 0-9"),
    (["feed_es", "--source", "samples", "--days", "\u0662", "--dry-run"], {},
     "kcing feed_es: invalid KCI_DAYS='\u0662' (from --days): expected a whole number from 1 to 36500, in the "
     "digits 0-9"),
    (["feed_es", "--how-many", "\u0662", "--dry-run"], {"KCI_HOST": "127.0.0.1:9"},
     "kcing feed_es: --how-many expects a whole number in the digits 0-9, not '\u0662'"),
    (["backup_kbn", "--wait", "\u0662", "--dry-run"], {},
     "kcing backup_kbn: --wait expects seconds in the digits 0-9, not '\u0662'"),
    (["feed_es", "--source", "api", "--since", "\u0662\u0660\u0662\u0660-11-04", "--dry-run"],
     {"KCI_API_URL": "http://127.0.0.1:9"},
     "kcing feed_es: --since '\u0662\u0660\u0662\u0660-11-04' is not a date (try 2024-10-16 or '2024-10-16 08:00')"),
])
def test_a_number_written_in_other_digits_is_refused_naming_the_setting_or_flag(args, environ, message, tmp_path):
    """Python reads "\u0663" (Arabic-Indic three) as 3; no other tool does: a pasted mistake."""
    refused = kcing(args, dict(samples_environ(tmp_path), **environ), tmp_path)
    assert refused.returncode == 2, refused.stderr
    assert one_line(refused) == message
    assert not (tmp_path / "kcing.db").exists()


@pytest.mark.parametrize("args, environ, message", [
    (["feed_es", "--source", "api", "--days", "1_0", "--dry-run"], {"KCI_API_URL": "http://127.0.0.1:9"},
     "kcing feed_es: invalid KCI_DAYS='1_0' (from --days): expected a whole number from 1 to 36500"),
    (["drp", "--dry-run"], {"DRP_DAYS": "+3"},
     "kcing drp: invalid DRP_DAYS='+3' (from environment): expected a whole number from 1 to 36500"),
    (["feed_es", "--threads", "1_6", "--dry-run"], {},
     "kcing feed_es: invalid KCI_THREADS='1_6' (from --threads): expected a whole number from 1 to 256"),
    (["feed_es", "--how-many", "+3", "--dry-run"], {"KCI_HOST": "127.0.0.1:9"},
     "kcing feed_es: --how-many expects a whole number, not '+3'"),
    (["gen_samples", "--sample-size", "1_0"], {"KCI_HOST": "127.0.0.1:9"},
     "kcing gen_samples: --sample-size expects a whole number, not '1_0'"),
    (["backup_kbn", "--wait", "1_0", "--dry-run"], {}, "kcing backup_kbn: --wait expects seconds, not '1_0'"),
    (["feed_es", "--dry-run"], {"ES_LOAD_INTERVAL": "+1"},
     "kcing feed_es: invalid ES_LOAD_INTERVAL='+1' (from environment): expected a number from 0 to 3600"),
    (["feed_es", "--dry-run"], {"ES_TIMEOUT": "6_0"},
     "kcing feed_es: invalid ES_TIMEOUT='6_0' (from environment): expected a number from 0.1 to 3600"),
], ids=["days", "DRP_DAYS", "threads", "how many", "sample size", "wait", "ES_LOAD_INTERVAL", "ES_TIMEOUT"])
def test_a_number_spelt_as_only_python_reads_one_is_refused_naming_the_setting_or_flag(args, environ, message,
                                                                                      tmp_path):
    """int() and float() read "1_0" as 10 and "+3" as 3; no tool that writes a cron line or a
    setting means that number by them, so the run is refused before it starts."""
    refused = kcing(args, dict(samples_environ(tmp_path), **environ), tmp_path)
    assert refused.returncode == 2, refused.stderr
    assert one_line(refused) == message
    assert not PYTHON_INTERNALS.search(refused.stderr)
    assert not (tmp_path / "kcing.db").exists()


def test_a_misspelt_setting_is_warned_of_and_the_run_goes_on(tmp_path):
    """ES_HOTS=... once left ES_HOST at its default without a word; a lower-case name in
    local_settings.py too."""
    (tmp_path / "local_settings.py").write_text("kb_space = 'team-a'\n")
    shown = kcing(["setup_kbn", "--dry-run"], clean_environ(KB_URLL="http://127.0.0.1:5601"), tmp_path)
    assert shown.returncode == 0, shown.stderr
    warnings = [line.split(" kcing.settings: ", 1)[1] for line in shown.stderr.splitlines()]
    assert warnings == [
        "local_settings.py: kb_space is not a kcing setting and is ignored (setting names are upper-case: KB_SPACE)",
        "environment variable KB_URLL is not a kcing setting and is ignored (did you mean KB_URL?)"]
    assert "http://localhost:5601" in shown.stdout


@pytest.mark.parametrize("argv", [
    ["feed_es", "--source", "samples", "--samples-dir", "afile", "--output", "out"],
    ["setup_kbn", "--kibana-dir", "afile", "--dry-run"],
])
def test_a_file_where_a_directory_belongs_is_said_in_words(argv, tmp_path):
    (tmp_path / "afile").write_text("")
    refused = kcing(argv, clean_environ(), tmp_path)
    assert refused.returncode == 2
    line = one_line(refused)
    assert line.endswith("afile/%s: Not a directory" % ("manifest.json" if argv[0] == "feed_es" else "saved_objects.ndjson"))
    assert "Errno" not in line


@pytest.mark.parametrize("argv, settings, message", [
    # Once 2 GB and minutes of CPU making threads, deaf to SIGTERM.
    (["feed_es", "--threads", "99999999999999999999", "--dry-run"], {},
     "invalid KCI_THREADS='99999999999999999999' (from --threads): expected a whole number from 1 to 256"),
    # Once OverflowError (exit 70) from a socket timeout or a date so many days ago.
    (["feed_es", "--dry-run"], {"ES_TIMEOUT": "1e10"},
     "invalid ES_TIMEOUT='1e10' (from environment): expected a number from 0.1 to 3600"),
    (["feed_es", "--dry-run"], {"KCI_TIMEOUT": "1e10"},
     "invalid KCI_TIMEOUT='1e10' (from environment): expected a number from 0.1 to 3600"),
    (["reconcile", "--days", "99999999999"], {},
     "invalid KCI_DAYS='99999999999' (from --days): expected a whole number from 1 to 36500"),
    (["feed_es", "--source", "api", "--days", "99999999"], {},
     "invalid KCI_DAYS='99999999' (from --days): expected a whole number from 1 to 36500"),
    (["drp", "--drp-days", "99999999999", "--dry-run"], {},
     "invalid DRP_DAYS='99999999999' (from --drp-days): expected a whole number from 1 to 36500"),
    (["feed_es", "--workers", "100000", "--dry-run"], {},
     "invalid KCING_WORKERS='100000' (from --workers): expected auto, or a whole number from 0 to 256"),
    (["feed_es", "--batch-size", "1" + "0" * 5000, "--dry-run"], {},
     "invalid LS_PIPELINE_BATCH_SIZE='1%s... (5003 characters) (from --batch-size): expected a whole number "
     "from 1 to 100000" % ("0" * 78)),
    (["feed_es", "--dry-run"], {"KCING_DB_LOCK_WAIT": "1e10"},
     "invalid KCING_DB_LOCK_WAIT='1e10' (from environment): expected a number from 0 to 86400"),
    (["feed_es", "--dry-run"], {"KCI_MAX_OBJECT_BYTES": "99999999999999"},
     "invalid KCI_MAX_OBJECT_BYTES='99999999999999' (from environment): expected a whole number from 1024 to "
     "1000000000"),
    (["feed_es", "--how-many", "99999999999999999999999", "--dry-run"], {},
     "--how-many must be a whole number from 1 to 1000000000"),
    (["feed_es", "--verify", "--verify-delay", "1e10"], {}, "--verify-delay must be from 0 to 86400 seconds"),
    (["setup_es", "--wait", "inf"], {}, "--wait must be from 0 to 86400 seconds"),
], ids=["threads", "ES_TIMEOUT", "KCI_TIMEOUT", "reconcile days", "api days", "drp days", "workers", "batch size",
        "lock wait", "object bytes", "how many", "verify delay", "wait"])
def test_a_number_beyond_its_range_is_refused_at_start_naming_the_range(tmp_path, argv, settings, message):
    refused = kcing(argv, samples_environ(tmp_path, **settings), tmp_path, timeout=60)
    assert refused.returncode == 2, refused.stderr
    assert one_line(refused) == "kcing %s: %s" % (argv[0], message)
    assert not PYTHON_INTERNALS.search(refused.stderr)


@pytest.mark.parametrize("setting, value", [
    ("ES_BUILD", "http://127.0.0.1:99999"),
    ("ES_LAVA", "http://127.0.0.1:abc"),
    ("KCI_API_STORAGE_URL", "http://127.0.0.1:99999"),
    ("KCI_HOST", "127.0.0.1:0"),
    ("ES_HOST", "http://127.0.0.1\\@127.0.0.2:9200"),
])
def test_a_url_setting_no_connection_can_use_is_refused_before_the_run(tmp_path, setting, value):
    """Not later, as a connection failure or (for an upstream URL) as nodes refused as another origin."""
    refused = kcing(["feed_es"], samples_environ(tmp_path, **{setting: value}), tmp_path)
    assert refused.returncode == 2
    line = one_line(refused)
    assert line.startswith("kcing feed_es: invalid %s=" % setting) and "(from environment)" in line, line
    assert not PYTHON_INTERNALS.search(refused.stderr)
    assert not (tmp_path / "kcing.db").exists()


@pytest.mark.parametrize("command, setting, value, hint", [
    ("drp", "ES_HOST", "localhost:9200", "give its scheme, e.g. http://localhost:9200"),
    ("feed_es", "ES_BUILD", "8337", "a port alone names no host; give the whole URL, e.g. http://localhost:8337"),
    ("feed_es", "ES_LAVA", "http://ls1:8338,ls2:8338", "give its scheme, e.g. http://ls2:8338"),
    ("setup_kbn", "KB_URL", "kibana.example/kibana", "give its scheme, e.g. http://kibana.example/kibana"),
])
def test_a_url_setting_given_without_its_scheme_says_what_it_lacks(command, setting, value, hint, tmp_path):
    """`localhost:9200` is read as the scheme `localhost`: "is not an http(s) URL" alone left a
    person looking at a host and port that are right."""
    refused = kcing([command], samples_environ(tmp_path, **{setting: value}), tmp_path)
    assert refused.returncode == 2
    given = value.split(",")[-1]
    assert one_line(refused) == "kcing %s: invalid %s=%r (from environment): %r is not an http(s) URL: %s" % (
        command, setting, value, given, hint)


@pytest.mark.parametrize("value", ["0", "65536", "99999", "9" * 200, "\uff18\uff13\uff13\uff17", "\u00b2"])
def test_a_number_that_is_no_port_is_not_offered_as_one(tmp_path, value):
    # "give the whole URL, e.g. http://localhost:99999" offered a URL refused in its turn, and of
    # a long number pasted quoted all of it again after the cut value.
    refused = kcing(["feed_es"], samples_environ(tmp_path, ES_BUILD=value), tmp_path)
    assert refused.returncode == 2
    line = one_line(refused)
    assert line.endswith(" is not an http(s) URL"), line
    assert "localhost" not in line and len(line) < 250, line


def test_a_long_bad_url_is_quoted_once_and_cut(tmp_path):
    # A value pasted into ES_HOST with the rest of a line: the error quotes its start, once.
    value = "es.example:9200 " + "x" * 2000
    refused = kcing(["drp"], samples_environ(tmp_path, ES_HOST=value), tmp_path)
    assert refused.returncode == 2
    assert one_line(refused) == "kcing drp: invalid ES_HOST=%s... (%d characters) (from environment): it is not an " \
                                "http(s) URL" % (repr(value)[:80], len(repr(value)))


def test_unreachable_services_are_named_without_python_reprs(tmp_path):
    with refusing_port() as port:
        url = "http://127.0.0.1:%d" % port
        env = samples_environ(tmp_path, ES_BUILD=url, ES_LAVA=url, ES_BOOT=url, ES_MAX_RETRIES="1", ES_HOST=url,
                              KB_URL=url)
        fed = kcing(["feed_es", "--source", "samples"], env, tmp_path)
        es = kcing(["setup_es", "--wait", "0"], env, tmp_path)
        kibana = kcing(["backup_kbn", "--wait", "0"], env, tmp_path)
    assert fed.returncode == 3
    assert fed.stderr.strip().splitlines()[-1] == (
        "kcing feed_es: Logstash unreachable: lava input (ES_LAVA) failed its only attempt (last: cannot connect to "
        "%s (connection refused))" % url)
    assert es.returncode == kibana.returncode == 3
    assert es.stderr.strip().splitlines()[-1].endswith("cannot reach Elasticsearch at %s: connection refused" % url)
    assert "connection refused" in kibana.stderr.strip().splitlines()[-1]
    for result in (fed, es, kibana):
        assert not PYTHON_INTERNALS.search(result.stdout + result.stderr), result.stderr


def test_log_lines_and_status_times_carry_their_zone(tmp_path):
    env = samples_environ(tmp_path)
    fed = kcing(["feed_es", "--source", "samples", "--output", str(tmp_path / "out")], env, tmp_path)
    assert fed.returncode == 0, fed.stderr
    log_lines = fed.stderr.strip().splitlines()
    assert log_lines and all(re.match(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z ", line) for line in log_lines)
    status = kcing(["status"], env, tmp_path)
    run_line = next(line for line in status.stdout.splitlines() if line.strip().startswith("feed_es"))
    assert re.search(r"\d\d:\d\d:\d\d UTC -> \S+ \d\d:\d\d:\d\d UTC", run_line), run_line


# Waiting commands (5) ---------------------------------------------------------------------------

@pytest.mark.parametrize("command, service", [("setup_es", "Elasticsearch"), ("backup_kbn", "Kibana")])
def test_waiting_prints_one_line_then_a_countdown_at_most_every_interval(command, service, tmp_path):
    with refusing_port() as port:
        url = "http://127.0.0.1:%d" % port
        waited = kcing([command, "--wait", "7"], clean_environ(ES_HOST=url, KB_URL=url, KCING_PROGRESS_EVERY="3"),
                       tmp_path, timeout=60)
    assert waited.returncode == 3
    lines = waited.stderr.strip().splitlines()
    started = [line for line in lines if "waiting up to 7s for %s at %s" % (service, url) in line]
    countdown = [line for line in lines if "still waiting for %s" % service in line]
    assert len(started) == 1, waited.stderr
    assert 1 <= len(countdown) <= 2, waited.stderr  # 7 s: one at 3 to 4 s, maybe one at 6 s (and none per poll)
    assert re.search(r"still waiting for %s at \S+ to be ready: \d+s left" % service, countdown[0])
    assert len(lines) == len(started) + len(countdown) + 1  # and the final error


# No silent success (6) --------------------------------------------------------------------------

def test_reconcile_of_a_ledger_with_nothing_sent_to_logstash_exits_6(tmp_path, es):
    env = samples_environ(tmp_path, ES_HOST=es.url)
    assert kcing(["feed_es", "--source", "samples", "--output", str(tmp_path / "out")], env, tmp_path).returncode == 0
    checked = kcing(["reconcile"], env, tmp_path)
    assert checked.returncode == 6
    assert one_line(checked).startswith("kcing reconcile: nothing to check: no object was delivered to Logstash "
                                        "since ")
    assert "(objects written with --output are not in Elasticsearch)" in checked.stderr


@pytest.mark.parametrize("flag", ["--how-many", "--days"])
def test_crawl_window_flags_are_refused_with_the_samples_source(flag, tmp_path):
    env = clean_environ(KCING_DB=str(tmp_path / "kcing.db"))
    refused = kcing(["feed_es", "--source", "samples", flag, "3", "--output", str(tmp_path / "out")], env, tmp_path)
    assert refused.returncode == 2
    assert one_line(refused) == ("kcing feed_es: %s does not apply to --source samples, which replays the whole "
                                 "samples directory" % flag)
    assert not (tmp_path / "out").exists() and not (tmp_path / "kcing.db").exists()


def test_a_verify_delay_without_verify_is_refused_not_ignored(tmp_path):
    env = clean_environ(KCING_DB=str(tmp_path / "kcing.db"))
    refused = kcing(["feed_es", "--source", "samples", "--verify-delay", "60", "--output", str(tmp_path / "out")],
                    env, tmp_path)
    assert refused.returncode == 2
    assert one_line(refused) == "kcing feed_es: --verify-delay is how long --verify waits; it does nothing without --verify"
    assert not (tmp_path / "out").exists() and not (tmp_path / "kcing.db").exists()


def test_verify_with_dry_run_is_refused_not_ignored(tmp_path):
    env = samples_environ(tmp_path)
    refused = kcing(["feed_es", "--source", "samples", "--dry-run", "--verify"], env, tmp_path)
    assert refused.returncode == 2
    assert one_line(refused) == "kcing feed_es: --verify checks what a run delivered; a --dry-run delivers nothing"
    assert not (tmp_path / "kcing.db").exists()


def test_a_dry_run_with_metrics_says_it_leaves_the_metrics_file_as_it_is(tmp_path):
    metrics = tmp_path / "kcing.prom"
    metrics.write_text("# the last real run's metrics\n")
    env = samples_environ(tmp_path)
    tried = kcing(["feed_es", "--source", "samples", "--dry-run", "--metrics", str(metrics)], env, tmp_path)
    assert tried.returncode == 0, tried.stderr
    assert "a --dry-run writes no metrics: %s is left as it is" % metrics in tried.stderr
    assert metrics.read_text() == "# the last real run's metrics\n"


@pytest.mark.parametrize("argv, source", [([], "legacy"), (["--source", "api"], "api")], ids=["default", "api"])
def test_feed_es_refuses_a_samples_dir_for_a_source_that_reads_none(argv, source, tmp_path):
    """`kcing feed_es --samples-dir DIR` without --source samples crawled kernelci.org and posted
    to Logstash, the directory never read."""
    refused = kcing(["feed_es", *argv, "--samples-dir", str(SAMPLES), "--dry-run"],
                    clean_environ(KCING_DB=str(tmp_path / "kcing.db"), KCI_HOST="127.0.0.1:%d" % closed_port(),
                                  KCI_SCHEME="http"), tmp_path)
    assert refused.returncode == 2
    assert one_line(refused) == ("kcing feed_es: --samples-dir names the directory --source samples replays; the "
                                 "source here is %s (add --source samples to replay it)" % source)
    chosen = kcing(["feed_es", "--samples-dir", str(SAMPLES), "--dry-run"], samples_environ(tmp_path, KCI_SOURCE="samples"),
                   tmp_path)
    assert chosen.returncode == 0, chosen.stderr


def test_setup_es_refuses_drp_days_without_ilm_which_alone_reads_it(tmp_path):
    refused = kcing(["setup_es", "--drp-days", "30"], clean_environ(ES_HOST="http://127.0.0.1:%d" % closed_port()),
                    tmp_path)
    assert refused.returncode == 2
    assert one_line(refused) == ("kcing setup_es: --drp-days sets the days the --ilm policy keeps; it does nothing "
                                 "without --ilm")


def test_a_bad_space_flag_is_named_as_the_flag(tmp_path):
    refused = kcing(["setup_kbn", "--space", "Team A", "--dry-run"], clean_environ(), tmp_path)
    assert refused.returncode == 2
    assert one_line(refused) == ("kcing setup_kbn: invalid --space 'Team A': a Kibana space id takes lowercase "
                                 "letters, digits, '_' and '-'")


@pytest.mark.parametrize("argv, message", [
    (["status"], "kcing status: no ledger at {db}: directory {dir} does not exist (check KCING_DB or --db)"),
    (["reconcile"], "kcing reconcile: no ledger at {db}: directory {dir} does not exist (check KCING_DB or --db)"),
    (["feed_es", "--source", "samples", "--output", "out"],
     "kcing feed_es: KCING_DB {db}: directory {dir} does not exist; create it or point KCING_DB (or --db) elsewhere"),
    # A dry run tries out the cron line: it once listed everything as "would be fetched", as if
    # the ledger were new, where the run itself is refused.
    (["feed_es", "--source", "samples", "--dry-run"],
     "kcing feed_es: KCING_DB {db}: directory {dir} does not exist; create it or point KCING_DB (or --db) elsewhere"),
    (["feed_es", "--source", "samples", "--output", "out", "--dry-run"],
     "kcing feed_es: KCING_DB {db}: directory {dir} does not exist; create it or point KCING_DB (or --db) elsewhere"),
])
def test_a_ledger_in_a_directory_that_does_not_exist_is_said_so(argv, message, tmp_path):
    """Not "run `kcing feed_es` first", which would fail too, nor a word about a lock file."""
    db = tmp_path / "gone" / "kcing.db"
    refused = kcing(argv, dict(samples_environ(tmp_path), KCING_DB=str(db)), tmp_path)
    assert refused.returncode == 2
    assert one_line(refused) == message.format(db=db, dir=db.parent)
    assert not db.parent.exists()


@pytest.mark.parametrize("dry_run", [[], ["--dry-run"]], ids=["run", "dry-run"])
def test_an_output_that_is_a_file_is_said_to_be_no_directory(dry_run, tmp_path):
    # The run said "cannot create output directory out.ndjson: File exists", its dry run that the
    # output directory was not a directory: a user naming the file to write must read the latter.
    (tmp_path / "out.ndjson").write_text("")
    refused = kcing(["feed_es", "--source", "samples", "--output", "out.ndjson", *dry_run],
                    samples_environ(tmp_path), tmp_path)
    assert refused.returncode == 2
    assert one_line(refused) == ("kcing feed_es: --output out.ndjson is not a directory: name a directory for the "
                                 "NDJSON files")
    assert (tmp_path / "out.ndjson").read_text() == ""


@pytest.mark.parametrize("command", ["status", "reconcile"])
def test_no_ledger_in_the_working_directory_says_where_it_looked_and_that_it_may_be_elsewhere(command, tmp_path):
    # `kcing status` typed in one's home, where cron's feed runs in /srv/kcing with the default
    # KCING_DB (kcing.db): "no ledger at kcing.db yet: run `kcing feed_es` first" led a user to
    # start a second ledger there, and a feed sending everything again.
    elsewhere = tmp_path / "home"
    elsewhere.mkdir()
    refused = kcing([command], clean_environ(), elsewhere)
    assert refused.returncode == 2
    assert one_line(refused) == (
        "kcing %s: no ledger at %s yet (KCING_DB kcing.db is relative to the working directory): run this where "
        "feed_es runs, pass --db, or run `kcing feed_es` first" % (command, elsewhere / "kcing.db"))
    assert list(elsewhere.iterdir()) == []


@pytest.mark.parametrize("command", ["status", "reconcile"])
def test_no_ledger_at_a_db_flag_names_the_flag_and_does_not_say_to_pass_it(command, tmp_path):
    # `kcing status --db state.db` said "KCING_DB state.db is relative ...: ..., pass --db, ...",
    # naming a setting the user did not give and telling them to pass the flag they had passed.
    elsewhere = tmp_path / "home"
    elsewhere.mkdir()
    relative = kcing([command, "--db", "state.db"], clean_environ(), elsewhere)
    assert relative.returncode == 2
    assert one_line(relative) == (
        "kcing %s: no ledger at %s yet (--db state.db is relative to the working directory): run this where "
        "feed_es runs, give --db the ledger's absolute path, or run `kcing feed_es` first"
        % (command, elsewhere / "state.db"))
    absolute = kcing([command, "--db", str(elsewhere / "state.db")], clean_environ(), elsewhere)
    assert absolute.returncode == 2
    assert one_line(absolute) == "kcing %s: no ledger at %s yet: run `kcing feed_es` first (or check --db)" % (
        command, elsewhere / "state.db")
    assert list(elsewhere.iterdir()) == []


@pytest.mark.parametrize("argv", [["feed_es", "--source", "samples", "--dry-run"], ["status"], ["drp", "--dry-run"]],
                         ids=lambda argv: argv[0])
def test_a_file_where_the_ledgers_directory_should_be_is_not_said_missing(argv, tmp_path):
    (tmp_path / "state").write_text("a file, not a directory\n")
    db = tmp_path / "state" / "kcing.db"
    refused = kcing(argv, dict(samples_environ(tmp_path), KCING_DB=str(db)), tmp_path)
    assert refused.returncode == 2
    assert "directory %s is not a directory" % db.parent in one_line(refused), refused.stderr
    assert "does not exist" not in refused.stderr


def test_a_dry_run_takes_the_ledger_in_the_output_directory_the_run_would_make(tmp_path):
    """`--output DIR --db DIR/kcing.db` (what `make demo` runs): the run makes DIR, so its dry
    run, which makes nothing, may not refuse the ledger's directory for being missing."""
    for output, db in (("demo", "demo/kcing.db"), ("a/b/out", "a/kcing.db")):
        tried = kcing(["feed_es", "--source", "samples", "--output", output, "--db", db, "--dry-run"],
                      samples_environ(tmp_path), tmp_path)
        assert tried.returncode == 0, tried.stderr
        assert tried.stdout.splitlines()[-1] == "dry run: listed 11, 0 already delivered, 11 would be fetched"
    assert sorted(path.name for path in tmp_path.iterdir()) == []


def test_metrics_in_a_directory_that_is_a_file_is_not_said_missing(tmp_path):
    (tmp_path / "textfile").write_text("a file\n")
    refused = kcing(["feed_es", "--source", "samples", "--dry-run", "--metrics", "textfile/kcing.prom"],
                    samples_environ(tmp_path), tmp_path)
    assert refused.returncode == 2
    assert one_line(refused) == "kcing feed_es: --metrics textfile/kcing.prom: directory %s is not a directory" \
        % (tmp_path / "textfile")


def test_a_leading_tilde_in_a_path_setting_or_option_is_the_home_directory(tmp_path):
    """Cron expands no `~` in its `KCING_DB=~/kcing.db` lines, its sh none after `--output=`, and
    Python none in local_settings.py. The ledger's directory was checked with it expanded and
    the ledger then opened without: `cannot create the lock file ~/kcing.db.lock`, exit 2."""
    home, cron = tmp_path / "home", tmp_path / "cron"
    home.mkdir()
    cron.mkdir()
    shutil.copytree(SAMPLES, home / "samples")
    (cron / "local_settings.py").write_text('KCI_SAMPLES_DIR = "~/samples"\n')
    env = clean_environ(HOME=str(home), KCING_DB="~/kcing.db")
    fed = kcing(["feed_es", "--source", "samples", "--output=~/out", "--metrics=~/kcing.prom",
                 "--log-file=~/feed.log"], env, cron)
    assert fed.returncode == 0, fed.stdout + fed.stderr
    assert (home / "kcing.db").is_file() and sorted(path.name for path in (home / "out").iterdir()) == \
        ["boot.ndjson", "build.ndjson", "lava.ndjson", "ndjson.lock"]
    assert (home / "kcing.prom").is_file() and "run finished" in (home / "feed.log").read_text()
    assert sorted(path.name for path in cron.iterdir()) == ["local_settings.py"]
    for shown in (kcing(["status"], env, cron), kcing(["status", "--db=~/kcing.db"], clean_environ(HOME=str(home)), cron)):
        assert shown.returncode == 0, shown.stderr
        assert shown.stdout.splitlines()[0] == "ledger: %s" % (home / "kcing.db")
        assert "ndjson %s" % (home / "out") in shown.stdout
    (home / "logstash" / "config").mkdir(parents=True)
    planned = kcing(["setup_ls", "--dry-run"], clean_environ(HOME=str(home), LS_HOME="~/logstash",
                                                             LS_PATH_CONFIG="~/kcing.conf"), cron)
    assert planned.returncode == 0, planned.stderr
    assert planned.stdout.startswith("# setup_ls dry run: %s " % (home / "logstash" / "config" / "pipelines.yml"))
    assert "  path.config: %s\n" % (home / "kcing.conf") in planned.stdout


@pytest.mark.parametrize("given", [["feed_es", "--output=~nosuchuser/out"], ["feed_es", "--metrics=~nosuchuser/k.prom"],
                                   ["status", "--db=~nosuchuser/kcing.db"], ["status", "--log-file=~nosuchuser/k.log"]])
def test_a_leading_tilde_naming_no_user_is_a_usage_error(given, tmp_path):
    """`~nosuchuser/out` (a typo, or an account of another host) is left as it is by a shell and
    by os.path.expanduser: the run made a directory `~nosuchuser` in the working directory, then
    pathlib, asked to expand it again for the lock, raised (internal error, exit 70)."""
    refused = kcing(given + ["--source", "samples"] * (given[0] == "feed_es"), samples_environ(tmp_path), tmp_path)
    assert refused.returncode == 2, refused.stderr
    assert "~nosuchuser names no user of this host" in one_line(refused)
    assert not (tmp_path / "~nosuchuser").exists()
    by_setting = kcing(["status"], clean_environ(KCING_DB="~nosuchuser/kcing.db"), tmp_path)
    assert by_setting.returncode == 2
    assert one_line(by_setting) == ("kcing status: invalid KCING_DB='~nosuchuser/kcing.db' (from environment): "
                                    "~nosuchuser names no user of this host, so no home directory")


@pytest.mark.parametrize("command", ["status", "reconcile"])
def test_the_last_line_stays_one_line_whatever_file_name_it_quotes(command, tmp_path):
    """A file name may hold a newline or an escape sequence (`--db $'a\\nb'`): the message quoting
    it came out on two lines, the second of which a cron mail or a log reader took for another."""
    refused = kcing([command, "--db", "led\nger\x1b[2J.db"], clean_environ(), tmp_path)
    assert refused.returncode == 2
    assert one_line(refused).startswith("kcing %s: no ledger at %s yet" % (command, tmp_path / "led\\nger\\x1b[2J.db"))
    # The characters other than the ASCII controls that readers take for a line's end, and DEL.
    refused = kcing([command, "--db", "a\u2028b\u2029c\x85d\x7f.db"], clean_environ(), tmp_path)
    assert one_line(refused).startswith("kcing %s: no ledger at %s yet" % (command,
                                                                         tmp_path / "a\\u2028b\\u2029c\\x85d\\x7f.db"))


def test_a_usage_error_quoting_an_option_stays_one_line(tmp_path):
    refused = kcing(["status", "--bo\ngus\x1b[2J"], clean_environ(), tmp_path)
    assert refused.returncode == 2
    assert one_line(refused) == "kcing status: unknown option --bo\\ngus\\x1b[2J (see kcing status --help)"


def test_a_run_refused_because_another_holds_the_lock_leaves_no_output_directory(tmp_path):
    db = tmp_path / "kcing.db"
    (tmp_path / "kcing.db.lock").write_text("")
    with open(str(tmp_path / "kcing.db.lock")) as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        refused = kcing(["feed_es", "--source", "samples", "--output", "out/today"], samples_environ(tmp_path), tmp_path)
    assert refused.returncode == 4
    assert "another kcing run" in one_line(refused)
    assert not (tmp_path / "out").exists() and not db.exists()


def test_a_run_refused_because_another_writes_into_its_output_directory_makes_no_ledger(tmp_path):
    """Two runs with their own ledgers and one --output directory: the second exits 4 and writes
    nothing, not even a new ledger (with the lock beside it) of a run that never began."""
    out = tmp_path / "out"
    out.mkdir()
    (out / "ndjson.lock").write_text("")
    with open(str(out / "ndjson.lock")) as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        refused = kcing(["feed_es", "--source", "samples", "--output", str(out)], samples_environ(tmp_path), tmp_path)
    assert refused.returncode == 4, refused.stderr
    assert one_line(refused) == ("kcing feed_es: another kcing run (pid unknown) is using %s; try again when it ends"
                                 % (out / "ndjson.lock"))
    assert sorted(path.name for path in tmp_path.iterdir()) == ["out"]
    assert sorted(path.name for path in out.iterdir()) == ["ndjson.lock"]


@pytest.mark.parametrize("command", ["status", "feed_es"])
def test_a_working_directory_that_is_gone_is_said_not_taken_for_one_without_local_settings(command, tmp_path):
    """A deploy replaced the directory a shell, or a cron line's `cd`, was in: its
    local_settings.py read as absent, and the run went on with the defaults (status: internal
    error, exit 70, where the default ledger's path could not be made absolute)."""
    release = tmp_path / "release"
    release.mkdir()
    (release / "local_settings.py").write_text("ES_BUILD = 'http://ls.example:8337'\n")
    argv = {"status": ["status"],
            "feed_es": ["feed_es", "--source", "samples", "--samples-dir", str(SAMPLES), "--output",
                        str(tmp_path / "out"), "--db", str(tmp_path / "kcing.db")]}[command]
    ran = subprocess.run(["sh", "-c", 'cd "$1" && rm -r "$1" && shift && exec "$@"', "sh", str(release),
                          sys.executable, str(REPO / "kcing.py"), *argv],
                         env=clean_environ(), cwd=str(tmp_path), capture_output=True, text=True, timeout=60)
    assert ran.returncode == 2, ran.stdout + ran.stderr
    assert one_line(ran) == ("kcing %s: cannot look for local_settings.py: the working directory is gone (removed, "
                             "or replaced by a new one of its name); change into it again" % command)
    assert sorted(path.name for path in tmp_path.iterdir()) == []


def test_a_since_that_is_no_date_is_said_before_a_missing_ledger(tmp_path):
    """Said after it, the mistake in the cron line came to light only once a ledger was there."""
    refused = kcing(["reconcile", "--since", "2024-13-45"], samples_environ(tmp_path), tmp_path)
    assert refused.returncode == 2
    assert one_line(refused) == "kcing reconcile: --since '2024-13-45' is not a date (try 2024-10-16 or '2024-10-16 08:00')"


def test_the_readme_s_first_command_keeps_its_ledger_in_the_output_directory_it_makes(tmp_path):
    # `make demo`: `kcing feed_es --source samples --output demo-output --db demo-output/kcing.db`
    # on a fresh checkout, where demo-output does not exist yet.
    out = tmp_path / "demo-output"
    env = clean_environ()
    fed = kcing(["feed_es", "--source", "samples", "--samples-dir", str(SAMPLES), "--output", str(out),
                 "--db", str(out / "kcing.db")], env, tmp_path)
    assert fed.returncode == 0, fed.stdout + fed.stderr
    assert (out / "kcing.db").is_file() and list(out.glob("*.ndjson"))


def test_metrics_into_a_missing_directory_is_refused_before_the_run(tmp_path):
    env = clean_environ(KCING_DB=str(tmp_path / "kcing.db"))
    target = tmp_path / "textfile" / "kcing.prom"
    refused = kcing(["feed_es", "--source", "samples", "--output", str(tmp_path / "out"), "--metrics", str(target)],
                    env, tmp_path)
    assert refused.returncode == 2
    assert one_line(refused) == "kcing feed_es: --metrics %s: directory %s does not exist" % (target, target.parent)
    assert not (tmp_path / "kcing.db").exists()


# kcing test passes its arguments to pytest (7) -------------------------------------------------

def test_kcing_test_passes_its_arguments_to_pytest(tmp_path):
    # pytest reads no setting: neither a local_settings.py that cannot be loaded, nor a setting
    # with a bad value (a cron job's environment, say) keeps it from running.
    (tmp_path / "local_settings.py").write_text("KCI_DAYS = undefined_name\n")
    ran = kcing(["test", "-q", "-p", "no:cacheprovider", "-k", "test_every_setting_is_in_the_readme"],
                clean_environ(ES_HOST="localhost:9200"), tmp_path, timeout=300)
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert re.search(r"^1 passed, \d+ deselected", ran.stdout, re.M), ran.stdout


def test_kcing_test_ends_with_pytests_exit_status_which_its_help_explains(tmp_path):
    misused = kcing(["test", "-p", "no:cacheprovider", "--no-such-pytest-option"], clean_environ(), tmp_path,
                    timeout=300)
    assert misused.returncode == 4, misused.stdout + misused.stderr  # pytest's usage error
    assert "unrecognized arguments: --no-such-pytest-option" in misused.stderr
    helped = kcing(["test", "--help"], clean_environ(), tmp_path)
    assert "4 a usage error in the arguments" in " ".join(helped.stdout.split())


# A sitecustomize.py found first on PYTHONPATH: the interpreter it starts has no pytest, as one
# where kcing was installed without its test dependencies.
WITHOUT_PYTEST = """\
import sys

class NoPytest:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("pytest", "_pytest"):
            raise ModuleNotFoundError("No module named %r" % name, name=name)
        return None

sys.meta_path.insert(0, NoPytest())
"""


def test_kcing_test_without_pytest_says_so_in_one_line_not_with_the_status_of_failed_tests(tmp_path):
    hidden = tmp_path / "site"
    hidden.mkdir()
    (hidden / "sitecustomize.py").write_text(WITHOUT_PYTEST)
    ran = kcing(["test", "-q"], clean_environ(PYTHONPATH=str(hidden)), tmp_path)
    assert ran.returncode == 2, ran.stdout + ran.stderr  # not 1, pytest's for failed tests
    assert ran.stderr.splitlines() == [
        "kcing test: pytest is not installed for %s: install the test dependencies (make install, or "
        "pip install -e '.[test]' in the checkout)" % sys.executable]


@pytest.mark.parametrize("flag", ["--help", "-h"])
def test_kcing_test_names_each_flag_that_shows_its_own_help_instead_of_pytests(flag, tmp_path):
    """Every other argument goes to pytest: the text must name each one kcing keeps."""
    helped = kcing(["test", flag], clean_environ(), tmp_path)
    assert helped.returncode == 0 and helped.stdout.startswith("Usage:\n  kcing test"), helped.stdout
    assert "`kcing test %s`" % flag in " ".join(helped.stdout.split())


# A test that says it has started, then waits: the suite a signal finds running.
SLOW_TEST = """\
import os, time

def test_waits():
    open(os.environ["KCING_TEST_STARTED"], "w").close()
    time.sleep(60)
"""


def _process_tree(pid: int) -> Set[int]:
    """`pid` and every process descending from it that is not a zombie (read from /proc)."""
    parents = {}
    for entry in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open("/proc/%s/stat" % entry) as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
        except OSError:  # gone meanwhile
            continue
        if fields[0] != "Z":
            parents[int(entry)] = int(fields[1])
    tree = {pid} if pid in parents else set()
    grown = True
    while grown:
        grown = False
        for child, parent in parents.items():
            if parent in tree and child not in tree:
                tree.add(child)
                grown = True
    return tree


def _kcing_test_running_a_test(tmp_path: Path, new_session: bool) -> subprocess.Popen:
    """`kcing test <a test that waits a minute>`, once pytest runs that test."""
    (tmp_path / "test_slow.py").write_text(SLOW_TEST)
    started = tmp_path / "started"
    # Files, not pipes: a pytest left running would hold a pipe open, and reading it would wait.
    with open(tmp_path / "out", "w") as out, open(tmp_path / "err", "w") as err:
        process = subprocess.Popen(
            [sys.executable, str(REPO / "kcing.py"), "test", "-p", "no:cacheprovider", "-p", "no:xdist",
             "-o", "addopts=", "--rootdir", str(tmp_path), str(tmp_path / "test_slow.py")],
            env=clean_environ(KCING_TEST_STARTED=str(started)), cwd=str(tmp_path), stdout=out, stderr=err,
            start_new_session=new_session)
    deadline = time.monotonic() + 60
    while not started.exists():
        assert process.poll() is None, (tmp_path / "out").read_text() + (tmp_path / "err").read_text()
        assert time.monotonic() < deadline, "pytest did not start the test"
        time.sleep(0.05)
    return process


def test_kcing_test_stopped_by_sigterm_leaves_no_test_suite_running(tmp_path):
    """A CI job's timeout or `kill`: the suite stops with kcing, not orphaned for its 11 minutes."""
    process = _kcing_test_running_a_test(tmp_path, new_session=False)
    running = _process_tree(process.pid)
    try:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)
        deadline = time.monotonic() + 5
        while any(_process_tree(pid) for pid in running) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not any(_process_tree(pid) for pid in running), "left running: %s" % running
    finally:
        for pid in running:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)


def test_kcing_test_interrupted_from_the_terminal_ends_with_pytests_status_and_report(tmp_path):
    """Ctrl-C (SIGINT to the terminal's process group): pytest's report of what ran, and its 2."""
    process = _kcing_test_running_a_test(tmp_path, new_session=True)
    running = _process_tree(process.pid)
    try:
        os.killpg(process.pid, signal.SIGINT)
        process.wait(timeout=30)
        out, err = (tmp_path / "out").read_text(), (tmp_path / "err").read_text()
        assert process.returncode == 2, (process.returncode, out, err)
        assert "KeyboardInterrupt" in out, (out, err)  # pytest's report of the stop
    finally:
        for pid in running:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)


# Progress a person can watch (8) ----------------------------------------------------------------

def run_on_a_terminal(argv: List[str], env: Dict[str, str], cwd: Path) -> tuple:
    """Run kcing with stderr on a pseudo-terminal 200 columns wide; (exit code, stdout, terminal text)."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 50, 200, 0, 0))
    process = subprocess.Popen([sys.executable, str(REPO / "kcing.py"), *argv], env=env, cwd=str(cwd),
                               stdout=subprocess.PIPE, stderr=slave)
    os.close(slave)
    seen = b""
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:  # the program closed its end
            break
        if not chunk:
            break
        seen += chunk
    os.close(master)
    out = process.stdout.read().decode()
    return process.wait(timeout=60), out, seen.decode()


def test_quiet_draws_no_live_line_on_a_terminal_either(tmp_path):
    env = samples_environ(tmp_path)
    code, out, terminal = run_on_a_terminal(["feed_es", "-q", "--source", "samples", "--output",
                                             str(tmp_path / "a")], env, tmp_path)
    assert (code, out, terminal) == (0, "", "")


def test_a_terminal_gets_a_live_progress_line_and_a_pipe_gets_none(tmp_path):
    env = samples_environ(tmp_path)
    code, out, terminal = run_on_a_terminal(["feed_es", "--source", "samples", "--output", str(tmp_path / "a")],
                                            env, tmp_path)
    assert code == 0, terminal
    drawn = [part for part in terminal.split("\r\x1b[K") if part.startswith("feed_es: listed")]
    assert drawn, terminal
    final = drawn[-1].split("\r\n")[0]
    assert re.fullmatch(r"feed_es: listed 11, skipped 0, downloaded 11, delivered 11, rejected 0, failed 0, "
                        r"documents sent 2462 \(\d+/s\)", final), final
    # The summary on stdout is unchanged; log lines on the terminal never share the live line.
    assert "feed_es: listed 11, skipped 0 (already delivered)" in out
    assert not re.search(r"feed_es: listed[^\r\n]*\d{4}-\d\d-\d\dT", terminal)
    assert re.search(r"\r\n\d{4}-\d\d-\d\dT[\d:.]+Z INFO kcing.pipeline: run finished", terminal)

    piped = kcing(["feed_es", "--source", "samples", "--output", str(tmp_path / "b")], env, tmp_path)
    assert piped.returncode == 0
    assert "\r" not in piped.stderr and "\x1b" not in piped.stderr


# Packaging truth (9) ----------------------------------------------------------------------------

def test_the_package_metadata_states_what_is_tested_without_deprecated_tables():
    import tomllib

    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert project["project"]["requires-python"] == ">=3.11"
    assert sys.version_info >= (3, 11)
    assert project["project"]["license"] == "MIT"  # an SPDX expression, not the deprecated table
    assert any(re.fullmatch(r"setuptools==\d+(\.\d+)*", req) and int(req.split("==")[1].split(".")[0]) >= 77
               for req in project["build-system"]["requires"])


def test_building_the_metadata_prints_no_deprecation_warning(tmp_path):
    # The build backend pyproject.toml pins is a test dependency: this is what pip runs.
    built = subprocess.run([sys.executable, "-W", "always", "-c",
                            "import sys, setuptools.build_meta as backend; "
                            "print(backend.prepare_metadata_for_build_wheel(sys.argv[1]))", str(tmp_path)],
                           cwd=str(REPO), capture_output=True, text=True, timeout=120)
    assert built.returncode == 0, built.stderr
    output = built.stdout + built.stderr
    assert "eprecat" not in output and "Warning" not in output, output
    metadata = (tmp_path / built.stdout.split()[-1] / "METADATA").read_text()
    assert "Requires-Python: >=3.11" in metadata and "License-Expression: MIT" in metadata


# The README agrees with the CLI (2, 10) ---------------------------------------------------------

def readme_section(title: str) -> str:
    text = README.read_text()
    return text.split("\n## %s\n" % title, 1)[1].split("\n## ", 1)[0]


def test_the_readme_lists_the_commands_and_options_the_cli_has():
    section = readme_section("Commands")
    table = dict(re.findall(r"^\| `(\w+)` \| (.+?) \|$", section, re.M))
    assert list(table) == list(commands.NAMES)
    documented = {name: set(re.findall(r"`(--[\w-]+)", options))
                  for name, options in re.findall(r"^- `kcing (\w+)`: (.*)$", section, re.M)}
    assert set(documented) == set(commands.NAMES) - {"test"}
    for name, listed in documented.items():
        assert listed == options_of(name) - {"--help"}, name


# Structure (11) ---------------------------------------------------------------------------------

def imported_modules(path: Path) -> Set[str]:
    import ast

    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found.update("%s.%s" % (node.module, alias.name) for alias in node.names)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return found


def test_each_command_is_one_module_that_no_service_imports():
    package = REPO / "kcing"
    for name in commands.NAMES:
        module = commands.load(name)
        assert Path(module.__file__) == package / "commands" / ("%s.py" % name)
        assert module.SUMMARY and module.USAGE.startswith("Usage:\n  kcing %s" % name) and callable(module.run)
    for path in package.rglob("*.py"):
        if path.parent.name == "commands" or path.name == "cli.py":
            continue
        leaks = {module for module in imported_modules(path) if module.startswith("kcing.commands")}
        assert not leaks, "%s imports %s" % (path, leaks)
    # cli.py parses the global part and dispatches: it builds no source, sink or ledger itself.
    cli_imports = {module.split(".")[1] for module in imported_modules(package / "cli.py")
                   if module.startswith("kcing.")}
    assert cli_imports <= {"__version__", "commands", "logs", "settings", "settingvalues", "errors", "urls"}, cli_imports


def modules_loaded(argv: List[str], env: Dict[str, str], cwd: Path) -> Set[str]:
    """The modules a kcing run imported (PYTHONPROFILEIMPORTTIME names each on stderr); the run must succeed."""
    ran = kcing(argv, dict(env, PYTHONPROFILEIMPORTTIME="1"), cwd)
    assert ran.returncode == 0, ran.stderr[-2000:]
    return {line.split("|")[-1].strip() for line in ran.stderr.splitlines() if line.startswith("import time:")}


def test_a_command_starts_without_the_modules_only_other_commands_need(tmp_path):
    """Every run starts a process, and a cron job's or a monitor's run is mostly its start: status
    read the ledger after importing the whole feed (its HTTP stack and sources): 0.22 s for what
    takes 0.10 s. A feed needs no Elasticsearch client, and an offline one (samples into NDJSON
    files) no HTTP stack: 0.53 s for what takes 0.36 s (medians of ten)."""
    env = samples_environ(tmp_path)
    fed = modules_loaded(["feed_es", "--source", "samples", "--output", str(tmp_path / "out")], env, tmp_path)
    assert "kcing.pipeline" in fed and not {module for module in fed if module.startswith("elasticsearch")}
    assert not fed & {"requests", "urllib3", "kcing.http", "kcing.transport", "kcing.sources.legacy",
                      "kcing.sources.api", "kcing.sinks.logstash"}
    status = modules_loaded(["status"], env, tmp_path)
    assert "kcing.ledger.ledger" in status
    assert not status & {"requests", "urllib3", "elasticsearch", "kcing.pipeline", "kcing.sources", "kcing.documents"}


@pytest.mark.parametrize("argv, message", [
    (["feed_es", "--days", "3", "--dry-run"],
     "kcing feed_es: --days does not apply to KCI_SOURCE=samples, which replays the whole samples directory"),
    (["gen_samples"], "kcing gen_samples: gen_samples saves from an upstream source; KCI_SOURCE=samples would copy "
                      "the samples onto themselves"),
])
def test_a_source_chosen_by_kci_source_is_named_so_not_as_a_flag_never_given(argv, message, tmp_path):
    refused = kcing(argv, samples_environ(tmp_path, KCI_SOURCE="samples"), tmp_path)
    assert refused.returncode == 2
    assert one_line(refused) == message


# -- a samples directory or local files that list an object twice ----------------------------------

def test_an_object_listed_twice_is_delivered_and_recorded_once(tmp_path):
    samples = tmp_path / "samples"
    shutil.copytree(str(SAMPLES), str(samples))
    manifest = json.loads((samples / "manifest.json").read_text())
    manifest["objects"].insert(1, manifest["objects"][0])  # an entry copied twice
    (samples / "manifest.json").write_text(json.dumps(manifest))
    build = SAMPLES / manifest["objects"][0]["path"]
    shutil.copy(str(build), str(tmp_path / "copy.json"))  # the same content in two files
    env = samples_environ(tmp_path)
    for argv in (["--source", "samples", "--samples-dir", str(samples)],
                 ["--builds", str(build), str(tmp_path / "copy.json"), "--date", "2020-11-04"]):
        fed = kcing(["feed_es", *argv, "--output", str(tmp_path / "out")], env, tmp_path)
        assert fed.returncode == 0, fed.stderr
        assert "is listed again in" in fed.stderr and "internal error" not in fed.stderr
    assert (tmp_path / "out" / "build.ndjson").read_text().count('"_id"') == 7  # 6 builds, and the local one


def test_an_object_refused_and_listed_twice_is_reported_and_counted_once(tmp_path):
    # A bad manifest entry copied, or a missing file named twice: one object, one ledger row.
    samples = tmp_path / "samples"
    shutil.copytree(str(SAMPLES), str(samples))
    manifest = json.loads((samples / "manifest.json").read_text())
    manifest["objects"][0]["path"] = "../elsewhere.json"
    manifest["objects"].insert(1, manifest["objects"][0])
    (samples / "manifest.json").write_text(json.dumps(manifest))
    build = SAMPLES / manifest["objects"][2]["path"]
    env = samples_environ(tmp_path)
    for argv, delivered in ((["--source", "samples", "--samples-dir", str(samples)], 10),
                            (["--builds", "gone.json", str(build), "gone.json", "--date", "2020-11-04"], 1)):
        fed = kcing(["feed_es", *argv, "--output", str(tmp_path / "out")], env, tmp_path)
        assert fed.returncode == 1, fed.stderr
        assert "delivered %d, rejected 1, failed 0" % delivered in fed.stdout
        assert len([line for line in fed.stdout.splitlines() if line.startswith("  problem: ")]) == 1, fed.stdout
        assert "is listed again in" in fed.stderr


def test_a_spoilt_copy_of_an_accepted_manifest_entry_never_takes_its_delivered_row(tmp_path):
    # An entry copied by hand with a path leaving the directory: refused, it took the delivered
    # object's ledger row to `rejected` at the next replay, and once the copy was removed the
    # replay after that wrote the object's documents again.
    samples = tmp_path / "samples"
    shutil.copytree(str(SAMPLES), str(samples))
    manifest = json.loads((samples / "manifest.json").read_text())
    entry = next(entry for entry in manifest["objects"] if entry["kind"] == "build")
    manifest["objects"].append(dict(entry, path="../elsewhere.json"))
    (samples / "manifest.json").write_text(json.dumps(manifest))
    env = samples_environ(tmp_path)
    argv = ["feed_es", "--source", "samples", "--samples-dir", str(samples), "--output", str(tmp_path / "out")]
    first = kcing(argv, env, tmp_path)
    assert first.returncode == 0, first.stdout + first.stderr
    assert "delivered 11, rejected 0" in first.stdout
    assert "is listed again in manifest.json, refused (" in first.stderr
    assert kcing(argv, env, tmp_path).returncode == 0
    assert ledger_states(tmp_path / "kcing.db")[("build", entry["upstream_id"])] == "delivered"
    manifest["objects"].pop()
    (samples / "manifest.json").write_text(json.dumps(manifest))
    third = kcing(argv, env, tmp_path)
    assert "skipped 11 (already delivered)" in third.stdout, third.stdout
    ids = re.findall(r'"_id":"([^"]+)"', (tmp_path / "out" / "build.ndjson").read_text())
    assert len(ids) == len(set(ids)) == 6


RAW_LAVA_CALLBACK = REPO.parent / "shared" / "data" / "upstream" / "legacy" / "lava-callback-raw-incomplete-qemu.json"


@pytest.mark.skipif(not RAW_LAVA_CALLBACK.is_file(), reason="shared/data/upstream is absent")
def test_a_local_lava_file_without_times_is_refused_naming_date_and_dated_by_it(tmp_path):
    # A LAVA callback saved without its job's times: "no listing date" did not tell the user
    # of --lavas, who lists nothing, that --date gives one.
    callback = json.loads(RAW_LAVA_CALLBACK.read_text())
    for key in ("submit_time", "start_time", "end_time"):
        del callback[key]
    (tmp_path / "untimed.json").write_text(json.dumps(callback))
    env = samples_environ(tmp_path)
    refused = kcing(["feed_es", "--lavas", "untimed.json", "--output", str(tmp_path / "out")], env, tmp_path)
    assert refused.returncode == 1, refused.stderr
    assert "no date: LAVA job 577 has no end/start/submit time" in refused.stdout
    assert "or --date for local files" in refused.stdout
    dated = kcing(["feed_es", "--lavas", "untimed.json", "--date", "2020-10-23", "--output", str(tmp_path / "out")],
                  env, tmp_path)
    assert dated.returncode == 0, dated.stderr
    assert '"_index":"boot-2020.10.23"' in (tmp_path / "out" / "lava.ndjson").read_text()


def test_local_files_refused_or_given_twice_are_named_by_their_file_not_only_by_a_hash(tmp_path):
    # A local file is known by the hash of its content (so its gzip copy is the same file); a
    # user given "rejected build 2a64fe34...: not valid JSON" for one of ten files cannot tell which.
    (tmp_path / "cut.json").write_text('{"job": ')
    (tmp_path / "odd\nname.json").write_text("not json")
    build = SAMPLES / json.loads((SAMPLES / "manifest.json").read_text())["objects"][0]["path"]
    shutil.copy(str(build), str(tmp_path / "copy.json"))
    fed = kcing(["feed_es", "--builds", "cut.json", "odd\nname.json", str(build), "copy.json", "--date", "2020-11-04",
                 "--output", str(tmp_path / "out")], samples_environ(tmp_path), tmp_path)
    assert fed.returncode == 1, fed.stderr
    cut = hashlib.sha256(b'{"job": ').hexdigest()
    assert "rejected build cut.json (sha256 %s): not valid JSON" % cut[:12] in fed.stderr
    assert "  problem: build cut.json (sha256 %s): not valid JSON" % cut[:12] in fed.stdout
    assert "problem: build 'odd\\nname.json' (sha256 " in fed.stdout  # one line, the name quoted
    assert "build copy.json (sha256 %s) is listed again in the files given" % hashlib.sha256(
        build.read_bytes()).hexdigest()[:12] in fed.stderr
    # and which of the files given it repeats
    assert "(%s, the same as %s); it is delivered once" % (tmp_path / "copy.json", build.resolve()) in fed.stderr
    assert "delivered 1, rejected 2, failed 0" in fed.stdout


def test_a_local_file_repeating_one_whose_name_holds_a_newline_is_warned_of_on_one_line(tmp_path):
    build = SAMPLES / json.loads((SAMPLES / "manifest.json").read_text())["objects"][0]["path"]
    shutil.copy(str(build), str(tmp_path / "first\ncopy.json"))
    shutil.copy(str(build), str(tmp_path / "copy.json"))
    fed = kcing(["feed_es", "--builds", "first\ncopy.json", "copy.json", "--date", "2020-11-04",
                 "--output", str(tmp_path / "out")], samples_environ(tmp_path), tmp_path)
    assert fed.returncode == 0, fed.stderr
    (warning,) = [line for line in fed.stderr.splitlines() if "is listed again" in line]
    assert warning.endswith("(%s, the same as %r); it is delivered once" % (tmp_path / "copy.json",
                                                                         str(tmp_path / "first\ncopy.json"))), warning


def test_a_samples_file_that_is_a_symlink_loop_is_rejected_and_the_others_delivered(tmp_path):
    samples = tmp_path / "samples"
    shutil.copytree(str(SAMPLES), str(samples))
    first = json.loads((samples / "manifest.json").read_text())["objects"][0]
    looping = samples / first["path"]
    looping.unlink()
    looping.symlink_to(looping)
    fed = kcing(["feed_es", "--source", "samples", "--samples-dir", str(samples), "--output", str(tmp_path / "out")],
                samples_environ(tmp_path), tmp_path)
    assert fed.returncode == 1, fed.stderr
    assert "rejected build %s: path %r is not a file inside" % (first["upstream_id"], first["path"]) in fed.stderr
    # The path names a file the user sees there: the reason says what keeps the replay from it.
    assert "%s: a symbolic link on the way leads out of it, or round in a loop" % samples in fed.stderr
    assert "delivered 10, rejected 1, failed 0" in fed.stdout


def test_a_samples_manifest_that_is_a_fifo_is_refused_without_waiting_for_a_writer(tmp_path):
    samples = tmp_path / "samples"
    samples.mkdir()
    os.mkfifo(samples / "manifest.json")
    fed = kcing(["feed_es", "--source", "samples", "--samples-dir", str(samples), "--output", str(tmp_path / "out")],
                samples_environ(tmp_path), tmp_path, timeout=30)
    assert fed.returncode == 2, fed.stderr
    assert fed.stderr.splitlines() == ["kcing feed_es: cannot read %s: not a regular file" % (samples / "manifest.json")]


@pytest.mark.parametrize("written", ["2", '"1"', "true", "1.0"])
def test_a_samples_manifest_of_another_format_is_refused_by_feed_es_and_gen_samples(tmp_path, written):
    samples = tmp_path / "samples"
    samples.mkdir()
    manifest = samples / "manifest.json"
    manifest.write_text('{"format": %s, "source": "legacy", "objects": []}' % written)
    fed = kcing(["feed_es", "--source", "samples", "--samples-dir", str(samples), "--output", str(tmp_path / "out")],
                samples_environ(tmp_path), tmp_path)
    saved = kcing(["gen_samples", "--samples-dir", str(samples)],
                  clean_environ(KCI_HOST="127.0.0.1:9", KCI_STORAGE_URL="http://127.0.0.1:9"), tmp_path)
    for run in (fed, saved):
        assert run.returncode == 2, run.stderr
        assert len(run.stderr.splitlines()) == 1 and "is a samples manifest of format %s; this kcing reads format 1" % written in run.stderr
    assert manifest.read_text() == '{"format": %s, "source": "legacy", "objects": []}' % written


def test_a_build_whose_manifest_date_is_not_a_date_is_rejected_saying_so_and_a_lava_file_keeps_its_own(tmp_path):
    samples = tmp_path / "samples"
    shutil.copytree(SAMPLES, samples)
    manifest = json.loads((samples / "manifest.json").read_text())
    build, lava = manifest["objects"][0], manifest["objects"][2]
    assert (build["kind"], lava["kind"]) == ("build", "lava")
    build["date"] = lava["date"] = "2020-13-45"
    (samples / "manifest.json").write_text(json.dumps(manifest))
    fed = kcing(["feed_es", "--source", "samples", "--samples-dir", str(samples), "--output", str(tmp_path / "out")],
                samples_environ(tmp_path), tmp_path)
    assert fed.returncode == 1, fed.stderr
    for number in (1, 3):
        assert 'manifest.json, entry %d: date "2020-13-45" is not a date' % number in fed.stderr
    shown = json.loads(kcing(["status", "--json"], samples_environ(tmp_path), tmp_path).stdout)
    assert shown["objects"]["samples"]["build"]["rejected"] == 1
    assert shown["objects"]["samples"]["lava"]["rejected"] == 0
    assert any("no usable one was given" in error["error"] for error in shown["errors"]), shown["errors"]


@pytest.mark.parametrize("date", ["9999-12-31T23:59:59-05:00", "0001-01-01T00:00:00+05:00"])
def test_a_manifest_date_whose_offset_takes_it_beyond_the_years_a_date_holds_is_not_a_date(tmp_path, date):
    samples = tmp_path / "samples"
    shutil.copytree(SAMPLES, samples)
    manifest = json.loads((samples / "manifest.json").read_text())
    manifest["objects"][0]["date"] = date
    (samples / "manifest.json").write_text(json.dumps(manifest))
    fed = kcing(["feed_es", "--source", "samples", "--samples-dir", str(samples), "--output", str(tmp_path / "out")],
                samples_environ(tmp_path), tmp_path)
    assert fed.returncode == 1, fed.stderr
    assert 'manifest.json, entry 1: date "%s" is not a date' % date in fed.stderr
    assert "delivered 10, rejected 1, failed 0" in fed.stdout


def test_a_samples_manifest_nested_too_deeply_is_one_line_and_exit_2(tmp_path):
    samples = tmp_path / "samples"
    samples.mkdir()
    (samples / "manifest.json").write_text("[" * 100_000 + "]" * 100_000)
    fed = kcing(["feed_es", "--source", "samples", "--samples-dir", str(samples), "--output", str(tmp_path / "out")],
                samples_environ(tmp_path), tmp_path)
    assert fed.returncode == 2, fed.stderr
    assert fed.stderr.splitlines() == ["kcing feed_es: cannot read %s: not valid JSON: nested too deeply"
                                       % (samples / "manifest.json")]


@pytest.mark.parametrize("text, reason", [
    ("", "an empty file, not a samples manifest"),
    (" \n", "an empty file, not a samples manifest"),
    ('{"format": 1, "objects": [{"kind": "bu', "not valid JSON: Unterminated string starting at: line 1 column 36 "
                                              "(char 35)"),
], ids=["empty", "blank", "cut short"])
def test_a_samples_manifest_empty_or_cut_short_is_said_so_by_feed_es_and_gen_samples(tmp_path, text, reason):
    # JSON's own "Expecting value: line 1 column 1 (char 0)" was all a user read of an empty file.
    samples = tmp_path / "samples"
    samples.mkdir()
    (samples / "manifest.json").write_text(text)
    env = dict(samples_environ(tmp_path), KCI_SAMPLES_DIR=str(samples), KCI_HOST="127.0.0.1:%d" % closed_port(),
               KCI_SCHEME="http", KCI_STORAGE_URL="http://127.0.0.1:%d" % closed_port())
    for argv in (["feed_es", "--source", "samples", "--output", str(tmp_path / "out")], ["gen_samples"]):
        refused = kcing(argv, env, tmp_path)
        assert refused.returncode == 2, refused.stderr
        assert refused.stderr.splitlines() == ["kcing %s: cannot read %s: %s" % (argv[0], samples / "manifest.json",
                                                                               reason)]
    assert (samples / "manifest.json").read_text() == text


def test_a_samples_manifest_saved_with_a_byte_order_mark_is_replayed(tmp_path):
    # Edited in an editor that writes one (Windows' Notepad did by default): JSON files are read
    # with a leading byte order mark allowed, and the manifest was refused for it.
    samples = tmp_path / "samples"
    shutil.copytree(str(SAMPLES), str(samples))
    manifest = samples / "manifest.json"
    manifest.write_bytes(b"\xef\xbb\xbf" + manifest.read_bytes())
    fed = kcing(["feed_es", "--source", "samples", "--samples-dir", str(samples), "--output", str(tmp_path / "out")],
                samples_environ(tmp_path), tmp_path)
    assert fed.returncode == 0, fed.stderr
    assert "delivered 11, rejected 0, failed 0" in fed.stdout


def test_a_bug_while_reading_the_command_line_is_one_line_and_exit_70(monkeypatch, capsys):
    """As a bug during a run is: cron's mail gets one line, not a traceback."""
    from kcing import cli

    def broken(word):
        raise IndexError("list index out of range")

    monkeypatch.setattr(cli, "meant_commands", broken)
    assert cli.main(["feedes"]) == 70
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == ("kcing: internal error (IndexError); run again with -d for the traceback, and report "
                            "it\n")


def test_debug_lines_of_the_ledgers_statements_are_bounded_and_say_what_ran(tmp_path):
    """-d logs each ledger statement; with its parameters whole, the document ids of one
    delivered object (bytes) made lines of 80 KB. The statement stays; long values are cut."""
    log = tmp_path / "debug.log"
    fed = kcing(["feed_es", "--source", "samples", "--output", str(tmp_path / "out"), "-d", "-l", str(log)],
                samples_environ(tmp_path), tmp_path)
    assert fed.returncode == 0, fed.stderr[-2000:]
    lines = log.read_text(encoding="utf-8").splitlines()
    statements = [line for line in lines if " DEBUG peewee: " in line]
    assert statements and max(len(line) for line in statements) < 3000, max(statements, key=len)[:300]
    [insert, *_] = [line for line in statements if "INSERT INTO delivered_documents" in line]
    assert re.search(r"VALUES \(\?, \?, \?\), \.\.\. \(\d+ rows\); parameters \[\d+, '[a-z]+-\d{4}\.\d\d\.\d\d', "
                     r"<\d+ bytes>", insert), insert
    assert not any(len(line) > 3000 for line in fed.stderr.splitlines())


def test_a_bounded_statement_keeps_the_statement_and_cuts_what_is_long():
    from kcing.logs import bounded_statement
    assert bounded_statement("SELECT 1 FROM t WHERE id = ?", [5]) == "SELECT 1 FROM t WHERE id = ?; parameters [5]"
    listed = bounded_statement("SELECT id FROM t WHERE k IN (%s)" % ", ".join("?" * 500), ["x"] * 500)
    assert listed.startswith("SELECT id FROM t WHERE k IN (?, ... (500 values)); parameters ['x', ")
    assert listed.endswith("... and 480 more (500 in all)]")
    assert bounded_statement("UPDATE t SET e = ?", ["e" * 5000, b"\0" * 40]) == (
        "UPDATE t SET e = ?; parameters ['%s... (5002 characters), <40 bytes>]" % ("e" * 59))


@pytest.mark.parametrize("zone", ["UTC", "Europe/London", "America/New_York"])
def test_a_since_naming_its_zone_by_an_abbreviation_is_refused_on_every_host(tmp_path, zone):
    """python-dateutil reads "BST" as the host's zone where the host is in Britain and drops it
    (with a library warning) elsewhere: the same cron line checked from 07:00 or 08:00 UTC."""
    refused = kcing(["reconcile", "--since", "2024-07-01 08:00 BST"], dict(samples_environ(tmp_path), TZ=zone),
                    tmp_path)
    assert refused.returncode == 2
    assert one_line(refused) == ("kcing reconcile: --since '2024-07-01 08:00 BST' names its time zone by an "
                                 "abbreviation: give a UTC offset (try '2024-10-16 08:00 +01:00' or "
                                 "'2024-10-16 08:00 UTC')")


@pytest.mark.parametrize("since, name", [("2024-07-01 08:00 UTC+3", "UTC"), ("2024-07-01T08:00GMT-05:30", "GMT"),
                                         ("2024-07-01 08:00 utc + 3", "UTC"),
                                         # "Z" is UTC to python-dateutil too: 11:00 UTC, and 08:00 with "+3" dropped
                                         ("2024-07-01T08:00:00Z+03:00", "Z (UTC)"), ("2024-07-01 08:00 z +3", "Z (UTC)")])
def test_a_since_giving_its_offset_after_utc_or_gmt_is_refused_as_read_with_either_sign(tmp_path, since, name):
    """python-dateutil reads "UTC+3" as POSIX TZ rules do, 3 hours west of Greenwich: a user
    meaning 08:00 at +03:00 (05:00 UTC) was given 11:00 UTC, and missed six hours of results.
    The refusal names the zone the user wrote: "after UTC or GMT" of a Z sent them looking."""
    refused = kcing(["reconcile", "--since", since], samples_environ(tmp_path), tmp_path)
    assert refused.returncode == 2
    assert one_line(refused) == ("kcing reconcile: --since %r gives its offset after %s, which POSIX reads "
                                 "west of Greenwich and ISO 8601 east: give the offset alone (try "
                                 "'2024-10-16 08:00 +03:00')" % (since, name))


def test_a_date_giving_its_offset_after_utc_or_gmt_is_refused_and_an_offset_alone_is_read_east():
    from kcing import flags
    from kcing.errors import ConfigError

    with pytest.raises(ConfigError, match=r"^--date '2020-07-04 00:30 GMT\+1' gives its offset after GMT, "):
        flags.a_date({"--date": "2020-07-04 00:30 GMT+1"}, "--date")
    with pytest.raises(ConfigError, match=r"^--date '2020-07-04T00:30Z\+01:00' gives its offset after Z \(UTC\), "):
        flags.a_date({"--date": "2020-07-04T00:30Z+01:00"}, "--date")
    assert flags.a_date({"--date": "2020-07-04 00:30 +01:00"}, "--date").isoformat() == "2020-07-03T23:30:00+00:00"
    assert flags.a_date({"--date": "2020-07-04 00:30 UTC"}, "--date").isoformat() == "2020-07-04T00:30:00+00:00"


def test_a_date_whose_day_and_month_could_be_swapped_is_refused_not_read_month_first(tmp_path):
    """python-dateutil reads 01/12/2026 month first: a user in Europe meaning 1 December had a
    build filed in build-2026.01.12, eleven months away, without a word."""
    manifest = json.loads((SAMPLES / "manifest.json").read_text())
    build = SAMPLES / next(entry for entry in manifest["objects"] if entry["kind"] == "build")["path"]
    env = samples_environ(tmp_path)
    for day in ("01/12/2026", "01.12.2026", "01/12/26"):
        refused = kcing(["feed_es", "--builds", str(build), "--date", day, "--output", str(tmp_path / "out")], env,
                        tmp_path)
        assert refused.returncode == 2, refused.stderr
        assert one_line(refused).startswith("kcing feed_es: --date %r could mean " % day)
        assert "2026-12-01" in one_line(refused) and "write the date year first, as YYYY-MM-DD" in one_line(refused)
        assert not (tmp_path / "out").exists()
    refused = kcing(["reconcile", "--since", "12/01/2026 10:00"], env, tmp_path)
    assert one_line(refused) == ("kcing reconcile: --since '12/01/2026 10:00' could mean 2026-01-12 or 2026-12-01 "
                                 "(countries write day and month in different orders): write the date year first, "
                                 "as YYYY-MM-DD")
    assert refused.returncode == 2
    # Written year first, or with a day no month could be, or the month named: one reading.
    for day, index in (("2026-12-01", "build-2026.12.01"), ("2026/12/01", "build-2026.12.01"),
                       ("13/12/2026", "build-2026.12.13"), ("1 Dec 2026", "build-2026.12.01"),
                       ("20261201", "build-2026.12.01")):
        out = tmp_path / ("out-" + day.replace("/", "-").replace(" ", "-"))
        fed = kcing(["feed_es", "--builds", str(build), "--date", day, "--output", str(out), "--db",
                     str(out) + ".db"], env, tmp_path)
        assert fed.returncode == 0, fed.stderr
        assert '"_index":"%s"' % index in (out / "build.ndjson").read_text()


@pytest.mark.parametrize("zone", ["UTC", "Europe/London", "Asia/Kathmandu"])
def test_a_since_with_no_zone_or_an_offset_means_the_same_time_on_every_host(tmp_path, zone):
    # 01:30 on the day Britain's clocks go forward: a time that does not exist in London.
    env = dict(samples_environ(tmp_path), TZ=zone)
    fed = kcing(["feed_es", "--source", "samples", "--output", str(tmp_path / "out")], env, tmp_path)
    assert fed.returncode == 0, fed.stderr
    for since, shown in (("2024-03-31 01:30", "2024-03-31 01:30 UTC"), ("2024-03-31 01:30 GMT", "2024-03-31 01:30 UTC"),
                         ("2024-03-31 07:15 +05:45", "2024-03-31 01:30 UTC")):
        ran = kcing(["reconcile", "--since", since], env, tmp_path)
        assert "since %s" % shown in ran.stdout + ran.stderr, (since, ran.stdout, ran.stderr)
        assert "Warning" not in ran.stderr


@pytest.mark.parametrize("zone", ["UTC", "Asia/Kolkata", "Etc/GMT+12"])
def test_a_day_with_a_zone_and_no_time_begins_at_midnight_in_that_zone(tmp_path, zone):
    """python-dateutil reads a zone only after a time of day: `--since "2024-03-31 +05:30"`
    (a day as a user in India counts it) and `--since 2024-03-31Z` were refused as no date."""
    env = dict(samples_environ(tmp_path), TZ=zone)
    fed = kcing(["feed_es", "--source", "samples", "--output", str(tmp_path / "out")], env, tmp_path)
    assert fed.returncode == 0, fed.stderr
    for since, shown in (("2024-03-31 +05:30", "2024-03-30 18:30 UTC"), ("2024-03-31Z", "2024-03-31 00:00 UTC"),
                         ("2024-03-31 UTC", "2024-03-31 00:00 UTC"), ("31 Mar 2024 -05:00", "2024-03-31 05:00 UTC")):
        ran = kcing(["reconcile", "--since", since], env, tmp_path)
        assert "since %s" % shown in ran.stdout + ran.stderr, (since, ran.stdout, ran.stderr)
    # A zone named by an abbreviation is still refused, now saying so.
    refused = kcing(["reconcile", "--since", "2024-03-31 EST"], env, tmp_path)
    assert refused.returncode == 2
    assert "names its time zone by an abbreviation" in one_line(refused)


def test_a_day_no_month_has_is_not_a_date_and_a_day_written_year_first_with_spaces_is_read(tmp_path):
    """The reading of a day with a zone took the last number of "2026-02-30" for an offset, and
    said the day was not named whole; "2026 12 01", written year first, was refused as
    ambiguous with the advice to write it year first."""
    env = samples_environ(tmp_path)
    fed = kcing(["feed_es", "--source", "samples", "--output", str(tmp_path / "out")], env, tmp_path)
    assert fed.returncode == 0, fed.stderr
    for since in ("2026-02-30", "2026-12-32", "2026-13-01"):
        refused = kcing(["reconcile", "--since", since], env, tmp_path)
        assert refused.returncode == 2
        assert one_line(refused) == ("kcing reconcile: --since %r is not a date (try 2024-10-16 or "
                                     "'2024-10-16 08:00')" % since)
    # Nor is a day followed by a word that is no zone read as one: "PM" made it noon UTC.
    for since in ("2024-03-31 PM", "2024-03-31 pm"):
        refused = kcing(["reconcile", "--since", since], env, tmp_path)
        assert refused.returncode == 2, (since, refused.stdout, refused.stderr)
        assert "is not a date" in one_line(refused)
    ran = kcing(["reconcile", "--since", "2024 03 31"], env, tmp_path)
    assert "since 2024-03-31 00:00 UTC" in ran.stdout + ran.stderr, (ran.stdout, ran.stderr)
    # A day that could be read either way is still said to be so, zone or not.
    refused = kcing(["reconcile", "--since", "01/12/2026 +05:30"], env, tmp_path)
    assert refused.returncode == 2 and "could mean 2026-01-12 or 2026-12-01" in one_line(refused)


@pytest.mark.parametrize("since", ["9999-12-31T23:59:59-01:00", "0001-01-01T00:00:00+01:00"])
def test_a_since_whose_offset_takes_it_outside_the_years_a_time_holds_is_said_to_be_so(tmp_path, since):
    """A date, but an hour past the year 9999 (or before the year 1) in UTC: it was called no date."""
    env = samples_environ(tmp_path, KCI_API_URL="http://127.0.0.1:%d" % closed_port())
    for args in (["feed_es", "--source", "api", "--dry-run"], ["reconcile"]):
        refused = kcing(args + ["--since", since], env, tmp_path)
        assert refused.returncode == 2, refused.stderr
        assert one_line(refused) == ("kcing %s: --since %r is outside the years 1 to 9999 in UTC (try 2024-10-16 or "
                                     "'2024-10-16 08:00')" % (args[0], since))


def test_a_weekday_named_with_a_date_must_be_the_dates_own(tmp_path):
    """python-dateutil drops a weekday: `--since 'Thursday 2020-11-04'`, a Wednesday, was read
    as that Wednesday without a word, though one of the two is a mistake."""
    env = samples_environ(tmp_path)
    fed = kcing(["feed_es", "--source", "samples", "--output", str(tmp_path / "out")], env, tmp_path)
    assert fed.returncode == 0, fed.stderr
    for since, shown in (("Wed Nov  4 09:41:00 UTC 2020", "2020-11-04 09:41 UTC"),  # as `date` writes it
                         ("Wed, 04 Nov 2020 09:41:00 +0000", "2020-11-04 09:41 UTC"),  # `date -R`
                         ("Tue 2020-11-03 23:00 -05:00", "2020-11-04 04:00 UTC")):  # its day where it is written
        ran = kcing(["reconcile", "--since", since], env, tmp_path)
        assert "since %s" % shown in ran.stdout + ran.stderr, (since, ran.stdout, ran.stderr)
    for since, named in (("Thursday 2020-11-04", "Thursday"), ("2020-11-04 sun", "sun"),
                         ("Thu 2020-11-04 +05:30", "Thu")):
        refused = kcing(["reconcile", "--since", since], env, tmp_path)
        assert refused.returncode == 2, refused.stderr
        assert one_line(refused) == ("kcing reconcile: --since %r names %s, but 2020-11-04 is a Wednesday: check the "
                                     "date, or leave the weekday out" % (since, named))
    dated = kcing(["feed_es", "--builds", str(tmp_path / "build.json"), "--date", "Thursday 2020-11-04"], env,
                  tmp_path)
    assert dated.returncode == 2
    assert one_line(dated) == ("kcing feed_es: --date 'Thursday 2020-11-04' names Thursday, but 2020-11-04 is a "
                               "Wednesday: check the date, or leave the weekday out")


def test_every_weekday_a_date_names_is_its_day_where_it_is_written():
    from kcing import flags
    from kcing.errors import ConfigError

    # A Sunday where it is written, a Monday in UTC; a Monday written, a Sunday in UTC.
    assert flags.a_date({"--since": "Sunday 2020-11-08 23:30 -05:00"}, "--since").isoformat() == "2020-11-09T04:30:00+00:00"
    assert flags.a_date({"--since": "MON 2020-11-09 00:30 +05:00"}, "--since").isoformat() == "2020-11-08T19:30:00+00:00"
    for text, named in (("Wed 2020-11-04 Thursday", "Thursday"), ("Thu Wed 2020-11-04", "Thu"),
                        ("Sat 9999-12-31 23:30", "Sat")):
        with pytest.raises(ConfigError, match="^%s" % re.escape("--since %r names %s, but " % (text, named))):
            flags.a_date({"--since": text}, "--since")


def test_a_document_date_is_a_day_of_the_index_years_in_utc():
    from kcing import flags
    from kcing.errors import ConfigError

    assert flags.a_document_date({"--date": "Thu 9998-12-31 23:59"}, "--date").isoformat() == "9998-12-31T23:59:00+00:00"
    assert flags.a_document_date({"--date": "1969-12-31 23:30 -01:00"}, "--date").isoformat() == "1970-01-01T00:30:00+00:00"
    for text in ("9998-12-31T23:30:00-01:00", "1970-01-01T00:30+01:00", "0001-01-01 +01:00"):
        with pytest.raises(ConfigError, match="^%s$" % re.escape("--date expects a day from 1970 to 9998, not %r" % text)):
            flags.a_document_date({"--date": text}, "--date")


def test_a_date_readings_in_each_order_are_named_and_a_day_with_a_zone_is_read_in_every_form():
    from kcing import flags
    from kcing.errors import ConfigError

    def read(text):
        return flags.a_date({"--since": text}, "--since").isoformat()

    # Read year first, "13/12/26" is 26 December 2013: a third order, named with the others.
    with pytest.raises(ConfigError, match=r"^--since '13/12/26' could mean 2013-12-26 or 2026-12-13 \("):
        read("13/12/26")
    with pytest.raises(ConfigError, match=r"^--since '01/12/26' could mean 2001-12-26 or 2026-01-12 or 2026-12-01 \("):
        read("01/12/26")
    # Written year first with spaces, a day that dayfirst would read as 3 January is 1 March.
    assert read("2024 03 01") == "2024-03-01T00:00:00+00:00"
    # An offset without its colon follows a day as it follows a time.
    assert read("2024-03-31 +0530") == "2024-03-30T18:30:00+00:00"
    assert read("2024-03-31 -0500") == "2024-03-31T05:00:00+00:00"
    # "am" is no zone: a day followed by it is no date, as with "PM".
    with pytest.raises(ConfigError, match=r"^--since expects a date such as"):
        read("2024-03-31 am")
    # A zone of two letters is an abbreviation, and said to be one.
    with pytest.raises(ConfigError, match=r"^--since expects a time zone as a UTC offset"):
        read("2024-03-31 ET")


def test_a_compact_date_and_time_written_year_first_is_read_not_refused_as_ambiguous():
    """`date +%Y%m%d%H%M` writes 202612011030, which python-dateutil reads as 2026-12-01 10:30
    only: it was refused as day and month either way round, with the advice to write the year
    first, as it was."""
    from kcing import flags

    for text, read in (("202612011030", "2026-12-01T10:30:00+00:00"), ("20261201103000", "2026-12-01T10:30:00+00:00"),
                       ("20261201", "2026-12-01T00:00:00+00:00"), ("20261201T1030", "2026-12-01T10:30:00+00:00")):
        assert flags.a_date({"--since": text}, "--since").isoformat() == read


def test_twelve_digits_that_are_also_a_two_digit_year_with_seconds_are_refused_not_dated_centuries_ahead(tmp_path):
    """`date +%y%m%d%H%M%S` writes 1 December 2026 at 10:15:00 as 261201101500, which
    python-dateutil reads as YYYYMMDDhhmm: the build was filed in build-2612.01.10 with exit 0."""
    build = sorted((SAMPLES / "build").glob("*.json"))[0]
    out = tmp_path / "out"
    dated = kcing(["feed_es", "--builds", str(build), "--date", "261201101500", "--output", str(out),
                   "--db", str(tmp_path / "kcing.db")], clean_environ(), tmp_path)
    assert dated.returncode == 2, dated.stdout + dated.stderr
    assert one_line(dated) == (
        "kcing feed_es: --date '261201101500' could mean 2026-12-01 or 2612-01-10 (twelve digits are YYYYMMDDhhmm "
        "or, as `date +%y%m%d%H%M%S` writes them, YYMMDDhhmmss): write the date year first, as YYYY-MM-DD")
    assert not out.exists()
    # Twelve digits that are no time with a two-digit year have the one reading.
    from kcing import flags

    assert flags.a_date({"--date": "202612011030"}, "--date").isoformat() == "2026-12-01T10:30:00+00:00"


def test_a_reconcile_since_after_the_clock_is_said_to_find_nothing(tmp_path):
    env = samples_environ(tmp_path)
    fed = kcing(["feed_es", "--source", "samples", "--output", str(tmp_path / "out")], env, tmp_path)
    assert fed.returncode == 0, fed.stderr
    ran = kcing(["reconcile", "--since", "2099-01-01"], env, tmp_path)
    assert "WARNING kcing.watermark: --since 2099-01-01 00:00:00 UTC is after this host's clock (" in ran.stderr
    assert "): no object can have been delivered since (a mistyped date or offset?)" in ran.stderr
    ran = kcing(["reconcile", "--since", "2024-01-01"], env, tmp_path)
    assert "WARNING" not in ran.stderr, ran.stderr


def test_a_since_any_time_after_the_clock_is_warned_of_and_the_clock_itself_is_not(caplog):
    # A mistyped offset puts --since hours ahead, not years: warned of all the same.
    from datetime import datetime, timedelta, timezone

    from kcing.watermark import warn_if_future

    now = datetime(2026, 12, 1, 10, 0, tzinfo=timezone.utc)
    warn_if_future(now, now, "nothing")
    assert not caplog.records
    warn_if_future(now + timedelta(minutes=1), now, "nothing")
    assert [record.getMessage() for record in caplog.records] == [
        "--since 2026-12-01 10:01:00 UTC is after this host's clock (2026-12-01 10:00:00 UTC): nothing"]


def test_a_date_naming_its_zone_by_an_abbreviation_is_refused_where_that_is_the_host_s_zone(monkeypatch):
    """Under TZ=Europe/London python-dateutil read "BST" as the host's zone (08:41 UTC); under
    any other TZ it dropped it (09:41 UTC): documents dated by --date landed on different days."""
    import time

    from kcing import flags
    from kcing.errors import ConfigError

    monkeypatch.setenv("TZ", "Europe/London")
    time.tzset()
    try:
        with pytest.raises(ConfigError, match=r"--date expects a time zone as a UTC offset"):
            flags.a_date({"--date": "2020-07-04 00:30 BST"}, "--date")
        assert flags.a_date({"--date": "2020-07-04 00:30 +01:00"}, "--date").isoformat() == "2020-07-03T23:30:00+00:00"
        assert flags.a_date({"--date": "2020-07-04 00:30"}, "--date").isoformat() == "2020-07-04T00:30:00+00:00"
    finally:
        monkeypatch.undo()
        time.tzset()


def test_the_closing_lines_of_a_feed_of_one_object_say_one_in_the_singular(tmp_path):
    """`1 documents in 1 batches` read wrong: a count of one takes its noun in the singular."""
    build = sorted((SAMPLES / "build").glob("*.json"))[0]
    done = kcing(["feed_es", "--builds", str(build), "--date", "2020-11-04", "--output", str(tmp_path / "out")],
                 samples_environ(tmp_path), tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert re.search(r"^feed_es: 1 document in 1 batch \(", done.stdout, re.M), done.stdout
    again = kcing(["feed_es", "--builds", str(build), "--date", "2020-11-04", "--output", str(tmp_path / "out")],
                  samples_environ(tmp_path), tmp_path)
    assert re.search(r"^feed_es: 0 documents in 0 batches \(", again.stdout, re.M), again.stdout


def test_a_count_takes_its_noun_in_the_plural_but_for_one():
    from kcing.plural import counted, verb

    assert [counted(number, "object") for number in (0, 1, 2)] == ["0 objects", "1 object", "2 objects"]
    assert counted(1, "index", "indices") == "1 index" and counted(3, "index", "indices") == "3 indices"
    assert (verb(1, "has", "have"), verb(2, "has", "have")) == ("has", "have")


# A date whose minutes are a long run of digits (a timestamp pasted after the time): python-dateutil
# reads them as a Decimal, which raised decimal.InvalidOperation, no ValueError: an internal error.
LONG_MINUTES = "2024-10-16 08:" + "9" * 30


@pytest.mark.parametrize("args", [
    ["reconcile", "--since", LONG_MINUTES],
    ["feed_es", "--source", "api", "--since", LONG_MINUTES, "--dry-run"],
    ["gen_samples", "--source", "api", "--since", LONG_MINUTES],
    ["feed_es", "--builds", "build.json", "--date", LONG_MINUTES, "--dry-run"],
], ids=["reconcile", "feed_es-api", "gen_samples-api", "feed_es-date"])
def test_a_date_with_a_number_too_long_in_it_is_a_usage_error_in_one_line(tmp_path, args):
    (tmp_path / "build.json").write_text("{}")
    where = "--samples-dir" if args[0] == "gen_samples" else "--db"
    done = kcing([*args, where, str(tmp_path / "x")], clean_environ(), tmp_path, timeout=60)
    assert done.returncode == 2, (done.returncode, done.stderr)
    assert "is not a date" in done.stderr or "expects a date" in done.stderr, done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr


@pytest.mark.parametrize("text, what", [
    ("2024-10-16 -05:00 08:00", "gives its offset before its time of day"),  # was read as 08:00 UTC
    ("2024-10-16 08:00 +01:00 +02:00", "gives two offsets"),  # was read by the last
    ("2024-10-16 08:00 +01:00 08:30", "gives two times of day"),  # the second replaced the first
])
def test_a_date_giving_its_offset_first_or_two_of_them_is_refused_not_read_as_another_time(tmp_path, text, what):
    for args in (["feed_es", "--source", "api", "--since", text, "--dry-run"],
                 ["feed_es", "--builds", "build.json", "--date", text, "--dry-run"]):
        (tmp_path / "build.json").write_text("{}")
        done = kcing([*args, "--db", str(tmp_path / "x.db")], clean_environ(), tmp_path, timeout=60)
        assert done.returncode == 2, (done.returncode, done.stderr)
        assert done.stderr.strip() == ("kcing feed_es: %s %r %s: give one time, then one offset (try "
                                       "'2024-10-16 08:00 +01:00')" % (args[3], text, what)), done.stderr


@pytest.mark.parametrize("text, meant", [
    ("2024-10-16 08:00 +01:00", "2024-10-16 07:00"), ("2024-10-16T08:00:00+01:00", "2024-10-16 07:00"),
    ("Wed, 16 Oct 2024 08:00:00 -0500", "2024-10-16 13:00"), ("2024-10-16 08:00:00.5 +02", "2024-10-16 06:00"),
    ("20241016T080000-0500", "2024-10-16 13:00"), ("2024-10-16 +01:00", "2024-10-15 23:00"),
])
def test_a_date_giving_one_offset_after_its_time_is_read_with_it(text, meant):
    from kcing.watermark import parse_since
    assert parse_since(text).strftime("%Y-%m-%d %H:%M") == meant
