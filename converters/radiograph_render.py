"""Synthetic chest-radiograph-like images with templated reports that state what is drawn.

Each case draws a frontal chest film (dark lungs, bright mediastinum, spine, clavicles, ribs) whose
visible features follow a few findings, and writes a MIMIC-style report stating them, so a model can
learn the mapping from pixels to sentences:

- cardiomegaly: the heart shadow is wider (cardiothoracic ratio ~0.6 instead of ~0.45);
- pleural effusion (left/right): a bright meniscus fills the lung base and blunts the costophrenic angle;
- consolidation (a lobe): a bright blurred patch inside one lung;
- support device: a thin bright tube down the midline, or a pacemaker box with a lead.

Nothing here is anatomically faithful; it is data for tests and the demo.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

INDICATIONS = (
    "___ year old man with shortness of breath, evaluate for pneumonia",
    "___ year old woman with cough and fever",
    "Chest pain, rule out acute process",
    "___M with hypoxia",
    "Evaluate for interval change",
    "Line placement",
    "Preoperative evaluation",
)


@dataclass
class Case:
    """The findings a synthetic film shows."""

    cardiomegaly: bool = False
    effusion: tuple[str, ...] = ()  # sides: "left", "right"
    consolidation: str | None = None  # "right lower lobe", "left lower lobe", "right upper lobe"
    device: str | None = None  # "tube", "pacemaker"
    indication: str = ""
    severity: dict[str, str] = field(default_factory=dict)

    @property
    def normal(self) -> bool:
        return not (self.cardiomegaly or self.effusion or self.consolidation)


def random_case(rng: random.Random) -> Case:
    """A case with each finding drawn independently (about a third of cases are normal)."""
    return Case(
        cardiomegaly=rng.random() < 0.35,
        effusion=tuple(side for side in ("left", "right") if rng.random() < 0.25),
        consolidation=(rng.choice(["right lower lobe", "left lower lobe", "right upper lobe"]) if rng.random() < 0.25
                       else None),
        device=rng.choice(["tube", "pacemaker"]) if rng.random() < 0.3 else None,
        indication=rng.choice(INDICATIONS),
        severity={"effusion": rng.choice(["small", "moderate"]), "cardiomegaly": rng.choice(["mild", "moderate"])},
    )


def report_text(case: Case, rng: random.Random) -> str:
    """A MIMIC-style report (INDICATION, FINDINGS, IMPRESSION) stating exactly the drawn findings."""
    findings, impression = [], []
    if case.device == "tube":
        findings.append("An endotracheal tube terminates in the mid trachea.")
        impression.append("Endotracheal tube in standard position.")
    elif case.device == "pacemaker":
        findings.append("A left chest wall pacemaker is present with a lead in the right ventricle.")
    if case.cardiomegaly:
        findings.append(f"The heart is {case.severity['cardiomegaly']}ly enlarged.")
        impression.append(f"{case.severity['cardiomegaly'].capitalize()} cardiomegaly.")
    else:
        findings.append(rng.choice(["Heart size is normal.", "The cardiac silhouette is normal in size."]))
    if case.consolidation:
        findings.append(f"There is a focal consolidation in the {case.consolidation}.")
        impression.append(f"{case.consolidation.capitalize()} consolidation, concerning for pneumonia.")
    if case.effusion:
        sides = " pleural effusions" if len(case.effusion) == 2 else f" {case.effusion[0]} pleural effusion"
        size = case.severity["effusion"]
        findings.append(f"There is a {size}{sides}." if len(case.effusion) == 1
                        else f"There are {size} bilateral{sides}.")
        impression.append(f"{size.capitalize()}{sides}.")
    negatives = [n for n, present in (("pleural effusion", case.effusion), ("focal consolidation", case.consolidation))
                 if not present]
    negatives.append("pneumothorax")
    findings.append(f"No {', '.join(negatives[:-1])}{',' if len(negatives) > 2 else ''}"
                    f"{' or ' if len(negatives) > 1 else ''}"
                    f"{negatives[-1]}.")
    if not impression:
        impression.append("No acute cardiopulmonary process.")
    if len(impression) > 1:
        impression = [f"{i}. {text}" for i, text in enumerate(impression, start=1)]
    return (f"INDICATION: {case.indication}\n\nCOMPARISON: None.\n\nFINDINGS:\n{' '.join(findings)}\n\n"
            f"IMPRESSION:\n{' '.join(impression)}\n")


def render(case: Case, rng: random.Random, size: int = 448) -> Image.Image:
    """Draw the film of `case` (grayscale content in an RGB image of `size` x `size`)."""
    s = size / 448
    image = Image.new("L", (448, 448), 10)
    draw = ImageDraw.Draw(image)
    cx = 224 + rng.randint(-10, 10)
    draw.ellipse((cx - 190, 40, cx + 190, 470), fill=95)  # soft tissue of the thorax
    lungs = {"right": (cx - 165, 80, cx - 25, 360), "left": (cx + 25, 80, cx + 165, 360)}  # patient's side
    for box in lungs.values():
        draw.ellipse(box, fill=38)
    for i in range(8):  # ribs
        y = 100 + i * 32
        for sign in (-1, 1):
            draw.arc((cx + sign * 95 - 85, y - 20, cx + sign * 95 + 85, y + 30), 200 if sign < 0 else 300,
                     240 if sign < 0 else 340, fill=110, width=5)
    draw.rectangle((cx - 14, 40, cx + 14, 440), fill=150)  # spine
    draw.line((cx - 150, 85, cx - 20, 105), fill=170, width=9)  # clavicles
    draw.line((cx + 20, 105, cx + 150, 85), fill=170, width=9)
    half_width = rng.uniform(95, 110) if case.cardiomegaly else rng.uniform(60, 72)
    heart_cx = cx + 18
    draw.ellipse((heart_cx - half_width, 230, heart_cx + half_width, 375), fill=165)
    draw.rectangle((cx - 28, 90, cx + 28, 250), fill=150)  # mediastinum
    for side in case.effusion:  # fluid with a meniscus that hides the costophrenic angle
        x0, _, x1, y1 = lungs[side]
        top = y1 - (70 if case.severity.get("effusion") == "moderate" else 45)
        draw.chord((x0 - 10, top, x1 + 10, y1 + 60), 180, 360, fill=150)
        draw.rectangle((x0 - 10, top + 30, x1 + 10, y1 + 25), fill=150)
    if case.consolidation:
        side = "right" if case.consolidation.startswith("right") else "left"
        x0, y0, x1, y1 = lungs[side]
        y = y0 + (y1 - y0) * (0.3 if "upper" in case.consolidation else 0.72)
        x = (x0 + x1) / 2 + rng.uniform(-15, 15)
        patch = Image.new("L", (448, 448), 0)
        ImageDraw.Draw(patch).ellipse((x - 40, y - 30, x + 40, y + 30), fill=90)
        image = Image.fromarray(np.clip(np.asarray(image, dtype=np.int16) + np.asarray(patch.filter(
            ImageFilter.GaussianBlur(12)), dtype=np.int16), 0, 255).astype(np.uint8))
        draw = ImageDraw.Draw(image)
    if case.device == "tube":
        draw.line((cx + 2, 0, cx + 2, 150), fill=235, width=4)
    elif case.device == "pacemaker":
        draw.rectangle((cx + 120, 95, cx + 160, 125), fill=245)
        draw.line([(cx + 120, 110), (cx + 40, 150), (cx + 10, 260), (cx + 30, 320)], fill=235, width=3)
    image = image.filter(ImageFilter.GaussianBlur(rng.uniform(1.0, 2.0))).resize((size, size), Image.BILINEAR)
    noise = np.random.default_rng(rng.randrange(2**32)).normal(0, 4 * max(s, 0.5), (size, size))
    pixels = np.clip(np.asarray(image, dtype=np.float32) + noise, 0, 255).astype(np.uint8)
    return Image.fromarray(pixels).convert("RGB")
