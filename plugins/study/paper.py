"""The study's reported numbers and names, for the report's side-by-side columns (``--with-paper``).

Transcribed from the study's report (its Table 1 and Table 2, the LoRA and quantisation sections) and,
for the LoRA table's values, from the table in its fine-tuning notebook. They are inconsistent in places
(every row has WUPS@0.9 above WUPS@0.0, which the WUPS definition rules out, and Average Mark differs
between Table 1 and Table 2); they are shown as reported, for comparison, never used in a computation
other than the relative change the report prints beside them.
"""

from __future__ import annotations

#: The paper's model rows, in its order: (row name, the vlmbench model plugin that plays it).
PAPER_ROWS: tuple[tuple[str, str], ...] = (
    ("CLIP", "clip"),
    ("ViLBERT", "vilbert"),
    ("BLIP", "blip"),
    ("OFA", "ofa"),
    ("BLIP-2", "blip2"),
    ("Qwen2.5-VL", "qwen2.5-vl"),
    ("SmolVLM", "smolvlm"),
)
#: The blind baseline vlmbench adds after the paper's rows.
PRIOR = ("prior", "prior")

#: Table 1's columns after Model and Parameters: (heading, vlmbench metric column).
COLUMNS: tuple[tuple[str, str], ...] = (
    ("Precision", "bertscore_precision"),
    ("Recall", "bertscore_recall"),
    ("F1 (BERTScore)", "bertscore_f1"),
    ("BARTScore", "bartscore_f"),
    ("SBERT", "sbert"),
    ("METEOR", "meteor"),
    ("Exact Match", "exact_match"),
    ("Average_Mark", "average_mark"),
    ("WUPS (0.0)", "wups_0.0"),
    ("WUPS (0.9)", "wups_0.9"),
    ("Weighted WUPS", "wups_weighted"),
)

#: Table 1 as reported: parameters, then the values of :data:`COLUMNS` in order.
TABLE1: dict[str, tuple[str, tuple[float, ...]]] = {
    "CLIP": ("150M", (0.48012, 0.52044, 0.49973, 0.39451, 0.52133, 0.36422, 0.15762, 0.02153, 0.63214, 0.71234, 0.6892)),
    "ViLBERT": ("138M", (0.59832, 0.62743, 0.61256, 0.54829, 0.6311, 0.51238, 0.10982, 0.01732, 0.74229, 0.81238, 0.7871)),
    "BLIP": ("385M", (0.68042, 0.65671, 0.66837, 0.62488, 0.67544, 0.59845, 0.19428, 0.04371, 0.81425, 0.87411, 0.8519)),
    "OFA": ("180M", (0.61845, 0.64178, 0.62987, 0.58711, 0.64309, 0.56789, 0.13984, 0.09872, 0.76942, 0.8291, 0.80345)),
    "BLIP-2": ("3.9B", (0.6723, 0.66325, 0.66775, 0.62957, 0.67894, 0.61432, 0.20329, 0.10985, 0.81602, 0.87699, 0.85611)),
    "Qwen2.5-VL": ("3B", (0.67654, 0.66183, 0.66913, 0.63412, 0.68122, 0.6721, 0.21172, 0.10541, 0.81988, 0.87934, 0.86193)),
    "SmolVLM": ("500M", (0.58911, 0.61042, 0.59957, 0.54281, 0.61278, 0.48971, 0.19822, 0.05109, 0.73218, 0.80055, 0.77801)),
}  # fmt: skip

#: Table 2 (Average Mark per model) as reported; its values differ from Table 1's Average_Mark column.
TABLE2_AVERAGE_MARK: dict[str, float] = {
    "CLIP": 0.01153, "ViLBERT": 0.03732, "BLIP": 0.09371, "OFA": 0.07872, "BLIP-2": 0.0995,
    "Qwen2.5-VL": 0.10941, "SmolVLM": 0.09109,
}  # fmt: skip

#: The LoRA table as the study's notebook lists it, by configuration name, values of :data:`COLUMNS`
#: in order (it reports no base row; the text reports +7.8% relative Average Mark for the best).
LORA: dict[str, tuple[float, ...]] = {
    "r16-query_value_out": (0.6721, 0.6587, 0.6664, 0.6313, 0.6804, 0.6678, 0.20985, 0.10792, 0.81812, 0.87831, 0.86013),
    "r8-query_value_dense": (0.6553, 0.6412, 0.6482, 0.6156, 0.6659, 0.6524, 0.20138, 0.10173, 0.80824, 0.86971, 0.84856),
    "r8-query_key_value": (0.6481, 0.6329, 0.6404, 0.6095, 0.6582, 0.6417, 0.19792, 0.09761, 0.80218, 0.86278, 0.84133),
    "r16-query_value_dense": (0.6375, 0.6203, 0.6288, 0.5987, 0.6476, 0.6329, 0.19034, 0.09124, 0.79212, 0.85326, 0.83014),
    "r32-query_value": (0.6249, 0.6071, 0.6158, 0.5862, 0.6368, 0.6192, 0.18376, 0.08492, 0.78103, 0.84167, 0.81673),
}  # fmt: skip
LORA_BEST_RELATIVE_AVERAGE_MARK = 0.078

#: The quantisation section: about 60% less memory, BERTScore F1 down by 0.0041.
QUANTIZATION_MEMORY_SAVED = 0.60
QUANTIZATION_BERTSCORE_CHANGE = -0.0041
