"""mammo: 2D mammogram-like images (16-bit PNG) with whole-image labels and mass masks, for 2D pretraining."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.ndimage import gaussian_filter

from xtlunet.dataset.examples._grid import rotation, world_points
from xtlunet.dataset.examples._shapes import Blob, ellipsoid, random_blob
from xtlunet.dataset.examples._textures import quantise, smooth_noise
from xtlunet.dataset.examples._writer import (Example, case_rng, make_folders, progress, write_dataset_json,
                                              write_findings)
from xtlunet.dataset.geometry import Geometry
from xtlunet.dataset.io import write_image

CODE = 503
FOLDER = "Dataset503_Mammo"
ENDING = ".png"
SHAPE = (128, 96)  # rows (y) × columns (x)
PIXEL_MM = 0.8  # nominal pixel spacing of these down-sampled images
VIEWS = ("CC", "MLO")
GEOMETRY = Geometry(spacing=(PIXEL_MM, PIXEL_MM), origin=(0.0, 0.0), direction=(1.0, 0.0, 0.0, 1.0), shape=SHAPE)


@dataclass(frozen=True)
class Traits:
    """What both views of one patient share: breast side, density and the mass (if any)."""

    side: int
    density: float
    mass: bool
    spiculated: bool
    mass_radius: float
    mass_gain: float


def patient_traits(seed: int, p: int) -> Traits:
    """The traits of patient p; of each pair of patients (0–1, 2–3, …) exactly one has a mass."""
    rng = case_rng(seed, CODE, 100_000 + p)
    has_mass = bool(case_rng(seed, CODE, 200_000 + p // 2).permutation(2)[p % 2])
    return Traits(side=int(rng.integers(2)), density=float(rng.uniform(0.15, 0.85)), mass=has_mass,
                  spiculated=bool(rng.random() < 0.5), mass_radius=float(rng.uniform(3.0, 6.0)),
                  mass_gain=float(rng.uniform(0.25, 0.45)))


def breast_outline(rng: np.random.Generator, view: str, side: int) -> tuple[Blob, np.ndarray | None]:
    """Half-ellipse breast against the chest-wall edge; in MLO views also the pectoral muscle corner (or None)."""
    h, w = SHAPE[0] * PIXEL_MM, SHAPE[1] * PIXEL_MM
    chest_x = 0.0 if side == 0 else w
    mlo = view == "MLO"
    cy = h * (0.45 if mlo else 0.5) + rng.uniform(-4, 4)
    radii = [w * rng.uniform(0.78, 0.92), h * (rng.uniform(0.42, 0.48) if mlo else rng.uniform(0.36, 0.44))]
    tilt = rotation([(-12 if side == 0 else 12) * mlo + rng.uniform(-3, 3)])
    pectoral = np.array([chest_x, w * rng.uniform(0.25, 0.4), h * rng.uniform(0.35, 0.55)]) if mlo else None
    return ellipsoid([chest_x, cy], radii, tilt), pectoral


def point_inside(rng: np.random.Generator, breast: Blob, low: float, high: float) -> np.ndarray:
    """A random point whose normalised breast radius lies in [low, high] and that lies inside the image."""
    size = np.array([SHAPE[1], SHAPE[0]]) * PIXEL_MM
    for _ in range(10_000):
        pt = rng.uniform([0, 0], size)
        q = float(breast.q(pt.reshape(2, 1).astype(np.float32))[0])
        if low <= q <= high and np.all(pt > 8) and np.all(pt < size - 8):
            return pt
    raise RuntimeError("no point of the breast lies in the requested band")


def synthesise(rng: np.random.Generator, traits: Traits, view: str) -> tuple[np.ndarray, np.ndarray]:
    """One view: a uint16 image and its uint8 mass mask."""
    points = world_points(GEOMETRY)
    breast, pectoral = breast_outline(rng, view, traits.side)
    q = breast.q(points)
    inside = q < 1.0
    thickness = np.sqrt(np.clip(1.0 - q * q, 0.0, 1.0))
    img = 2200.0 + 1600.0 * np.sqrt(thickness) + 700.0 * ((q > 0.97) & inside)
    texture = smooth_noise(rng, SHAPE, 1.5) + 0.7 * smooth_noise(rng, SHAPE, 5.0)
    glandular = 1.0 / (1.0 + np.exp(-1.5 * (texture + 2.5 * (0.75 - q) - 1.2 * (1 - traits.density))))
    img += 3000.0 * traits.density * glandular
    if pectoral is not None:
        corner = np.abs(points[0] - pectoral[0]) / pectoral[1] + points[1] / pectoral[2] < 1.0
        img[corner] = 6500.0 + 400.0 * smooth_noise(rng, SHAPE, 3.0)[corner]
    mask = np.zeros(SHAPE, np.uint8)
    if traits.mass:
        lobes = (12, (0.5, 1.1), 30.0) if traits.spiculated else (5, (0.0, 0.15), 2.0)
        r = traits.mass_radius
        mass = random_blob(rng, point_inside(rng, breast, 0.2, 0.6), (r, r), elongation=0.2, lobes=lobes[0],
                           amplitude=lobes[1], sharpness=lobes[2])
        img += 9000.0 * traits.mass_gain * mass.weight(points, edge=0.3) * inside
        mask[mass.mask(points) & inside] = 1
    if rng.random() < 0.35:  # microcalcification cluster (a distractor in both classes)
        centre = point_inside(rng, breast, 0.1, 0.7)
        dots = centre + rng.normal(0.0, 2.5, size=(int(rng.integers(5, 13)), 2))
        for x, y in dots:
            row, col = int(round(y / PIXEL_MM)), int(round(x / PIXEL_MM))
            if 0 <= row < SHAPE[0] and 0 <= col < SHAPE[1] and inside[row, col]:
                img[row, col] += rng.uniform(4000, 7000)
    img = gaussian_filter(img * inside, 0.5)
    img += np.sqrt(np.maximum(img, 0)) * 1.5 * rng.standard_normal(SHAPE) + 40.0 * rng.standard_normal(SHAPE)
    return quantise(img, inside, np.uint16), mask


def build(root: Path, cases: int, seed: int) -> None:
    """Write Dataset503_Mammo into `root`: `cases` images (CC and MLO of each patient), findings.csv and masks."""
    images_tr, labels_tr = make_folders(root, "imagesTr", "labelsTr")
    rows = []
    for i in progress(list(range(cases)), FOLDER):
        p, view = i // 2, VIEWS[i % 2]
        traits = patient_traits(seed, p)
        img, mask = synthesise(case_rng(seed, CODE, i), traits, view)
        case_id = f"mammo_{i + 1:04d}"
        write_image(images_tr / f"{case_id}_0000{ENDING}", img, GEOMETRY)
        write_image(labels_tr / f"{case_id}{ENDING}", mask, GEOMETRY)
        rows.append({"case_id": case_id, "finding_id": "1", "patient_id": f"M{p + 1:03d}", "x": None, "y": None,
                     "z": None, "label": int(traits.mass)})
    write_findings(root, rows)
    write_dataset_json(root, "Mammo", "Mammogram-like 2D images (CC and MLO view per patient), 16-bit PNG: breast "
                       "outline, fibroglandular texture, masses (label 1, masks in labelsTr) and microcalcification "
                       "distractors; whole-image labels in findings.csv.", ["mammography"],
                       {"background": 0, "mass": 1}, cases, ENDING, task="classification",
                       classes={"normal": 0, "mass": 1}, findings="findings.csv", nominal_pixel_spacing_mm=PIXEL_MM)


EXAMPLE = Example("mammo", FOLDER, 48, "mammogram-like 2D images (16-bit PNG), 48 images, labels + mass masks", build)
