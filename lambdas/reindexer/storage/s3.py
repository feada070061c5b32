"""Amazon S3 (and S3-compatible stores: MinIO, R2, moto) behind the Store interface; the only boto3 user."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import boto3
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectionClosedError,
    EndpointConnectionError,
    NoCredentialsError,
    PartialCredentialsError,
    ReadTimeoutError,
    ResponseStreamingError,
)

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

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

DOWNLOAD_CHUNK = 1024 * 1024
_NOT_FOUND = {"NoSuchKey", "404", "NotFound"}
_PRECONDITION = {"PreconditionFailed", "412", "ConditionalRequestConflict", "409"}
_DENIED = {"AccessDenied", "403", "Forbidden", "InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken"}
_TRANSIENT = {
    "SlowDown",
    "Throttling",
    "ThrottlingException",
    "RequestTimeout",
    "InternalError",
    "503",
    "500",
}


def create_s3_client(
    *,
    endpoint_url: str | None = None,
    region: str | None = None,
    force_path_style: bool = False,
    max_connections: int = 10,
) -> S3Client:
    """An S3 client with standard retries, sized for `max_connections` parallel requests."""
    config = Config(
        s3={"addressing_style": "path" if force_path_style else "auto"},
        retries={"mode": "standard", "max_attempts": 5},
        max_pool_connections=max_connections,
        connect_timeout=10,
        read_timeout=60,
    )
    session = boto3.session.Session()
    return session.client("s3", endpoint_url=endpoint_url, region_name=region, config=config)


class S3Store:
    """A bucket as a Store; counts every HTTP request it sends, retries included, by S3 operation."""

    def __init__(self, bucket: str, client: S3Client) -> None:
        self.bucket = bucket
        self.client = client
        self.requests: Counter[str] = Counter()
        self._lock = threading.Lock()
        client.meta.events.register("before-send.s3", self._count_request)

    def describe(self, key: str) -> str:
        return f"s3://{self.bucket}/{key}"

    def list_folder(self, prefix: str) -> FolderListing:
        folder = f"{prefix.strip('/')}/" if prefix.strip("/") else ""
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
        with self._errors(key):
            response = self.client.get_object(Bucket=self.bucket, Key=key)
            return response["Body"].read(), _unquote(response["ETag"])

    def download(
        self,
        key: str,
        sink: Callable[[bytes], None],
        *,
        expect: Callable[[StoredObject], None] | None = None,
    ) -> StoredObject:
        with self._errors(key):
            response = self.client.get_object(Bucket=self.bucket, Key=key)
            body = response["Body"]
            try:
                if expect is not None:
                    expect(StoredObject(key, _unquote(response["ETag"]), response["ContentLength"]))
                size = 0
                for chunk in body.iter_chunks(DOWNLOAD_CHUNK):
                    sink(chunk)
                    size += len(chunk)
            finally:
                body.close()
            return StoredObject(key, _unquote(response["ETag"]), size)

    def write(
        self,
        key: str,
        data: bytes,
        *,
        content_type: str,
        cache_control: str | None = None,
        if_match: str | None = None,
        if_none_match: bool = False,
    ) -> str:
        arguments: dict[str, Any] = {
            "Bucket": self.bucket,
            "Key": key,
            "Body": data,
            "ContentType": content_type,
        }
        if cache_control:
            arguments["CacheControl"] = cache_control
        if if_match is not None:
            arguments["IfMatch"] = f'"{if_match}"'
        if if_none_match:
            arguments["IfNoneMatch"] = "*"
        try:
            with self._errors(key):
                response = self.client.put_object(**arguments)
                return _unquote(response["ETag"])
        except NotFoundError:
            if if_match is None:
                raise
            # S3 answers 404 to If-Match on a key that was deleted meanwhile: the expected version is gone.
            raise PreconditionFailedError(
                f"{self.describe(key)} was deleted while it was being updated"
            ) from None

    def head(self, key: str) -> StoredObject | None:
        try:
            with self._errors(key):
                response = self.client.head_object(Bucket=self.bucket, Key=key)
        except NotFoundError:
            return None
        return StoredObject(key, _unquote(response["ETag"]), response["ContentLength"])

    def delete(self, key: str, *, if_match: str | None = None) -> None:
        arguments: dict[str, Any] = {"Bucket": self.bucket, "Key": key}
        if if_match is not None:
            arguments["IfMatch"] = f'"{if_match}"'
        with self._errors(key):
            self.client.delete_object(**arguments)

    def _count_request(self, event_name: str = "", **_: Any) -> None:
        operation = event_name.rsplit(".", 1)[-1]
        with self._lock:
            self.requests[operation] += 1

    @contextmanager
    def _errors(self, key: str) -> Iterator[None]:
        """Translate botocore's exceptions into the Store's one-line errors."""
        try:
            yield
        except StoreError:
            raise
        except ClientError as error:
            raise self._client_error(error, key) from None
        except NoCredentialsError:
            raise FatalStoreError(
                "no AWS credentials found (set AWS_PROFILE, or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY)"
            ) from None
        except PartialCredentialsError as error:
            raise FatalStoreError(f"incomplete AWS credentials: {error}") from None
        except EndpointConnectionError as error:
            url = urlsplit(str(error.kwargs.get("endpoint_url", "")))
            raise FatalStoreError(f"cannot reach the S3 endpoint {url.scheme}://{url.netloc}") from None
        except (ReadTimeoutError, ResponseStreamingError, ConnectionClosedError) as error:
            raise TransientStoreError(f"{self.describe(key)}: {error}") from None
        except BotoCoreError as error:
            raise TransientStoreError(f"{self.describe(key)}: {error}") from None

    def _client_error(self, error: ClientError, key: str) -> StoreError:
        details = error.response.get("Error", {})
        code = str(details.get("Code", ""))
        status = str(error.response.get("ResponseMetadata", {}).get("HTTPStatusCode", ""))
        location = self.describe(key)
        if code == "InvalidObjectState":
            return UnreadableObjectError(f"{location} is archived ({details.get('StorageClass', 'Glacier')})")
        if code == "InvalidRequest" and "Server Side Encryption" in str(details.get("Message", "")):
            return UnreadableObjectError(f"{location} is encrypted with a customer-provided key (SSE-C)")
        if code == "400":
            # A HEAD has no body to name its error; for an existing key, 400 means SSE-C.
            return UnreadableObjectError(f"{location} cannot be read without a customer-provided key (400)")
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
