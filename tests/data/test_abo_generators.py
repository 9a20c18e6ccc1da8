"""The generator contract, reply parsing, and the `attributes` and `local` generators."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from vlmbench.errors import ArgError, UnknownNameError, VlmbenchError
from vlmbench.plugin.generator import (
    GenerationResult,
    Job,
    QAItem,
    items_from_reply,
    parse_difficulty,
    parse_reply,
)
from vlmbench.plugin.loading import load_plugins
from vlmbench_plugins.datasets.abo import reader
from vlmbench_plugins.datasets.abo.prepare import create_generator
from vlmbench_plugins.generators import attributes
from vlmbench_plugins.generators.prompting import PROMPTS, Template, template_for

from .abo_testkit import ScriptedModel, ScriptedPlugin, real_records

# -- parsing replies -------------------------------------------------------------------------------


def _triple(question: str, answer: str, difficulty: str) -> dict:
    """A parsed item as ``parse_reply`` returns it (the difficulty still as written)."""
    return {"question": question, "answer": answer, "difficulty": difficulty}


def test_parse_json_shapes():
    expected = [{"question": "What colour?", "answer": "Red", "difficulty": 0}]
    assert parse_reply(json.dumps(expected)) == (expected, {})
    assert parse_reply("```json\n" + json.dumps(expected) + "\n```")[0] == expected
    assert parse_reply(json.dumps({"questions": expected}))[0] == expected
    assert parse_reply("Here you go: " + json.dumps(expected))[0] == expected
    upper = [{"Question": "What colour?", "Answer": "Red", "Level": "0"}]
    assert parse_reply(json.dumps(upper))[0] == [_triple("What colour?", "Red", "0")]
    triples, problems = parse_reply(json.dumps([*expected, {"question": "no answer"}, "text"]))
    assert triples == expected and problems == {"unparsed_fragment": 2}


def test_parse_the_studys_delimited_format():
    text = "What colour is the sofa? # Grey # 0 % What is the frame made of? # Wood # 2 %"
    sofa = _triple("What colour is the sofa?", "Grey", "0")
    assert parse_reply(text) == ([sofa, _triple("What is the frame made of?", "Wood", "2")], {})
    numbered = "1. Question: What colour? # Answer: Red # Difficulty: 1\nnonsense\n2) What shape? | Round | 0\nThat is all."
    triples, problems = parse_reply(numbered)
    assert [(t["question"], t["answer"], parse_difficulty(t["difficulty"])) for t in triples] == [
        ("What colour?", "Red", 1),
        ("What shape?", "Round", 0),
    ]
    assert problems == {"unparsed_fragment": 1}


def test_parse_csv_rows_with_quotes_and_header():
    text = 'question,answer,difficulty\n"How tall is it, in inches?",12,3\nWhat colour?,Red,0'
    triples, _ = parse_reply(text)
    assert triples == [
        _triple("How tall is it, in inches?", "12", "3"),
        _triple("What colour?", "Red", "0"),
    ]
    unquoted, _ = parse_reply("How tall is it, in inches?,12,3")
    assert unquoted[0]["question"] == "How tall is it, in inches?" and unquoted[0]["answer"] == "12"


def test_parse_the_studys_csv_rows_question_difficulty_answer():
    # The paper's reply format: no header, the difficulty in the middle.
    assert parse_reply("What is the color of the headboard?,0,Gray") == (
        [_triple("What is the color of the headboard?", "Gray", "0")],
        {},
    )
    reply = (
        "Sure, here are five questions about the product, each with a one-word answer:\n"
        "```csv\n"
        "question,difficulty,answer\n"
        '"What is the color of the headboard\'s upholstery?",0,Gray\n'
        '"How many minutes, roughly, does the assembly take?",1,Fifteen\n'
        "How many legs does the bed have?,0,4\n"
        "What substance is used to pad the frame?,2,Polyurethane\n"
        "What design style does this furniture represent?, 3, Contemporary\n"
        "```\n"
        "Let me know if you need more."
    )
    triples, problems = parse_reply(reply)
    assert [(t["question"], t["answer"], t["difficulty"]) for t in triples] == [
        ("What is the color of the headboard's upholstery?", "Gray", "0"),
        ("How many minutes, roughly, does the assembly take?", "Fifteen", "1"),
        ("How many legs does the bed have?", "4", "0"),  # both numbers: the header says which is which
        ("What substance is used to pad the frame?", "Polyurethane", "2"),
        ("What design style does this furniture represent?", "Contemporary", "3"),
    ]
    assert problems == {}  # the prose around the rows is no rejected fragment


@pytest.mark.parametrize(
    ("reply", "columns", "expected"),
    [
        # Without a header, a row of two numbers follows the order the reply's other rows show...
        ("What colour is it?,0,Red\nHow many drawers?,1,3", None, ("3", "1")),
        ("What colour is it?,Red,0\nHow many drawers?,3,1", None, ("3", "1")),
        # ...else the order the reply was asked for, else question,answer,difficulty.
        ("How many drawers?,1,3", ("question", "difficulty", "answer"), ("3", "1")),
        ("How many drawers?,3,1", None, ("3", "1")),
        # A value holding a % sign stays whole in a CSV row.
        ('"What share, in percent, is cotton?",2,60%', None, ("60%", "2")),
    ],
)
def test_csv_column_order(reply, columns, expected):
    triples, _ = parse_reply(reply, columns)
    assert (triples[-1]["answer"], triples[-1]["difficulty"]) == expected


def test_malformed_and_empty_replies():
    assert parse_reply("I cannot describe this image.") == ([], {"malformed_reply": 1})
    assert parse_reply("") == ([], {"empty_reply": 1})
    assert parse_reply('[{"foo": 1}]') == ([], {"malformed_reply": 1})


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (2, 2),
        ("2", 2),
        ("Level 3", 3),
        ("2.0", 2),
        (2.0, 2),
        ("2.5", None),
        ("hard", None),
        (None, None),
        (True, None),
    ],
)
def test_parse_difficulty(value, expected):
    assert parse_difficulty(value) == expected


def test_a_reply_with_lone_surrogates_is_counted_and_stored_readably(tmp_path: Path):
    reply = '[{"question": "Colour?", "answer": "Red\\ud800", "difficulty": 1},' \
            ' {"question": "Material?", "answer": "Oak", "difficulty": 2}]'  # fmt: skip
    items, rejected = items_from_reply(reply, "g")
    assert [i.answer for i in items] == ["Oak"] and rejected == {"bad_encoding": 1}
    result = GenerationResult(
        "k", items, rejected=rejected, raw=json.loads(json.dumps(reply))[:40] + "\ud800"
    )
    line = json.dumps(result.to_dict(), ensure_ascii=False)  # as the store writes it
    (tmp_path / "store.jsonl").write_text(line + "\n", encoding="utf-8")
    assert "\\ud800" in GenerationResult.from_dict(json.loads(line)).raw


def test_generation_result_round_trip():
    r = GenerationResult("k", [QAItem("q?", "a", 1, "g", "s")], rejected={"x": 1}, usage={"prompt_tokens": 3})
    assert GenerationResult.from_dict(json.loads(json.dumps(r.to_dict()))) == r


# -- attributes ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("values", "standardized", "expected"),
    [
        (("Black",), (), ("Black", 0)),
        (("Iron Grey",), (), ("Grey", 0)),
        (("Translucent Yellow",), (), ("Yellow", 0)),
        (("Espresso",), (), ("Espresso", 1)),
        (("Deep Forest Shade",), ("Green",), ("Green", 0)),
        (("Black/White",), (), (None, 0)),
        (("Red and Blue",), (), (None, 0)),
        (("Multi",), (), (None, 0)),
        (("Sea Mist",), (), (None, 0)),
    ],
)
def test_colour_rules(values, standardized, expected):
    answer, difficulty, _ = attributes.colour_answer(values, standardized)
    assert (answer, difficulty if answer else 0) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("Wood", "Wood"),
        ("100% Polyester", "Polyester"),
        ("PETG (Polyethylene Terephtalate Glycol-modified)", "PETG"),
        ("Engineered Wood", None),
        ("Wood, Metal", None),
        ("N/A", None),
        ("leather", "Leather"),
    ],
)
def test_material_rules(value, expected):
    assert attributes.material_answer(value)[0] == expected


def listing_from(record: dict) -> reader.Listing:
    return reader.parse_listing(record, reader.language_order("en_IN"))


def make_generator(name: str, args=None):
    gen = create_generator(name, args, load_plugins())
    gen.setup()
    return gen


def run_one(gen, listing: reader.Listing, image: bytes = b"") -> GenerationResult:
    return next(iter(gen.generate_many([Job(listing, image=lambda: image)])))


def test_attributes_on_a_real_record():
    record = next(r for r in real_records() if r["item_id"] == "B07H9GMYXS")
    result = run_one(make_generator("attributes"), listing_from(record))
    got = {i.source: (i.question, i.answer, i.difficulty) for i in result.items}
    assert got == {
        "color": ("What is the main color of this product?", "Yellow", 0),
        "material": ("What material is this product made of?", "PETG", 2),
        "brand": ("What brand is this product?", "AmazonBasics", 3),
        "height": ("How tall is this product, in whole inches?", "3", 3),
        "weight": ("How much does this product weigh, in whole pounds?", "2", 3),
    }
    # MECHANICAL_COMPONENTS is not one word; "1-Pack" is not an alphabetic word.
    assert result.rejected == {"attribute_not_single_word": 2}
    assert all(i.generator == "attributes" for i in result.items)


def test_attributes_skips_what_it_cannot_make_one_word_of():
    record = {
        "item_id": "X",
        "color": [{"language_tag": "en_IN", "value": "Black/White"}],
        "pattern": [{"language_tag": "en_IN", "value": "N/A"}],
        "product_type": [{"value": "HOME"}],
        "item_shape": [{"language_tag": "en_IN", "value": "Round"}],
        "item_dimensions": {"height": {"normalized_value": {"unit": "inches", "value": 400.0}}},
        "item_weight": [{"normalized_value": {"unit": "kilograms", "value": 2.0}}],
    }
    result = run_one(make_generator("attributes"), listing_from(record))
    assert [(i.source, i.answer) for i in result.items] == [("item_shape", "Round")]
    assert result.rejected == {
        "attribute_several_values": 1, "attribute_placeholder": 2, "attribute_out_of_range": 1, "attribute_unit": 1,
    }  # fmt: skip


def test_attributes_fields_option_and_identity():
    gen = make_generator("attributes", "fields=color+item_shape")
    record = next(r for r in real_records() if r["item_id"] == "B07H9GMYXS")
    assert [i.source for i in run_one(gen, listing_from(record)).items] == ["color"]
    assert gen.fingerprint() != make_generator("attributes").fingerprint()
    with pytest.raises(ArgError, match="unknown fields"):
        make_generator("attributes", "fields=colour")
    with pytest.raises(ArgError, match="did you mean"):
        create_generator("attributes", "field=color")
    with pytest.raises(UnknownNameError):
        create_generator("gemeni")


# -- prompt templates ------------------------------------------------------------------------------


def test_default_template_renders_the_description(tmp_path: Path):
    record = next(r for r in real_records() if r["item_id"] == "B0841RDVFS")
    listing = reader.parse_listing(record)  # en_US: the fallback after en_IN
    text = Template().render(listing, 5, "delimited")
    assert "exactly 5 different factual questions" in text
    assert "Description: 10.3-ounce package of 12 wild blueberry miniature muffins | Naturally" in text
    assert "<question> # <answer> # <difficulty>" in text and "{" not in text
    assert '"difficulty" (an integer)' in Template().render(listing, 3, "json")
    custom = tmp_path / "t.txt"
    custom.write_text("About {product}: {questions} questions. {{literal}} {output_format}")
    assert (
        Template(custom)
        .render(listing, 2, "json")
        .startswith("About Fresh Brand – Wild Blueberry Mini Muffins")
    )
    custom.write_text("{questions} {colour}")
    with pytest.raises(ArgError, match="unknown placeholders"):
        Template(custom)


def test_the_study_prompt_follows_the_papers_structure():
    record = next(r for r in real_records() if r["item_id"] == "B0841RDVFS")
    listing = reader.parse_listing(record)
    text = template_for({"prompt": "study", "prompt_file": ""}).render(listing, 5, "csv")
    assert "Write 5 varied questions" in text and "single word" in text
    assert "Description: 10.3-ounce package of 12 wild blueberry miniature muffins" in text
    levels = [line.split(" - ")[0] for line in text.splitlines() if line[:1].isdigit()]
    assert levels == ["0", "1", "2", "3", "5"] and "Level 4 is not used" in text
    assert "question,difficulty,answer" in text and "{" not in text
    assert PROMPTS["study"].reply_format == "csv" and PROMPTS["default"].reply_format is None


# -- local -----------------------------------------------------------------------------------------


@pytest.fixture
def scripted_plugins():
    plugins = load_plugins(extra=[ScriptedPlugin()])
    ScriptedModel.calls.clear()
    ScriptedModel.prompts.clear()
    yield plugins
    load_plugins(reload=True)


def test_local_generator_runs_a_model_plugin_on_the_images(scripted_plugins, abo_tree: Path):
    paths = reader.read_image_paths(abo_tree / reader.IMAGES_CSV)
    listings = list(reader.iter_listings(abo_tree, image_paths=paths, require_image=True))[:5]
    small = abo_tree / reader.SMALL_IMAGES_DIR
    gen = create_generator("local", "model=scripted,batch_size=2", scripted_plugins)
    gen.setup()
    jobs = [Job(x, image=lambda x=x: (small / x.image_path).read_bytes()) for x in listings]
    results = list(gen.generate_many(jobs))
    assert [r.key for r in results] == [x.key for x in listings]
    assert ScriptedModel.calls == [2, 2, 1]
    first = results[0]
    assert [(i.answer, i.difficulty) for i in first.items] == [("32", 3), ("Yes", 0), ("Dark", 1)]
    assert all(i.generator == "local" and i.source == "scripted" for i in first.items)
    assert gen.usage() == {"model_calls": 3, "listings": 5, "unreadable_images": 0}
    # The fingerprint follows the model's identity (its arguments), not only the generator's.
    other = create_generator("local", "model=scripted,model_args=style=json", scripted_plugins)
    assert other.fingerprint() != gen.fingerprint()


def first_listing(abo_tree: Path) -> tuple[reader.Listing, bytes]:
    """The tree's first listing and its image file's bytes."""
    paths = reader.read_image_paths(abo_tree / reader.IMAGES_CSV)
    listing = next(reader.iter_listings(abo_tree, image_paths=paths))
    return listing, (abo_tree / reader.SMALL_IMAGES_DIR / listing.image_path).read_bytes()


def test_local_generator_with_the_study_prompt(scripted_plugins, abo_tree: Path):
    listing, image = first_listing(abo_tree)
    gen = create_generator("local", "model=scripted,model_args=style=csv,prompt=study", scripted_plugins)
    gen.setup()
    result = run_one(gen, listing, image)
    assert [(i.answer, i.difficulty) for i in result.items] == [("32", 3), ("Dark", 1)]
    assert "question,difficulty,answer" in ScriptedModel.prompts[-1]
    # The study's prompt fixes the reply format, so output_format does not apply to it.
    same = create_generator("local", "model=scripted,model_args=style=csv,prompt=study,output_format=json",
                            scripted_plugins)  # fmt: skip
    assert same.fingerprint() == gen.fingerprint()
    default = create_generator("local", "model=scripted,model_args=style=csv", scripted_plugins)
    assert default.fingerprint() != gen.fingerprint() and "prompt" not in default.identity()["args"]


def test_local_generator_handles_junk_and_broken_images(scripted_plugins, abo_tree: Path):
    listing, good = first_listing(abo_tree)
    gen = create_generator("local", "model=scripted,model_args=style=junk", scripted_plugins)
    gen.setup()
    junk = run_one(gen, listing, good)
    assert junk.items == [] and junk.rejected == {"malformed_reply": 1} and "sorry" in junk.raw
    broken = run_one(gen, listing, b"not an image")
    assert broken.error is None and broken.rejected == {"image_corrupt_image": 1}


def test_local_generator_refuses_unsuitable_models(scripted_plugins):
    with pytest.raises(VlmbenchError, match="needs model="):
        create_generator("local", None, scripted_plugins)
    gen = create_generator("local", "model=prior", scripted_plugins)
    with pytest.raises(VlmbenchError, match="needs training data"):
        gen.setup()
