"""Deterministic synthetic grids for experiments that have no real file in the package.

Everything is seeded by the experiment id (never by Python's salted ``hash``), so two servers, or
two requests, produce identical bytes.

- ISH (200 µm, ``[AP, DV, ML]`` = 67x41x58, float32): expression density and intensity with signal
  in 3 structures picked from the experiment id, a weak background elsewhere in the brain, ``-1``
  outside the brain (from the real gridAnnotation), a few missing coronal sections (``-1`` inside
  the brain, as in real sets) and, for sagittal sets, data in one (the left, low-ML) hemisphere
  only. ``energy = density * intensity`` as in Allen's definition.
- Connectivity (100 or 50 µm, 132x80x114 / 264x160x228): a sum of Gaussian blobs, an injection blob
  at the experiment's real injection coordinate sized from its real injection volume, plus
  projections to ipsilateral targets in the same major division, one elsewhere, and the homotopic
  contralateral site; zero outside the brain (real CCF annotation). The same blob model answers
  point queries (spatial search) without building a grid.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from .catalog import stable_int

ISH_VALID_STARTS = (8, 13)  # sagittal sets: first ML index with data (Prox1 starts at 10)
MIDLINE_UM = 5700.0
ML_EXTENT_UM = 11400.0


def rng_for(*key: object) -> np.random.Generator:
    return np.random.default_rng(stable_int(*key, modulo=2**32))


# ------------------------------------------------------------------ ISH


def ish_signal_structures(experiment_id: int, candidates: list[int]) -> list[int]:
    """The 3 structures (strongest first) a synthetic ISH experiment expresses in."""
    ids = sorted(candidates)
    chosen = rng_for("ish-structures", experiment_id).choice(len(ids), size=min(3, len(ids)),
                                                             replace=False)
    return [int(ids[int(i)]) for i in chosen]


_NOISE_BANK: dict[tuple[int, ...], tuple[np.ndarray, np.ndarray]] = {}


def _noise_bank(shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """8 uniform [0, 1) and 8 standard-normal float32 fields, made once per shape (seeded).

    Experiments draw from this bank (which fields, and a roll along AP) instead of drawing
    fresh noise, so a synthetic grid costs milliseconds; the combination is seeded by the id.
    """
    if shape not in _NOISE_BANK:
        rng = rng_for("ish-noise-bank", *shape)
        _NOISE_BANK[shape] = (rng.random((8, *shape), dtype=np.float32),
                              rng.standard_normal((8, *shape), dtype=np.float32))
    return _NOISE_BANK[shape]


def _field(bank: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return np.roll(bank[int(rng.integers(len(bank)))], int(rng.integers(bank.shape[1])), axis=0)


def ish_volumes(experiment_id: int, plane: str, annotation: np.ndarray,
                candidates: list[int], mask_of: Callable[[int], np.ndarray],
                ) -> dict[str, np.ndarray]:
    """Synthetic ``energy``, ``density``, ``intensity`` for one ISH experiment.

    ``annotation`` is gridAnnotation ``[AP, DV, ML]`` (0 = outside the brain); ``candidates`` are
    structure ids worth expressing in and ``mask_of(id)`` their boolean masks.
    """
    rng = rng_for("ish", experiment_id)
    brain = annotation > 0
    uniform, normal = _noise_bank(annotation.shape)
    u, n = _field(uniform, rng), _field(normal, rng)
    density = np.where(brain, 0.002 + 0.012 * u * u, 0.0).astype(np.float32)
    intensity = np.where(brain, 60.0 + 8.0 * n, 0.0).astype(np.float32)
    for rank, sid in enumerate(ish_signal_structures(experiment_id, candidates)):
        mask = mask_of(sid)
        level = (0.25, 0.12, 0.06)[rank]
        density[mask] = level * (0.6 + 0.6 * u[mask])
        intensity[mask] = 95.0 + 12.0 * n[mask]
    np.clip(density, 0.0, 1.0, out=density)
    np.clip(intensity, 0.0, 255.0, out=intensity)
    valid = brain.copy()
    if plane == "sagittal":
        start = int(rng.integers(*ISH_VALID_STARTS))
        valid[:, :, : start] = False
        valid[:, :, 29:] = False  # left hemisphere only (low ML under PIR)
    else:
        ap_with_brain = np.flatnonzero(brain.any(axis=(1, 2)))
        for ap in rng.choice(ap_with_brain, size=2, replace=False):
            valid[int(ap)] = False  # a missing section, as real sets have
    energy = density * intensity
    out = {}
    for name, values in (("energy", energy), ("density", density), ("intensity", intensity)):
        out[name] = np.where(valid, values, np.float32(-1.0)).astype("<f4")
    return out


def ish_companions_from_energy(experiment_id: int, energy: np.ndarray) -> dict[str, np.ndarray]:
    """Density and intensity consistent with a real energy grid (``energy = d * i``)."""
    rng = rng_for("ish-companion", experiment_id)
    valid = energy >= 0
    intensity = np.where(valid, np.clip(rng.normal(90.0, 10.0, energy.shape), 40, 200), -1.0)
    density = np.where(valid, np.clip(energy / np.where(valid, intensity, 1.0), 0, 1), -1.0)
    intensity = np.where(valid & (energy > 0), intensity, np.where(valid, 0.0, -1.0))
    return {"density": density.astype("<f4"), "intensity": intensity.astype("<f4")}


# ------------------------------------------------------------------ connectivity


@dataclass(frozen=True)
class Blob:
    """An isotropic Gaussian: centre ``(x, y, z)`` µm = ``[AP, DV, ML]``, sigma µm, peak value."""

    center: tuple[float, float, float]
    sigma: float
    amplitude: float
    injection: bool = False

    def at(self, point: np.ndarray) -> np.ndarray:
        d2 = np.sum((np.asarray(point, float) - np.asarray(self.center)) ** 2, axis=-1)
        return self.amplitude * np.exp(-d2 / (2 * self.sigma**2))

    def integral_mm3(self) -> float:
        """The blob's integral (density x volume) in mm³."""
        return self.amplitude * (2 * math.pi) ** 1.5 * (self.sigma / 1000.0) ** 3


def injection_sigma(injection_volume_mm3: float) -> float:
    """Sigma (µm) of a Gaussian whose half-max sphere has the injection volume."""
    radius_um = (3 * max(injection_volume_mm3, 1e-4) / (4 * math.pi)) ** (1 / 3) * 1000.0
    return max(radius_um / 1.18, 80.0)  # half maximum at 1.18 sigma


def connectivity_blobs(experiment_id: int, injection_um: tuple[float, float, float],
                       injection_volume: float, same_division: list[np.ndarray],
                       elsewhere: list[np.ndarray]) -> list[Blob]:
    """The blob model of one experiment.

    ``same_division`` / ``elsewhere`` are candidate target centroids (µm) in the injection's major
    division and outside it, already on the injection's side.
    """
    rng = rng_for("conn", experiment_id)
    blobs = [Blob(tuple(float(v) for v in injection_um), injection_sigma(injection_volume),
                  float(rng.uniform(0.75, 0.95)), injection=True)]
    picks: list[np.ndarray] = []
    if same_division:
        for i in rng.choice(len(same_division), size=min(2, len(same_division)), replace=False):
            picks.append(same_division[int(i)])
    if elsewhere:
        picks.append(elsewhere[int(rng.integers(len(elsewhere)))])
    for rank, center in enumerate(picks):
        blobs.append(Blob(tuple(float(v) for v in center), float(rng.uniform(250, 450)),
                          float((0.35, 0.2, 0.12)[rank] * rng.uniform(0.8, 1.2))))
    x, y, z = injection_um
    blobs.append(Blob((x, y, ML_EXTENT_UM - z), float(rng.uniform(250, 400)),
                      float(rng.uniform(0.04, 0.12))))
    return blobs


def evaluate_grid(blobs: list[Blob], shape: tuple[int, int, int], resolution: float,
                  injection: bool | None = None) -> np.ndarray:
    """Sum of the blobs on the grid (voxel i centred at i*resolution µm), float64.

    ``injection`` True/False keeps only injection / projection blobs; None keeps all.
    """
    out = np.zeros(shape, dtype=np.float64)
    axes = [np.arange(n) * float(resolution) for n in shape]
    for blob in blobs:
        if injection is not None and blob.injection != injection:
            continue
        g = [np.exp(-((a - c) ** 2) / (2 * blob.sigma**2))
             for a, c in zip(axes, blob.center, strict=True)]
        out += blob.amplitude * g[0][:, None, None] * g[1][None, :, None] * g[2][None, None, :]
    return out


def connectivity_volumes(experiment_id: int, blobs: list[Blob], brain: np.ndarray,
                         resolution: float) -> dict[str, np.ndarray]:
    """All six ``download_file`` images for the blob model on a brain mask ``[AP, DV, ML]``."""
    rng = rng_for("conn-mask", experiment_id)
    total = np.clip(evaluate_grid(blobs, brain.shape, resolution), 0.0, 1.0)
    inj = np.clip(evaluate_grid(blobs, brain.shape, resolution, injection=True), 0.0, 1.0)
    peak = max(b.amplitude for b in blobs if b.injection)
    fraction = np.where(inj > 0.5 * peak * 0.3, np.clip(inj / (0.5 * peak), 0, 1), 0.0)
    mask = np.ones(brain.shape)
    # A couple of partially damaged coronal slabs, as real data masks have (mean ~0.97).
    for ap in rng.integers(0, brain.shape[0], size=2):
        mask[int(ap)] = rng.uniform(0.2, 0.8)
    out = {
        "projection_density": np.where(brain, total, 0.0),
        "injection_density": np.where(brain, inj * (fraction > 0), 0.0),
        "injection_fraction": np.where(brain, fraction, 0.0),
        "data_mask": np.where(brain, mask, 0.0),
    }
    intensity = 400.0  # mean labelled-pixel intensity; energy = density x intensity
    out["projection_energy"] = out["projection_density"] * intensity
    out["injection_energy"] = out["injection_density"] * intensity
    return {k: v.astype("<f4") for k, v in out.items()}


def density_at(blobs: list[Blob], point_um: np.ndarray) -> np.ndarray:
    """Projection density of the blob model at points ``(..., 3)`` µm (brain mask not applied)."""
    point_um = np.asarray(point_um, float)
    total = np.zeros(point_um.shape[:-1])
    for blob in blobs:
        total = total + blob.at(point_um)
    return np.clip(total, 0.0, 1.0)
