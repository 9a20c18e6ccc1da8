"""What ``openai-chat`` sends and reads: chat messages, request bodies, answers and candidate scores.

The conversation is the one the in-process chat models build (an optional system message, then one user
turn with the image and the rendered prompt); the image travels as a ``data:`` URL of the file's own
bytes with its real MIME type, never decoded and encoded again. Ranking appends each candidate as the
start of the assistant's turn and reads the server's log-probabilities of those prompt tokens (vLLM's
``prompt_logprobs`` extension with ``continue_final_message``).
"""

from __future__ import annotations

import base64
import io
from typing import Any

from PIL import Image

from vlmbench.api import GenerationSpec, Request, SampleError

# Pillow's name of a format -> the MIME type servers know it by (Pillow's own table lacks a few).
_EXTRA_MIME = {"WEBP": "image/webp", "MPO": "image/jpeg"}


def image_mime(data: bytes) -> str:
    """The MIME type of image bytes, from their header (the loader has checked that they decode)."""
    with Image.open(io.BytesIO(data)) as image:
        name = image.format or ""
    return Image.MIME.get(name) or _EXTRA_MIME.get(name) or "application/octet-stream"


def data_url(data: bytes) -> str:
    return f"data:{image_mime(data)};base64,{base64.b64encode(data).decode('ascii')}"


def messages(request: Request, system_prompt: str, detail: str | None) -> list[dict[str, Any]]:
    """The conversation of one request, with its image inline."""
    if request.image_bytes is None:
        raise SampleError("missing_image", f"sample {request.sample_id}: no image bytes to send")
    image: dict[str, Any] = {"url": data_url(request.image_bytes)}
    if detail:
        image["detail"] = detail
    conversation: list[dict[str, Any]] = []
    if system_prompt:
        conversation.append({"role": "system", "content": system_prompt})
    conversation.append(
        {
            "role": "user",
            "content": [{"type": "image_url", "image_url": image}, {"type": "text", "text": request.prompt}],
        }
    )
    return conversation


def sampling(generation: GenerationSpec, seed: int, token_field: str) -> dict[str, Any]:
    """The request fields of the task's generation settings: the answer length always (servers default
    to a thousand tokens or more), temperature 0 (greedy) unless the settings sample."""
    fields: dict[str, Any] = {token_field: generation.max_new_tokens}
    if generation.do_sample:
        fields["temperature"] = 1.0 if generation.temperature is None else generation.temperature
        if generation.top_p is not None:
            fields["top_p"] = generation.top_p
        fields["seed"] = seed
    else:
        fields["temperature"] = 0.0
    if generation.repetition_penalty is not None:
        fields["repetition_penalty"] = generation.repetition_penalty  # vLLM's and SGLang's extension
    return fields


def answer_text(data: dict[str, Any]) -> str:
    """The assistant's answer in a chat completion, with the whitespace around it removed (as the
    in-process models return theirs)."""
    choices = data.get("choices")
    if not isinstance(choices, list) or not choices:
        raise ValueError("the response has no choices")
    message = choices[0].get("message") if isinstance(choices[0], dict) else None
    content = message.get("content") if isinstance(message, dict) else None
    if isinstance(content, list):  # content parts, as some servers return them
        content = "".join(p.get("text", "") for p in content if isinstance(p, dict))
    if not isinstance(content, str):
        raise ValueError("the response's message has no text content")
    return content.strip()


def rank_body(conversation: list[dict[str, Any]], candidate: str) -> dict[str, Any]:
    """The fields that score ``candidate`` as the start of the assistant's answer."""
    return {
        "messages": [*conversation, {"role": "assistant", "content": candidate}],
        "add_generation_prompt": False,
        "continue_final_message": True,
        "prompt_logprobs": 0,
        "max_tokens": 1,
        "temperature": 0.0,
    }


def prompt_token_logprobs(data: dict[str, Any]) -> list[tuple[str, float]]:
    """(decoded token, log-probability) of each prompt token after the first, from ``prompt_logprobs``:
    one ``{token_id: {logprob, decoded_token}}`` per position (the prompt's own token when 0 more are asked)."""
    entries = data.get("prompt_logprobs")
    if not isinstance(entries, list) or not entries:
        raise ValueError("the response has no prompt_logprobs")
    tokens = []
    for entry in entries:
        if entry is None:
            continue  # the first token: nothing before it to condition on
        if not isinstance(entry, dict) or len(entry) != 1:
            raise ValueError("prompt_logprobs has an entry that is not one token")
        (info,) = entry.values()
        logprob = info.get("logprob") if isinstance(info, dict) else None
        if not isinstance(logprob, (int, float)):
            raise ValueError("prompt_logprobs has an entry without a logprob")
        tokens.append((str(info.get("decoded_token") or ""), float(logprob)))
    return tokens


def candidate_score(tokens: list[tuple[str, float]], candidate: str, normalize: str) -> float:
    """The log-probability of ``candidate``'s tokens, the last ones of the prompt: they are found by their
    text, walking back until it spells the candidate (a token that also holds the space or newline before
    the answer counts with it). ``normalize="mean"`` divides by the number of tokens."""
    wanted = candidate.strip()
    text, total = "", 0.0
    for count, (piece, logprob) in enumerate(reversed(tokens), start=1):
        text, total = piece + text, total + logprob
        if text.strip() == wanted:
            return total / count if normalize == "mean" else total
        if len(text.strip()) > len(wanted) or not wanted.endswith(text.strip()):
            break
    raise ValueError(f"the server's prompt tokens do not end with the candidate {candidate!r}")
