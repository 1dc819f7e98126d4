"""pycocoevalcap's tokenization: Stanford's Java PTBTokenizer 3.4.1 (`-preserveLines -lowerCase`), then
its punctuation tokens removed (`pycocoevalcap/tokenizer/ptbtokenizer.py`).

`ptb_tokenize` runs the Java tokenizer itself (the `stanford-corenlp-3.4.1.jar` pycocoevalcap ships) when
`java` and pycocoevalcap are installed: one process for a whole list, whose texts are the lines of one
file as in pycocoevalcap (a text's last token can depend on how the next one starts, e.g. `no.` before a
digit). Line breaks inside a text (`\\n`, `\\r`, `\\v`, `\\f`, U+2028, U+2029), where Java also ends a line
and pycocoevalcap replaces only `\\n`, shifting every later text, become spaces.

Without Java, `tokenize_lines` does the same in pure Python: a longest-match lexer whose token classes
follow those of CoreNLP 3.4.1's `PTBLexer.flex` (stanfordnlp/CoreNLP, tag v3.4.1), tested against the Java
tokenizer's output in `tests/data/report_metrics_reference.json` and against Java itself on random text
when it is installed. It gives Java's tokens except on:

- a one-letter abbreviation directly before a capitalised sentence opener (`Stage I. The`): Java keeps
  `i` without its period there, the imitation keeps `i.`;
- lower-casing, which is Python's: a Greek capital sigma may become `σ` where Java writes `ς`;
- characters no Java rule knows: Java deletes them; the imitation deletes control, format and space
  characters and those beyond U+FFFF, and keeps any other as a one-character token.

It is also slower: 3 ms per synthetic report against Java's 0.25 ms (its start included, 20k reports in one
run), both measured on a busy 2-core machine.
"""

from __future__ import annotations

import functools
import importlib.util
import logging
import re
import shutil
import subprocess
import tempfile
import unicodedata
from collections.abc import Iterator, Sequence
from pathlib import Path

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
    pure-Python imitation's (with a warning)."""
    texts = [t.translate(_LINE_BREAKS) for t in texts]
    if not texts:
        return []
    jar = ptb_jar() if java else None
    if jar is None and java:
        log.warning("Java or pycocoevalcap is not installed: PTB tokens come from docvlm's pure-Python imitation, "
                    "which differs from Java's on rare text (see docvlm.metrics.ptb)")
    tokens = _java(texts, jar) if jar is not None else None
    return tokens if tokens is not None else tokenize_lines(texts)


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
            log.warning("the Java PTBTokenizer failed (%s): using the pure-Python imitation", error)
            return None
    lines = done.stdout.decode("utf-8", "replace").split("\n")
    if len(lines) < len(texts):
        log.warning("the Java PTBTokenizer gave %d lines for %d texts: using the pure-Python imitation",
                    len(lines), len(texts))
        return None
    return [" ".join(w for w in line.rstrip().split(" ") if w not in PUNCTUATION) for line in lines[: len(texts)]]


def tokenize(text: str) -> str:
    """The pure-Python imitation's tokens of one text (as the only line of its file), joined by spaces."""
    return tokenize_lines([text.translate(_LINE_BREAKS)])[0]


def tokenize_lines(texts: Sequence[str]) -> list[str]:
    """The pure-Python imitation on texts without line breaks, read as the lines of one file."""
    lines: list[list[str]] = [[]]
    for token in _tokens("\n".join(texts)):
        if token == "\n":
            lines.append([])
        elif (token := token.lower()) not in PUNCTUATION:
            lines[-1].append(token)
    return [" ".join(line).rstrip() for line in lines]  # pycocoevalcap strips each line's end


# -- the lexer ----------------------------------------------------------------------------------------
# Character classes. Python's \w counts superscripts and vulgar fractions as letters, Java does not.
_L = r"[^\W\d_\u00b2\u00b3\u00b9\u00bc-\u00be\u2070-\u209f\u2150-\u218f\u2460-\u24ff\u2776-\u2793]"
_AN = rf"(?:{_L}|\d)"
_APOS = r"(?:['\u0092\u2019]|&apos;)"
_APOS_ANY = r"(?:['\u0092\u2019`\u0091\u2018\u201b]|&apos;)"  # what may stand for an apostrophe inside a word
_SPACE = r"[ \t\u00a0\u2000-\u200a\u3000]"
_SPACE_NL = r"[ \t\u00a0\u2000-\u200a\u3000\r\n\u2028\u2029\x0b\x0c\x85]"
_WORD = rf"{_L}{_AN}*(?:[.!?]{_L}{_AN}*)*"  # internal . ! ? before a letter: e.g  Yahoo!Mail
_ACRO = r"[A-Za-z](?:\.[A-Za-z])*"
_HYPHEN = r"[-_\u058a\u2010\u2011]"
_THING = rf"(?:[dDoOlL]{_APOS_ANY}{_AN})?{_AN}+(?:{_HYPHEN}(?:[dDoOlL]{_APOS_ANY}{_AN})?{_AN}+)*"  # x-ray, o'clock
_HTHING = r"[A-Za-z0-9][A-Za-z0-9.,\u00ad]*(?:-(?:[A-Za-z](?:\.[A-Za-z])+\.|[A-Za-z0-9\u00ad]+))+"  # 0.5-1, t7-8
_CAPS_AMP = r"[A-Z]+(?:(?:[+&]|&amp;)[A-Z]+)+"  # AT&T
_IN_SENTENCE = r"[,;:\u3001]"


def _caseless(words: str) -> str:
    """Alternatives matched in any case, except a letter written `[X]`, which must be upper case."""
    return "(?i:" + "|".join(re.sub(r"\[(\w)\]", r"(?-i:\1)", word) for word in words.split()) + ")"


# Abbreviations that keep their period. After a month, state, company ... the period is also read again
# (a sentence may end there); titles and acronyms keep it; a few only before a number (`fig. 2`, `no. 3`).
_ABBREVIATION = _caseless(
    "jan feb mar apr jun jul aug sep sept oct nov dec mon tue tues wed thu thurs fri "
    "ala ariz [A]z [A]rk calif colo conn ct dak [D]el fla ga [I]ll ind kans? ky [L]a [M]ass md mich minn [M]iss mo "
    "mont neb nev okla [O]re [P]a penn tenn [T]ex va vt [W]ash wisc? wyo "
    "inc cos? corp pp?t[ye]s? ltd plc rt bancorp bhd assn univ intl sys tel est ext sq "
    r"jr sr bros (?:ed|ph)\.d blvd rd esq etc al seq bldg"
) + r"\."
_TITLE = "(?:" + _caseless(
    "mr mrs ms [M]iss drs? profs? sens? reps? attys? lt col gen messrs govs? adm rev maj sgt cpl pvt capt ste? ave "
    "pres lieut hon brig co?mdr pfc spc supts? det mt ft adj adv asst assoc ens insp mlle mme msgr sfc "
    r"vs alex wm jos cie a\.k\.a cf treas ph invt elec natl m[ft]g dept"
) + f"|{_ACRO})"
_BEFORE_NUMBER = _caseless("ca figs? prop nos? art bldg pp op") + r"\."
_FILE_TYPES = _caseless("bat bmp c class cgi cpp dll doc docx exe gif gz h htm html jar java jpeg jpg mov mp3 pdf "
                        "php pl png ppt ps py sql tar txt wav x xml zip")
_QUOTE_CHARS = "`\u2018\u2019\u201a\u201b\u201c\u201d\u0091\u0092\u0093\u0094\u201e\u201f\u2039\u203a\u00ab\u00bb"

# (kind, pattern, trailing context). As in JFlex, the rule whose pattern plus trailing context is longest
# wins, the earliest on ties; the token is the pattern's text; `kind` says how it is written out.
_RULES = [
    ("word", r"(?i:c\+\+|[cf]#)", ""),
    ("cannot", r"(?i:cannot)", ""),  # can + not
    ("split2", r"(?i:'tis|gonna|gotta|lemme|gimme|wanna)", ""),  # gon + na
    ("space", r"<(?:[!?][A-Za-z-][^>\r\n]*|/?[A-Za-z][A-Za-z0-9:.-]*"
              r"(?: +[A-Za-z][A-Za-z0-9:.-]*(?: *= *(?:\"[^\"\r\n]*\"|'[^'\r\n]*'))?)* *)>", ""),  # SGML tags
    ("dash", r"&(?i:md|mdash|ndash);|[\u0096\u0097\u2013\u2014\u2015]", ""),
    ("amp", r"&(?i:amp);", ""),
    ("word", r"[A-Za-z\u00ad]*[A-Ma-mO-Zo-z]\u00ad*", rf"(?i:n){_APOS_ANY}(?i:t)"),  # do|n't
    ("word", _WORD, rf"{_APOS}(?i:[msd]|re|ve|ll)"),  # patient|'s
    ("word", _WORD, ""),
    ("word", rf"{_APOS}(?i:n){_APOS}?|[lLdDjJ]{_APOS}|{_APOS}(?i:em)|(?-i:[A-HJ-XZn]){_APOS_ANY}{_L}{{2}}{_L}*"
             rf"|{_APOS}[2-9]0(?i:s)|{_APOS}(?i:till?)|{_L}+[aeiouyAEIOUY]{_APOS_ANY}[aeiouA-Z]{_L}*|{_APOS}(?i:cause)"
             rf"|(?i:cont'd\.?|'twas|c'mon)|(?i:o){_APOS_ANY}(?i:o)", ""),  # O'Brien, '90s
    ("word", r"https?://[^ \t\n\f\r\"<>|(){}]+[^ \t\n\f\r\"<>|.!?(){},-]", ""),
    ("word", r"(?:&(?i:lt);|<)?[a-zA-Z0-9][^ \t\n\f\r\"<>|()\u00a0{}]*@(?:[^ \t\n\f\r\"<>|(){}.\u00a0]+\.)*"
             r"[^ \t\n\f\r\"<>|(){}.\u00a0]+(?:&(?i:gt);|>)?", ""),  # e-mail
    ("word", rf"(?i:y){_APOS}", _L),
    ("word", rf"@[a-zA-Z_][a-zA-Z_0-9]*|#{_L}+", ""),
    ("quote", rf"{_APOS}(?i:[msd]|re|ve|ll)", r"[^A-Za-z]"),
    ("quote", rf"(?i:n){_APOS_ANY}(?i:t)", r"[^A-Za-z]"),
    ("word", r"\d{1,2}[-/]\d{1,2}[-/]\d{2,4}", ""),  # dates
    ("word", r"[-+]?\d*(?:[.:,\u00ad\u066b\u066c]\d+)+", ""),  # 1.5 10:30 1,000 .5 -3.2
    ("word", r"[-+]?\d+", ""),
    ("word", r"[\u207a\u207b\u208a\u208b]?(?:[\u2070\u00b9\u00b2\u00b3\u2074-\u2079]+|[\u2080-\u2089]+)", ""),
    ("space", r"(?:\d{1,4}[- \u00a0])?\d{1,4}(?:\\?/|\u2044)\d{1,4}", ""),  # 3/4, 5 7/8 (one token)
    ("fraction", r"[\u00bc\u00bd\u00be\u2153-\u215e]", ""),
    ("word", r"-(?i:rrb|lrb|rcb|lcb|rsb|lsb)-|(?i:c\.d\.s|pro-|anti-|s(?:&|&amp;)p-500|s(?:&|&amp;)ls)", ""),
    ("word", rf"(?i:cap){_APOS}(?i:n)|(?i:c){_APOS}(?i:est)", ""),
    ("word", r"[A-Za-z0-9]+(?:-[A-Za-z]+){0,2}(?:\\?/[A-Za-z0-9]+(?:-[A-Za-z]+){0,2}){1,2}", ""),  # s/p, b/l, w/o
    ("word", r"[A-Z]*\$|#", ""),
    ("currency", r"[\u00a2\u00a3\u00a4\u00a5\u0080\u20a0\u20ac\u060b\u0e3f\u20a4\uffe0\uffe1\uffe5\uffe6]", ""),
    ("word", _BEFORE_NUMBER, rf"{_SPACE_NL}?\d"),
    ("period_again", _ABBREVIATION, rf"{_SPACE_NL}(?:{_SPACE_NL}|[A-Z]|<)"),
    ("word", _ABBREVIATION, r"[\s\S]{2}"),
    ("period_again", _ABBREVIATION, ""),
    ("word", _TITLE + r"\.", ""),
    ("word", _TITLE, _SPACE),
    ("word", _ACRO, _SPACE_NL),
    ("word", rf"{_APOS}\d\d", _SPACE_NL),
    ("word", rf"{_AN}+(?:\.{_AN}+)*\.{_FILE_TYPES}", rf"(?:{_SPACE_NL}|[.?!,])"),
    ("word", _WORD + r"\.", _IN_SENTENCE),  # pneumothorax.;
    ("space", r"(?:\(\d{2,3}\)[ \u00a0]?|(?:\+\+?)?(?:\d{2,4}[- \u00a0])?\d{2,4}[- \u00a0])\d{3,4}[- \u00a0]?\d{3,5}"
              r"|(?:(?:\+\+?)?\d{2,4}\.)?\d{2,4}\.\d{3,4}\.\d{3,5}", ""),  # telephone numbers
    ("left_quote", r"\"|&(?i:quot);", r"[A-Za-z0-9$]"),
    ("quote", r"\"|&(?i:quot);", ""),
    ("less", r"<|&(?i:lt);", ""),
    ("greater", r">|&(?i:gt);", ""),
    ("smiley", r"[<>]?[:;=][\-o\*']?[\(\)DPdpO\\{@\|\[\]]", r"[^A-Za-z0-9]"),
    ("smiley", r"[-^x=~<>']_[-^x=~<>']|\([-^x=~<>'][_.]?[-^x=~<>']\)|\([\^x=~<>']-[\^x=~<>'`]\)", ""),
    ("bracket", r"[(){}\[\]]", ""),
    ("hyphens", r"-+", ""),
    ("ellipsis", r"\.{3,5}|(?:\.[ \u00a0]){2,4}\.|[\u0085\u2026]", ""),
    ("word", r"@+|#+|_+", ""),
    ("word", r"\*+|(?:\\\*){1,3}", ""),
    ("word", _IN_SENTENCE, ""),
    ("word", r"[?!]+", ""),  # !! and ?! stay (pycocoevalcap removes only ! and ?)
    ("word", r"[.\u00a1\u00bf\u037e\u0589\u061f\u06d4\u0700-\u0702\u07fa\u3002=/]", ""),
    ("word", _HTHING + r"\.", _IN_SENTENCE),
    ("word", _HTHING, ""),
    ("word", _THING + r"\.", _IN_SENTENCE),
    ("word", _THING, ""),
    ("amp", _CAPS_AMP + r"\.", _IN_SENTENCE),
    ("amp", _CAPS_AMP, ""),
    ("left_quote", r"'", r"[A-Za-z][^ \t\n\r\u00a0]"),
    ("quote", rf"{_APOS}(?i:[msd]|re|ve|ll)", ""),
    ("quote", rf"(?i:n){_APOS_ANY}(?i:t)", ""),
    ("quote", _APOS, ""),
    ("quote", "''", ""),
    ("quote", f"[{_QUOTE_CHARS}]{{1,2}}", ""),
    ("word", r"<<|>>", ""),
]
# Every rule's match at one position in one call: each is an optional lookahead with its own groups.
_SCAN = re.compile("".join(f"(?=(?P<m{i}>{main})(?P<t{i}>{trail}))?" for i, (_, main, trail) in enumerate(_RULES)))
# Fast path: ASCII letters before a space are that word whatever rule wins (checked against all of them),
# except the words the lexer splits.
_PLAIN = re.compile(r"[A-Za-z]+(?=[ \t\n])")
_SPLIT = {"cannot", "gonna", "gotta", "lemme", "gimme", "wanna"}
_SKIP = re.compile(r"(?:[ \t\u00a0\u2000-\u200a\u3000\x00\u200b\u200e\u200f\ufeff]|&(?i:nbsp);)+")
_BRACKETS = {"(": "-lrb-", ")": "-rrb-", "[": "-lsb-", "]": "-rsb-", "{": "-lcb-", "}": "-rcb-"}
_FRACTIONS = {"\u00bc": "1/4", "\u00bd": "1/2", "\u00be": "3/4", "\u2153": "1/3", "\u2154": "2/3"}
_CURRENCY = {"\u00a2": "cents", "\u00a3": "#", "\u0080": "$", "\u00a4": "$", "\u20a0": "$", "\u20ac": "$"}
_AMP = re.compile("(?i)&amp;")
# LaTeX-style quotes: (pattern, as a closing quote, as an opening one)
_QUOTES = [
    (re.compile(r"&apos;|'"), "'", "`"),
    (re.compile(r'"|&quot;'), "''", "``"),
    (re.compile("[\u0091\u2018\u201b\u2039]"), "`", "`"),
    (re.compile("[\u0092\u2019\u203a]"), "'", "'"),
    (re.compile("[\u0093\u201c\u00ab]"), "``", "``"),
    (re.compile("[\u0094\u201d\u00bb]"), "''", "''"),
]


def _latex_quotes(token: str, opening: bool) -> str:
    for pattern, closing_form, opening_form in _QUOTES:
        token = pattern.sub(opening_form if opening else closing_form, token)
    return token


def _written(kind: str, token: str) -> str:
    """How a token of `kind` is written out."""
    if kind == "space":
        return token.replace(" ", "\u00a0")
    if kind in ("quote", "left_quote"):
        return _latex_quotes(token, kind == "left_quote")
    if kind in ("less", "greater"):
        return "<" if kind == "less" else ">"
    if kind == "smiley":
        return token.replace("(", "-lrb-").replace(")", "-rrb-")
    if kind == "hyphens":
        return "--" if 3 <= len(token) <= 4 else token
    replaced = {"dash": "--", "ellipsis": "...", "bracket": _BRACKETS.get(token), "fraction": _FRACTIONS.get(token),
                "currency": _CURRENCY.get(token), "amp": _AMP.sub("&", token)}.get(kind)
    return token if replaced is None else replaced


def _tokens(text: str) -> Iterator[str]:
    """The tokens of `text` ("\\n" for each line break), not yet lower-cased."""
    i, n = 0, len(text)
    while i < n:
        if skip := _SKIP.match(text, i):
            i = skip.end()
            continue
        if text[i] == "\n":
            yield "\n"
            i += 1
            continue
        if (plain := _PLAIN.match(text, i)) and plain.group().lower() not in _SPLIT:
            i = plain.end()
            yield plain.group()
            continue
        found = _SCAN.match(text, i)
        kind, token, size = "", "", 0
        for k, (rule_kind, _, _) in enumerate(_RULES):
            main = found.group(f"m{k}")
            if main and len(main) + len(found.group(f"t{k}")) > size:
                kind, token, size = rule_kind, main, len(main) + len(found.group(f"t{k}"))
        if not token:  # no rule: Java deletes what it cannot tokenize
            char = text[i]
            i += 1
            if unicodedata.category(char)[0] not in "CZ" and char <= "\uffff":
                yield char
            continue
        i += len(token)
        if kind == "cannot" or kind == "split2":  # read again from the cut
            back = 3 if kind == "cannot" else 2
            i -= back
            yield token[:-back]
        elif kind == "period_again":
            i -= 1
            yield token
        else:
            yield _written(kind, token)
