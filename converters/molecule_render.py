"""Synthetic molecules for training and tests: drug-like structures assembled from fragments, drawn by RDKit.

Nothing is downloaded: molecules are built by joining ring scaffolds and substituents from the lists
below at random sites, with random stereo (chiral centres, E/Z bonds), charges and salts. Drawings vary
line width, font, label size, rotation, Kekulé or aromatic bonds, explicit hydrogens, abbreviated groups
(`Ph`, `CF3`, ...), colour or black and white, canvas shape and margins.
"""

from __future__ import annotations

import io
import random

from PIL import Image
from rdkit import Chem, rdBase
from rdkit.Chem import rdAbbreviations, rdDepictor
from rdkit.Chem.Draw import rdMolDraw2D
from rdkit.Chem.EnumerateStereoisomers import EnumerateStereoisomers, StereoEnumerationOptions

from docvlm.converters.fonts import font_files

RINGS = (
    "c1ccccc1 c1ccncc1 c1cncnc1 c1ccsc1 c1ccoc1 c1cc[nH]c1 c1cnc[nH]1 c1cn[nH]c1 c1ncon1 c1nncs1 "
    "C1CCCCC1 C1CCNCC1 C1COCCN1 C1CNCCN1 C1CCCC1 C1CC1 C1CCOC1 C1CCNC1 c1ccc2ccccc2c1 c1ccc2[nH]ccc2c1 "
    "c1ccc2ncccc2c1 c1ccc2occc2c1 c1ccc2c(c1)CCC2 C1CCC(=O)N1 C1SC(=O)NC1=O c1ccc2c(c1)OCO2 C1=CCCCC1"
).split()
SUBSTITUENTS = (
    "C CC CCC C(C)C C(C)(C)C O OC OCC N NC N(C)C F Cl Br I C#N C(F)(F)F OC(F)(F)F C(=O)O C(=O)OC "
    "C(=O)OCC C(=O)N C(=O)NC C(C)=O [N+](=O)[O-] S(C)(=O)=O S(N)(=O)=O NC(C)=O NS(C)(=O)=O SC C=O "
    "CO CN CC(=O)O OCC(=O)O C=C C#C CCN(C)C C(=O)[O-] [NH3+] B(O)O"
).split()
LINKERS = ("", "", "C", "CC", "O", "N", "S", "C(=O)", "C(=O)N", "NC(=O)", "OC", "C=C", "S(=O)(=O)", "NC(=O)N", "C#C")
SALTS = (".Cl", ".[Na+]", ".[K+]", ".O", ".[Cl-]", ".Br", ".OC(=O)C(F)(F)F")
_ABBREVIATIONS = rdAbbreviations.GetDefaultAbbreviations()


def random_molecule(rng: random.Random) -> Chem.Mol:
    """A random drug-like molecule: 1-3 ring systems joined by linkers, 0-4 substituents, random stereo."""
    mol = Chem.RWMol(Chem.MolFromSmiles(rng.choice(RINGS)))
    for _ in range(rng.choices((0, 1, 2), weights=(3, 5, 2))[0]):
        _attach(mol, Chem.MolFromSmiles(rng.choice(LINKERS) + rng.choice(RINGS)), rng)
    for _ in range(rng.randint(0, 4)):
        _attach(mol, Chem.MolFromSmiles(rng.choice(SUBSTITUENTS)), rng)
    result = mol.GetMol()
    Chem.SanitizeMol(result)
    if rng.random() < 0.6:  # give a random configuration to some stereocentres and double bonds
        options = StereoEnumerationOptions(onlyUnassigned=True, maxIsomers=1, rand=rng.randrange(2**31), unique=False)
        result = next(iter(EnumerateStereoisomers(result, options=options)), result)
    if rng.random() < 0.08:
        salted = Chem.MolFromSmiles(Chem.MolToSmiles(result) + rng.choice(SALTS))
        result = salted if salted is not None else result
    return result


def _attach(mol: Chem.RWMol, fragment: Chem.Mol, rng: random.Random) -> None:
    """Bond `fragment`'s first atom to a random hydrogen-bearing atom of `mol` (no-op if none fits)."""
    mol.UpdatePropertyCache(strict=False)
    sites = [
        a.GetIdx() for a in mol.GetAtoms()
        if a.GetTotalNumHs() > 0 and a.GetNumExplicitHs() == 0 and a.GetFormalCharge() == 0
    ]
    heads = [a.GetIdx() for a in fragment.GetAtoms() if a.GetTotalNumHs() > 0 and a.GetNumExplicitHs() == 0]
    if not sites or not heads:
        return
    site, head = rng.choice(sites), heads[0] if rng.random() < 0.7 else rng.choice(heads)
    offset = mol.GetNumAtoms()
    mol.InsertMol(fragment)
    mol.AddBond(site, offset + head, Chem.BondType.SINGLE)


def random_smiles(rng: random.Random) -> str:
    """RDKit canonical isomeric SMILES of `random_molecule(rng)`."""
    return Chem.MolToSmiles(random_molecule(rng))


def draw(mol: Chem.Mol, size: int | tuple[int, int] = 512, rng: random.Random | None = None) -> Image.Image:
    """An RGB drawing of `mol`; plain RDKit style without `rng`, a random style with it."""
    width, height = (size, size) if isinstance(size, int) else size
    with rdBase.BlockLogs():
        mol = Chem.Mol(mol)
        drawer = rdMolDraw2D.MolDraw2DCairo(width, height)
        options = drawer.drawOptions()
        options.useBWAtomPalette()
        kekulize = True
        if rng is not None:
            mol, kekulize = _style(mol, options, rng, min(width, height))
        rdDepictor.Compute2DCoords(mol)
        mol = rdMolDraw2D.PrepareMolForDrawing(mol, kekulize=kekulize, addChiralHs=True)
        drawer.DrawMolecule(mol)
        drawer.FinishDrawing()
        return Image.open(io.BytesIO(drawer.GetDrawingText())).convert("RGB")


def _style(mol: Chem.Mol, options: rdMolDraw2D.MolDrawOptions, rng: random.Random, side: int) -> tuple[Chem.Mol, bool]:
    """Randomize drawing options in place; returns the molecule to draw (maybe abbreviated, with H)."""
    options.bondLineWidth = rng.uniform(1.0, 4.0) * side / 448
    options.scaleBondWidth = True
    options.rotate = rng.uniform(0, 360) if rng.random() < 0.5 else 0
    options.padding = rng.uniform(0.02, 0.15)
    options.multipleBondOffset = rng.uniform(0.12, 0.2)
    options.explicitMethyl = rng.random() < 0.2
    options.addStereoAnnotation = rng.random() < 0.1
    options.fixedBondLength = rng.uniform(20, 60) * side / 448
    fonts = font_files()
    if fonts and rng.random() < 0.8:
        options.fontFile = str(rng.choice(fonts))
    options.baseFontSize = rng.uniform(0.5, 0.9)
    options.minFontSize = int(rng.uniform(8, 16) * side / 448)
    if rng.random() < 0.3:
        options.useDefaultAtomPalette()
    if rng.random() < 0.25:
        with_h = [a.GetIdx() for a in mol.GetAtoms() if a.GetAtomicNum() not in (0, 6) and a.GetTotalNumHs() > 0]
        if with_h:
            mol = Chem.AddHs(mol, onlyOnAtoms=with_h)
    elif rng.random() < 0.3:
        mol = rdAbbreviations.CondenseMolAbbreviations(mol, _ABBREVIATIONS, maxCoverage=0.4)
    return mol, rng.random() < 0.7


def render(smiles_or_mol: str | Chem.Mol, rng: random.Random, size: int = 448) -> Image.Image:
    """A randomly styled drawing on a canvas of random aspect (the task pads it to a square)."""
    mol = Chem.MolFromSmiles(smiles_or_mol) if isinstance(smiles_or_mol, str) else smiles_or_mol
    short = int(size * rng.uniform(0.55, 1.0))
    shape = (size, short) if rng.random() < 0.5 else (short, size)
    return draw(mol, shape, rng)
