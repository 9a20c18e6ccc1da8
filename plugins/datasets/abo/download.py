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
  by the caller is checked too. A mismatch deletes the download and fails.
- **Idempotent**: a state file (``.vlmbench-download.json``) records what was extracted; a re-run
  finds it and does nothing, without touching the network.
- **Safe extraction**: through tarfile's ``data`` extraction filter; only regular files and folders
  are unpacked; absolute paths, ``..``, links and device entries are refused, and every target must
  resolve inside ``dest``.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import json
import os
import platform
import tarfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from vlmbench.api import VlmbenchError, write_json

ABO_BASE_URL = "https://amazon-berkeley-objects.s3.amazonaws.com/archives"
STATE_FILE = ".vlmbench-download.json"
CHUNK = 1 << 20
MIB = 1 << 20


class DownloadError(VlmbenchError):
    """A transfer that failed, did not verify, or an archive that is unsafe to unpack."""


@dataclass(frozen=True)
class Archive:
    """One archive of the ABO bucket. ``expect`` names a path that exists after extraction."""

    name: str
    expect: str
    summary: str = ""


VARIANTS: dict[str, tuple[Archive, ...]] = {
    "small": (
        Archive("abo-listings.tar", "listings/metadata", "product listings (about 83 MB)"),
        Archive(
            "abo-images-small.tar",
            "images/metadata/images.csv.gz",
            "images, longest side 256 px (about 3 GB)",
        ),
    ),
}


@dataclass
class RemoteInfo:
    size: int | None
    etag: str | None
    accepts_ranges: bool


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


def _progress(total: int | None, initial: int, desc: str, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(
        total=total,
        initial=initial,
        desc=desc,
        unit="B",
        unit_scale=True,
        unit_divisor=1024,
        disable=not enabled,
    )


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
) -> FetchResult:
    """Download ``url`` to ``target`` (resuming ``target.part``), verify it, then rename it into place."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    part = target.with_name(target.name + ".part")
    info = remote_info(url, timeout)
    result = FetchResult(path=target, size=0, requests=1)
    offset = part.stat().st_size if part.exists() else 0
    if info.size is not None and offset > info.size:
        part.unlink()
        offset = 0
    result.resumed_from = offset
    failures = 0
    with _progress(info.size, offset, target.name, progress) as bar:
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


def safe_extract(archive: Path, dest: Path, *, progress: bool = True) -> int:
    """Unpack ``archive`` (a tar file) into ``dest``; returns the number of files written.

    Entries are read in one streaming pass and extracted through tarfile's ``data`` filter, which refuses
    entries that would land outside ``dest`` (absolute names, links pointing outside, folders in ``dest``
    that are symlinks to elsewhere) and special files, and drops owners and unsafe permission bits. On
    top of it (:func:`_checked_member`) only regular files and folders are unpacked, names holding
    ``..`` are refused, and so is an absolute name the filter would turn into a relative one. Any
    refused entry stops the extraction with :class:`DownloadError`. Files are written in place: an
    interrupted extraction is simply done again by the next run, as the state file records an archive
    as extracted only once it is complete.
    """
    if not hasattr(tarfile, "data_filter"):
        # Extraction filters came with Python 3.12 and the security releases 3.10.12 and 3.11.4. Without
        # them this refuses rather than keeping a second, hand-written set of checks for old releases.
        raise DownloadError(
            f"{archive.name}: this Python ({platform.python_version()}) cannot unpack archives safely "
            "(tarfile has no extraction filters); use Python 3.10.12, 3.11.4, 3.12 or newer"
        )
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    files = 0
    try:
        with (
            tarfile.open(archive, mode="r|*") as tar,
            _progress(archive.stat().st_size, 0, f"unpack {archive.name}", progress) as bar,
        ):

            def admit(member: tarfile.TarInfo, dest_path: str | Path) -> tarfile.TarInfo:
                nonlocal files
                checked = _checked_member(member, dest_path, dest)
                if checked.isreg():
                    files += 1
                bar.update(member.size)
                return checked

            tar.extractall(dest, filter=admit)
    except tarfile.TarError as exc:
        raise DownloadError(f"{archive.name}: not a readable tar archive ({exc})") from None
    return files


def _checked_member(member: tarfile.TarInfo, dest_path: str | Path, dest: Path) -> tarfile.TarInfo:
    """``member`` as tarfile's data filter passes it, with the filter's refusals as :class:`DownloadError`
    in this module's words; raises for links and special files as well."""
    unsafe = f"unsafe archive entry {member.name!r}"
    if ".." in PurePosixPath(member.name).parts:
        # Refused even where it would come back inside `dest` ("a/../b"): the filter admits that, but
        # tarfile then fails to create the folder "a/.." with a bare OSError; the ABO archives hold none.
        raise DownloadError(f"{unsafe}: leaves the destination folder")
    try:
        checked = tarfile.data_filter(member, dest_path)
    except tarfile.AbsolutePathError:
        raise DownloadError(f"{unsafe}: absolute path") from None
    except tarfile.OutsideDestinationError:
        # with `..` ruled out above: a folder already in `dest` that is a symlink to elsewhere
        raise DownloadError(f"{unsafe}: resolves outside {dest}") from None
    except (tarfile.AbsoluteLinkError, tarfile.LinkOutsideDestinationError):
        raise DownloadError(f"{unsafe}: links are not extracted") from None
    except tarfile.SpecialFileError:
        raise DownloadError(f"{unsafe}: special files are not extracted") from None
    except tarfile.FilterError as exc:
        raise DownloadError(f"{unsafe}: {exc}") from None
    if checked.name != member.name:
        # the filter strips a leading "/" and would unpack the entry inside `dest`; an archive that
        # names absolute paths is not one of the published ABO archives, so it is refused instead
        raise DownloadError(f"{unsafe}: absolute path")
    if not (checked.isdir() or checked.isreg()):
        # the filter admits links that stay inside `dest`; the ABO archives hold none, so none is made
        kind = "link" if (checked.issym() or checked.islnk()) else "special file"
        raise DownloadError(f"{unsafe}: {kind}s are not extracted")
    # readable by everyone and never executable, whatever modes the archive recorded
    return checked.replace(mode=0o644, deep=False) if checked.isreg() else checked


def _read_state(dest: Path) -> dict[str, Any]:
    path = dest / STATE_FILE
    if not path.is_file():
        return {"archives": {}}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return {"archives": {}}
    return data if isinstance(data.get("archives"), dict) else {"archives": {}}


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
            )
            fetched = {"size": result.size, "verified": result.verified, "resumed_from": result.resumed_from}
            state["archives"][archive.name] = {
                "url": url,
                "verified_size": result.size,
                "verified": result.verified,
                "extracted": False,
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
        }
        write_json(dest / STATE_FILE, state)
        if not keep_archives:
            local.unlink(missing_ok=True)
        say(f"{archive.name}: {files} files unpacked into {dest}")
    with contextlib.suppress(OSError):
        (dest / "archives").rmdir()  # only when empty
    return DownloadResult(dest=dest, archives=state["archives"], skipped=skipped)
