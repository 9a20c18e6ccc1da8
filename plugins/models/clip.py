"""``clip``: zero-shot answer ranking with open_clip (default ``ViT-B-32``, OpenAI weights).

CLIP cannot write an answer; it scores how well a text matches an image. Each candidate answer is
written into prompt templates (``{answer}``, optionally ``{question}``), the texts are embedded, and a
candidate's score is the image-text similarity. Several templates are combined by prompt ensembling:
the normalised text embeddings of one candidate are averaged (``ensemble=embedding``, as in the CLIP
paper) or its per-template scores are (``ensemble=score``).

``{question}`` in a template is the request's rendered prompt: the question itself unless the task
gives the ``clip`` family a prompt template of its own.

Candidate embeddings are computed once per candidate set (and per question when a template uses
``{question}``) and kept in memory; images are preprocessed in DataLoader workers and encoded in
batches.
"""

from __future__ import annotations

import hashlib
import json
import pickle
from collections import OrderedDict
from dataclasses import asdict
from pathlib import Path
from typing import Any

from vlmbench.api import (
    Arg,
    ArgError,
    AssetMissingError,
    Batch,
    Model,
    ModelEntry,
    NotRegularFile,
    Request,
    VlmbenchError,
    cached_commit,
    count_parameters,
    download_blocker,
    hub_file,
    read_regular_text,
    resolve_dtype,
    tree_sha256,
)

DEFAULT_TEMPLATES = "Question: {question} Answer: {answer}.|a photo of {answer}."
HF_HUB = "hf-hub:"
HOW_TO_PROVIDE = (
    "Download it where there is network access and copy the Hugging Face cache (HF_HOME), or pass a "
    "weights file or an open_clip folder with --model-args pretrained=PATH"
)


class ClipRanker(Model):
    args = {
        "arch": Arg(
            str, "ViT-B-32", "open_clip architecture (ignored when pretrained is a folder or hf-hub: id)"
        ),
        "pretrained": Arg(
            str,
            "openai",
            "pretrained tag of the architecture (open_clip.list_pretrained()), a weights file, a folder with "
            "open_clip_config.json and weights, or hf-hub:owner/name",
        ),
        "templates": Arg(
            str, DEFAULT_TEMPLATES, "prompt templates with {answer} and optionally {question}, separated by |"
        ),
        "templates_file": Arg(str, None, "file with one template per line (replaces templates)"),
        "ensemble": Arg(
            str,
            "embedding",
            "combine templates by averaging text embeddings ('embedding') or similarity scores ('score')",
            choices=("embedding", "score"),
        ),
        "text_batch_size": Arg(int, 256, "texts encoded per forward pass", affects_output=False),
        "local_files_only": Arg(bool, False, "never download weights", affects_output=False),
    }
    default_prompt = "{question}"
    version = "1"

    def __init__(self, entry: ModelEntry, args: dict[str, Any], **options: Any) -> None:
        # device, dtype and seed are Model's, with its defaults; "auto" and aliases become a dtype name.
        super().__init__(entry, args, **options)
        self.dtype = resolve_dtype(self.dtype, self.device)
        self.templates = self._read_templates()
        pretrained = args["pretrained"]
        path = Path(pretrained).expanduser()
        if pretrained.startswith(HF_HUB):
            self.source = "hub"
        elif path.is_dir():
            self.source = "dir"
        elif path.is_file():
            self.source = "file"
        else:
            import open_clip

            if open_clip.get_model_config(args["arch"]) is None:
                raise ArgError(f"clip: unknown open_clip architecture {args['arch']!r}")
            if not open_clip.get_pretrained_cfg(args["arch"], pretrained):
                tags = ", ".join(open_clip.list_pretrained_tags_by_model(args["arch"]))
                raise ArgError(
                    f"clip: pretrained {pretrained!r} is neither a file, a folder nor a tag of {args['arch']} "
                    f"(tags: {tags})"
                )
            self.source = "tag"
        self.path = path.resolve() if self.source in ("dir", "file") else None
        self.model: Any = None
        self._transform: Any = None
        self._text_cache: OrderedDict[str, Any] = OrderedDict()
        self._identity: dict[str, Any] | None = None

    def _read_templates(self) -> tuple[str, ...]:
        if self.arg_values["templates_file"]:
            path = Path(self.arg_values["templates_file"]).expanduser()
            try:
                lines = read_regular_text(path).splitlines()
            except (OSError, NotRegularFile) as exc:
                raise ArgError(f"clip: cannot read templates_file {path}: {exc}") from None
            templates = [t.strip() for t in lines if t.strip()]
        else:
            templates = [t.strip() for t in self.arg_values["templates"].split("|") if t.strip()]
        if not templates:
            raise ArgError("clip: no prompt templates")
        for t in templates:
            if "{answer}" not in t:
                raise ArgError(f"clip: template {t!r} has no {{answer}} field")
            try:
                t.format(answer="a", question="q")
            except (KeyError, IndexError, ValueError) as exc:
                raise ArgError(
                    f"clip: template {t!r}: only {{answer}} and {{question}} are allowed ({exc})"
                ) from None
        return tuple(templates)

    # -- identity ---------------------------------------------------------------------------------------
    def identity(self) -> dict[str, Any]:
        if self._identity is None:
            ident = super().identity()
            ident["args"].pop("pretrained", None)
            ident["args"].pop("templates", None)
            ident["args"].pop("templates_file", None)
            ident["templates"] = list(self.templates)
            pretrained = self.arg_values["pretrained"]
            if self.source in ("dir", "file"):
                ident["checkpoint"] = self.path.name
                ident["checkpoint_sha256"] = tree_sha256(self.path)
            elif self.source == "hub":
                ident["checkpoint"] = pretrained
                ident["commit"] = cached_commit(pretrained[len(HF_HUB) :], None)
            else:
                ident["checkpoint"] = f"{self.arg_values['arch']}/{pretrained}"
            if self.source in ("dir", "hub"):
                ident["args"].pop("arch", None)  # the folder's or repository's config decides
            self._identity = ident
        return self._identity

    def describe(self) -> dict[str, Any]:
        ident = self.identity()
        return {
            **super().describe(),
            "checkpoint": str(self.path) if self.path else ident["checkpoint"],
            "checkpoint_sha256": ident.get("checkpoint_sha256"),
            "commit": ident.get("commit"),
            "templates": list(self.templates),
            "parameters": count_parameters(self.model) if self.model is not None else None,
        }

    # -- configuration without weights ------------------------------------------------------------------
    def _config_file(self, download: bool = False) -> dict[str, Any]:
        if self.source == "dir":
            path = self.path / "open_clip_config.json"
        else:
            repo = self.arg_values["pretrained"][len(HF_HUB) :]
            path = Path(self._hub_file(repo, ["open_clip_config.json"], "open_clip_config.json", download))
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise AssetMissingError(f"clip configuration {path}", f"cannot read it ({exc})") from None

    def _tag_cfg(self) -> dict[str, Any]:
        import open_clip

        return open_clip.get_pretrained_cfg(self.arg_values["arch"], self.arg_values["pretrained"]) or {}

    def preprocess_cfg(self, download: bool = False) -> dict[str, Any]:
        """The image preprocessing open_clip would use for these weights, computed from configuration
        files only (DataLoader workers never load the weights)."""
        import open_clip
        from open_clip.transform import PreprocessCfg, merge_preprocess_dict

        if self.source in ("dir", "hub"):
            config = self._config_file(download)
            model_cfg = config.get("model_cfg", config)
            overlay = config.get("preprocess_cfg", {})
        else:
            model_cfg = open_clip.get_model_config(self.arg_values["arch"])
            overlay = self._tag_cfg() if self.source == "tag" else {}
        cfg = merge_preprocess_dict(asdict(PreprocessCfg()), overlay)
        cfg["size"] = model_cfg["vision_cfg"]["image_size"]
        return cfg

    @property
    def transform(self) -> Any:
        if self._transform is None:
            from open_clip.transform import PreprocessCfg, image_transform_v2

            self._transform = image_transform_v2(PreprocessCfg(**self.preprocess_cfg()), is_train=False)
        return self._transform

    # -- loading -------------------------------------------------------------------------------------------
    def _may_download(self) -> bool:
        return not (self.arg_values["local_files_only"] or download_blocker())

    def _missing(self, what: str, reason: str) -> AssetMissingError:
        return AssetMissingError(what, f"{reason}. {HOW_TO_PROVIDE}")

    def _hub_file(self, repo: str, names: list[str], what: str, download: bool = True) -> str:
        """The first of ``names`` in the repository: the local cache first, then (when allowed) a download."""
        return str(
            hub_file(
                repo,
                names,
                asset=f"{what} of {repo!r}",
                how=HOW_TO_PROVIDE,
                local_files_only=self.arg_values["local_files_only"],
                download=download,
            )
        )

    def _weights(self) -> tuple[str, str | None]:
        """(open_clip model name, weights file): a folder (also a downloaded Hub repository) is read
        by open_clip as ``local-dir:``; an architecture gets an explicit weights file."""
        if self.source == "dir":
            return f"local-dir:{self.path}", None
        if self.source == "file":
            return self.arg_values["arch"], str(self.path)
        if self.source == "hub":
            repo = self.arg_values["pretrained"][len(HF_HUB) :]
            config = Path(self._hub_file(repo, ["open_clip_config.json"], "open_clip_config.json"))
            self._hub_file(
                repo, ["open_clip_model.safetensors", "open_clip_pytorch_model.bin"], "CLIP weights"
            )
            return f"local-dir:{config.parent}", None  # the cached snapshot folder
        return self.arg_values["arch"], self._tag_weights()

    def _tag_weights(self) -> str:
        cfg = self._tag_cfg()
        if cfg.get("hf_hub"):
            repo_id, filename = _split_hub(cfg["hf_hub"])
            names = [filename] if filename else ["open_clip_model.safetensors", "open_clip_pytorch_model.bin"]
            if filename and filename.endswith((".bin", ".pth", ".pt")):
                names.insert(0, filename.rsplit(".", 1)[0] + ".safetensors")
            return self._hub_file(repo_id, names, "CLIP weights")
        url = cfg.get("url")
        if not url:
            raise VlmbenchError(f"clip: tag {self.arg_values['pretrained']!r} has no download source")
        target = Path("~/.cache/clip").expanduser() / url.rsplit("/", 1)[-1]
        if target.is_file():
            return str(target)
        if not self._may_download():
            raise self._missing(f"CLIP weights {target.name}", "they are not in ~/.cache/clip")
        from open_clip.pretrained import download_pretrained_from_url

        try:
            return download_pretrained_from_url(url)
        except Exception as exc:
            raise self._missing(
                f"CLIP weights {url}", f"downloading them failed ({type(exc).__name__})"
            ) from None

    def load(self) -> None:
        if self.model is not None:
            return
        import open_clip
        import torch

        kwargs: dict[str, Any] = {"force_preprocess_cfg": self.preprocess_cfg(download=True)}
        if self.source == "tag":
            kwargs["force_quick_gelu"] = bool(self._tag_cfg().get("quick_gelu", False))
        name, weights = self._weights()
        try:
            model = open_clip.create_model(name, pretrained=weights, device="cpu", **kwargs)
        except (FileNotFoundError, ValueError) as exc:
            raise AssetMissingError(f"CLIP weights {self.arg_values['pretrained']!r}", str(exc)) from None
        except (RuntimeError, pickle.UnpicklingError, OSError) as exc:
            # Not weights at all (a config file, a truncated download) or weights of another architecture.
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise VlmbenchError(
                f"cannot load CLIP weights {weights or name!r} as {self.arg_values['arch']!r}: {first}"
            ) from None
        model = model.to(device=self.device, dtype=getattr(torch, self.dtype)).eval()
        self.tokenizer = open_clip.get_tokenizer(name)
        self.model = model

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["model"] = None
        state["_text_cache"] = OrderedDict()
        return state

    # -- inference --------------------------------------------------------------------------------------------
    def collate(self, requests: list[Request]) -> Any:
        import torch

        try:
            transform = self.transform
        except AssetMissingError:
            return None  # load() in the main process reports what is missing
        return torch.stack([transform(r.image) for r in requests])

    def _encode_texts(self, texts: list[str]) -> Any:
        import torch

        chunk = max(1, self.arg_values["text_batch_size"])
        parts = []
        for start in range(0, len(texts), chunk):
            tokens = self.tokenizer(texts[start : start + chunk]).to(self.device)
            parts.append(self.model.encode_text(tokens).float())
        return torch.nn.functional.normalize(torch.cat(parts), dim=-1)

    def text_embeddings(self, candidates: tuple[str, ...], question: str) -> Any:
        """(templates, candidates, dim) normalised text embeddings; cached per candidate set (and per
        question when a template uses it)."""
        uses_question = any("{question}" in t for t in self.templates)
        key = hashlib.sha256(
            json.dumps([candidates, self.templates, question if uses_question else None]).encode()
        ).hexdigest()
        if key in self._text_cache:
            self._text_cache.move_to_end(key)
            return self._text_cache[key]
        texts = [t.format(answer=c, question=question) for t in self.templates for c in candidates]
        emb = self._encode_texts(texts).view(len(self.templates), len(candidates), -1)
        self._text_cache[key] = emb
        if len(self._text_cache) > 512:
            self._text_cache.popitem(last=False)
        return emb

    def rank(self, batch: Batch) -> list[list[float]]:
        import torch

        pixels = batch.inputs if batch.inputs is not None else self.collate(batch.requests)
        with torch.inference_mode():
            images = self.model.encode_image(pixels.to(self.device, getattr(torch, self.dtype))).float()
            images = torch.nn.functional.normalize(images, dim=-1)
            scale = self.model.logit_scale.exp().float()
            out = []
            for image, request in zip(images, batch.requests, strict=True):
                emb = self.text_embeddings(request.candidates, request.prompt)
                if self.arg_values["ensemble"] == "embedding":
                    text = torch.nn.functional.normalize(emb.mean(dim=0), dim=-1)
                    scores = scale * (text @ image)
                else:
                    scores = scale * (emb @ image).mean(dim=0)
                out.append(scores.tolist())
        return out


def _split_hub(spec: str) -> tuple[str, str | None]:
    """``"org/name/file.bin"`` -> (``"org/name"``, ``"file.bin"``); ``"org/name/"`` -> (``"org/name"``, None)."""
    parts = spec.split("/")
    repo = "/".join(parts[:2])
    filename = "/".join(parts[2:]) or None
    return repo, filename
