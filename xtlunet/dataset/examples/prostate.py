"""prostate: ProstateX-like multi-parametric MR (T2 fine grid; ADC, DWI coarse grid) with lesion findings."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from xtlunet.dataset.examples._grid import grid_around, render, rotation, to_frame
from xtlunet.dataset.examples._shapes import Blob, ellipsoid, random_blob, random_unit_vectors
from xtlunet.dataset.examples._textures import bias_field, quantise, rician, smooth_noise
from xtlunet.dataset.examples._writer import (Example, case_rng, make_folders, progress, write_dataset_json,
                                              write_findings)
from xtlunet.dataset.geometry import Geometry
from xtlunet.dataset.io import write_image

CODE = 502
FOLDER = "Dataset502_Prostate"
ENDING = ".nii.gz"
STUDIES = (1, 2, 3, 2)  # studies of patient p: STUDIES[p % 4]
LESIONS = (3, 4, 2, 3)  # lesions of patient p: LESIONS[p % 4]
OUTSIDE, FAT, MUSCLE, BONE, RECTUM, AIR, BLADDER, PZ, TZ = range(9)
# mean (T2, ADC [1e-6 mm²/s], DWI) of each tissue class
INTENSITY = np.array([[0, 0, 0], [720, 350, 40], [280, 1350, 130], [380, 500, 60], [200, 1100, 170],
                      [30, 800, 20], [950, 2600, 60], [620, 1650, 230], [420, 1250, 260]], np.float32)


@dataclass(frozen=True)
class Lesion:
    """One finding: its shape in the patient frame (mm, gland at 0), class, and (T2, ADC, DWI) intensity factors."""

    blob: Blob
    label: int
    factors: np.ndarray


@dataclass(frozen=True)
class Patient:
    """Anatomy shared by all studies of one patient, in a patient frame centred on the gland."""

    body: Blob
    bones: tuple[Blob, Blob]
    rectum: Blob
    bladder: Blob
    gland: Blob
    tz: Blob
    lesions: tuple[Lesion, ...]


def lesion_factors(rng: np.random.Generator, label: int) -> np.ndarray:
    """(T2, ADC, DWI) multipliers of the local gland value; see documentation/examples.md for the rule."""
    t2 = rng.uniform(0.45, 0.60)
    if label:
        return np.array([t2, 1.0 - rng.uniform(0.15, 0.25), rng.uniform(1.10, 1.30)], np.float32)
    return np.array([t2, 1.0 - rng.uniform(-0.05, 0.12), rng.uniform(0.95, 1.15)], np.float32)


def patient_labels(rng: np.random.Generator, p: int) -> list[int]:
    """Half of a patient's lesions are significant; an odd spare one alternates between patients."""
    n = LESIONS[p % 4]
    spare = sum(LESIONS[q % 4] % 2 for q in range(p)) % 2
    labels = [0, 1] * (n // 2) + ([spare] if n % 2 else [])
    return [int(v) for v in rng.permutation(labels)]


def make_patient(rng: np.random.Generator, p: int) -> Patient:
    """Random pelvis anatomy and lesions (4–8 mm across, in the peripheral or transition zone) of patient p."""
    g = np.array([rng.uniform(16, 20), rng.uniform(12, 14), rng.uniform(14, 17)])
    gland = ellipsoid([0, 0, 0], g, rotation(rng.uniform(-8, 8, 3)))
    tz = ellipsoid([0, -0.2 * g[1], 0.1 * g[2]], 0.58 * g, gland.rot)
    body = ellipsoid([0, 2.0, 0], [rng.uniform(40, 46), rng.uniform(26, 30), 300.0])
    bones = tuple(ellipsoid([s * rng.uniform(26, 29), 3.0, 0], [4.0, 9.0, 60.0], rotation([0, 0, s * 20]))
                  for s in (-1.0, 1.0))
    rectum = ellipsoid([0, g[1] + 7.5, 0], [9.0, 6.0, 60.0])
    bladder = ellipsoid([0, -4.0, g[2] + 13.0], [17.0, 13.0, 12.0])
    lesions = []
    for label in patient_labels(rng, p):
        r = rng.uniform(2.0, 4.0)
        for _ in range(100):
            if rng.random() < 0.7:  # peripheral zone: posterior-lateral shell of the gland
                u = random_unit_vectors(rng, 1, 3)[0] * [1.0, 0.6, 0.5]
                u = np.abs(u) * [rng.choice([-1, 1]), 1.0, rng.choice([-1, 1])]
                centre = gland.rot @ (g * 0.78 * u / np.linalg.norm(u))
            else:  # transition zone
                centre = tz.centre + gland.rot @ (tz.radii * 0.35 * random_unit_vectors(rng, 1, 3)[0])
            if all(np.linalg.norm(centre - o.blob.centre) > r + o.blob.radii.max() + 1.5 for o in lesions):
                break
        lobes = (6, (0.15, 0.35), 3.0) if label else (4, (0.0, 0.08), 2.0)
        blob = random_blob(rng, centre, (r, r), elongation=0.2, lobes=lobes[0], amplitude=lobes[1], sharpness=lobes[2])
        lesions.append(Lesion(blob, label, lesion_factors(rng, label)))
    return Patient(body, bones, rectum, bladder, gland, tz, tuple(lesions))


def tissue_values(patient: Patient, local: np.ndarray) -> np.ndarray:
    """Noise-free (T2, ADC, DWI) at points (3, ...) given in the patient frame, shape (..., 3)."""
    cls = np.full(local.shape[1:], OUTSIDE, np.uint8)
    body = patient.body.q(local)
    cls[body < 1.0] = FAT
    cls[body < 0.86] = MUSCLE
    for bone in patient.bones:
        cls[bone.mask(local)] = BONE
    rectum = patient.rectum.q(local)
    cls[rectum < 1.0] = RECTUM
    cls[rectum < 0.55] = AIR
    cls[patient.bladder.mask(local)] = BLADDER
    gland = patient.gland.mask(local)
    cls[gland] = PZ
    cls[patient.tz.mask(local)] = TZ
    values = INTENSITY[cls]
    inner, gland_values = local[:, gland], values[gland]
    for lesion in patient.lesions:
        gland_values *= 1.0 + lesion.blob.weight(inner, edge=0.2)[:, None] * (lesion.factors - 1.0)
    values[gland] = gland_values
    return values


def study_geometry(rng: np.random.Generator, index: int, pose_t: np.ndarray,
                   pose_r: np.ndarray) -> tuple[Geometry, Geometry]:
    """T2 grid (fine in-plane, 3–3.6 mm slices, every 3rd study oblique) and the coarser ADC/DWI grid."""
    inplane = float(np.round(rng.uniform(0.7, 0.8), 3))
    slice_spacing = float(rng.choice([3.0, 3.3, 3.6]))
    shape = (int(round(60 / slice_spacing)), 96, 96)
    direction = rotation([rng.uniform(6, 14), 0, rng.uniform(-4, 4)]) if index % 3 == 1 else np.eye(3)
    centre = pose_t + pose_r @ rng.uniform(-3, 3, 3)
    t2 = grid_around(centre, shape, (slice_spacing, inplane, inplane), direction)
    fov = np.asarray(shape) * np.asarray(t2.spacing)
    dwi_spacing = (3.0, 2.0, 2.0)
    dwi_shape = tuple(int(np.ceil(f / s)) + 2 for f, s in zip(fov, dwi_spacing))
    dwi = grid_around(centre + rng.uniform(-1.5, 1.5, 3), dwi_shape, dwi_spacing, direction)
    return t2, dwi


def synthesise(rng: np.random.Generator, patient: Patient,
               index: int) -> tuple[list[np.ndarray], list[Geometry], list[np.ndarray]]:
    """One study: (T2, ADC, DWI) int16 images, their geometries, and the world (LPS mm) centres of the lesions."""
    pose_r = rotation(rng.uniform(-4, 4, 3))
    pose_t = np.array([0.0, 25.0, -60.0]) + rng.uniform(-15, 15, 3)
    t2_geom, dwi_geom = study_geometry(rng, index, pose_t, pose_r)
    images, geoms = [], []
    for geom, channels, factor in ((t2_geom, (0,), (1, 1, 1)), (dwi_geom, (1, 2), (1, 2, 2))):
        values = render(geom, lambda pts: tissue_values(patient, to_frame(pts, pose_r, pose_t)), factor)
        inside = values[..., 0] > 0
        texture = 1.0 + 0.05 * smooth_noise(rng, geom.shape, 1.5 / np.asarray(geom.spacing))
        for c in channels:
            img = values[..., c] * texture
            if c == 0:
                img = rician(rng, img * bias_field(rng, geom.shape, 30.0 / np.asarray(geom.spacing), 0.15), 18.0)
            elif c == 1:
                img = img + 70.0 * rng.standard_normal(geom.shape, dtype=np.float32)
            else:
                img = rician(rng, img, 14.0)
            images.append(quantise(img, inside))
            geoms.append(geom)
    centres = [pose_t + pose_r @ lesion.blob.centre for lesion in patient.lesions]
    for c in centres:
        idx = t2_geom.world_to_index(c)
        if not (np.all(idx >= [1, 4, 4]) and np.all(idx <= np.asarray(t2_geom.shape) - [2, 5, 5])):
            raise RuntimeError(f"lesion centre {c} falls near the T2 image edge (index {idx})")
    return images, geoms, centres


def case_plan(cases: int) -> list[tuple[int, int]]:
    """(patient index, study index) of each case: patients have 1, 2, 3, 2, 1, … studies."""
    plan: list[tuple[int, int]] = []
    p = 0
    while len(plan) < cases:
        plan += [(p, s) for s in range(STUDIES[p % 4])]
        p += 1
    return plan[:cases]


def build(root: Path, cases: int, seed: int) -> None:
    """Write Dataset502_Prostate into `root`: `cases` studies, 2–4 findings each, findings.csv in LPS mm."""
    (images_tr,) = make_folders(root, "imagesTr")
    rows = []
    patients: dict[int, Patient] = {}
    for i, (p, _study) in enumerate(progress(case_plan(cases), FOLDER)):
        if p not in patients:
            patients[p] = make_patient(case_rng(seed, CODE, 100_000 + p), p)
        case_id, patient_id = f"prostate_{i + 1:04d}", f"P{p + 1:03d}"
        images, geoms, centres = synthesise(case_rng(seed, CODE, i), patients[p], i)
        for c, (img, geom) in enumerate(zip(images, geoms)):
            write_image(images_tr / f"{case_id}_{c:04d}{ENDING}", img, geom)
        for k, (lesion, centre) in enumerate(zip(patients[p].lesions, centres)):
            rows.append({"case_id": case_id, "finding_id": str(k + 1), "patient_id": patient_id,
                         "x": centre[0], "y": centre[1], "z": centre[2], "label": lesion.label})
    write_findings(root, rows)
    write_dataset_json(root, "Prostate", "ProstateX-like prostate MR: T2 on a fine grid, ADC and DWI on a coarser "
                       "grid; one row per lesion in findings.csv (LPS mm); several studies per patient.",
                       ["T2", "ADC", "DWI"], {"background": 0}, cases, ENDING, task="classification",
                       classes={"benign": 0, "significant": 1}, findings="findings.csv",
                       overwrite_image_reader_writer="SimpleITKIO")


EXAMPLE = Example("prostate", FOLDER, 24, "ProstateX-like lesion classification (T2, ADC, DWI), 24 studies", build)
