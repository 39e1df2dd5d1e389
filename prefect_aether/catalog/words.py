"""Word matching shared by the catalog's search and the heuristic planner (inside the
package; not part of the public API).

Words are lower-cased, split at snake_case, kebab-case and camelCase, stemmed
with the Snowball English stemmer (`snowballstemmer`, the stemmer Sphinx
uses), and folded into a small table of general-purpose synonyms, so that
"translate" meets "translation", "images" meets "image" and "find" meets
"search". Two stems also meet when one is a prefix of the other ("class" and
"classif"), at a lower weight: Snowball keeps derivations apart that a reader
takes for one word.

`to` is not a stop word everywhere: in a name like `text_to_audio` it gives
the direction, which `direction_words` keeps.
"""

from __future__ import annotations

import re
from functools import lru_cache

import snowballstemmer

__all__ = ["STOPWORDS", "prefix_match", "stem", "tokenize", "words"]

_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])")
_WORD = re.compile(r"[a-z0-9]+")
STOPWORDS = frozenset(
    """a an and are as at be by for from in into is it its of on or that the then this
    to with using use via my our your all each me i we you he she they them us can could
    would will shall should please want need like some any also just so do does did
    have has had been being was were am which what who whom whose how about there here
    these those than too very more most other only own same such no nor not now many much
    few several help know tell let kindly able possible thank thanks hello hi""".split()
)

# General-purpose verbs and nouns that task descriptions use interchangeably. Each
# group folds into its first word's stem. Nothing here is specific to one catalog.
_SYNONYMS: tuple[tuple[str, ...], ...] = (
    ("search", "find", "lookup", "locate", "seek"),
    ("generate", "create", "produce", "make", "synthesize", "compose"),
    ("convert", "transform", "turn"),
    ("compute", "calculate", "tally"),
    ("detect", "spot"),
    ("summarize", "summary", "shorten", "condense", "overview", "digest"),
    ("remove", "delete", "erase", "purge"),
    ("save", "store", "persist", "export"),
    ("load", "read", "open", "import", "ingest", "fetch", "pull"),
    ("picture", "image", "photo", "photograph", "img"),
    ("video", "clip", "movie", "footage"),
    ("audio", "sound"),
    ("text", "paragraph", "passage"),
    ("speech", "voice", "spoken"),
    ("similar", "similarity", "compare", "comparison", "alike"),
    ("question", "ask", "query"),
    ("answer", "reply", "respond", "response"),
    ("describe", "description", "caption"),
    ("classify", "categorize", "label", "categorise"),
    ("enhance", "improve", "denoise"),
    ("estimate", "predict", "score", "infer", "inference"),
    ("email", "mail"),
    ("send", "deliver", "dispatch"),
    ("book", "reserve", "booking", "reservation"),
    ("weather", "forecast"),
    ("buy", "purchase"),
    ("schedule", "arrange"),
)
_STEMMER = snowballstemmer.stemmer("english")


@lru_cache(maxsize=65536)
def _base(word: str) -> str:
    return str(_STEMMER.stemWord(word))


def _synonym_table() -> dict[str, str]:
    table: dict[str, str] = {}
    for group in _SYNONYMS:
        head = _base(group[0])
        for word in group:
            for token in _WORD.findall(word):
                table.setdefault(_base(token), head)
    return table


_FOLD = _synonym_table()


@lru_cache(maxsize=65536)
def stem(word: str) -> str:
    """The Snowball stem of a lower-case word, folded into its synonym group.

    >>> [stem(w) for w in ("translate", "translation", "images", "find", "search")]
    ['translat', 'translat', 'pictur', 'search', 'search']
    >>> stem("paragraph") == stem("text")
    True
    """
    base = _base(word)
    return _FOLD.get(base, base)


def words(text: str) -> list[str]:
    """Lower-case words of `text`, identifiers split, nothing removed.

    >>> words("loadCSVFile text_to-audio")
    ['load', 'csv', 'file', 'text', 'to', 'audio']
    """
    return _WORD.findall(_CAMEL.sub(" ", text).lower())


def tokenize(text: str) -> list[str]:
    """Stemmed, synonym-folded word tokens of `text`, without stop words.

    >>> tokenize("loadCSVFile and clean_rows-today")
    ['load', 'csv', 'file', 'clean', 'row', 'today']
    """
    return [stem(w) for w in words(text) if w not in STOPWORDS]


def prefix_match(a: str, b: str) -> bool:
    """Whether two different stems are one word's derivations: one is a prefix of
    the other (at least 5 letters), or they share their first 7 letters.

    >>> prefix_match("class", "classif"), prefix_match("transcrib", "transcript")
    (True, True)
    >>> prefix_match("general", "generat"), prefix_match("imag", "imagin")
    (False, False)
    """
    if a == b:
        return False
    short, long_ = (a, b) if len(a) <= len(b) else (b, a)
    if len(short) >= 5 and long_.startswith(short):
        return True
    return len(short) >= 7 and a[:7] == b[:7]
