"""``openai-chat``: any model behind an OpenAI-compatible chat-completions server (vLLM, SGLang, TGI,
``transformers serve``, Ollama) or a hosted API, as a vlmbench model.

``plugin`` holds the model plugin (options, identity, generate and rank), ``connection`` the HTTP client
(concurrency, timeouts, retries, rate limit, usage and latency), ``payload`` what a request and a response
look like (messages with the image as a data URL, answers, prompt log-probabilities) and ``server`` what
is asked of a server before any model work (its model list, whether it returns prompt log-probabilities).
docs/serving.md has the recipes for each engine.
"""
