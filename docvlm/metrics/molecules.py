"""Molecule metrics with the semantics of MolScribe's top-level `evaluate.py`.

The reference is `evaluate.py` at the top of thomas0809/MolScribe (commit 7296a30413eb55436702011efdff78131f66d162),
the standalone script its README tells users to run (`SmilesEvaluator(gold, tanimoto=True)`), not the
package's `molscribe/evaluate.py`, which compares graphs without removing `/` `\\` first.

`canonicalize_smiles` reproduces that script's function of the same name, quirks included, so that our
numbers compare with published ones:

- with `ignore_cistrans`, `/` and `\\` are removed from the text first;
- SMILES are cut into tokens with SmilesPE's atom-wise pattern, and characters that the pattern does
  not know (`X`, `Z`, `H` outside brackets, ...) are silently dropped;
- bracket tokens `[R<n>]` become `[<n>*]`, any other bracket token RDKit cannot read as an atom
  (`[Ph]`, `[Ar']`, ...) becomes `*`;
- on failure the (modified) text itself is compared, so an unparseable prediction still matches an
  identical unparseable gold;
- a gold whose canonical form is empty (`""`, `"/"`, `"XZ"`, ...) becomes `<empty>` and never matches.

One deliberate difference: SMILES longer than `MAX_SMILES_CHARS` are not given to RDKit (they count as
unparseable), because RDKit crashes the process on chains of some 20k atoms where MolScribe would die.

`molecule_scores` returns, all in [0, 1]:

- `canon_smiles`: exact match of canonical SMILES with `/` `\\` removed (cis/trans ignored, chirality kept),
  MolScribe's headline metric;
- `graph`: exact match with `/` `\\` removed and without chirality or isotopes (`useChiral=False`);
- `chiral`: `canon_smiles` over the pairs whose canonical gold has a `@`; absent when there are none
  (MolScribe reports -1, which is no score);
- `tanimoto`: mean Tanimoto similarity of RDKit's path fingerprints (`Chem.RDKFingerprint`, defaults) of
  the SMILES as written (no R-group replacement: `[R1]CC` does not parse and scores 0, as in MolScribe);
  0 for a pair where either side does not parse;
- `inchi`: Standard InChI equality of the SMILES as written (DECIMER's convention); a side without an
  InChI never matches (not a MolScribe metric);
- `valid`: share of predictions that MolScribe's canonicalization accepts without removing `/` `\\`
  (`pred_valid` of the package's `molscribe/evaluate.py`; the top-level script reports none).
"""

from __future__ import annotations

import functools
import math
import os
import re
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context

from rdkit import Chem, DataStructs, rdBase

from docvlm.converters import encodable
from docvlm.converters.molecules import MAX_SMILES_CHARS
from docvlm.metrics.common import same_length

__all__ = ["canonicalize_smiles", "molecule_scores"]  # what `docvlm.metrics` offers by name

# SmilesPE 0.0.3 `atomwise_tokenizer` pattern, as MolScribe uses it (findall drops what it does not match).
_ATOMWISE = re.compile(
    r"(\[[^\]]+]|Br?|Cl?|N|O|S|P|F|I|b|c|n|o|s|p|\(|\)|\.|=|#|-|\+|\\|\/|:|~|@|\?|>|\*|\$|\%[0-9]{2}|[0-9])"
)
PARALLEL_FROM = 2000  # pairs; below this a process pool costs more than it saves
METRICS = ("canon_smiles", "graph", "chiral", "tanimoto", "inchi", "valid")
EMPTY_GOLD = "<empty>"  # MolScribe's `_replace_empty`


def atomwise_tokens(smiles: str) -> list[str]:
    """SmilesPE's atom-level tokens of `smiles` (unknown characters are dropped, as there)."""
    return _ATOMWISE.findall(smiles)


def replace_rgroups(smiles: str) -> str:
    """MolScribe's R-group replacement: `[R1]` -> `[1*]`, unknown bracket atoms -> `*` (via the tokenizer)."""
    tokens = atomwise_tokens(smiles)
    for i, token in enumerate(tokens):
        if token[0] == "[" and token[-1] == "]":
            symbol = token[1:-1]
            if symbol[0] == "R" and symbol[1:].isdigit():
                tokens[i] = f"[{symbol[1:]}*]"
            elif not encodable(token) or Chem.AtomFromSmiles(token) is None:
                tokens[i] = "*"
    return "".join(tokens)


def _mol(text: object) -> Chem.Mol | None:
    """RDKit's reading of `text`, None when it is not a string, too long, not UTF-8, or does not parse."""
    if not isinstance(text, str) or len(text) > MAX_SMILES_CHARS or not encodable(text):
        return None
    return Chem.MolFromSmiles(text)


def canonicalize_smiles(smiles: object, ignore_chiral: bool = False, ignore_cistrans: bool = False) -> tuple[str, bool]:
    """MolScribe's `canonicalize_smiles` (with `replace_rgroup=True`): (canonical or modified text, success)."""
    if not isinstance(smiles, str) or smiles == "":
        return "", False
    if ignore_cistrans:
        smiles = smiles.replace("/", "").replace("\\", "")
    with rdBase.BlockLogs():
        smiles = replace_rgroups(smiles)
        mol = _mol(smiles)
    if mol is None:
        return smiles, False
    return Chem.MolToSmiles(mol, not ignore_chiral), True


class _Side:
    """What MolScribe compares of one SMILES, from at most three RDKit parses (one for most SMILES)."""

    def __init__(self, smiles: object):
        if not isinstance(smiles, str) or smiles == "":
            self.stereo = self.graph = ""
            self.valid, self.mol = False, None
            return
        stripped = smiles.replace("/", "").replace("\\", "")
        text = replace_rgroups(stripped)
        mol = _mol(text)
        # canonicalize_smiles(ignore_cistrans=True) and (ignore_chiral=True, ignore_cistrans=True)
        self.stereo = text if mol is None else Chem.MolToSmiles(mol, True)
        self.graph = text if mol is None else Chem.MolToSmiles(mol, False)
        written = replace_rgroups(smiles) if stripped != smiles else text
        self.valid = (mol if written == text else _mol(written)) is not None  # canonicalize_smiles(smiles)[1]
        self.mol = mol if smiles == text else _mol(smiles)  # as written, for the fingerprint and the InChI

    @functools.cached_property  # a prediction identical to its gold is the same object: computed once
    def fingerprint(self):
        try:
            return None if self.mol is None else Chem.RDKFingerprint(self.mol)
        except Exception:  # MolScribe's `tanimoto_similarity` scores any failure 0
            return None

    @functools.cached_property
    def inchi(self) -> str:
        if self.mol is None:
            return ""
        try:
            return Chem.MolToInchi(self.mol) or ""
        except Exception:  # RDKit's InChI wrapper raises on some exotic inputs
            return ""


def score_pair(prediction: object, reference: object) -> tuple[bool, bool, bool, float, bool, bool]:
    """(canon_smiles match, graph match, reference is chiral, tanimoto, InChI match, prediction valid)."""
    with rdBase.BlockLogs():  # RDKit's messages are noise here: a failure is a score of 0
        gold = _Side(reference)
        pred = gold if prediction == reference else _Side(prediction)
        gold_stereo = gold.stereo or EMPTY_GOLD
        gold_graph = gold.graph or EMPTY_GOLD
        if gold.fingerprint is None or pred.fingerprint is None:
            tanimoto = 0.0
        else:
            tanimoto = DataStructs.FingerprintSimilarity(gold.fingerprint, pred.fingerprint)
        inchi = bool(gold.inchi) and gold.inchi == pred.inchi
        return (gold_stereo == pred.stereo, gold_graph == pred.graph, "@" in gold_stereo, tanimoto, inchi, pred.valid)


def _score_chunk(pairs: list[tuple[object, object]]) -> list[tuple]:
    return [score_pair(p, r) for p, r in pairs]


def molecule_scores(
    predictions: Sequence[str], references: Sequence[str], workers: int | None = None
) -> dict[str, float]:
    """MolScribe-compatible scores of predicted against gold SMILES (see the module docstring).

    `workers`: processes to use; None uses every core for sets of `PARALLEL_FROM` pairs or more.
    """
    same_length(predictions, references)
    if not references:
        return {name: 0.0 for name in METRICS if name != "chiral"}
    pairs = list(zip(predictions, references))
    if workers is None:
        workers = (os.cpu_count() or 1) if len(pairs) >= PARALLEL_FROM else 1
    if workers > 1:
        size = math.ceil(len(pairs) / (workers * 4))
        chunks = [pairs[i : i + size] for i in range(0, len(pairs), size)]
        # spawn, not fork: the caller may be a multi-threaded training process
        with ProcessPoolExecutor(workers, mp_context=get_context("spawn")) as pool:
            rows = [row for chunk in pool.map(_score_chunk, chunks) for row in chunk]
    else:
        rows = _score_chunk(pairs)
    n = len(rows)
    scores = {
        "canon_smiles": sum(r[0] for r in rows) / n,
        "graph": sum(r[1] for r in rows) / n,
        "tanimoto": sum(r[3] for r in rows) / n,
        "inchi": sum(r[4] for r in rows) / n,
        "valid": sum(r[5] for r in rows) / n,
    }
    chiral = [r[0] for r in rows if r[2]]
    if chiral:
        scores["chiral"] = sum(chiral) / len(chiral)
    return scores
