"""Element types of Allen grid files, defined once: MetaImage ``ElementType`` and NRRD ``type``
names -> numpy dtypes (and back, for writers), plus the one bytes -> ``[AP, DV, ML]`` array
helper every reader, the download verifier and the local server use.

MetaIO's ``MET_LONG``/``MET_ULONG`` are 32-bit in ITK-written files (``MET_LONG_LONG`` is the
64-bit type), so they are 4 bytes here, for the reader and the download check alike.
"""

from __future__ import annotations

import numpy as np

#: MetaImage ElementType -> numpy type code (byte order set by BinaryDataByteOrderMSB).
MET_TYPES: dict[str, str] = {
    "MET_CHAR": "i1", "MET_UCHAR": "u1",
    "MET_SHORT": "i2", "MET_USHORT": "u2",
    "MET_INT": "i4", "MET_UINT": "u4",
    "MET_LONG": "i4", "MET_ULONG": "u4",
    "MET_LONG_LONG": "i8", "MET_ULONG_LONG": "u8",
    "MET_FLOAT": "f4", "MET_DOUBLE": "f8",
}
#: numpy type code -> the MetaImage ElementType writers use.
CODE_TO_MET: dict[str, str] = {
    "i1": "MET_CHAR", "u1": "MET_UCHAR", "i2": "MET_SHORT", "u2": "MET_USHORT",
    "i4": "MET_INT", "u4": "MET_UINT", "i8": "MET_LONG_LONG", "u8": "MET_ULONG_LONG",
    "f4": "MET_FLOAT", "f8": "MET_DOUBLE",
}

#: NRRD ``type:`` spellings (teem's list, lower case) -> numpy type code.
NRRD_TYPES: dict[str, str] = {}
for _names, _code in [
    ("signed char, int8, int8_t", "i1"),
    ("uchar, unsigned char, uint8, uint8_t", "u1"),
    ("short, short int, signed short, signed short int, int16, int16_t", "i2"),
    ("ushort, unsigned short, unsigned short int, uint16, uint16_t", "u2"),
    ("int, signed int, int32, int32_t", "i4"),
    ("uint, unsigned int, uint32, uint32_t", "u4"),
    (("longlong, long long, long long int, signed long long, signed long long int, int64, "
      "int64_t"), "i8"),
    ("ulonglong, unsigned long long, unsigned long long int, uint64, uint64_t", "u8"),
    ("float", "f4"),
    ("double", "f8"),
]:
    for _name in _names.split(", "):
        NRRD_TYPES[_name] = _code
#: numpy type code -> the NRRD type name writers use (Allen's spellings).
CODE_TO_NRRD: dict[str, str] = {
    "i1": "int8", "u1": "uchar", "i2": "short", "u2": "ushort", "i4": "int",
    "u4": "unsigned int", "i8": "int64", "u8": "uint64", "f4": "float", "f8": "double",
}


def type_code(dtype) -> str:
    """``'f4'``, ``'u4'``, ... of a numpy dtype (byte order dropped)."""
    dtype = np.dtype(dtype)
    return f"{dtype.kind}{dtype.itemsize}"


def met_dtype(element_type: str, msb: bool = False) -> np.dtype:
    """The numpy dtype of a MetaImage ElementType (KeyError if unknown)."""
    return np.dtype(MET_TYPES[element_type]).newbyteorder(">" if msb else "<")


def nrrd_dtype(type_name: str, endian: str = "little") -> np.dtype:
    """The numpy dtype of an NRRD ``type`` (KeyError if unknown); 1-byte types ignore endian."""
    dtype = np.dtype(NRRD_TYPES[type_name.strip().lower()])
    if dtype.itemsize == 1:
        return dtype
    return dtype.newbyteorder(">" if endian.strip().lower() == "big" else "<")


def met_name(dtype) -> str:
    """The MetaImage ElementType for a numpy dtype (ValueError if MetaImage has none)."""
    try:
        return CODE_TO_MET[type_code(dtype)]
    except KeyError:
        raise ValueError(f"cannot write element type {np.dtype(dtype)} as MetaImage") from None


def nrrd_name(dtype) -> str:
    """The NRRD type name for a numpy dtype (ValueError if NRRD has none)."""
    try:
        return CODE_TO_NRRD[type_code(dtype)]
    except KeyError:
        raise ValueError(f"cannot write element type {np.dtype(dtype)} as NRRD") from None


def array_from_bytes(payload, dtype, shape) -> np.ndarray:
    """Bytes (x fastest, in ``dtype``'s byte order) -> a native-endian ``[AP, DV, ML]`` array
    of ``shape`` in Fortran order. The caller has checked ``len(payload)``.

    Native byte order because vispy and napari's label code expect it; the copy also detaches
    the result from ``payload``.
    """
    dtype = np.dtype(dtype)
    flat = np.frombuffer(payload, dtype=dtype)
    return flat.astype(dtype.newbyteorder("="), copy=True).reshape(tuple(shape), order="F")
