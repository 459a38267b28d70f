"""Content classification: keep documents a fastText classifier scores at least `min_score` for
`label` (reject `classifier_low_score`), or only annotate them (`annotate_only`). The score is in
`meta["classifier_<label>"]`."""

from __future__ import annotations

from lmforge.data.config import ClassifierConfig
from lmforge.data.document import Document
from lmforge.data.filters.base import Filter


class ClassifierFilter(Filter):
    name = "classifier"

    def __init__(self, cfg: ClassifierConfig) -> None:
        super().__init__()
        from lmforge.data.classifier import FastTextScorer

        self.cfg = cfg
        self.scorer = FastTextScorer(cfg.model, cfg.label)
        self.key = "classifier_" + cfg.label.removeprefix("__label__")

    def filter(self, doc: Document) -> bool | tuple[bool, str]:
        score = self.scorer.score(doc.text)
        doc.meta[self.key] = round(score, 4)
        return self.cfg.annotate_only or score >= self.cfg.min_score or (False, "classifier_low_score")
