"""Domain formats, free of torch: each module converts between a domain's files and target text,
parses model output without raising, and can render synthetic images of its own objects."""

QUOTE_LIMIT = 60  # characters of model output a problem message quotes
MAX_PROBLEMS = 20  # problems listed for one text; the rest are counted


def quote(text: str, limit: int = QUOTE_LIMIT) -> str:
    """`text` quoted for a problem message, cut to `limit` characters with its length said: model output
    can be any length, and problems, shown beside it in reports and kept in manifests, stay one short line."""
    return repr(text) if len(text) <= limit else f"{text[:limit]!r}... ({len(text)} characters)"


def clip(message: str, limit: int = 120) -> str:
    """A library's message (RDKit's atom lists, music21's offending line) cut to one line of `limit` characters."""
    return message if len(message) <= limit else message[:limit] + "..."


def capped(problems: list[str], limit: int = MAX_PROBLEMS) -> list[str]:
    """The first `limit` problems and how many more there were: a garbled output has a problem per token."""
    return problems if len(problems) <= limit else [*problems[:limit], f"... and {len(problems) - limit} more problems"]


def encodable(text: str) -> bool:
    """Whether UTF-8 can hold `text`: JSON's `\\ud800` escape and Python strings can carry lone surrogates, which no
    file, RDKit or pdfium can take (they raise UnicodeEncodeError)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True
