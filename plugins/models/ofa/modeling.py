"""OFA (Wang et al. 2022) as a plain PyTorch module.

The graph follows the official implementation: a ResNet trunk (stages 1-3) turns the image into
(R/16)² patch features that are projected to ``d_model`` and prepended to the text; a pre-norm
NormFormer encoder and decoder use *decoupled* position information: position embeddings never
enter the residual stream but produce an additive attention bias (a learned query/key projection
of the position embeddings) plus bucketed relative-position biases, one table per layer.

Parameter names match the Hugging Face port (``encoder.layers.0.self_attn.q_proj.weight``, ...),
so its checkpoints load without renaming. The five index tables of the port are rebuilt here as
non-persistent buffers: they are pure functions of the configuration.

Beyond the reference forward pass, the decoder accepts per-row position ids, a key padding mask
and an incremental key/value cache, which is what batched beam search over left-padded prompts
needs. Image-code generation (the ``code_masks`` path used for text-to-image) is not implemented.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.models.resnet import Bottleneck, conv1x1

from .config import OFAConfig

INDEX_BUFFERS = ("token_rp_bucket", "image_rp_bucket", "image_position_idx")
TRUNK_CHANNELS = 1024  # output channels of ResNet stage 3 (256 planes x Bottleneck expansion 4)


# ---------------------------------------------------------------------------------------------
# index tables


def make_token_bucket_position(bucket_size: int, max_position: int) -> Tensor:
    """[max_position, max_position] table mapping (query i, key j) to a relative-position bucket.

    Distances up to ``bucket_size // 2`` get a bucket each; longer ones share log-spaced buckets.
    The float32 arithmetic is kept in the reference order so bucket boundaries round alike.
    """
    mid = bucket_size // 2
    index = torch.arange(max_position, dtype=torch.long)
    relative = index[:, None] - index[None, :]
    distance = relative.abs()
    # Only distances beyond `mid` use the log scale; clamping keeps log() finite elsewhere.
    far = distance.clamp(min=mid)
    log_bucket = (
        torch.ceil(torch.log(far.to(torch.float32) / mid) / math.log((max_position - 1) / mid) * (mid - 1))
        + mid
    )
    log_bucket = log_bucket.int().long()
    bucket = torch.where(distance <= mid, relative, log_bucket * torch.sign(relative))
    return bucket + bucket_size - 1


def make_image_bucket_position(bucket_size: int, num_relative_distance: int) -> Tensor:
    """[b²+1, b²+1] table of 2-D relative-position buckets between patch slots of a b×b grid.

    Slot 0 is a global slot with three dedicated buckets (to, from, and itself) at the end of the
    table; slot 1 + r·b + c is the patch in row r, column c.
    """
    rows, cols = torch.meshgrid(torch.arange(bucket_size), torch.arange(bucket_size), indexing="ij")
    rows, cols = rows.flatten(), cols.flatten()
    span = 2 * bucket_size - 1
    grid = (rows[:, None] - rows[None, :] + bucket_size - 1) * span + (
        cols[:, None] - cols[None, :] + bucket_size - 1
    )
    table = torch.zeros((bucket_size * bucket_size + 1,) * 2, dtype=torch.long)
    table[1:, 1:] = grid
    table[0, :] = num_relative_distance - 3
    table[:, 0] = num_relative_distance - 2
    table[0, 0] = num_relative_distance - 1
    return table


def image_position_ids(
    height: int, width: int, bucket_size: int, device: torch.device | None = None
) -> Tensor:
    """Slot index (1 + row·bucket + col) of each patch of a height×width grid, row-major."""
    rows = torch.arange(height, device=device)[:, None]
    cols = torch.arange(width, device=device)[None, :]
    return (rows * bucket_size + cols + 1).flatten()


def make_code_position_idx(code_image_size: int, bucket_size: int) -> Tensor:
    """Decoder slot indices for image-code tokens: a leading global slot, the (size/8)² code grid,
    then 768 entries parked on slot 1024, as the reference builds them."""
    window = code_image_size // 8
    grid = image_position_ids(window, window, bucket_size)
    return torch.cat([torch.zeros(1, dtype=torch.long), grid, torch.full((768,), 1024, dtype=torch.long)])


def _index_tables(token_bucket_size: int, max_position: int, image_bucket_size: int) -> tuple[Tensor, Tensor]:
    image_rel = (2 * image_bucket_size - 1) ** 2 + 3
    return (
        make_token_bucket_position(token_bucket_size, max_position),
        make_image_bucket_position(image_bucket_size, image_rel),
    )


@functools.lru_cache(maxsize=4)
def _cached_index_tables(
    token_bucket_size: int, max_position: int, image_bucket_size: int
) -> tuple[Tensor, Tensor]:
    # Every OFA size uses the same tables (about 33 MB); build them once per process. They are
    # only ever read.
    return _index_tables(token_bucket_size, max_position, image_bucket_size)


# ---------------------------------------------------------------------------------------------
# building blocks


def _activation(name: str):
    if name == "gelu":
        return F.gelu
    if name in ("gelu_new", "gelu_fast", "gelu_pytorch_tanh"):
        return lambda x: F.gelu(x, approximate="tanh")
    if name == "relu":
        return F.relu
    if name in ("silu", "swish"):
        return F.silu
    raise ValueError(f"unsupported activation_function {name!r}")


def _split_heads(x: Tensor, heads: int) -> Tensor:
    n, length, dim = x.shape
    return x.view(n, length, heads, dim // heads).transpose(1, 2)


class ResNetTrunk(nn.Module):
    """Stem plus ResNet stages 1-3 built from torchvision's Bottleneck (stride on the 3×3 conv),
    with torchvision's module names; no stage 4, pooling or classifier."""

    def __init__(self, blocks: tuple[int, int, int]) -> None:
        super().__init__()
        self.inplanes = 64
        self.conv1 = nn.Conv2d(3, 64, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1 = self._stage(64, blocks[0], stride=1)
        self.layer2 = self._stage(128, blocks[1], stride=2)
        self.layer3 = self._stage(256, blocks[2], stride=2)

    def _stage(self, planes: int, count: int, stride: int) -> nn.Sequential:
        width = planes * Bottleneck.expansion
        downsample = None
        if stride != 1 or self.inplanes != width:
            downsample = nn.Sequential(conv1x1(self.inplanes, width, stride), nn.BatchNorm2d(width))
        blocks = [Bottleneck(self.inplanes, planes, stride, downsample)]
        self.inplanes = width
        blocks += [Bottleneck(width, planes) for _ in range(1, count)]
        return nn.Sequential(*blocks)

    def forward(self, images: Tensor) -> Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(images))))
        return self.layer3(self.layer2(self.layer1(x)))


class OFAAttention(nn.Module):
    """Multi-head attention with an additive bias, scaling (head_dim·factor)^-½ and NormFormer's
    learned per-head output scale ``c_attn``."""

    def __init__(
        self, embed_dim: int, num_heads: int, dropout: float, scale_factor: float, scale_heads: bool
    ):
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = embed_dim // num_heads
        self.scaling = (self.head_dim * scale_factor) ** -0.5
        self.dropout = dropout
        self.c_attn = nn.Parameter(torch.ones(num_heads)) if scale_heads else None
        self.k_proj = nn.Linear(embed_dim, embed_dim)
        self.v_proj = nn.Linear(embed_dim, embed_dim)
        self.q_proj = nn.Linear(embed_dim, embed_dim)
        self.out_proj = nn.Linear(embed_dim, embed_dim)

    def forward(
        self,
        hidden: Tensor,
        memory: Tensor | None = None,
        bias: Tensor | None = None,
        past: tuple[Tensor, Tensor] | None = None,
    ) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        """``memory`` None means self-attention (``past`` holds earlier keys/values to extend);
        otherwise cross-attention over ``memory`` (``past`` holds its projected keys/values).
        ``bias``: additive [N or 1, H, T, S], masks already folded in."""
        n, length, dim = hidden.shape
        query = _split_heads(self.q_proj(hidden), self.num_heads)
        if memory is None:
            key = _split_heads(self.k_proj(hidden), self.num_heads)
            value = _split_heads(self.v_proj(hidden), self.num_heads)
            if past is not None:
                key = torch.cat([past[0], key], dim=2)
                value = torch.cat([past[1], value], dim=2)
        elif past is not None:
            key, value = past
        else:
            key = _split_heads(self.k_proj(memory), self.num_heads)
            value = _split_heads(self.v_proj(memory), self.num_heads)
        out = F.scaled_dot_product_attention(
            query,
            key,
            value,
            attn_mask=bias,
            dropout_p=self.dropout if self.training else 0.0,
            scale=self.scaling,
        )
        out = out.transpose(1, 2)  # [N, T, H, head_dim]
        if self.c_attn is not None:
            out = out * self.c_attn[:, None]
        return self.out_proj(out.reshape(n, length, dim)), (key, value)


class _FeedForward(nn.Module):
    """Mixin holding the FFN shared by encoder and decoder layers (fc1 → act → [LN] → fc2)."""

    fc1: nn.Linear
    fc2: nn.Linear
    ffn_layer_norm: nn.LayerNorm | None

    def _ffn(self, x: Tensor) -> Tensor:
        x = self.activation(self.fc1(x))
        x = F.dropout(x, self.activation_dropout, self.training)
        if self.ffn_layer_norm is not None:
            x = self.ffn_layer_norm(x)
        return F.dropout(self.fc2(x), self.dropout, self.training)


class OFAEncoderLayer(_FeedForward):
    def __init__(self, config: OFAConfig) -> None:
        super().__init__()
        dim, ffn = config.d_model, config.encoder_ffn_dim
        self.self_attn = OFAAttention(
            dim,
            config.encoder_attention_heads,
            config.attention_dropout,
            config.attn_scale_factor,
            config.normformer,
        )
        self.self_attn_layer_norm = nn.LayerNorm(dim)
        self.self_attn_mid_layer_norm = nn.LayerNorm(dim) if config.normformer else None
        self.fc1 = nn.Linear(dim, ffn)
        self.fc2 = nn.Linear(ffn, dim)
        self.ffn_layer_norm = nn.LayerNorm(ffn) if config.normformer else None
        self.final_layer_norm = nn.LayerNorm(dim)
        self.activation = _activation(config.activation_function)
        self.dropout = config.dropout
        self.activation_dropout = config.activation_dropout
        self.pre_norm = config.encoder_normalize_before

    def forward(self, x: Tensor, bias: Tensor) -> Tensor:
        residual = x
        if self.pre_norm:
            x = self.self_attn_layer_norm(x)
        x, _ = self.self_attn(x, bias=bias)
        if self.self_attn_mid_layer_norm is not None:
            x = self.self_attn_mid_layer_norm(x)
        x = residual + F.dropout(x, self.dropout, self.training)
        if not self.pre_norm:
            x = self.self_attn_layer_norm(x)
        residual = x
        if self.pre_norm:
            x = self.final_layer_norm(x)
        x = residual + self._ffn(x)
        if not self.pre_norm:
            x = self.final_layer_norm(x)
        return x


class OFADecoderLayer(_FeedForward):
    def __init__(self, config: OFAConfig) -> None:
        super().__init__()
        dim, ffn, heads = config.d_model, config.decoder_ffn_dim, config.decoder_attention_heads
        self.self_attn = OFAAttention(
            dim, heads, config.attention_dropout, config.attn_scale_factor, config.normformer
        )
        self.self_attn_layer_norm = nn.LayerNorm(dim)
        self.self_attn_mid_layer_norm = nn.LayerNorm(dim) if config.normformer else None
        self.cross_attn = OFAAttention(
            dim, heads, config.attention_dropout, config.attn_scale_factor, config.normformer
        )
        self.cross_attn_layer_norm = nn.LayerNorm(dim)
        self.cross_attn_mid_layer_norm = nn.LayerNorm(dim) if config.normformer else None
        self.fc1 = nn.Linear(dim, ffn)
        self.fc2 = nn.Linear(ffn, dim)
        self.ffn_layer_norm = nn.LayerNorm(ffn) if config.normformer else None
        self.final_layer_norm = nn.LayerNorm(dim)
        self.activation = _activation(config.activation_function)
        self.dropout = config.dropout
        self.activation_dropout = config.activation_dropout
        self.pre_norm = config.decoder_normalize_before

    def _attend(self, x, attn, norm, mid_norm, memory, bias, past):
        residual = x
        if self.pre_norm:
            x = norm(x)
        x, present = attn(x, memory=memory, bias=bias, past=past)
        if mid_norm is not None:
            x = mid_norm(x)
        x = residual + F.dropout(x, self.dropout, self.training)
        if not self.pre_norm:
            x = norm(x)
        return x, present

    def forward(
        self,
        x: Tensor,
        memory: Tensor,
        self_bias: Tensor | None,
        cross_bias: Tensor | None,
        past_self: tuple[Tensor, Tensor] | None = None,
        past_cross: tuple[Tensor, Tensor] | None = None,
    ) -> tuple[Tensor, tuple[Tensor, Tensor], tuple[Tensor, Tensor]]:
        x, present_self = self._attend(
            x,
            self.self_attn,
            self.self_attn_layer_norm,
            self.self_attn_mid_layer_norm,
            None,
            self_bias,
            past_self,
        )
        x, present_cross = self._attend(
            x,
            self.cross_attn,
            self.cross_attn_layer_norm,
            self.cross_attn_mid_layer_norm,
            memory,
            cross_bias,
            past_cross,
        )
        residual = x
        if self.pre_norm:
            x = self.final_layer_norm(x)
        x = residual + self._ffn(x)
        if not self.pre_norm:
            x = self.final_layer_norm(x)
        return x, present_self, present_cross


# ---------------------------------------------------------------------------------------------
# encoder


@dataclass
class EncoderOutput:
    """What the decoder needs from the encoder.

    ``position_embedding`` is [1, S, D]: source positions do not depend on the row (all images
    of a batch share one resolution and text positions start at 0 in every row).
    """

    last_hidden_state: Tensor  # [B, S, D]
    padding_mask: Tensor  # [B, S] bool, True at padding
    position_embedding: Tensor  # [1, S, D], already layer-normed

    def select(self, index: Tensor) -> EncoderOutput:
        """Rows in ``index`` order (e.g. each row repeated once per beam or candidate)."""
        return EncoderOutput(
            self.last_hidden_state.index_select(0, index),
            self.padding_mask.index_select(0, index),
            self.position_embedding,
        )


def _layer_norm_or_none(enabled: bool, dim: int) -> nn.LayerNorm | None:
    return nn.LayerNorm(dim) if enabled else None


def _masked(bias: Tensor, blocked: Tensor | None) -> Tensor:
    """Fold a boolean mask into an additive bias with the dtype's most negative finite value
    (not -inf: a fully masked row must stay finite)."""
    if blocked is None:
        return bias
    return bias.masked_fill(blocked, torch.finfo(bias.dtype).min)


class OFAEncoder(nn.Module):
    def __init__(self, config: OFAConfig, embed_tokens: nn.Embedding) -> None:
        super().__init__()
        dim, heads = config.d_model, config.encoder_attention_heads
        self.config = config
        self.num_heads = heads
        self.embed_scale = math.sqrt(dim) if config.scale_embedding else 1.0
        self.layernorm_embedding = _layer_norm_or_none(config.layernorm_embedding, dim)
        self.embed_tokens = embed_tokens
        self.type_embedding = nn.Embedding(2, dim) if config.add_type_embedding else None
        self.embed_images = ResNetTrunk(config.resnet_blocks)
        self.image_proj = nn.Linear(TRUNK_CHANNELS, dim)
        self.patch_layernorm_embedding = _layer_norm_or_none(config.patch_layernorm_embedding, dim)
        self.embed_positions = nn.Embedding(config.max_position_embeddings + 2, dim)
        self.embed_image_positions = nn.Embedding(config.image_bucket_size**2 + 1, dim)
        self.pos_ln = nn.LayerNorm(dim)
        self.image_pos_ln = nn.LayerNorm(dim)
        self.pos_scaling = (dim / heads * config.attn_scale_factor) ** -0.5
        self.pos_q_linear = nn.Linear(dim, dim)
        self.pos_k_linear = nn.Linear(dim, dim)
        self.layers = nn.ModuleList(OFAEncoderLayer(config) for _ in range(config.encoder_layers))
        self.layer_norm = _layer_norm_or_none(config.encoder_normalize_before, dim)
        self.token_rel_pos_table_list = nn.ModuleList(
            nn.Embedding(2 * config.token_bucket_size - 1, heads) for _ in range(config.encoder_layers)
        )
        image_rel = (2 * config.image_bucket_size - 1) ** 2 + 3
        self.image_rel_pos_table_list = nn.ModuleList(
            nn.Embedding(image_rel, heads) for _ in range(config.encoder_layers)
        )
        self.register_buffer("token_rp_bucket", torch.empty(0, dtype=torch.long), persistent=False)
        self.register_buffer("image_rp_bucket", torch.empty(0, dtype=torch.long), persistent=False)

    def _heads(self, x: Tensor) -> Tensor:
        return _split_heads(x, self.num_heads)

    def forward(self, input_ids: Tensor, patch_images: Tensor | None = None) -> EncoderOutput:
        batch, length = input_ids.shape
        device = input_ids.device
        padding = input_ids.eq(self.config.pad_token_id)

        positions = self.embed_positions(torch.arange(length, device=device))[None]  # [1, L, D]
        x = self.embed_scale * self.embed_tokens(input_ids)
        if self.config.entangle_position_embedding:
            x = x + positions
        if self.type_embedding is not None:
            x = x + self.type_embedding.weight[0]
        if self.layernorm_embedding is not None:
            x = self.layernorm_embedding(x)
        x = F.dropout(x, self.config.dropout, self.training)
        position_parts = [self.pos_ln(positions)]

        num_patches = 0
        image_slots = None
        if patch_images is not None:
            features = self.embed_images(patch_images)
            height, width = features.shape[-2:]
            num_patches = height * width
            image_slots = image_position_ids(height, width, self.config.image_bucket_size, device)
            image_positions = self.embed_image_positions(image_slots)[None]  # [1, P, D]
            patches = self.embed_scale * self.image_proj(features.flatten(2).transpose(1, 2))
            if self.config.entangle_position_embedding:
                patches = patches + image_positions
            if self.type_embedding is not None:
                patches = patches + self.type_embedding.weight[1]
            if self.patch_layernorm_embedding is not None:
                patches = self.patch_layernorm_embedding(patches)
            patches = F.dropout(patches, self.config.dropout, self.training)
            x = torch.cat([patches, x], dim=1)
            padding = torch.cat([padding.new_zeros(batch, num_patches), padding], dim=1)
            position_parts.insert(0, self.image_pos_ln(image_positions))

        has_padding = bool(padding.any())
        if has_padding:
            x = x * (1 - padding[..., None].to(x.dtype))
        position_embedding = torch.cat(position_parts, dim=1)  # [1, S, D]
        pos_q = self._heads(self.pos_q_linear(position_embedding)) * self.pos_scaling
        pos_k = self._heads(self.pos_k_linear(position_embedding))
        abs_bias = pos_q @ pos_k.transpose(-1, -2)  # [1, H, S, S]
        blocked = padding[:, None, None, :] if has_padding else None

        token_buckets = self.token_rp_bucket[:length, :length]
        patch_buckets = None
        if image_slots is not None:
            patch_buckets = self.image_rp_bucket[image_slots][:, image_slots]
        for index, layer in enumerate(self.layers):
            bias = abs_bias.clone()
            bias[:, :, -length:, -length:] += self.token_rel_pos_table_list[index](token_buckets).permute(
                2, 0, 1
            )
            if patch_buckets is not None:
                bias[:, :, :num_patches, :num_patches] += self.image_rel_pos_table_list[index](
                    patch_buckets
                ).permute(2, 0, 1)
            x = layer(x, _masked(bias, blocked))
        if self.layer_norm is not None:
            x = self.layer_norm(x)
        return EncoderOutput(x, padding, position_embedding)


# ---------------------------------------------------------------------------------------------
# decoder


@dataclass
class DecoderCache:
    """Incremental decoding state: per-layer self/cross keys and values, the projected key-side
    position embeddings of the tokens seen so far, their position ids and key padding."""

    self_kv: list[tuple[Tensor, Tensor]]
    cross_kv: list[tuple[Tensor, Tensor]]
    self_pos_k: Tensor  # [N, H, T, head_dim]
    positions: Tensor  # [N, T]
    key_padding: Tensor  # [N, T] bool

    @property
    def length(self) -> int:
        return self.positions.shape[1]

    def select(self, index: Tensor, include_cross: bool = True) -> DecoderCache:
        """Rows in ``index`` order. Beam search may skip the cross keys/values: a beam is only
        ever replaced by a beam of the same example, whose encoder memory is identical."""

        def pick(pair):
            return (pair[0].index_select(0, index), pair[1].index_select(0, index))

        return DecoderCache(
            [pick(kv) for kv in self.self_kv],
            [pick(kv) for kv in self.cross_kv] if include_cross else self.cross_kv,
            self.self_pos_k.index_select(0, index),
            self.positions.index_select(0, index),
            self.key_padding.index_select(0, index),
        )


class OFADecoder(nn.Module):
    def __init__(self, config: OFAConfig, embed_tokens: nn.Embedding) -> None:
        super().__init__()
        dim, heads = config.d_model, config.decoder_attention_heads
        self.config = config
        self.num_heads = heads
        self.embed_scale = math.sqrt(dim) if config.scale_embedding else 1.0
        self.embed_tokens = embed_tokens
        self.layers = nn.ModuleList(OFADecoderLayer(config) for _ in range(config.decoder_layers))
        self.layernorm_embedding = _layer_norm_or_none(config.layernorm_embedding, dim)
        self.embed_positions = nn.Embedding(config.max_position_embeddings + 2, dim)
        self.embed_image_positions = nn.Embedding(config.image_bucket_size**2 + 1, dim)
        self.pos_ln = nn.LayerNorm(dim)
        self.image_pos_ln = nn.LayerNorm(dim)
        self.pos_scaling = (dim / heads * config.attn_scale_factor) ** -0.5
        self.self_pos_q_linear = nn.Linear(dim, dim)
        self.self_pos_k_linear = nn.Linear(dim, dim)
        self.cross_pos_q_linear = nn.Linear(dim, dim)
        self.cross_pos_k_linear = nn.Linear(dim, dim)
        self.code_layernorm_embedding = _layer_norm_or_none(config.code_layernorm_embedding, dim)
        self.layer_norm = _layer_norm_or_none(config.decoder_normalize_before, dim)
        self.output_projection = nn.Linear(dim, config.vocab_size, bias=False)
        self.token_rel_pos_table_list = nn.ModuleList(
            nn.Embedding(2 * config.token_bucket_size - 1, heads) for _ in range(config.decoder_layers)
        )
        image_rel = (2 * config.image_bucket_size - 1) ** 2 + 3
        self.image_rel_pos_table_list = nn.ModuleList(
            nn.Embedding(image_rel, heads) for _ in range(config.decoder_layers)
        )
        self.register_buffer("token_rp_bucket", torch.empty(0, dtype=torch.long), persistent=False)
        self.register_buffer("image_rp_bucket", torch.empty(0, dtype=torch.long), persistent=False)
        self.register_buffer("image_position_idx", torch.empty(0, dtype=torch.long), persistent=False)

    def _heads(self, x: Tensor) -> Tensor:
        return _split_heads(x, self.num_heads)

    def forward(
        self,
        input_ids: Tensor,
        encoder_out: EncoderOutput,
        position_ids: Tensor | None = None,
        padding_mask: Tensor | None = None,
        cache: DecoderCache | None = None,
        use_cache: bool = False,
    ) -> tuple[Tensor, DecoderCache | None]:
        """Logits [N, t, V] for ``input_ids`` [N, t], the tokens after those in ``cache``.

        ``position_ids`` [N or 1, t] default to continuing the cache (or 0..t-1); pass them
        explicitly for left-padded rows. ``padding_mask`` [N, t] marks padding tokens, which no
        later token attends to. Relative-position buckets depend only on index differences, so
        a left-padded row sees the same biases as the unpadded row.
        """
        n, length = input_ids.shape
        device = input_ids.device
        past = 0 if cache is None else cache.length
        if position_ids is None:
            offsets = torch.arange(length, device=device)[None]
            position_ids = offsets if cache is None else cache.positions[:, -1:] + 1 + offsets
        if cache is not None or padding_mask is not None:
            position_ids = position_ids.expand(n, length)

        target_positions = self.pos_ln(self.embed_positions(position_ids))  # [N|1, t, D]
        self_pos_q = self._heads(self.self_pos_q_linear(target_positions)) * self.pos_scaling
        self_pos_k = self._heads(self.self_pos_k_linear(target_positions))
        if cache is not None:
            self_pos_k = torch.cat([cache.self_pos_k, self_pos_k], dim=2)
        self_abs = self_pos_q @ self_pos_k.transpose(-1, -2)  # [N|1, H, t, past+t]
        cross_pos_q = self._heads(self.cross_pos_q_linear(target_positions)) * self.pos_scaling
        cross_pos_k = self._heads(self.cross_pos_k_linear(encoder_out.position_embedding))
        cross_bias = cross_pos_q @ cross_pos_k.transpose(-1, -2)  # [N|1, H, t, S]
        if bool(encoder_out.padding_mask.any()):
            cross_bias = _masked(cross_bias, encoder_out.padding_mask[:, None, None, :])

        total = past + length
        key_padding = None
        if padding_mask is not None or cache is not None:
            new_padding = (
                padding_mask if padding_mask is not None else input_ids.new_zeros(n, length, dtype=torch.bool)
            )
            key_padding = new_padding if cache is None else torch.cat([cache.key_padding, new_padding], dim=1)
        blocked = None
        if length > 1:
            query_index = torch.arange(past, total, device=device)[:, None]
            blocked = (torch.arange(total, device=device)[None, :] > query_index)[None, None]
        if key_padding is not None and bool(key_padding.any()):
            pad_block = key_padding[:, None, None, :]
            blocked = pad_block if blocked is None else blocked | pad_block

        x = self.embed_scale * self.embed_tokens(input_ids)
        if self.config.entangle_position_embedding:
            x = x + self.embed_positions(position_ids)
        if self.layernorm_embedding is not None:
            x = self.layernorm_embedding(x)
        x = F.dropout(x, self.config.dropout, self.training)

        buckets = self.token_rp_bucket[past:total, :total]
        memory = encoder_out.last_hidden_state
        new_self, new_cross = [], []
        for index, layer in enumerate(self.layers):
            self_bias = _masked(
                self_abs + self.token_rel_pos_table_list[index](buckets).permute(2, 0, 1), blocked
            )
            x, present_self, present_cross = layer(
                x,
                memory,
                self_bias,
                cross_bias,
                past_self=None if cache is None else cache.self_kv[index],
                past_cross=None if cache is None else cache.cross_kv[index],
            )
            new_self.append(present_self)
            new_cross.append(present_cross)
        if self.layer_norm is not None:
            x = self.layer_norm(x)
        logits = self.output_projection(x)

        if not use_cache:
            return logits, None
        if key_padding is None:
            key_padding = input_ids.new_zeros(n, total, dtype=torch.bool)
        all_positions = position_ids.expand(n, length)
        if cache is not None:
            all_positions = torch.cat([cache.positions, all_positions], dim=1)
        return logits, DecoderCache(
            new_self, new_cross, self_pos_k.expand(n, -1, -1, -1), all_positions, key_padding
        )


# ---------------------------------------------------------------------------------------------
# full model


@dataclass
class OFAOutput:
    logits: Tensor
    encoder_last_hidden_state: Tensor
    encoder_out: EncoderOutput
    cache: DecoderCache | None = None


class OFAModel(nn.Module):
    """OFA encoder-decoder; token embeddings shared by encoder, decoder and output projection."""

    def __init__(self, config: OFAConfig) -> None:
        super().__init__()
        self.config = config
        shared = nn.Embedding(config.vocab_size, config.d_model, padding_idx=config.pad_token_id)
        self.encoder = OFAEncoder(config, shared)
        self.decoder = OFADecoder(config, shared)
        self.tie_weights()
        self.reset_parameters()
        self.rebuild_index_buffers()

    # -- weights ------------------------------------------------------------------------------

    def tie_weights(self) -> None:
        self.decoder.embed_tokens = self.encoder.embed_tokens
        if self.config.share_decoder_input_output_embed:
            self.decoder.output_projection.weight = self.encoder.embed_tokens.weight

    @torch.no_grad()
    def reset_parameters(self, std: float = 0.02) -> None:
        """The port's initialisation: N(0, std) for linear and embedding weights, zero biases and
        relative-position tables; torchvision defaults for the ResNet trunk."""
        trunk = set(self.encoder.embed_images.modules())
        for module in self.modules():
            if module in trunk:
                continue
            if isinstance(module, nn.Linear):
                module.weight.normal_(0.0, std)
                if module.bias is not None:
                    module.bias.zero_()
            elif isinstance(module, nn.Embedding):
                module.weight.normal_(0.0, std)
                if module.padding_idx is not None:
                    module.weight[module.padding_idx].zero_()
        for coder in (self.encoder, self.decoder):
            for table in [*coder.token_rel_pos_table_list, *coder.image_rel_pos_table_list]:
                table.weight.zero_()

    def rebuild_index_buffers(self, device: torch.device | str | None = None) -> None:
        """(Re)compute the index tables; needed after building on the meta device."""
        config = self.config
        device = torch.device(device if device is not None else self.encoder.embed_positions.weight.device)
        sizes = (config.token_bucket_size, config.max_position_embeddings, config.image_bucket_size)
        if device.type == "meta":
            with torch.device("meta"):
                token, image = _index_tables(*sizes)
        else:
            token, image = (table.to(device) for table in _cached_index_tables(*sizes))
        code = make_code_position_idx(config.code_image_size, config.image_bucket_size).to(device)
        # Encoder and decoder hold the same tables; one copy serves both.
        for coder in (self.encoder, self.decoder):
            coder.token_rp_bucket = token
            coder.image_rp_bucket = image
        self.decoder.image_position_idx = code

    def num_parameters(self) -> int:
        """Distinct parameters (the tied embedding counted once)."""
        return sum(p.numel() for p in self.parameters())

    # -- forward ------------------------------------------------------------------------------

    def encode(self, input_ids: Tensor, patch_images: Tensor | None = None) -> EncoderOutput:
        return self.encoder(input_ids, patch_images)

    def decode(
        self,
        input_ids: Tensor,
        encoder_out: EncoderOutput,
        position_ids: Tensor | None = None,
        padding_mask: Tensor | None = None,
        cache: DecoderCache | None = None,
        use_cache: bool = False,
    ) -> tuple[Tensor, DecoderCache | None]:
        return self.decoder(input_ids, encoder_out, position_ids, padding_mask, cache, use_cache)

    def forward(
        self,
        input_ids: Tensor,
        patch_images: Tensor | None = None,
        decoder_input_ids: Tensor | None = None,
        use_cache: bool = False,
    ) -> OFAOutput:
        encoder_out = self.encode(input_ids, patch_images)
        if decoder_input_ids is None:
            decoder_input_ids = input_ids.new_full((input_ids.shape[0], 1), self.config.bos_token_id)
        logits, cache = self.decode(decoder_input_ids, encoder_out, use_cache=use_cache)
        return OFAOutput(logits, encoder_out.last_hidden_state, encoder_out, cache)
