"""A channel's index.html: one self-contained static page, rendered with Jinja2 with autoescaping on.

The page lists the subdirs, every package with its latest version (channeldata.json's entry; the description
is the summary's tooltip), and its builds (version, build, subdir, size, upload time from the record's
timestamp, license, summary, home, run_exports).
Everything in it comes from package metadata, which anyone allowed to upload controls, so every text is
escaped by the template engine, links are made only of http(s) URLs (a `javascript:` home page is shown as
text) and of our own relative paths, and a Content-Security-Policy admits nothing but the page's own inline
style and script, by hash: no request leaves the page, whether it is opened from a public bucket URL or as
a local file.

The filter box (inline script, no network) hides the rows whose package name and summary do not hold every
word typed. `index.html?filter=WORDS` fills it in on load: a link to a filtered view, and what the browser
test drives the page with.

A channel of more than MAX_PAGE_BUILDS builds lists each package's latest version's builds only, cut at
that many, and says so: repodata.json and channeldata.json stay the complete lists.
"""

from __future__ import annotations

import base64
import functools
import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from .channeldata import Build, ChannelSnapshot, by_name, version_key

if TYPE_CHECKING:
    import jinja2

TEMPLATE = "channel-index.html.j2"
SCRIPT = "channel-index.js"
STYLE = "channel-index.css"
# Bump when the page's bytes change for the same channel, so full runs write every channel's page again.
PAGE_FORMAT = 1
MAX_PAGE_BUILDS = 5_000
HTML_TYPE = "text/html; charset=utf-8"


@dataclass(frozen=True)
class SubdirRow:
    name: str
    packages: int
    builds: int


@dataclass(frozen=True)
class PackageRow:
    name: str
    version: str
    subdirs: str
    license: str
    summary: str
    description: str  # the summary's tooltip
    home: str
    home_url: str | None
    run_exports: str
    builds: int
    updated: str
    search: str


@dataclass(frozen=True)
class BuildRow:
    path: str  # `<subdir>/<file>`, relative to the page
    filename: str
    name: str
    version: str
    build: str
    subdir: str
    size: str
    size_bytes: int
    uploaded: str
    license: str
    summary: str
    home: str
    home_url: str | None
    run_exports: str
    search: str


@dataclass(frozen=True)
class Page:
    title: str
    subdirs: Sequence[SubdirRow]
    packages: Sequence[PackageRow]
    builds: Sequence[BuildRow]
    builds_total: int
    # Why fewer builds than builds_total are listed ("" when all are).
    builds_note: str


def page_of(title: str, snapshot: ChannelSnapshot, channeldata: Mapping[str, Any]) -> Page:
    """The page's rows: packages from channeldata.json's entries, builds from the snapshot."""
    entries: Mapping[str, Mapping[str, Any]] = channeldata["packages"]
    grouped = by_name(snapshot.builds)
    packages = [_package_row(name, entry, len(grouped.get(name, ()))) for name, entry in entries.items()]
    listed, note = _builds_to_list(grouped, entries)
    subdirs = [
        SubdirRow(
            subdir,
            len({b.name for b in snapshot.builds if b.subdir == subdir}),
            sum(1 for b in snapshot.builds if b.subdir == subdir),
        )
        for subdir in snapshot.subdirs
    ]
    return Page(title, subdirs, packages, [_build_row(build) for build in listed], len(snapshot.builds), note)


def render_page(page: Page) -> bytes:
    """index.html's bytes."""
    environment = _environment()
    script, style = _static(SCRIPT), _static(STYLE)
    policy = "; ".join(
        (
            "default-src 'none'",
            f"script-src '{_csp_hash(script)}'",
            f"style-src '{_csp_hash(style)}'",
            "base-uri 'none'",
            "form-action 'none'",
        )
    )
    from markupsafe import Markup  # Jinja2's own dependency

    html = environment.get_template(TEMPLATE).render(
        page=page, csp=policy, script=Markup(script), style=Markup(style)
    )
    return html.encode()


def http_url(text: str) -> str | None:
    """`text` when it is an http(s) URL fit for an href (one word); None otherwise, so it is shown as text."""
    lowered = text.lower()
    if lowered.startswith(("https://", "http://")) and text.isprintable() and " " not in text:
        return text
    return None


def describe_run_exports(run_exports: Any) -> str:
    """ "weak: a >=1, b; strong: c" (kinds in the CEP's order)."""
    if not isinstance(run_exports, Mapping):
        return ""
    parts = []
    for kind, specs in run_exports.items():
        if isinstance(specs, list) and specs:
            parts.append(f"{kind}: {', '.join(str(spec) for spec in specs)}")
    return "; ".join(parts)


def human_size(size: int) -> str:
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{size} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def utc_time(seconds: int) -> str:
    """ "2024-01-01 00:00 UTC"; "" for no timestamp."""
    if seconds <= 0:
        return ""
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%d %H:%M UTC")


def _package_row(name: str, entry: Mapping[str, Any], builds: int) -> PackageRow:
    home = str(entry.get("home", ""))
    summary = str(entry.get("summary", ""))
    version = str(entry.get("version", ""))
    return PackageRow(
        name=name,
        version=version,
        subdirs=", ".join(entry.get("subdirs", [])),
        license=str(entry.get("license", "")),
        summary=summary,
        description=str(entry.get("description", "")),
        home=home,
        home_url=http_url(home),
        run_exports=describe_run_exports(entry.get("run_exports", {}).get(version)),
        builds=builds,
        updated=utc_time(int(entry.get("timestamp", 0))),
        search=f"{name} {summary}".lower(),
    )


def _build_row(build: Build) -> BuildRow:
    record = build.record
    home = build.about.get("home", "")
    summary = build.about.get("summary", "")
    return BuildRow(
        path=f"{build.subdir}/{build.filename}",
        filename=build.filename,
        name=build.name,
        version=build.version,
        build=str(record.get("build", "")),
        subdir=build.subdir,
        size=human_size(int(record.get("size", 0))),
        size_bytes=int(record.get("size", 0)),
        uploaded=utc_time(build.seconds),
        license=str(record.get("license") or build.about.get("license", "")),
        summary=summary,
        home=home,
        home_url=http_url(home),
        run_exports=describe_run_exports(record.get("run_exports")),
        search=f"{build.name} {summary}".lower(),
    )


def _builds_to_list(
    grouped: Mapping[str, list[Build]], entries: Mapping[str, Mapping[str, Any]]
) -> tuple[list[Build], str]:
    """Every build by name, newest version first; beyond MAX_PAGE_BUILDS, only the latest versions'."""
    total = sum(len(builds) for builds in grouped.values())

    def in_order(builds: list[Build]) -> list[Build]:
        by_file = sorted(builds, key=lambda b: (b.subdir, b.filename))
        return sorted(by_file, key=lambda b: (version_key(b.version), b.seconds), reverse=True)

    if total <= MAX_PAGE_BUILDS:
        return [build for name in grouped for build in in_order(grouped[name])], ""
    latest = [
        build
        for name, builds in grouped.items()
        for build in in_order(builds)
        if build.version == entries.get(name, {}).get("version")
    ]
    listed = latest[:MAX_PAGE_BUILDS]
    return listed, (
        f"{len(listed)} of {total} builds listed: each package's latest version only"
        f"{', cut at ' + str(MAX_PAGE_BUILDS) if len(latest) > MAX_PAGE_BUILDS else ''}. "
        "Each subdir's repodata.json lists them all."
    )


@functools.cache
def _environment() -> jinja2.Environment:
    import jinja2  # loaded by the first page rendered, not by every handler's cold start

    return jinja2.Environment(
        loader=jinja2.PackageLoader("reindexer", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )


@functools.cache
def _static(name: str) -> str:
    """The page's own script or style, as the template puts it between its tags."""
    source, _, _ = _environment().loader.get_source(_environment(), name)  # type: ignore[union-attr]
    return source.strip("\n")


def _csp_hash(text: str) -> str:
    return "sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode()
