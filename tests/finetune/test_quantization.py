"""8-bit and 4-bit (bitsandbytes) loading of every Hugging Face model plugin on the CPU, and the
quantisation benchmark (benchmarks/quantization.py) in a reduced run."""

from __future__ import annotations

import importlib.util
import sys

import pytest
from PIL import Image, ImageDraw

from vlmbench import hf
from vlmbench.plugin.request import Batch, Request
from vlmbench.tasks.spec import GenerationSpec

from .conftest import TESTS
from .test_finetune import _create

PLUGINS = ("blip", "blip2", "qwen2.5-vl", "smolvlm")


def _requests(template: str) -> list[Request]:
    """Three questions of different lengths about different images (batches need padding)."""
    out = []
    for i, question in enumerate(["What colour is the square?", "Is it red?", "What shape is the box?"]):
        image = Image.new("RGB", (40 + 8 * i, 36), (220 - 60 * i, 30 + 60 * i, 90))
        ImageDraw.Draw(image).rectangle((3, 3, 20, 12 + 4 * i), fill=(20, 20, 20))
        out.append(Request(f"s{i}", "generate", template.format(question=question), question, f"s{i}.png",
                           f"s{i}", image=image))  # fmt: skip
    return out


@pytest.mark.filterwarnings("ignore")
@pytest.mark.parametrize("bits", ["8bit", "4bit"])
@pytest.mark.parametrize("name", PLUGINS)
def test_quantised_loading_answers_on_cpu(name, bits, tiny_checkpoint):
    import bitsandbytes as bnb
    from benchmarks_quantization import weights_bytes

    ckpt = tiny_checkpoint(name)
    full = _create(name, pretrained=ckpt)
    full.load()
    model = _create(name, pretrained=ckpt, **{f"load_in_{bits}": True})
    model.load()
    layer = bnb.nn.Linear8bitLt if bits == "8bit" else bnb.nn.Linear4bit
    quantised = [m for m in model.model.modules() if isinstance(m, layer)]
    assert quantised, f"no linear layer was loaded in {bits}"
    if bits == "4bit":  # the standard layout everywhere (see hf.keep_cpu_4bit_layout)
        assert not any(getattr(m, "support_avx512bf16_for_cpu", False) for m in quantised)
    assert weights_bytes(model.model) < weights_bytes(full.model)
    assert model.describe()["parameters"] == full.describe()["parameters"]
    assert model.fingerprint() != full.fingerprint()
    requests = _requests(model.default_prompt or "{question}")
    answers = model.generate(Batch(requests, model.prepare(requests)), GenerationSpec(max_new_tokens=4))
    assert len(answers) == 3 and all(isinstance(a, str) for a in answers)


@pytest.mark.filterwarnings("ignore")
def test_4bit_answers_do_not_depend_on_the_cpu_kernel(tiny_checkpoint):
    """Answers of the standard 4-bit layout, repeated: loading twice gives the same answers (no
    repacking on the first inference call changes them)."""
    ckpt = tiny_checkpoint("blip")
    requests = _requests("{question}")
    runs = []
    for _ in range(2):
        model = _create("blip", pretrained=ckpt, load_in_4bit=True)
        model.load()
        batch = Batch(requests, model.prepare(requests))
        runs += [model.generate(batch, GenerationSpec(max_new_tokens=4)) for _ in range(2)]
    assert all(r == runs[0] for r in runs)
    assert hf.keep_cpu_4bit_layout(model.model) == 0  # nothing left to change after loading


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("benchmarks_quantization",
                                                  TESTS.parent / "benchmarks" / "quantization.py")  # fmt: skip
    module = importlib.util.module_from_spec(spec)
    sys.modules["benchmarks_quantization"] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(autouse=True)
def _benchmark_module(bench):
    """The benchmark module is importable as ``benchmarks_quantization`` in these tests."""


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore")
def test_quantisation_benchmark_prints_its_table(bench, capsys):
    rows = bench.main(["--limit", "6", "--no-isolate", "--num-workers", "0", "--batch-size", "3"])
    out = capsys.readouterr().out
    table = [line for line in out.splitlines() if line.startswith("|")]
    assert len(table) == 2 + 3 and table[1].startswith("|---|")
    assert table[2].startswith("| full precision (float32) |")
    assert table[3].startswith("| 8-bit (LLM.int8) |") and table[4].startswith("| 4-bit (nf4) |")
    assert "Δ exact_match" in table[0] and "peak memory (RSS growth (sampled))" in table[0]
    full, eight, four = rows
    assert four["weights_bytes"] < eight["weights_bytes"] < full["weights_bytes"]
    assert all(r["n"] == 6 and r["samples_per_second"] > 0 for r in rows)
    assert "tiny test BLIP" in out and "abo_sample (6 samples" in out


@pytest.mark.slow(seconds=35)
@pytest.mark.filterwarnings("ignore")
def test_quantisation_benchmark_isolates_each_variant(bench, capsys, tmp_path):
    rows = bench.main(["--limit", "3", "--num-workers", "0", "--variants", "full,4bit",
                       "--output", str(tmp_path / "rows.json")])  # fmt: skip
    out = capsys.readouterr().out
    assert "each variant in a fresh process" in out and "| 4-bit (nf4) |" in out
    assert [r["peak_kind"] for r in rows] == ["RSS growth", "RSS growth"]
    assert (tmp_path / "rows.json").is_file()
