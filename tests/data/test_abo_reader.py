"""The ABO listing reader on real records and their quirks."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from vlmbench.errors import AssetMissingError, DataError
from vlmbench_plugins.datasets.abo import reader

from .abo_testkit import FIXTURES, SHARED_ABO, real_records


def by_id(item_id: str) -> dict:
    return next(r for r in real_records() if r["item_id"] == item_id)


def test_language_order_default_and_custom():
    assert reader.language_order() == (
        "en_IN", "en_US", "en_GB", "en_CA", "en_AU", "en_SG", "en_AE", "en_*", "untagged",
    )  # fmt: skip
    order = reader.language_order("es_MX")
    assert order[0] == "es_MX" and order[1] == "en_US" and order.count("en_IN") == 1
    assert reader.language_order("en_US", fallback=[]) == ("en_US", "en_*", "untagged")


def test_pick_language_follows_the_order_per_attribute():
    fabric = by_id("B0799CK52K")["fabric_type"]  # zh_CN, es_US, pt_BR, en_US
    assert reader.pick_language(fabric, reader.language_order()) == (["100% Polyester"], "en_US")
    assert reader.pick_language(fabric, ["pt_BR"]) == (["100% poliéster"], "pt_BR")
    assert reader.pick_language(fabric, ["fr_FR"]) == ([], None)
    # A prefix pattern keeps one tag, not a mixture of all matching tags.
    mixed = [{"language_tag": "en_GB", "value": "Grey"}, {"language_tag": "en_US", "value": "Gray"}]
    assert reader.pick_language(mixed, ["en_*"]) == (["Grey"], "en_GB")
    # Untagged values: null tag, missing tag, bare strings, numbers.
    assert reader.pick_language([{"language_tag": None, "value": "ST1004"}], ["untagged"]) == (
        ["ST1004"],
        None,
    )
    assert reader.pick_language("CHAIR", ["untagged"]) == (["CHAIR"], None)
    assert reader.pick_language([{"language_tag": "en_US", "value": 2019}], ["en_US"]) == (["2019"], "en_US")
    assert reader.pick_language([{"language_tag": "en_US", "value": "  "}], ["*"]) == ([], None)


def test_parse_complete_record():
    listing = reader.parse_listing(
        by_id("B07H9GMYXS"), reader.language_order(), {"81NP7qh2L6L": "ab/abcdef01.jpg"}
    )
    assert listing.key == "B07H9GMYXS@amazon.ae"
    assert listing.main_image_id == "81NP7qh2L6L" and listing.image_path == "ab/abcdef01.jpg"
    assert listing.other_image_ids == ("81A0u5L4VAL", "61xhS6iLrZL")
    assert listing.language == "en_AE"  # en_IN absent: the English fallback order decides
    assert len(listing.bullet_points) == 5
    assert (
        listing.description.startswith("3D printer filament with 1.75mm diameter")
        and " | " in listing.description
    )
    assert listing.attribute("color") == ("Translucent Yellow",)
    assert listing.attribute("material") == ("PETG (Polyethylene Terephtalate Glycol-modified)",)
    assert listing.attribute("style") == ("1-Pack",)
    assert listing.attribute("brand") == ("AmazonBasics",)
    assert listing.product_type == ("MECHANICAL_COMPONENTS",)  # a list without a language tag
    assert listing.nodes == ("/Categories",)  # node_name, not the documented "path"
    assert listing.dimensions["height"] == reader.Measure(2.99, "inches")
    assert listing.weight == reader.Measure(2.2, "pounds")
    assert listing.name.startswith("AmazonBasics PETG")
    assert listing.attribute("item_keywords")[0] == "3d printer filament"


def test_parse_abridged_record_in_another_language():
    record = by_id("B07P8ML82R")  # es_MX tags on English text; only normalised dimensions
    listing = reader.parse_listing(record)
    assert listing.key == "B07P8ML82R@?"
    assert listing.bullet_points == () and listing.language is None
    assert "brand" not in listing.attributes
    assert listing.product_type == ("HARDWARE",)
    assert listing.nodes == ("/Categorías/Ferretería/Guías para Cajones",)
    assert listing.dimensions["length"] == reader.Measure(22.0, "inches")
    assert listing.weight == reader.Measure(1.45, "pounds")
    spanish = reader.parse_listing(record, reader.language_order("es_MX"))
    assert spanish.language == "es_MX" and spanish.bullet_points[0] == "White Powder Coat Finish"
    assert spanish.attribute("brand") == ("AmazonBasics",)


def test_parse_records_from_the_key_value_form():
    bag = reader.parse_listing(by_id("B0799CK52K"))
    assert bag.attribute("fabric_type") == ("100% Polyester",)
    assert bag.attribute("style") == ("Yoga Bag",)  # en_US, not de_DE "Yogatasche"
    assert bag.languages["style"] == "en_US"
    assert bag.main_image_id is None and bag.image_path is None
    vitamins = reader.parse_listing(by_id("B07GTFSCHB"))
    assert vitamins.bullet_points == ()  # French only
    # The listed value is in centimetres; the normalised one (inches) is preferred.
    assert vitamins.dimensions["height"] == reader.Measure(3.1496062, "inches")


def test_colour_standardized_values_come_from_the_chosen_language():
    record = {
        "item_id": "X",
        "color": [
            {"language_tag": "de_DE", "value": "Schwarz", "standardized_values": ["Black"]},
            {"language_tag": "en_US", "value": "Jet Black", "standardized_values": ["Black"]},
        ],
    }
    listing = reader.parse_listing(record)
    assert listing.attribute("color") == ("Jet Black",) and listing.color_standardized == ("Black",)


def test_read_image_paths_gz_and_csv(tmp_path: Path):
    plain = FIXTURES / "images_csv_first_rows.csv"
    paths = reader.read_image_paths(plain)
    assert paths["010-mllS7JL"] == "14/14fe8812.jpg" and paths["11Y+Xpt1lfL"] == "99/9987a1c8.jpg"
    gz = tmp_path / "images.csv.gz"
    gz.write_bytes(gzip.compress(plain.read_bytes()))
    assert reader.read_image_paths(gz) == paths
    bad = tmp_path / "bad.csv"
    bad.write_text("a,b\n1,2\n")
    with pytest.raises(DataError, match="image_id,height,width,path"):
        reader.read_image_paths(bad)
    with pytest.raises(AssetMissingError, match="vlmbench data download abo"):
        reader.read_image_paths(tmp_path / "missing.csv.gz")


def test_iter_listings_streams_files_and_counts_problems(abo_tree: Path):
    stats = reader.ReadStats()
    paths = reader.read_image_paths(abo_tree / reader.IMAGES_CSV)
    listings = list(reader.iter_listings(abo_tree, image_paths=paths, stats=stats, require_image=True))
    assert stats.files == 2
    assert stats.bad_lines == 2  # "{not json" and a JSON array
    assert stats.no_main_image == 3  # the key/value records have no image id
    assert stats.image_not_in_metadata == 1
    assert (
        stats.listings == len(listings) == 24 + 3 + 2
    )  # derived, real JSON records, duplicate + missing file
    first = listings[0]
    assert first.key == "B0TEST0000@amazon.in" and first.language == "en_IN"
    assert not first.description.startswith("US text")  # en_IN wins over en_US
    assert first.source == "listings_0.json.gz:1"
    everything = list(reader.iter_listings(abo_tree))
    assert len(everything) == 24 + 6 + 3


def test_missing_listings_folder(tmp_path: Path):
    with pytest.raises(AssetMissingError, match="listings_"):
        list(reader.iter_listings(tmp_path))


def test_fixture_matches_the_published_records():
    """The in-repo fixture reproduces the published JSON records exactly."""
    folder = SHARED_ABO / "listings"
    if not folder.is_dir():
        pytest.skip("reference records are not available")
    for path in sorted(folder.glob("*.json")):
        original = json.loads(path.read_text(encoding="utf-8"))
        assert by_id(original["item_id"]) == original
