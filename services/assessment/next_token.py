"""The local model's probabilities, read in this process: verdicts and short stretches of text.

:class:`NextTokenScorer` reads how likely each of a few answers is from the next-token
distribution (the examiner's verdict); :class:`WindowScorer` how likely a few words of a
sentence are after what precedes them (the tutors' check of article, pronoun and contraction
forms, :mod:`services.assessment.confusion`).

A 1.5B model asked to *write* a verdict picks the same hedge almost every time ("incomplete"
for 70 of 71 examiner answers in ``bench.tutor_eval``), yet the probabilities it gives the
verdicts still separate right answers from wrong ones. This reads them: the prompt is
evaluated in this process by llama.cpp (``llama-cpp-python``; the GGUF is memory-mapped, so
its pages are shared with the LLM server's), and the next token's distribution is compared
over the answers' first tokens. The HTTP server cannot give these: llama-cpp-python returns
logprobs only from a model loaded with ``logits_all``, which doubles its prompt time.

The model keeps the prompt it read last, so a prompt that starts the same way (the same
instructions and question, another answer) only reads its new tokens: :meth:`warm` reads a
prompt's known part before the answer comes.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any, cast

import numpy as np


class NextTokenScorer:
    """A local model that scores the next token of a chat prompt.

    Args:
        model_path: The GGUF file (the local tier's LLM).
        context_tokens: The context window, tokens (prompt plus nothing: no generation).
        threads: CPU threads for evaluation.

    Raises:
        ValueError: the model cannot be loaded, or has no chat template.
    """

    def __init__(self, model_path: Path, context_tokens: int = 1024, threads: int = 2):
        from llama_cpp import Llama
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        self._llm = Llama(
            str(model_path),
            n_ctx=context_tokens,
            n_batch=256,
            n_threads=threads,
            logits_all=False,
            verbose=False,
        )
        template = self._llm.metadata.get("tokenizer.chat_template")
        if not template:
            raise ValueError(f"{model_path} has no chat template")
        vocab = self._llm._model
        self._format = Jinja2ChatFormatter(
            template,
            eos_token=self._llm.detokenize([vocab.token_eos()]).decode(errors="ignore"),
            bos_token=self._llm.detokenize([vocab.token_bos()]).decode(errors="ignore"),
        )
        self._lock = threading.Lock()

    def prompt(self, messages: list[dict[str, str]], answer_prefix: str = "") -> str:
        """``messages`` in the model's chat template, the assistant's turn begun.

        ``answer_prefix`` is what the assistant's answer starts with (e.g. ``{"verdict": "``).
        """
        rendered: Any = self._format(messages=cast(Any, messages))
        return str(rendered.prompt) + answer_prefix

    def _eval(self, text: str) -> None:
        """Evaluate ``text``, reusing the longest prefix the model already holds."""
        tokens = self._llm.tokenize(text.encode(), add_bos=False, special=True)
        held = list(self._llm.input_ids[: self._llm.n_tokens])
        same = 0
        limit = min(len(held), len(tokens) - 1)
        while same < limit and held[same] == tokens[same]:
            same += 1
        if len(tokens) > self._llm.n_ctx():
            raise ValueError(f"prompt of {len(tokens)} tokens > context {self._llm.n_ctx()}")
        self._llm.n_tokens = same
        self._llm.eval(tokens[same:])

    def warm(self, text: str) -> None:
        """Read ``text`` now so a later prompt starting with it reads only the rest (blocking).

        Raises:
            ValueError: ``text`` does not fit the context window.
        """
        with self._lock:
            self._eval(text)

    def probabilities(self, text: str, options: Sequence[str]) -> dict[str, float]:
        """The chance of each option as the continuation of ``text``, normalised over them.

        Each option is scored by its first token (options must differ in it). Blocking:
        ~20 ms per new prompt token on 2 cores for the 1.5B model.

        Returns:
            Option → probability; the values sum to 1.

        Raises:
            ValueError: two options share a first token, or the prompt does not fit.
        """
        firsts = [self._first_token(text, o) for o in options]
        if len(set(firsts)) != len(firsts):
            raise ValueError(f"options {list(options)} share a first token")
        with self._lock:
            self._eval(text)
            logits = np.ctypeslib.as_array(
                self._llm._ctx.get_logits(), shape=(self._llm.n_vocab(),)
            )
            chosen = [float(logits[t]) for t in firsts]
        top = max(chosen)
        weights = [math.exp(v - top) for v in chosen]
        total = sum(weights)
        return {o: w / total for o, w in zip(options, weights, strict=True)}

    def _first_token(self, text: str, option: str) -> int:
        base = self._llm.tokenize(text.encode(), add_bos=False, special=True)
        full = self._llm.tokenize((text + option).encode(), add_bos=False, special=True)
        if len(full) <= len(base) or full[: len(base)] != base:
            raise ValueError(f"option {option!r} merges with the prompt's last token")
        return int(full[len(base)])


class WindowScorer:
    """A local model that scores stretches of short texts token by token.

    Keeps the logits of every token (``logits_all``), so its context is small: a sentence.

    Args:
        model_path: The GGUF file.
        context_tokens: The context window, tokens (the longest text scored).
        threads: CPU threads for evaluation.
    """

    def __init__(self, model_path: Path, context_tokens: int = 160, threads: int = 2):
        from llama_cpp import Llama

        self._llm = Llama(
            str(model_path),
            n_ctx=context_tokens,
            n_batch=context_tokens,
            n_threads=threads,
            logits_all=True,
            verbose=False,
        )
        self._held: list[int] = []
        self._lock = threading.Lock()

    def logprob(self, text: str, start: int) -> float:
        """Log-probability (natural log) of ``text``'s tokens from character ``start`` on.

        The tokens before the one that holds character ``start`` are context only; they
        are read once and kept while later texts start the same way. Blocking: ~40 ms per
        new token on 2 cores for the 1.5B model.

        Raises:
            ValueError: ``text`` is longer than the context window.
        """
        llm = self._llm
        tokens = llm.tokenize(text.encode(), add_bos=False, special=False)
        if len(tokens) > llm.n_ctx():
            raise ValueError(f"text of {len(tokens)} tokens > context {llm.n_ctx()}")
        before = llm.tokenize(text[:start].encode(), add_bos=False, special=False)
        first = 0
        while first < min(len(before), len(tokens)) and before[first] == tokens[first]:
            first += 1
        first = max(first, 1)
        with self._lock:
            same = 0
            while same < min(len(self._held), first) and self._held[same] == tokens[same]:
                same += 1
            llm.n_tokens = same
            llm.eval(tokens[same:])
            self._held = list(tokens)
            rows = np.asarray(llm.scores[first - 1 : len(tokens) - 1], dtype=np.float64)
        top = rows.max(axis=1, keepdims=True)
        norm = top[:, 0] + np.log(np.exp(rows - top).sum(axis=1))
        picked = rows[np.arange(len(rows)), tokens[first:]]
        return float((picked - norm).sum())
