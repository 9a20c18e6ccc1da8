"""Unpacking a downloaded archive safely, and what the download step shares: its error and its progress bar.

Extraction goes through tarfile's ``data`` extraction filter; only regular files and folders are
unpacked; absolute paths, ``..``, links and device entries are refused, and every target must resolve
inside the destination.
"""

from __future__ import annotations

import platform
import tarfile
from pathlib import Path, PurePosixPath

from vlmbench.api import VlmbenchError


class DownloadError(VlmbenchError):
    """A transfer that failed, did not verify, or an archive that is unsafe to unpack."""


def progress_bar(total: int | None, initial: int, desc: str, enabled: bool):
    """A byte-counting tqdm bar (a no-op when ``enabled`` is false)."""
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
            progress_bar(archive.stat().st_size, 0, f"unpack {archive.name}", progress) as bar,
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
