"""Molecule metrics with MolScribe's semantics (thomas0809/MolScribe, `molscribe/evaluate.py`).

`canonicalize_smiles` reproduces MolScribe's function of the same name, quirks included, so that our
numbers compare with published ones:

- SMILES are cut into tokens with SmilesPE's atom-wise pattern, and characters that the pattern does
  not know (`X`, `Z`, `H` outside brackets, ...) are silently dropped;
- bracket tokens `[R<n>]` become `[<n>*]`, any other bracket token RDKit cannot read as an atom
  (`[Ph]`, `[Ar']`, ...) becomes `*`;
- on failure the (modified) text itself is compared, so an unparseable prediction still matches an
  identical unparseable gold;
- an empty gold never matches.

One deliberate difference: SMILES longer than `MAX_SMILES_CHARS` are not given to RDKit (they count as
unparseable), because RDKit crashes the process on chains of some 20k atoms where MolScribe would die.

`molecule_scores` returns, all in [0, 1]:

- `canon_smiles`: exact match of canonical SMILES with `/` `\\` removed (cis/trans ignored, chirality kept),
  MolScribe's headline metric;
- `graph`: exact match without any stereo (`useChiral=False`);
- `chiral`: `canon_smiles` over the pairs whose canonical gold has a `@`; absent when there are none
  (MolScribe reports -1, which is no score);
- `tanimoto`: mean Tanimoto similarity of RDKit Morgan fingerprints (radius 2, 2048 bits, i.e. ECFP4-like;
  30x faster than RDKit's path fingerprint); 0 for a pair where either side does not parse (not a
  MolScribe metric);
- `inchi`: Standard InChI equality (DECIMER's convention); a side without an InChI never matches;
- `valid`: share of predictions MolScribe's canonicalization accepts (its `pred_valid`).
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context

from rdkit import Chem, DataStructs, rdBase
from rdkit.Chem import rdFingerprintGenerator

from docvlm.converters.molecules import MAX_SMILES_CHARS

# SmilesPE 0.0.3 `atomwise_tokenizer` pattern, as MolScribe uses it (findall drops what it does not match).
_ATOMWISE = re.compile(
    r"(\[[^\]]+]|Br?|Cl?|N|O|S|P|F|I|b|c|n|o|s|p|\(|\)|\.|=|#|-|\+|\\|\/|:|~|@|\?|>|\*|\$|\%[0-9]{2}|[0-9])"
)
_FINGERPRINT = rdFingerprintGenerator.GetMorganGenerator(radius=2, fpSize=2048)
PARALLEL_FROM = 2000  # pairs; below this a process pool costs more than it saves
METRICS = ("canon_smiles", "graph", "chiral", "tanimoto", "inchi", "valid")


def atomwise_tokens(smiles: str) -> list[str]:
    """SmilesPE's atom-level tokens of `smiles` (unknown characters are dropped, as there)."""
    return _ATOMWISE.findall(smiles)


def replace_rgroups(smiles: str) -> str:
    """MolScribe's `replace_rgroup`: `[R1]` -> `[1*]`, unknown bracket atoms -> `*` (via the tokenizer)."""
    tokens = atomwise_tokens(smiles)
    for i, token in enumerate(tokens):
        if token[0] == "[" and token[-1] == "]":
            symbol = token[1:-1]
            if symbol[0] == "R" and symbol[1:].isdigit():
                tokens[i] = f"[{symbol[1:]}*]"
            elif Chem.AtomFromSmiles(token) is None:
                tokens[i] = "*"
    return "".join(tokens)


def canonicalize_smiles(smiles: object, ignore_chiral: bool = False, ignore_cistrans: bool = False) -> tuple[str, bool]:
    """MolScribe's `canonicalize_smiles` (with `replace_rgroup=True`): (canonical or modified text, success)."""
    if not isinstance(smiles, str) or smiles == "":
        return "", False
    if ignore_cistrans:
        smiles = smiles.replace("/", "").replace("\\", "")
    with rdBase.BlockLogs():
        smiles = replace_rgroups(smiles)
        mol = Chem.MolFromSmiles(smiles) if len(smiles) <= MAX_SMILES_CHARS else None
    if mol is None:
        return smiles, False
    return Chem.MolToSmiles(mol, not ignore_chiral), True


class _Forms:
    """The three canonical forms MolScribe compares, from at most two RDKit parses of one SMILES."""

    def __init__(self, smiles: object):
        self.mol = None
        if not isinstance(smiles, str) or smiles == "":
            self.canon = self.graph = self.cistrans = ""
            self.ok = False
            return
        text = replace_rgroups(smiles)
        self.mol = Chem.MolFromSmiles(text) if len(text) <= MAX_SMILES_CHARS else None
        self.ok = self.mol is not None
        self.canon = Chem.MolToSmiles(self.mol, True) if self.ok else text
        self.graph = Chem.MolToSmiles(self.mol, False) if self.ok else text
        stripped = smiles.replace("/", "").replace("\\", "")
        self.cistrans = self.canon if stripped == smiles else canonicalize_smiles(stripped)[0]

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
        gold = _Forms(reference)
        pred = gold if prediction == reference else _Forms(prediction)
        if gold.canon == "":  # MolScribe's `_replace_empty`: an empty gold never matches
            return False, False, False, 0.0, False, pred.ok
        gold_inchi = gold.inchi()
        if gold.ok and pred.ok and pred.canon == gold.canon:  # the same molecule, stereo included
            tanimoto, inchi = 1.0, bool(gold_inchi)
        else:
            tanimoto = 0.0
            if gold.ok and pred.ok:
                tanimoto = DataStructs.TanimotoSimilarity(
                    _FINGERPRINT.GetFingerprint(gold.mol), _FINGERPRINT.GetFingerprint(pred.mol)
                )
            inchi = bool(gold_inchi) and gold_inchi == pred.inchi()
        return gold.cistrans == pred.cistrans, gold.graph == pred.graph, "@" in gold.cistrans, tanimoto, inchi, pred.ok


def _score_chunk(pairs: list[tuple[object, object]]) -> list[tuple]:
    return [score_pair(p, r) for p, r in pairs]


def molecule_scores(
    predictions: Sequence[str], references: Sequence[str], workers: int | None = None
) -> dict[str, float]:
    """MolScribe-compatible scores of predicted against gold SMILES (see the module docstring).

    `workers`: processes to use; None uses every core for sets of `PARALLEL_FROM` pairs or more.
    """
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions for {len(references)} references")
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
