"""``attributes``: deterministic, offline questions from a listing's structured metadata.

One fixed question per usable attribute; the answer is the attribute's value reduced to one word by
the rules below, or the question is not asked. Difficulty follows the study's rubric (0: visible in
the image, 1: basic inference from what is visible, 2: needs the image and the listing text together,
3: product knowledge beyond the image); level 5 (specialised expertise) is never produced.

==============  =============================================  ====  ==========================================
field           question                                        diff  answer rule
==============  =============================================  ====  ==========================================
color           What is the main color of this product?         0/1   one-word value, or the basic colour term
                                                                      that ends a longer value ("Iron Grey" ->
                                                                      Grey), or a one-word standardised value;
                                                                      0 for basic colour terms, 1 for named
                                                                      shades ("Espresso"); "Black/White" skipped
item_shape      What shape is this product?                     0     one word
pattern         What pattern does this product have?            1     one word
product_type    What type of product is this?                   1     one-token product type (CHAIR -> Chair),
                                                                      generic types (HOME, OTHER...) skipped
material        What material is this product made of?          2     one word after dropping brackets and
                                                                      percentages ("100% Polyester" -> Polyester)
fabric_type     What fabric is this product made of?            2     as material
finish_type     What finish does this product have?             2     as material
style           What style is this product?                     2     one alphabetic word ("1-Pack" skipped)
brand           What brand is this product?                     3     one word
height          How tall is this product, in whole inches?      3     normalised height in inches, rounded;
                                                                      1 to 120 inches only
weight          How much does this product weigh, in whole      3     normalised weight in pounds, rounded;
                pounds?                                               1 to 500 pounds only
==============  =============================================  ====  ==========================================

Values that say nothing ("N/A", "Other", "Multi", "Assorted"...) are skipped. Every answer is checked
with the curation rules (one word after normalisation, not yes/no, not in the question) before it is
emitted; attributes that yield nothing usable are counted by reason in the curation report.
"""

from __future__ import annotations

import re

from vlmbench.api import Arg, ArgError, GenerationResult, Generator, Job, QAItem
from vlmbench_plugins.datasets.abo.curation import ValidationConfig, check

QUESTIONS: dict[str, tuple[str, int]] = {
    "color": ("What is the main color of this product?", 0),
    "item_shape": ("What shape is this product?", 0),
    "pattern": ("What pattern does this product have?", 1),
    "product_type": ("What type of product is this?", 1),
    "material": ("What material is this product made of?", 2),
    "fabric_type": ("What fabric is this product made of?", 2),
    "finish_type": ("What finish does this product have?", 2),
    "style": ("What style is this product?", 2),
    "brand": ("What brand is this product?", 3),
    "height": ("How tall is this product, in whole inches?", 3),
    "weight": ("How much does this product weigh, in whole pounds?", 3),
}
BASIC_COLOURS = frozenset(
    [
        "black",
        "white",
        "grey",
        "gray",
        "red",
        "green",
        "blue",
        "yellow",
        "orange",
        "purple",
        "pink",
        "brown",
        "beige",
        "silver",
        "gold",
        "ivory",
        "cream",
        "navy",
        "teal",
        "turquoise",
        "maroon",
        "tan",
        "khaki",
        "charcoal",
        "bronze",
        "copper",
        "olive",
        "burgundy",
        "violet",
        "lavender",
        "aqua",
        "transparent",
        "clear",
        "multicolor",
        "multicolour",
    ]
)
PLACEHOLDERS = frozenset(
    [
        "na",
        "n/a",
        "none",
        "other",
        "others",
        "unknown",
        "multi",
        "various",
        "assorted",
        "mixed",
        "default",
        "standard",
        "generic",
        "misc",
        "miscellaneous",
        "not",
        "applicable",
        "see",
        "description",
    ]
)
GENERIC_TYPES = frozenset(
    [
        "home",
        "kitchen",
        "grocery",
        "office",
        "misc",
        "other",
        "others",
        "product",
        "products",
        "accessory",
        "accessories",
        "unknown",
    ]
)
_WORD = re.compile(r"^[A-Za-z][A-Za-z']*$")
_MULTI_VALUE = re.compile(r"[/&,+]|\band\b|\bwith\b", re.IGNORECASE)
_BRACKETS = re.compile(r"\([^)]*\)|\[[^\]]*\]")
_PERCENT = re.compile(r"\d+(?:\.\d+)?\s*%")


def _placeholder(value: str) -> bool:
    return value.strip().lower().strip(".") in PLACEHOLDERS


def _single_word(value: str) -> str | None:
    """The value if it is one alphabetic word (after trimming), else None."""
    value = value.strip().strip(".,;:")
    return value if _WORD.match(value) else None


def colour_answer(values: tuple[str, ...], standardized: tuple[str, ...]) -> tuple[str | None, int, str]:
    """(answer, difficulty, reason-if-none) for a colour attribute."""
    if not values:
        return None, 0, "missing"
    value = values[0].strip()
    if _placeholder(value):
        return None, 0, "placeholder"
    if _MULTI_VALUE.search(value):
        return None, 0, "several_values"
    words = value.split()
    word = _single_word(value)
    if word is None and len(words) > 1 and words[-1].lower() in BASIC_COLOURS:
        word = _single_word(words[-1])
    if word is None:
        std = [s for s in standardized if _single_word(s)]
        if len(std) == 1:
            word = std[0]
    if word is None:
        return None, 0, "not_single_word"
    if _placeholder(word):
        return None, 0, "placeholder"
    basic = word.lower() in BASIC_COLOURS
    return word.capitalize(), 0 if basic else 1, ""


def material_answer(value: str) -> tuple[str | None, str]:
    """One word from a material-like value: brackets and percentages dropped, a single value only."""
    cleaned = _PERCENT.sub(" ", _BRACKETS.sub(" ", value))
    cleaned = " ".join(cleaned.split()).strip(" -.,;:")
    if not cleaned or _placeholder(cleaned):
        return None, "placeholder" if cleaned else "missing"
    if _MULTI_VALUE.search(cleaned):
        return None, "several_values"
    word = cleaned if re.fullmatch(r"[A-Za-z][A-Za-z0-9']*", cleaned) else None
    if word is None:
        return None, "not_single_word"
    return (word if word.isupper() and len(word) > 1 else word.capitalize()), ""


def measure_answer(value: float, unit: str, want: str, lo: float, hi: float) -> tuple[str | None, str]:
    if unit.lower() != want:
        return None, "unit"
    if not lo <= value <= hi:
        return None, "out_of_range"
    return str(round(value)), ""


class AttributesGenerator(Generator):
    args = {
        # "+" separates fields because "," separates a generator's options on the command line.
        "fields": Arg(
            str, "+".join(QUESTIONS), "fields to ask about, joined with +, from: " + ", ".join(QUESTIONS)
        ),
    }
    version = "1"
    needs_image = False

    def setup(self) -> None:
        unknown = [f for f in self._fields() if f not in QUESTIONS]
        if unknown:
            raise ArgError(f"generator 'attributes': unknown fields {unknown}; known: {', '.join(QUESTIONS)}")

    def _fields(self) -> list[str]:
        return [f.strip() for f in re.split(r"[+;]", str(self.arg_values["fields"])) if f.strip()]

    def generate(self, job: Job) -> GenerationResult:
        listing = job.listing
        result = GenerationResult(key=listing.key)
        for name in self._fields():
            answer, difficulty, reason = self._answer(listing, name)
            if answer is None:
                if reason != "missing":
                    key = f"attribute_{reason}"
                    result.rejected[key] = result.rejected.get(key, 0) + 1
                continue
            question = QUESTIONS[name][0]
            item = QAItem(question, answer, difficulty, generator=self.name, source=name)
            problem = check(item, ValidationConfig())
            if problem is not None:
                key = f"attribute_{problem}"
                result.rejected[key] = result.rejected.get(key, 0) + 1
                continue
            result.items.append(item)
        return result

    def _answer(self, listing, name: str) -> tuple[str | None, int, str]:
        difficulty = QUESTIONS[name][1]
        if name == "color":
            return colour_answer(listing.attribute("color"), listing.color_standardized)
        if name == "height":
            m = listing.dimensions.get("height")
            if m is None:
                return None, difficulty, "missing"
            answer, reason = measure_answer(m.value, m.unit, "inches", 1, 120)
            return answer, difficulty, reason
        if name == "weight":
            if listing.weight is None:
                return None, difficulty, "missing"
            answer, reason = measure_answer(listing.weight.value, listing.weight.unit, "pounds", 1, 500)
            return answer, difficulty, reason
        values = listing.attribute(name)
        if not values:
            return None, difficulty, "missing"
        value = values[0]
        if name == "product_type":
            token = value.strip().lower()
            if token in GENERIC_TYPES:
                return None, difficulty, "placeholder"
            word = _single_word(token)
            return (word.capitalize() if word else None), difficulty, "" if word else "not_single_word"
        if name in ("material", "fabric_type", "finish_type"):
            answer, reason = material_answer(value)
            return answer, difficulty, reason
        if _placeholder(value):
            return None, difficulty, "placeholder"
        word = _single_word(value)
        if word is None:
            return None, difficulty, "not_single_word"
        return (word if name == "brand" else word.capitalize()), difficulty, ""
