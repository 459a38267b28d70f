"""Text cleaning: line endings, BOM, unicode normalisation, control characters, whitespace.

Every function is pure (str -> str) so steps, tests and benchmarks share them.
"""

from __future__ import annotations

import re
import unicodedata

from lmforge.data.document import Document
from lmforge.data.filters.base import Step

# C0/C1 control characters except \t (09) and \n (0A); \r is handled by newline normalisation first.
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")
_TRAILING_WS = re.compile(r"[ \t\u00a0\u3000]+$", re.MULTILINE)
# Runs of horizontal whitespace after the first non-space character of a line (indentation is kept,
# because code blocks and verse depend on it).
_INNER_WS = re.compile(r"(?<=\S)[ \t\u00a0\u2000-\u200a\u202f\u205f\u3000]{2,}")
_BLANK_RUNS = re.compile(r"\n{3,}")


def normalize_newlines(text: str) -> str:
    """CRLF and lone CR -> LF; a leading BOM (U+FEFF) is dropped."""
    if text.startswith("\ufeff"):
        text = text[1:]
    if "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    return text


def strip_control(text: str) -> str:
    """Remove control characters (NUL, escape codes, C1 controls) but keep newline and tab."""
    return _CONTROL.sub("", text)


def normalize_whitespace(text: str) -> str:
    """Strip line ends, collapse inner runs of spaces to one, at most one blank line in a row,
    no leading/trailing blank lines. Leading indentation is kept."""
    text = _TRAILING_WS.sub("", text)
    text = _INNER_WS.sub(" ", text)
    text = _BLANK_RUNS.sub("\n\n", text)
    return text.strip("\n")


def fix_unicode(text: str) -> str:
    """Repair mojibake and other encoding damage with ftfy ("cafÃ©" -> "café"). Curly quotes, HTML
    entities in plain text and the like are left as they are: they are content, not damage."""
    if text.isascii():  # nothing ftfy would change
        return text
    import ftfy

    return ftfy.fix_text(text, _ftfy_config())


def _ftfy_config():  # noqa: ANN202 - ftfy.TextFixerConfig, imported lazily
    global _FTFY
    if _FTFY is None:
        import ftfy

        _FTFY = ftfy.TextFixerConfig(unescape_html=False, uncurl_quotes=False, normalization=None, explain=False)
    return _FTFY


_FTFY = None


def clean_text(text: str, *, fix: bool = False, nfc: bool = True, control: bool = True,
               whitespace: bool = True) -> str:
    """The cleaning chain of the data stage, in order: newlines/BOM, ftfy repair, NFC, control chars,
    whitespace."""
    text = normalize_newlines(text)
    if fix:
        text = fix_unicode(text)
    if nfc and not text.isascii():
        text = unicodedata.normalize("NFC", text)
    if control:
        text = strip_control(text)
    if whitespace:
        text = normalize_whitespace(text)
    return text


def dedup_key(text: str) -> str:
    """Normalised form for exact dedup: whitespace-insensitive (indentation, wrapping) but case- and
    punctuation-sensitive, so only true copies collide."""
    return " ".join(text.split())


class CleanStep(Step):
    """The configured cleaning chain as a pipeline step (a mapper: it never rejects)."""

    name = "clean"

    def __init__(self, *, fix: bool = False, nfc: bool = True, control: bool = True, whitespace: bool = True) -> None:
        super().__init__()
        self.kw = {"fix": fix, "nfc": nfc, "control": control, "whitespace": whitespace}

    def process(self, doc: Document) -> Document:
        doc.text = clean_text(doc.text, **self.kw)
        return doc
