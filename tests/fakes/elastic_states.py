"""Index states for the Elasticsearch emulator: closed indices, blocks, aliases and data streams.

What a node answers for each, as `tests/test_real_engine.py` records them: `_mget` gives a
per-document `index_closed_exception` for a closed index, `cluster_block_exception` for one with
a read block, `illegal_argument_exception` for an alias of several indices and
`index_not_found_exception` for a data stream (a single-index operation never resolves one);
`_bulk` items fail on closed and write-blocked indices and on data streams unless the action is
`create`. A DELETE naming an index with a read-only or metadata block is refused whole (403
`cluster_block_exception`, naming each such index); `_cat/indices` listing an index with a
metadata block is refused so too, as are `GET /<index>` and `GET /<index>/_settings`. `_resolve/index` says what a name is,
`GET /<index>/_settings/<filter>` which blocks an index has.

Routes: `POST /<index>/_close|_open`, `PUT /<index>/_block/<block>`, `GET|PUT /<index>/_settings[/<filter>]`,
`POST /_aliases` (add, remove), `GET /_resolve/index/<names>`.
"""
from __future__ import annotations

import time
from typing import List, Optional

from tests.fakes.elastic_store import simple_match

# The block settings and what a request they stop is answered (status, the block's description).
BLOCKS = {
    "index.blocks.read_only": (403, "FORBIDDEN/5/index read-only (api)"),
    "index.blocks.read": (403, "FORBIDDEN/7/index read (api)"),
    "index.blocks.write": (403, "FORBIDDEN/8/index write (api)"),
    "index.blocks.read_only_allow_delete": (429, "TOO_MANY_REQUESTS/12/disk usage exceeded flood-stage watermark, "
                                                 "index has read-only-allow-delete block"),
    "index.blocks.metadata": (403, "FORBIDDEN/9/index metadata (api)"),
}
WRITE_BLOCKS = ("index.blocks.read_only", "index.blocks.write", "index.blocks.read_only_allow_delete")
# The blocks under which a node refuses to delete an index, in the order its answer names them.
# One such index among those a DELETE names refuses the whole DELETE: nothing is deleted.
DELETE_BLOCKS = ("index.blocks.metadata", "index.blocks.read_only")
BLOCK_NAMES = {"read_only": "index.blocks.read_only", "read": "index.blocks.read", "write": "index.blocks.write",
               "metadata": "index.blocks.metadata"}
STATE_ROUTE_PARAMS = {
    "close_index": {"allow_no_indices", "expand_wildcards", "ignore_unavailable", "master_timeout", "timeout",
                    "wait_for_active_shards"},
    "open_index": {"allow_no_indices", "expand_wildcards", "ignore_unavailable", "master_timeout", "timeout",
                   "wait_for_active_shards"},
    "add_block": {"allow_no_indices", "expand_wildcards", "ignore_unavailable", "master_timeout", "timeout"},
    "get_settings": {"allow_no_indices", "expand_wildcards", "flat_settings", "ignore_unavailable",
                     "include_defaults", "local", "master_timeout"},
    "put_settings": {"allow_no_indices", "expand_wildcards", "flat_settings", "ignore_unavailable",
                     "master_timeout", "preserve_existing", "timeout"},
    "aliases": {"master_timeout", "timeout"},
    "resolve_index": {"expand_wildcards", "ignore_unavailable", "allow_no_indices"},
}


class IndexStates:
    """A mixin of ElasticsearchEmulator: `self.aliases` {alias: [index]}, `self.data_streams`
    {name: [backing index]}; an Index's `closed` flag and `index.blocks.*` settings."""

    def _state_route(self, method: str, route: str, s: List[str], allowed):
        """(name, handler, args) for the routes of this module, or None."""
        head = s[0]
        if head == "_aliases" and len(s) == 1:
            allowed("POST")
            return "aliases", self._post_aliases, ()
        if head == "_resolve" and s[1:2] == ["index"] and len(s) == 3:
            allowed("GET")
            return "resolve_index", self._resolve_index, (s[2],)
        if len(s) >= 2 and not head.startswith("_"):
            if s[1] in ("_close", "_open") and len(s) == 2:
                allowed("POST")
                return ("close_index", self._close, (head, True)) if s[1] == "_close" else \
                    ("open_index", self._close, (head, False))
            if s[1] == "_block" and len(s) == 3:
                allowed("PUT")
                return "add_block", self._add_block, (head, s[2])
            if s[1] == "_settings" and len(s) <= 3:
                allowed("GET", "PUT")
                if method == "PUT":
                    return "put_settings", self._put_settings, (head,)
                return "get_settings", self._get_settings, (head, s[2] if len(s) == 3 else None)
        return None

    # -- what a name is ----------------------------------------------------------------------

    def single_index(self, name: str) -> str:
        """The concrete index a single-index operation (a get, an _mget entry) on `name` reads."""
        from tests.fakes.elastic_server import EsError, index_not_found
        if name in self.indices:
            return name
        if name == "_all":
            # A node resolves it to every index, however many there are, and refuses to pick one.
            raise EsError(400, "illegal_argument_exception", "unable to return a single index as the index and "
                          "options provided got resolved to multiple indices")
        targets = self.aliases.get(name)
        if targets:
            if len(targets) > 1:
                raise EsError(400, "illegal_argument_exception",
                              "alias [%s] has more than one index associated with it [%s], can't execute a single "
                              "index op" % (name, ", ".join(sorted(targets))))
            return targets[0]
        raise index_not_found(name)

    def check_readable(self, name: str) -> None:
        from tests.fakes.elastic_server import EsError
        index = self.indices[name]
        if index.closed:
            raise EsError(400, "index_closed_exception", "closed", index_uuid=index.uuid, index=name)
        if index.settings.get("index.blocks.read") == "true":
            raise self.block_error(name, "index.blocks.read")
        if index.unassigned:
            raise EsError(503, "no_shard_available_action_exception",
                          "No shard available for [org.elasticsearch.action.get.MultiGetShardRequest/unset]")
        if name in self.read_denied:
            # What a node with security on answers per document for an index the user's roles
            # do not grant `read` on (8.x wording).
            raise EsError(403, "security_exception",
                          "action [indices:data/read/mget[shard]] is unauthorized for user [%s] with effective roles "
                          "[kcing_writer] on indices [%s], this action is granted by the index privileges [read,all]"
                          % (self.user or "elastic", name))

    def check_writable(self, name: str) -> None:
        from tests.fakes.elastic_server import EsError
        index = self.indices[name]
        if index.closed:
            raise EsError(400, "index_closed_exception", "closed", index_uuid=index.uuid, index=name)
        for setting in WRITE_BLOCKS:
            if index.settings.get(setting) == "true":
                raise self.block_error(name, setting)

    def check_deletable(self, names: List[str]) -> None:
        """Refuse a DELETE of `names` (403) when any of them has a block that stops a delete; the
        reason names each such index, in the request's order, with its blocks."""
        from tests.fakes.elastic_server import EsError
        reasons = []
        for name in names:
            found = [BLOCKS[setting][1] for setting in DELETE_BLOCKS
                     if self.indices[name].settings.get(setting) == "true"]
            if found:
                reasons.append("index [%s] blocked by: [%s];" % (name, ", ".join(found)))
        if reasons:
            raise EsError(403, "cluster_block_exception", "".join(reasons))

    def check_metadata_readable(self, names: List[str]) -> None:
        """Refuse a request describing `names` (`_cat/indices`, `GET /<index>[/_settings]`) with 403 when any of them has a
        metadata block, naming each such index."""
        from tests.fakes.elastic_server import EsError
        blocked = [name for name in names if self.indices[name].settings.get("index.blocks.metadata") == "true"]
        if blocked:
            raise EsError(403, "cluster_block_exception", "".join(
                "index [%s] blocked by: [%s];" % (name, BLOCKS["index.blocks.metadata"][1]) for name in blocked))

    @staticmethod
    def block_error(name: str, setting: str):
        from tests.fakes.elastic_server import EsError
        status, description = BLOCKS[setting]
        return EsError(status, "cluster_block_exception", "index [%s] blocked by: [%s];" % (name, description))

    def data_stream_write(self, op: str, name: str, source) -> Optional[str]:
        """The backing index a bulk `op` on `name` writes to when `name` is (or a template makes it) a
        data stream; None when it is not one. An `index` op creates the stream, then is refused."""
        from tests.fakes.elastic_server import EsError, index_not_found
        if op not in ("index", "create"):
            return None
        if name not in self.data_streams:
            if name in self.indices or name in self.aliases:
                return None
            matched = self.matching_template(name)
            if matched is None or "data_stream" not in matched[1]:
                return None
            day = time.strftime("%Y.%m.%d", time.gmtime(self.clock()))
            backing = ".ds-%s-%s-000001" % (name, day)
            self._create_index(backing, {"settings": {"index.hidden": True}})
            self.data_streams[name] = [backing]
        if op != "create":
            cause = index_not_found(name).cause()
            cause["excluded_ds"] = "true"
            raise EsError(400, "illegal_argument_exception",
                          "only write ops with an op_type of create are allowed in data streams", caused_by=cause)
        return self.data_streams[name][-1]

    # -- handlers ----------------------------------------------------------------------------

    def _close(self, expression: str, closing: bool, query, headers, body):
        from tests.fakes.elastic_server import _Answer
        with self._lock:
            names = self.resolve(expression, query)
            if not closing:
                self.check_shard_limit(sum(self.indices[name].shards * (1 + self.indices[name].replicas)
                                           for name in names if self.indices[name].closed))
            for name in names:
                self.indices[name].closed = closing
        if closing:
            return _Answer(200, {"acknowledged": True, "shards_acknowledged": True,
                                 "indices": {name: {"closed": True} for name in names}})
        return _Answer(200, {"acknowledged": True, "shards_acknowledged": True})

    def _add_block(self, expression: str, block: str, query, headers, body):
        from tests.fakes.elastic_server import _Answer, bad_request
        setting = BLOCK_NAMES.get(block)
        if setting is None:
            raise bad_request("unknown block [%s]" % block)
        with self._lock:
            names = self.resolve(expression, query)
            for name in names:
                self.indices[name].settings[setting] = "true"
        return _Answer(200, {"acknowledged": True, "shards_acknowledged": True,
                             "indices": [{"name": name, "blocked": True} for name in names]})

    def _put_settings(self, expression: str, query, headers, body):
        from tests.fakes.elastic_server import _Answer, normalize_settings
        spec = self._json_body(headers, body, required=True)
        settings = spec.get("settings", spec) if isinstance(spec.get("settings"), dict) else spec
        removed = sorted(name if name.startswith("index.") else "index." + name
                         for name, value in settings.items() if value is None)
        changed = normalize_settings({name: value for name, value in settings.items() if value is not None})
        with self._lock:
            for name in self.resolve(expression, query):
                index = self.indices[name]
                for setting in removed:
                    index.settings.pop(setting, None)
                index.settings.update(changed)
        return _Answer(200, {"acknowledged": True})

    def _get_settings(self, expression: str, filter_: Optional[str], query, headers, body):
        from tests.fakes.elastic_server import _Answer, _json_bool, nested_settings
        flat = _json_bool(query.get("flat_settings"), "flat_settings")
        with self._lock:
            found = {}
            names = self.resolve(expression, query)
            self.check_metadata_readable(names)
            for name in names:
                settings = self.indices[name].settings
                if filter_:
                    settings = {key: value for key, value in settings.items()
                                if any(simple_match(key, part) for part in filter_.split(","))}
                    if not settings:
                        continue
                found[name] = {"settings": dict(sorted(settings.items())) if flat else nested_settings(settings)}
        return _Answer(200, found)

    def _post_aliases(self, query, headers, body):
        from tests.fakes.elastic_server import _Answer, bad_request, index_not_found
        spec = self._json_body(headers, body, required=True)
        actions = spec.get("actions")
        if not isinstance(actions, list) or not actions:
            raise bad_request("Validation Failed: 1: no alias actions were specified;",
                              "action_request_validation_exception")
        with self._lock:
            for action in actions:
                (kind, detail), = action.items()
                if kind not in ("add", "remove"):
                    raise bad_request("unknown alias action [%s]" % kind)
                index, alias = detail.get("index"), detail.get("alias")
                if index not in self.indices:
                    raise index_not_found(index)
                if alias in self.indices:
                    raise bad_request("Invalid alias name [%s]: an index or data stream exists with the same name "
                                      "as the alias" % alias, "invalid_alias_name_exception")
                targets = self.aliases.setdefault(alias, [])
                if kind == "add" and index not in targets:
                    targets.append(index)
                elif kind == "remove" and index in targets:
                    targets.remove(index)
                if not targets:
                    del self.aliases[alias]
        return _Answer(200, {"acknowledged": True, "errors": False})

    def _resolve_index(self, expression: str, query, headers, body):
        from tests.fakes.elastic_server import _Answer, _json_bool, index_not_found
        expand = query.get("expand_wildcards", "open")
        with_open, with_closed, with_hidden = (("all" in expand or state in expand) for state in
                                               ("open", "closed", "hidden"))
        ignore_unavailable = _json_bool(query.get("ignore_unavailable"), "ignore_unavailable")
        indices, aliases, streams = set(), set(), set()
        with self._lock:
            for part in expression.split(","):
                if "*" in part:
                    # A pattern takes the indices whose state expand_wildcards names (open by
                    # default: a closed index is left out unless asked for, as a hidden one is).
                    indices.update(n for n, index in self.indices.items() if simple_match(n, part)
                                   and (with_hidden or not index.hidden)
                                   and (with_closed if index.closed else with_open))
                    aliases.update(n for n in self.aliases if simple_match(n, part))
                    streams.update(n for n in self.data_streams if simple_match(n, part))
                elif part in self.indices:
                    indices.add(part)
                elif part in self.aliases:
                    aliases.add(part)
                elif part in self.data_streams:
                    streams.add(part)
                elif not ignore_unavailable:
                    raise index_not_found(part)
            owner = {backing: name for name, backings in self.data_streams.items() for backing in backings}
            answer = {"indices": [], "aliases": [], "data_streams": []}
            for name in sorted(indices):
                index = self.indices[name]
                # In alphabetical order, as the node lists them: ["closed", "hidden"], ["hidden", "open"].
                entry = {"name": name}
                # The aliases that point at it, when any, as the node lists them.
                pointing = sorted(alias for alias, targets in self.aliases.items() if name in targets)
                if pointing:
                    entry["aliases"] = pointing
                entry["attributes"] = sorted((["hidden"] if index.hidden else []) + ["closed" if index.closed else "open"])
                if name in owner:
                    entry["data_stream"] = owner[name]
                answer["indices"].append(entry)
            answer["aliases"] = [{"name": name, "indices": sorted(self.aliases[name])} for name in sorted(aliases)]
            answer["data_streams"] = [{"name": name, "backing_indices": list(self.data_streams[name]),
                                       "timestamp_field": "@timestamp"} for name in sorted(streams)]
        return _Answer(200, answer)
