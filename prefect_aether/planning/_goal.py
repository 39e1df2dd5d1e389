"""Reading a goal: the resources it supplies and its clauses in order (private).

A goal often carries its own data: a file name (`'example.jpg'`, `report.csv`),
a URL, quoted text, a number with its unit. Those are *resources*: the planner
binds them as literals rather than inventing steps to produce them. They are
masked before the goal is cut into clauses, so that the `.` in a file name, a
URL or "Dr. Smith" and the commas inside quoted text cut nothing.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import mimetypes
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from prefect_aether.catalog.words import STOPWORDS, stem, tokenize, words

__all__ = ["Clause", "Goal", "Resource", "read_goal"]

_URL = re.compile(r"\b(?:https?|s3|gs|ftp)://[^\s'\"<>()]+[^\s'\"<>().,;:!?]", re.I)
_QUOTED = re.compile(r"(?<![\w])(['\"\u2018\u201c])(.+?)(['\"\u2019\u201d])(?![\w])")
_QUOTE_PAIRS = {"'": "'", '"': '"', "\u2018": "\u2019", "\u201c": "\u201d"}
# A file name, with its folders: relative ("data/a.csv", "./a.csv") or absolute
# ("/srv/in/a.csv", "~/a.csv").
_FILE = re.compile(
    r"(?<![\w/.~-])((?:~/|\.{1,2}/|/)?(?:[\w.-]+/)*[\w-]+\.([A-Za-z][A-Za-z0-9]{1,4}))(?![\w])"
)
# A chat channel or a handle: "#build-bot", "@alice".
_CHANNEL = re.compile(r"(?<![\w#@/.])([#@][A-Za-z0-9][\w.-]*[A-Za-z0-9])")
_MONTHS = {
    name: number
    for number, names in enumerate(
        (
            ("january", "jan"),
            ("february", "feb"),
            ("march", "mar"),
            ("april", "apr"),
            ("may",),
            ("june", "jun"),
            ("july", "jul"),
            ("august", "aug"),
            ("september", "sep", "sept"),
            ("october", "oct"),
            ("november", "nov"),
            ("december", "dec"),
        ),
        start=1,
    )
    for name in names
}
_MONTH = "(?:" + "|".join(sorted(_MONTHS, key=len, reverse=True)) + r")\.?"
_DAY = r"\d{1,2}(?:st|nd|rd|th)?"
# A calendar date with its year: "2024-06-01", "June 1st 2024", "1 June, 2024".
_DATE = re.compile(
    r"(?<![\w-])(?:\d{4}-\d{1,2}-\d{1,2}|"
    rf"(?P<m1>{_MONTH})\s+(?P<d1>{_DAY}),?\s+(?P<y1>\d{{4}})|"
    rf"(?P<d2>{_DAY})\s+(?:of\s+)?(?P<m2>{_MONTH}),?\s+(?P<y2>\d{{4}}))(?![\w-])",
    re.I,
)
# A split into two shares that make a whole: "70/30", "80:20".
_SPLIT = re.compile(r"(?<![\w./:-])(\d{1,2})\s*[/:]\s*(\d{1,2})(?![\w./:-])")
_NUMBER = re.compile(r"(?<![\w.\-])-?\d+(?:[.,]\d+)*(?:\s?(?:%|[a-zA-Z]{1,12}\b))?")
_ABBREVIATIONS = re.compile(
    r"\b(?:Dr|Mr|Mrs|Ms|Prof|Sr|Jr|St|vs|etc|e\.g|i\.e|approx|No|Inc|Ltd|Co|Fig)\.", re.I
)
# Resource i is masked as a private-use character between NULs: no digit for _NUMBER to see.
_PLACEHOLDER = re.compile("\x00([\ue000-\uf8ff])\x00")
_SENTENCE = re.compile(r"(?<=[.!?])\s+|\s*[;]\s*|\s*->\s*|\s*=>\s*")
_SEQUENCE = re.compile(
    r"^(?:and\s+)?(then|after\s+that|afterwards|finally|next|subsequently|lastly|"
    r"after|before|once|first|second|third|and)\b[\s,]*",
    re.I,
)
_INNER = re.compile(
    r",?\s+(?=(?:and\s+)?(?:then|after\s+that|afterwards|finally|subsequently|lastly)\b)|"
    r",?\s+(?=(?:after|before|once)\s+\w+ing\b)|"
    r",\s*(?=and\b)|,\s+|\s+(?=and\s+\w)",
    re.I,
)
# A clause that only says what the user has ("I have an image", "Here is the text")
# introduces data; it asks for nothing.
_CONTEXT = re.compile(
    r"^(?:(?:i|we)\s+(?:have|got|own|possess)|(?:here|there)\s*(?:is|are|'s)|"
    r"(?:this|that|it)\s+(?:is|was|contains|includes)|(?:the|my|our)\s+\w+(?:\s+\w+)?\s+"
    r"(?:is|are|was|contains)|given\b|it\s+has)\b",
    re.I,
)
_NOUN_PHRASE = re.compile(r"^(?:a|an|the|some|my|our|its|their|another)\b", re.I)
_MEDIA = {"image", "audio", "video", "text"}


@dataclass(frozen=True)
class Resource:
    """A value the goal itself supplies.

    Attributes:
        value: The text as the goal gives it (quotes removed).
        kind: `url`, `file`, `channel` (`#name`, `@name`), `json` (an object or list
            written inline: `{"status": "down"}`), `text` (quoted), `date` (written
            with its year; the value is ISO 8601: "June 1st 2024" is `2024-06-01`),
            `split` (two shares of a whole: "70/30") or `number`.
        media: For files and URLs, the major MIME type (`image`, `audio`, ...) when known.
        words: Stems that name what it is (the MIME type and extension, "url", "text"...,
            and its cue).
        cue: Stems the goal says of it: the words just before it ("titled 'Q3'"), a
            number's unit ("10 rows").
        direction: For a file or URL, whether the goal reads it (`"read"`: "from X",
            "in X", "load X") or writes it (`"write"`: "to X", "into X", "save ... in
            X", "-> X"); None when the goal does not say.
    """

    value: str
    kind: str
    media: str | None
    words: frozenset[str]
    cue: frozenset[str] = frozenset()
    direction: str | None = None


@dataclass
class Clause:
    """One clause of a goal, in goal order.

    Attributes:
        text: The clause with resources masked.
        tokens: Its word tokens (as `_words.tokenize`).
        words: Its lower-case words, stop words kept (for "to", "from").
        resources: Indices into `Goal.resources` of the resources inside it.
        follows: True when a sequence word ("then", "after that") ties it to the clause before.
        context: True when it only introduces data ("I have an image").
        said: The clause in the goal's own words, resources included.
    """

    text: str
    tokens: list[str]
    words: list[str]
    resources: list[int] = field(default_factory=list)
    follows: bool = False
    context: bool = False
    said: str = ""


@dataclass
class Goal:
    """A goal read into resources and ordered clauses."""

    text: str
    resources: list[Resource]
    clauses: list[Clause]
    tokens: list[str]


def _media(name: str) -> str | None:
    guessed, _ = mimetypes.guess_type(name.lower(), strict=False)
    return guessed.split("/", 1)[0] if guessed else None


def _cue(before: str) -> list[str]:
    """The last two words before a quotation or number, stop words aside: what it is
    ("titled 'Q3'", "a z threshold of 2.5")."""
    found = [w for w in words(before[-60:]) if w not in STOPWORDS]
    return found[-2:]


def _resource(value: str, kind: str, cue: Sequence[str] = ()) -> Resource:
    media = _media(value) if kind in ("file", "url") else None
    names = {kind}
    said = set(cue)
    if kind == "number":
        said.update(w for w in words(value) if not w.isdigit())
    if media in _MEDIA:
        names.add(media)
    if kind == "channel":
        names.update(["channel", "destination"])
    if kind == "file":
        names.update(["file", "path"])
    if kind == "date":
        names.update(["date", "day"])
    if kind == "url":
        # A URL is no local file: it goes to inputs that name a URL, a link, an endpoint.
        names.update(["url", "uri", "link", "address", "endpoint", "webhook", "site"])
    if kind in ("file", "url"):
        suffix = value.rsplit(".", 1)[-1].lower() if "." in value else ""
        if suffix.isalnum() and len(suffix) <= 5:
            names.add(suffix)
    cues = frozenset(stem(n) for n in said)
    return Resource(value, kind, media, frozenset(stem(n) for n in names) | cues, cues)


def _iso_date(match: re.Match[str]) -> str | None:
    """The ISO 8601 form of a `_DATE` match, or None when it names no real day."""
    if match["y1"] or match["y2"]:
        month = _MONTHS[(match["m1"] or match["m2"]).lower().rstrip(".")]
        day = int(re.sub(r"\D", "", match["d1"] or match["d2"]))
        year = int(match["y1"] or match["y2"])
    else:
        year, month, day = (int(part) for part in match.group(0).split("-"))
    try:
        return dt.date(year, month, day).isoformat()
    except ValueError:
        return None


def _mask(text: str) -> tuple[str, list[Resource]]:
    resources: list[Resource] = []

    def keep(value: str, kind: str, end: str = "", before: str = "") -> str:
        resources.append(_resource(value, kind, _cue(before) if before else []))
        return f" \x00{chr(0xE000 + len(resources) - 1)}\x00{end} "

    def quoted(match: re.Match[str]) -> str:
        opening, body, closing = match.groups()
        if _QUOTE_PAIRS[opening] != closing or not body.strip():
            return match.group(0)
        inner = body.strip()
        if _URL.fullmatch(inner):
            return keep(inner, "url")
        if _FILE.fullmatch(inner) and _media(inner) is not None:
            return keep(inner, "file")
        # A quotation that ends a sentence ends the clause around it too.
        before = match.string[: match.start()]
        return keep(inner, "text", "." if inner[-1] in ".!?" else "", before)

    text = _inline_json(text, keep)
    text = _URL.sub(lambda m: keep(m.group(0), "url"), text)
    text = _QUOTED.sub(quoted, text)
    text = _FILE.sub(
        lambda m: keep(m.group(1), "file") if _media(m.group(1)) is not None else m.group(0), text
    )
    text = _CHANNEL.sub(lambda m: keep(m.group(1), "channel"), text)

    def date(match: re.Match[str]) -> str:
        day = _iso_date(match)
        return (
            match.group(0)
            if day is None
            else keep(day, "date", before=match.string[: match.start()])
        )

    text = _DATE.sub(date, text)

    def number(match: re.Match[str]) -> str:
        value = match.group(0).strip()
        before = match.string[: match.start()]
        if value.endswith("%"):
            # "a 99.9% SLO", "a 5% threshold": the word after a percentage says what it is.
            after = re.match(r"\s*([A-Za-z][\w-]*)", match.string[match.end() :])
            before += f" {after.group(1)}" if after else ""
        return keep(value, "number", before=before)

    text = _SPLIT.sub(
        lambda m: (
            keep(f"{m.group(1)}/{m.group(2)}", "split")
            if int(m.group(1)) + int(m.group(2)) == 100
            else m.group(0)
        ),
        text,
    )
    text = _NUMBER.sub(number, text)
    text = _ABBREVIATIONS.sub(lambda m: m.group(0)[:-1], text)
    return text, resources


_JSON = json.JSONDecoder()


def _inline_json(text: str, keep: Callable[[str, str], str]) -> str:
    """Mask each JSON object or list written in the goal (`{"status": "degraded"}`)."""
    out: list[str] = []
    at = 0
    while True:
        start = min((i for i in (text.find("{", at), text.find("[", at)) if i >= 0), default=-1)
        if start < 0:
            return "".join(out) + text[at:]
        try:
            value, end = _JSON.raw_decode(text, start)
        except ValueError:
            out.append(text[at : start + 1])
            at = start + 1
            continue
        if not value:
            out.append(text[at:end])
        else:
            out.append(text[at:start] + keep(text[start:end], "json"))
        at = end


def _clauses(masked: str, resources: Sequence[Resource] = ()) -> list[Clause]:
    clauses: list[Clause] = []
    for sentence in _SENTENCE.split(masked):
        first = len(clauses)
        pending_follow = False  # "After loading the data, compute X": X follows
        for piece in _INNER.split(sentence):
            text = piece.strip(" ,.!?")
            if not text:
                continue
            follows, precedes = pending_follow, False
            pending_follow = False
            match = _SEQUENCE.match(text)
            if match:
                word = match.group(1).lower()
                if word in ("after", "once"):
                    # "X after doing Y": Y comes first; at a sentence's start, before the rest.
                    precedes = len(clauses) > first
                    pending_follow = not precedes
                else:
                    follows = word not in ("and", "first", "before")
                text = text[match.end() :]
            if not text.strip():
                continue
            refs = [ord(c) - 0xE000 for c in _PLACEHOLDER.findall(text)]
            plain = " ".join(_PLACEHOLDER.sub(" ", text).split())
            context = _CONTEXT.match(plain) is not None or (
                # "I have an image and a question": the noun phrase after a context clause
                bool(clauses) and clauses[-1].context and _NOUN_PHRASE.match(plain) is not None
            )
            said = _PLACEHOLDER.sub(
                lambda m: (
                    resources[ord(m.group(1)) - 0xE000].value
                    if ord(m.group(1)) - 0xE000 < len(resources)
                    else " "
                ),
                text,
            )
            clause = Clause(
                said=" ".join(said.split()),
                text=plain,
                tokens=tokenize(plain),
                words=words(plain),
                resources=refs,
                follows=follows,
                context=context,
            )
            if precedes:
                previous = clauses.pop()
                clause.follows, previous.follows = previous.follows, True
                clauses += [clause, previous]
            else:
                clauses.append(clause)
    return clauses


# Words that tell which way a file or URL goes, said just before it (articles and
# nouns such as "file" or "the CSV" aside).
_TO_WORDS = frozenset({"to", "into", "onto", "->", "=>"})
_FROM_WORDS = frozenset({"from", "of", "using", "with", "on", "for", "off", "out"})
_PLACE_WORDS = frozenset({"in", "at", "under", "inside", "as"})
_WRITE_VERBS = frozenset(
    stem(w)
    for w in "write save export store dump upload publish post send put output persist "
    "append log copy move deliver drop".split()
)
_READ_VERBS = frozenset(
    stem(w) for w in "read load open use take pull fetch extract parse scan import ingest".split()
)
_FILLER = frozenset(
    {
        "a",
        "an",
        "the",
        "this",
        "that",
        "my",
        "our",
        "your",
        "their",
        "its",
        "new",
        "file",
        "files",
        "folder",
        "directory",
        "path",
        "url",
        "csv",
        "json",
        "markdown",
        "md",
        "table",
        "report",
        "it",
        "them",
        "both",
        "each",
        "all",
        "result",
        "results",
        "output",
    }
)
_ARROW = re.compile(r"(?:->|=>)\s*$")


def _direction(before: str) -> str | None:
    """Which way the goal moves the file or URL that follows `before` (the goal's text up
    to it, in its sentence)."""
    if _ARROW.search(before):
        return "write"
    said = words(before)
    seen_verb: str | None = None
    for word in reversed(said[-12:]):
        if stem(word) in _WRITE_VERBS:
            seen_verb = "write"
            break
        if stem(word) in _READ_VERBS:
            seen_verb = "read"
            break
    nearest = [w for w in said[-4:] if w not in _FILLER]
    last = nearest[-1] if nearest else ""
    if last in _TO_WORDS:
        return "write"
    if last in _FROM_WORDS:
        return "read"
    if last in _PLACE_WORDS:
        # "save both as JSON in out/" writes there; "the parcels in parcels.csv" and "the
        # words spoken in talk.wav" read.
        at = len(said) - 1 - said[::-1].index(last)
        described = (
            at > 0
            and said[at - 1].endswith(("ed", "en"))
            and (stem(said[at - 1]) not in _WRITE_VERBS)
        )
        return "write" if seen_verb == "write" and not described else "read"
    if last and stem(last) in _WRITE_VERBS:
        return "write"
    if last and stem(last) in _READ_VERBS:
        return "read"
    return None


def _directions(masked: str, resources: list[Resource]) -> list[Resource]:
    """Each file or URL with the direction the words before it give."""
    out = list(resources)
    for match in _PLACEHOLDER.finditer(masked):
        index = ord(match.group(1)) - 0xE000
        resource = resources[index]
        if resource.kind not in ("file", "url", "channel"):
            continue
        before = _PLACEHOLDER.sub(" ", masked[: match.start()])
        sentence = re.split(r"[.!?;]\s|\bthen\b|,\s*(?:and\s+)?(?=\w+\s)", before)[-1]
        direction = _direction(sentence)
        if direction is not None:
            out[index] = dataclasses.replace(resource, direction=direction)
    return out


def read_goal(text: str) -> Goal:
    """Read `text` into its resources and clauses.

    >>> goal = read_goal("Caption 'a.jpg', then translate the caption. Dr. Who said 'hi, you'.")
    >>> [(r.value, r.kind, r.media) for r in goal.resources]
    [('a.jpg', 'file', 'image'), ('hi, you', 'text', None)]
    >>> [(c.text, c.follows) for c in goal.clauses]
    [('Caption', False), ('translate the caption', True), ('Dr Who said', False)]
    >>> [(c.text, c.follows) for c in read_goal("save it after computing the sum").clauses]
    [('computing the sum', False), ('save it', True)]
    """
    masked, resources = _mask(text)
    resources = _directions(masked, resources)
    clauses = _clauses(masked, resources)
    tokens = [t for c in clauses for t in c.tokens]
    return Goal(text=text, resources=resources, clauses=clauses, tokens=tokens)
