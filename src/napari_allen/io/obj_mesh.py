"""Wavefront ``.obj`` triangle meshes as Allen publishes its CCF structure meshes.

Allen's ``.../ccf_2017/structure_meshes/<id>.obj`` files (the ones AllenSDK's
``ReferenceSpaceApi.download_structure_mesh`` fetches) hold ``v x y z`` vertex lines,
``vn x y z`` normal lines and triangular ``f a//na b//nb c//nc`` faces (1-based indices).
Their vertices are CCF micrometres; we read them as ``[AP, DV, ML]`` (Allen's x, y, z), the
order of every other array in this package [U: order and units taken from AllenSDK's parser
and brainrender's use of these files, not from an Allen specification].

:class:`Mesh` is the in-memory form (float32 vertices in µm, int32 faces, 0-based); the same
writer produces the files the local API server serves, so both paths share one format.
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import AllenFormatError


@dataclass
class Mesh:
    """A triangle mesh in CCF µm ``[AP, DV, ML]``.

    ``vertices`` (N, 3) float32, ``faces`` (M, 3) int32 0-based indices into ``vertices``,
    ``normals`` (N, 3) float32 unit vertex normals (computed when absent), ``metadata`` free.
    """

    vertices: np.ndarray
    faces: np.ndarray
    normals: np.ndarray | None = None
    metadata: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.vertices = np.ascontiguousarray(self.vertices, dtype=np.float32).reshape(-1, 3)
        self.faces = np.ascontiguousarray(self.faces, dtype=np.int32).reshape(-1, 3)
        if self.normals is None:
            self.normals = vertex_normals(self.vertices, self.faces)
        self.normals = np.ascontiguousarray(self.normals, dtype=np.float32).reshape(-1, 3)

    @property
    def n_vertices(self) -> int:
        return len(self.vertices)

    @property
    def n_faces(self) -> int:
        return len(self.faces)

    def bounds(self) -> np.ndarray:
        """``[[min AP, min DV, min ML], [max ...]]`` in µm."""
        return np.stack([self.vertices.min(axis=0), self.vertices.max(axis=0)])


def vertex_normals(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Area-weighted unit vertex normals (zero for unused vertices)."""
    v = np.asarray(vertices, dtype=np.float64)
    f = np.asarray(faces, dtype=np.int64)
    normals = np.zeros_like(v)
    if len(f):
        face_n = np.cross(v[f[:, 1]] - v[f[:, 0]], v[f[:, 2]] - v[f[:, 0]])
        # Sums per vertex in the order np.add.at would add them (corner 0 of every face,
        # then 1, then 2): the same bits, ~10x faster (np.add.at held the GIL ~0.1 s for a
        # large structure in a worker, a freeze of napari's event loop).
        corners = f.T.reshape(-1)
        for axis in range(3):
            normals[:, axis] = np.bincount(corners, weights=np.tile(face_n[:, axis], 3),
                                           minlength=len(v))
    length = np.linalg.norm(normals, axis=1, keepdims=True)
    np.divide(normals, length, out=normals, where=length > 0)
    return normals.astype(np.float32)


def _block(lines: list[bytes], tag: bytes, source: str, width: int, kind: type) -> np.ndarray:
    """Parse the numeric fields of same-tag lines into an (n, width) array."""
    if not lines:
        return np.empty((0, width), dtype=kind)
    try:
        arr = np.array(b" ".join(lines).split(), dtype=kind)
    except ValueError:
        raise AllenFormatError(source, f"non-numeric value on a {tag.decode()!r} line") from None
    if arr.size != width * len(lines):
        raise AllenFormatError(
            source, f"every {tag.decode()!r} line needs {width} values (got {arr.size} values "
            f"on {len(lines)} lines)")
    return arr.reshape(-1, width)


def parse_obj(data: bytes | str, source: str = "<obj>") -> Mesh:
    """Parse ``.obj`` text (see module doc) into a :class:`Mesh`.

    Accepts faces as ``a``, ``a/t``, ``a//n`` or ``a/t/n``; only triangles. Raises
    :class:`AllenFormatError` naming ``source`` for anything else (no vertices, polygons,
    indices out of range, negative/relative indices, non-numbers).
    """
    text = data.encode() if isinstance(data, str) else bytes(data)
    verts: list[bytes] = []
    norms: list[bytes] = []
    faces: list[bytes] = []
    face_normals: list[bytes] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith(b"#"):
            continue
        tag, _, rest = line.partition(b" ")
        if tag == b"v":
            fields = rest.split()
            # A 4th (w) or colour fields may follow: keep x y z.
            if len(fields) < 3:
                raise AllenFormatError(source, f"line {number}: vertex needs x y z: {raw[:60]!r}")
            verts.append(b" ".join(fields[:3]))
        elif tag == b"vn":
            norms.append(rest)
        elif tag == b"f":
            corners = rest.split()
            if len(corners) != 3:
                raise AllenFormatError(source, f"line {number}: only triangles are supported, "
                                               f"got a face with {len(corners)} corners")
            parts = [c.split(b"/") for c in corners]
            faces.append(b" ".join(p[0] for p in parts))
            if all(len(p) == 3 and p[2] for p in parts):
                face_normals.append(b" ".join(p[2] for p in parts))
        elif tag in (b"vt", b"g", b"o", b"s", b"usemtl", b"mtllib", b"l"):
            continue  # texture coordinates, groups, materials: not geometry we use
        else:
            raise AllenFormatError(source, f"line {number}: unknown record {tag[:20]!r}")
    if not verts:
        raise AllenFormatError(source, "no 'v' vertex lines: not a Wavefront .obj mesh")
    vertices = _block(verts, b"v", source, 3, np.float64)
    face_idx = _block(faces, b"f", source, 3, np.int64)
    if len(face_idx) and (face_idx.min() < 1 or face_idx.max() > len(vertices)):
        raise AllenFormatError(
            source, f"face index out of range 1..{len(vertices)} (found {face_idx.min()}.."
                    f"{face_idx.max()}; relative/negative indices are not supported)")
    if not np.isfinite(vertices).all():
        raise AllenFormatError(source, "vertex coordinates must be finite numbers")
    normals = None
    vn = _block(norms, b"vn", source, 3, np.float64)
    # Allen's files pair vertex k with normal k; use the normals only when that holds.
    if len(vn) == len(vertices) and len(face_normals) == len(face_idx):
        fn = _block(face_normals, b"f", source, 3, np.int64)
        if np.array_equal(fn, face_idx):
            normals = vn
    return Mesh(vertices, face_idx - 1, normals, {"source": source})


def read_obj(path: str | os.PathLike) -> Mesh:
    """Read an ``.obj`` file (see :func:`parse_obj`)."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise AllenFormatError(path, f"cannot read mesh file: {exc.strerror or exc}") from exc
    return parse_obj(data, str(path))


def format_obj(mesh: Mesh, comment: str | None = None) -> bytes:
    """The mesh as Allen-style ``.obj`` bytes: ``v``, ``vn`` then ``f a//a b//b c//c``."""
    out = io.StringIO()
    if comment:
        for line in comment.splitlines():
            out.write(f"# {line}\n")
    np.savetxt(out, mesh.vertices, fmt="v %.3f %.3f %.3f")
    np.savetxt(out, mesh.normals, fmt="vn %.5f %.5f %.5f")
    f = mesh.faces.astype(np.int64) + 1
    np.savetxt(out, np.repeat(f, 2, axis=1), fmt="f %d//%d %d//%d %d//%d")
    return out.getvalue().encode()


def write_obj(path: str | os.PathLike, mesh: Mesh, comment: str | None = None) -> Path:
    """Write ``mesh`` to ``path`` atomically (see :func:`format_obj`)."""
    from .atomic import atomic_open

    with atomic_open(path, "wb") as fh:
        fh.write(format_obj(mesh, comment))
    return Path(path)
