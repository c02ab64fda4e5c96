"""Grid downloads: ISH/connectivity grid zips, connectivity NRRDs and the CCF annotation,
each downloaded once into the verified file store (:class:`GridApi`)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from ..progress import CancelToken, ProgressCallback, report
from ..space import GRID_VOLUMES, NRRD_IMAGES, NRRD_RESOLUTIONS
from . import rma
from .base import ApiBase
from .cache import download_file, host_tag, verify_grid_zip, verify_nrrd

ANNOTATION_PATH = ("/informatics-archive/current-release/mouse_ccf/annotation/ccf_2017/"
                   "annotation_{res}.nrrd")


def check_volumes(volumes: Sequence[str] | str) -> tuple[str, ...]:
    """Grid volume names, lower case, deduplicated; ValueError for unknown ones."""
    if isinstance(volumes, str):
        volumes = (volumes,)
    vols = tuple(dict.fromkeys(str(v).strip().lower() for v in volumes))
    bad = [v for v in vols if v not in GRID_VOLUMES]
    if not vols or bad:
        raise ValueError(f"grid volumes must be among {GRID_VOLUMES}, got {list(volumes)!r}")
    return vols


class GridApi(ApiBase):
    """Grid files: URLs, verified downloads, volumes read from them."""

    def grid_zip_url(self, experiment_id: int, volumes: Sequence[str]) -> str:
        vols = check_volumes(volumes)
        eid = int(rma.integer(experiment_id))
        return f"{self.base_url}/grid_data/download/{eid}?" + rma.encode_query(
            {"include": ",".join(vols)})

    def grid_nrrd_url(self, experiment_id: int, image: str, resolution: int) -> str:
        if image not in NRRD_IMAGES:
            raise ValueError(f"image must be one of {NRRD_IMAGES}, got {image!r}")
        if int(resolution) not in NRRD_RESOLUTIONS:
            raise ValueError(f"resolution must be one of {NRRD_RESOLUTIONS} µm, got {resolution}")
        eid = int(rma.integer(experiment_id))
        return f"{self.base_url}/grid_data/download_file/{eid}?" + rma.encode_query(
            [("image", image), ("resolution", str(int(resolution)))])

    def annotation_url(self, resolution: int) -> str:
        if int(resolution) not in NRRD_RESOLUTIONS:
            raise ValueError(f"resolution must be one of {NRRD_RESOLUTIONS} µm, got {resolution}")
        return self.files_url + ANNOTATION_PATH.format(res=int(resolution))

    def grid_zip_path(self, experiment_id: int, volumes: Sequence[str] | str) -> Path:
        """Where :meth:`grid_zip` keeps that zip in the cache (it may not be there yet; a file
        there is still verified on use)."""
        return self.store.grid_zip(self.api_host, int(experiment_id), check_volumes(volumes))

    def grid_nrrd_path(self, experiment_id: int, image: str = "projection_density",
                       resolution: int = 100) -> Path:
        """Where :meth:`grid_nrrd` keeps that NRRD in the cache (it may not be there yet; a
        file there is still verified on use)."""
        return self.store.grid_nrrd(self.api_host, int(experiment_id), image, int(resolution))

    def grid_zip(self, experiment_id: int, volumes: Sequence[str] | str = ("energy",), *,
                 dest: str | os.PathLike | None = None,
                 progress: ProgressCallback | None = None,
                 cancel: CancelToken | None = None) -> Path:
        """The ``grid_data/download/<id>?include=...`` zip (200 µm ISH grids, or connectivity
        grids), downloaded once and verified. Stored per (experiment, volumes, 200 µm) in the
        cache, or at ``dest`` (a file path) when given. Returns the path."""
        vols = check_volumes(volumes)
        url = self.grid_zip_url(experiment_id, vols)
        target = Path(dest) if dest is not None else self.grid_zip_path(experiment_id, vols)
        return self._download(url, target, lambda p, s: verify_grid_zip(p, vols, s),
                              progress, cancel)

    def grid_volumes(self, experiment_id: int, volumes: Sequence[str] | str = ("energy",), *,
                     progress: ProgressCallback | None = None,
                     cancel: CancelToken | None = None):
        """The experiment's grids as :class:`~napari_allen.io.volume.GridVolume` ([AP, DV, ML],
        200 µm, -1 = no data), one cached zip per volume."""
        from ..io.dataset import lookup_experiment
        from ..io.gridzip import read_grid_zip

        out = []
        vols = check_volumes(volumes)
        for n, vol in enumerate(vols):
            path = self.grid_zip(experiment_id, (vol,), cancel=cancel)
            for grid in read_grid_zip(path, cache_dir=self.cache_dir, cancel=cancel):
                grid.metadata["experiment_id"] = int(experiment_id)
                # The cache's file names carry no gene: take it from the bundled listing.
                for key, value in lookup_experiment(int(experiment_id)).items():
                    grid.metadata.setdefault(key, value)
                grid.metadata.setdefault("url", self.grid_zip_url(experiment_id, (vol,)))
                out.append(grid)
            report(progress, done=n + 1, total=len(vols), message=f"{experiment_id} {vol}")
        return out

    def grid_nrrd(self, experiment_id: int, image: str = "projection_density",
                  resolution: int = 100, *, dest: str | os.PathLike | None = None,
                  decode: bool = False,
                  progress: ProgressCallback | None = None,
                  cancel: CancelToken | None = None) -> Path:
        """A connectivity ``grid_data/download_file`` NRRD (gzip, [AP, DV, ML] at
        ``resolution`` µm), downloaded once and verified. Returns the path. ``decode``: the
        verifying inflate also fills the decoded cache of ``cache_dir`` (for a caller about
        to read the grid; batch downloads leave it off)."""
        url = self.grid_nrrd_url(experiment_id, image, resolution)
        target = Path(dest) if dest is not None else self.grid_nrrd_path(
            experiment_id, image, resolution)
        into = Path(self.cache_dir) if decode else None
        return self._download(
            url, target, lambda p, s: verify_nrrd(p, s, cancel=cancel, decode_into=into),
            progress, cancel)

    def annotation_nrrd(self, resolution: int = 25, *, dest: str | os.PathLike | None = None,
                        progress: ProgressCallback | None = None,
                        cancel: CancelToken | None = None) -> Path:
        """The CCFv3 2017 annotation NRRD (uint32 structure ids) at ``resolution`` µm from
        the file server. Returns the path."""
        url = self.annotation_url(resolution)
        target = Path(dest) if dest is not None else self.store.annotation(
            host_tag(self.files_url), int(resolution))
        return self._download(url, target, lambda p, s: verify_nrrd(p, s, cancel=cancel),
                              progress, cancel)

    def _download(self, url: str, target: Path, verify, progress, cancel) -> Path:
        moved = [0]

        def on_bytes(n: int) -> None:
            moved[0] += n
            report(progress, done=0, total=1, bytes_done=moved[0], message=target.name)

        fetched = download_file(self.http, url, target, verify,
                                on_bytes=on_bytes if progress else None, cancel=cancel)
        report(progress, done=1, total=1, bytes_done=moved[0],
               message=f"{target.name} {fetched.status}")
        return fetched.path
