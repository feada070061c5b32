"""Amazon S3 and S3-compatible stores behind the Store interface.

Requests go through obstore (Rust's object_store): on a real server a GET costs ~0.4 ms of CPU there against
~3 ms in botocore, which made botocore the bottleneck of a cold index. botocore stays for what obstore
cannot do, loaded only then: the AWS credential chain beyond static keys in the environment (profiles, SSO,
web identity), and listings of a folder holding a key object_store cannot represent (`a/../b`, `a//b`,
control characters: any publisher can upload one, and object_store refuses the whole listing).
DELETE with If-Match, which object_store lacks, is sent on a URL obstore presigns.
"""

from __future__ import annotations

import functools
import os
import threading
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, cast
from urllib.parse import urlsplit

import obstore
from obstore import exceptions as obstore_errors
from obstore.store import S3Store as ObjectStore

from ..clock import SYSTEM_CLOCK, Clock
from ..store import (
    FatalStoreError,
    FolderListing,
    NotFoundError,
    PreconditionFailedError,
    StoredObject,
    StoreError,
    TransientStoreError,
    UnreadableObjectError,
)
from ..store_conditions import ConditionalRequests, ProbedStore, StoreConditions

if TYPE_CHECKING:
    import botocore.session
    from mypy_boto3_s3 import S3Client

DOWNLOAD_CHUNK = 1024 * 1024
DEFAULT_REGION = "us-east-1"
MAX_RETRIES = 4
CONNECT_TIMEOUT = timedelta(seconds=10)
# How long obstore keeps credentials from the botocore chain before asking again (refreshable ones).
CREDENTIAL_TTL = timedelta(minutes=10)
READ_TIMEOUT = timedelta(seconds=60)
_NOT_FOUND = {"NoSuchKey", "404", "NotFound"}
_PRECONDITION = {"PreconditionFailed", "412", "ConditionalRequestConflict", "409"}
_DENIED = {"AccessDenied", "403", "Forbidden", "InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken"}
LIST_PAGE = 1000  # keys and folders per ListObjectsV2 page
PRESIGNED_LIFETIME = timedelta(minutes=5)
STATIC_KEY_VARIABLES = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")
_TRANSIENT = {
    "SlowDown",
    "Throttling",
    "ThrottlingException",
    "RequestTimeout",
    "InternalError",
    "503",
    "500",
}


@dataclass(frozen=True)
class S3Endpoint:
    """How to reach the bucket: AWS (url None) or an S3-compatible server, and how many parallel requests."""

    url: str | None = None
    region: str | None = None
    path_style: bool = False
    max_connections: int = 10

    @classmethod
    def from_environment(
        cls, environ: Mapping[str, str] = os.environ, *, max_connections: int = 10
    ) -> S3Endpoint:
        """AWS_ENDPOINT_URL_S3 / AWS_ENDPOINT_URL as the AWS SDKs read them, and AWS_REGION, which Lambda
        sets to its own region (the stack's bucket is in it)."""
        url = environ.get("AWS_ENDPOINT_URL_S3") or environ.get("AWS_ENDPOINT_URL") or None
        region = environ.get("AWS_REGION") or None
        return cls(url=url, region=region, path_style=url is not None, max_connections=max_connections)


@dataclass(frozen=True)
class S3Credentials:
    """Keys given explicitly, instead of the AWS credential chain."""

    access_key_id: str
    secret_access_key: str
    session_token: str | None = None


class S3Store(ProbedStore):
    """A bucket as a Store; counts every request it sends by S3 operation (retries not included) and shows
    each to `on_request(operation, key)` when set."""

    def __init__(
        self,
        bucket: str,
        endpoint: S3Endpoint | None = None,
        *,
        credentials: S3Credentials | None = None,
        single_writer: bool = False,
        conditions: StoreConditions | None = None,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self.bucket = bucket
        self.endpoint = endpoint or S3Endpoint()
        self.requests: Counter[str] = Counter()
        self._lock = threading.Lock()
        self.credentials = credentials
        self._session: botocore.session.Session | None = None
        self._client: S3Client | None = None
        self._objects: ObjectStore | None = None
        self.on_request: Callable[[str, str], None] | None = None
        self.conditional = ConditionalRequests(
            self, single_writer=single_writer, known=conditions, clock=clock
        )

    def describe(self, key: str) -> str:
        return f"s3://{self.bucket}/{key}"

    # --- the Store interface ---------------------------------------------------------------------------

    def list_folder(self, prefix: str) -> FolderListing:
        folder = f"{prefix.strip('/')}/" if prefix.strip("/") else ""
        with self._errors(folder):
            try:
                found = obstore.list_with_delimiter(self.objects, folder.rstrip("/") or None)
            except obstore_errors.InvalidPathError:
                return self._list_with_botocore(folder)
        listing = FolderListing(
            objects=[
                StoredObject(o["path"], _unquote(o["e_tag"] or ""), o["size"]) for o in found["objects"]
            ],
            folders=[path[len(folder) :].rstrip("/") for path in found["common_prefixes"]],
        )
        # object_store pages through the listing itself; S3 returns 1,000 keys and folders per page.
        pages = max(1, -(-(len(listing.objects) + len(listing.folders)) // LIST_PAGE))
        for _ in range(pages):
            self._count("ListObjectsV2", folder)
        return listing

    def _list_with_botocore(self, folder: str) -> FolderListing:
        listing = FolderListing()
        with self._errors(folder):
            paginator = self.client.get_paginator("list_objects_v2")
            for page in paginator.paginate(Bucket=self.bucket, Prefix=folder, Delimiter="/"):
                for item in page.get("Contents", []):
                    listing.objects.append(StoredObject(item["Key"], _unquote(item["ETag"]), item["Size"]))
                for common in page.get("CommonPrefixes", []):
                    listing.folders.append(common["Prefix"][len(folder) :].rstrip("/"))
        return listing

    def read(self, key: str) -> tuple[bytes, str]:
        self._count("GetObject", key)
        with self._errors(key):
            result = obstore.get(self.objects, key)
            return result.bytes().to_bytes(), _unquote(result.meta["e_tag"] or "")

    def read_if_changed(self, key: str, etag: str | None) -> tuple[bytes, str] | None:
        if etag is None:
            return self.read(key)
        self._count("GetObject", key)
        with self._errors(key):
            try:
                result = obstore.get(self.objects, key, options={"if_none_match": f'"{etag}"'})
            except obstore_errors.NotModifiedError:
                return None  # 304: nothing transferred
            current = _unquote(result.meta["e_tag"] or "")
            if current == etag:
                return None  # a server that ignores If-None-Match sent the same version again
            return result.bytes().to_bytes(), current

    def download(
        self,
        key: str,
        sink: Callable[[bytes], None],
        *,
        expect: Callable[[StoredObject], None] | None = None,
    ) -> StoredObject:
        self._count("GetObject", key)
        with self._errors(key):
            result = obstore.get(self.objects, key)
            etag = _unquote(result.meta["e_tag"] or "")
            if expect is not None:
                expect(StoredObject(key, etag, result.meta["size"]))
            size = 0
            for chunk in result.stream(min_chunk_size=DOWNLOAD_CHUNK):
                data = bytes(chunk)
                sink(data)
                size += len(data)
            return StoredObject(key, etag, size)

    def head(self, key: str) -> StoredObject | None:
        self._count("HeadObject", key)
        try:
            with self._errors(key):
                meta = obstore.head(self.objects, key)
        except NotFoundError:
            return None
        return StoredObject(key, _unquote(meta["e_tag"] or ""), meta["size"])

    # --- requests sent exactly as given (store_conditions.ProbeTarget) -----------------------------------

    def delete_as_given(self, key: str, *, if_match: str | None = None) -> None:
        self._count("DeleteObject", key)
        if if_match is None:
            with self._errors(key):
                obstore.delete(self.objects, key)
            return
        import urllib.error  # http.client, email, ssl: loaded only for the one request that needs them
        import urllib.request

        url = obstore.sign(self.objects, "DELETE", key, PRESIGNED_LIFETIME)
        request = urllib.request.Request(url, method="DELETE", headers={"If-Match": if_match})
        try:
            with urllib.request.urlopen(request, timeout=READ_TIMEOUT.total_seconds()):
                return
        except urllib.error.HTTPError as error:
            status = error.code
            detail = _first_line(error.read(2048).decode("utf-8", "replace")) if error.fp else ""
        except OSError as error:
            raise TransientStoreError(f"{self.describe(key)}: DELETE failed: {error}") from None
        if status == 404:
            return
        if status in (409, 412):
            raise PreconditionFailedError(
                f"{self.describe(key)} changed while it was being deleted ({status})"
            )
        if status == 403:
            raise FatalStoreError(f"access denied to {self.describe(key)} (403)")
        if status >= 500 or status == 429:
            raise TransientStoreError(f"{self.describe(key)}: DELETE failed with {status}")
        raise StoreError(f"{self.describe(key)}: DELETE failed with {status} {detail}".strip())

    # --- clients -----------------------------------------------------------------------------------------

    @property
    def client(self) -> S3Client:
        """botocore's client (listings obstore refuses), created on first use."""
        with self._lock:
            if self._client is None:
                self._client = self._create_client()
            return self._client

    @property
    def objects(self) -> ObjectStore:
        """The obstore client (object reads and writes), created on first use."""
        with self._lock:
            if self._objects is None:
                self._objects = self._create_object_store()
            return self._objects

    def _create_client(self) -> S3Client:
        from botocore.config import Config

        config = Config(
            s3={"addressing_style": "path" if self.endpoint.path_style else "auto"},
            retries={"mode": "standard", "max_attempts": MAX_RETRIES + 1},
            max_pool_connections=self.endpoint.max_connections,
            connect_timeout=CONNECT_TIMEOUT.total_seconds(),
            read_timeout=READ_TIMEOUT.total_seconds(),
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
        )
        session = self._botocore_session()
        # Listings are this client's work: dateutil parsing each key's LastModified would cost ~1 ms a key.
        session.get_component("response_parser_factory").set_parser_defaults(timestamp_parser=str)
        client = cast(
            "S3Client",
            session.create_client(
                "s3", endpoint_url=self.endpoint.url, region_name=self._region, config=config
            ),
        )
        client.meta.events.register("before-parameter-build.s3", self._count_boto_request)
        return client

    def _botocore_session(self) -> botocore.session.Session:
        import botocore.session

        if self._session is None:
            self._session = botocore.session.Session()
            if self.credentials is not None:
                self._session.set_credentials(
                    self.credentials.access_key_id,
                    self.credentials.secret_access_key,
                    self.credentials.session_token,
                )
        return self._session

    def _credential_provider(self) -> Callable[[], dict[str, Any]] | None:
        """None when obstore reads static keys from the environment itself (Lambda, CI): no botocore."""
        if self.credentials is not None:
            given = self.credentials
            return lambda: {
                "access_key_id": given.access_key_id,
                "secret_access_key": given.secret_access_key,
                "token": given.session_token,
                "expires_at": None,
            }
        if all(os.environ.get(name) for name in STATIC_KEY_VARIABLES):
            return None
        chain = self._botocore_session().get_credentials()
        if chain is None:
            raise FatalStoreError(
                "no AWS credentials found (set AWS_PROFILE, or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY)"
            )

        def current() -> dict[str, Any]:
            frozen = chain.get_frozen_credentials()
            refreshes = getattr(chain, "refresh_needed", None) is not None
            return {
                "access_key_id": frozen.access_key,
                "secret_access_key": frozen.secret_key,
                "token": frozen.token,
                "expires_at": datetime.now(UTC) + CREDENTIAL_TTL if refreshes else None,
            }

        return current

    def _create_object_store(self) -> ObjectStore:
        options: dict[str, Any] = {
            "region": self._region,
            "virtual_hosted_style_request": not self.endpoint.path_style,
        }
        if self.endpoint.url:
            options["endpoint"] = self.endpoint.url.rstrip("/")
        provider = self._credential_provider()
        if provider is not None:
            options["credential_provider"] = provider
        return ObjectStore(
            self.bucket,
            client_options={
                "allow_http": True,
                "connect_timeout": CONNECT_TIMEOUT,
                "timeout": READ_TIMEOUT,
                "pool_max_idle_per_host": str(self.endpoint.max_connections),
            },
            retry_config={
                "max_retries": MAX_RETRIES,
                "retry_timeout": READ_TIMEOUT,
                "backoff": {
                    "init_backoff": timedelta(milliseconds=100),
                    "max_backoff": timedelta(seconds=5),
                    "base": 2,
                },
            },
            **options,
        )

    @functools.cached_property
    def _region(self) -> str:
        """Resolved once: both clients need it, and on AWS it may cost a HeadBucket."""
        if self.endpoint.region:
            return self.endpoint.region
        if self.endpoint.url is None:
            found = self._bucket_region()
            if found:
                return found
        return os.environ.get("AWS_DEFAULT_REGION") or DEFAULT_REGION

    def _bucket_region(self) -> str | None:
        """The bucket's own region, which AWS names in every answer to HeadBucket (even a refusal)."""
        from botocore.exceptions import BotoCoreError, ClientError

        session = self._botocore_session()
        region = session.get_config_variable("region") or DEFAULT_REGION
        client = cast("S3Client", session.create_client("s3", region_name=region))
        try:
            response = client.head_bucket(Bucket=self.bucket)
            headers = response["ResponseMetadata"]["HTTPHeaders"]
        except ClientError as error:
            headers = error.response.get("ResponseMetadata", {}).get("HTTPHeaders", {})
        except BotoCoreError:
            return None
        region = headers.get("x-amz-bucket-region")
        return str(region) if region else None

    # --- helpers -----------------------------------------------------------------------------------------

    def _put(
        self,
        key: str,
        data: bytes,
        content_type: str,
        cache_control: str | None,
        if_match: str | None,
        if_none_match: bool,
    ) -> str:
        self._count("PutObject", key)
        attributes = {"Content-Type": content_type}
        if cache_control:
            attributes["Cache-Control"] = cache_control
        mode: Any = "overwrite"
        if if_none_match:
            mode = "create"
        elif if_match is not None:
            mode = {"e_tag": if_match}
        try:
            with self._errors(key):
                # One PUT (S3 takes up to 5 GB): a multipart upload gives no MD5 ETag and takes no condition.
                result = obstore.put(
                    self.objects, key, data, mode=mode, attributes=attributes, use_multipart=False
                )
        except NotFoundError:
            if if_match is None:
                raise
            # S3 answers 404 to If-Match on a key that was deleted meanwhile: the expected version is gone.
            raise PreconditionFailedError(
                f"{self.describe(key)} was deleted while it was being updated"
            ) from None
        return _unquote(result["e_tag"] or "")

    def _count(self, operation: str, key: str) -> None:
        with self._lock:
            self.requests[operation] += 1
        if self.on_request is not None:
            self.on_request(operation, key)

    def _count_boto_request(self, params: dict[str, Any], model: Any, **_: Any) -> None:
        if model.name != "DeleteObject":  # counted by delete_as_given
            self._count(model.name, params.get("Key") or params.get("Prefix") or "")

    @contextmanager
    def _errors(self, key: str) -> Iterator[None]:
        """Translate obstore's and botocore's exceptions into the Store's one-line errors."""
        try:
            yield
        except StoreError:
            raise
        except (obstore_errors.BaseError, OSError) as error:
            # obstore raises the builtin FileNotFoundError / PermissionError for some statuses.
            raise self._object_store_error(error, key) from None
        except ValueError as error:
            if "parse path" not in str(error):
                raise
            # object_store refuses keys with control characters or empty, '.' or '..' segments.
            raise UnreadableObjectError(f"{self.describe(key)}: a key the S3 client cannot address") from None
        except Exception as error:
            translated = self._botocore_error(error, key)
            if translated is None:
                raise
            raise translated from None

    def _object_store_error(self, error: Exception, key: str) -> StoreError:
        location = self.describe(key)
        text = str(error)
        if isinstance(error, obstore_errors.NotFoundError | FileNotFoundError):
            if "NoSuchBucket" in text:
                return FatalStoreError(f"bucket {self.bucket!r} does not exist")
            return NotFoundError(f"{location} does not exist")
        if isinstance(
            error, obstore_errors.PreconditionError | obstore_errors.AlreadyExistsError | FileExistsError
        ):
            return PreconditionFailedError(f"{location} changed while it was being updated")
        if "InvalidObjectState" in text:
            return UnreadableObjectError(f"{location} is archived (restore it before indexing)")
        if "customer provided" in text.lower() or "Server Side Encryption" in text:
            return UnreadableObjectError(f"{location} is encrypted with a customer-provided key (SSE-C)")
        if isinstance(
            error,
            obstore_errors.PermissionDeniedError | obstore_errors.UnauthenticatedError | PermissionError,
        ):
            return FatalStoreError(f"access denied to {location} ({_first_line(text)})")
        if "NoSuchBucket" in text:
            return FatalStoreError(f"bucket {self.bucket!r} does not exist")
        if "Connection refused" in text or "dns error" in text.lower():
            url = urlsplit(self.endpoint.url or "https://s3.amazonaws.com")
            return FatalStoreError(f"cannot reach the S3 endpoint {url.scheme}://{url.netloc}")
        status = _status_in(text)
        if status == "400":
            # A HEAD has no body to name its error; for an existing key, 400 means SSE-C.
            return UnreadableObjectError(f"{location} cannot be read without a customer-provided key (400)")
        if status in ("403",):
            return FatalStoreError(f"access denied to {location} (403)")
        return TransientStoreError(f"{location}: {_first_line(text)}")

    def _botocore_error(self, error: Exception, key: str) -> StoreError | None:
        from botocore.exceptions import (
            BotoCoreError,
            ClientError,
            EndpointConnectionError,
            NoCredentialsError,
            PartialCredentialsError,
        )

        if isinstance(error, ClientError):
            return self._client_error(error, key)
        if isinstance(error, NoCredentialsError):
            return FatalStoreError(
                "no AWS credentials found (set AWS_PROFILE, or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY)"
            )
        if isinstance(error, PartialCredentialsError):
            return FatalStoreError(f"incomplete AWS credentials: {error}")
        if isinstance(error, EndpointConnectionError):
            url = urlsplit(str(error.kwargs.get("endpoint_url", "")))
            return FatalStoreError(f"cannot reach the S3 endpoint {url.scheme}://{url.netloc}")
        if isinstance(error, BotoCoreError):
            return TransientStoreError(f"{self.describe(key)}: {error}")
        return None

    def _client_error(self, error: Any, key: str) -> StoreError:
        details = error.response.get("Error", {})
        code = str(details.get("Code", ""))
        status = str(error.response.get("ResponseMetadata", {}).get("HTTPStatusCode", ""))
        location = self.describe(key)
        if code == "NoSuchBucket":
            return FatalStoreError(f"bucket {self.bucket!r} does not exist")
        if code in _NOT_FOUND or status == "404":
            return NotFoundError(f"{location} does not exist")
        if code in _PRECONDITION or status in ("409", "412"):
            return PreconditionFailedError(
                f"{location} changed while it was being updated ({code or status})"
            )
        if code in _DENIED or status == "403":
            return FatalStoreError(f"access denied to {location} ({code or status})")
        if code in _TRANSIENT or status.startswith("5"):
            return TransientStoreError(f"{location}: {code or status} {details.get('Message', '')}".strip())
        return StoreError(f"{location}: {code or status} {details.get('Message', '')}".strip())


def _unquote(etag: str) -> str:
    return etag.strip('"')


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0][:300] if text.strip() else "unknown error"


def _status_in(text: str) -> str | None:
    for status in ("400", "403", "500", "502", "503", "504"):
        if f"status {status}" in text or f"Status: {status}" in text or f" {status} " in text:
            return status
    return None
