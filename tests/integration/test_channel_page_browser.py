"""The channel's index.html in a real browser: headless Chromium (Debian's `chromium`) opens the page of a
generated channel indexed into a local folder, as a local file, and the test reads the DOM it rendered.

Checked: the packages and builds are listed; the filter box works (driven through the page's own hook,
`index.html?filter=WORDS`, which fills the box in on load and applies it: --dump-dom cannot type, and no
websocket client for the DevTools protocol is installed here); metadata holding `<script>` and an `<img
onerror>` is shown as text and runs nothing (either would change document.title); and a screenshot is saved
under the test's tmp_path (page.png, and filtered.png).

Chromium is installed with apt-get when it is missing and apt-get is there (as root, what .ci/run does); the
test is skipped only when there is neither.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from devtools.sample_channel import build_packages, plan_channel
from reindexer.indexer import index_channel
from reindexer.options import IndexOptions
from reindexer.storage.local import LocalStore
from tests.support.archives import index_json, package_bytes

BROWSERS = ("chromium", "chromium-browser", "google-chrome")
BROWSER_TIMEOUT = 120
INJECTED = '<script>document.title="pwned"</script>'
IMG_INJECTED = "<img src=x onerror=\"document.title='img'\">"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def find_browser() -> str | None:
    return next((path for name in BROWSERS if (path := shutil.which(name))), None)


@pytest.fixture(scope="session")
def chromium() -> str:
    """Chromium's path; installed from Debian when missing and apt-get is there (root)."""
    found = find_browser()
    if found:
        return found
    if not shutil.which("apt-get"):
        pytest.skip("no chromium and no apt-get to install it")
    if os.geteuid() != 0:
        pytest.fail("chromium is missing: apt-get install chromium (as root; .ci/run does it)")
    environment = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for command in (
        ["apt-get", "update", "-q"],
        ["apt-get", "install", "-y", "--no-install-recommends", "chromium"],
    ):
        subprocess.run(command, check=True, env=environment, capture_output=True, timeout=900)
    found = find_browser()
    assert found, "apt-get installed chromium, yet it is not on PATH"
    return found


def package(
    name: str,
    version: str,
    build: str,
    extension: str,
    about: dict[str, Any],
    run_exports: dict[str, Any] | None = None,
    **index: Any,
) -> bytes:
    members = {"info/about.json": json.dumps(about).encode()}
    if run_exports is not None:
        members["info/run_exports.json"] = json.dumps(run_exports).encode()
    filename = f"{name}-{version}-{build}{extension}"
    return package_bytes(filename, index_json(name, version, build, **index), members)


@pytest.fixture(scope="module")
def channel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small channel in a folder: rattler-build's sample packages, and hand-made ones with about.json (one
    with hostile metadata), indexed by the full run."""
    folder = tmp_path_factory.mktemp("browser") / "demo-channel"
    build_packages(plan_channel(4, subdirs=("noarch", "linux-64")), folder)
    made = {
        "noarch/tool-1.0-h0_0.conda": package(
            "tool",
            "1.0",
            "h0_0",
            ".conda",
            {"summary": "A command line tool", "home": "https://tool.example"},
        ),
        "linux-64/libfoo-2.0-h1_0.conda": package(
            "libfoo",
            "2.0",
            "h1_0",
            ".conda",
            {"summary": "The foo library", "license": "MIT"},
            run_exports={"weak": ["libfoo >=2.0,<3"]},
        ),
        "linux-64/libfoo-1.0-h0_0.tar.bz2": package(
            "libfoo", "1.0", "h0_0", ".tar.bz2", {"summary": "Old foo"}
        ),
        "linux-64/evil-1.0-h0_0.conda": package(
            "evil",
            "1.0",
            "h0_0",
            ".conda",
            {"summary": INJECTED, "description": IMG_INJECTED, "home": "javascript:document.title='href'"},
            license=IMG_INJECTED,
        ),
    }
    for key, data in made.items():
        (folder / key).write_bytes(data)
    report = index_channel(LocalStore(folder), "", IndexOptions(jobs=2))
    assert report.ok and report.channel_files is not None and report.channel_files.error is None
    return folder


def run_browser(chromium: str, profile: Path, *arguments: str) -> str:
    command = [
        chromium,
        "--headless",
        "--disable-gpu",
        "--no-sandbox",
        "--no-first-run",
        "--no-default-browser-check",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={profile}",
        *arguments,
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=BROWSER_TIMEOUT, check=False)
    assert done.returncode == 0, f"{command}\n{done.stderr[-3000:]}"
    return done.stdout


def page_url(channel: Path, filter_words: str | None = None) -> str:
    url = (channel / "index.html").as_uri()
    return f"{url}?filter={quote(filter_words)}" if filter_words is not None else url


class Dom(HTMLParser):
    """The rendered DOM: the title, each table row (its attributes and cell texts) and every tag seen."""

    def __init__(self) -> None:
        super().__init__()
        self.title = ""
        self.rows: list[tuple[dict[str, str | None], list[str]]] = []
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.counts: dict[str, str] = {}
        self._where: str | None = None
        self._text: list[str] = []
        self._count_of: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        self.tags.append((tag, attributes))
        if tag == "tr" and "data-table" in attributes:
            self.rows.append((attributes, []))
        elif tag in ("td", "title"):
            self._where, self._text = tag, []
        elif tag == "span" and attributes.get("data-count-of"):
            self._count_of, self._text = attributes["data-count-of"], []

    def handle_endtag(self, tag: str) -> None:
        text = "".join(self._text)
        if tag == "td" and self._where == "td":
            self.rows[-1][1].append(text)
            self._where = None
        elif tag == "title" and self._where == "title":
            self.title, self._where = text, None
        elif tag == "span" and self._count_of:
            self.counts[self._count_of], self._count_of = text, None

    def handle_data(self, data: str) -> None:
        if self._where or self._count_of:
            self._text.append(data)

    def shown(self, table: str) -> list[str]:
        """The names of the rows of `table` the filter left visible."""
        return [str(a["data-name"]) for a, _ in self.rows if a["data-table"] == table and "hidden" not in a]

    def cells(self) -> list[str]:
        return [cell for _, cells in self.rows for cell in cells]


@pytest.fixture
def dom(chromium: str, channel: Path, tmp_path: Path) -> Iterator[Any]:
    def load(filter_words: str | None = None) -> Dom:
        parsed = Dom()
        parsed.feed(
            run_browser(chromium, tmp_path / "profile", "--dump-dom", page_url(channel, filter_words))
        )
        return parsed

    yield load


def test_the_page_lists_every_package_and_build_and_runs_no_injected_script(dom, channel):
    page = dom()

    packages = page.shown("packages")
    assert {"tool", "libfoo", "evil"} <= set(packages)
    assert any(name.startswith("sample-noarch-") for name in packages)
    assert any(name.startswith("sample-linux64-") for name in packages)
    files = sorted(path.name for path in channel.glob("*/*") if path.name.endswith((".conda", ".tar.bz2")))
    links = {attrs.get("href") for tag, attrs in page.tags if tag == "a"}
    for subdir in ("noarch", "linux-64"):
        assert f"{subdir}/repodata.json" in links
    assert len(page.shown("builds")) == len(files) == 8
    assert {f"linux-64/{name}" for name in files if name.startswith("libfoo")} <= links
    # The hostile summary and license are text in their cells, the description a tooltip's text; the title
    # is still the page's own.
    assert page.title == "demo-channel · conda channel"
    assert INJECTED in page.cells() and IMG_INJECTED in page.cells()
    assert any(attrs.get("title") == IMG_INJECTED for tag, attrs in page.tags if tag == "td")
    assert [tag for tag, _ in page.tags if tag in ("img", "script")] == ["script"]  # the page's own only
    assert not any(
        str(attrs.get("href", "")).startswith("javascript:") for tag, attrs in page.tags if tag == "a"
    )
    # Nothing hidden before anything is typed; the counters say so.
    assert page.counts == {"packages": str(len(packages)), "builds": "8"}


def test_the_filter_box_hides_what_does_not_match(dom):
    by_name = dom("libfoo")

    assert by_name.shown("packages") == ["libfoo"]
    assert by_name.shown("builds") == ["libfoo", "libfoo"]
    assert by_name.counts == {"packages": "1", "builds": "2"}
    # The filter box shows what it applies.
    assert any(tag == "input" and attrs.get("id") == "filter" for tag, attrs in by_name.tags)

    by_summary = dom("COMMAND line")  # words of the summary, any case
    assert by_summary.shown("packages") == ["tool"]

    nothing = dom("no-such-package")
    assert nothing.shown("packages") == [] and nothing.shown("builds") == []
    assert nothing.counts == {"packages": "0", "builds": "0"}


def test_a_screenshot_of_the_page_is_saved(chromium, channel, tmp_path):
    for name, words in (("page.png", None), ("filtered.png", "libfoo")):
        shot = tmp_path / name
        run_browser(
            chromium,
            tmp_path / "profile",
            f"--screenshot={shot}",
            "--window-size=1280,900",
            "--hide-scrollbars",
            page_url(channel, words),
        )

        assert shot.read_bytes().startswith(PNG_MAGIC), name
        assert shot.stat().st_size > 10_000, "a rendered page, not a blank one"
