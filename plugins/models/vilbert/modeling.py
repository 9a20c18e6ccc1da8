"""ViLBERT (Lu et al. 2019) and its 12-in-1 multi-task heads (Lu et al. 2020) in plain PyTorch.

Module attribute names reproduce the parameter names of the original checkpoints exactly
(``bert.encoder.c_layer.0.biattention.query1.weight`` ...), so that the released ``.bin`` files load
strictly. The computation follows the original eval-mode forward pass, including its quirks:

- the task token is inserted after ``[CLS]`` *after* position embeddings were added, so it carries no
  position embedding, and the text mask grows by one column;
- attention masks are additive ``(1 - mask) * -10000``;
- the co-attention mask argument is accepted but, as in the original, has no effect;
- ``biOutput.q_dense1`` / ``q_dense2`` exist (checkpoints hold them) but are never used;
- the image prediction head's transform uses the *text* activation ``hidden_act``;
- ``vil_binary_prediction`` comes from the pair classifier only when the batch size is even; for an odd
  batch it is the pretraining head's ``bi_seq_relationship`` score, exactly as the original returns.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .config import NUM_GQA_ANSWERS, NUM_TASK_EMBEDDINGS, NUM_VQA_ANSWERS, VilbertConfig

LAYER_NORM_EPS = 1e-12
MASK_VALUE = -10000.0  # the original additive mask value; kept for bit-level agreement on masked logits


def _activation(name: str) -> Callable[[Tensor], Tensor]:
    if name == "gelu":
        return F.gelu  # exact (erf) GELU, as the original
    if name == "relu":
        return F.relu
    if name == "swish":
        return F.silu
    raise ValueError(f"unknown activation {name!r}")


def _layer_norm(size: int) -> nn.LayerNorm:
    return nn.LayerNorm(size, eps=LAYER_NORM_EPS)


def additive_mask(mask: Tensor, dtype: torch.dtype) -> Tensor:
    """1/0 mask [B, N] -> additive mask [B, 1, 1, N] broadcastable over heads and queries."""
    mask = mask[:, None, None, :].to(dtype)
    return (1.0 - mask) * MASK_VALUE


def _split_heads(x: Tensor, heads: int) -> Tensor:
    batch, length, width = x.shape
    return x.view(batch, length, heads, width // heads).transpose(1, 2)


def _merge_heads(x: Tensor) -> Tensor:
    batch, heads, length, head_size = x.shape
    return x.transpose(1, 2).reshape(batch, length, heads * head_size)


def _attend(query: Tensor, key: Tensor, value: Tensor, mask: Tensor, heads: int, dropout: float) -> Tensor:
    """Multi-head scaled dot-product attention with an additive mask; inputs are [B, N, width]."""
    context = F.scaled_dot_product_attention(
        _split_heads(query, heads),
        _split_heads(key, heads),
        _split_heads(value, heads),
        attn_mask=mask,
        dropout_p=dropout,
    )
    return _merge_heads(context)


# -- one stream's transformer layer ----------------------------------------------------------------


class SelfAttention(nn.Module):
    def __init__(self, size: int, heads: int, dropout: float, text_size: int | None = None) -> None:
        super().__init__()
        self.heads = heads
        self.dropout = dropout
        self.query = nn.Linear(size, size)
        self.key = nn.Linear(size, size)
        self.value = nn.Linear(size, size)
        # "dynamic attention" (an option of the original image stream): text-conditioned gates on q and k
        self.dynamic = text_size is not None
        if text_size is not None:
            self.dyLinear_q = nn.Linear(text_size, size)
            self.dyLinear_k = nn.Linear(text_size, size)

    def forward(
        self, hidden: Tensor, mask: Tensor, text: Tensor | None = None, text_mask: Tensor | None = None
    ) -> Tensor:
        query, key = self.query(hidden), self.key(hidden)
        if self.dynamic:
            if text is None or text_mask is None:
                raise ValueError("dynamic attention needs the text states and the plain text mask")
            pooled = (text * text_mask).sum(1) / text_mask.sum(1)
            query = query * (1 + torch.sigmoid(self.dyLinear_q(pooled))).unsqueeze(1)
            key = key * (1 + torch.sigmoid(self.dyLinear_k(pooled))).unsqueeze(1)
        dropout = self.dropout if self.training else 0.0
        return _attend(query, key, self.value(hidden), mask, self.heads, dropout)


class ResidualOutput(nn.Module):
    """dense -> dropout -> LayerNorm(x + residual); used after attention and after the FFN."""

    def __init__(self, in_size: int, out_size: int, dropout: float) -> None:
        super().__init__()
        self.dense = nn.Linear(in_size, out_size)
        self.LayerNorm = _layer_norm(out_size)
        self.dropout = nn.Dropout(dropout)

    def forward(self, hidden: Tensor, residual: Tensor) -> Tensor:
        return self.LayerNorm(self.dropout(self.dense(hidden)) + residual)


class Attention(nn.Module):
    def __init__(
        self, size: int, heads: int, attn_dropout: float, dropout: float, text_size: int | None
    ) -> None:
        super().__init__()
        self.self = SelfAttention(size, heads, attn_dropout, text_size)
        self.output = ResidualOutput(size, size, dropout)

    def forward(self, hidden: Tensor, mask: Tensor, text: Tensor | None, text_mask: Tensor | None) -> Tensor:
        return self.output(self.self(hidden, mask, text, text_mask), hidden)


class Intermediate(nn.Module):
    def __init__(self, size: int, inner: int, act: str) -> None:
        super().__init__()
        self.dense = nn.Linear(size, inner)
        self.act = _activation(act)

    def forward(self, hidden: Tensor) -> Tensor:
        return self.act(self.dense(hidden))


class TransformerLayer(nn.Module):
    """A BERT layer; the text stream and the image stream use it with their own sizes."""

    def __init__(
        self,
        size: int,
        heads: int,
        inner: int,
        act: str,
        attn_dropout: float,
        dropout: float,
        text_size: int | None = None,
    ) -> None:
        super().__init__()
        self.attention = Attention(size, heads, attn_dropout, dropout, text_size)
        self.intermediate = Intermediate(size, inner, act)
        self.output = ResidualOutput(inner, size, dropout)

    def forward(
        self, hidden: Tensor, mask: Tensor, text: Tensor | None = None, text_mask: Tensor | None = None
    ) -> Tensor:
        attended = self.attention(hidden, mask, text, text_mask)
        return self.output(self.intermediate(attended), attended)


def text_layer(config: VilbertConfig) -> TransformerLayer:
    return TransformerLayer(
        config.hidden_size,
        config.num_attention_heads,
        config.intermediate_size,
        config.hidden_act,
        config.attention_probs_dropout_prob,
        config.hidden_dropout_prob,
    )


def image_layer(config: VilbertConfig) -> TransformerLayer:
    return TransformerLayer(
        config.v_hidden_size,
        config.v_num_attention_heads,
        config.v_intermediate_size,
        config.v_hidden_act,
        config.v_attention_probs_dropout_prob,
        config.v_hidden_dropout_prob,
        text_size=config.hidden_size if config.dynamic_attention else None,
    )


# -- co-attention ----------------------------------------------------------------------------------


class BiAttention(nn.Module):
    """Each stream queries the other: text queries attend over image keys/values and vice versa.

    Suffix 1 projects the image stream, suffix 2 the text stream (the original naming).
    """

    def __init__(self, config: VilbertConfig) -> None:
        super().__init__()
        self.heads = config.bi_num_attention_heads
        self.v_dropout = config.v_attention_probs_dropout_prob
        self.t_dropout = config.attention_probs_dropout_prob
        bi, vis, txt = config.bi_hidden_size, config.v_hidden_size, config.hidden_size
        self.query1, self.key1, self.value1 = nn.Linear(vis, bi), nn.Linear(vis, bi), nn.Linear(vis, bi)
        self.query2, self.key2, self.value2 = nn.Linear(txt, bi), nn.Linear(txt, bi), nn.Linear(txt, bi)

    def forward(
        self, image: Tensor, image_mask: Tensor, text: Tensor, text_mask: Tensor
    ) -> tuple[Tensor, Tensor]:
        """Returns (text attending image, image attending text), each of width bi_hidden_size."""
        train = self.training
        text_ctx = _attend(
            self.query2(text), self.key1(image), self.value1(image), image_mask, self.heads,
            self.v_dropout if train else 0.0,
        )  # fmt: skip
        image_ctx = _attend(
            self.query1(image), self.key2(text), self.value2(text), text_mask, self.heads,
            self.t_dropout if train else 0.0,
        )  # fmt: skip
        return text_ctx, image_ctx


class BiOutput(nn.Module):
    def __init__(self, config: VilbertConfig) -> None:
        super().__init__()
        bi, vis, txt = config.bi_hidden_size, config.v_hidden_size, config.hidden_size
        self.dense1 = nn.Linear(bi, vis)
        self.LayerNorm1 = _layer_norm(vis)
        self.dropout1 = nn.Dropout(config.v_hidden_dropout_prob)
        # present in every checkpoint, never used by the forward pass
        self.q_dense1 = nn.Linear(bi, vis)
        self.dense2 = nn.Linear(bi, txt)
        self.LayerNorm2 = _layer_norm(txt)
        self.dropout2 = nn.Dropout(config.hidden_dropout_prob)
        self.q_dense2 = nn.Linear(bi, txt)

    def forward(
        self, image_ctx: Tensor, image: Tensor, text_ctx: Tensor, text: Tensor
    ) -> tuple[Tensor, Tensor]:
        image = self.LayerNorm1(self.dropout1(self.dense1(image_ctx)) + image)
        text = self.LayerNorm2(self.dropout2(self.dense2(text_ctx)) + text)
        return image, text


class ConnectionLayer(nn.Module):
    """Co-attention block: cross attention both ways, then each stream's own feed-forward."""

    def __init__(self, config: VilbertConfig) -> None:
        super().__init__()
        self.biattention = BiAttention(config)
        self.biOutput = BiOutput(config)
        self.v_intermediate = Intermediate(
            config.v_hidden_size, config.v_intermediate_size, config.v_hidden_act
        )
        self.v_output = ResidualOutput(
            config.v_intermediate_size, config.v_hidden_size, config.v_hidden_dropout_prob
        )
        self.t_intermediate = Intermediate(config.hidden_size, config.intermediate_size, config.hidden_act)
        self.t_output = ResidualOutput(
            config.intermediate_size, config.hidden_size, config.hidden_dropout_prob
        )

    def forward(
        self, image: Tensor, image_mask: Tensor, text: Tensor, text_mask: Tensor
    ) -> tuple[Tensor, Tensor]:
        text_ctx, image_ctx = self.biattention(image, image_mask, text, text_mask)
        image, text = self.biOutput(image_ctx, image, text_ctx, text)
        image = self.v_output(self.v_intermediate(image), image)
        text = self.t_output(self.t_intermediate(text), text)
        return image, text


class Encoder(nn.Module):
    """Two streams interleaved with co-attention on the original schedule.

    For co-attention step k, the text stream first runs its layers up to (not including)
    ``t_biattention_id[k]`` and the image stream its layers up to ``v_biattention_id[k]``, then the k-th
    co-attention layer runs; the remaining layers of both streams run after the last step. With the
    base config that is text layers 0-5, co-attention 0, then (text 6+k, image k, co-attention k+1)
    for k = 0..4, and finally image layer 5 and text layer 11.
    """

    def __init__(self, config: VilbertConfig) -> None:
        super().__init__()
        self.v_biattention_id = config.v_biattention_id
        self.t_biattention_id = config.t_biattention_id
        self.with_coattention = config.with_coattention
        self.layer = nn.ModuleList(text_layer(config) for _ in range(config.num_hidden_layers))
        self.v_layer = nn.ModuleList(image_layer(config) for _ in range(config.v_num_hidden_layers))
        self.c_layer = nn.ModuleList(ConnectionLayer(config) for _ in range(len(config.v_biattention_id)))

    def forward(
        self, text: Tensor, image: Tensor, text_mask: Tensor, text_mask_plain: Tensor, image_mask: Tensor
    ) -> tuple[Tensor, Tensor]:
        t_start = v_start = 0
        for step, (v_end, t_end) in enumerate(zip(self.v_biattention_id, self.t_biattention_id, strict=True)):
            for idx in range(t_start, t_end):
                text = self.layer[idx](text, text_mask)
            for idx in range(v_start, v_end):
                image = self.v_layer[idx](image, image_mask, text, text_mask_plain)
            if self.with_coattention:
                image, text = self.c_layer[step](image, image_mask, text, text_mask)
            t_start, v_start = t_end, v_end
        for idx in range(v_start, len(self.v_layer)):
            image = self.v_layer[idx](image, image_mask, text, text_mask_plain)
        for idx in range(t_start, len(self.layer)):
            text = self.layer[idx](text, text_mask)
        return text, image


# -- embeddings and poolers ------------------------------------------------------------------------


class TextEmbeddings(nn.Module):
    def __init__(self, config: VilbertConfig) -> None:
        super().__init__()
        self.word_embeddings = nn.Embedding(config.vocab_size, config.hidden_size, padding_idx=0)
        self.position_embeddings = nn.Embedding(config.max_position_embeddings, config.hidden_size)
        self.token_type_embeddings = nn.Embedding(config.type_vocab_size, config.hidden_size)
        self.LayerNorm = _layer_norm(config.hidden_size)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)
        self.task_specific_tokens = config.task_specific_tokens
        if config.task_specific_tokens:
            self.task_embeddings = nn.Embedding(NUM_TASK_EMBEDDINGS, config.hidden_size)

    def forward(self, input_ids: Tensor, token_type_ids: Tensor, task_ids: Tensor | None = None) -> Tensor:
        positions = torch.arange(input_ids.shape[1], device=input_ids.device).unsqueeze(0)
        embeddings = (
            self.word_embeddings(input_ids)
            + self.position_embeddings(positions)
            + self.token_type_embeddings(token_type_ids)
        )
        if self.task_specific_tokens:
            if task_ids is None:
                raise ValueError("this model uses task tokens: pass task_ids of shape [batch, 1] (VQA is 1)")
            task = self.task_embeddings(task_ids.reshape(-1, 1))
            embeddings = torch.cat([embeddings[:, :1], task, embeddings[:, 1:]], dim=1)
        return self.dropout(self.LayerNorm(embeddings))


class ImageEmbeddings(nn.Module):
    def __init__(self, config: VilbertConfig) -> None:
        super().__init__()
        self.image_embeddings = nn.Linear(config.v_feature_size, config.v_hidden_size)
        self.image_location_embeddings = nn.Linear(5, config.v_hidden_size)
        self.LayerNorm = _layer_norm(config.v_hidden_size)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, features: Tensor, boxes: Tensor) -> Tensor:
        embeddings = self.image_embeddings(features) + self.image_location_embeddings(boxes)
        return self.dropout(self.LayerNorm(embeddings))


class Pooler(nn.Module):
    """First position -> dense -> ReLU."""

    def __init__(self, in_size: int, out_size: int) -> None:
        super().__init__()
        self.dense = nn.Linear(in_size, out_size)

    def forward(self, hidden: Tensor) -> Tensor:
        return F.relu(self.dense(hidden[:, 0]))


class VilbertModel(nn.Module):
    """The two-stream encoder with poolers (``bert.*`` in checkpoints)."""

    def __init__(self, config: VilbertConfig) -> None:
        super().__init__()
        self.config = config
        self.embeddings = TextEmbeddings(config)
        self.v_embeddings = ImageEmbeddings(config)
        self.encoder = Encoder(config)
        self.t_pooler = Pooler(config.hidden_size, config.bi_hidden_size)
        self.v_pooler = Pooler(config.v_hidden_size, config.bi_hidden_size)

    def forward(
        self,
        input_txt: Tensor,
        input_imgs: Tensor,
        image_loc: Tensor,
        token_type_ids: Tensor | None = None,
        attention_mask: Tensor | None = None,
        image_attention_mask: Tensor | None = None,
        co_attention_mask: Tensor | None = None,
        task_ids: Tensor | None = None,
    ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Returns (text states, image states, pooled text, pooled image).

        ``co_attention_mask`` is accepted for signature compatibility and ignored, as in the original.
        With task tokens the text states have one more position than ``input_txt``.
        """
        del co_attention_mask
        dtype = self.embeddings.word_embeddings.weight.dtype
        if attention_mask is None:
            attention_mask = torch.ones_like(input_txt)
        if token_type_ids is None:
            token_type_ids = torch.zeros_like(input_txt)
        if image_attention_mask is None:
            image_attention_mask = torch.ones(
                input_imgs.shape[:2], dtype=torch.long, device=input_imgs.device
            )
        if self.config.task_specific_tokens:
            attention_mask = torch.cat(
                [attention_mask.new_ones(attention_mask.shape[0], 1), attention_mask], 1
            )

        text_mask = additive_mask(attention_mask, dtype)
        text_mask_plain = attention_mask.unsqueeze(2).to(dtype)  # only read by dynamic attention
        image_mask = additive_mask(image_attention_mask, dtype)

        text = self.embeddings(input_txt, token_type_ids, task_ids)
        image = self.v_embeddings(input_imgs, image_loc)
        text, image = self.encoder(text, image, text_mask, text_mask_plain, image_mask)
        return text, image, self.t_pooler(text), self.v_pooler(image)


# -- heads -----------------------------------------------------------------------------------------


class HeadTransform(nn.Module):
    def __init__(self, size: int, act: str) -> None:
        super().__init__()
        self.dense = nn.Linear(size, size)
        self.act = _activation(act)
        self.LayerNorm = _layer_norm(size)

    def forward(self, hidden: Tensor) -> Tensor:
        return self.LayerNorm(self.act(self.dense(hidden)))


class MaskedLanguageHead(nn.Module):
    """Vocabulary logits; the decoder weight is the word embedding matrix (tied)."""

    def __init__(self, config: VilbertConfig, word_embeddings: nn.Embedding) -> None:
        super().__init__()
        self.transform = HeadTransform(config.hidden_size, config.hidden_act)
        self.decoder = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.decoder.weight = word_embeddings.weight
        self.bias = nn.Parameter(torch.zeros(config.vocab_size))

    def forward(self, hidden: Tensor) -> Tensor:
        return self.decoder(self.transform(hidden)) + self.bias


class ImagePredictionHead(nn.Module):
    def __init__(self, config: VilbertConfig) -> None:
        super().__init__()
        # the original builds this transform with the text activation, whatever v_hidden_act says
        self.transform = HeadTransform(config.v_hidden_size, config.hidden_act)
        self.decoder = nn.Linear(config.v_hidden_size, config.v_target_size)

    def forward(self, hidden: Tensor) -> Tensor:
        return self.decoder(self.transform(hidden))


def fuse(pooled_text: Tensor, pooled_image: Tensor, method: str) -> Tensor:
    if method == "mul":
        return pooled_text * pooled_image
    if method == "sum":
        return pooled_text + pooled_image
    raise ValueError(f"unknown fusion method {method!r}")


class PreTrainingHeads(nn.Module):
    """``cls.*``: masked-token logits, region-class logits and image-text alignment score."""

    def __init__(self, config: VilbertConfig, word_embeddings: nn.Embedding) -> None:
        super().__init__()
        self.predictions = MaskedLanguageHead(config, word_embeddings)
        self.bi_seq_relationship = nn.Linear(config.bi_hidden_size, 2)
        self.imagePredictions = ImagePredictionHead(config)
        self.fusion_method = config.fusion_method
        self.dropout = nn.Dropout(0.1)

    def forward(
        self, text: Tensor, image: Tensor, pooled_text: Tensor, pooled_image: Tensor
    ) -> tuple[Tensor, Tensor, Tensor]:
        pooled = self.dropout(fuse(pooled_text, pooled_image, self.fusion_method))
        return self.predictions(text), self.imagePredictions(image), self.bi_seq_relationship(pooled)


class AnswerClassifier(nn.Module):
    """Linear -> GELU -> LayerNorm -> Linear (``logit_fc.0/2/3``; index 1 is the parameter-free GELU)."""

    def __init__(self, in_size: int, hidden: int, out_size: int) -> None:
        super().__init__()
        self.logit_fc = nn.Sequential(
            nn.Linear(in_size, hidden), nn.GELU(), _layer_norm(hidden), nn.Linear(hidden, out_size)
        )

    def forward(self, hidden: Tensor) -> Tensor:
        return self.logit_fc(hidden)


class _VilbertBase(nn.Module):
    config: VilbertConfig
    bert: VilbertModel

    def init_weights(self) -> None:
        """Random initialisation of the original (normal(0, initializer_range), LayerNorm 1/0)."""
        std = self.config.initializer_range
        for module in self.modules():
            if isinstance(module, nn.Linear | nn.Embedding):
                nn.init.normal_(module.weight, mean=0.0, std=std)
            elif isinstance(module, nn.LayerNorm):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
            if isinstance(module, nn.Linear) and module.bias is not None:
                nn.init.zeros_(module.bias)
        for module in self.modules():
            if isinstance(module, MaskedLanguageHead):
                nn.init.zeros_(module.bias)

    def tie_weights(self) -> None:
        """Share the masked-token decoder weight with the word embeddings (as the checkpoints expect)."""
        self.cls.predictions.decoder.weight = self.bert.embeddings.word_embeddings.weight


class VilbertOutput(NamedTuple):
    """Eval outputs in the order of the original ``VILBertForVLTasks.forward`` (the names are its own)."""

    vil_prediction: Tensor
    vil_prediction_gqa: Tensor
    vil_logit: Tensor
    vil_binary_prediction: Tensor
    vil_tri_prediction: Tensor
    vision_prediction: Tensor
    vision_logit: Tensor
    linguisic_prediction: Tensor
    linguisic_logit: Tensor


class VilbertForVLTasks(_VilbertBase):
    """The 12-in-1 multi-task model (``multi_task_model.bin``): encoder, ``cls.*`` and all task heads."""

    def __init__(self, config: VilbertConfig, dropout_prob: float = 0.1) -> None:
        super().__init__()
        self.config = config
        bi = config.bi_hidden_size
        self.bert = VilbertModel(config)
        self.dropout = nn.Dropout(dropout_prob)
        self.cls = PreTrainingHeads(config, self.bert.embeddings.word_embeddings)
        self.vil_prediction = AnswerClassifier(bi, bi * 2, NUM_VQA_ANSWERS)
        self.vil_prediction_gqa = AnswerClassifier(bi, bi * 2, NUM_GQA_ANSWERS)
        self.vil_binary_prediction = AnswerClassifier(bi * 2, bi * 2, 2)
        self.vil_logit = nn.Linear(bi, 1)
        self.vil_tri_prediction = nn.Linear(bi, 3)
        self.vision_logit = nn.Linear(config.v_hidden_size, 1)
        self.linguisic_logit = nn.Linear(config.hidden_size, 1)
        self.init_weights()
        self.tie_weights()

    def fused_pooled(self, *inputs: Tensor | None, **kw_inputs: Tensor | None) -> Tensor:
        """The fused pooled vector the answer heads read; same arguments as ``forward``."""
        _, _, pooled_t, pooled_v = self.bert(*inputs, **kw_inputs)
        return self.dropout(fuse(pooled_t, pooled_v, self.config.fusion_method))

    def forward(
        self,
        input_txt: Tensor,
        input_imgs: Tensor,
        image_loc: Tensor,
        token_type_ids: Tensor | None = None,
        attention_mask: Tensor | None = None,
        image_attention_mask: Tensor | None = None,
        co_attention_mask: Tensor | None = None,
        task_ids: Tensor | None = None,
    ) -> VilbertOutput:
        if image_attention_mask is None:
            image_attention_mask = torch.ones(
                input_imgs.shape[:2], dtype=torch.long, device=input_imgs.device
            )
        text, image, pooled_t, pooled_v = self.bert(
            input_txt, input_imgs, image_loc, token_type_ids, attention_mask,
            image_attention_mask, co_attention_mask, task_ids,
        )  # fmt: skip
        linguisic_prediction, vision_prediction, binary = self.cls(text, image, pooled_t, pooled_v)
        pooled = self.dropout(fuse(pooled_t, pooled_v, self.config.fusion_method))
        if pooled.shape[0] % 2 == 0:
            # the pair classifier reads consecutive batch rows as (image 1, image 2) pairs (NLVR2)
            binary = self.vil_binary_prediction(pooled.reshape(-1, pooled.shape[1] * 2))
        dtype = pooled.dtype
        region_mask = ((1.0 - image_attention_mask) * MASK_VALUE).unsqueeze(2).to(dtype)
        return VilbertOutput(
            vil_prediction=self.vil_prediction(pooled),
            vil_prediction_gqa=self.vil_prediction_gqa(pooled),
            vil_logit=self.vil_logit(pooled),
            vil_binary_prediction=binary,
            vil_tri_prediction=self.vil_tri_prediction(pooled),
            vision_prediction=vision_prediction,
            vision_logit=self.vision_logit(self.dropout(image)) + region_mask,
            linguisic_prediction=linguisic_prediction,
            linguisic_logit=self.linguisic_logit(self.dropout(text)),
        )


class PreTrainingOutput(NamedTuple):
    """Eval outputs of the original ``BertForMultiModalPreTraining.forward`` without labels."""

    prediction_scores_t: Tensor
    prediction_scores_v: Tensor
    seq_relationship_score: Tensor


class VilbertForPreTraining(_VilbertBase):
    """The pretraining layout (``pretrained_model.bin``): encoder and ``cls.*`` heads only.

    Pretraining used no task tokens, so the model is always built without task embeddings, whatever
    ``config.task_specific_tokens`` says; this lets one config describe both checkpoints.
    """

    def __init__(self, config: VilbertConfig) -> None:
        super().__init__()
        config = config.replace(task_specific_tokens=False)
        self.config = config
        self.bert = VilbertModel(config)
        self.cls = PreTrainingHeads(config, self.bert.embeddings.word_embeddings)
        self.init_weights()
        self.tie_weights()

    def forward(
        self,
        input_ids: Tensor,
        image_feat: Tensor,
        image_loc: Tensor,
        token_type_ids: Tensor | None = None,
        attention_mask: Tensor | None = None,
        image_attention_mask: Tensor | None = None,
    ) -> PreTrainingOutput:
        text, image, pooled_t, pooled_v = self.bert(
            input_ids, image_feat, image_loc, token_type_ids, attention_mask, image_attention_mask
        )
        return PreTrainingOutput(*self.cls(text, image, pooled_t, pooled_v))


VARIANTS: dict[str, type[_VilbertBase]] = {
    "multitask": VilbertForVLTasks,
    "pretrained": VilbertForPreTraining,
}


def build_model(config: VilbertConfig, variant: str = "multitask") -> _VilbertBase:
    """Build a randomly initialised model of the given layout (``multitask`` or ``pretrained``)."""
    try:
        cls = VARIANTS[variant]
    except KeyError:
        raise ValueError(f"unknown ViLBERT variant {variant!r}; choose one of {sorted(VARIANTS)}") from None
    return cls(config)
