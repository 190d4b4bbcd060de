"""Sweep storage on a local path or S3 (pyarrow's filesystems).

Credentials come only from the environment, the shared credentials file or the instance
profile (pyarrow's default chain); nothing here accepts, pickles or records them (see
orchestration/store/credentials.py). An endpoint override serves S3-compatible
stores (MinIO, moto, Ceph …).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import tempfile
import uuid
from typing import Any

import pyarrow.fs as pafs

TMP_SUFFIX = ".tmp"  # local writes in flight: hidden, and left out of list()


def _fsync_dir(folder: str) -> None:
    """Make a rename in ``folder`` durable (a crash right after it must not undo it)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:  # some file systems refuse fsync on folders; the rename itself is still atomic
        pass
    finally:
        os.close(fd)


def _s3(endpoint: str | None, region: str | None) -> pafs.S3FileSystem:
    endpoint = endpoint or os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    kw: dict[str, Any] = {}
    if endpoint:
        scheme, _, host = endpoint.partition("://")
        if "@" in (host or scheme):  # no host has one; a secret may hold '/', so search it all
            # user:secret@host would be copied into sweep.yaml, Store.spec(), MLflow params and logs
            shown = ("" if not host else f"{scheme}://") + "***@" + (host or scheme).rsplit("@", 1)[1]
            raise ValueError(
                f"S3 endpoint {shown} carries credentials; give the bare endpoint and the keys through "
                "the environment, ~/.aws/credentials (0600) or an instance role"
            )
        kw.update(endpoint_override=host or scheme, scheme=scheme if host else "https")
    region = region or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    if region:
        kw["region"] = region
    return pafs.S3FileSystem(**kw)


class Store:
    """Files of one storage root, addressed by relative paths ("items/base/x/checkpoint.pt")."""

    def __init__(self, uri: str, endpoint: str | None = None, region: str | None = None) -> None:
        self.uri = uri.rstrip("/")
        self.endpoint, self.region = endpoint, region
        if uri.startswith("s3://"):
            self.fs: pafs.FileSystem = _s3(endpoint, region)
            self.root = self.uri[len("s3://") :]  # pyarrow paths carry no scheme
        else:
            self.fs = pafs.LocalFileSystem()
            self.root = os.path.abspath(uri[len("file://") :] if uri.startswith("file://") else uri)
            # Absolute from here on: Ray Tune runs each trial in its own working directory, so a
            # relative path handed to a worker would point somewhere else.
            self.uri = self.root

    @property
    def is_s3(self) -> bool:
        return self.uri.startswith("s3://")

    def spec(self) -> dict[str, Any]:
        """What a worker needs to open the same store (no credentials)."""
        return {"uri": self.uri, "endpoint": self.endpoint, "region": self.region}

    def sub(self, *parts: str) -> Store:
        return Store("/".join([self.uri, *parts]), self.endpoint, self.region)

    def path(self, rel: str = "") -> str:
        return f"{self.root}/{rel}".rstrip("/") if rel else self.root

    def url(self, rel: str = "") -> str:
        """A URI others (MLflow, users) understand: s3://… or an absolute local path."""
        return f"s3://{self.path(rel)}" if self.is_s3 else self.path(rel)

    def exists(self, rel: str) -> bool:
        return self.fs.get_file_info(self.path(rel)).type != pafs.FileType.NotFound

    def read_bytes(self, rel: str) -> bytes:
        with self.fs.open_input_stream(self.path(rel)) as f:
            return f.read()

    def write_bytes(self, rel: str, data: bytes) -> None:
        """Replace a file whole: a reader sees the old or the new content, never a torn one.

        Locally: a hidden temp file in the same folder, fsync'ed, then renamed over the target
        (rename is atomic within a file system) and the folder fsync'ed, so a crash leaves the old
        file or the new one. On S3 an object appears only when its upload completes: pyarrow sends
        the bytes as one multipart upload (a single part for small files) committed by one
        CompleteMultipartUpload after every part arrived; a failed part fails ``close()`` before
        that commit (background writes, pyarrow's default), and a killed process never commits.
        The whole payload goes in one ``write()``, so no partial stream is ever closed."""
        target = self.path(rel)
        if self.is_s3:
            with self.fs.open_output_stream(target) as f:
                f.write(data)
            return
        folder = os.path.dirname(target)
        os.makedirs(folder, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{os.path.basename(target)}.", suffix=TMP_SUFFIX)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, target)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        _fsync_dir(folder)

    def copy(self, src: str, dst: str) -> None:
        """Copy a file atomically: ``dst`` holds the old or the whole new content (S3: one CopyObject;
        locally a hard link — no bytes copied — renamed over ``dst``)."""
        if self.is_s3:
            self.fs.copy_file(self.path(src), self.path(dst))
            return
        target = self.path(dst)
        tmp = f"{os.path.dirname(target)}/.{os.path.basename(target)}.{uuid.uuid4().hex}{TMP_SUFFIX}"
        try:
            os.link(self.path(src), tmp)
        except OSError:  # no hard links here (some network file systems): copy the bytes
            self.write_bytes(dst, self.read_bytes(src))
            return
        os.replace(tmp, target)
        _fsync_dir(os.path.dirname(target))

    def delete(self, rel: str) -> None:
        """Remove a file; a missing one is fine."""
        try:
            self.fs.delete_file(self.path(rel))
        except FileNotFoundError:
            pass

    def read_json(self, rel: str) -> Any:
        return json.loads(self.read_bytes(rel))

    def write_json(self, rel: str, obj: Any) -> None:
        self.write_bytes(rel, json.dumps(obj, indent=2, default=str).encode())

    def save_torch(self, rel: str, obj: Any) -> None:
        import torch  # here, not at the top: `nf sweep status/list` read storage without torch

        buf = io.BytesIO()
        torch.save(obj, buf)
        self.write_bytes(rel, buf.getvalue())

    def load_torch(self, rel: str, map_location: str = "cpu") -> Any:
        import torch

        # weights_only=False: checkpoints hold configs and RNG states, and are our own files.
        return torch.load(io.BytesIO(self.read_bytes(rel)), map_location=map_location, weights_only=False)

    def list(self, rel: str = "") -> list[str]:
        """Names directly under ``rel`` (empty if it does not exist)."""
        sel = pafs.FileSelector(self.path(rel), allow_not_found=True)
        names = (os.path.basename(i.path) for i in self.fs.get_file_info(sel))
        return sorted(n for n in names if not (n.startswith(".") and n.endswith(TMP_SUFFIX)))  # a write in flight

    def list_files(self, rel: str = "") -> list[str]:
        """Paths (relative to ``rel``) of every file below ``rel``, in one recursive listing."""
        base = self.path(rel).rstrip("/")
        sel = pafs.FileSelector(base, allow_not_found=True, recursive=True)
        return sorted(
            i.path[len(base) + 1 :]
            for i in self.fs.get_file_info(sel)
            if i.type == pafs.FileType.File and not os.path.basename(i.path).endswith(TMP_SUFFIX)
        )

    def download_dir(self, rel: str, local: str) -> str:
        """Copy a folder to a local path (datasets with an s3:// root are read locally)."""
        os.makedirs(local, exist_ok=True)
        pafs.copy_files(self.path(rel), local, source_filesystem=self.fs, destination_filesystem=pafs.LocalFileSystem())
        return local
