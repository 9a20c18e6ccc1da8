"""The public surface for plugins: everything a model, metric or QA-generator plugin builds on.

Plugins — the built-in ones included — import from here and nowhere else in vlmbench, so the modules
behind these names can change without breaking them::

    from vlmbench.api import Arg, Batch, GenerationSpec, Model, hookimpl

What is here:

- hooks: :func:`hookimpl` (see :mod:`vlmbench.plugin.hookspecs` for the hooks themselves)
- models: :class:`Model`; for ``transformers`` models :class:`HFModel`, :class:`DecoderVLM`,
  :class:`ChatVLM` and the likelihood-ranking pieces, :func:`read_adapter` (a LoRA adapter folder,
  checked); what a model receives: :class:`Request`,
  :class:`Batch`, :class:`GenerationSpec`, :class:`Sample`
- metrics: :class:`SampleMetric`, :class:`CorpusMetric`, :class:`MetricContext`, :class:`ScoreTable`,
  and the answer normalisation they share (:func:`vqa_normalize`)
- QA generators: :class:`Generator`, :class:`GenerationResult`, :class:`Job`, :class:`QAItem`, and
  :class:`Listing`, what a generator may rely on in the record a dataset plugin passes it
- options: :class:`Arg` (typed, with bounds and choices), :func:`parse_kv`, :func:`parse_batch_size`,
  and :func:`split_scoped` for ``NAME:k=v,...`` values that address one of several plugins
- errors: :class:`VlmbenchError` and its kinds; raise :class:`AssetMissingError` for weights or data
  that are not there, :class:`SampleError` for one request a model cannot answer, :class:`ModelFailed`
  for a model that can answer nothing more (its server went away: the run keeps what was stored), :class:`Interrupted`
  for a command stopped by Ctrl-C or SIGTERM (:class:`StopRequested` catches them)
- files a user names: :func:`open_regular`, :func:`read_regular`, :func:`read_regular_text` and
  :func:`read_yaml_file` read regular files only (a FIFO or device is :class:`NotRegularFile`, never a hang)
- DataLoaders: :func:`data_loader` starts workers as every loader of vlmbench does (they die with the
  process, leave signals to it, time out instead of hanging); iterate it with :func:`loader_batches`
- devices and assets: :func:`resolve_device`, :func:`resolve_dtype`, :func:`torch_dtype`, the
  offline-first Hub lookups (:func:`hub_file`, :func:`hub_snapshot`, :func:`offline_first`), file
  hashes for fingerprints, vlmbench's cache folder (:func:`cache_dir`, for what a plugin computes once),
  WordNet and encoder lookups for metrics, and what a metric's score-cache
  identity names without loading anything (:func:`model_identity`, :func:`wordnet_identity`,
  :func:`library_versions`); :func:`library_bars_off` while an encoder loads
- for command plugins (``register_commands``): :func:`evaluate`, or its two halves :func:`plan_run`
  (every check before model work; raises :class:`UnsupportedTask` for a model that cannot answer the
  task) and :func:`run_plan`, with :class:`RunConfig`; tasks (:func:`resolve_task`,
  :class:`Task`, :func:`load_split`), answer filters, safe image reading and the artifact writers
  (atomic; :func:`write_json`, :func:`write_jsonl`, :func:`write_text`, :func:`load_results`, :func:`read_json_object`; a run's
  results file is named :data:`RESULTS_FILE`), run files (:func:`find_run_file`,
  :func:`load_run_file`), evaluation protocols (:func:`find_protocol`, :class:`ProtocolSpec`) and
  ``--metric-args`` values (:func:`parse_metric_args`), and tables and figures of runs: :func:`collect_runs`, :func:`leaderboard_row`, :func:`leaderboard_markdown` (with
  :data:`STUDY_COLUMNS`, the study's column order, and :func:`study_order`), the metric columns of
  rows (:func:`metric_columns`, :func:`difficulty_columns`), :func:`difficulty_markdown`,
  :func:`write_leaderboard` and :func:`render_figures`, comparison figures (:func:`variant_bars` of
  :class:`FigureBar`, :func:`memory_vs_score` of :class:`FigurePoint`); for reports, :func:`now` and
  :func:`command_line` as results.json records them, and vlmbench's :data:`VERSION`
"""

from vlmbench import __version__ as VERSION
from vlmbench.analysis.comparison_figures import Bar as FigureBar
from vlmbench.analysis.comparison_figures import Point as FigurePoint
from vlmbench.analysis.comparison_figures import memory_vs_score, variant_bars
from vlmbench.analysis.display import markdown_code, markdown_text
from vlmbench.analysis.leaderboard import (
    STUDY_COLUMNS,
    difficulty_columns,
    difficulty_markdown,
    metric_columns,
    study_order,
)
from vlmbench.analysis.leaderboard import collect as collect_runs
from vlmbench.analysis.leaderboard import row_from_results as leaderboard_row
from vlmbench.analysis.leaderboard import to_markdown as leaderboard_markdown
from vlmbench.analysis.leaderboard import write as write_leaderboard
from vlmbench.analysis.plot import render_tasks as render_figures
from vlmbench.artifacts.provenance import command_line, now
from vlmbench.artifacts.run_files import RESULTS as RESULTS_FILE
from vlmbench.artifacts.run_files import load_results, read_json_object, write_json, write_jsonl, write_text
from vlmbench.cache import cache_dir
from vlmbench.console import library_bars_off
from vlmbench.devices import resolve_device, resolve_dtype, torch_dtype
from vlmbench.errors import (
    EXIT_NOTHING_EVALUATED,
    ArgError,
    AssetMissingError,
    DataError,
    Interrupted,
    ModelFailed,
    PicklableError,
    SampleError,
    SpecError,
    UnsupportedTask,
    VlmbenchError,
    did_you_mean,
    unknown_message,
)
from vlmbench.evaluation.plan import RunConfig, RunPlan, plan_run
from vlmbench.evaluation.run_spec import (
    ModelChoice,
    find_protocol,
    find_run_file,
    load_run_file,
    parse_batch_size,
)
from vlmbench.evaluation.runner import RunResult, evaluate, run_plan
from vlmbench.evaluation.signals import StopRequested
from vlmbench.evaluation.workers import DEFAULT_WORKER_TIMEOUT, data_loader, loader_batches
from vlmbench.files import NotRegularFile, open_regular, read_regular, read_regular_text
from vlmbench.hashing import file_sha256, json_digest, remembered, tree_sha256
from vlmbench.hf import (
    HF_ARGS,
    LIKELIHOOD_ARGS,
    CandidateTokens,
    ChatVLM,
    DecoderVLM,
    HFModel,
    cache_kwarg,
    cache_of,
    count_parameters,
)
from vlmbench.hf.adapters import read_adapter
from vlmbench.hub import cached_commit, download_blocker, hub_file, hub_snapshot, is_hub_id, offline_first
from vlmbench.plugin.args import Arg, parse_kv, split_scoped
from vlmbench.plugin.generator import (
    GenerationResult,
    Generator,
    Job,
    Listing,
    QAItem,
    items_from_reply,
)
from vlmbench.plugin.hookspecs import hookimpl
from vlmbench.plugin.loading import Plugins, load_plugins, resolve_task
from vlmbench.plugin.metric import (
    CorpusMetric,
    Metric,
    MetricContext,
    SampleMetric,
    ScoreTable,
    library_versions,
)
from vlmbench.plugin.model import Model
from vlmbench.plugin.pacing import Pacer
from vlmbench.plugin.registry import GeneratorEntry, MetricEntry, ModelEntry
from vlmbench.plugin.request import Batch, Request
from vlmbench.plugin.secrets import SecretMask
from vlmbench.scoring.asset_identity import model_identity, wordnet_identity, wordnet_identity_of
from vlmbench.scoring.assets import find_wordnet, load_wordnet, resolve_model
from vlmbench.scoring.rescore import parse_metric_args
from vlmbench.tasks.dataset import ImageSource, Sample, load_split
from vlmbench.tasks.filters import apply_filters
from vlmbench.tasks.images import ImageProblem, confined_path, decode_image, read_image_file
from vlmbench.tasks.normalize import vqa_normalize
from vlmbench.tasks.protocol import ProtocolSpec
from vlmbench.tasks.spec import GenerationSpec, read_yaml_file
from vlmbench.tasks.task import Task

__all__ = [
    "DEFAULT_WORKER_TIMEOUT",
    "EXIT_NOTHING_EVALUATED",
    "HF_ARGS",
    "LIKELIHOOD_ARGS",
    "RESULTS_FILE",
    "STUDY_COLUMNS",
    "VERSION",
    "Arg",
    "ArgError",
    "AssetMissingError",
    "Batch",
    "CandidateTokens",
    "ChatVLM",
    "CorpusMetric",
    "DataError",
    "DecoderVLM",
    "FigureBar",
    "FigurePoint",
    "GenerationResult",
    "GenerationSpec",
    "Generator",
    "GeneratorEntry",
    "HFModel",
    "ImageProblem",
    "ImageSource",
    "Interrupted",
    "Job",
    "Listing",
    "Metric",
    "MetricContext",
    "MetricEntry",
    "Model",
    "ModelChoice",
    "ModelEntry",
    "ModelFailed",
    "NotRegularFile",
    "Pacer",
    "PicklableError",
    "Plugins",
    "ProtocolSpec",
    "QAItem",
    "Request",
    "RunConfig",
    "RunPlan",
    "RunResult",
    "Sample",
    "SampleError",
    "SampleMetric",
    "ScoreTable",
    "SecretMask",
    "SpecError",
    "StopRequested",
    "Task",
    "UnsupportedTask",
    "VlmbenchError",
    "apply_filters",
    "cache_dir",
    "cache_kwarg",
    "cache_of",
    "cached_commit",
    "collect_runs",
    "command_line",
    "confined_path",
    "count_parameters",
    "data_loader",
    "decode_image",
    "did_you_mean",
    "difficulty_columns",
    "difficulty_markdown",
    "download_blocker",
    "evaluate",
    "file_sha256",
    "find_protocol",
    "find_run_file",
    "find_wordnet",
    "hookimpl",
    "hub_file",
    "hub_snapshot",
    "is_hub_id",
    "items_from_reply",
    "json_digest",
    "leaderboard_markdown",
    "leaderboard_row",
    "library_bars_off",
    "library_versions",
    "load_plugins",
    "load_results",
    "load_run_file",
    "load_split",
    "load_wordnet",
    "loader_batches",
    "markdown_code",
    "markdown_text",
    "memory_vs_score",
    "metric_columns",
    "model_identity",
    "now",
    "offline_first",
    "open_regular",
    "parse_batch_size",
    "parse_kv",
    "parse_metric_args",
    "plan_run",
    "read_adapter",
    "read_image_file",
    "read_json_object",
    "read_regular",
    "read_regular_text",
    "read_yaml_file",
    "remembered",
    "render_figures",
    "resolve_device",
    "resolve_dtype",
    "resolve_model",
    "resolve_task",
    "run_plan",
    "split_scoped",
    "study_order",
    "torch_dtype",
    "tree_sha256",
    "unknown_message",
    "variant_bars",
    "vqa_normalize",
    "wordnet_identity",
    "wordnet_identity_of",
    "write_json",
    "write_jsonl",
    "write_leaderboard",
    "write_text",
]
