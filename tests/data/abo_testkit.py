"""Helpers of the data-pipeline tests: tiny ABO trees built from real records, and local HTTP
servers that stand in for the ABO bucket and for the Gemini API."""

from __future__ import annotations

import copy
import csv
import gzip
import hashlib
import io
import json
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from PIL import Image

FIXTURES = Path(__file__).parent / "fixtures" / "abo"
REPO = Path(__file__).resolve().parents[2]
SHARED_ABO = REPO.parent / "shared" / "reference" / "abo"


def real_records() -> list[dict]:
    with open(FIXTURES / "listings_real.jsonl", encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def _tag(value: str, tag: str = "en_IN") -> list[dict]:
    return [{"language_tag": tag, "value": value}]


# Variations applied to copies of the real records: (color, material, item_shape, pattern, product_type).
VARIANTS = [
    ("Black", "Wood", "Round", "Solid", "CHAIR"),
    ("Iron Grey", "100% Polyester", "Rectangular", "Striped", "SOFA"),
    ("Translucent Yellow", "PETG (Polyethylene Terephtalate Glycol-modified)", "Square", "Floral", "LAMP"),
    ("Walnut", "Engineered Wood", "Oval", "Checkered", "HOME"),
    ("Black/White", "Metal", "Round", "Solid", "TABLE"),
    ("Red", "Stainless Steel", "Rectangular", "Geometric", "CELLULAR_PHONE_CASE"),
    ("Blue", "Glass", "Square", "N/A", "RUG"),
    ("Dark Green", "Leather", "Oval", "Solid", "BAG"),
]
COLOURS = [(20, 20, 20), (120, 120, 125), (240, 220, 40), (90, 60, 30), (200, 30, 30), (40, 80, 210)]


def image_path_for(image_id: str) -> str:
    h = hashlib.sha1(image_id.encode()).hexdigest()[:8]
    return f"{h[:2]}/{h}.jpg"


def derived_records(n: int) -> list[dict]:
    """``n`` listings made from the real records with other ids and attribute values (real structure)."""
    base = real_records()
    out = []
    for i in range(n):
        rec = copy.deepcopy(base[i % len(base)])
        colour, material, shape, pattern, ptype = VARIANTS[i % len(VARIANTS)]
        rec["item_id"] = f"B0TEST{i:04d}"
        rec["domain_name"] = "amazon.in"
        rec["country"] = "IN"
        rec["main_image_id"] = f"{i % 10}{i:03d}TestImgL"
        rec["other_image_id"] = [f"{i:03d}OtherImgL"]
        # The listing's text in en_IN (the study's language), plus an en_US copy that must lose to it.
        bullets = [b["value"] for b in rec.get("bullet_point", [])][:3] or ["A product"]
        rec["bullet_point"] = [{"language_tag": "en_US", "value": "US text " + bullets[0]}] + [
            {"language_tag": "en_IN", "value": b} for b in bullets
        ]
        rec["color"] = [
            {"language_tag": "en_IN", "value": colour, "standardized_values": [colour.split()[-1]]}
        ]
        rec["material"] = _tag(material)
        rec["item_shape"] = _tag(shape)
        rec["pattern"] = _tag(pattern)
        rec["product_type"] = [{"value": ptype}]
        rec["brand"] = _tag("AmazonBasics" if i % 2 else "Amazon Brand - Rivet")
        rec["node"] = [{"node_id": 1000 + i, "node_name": "/Categories/Home/Furniture"}]
        out.append(rec)
    return out


def write_tree(
    root: Path,
    records: list[dict],
    *,
    extra_lines: list[str] = (),
    skip_image_files: set[str] = frozenset(),
    unlisted: set[str] = frozenset(),
) -> Path:
    """An ABO tree at ``root``: two listing files, images.csv.gz and a small JPEG per main image
    (except the ids in ``skip_image_files``: listed, no file; ``unlisted``: neither)."""
    listings = root / "listings" / "metadata"
    listings.mkdir(parents=True, exist_ok=True)
    half = len(records) // 2
    for name, chunk in (("listings_0.json.gz", records[:half]), ("listings_1.json.gz", records[half:])):
        lines = [json.dumps(r, ensure_ascii=False) for r in chunk]
        if name == "listings_1.json.gz":
            lines += list(extra_lines)
        with gzip.open(listings / name, "wt", encoding="utf-8") as fh:
            fh.write("\n".join(lines) + "\n")
    rows = []
    for k, rec in enumerate(records):
        image_id = rec.get("main_image_id")
        if not image_id or image_id in unlisted:
            continue
        rel = image_path_for(image_id)
        rows.append((image_id, 32, 32, rel))
        if image_id in skip_image_files:
            continue
        target = root / "images" / "small" / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (32, 32), COLOURS[k % len(COLOURS)]).save(target, quality=90)
    meta = root / "images" / "metadata"
    meta.mkdir(parents=True, exist_ok=True)
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["image_id", "height", "width", "path"])
    writer.writerows(sorted(set(rows)))
    with gzip.open(meta / "images.csv.gz", "wt", encoding="utf-8") as fh:
        fh.write(buf.getvalue())
    return root


# -- local HTTP servers ----------------------------------------------------------------------------


class _Server:
    def __init__(self, handler_cls):
        self.requests: list[dict] = []
        self.lock = threading.Lock()
        outer = self

        class Handler(handler_cls):
            server_state = outer

            def log_message(self, *args):  # keep test output clean
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def record(self, **entry) -> int:
        with self.lock:
            self.requests.append(entry)
            return len(self.requests) - 1

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


class ArchiveHandler(BaseHTTPRequestHandler):
    """Serves ``state.files`` with HEAD, ETag and byte ranges; can drop a connection part-way."""

    server_state: ArchiveServer

    def _file(self):
        name = self.path.rsplit("/", 1)[-1]
        return name, self.server_state.files.get(name)

    def do_HEAD(self):
        name, data = self._file()
        self.server_state.record(method="HEAD", name=name, headers=dict(self.headers))
        if data is None:
            self.send_response(404)
            self.end_headers()
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Accept-Ranges", "bytes")
        if name in self.server_state.etags:
            self.send_header("ETag", self.server_state.etags[name])
        self.end_headers()

    def do_GET(self):
        state = self.server_state
        name, data = self._file()
        state.record(method="GET", name=name, headers=dict(self.headers))
        if data is None:
            self.send_response(404)
            self.end_headers()
            return
        body = state.served.get(name, data)  # what is actually sent (may differ: corruption tests)
        start = 0
        rng = self.headers.get("Range")
        if rng and rng.startswith("bytes=") and not state.ignore_range:
            start = int(rng[6:].split("-")[0])
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        else:
            self.send_response(200)
        self.send_header("Content-Length", str(len(body) - start))
        self.end_headers()
        payload = body[start:]
        drop = state.drop_after.pop(name, None)
        if drop is not None:
            self.wfile.write(payload[:drop])
            self.wfile.flush()
            self.close_connection = True
            return
        self.wfile.write(payload)


class ArchiveServer(_Server):
    def __init__(self):
        self.files: dict[str, bytes] = {}
        self.served: dict[str, bytes] = {}
        self.etags: dict[str, str] = {}
        self.drop_after: dict[str, int] = {}
        self.ignore_range = False
        super().__init__(ArchiveHandler)

    def gets(self, name: str | None = None) -> list[dict]:
        return [r for r in self.requests if r["method"] == "GET" and (name is None or r["name"] == name)]


class GeminiHandler(BaseHTTPRequestHandler):
    """Speaks the generateContent REST shape: POST /<version>/models/<model>:generateContent."""

    server_state: GeminiServer

    def do_POST(self):
        state = self.server_state
        length = int(self.headers.get("Content-Length") or 0)
        body = json.loads(self.rfile.read(length) or b"{}")
        index = state.record(path=self.path, headers=dict(self.headers), body=body)
        if ":generateContent" not in self.path:
            status, payload = 404, {"error": {"code": 404, "message": "not found", "status": "NOT_FOUND"}}
        else:
            status, payload = state.respond(index, body)
        data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


def reply(text: str, prompt_tokens: int = 300, output_tokens: int = 40) -> tuple[int, dict]:
    return 200, {
        "candidates": [
            {"content": {"role": "model", "parts": [{"text": text}]}, "finishReason": "STOP", "index": 0}
        ],
        "usageMetadata": {
            "promptTokenCount": prompt_tokens,
            "candidatesTokenCount": output_tokens,
            "totalTokenCount": prompt_tokens + output_tokens,
        },
        "modelVersion": "gemini-2.0-flash",
    }


def api_error(code: int, status: str, message: str = "", details: list | None = None) -> tuple[int, dict]:
    error = {"code": code, "message": message or status, "status": status}
    if details is not None:
        error["details"] = details
    return code, {"error": error}


def prompt_text(body: dict) -> str:
    return "\n".join(p.get("text", "") for c in body.get("contents", []) for p in c.get("parts", []))


class GeminiServer(_Server):
    def __init__(self, respond: Callable[[int, dict], tuple[int, dict | bytes]]):
        self.respond = respond
        super().__init__(GeminiHandler)


# -- a model plugin that writes questions (for the `local` generator) ------------------------------

from vlmbench.plugin.args import Arg  # noqa: E402
from vlmbench.plugin.hookspecs import hookimpl  # noqa: E402
from vlmbench.plugin.model import Model  # noqa: E402


class ScriptedModel(Model):
    """Answers every prompt with questions about the image it was given (its size and top-left colour),
    in the study's delimited format; ``style=json`` answers in JSON, ``style=csv`` in the paper's CSV
    rows (question,difficulty,answer, with a header), ``style=junk`` with prose."""

    args = {"style": Arg(str, "delimited", "reply format", choices=("delimited", "json", "csv", "junk"))}
    calls: list[int] = []
    prompts: list[str] = []

    def collate(self, requests):
        return [r.image.size for r in requests]

    def generate(self, batch, generation):
        ScriptedModel.calls.append(len(batch))
        out = []
        for request, size in zip(batch.requests, batch.inputs, strict=True):
            assert "Description:" in request.prompt
            ScriptedModel.prompts.append(request.prompt)
            red = request.image.getpixel((0, 0))[0]
            shade = "Dark" if red < 128 else "Bright"
            style = self.arg_values["style"]
            if style == "json":
                out.append(json.dumps([{"question": "How wide is the picture in pixels?", "answer": str(size[0]),
                                        "difficulty": 3}]))  # fmt: skip
            elif style == "csv":
                out.append(
                    "question,difficulty,answer\n"
                    f"How wide is the picture in pixels?,3,{size[0]}\nHow light is the top-left corner?,1,{shade}"
                )
            elif style == "junk":
                out.append("I am sorry, I cannot help with that.")
            else:
                out.append(
                    f"How wide is the picture in pixels? # {size[0]} # 3 % Is the picture square? # Yes # 0 % "
                    f"How light is the top-left corner? # {shade} # 1"
                )
        return out


class ScriptedPlugin:
    @hookimpl
    def register_models(self, register):
        register("scripted", f"{__name__}:ScriptedModel", summary="test model that writes questions")
