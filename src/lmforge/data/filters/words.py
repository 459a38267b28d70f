"""English word splitting that follows spaCy's rule-based tokenizer (what datatrove's Gopher filters
count as words), without importing spaCy.

spaCy (`spacy.blank("en")`, the tokenizer datatrove loads for English) splits on whitespace, then
peels prefixes (opening punctuation, quotes, currency) and suffixes (closing punctuation, quotes,
`'s`, a period after a lowercase letter or digit or after two capitals) off each chunk, checking
special cases (contractions `don't` → `do n't`, abbreviations `e.g.`, `Mr.`) at every step, keeps
URLs whole, and splits the rest on infixes (hyphens between letters, `.` between a lowercase and a
capital letter, `,` between letters, `:<>=/` before a letter, `+-*^` between digits). This module
reproduces those rules (and the exception lists, after spaCy's, MIT-licensed) with Python's `re`;
on the 1,606 texts of `benchmarks/data_vs_datatrove.py` it gives spaCy's exact token list for 1,597
and differs on 61 of 742,761 tokens (rare emoticon merges, case rules of scripts beyond
Latin/Cyrillic/Greek; whitespace-free runs over 1,000 characters stay one token).

    spacy_words("Don't stop... (e.g. U.S.-made)")
    -> ['Do', "n't", 'stop', '...', '(', 'e.g.', 'U.S.-made', ')']
"""

from __future__ import annotations

import re

_Q = "'\"”“`‘´’‚,„»«「」『』（）〔〕【】《》〈〉⟦⟧"  # spaCy's quotes (CONCAT_QUOTES)
_PUNCT = ["…", "……", ",", ":", ";", r"\!", r"\?", "¿", "؟", "¡", r"\(", r"\)", r"\[", r"\]", r"\{", r"\}", "<", ">",
          "_", "#", r"\*", "&", "。", "？", "！", "，", "、", "；", "：", "～", "·", "।", "،", "۔", "؛", "٪"]
_ELLIPSES = [r"\.\.+", "…"]
_QUOTES = [re.escape(c) for c in _Q]
_CURRENCY = [r"\$", "£", "€", "¥", "฿", r"US\$", r"C\$", r"A\$", "₽", "₹", "₩", "₪", "₫", "₱", "₴", "₺", "₿"]
_ICONS = (r"[\u00A6\u00A9\u00AE\u00B0\u2100-\u214F\u2190-\u21FF\u2300-\u23FF\u2500-\u27BF\u2B00-\u2BFF"
          r"\U0001F000-\U0001FAFF]")
_UNITS = ("km km² km³ m m² m³ dm dm² dm³ cm cm² cm³ mm mm² mm³ ha µm nm yd in ft kg g mg µg t lb oz m/s km/h kmh mph "
          "hPa Pa mbar mb MB kb KB gb GB tb TB T G M K %").split()
_A = r"[^\W\d_]"  # any letter
_AU = r"[A-ZÀ-ÖØ-ÞА-ЯЁΑ-Ω]"
_HYPHENS = r"-|–|—|--|---|——|~"

_PREFIX = re.compile("^(?:" + "|".join(["§", "%", "=", "—", "–", r"\+(?![0-9])"] + _PUNCT + _ELLIPSES + _QUOTES
                                        + _CURRENCY + [_ICONS]) + ")")
_SUFFIX = re.compile("(?:" + "|".join(_PUNCT + _ELLIPSES + _QUOTES + [_ICONS] + ["'s", "'S", "’s", "’S", "—", "–"] + [
    r"(?<=[0-9])\+", r"(?<=°[FfCcKk])\.", r"(?<=[0-9])(?:" + "|".join(_CURRENCY) + ")",
    r"(?<=[0-9])(?:" + "|".join(sorted(map(re.escape, _UNITS), key=len, reverse=True)) + ")",
    r"(?<=[0-9%²\-+…,:;!?()\[\]{}<>_#*&" + re.escape(_Q) + r"])\.", rf"(?<={_AU}{_AU})\.",
]) + ")$")
_INFIX = re.compile("|".join(_ELLIPSES + [_ICONS] + [
    r"(?<=[0-9])[+\-*^](?=[0-9-])", rf"(?<=[a-zß-öø-ÿ{re.escape(_Q)}])\.(?=[A-ZÀ-ÖØ-Þ{re.escape(_Q)}])",
    rf"(?<={_A}),(?={_A})", rf"(?<=[^\W_])(?:{_HYPHENS})(?={_A})", rf"(?<=[^\W_])[:<>=/](?={_A})",
]))
# spaCy's URL_MATCH, simplified: the top-level domain is lowercase (so `collections.abc` is one token,
# `ast.Constant` is not).
_URL = re.compile(r"^(?:[\w+\-.]{2,}://)?(?:\S+(?::\S*)?@)?(?:(?:[^\W_][\w-]{0,62}\.|[^\W_]\.)+[a-z\u00a1-\uffff]{2,63}"
                  r"|(?:\d{1,3}\.){3}\d{1,3})(?::\d{2,5})?(?:[/?#]\S*)?$")

# Abbreviations spaCy keeps whole with their period (its English exceptions).
_ABBREV = (
    "Adm. Ak. Ala. Apr. Ariz. Ark. Aug. Bros. Calif. Co. Colo. Conn. Corp. D.C. Dec. Del. Dr. E.G. E.g. Feb. Fla. "
    "Ga. Gen. Gov. I.E. I.e. Ia. Id. Ill. Inc. Ind. Jan. Jr. Jul. Jun. Kan. Kans. Ky. La. Ltd. Mar. Mass. Md. "
    "Messrs. Mich. Minn. Miss. Mo. Mont. Mr. Mrs. Ms. Mt. N.C. N.D. N.H. N.J. N.M. N.Y. Neb. Nebr. Nev. Nov. Oct. "
    "Okla. Ore. Pa. Ph.D. Prof. Rep. Rev. S.C. Sen. Sep. Sept. St. Tenn. Va. Wash. Wis. a.m. co. e.g. i.e. p.m. "
    "v.s. vs. ä. ö. ü."
).split() + [f"{c}." for c in "abcdefghijklmnopqrstuvwxyz"]
_EMOTICONS = (
    "(*_*) (-8 (-: (-; (-_-) (._.) (: (; (= (>_<) (^_^) (o: )-: ): -_- -__- ._. 0.0 0.o 0_0 0_o 8) 8-) 8-D 8D "
    ":( :(( :((( :() :) :)) :))) :* :-( :-(( :-((( :-) :-)) :-))) :-* :-/ :-0 :-3 :-> :-D :-O :-P :-X :-] :-o "
    ":-p :-x :-| :-} :/ :0 :1 :3 :> :D :O :P :X :] :o :o) :p :x :| :} ;) ;-) ;-D ;D ;_; <.< </3 <3 <33 <333 =( "
    "=) =/ =3 =D =[ =] =| >.< >.> >:( >:o ><(((*> @_@ O.O O.o O_O O_o V.V V_V :'( :') :'-( :'-) ' '' C++"
).split()
_PRONOUN_SUFFIXES = {  # which contractions spaCy knows after which word
    "i": ["'m", "'ma", "'ll", "'ll've", "'d", "'d've", "'ve"],
    **{p: ["'ll", "'ll've", "'d", "'d've", "'ve", "'re"] for p in ("you", "we", "they")},
    **{p: ["'ll", "'ll've", "'d", "'d've", "'s"] for p in ("he", "she", "it")},
    **{p: ["'s", "'ll", "'ll've", "'d", "'d've", "'re", "'ve"]
       for p in ("who", "what", "when", "where", "why", "how", "there", "that", "this", "these", "those")},
}
_NT_VERBS = ["ca", "wo", "sha", "ai", "do", "does", "did", "is", "are", "was", "were", "has", "have", "had", "could",
             "would", "should", "might", "must", "need", "dare", "may", "ought"]
_NO_APOSTROPHE_EXCLUDED = {"ill", "its", "hell", "shell", "shed", "were", "well", "whore", "wed've"}
_WHOLE = ["and/or", "'s", "'S", "'d", "'ll", "'re", "'em", "'cause", "'cos", "'coz", "'cuz", "'bout", "'nuff", "y'all",
          "ma'am", "o'clock", "c'mon", "ol'", "goin'", "doin'", "havin'", "lovin'", "nothin'", "nuthin'", "somethin'"]


def _specials() -> dict[str, list[str]]:
    """Special cases: abbreviations, emoticons, contractions (lower- and Title-case, both apostrophes,
    and without apostrophe as spaCy also splits `dont` → `do nt`), times such as `10am`."""
    out: dict[str, list[str]] = {a: [a] for a in _ABBREV + _EMOTICONS}

    def add(parts: list[str]) -> None:
        for cased in (parts, [parts[0].title(), *parts[1:]]):
            for apo in ("'", "’"):
                p = [x.replace("'", apo) for x in cased]
                out.setdefault("".join(p), p)
            bare = [x.replace("'", "") for x in cased]
            if "".join(bare).lower() not in _NO_APOSTROPHE_EXCLUDED:
                out.setdefault("".join(bare), bare)

    for pron, sufs in _PRONOUN_SUFFIXES.items():
        for suf in sufs:
            add([pron, *re.findall(r"'[a-z]+", suf)] if suf != "'ma" else [pron, "'m", "a"])
    for stem in _NT_VERBS:
        add([stem, "n't"])
        add([stem, "n't", "'ve"])
    for modal in ("could", "would", "should", "might", "must", "not"):
        add([modal, "'ve"])
    for word, parts in {"cannot": ["can", "not"], "gonna": ["gon", "na"], "gotta": ["got", "ta"],
                        "let's": ["let", "'s"]}.items():
        out.setdefault(word, parts)
        out.setdefault(word.title(), [parts[0].title(), *parts[1:]])
    for w in _WHOLE:
        out.setdefault(w, [w])
        out.setdefault(w.replace("'", "’"), [w.replace("'", "’")])
    for h in range(1, 13):
        for suffix in ("am", "pm", "a.m.", "p.m."):
            out[f"{h}{suffix}"] = [str(h), suffix]
    return out


SPECIALS = _specials()
_SIMPLE = re.compile(r"([(\[{\"“‘«]?)([^\W\d_]+)([,;:!?)\]}\"”’».]?)")
_MERGEABLE = {k for k in SPECIALS if not k.isalpha()}  # specials the affix rules would cut: re-joined after


def _merge_specials(toks: list[str]) -> list[str]:
    """spaCy v3 re-joins adjacent pieces of one chunk that spell a special case (`foo():` → `foo(`, `):`)."""
    out, i = [], 0
    while i < len(toks):
        for n in (4, 3, 2):
            if i + n <= len(toks) and (joined := "".join(toks[i:i + n])) in _MERGEABLE:
                out.extend(SPECIALS[joined])
                i += n
                break
        else:
            out.append(toks[i])
            i += 1
    return out


def _affixes(s: str, out: list[str]) -> None:
    """spaCy's `_split_affixes` + `_attach_tokens` for one whitespace-free chunk."""
    prefixes: list[str] = []
    suffixes: list[str] = []
    last = -1
    while s and len(s) != last:
        if s in SPECIALS:
            break
        last = len(s)
        m = _PREFIX.match(s)
        pre = m.end() if m else 0
        if pre and s[pre:] in SPECIALS:
            prefixes.append(s[:pre])
            s = s[pre:]
            break
        m = _SUFFIX.search(s[pre:])
        suf = len(m.group()) if m else 0
        if not suf and len(s) - pre > 1 and s[-1] == "." and s[-2].isalpha() and not s[-2].isupper():
            suf = 1  # a period after a lowercase or caseless letter (spaCy's ALPHA_LOWER includes Arabic, CJK …)
        if suf and s[:-suf] in SPECIALS:
            suffixes.append(s[-suf:])
            s = s[:-suf]
            break
        if pre and suf and pre + suf <= len(s):
            prefixes.append(s[:pre])
            suffixes.append(s[-suf:])
            s = s[pre:-suf]
        elif pre:
            prefixes.append(s[:pre])
            s = s[pre:]
        elif suf:
            suffixes.append(s[-suf:])
            s = s[:-suf]
        if s in SPECIALS:
            break
    out.extend(prefixes)
    if s:
        if s in SPECIALS:
            out.extend(SPECIALS[s])
        elif _URL.match(s):
            out.append(s)
        else:
            start = 0
            for m in _INFIX.finditer(s):
                a, b = m.span()
                if a == 0:
                    continue
                if a != start:
                    out.append(s[start:a])
                if a != b:
                    out.append(s[a:b])
                start = b
            if s[start:]:
                out.append(s[start:])
    out.extend(reversed(suffixes))


def spacy_words(text: str) -> list[str]:
    """Tokens of `text` as datatrove's English word tokenizer gives them (whitespace dropped)."""
    out: list[str] = []
    cache = _CACHE
    for chunk in text.split():
        if chunk.isalpha() and chunk not in SPECIALS:  # most words: nothing to peel
            out.append(chunk)
            continue
        toks = cache.get(chunk)
        if toks is None:
            toks = _chunk(chunk)
            if len(cache) >= _CACHE_SIZE:  # bounded: start over rather than track recency
                cache.clear()
            if len(chunk) <= 64:
                cache[chunk] = toks
        out.extend(toks)
    return out


_CACHE: dict[str, tuple[str, ...]] = {}  # chunks with punctuation repeat a lot ("it,", "(the", "x)")
_CACHE_SIZE = 50_000


_MAX_CHUNK = 1000  # longer whitespace-free runs (base64, minified code) stay one token: the affix
# loop is quadratic in the chunk length, and spaCy's pieces of such a run change no Gopher decision


def _chunk(chunk: str) -> tuple[str, ...]:
    if len(chunk) > _MAX_CHUNK:
        return (chunk,)
    m = _SIMPLE.fullmatch(chunk)  # a word with one opening and/or closing mark: the rules in short
    if m and chunk not in SPECIALS:
        pre, core, post = m.groups()
        if (core not in SPECIALS and (pre + core) not in SPECIALS and (core + post) not in SPECIALS
                and (post != "." or not core[-1].isupper())):
            return tuple(x for x in (pre, core, post) if x)
    toks: list[str] = []
    _affixes(chunk, toks)
    return tuple(_merge_specials(toks) if len(toks) > 1 else toks)
