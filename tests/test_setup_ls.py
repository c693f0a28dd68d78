"""setup_ls: the kcing entry of pipelines.yml, merged into what is there, written safely."""
from __future__ import annotations

import logging
from pathlib import Path

import pytest
import yaml

from kcing import settings as settings_module
from kcing.admin.logstash_setup import (
    CHECKOUT_PIPELINE, merge_pipeline_entry, pipeline_entry, queue_size,
)
from kcing.commands.setup_ls import run as setup_ls
from kcing.errors import ConfigError

ROOT = Path(__file__).resolve().parent.parent
SHIPPED = ROOT / "logstash" / "config" / "pipelines.yml"
DOCKER_PIPELINE = "/usr/share/logstash/pipeline/kcing.conf"
NOW = 1700000000.0  # 2023-11-14T22:13:20Z
OTHERS = """\
# Pipelines of this host; kcing manages only its own entry.
- pipeline.id: main
  # beats from the web servers
  path.config: "/etc/logstash/conf.d/*.conf"
  pipeline.workers: 2

- pipeline.id: syslog
  config.string: "input { syslog {} } output { stdout {} }"
"""


def make_settings(tmp_path, **environ):
    return settings_module.load(environ={name: str(value) for name, value in environ.items()},
                                local_file=tmp_path / "none.py")


def entry(tmp_path, **environ):
    return pipeline_entry(make_settings(tmp_path, **environ))


@pytest.fixture
def ls_home(tmp_path):
    home = tmp_path / "logstash"
    (home / "config").mkdir(parents=True)
    return home


def kcing_entry(text: str) -> dict:
    return next(item for item in yaml.safe_load(text) if item["pipeline.id"] == "kcing")


# -- the entry ---------------------------------------------------------------------------------

def test_default_entry_matches_the_shipped_pipelines_yml(tmp_path):
    shipped = kcing_entry(SHIPPED.read_text())
    assert entry(tmp_path, LS_PATH_CONFIG=DOCKER_PIPELINE) == shipped
    assert list(entry(tmp_path, LS_PATH_CONFIG=DOCKER_PIPELINE)) == list(shipped)  # same key order


def test_every_key_setup_ls_can_write_is_a_logstash_pipeline_setting(tmp_path):
    full = entry(tmp_path, LS_PATH_CONFIG=DOCKER_PIPELINE, LS_NUM_WORKERS=4, LS_QUEUE_MAX_EVENTS=1000)
    known = {"pipeline.id", "path.config", "pipeline.ecs_compatibility", "pipeline.batch.size", "pipeline.workers",
             "queue.type", "queue.max_events", "queue.max_bytes", "dead_letter_queue.enable"}
    assert set(full) == known
    assert set(kcing_entry(SHIPPED.read_text())) <= set(full)


def test_path_config_defaults_to_this_checkouts_pipeline(tmp_path):
    path = entry(tmp_path)["path.config"]
    assert Path(path).is_absolute() and Path(path) == CHECKOUT_PIPELINE and CHECKOUT_PIPELINE.is_file()
    with pytest.raises(ConfigError, match="set LS_PATH_CONFIG"):
        pipeline_entry(make_settings(tmp_path), default_config=tmp_path / "missing.conf")
    with pytest.raises(ConfigError, match="absolute"):
        entry(tmp_path, LS_PATH_CONFIG="pipeline/kcing.conf")


def test_workers_and_max_events_are_written_only_when_set(tmp_path):
    plain = entry(tmp_path)
    assert "pipeline.workers" not in plain and "queue.max_events" not in plain
    # Then Logstash takes logstash.yml's, which an administrator may have set: the settings table
    # said that 0 meant one worker per core and no limit, whatever logstash.yml says.
    from kcing.settings import SPECS
    for name, setting in (("LS_NUM_WORKERS", "pipeline.workers"), ("LS_QUEUE_MAX_EVENTS", "queue.max_events")):
        assert "0 writes none, leaving logstash.yml's %s" % setting in SPECS[name].help
    tuned = entry(tmp_path, LS_NUM_WORKERS=3, LS_QUEUE_MAX_EVENTS=5000, LS_PIPELINE_BATCH_SIZE=250)
    assert (tuned["pipeline.workers"], tuned["queue.max_events"], tuned["pipeline.batch.size"]) == (3, 5000, 250)


def test_a_memory_queue_gets_no_persisted_queue_limits(tmp_path):
    memory = entry(tmp_path, LS_QUEUE_TYPE="memory", LS_QUEUE_MAX_EVENTS=5000, LS_QUEUE_MAX_BYTES="nonsense")
    assert memory["queue.type"] == "memory"
    assert "queue.max_bytes" not in memory and "queue.max_events" not in memory


@pytest.mark.parametrize("text, written", [("512mb", "512mb"), ("1gb", "1gb"), ("2GB", "2gb"), ("1.5 g", "1.5g"),
                                           ("65536kb", "65536kb"), ("1t", "1t")])
def test_queue_sizes_are_written_as_logstash_reads_them(text, written):
    assert queue_size(text) == written


@pytest.mark.parametrize("text", ["1 gigabyte", "gb", "-1gb", "1e9", "", "32mb", "0gb"])
def test_bad_or_too_small_queue_sizes_are_refused(tmp_path, text):
    with pytest.raises(ValueError):
        queue_size(text)
    with pytest.raises(ConfigError, match="LS_QUEUE_MAX_BYTES"):
        pipeline_entry(make_settings(tmp_path).with_overrides({"LS_QUEUE_MAX_BYTES": text}))


# -- merging -----------------------------------------------------------------------------------

def test_other_pipelines_and_their_comments_are_kept(tmp_path):
    merged = merge_pipeline_entry(OTHERS, entry(tmp_path))
    assert merged.startswith(OTHERS)
    items = yaml.safe_load(merged)
    assert [item["pipeline.id"] for item in items] == ["main", "syslog", "kcing"]
    assert items[:2] == yaml.safe_load(OTHERS)


def test_the_kcing_entry_is_replaced_in_place(tmp_path):
    old = OTHERS.replace("- pipeline.id: syslog", "- pipeline.id: kcing\n  path.config: /old/kcing.conf\n"
                                                  "  # an old comment\n  queue.type: memory\n\n- pipeline.id: syslog")
    merged = merge_pipeline_entry(old, entry(tmp_path, LS_NUM_WORKERS=2))
    assert [item["pipeline.id"] for item in yaml.safe_load(merged)] == ["main", "kcing", "syslog"]
    assert kcing_entry(merged) == entry(tmp_path, LS_NUM_WORKERS=2)
    assert "/old/kcing.conf" not in merged and "# beats from the web servers" in merged
    assert merged.endswith('config.string: "input { syslog {} } output { stdout {} }"\n')


def test_merging_is_idempotent(tmp_path):
    once = merge_pipeline_entry(OTHERS, entry(tmp_path))
    assert merge_pipeline_entry(once, entry(tmp_path)) == once
    shipped_once = merge_pipeline_entry(SHIPPED.read_text(), entry(tmp_path))
    assert merge_pipeline_entry(shipped_once, entry(tmp_path)) == shipped_once


@pytest.mark.parametrize("existing", ["", "# nothing yet\n", "# no newline at the end"])
def test_an_empty_file_gets_just_the_entry(tmp_path, existing):
    merged = merge_pipeline_entry(existing, entry(tmp_path))
    assert yaml.safe_load(merged) == [entry(tmp_path)]
    assert merged.startswith(existing)


def test_indented_and_flow_style_lists_still_merge_correctly(tmp_path):
    indented = "  - pipeline.id: main\n    path.config: /a.conf\n"
    assert [item["pipeline.id"] for item in yaml.safe_load(merge_pipeline_entry(indented, entry(tmp_path)))] == [
        "main", "kcing"]
    flow = "[{pipeline.id: main, path.config: /a.conf}, {pipeline.id: kcing, queue.type: memory}]\n"
    assert yaml.safe_load(merge_pipeline_entry(flow, entry(tmp_path))) == [
        {"pipeline.id": "main", "path.config": "/a.conf"}, entry(tmp_path)]


@pytest.mark.parametrize("existing, message", [
    ("pipeline.id: main\npath.config: /a.conf\n", "not a YAML list"),
    ("- just a string\n", "pipeline 1 is not a mapping"),
    ("- pipeline.id: kcing\n- pipeline.id: kcing\n", "appears 2 times"),
    ("- pipeline.id: [unclosed\n", "not valid YAML"),
    # A damaged file nested deeper than PyYAML, which recurses, can go: refused, not a crash.
    ("[" * 1000 + "]" * 1000 + "\n", "nested too deeply"),
])
def test_files_that_are_not_a_list_of_pipelines_are_refused(tmp_path, existing, message):
    with pytest.raises(ValueError, match=message):
        merge_pipeline_entry(existing, entry(tmp_path))


# -- the command -------------------------------------------------------------------------------

def test_setup_ls_writes_a_new_file(ls_home, tmp_path, capsys):
    assert setup_ls({"--dry-run": False}, make_settings(tmp_path, LS_HOME=ls_home)) == 0
    target = ls_home / "config" / "pipelines.yml"
    assert yaml.safe_load(target.read_text()) == [entry(tmp_path)]
    assert sorted(path.name for path in target.parent.iterdir()) == ["pipelines.yml"]
    assert "wrote the kcing pipeline" in capsys.readouterr().out


def test_setup_ls_keeps_other_pipelines_backs_up_and_is_idempotent(ls_home, tmp_path, capsys):
    target = ls_home / "config" / "pipelines.yml"
    target.write_text(OTHERS)
    settings = make_settings(tmp_path, LS_HOME=ls_home)
    assert setup_ls({}, settings, now=lambda: NOW) == 0
    backup = ls_home / "config" / "pipelines.yml.20231114T221320Z.bak"
    assert backup.read_text() == OTHERS
    assert target.read_text().startswith(OTHERS)
    assert "previous file saved as %s" % backup in capsys.readouterr().out
    written = target.read_text()
    assert setup_ls({}, settings, now=lambda: NOW + 60) == 0
    assert target.read_text() == written
    assert sorted(path.name for path in target.parent.iterdir()) == ["pipelines.yml", backup.name]
    assert "already has this kcing pipeline entry" in capsys.readouterr().out
    changed = make_settings(tmp_path, LS_HOME=ls_home, LS_NUM_WORKERS=8)
    assert setup_ls({}, changed, now=lambda: NOW) == 0
    assert (ls_home / "config" / "pipelines.yml.20231114T221320Z-2.bak").read_text() == written
    assert kcing_entry(target.read_text())["pipeline.workers"] == 8


def test_dry_run_prints_the_result_and_writes_nothing(ls_home, tmp_path, capsys):
    target = ls_home / "config" / "pipelines.yml"
    target.write_text(OTHERS)
    assert setup_ls({"--dry-run": True}, make_settings(tmp_path, LS_HOME=ls_home)) == 0
    assert target.read_text() == OTHERS
    assert sorted(path.name for path in target.parent.iterdir()) == ["pipelines.yml"]
    out = capsys.readouterr().out
    assert out.startswith("# setup_ls dry run: %s would become (changed):" % target)
    assert [item["pipeline.id"] for item in yaml.safe_load(out)] == ["main", "syslog", "kcing"]



def test_a_path_config_that_names_no_file_is_written_with_a_warning(ls_home, tmp_path, caplog, capsys):
    """A mistyped LS_PATH_CONFIG was written without a word, and found only when Logstash next
    started and refused the pipeline; the file may come later, so it is still written."""
    missing = str(tmp_path / "conf.d" / "kcnig.conf")
    with caplog.at_level(logging.WARNING, logger="kcing.commands.setup_ls"):
        assert setup_ls({}, make_settings(tmp_path, LS_HOME=ls_home, LS_PATH_CONFIG=missing)) == 0
    assert caplog.messages == ["LS_PATH_CONFIG=%s names no file on this host: Logstash refuses to start the kcing "
                               "pipeline until it does (No config files found in path)" % missing]
    assert kcing_entry((ls_home / "config" / "pipelines.yml").read_text())["path.config"] == missing
    caplog.clear()
    (tmp_path / "conf.d").mkdir()
    (tmp_path / "conf.d" / "kcing.conf").write_text("input {}\n")
    for path_config in (str(tmp_path / "conf.d" / "kcing.conf"), str(tmp_path / "conf.d" / "*.conf")):
        with caplog.at_level(logging.WARNING, logger="kcing.commands.setup_ls"):
            assert setup_ls({}, make_settings(tmp_path, LS_HOME=ls_home, LS_PATH_CONFIG=path_config)) == 0
    assert caplog.messages == []


def test_a_path_config_whose_directory_or_glob_holds_no_file_logstash_reads_is_warned_of(ls_home, tmp_path, caplog):
    """Logstash reads the files in a directory (DIR/*) and the files a glob matches, leaving out
    directories and editor backups ending in ~: a directory the pipeline file was not copied into
    yet is refused as a missing file is ("No config files found in path")."""
    conf_d = tmp_path / "conf.d"
    (conf_d / "old").mkdir(parents=True)
    (conf_d / "kcing.conf~").write_text("input {}\\n")
    for path_config in (str(conf_d), str(conf_d) + "/", str(conf_d / "*")):
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="kcing.commands.setup_ls"):
            assert setup_ls({}, make_settings(tmp_path, LS_HOME=ls_home, LS_PATH_CONFIG=path_config)) == 0
        assert caplog.messages == ["LS_PATH_CONFIG=%s names no file on this host: Logstash refuses to start the kcing "
                                   "pipeline until it does (No config files found in path)" % path_config]
    (conf_d / "kcing.conf").write_text("input {}\\n")
    caplog.clear()
    for path_config in (str(conf_d), str(conf_d / "*")):
        with caplog.at_level(logging.WARNING, logger="kcing.commands.setup_ls"):
            assert setup_ls({}, make_settings(tmp_path, LS_HOME=ls_home, LS_PATH_CONFIG=path_config)) == 0
    assert caplog.messages == []


def test_a_path_config_glob_is_read_as_logstash_reads_it_braces_and_recursion_included(ls_home, tmp_path, caplog):
    """Logstash reads path.config with Ruby's Dir.glob: `{a,b}` is either name and `**/` any number
    of directories, none included, where Python's glob took the braces for part of the name and
    `**` for one directory, and warned of a pipeline file Logstash reads."""
    conf_d = tmp_path / "conf.d"
    (conf_d / "deeper").mkdir(parents=True)
    (conf_d / "kcing.conf").write_text("input {}\n")
    (conf_d / "deeper" / "extra.conf").write_text("input {}\n")
    read = [str(conf_d / "{kcing,other}.conf"), str(conf_d / "k{c{ing,x},y}.conf"), str(conf_d / "**" / "kcing.conf"),
            str(conf_d / "**" / "*.conf"), str(conf_d / "{deeper/extra,none}.conf")]
    # A `**` that ends the pattern is `*`: the files beneath the directories it matches are not read.
    (tmp_path / "nest" / "sub").mkdir(parents=True)
    (tmp_path / "nest" / "sub" / "kcing.conf").write_text("input {}\n")
    unread = [str(conf_d / "{other,another}.conf"), str(conf_d / "deeper" / "**" / "kcing.conf"),
              str(tmp_path / "nest" / "**")]
    for path_config in read + unread:
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="kcing.commands.setup_ls"):
            assert setup_ls({}, make_settings(tmp_path, LS_HOME=ls_home, LS_PATH_CONFIG=path_config)) == 0
        warned = ["LS_PATH_CONFIG=%s names no file on this host: Logstash refuses to start the kcing pipeline until it "
                  "does (No config files found in path)" % path_config]
        assert caplog.messages == ([] if path_config in read else warned), path_config
    # Dozens of groups of braces stand for more patterns than any check could try: not checked.
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="kcing.commands.setup_ls"):
        assert setup_ls({}, make_settings(tmp_path, LS_HOME=ls_home, LS_PATH_CONFIG=str(conf_d / ("{a,b}" * 60)))) == 0
    assert caplog.messages == []



def test_a_path_config_with_escaped_characters_names_the_files_ruby_reads_by_them(ls_home, tmp_path, caplog):
    """In Ruby's Dir.glob a `\\` makes the character after it itself (`\\{kcing\\}.conf` names the file
    `{kcing}.conf`), where Python's glob looks for a name holding the backslash; a `}` with no `{`
    before it is a character of the name too."""
    conf_d = tmp_path / "conf.d"
    conf_d.mkdir()
    for name in ("{kcing}.conf", "a,b.conf", "star*.conf", "x}y.conf"):
        (conf_d / name).write_text("input {}\n")
    read = [str(conf_d) + "/\\{kcing\\}.conf", str(conf_d) + "/{a\\,b,none}.conf", str(conf_d) + "/star\\*.conf",
            str(conf_d) + "/x}{y,z}.conf"]
    unread = [str(conf_d) + "/\\{a,b\\}.conf", str(conf_d) + "/s\\*.conf"]
    for path_config in read + unread:
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="kcing.commands.setup_ls"):
            assert setup_ls({}, make_settings(tmp_path, LS_HOME=ls_home, LS_PATH_CONFIG=path_config)) == 0
        assert bool(caplog.messages) == (path_config in unread), (path_config, caplog.messages)

def test_ls_home_must_be_set_and_be_a_logstash_home(tmp_path):
    with pytest.raises(ConfigError, match="LS_HOME is not set"):
        setup_ls({}, make_settings(tmp_path))
    with pytest.raises(ConfigError, match="is not a directory"):
        setup_ls({}, make_settings(tmp_path, LS_HOME=tmp_path / "missing"))
    with pytest.raises(ConfigError, match="is LS_HOME=.* a Logstash home"):
        setup_ls({}, make_settings(tmp_path, LS_HOME=tmp_path))


def package_layout(tmp_path):
    """A deb/rpm install: the home has no config/, Logstash runs with --path.settings /etc/logstash."""
    home, settings_dir = tmp_path / "usr/share/logstash", tmp_path / "etc/logstash"
    (home / "bin").mkdir(parents=True)
    settings_dir.mkdir(parents=True)
    (settings_dir / "pipelines.yml").write_text(OTHERS)
    return home, settings_dir


def test_a_package_install_is_written_in_its_settings_directory(tmp_path, capsys):
    home, settings_dir = package_layout(tmp_path)
    assert setup_ls({}, make_settings(tmp_path, LS_PATH_SETTINGS=settings_dir), now=lambda: NOW) == 0
    written = (settings_dir / "pipelines.yml").read_text()
    assert written.startswith(OTHERS) and kcing_entry(written) == entry(tmp_path)
    assert (settings_dir / "pipelines.yml.20231114T221320Z.bak").read_text() == OTHERS
    assert not (home / "config").exists()
    # LS_PATH_SETTINGS wins over LS_HOME, whose config/ the packaged service never reads.
    ls_home = tmp_path / "archive"
    (ls_home / "config").mkdir(parents=True)
    assert setup_ls({}, make_settings(tmp_path, LS_HOME=ls_home, LS_PATH_SETTINGS=settings_dir)) == 0
    assert not (ls_home / "config" / "pipelines.yml").exists()


def test_a_package_home_is_refused_naming_the_settings_directory(tmp_path):
    home, _ = package_layout(tmp_path)
    with pytest.raises(ConfigError, match="set LS_PATH_SETTINGS=/etc/logstash"):
        setup_ls({}, make_settings(tmp_path, LS_HOME=home))
    with pytest.raises(ConfigError, match="LS_PATH_SETTINGS=.* is not a directory"):
        setup_ls({}, make_settings(tmp_path, LS_PATH_SETTINGS=tmp_path / "etc/logstash/pipelines.yml"))


def test_a_file_that_is_not_a_list_is_refused_and_left_alone(ls_home, tmp_path):
    target = ls_home / "config" / "pipelines.yml"
    target.write_text("pipeline.id: main\n")
    with pytest.raises(ConfigError) as caught:
        setup_ls({}, make_settings(tmp_path, LS_HOME=ls_home))
    assert str(target) in str(caught.value) and "not a YAML list" in str(caught.value)
    assert target.read_text() == "pipeline.id: main\n"
    assert sorted(path.name for path in target.parent.iterdir()) == ["pipelines.yml"]


@pytest.mark.parametrize("text", ["\u0661gb", "\uff11gb", "1\u0660\u0660mb"])
def test_a_queue_size_in_other_digits_is_refused_not_written(tmp_path, text):
    """float() reads "١" as 1, and `\\d` matches it unless told ASCII; Logstash reads 0-9 only."""
    with pytest.raises(ValueError):
        queue_size(text)
    with pytest.raises(ConfigError, match="LS_QUEUE_MAX_BYTES"):
        pipeline_entry(make_settings(tmp_path).with_overrides({"LS_QUEUE_MAX_BYTES": text}))


@pytest.mark.parametrize("setting", ["LS_HOME", "LS_PATH_SETTINGS"])
def test_a_logstash_directory_this_user_may_not_search_is_a_one_line_error(tmp_path, setting):
    """pathlib's is_dir() raises PermissionError for a path inside a directory that may not be
    searched (it answers False only for one that is not found): setup_ls ended with an internal error."""
    from tests.feedrun import clean_environ
    from tests.test_exit_codes import kcing_bound_by_modes

    locked = tmp_path / "locked"
    (locked / "config").mkdir(parents=True)
    named = locked if setting == "LS_HOME" else locked / "config"
    locked.chmod(0)
    try:
        done = kcing_bound_by_modes(["setup_ls", "--dry-run"], clean_environ(**{setting: str(named)}), tmp_path)
    finally:
        locked.chmod(0o755)
    assert (done.returncode, done.stderr) == (2, "kcing setup_ls: %s: cannot look up %s: Permission denied\n"
                                              % (setting, locked / "config")), done.stderr
