"""The result type."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Answer:
    """One answer span: ``text == context[start:end]`` (character offsets into the context)."""

    text: str
    score: float
    start: int
    end: int

    def as_pipeline_dict(self) -> dict:
        """The dict ``pipeline('question-answering')`` returns for this answer."""
        return {"score": self.score, "start": self.start, "end": self.end, "answer": self.text}
