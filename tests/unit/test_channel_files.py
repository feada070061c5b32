"""The channel files (channeldata.json, index.html), made again from every subdir's state whenever a subdir
publishes: on the event path and in full runs, never written when current, repaired by the nightly run, safe
under concurrent publications of different subdirs (MemoryStore's pause hooks hold one while the other
commits), and escaping whatever package metadata holds."""

from __future__ import annotations

import base64
import hashlib
import json
import re
import subprocess
import sys
import threading
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from reindexer.channel_files import ChannelState, refresh_channel_files
from reindexer.channel_page import MAX_PAGE_BUILDS
from reindexer.contract import (
    CHANNEL_LEASE_FILE,
    CHANNEL_STATE_FILE,
    CHANNELDATA_JSON,
    INDEX_HTML,
    join_key,
)
from reindexer.indexer import index_channel
from reindexer.options import IndexOptions, PublishSettings
from reindexer.storage.memory import MemoryStore
from reindexer.store import PreconditionFailedError, TransientStoreError
from reindexer.updater import update_subdir
from tests.support.archives import index_json, package_bytes
from tests.support.handler_probe import HANDLER_MODULES
from tests.support.stores import Crash

CHANNEL = "dev"
INJECTED = '<script>document.title="pwned"</script>'


def package(
    name: str,
    version: str = "1.0",
    build: str = "h0_0",
    extension: str = ".conda",
    about: dict[str, Any] | None = None,
    run_exports: dict[str, Any] | None = None,
    **index: Any,
) -> tuple[str, bytes]:
    filename = f"{name}-{version}-{build}{extension}"
    extra = {}
    if about is not None:
        extra["info/about.json"] = json.dumps(about).encode()
    if run_exports is not None:
        extra["info/run_exports.json"] = json.dumps(run_exports).encode()
    return filename, package_bytes(filename, index_json(name, version, build, **index), extra)


def upload(store: MemoryStore, subdir: str, built: tuple[str, bytes]) -> str:
    filename, data = built
    store.write(join_key(CHANNEL, subdir, filename), data, content_type="application/octet-stream")
    return filename


def channeldata(store: MemoryStore) -> dict[str, Any]:
    document: dict[str, Any] = json.loads(store.read(join_key(CHANNEL, CHANNELDATA_JSON))[0])
    return document


def page(store: MemoryStore) -> str:
    return store.read(join_key(CHANNEL, INDEX_HTML))[0].decode()


def options(**fields: Any) -> IndexOptions:
    return IndexOptions(jobs=2, **fields)


def channel_writes(store: MemoryStore) -> list[str]:
    """Every write of a channel-level key from now on (the files, their lease and state)."""
    written: list[str] = []
    keys = {
        join_key(CHANNEL, name)
        for name in (CHANNELDATA_JSON, INDEX_HTML, CHANNEL_LEASE_FILE, CHANNEL_STATE_FILE)
    }
    for key in keys:
        store.on("PutObject", key, lambda _, key: written.append(key))
        store.on("DeleteObject", key, lambda _, key: written.append(f"delete {key}"))
    return written


@pytest.fixture
def store() -> MemoryStore:
    """A channel whose noarch holds one package, indexed by a full run."""
    store = MemoryStore("channel-files")
    upload(store, "noarch", package("tool", about={"summary": "A tool", "home": "https://tool.example"}))
    report = index_channel(store, CHANNEL, options())
    assert report.ok and report.channel_files is not None and report.channel_files.error is None
    return store


# --- when they are made, and what is written ---------------------------------------------------------------


def test_a_full_run_writes_both_files_and_the_channel_state_and_leaves_no_lease(store):
    assert channeldata(store)["packages"]["tool"]["summary"] == "A tool"
    assert "tool-1.0-h0_0.conda" in page(store)
    assert store.head(join_key(CHANNEL, CHANNEL_LEASE_FILE)) is None
    state = ChannelState.from_bytes(store.read(join_key(CHANNEL, CHANNEL_STATE_FILE))[0])
    assert set(state.sources) == {"noarch"}
    for name in (CHANNELDATA_JSON, INDEX_HTML):
        data, etag = store.read(join_key(CHANNEL, name))
        assert state.files[name] == {"etag": etag, "sha256": hashlib.sha256(data).hexdigest()}
    assert store.objects[join_key(CHANNEL, INDEX_HTML)].content_type == "text/html; charset=utf-8"
    assert store.objects[join_key(CHANNEL, CHANNELDATA_JSON)].content_type == "application/json"


def test_a_publication_on_the_event_path_makes_them_again_with_every_subdir(store):
    name = upload(store, "linux-64", package("lib", run_exports={"weak": ["lib >=1.0,<2"]}, license="MIT"))

    report = update_subdir(store, CHANNEL, "linux-64", [name], options())

    assert report.written and report.channel_files is not None
    assert report.channel_files.written == [CHANNELDATA_JSON, INDEX_HTML]
    document = channeldata(store)
    assert set(document["packages"]) == {"lib", "tool"}
    assert document["subdirs"] == ["linux-64", "noarch"]
    assert document["packages"]["lib"]["run_exports"] == {"1.0": {"weak": ["lib >=1.0,<2"]}}
    assert "lib-1.0-h0_0.conda" in page(store) and "tool-1.0-h0_0.conda" in page(store)


def test_an_update_that_publishes_nothing_leaves_them_alone(store):
    name = upload(store, "linux-64", package("lib"))
    update_subdir(store, CHANNEL, "linux-64", [name], options())
    written = channel_writes(store)

    report = update_subdir(store, CHANNEL, "linux-64", [name], options())  # a duplicate notification

    assert not report.written and report.channel_files is None
    assert written == []


def test_files_whose_bytes_are_current_are_not_written_again(store):
    written = channel_writes(store)

    report = refresh_channel_files(store, CHANNEL, options(), subdirs={"noarch"})

    assert report.written == [] and report.error is None
    # Only the lease: taken and released. The files were compared by their digests and a HEAD each.
    lease = join_key(CHANNEL, CHANNEL_LEASE_FILE)
    assert written == [lease, f"delete {lease}"]


def test_a_full_run_that_changes_nothing_writes_nothing_and_takes_no_lease(store):
    store.requests.clear()

    report = index_channel(store, CHANNEL, options())

    assert report.channel_files is None
    assert store.requests["PutObject"] == 0 and store.requests["DeleteObject"] == 0


@pytest.mark.parametrize("damage", ["deleted", "replaced"])
def test_the_nightly_run_repairs_a_file_someone_deleted_or_replaced(store, damage):
    key = join_key(CHANNEL, INDEX_HTML)
    if damage == "deleted":
        store.delete(key)
    else:
        store.write(key, b"<p>defaced</p>", content_type="text/html")
    channeldata_etag = store.head(join_key(CHANNEL, CHANNELDATA_JSON)).etag

    report = index_channel(store, CHANNEL, options())

    assert report.channel_files is not None and report.channel_files.written == [INDEX_HTML]
    assert "tool-1.0-h0_0.conda" in page(store)
    assert store.head(join_key(CHANNEL, CHANNELDATA_JSON)).etag == channeldata_etag


def test_new_publish_settings_rewrite_both_files_with_their_cache_control(store):
    report = index_channel(store, CHANNEL, options(settings=PublishSettings(private=True)))

    assert report.channel_files is not None
    assert report.channel_files.written == [CHANNELDATA_JSON, INDEX_HTML]
    assert store.objects[join_key(CHANNEL, INDEX_HTML)].cache_control == "private, max-age=60"


def test_a_failed_regeneration_never_fails_the_publication_and_the_nightly_run_repairs_it(store):
    name = upload(store, "linux-64", package("lib"))
    store.fail("PutObject", join_key(CHANNEL, INDEX_HTML), TransientStoreError("slow down"))

    report = update_subdir(store, CHANNEL, "linux-64", [name], options())

    assert report.error is None and report.written, "the subdir is published"
    assert report.channel_files is not None and report.channel_files.error == "slow down"
    assert "lib-1.0-h0_0.conda" not in page(store)
    assert store.head(join_key(CHANNEL, CHANNEL_LEASE_FILE)) is None

    nightly = index_channel(store, CHANNEL, options())

    # channeldata.json was written before the failure, but the channel state was not committed: it is
    # written again too (its bytes are not the ones the state knows).
    assert nightly.channel_files is not None and nightly.channel_files.written == [
        CHANNELDATA_JSON,
        INDEX_HTML,
    ]
    assert "lib-1.0-h0_0.conda" in page(store) and "lib" in channeldata(store)["packages"]


def test_a_lost_commit_of_the_channel_state_makes_them_again(store):
    # As if another writer committed the channel state meanwhile (a lease taken over after it expired).
    store.fail("PutObject", join_key(CHANNEL, CHANNEL_STATE_FILE), PreconditionFailedError("412"))
    name = upload(store, "linux-64", package("lib"))

    report = update_subdir(store, CHANNEL, "linux-64", [name], options())

    assert report.channel_files is not None
    assert report.channel_files.error is None and report.channel_files.attempts == 2
    assert set(channeldata(store)["packages"]) == {"lib", "tool"}


def test_without_a_channel_state_the_channel_folder_is_listed_once_for_its_subdirs(store):
    update_subdir(store, CHANNEL, "linux-64", [upload(store, "linux-64", package("lib"))], options())
    update_subdir(store, CHANNEL, "win-64", [upload(store, "win-64", package("winlib"))], options())
    store.delete(join_key(CHANNEL, CHANNEL_STATE_FILE))
    name = upload(store, "linux-64", package("lib", "1.1"))
    store.requests.clear()

    update_subdir(store, CHANNEL, "linux-64", [name], options())

    assert store.requests["ListObjectsV2"] == 1
    assert set(channeldata(store)["packages"]) == {"lib", "tool", "winlib"}, "win-64 was found by the listing"
    name = upload(store, "linux-64", package("lib", "1.2"))
    store.requests.clear()

    update_subdir(store, CHANNEL, "linux-64", [name], options())

    assert store.requests["ListObjectsV2"] == 0, "then the channel state names the subdirs"


def test_a_subdir_whose_packages_are_all_gone_leaves_the_page(store):
    name = upload(store, "linux-64", package("lib"))
    update_subdir(store, CHANNEL, "linux-64", [name], options())
    store.delete(join_key(CHANNEL, "linux-64", name))

    update_subdir(store, CHANNEL, "linux-64", [name], options())

    assert set(channeldata(store)["packages"]) == {"tool"}
    assert "lib-1.0-h0_0.conda" not in page(store)


def test_a_dry_run_leaves_them_alone(store):
    upload(store, "linux-64", package("lib"))
    written = channel_writes(store)

    report = index_channel(store, CHANNEL, options(dry_run=True))

    assert report.channel_files is None and written == []


# --- concurrent publications of different subdirs -----------------------------------------------------------


def test_two_subdirs_publishing_at_once_both_end_up_in_both_files(store):
    """linux-64's regeneration reads the states before osx-arm64 commits and is held before its first write;
    osx-arm64 commits meanwhile and waits for the channel lease. Released, linux-64 writes files without
    osx-arm64 (they were right when it read), then osx-arm64 makes them again from both."""
    linux = upload(store, "linux-64", package("lib", about={"summary": "the library"}))
    osx = upload(store, "osx-arm64", package("app", about={"summary": "the app"}))
    channeldata_key = join_key(CHANNEL, CHANNELDATA_JSON)
    held = store.pause("PutObject", channeldata_key)
    versions: list[set[str]] = []
    store.on(
        "PutObject",
        channeldata_key,
        lambda _, key: versions.append(set(json.loads(store.objects[key].data)["packages"])),
        after=True,
    )
    reports: dict[str, Any] = {}

    def publish(subdir: str, name: str) -> None:
        reports[subdir] = update_subdir(store, CHANNEL, subdir, [name], options())

    first = threading.Thread(target=publish, args=("linux-64", linux))
    first.start()
    held.wait_reached()  # linux-64 holds the channel lease, its states read
    waiting = threading.Event()
    store.on("PutObject", join_key(CHANNEL, CHANNEL_LEASE_FILE), lambda *_: waiting.set())
    second = threading.Thread(target=publish, args=("osx-arm64", osx))
    second.start()
    assert waiting.wait(30), "osx-arm64 committed and asks for the channel lease"
    assert store.head(join_key(CHANNEL, "osx-arm64", "repodata.json")) is not None
    held.release()
    first.join(60)
    second.join(60)

    assert versions == [{"lib", "tool"}, {"app", "lib", "tool"}]
    for subdir in ("linux-64", "osx-arm64"):
        assert reports[subdir].error is None and reports[subdir].channel_files.error is None
    assert set(channeldata(store)["packages"]) == {"app", "lib", "tool"}
    assert channeldata(store)["subdirs"] == ["linux-64", "noarch", "osx-arm64"]
    html = page(store)
    assert "app-1.0-h0_0.conda" in html and "lib-1.0-h0_0.conda" in html and "the app" in html
    assert store.head(join_key(CHANNEL, CHANNEL_LEASE_FILE)) is None


def test_many_subdirs_publishing_at_once_all_end_up_in_both_files(store):
    subdirs = ("linux-64", "linux-aarch64", "osx-64", "osx-arm64", "win-64")
    names = {subdir: upload(store, subdir, package(f"p-{subdir}")) for subdir in subdirs}
    reports: dict[str, Any] = {}

    def publish(subdir: str) -> None:
        reports[subdir] = update_subdir(store, CHANNEL, subdir, [names[subdir]], options())

    threads = [threading.Thread(target=publish, args=(subdir,)) for subdir in subdirs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)

    assert all(report.channel_files.error is None for report in reports.values())
    assert set(channeldata(store)["packages"]) == {"tool", *(f"p-{subdir}" for subdir in subdirs)}
    assert all(f"p-{subdir}-1.0-h0_0.conda" in page(store) for subdir in subdirs)


# --- the page -----------------------------------------------------------------------------------------------


class Elements(HTMLParser):
    """The page as a browser's parser sees it: tags, attributes, and the text of each table cell."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.scripts: list[str] = []
        self.cells: list[str] = []
        self._in: str | None = None
        self._text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))
        if tag in ("td", "script"):
            self._in, self._text = tag, []

    def handle_endtag(self, tag: str) -> None:
        if tag == self._in:
            (self.cells if tag == "td" else self.scripts).append("".join(self._text))
            self._in = None

    def handle_data(self, data: str) -> None:
        if self._in:
            self._text.append(data)


def parsed(html: str) -> Elements:
    elements = Elements()
    elements.feed(html)
    return elements


def test_every_text_from_package_metadata_is_escaped(store):
    hostile = {
        "summary": INJECTED,
        "home": "javascript:alert(1)",
        "description": '"><img src=x onerror=alert(1)>',
        "dev_url": "https://x.example/'\"><svg onload=alert(1)>",
    }
    name = upload(store, "linux-64", package("evil", about=hostile, license="<b>MIT</b>"))

    update_subdir(store, CHANNEL, "linux-64", [name], options())
    html = page(store)

    elements = parsed(html)
    assert [tag for tag, _ in elements.tags if tag in ("script", "img", "svg")] == ["script"]  # ours only
    assert INJECTED in elements.cells, "shown as text"
    assert "<b>MIT</b>" in elements.cells
    assert "&lt;script&gt;document.title=&#34;pwned&#34;&lt;/script&gt;" in html
    # A home page that is no http(s) URL is shown as text, never made a link.
    assert "javascript:alert(1)" in elements.cells
    assert not any(
        (attrs.get("href") or "").lower().startswith("javascript:")
        for tag, attrs in elements.tags
        if tag == "a"
    )
    # channeldata.json carries them as JSON strings (its readers are programs).
    assert channeldata(store)["packages"]["evil"]["summary"] == INJECTED


def test_the_page_admits_only_its_own_script_and_style_by_hash(store):
    html = page(store)
    elements = parsed(html)
    (policy,) = [
        attrs["content"]
        for tag, attrs in elements.tags
        if tag == "meta" and attrs.get("http-equiv") == "Content-Security-Policy"
    ]
    (script,) = elements.scripts
    style = re.search(r"<style>(.*?)</style>", html, re.DOTALL)
    assert style is not None

    def digest(text: str) -> str:
        return "sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode()

    assert policy is not None
    assert "default-src 'none'" in policy
    assert f"script-src '{digest(script)}'" in policy
    assert f"style-src '{digest(style[1])}'" in policy
    # Nothing is fetched from anywhere: no external script, style, font or image.
    assert not any(attrs.get("src") for _, attrs in elements.tags)
    assert not any(tag == "link" for tag, _ in elements.tags)


def test_each_build_row_shows_what_the_issue_lists(store):
    name = upload(
        store,
        "linux-64",
        package(
            "lib",
            "2.1",
            "h7_3",
            about={"summary": "the library", "home": "https://lib.example"},
            run_exports={"weak": ["lib >=2.1,<3"]},
            license="BSD-3-Clause",
            timestamp=1_704_067_200_000,
        ),
    )
    update_subdir(store, CHANNEL, "linux-64", [name], options())
    size = store.head(join_key(CHANNEL, "linux-64", name)).size

    elements = parsed(page(store))

    rows = [attrs for tag, attrs in elements.tags if tag == "tr" and attrs.get("data-table") == "builds"]
    assert [row["data-name"] for row in rows] == ["lib", "tool"]
    cells = elements.cells
    start = cells.index(name)
    assert cells[start : start + 10] == [
        name,
        "2.1",
        "h7_3",
        "linux-64",
        f"{size / 1024:.1f} KiB" if size >= 1024 else f"{size} B",
        "2024-01-01 00:00 UTC",
        "BSD-3-Clause",
        "the library",
        "https://lib.example",
        "weak: lib >=2.1,<3",
    ]
    links = [attrs.get("href") for tag, attrs in elements.tags if tag == "a"]
    assert (
        f"linux-64/{name}" in links and "https://lib.example" in links and "linux-64/repodata.json" in links
    )
    assert any(tag == "input" and attrs.get("id") == "filter" for tag, attrs in elements.tags)


def test_a_channel_of_more_builds_than_the_page_lists_shows_the_latest_versions(monkeypatch):
    monkeypatch.setattr("reindexer.channel_page.MAX_PAGE_BUILDS", 2)
    store = MemoryStore("big")
    for version in ("1.0", "2.0"):
        for build in ("h0_0", "h1_0"):
            upload(store, "noarch", package("p", version, build))

    index_channel(store, CHANNEL, options())
    html = page(store)

    assert "p-2.0-h0_0.conda" in html and "p-2.0-h1_0.conda" in html
    assert "p-1.0-h0_0.conda" not in html
    assert "2 of 4 builds listed" in html
    assert MAX_PAGE_BUILDS > 2  # the real bound is the module's


def test_the_handlers_cold_start_loads_no_template_library():
    """Jinja2 is imported by the first page rendered, not by every import of the handlers."""
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "tests.support.loaded_modules",
            "--import",
            *HANDLER_MODULES,
            "--top-level",
            "jinja2",
            "markupsafe",
        ],
        cwd=Path(__file__).resolve().parents[2],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.strip().splitlines()[-1]) == []


def test_a_redelivery_after_a_regeneration_cut_short_makes_them_again(store):
    """A publication whose regeneration never ran (the function timed out or crashed after its commit):
    the notification comes again, the update has nothing to publish, finds the channel files made from
    an older state of its subdir, and makes them again. A duplicate after a complete one does not."""
    name = upload(store, "linux-64", package("lib"))
    store.fail("GetObject", join_key(CHANNEL, CHANNEL_STATE_FILE), Crash("killed"))
    with pytest.raises(Crash):  # the process dies: nothing catches it
        update_subdir(store, CHANNEL, "linux-64", [name], options())
    assert "lib" not in channeldata(store)["packages"]
    assert store.head(join_key(CHANNEL, "linux-64", "repodata.json")) is not None, "the subdir committed"

    again = update_subdir(store, CHANNEL, "linux-64", [name], options())

    assert not again.written
    assert again.channel_files is not None and again.channel_files.written == [CHANNELDATA_JSON, INDEX_HTML]
    assert "lib" in channeldata(store)["packages"]
    written = channel_writes(store)
    duplicate = update_subdir(store, CHANNEL, "linux-64", [name], options())
    assert duplicate.channel_files is None and written == []
