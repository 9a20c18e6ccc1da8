"""METEOR: nltk's meteor_score on token lists, the values of the metric notes and nltk called directly."""

from __future__ import annotations

import pytest
from metric_helpers import make_metric

# pred, gt, METEOR (nltk defaults)
KNOWN = [
    ("red", "red", 0.5),  # one matching word: one chunk, fragmentation penalty 0.5
    ("Red", "red", 0.5),  # lower-cased
    ("sofa", "couch", 0.5),  # WordNet synonyms
    ("crimson", "red", 0.5),
    ("black", "white", 0.0),
    ("pink", "red", 0.0),
    ("plastic", "rubber", 0.0),
    ("wooden", "wood", 0.0),
    ("", "red", 0.0),
    ("coffee table", "table", 5 / 11),  # P 1/2, R 1, alpha 0.9 -> 10/11, halved by the penalty
    ("handbag", "purse", 0.0),  # synonyms are matched on stems: these are not
]


def run_meteor(pairs, **options):
    metric = make_metric("meteor", options)
    metric.setup()
    return metric.score([p for p, _ in pairs], [g for _, g in pairs])["meteor"], metric


@pytest.mark.parametrize(("pred", "gt", "expected"), KNOWN)
def test_known_values(wordnet_env, pred, gt, expected):
    values, _ = run_meteor([(pred, gt)])
    assert values[0] == pytest.approx(expected, abs=1e-6)


def test_equals_nltk_called_directly_on_token_lists(wordnet_env, wordnet_reader):
    from nltk.translate.meteor_score import meteor_score

    pairs = [
        ("a red leather sofa", "red sofa"),
        ("the table is wooden", "wooden table"),
        ("black and white", "white black"),
        ("two shoes", "a pair of shoes"),
        ("couch", "sofa bed"),
        ("running shoes", "runner shoe"),
        ("", ""),
        ("red red red", "red"),
    ]
    values, _ = run_meteor(pairs)
    for (pred, gt), value in zip(pairs, values, strict=True):
        assert value == meteor_score([gt.split()], pred.split(), wordnet=wordnet_reader), (pred, gt)
    # repeated words are matched at most once each
    assert 0 < values[-1] < 0.5


def test_parameters_and_normalisation(wordnet_env, wordnet_reader):
    from nltk.translate.meteor_score import meteor_score

    pairs = [("coffee table", "table"), ("The Red.", "red")]
    plain, _ = run_meteor(pairs)
    assert plain[1] == 0.0  # "red." is not "red" without normalisation
    normalized, metric = run_meteor(pairs, normalize=True)
    assert normalized[1] == pytest.approx(0.5)
    tuned, _ = run_meteor(pairs, alpha=0.5, beta=2.0, gamma=0.3)
    assert tuned[0] == meteor_score(
        [["table"]], ["coffee", "table"], wordnet=wordnet_reader, alpha=0.5, beta=2.0, gamma=0.3
    )
    assert tuned[0] != plain[0]
    assert metric.describe()["wordnet"]["version"] == "3.0"
