"""What setup_kbn and backup_kbn share: a Kibana client from settings, the saved objects file.

The file is `<kibana dir>/saved_objects.ndjson` (default: this checkout's kibana/), written with
links into the Kibana space starting with `{{KB_URL}}` so that it is the same file whichever
Kibana it came from, and so that links in dashboards follow the Kibana it is imported into.
"""
from __future__ import annotations

import base64
import os
import re
from pathlib import Path
from typing import List, Optional
from urllib.parse import urlsplit

from kcing.admin.kibana import (
    KibanaClient, backup_name, canonical_ndjson, check_space, count_by_type, hide_url, parse_ndjson, restore_url,
)
from kcing.commands import said
from kcing.errors import ConfigError, reading_failure
from kcing.http import new_session, warn_cleartext_credentials
from kcing.files import holds, read_regular_text, write_new
from kcing.transport import check_ca_bundle, netrc_credentials

SAVED_OBJECTS = "saved_objects.ndjson"
BACKUPS = "backups"
# A backup's name (kcing.admin.kibana.backup_name), with -2, -3 ... for a later one of the same second.
_BACKUP_NAME = re.compile(r"saved_objects-([0-9]{8}T[0-9]{6}Z)(?:-([0-9]{1,9}))?\.ndjson")
CHECKOUT_KIBANA_DIR = Path(__file__).resolve().parents[2] / "kibana"
# Kibana takes about a minute to start next to a fresh Elasticsearch.
DEFAULT_WAIT = 60.0


def kibana_dir(args: dict) -> Path:
    """--kibana-dir, else the clone's kibana/; an installed package has none (`pip install .`
    does not copy it), and its site-packages is no place for Kibana's objects and backups."""
    given = args.get("--kibana-dir")
    if given:
        return Path(given)
    if not CHECKOUT_KIBANA_DIR.is_dir():
        raise ConfigError("no kibana/ directory at %s, where a clone of kcing has it: pass --kibana-dir DIR"
                          % CHECKOUT_KIBANA_DIR)
    return CHECKOUT_KIBANA_DIR


def make_client(args: dict, settings, session=None) -> KibanaClient:
    auth = None
    if settings.KB_API_KEY:
        if settings.KB_USER or settings.KB_PASSWORD:
            raise ConfigError("set either KB_API_KEY or KB_USER/KB_PASSWORD, not both")
        warn_cleartext_credentials("the Kibana API key (KB_API_KEY)", {"KB_URL": [settings.KB_URL]})
    elif settings.KB_USER or settings.KB_PASSWORD:
        if not (settings.KB_USER and settings.KB_PASSWORD):
            raise ConfigError("KB_USER and KB_PASSWORD must be set together")
        auth = (settings.KB_USER, settings.KB_PASSWORD)
        warn_cleartext_credentials("the Kibana password (KB_PASSWORD)", {"KB_URL": [settings.KB_URL]})
    else:
        # The netrc entry for Kibana's host, as for a Logstash input: never the `default` entry,
        # which requests would send, a password kept for any host.
        auth = netrc_credentials(settings.KB_URL)
    space = args.get("--space")
    if space is not None:
        try:
            check_space(space)
        except ConfigError:
            raise ConfigError("invalid --space %r: a Kibana space id takes lowercase letters, digits, '_' and '-'"
                              % space) from None
    space = settings.KB_SPACE if space is None else space
    refuse_space_in_url(settings.KB_URL)
    check_ca_bundle("KB_CA_BUNDLE", settings.KB_CA_BUNDLE)
    session = session or new_session(pool_size=1, verify=settings.KB_CA_BUNDLE, netrc=False)
    return KibanaClient(session, settings.KB_URL, space, auth, deadline=settings.KB_REQUEST_DEADLINE,
                        api_key=encoded_api_key(settings.KB_API_KEY))


def refuse_space_in_url(url: str) -> None:
    """A space's URL copied from the browser (`.../s/<id>`) as KB_URL: Kibana takes any space id
    in a path without checking it (elastic/kibana#67164), so an import into a mistyped one
    succeeded where nobody sees it; the space goes in KB_SPACE, which is checked."""
    found = re.search(r"/s/([^/]+)/*$", urlsplit(url).path)
    if found:
        raise ConfigError("KB_URL %s ends in the path of the Kibana space %r: set KB_URL to Kibana's address without "
                          "it, and KB_SPACE (or --space) to %s" % (url, found.group(1), found.group(1)))


def encoded_api_key(key: str) -> str:
    """KB_API_KEY as Kibana takes it: the encoded value, or its id and key as `id:api_key` (the
    form Logstash and Beats take, and ES_API_KEY too), which is encoded here."""
    if ":" not in key:
        return key
    return base64.b64encode(key.encode("utf-8")).decode("ascii")


def read_saved_objects(path: Path, url: str) -> List[dict]:
    """The file's objects, the placeholder in them replaced by the path of `url` (restore_url)."""
    try:
        text = restore_url(read_regular_text(path), url)
    except FileNotFoundError:
        raise ConfigError("no saved objects file at %s: %s" % (path, _missing_file_advice(path.parent))) from None
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError("cannot read %s: %s" % (path, reading_failure(error))) from None
    try:
        objects = parse_ndjson(text)
    except ValueError as error:
        raise ConfigError("%s: %s" % (path, error)) from None
    if not objects:
        raise ConfigError("%s holds no saved objects" % path)
    seen = set()
    for obj in objects:
        key = (obj["type"], obj["id"])
        if key in seen:
            raise ConfigError("%s holds %s %s twice" % (path, *key))
        seen.add(key)
    return objects


def _missing_file_advice(directory: Path) -> str:
    """What to do when the saved objects file is not in `directory`. One that does not exist is a
    mistyped --kibana-dir (the clone's kibana/ is checked before): passing --kibana-dir, as the
    advice for a directory without the file goes, is what the user had done."""
    if not directory.is_dir():
        return "directory %s does not exist: check --kibana-dir" % directory
    return "run backup_kbn first or pass --kibana-dir"


def free_path(directory: Path, name: str) -> Path:
    """`directory/name`, or `name` with -2, -3 ... before the suffix if that is taken."""
    path = directory / name
    stem, suffix, number = path.stem, path.suffix, 2
    while path.exists():
        path = directory / ("%s-%d%s" % (stem, number, suffix))
        number += 1
    return path


def save_backup(directory: Path, objects: List[dict], url: str, when: float) -> Optional[Path]:
    """Save `objects` into a new backup in `directory`, unless the newest backup there holds them
    byte for byte already (a setup_kbn run again with nothing changed in Kibana, from cron or at
    every start of the compose service): that file is then the copy of what the import changes."""
    if not objects:
        said("setup_kbn: %s holds no saved objects yet, nothing to back up" % url)
        return None
    content = hide_url(canonical_ndjson(objects), url).encode("utf-8")
    newest = newest_backup(directory)
    if newest is not None and holds(newest, content):
        said("setup_kbn: current objects (%s) are those of the newest backup, %s: no new backup written"
             % (count_by_type(objects), newest))
        return newest
    path = free_path(directory, backup_name(when))
    # Never over another backup: two setup_kbn runs within one second chose one free name, and
    # the second's rename replaced the first's backup, both saying they had saved theirs there.
    while not write_new(path, content):
        path = free_path(directory, backup_name(when))
    said("setup_kbn: current objects (%s) saved to %s" % (count_by_type(objects), path))
    return path


def newest_backup(directory: Path) -> Optional[Path]:
    """The latest backup in `directory` by the time (and number) in its name, or None; files
    named otherwise (a copy kept by hand) are not backups setup_kbn wrote."""
    try:
        names = os.listdir(directory)
    except OSError:  # no backups yet, or none this user may list: a new one is written (or refused)
        return None
    found = []
    for name in names:
        named = _BACKUP_NAME.fullmatch(name)
        if named:
            found.append(((named.group(1), int(named.group(2) or 1)), name))
    return directory / max(found)[1] if found else None
