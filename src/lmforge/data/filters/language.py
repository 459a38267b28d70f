"""Language identification with py3langid (its model ships inside the wheel: nothing is downloaded).

Every document gets `meta.lang` (ISO 639-1) and `meta.lang_score` (a probability in [0, 1], from
`norm_probs=True`). With a keep-list, other languages are rejected as `wrong_language`; a top
probability under `min_score` is rejected as `low_language_score`.
"""

from __future__ import annotations

from functools import lru_cache

from lmforge.data.config import LanguageConfig
from lmforge.data.document import Document
from lmforge.data.filters.base import Filter

MAX_CHARS = 20_000  # the first 20k characters decide; langid's cost is linear in length


@lru_cache(maxsize=1)
def _identifier():  # noqa: ANN202 - py3langid.langid.LanguageIdentifier
    from py3langid.langid import MODEL_FILE, LanguageIdentifier

    return LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)


def identify(text: str) -> tuple[str, float]:
    """(language code, probability) of `text`."""
    lang, score = _identifier().classify(text[:MAX_CHARS].replace("\n", " "))
    return lang, float(score)


class LanguageFilter(Filter):
    name = "language"

    def __init__(self, cfg: LanguageConfig | None = None) -> None:
        super().__init__()
        self.cfg = cfg or LanguageConfig()
        self.keep = {code.lower() for code in self.cfg.languages}
        self.counts: dict[str, int] = {}

    def filter(self, doc: Document) -> bool | tuple[bool, str]:
        lang, score = identify(doc.text)
        doc.meta["lang"], doc.meta["lang_score"] = lang, round(score, 4)
        self.counts[lang] = self.counts.get(lang, 0) + 1
        if self.keep and lang not in self.keep:
            return False, "wrong_language"
        if score < self.cfg.min_score:
            return False, "low_language_score"
        return True
