import hashlib
import json

from vlmbench import hashing


def test_large_file_facts_are_remembered_on_disk(tmp_path, monkeypatch):
    folder = tmp_path / "ckpt"
    folder.mkdir()
    (folder / "weights.bin").write_bytes(b"x" * 1000)
    (folder / ".hidden").write_bytes(b"ignored")
    monkeypatch.setattr(hashing, "_MEMO_MIN_BYTES", 10)
    calls = []
    real = hashing._sha256
    monkeypatch.setattr(hashing, "_sha256", lambda p: calls.append(p) or real(p))
    first = hashing.tree_sha256(folder)
    hashing._memory.clear()  # a new process: only the file on disk remembers
    assert hashing.tree_sha256(folder) == first and len(calls) == 1
    memo = json.loads((tmp_path / "vlmbench-cache" / "file_facts.json").read_text())
    entry = memo[str((folder / "weights.bin").resolve())]
    assert entry["facts"]["sha256"] == hashlib.sha256(b"x" * 1000).hexdigest()
    (folder / "weights.bin").write_bytes(b"y" * 1000)  # a new version of the file
    assert hashing.tree_sha256(folder) != first and len(calls) == 2


def test_tree_hash_depends_on_names_and_contents(tmp_path):
    a = tmp_path / "a"
    a.mkdir()
    (a / "w.bin").write_bytes(b"1")
    h = hashing.tree_sha256(a)
    (a / "w.bin").rename(a / "v.bin")
    assert hashing.tree_sha256(a) != h
    assert hashing.file_sha256(a / "v.bin") == hashlib.sha256(b"1").hexdigest()
