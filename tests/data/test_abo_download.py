"""`vlmbench data download abo` against a local server that serves archives of the ABO layout."""

from __future__ import annotations

import hashlib
import io
import os
import tarfile
from pathlib import Path

import pytest
from click.testing import CliRunner

from vlmbench.cli import cli
from vlmbench_plugins.datasets.abo import download
from vlmbench_plugins.datasets.abo.download import DownloadError, download_abo, fetch, safe_extract


def make_tar(entries: dict[str, bytes], links: dict[str, str] | None = None) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in entries.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        for name, target in (links or {}).items():
            info = tarfile.TarInfo(name)
            info.type = tarfile.SYMTYPE
            info.linkname = target
            tar.addfile(info)
    return buf.getvalue()


def abo_archives(image_bytes: int = 0) -> dict[str, bytes]:
    """Tiny archives with the layout of abo-listings.tar and abo-images-small.tar."""
    listings = make_tar({
        "listings/LICENSE-CC-BY-4.0.txt": b"licence",
        "listings/metadata/listings_0.json.gz": b"\x1f\x8b fake gzip",
    })  # fmt: skip
    images = {
        "images/LICENSE-CC-BY-4.0.txt": b"licence",
        "images/metadata/images.csv.gz": b"\x1f\x8b fake csv",
        "images/small/14/14fe8812.jpg": b"\xff\xd8" + b"j" * 100,
    }
    if image_bytes:
        images["images/small/d2/d2daaae9.jpg"] = os.urandom(image_bytes)
    return {"abo-listings.tar": listings, "abo-images-small.tar": make_tar(images)}


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def multipart_etag(data: bytes, part: int) -> str:
    digests = b"".join(hashlib.md5(data[i : i + part]).digest() for i in range(0, len(data), part))
    return f'"{hashlib.md5(digests).hexdigest()}-{-(-len(data) // part)}"'


def serve(server, files: dict[str, bytes], multipart: set[str] = frozenset()) -> None:
    server.files.update(files)
    for name, data in files.items():
        server.etags[name] = multipart_etag(data, 1 << 20) if name in multipart else f'"{md5(data)}"'


def test_download_verifies_and_unpacks_then_is_a_no_op(archive_server, tmp_path: Path):
    files = abo_archives(image_bytes=(5 << 20) // 2)  # 2.5 MiB: a three-part multipart ETag
    serve(archive_server, files, multipart={"abo-images-small.tar"})
    dest = tmp_path / "abo"
    result = download_abo(dest, base_url=archive_server.url + "/archives", progress=False, backoff=0)
    assert (dest / "listings" / "metadata" / "listings_0.json.gz").read_bytes() == b"\x1f\x8b fake gzip"
    assert (dest / "images" / "metadata" / "images.csv.gz").is_file()
    assert (dest / "images" / "small" / "14" / "14fe8812.jpg").read_bytes().startswith(b"\xff\xd8")
    assert result.archives["abo-listings.tar"]["verified"] == ["size", "etag-md5"]
    assert result.archives["abo-images-small.tar"]["verified"] == ["size", "etag-multipart-md5"]
    assert result.archives["abo-images-small.tar"]["files"] == 4
    assert not (dest / "archives").exists()  # archives removed once unpacked
    assert not result.skipped
    before = len(archive_server.requests)
    again = download_abo(dest, base_url=archive_server.url + "/archives", progress=False)
    assert sorted(again.skipped) == ["abo-images-small.tar", "abo-listings.tar"]
    assert len(archive_server.requests) == before  # idempotent: not even a HEAD request


def test_dropped_connection_resumes_with_a_range_request(archive_server, tmp_path: Path):
    data = os.urandom(300_000)
    serve(archive_server, {"blob.tar": data})
    archive_server.drop_after["blob.tar"] = 120_000
    result = fetch(archive_server.url + "/blob.tar", tmp_path / "blob.tar", progress=False, backoff=0)
    assert (tmp_path / "blob.tar").read_bytes() == data
    gets = archive_server.gets("blob.tar")
    assert len(gets) == 2 and "Range" not in gets[0]["headers"]
    assert gets[1]["headers"]["Range"] == "bytes=120000-"
    assert gets[1]["headers"]["If-Range"] == archive_server.etags["blob.tar"]
    assert result.verified == ["size", "etag-md5"]


def test_partial_file_from_an_earlier_run_is_resumed(archive_server, tmp_path: Path):
    data = os.urandom(50_000)
    serve(archive_server, {"blob.tar": data})
    (tmp_path / "blob.tar.part").write_bytes(data[:20_000])
    result = fetch(archive_server.url + "/blob.tar", tmp_path / "blob.tar", progress=False)
    assert result.resumed_from == 20_000
    assert archive_server.gets()[0]["headers"]["Range"] == "bytes=20000-"
    assert (tmp_path / "blob.tar").read_bytes() == data


def test_server_ignoring_ranges_restarts_from_zero(archive_server, tmp_path: Path):
    data = os.urandom(40_000)
    serve(archive_server, {"blob.tar": data})
    archive_server.ignore_range = True
    (tmp_path / "blob.tar.part").write_bytes(b"x" * 10_000)  # stale bytes that must not survive
    fetch(archive_server.url + "/blob.tar", tmp_path / "blob.tar", progress=False)
    assert (tmp_path / "blob.tar").read_bytes() == data


def test_checksum_mismatch_fails_and_discards_the_download(archive_server, tmp_path: Path):
    data = os.urandom(10_000)
    serve(archive_server, {"blob.tar": data})
    archive_server.served["blob.tar"] = data[:-1] + bytes([data[-1] ^ 1])  # same size, one bit flipped
    with pytest.raises(DownloadError, match="MD5"):
        fetch(archive_server.url + "/blob.tar", tmp_path / "blob.tar", progress=False)
    assert not (tmp_path / "blob.tar").exists() and not (tmp_path / "blob.tar.part").exists()


def test_size_and_sha256_checks(tmp_path: Path):
    path = tmp_path / "f"
    path.write_bytes(b"abc")
    with pytest.raises(DownloadError, match="announced 4"):
        download.verify(path, size=4, etag=None)
    assert download.verify(path, size=3, etag='W/"weak"') == ["size"]
    good = hashlib.sha256(b"abc").hexdigest()
    assert download.verify(path, size=3, etag=None, sha256=good) == ["size", "sha256"]
    with pytest.raises(DownloadError, match="SHA-256"):
        download.verify(path, size=3, etag=None, sha256="0" * 64)
    with pytest.raises(DownloadError, match="multipart"):
        download.verify(path, size=3, etag=f'"{"0" * 32}-1"')


def test_part_sizes_for_real_multipart_uploads():
    size = 3_253_669_888  # a 3 GB archive in 8 MiB parts
    assert 8 << 20 in download._part_sizes(size, -(-size // (8 << 20)))


def test_http_errors_are_reported(archive_server, tmp_path: Path):
    with pytest.raises(DownloadError, match="HTTP 404"):
        fetch(archive_server.url + "/nothing.tar", tmp_path / "x", progress=False)
    with pytest.raises(DownloadError, match="cannot connect"):
        fetch("http://127.0.0.1:9/x.tar", tmp_path / "x", progress=False)


@pytest.mark.parametrize(
    ("entries", "links", "message"),
    [
        ({"../evil.txt": b"x"}, None, "leaves the destination"),
        ({"ok/../../evil.txt": b"x"}, None, "leaves the destination"),
        ({"/tmp/evil.txt": b"x"}, None, "absolute path"),
        ({}, {"images/link": "/etc/passwd"}, "links are not extracted"),
    ],
)
def test_unsafe_archives_are_refused(tmp_path: Path, entries, links, message):
    archive = tmp_path / "bad.tar"
    archive.write_bytes(make_tar(entries, links))
    dest = tmp_path / "dest"
    with pytest.raises(DownloadError, match=message):
        safe_extract(archive, dest, progress=False)
    assert not (tmp_path / "evil.txt").exists()
    assert not any(p.is_symlink() for p in dest.rglob("*"))


def test_symlinked_folder_inside_dest_cannot_redirect_writes(tmp_path: Path):
    outside = tmp_path / "outside"
    outside.mkdir()
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / "images").symlink_to(outside)
    archive = tmp_path / "a.tar"
    archive.write_bytes(make_tar({"images/x.jpg": b"x"}))
    with pytest.raises(DownloadError, match="resolves outside"):
        safe_extract(archive, dest, progress=False)
    assert not (outside / "x.jpg").exists()


def test_cli_download(archive_server, tmp_path: Path):
    serve(archive_server, abo_archives())
    dest = tmp_path / "abo"
    args = [
        "data",
        "download",
        "abo",
        "--dest",
        str(dest),
        "--base-url",
        archive_server.url,
        "-q",
        "--keep-archives",
    ]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == str(dest)
    assert (dest / "archives" / "abo-listings.tar").is_file()
    assert (dest / "images" / "small" / "14" / "14fe8812.jpg").is_file()
    again = CliRunner().invoke(cli, args)
    assert again.exit_code == 0 and "already unpacked" in again.stderr
    bad = CliRunner().invoke(cli, [*args, "--force", "--sha256", "abo-listings.tar=" + "0" * 64])
    assert bad.exit_code == 2 and "SHA-256" in bad.stderr
