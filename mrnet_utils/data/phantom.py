"""A deterministic synthetic knee phantom, written in MRNet's exact layout.

MRNet (Bien et al., PLoS Medicine 2018) may not be redistributed, so the project runs on
this stand-in unless it is given the real folder. Each exam is one analytic 3D knee:
femur, tibia, fibula and patella (trabecular marrow, dark cortex, a physeal scar),
articular cartilage, wedge-shaped menisci, cruciate and collateral ligaments, the
patellar and quadriceps tendons, muscle, fat pads and popliteal vessels, inside a leg
wrapped in subcutaneous fat and surrounded by air. Each series samples that knee along
its own axis with its own prescription (slice count drawn like MRNet's for that plane,
zoom, rotation, shift, slab) and contrast: coronal T1-like (bright fat and marrow, dark
fluid), sagittal proton-density-like with bright fluid, axial with partial fat
suppression. The coronal series runs from the posterior muscles through the condyles
and the whole joint to the kneecap, its last slices nearly empty as MRNet's often are.
The coil's sensitivity (a smooth bias field with patches), magnitude noise and a
slight blur finish the image, and each slice is windowed to uint8 as MRNet's are
(minimum 0, 99th percentile 255).

Calibrated against 18 real exams (scripts/phantom_vs_real.py, mrnet_utils/evaluation/realism.py):
on coronal intensity histograms, power spectra, background fraction, per-exam contrast,
slice-to-slice change and cross-exam diversity the phantom differs from them by no more
than two halves of the real sample differ from each other, over all slices of each series;
on the central slices the study keeps, all of them but the per-exam contrast, which is lower
there and varies more between exams than the real exams' (evaluation/results/phantom_vs_real.md).
The leg's outline follows the real series' share of air slice by slice, posterior to anterior.

Labels are drawn near MRNet's training rates and change what a radiologist looks at:
a torn ACL is interrupted by bright oedema; a meniscal tear is a bright line through
the posterior horn; an abnormal knee has a joint effusion and usually a bone-marrow
oedema blob. ACL and meniscus positives are always abnormal.

Anatomical coordinates, in units of half the field of view of an average knee:
x lateral (+) / medial (-), y anterior (+), z superior (+); the joint line is z = 0.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.ndimage import gaussian_filter1d

from mrnet_utils.errors import MRNetError
from mrnet_utils.files import result_folder
from mrnet_utils.data.mrnet import PLANES, SIDE, SPLITS, TASKS, labels_path, volume_path
from mrnet_utils.progress import track

MIN_SLICES, MAX_SLICES = 17, 61  # MRNet's range of slices per series
# Slices per series, mean and standard deviation per plane: those of the 18 real exams of
# ../shared/mrnet-sample (coronal 17-35, sagittal 21-34, axial 23-52).
SLICES = {"coronal": (26.4, 5.7), "sagittal": (27.4, 3.9), "axial": (31.8, 7.2)}
# MRNet's volumes are windowed slice by slice: each slice's minimum becomes 0 and its 99th
# percentile 255, so that 1 % of every slice is saturated (true of all 18 real exams).
WINDOW_PERCENTILE = 99.0
COIL, COIL_SIZE = 0.2, 10.0  # the receive coil's patchy sensitivity: log-intensity std, patch size (pixels)
BLUR = 0.55  # in-plane Gaussian blur, pixels: MRNet's spectra fall off above about half the Nyquist frequency

# Tissue intensities per plane (1.0 = bright); each exam jitters them by +-6 %.
CONTRAST = {
    "coronal": dict(fat=0.9, muscle=0.21, marrow=0.55, cortex=0.07, cartilage=0.38, fluid=0.18,
                    meniscus=0.07, ligament=0.09, oedema=0.25, vessel=0.08),
    "sagittal": dict(fat=0.62, muscle=0.32, marrow=0.60, cortex=0.05, cartilage=0.60, fluid=0.92,
                     meniscus=0.05, ligament=0.10, oedema=0.95, vessel=0.05),
    "axial": dict(fat=0.40, muscle=0.34, marrow=0.50, cortex=0.05, cartilage=0.62, fluid=0.95,
                  meniscus=0.06, ligament=0.10, oedema=0.95, vessel=0.05),
}
# Through-plane coverage of each series: (centre, half extent) along its slice axis. The
# coronal series runs from the posterior muscles to just past the skin over the kneecap,
# so that its last slices can be nearly empty, as MRNet's are.
COVERAGE = {"coronal": (0.05, 0.57), "sagittal": (0.0, 0.55), "axial": (0.2, 0.5)}
# Slice-axis and in-plane axes of each series: rows of P map (a, b, depth) to (x, y, z),
# where a runs along image columns, b down the rows and depth across slices.
ORIENTATION = {
    "coronal": ((1, 0, 0), (0, 0, 1), (0, -1, 0)),
    "sagittal": ((0, 0, 1), (-1, 0, 0), (0, -1, 0)),  # anterior to the left
    "axial": ((1, 0, 0), (0, -1, 0), (0, 0, 1)),
}
# The leg: a cylinder centred behind the joint (the calf and hamstring muscles), square-shouldered
# behind it and tapering in front of it, to a front LEG_FRONT times as deep as its back; and the
# soft tissue over the kneecap, an ellipsoid bulging in front of it.
LEG_CENTRE_Y = -0.2
LEG_EXPONENTS = (3.0, 1.6)  # of the superellipse behind / in front of LEG_CENTRE_Y
LEG_FRONT = 1.35
KNEECAP_BULGE = ((0.0, 0.3, 0.2), (0.42, 0.32, 0.5))
# Fat instead of muscle: in front of the kneecap (the bulge's front), behind the patellar
# tendon (Hoffa's pad) and in the popliteal fossa.
FAT_PADS = (((0.0, 0.47, 0.2), (0.3, 0.15, 0.4)), ((0.0, 0.34, -0.1), (0.3, 0.14, 0.16)),
            ((0.0, -0.42, 0.1), (0.14, 0.12, 0.45)))
MUSCLE_TEXTURE = 0.3  # relative intensity variation of muscle: fibres and the fat between them
# Trabecular bone: marrow crossed by thin dark lines, the zero crossings of a fine texture.
TRABECULAR_WIDTH, TRABECULAR_DEPTH = 0.3, 0.5
# Marrow-oedema sites: lateral / medial femoral condyle, lateral / medial tibial plateau.
OEDEMA_SITES = ((0.24, -0.05, 0.1), (-0.24, -0.05, 0.1), (0.24, -0.1, -0.12), (-0.24, -0.05, -0.12))


@dataclass(frozen=True)
class View:
    """How one series samples the knee."""

    slices: int
    zoom: float  # anatomical units per half image
    angle: float  # in-plane rotation, radians
    shift: tuple[float, float]  # in-plane offset of the knee
    depth: float  # offset of the slab centre along the slice axis
    extent: float  # half the slab's thickness, relative to COVERAGE
    bias: tuple[float, float, float, float]  # smooth coil-sensitivity field (see _acquire)


@dataclass(frozen=True)
class Knee:
    """One exam: its anatomy, findings and three series, all drawn from one generator."""

    width: float  # mediolateral scale of the bones
    leg: tuple[float, float]  # soft-tissue half axes (x, y; in front, y times LEG_FRONT)
    fat: float  # subcutaneous fat thickness
    cartilage: float  # cartilage thickness
    meniscus_height: float
    mirror: float  # +1 a right knee, -1 a left one
    contrast: dict[str, dict[str, float]]
    views: dict[str, View]
    noise: float  # noise standard deviation, intensity units
    acl_tear_at: float  # position of the ACL tear along the ligament, 0 (femur) .. 1 (tibia)
    meniscus_tear: tuple[float, float, float]  # compartment (+1 lateral, -1 medial), height, slope
    oedema: tuple[tuple[float, float, float], float] | None  # marrow-oedema centre and radius
    effusion: float  # joint-fluid volume when abnormal, 0..1


def draw_labels(rng: np.random.Generator) -> dict[str, int]:
    """abnormal / acl / meniscus at about MRNet's training rates (81 %, 18 %, 35 %)."""
    acl = rng.random() < 0.2
    meniscus = rng.random() < (0.55 if acl else 0.3)
    abnormal = acl or meniscus or rng.random() < 0.65
    return {"abnormal": int(abnormal), "acl": int(acl), "meniscus": int(meniscus)}


def draw_knee(rng: np.random.Generator) -> Knee:
    """Draw one exam's anatomy and acquisition; independent of its labels."""
    u = rng.uniform
    views = {}
    for plane in PLANES:
        mean, spread = SLICES[plane]
        views[plane] = View(
            slices=int(np.clip(round(rng.normal(mean, spread)), MIN_SLICES, MAX_SLICES)),
            zoom=u(0.78, 0.95),
            angle=u(-0.04, 0.04),
            shift=(u(-0.04, 0.04), u(-0.1, 0.1)),
            depth=u(-0.06, 0.06),
            extent=u(0.9, 1.1),
            bias=(u(-0.3, 0.3), u(-0.6, 0.6), u(-0.2, 0.2), u(0.3, 0.4)),
        )
    contrast = {plane: {tissue: value * u(0.94, 1.06) for tissue, value in CONTRAST[plane].items()}
                for plane in PLANES}
    site = OEDEMA_SITES[rng.integers(len(OEDEMA_SITES))]
    oedema = (tuple(c + u(-0.04, 0.04) for c in site), u(0.06, 0.12))
    return Knee(
        width=u(0.9, 1.1),
        leg=(u(0.59, 0.66), u(0.52, 0.6)),
        fat=u(0.035, 0.07),
        cartilage=u(0.02, 0.032),
        meniscus_height=u(0.06, 0.08),
        mirror=float(rng.choice([-1.0, 1.0])),
        contrast=contrast,
        views=views,
        noise=u(0.03, 0.04),
        acl_tear_at=u(0.35, 0.65),
        meniscus_tear=(-1.0 if rng.random() < 0.7 else 1.0, u(0.35, 0.6), u(-1.0, 1.0)),
        oedema=oedema if rng.random() < 0.8 else None,
        effusion=u(0.5, 1.0),
    )


class _Grid:
    """The affine map from voxel index (slice, row, column) to anatomical (x, y, z).

    The slice axis maps to one anatomical axis and the in-plane rotation mixes the other
    two, so each coordinate array is either (S, 1, 1) or (1, H, W): numpy broadcasting
    then does much of the arithmetic on small arrays. `region` crops to a box, so that
    small structures cost little.
    """

    def __init__(self, knee: Knee, plane: str):
        view = knee.views[plane]
        step, first = 2 / SIDE, 1 / SIDE - 1  # image coordinates run over [-1, 1]
        cos, sin = view.zoom * np.cos(view.angle), view.zoom * np.sin(view.angle)
        centre, extent = COVERAGE[plane]
        extent *= view.extent
        # rows: a, b, depth as functions of (slice, row, column) (see ORIENTATION)
        matrix = np.array([[0, -sin * step, cos * step], [0, cos * step, sin * step],
                           [2 * extent / (view.slices - 1), 0, 0]])
        offset = np.array([first * (cos - sin) + view.shift[0], first * (sin + cos) + view.shift[1],
                           centre + view.depth - extent])
        turn = np.array(ORIENTATION[plane], float) * [[knee.mirror], [1], [1]]
        self.matrix, self.offset = turn @ matrix, turn @ offset
        self.shape = (view.slices, SIDE, SIDE)
        self.pixel = view.zoom * step
        self.x, self.y, self.z = self._coordinates((0, 0, 0), self.shape)

    def _coordinates(self, start, stop) -> tuple[np.ndarray, ...]:
        slices, rows, cols = (np.arange(a, b, dtype=np.float64) for a, b in zip(start, stop))
        coords = []
        for (along_slices, along_rows, along_cols), origin in zip(self.matrix, self.offset):
            if along_slices:
                coord = origin + along_slices * slices[:, None, None]
            else:
                coord = origin + along_rows * rows[None, :, None] + along_cols * cols[None, None, :]
            coords.append(coord.astype(np.float32))
        return tuple(coords)

    def region(self, lo, hi) -> tuple[tuple[slice, slice, slice], tuple[np.ndarray, ...]] | None:
        """The voxel box around an anatomical box, and the coordinates inside it (None if empty)."""
        corners = np.array(np.meshgrid(*zip(lo, hi), indexing="ij")).reshape(3, -1)
        index = np.linalg.solve(self.matrix, corners - self.offset[:, None])
        start = np.clip(np.floor(index.min(axis=1)).astype(int), 0, self.shape)
        stop = np.clip(np.ceil(index.max(axis=1)).astype(int) + 1, 0, self.shape)
        if np.any(stop <= start):
            return None
        box = tuple(slice(a, b) for a, b in zip(start, stop))
        return box, self._coordinates(start, stop)


# In-place arithmetic below on purpose: a fresh full-size array costs page faults.
def _inside(distance, pixel: float):
    """Soft 0..1 occupancy from a signed distance (negative inside): one pixel of partial volume."""
    occupancy = distance * np.float32(-1 / pixel)
    occupancy += 0.5
    return np.clip(occupancy, 0.0, 1.0, out=occupancy)


def _blend(target, alpha, value) -> None:
    """target <- target + alpha (value - target), in place."""
    change = value - target
    change *= alpha
    target += change


def _sum(*terms):
    """Sum with the smallest arrays first, so that broadcasting to full size happens late."""
    terms = sorted(terms, key=np.size)
    total = terms[0]
    for term in terms[1:]:
        total = total + term
    return total


def _ellipsoid(x, y, z, centre, radii):
    """Approximate signed distance to an ellipsoid (exact along its shortest axis)."""
    f = _sum(((x - centre[0]) / radii[0]) ** 2, ((y - centre[1]) / radii[1]) ** 2, ((z - centre[2]) / radii[2]) ** 2)
    return (np.sqrt(f) - 1) * min(radii)


def _capsule(x, y, z, start, end, radius, scale=(1.0, 1.0, 1.0)):
    """Signed distance to a segment of given radius, and the position 0..1 along it.

    `scale` stretches axes first, so that a tendon can be a flat band.
    """
    p = [(c - s) * k for c, s, k in zip((x, y, z), start, scale)]
    d = [(e - s) * k for e, s, k in zip(end, start, scale)]
    t = np.clip(_sum(*(pi * di for pi, di in zip(p, d))) / sum(di * di for di in d), 0.0, 1.0)
    distance = np.sqrt(_sum(*((pi - t * di) ** 2 for pi, di in zip(p, d))))
    return distance - radius, t


def _condyles(x, y, z, knee: Knee):
    """Signed distance to the femoral condyles and trochlea (the articular femur)."""
    w = knee.width
    lateral = _ellipsoid(x, y, z, (0.24 * w, -0.06, 0.22), (0.22 * w, 0.34, 0.21))
    medial = _ellipsoid(x, y, z, (-0.24 * w, -0.06, 0.22), (0.22 * w, 0.34, 0.21))
    trochlea = _ellipsoid(x, y, z, (0.0, 0.08, 0.27), (0.42 * w, 0.24, 0.17))
    return np.minimum(np.minimum(lateral, medial), trochlea)


def _femur(x, y, z, knee: Knee):
    """Condyles plus a shaft that flares towards the joint."""
    flare = np.clip((1.1 - z) / 0.8, 0.0, 1.0) ** 2  # the metaphysis widens to the epicondyles
    across, front_back = (0.28 + 0.19 * flare) * knee.width, 0.15 + 0.15 * flare
    shaft = (np.sqrt(_sum((x / across) ** 2, ((y + 0.05) / front_back) ** 2)) - 1) * front_back
    shaft = np.maximum(shaft, 0.2 - 0.45 * (y + 0.05) - z)  # the notch roof (Blumensaat's line)
    return np.minimum(shaft, _condyles(x, y, z, knee))


def _tibial_top(x, y, knee: Knee):
    """Height of the tibial plateau, with the intercondylar spines in the middle."""
    spines = 0.05 * np.exp(_sum(-((x / (0.06 * knee.width)) ** 2), -(((y + 0.04) / 0.09) ** 2)))
    return -0.03 + spines


def _tibia(x, y, z, knee: Knee):
    """A plateau on a shaft that narrows away from the joint."""
    radius = 0.3 + 0.19 * np.clip(1 + (z + 0.03) / 1.0, 0.0, 1.0) ** 2
    body = (np.sqrt(_sum((x / knee.width) ** 2, ((y + 0.06) / 0.68) ** 2)) - radius) * 0.68
    return np.maximum(body, z - _tibial_top(x, y, knee))


def _fibula(x, y, z, knee: Knee):
    head = _ellipsoid(x, y, z, (0.42 * knee.width, -0.26, -0.2), (0.09, 0.09, 0.1))
    shaft = np.maximum(np.sqrt(_sum((x - 0.44 * knee.width) ** 2, (y + 0.25) ** 2)) - 0.05, z + 0.2)
    return np.minimum(head, shaft)


def _patella(x, y, z, knee: Knee):
    return _ellipsoid(x, y, z, (0.0, 0.44, 0.26), (0.2 * knee.width, 0.075, 0.19))


class _Texture:
    """Zero-mean, unit-variance band-limited noise that changes smoothly from slice to slice.

    Two independent 2D tiles (white noise through a Gaussian filter in Fourier space)
    are mixed as cos/sin of a phase that advances by `step` radians a slice, which keeps
    the variance at one and costs no 3D noise.
    """

    def __init__(self, rng: np.random.Generator, sigmas: tuple[float, float], slices: int, step: float = 0.8):
        freq_y, freq_x = np.fft.fftfreq(SIDE)[:, None], np.fft.rfftfreq(SIDE)[None, :]
        gain = np.exp(-2 * np.pi**2 * ((freq_y * sigmas[0]) ** 2 + (freq_x * sigmas[1]) ** 2))
        tiles = []
        for _ in range(2):
            tile = np.fft.irfft2(np.fft.rfft2(rng.standard_normal((SIDE, SIDE))) * gain, s=(SIDE, SIDE))
            tiles.append(((tile - tile.mean()) / tile.std()).astype(np.float32)[None])
        phase = rng.uniform(0, 2 * np.pi) + step * np.arange(slices)
        self.tiles = tiles
        self.weights = [f(phase).astype(np.float32)[:, None, None] for f in (np.cos, np.sin)]

    def __getitem__(self, box):
        rows_cols = (slice(None), box[1], box[2])
        return self.tiles[0][rows_cols] * self.weights[0][box[0]] + self.tiles[1][rows_cols] * self.weights[1][box[0]]


def _skin(grid: _Grid, knee: Knee) -> np.ndarray:
    """Signed distance to the skin (full size): the leg's cylinder, and the bulge over the kneecap."""
    (half_x, half_y), (centre, radii) = knee.leg, KNEECAP_BULGE
    # A superellipse of two halves (LEG_EXPONENTS), deeper in front.
    front = grid.y > LEG_CENTRE_Y
    power = np.where(front, np.float32(LEG_EXPONENTS[1]), np.float32(LEG_EXPONENTS[0]))
    depth = np.where(front, np.float32(half_y * LEG_FRONT), np.float32(half_y))
    square = _sum(np.abs(grid.x / half_x) ** power, np.abs((grid.y - LEG_CENTRE_Y) / depth) ** power)
    leg = (square ** (1 / power) - 1) * min(half_x, half_y)
    leg = leg if leg.shape == grid.shape else np.broadcast_to(leg, grid.shape).copy()
    radii = (radii[0] * knee.width, *radii[1:])
    found = grid.region(np.subtract(centre, radii), np.add(centre, radii))
    if found:
        box, (x, y, z) = found
        np.minimum(leg[box], _ellipsoid(x, y, z, centre, radii), out=leg[box])
    return leg


def _soft_tissue(img, grid: _Grid, knee: Knee, tone, muscle_texture: _Texture, effusion: float) -> None:
    """Subcutaneous fat, muscle with fat pads, popliteal vessels, joint effusion."""
    leg = _skin(grid, knee)
    img[...] = tone["fat"] * _inside(leg, grid.pixel)
    muscle = _inside(leg + knee.fat, grid.pixel)  # edited per box below
    for centre, radii in FAT_PADS:
        found = grid.region(np.subtract(centre, radii), np.add(centre, radii))
        if found:
            box, (xb, yb, zb) = found
            muscle[box] *= 1 - _inside(_ellipsoid(xb, yb, zb, centre, radii), grid.pixel)
    value = muscle_texture[tuple(slice(0, n) for n in grid.shape)]
    value *= MUSCLE_TEXTURE * tone["muscle"]
    value += tone["muscle"]
    _blend(img, muscle, value)
    for centre, radius, value in (((0.02, -0.36), 0.03, tone["vessel"]), ((0.09, -0.41), 0.04, 0.7 * tone["fluid"])):
        found = grid.region((centre[0] - radius, centre[1] - radius, -9), (centre[0] + radius, centre[1] + radius, 9))
        if found:
            box, (xb, yb, _) = found
            vessel = np.sqrt(_sum((xb - centre[0]) ** 2, (yb - centre[1]) ** 2)) - radius
            _blend(img[box], _inside(vessel, grid.pixel), value)
    if effusion:  # fluid distends the suprapatellar recess, behind the quadriceps tendon
        centre, radii = (0.0, 0.3, 0.36), (0.32 * knee.width, 0.02 + 0.05 * effusion, 0.1 + 0.1 * effusion)
        found = grid.region(np.subtract(centre, radii), np.add(centre, radii))
        if found:
            box, (xb, yb, zb) = found
            _blend(img[box], _inside(_ellipsoid(xb, yb, zb, centre, radii), grid.pixel), tone["fluid"])


def _cartilage(img, grid: _Grid, knee: Knee, tone) -> None:
    """The joint space (filled with cartilage-like tissue), then femoral, tibial and patellar cartilage."""
    w, thick, pixel = knee.width, knee.cartilage, grid.pixel
    found = grid.region((-0.6 * w, -0.45, -0.06), (0.6 * w, 0.35, 0.12))
    if found:
        box, (x, y, z) = found
        rim = np.sqrt(_sum((x / w) ** 2, ((y + 0.06) / 0.68) ** 2)) - 0.48
        above = z - _tibial_top(x, y, knee)
        joint = _inside(rim, pixel) * _inside(-above, pixel) * _inside(above - 0.12, pixel)
        joint *= _inside(-_condyles(x, y, z, knee), pixel)
        _blend(img[box], joint, tone["cartilage"])
    found = grid.region((-0.7 * w, -0.5, -0.05), (0.7 * w, 0.45, 0.3))
    if found:
        box, (x, y, z) = found
        femoral = _inside(_condyles(x, y, z, knee) - thick, pixel) * _inside(z - 0.28, pixel)
        _blend(img[box], femoral, tone["cartilage"])
    found = grid.region((-0.6 * w, -0.45, -0.06), (0.6 * w, 0.35, 0.06))
    if found:
        box, (x, y, z) = found
        rim = np.sqrt(_sum((x / w) ** 2, ((y + 0.06) / 0.68) ** 2)) - 0.48
        above = z - _tibial_top(x, y, knee)
        tibial = _inside(above - thick, pixel) * _inside(-0.01 - above, pixel) * _inside(rim, pixel)
        _blend(img[box], tibial, tone["cartilage"])
    found = grid.region((-0.25 * w, 0.3, 0.0), (0.25 * w, 0.45, 0.5))
    if found:
        box, (x, y, z) = found
        patellar = _inside(_patella(x, y, z, knee) - thick, pixel) * _inside(y - 0.44, pixel)
        _blend(img[box], patellar, tone["cartilage"])


def _menisci(img, grid: _Grid, knee: Knee, tone, torn: bool) -> None:
    """C-shaped wedges on each tibial plateau, open towards the notch; a tear is a bright line."""
    w, pixel = knee.width, grid.pixel
    for side in (-1.0, 1.0):
        centre_x, centre_y, radius_x, radius_y = 0.24 * w * side, -0.06, 0.23 * w, 0.3
        found = grid.region((centre_x - radius_x, centre_y - radius_y, -0.06),
                            (centre_x + radius_x, centre_y + radius_y, 0.14))
        if not found:
            continue
        box, (x, y, z) = found
        outward = (x - centre_x) * (side / radius_x)  # towards the collateral ligament
        rho = np.sqrt(_sum(outward**2, ((y - centre_y) / radius_y) ** 2))
        base = _tibial_top(x, y, knee)
        height = 0.01 + knee.meniscus_height * np.clip((rho - 0.55) / 0.45, 0.0, 1.0)
        above = z - base
        meniscus = ((rho > 0.55) & (rho < 1.0) & (outward > -0.3 * rho) & (above > 0) & (above < height)
                    & (_condyles(x, y, z, knee) > knee.cartilage))
        _blend(img[box], meniscus, tone["meniscus"])
        compartment, level, slope = knee.meniscus_tear
        if torn and side == compartment:  # an oblique line through the posterior horn
            line = np.abs(above - height * (level + slope * (rho - 0.78))) < 0.75 * pixel
            _blend(img[box], meniscus & line & (y < centre_y - 0.08), tone["fluid"])


def _ligaments(img, grid: _Grid, knee: Knee, tone, acl_torn: bool) -> None:
    """Cruciate and collateral ligaments and the extensor tendons, all dark bands."""
    w = knee.width
    flat = (0.25, 1.0, 1.0)  # tendons are wide mediolaterally
    bands = (
        ((0.09 * w, -0.2, 0.15), (-0.03 * w, 0.07, -0.05), 0.032, (1.0, 1.0, 1.0)),  # ACL
        ((-0.08 * w, 0.02, 0.16), (-0.04 * w, -0.18, 0.14), 0.04, (1.0, 1.0, 1.0)),  # PCL, upper limb
        ((-0.04 * w, -0.18, 0.14), (0.0, -0.3, -0.12), 0.04, (1.0, 1.0, 1.0)),  # PCL, lower limb
        ((-0.5 * w, -0.02, 0.22), (-0.36 * w, 0.0, -0.28), 0.014, (1.0, 0.3, 1.0)),  # MCL
        ((0.5 * w, -0.06, 0.2), (0.42 * w, -0.22, -0.16), 0.016, (1.0, 1.0, 1.0)),  # LCL
        ((0.0, 0.47, 0.1), (0.0, 0.34, -0.32), 0.03, flat),  # patellar tendon
        ((0.0, 0.43, 0.42), (0.0, 0.32, 1.0), 0.03, flat),  # quadriceps tendon
    )
    for index, (start, end, radius, scale) in enumerate(bands):
        reach = 2 * radius / min(scale)
        found = grid.region(np.minimum(start, end) - reach, np.maximum(start, end) + reach)
        if not found:
            continue
        box, (x, y, z) = found
        distance, along = _capsule(x, y, z, start, end, radius, scale)
        band = _inside(distance, grid.pixel)
        if index == 0 and acl_torn:  # fibres interrupted, the gap filled with oedema
            gap = np.abs(along - knee.acl_tear_at) < 0.13
            band = band * ~gap
            swollen = _inside(distance - 0.8 * radius, grid.pixel) * (np.abs(along - knee.acl_tear_at) < 0.2)
            _blend(img[box], swollen, 0.85 * tone["fluid"])
        _blend(img[box], band, tone["ligament"])


def _bones(img, grid: _Grid, knee: Knee, tone, marrow_texture: _Texture, trabeculae: _Texture) -> None:
    """Each bone: trabecular marrow inside a dark cortex, long bones with a physeal scar."""
    w, pixel = knee.width, grid.pixel
    # Long bones in two boxes, a wide one at the joint and a narrow one along the shaft,
    # so that the shaft does not cost the width of the condyles.
    bones = (
        (_femur, (-0.55 * w, -0.45, -0.02), (0.55 * w, 0.4, 0.6), 0.32),
        (_femur, (-0.36 * w, -0.3, 0.6), (0.36 * w, 0.2, 9.0), None),
        (_tibia, (-0.55 * w, -0.42, -0.4), (0.55 * w, 0.3, 0.08), -0.22),
        (_tibia, (-0.38 * w, -0.32, -9.0), (0.38 * w, 0.2, -0.4), None),
        (_fibula, (0.3 * w, -0.4, -9.0), (0.56 * w, -0.12, -0.08), None),
        (_patella, (-0.22 * w, 0.36, 0.06), (0.22 * w, 0.52, 0.46), None),
    )
    for shape, lo, hi, physis in bones:
        found = grid.region(lo, hi)
        if not found:
            continue
        box, (x, y, z) = found
        distance = shape(x, y, z, knee)
        mesh = trabeculae[box]  # dark lines where the fine texture crosses zero
        mesh *= mesh
        mesh *= np.float32(-1 / TRABECULAR_WIDTH**2)
        np.exp(mesh, out=mesh)
        value = tone["marrow"] * (1 + 0.06 * marrow_texture[box]) * (1 - TRABECULAR_DEPTH * mesh)
        if physis is not None:  # the fused growth plate leaves a faint wavy dark line
            scar = np.abs(z - physis - 0.015 * np.sin(9 * x)) < 0.006
            value = np.where(scar, 0.6 * value, value)
        cortex = 0.012 + 0.018 * np.clip((np.abs(z) - 0.3) / 0.4, 0.0, 1.0)  # thin at the ends, thick on shafts
        _blend(value, _inside(-(distance + cortex), pixel), tone["cortex"])
        _blend(img[box], _inside(distance, pixel), value)


def _marrow_oedema(img, grid: _Grid, knee: Knee, tone) -> None:
    """A soft bright (fluid-sensitive) or dark (T1) blob in the marrow of femur or tibia."""
    centre, radius = knee.oedema
    found = grid.region(np.subtract(centre, radius), np.add(centre, radius))
    if not found:
        return
    box, (x, y, z) = found
    blob = np.clip(-_ellipsoid(x, y, z, centre, (radius,) * 3) / (0.5 * radius), 0.0, 1.0)
    marrow = np.maximum(_inside(_femur(x, y, z, knee) + 0.03, grid.pixel),
                        _inside(_tibia(x, y, z, knee) + 0.03, grid.pixel))
    _blend(img[box], blob * marrow, tone["oedema"])


def _acquire(img, view: View, noise: float, coil: _Texture, rng: np.random.Generator) -> np.ndarray:
    """Multiply by the coil's sensitivity, add magnitude noise, blur, window each slice to uint8 as MRNet does.

    The sensitivity is a smooth bias field (tilts, a fall-off from the centre, a drift
    across slices) times patches of `coil`, applied as one exponential. The noise is the
    difference of two uniforms scaled to the wanted standard deviation: four times cheaper
    to draw than Gaussian noise and indistinguishable at these levels. The window maps
    each slice's minimum to 0 and its WINDOW_PERCENTILE (estimated on every 4th pixel,
    four times cheaper) to 255.
    """
    side = (np.arange(SIDE, dtype=np.float32) + 0.5) / (SIDE / 2) - 1
    across, down = side[None, None, :], side[None, :, None]
    slab = np.linspace(-1, 1, view.slices, dtype=np.float32)[:, None, None]
    tilt_x, tilt_y, tilt_z, falloff = view.bias
    log_gain = coil[tuple(slice(0, n) for n in img.shape)]
    log_gain *= np.float32(COIL)
    log_gain += tilt_x * across + tilt_y * down - falloff * (across**2 + down**2)
    log_gain += tilt_z * slab
    img *= np.exp(log_gain, out=log_gain)
    jitter = rng.random(img.shape, dtype=np.float32)
    jitter -= rng.random(img.shape, dtype=np.float32)
    jitter *= np.float32(noise * np.sqrt(6.0))
    img += jitter
    np.abs(img, out=img)  # magnitude images: the noise floor is positive, as in MRI
    for axis in (1, 2):  # the acquisition's resolution is coarser than 256 pixels: a slight blur
        gaussian_filter1d(img, BLUR, axis=axis, output=img, truncate=2.0)  # 3 taps
    flat = img.reshape(len(img), -1)
    sample = flat[:, ::4]
    rank = round(WINDOW_PERCENTILE / 100 * (sample.shape[1] - 1))
    low, high = flat.min(axis=1), np.partition(sample, rank, axis=1)[:, rank]
    img -= low[:, None, None]
    img *= (255 / np.maximum(high - low, 1e-6))[:, None, None]
    return np.clip(img, 0, 255, out=img).astype(np.uint8)


def render_series(knee: Knee, labels: dict[str, int], plane: str, rng: np.random.Generator) -> np.ndarray:
    """One series of one exam: uint8 (slices, 256, 256).

    `rng` supplies only textures and noise, consumed identically whatever the labels,
    so the same knee rendered with other labels differs where the findings are, and
    elsewhere only by the few grey levels a bright finding moves its slice's window.
    """
    grid, view, tone = _Grid(knee, plane), knee.views[plane], knee.contrast[plane]
    marrow_texture = _Texture(rng, (1.5, 1.5), view.slices)
    # Trabeculae run along the leg: streaks down the rows of coronal and sagittal slices.
    trabeculae = _Texture(rng, (2.5, 0.9) if plane != "axial" else (1.0, 1.0), view.slices, step=1.3)
    fibres = (8.0, 1.5) if plane != "axial" else (2.0, 2.0)  # muscle fibres run along the leg
    muscle_texture = _Texture(rng, fibres, view.slices)
    coil = _Texture(rng, (COIL_SIZE, COIL_SIZE), view.slices, step=0.45)
    img = np.zeros(grid.shape, np.float32)
    _soft_tissue(img, grid, knee, tone, muscle_texture, knee.effusion if labels["abnormal"] else 0.0)
    _cartilage(img, grid, knee, tone)
    _menisci(img, grid, knee, tone, torn=bool(labels["meniscus"]))
    _ligaments(img, grid, knee, tone, acl_torn=bool(labels["acl"]))
    _bones(img, grid, knee, tone, marrow_texture, trabeculae)
    if labels["abnormal"] and knee.oedema is not None:
        _marrow_oedema(img, grid, knee, tone)
    return _acquire(img, view, knee.noise, coil, rng)


def write_exam(out: Path, split: str, exam_id: int, seed: int) -> dict[str, int]:
    """Write the three series of one exam and return its labels.

    The exam depends only on (seed, exam_id), so it is the same whichever thread
    writes it and however many exams the phantom has before it.
    """
    rng = np.random.default_rng([seed, exam_id])
    labels = draw_labels(rng)
    knee = draw_knee(rng)
    for plane in PLANES:
        np.save(volume_path(out, split, plane, exam_id), render_series(knee, labels, plane, rng))
    return labels


def write_phantom(
    out: Path | str,
    train_exams: int = 80,
    valid_exams: int = 20,
    seed: int = 0,
    progress: bool = True,
    overwrite: bool = False,
    workers: int | None = None,
) -> Path:
    """Write a synthetic MRNet folder and return its path.

    Train exams get ids 0000.., valid exams continue after them, as in MRNet. The same
    arguments give the same bytes. `workers` threads render exams in parallel (default:
    one per CPU, at most 4); the result does not depend on it. Threads, not processes:
    numpy releases the GIL in the array arithmetic that dominates, and a thread pool
    needs no `if __name__ == "__main__"` guard in the caller's script.

    The folder is written whole (files.result_folder): beside `out`, renamed into place when
    complete, so that an interrupted run leaves no folder (or the earlier one) at `out`. A non-empty
    `out` is refused unless `overwrite`: then its train/, valid/ and label files are replaced, other
    files kept.
    """
    if train_exams < 1 or valid_exams < 1:
        raise MRNetError(f"train_exams and valid_exams must be at least 1, not {train_exams} and {valid_exams}")
    if train_exams + valid_exams > 10_000:
        raise MRNetError("MRNet ids have four digits: train_exams + valid_exams must be at most 10000")
    if seed < 0:
        raise MRNetError(f"seed must be a non-negative integer, not {seed}")
    workers = min(4, os.cpu_count() or 1) if workers is None else workers
    if workers < 1:
        raise MRNetError(f"workers must be at least 1, not {workers}")
    out = Path(out)
    owned = (*SPLITS, *(labels_path(out, split, task).name for split in SPLITS for task in TASKS))
    with result_folder(out, overwrite, owned, "phantom folder") as folder:
        try:
            for split in SPLITS:
                for plane in PLANES:
                    (folder / split / plane).mkdir(parents=True)
            jobs = [(folder, "train", exam_id, seed) for exam_id in range(train_exams)]
            jobs += [(folder, "valid", exam_id, seed) for exam_id in range(train_exams, train_exams + valid_exams)]
            with ThreadPoolExecutor(workers) as pool:
                exams = pool.map(write_exam, *zip(*jobs))
                labels = list(track(exams, desc=f"phantom {out.name}", total=len(jobs), unit="exam", enabled=progress))
            for split in SPLITS:
                rows = [(exam_id, label) for (_, job_split, exam_id, _), label in zip(jobs, labels) if job_split == split]
                for task in TASKS:
                    text = "".join(f"{exam_id:04d},{label[task]}\n" for exam_id, label in rows)
                    labels_path(folder, split, task).write_text(text, encoding="utf-8", newline="\n")
        except OSError as error:
            raise MRNetError(f"writing the phantom to {out} failed ({error}); free space or choose another folder "
                             "(an earlier folder there is untouched)") from None
    return out


__all__ = ["Knee", "View", "draw_labels", "draw_knee", "render_series", "write_exam", "write_phantom"]
