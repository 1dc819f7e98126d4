"""Molecules <-> SMILES on RDKit: reading model output, canonical targets, MOL/SDF references, exports.

Model output is read without raising: what RDKit rejects (syntax errors, unclosed rings, valence errors)
comes back as a list of problems, in RDKit's own words. Bracket labels that are not atoms (`[R1]`,
`[Ph]`, `[Ar']`), which MolScribe-style golds keep for superatoms, are read as dummy atoms carrying the
label (R-groups as `[n*]`, as MolScribe's metric reads them), so a molecule with abbreviations still
parses, and the label is listed as a problem because the structure behind it is unknown.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

from rdkit import Chem, rdBase

from docvlm.converters import capped, clip, quote

MAX_SMILES_CHARS = 4096  # far beyond 256 tokens; longer text is runaway decoding, not a molecule
_BRACKET = re.compile(r"\[[^\[\]]*\]")
_RGROUP = re.compile(r"R(\d+)")
_TIME_STAMP = re.compile(r"^\[\d\d:\d\d:\d\d\] ")
# SmilesPE's atom-wise tokens, as MolScribe's preprocessing uses them to find atoms in a SMILES string.
_ATOMWISE = re.compile(
    r"(\[[^\]]+]|Br?|Cl?|N|O|S|P|F|I|b|c|n|o|s|p|\(|\)|\.|=|#|-|\+|\\|\/|:|~|@|\?|>|\*|\$|\%[0-9]{2}|[0-9])"
)
# Molfile superatom alias lines ("A  <atom>" then the label), the pattern MolScribe's preprocessing uses.
_ALIAS = re.compile(r"A\s+(\d+)\s+(\S+)\s")


class _Messages:
    """RDKit's error log captured while in scope (nothing reaches stderr); `.lines` are the messages."""

    def __enter__(self) -> _Messages:
        self._block = rdBase.BlockLogs()  # warnings and info: silenced
        capture = getattr(rdBase, "CaptureErrorLog", None)  # recent RDKit only; else no messages
        self._capture = capture() if capture else None
        if self._capture:
            self._capture.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        if self._capture:
            self._capture.__exit__(*exc)
        del self._block

    @property
    def lines(self) -> list[str]:
        text = self._capture.messages if self._capture else ""
        return [_TIME_STAMP.sub("", line).strip() for line in text.splitlines() if line.strip()]


def _placeholders(smiles: str) -> tuple[str, dict[int, str]]:
    """Replace bracket labels RDKit cannot read as atoms by dummies `[<k>*]` with unused isotopes k."""
    used = [int(m) for m in re.findall(r"\[(\d+)", smiles)]
    next_isotope = max([499, *used]) + 1
    labels: dict[int, str] = {}

    def swap(match: re.Match) -> str:
        nonlocal next_isotope
        token = match.group(0)
        if Chem.AtomFromSmiles(token) is not None:
            return token
        labels[next_isotope] = token[1:-1]
        next_isotope += 1
        return f"[{next_isotope - 1}*]"

    return _BRACKET.sub(swap, smiles), labels


def _read(text: str) -> tuple[Chem.Mol | None, dict[int, str], list[str]]:
    """The unsanitized molecule (labels as placeholder dummies), the labels, and what was wrong."""
    smiles = text.strip()
    if not smiles:
        return None, {}, ["empty SMILES"]
    if len(smiles) > MAX_SMILES_CHARS:
        return None, {}, [f"SMILES of {len(smiles)} characters is longer than {MAX_SMILES_CHARS}: not parsed"]
    problems = []
    if len(smiles.split()) > 1:
        problems.append(f"text after the SMILES ignored: {quote(smiles.split(maxsplit=1)[1])}")
        smiles = smiles.split()[0]
    with _Messages():
        smiles, labels = _placeholders(smiles)
        with _Messages() as parse_log:
            mol = Chem.MolFromSmiles(smiles, sanitize=False)
        if mol is None:
            return None, labels, problems + [_parse_error(parse_log.lines)]
        chemistry = [clip(p.Message()) for p in Chem.DetectChemistryProblems(mol)]
    return (None if chemistry else mol), labels, capped(problems + chemistry)


def _parse_error(lines: list[str]) -> str:
    """RDKit's SMILES parse error as what and where, without the SMILES: RDKit's lines echo it up to
    three times (with the placeholders of bracket labels), so a long output made a longer problem."""
    what = where = None
    for line in lines:
        if not line.startswith("SMILES Parse Error: "):
            continue
        message = line.removeprefix("SMILES Parse Error: ")
        if message.startswith("check for mistakes around position"):
            where = message.removeprefix("check for mistakes ").rstrip(":")
        elif what is None and not message.startswith("Failed parsing SMILES"):
            what = re.split(r" while parsing| for input", message)[0]
    return f"SMILES Parse Error: {what or 'RDKit cannot parse the SMILES'}" + (f" ({where})" if where else "")


def parse_smiles(text: str) -> tuple[Chem.Mol | None, list[str]]:
    """SMILES text -> sanitized RDKit molecule (or None) and the problems found. Never raises.

    Labels that are not atoms become dummy atoms: `[R<n>]` with isotope n (MolScribe's `[n*]`), others
    unnumbered; each keeps its label as the atom's `dummyLabel` and molfile alias.
    """
    try:
        mol, labels, problems = _read(text)
        if mol is None:
            return None, problems
        with _Messages():
            Chem.SanitizeMol(mol)
        for atom in mol.GetAtoms():
            label = labels.get(atom.GetIsotope()) if atom.GetAtomicNum() == 0 else None
            if label is None:
                continue
            rgroup = _RGROUP.fullmatch(label)
            atom.SetIsotope(int(rgroup.group(1)) if rgroup else 0)
            atom.SetProp("dummyLabel", label)
            Chem.SetAtomAlias(atom, label)
        problems += [f"[{clip(label, 40)}] is not an atom: read as a dummy atom" for label in labels.values()]
        return mol, capped(problems)
    except Exception as e:  # RDKit raises on corner cases its checks above do not foresee
        return None, [f"RDKit failed on the SMILES: {e}"]


def canonical_smiles(smiles: str) -> str | None:
    """RDKit's canonical isomeric SMILES, bracket labels (`[Ph]`, `[R1]`) kept as written; None if invalid."""
    try:
        mol, labels, problems = _read(smiles)
        if mol is None or problems:
            return None
        with _Messages():
            Chem.SanitizeMol(mol)
            canonical = Chem.MolToSmiles(mol)
    except Exception:
        return None
    return re.sub(r"\[(\d+)\*\]", lambda m: f"[{labels[int(m[1])]}]" if int(m[1]) in labels else m[0], canonical)


def mol_smiles(mol: Chem.Mol) -> str:
    """RDKit's canonical isomeric SMILES of a molecule `parse_smiles` read, its labelled dummy atoms written back
    as their bracket labels (`[Ph]`, `[R1]`), as `canonical_smiles` writes them."""
    mol, labels = Chem.Mol(mol), {}
    for atom in mol.GetAtoms():
        if atom.GetAtomicNum() == 0 and atom.HasProp("dummyLabel"):
            labels[1000 + len(labels)] = atom.GetProp("dummyLabel")
            atom.SetIsotope(999 + len(labels))
    with _Messages():
        smiles = Chem.MolToSmiles(mol)
    return re.sub(r"\[(\d+)\*\]", lambda m: f"[{labels[int(m[1])]}]" if int(m[1]) in labels else m[0], smiles)


def molfile_smiles(path: str | Path) -> tuple[str, list[str]]:
    """Gold SMILES of a MOL/SDF file (first record) as MolScribe's preprocessing derives it.

    The molfile is read unsanitized and not strictly (`MolFromMolFile(sanitize=False, strictParsing=False)`),
    written with `MolToSmiles`, and each superatom alias (`A  n` / label) is put back as a `[Label]` token.
    An unreadable file gives "" (MolScribe's empty gold, which never matches) and the reason.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf8", errors="ignore")
    except OSError as e:
        return "", [f"{path}: cannot read ({e.strerror})"]
    with _Messages() as log:
        mol = Chem.MolFromMolBlock(text, sanitize=False, strictParsing=False)
    if mol is None or mol.GetNumAtoms() == 0:
        reason = "; ".join(log.lines) or "no atoms"
        return "", [f"{path}: not a readable molfile ({reason})"]
    smiles = Chem.MolToSmiles(mol)
    aliases = [(int(i) - 1, label) for i, label in _ALIAS.findall(text)]
    if aliases:
        order = ast.literal_eval(mol.GetProp("_smilesAtomOutputOrder"))
        position = {atom: k for k, atom in enumerate(order)}
        by_position = {position[i]: label for i, label in aliases if i in position}
        tokens = _ATOMWISE.findall(smiles)
        k = 0
        for i, token in enumerate(tokens):
            if token.isalpha() or token[0] == "[" or token == "*":
                if k in by_position:
                    tokens[i] = f"[{by_position[k]}]"
                k += 1
        smiles = "".join(tokens)
    return smiles, []


def molfile_identifiers(path: str | Path) -> dict[str, str]:
    """Standard InChI and InChIKey of a molfile read with sanitization ("" when RDKit rejects it)."""
    with _Messages():
        mol = Chem.MolFromMolFile(str(path))
        if mol is None:
            return {"inchi": "", "inchikey": ""}
        inchi = Chem.MolToInchi(mol) or ""
        return {"inchi": inchi, "inchikey": Chem.InchiToInchiKey(inchi) if inchi else ""}


def write_molecule(mol: Chem.Mol | None, text: str, stem: str | Path, image_size: int = 512) -> list[Path]:
    """Write `stem.smi` (the text as predicted) and, for a molecule, `.mol`, `.inchi`, `.inchikey`, `.png`.

    InChI files are skipped for molecules InChI cannot express (dummy atoms from labels or R-groups).
    """
    from docvlm.converters.molecule_render import draw

    stem = Path(stem)
    written = [Path(f"{stem}.smi")]  # not with_suffix: stems may hold dots
    written[0].write_text(text.strip() + "\n", encoding="utf-8")
    if mol is None:
        return written
    with _Messages():
        files = {".mol": Chem.MolToMolBlock(mol)}
        inchi = "" if any(a.GetAtomicNum() == 0 for a in mol.GetAtoms()) else Chem.MolToInchi(mol) or ""
    if inchi:
        files[".inchi"] = inchi + "\n"
        files[".inchikey"] = Chem.InchiToInchiKey(inchi) + "\n"
    for suffix, content in files.items():
        written.append(Path(f"{stem}{suffix}"))
        written[-1].write_text(content, encoding="utf-8")
    written.append(Path(f"{stem}.png"))
    draw(mol, image_size).save(written[-1])
    return written
