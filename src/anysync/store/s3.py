"""S3 store: one bucket of MinIO, SeaweedFS, Garage, AWS S3 or any S3-compatible server.

Objects are written with the minio SDK: one PUT up to PART_SIZE, above it a multipart
upload of PART_SIZE parts sent one at a time, so a put holds at most one part in
memory whatever the object's size. Either way an object is absent or complete: S3's
own atomicity (a multipart object appears at CompleteMultipartUpload) gives the
contract's. Failures that may pass (5xx, timeouts, connection resets) are raised as
TransientStoreError for store.retry to retry; everything else is permanent and says
what to fix. Multipart uploads left behind by a crash are aborted by
`abort_stale_uploads` (boto3: the minio SDK has no public call for it).

`presign` returns short-lived URLs for one object and one method: clients then move
packs to and from the store directly, and the server only checks the result.
"""

from __future__ import annotations

import datetime
import logging
import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO, cast
from urllib.parse import urlsplit

import certifi
import urllib3
from minio import Minio
from minio.error import S3Error, ServerError

from anysync.errors import AnySyncError, NotFound
from anysync.store.base import (
    READ_CHUNK,
    OutOfRangeError,
    Readable,
    S3Settings,
    TransientStoreError,
    check_key,
    check_prefix,
)

__all__ = ["S3Settings", "S3Store", "TransientStoreError"]

log = logging.getLogger(__name__)

# The memory one put holds (S3's smallest part is 5 MiB). Packs of the client's usual
# 16 MiB go in two or three parts.
PART_SIZE = 8 << 20
_MISSING = {"NoSuchKey", "NoSuchObject", "NoSuchUpload", "NotFound"}
_CREDENTIALS = {"AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "Forbidden"}


class S3Store:
    def __init__(
        self,
        endpoint: str,
        bucket: str,
        access_key: str,
        secret_key: str,
        region: str = "us-east-1",
        ca_file: str = "",
        public_endpoint: str = "",
    ) -> None:
        self.endpoint = endpoint
        self.bucket = bucket
        self._region = region
        self._access_key = access_key
        self._secret_key = secret_key
        self._ca_file = ca_file
        self._client = self._minio(endpoint)
        # Presigned URLs embed the host they were signed for: sign for the address
        # clients use, which may differ from the one the server uses.
        self._presigner = self._minio(public_endpoint) if public_endpoint else self._client

    def _minio(self, endpoint: str) -> Minio:
        parts = urlsplit(endpoint)
        ctx = ssl.create_default_context(cafile=self._ca_file or certifi.where())
        http = urllib3.PoolManager(
            timeout=urllib3.Timeout(connect=10, read=120),
            retries=False,  # store.retry does it, with backoff and jitter
            ssl_context=ctx if parts.scheme == "https" else None,
            maxsize=16,
        )
        return Minio(
            parts.netloc,
            access_key=self._access_key,
            secret_key=self._secret_key,
            secure=parts.scheme == "https",
            region=self._region,
            http_client=http,
        )

    def __repr__(self) -> str:
        return f"S3Store({self.endpoint}, bucket={self.bucket})"

    def ensure_bucket(self) -> None:
        with _Errors(f"bucket {self.bucket}"):
            if not self._client.bucket_exists(self.bucket):
                self._client.make_bucket(self.bucket)
                log.info("created bucket %s on %s", self.bucket, self.endpoint)

    def put(self, key: str, source: Readable | Path, size: int) -> None:
        check_key(key)
        with _Errors(key):
            if isinstance(source, Path):
                with open(source, "rb") as f:
                    self._client.put_object(
                        self.bucket, key, f, size, part_size=PART_SIZE, num_parallel_uploads=1
                    )
            else:
                stream = cast(BinaryIO, source)  # the SDK only calls read(n)
                self._client.put_object(
                    self.bucket, key, stream, size, part_size=PART_SIZE, num_parallel_uploads=1
                )

    def get_range(self, key: str, offset: int = 0, length: int = 0) -> Iterator[bytes]:
        total = self.size(key)
        end = total if length == 0 else offset + length
        if offset < 0 or length < 0 or offset > total or end > total:
            raise OutOfRangeError(f"range {offset}+{length} is outside {key} ({total} bytes)")
        return self._read(key, offset, end - offset)

    def _read(self, key: str, offset: int, length: int) -> Iterator[bytes]:
        if length == 0:
            return
        with _Errors(key):
            response = self._client.get_object(self.bucket, key, offset=offset, length=length)
        try:
            with _Errors(key):
                yield from response.stream(READ_CHUNK)
        finally:
            response.close()
            response.release_conn()

    def stat(self, key: str) -> tuple[int, str]:
        """(size, ETag without quotes). For a single-part upload the ETag is its MD5."""
        check_key(key)
        with _Errors(key):
            obj = self._client.stat_object(self.bucket, key)
        return int(obj.size or 0), (obj.etag or "").strip('"')

    def size(self, key: str) -> int:
        return self.stat(key)[0]

    def delete(self, key: str) -> None:
        check_key(key)
        with _Errors(key):
            self._client.remove_object(self.bucket, key)

    def list(self, prefix: str = "") -> Iterator[str]:
        check_prefix(prefix)
        with _Errors(prefix or "the bucket"):
            for obj in self._client.list_objects(self.bucket, prefix=prefix, recursive=True):
                if obj.object_name is not None:
                    yield obj.object_name

    def presign(self, method: str, key: str, seconds: int) -> str:
        check_key(key)
        return self._presigner.get_presigned_url(
            method, self.bucket, key, expires=datetime.timedelta(seconds=seconds)
        )

    def abort_stale_uploads(self, older_than: datetime.timedelta) -> int:
        """Abort multipart uploads a crash left behind; returns how many."""
        import boto3  # only needed here; the minio SDK has no public call for it
        from botocore.config import Config

        s3 = boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=self._access_key,
            aws_secret_access_key=self._secret_key,
            region_name=self._region,
            verify=self._ca_file or True,
            config=Config(signature_version="s3v4", s3={"addressing_style": "path"}),
        )
        cutoff = datetime.datetime.now(datetime.UTC) - older_than
        aborted = 0
        resp = s3.list_multipart_uploads(Bucket=self.bucket)
        for upload in resp.get("Uploads", []):
            if upload["Initiated"] < cutoff:
                s3.abort_multipart_upload(
                    Bucket=self.bucket, Key=upload["Key"], UploadId=upload["UploadId"]
                )
                aborted += 1
        if aborted:
            log.info("aborted %d abandoned multipart uploads", aborted)
        return aborted


class _Errors:
    """Translate SDK and network errors into the store's typed errors."""

    def __init__(self, what: str) -> None:
        self.what = what

    def __enter__(self) -> None:
        return None

    def __exit__(self, exc_type: object, exc: BaseException | None, tb: object) -> None:
        if exc is None or isinstance(exc, AnySyncError):
            return
        if isinstance(exc, S3Error):
            if exc.code in _MISSING:
                raise NotFound(f"no object {self.what}") from None
            if exc.code in _CREDENTIALS:
                raise AnySyncError(
                    f"the object store refused access to {self.what} ({exc.code}): check "
                    "[storage] access_key and the secret key"
                ) from None
            if exc.code in ("InternalError", "SlowDown", "ServiceUnavailable", "RequestTimeout"):
                raise TransientStoreError(f"object store: {exc.code} for {self.what}") from None
            raise AnySyncError(
                f"the object store refused {self.what}: {exc.code} {exc.message}"
            ) from None
        if isinstance(
            exc, ServerError | urllib3.exceptions.HTTPError | ConnectionError | TimeoutError
        ):
            raise TransientStoreError(
                f"object store unavailable ({exc.__class__.__name__}) for {self.what}"
            ) from None
