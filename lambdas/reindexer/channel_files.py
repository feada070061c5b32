"""The channel files, `<channel>/channeldata.json` and `<channel>/index.html`, made again from every subdir's
state whenever a subdir publishes, safely while other subdirs publish at the same time.

Each publication commits its subdir's state first (reindexer.publication), then:
1. takes the channel's lease (reindexer.lease's protocol on `<channel>/.reindexer/channel-lease.json`);
2. reads the channel state `<channel>/.reindexer/channel-state.json` (remembering its ETag): the subdirs
   known, the ETag of each subdir state the files were last made from, and each file's ETag and SHA-256 as
   written;
3. reads the state of every subdir known (and of those the caller names: the one it published, the folders a
   full run listed; the channel's folders are listed once when there is no channel state yet) and renders
   both files from them;
4. writes each file whose bytes differ from those last written, or whose object is no longer the one
   written (a HEAD, sent only when the bytes are the same); nothing when both are current;
5. commits the channel state with `If-Match` (`If-None-Match: *` when new), after checking the lease is
   still ours, and releases the lease. A lost commit (a lease taken over after it expired) does it all again.

Why the files end up showing every committed subdir: the regenerations take the lease one at a time, and
each starts (reads the states) after its own subdir's commit. The last one to take the lease therefore reads
after every commit whose regeneration came before it, and after its own: it sees them all, and writes last.

A failure here never undoes a publication: the subdir's report says why (`channel_files.error`), and the
next publication or the nightly full run makes the files again (a full run compares the channel state with
the subdirs' states and the files, and makes them again when anything differs). Access denied and other
FatalStoreErrors are raised, as everywhere in the indexer.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from .channel_page import HTML_TYPE, PAGE_FORMAT, page_of, render_page
from .channeldata import CHANNELDATA_VERSION, build_channeldata, render_channeldata, snapshot_of
from .clock import Clock
from .contract import (
    CHANNEL_LEASE_FILE,
    CHANNEL_STATE_FILE,
    CHANNELDATA_JSON,
    INDEX_HTML,
    STATE_FILE,
    join_key,
)
from .layout import KNOWN_SUBDIRS
from .lease import Lease, LeaseTerms
from .options import IndexOptions
from .publication import COMMIT_ATTEMPTS, JSON_TYPE, STATE_CACHE_CONTROL, load_state
from .reports import ChannelFilesReport, one_line_reason
from .state import SubdirState
from .store import FatalStoreError, NotFoundError, PreconditionFailedError, Store, StoredObject, StoreError
from .subdir_ref import SubdirRef

logger = logging.getLogger(__name__)

CHANNEL_STATE_FORMAT = 1


class ChannelLease(Lease):
    """The lease on a channel's files: reindexer.lease's protocol on the channel's CHANNEL_LEASE_FILE."""

    def __init__(self, store: Store, channel: str, terms: LeaseTerms, *, clock: Clock) -> None:
        folder = SubdirRef(store, channel, "")  # the channel's own folder: keys join without a subdir
        super().__init__(folder, terms, clock=clock)
        self.key = folder.key(CHANNEL_LEASE_FILE)


@dataclass
class ChannelState:
    """What the channel files were last made from and written as (the channel's CHANNEL_STATE_FILE)."""

    # Subdirs with a state when the files were made, and the ETag of each state read.
    sources: dict[str, str] = field(default_factory=dict)
    # Per file: {"etag": as written, "sha256": of the bytes written}.
    files: dict[str, dict[str, str]] = field(default_factory=dict)
    # The page and document formats and the publish settings (Cache-Control) the files were written with.
    fingerprint: str = ""

    def to_bytes(self) -> bytes:
        document = {
            "format": CHANNEL_STATE_FORMAT,
            "fingerprint": self.fingerprint,
            "sources": dict(sorted(self.sources.items())),
            "files": dict(sorted(self.files.items())),
        }
        return json.dumps(document, sort_keys=True, separators=(",", ":")).encode()

    @classmethod
    def from_bytes(cls, data: bytes) -> ChannelState:
        """ValueError when it is not one this version reads (it is then made again)."""
        try:
            document = json.loads(data)
            if document["format"] != CHANNEL_STATE_FORMAT:
                raise ValueError(f"unsupported channel state format {document['format']!r}")
            return cls(
                sources={str(name): str(etag) for name, etag in document["sources"].items()},
                files={
                    str(name): {"etag": str(entry["etag"]), "sha256": str(entry["sha256"])}
                    for name, entry in document["files"].items()
                },
                fingerprint=str(document["fingerprint"]),
            )
        except (KeyError, TypeError, AttributeError, ValueError) as error:
            raise ValueError(f"unreadable channel state: {error}") from None


def fingerprint(options: IndexOptions) -> str:
    return json.dumps(
        {"page": PAGE_FORMAT, "channeldata": CHANNELDATA_VERSION, "settings": options.settings.fingerprint()},
        sort_keys=True,
    )


def channel_title(store: Store, channel: str) -> str:
    """The page's title: the channel prefix, or for a channel at the root the bucket's or folder's name."""
    if channel:
        return channel
    return store.describe("").rstrip("/").rsplit("/", 1)[-1] or "conda channel"


def refresh_channel_files(
    store: Store, channel: str, options: IndexOptions, *, subdirs: Iterable[str] = ()
) -> ChannelFilesReport:
    """Make the channel files again from every subdir's state (see the module docstring); `subdirs` are
    known to be there besides those the channel state names. Never raises but FatalStoreError."""
    clock = options.clock
    started = clock.monotonic()
    report = ChannelFilesReport()
    for attempt in range(1, COMMIT_ATTEMPTS + 1):
        report.attempts = attempt
        try:
            with ChannelLease(store, channel, options.lease, clock=clock).hold() as lease:
                report.written = _refresh_locked(store, channel, options, set(subdirs), lease)
            report.error, report.retry = None, False
            break
        except PreconditionFailedError as error:
            logger.info("%s changed under us (attempt %d): %s", _where(store, channel), attempt, error)
            report.error = f"gave up after {attempt} conflicting updates (last: {error})"
            report.retry = True
        except FatalStoreError:
            raise
        except StoreError as error:
            report.error, report.retry = one_line_reason(str(error)), True
            break
        except Exception as error:
            # A bug in the page must not fail the publication that asked for it: logged, reported, and the
            # next publication or full run tries again.
            logger.exception("making the channel files of %s failed", _where(store, channel))
            report.error = one_line_reason(f"unexpected {type(error).__name__}: {error}")
            break
    if report.error is not None:
        logger.warning("channel files of %s not made: %s", _where(store, channel), report.error)
    report.seconds = clock.monotonic() - started
    return report


def channel_files_current(
    store: Store,
    channel: str,
    options: IndexOptions,
    *,
    subdirs: Iterable[str],
    listed: Iterable[StoredObject],
    seen: Mapping[str, str] | None = None,
) -> bool:
    """Whether the files are what the subdirs' states make, as far as a full run can tell without reading
    the states: the channel state names exactly `subdirs` (the ones with a state) with their states' current
    ETags, the files `listed` in the channel folder are the ones written, with today's formats and settings.
    `seen`: the ETags of the states this run read already. Reads only: one GET, and a HEAD per other
    subdir."""
    try:
        state, _ = _load_channel_state(store, channel)
    except NotFoundError:
        return False
    if state is None or state.fingerprint != fingerprint(options):
        return False
    etags = {obj.name: obj.etag for obj in listed}
    if any(
        etags.get(name) != state.files.get(name, {}).get("etag") for name in (CHANNELDATA_JSON, INDEX_HTML)
    ):
        return False
    current = dict(seen or {})
    for subdir in sorted((set(subdirs) | state.sources.keys()) - current.keys()):
        head = store.head(SubdirRef(store, channel, subdir).key(STATE_FILE))
        if head is not None:
            current[subdir] = head.etag
    return current == state.sources


def channel_files_behind(store: Store, channel: str, subdir: str, state_etag: str | None) -> bool:
    """Whether the channel files were made from another version of the subdir's state than `state_etag`
    (its current one, which an update with nothing to publish read): the regeneration that should have
    followed its last commit was cut short (a crash, a timeout) and the notification is delivered again.
    One GET of the channel state; False without a state ETag to compare, or when the store fails (the
    nightly run catches up)."""
    if state_etag is None:
        return False
    try:
        state, _ = _load_channel_state(store, channel)
    except NotFoundError:
        return True
    except FatalStoreError:
        raise
    except StoreError as error:
        logger.warning("could not read the channel state of %s: %s", _where(store, channel), error)
        return False
    return state is None or state.sources.get(subdir) != state_etag


def subdirs_in_listing(folders: Iterable[str]) -> set[str]:
    """The subdir folders of a channel listing, and noarch (always published)."""
    return (set(folders) & KNOWN_SUBDIRS) | {"noarch"}


def _refresh_locked(
    store: Store, channel: str, options: IndexOptions, subdirs: set[str], lease: Lease
) -> list[str]:
    etag: str | None
    try:
        previous, etag = _load_channel_state(store, channel)
    except NotFoundError:
        previous, etag = None, None
    if previous is None:
        # No channel state yet (or none that reads): which subdirs there are, the channel's folder tells.
        subdirs |= subdirs_in_listing(store.list_folder(channel).folders)
    known = ChannelState() if previous is None else previous
    states, sources = _read_states(store, channel, sorted(subdirs | known.sources.keys()), options.jobs)
    snapshot = snapshot_of(states)
    document = build_channeldata(snapshot)
    rendered = {
        CHANNELDATA_JSON: (render_channeldata(document), JSON_TYPE),
        INDEX_HTML: (render_page(page_of(channel_title(store, channel), snapshot, document)), HTML_TYPE),
    }
    state = ChannelState(sources=sources, files=dict(known.files), fingerprint=fingerprint(options))
    written = []
    for name, (data, content_type) in rendered.items():  # channeldata.json first: the page links it
        digest = hashlib.sha256(data).hexdigest()
        key = join_key(channel, name)
        last = known.files.get(name, {})
        if last.get("sha256") == digest and known.fingerprint == state.fingerprint:
            current = store.head(key)
            if current is not None and current.etag == last.get("etag"):
                continue
        lease.check()
        new_etag = store.write(
            key, data, content_type=content_type, cache_control=options.settings.repodata_cache_control
        )
        state.files[name] = {"etag": new_etag, "sha256": digest}
        written.append(name)
    if previous is not None and state == previous:
        return written
    lease.check()
    store.write(
        join_key(channel, CHANNEL_STATE_FILE),
        state.to_bytes(),
        content_type=JSON_TYPE,
        cache_control=STATE_CACHE_CONTROL,
        if_match=etag,
        if_none_match=etag is None,
    )
    return written


def _read_states(
    store: Store, channel: str, subdirs: list[str], jobs: int
) -> tuple[dict[str, SubdirState], dict[str, str]]:
    """Each subdir's state and its ETag; a subdir without one is left out, and one that cannot be read (it
    is rebuilt by its next run) is left off the files but its ETag kept, so a full run notices the change."""

    def read(subdir: str) -> tuple[SubdirState | None, str | None]:
        return load_state(SubdirRef(store, channel, subdir))

    with ThreadPoolExecutor(max_workers=max(1, min(jobs, len(subdirs)))) as pool:
        loaded = dict(zip(subdirs, pool.map(read, subdirs), strict=True))
    states = {subdir: state for subdir, (state, _) in loaded.items() if state is not None}
    sources = {subdir: etag for subdir, (_, etag) in loaded.items() if etag is not None}
    return states, sources


def _load_channel_state(store: Store, channel: str) -> tuple[ChannelState | None, str]:
    """The channel state and its ETag (None for one that cannot be read); NotFoundError when there is none."""
    data, etag = store.read(join_key(channel, CHANNEL_STATE_FILE))
    try:
        return ChannelState.from_bytes(data), etag
    except ValueError as error:
        location = store.describe(join_key(channel, CHANNEL_STATE_FILE))
        logger.warning("ignoring %s and making it again: %s", location, error)
        return None, etag


def _where(store: Store, channel: str) -> str:
    return store.describe(channel)
