"""Molecules: readers on the real CLEF/JPO samples, the SMILES converter, synthetic drawings, exports."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
from PIL import Image

import docvlm.tasks
from docvlm.converters.molecules import canonical_smiles, molfile_identifiers, molfile_smiles, parse_smiles
from docvlm.tasks.manifest import ManifestError


@pytest.fixture(scope="module")
def data(data_dir) -> Path:
    return data_dir / "molecules"


@pytest.fixture(scope="module")
def task():
    return docvlm.tasks.get("molecules")


@pytest.mark.parametrize("name", ["CLEF", "JPO"])
def test_readers_reproduce_molscribe_csv(data: Path, task, name: str) -> None:
    gold = {r["image_id"]: r["SMILES"] for r in csv.DictReader((data / f"{name}.csv").open())}
    from_csv = task.read(data, name)  # <root>/<split>.csv
    from_folder = task.read(data / name)  # images/ + mol_ref/
    assert [s.id for s in from_csv] == list(gold) == [s.id for s in from_folder]
    for a, b in zip(from_csv, from_folder):
        assert Path(a.image) == Path(b.image) and Path(a.image).is_file()
        assert a.target == gold[a.id] == b.target  # superatoms put back as [Label], as MolScribe does
        assert "problems" not in b.meta
    assert task.read(data / f"{name}.csv")[0].target == from_csv[0].target


def test_markush_reference_keeps_superatom_labels(data: Path) -> None:
    smiles, problems = molfile_smiles(data / "CLEF/mol_ref/US20030130506A1_p0003_x0392_y2374_c00002.mol")
    assert smiles == "O=C(NO)[CH]1[Y][*][W][CH2]N1S(=O)(=O)C1=CC=C([Z][Ar])C=C1" and problems == []
    mol, problems = parse_smiles(smiles)
    assert mol is None and any("valence" in p for p in problems)


def test_identifiers_reproduced_from_molfiles(data: Path) -> None:
    rows = list(csv.DictReader((data / "expected_identifiers.csv").open()))
    for row in rows:
        ids = molfile_identifiers(data / row["mol_file"])
        assert ids["inchi"] == row["std_inchi"], row["mol_file"]
        assert str(bool(ids["inchi"])) == row["sanitized_ok"]
        assert (len(ids["inchikey"]) == 27) == bool(ids["inchi"])
    assert sum(not r["std_inchi"] for r in rows) == 1


def test_unreadable_molfiles(tmp_path: Path) -> None:
    (tmp_path / "images").mkdir()
    (tmp_path / "mol_ref").mkdir()
    for stem in ("garbage", "missing", "binary"):
        Image.new("RGB", (8, 8), "white").save(tmp_path / "images" / f"{stem}.png")
    (tmp_path / "mol_ref" / "garbage.mol").write_text("not a molfile\n\n\n  x  y  V2000\nM  END\n")
    (tmp_path / "mol_ref" / "binary.sdf").write_bytes(b"\x00\xff\xfe" * 100)
    samples = {s.id: s for s in docvlm.tasks.get("molecules").read(tmp_path)}
    assert samples["garbage"].target == ""
    assert "garbage.mol: not a readable molfile" in samples["garbage"].meta["problems"][0]
    assert samples["binary"].target == "" and "binary.sdf" in samples["binary"].meta["problems"][0]
    assert samples["missing"].target is None and "no MOL/SDF reference" in samples["missing"].meta["problems"][0]
    assert molfile_smiles(tmp_path / "nowhere.mol")[1][0].startswith(f"{tmp_path / 'nowhere.mol'}: cannot read")
    with pytest.raises(ManifestError, match="neither CLEF.csv"):
        docvlm.tasks.get("molecules").read(tmp_path, "CLEF")


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("", "empty SMILES"),
        ("C1CC", "unclosed ring"),
        ("CC(C)(C)(C)(C)C", "Explicit valence for atom # 1 C, 6"),
        ("CCX", "syntax error"),
        ("C$%^&C", "SMILES Parse Error"),
        ("C" * 5000, "5000 characters is longer than 4096"),
    ],
)
def test_parse_reports_problems(task, text: str, problem: str) -> None:
    parsed = task.parse(text)
    assert parsed.value is None and not parsed.ok
    assert any(problem in p for p in parsed.problems), parsed.problems


def test_parse_labels_and_trailing_text(task) -> None:
    parsed = task.parse("[R1]c1ccc([Ph])cc1")
    atoms = [a for a in parsed.value.GetAtoms() if a.GetAtomicNum() == 0]
    assert [(a.GetIsotope(), a.GetProp("dummyLabel")) for a in atoms] == [(1, "R1"), (0, "Ph")]
    assert parsed.problems == ["[R1] is not an atom: read as a dummy atom", "[Ph] is not an atom: read as a dummy atom"]
    parsed = task.parse("CCO ethanol")
    assert parsed.value.GetNumAtoms() == 3 and "text after the SMILES ignored" in parsed.problems[0]
    assert task.parse("  c1ccccc1\n").ok


def test_canonical_targets(task) -> None:
    from docvlm.tasks import Sample

    assert canonical_smiles("C1=CC=CC=C1") == "c1ccccc1"
    assert canonical_smiles("C[C@H](N)O") == canonical_smiles("N[C@@H](C)O") == "C[C@H](N)O"  # stereo kept
    assert canonical_smiles("O[C@@H](C)N") == "C[C@@H](N)O"  # the other enantiomer
    assert canonical_smiles("C(C)[Ph]") == canonical_smiles("[Ph]CC") == "[Ph]CC"  # labels survive canonicalization
    assert canonical_smiles("C1CC") is None
    assert task.to_target(Sample("a", "x.png", "OCC")) == "CCO"
    assert task.to_target(Sample("b", "x.png", "C1CC")) == "C1CC"  # invalid: kept as written
    keep = docvlm.tasks.get("molecules", canonical=False)
    assert keep.to_target(Sample("a", "x.png", "OCC")) == "OCC"


def test_synthetic_samples_are_deterministic_and_valid(task) -> None:
    first = list(task.synthesize(6, seed=3))
    again = list(task.synthesize(6, seed=3))
    assert [s.target for s in first] == [s.target for s in again]
    assert len({s.target for s in first}) == 6
    assert [s.target for s in task.synthesize(6, seed=4)] != [s.target for s in first]
    for sample in first:
        assert task.parse(sample.target).ok and canonical_smiles(sample.target) == sample.target
        image = sample.image()
        assert image.mode == "RGB" and max(image.size) == 448
        assert image.tobytes() == sample.image().tobytes()  # the lazy image is the same each call
        pixels = image.convert("L").getextrema()
        assert pixels[0] < 100 and pixels[1] == 255  # ink on white
    assert any("@" in s.target or "/" in s.target for s in task.synthesize(30, seed=0))


def test_export_writes_molfile_inchi_and_drawing(task, tmp_path: Path) -> None:
    paths = task.export(task.parse("CC(=O)Oc1ccccc1C(=O)O"), tmp_path / "aspirin")
    suffixes = {p.suffix: p for p in paths}
    assert set(suffixes) == {".smi", ".mol", ".inchi", ".inchikey", ".png"}
    assert suffixes[".inchikey"].read_text().strip() == "BSYNRYMUTXBXSQ-UHFFFAOYSA-N"
    assert "V2000" in suffixes[".mol"].read_text() or "V3000" in suffixes[".mol"].read_text()
    assert Image.open(suffixes[".png"]).size == (512, 512)
    labelled = task.export(task.parse("[Ph]CC"), tmp_path / "labelled")
    assert {p.suffix for p in labelled} == {".smi", ".mol", ".png"}  # no InChI for a dummy atom
    assert "Ph" in (tmp_path / "labelled.mol").read_text()
    invalid = task.export(task.parse("C1CC"), tmp_path / "bad")
    assert [p.name for p in invalid] == ["bad.smi"] and invalid[0].read_text() == "C1CC\n"


def test_generic_manifest_and_csv_root_fallback(data: Path, tmp_path: Path) -> None:
    image = data / "JPO/images/2008195791_4_chem.png"
    (tmp_path / "m.jsonl").write_text(f'{{"image": "{image}", "target": "CC1(C2CCC3OC3(C)C2)CO1"}}\n')
    [sample] = docvlm.tasks.get("molecules").read(tmp_path / "m.jsonl")
    assert Path(sample.image) == image and sample.target == "CC1(C2CCC3OC3(C)C2)CO1"
    # MolScribe's file_path relative to a data root one level above the CSV
    (tmp_path / "real").mkdir()
    (tmp_path / "JPO").symlink_to(data / "JPO")
    (tmp_path / "real" / "jpo.csv").write_text((data / "JPO.csv").read_text())
    samples = docvlm.tasks.get("molecules").read(tmp_path / "real", "jpo")
    assert len(samples) == 5 and all(Path(s.image).is_file() for s in samples)
