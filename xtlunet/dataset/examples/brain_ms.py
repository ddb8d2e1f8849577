"""brain-ms: MS-like brain MR (FLAIR, T1) with small white-matter lesions, varied spacing and orientation."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from scipy.ndimage import gaussian_filter

from xtlunet.dataset.examples._grid import grid_around, rotation, world_points
from xtlunet.dataset.examples._shapes import Blob, angular_ripple, ellipsoid, random_blob, separated_centres
from xtlunet.dataset.examples._textures import bias_field, quantise, rician, smooth_noise
from xtlunet.dataset.examples._writer import Example, case_rng, make_folders, progress, write_dataset_json
from xtlunet.dataset.geometry import Geometry
from xtlunet.dataset.io import write_image

CODE = 501
FOLDER = "Dataset501_BrainMS"
ENDING = ".nii.gz"
TEST_CASES = 3                  # default size of the labelled test set (imagesTs, labelsTs)
# slice spacing (mm) of training case i (cycled): thick slices dominate, so the median is > 3× the in-plane spacing
SLICE_SPACINGS = (3.4, 1.0, 3.3, 3.5, 3.2, 1.5, 3.4, 2.0, 3.3, 3.5)
# slice spacing of test case j (cycled): the first three are off the training grid; a larger test set (--test-cases)
# goes on with the training mix
TEST_SLICE_SPACINGS = (1.2, 3.0, 2.4, 3.4, 1.0, 3.3, 3.5, 1.5, 3.2, 2.0)
BACKGROUND, SCALP, SKULL, CSF, GREY, WHITE, LESION = range(7)
# mean intensity of each tissue class on (FLAIR, T1)
INTENSITY = np.array([[0, 0], [260, 460], [45, 70], [70, 170], [340, 400], [270, 540], [700, 280]], np.float32)


def orientation(index: int, rng: np.random.Generator) -> np.ndarray:
    """Direction matrix of case `index`: every 5th (from 1) oblique, every 3rd (from 2) stored RAS (x, y flipped)."""
    direction = np.eye(3)
    if index % 5 == 1:
        direction = rotation(rng.uniform(4.0, 9.0, 3) * rng.choice([-1.0, 1.0], 3))
    if index % 3 == 2:
        direction = direction @ np.diag([-1.0, -1.0, 1.0])
    return direction


def case_geometry(rng: np.random.Generator, index: int, slice_spacing: float) -> tuple[Geometry, Blob]:
    """The voxel grid of one case and the head (an ellipsoid in world space) it images."""
    inplane = float(np.round(rng.uniform(0.9, 1.05), 3))
    nx = int(rng.integers(64, 75))
    ny = int(min(80, nx + rng.integers(2, 9)))
    nz = int(np.clip(round(64 / slice_spacing), 20, 40))
    slice_spacing = float(np.round(slice_spacing + rng.uniform(-0.05, 0.05), 3))
    centre = np.array([0.0, -18.0, 22.0]) + rng.uniform(-15, 15, 3)
    geom = grid_around(centre, (nz, ny, nx), (slice_spacing, inplane, inplane), orientation(index, rng),
                       shift=rng.uniform(-2, 2, 3))
    radii = [0.38 * nx * inplane * rng.uniform(0.95, 1.03), 0.43 * ny * inplane * rng.uniform(0.95, 1.03),
             rng.uniform(30, 36)]
    head = ellipsoid(centre, radii, rotation(rng.uniform(-6, 6, 3)))
    return geom, head


def tissue_map(rng: np.random.Generator, points: np.ndarray, head: Blob) -> np.ndarray:
    """Tissue class of every point: scalp, skull, CSF, wavy cortex, white matter and two ventricles."""
    r = head.q(points)
    wavy = r + angular_ripple(points, head.centre, rng, waves=5, amplitude=0.045)
    cls = np.full(r.shape, BACKGROUND, np.uint8)
    for limit, value, field in ((1.0, SCALP, r), (0.94, SKULL, r), (0.88, CSF, r), (0.84, GREY, wavy),
                                (0.70, WHITE, wavy)):
        cls[field < limit] = value
    for side in (-1.0, 1.0):
        offset = head.rot @ np.array([side * 0.2 * head.radii[0], 0.05 * head.radii[1], 0.15 * head.radii[2]])
        radii = np.array([0.1, 0.3, 0.18]) * head.radii * rng.uniform(0.8, 1.2)
        cls[ellipsoid(head.centre + offset, radii, head.rot).mask(points)] = CSF
    return cls


def place_lesions(rng: np.random.Generator, points: np.ndarray, head: Blob, cls: np.ndarray) -> list[Blob]:
    """2–6 ovoid lesions (2–5 mm radius), each centred on a voxel centre of deep white matter."""
    candidates = np.argwhere((cls == WHITE) & (head.q(points) < 0.58))
    radii = rng.uniform(2.0, 5.0, size=int(rng.integers(2, 7)))

    def pick(g: np.random.Generator) -> np.ndarray:
        """World point of a random candidate voxel centre (so every lesion covers at least that voxel)."""
        return points[(slice(None), *candidates[g.integers(len(candidates))])].astype(np.float64)

    centres = separated_centres(rng, pick, radii, gap=1.5)
    return [random_blob(rng, c, (r, r), elongation=0.25, lobes=3, amplitude=(0.0, 0.3)) for c, r in zip(centres, radii)]


def synthesise(rng: np.random.Generator, index: int,
               slice_spacing: float) -> tuple[list[np.ndarray], np.ndarray, Geometry]:
    """One case: (FLAIR, T1) int16 images, the uint8 lesion label and their shared geometry."""
    geom, head = case_geometry(rng, index, slice_spacing)
    points = world_points(geom)
    cls = tissue_map(rng, points, head)
    label = np.zeros(geom.shape, np.uint8)
    brain = head.q(points) < 0.84
    lesion_gain = []
    for blob in place_lesions(rng, points, head, cls):
        inside = blob.mask(points) & brain
        label[inside] = 1
        cls[inside] = LESION
        lesion_gain.append((inside, rng.uniform(0.85, 1.1)))
    inside_head = cls != BACKGROUND
    psf = np.minimum(0.6 / np.asarray(geom.spacing), 0.7)  # slight blur (voxels), less along thick slices
    bias = bias_field(rng, geom.shape, 40.0 / np.asarray(geom.spacing), 0.18)
    images = []
    for channel in range(2):
        img = INTENSITY[cls, channel] * (1.0 + 0.04 * smooth_noise(rng, geom.shape, 2.0 / np.asarray(geom.spacing)))
        for inside, gain in lesion_gain:  # a brighter FLAIR lesion is a darker T1 lesion
            img[inside] *= gain if channel == 0 else 2.0 - gain
        img = gaussian_filter(img, psf) * bias
        images.append(quantise(rician(rng, img, 12.0), inside_head))
    return images, label, geom


def build(root: Path, cases: int, seed: int, test_cases: int = TEST_CASES) -> None:
    """Write Dataset501_BrainMS into `root`: `cases` training cases, `test_cases` test cases with labels in
    labelsTs (test case j is the same whatever the number of either)."""
    images_tr, labels_tr, images_ts, labels_ts = make_folders(root, "imagesTr", "labelsTr", "imagesTs", "labelsTs")
    jobs = [(f"brainms_{i + 1:04d}", i, SLICE_SPACINGS[i % len(SLICE_SPACINGS)], images_tr, labels_tr)
            for i in range(cases)]
    jobs += [(f"brainms_{cases + j + 1:04d}", j, TEST_SLICE_SPACINGS[j % len(TEST_SLICE_SPACINGS)], images_ts,
              labels_ts) for j in range(test_cases)]
    for case_id, index, spacing, image_dir, label_dir in progress(jobs, FOLDER):
        stream = index if image_dir is images_tr else 1000 + index
        images, label, geom = synthesise(case_rng(seed, CODE, stream), index, spacing)
        for c, img in enumerate(images):
            write_image(image_dir / f"{case_id}_{c:04d}{ENDING}", img, geom)
        write_image(label_dir / f"{case_id}{ENDING}", label, geom)
    write_dataset_json(root, "BrainMS", "MS-like brain MR: FLAIR and T1 with small bright white-matter lesions; "
                       "varied slice spacing, orientation and origin; test labels in labelsTs.",
                       ["FLAIR", "T1"], {"background": 0, "lesion": 1}, cases, ENDING,
                       overwrite_image_reader_writer="SimpleITKIO")


EXAMPLE = Example("brain-ms", FOLDER, 10, "MS-like brain MR segmentation (FLAIR, T1), 10 + 3 test cases", build,
                  default_test_cases=TEST_CASES)
