"""Molecules: MolScribe's own evaluator against ours on the same 10k pairs (same numbers, time ratio), and
the rendering throughput of synthetic drawings at 448 and 896 px.

MolScribe's `evaluate.py` needs only numpy, RDKit and SmilesPE; it is loaded from a MolScribe source tree:

    pip install SmilesPE==0.0.3 && pip download MolScribe==1.1.1 --no-deps -d /tmp/ms \\
        && tar xzf /tmp/ms/MolScribe-1.1.1.tar.gz -C /tmp/ms
    python bench/bench_molecules.py --molscribe /tmp/ms/MolScribe-1.1.1/molscribe/evaluate.py
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import random
import sys
import time

from rdkit import Chem, rdBase

from docvlm.converters.molecule_render import random_molecule, render
from docvlm.metrics.molecules import molecule_scores


def pairs(n: int, seed: int = 0) -> tuple[list[str], list[str]]:
    """Gold SMILES and predictions with the errors a model makes: none, other notation, stereo, typos."""
    rng = random.Random(seed)
    golds, preds = [], []
    with rdBase.BlockLogs():
        for _ in range(n):
            mol = random_molecule(rng)
            gold = Chem.MolToSmiles(mol)
            kind = rng.random()
            if kind < 0.5:
                pred = gold
            elif kind < 0.6:
                Chem.Kekulize(mol, clearAromaticFlags=True)
                pred = Chem.MolToSmiles(mol, kekuleSmiles=True, doRandom=True)
            elif kind < 0.7:
                pred = gold.replace("@@", "#").replace("@", "@@").replace("#", "@").replace("/", "\\")
            elif kind < 0.8:
                pred = gold[: rng.randint(0, len(gold))]
            elif kind < 0.9:
                pred = Chem.MolToSmiles(random_molecule(rng))
            else:
                pred = gold.replace("c1ccccc1", "[Ph]").replace("C(F)(F)F", "[CF3]") + rng.choice(["", ".Cl", "X"])
            golds.append(gold)
            preds.append(pred)
    return preds, golds


def bench_metrics(n: int, molscribe: str | None) -> None:
    preds, golds = pairs(n)
    cores = os.cpu_count() or 1
    start = time.perf_counter()
    serial = molecule_scores(preds, golds, workers=1)
    t_serial = time.perf_counter() - start
    start = time.perf_counter()
    parallel = molecule_scores(preds, golds, workers=cores)
    t_parallel = time.perf_counter() - start
    assert serial == parallel
    print(f"metrics on {n} pairs, {cores} cores")
    print(f"  ours, 1 process  : {t_serial:7.2f} s  {n / t_serial:8.0f} pairs/s  "
          "(all six metrics, InChI and fingerprints included)")
    print(f"  ours, {cores} processes: {t_parallel:7.2f} s  {n / t_parallel:8.0f} pairs/s")
    if not molscribe:
        print("  (MolScribe reference skipped: pass --molscribe PATH/molscribe/evaluate.py)")
        return
    spec = importlib.util.spec_from_file_location("molscribe_evaluate", molscribe)
    reference = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = reference  # its pool pickles functions by module name
    spec.loader.exec_module(reference)
    start = time.perf_counter()
    theirs = reference.SmilesEvaluator(golds, num_workers=cores).evaluate(preds)
    t_ref = time.perf_counter() - start
    print(f"  MolScribe evaluate.py ({cores} workers): {t_ref:7.2f} s  (canon_smiles, graph, chiral, valid only)")
    keys = [("canon_smiles", "canon_smiles"), ("graph", "graph"), ("chiral", "chiral"), ("valid", "pred_valid")]
    for ours_key, their_key in keys:
        same = abs(serial[ours_key] - float(theirs[their_key])) < 1e-12
        print(f"  {ours_key:12s} ours {serial[ours_key]:.6f}  MolScribe {float(theirs[their_key]):.6f}  "
              f"{'same' if same else 'DIFFERENT'}")
        assert same, ours_key
    print(f"  ratio MolScribe / ours ({cores} processes): {t_ref / t_parallel:.2f}x; ours also computes tanimoto "
          f"and inchi: {serial['tanimoto']:.4f} {serial['inchi']:.4f}")


def bench_render(count: int) -> None:
    rng = random.Random(0)
    with rdBase.BlockLogs():
        mols = [random_molecule(rng) for _ in range(count)]
    for size in (448, 896):
        start = time.perf_counter()
        for i, mol in enumerate(mols):
            render(mol, random.Random(i), size)
        elapsed = time.perf_counter() - start
        print(f"render at {size} px: {count / elapsed:6.1f} images/s on one core "
              f"({1000 * elapsed / count:.1f} ms/image)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=int, default=10_000)
    parser.add_argument("--images", type=int, default=200)
    parser.add_argument("--molscribe", help="path to MolScribe's molscribe/evaluate.py")
    args = parser.parse_args()
    bench_render(args.images)
    bench_metrics(args.pairs, args.molscribe)
