"""Sizes and secrets that come from outside the data pipeline: an ABO mirror that sends no size and never
stops, announces an absurd size or publishes no checksum; a Gemini reply that echoes a piece of the API
key."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from click.testing import CliRunner

from vlmbench.cli import cli
from vlmbench.plugin.secrets import CONTAINS_SECRET, SECRET_FRAGMENT, SecretMask
from vlmbench_plugins.datasets.abo import download
from vlmbench_plugins.datasets.abo.download import Archive

from .abo_testkit import reply
from .test_abo_download import abo_archives
from .test_abo_gemini import FAKE_KEY, generator, run_one

CAP = 1 << 20


class _Mirror(BaseHTTPRequestHandler):
    """HTTP/1.0 without Content-Length or ETag: a body ends when the connection closes. ``endless`` files
    never end; ``announce`` sends a Content-Length in answers to HEAD only."""

    files: dict[str, bytes] = {}
    endless: set[str] = set()
    announce: dict[str, int] = {}
    gets: list[str] = []
    sent: dict[str, int] = {}

    def log_message(self, *args):
        pass

    def _name(self) -> str:
        return self.path.rsplit("/", 1)[-1]

    def do_HEAD(self):
        self.send_response(200)
        if self._name() in self.announce:
            self.send_header("Content-Length", str(self.announce[self._name()]))
        self.end_headers()

    def do_GET(self):
        name = self._name()
        self.gets.append(name)
        self.send_response(200)
        self.end_headers()
        if name not in self.endless:
            self.wfile.write(self.files[name])
            return
        chunk = b"x" * 65536
        try:
            while self.sent.get(name, 0) < 64 * CAP:  # a safety net for the test itself, far past the cap
                self.wfile.write(chunk)
                self.sent[name] = self.sent.get(name, 0) + len(chunk)
        except OSError:
            pass  # the client hung up: what a capped download does


@pytest.fixture
def mirror(monkeypatch: pytest.MonkeyPatch):
    """The mirror, and the ABO archives capped at 1 MiB (the real ceilings are hundreds of MiB)."""
    small = tuple(Archive(a.name, a.expect, a.summary, CAP) for a in download.VARIANTS["small"])
    monkeypatch.setitem(download.VARIANTS, "small", small)

    class Handler(_Mirror):
        files, endless, announce, gets, sent = dict(abo_archives()), set(), {}, [], {}

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True).start()
    yield Handler, f"http://127.0.0.1:{httpd.server_address[1]}/archives"
    httpd.shutdown()
    httpd.server_close()


def _download(url: str, dest: Path):
    return CliRunner().invoke(cli, ["data", "download", "abo", "--base-url", url, "--dest", str(dest), "-q"])


def _one_error(res, detail: str) -> None:
    errors = [line for line in res.stderr.splitlines() if line.startswith("Error:")]
    assert res.exit_code == 2 and len(errors) == 1 and detail in errors[0], res.stderr


def test_a_mirror_that_never_stops_is_capped(mirror, tmp_path, reliability):
    handler, url = mirror
    handler.endless.add("abo-listings.tar")
    res = _download(url, tmp_path / "abo")
    _one_error(res, "sent more than 1048576 bytes")
    assert not list((tmp_path / "abo").rglob("*.part")) and not list((tmp_path / "abo").rglob("*.tar"))
    assert handler.sent["abo-listings.tar"] < 64 * CAP  # the client stopped reading, the server noticed
    reliability.record(
        "Unbounded input from outside",
        "ABO mirror sending no Content-Length and a body that never ends",
        1,
        "stopped at the archive's ceiling: one Error line, exit 2, partial file removed",
    )


def test_an_announced_size_above_the_ceiling_is_refused_before_any_transfer(mirror, tmp_path, reliability):
    handler, url = mirror
    handler.announce["abo-listings.tar"] = 10**13
    _one_error(_download(url, tmp_path / "abo"), "announces 10000000000000 bytes")
    assert handler.gets == []
    reliability.record(
        "Unbounded input from outside", "ABO mirror announcing a 10 TB archive", 1,
        "one Error line, exit 2, before any byte is transferred",
    )  # fmt: skip


def test_a_mirror_without_size_or_checksum_is_recorded_as_unverified(mirror, tmp_path, reliability):
    _, url = mirror
    res = _download(url, tmp_path / "abo")
    assert res.exit_code == 0, res.stderr
    warnings = [
        line for line in res.stderr.splitlines() if line.startswith("warning:") and "UNVERIFIED" in line
    ]
    assert len(warnings) == 2, res.stderr
    state = json.loads((tmp_path / "abo" / download.STATE_FILE).read_text())
    for entry in state["archives"].values():
        assert entry["verified"] == [] and "no MD5 checksum" in entry["unverified"]
    reliability.record(
        "Unbounded input from outside", "ABO mirror publishing neither size nor checksum", 2,
        "unpacked with a 'warning: ... UNVERIFIED' line per archive; the state file records it as unverified",
    )  # fmt: skip


def test_any_piece_of_the_key_is_found_and_masked():
    mask = SecretMask([f" {FAKE_KEY}\n"])
    for start in range(len(FAKE_KEY) - SECRET_FRAGMENT + 1):
        piece = FAKE_KEY[start : start + SECRET_FRAGMENT]
        for text in (f"a {piece} b", f"a {piece.upper()} b", f"{piece.lower()}"):
            assert mask.found(text) and piece.lower() not in mask.mask(text).lower(), text
    assert not mask.found(f"a {FAKE_KEY[: SECRET_FRAGMENT - 1]} b")  # shorter pieces occur by chance
    assert mask.mask(f"[{FAKE_KEY[:20]}] and [{FAKE_KEY[25:]}]") == "[***] and [***]"


def test_a_reply_with_a_piece_of_the_key_is_refused(gemini_server, monkeypatch, reliability):
    monkeypatch.setenv("GEMINI_API_KEY", FAKE_KEY)
    items = [
        {
            "question": f"Is {FAKE_KEY[:20]} the code?",
            "answer": "Yes",
            "difficulty": 0,
        },  # a 20-character prefix
        {
            "question": "What is the serial?",
            "answer": FAKE_KEY[12:20].upper(),
            "difficulty": 1,
        },  # 8 in the middle
        {"question": "What colour is the filament?", "answer": "Yellow", "difficulty": 0},
    ]
    server = gemini_server(lambda i, body: reply(json.dumps(items)))
    result = run_one(generator(server))
    assert [i.answer for i in result.items] == ["Yellow"]
    assert result.rejected == {CONTAINS_SECRET: 2}
    stored = json.dumps(result.to_dict(), ensure_ascii=False).lower()
    pieces = {FAKE_KEY[i : i + SECRET_FRAGMENT].lower() for i in range(len(FAKE_KEY) - SECRET_FRAGMENT + 1)}
    assert not any(piece in stored for piece in pieces)
    reliability.record(
        "Secrets", "Gemini reply holding a 20-character prefix, or 8 characters from the middle, of the API key", 2,
        "items rejected and counted (contains_secret); no 8-character piece of the key in what is stored",
    )  # fmt: skip
