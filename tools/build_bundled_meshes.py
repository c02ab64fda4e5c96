"""Build the meshes the package ships (``src/napari_allen/data/meshes/``) from its own bundled
25 µm CCFv3 annotation, and write their ``SHA256SUMS``.

Today: the brain outline (structure 997 with :data:`napari_allen.atlas.meshes.OUTLINE_PARAMS`),
so the CCF reference opens without decoding the annotation or marching cubes. Run again when
the mesh algorithm or its version (``_VERSION``) changes; ``tests/test_bundled_meshes.py``
fails while the shipped file does not match what the code builds.

    PYTHONPATH=src python tools/build_bundled_meshes.py
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from napari_allen.atlas.meshes import brain_outline, bundled_meshes_dir
from napari_allen.io.manifest import sha256_file


def main() -> int:
    root = bundled_meshes_dir()
    with tempfile.TemporaryDirectory() as cache:
        mesh = brain_outline(cache_dir=cache)
        built = Path(mesh.metadata["cache_file"])
        if mesh.metadata.get("bundled"):
            raise SystemExit("the outline came from the bundled copy: remove it first")
        rel = Path(built.parent.name) / built.name
        out = root / rel
        out.parent.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(out, vertices=mesh.vertices, faces=mesh.faces,
                            normals=mesh.normals)
    lines = [f"{sha256_file(p)}  {p.relative_to(root).as_posix()}"
             for p in sorted(root.rglob("*.npz"))]
    (root / "SHA256SUMS").write_text("\n".join(lines) + "\n", encoding="utf-8")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
