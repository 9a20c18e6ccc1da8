"""`vlmbench view` without a browser: the filters against the predictions files, metrics on a selection,
the pairing against `compare`, image confinement, the app's answers and `--export`."""

from __future__ import annotations

import json
import os
import threading

import numpy as np
import pytest
from click.testing import CliRunner
from view_helpers import SCRIPT_ANSWER, compare_flips, make_runs, predictions

from vlmbench.analysis.explorer import load_explorer, resolve_image
from vlmbench.analysis.explorer_app import create_app
from vlmbench.analysis.explorer_query import Query, run_query, select
from vlmbench.cli import cli


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("view")
    return root, make_runs(root)


@pytest.fixture(scope="module")
def explorer(runs):
    root, _ = runs
    return load_explorer([root / "runs"])


def _ids(explorer, query):
    table = explorer.task(query.task)
    chosen, _ = select(table, query)
    return [table.sample_ids[i] for i in chosen]


def test_tasks_models_and_image_roots(runs, explorer):
    root, _ = runs
    assert [t.name for t in explorer.tasks] == ["other", "shapes"]
    shapes = explorer.task("shapes")
    assert shapes.labels == ["looks-at-colour", "reads-question", "writes-markup"]
    assert shapes.image_root == root / "shapes" / "images"
    assert shapes.metrics == ["exact_match"] and shapes.corpus_metrics == ["average_mark"]
    assert len(shapes.sample_ids) == 25


def test_filters_select_what_the_predictions_say(runs, explorer):
    _, dirs = runs
    colour, reads = predictions(dirs["shapes/looks-at-colour"]), predictions(dirs["shapes/reads-question"])
    expected = [s for s, r in colour.items() if r["difficulty"] == 5 and r["status"] == "ok"
                and r["scores"]["exact_match"] == 0]  # fmt: skip
    query = Query(task="shapes", difficulties=(5,), outcomes=(("looks-at-colour", "wrong"),))
    assert _ids(explorer, query) == expected  # the colour model is right on every colour question
    assert expected == []
    query = Query(task="shapes", difficulties=(5,), outcomes=(("reads-question", "wrong"),))
    expected = [s for s, r in reads.items() if r["difficulty"] == 5 and r["status"] == "ok"
                and r["scores"]["exact_match"] == 0]  # fmt: skip
    assert _ids(explorer, query) == expected and len(expected) == 3  # items 3, 6, 9 are not red
    skipped = _ids(explorer, Query(task="shapes", outcomes=(("reads-question", "skipped"),)))
    assert skipped == [s for s, r in reads.items() if r["status"] == "skipped"] and len(skipped) == 1
    searched = _ids(explorer, Query(task="shapes", search="ITEM 1"))
    assert searched == [s for s, r in reads.items() if "item 1" in r["question"]]  # 1, 10, 11: 6 rows
    assert len(searched) == 6
    assert len(_ids(explorer, Query(task="shapes", search="<script>"))) == 12  # answers are searched too


def test_disagree_and_sort(runs, explorer):
    _, dirs = runs
    colour, reads = predictions(dirs["shapes/looks-at-colour"]), predictions(dirs["shapes/reads-question"])
    query = Query(task="shapes", models=("looks-at-colour", "reads-question"), disagree=True)
    expected = [
        s for s in colour if colour[s]["status"] == "ok" and colour[s]["answer"] != reads[s]["answer"]
    ]
    assert _ids(explorer, query) == expected and len(expected) == 12 + 9  # shapes, and non-red colours
    ordered = _ids(explorer, Query(task="shapes", sort="exact_match:reads-question", descending=True))
    scores = [reads[s]["scores"].get("exact_match") for s in ordered]
    assert scores[: scores.index(0.0)] == [1.0] * scores.index(0.0)
    assert scores[-1] is None  # the skipped sample has no score: last either way


def test_metrics_on_the_selection(runs, explorer):
    _, dirs = runs
    reads = predictions(dirs["shapes/reads-question"])
    page = run_query(explorer, Query(task="shapes", difficulties=(5,)))
    row = next(s for s in page.summary if s["label"] == "reads-question")
    chosen = [r for r in reads.values() if r["difficulty"] == 5 and r["status"] == "ok"]
    em = next(m for m in row["metrics"] if m["name"] == "exact_match")
    assert em["selection"] == pytest.approx(np.mean([r["scores"]["exact_match"] for r in chosen]))
    whole = json.loads((dirs["shapes/reads-question"] / "results.json").read_text())["metrics"]
    assert em["whole"] == pytest.approx(whole["exact_match"]["value"])
    # within one level Average Mark is that level's mean correctness (one weight for all)
    mark = next(m for m in row["metrics"] if m["name"] == "average_mark")
    assert mark["selection"] == pytest.approx(em["selection"]) and mark["why"] == ""
    assert row["answered"] == len(chosen) and row["whole_answered"] == 24
    # on every sample, rebuilt from the run's options and weights, it is the run's own value
    everything = run_query(explorer, Query(task="shapes"))
    row = next(s for s in everything.summary if s["label"] == "reads-question")
    mark = next(m for m in row["metrics"] if m["name"] == "average_mark")
    assert (
        mark["selection"] == pytest.approx(whole["average_mark"]["value"])
        and mark["whole"] == mark["selection"]
    )
    # two levels with weights 8 (difficulty 3) and 20 (difficulty 5): weighted, not a plain mean
    two = run_query(explorer, Query(task="shapes", difficulties=(3, 5)))
    row = next(s for s in two.summary if s["label"] == "reads-question")
    mark = next(m for m in row["metrics"] if m["name"] == "average_mark")
    level3 = np.mean([r["scores"]["exact_match"] for r in reads.values() if r["difficulty"] == 3])
    assert mark["selection"] == pytest.approx(
        (8 * 12 * level3 + 20 * len(chosen) * em["selection"]) / (8 * 12 + 20 * len(chosen))
    )


def test_a_corpus_metric_without_its_columns_says_why(runs, tmp_path):
    import shutil

    _, dirs = runs
    folder = tmp_path / "no-scores"
    shutil.copytree(dirs["shapes/reads-question"], folder)
    rows = [json.loads(line) for line in (folder / "predictions.jsonl").read_text().splitlines()]
    for row in rows:
        row["scores"].pop("exact_match", None)
    (folder / "predictions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    page = run_query(load_explorer([folder]), Query())
    mark = next(m for m in page.summary[0]["metrics"] if m["name"] == "average_mark")
    assert (
        mark["selection"] is None
        and "needs per-sample 'exact_match'" in mark["why"]
        and mark["whole"] is not None
    )


def test_pair_lists_the_flips_compare_lists_first(runs, explorer):
    _, dirs = runs
    expected = compare_flips(dirs["shapes/looks-at-colour"], dirs["shapes/reads-question"])
    page = run_query(
        explorer, Query(task="shapes", pair=("looks-at-colour", "reads-question")), page_size=100
    )
    assert [r["sample_id"] for r in page.rows[: len(expected)]] == expected
    assert all(r["flip"] for r in page.rows[: len(expected)]) and not any(
        r["flip"] for r in page.rows[len(expected) :]
    )
    assert page.shown == ["looks-at-colour", "reads-question"]


def test_pages_have_a_fixed_size(explorer):
    sizes = [len(run_query(explorer, Query(task="shapes", page=n), page_size=10).rows) for n in (1, 2, 3, 9)]
    assert sizes == [10, 10, 5, 5]  # past the end: the last page


def test_images_only_from_the_root(tmp_path):
    root = tmp_path / "images"
    (root / "a").mkdir(parents=True)
    (root / "a" / "x.jpg").write_bytes(b"jpg")
    (tmp_path / "secret.txt").write_text("no")
    os.symlink(tmp_path / "secret.txt", root / "out.jpg")
    os.symlink(root / "a" / "x.jpg", root / "in.jpg")
    assert resolve_image(root, "a/x.jpg") == (root / "a" / "x.jpg").resolve()
    assert resolve_image(root, "in.jpg") == (root / "a" / "x.jpg").resolve()  # a link that stays inside
    for bad in ("../secret.txt", "a/../../secret.txt", "out.jpg", str(tmp_path / "secret.txt"), "a", "",
                "a\\..\\..\\secret.txt", "a/x.jpg\x00"):  # fmt: skip
        assert resolve_image(root, bad) is None, bad
    assert resolve_image(None, "a/x.jpg") is None


def test_the_app_escapes_and_confines(explorer):
    client = create_app(explorer).test_client()
    page = client.get("/?task=shapes&model=writes-markup")
    assert page.status_code == 200
    body = page.get_data(as_text=True)
    assert SCRIPT_ANSWER not in body and "&lt;script&gt;alert(1)&lt;/script&gt;" in body
    assert "<img/src=x" not in body and "onerror=alert(2)" in body  # as text only
    assert "script-src" not in page.headers["Content-Security-Policy"]  # default-src 'none': no script at all
    thumb = body.split('src="/thumb/')[1].split('"')[0]
    assert client.get(f"/thumb/{thumb}").mimetype == "image/jpeg"
    for bad in ("/image/1/../shapes.yaml", "/image/1/..%2Fshapes.yaml", "/image/1/%2e%2e/shapes.yaml",
                "/image/7/00/img000.jpg", "/thumb/1/00", "/image/1/ff/gone.jpg"):  # fmt: skip
        assert client.get(bad).status_code == 404, bad
    assert client.get("/image/1/00/img000.jpg").status_code == 200
    assert client.post("/").status_code == 405  # read-only
    wrong = client.get("/?task=shapes&model=nobody")
    assert wrong.status_code == 400 and "nobody" in wrong.get_data(as_text=True)


def test_an_image_swapped_for_a_fifo_after_it_was_resolved_is_a_404(explorer, tmp_path, monkeypatch):
    """resolve_image checks the path; the file is read through a descriptor checked again, so a FIFO
    put in its place in between is refused at once instead of stalling the request."""
    import vlmbench.analysis.explorer_app as app_module

    fifo = tmp_path / "swapped.jpg"
    os.mkfifo(fifo)
    monkeypatch.setattr(app_module, "resolve_image", lambda root, rel: fifo)  # the swap, after the check
    client = create_app(explorer).test_client()
    for url in ("/image/1/00/img000.jpg", "/thumb/1/00/img000.jpg"):
        status: list[int] = []
        asked = threading.Thread(
            target=lambda u=url, s=status: s.append(client.get(u).status_code), daemon=True
        )
        asked.start()
        asked.join(timeout=20)  # a stalled request (opening the FIFO waits for a writer) fails here
        assert status == [404], url


def test_skipped_and_unreadable_runs_are_notes(runs, tmp_path):
    import shutil

    _, dirs = runs
    shutil.copytree(dirs["shapes/reads-question"], tmp_path / "r" / "ok")
    (tmp_path / "r" / "gone").mkdir()
    (tmp_path / "r" / "gone" / "results.json").write_text(
        json.dumps({"status": "skipped", "reason": "no weights"})
    )
    (tmp_path / "r" / "broken").mkdir()
    (tmp_path / "r" / "broken" / "results.json").write_text("{")
    explorer = load_explorer([tmp_path / "r"])
    assert explorer.task("shapes").labels == ["reads-question"]
    assert len(explorer.notes) == 2 and any(
        "gone: gone was skipped (no weights)" in n for n in explorer.notes
    )
    shutil.rmtree(tmp_path / "r" / "ok")
    result = CliRunner().invoke(cli, ["view", str(tmp_path / "r"), "--export", str(tmp_path / "x")])
    assert result.exit_code == 2 and "Error: none of the runs given has predictions to show" in result.output


def test_old_runs_find_their_images_through_the_task_file(runs, tmp_path):
    import shutil

    _, dirs = runs
    folder = tmp_path / "old"
    shutil.copytree(dirs["shapes/reads-question"], folder)
    results = json.loads((folder / "results.json").read_text())
    image_root = results["task"].pop("image_root")
    (folder / "results.json").write_text(json.dumps(results))
    assert str(load_explorer([folder]).task("shapes").image_root) == image_root


def test_export_writes_a_static_selection(runs, tmp_path):
    root, _ = runs
    dest = tmp_path / "shared"
    args = ["view", str(root / "runs"), "--export", str(dest), "--task", "shapes", "--difficulty", "5",
            "--outcome", "reads-question=wrong"]  # fmt: skip
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert result.output == f"wrote {dest / 'index.html'} (3 samples)\n"
    html = (dest / "index.html").read_text()
    assert html.count('class="sample"') == 3 and "<form" not in html and "&lt;script&gt;" in html
    thumbs = sorted((dest / "thumbs").iterdir())
    assert len(thumbs) == 3 and all(f'src="thumbs/{t.name}"' in html for t in thumbs)
    from PIL import Image

    assert Image.open(thumbs[0]).format == "JPEG"
    again = CliRunner().invoke(cli, args)
    assert again.exit_code == 2 and again.output.startswith("Error:") and "not empty" in again.output
    limited = CliRunner().invoke(cli, [*args, "--force", "--limit", "2"])
    assert limited.exit_code == 0 and "(2 samples: the first 2 of 3;" in limited.output
    html = (dest / "index.html").read_text()
    assert html.count('class="sample"') == 2 and "This copy holds the first 2 of them" in html
    assert len(list((dest / "thumbs").iterdir())) == 2  # the earlier export's third thumbnail is gone


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--outcome", "reads-question=maybe"], "expected MODEL=right"),
        (["--difficulty", "hard"], "not a whole number"),
        (["--model", "nobody"], "unknown model"),
        (["--task", "nothing"], "unknown task"),
        (["--sort", "bleu:reads-question"], "no per-sample 'bleu'"),
    ],
)
def test_bad_options_are_one_error_line(runs, tmp_path, args, message):
    root, _ = runs
    task = [] if "--task" in args else ["--task", "shapes"]
    result = CliRunner().invoke(
        cli, ["view", str(root / "runs"), "--export", str(tmp_path / "x"), *task, *args]
    )
    assert result.exit_code == 2, result.output
    assert (
        result.output.startswith("Error:")
        and message in result.output
        and len(result.output.splitlines()) == 1
    )


@pytest.mark.slow(seconds=10)
@pytest.mark.parametrize("host", ["127.0.0.1", "0.0.0.0"])
def test_the_command_serves_the_page(runs, host):
    """`vlmbench view` as a user starts it: it prints the address (with the filters given), serves the page,
    and warns when it listens beyond this machine."""
    import subprocess
    import sys
    import urllib.request

    root, _ = runs
    args = [sys.executable, "-m", "vlmbench", "view", str(root / "runs"), "--port", "0", "--host", host,
            "--task", "shapes", "--difficulty", "5"]  # fmt: skip
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        assert line.startswith("vlmbench view: http://"), line + proc.stderr.read()
        url = line.split()[2].replace("0.0.0.0", "127.0.0.1")
        assert "task=shapes" in url and "difficulty=5" in url
        with urllib.request.urlopen(url, timeout=30) as response:
            body = response.read().decode()
        assert response.status == 200 and body.count('class="sample"') == 5
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=30)
    assert ("warning: serving on 0.0.0.0" in err) == (host == "0.0.0.0")


def test_a_port_in_use_is_one_error_line(runs):
    import socket

    root, _ = runs
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = CliRunner().invoke(cli, ["view", str(root / "runs"), "--port", str(port)])
    assert result.exit_code == 2 and result.output.startswith(f"Error: cannot listen on 127.0.0.1:{port}")
