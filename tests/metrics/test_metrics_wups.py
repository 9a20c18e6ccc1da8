"""WUPS against the reference definition (DAQUAR calculate_wups.py) and nltk computed directly."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from metric_helpers import make_metric
from wups_reference import reference_wups

from vlmbench.errors import ArgError
from vlmbench.scoring.scorer import build_metrics, score
from vlmbench.tasks.normalize import vqa_normalize
from vlmbench.tasks.spec import MetricSpec

# pred, gt, WUPS@0.0, WUPS@0.9 (reference mode). Fractions are the exact values behind the 4-decimal
# table of the metric notes: crimson/red 16/17, plastic/rubber 3/7.
REFERENCE_TABLE = [
    ("red", "red", 1.0, 1.0),
    ("Red", "red", 1.0, 1.0),
    ("sofa", "couch", 1.0, 1.0),
    ("crimson", "red", 16 / 17, 16 / 17),
    ("black", "white", 0.9, 0.9),  # w == t is not down-weighted: the threshold is strict
    ("pink", "red", 0.875, 0.0875),
    ("plastic", "rubber", 3 / 7, 0.3 / 7),
    ("wooden", "wood", 0.0, 0.0),  # adjectives are never consulted
    ("", "red", 0.0, 0.0),
    ("coffee table", "table", 0.0, 0.0),  # multi-word items have no synsets
]


def run_wups(pairs, **options):
    metric = make_metric("wups", options)
    metric.setup()
    out = metric.score([p for p, _ in pairs], [g for _, g in pairs])
    return out, metric


@pytest.mark.parametrize(("pred", "gt", "at0", "at9"), REFERENCE_TABLE)
def test_reference_values_of_the_notes(wordnet_env, pred, gt, at0, at9):
    out, _ = run_wups([(pred, gt)], mode="reference")
    assert out["wups_0.0"][0] == pytest.approx(at0, abs=1e-6)
    assert out["wups_0.9"][0] == pytest.approx(at9, abs=1e-6)


def test_raw_wu_palmer_matches_nltk(wordnet_reader):
    # The raw similarities behind the table, and nltk's documented check value for dog/cat.
    assert wordnet_reader.synset("dog.n.01").wup_similarity(
        wordnet_reader.synset("cat.n.01")
    ) == pytest.approx(0.857, abs=1e-3)
    assert reference_wups(wordnet_reader, "crimson", "red")[0] == pytest.approx(0.9412, abs=1e-4)


def test_nltk_quirk_is_kept(wordnet_env):
    # wup_similarity of a synset with itself is not always 1 in nltk: Brunette/brunette -> 0.75.
    out, _ = run_wups([("Brunette", "brunette"), ("shoes", "shoe")], mode="reference")
    assert out["wups_0.0"] == pytest.approx([0.75, 1.0], abs=1e-12)
    assert out["wups_0.9"] == pytest.approx([0.075, 1.0], abs=1e-12)


# Word pairs whose Wu-Palmer similarity depends on the direction (nltk's wup_similarity is not symmetric):
# pred, gt, WUPS@0.0, WUPS@0.9, with the raw similarities reference -> prediction / prediction -> reference.
# calculate_wups.py takes the reference -> prediction direction in its left product and prediction ->
# reference in its right one, and the minimum of both; one direction alone gives the larger value.
DIRECTION_TABLE = [
    ("soccer", "football", 22 / 25, 2.2 / 25),  # 0.96 / 0.88
    ("acrylic", "paint", 14 / 17, 1.4 / 17),  # 16/17 / 14/17
    ("buttermilk", "milk", 14 / 17, 1.4 / 17),  # 18/19 / 14/17
    ("currants", "raisins", 0.75, 0.075),  # 0.96 / 0.75
    ("line", "letter", 7 / 8, 0.7 / 8),  # 0.9 / 0.875: one direction sits exactly on the threshold
]


def best_wup(wn, first: str, second: str) -> float:
    """nltk's largest wup_similarity of a ``first`` noun synset to a ``second`` one."""
    return max(x.wup_similarity(y) for x in wn.synsets(first, pos="n") for y in wn.synsets(second, pos="n"))


@pytest.mark.parametrize(("pred", "gt", "at0", "at9"), DIRECTION_TABLE)
def test_direction_dependent_pairs_take_both_directions(wordnet_env, wordnet_reader, pred, gt, at0, at9):
    assert best_wup(wordnet_reader, gt, pred) != best_wup(wordnet_reader, pred, gt)
    capitalised = (pred.capitalize() + ".", gt.upper())
    for mode, pairs in (("reference", [(pred, gt)]), ("normalized", [(pred, gt), capitalised])):
        for p, g in pairs:
            out, _ = run_wups([(p, g), (g, p)], mode=mode)  # both roles: WUPS is symmetric in them
            assert out["wups_0.0"] == pytest.approx([at0, at0], abs=1e-12), (mode, p, g)
            assert out["wups_0.9"] == pytest.approx([at9, at9], abs=1e-12), (mode, p, g)
    assert reference_wups(wordnet_reader, pred, gt) == pytest.approx((at0, at9), abs=1e-12)
    assert reference_wups(wordnet_reader, gt, pred) == pytest.approx((at0, at9), abs=1e-12)


def normalised_items(answer: str) -> str:
    """An answer as normalized mode sees it: each comma-separated item VQA-normalised."""
    return ",".join(vqa_normalize(item) for item in answer.split(","))


# Answer sets mixing direction-dependent items, in both roles: each product must use its own direction.
DIRECTION_SETS = [
    ("soccer", "football, milk"),
    ("soccer, buttermilk", "football, milk"),
    ("acrylic, enamel", "paint"),
    ("Soccer, Milk.", "football"),
    ("farmhouse, house", "house, paint"),
    ("latex, scalp", "paint, skin, line"),
    ("currants, letter", "raisins"),
]


@pytest.mark.parametrize("mode", ["reference", "normalized"])
def test_answer_sets_with_direction_dependent_items_equal_the_reference(wordnet_env, wordnet_reader, mode):
    pairs = DIRECTION_SETS + [(g, p) for p, g in DIRECTION_SETS]
    pairs += [(p, g) for p, g, _, _ in DIRECTION_TABLE] + [(g, p) for p, g, _, _ in DIRECTION_TABLE]
    out, _ = run_wups(pairs, mode=mode)
    prepare = normalised_items if mode == "normalized" else (lambda s: s)
    for i, (pred, gt) in enumerate(pairs):
        expected = reference_wups(wordnet_reader, prepare(pred), prepare(gt))
        assert (out["wups_0.0"][i], out["wups_0.9"][i]) == expected, (mode, pred, gt)

    # soccer against {football, milk} at t = 0: left = mu(football, soccer) * mu(milk, soccer), right =
    # max(mu(soccer, football), mu(soccer, milk)); football -> soccer is 0.96, soccer -> football 0.88.
    def wup(first: str, second: str) -> float:
        return best_wup(wordnet_reader, first, second)

    left = wup("football", "soccer") * wup("milk", "soccer")
    right = max(wup("soccer", "football"), wup("soccer", "milk"))
    assert (wup("football", "soccer"), wup("soccer", "football")) == (0.96, 0.88)
    assert out["wups_0.0"][0] == pytest.approx(min(left, right), abs=1e-12)


VOCABULARY = [
    "red", "Red", "crimson", "pink", "black", "white", "gray", "grey", "blue", "navy", "beige", "brown",
    "wood", "wooden", "metal", "steel", "plastic", "rubber", "leather", "cotton", "glass", "ceramic",
    "sofa", "couch", "chair", "table", "lamp", "shoe", "shoes", "sandal", "boot", "bag", "handbag",
    "purse", "phone", "case", "cover", "round", "square", "oval", "circle", "two", "2", "Brunette",
    "brunette", "floral", "striped", "coffee table", "t-shirt", "", "none", "dog", "cat", "apple",
    "soccer", "football", "paint", "acrylic", "milk", "buttermilk", "raisins", "currants",
]  # fmt: skip


def derived_pairs() -> list[tuple[str, str]]:
    everything = list(itertools.product(VOCABULARY, VOCABULARY))
    rng = np.random.default_rng(7)
    pairs = [everything[i] for i in rng.choice(len(everything), size=250, replace=False)]
    # comma-separated answer sets, in both roles
    pairs += [
        ("red, white", "red"),
        ("red", "red, white"),
        ("white, red", "red, white"),
        ("sofa, chair", "couch"),
        ("pink,black", "red, white"),
        ("metal , wood", "steel"),
        (",", "red"),
    ]
    return pairs


def test_more_pairs_equal_nltk_computed_directly(wordnet_env, wordnet_reader):
    pairs = derived_pairs()
    out, _ = run_wups(pairs, mode="reference")
    for i, (pred, gt) in enumerate(pairs):
        assert (out["wups_0.0"][i], out["wups_0.9"][i]) == reference_wups(wordnet_reader, pred, gt), (
            pred,
            gt,
        )


@pytest.mark.parametrize("mode", ["reference", "normalized"])
def test_wups_is_symmetric_in_prediction_and_reference(wordnet_env, mode):
    # Swapping the roles swaps the two products (each in its own direction), so the minimum is unchanged.
    pairs = derived_pairs() + DIRECTION_SETS
    out, _ = run_wups(pairs, mode=mode)
    swapped, _ = run_wups([(g, p) for p, g in pairs], mode=mode)
    assert out["wups_0.0"] == swapped["wups_0.0"] and out["wups_0.9"] == swapped["wups_0.9"]


@pytest.mark.parametrize("mode", ["reference", "normalized"])
def test_wups_at_0_is_never_below_wups_at_0_9(wordnet_env, mode):
    pairs = list(itertools.product(VOCABULARY, VOCABULARY))
    out, _ = run_wups(pairs, mode=mode)
    low, high = np.array(out["wups_0.0"]), np.array(out["wups_0.9"])
    assert (low >= high).all()
    assert (low < 1).any() and (high < low).any()  # the pairs really exercise the down-weighting


def test_set_scores_are_order_free_and_take_the_weaker_direction(wordnet_env, wordnet_reader):
    out, _ = run_wups(
        [("white, red", "red, white"), ("red, white", "red"), ("red", "red, white")], mode="reference"
    )
    assert out["wups_0.0"][0] == 1.0
    # an extra predicted item costs its best match in the prediction->reference product
    expected = reference_wups(wordnet_reader, "white", "red")[1]
    assert out["wups_0.9"][1] == pytest.approx(expected) and out["wups_0.9"][2] == pytest.approx(expected)
    assert expected < 1


def test_normalized_mode_normalises_each_item(wordnet_env):
    pairs = [("The Red.", "red"), ("Two", "2"), ("RED, White", "red, white"), ("a sofa", "couch")]
    normalized, _ = run_wups(pairs, mode="normalized")
    reference, _ = run_wups(pairs, mode="reference")
    assert normalized["wups_0.0"] == [1.0, 1.0, 1.0, 1.0]
    assert reference["wups_0.0"][0] == 0.0  # "The Red." has no synsets as it stands


def test_weighted_wups_uses_the_configured_weight(wordnet_env):
    pairs = [("pink", "red"), ("plastic", "rubber"), ("red", "red")]
    for weight in (0.5, 0.25, 1.0):
        out, metric = run_wups(pairs, weight=weight)
        expected = [
            weight * a + (1 - weight) * b for a, b in zip(out["wups_0.0"], out["wups_0.9"], strict=True)
        ]
        assert out["wups_weighted"] == pytest.approx(expected, abs=1e-15)
        assert (
            metric.describe()["weighted"]
            == f"wups_weighted = {weight:g} * wups_0.0 + {1 - weight:g} * wups_0.9"
        )
    with pytest.raises(ArgError, match="between 0 and 1"):
        make_metric("wups", {"weight": 1.5})


def test_mode_is_recorded_and_checked(wordnet_env):
    _, metric = run_wups([("red", "red")], mode="reference")
    details = metric.describe()
    assert details["mode"] == "reference" and details["wordnet"]["version"] == "3.0"
    assert make_metric("wups").options["mode"] == "normalized"
    with pytest.raises(ArgError, match="mode"):
        make_metric("wups", {"mode": "loose"})


def test_through_scoring_unique_pairs_and_aggregates(wordnet_env):
    from vlmbench.plugin.loading import load_plugins
    from vlmbench.plugin.metric import MetricContext

    answers = ["red", "pink", "red", "sofa", "wooden", "pink"]
    refs = [["red"], ["red"], ["red"], ["couch"], ["wood"], ["red"]]
    levels = [0, 0, 1, 1, 1, None]
    context = MetricContext({0: 1.0, 1: 2.0}, 0, "cpu")
    metrics = build_metrics([MetricSpec("wups", {"mode": "reference"})], load_plugins(), context)
    calls = []
    original = metrics[0].score
    metrics[0].score = lambda p, r: calls.append(len(p)) or original(p, r)
    result = score(metrics, answers, refs, levels, weights={0: 1.0, 1: 2.0}, bootstrap_samples=200, seed=3)
    assert calls == [4]  # four distinct (answer, reference) pairs, one batch
    assert result.sample_scores["wups_0.9"] == pytest.approx([1, 0.0875, 1, 1, 0, 0.0875])
    summary = result.metrics["wups_0.9"]
    assert summary["n"] == 6 and summary["value"] == pytest.approx(np.mean([1, 0.0875, 1, 1, 0, 0.0875]))
    lo, hi = summary["ci95"]
    assert lo <= summary["value"] <= hi
    again = score(metrics, answers, refs, levels, weights={0: 1.0, 1: 2.0}, bootstrap_samples=200, seed=3)
    assert again.metrics["wups_0.9"]["ci95"] == summary["ci95"]  # seeded
    assert result.by_difficulty["1"]["n"] == 3
    assert result.by_difficulty["1"]["metrics"]["wups_0.0"]["value"] == pytest.approx(2 / 3)
    assert result.by_difficulty["unknown"]["metrics"]["wups_0.9"]["n"] == 1
