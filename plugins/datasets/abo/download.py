"""Downloading the public ABO archives: resumable, verified, idempotent, safely extracted.

``download_abo(dest)`` fetches the archives of a variant (``small``: the listings and the 256-px
images with their metadata) from the ABO bucket (or any base URL that serves the same file names),
checks each one, and unpacks it into ``dest`` so that ``dest/listings/metadata/listings_*.json.gz``,
``dest/images/metadata/images.csv.gz`` and ``dest/images/small/<xx>/<name>.jpg`` exist.

- **Resumable**: bytes go to ``<archive>.part``; an interrupted transfer continues with an HTTP
  ``Range`` request (guarded by ``If-Range`` so a changed remote file restarts from zero), both within a
  run (dropped connections are retried) and across runs.
- **Verified**: the size must equal the server's ``Content-Length``. The bucket publishes an MD5 in
  each object's ETag: a plain ETag is the file's MD5, a multipart ETag ``<hex>-<n>`` is the MD5 of the
  MD5s of ``n`` equal parts; both are checked (the part size is recovered from ``n``). A SHA-256 given
  by the caller is checked too. A mismatch deletes the download and fails. A mirror that publishes no
  checksum (and no ``--sha256`` given) is accepted with a warning, and the state file records the
  archive as ``"unverified"``.
- **Bounded**: each archive has a documented ceiling (:attr:`Archive.max_bytes`, well above its
  published size). A server that announces more, or sends more (a response without ``Content-Length``
  that never ends), is refused; the partial file is removed.
- **Idempotent**: a state file (``.vlmbench-download.json``) records what was extracted; a re-run
  finds it and does nothing, without touching the network.
- **Safe extraction**: see :mod:`.extract`.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import json
import os
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vlmbench.api import write_json
from vlmbench_plugins.datasets.abo.extract import DownloadError, progress_bar, safe_extract

ABO_BASE_URL = "https://amazon-berkeley-objects.s3.amazonaws.com/archives"
STATE_FILE = ".vlmbench-download.json"
CHUNK = 1 << 20
MIB = 1 << 20


@dataclass(frozen=True)
class Archive:
    """One archive of the ABO bucket. ``expect`` names a path that exists after extraction;
    ``max_bytes`` is the most a download of it may write (its published size with ample headroom)."""

    name: str
    expect: str
    summary: str = ""
    max_bytes: int = 8 << 30


VARIANTS: dict[str, tuple[Archive, ...]] = {
    "small": (
        Archive("abo-listings.tar", "listings/metadata", "product listings (about 83 MB)", 512 * MIB),
        Archive(
            "abo-images-small.tar",
            "images/metadata/images.csv.gz",
            "images, longest side 256 px (about 3 GB)",
            8 << 30,
        ),
    ),
}


@dataclass
class RemoteInfo:
    size: int | None
    etag: str | None
    accepts_ranges: bool
    limit: int | None = None  # the most bytes the file may have (see fetch's max_bytes)


@dataclass
class FetchResult:
    path: Path
    size: int
    resumed_from: int = 0
    verified: list[str] = field(default_factory=list)  # "size", "etag-md5", "etag-multipart-md5", "sha256"
    requests: int = 0


@dataclass
class DownloadResult:
    dest: Path
    archives: dict[str, dict[str, Any]]
    skipped: list[str]  # archives already extracted


def remote_info(url: str, timeout: float = 60.0) -> RemoteInfo:
    """``HEAD`` the URL: its size, ETag and whether it serves byte ranges."""
    request = urllib.request.Request(url, method="HEAD")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as resp:
            headers = resp.headers
    except urllib.error.HTTPError as exc:
        raise DownloadError(f"{url}: HTTP {exc.code} {exc.reason}") from None
    except (urllib.error.URLError, OSError) as exc:
        raise DownloadError(f"{url}: cannot connect ({_reason(exc)})") from None
    length = headers.get("Content-Length")
    return RemoteInfo(
        size=int(length) if length and length.isdigit() else None,
        etag=headers.get("ETag"),
        accepts_ranges="bytes" in (headers.get("Accept-Ranges") or ""),
    )


def _reason(exc: BaseException) -> str:
    return str(getattr(exc, "reason", None) or exc)


def fetch(
    url: str,
    target: Path,
    *,
    sha256: str | None = None,
    progress: bool = True,
    retries: int = 5,
    backoff: float = 1.0,
    timeout: float = 60.0,
    max_bytes: int | None = None,
) -> FetchResult:
    """Download ``url`` to ``target`` (resuming ``target.part``), verify it, then rename it into place.
    ``max_bytes`` bounds the download: an announced size above it is refused before any transfer, and a
    transfer that goes past it (a server sending no size, or more than it announced) is stopped, its
    partial file removed."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    part = target.with_name(target.name + ".part")
    info = remote_info(url, timeout)
    if max_bytes is not None and info.size is not None and info.size > max_bytes:
        raise DownloadError(
            f"{url}: the server announces {info.size} bytes, more than the {max_bytes} this file can "
            "have; refused (is --base-url the right mirror?)"
        )
    info.limit = max_bytes
    result = FetchResult(path=target, size=0, requests=1)
    offset = part.stat().st_size if part.exists() else 0
    if info.size is not None and offset > info.size:
        part.unlink()
        offset = 0
    result.resumed_from = offset
    failures = 0
    with progress_bar(info.size, offset, target.name, progress) as bar:
        while info.size is None or offset < info.size:
            headers = {}
            if offset:
                headers["Range"] = f"bytes={offset}-"
                if info.etag:
                    headers["If-Range"] = info.etag
            try:
                offset = _transfer(url, headers, part, offset, info, bar, timeout)
                result.requests += 1
                if info.size is None:
                    break  # no length announced: one complete response is all there is
            except _TooLarge:
                part.unlink(missing_ok=True)  # not resumable: the next run starts from zero
                raise DownloadError(
                    f"{url}: the server sent more than {info.limit} bytes, more than this file can have "
                    "(a response without a size that does not end?); stopped and the partial file removed"
                ) from None
            except _Transient as exc:
                result.requests += 1
                failures += 1
                if failures > retries:
                    raise DownloadError(
                        f"{url}: transfer failed {failures} times; run the command again to resume "
                        f"from byte {part.stat().st_size if part.exists() else 0} ({exc})"
                    ) from None
                time.sleep(backoff * 2 ** (failures - 1))
                offset = part.stat().st_size if part.exists() else 0
    result.size = part.stat().st_size
    try:
        result.verified = verify(part, size=info.size, etag=info.etag, sha256=sha256)
    except DownloadError:
        part.unlink(missing_ok=True)
        raise
    os.replace(part, target)
    return result


class _Transient(Exception):
    pass


class _TooLarge(Exception):
    pass


def _transfer(url, headers, part: Path, offset: int, info: RemoteInfo, bar, timeout: float) -> int:
    request = urllib.request.Request(url, headers=headers)
    try:
        resp = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as exc:
        if exc.code in (408, 429) or exc.code >= 500:
            raise _Transient(f"HTTP {exc.code}") from None
        raise DownloadError(f"{url}: HTTP {exc.code} {exc.reason}") from None
    except (urllib.error.URLError, OSError) as exc:
        raise _Transient(_reason(exc)) from None
    with resp:
        if resp.status == 206:
            start = _range_start(resp.headers.get("Content-Range"))
            if start != offset:
                raise DownloadError(f"{url}: asked for bytes from {offset}, the server sent from {start}")
            mode = "ab"
        else:
            # A full response: the server ignores ranges or the file changed (If-Range failed).
            if offset:
                bar.reset(total=info.size)
            offset, mode = 0, "wb"
        try:
            with open(part, mode) as fh:
                while True:
                    chunk = resp.read(CHUNK)
                    if not chunk:
                        break
                    if info.limit is not None and offset + len(chunk) > info.limit:
                        raise _TooLarge()
                    fh.write(chunk)
                    offset += len(chunk)
                    bar.update(len(chunk))
        except (http.client.IncompleteRead, OSError) as exc:
            raise _Transient(f"connection lost at byte {offset}: {type(exc).__name__}") from None
    if info.size is not None and offset < info.size:
        raise _Transient(f"connection closed at byte {offset} of {info.size}")
    return offset


def _range_start(content_range: str | None) -> int | None:
    # "bytes 100-999/1000"
    if not content_range or not content_range.startswith("bytes "):
        return None
    first = content_range[6:].split("-", 1)[0]
    return int(first) if first.isdigit() else None


def verify(path: Path, *, size: int | None, etag: str | None, sha256: str | None = None) -> list[str]:
    """Check ``path`` against the published size, the S3 ETag (MD5 or multipart MD5) and ``sha256``.

    Returns the checks that were made; raises :class:`DownloadError` on the first mismatch.
    """
    actual = path.stat().st_size
    checks = []
    if size is not None:
        if actual != size:
            raise DownloadError(f"{path.name}: {actual} bytes, but the server announced {size}")
        checks.append("size")
    tag = (etag or "").strip().strip('"')
    if tag.startswith("W/"):
        tag = ""  # a weak ETag is not a checksum
    plain = len(tag) == 32 and _is_hex(tag)
    multipart = None
    if "-" in tag:
        head, _, count = tag.partition("-")
        if len(head) == 32 and _is_hex(head) and count.isdigit() and int(count) > 0:
            multipart = (head, int(count))
    part_sizes = _part_sizes(actual, multipart[1]) if multipart else []
    digests = _hash_file(path, part_sizes, with_md5=plain, with_sha=sha256 is not None)
    if plain:
        if digests["md5"] != tag.lower():
            raise DownloadError(f"{path.name}: MD5 {digests['md5']} does not match the published {tag}")
        checks.append("etag-md5")
    if multipart and part_sizes:
        if multipart[0].lower() not in digests["multipart"]:
            raise DownloadError(
                f"{path.name}: the multipart MD5 does not match the published ETag {tag} "
                f"(tried part sizes {', '.join(str(p) for p in part_sizes)})"
            )
        checks.append("etag-multipart-md5")
    if sha256 is not None:
        if digests["sha256"] != sha256.lower():
            raise DownloadError(f"{path.name}: SHA-256 {digests['sha256']} does not match {sha256}")
        checks.append("sha256")
    return checks


def _is_hex(text: str) -> bool:
    return all(c in "0123456789abcdefABCDEF" for c in text)


def _part_sizes(size: int, parts: int) -> list[int]:
    """Whole-MiB part sizes that split ``size`` bytes into exactly ``parts`` parts (uploaders use those)."""
    if parts == 1:
        return [max(size, 1)]
    out = []
    lo = -(-size // parts) // MIB  # smallest part size, in MiB, that needs no more than `parts` parts
    for mib in range(max(lo, 1), max(lo, 1) + 64):
        n = -(-size // (mib * MIB))
        if n == parts:
            out.append(mib * MIB)
        elif n < parts:
            break
    return out[:4]


def _hash_file(path: Path, part_sizes: list[int], with_md5: bool, with_sha: bool) -> dict[str, Any]:
    md5 = hashlib.md5(usedforsecurity=False) if with_md5 else None
    sha = hashlib.sha256() if with_sha else None
    parts = {p: ([], hashlib.md5(usedforsecurity=False), 0) for p in part_sizes}
    with open(path, "rb") as fh:
        while True:
            chunk = fh.read(CHUNK)
            if not chunk:
                break
            if md5:
                md5.update(chunk)
            if sha:
                sha.update(chunk)
            for p, (done, current, filled) in list(parts.items()):
                view = memoryview(chunk)
                while view:
                    take = min(p - filled, len(view))
                    current.update(view[:take])
                    filled += take
                    view = view[take:]
                    if filled == p:
                        done.append(current.digest())
                        current, filled = hashlib.md5(usedforsecurity=False), 0
                parts[p] = (done, current, filled)
    multipart = set()
    for done, current, filled in parts.values():
        digests = done + ([current.digest()] if filled else [])
        multipart.add(hashlib.md5(b"".join(digests), usedforsecurity=False).hexdigest())
    return {
        "md5": md5.hexdigest() if md5 else None,
        "sha256": sha.hexdigest() if sha else None,
        "multipart": multipart,
    }


def _read_state(dest: Path) -> dict[str, Any]:
    path = dest / STATE_FILE
    if not path.is_file():
        return {"archives": {}}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return {"archives": {}}
    return data if isinstance(data.get("archives"), dict) else {"archives": {}}


#: The checks that prove an archive's content (a size only proves the transfer ended where announced).
CHECKSUMS = ("etag-md5", "etag-multipart-md5", "sha256")


def _unverified(verified: list[str]) -> dict[str, str]:
    """``{"unverified": why}`` for an archive no checksum was checked against, else nothing."""
    if any(check in CHECKSUMS for check in verified):
        return {}
    return {
        "unverified": "its content is UNVERIFIED: the server published no MD5 checksum (ETag) and no "
        "--sha256 ARCHIVE=HEX was given" + ("" if "size" in verified else ", nor even its size")
    }


def download_abo(
    dest: Path,
    *,
    variant: str = "small",
    base_url: str = ABO_BASE_URL,
    sha256: Mapping[str, str] | None = None,
    keep_archives: bool = False,
    force: bool = False,
    progress: bool = True,
    retries: int = 5,
    backoff: float = 1.0,
    log: Callable[[str], None] | None = None,
) -> DownloadResult:
    """Fetch and unpack the ABO archives of ``variant`` into ``dest`` (see the module docstring).

    ``sha256`` maps archive names to expected SHA-256 digests. Archives are deleted once unpacked
    unless ``keep_archives``. ``force`` downloads and unpacks again even if the state file says done.
    """
    if variant not in VARIANTS:
        raise DownloadError(f"unknown ABO variant {variant!r}; known: {', '.join(VARIANTS)}")
    dest = Path(dest).expanduser()
    dest.mkdir(parents=True, exist_ok=True)
    say = log or (lambda _msg: None)
    state = _read_state(dest)
    skipped = []
    base = base_url.rstrip("/")
    for archive in VARIANTS[variant]:
        done = state["archives"].get(archive.name)
        if not force and done and done.get("extracted") and (dest / archive.expect).exists():
            skipped.append(archive.name)
            say(f"{archive.name}: already unpacked ({done.get('files')} files), nothing to do")
            continue
        url = f"{base}/{archive.name}"
        local = dest / "archives" / archive.name
        if force:
            local.unlink(missing_ok=True)
            local.with_name(local.name + ".part").unlink(missing_ok=True)
        if local.is_file() and done and done.get("verified_size") == local.stat().st_size:
            say(f"{archive.name}: downloaded earlier, unpacking")
            fetched = {"size": local.stat().st_size, "verified": done.get("verified", [])}
        else:
            say(f"{archive.name}: downloading {url}")
            result = fetch(
                url,
                local,
                sha256=(sha256 or {}).get(archive.name),
                progress=progress,
                retries=retries,
                backoff=backoff,
                max_bytes=archive.max_bytes,
            )
            fetched = {"size": result.size, "verified": result.verified, "resumed_from": result.resumed_from}
            state["archives"][archive.name] = {
                "url": url,
                "verified_size": result.size,
                "verified": result.verified,
                "extracted": False,
                **_unverified(result.verified),
            }
            write_json(dest / STATE_FILE, state)
        files = safe_extract(local, dest, progress=progress)
        if not (dest / archive.expect).exists():
            raise DownloadError(f"{archive.name}: unpacked, but {archive.expect} is not in it")
        state["archives"][archive.name] = {
            "url": url,
            "verified_size": fetched["size"],
            "verified": fetched["verified"],
            "extracted": True,
            "files": files,
            **_unverified(fetched["verified"]),
        }
        write_json(dest / STATE_FILE, state)
        if "unverified" in state["archives"][archive.name]:
            say(f"warning: {archive.name}: {state['archives'][archive.name]['unverified']}")
        if not keep_archives:
            local.unlink(missing_ok=True)
        say(f"{archive.name}: {files} files unpacked into {dest}")
    with contextlib.suppress(OSError):
        (dest / "archives").rmdir()  # only when empty
    return DownloadResult(dest=dest, archives=state["archives"], skipped=skipped)
