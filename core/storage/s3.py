"""`S3Store`: artifacts in S3 or anything that speaks it (MinIO, moto); boto3 is imported only when one is
made, so the API starts fast."""

from __future__ import annotations

import contextlib
from datetime import timezone
from typing import BinaryIO, Iterator

from core.error_text import first_line

from .keys import check_delete_prefix, validate_key, validate_prefix
from .protocol import (HashingReader, ListedObject, ObjectNotFound, StorageError, StoredObject, StoreMixin,
                       content_type_for)


class S3Store(StoreMixin):
    """Objects are `s3://<bucket>/<prefix><key>`. Content types are stored on the object, so presigned GETs
    serve them. boto3 retries transient failures (throttling, 5xx, dropped connections) with backoff in its
    "standard" mode; what still fails becomes one StorageError naming the object. Uploads at or above
    `multipart_threshold` go up in parallel parts; a failed multipart upload is aborted, leaving nothing.

    `connect_timeout` and `max_attempts` apply to the client built here, not to a `client` passed in.
    Presigned URLs name `public_endpoint_url` when given: a SigV4 signature covers the host, so a link that
    clients reach by another address than the servers must be signed for that address (no request is sent).
    """

    def __init__(self, bucket: str, prefix: str = "", endpoint_url: str | None = None, client=None, *,
                 public_endpoint_url: str | None = None, connect_timeout: float = 5.0, max_attempts: int = 3,
                 multipart_threshold: int = 16 * 1024 * 1024, multipart_chunksize: int = 8 * 1024 * 1024) -> None:
        from boto3.s3.transfer import TransferConfig

        if not bucket:
            raise StorageError("S3 store: no bucket given (STORAGE_URL must be s3://bucket/prefix)")
        self.bucket = bucket
        prefix = prefix.strip("/")
        self.prefix = f"{validate_key(prefix)}/" if prefix else ""
        self.endpoint_url = endpoint_url or None
        self._client = client if client is not None else self._make_client(connect_timeout, max_attempts)
        self.public_endpoint_url = public_endpoint_url or None
        self._signer = self._client
        if self.public_endpoint_url and self.public_endpoint_url != self.endpoint_url:
            self._signer = self._make_client(connect_timeout, max_attempts, self.public_endpoint_url)
        # A one-pass source is buffered part by part in memory (see HashingReader), so the threshold and
        # part size bound memory: at most the threshold for a single PUT, a few parts in flight otherwise.
        self._transfer = TransferConfig(multipart_threshold=multipart_threshold,
                                        multipart_chunksize=multipart_chunksize, max_concurrency=4)
        # s3transfer reads up to 10 parts of such a source ahead of the uploads by default (80 MiB more of the
        # worker's memory for any file past 80 MiB, a large generate job's images.tar); as many as upload at once.
        self._transfer.max_in_memory_upload_chunks = 4

    def __repr__(self) -> str:
        return f"S3Store({self._url('')!r}, endpoint_url={self.endpoint_url!r})"

    def _make_client(self, connect_timeout: float, max_attempts: int, endpoint_url: str | None = None):
        import boto3
        from botocore.config import Config

        endpoint_url = endpoint_url or self.endpoint_url
        config = Config(
            connect_timeout=connect_timeout,
            retries={"mode": "standard", "max_attempts": max_attempts},
            # MinIO and moto are reached by host name or IP, where bucket.host virtual addressing cannot resolve.
            s3={"addressing_style": "path"} if endpoint_url else None,
        )
        # A session of our own: boto3's default session is shared module state and not thread-safe to build.
        return boto3.session.Session().client("s3", endpoint_url=endpoint_url, config=config)

    def _url(self, key: str) -> str:
        return f"s3://{self.bucket}/{self.prefix}{key}"

    def _full(self, key: str) -> str:
        return self.prefix + validate_key(key)

    @contextlib.contextmanager
    def _errors(self, action: str, key: str, missing_is_not_found: bool = False) -> Iterator[None]:
        from boto3.exceptions import Boto3Error
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            yield
        except ClientError as exc:
            error = exc.response.get("Error", {})
            code = error.get("Code", "Unknown")
            if missing_is_not_found and code in ("NoSuchKey", "404", "NotFound"):
                raise ObjectNotFound(f"no object {self._url(key)}") from exc
            message = error.get("Message") or ""
            raise StorageError(f"cannot {action} {self._url(key)}: {code} {message}".strip()) from exc
        except (BotoCoreError, Boto3Error) as exc:
            raise StorageError(f"cannot {action} {self._url(key)}: {first_line(exc)}") from exc

    def put_stream(self, key: str, stream: BinaryIO, content_type: str | None = None) -> StoredObject:
        full = self._full(key)
        content_type = content_type or content_type_for(key)
        reader = HashingReader(stream)
        # The source's own read errors pass through unchanged; _errors converts only boto's.
        with self._errors("upload", key):
            self._client.upload_fileobj(reader, self.bucket, full, ExtraArgs={"ContentType": content_type},
                                        Config=self._transfer)
        return reader.stored(key, content_type)

    def open(self, key: str) -> BinaryIO:
        full = self._full(key)
        with self._errors("read", key, missing_is_not_found=True):
            return self._client.get_object(Bucket=self.bucket, Key=full)["Body"]

    def exists(self, key: str) -> bool:
        full = self._full(key)
        try:
            with self._errors("stat", key, missing_is_not_found=True):
                self._client.head_object(Bucket=self.bucket, Key=full)
        except ObjectNotFound:
            return False
        return True

    def list(self, prefix: str = "") -> list[str]:
        full = self.prefix + validate_prefix(prefix)
        keys = []
        with self._errors("list", prefix):
            for page in self._client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=full):
                keys.extend(obj["Key"][len(self.prefix):] for obj in page.get("Contents", []))
        return sorted(keys)

    def list_objects(self, prefix: str = "", start_after: str = "", limit: int | None = None) -> list[ListedObject]:
        full = self.prefix + validate_prefix(prefix)
        # S3 lists in key order (UTF-8 bytes), so StartAfter and a count bound one batch of a walk.
        extra = {"StartAfter": self.prefix + start_after} if start_after else {}
        if limit is not None:
            extra["PaginationConfig"] = {"MaxItems": limit}
        found = []
        with self._errors("list", prefix):
            pages = self._client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=full, **extra)
            for page in pages:
                found.extend(ListedObject(obj["Key"][len(self.prefix):], obj["Size"],
                                          obj["LastModified"].astimezone(timezone.utc))
                             for obj in page.get("Contents", []))
        return sorted(found, key=lambda listed: listed.key)[:limit]

    def delete(self, key: str) -> None:
        full = self._full(key)
        with self._errors("delete", key):
            self._client.delete_object(Bucket=self.bucket, Key=full)

    def delete_prefix(self, prefix: str) -> None:
        check_delete_prefix(prefix)
        keys = self.list(prefix)
        for start in range(0, len(keys), 1000):  # DeleteObjects takes at most 1000 keys a call
            batch = [{"Key": self.prefix + key} for key in keys[start:start + 1000]]
            with self._errors("delete", prefix):
                response = self._client.delete_objects(Bucket=self.bucket, Delete={"Objects": batch, "Quiet": True})
            if response.get("Errors"):
                first = response["Errors"][0]
                raise StorageError(f"cannot delete {len(response['Errors'])} objects under {self._url(prefix)}, "
                                   f"first s3://{self.bucket}/{first.get('Key')}: {first.get('Code')}")

    def presigned_url(self, key: str, expires_seconds: int = 300, content_type: str | None = None,
                      content_disposition: str | None = None) -> str | None:
        """`content_type` / `content_disposition`: what the store answers in those headers (S3's signed
        response-content-* overrides), whatever the object was stored with."""
        full = self._full(key)
        if not 1 <= expires_seconds <= 7 * 24 * 3600:  # SigV4's limit
            raise StorageError(f"presigned URL for {key!r}: expires_seconds must be 1..604800, got {expires_seconds}")
        params = {"Bucket": self.bucket, "Key": full}
        if content_type:
            params["ResponseContentType"] = content_type
        if content_disposition:
            params["ResponseContentDisposition"] = content_disposition
        with self._errors("sign", key):
            return self._signer.generate_presigned_url("get_object", Params=params, ExpiresIn=expires_seconds)

    def check(self) -> None:
        with self._errors("reach bucket", ""):
            self._client.head_bucket(Bucket=self.bucket)
