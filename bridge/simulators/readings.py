"""Readings of an ambiguous or silent spec: one switch per question, chosen per simulator.

Where a vendor's reference contradicts itself or says nothing, its simulator serves each plausible
reading, so the bridge can be tested against every one. A vendor declares its questions and their
answers in ``VendorProfile.readings`` (the first answer of each is the default); tests, the demo and
``magbridge simulate --reading VENDOR.QUESTION=ANSWER`` choose, and ``GET|POST /_sim/readings``
reads or changes them at run time. ``/_sim/reset`` keeps the readings chosen: they describe which
vendor this is, not its state.
"""

from __future__ import annotations

from collections.abc import Mapping

__all__ = ["Readings", "UnknownReading", "parse_reading"]


class UnknownReading(ValueError):
    """A vendor, question or answer that no simulator has; the message names it."""


class Readings:
    """The answer chosen for each of a vendor's questions."""

    def __init__(self, vendor: str, choices: Mapping[str, tuple[str, ...]]):
        self.vendor = vendor
        self.choices = dict(choices)
        self.current = {question: answers[0] for question, answers in self.choices.items()}

    def __getitem__(self, question: str) -> str:
        return self.current[question]

    def update(self, changes: Mapping[str, object]) -> None:
        """Choose answers; a question or answer the vendor does not have is a ``ValueError`` naming it."""
        for question, answer in changes.items():
            answers = self.choices.get(question)
            if answers is None:
                known = ", ".join(sorted(self.choices)) or "none"
                raise UnknownReading(f"{self.vendor} has no reading {question!r} (known: {known})")
            if answer not in answers:
                raise UnknownReading(f"{self.vendor}.{question}: must be one of {', '.join(answers)}")
        for question, answer in changes.items():
            self.current[question] = str(answer)


def parse_reading(text: str) -> tuple[str, str, str]:
    """``VENDOR.QUESTION=ANSWER`` as its three parts, or ``ValueError`` saying the form."""
    name, sep, answer = text.partition("=")
    vendor, dot, question = name.partition(".")
    if not (sep and dot and vendor and question and answer):
        raise UnknownReading(f"{text!r}: expected VENDOR.QUESTION=ANSWER, e.g. magnews.merge_result=examples")
    return vendor, question, answer
