"""pycocoevalcap's tokenization: Stanford's Java PTBTokenizer 3.4.1 (`-preserveLines -lowerCase`), then
its punctuation tokens removed (`pycocoevalcap/tokenizer/ptbtokenizer.py`).

With Java, the tokens are Java's: `ptb_tokenize` runs the `stanford-corenlp-3.4.1.jar` that pycocoevalcap
ships when `java` and pycocoevalcap are installed, one process for a whole list, whose texts are the lines
of one file as in pycocoevalcap (a text's last token can depend on how the next one starts, e.g. `no.`
before a digit). Line breaks inside a text (`\\n`, `\\r`, `\\v`, `\\f`, U+2028, U+2029), where Java also
ends a line and pycocoevalcap replaces only `\\n`, shifting every later text, become spaces.

Without Java, a simpler approximation is used, and scoring warns that it is: `tokenize`, docvlm's own
regular expression for report text (lower case, clitics `'s`/`n't` and `cannot` split, brackets written
`-lrb-` ..., decimals, times, ratios and ranges kept whole, a few abbreviations keep their period), with
a few rules added from what Java wrote for the texts in `tests/data/report_metrics_reference.json`. On
those recorded texts it gives Java's tokens for all 90 report sentences and reports, for 114 of the 118
one-line examples of tokenizer classes, 84 of 111 edge cases and 48 of 300 random strings of report words
and symbols (a third of those strings' Java tokens differ). It is known to differ on:

- a one-letter abbreviation before a sentence opener (`Stage I. The`: Java writes `i`, the fallback `i.`),
  and capitalised abbreviations whose period Java keeps (`Mass.`, `Sept.` ...) beyond the few it knows;
- URLs, e-mail addresses, `@name` and `#tag`, HTML tags (`<b>`) and entities (`&amp;`, `&lt;`), which
  Java keeps whole or decodes and the fallback splits at their symbols;
- numbers Java joins across a space with a no-break space (`5 7/8`, `10 100 200`);
- currency signs (`£` `€` `¢`: Java writes `#`, `$`, `cents`), `US$`, smileys (`:)`), `^_^`, `c++`, runs
  of `*` or `-`, words with `_` or `&` (`a_b`, `AT&T`), superscripts after a letter (`x²`);
- Java's splits of `'tis`, `gonna`, `y'all` and words ending in `pro-`/`anti-`;
- a period between a number and a word with no space (`1.No effusion`: Java writes `1 no`, the fallback
  `1.no`), seen outside that file.

On the 20k synthetic reports of `bench/bench_radiology.py` it gives Java's tokens for every one, in 3.6 s
against Java's 3.8 s (one JVM, its start included) on a busy 2-core machine.
"""

from __future__ import annotations

import functools
import importlib.util
import logging
import re
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path

__all__ = ["ptb_tokenize"]  # what `docvlm.metrics` offers by name

log = logging.getLogger(__name__)

# pycocoevalcap's PUNCTUATIONS as they come out of `-lowerCase` (its `-LRB-` ... entries never match then)
PUNCTUATION = {"''", "'", "``", "`", ".", "?", "!", ",", ":", "-", "--", "...", ";"}
_LINE_BREAKS = str.maketrans(dict.fromkeys("\n\r\v\f\u2028\u2029", " "))


@functools.cache
def ptb_jar() -> str | None:
    """pycocoevalcap's Stanford CoreNLP jar when it and `java` are installed, else None."""
    spec = importlib.util.find_spec("pycocoevalcap")  # a namespace package: no __init__.py
    if shutil.which("java") is None or spec is None:
        return None
    folders = spec.submodule_search_locations or ()
    jars = (Path(folder) / "tokenizer" / "stanford-corenlp-3.4.1.jar" for folder in folders)
    return next((str(jar) for jar in jars if jar.is_file()), None)


def ptb_tokenize(texts: Sequence[str], java: bool = True) -> list[str]:
    """pycocoevalcap's tokens of each text, joined by spaces: Java's when installed (and `java`), else the
    pure-Python approximation's (`tokenize`, with a warning)."""
    texts = [t.translate(_LINE_BREAKS) for t in texts]
    if not texts:
        return []
    jar = ptb_jar() if java else None
    if jar is None and java:
        log.warning("Java or pycocoevalcap is not installed: PTB tokens come from docvlm's pure-Python approximation, "
                    "not Java's PTBTokenizer (they differ on some text, see docvlm.metrics.ptb); install Java for "
                    "pycocoevalcap's exact tokens")
    tokens = _java(texts, jar) if jar is not None else None
    return tokens if tokens is not None else [tokenize(t) for t in texts]


def _java(texts: list[str], jar: str) -> list[str] | None:
    """The Java PTBTokenizer on `texts`, one line each, as pycocoevalcap runs it; None when Java fails."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "texts.txt"
        path.write_bytes("\n".join(texts).encode("utf-8", "surrogatepass"))
        command = ["java", "-cp", jar, "edu.stanford.nlp.process.PTBTokenizer", "-preserveLines", "-lowerCase"]
        command.append(str(path))
        try:
            done = subprocess.run(command, capture_output=True, check=True, timeout=600)
        except (OSError, subprocess.SubprocessError) as error:
            log.warning("the Java PTBTokenizer failed (%s): using the pure-Python approximation", error)
            return None
    lines = done.stdout.decode("utf-8", "replace").split("\n")
    if len(lines) < len(texts):
        log.warning("the Java PTBTokenizer gave %d lines for %d texts: using the pure-Python approximation",
                    len(lines), len(texts))
        return None
    return [" ".join(w for w in line.rstrip().split(" ") if w not in PUNCTUATION) for line in lines[: len(texts)]]


def tokenize(text: str) -> str:
    """The fallback's tokens of one text, lower-cased, punctuation removed, joined by single spaces."""
    text = text.lower().translate(_LINE_BREAKS)
    text = _CURLY_CLITIC.sub("'", text)
    text = _CLITIC.sub(" ", _CANNOT.sub("can not", text))
    tokens = (_REPLACED.get(t, t) for t in _TOKEN.findall(text.replace('"', " '' ")))
    return " ".join(t for t in tokens if t not in PUNCTUATION and t not in _DROPPED)


# -- the fallback ------------------------------------------------------------------------------------
# docvlm's own regular expression for report text. The rules marked "seen" were added after looking at
# what the Java tokenizer wrote for the texts in tests/data/report_metrics_reference.json.
_WORD_CHAR = r"(?:[^\W_]|[\u0300-\u036f])"  # a letter or digit, any script (seen: `İ` -> `i̇`, one token)
_ABBREVIATIONS = "dr|mr|mrs|ms|st|jr|sr|vs|etc|dept|cf|prof|inc|co|ltd|ct|pa|al|jan|ark|calif"  # ct.. calif: seen
_BEFORE_NUMBER = "figs?|no|ca|dec|sept"  # seen: `fig. 2`, `no.3` keep the period, `no. fine` does not
_TOKEN = re.compile(
    r"___+"  # MIMIC de-identification
    r"|(?:[a-z]\.){2,}"  # e.g. i.e. a.m. u.s.
    rf"|\b(?:{_BEFORE_NUMBER})\.(?=\s*\d)"
    rf"|\b(?:{_ABBREVIATIONS})\."
    r"|\b[a-z]\.(?!\S)"  # seen: `j. smith`, `r. lung`
    r"|(?<!\S)[-+]\d+(?:[.,]\d+)*"  # seen: `-5`, `+2` keep their sign
    r"|\d+(?:\.\d+)?(?:-[a-z0-9]+)+"  # seen: `1-2`, `t7-8`, and `0.5-1.0` -> `0.5-1 .0`
    r"|\d*(?:[.,:/]\d+)+"  # 1.5  10:30  3/4  1,000  .5
    r"|n't|'(?:s|d|m|re|ll|ve)\b"  # clitics, split off below
    r"|'\d0s"  # seen: `'90s`
    rf"|{_WORD_CHAR}+(?:(?:[-/]|['\u2019](?=[a-z])){_WORD_CHAR}+|\.[a-z]{_WORD_CHAR}*)*"  # x-ray d/c o'brien
    r"(?:\.(?=[,;:]))?"  # seen: `pneumothorax.;` keeps its period
    r"|[?!]{2,}"  # seen: `!!`, `?!` stay one token
    r"|--|\.\.\.|\S"
)
_CANNOT = re.compile(r"\bcannot\b")
_CURLY_CLITIC = re.compile(r"(?<=\w)\u2019(?=(?:s|d|m|re|ll|ve|t)\b)")  # seen: `patient’s` -> `patient 's`
_CLITIC = re.compile(r"(?<=[a-z])(?=n't\b)|(?<=[^\W_])(?='(?:s|d|m|re|ll|ve)\b)")
_REPLACED = {"(": "-lrb-", ")": "-rrb-", "[": "-lsb-", "]": "-rsb-", "{": "-lcb-", "}": "-rcb-",
             "\u00bc": "1/4", "\u00bd": "1/2", "\u00be": "3/4", "\u2153": "1/3", "\u2154": "2/3"}  # seen: `½` -> `1/2`
# seen: curly quotes, guillemets, en and em dashes and `…` are punctuation to Java, dropped with it
_DROPPED = set("\u2018\u2019\u201c\u201d\u00ab\u00bb\u2013\u2014\u2026")
