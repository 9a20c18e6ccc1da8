import pytest

from vlmbench.tasks.filters import apply_filters
from vlmbench.tasks.normalize import vqa_normalize

DEFAULT_CHAIN = ["strip", "remove_answer_prefix", "first_word", "strip_punctuation"]


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("The Red.", "red"),
        ("t-shirt", "t shirt"),
        ("Two", "2"),
        ("3,000", "3000"),
        ("none", "0"),
        ("2.5", "2.5"),
        ("dont", "don't"),
        ("  Wood\n", "wood"),
        ("a  Blue   sofa!", "blue sofa"),
        ("yes?", "yes"),
        ("(brown)", "brown"),
    ],
)
def test_vqa_normalisation_examples(raw, expected):
    assert vqa_normalize(raw) == expected


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("Answer: red", "red"),
        ("The answer is Blue.", "Blue"),
        ("A: wood", "wood"),
        ("a-line", "a-line"),
        ("The red one", "red"),
        ('"Leather"', "Leather"),
        ("", ""),
        ("   ", ""),
        ("2.5 inches", "2.5"),
    ],
)
def test_default_filter_chain(raw, expected):
    assert apply_filters(raw, DEFAULT_CHAIN) == expected
