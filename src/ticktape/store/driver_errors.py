"""Driver errors → ticktape store errors, one table per backend.

Each backend declares one :class:`ErrorMap`: an ordered list of :class:`Rule`, most
specific first; the first rule whose driver error type matches (and, if it names
any, one of whose message fragments occurs in the error's text) decides the
ticktape error. ``ErrorMap.wrap(what)`` is the boundary: inside it a driver error
becomes that ticktape error (``raise ... from exc``); ticktape's own errors pass
through unchanged. Nothing a driver raises leaves a backend any other way
(``tests/conformance/test_driver_errors.py``).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

from ticktape.errors import StoreError


@dataclass(frozen=True, slots=True)
class Rule:
    """``driver`` errors (whose text holds one of ``contains``, if given) become ``error``.

    ``message`` is formatted with ``what`` (the operation) and ``text`` (the driver's
    first line).
    """

    driver: type[BaseException] | tuple[type[BaseException], ...]
    error: type[StoreError]
    message: str
    contains: tuple[str, ...] = ()

    def matches(self, exc: BaseException, text: str) -> bool:
        if not isinstance(exc, self.driver):
            return False
        return not self.contains or any(fragment in text for fragment in self.contains)


class ErrorMap:
    """One backend's table of :class:`Rule` (first match wins).

    ``driver`` is every error type the backend's drivers raise: those, and only
    those, are translated; an error no rule matches becomes a plain
    :class:`~ticktape.errors.StoreError` naming the backend.
    """

    def __init__(
        self,
        backend: str,
        driver: tuple[type[BaseException], ...],
        rules: Sequence[Rule],
    ) -> None:
        self.backend = backend
        self.driver = driver
        self.rules = tuple(rules)

    def translate(self, exc: BaseException, what: str) -> StoreError:
        raw = str(exc).strip()
        text = raw.splitlines()[0] if raw else type(exc).__name__
        for rule in self.rules:
            if rule.matches(exc, text):
                return rule.error(rule.message.format(what=what, text=text))
        return StoreError(f"{what}: {self.backend} error ({text})")

    @contextmanager
    def wrap(self, what: str) -> Iterator[None]:
        """Inside: a driver error is raised as its ticktape error, from the original."""
        try:
            yield
        except self.driver as exc:
            raise self.translate(exc, what) from exc
