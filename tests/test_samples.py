"""The bundled samples/ corpus is consistent: manifest, files, listing items and documents agree."""
import hashlib
import json
import re
from datetime import datetime
from pathlib import Path, PurePosixPath
from urllib.parse import unquote, urlsplit

import pytest

from kcing.documents import documents_for
from kcing.documents.fields import field_problems

HERE = Path(__file__).resolve()
SAMPLES = HERE.parents[1] / "samples"
LEGACY = HERE.parents[2] / "shared" / "data" / "upstream" / "legacy"
OBJECT_ID = re.compile(r"^[0-9a-f]{24}$")
ISO_UTC = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{3})?Z$")
LEAF = {"build": r"build\.json", "lava": r"lava-json-(?P<board>[^/]+)\.json", "boot": r"boot-(?P<board>[^/]+)\.json"}
# The storage files the two real LAVA samples are copies of.
REAL_LAVA = {"meson-gxbb-p200": "lava-json-meson-gxbb-p200.json", "jetson-tk1": "lava-json-jetson-tk1.json"}


def load_manifest() -> dict:
    return json.loads((SAMPLES / "manifest.json").read_text(encoding="utf-8"))


MANIFEST = load_manifest()
OBJECTS = MANIFEST["objects"]


def by_id(objects):
    return [pytest.param(obj, id="%s-%s" % (obj["kind"], obj["upstream_id"])) for obj in objects]


def listed_at(obj) -> datetime:
    return datetime.fromisoformat(obj["date"].replace("Z", "+00:00"))


def test_manifest_header_and_order():
    assert (MANIFEST["format"], MANIFEST["source"]) == (1, "legacy")
    assert OBJECTS == sorted(OBJECTS, key=lambda obj: (obj["date"], obj["upstream_id"]))
    assert len({obj["upstream_id"] for obj in OBJECTS}) == len(OBJECTS)


def test_the_corpus_has_what_the_readme_promises():
    kinds = [obj["kind"] for obj in OBJECTS]
    assert (kinds.count("build"), kinds.count("lava"), kinds.count("boot")) == (6, 2, 3)
    assert {obj["date"][:10] for obj in OBJECTS} == {"2020-11-04", "2020-11-19"}
    builds = [json.loads((SAMPLES / obj["path"]).read_bytes()) for obj in OBJECTS if obj["kind"] == "build"]
    assert {build["job"] for build in builds} >= {"mainline", "next", "stable"}
    assert {build["arch"] for build in builds} >= {"arm", "arm64", "x86_64"}
    assert any(build.get("build_result") == "FAIL" for build in builds)
    assert any("status" in build and "build_result" not in build for build in builds)
    assert any("+" in build["defconfig_full"] for build in builds)
    resources = {build["file_server_resource"] for build in builds}
    lava_listings = [obj["listing"] for obj in OBJECTS if obj["kind"] == "lava"]
    assert {item["file_server_resource"] for item in lava_listings} <= resources


@pytest.mark.parametrize("obj", by_id(OBJECTS))
def test_each_file_matches_its_manifest_entry(obj):
    assert obj["kind"] in ("build", "lava", "boot")
    assert OBJECT_ID.match(obj["upstream_id"])
    path = PurePosixPath(obj["path"])
    assert not path.is_absolute() and ".." not in path.parts and "\\" not in obj["path"]
    assert path == PurePosixPath(obj["kind"], obj["upstream_id"] + ".json")
    file = (SAMPLES / path).resolve()
    assert SAMPLES.resolve() in file.parents
    content = file.read_bytes()
    assert (obj["size"], obj["sha256"]) == (len(content), hashlib.sha256(content).hexdigest())


@pytest.mark.parametrize("obj", by_id(OBJECTS))
def test_each_listing_item_is_what_the_legacy_api_would_list(obj):
    item = obj["listing"]
    assert item["_id"] == {"$oid": obj["upstream_id"]}
    assert item["created_on"]["$date"] == round(listed_at(obj).timestamp() * 1000)
    assert ISO_UTC.match(obj["date"])
    # A Mongo ObjectId starts with its creation time in seconds.
    assert int(obj["upstream_id"][:8], 16) == int(listed_at(obj).timestamp())
    url = urlsplit(obj["url"])
    assert url.scheme == "https" and url.netloc in ("storage.kernelci.org", "storage.staging.kernelci.org")
    lab = "/%s" % item["lab_name"] if obj["kind"] != "build" else ""
    match = re.fullmatch("/%s%s/%s" % (re.escape(item["file_server_resource"]), re.escape(lab), LEAF[obj["kind"]]),
                         unquote(url.path))
    assert match, obj["url"]
    if obj["kind"] != "build":
        assert match.group("board") == item["board"]


@pytest.mark.parametrize("obj", by_id(OBJECTS))
def test_every_sample_becomes_documents(obj):
    documents = documents_for(obj["kind"], (SAMPLES / obj["path"]).read_bytes(), listed_at(obj))
    assert documents
    for document in documents:
        assert field_problems(document.kind, document.body) == []
        assert document.index.endswith(listed_at(obj).strftime("%Y.%m.%d"))
    item, first = obj["listing"], documents[0].body
    for key in ("job", "kernel", "arch", "defconfig_full", "build_environment", "file_server_resource"):
        assert first[key] == item[key], key
    if obj["kind"] != "build":
        assert (first["lab_name"], first["board"]) == (item["lab_name"], item["board"])


@pytest.mark.parametrize("obj", by_id([obj for obj in OBJECTS if obj["kind"] == "lava"]))
def test_lava_samples_are_byte_for_byte_the_real_files(obj):
    real = LEGACY / REAL_LAVA[obj["listing"]["board"]]
    if not real.is_file():
        pytest.skip("%s is absent (real files live in shared/ beside the repository)" % real)
    assert (SAMPLES / obj["path"]).read_bytes() == real.read_bytes()


def test_no_stray_files():
    listed = {obj["path"] for obj in OBJECTS}
    present = {path.relative_to(SAMPLES).as_posix() for path in SAMPLES.rglob("*.json") if path.name != "manifest.json"}
    assert present == listed


def test_a_manifest_entry_whose_date_is_not_text_is_kept_and_sorts_as_undated(tmp_path):
    """A manifest edited by hand may give an entry a date that is a number: rewriting the
    manifest compared it with the others' text dates and gen_samples ended with an internal
    error; it is kept as it is, first, with the entries that have no date."""
    from kcing.samples import MANIFEST, MANIFEST_FORMAT, SamplesWriter
    entry = {"kind": "build", "upstream_id": "b", "path": "build/b.json", "url": "https://storage.example/b.json",
             "sha256": "0" * 64}
    objects = [dict(entry, upstream_id="dated", date="2020-11-19T07:00:00Z"), dict(entry, upstream_id="number", date=5),
               dict(entry, upstream_id="list", date=["x"])]
    (tmp_path / MANIFEST).write_text(json.dumps({"format": MANIFEST_FORMAT, "source": "legacy", "objects": objects}))
    writer = SamplesWriter(str(tmp_path), "legacy", 1 << 20)
    writer.save_manifest()
    saved = json.loads((tmp_path / MANIFEST).read_text())["objects"]
    assert [(item["upstream_id"], item["date"]) for item in saved] == [
        ("list", ["x"]), ("number", 5), ("dated", "2020-11-19T07:00:00Z")]
