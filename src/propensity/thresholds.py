"""MQL threshold and grade bands: what turns a probability into a decision.

Scores are probabilities x 100, rounded. A lead is an MQL when its score reaches the MQL
threshold; its grade is the first band whose lower bound it reaches (A, then B, then C), else D.
Until marketing ops set their own, version 0 holds the defaults below.
"""

from __future__ import annotations

from pydantic import BaseModel, Field, model_validator


class ThresholdSet(BaseModel):
    version: int = 0
    model: str = "lead-conversion"
    mql: float = Field(default=50.0, ge=0, le=100,
                       description="score at or above which a lead is an MQL")
    grade_a: float = Field(default=75.0, ge=0, le=100)
    grade_b: float = Field(default=50.0, ge=0, le=100)
    grade_c: float = Field(default=25.0, ge=0, le=100)

    @model_validator(mode="after")
    def _bands_ordered(self) -> ThresholdSet:
        if not self.grade_a >= self.grade_b >= self.grade_c:
            raise ValueError("grade bands must be ordered: grade_a >= grade_b >= grade_c")
        return self

    def grade(self, score: float) -> str:
        if score >= self.grade_a:
            return "A"
        if score >= self.grade_b:
            return "B"
        if score >= self.grade_c:
            return "C"
        return "D"

    def is_mql(self, score: float) -> bool:
        return score >= self.mql


def to_score(probability: float) -> int:
    """0-100, half away from zero (so 0.125 -> 13, as a person would round it)."""
    return int(min(100, max(0, int(probability * 100 + 0.5))))
