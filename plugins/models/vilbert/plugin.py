"""``vilbert``: the VQA head of the 12-in-1 multi-task ViLBERT as a vlmbench model.

``generate`` answers with the argmax of ``vil_prediction`` over the whole answer list (closed
vocabulary); ``rank`` returns the logit of each of the task's candidates, with candidates the head
cannot produce put below every logit (see ``OUT_OF_VOCABULARY_FLOOR``).

Files come from one folder (``--model-args pretrained=PATH``), named as in the original release:
``multi_task_model.bin`` (or a ``.safetensors`` conversion), the config ``bert_base_6layer_6conect.json``
(optional: the base config is the default), ``vocab.txt`` of ``bert-base-uncased`` and the VQA answer list
``trainval_label2ans.pkl``. Region features come from the Visual Genome detector the model was trained
with (``features=detector``, the default: vlmbench's port, ``detector=DIR`` with ``detectron_model.pth``,
features cached per image content), from ``ResNetRegionExtractor`` (``features=grid``, an approximation:
an ImageNet ResNet pooled over grid cells) or from precomputed files (``features=precomputed``). Results
record which through the feature label, ``feature_source`` and a note.
"""

from __future__ import annotations

import math
import os
import pickle
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

# collate() runs in DataLoader workers forked from this process: importing the libraries it needs here
# lets every worker inherit them instead of importing them again (seconds per worker).
import torchvision.transforms.functional  # noqa: F401  # isort: skip
from transformers import BertTokenizerFast  # noqa: F401  # isort: skip

from vlmbench.api import (
    Arg,
    ArgError,
    AssetMissingError,
    Batch,
    GenerationSpec,
    Model,
    Request,
    SampleError,
    VlmbenchError,
    resolve_dtype,
    torch_dtype,
    vqa_normalize,
)
from vlmbench.api import (
    file_sha256 as sha256_of,
)

from . import feature_sources
from .config import NUM_TASK_EMBEDDINGS, ConfigError, VilbertConfig
from .detector.source import DetectorSource
from .feature_sources import grid_shape
from .features import FAITHFUL_LABEL, RegionFeatures
from .files import Files, find_files
from .grid_features import _C5_2048_ARCHS, PreparedImage, prepare_image
from .inference import VQA_TASK_ID, AnswerVocabulary, answer_logits, candidate_scores, predict_answers
from .loading import CheckpointError, load_vilbert, stored_config
from .tokenization import VQA_MAX_LENGTH, QuestionBatch

# Score of a rank candidate outside the answer list: at most this, and always below every logit of
# the row, so such candidates lose to any candidate the head knows. Finite, so results stay valid JSON.
OUT_OF_VOCABULARY_FLOOR = -1e9
# Grid features of this many recent images are kept (about 0.8 MB each at 101 x 2048 float32).
REGION_CACHE_IMAGES = 256


@dataclass
class _Inputs:
    """What ``collate`` prepares in a DataLoader worker."""

    questions: QuestionBatch
    images: list[PreparedImage] | None  # features=grid: resized, normalised pixels and boxes
    regions: list[RegionFeatures] | None  # features=precomputed
    detections: list[Any] | None = None  # features=detector: cached regions or preprocessed images


def file_sha256(path: Path | None) -> str | None:
    """sha256 of a file (remembered, so a 1 GB checkpoint is hashed once), or None without a file."""
    return None if path is None else sha256_of(path)


class VilbertModel(Model):
    """ViLBERT 12-in-1: argmax of the VQA head (generate) or the logits of the candidates (rank)."""

    args = {
        "pretrained": Arg(
            str, None,
            "folder with multi_task_model.bin (or .safetensors), the config JSON, vocab.txt and the answer "
            "list; or the weights file itself (the other files are then looked up next to it)",
            affects_output=False,  # the files' content hashes are part of identity()
        ),
        "answers": Arg(
            str, None,
            "answer list in the head's row order: JSON (list or answer->row map), a text file, or a pickle "
            "read without running code; default: trainval_label2ans.pkl/.json in the folder",
            affects_output=False,
        ),
        "vocab": Arg(
            str, None, "bert-base-uncased vocab.txt (or tokenizer folder); default: vocab.txt in the folder",
            affects_output=False,
        ),
        "config": Arg(
            str, None,
            "ViLBERT config JSON; default: bert_base_6layer_6conect.json in the folder, else the config stored "
            "in a .safetensors file, else the base config",
            affects_output=False,
        ),
        "features": Arg(
            str, "detector",
            "detector: the Visual Genome region detector the model was trained with (detector=DIR); "
            "grid: ResNet C5 features RoIAlign-pooled over grid cells (an approximation); "
            "precomputed: region features read from features_path",
            choices=("detector", "grid", "precomputed"),
        ),
        "detector": Arg(
            str, None, "features=detector: folder with detectron_model.pth and detectron_config.yaml, or the .pth",
            affects_output=False,  # the files' content hashes are part of identity()
        ),
        "detector_config": Arg(
            str, None, "features=detector: the detector's yacs yaml; default: detectron_config.yaml beside it, "
            "else the released X-152 config", affects_output=False,
        ),
        "feature_cache": Arg(
            str, None, "features=detector: folder of the region-feature cache; default: "
            "vilbert_region_features in vlmbench's cache folder", affects_output=False,
        ),
        "backbone_weights": Arg(
            str, None, "features=grid: local torchvision ResNet state dict (.pth read weights-only, or .safetensors)",
            affects_output=False,
        ),
        "backbone": Arg(str, "resnet152", "features=grid: torchvision architecture of backbone_weights",
                        choices=_C5_2048_ARCHS),
        "features_path": Arg(
            str, None,
            "features=precomputed: an LMDB in the original layout, or a folder of <image_id>.npz/.npy files",
            affects_output=False,
        ),
        "features_faithful": Arg(
            bool, False,
            "features=precomputed: declare that the features come from the original Visual Genome "
            "ResNeXt-152 detector (results are then labelled faithful)",
        ),
        "num_regions": Arg(
            int, 100,
            "image regions besides the mean feature: grid cells (columns x rows closest to square) or the cap "
            "on precomputed regions (the original uses at most 100)", min=1,
        ),
        # 800 / 1333: the scale at which the original feature extraction ran its detector
        "min_size": Arg(int, 800, "shorter image side after resizing, for the detector or the grid backbone "
                        "(the original extraction: 800)", min=32),
        "max_size": Arg(int, 1333, "cap on the longer image side after resizing (the original: 1333)", min=32),
        "task_id": Arg(
            int,
            VQA_TASK_ID,
            "task token of the 12-in-1 model (VQA = 1); the VQA head is read",
            min=0,
            max=NUM_TASK_EMBEDDINGS - 1,
        ),
        "max_length": Arg(
            int, VQA_MAX_LENGTH, "question length in WordPiece tokens with [CLS] and [SEP]", min=3
        ),
    }  # fmt: skip
    # ViLBERT was trained on bare questions: a task's generic template must not add text around them.
    default_prompt = "{question}"
    version = "1"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        v = self.arg_values
        problems = []
        if v["features"] == "precomputed" and not v["features_path"]:
            problems.append(
                "features=precomputed needs features_path=PATH (an LMDB or a folder of .npz/.npy)"
            )
        if v["features"] != "precomputed" and v["features_path"]:
            problems.append("features_path is only read with features=precomputed")
        if v["features"] != "grid" and v["backbone_weights"]:
            problems.append("backbone_weights is only read with features=grid")
        for name in ("detector", "detector_config", "feature_cache"):
            if v["features"] != "detector" and v[name]:
                problems.append(f"{name} is only read with features=detector")
        if v["features"] != "precomputed" and v["features_faithful"]:
            problems.append("features_faithful applies to precomputed features")
        if v["max_size"] < v["min_size"]:
            problems.append("max_size must be at least min_size")
        resolve_dtype(self.dtype, self.device, auto="float32")  # an unknown name fails here
        if problems:
            raise ArgError(f"model {self.name!r}: " + "; ".join(problems))
        if v["pretrained"]:
            # A folder was named: it must hold everything (or the other arguments name the rest). Say
            # now, before any model work, which files are missing and where each comes from.
            missing = find_files(v).missing
            if missing:
                raise ArgError(
                    f"model {self.name!r}: {len(missing)} file(s) missing for pretrained={v['pretrained']}: "
                    + "; ".join(missing)
                )
        self._net: Any = None
        self._extractor: Any = None
        self._vocab: AnswerVocabulary | None = None
        self._tokenizer: Any = None
        self._reader: Any = None
        self._reader_pid: int | None = None
        self._resolved: Files | None = None
        self._source: DetectorSource | None = None
        self._sources_seen: set[str] = set()
        self._region_cache: OrderedDict[str, RegionFeatures] = OrderedDict()

    def __getstate__(self) -> dict[str, Any]:
        # Workers started with "spawn" get a pickled copy: they only tokenise and preprocess, so the
        # networks and open LMDB handles stay behind.
        state = dict(self.__dict__)
        state.update(_net=None, _extractor=None, _tokenizer=None, _reader=None, _reader_pid=None)
        state["_region_cache"] = OrderedDict()
        return state

    # -- files ----------------------------------------------------------------------------------------

    def _files(self) -> Files:
        if self._resolved is None:
            self._resolved = find_files(self.arg_values)
        return self._resolved

    def _require_files(self) -> Files:
        files = self._files()
        if files.missing:
            raise AssetMissingError(
                "a file ViLBERT needs",
                "missing " + "; missing ".join(files.missing)
                + ". Example: --model-args pretrained=DIR,detector=DETECTOR_DIR",
            )  # fmt: skip
        return files

    # -- lifecycle --------------------------------------------------------------------------------------

    def _torch_dtype(self) -> torch.dtype:
        # auto: float32, the precision the checkpoints were trained and checked in
        return torch_dtype(resolve_dtype(self.dtype, self.device, auto="float32"))

    def _config(self, files: Files) -> VilbertConfig | None:
        """The config file's, else None (load_vilbert then uses safetensors metadata or the base config)."""
        if files.config is None:
            return None
        try:
            return VilbertConfig.from_json_file(files.config)
        except (ConfigError, ValueError) as exc:
            raise VlmbenchError(f"ViLBERT config {files.config}: {exc}") from exc

    def load(self) -> None:
        if self._net is not None:
            return
        files = self._require_files()
        vocab = self._answers()
        try:
            net = load_vilbert(
                files.weights, config=self._config(files), variant="multitask",
                device=self.device, dtype=self._torch_dtype(),
            )  # fmt: skip
        except CheckpointError as exc:
            raise VlmbenchError(f"ViLBERT checkpoint {files.weights}: {exc}") from exc
        heads = net.vil_prediction.logit_fc[-1].out_features
        if heads != len(vocab):
            raise VlmbenchError(
                f"the answer list {files.answers} has {len(vocab)} answers but the VQA head of "
                f"{files.weights.name} scores {heads}; the list must be the head's (trainval_label2ans.pkl)"
            )
        if self.arg_values["features"] == "grid":
            from .grid_features import ResNetRegionExtractor

            columns, rows = grid_shape(self.arg_values["num_regions"])
            try:
                extractor = ResNetRegionExtractor(
                    files.backbone, arch=self.arg_values["backbone"], grid=(columns, rows),
                    min_size=self.arg_values["min_size"], max_size=self.arg_values["max_size"],
                    device=self.device,
                )  # fmt: skip
            except (ValueError, RuntimeError, pickle.UnpicklingError) as exc:
                raise VlmbenchError(f"backbone_weights {files.backbone}: {exc}") from exc
            self._extractor = extractor
        if self.arg_values["features"] == "detector":
            try:
                _ = self._detector().config  # a bad config stops here; the weights load on a cache miss
            except CheckpointError as exc:
                raise VlmbenchError(str(exc)) from exc
        self._net = net

    def _detector(self) -> DetectorSource | None:
        """The detector feature source (features=detector once its files are found), else None."""
        detector = self._files().detector
        if self._source is None and detector is not None and detector.weights is not None:
            v = self.arg_values
            self._source = DetectorSource(
                detector, v["feature_cache"], self.device, v["num_regions"] + 1, v["min_size"], v["max_size"]
            )
        return self._source

    def _answers(self) -> AnswerVocabulary:
        if self._vocab is None:
            path = self._files().answers
            if path is None:
                self._require_files()  # raises, naming every missing file
            try:
                # Matched with the VQA normalisation the runner uses for the out-of-vocabulary share.
                self._vocab = AnswerVocabulary.from_file(path, normalize=vqa_normalize)
            except (ValueError, pickle.UnpicklingError, UnicodeDecodeError, EOFError) as exc:
                raise VlmbenchError(f"cannot read the answer list {path}: {exc}") from exc
        return self._vocab

    # -- worker side ----------------------------------------------------------------------------------

    def _question_tokenizer(self):
        if self._tokenizer is None:
            from .tokenization import QuestionTokenizer

            self._tokenizer = QuestionTokenizer(self._files().vocab, max_length=self.arg_values["max_length"])
        return self._tokenizer

    def _feature_reader(self):
        # An LMDB handle must not cross a fork: each process opens its own.
        if self._reader is None or self._reader_pid != os.getpid():
            from .features import LmdbFeatureReader, NumpyFeatureReader

            path = self._files().features
            max_regions = self.arg_values["num_regions"] + 1
            label = FAITHFUL_LABEL if self.arg_values["features_faithful"] else None
            is_lmdb = path.is_file() or path.suffix == ".lmdb" or (path / "data.mdb").is_file()
            reader_cls = LmdbFeatureReader if is_lmdb else NumpyFeatureReader
            self._reader = reader_cls(path, label=label, max_regions=max_regions)
            self._reader_pid = os.getpid()
        return self._reader

    def _regions_for(self, request: Request) -> RegionFeatures:
        reader = self._feature_reader()
        for key in (request.image_id, Path(request.image_ref).stem):
            if key in reader:
                return reader[key]
        raise SampleError(
            "missing_features",
            f"no precomputed features for image {request.image_id!r} ({request.image_ref}) in "
            f"{self._files().features}",
        )

    def collate(self, requests: list[Request]) -> _Inputs | None:
        if self._files().missing:
            return None  # load() reports what is missing before these inputs would be used
        try:
            return self._prepare(requests)
        except VlmbenchError:  # reported cleanly by the main process, which prepares the batch again
            return None

    def _prepare(self, requests: list[Request]) -> _Inputs:
        questions = self._question_tokenizer()([r.prompt for r in requests])
        if self.arg_values["features"] == "grid":
            grid = grid_shape(self.arg_values["num_regions"])
            size = (self.arg_values["min_size"], self.arg_values["max_size"])
            images = [prepare_image(r.image, *size, grid=grid) for r in requests]
            return _Inputs(questions, images, None)
        if self.arg_values["features"] == "detector":
            source = self._detector()
            # cached regions are read here; other images are preprocessed for the detector
            found = [source.cached(r.image_sha256) or source.prepare(r.image) for r in requests]
            return _Inputs(questions, None, None, found)
        return _Inputs(questions, None, [self._regions_for(r) for r in requests])

    # -- inference ------------------------------------------------------------------------------------

    def _logits(self, batch: Batch) -> torch.Tensor:
        self.load()
        inputs = batch.inputs if batch.inputs is not None else self._prepare(batch.requests)
        if inputs.images is not None:
            regions = self._grid_regions(batch.requests, inputs.images)
        elif inputs.detections is not None:
            try:
                regions = [self._detector().regions(r.image_sha256, item)
                           for r, item in zip(batch.requests, inputs.detections, strict=True)]  # fmt: skip
            except CheckpointError as exc:
                raise VlmbenchError(str(exc)) from exc
        else:
            regions = inputs.regions
        expected = self._net.config.v_feature_size
        for item in regions:
            self._sources_seen.add(item.source)
            if item.features.shape[1] != expected:
                raise VlmbenchError(
                    f"region features are {item.features.shape[1]}-d but the checkpoint expects {expected}-d"
                )
        return answer_logits(self._net, inputs.questions, regions, task_id=self.arg_values["task_id"])

    def _grid_regions(self, requests: list[Request], images: list[PreparedImage]) -> list[RegionFeatures]:
        """Backbone features per image, computed once per image content: a task asks several questions
        about each image, and the backbone costs far more than ViLBERT itself."""
        out = []
        for request, image in zip(requests, images, strict=True):
            key = request.image_sha256
            regions = self._region_cache.get(key) if key else None
            if regions is None:
                regions = self._extractor.extract_prepared([image])[0]
                if key:
                    self._region_cache[key] = regions
                    if len(self._region_cache) > REGION_CACHE_IMAGES:
                        self._region_cache.popitem(last=False)
            else:
                self._region_cache.move_to_end(key)
            out.append(regions)
        return out

    def generate(self, batch: Batch, generation: GenerationSpec) -> list[str]:
        return predict_answers(self._logits(batch), self._answers())

    def rank(self, batch: Batch) -> list[list[float]]:
        logits = self._logits(batch)
        scores = candidate_scores(logits, self._answers(), [r.candidates for r in batch.requests])
        out = []
        for row, values in zip(logits, scores, strict=True):
            floor = min(OUT_OF_VOCABULARY_FLOOR, float(row.min()) - 1.0)
            out.append([s if s != -math.inf else floor for s in values])
        return out

    def answer_vocabulary(self) -> Sequence[str] | None:
        if self._files().answers is None:
            return None
        return self._answers().answers

    # -- identity -------------------------------------------------------------------------------------

    def feature_label(self) -> str:
        """Provenance of the region features, as results record it."""
        return feature_sources.feature_label(self.arg_values, self._detector())

    def notes(self) -> list[str]:
        return [feature_sources.note(self.arg_values, self._detector())]

    def identity(self) -> dict[str, Any]:
        files = self._files()
        return {
            **super().identity(),
            "checkpoint_sha256": file_sha256(files.weights),
            "config_sha256": file_sha256(files.config),
            "vocab_sha256": file_sha256(files.vocab) if files.vocab and files.vocab.is_file() else None,
            "answers_sha256": file_sha256(files.answers),
            "features": feature_sources.identity(self.arg_values, files, self._detector()),
        }

    def _config_source(self, files: Files) -> str | None:
        if files.weights is None:
            return None
        if files.config is not None:
            return str(files.config)
        try:
            stored = stored_config(files.weights)
        except Exception:  # provenance only: an unreadable file is reported by load(), not here
            return None
        return "stored in the safetensors metadata" if stored else "base config (bert_base_6layer_6conect)"

    def _parameters(self, files: Files) -> int | None:
        if self._net is not None:
            return sum(p.numel() for p in self._net.parameters())
        if files.weights is None:
            return None
        # Not loaded (every answer was cached, or the run was skipped): count a weightless copy.
        from .modeling import build_model

        try:
            config = self._config(files) or stored_config(files.weights) or VilbertConfig.base()
            with torch.device("meta"):
                model = build_model(config, "multitask")
        except Exception:  # provenance only, as above
            return None
        return sum(p.numel() for p in model.parameters())

    def describe(self) -> dict[str, Any]:
        files = self._files()
        described = {
            **super().describe(),
            "parameters": self._parameters(files),
            "checkpoint": str(files.weights) if files.weights else None,
            "config": self._config_source(files),
            "answers": str(files.answers) if files.answers else None,
            "head": "vil_prediction (VQA answer classifier)",
            "task_id": self.arg_values["task_id"],
            "feature_source": feature_sources.source_name(self.arg_values),
            "feature_extractor": self.feature_label(),
            "faithful_features": feature_sources.faithful(self.arg_values, self._detector()),
        }
        other = sorted(self._sources_seen - {self.feature_label()})
        if other:
            described["feature_sources_seen"] = other  # labels stored in precomputed files
        return described
