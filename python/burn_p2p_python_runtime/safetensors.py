"""Reads and writes the safetensors layout with the standard library.

Layout: 8-byte little-endian header length, a JSON header mapping each tensor
name to ``{"dtype", "shape", "data_offsets": [begin, end]}`` (offsets relative
to the end of the header), then the raw little-endian tensor bytes. Only the
dtypes the workloads use are supported; anything else is refused by name.
"""

import json
import math
import struct

_DTYPE_SIZES = {"F32": 4, "F64": 8, "I64": 8}
_MAX_HEADER_BYTES = 100 * 1024 * 1024


class SafetensorsError(ValueError):
    pass


def encode(tensors, metadata=None):
    """``tensors``: name -> (dtype, shape, raw little-endian bytes). Returns the file's bytes."""
    header = {}
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    offset = 0
    chunks = []
    for name in sorted(tensors):
        dtype, shape, data = tensors[name]
        _check(name, dtype, shape, len(data))
        header[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [offset, offset + len(data)]}
        offset += len(data)
        chunks.append(data)
    header_bytes = json.dumps(header, separators=(",", ":")).encode("utf-8")
    # The format asks that data start 8-byte aligned; pad the header with spaces.
    header_bytes += b" " * (-len(header_bytes) % 8)
    return b"".join([struct.pack("<Q", len(header_bytes)), header_bytes, *chunks])


def decode(blob):
    """Inverse of :func:`encode`: returns (tensors, metadata)."""
    if len(blob) < 8:
        raise SafetensorsError(f"file of {len(blob)} bytes is shorter than the 8-byte header length")
    (header_len,) = struct.unpack_from("<Q", blob, 0)
    if header_len > min(_MAX_HEADER_BYTES, len(blob) - 8):
        raise SafetensorsError(f"header length {header_len} exceeds the file ({len(blob)} bytes)")
    try:
        header = json.loads(blob[8 : 8 + header_len].decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise SafetensorsError(f"header is not UTF-8 JSON: {error}") from error
    if not isinstance(header, dict):
        raise SafetensorsError("header is not a JSON object")
    metadata = header.pop("__metadata__", None) or {}
    data = memoryview(blob)[8 + header_len :]
    tensors = {}
    for name, info in header.items():
        try:
            dtype, shape, (begin, end) = info["dtype"], info["shape"], info["data_offsets"]
        except (KeyError, TypeError, ValueError) as error:
            raise SafetensorsError(f"tensor {name!r} has a malformed header entry: {info!r}") from error
        if not 0 <= begin <= end <= len(data):
            raise SafetensorsError(f"tensor {name!r} offsets {begin}..{end} fall outside {len(data)} data bytes")
        _check(name, dtype, shape, end - begin)
        tensors[name] = (dtype, list(shape), bytes(data[begin:end]))
    return tensors, metadata


def save_file(path, tensors, metadata=None):
    with open(path, "wb") as handle:
        handle.write(encode(tensors, metadata))


def load_file(path):
    with open(path, "rb") as handle:
        return decode(handle.read())


def f32_bytes(values):
    """Packs an iterable of floats as little-endian f32."""
    values = list(values)
    return struct.pack(f"<{len(values)}f", *values)


def f32_values(data):
    return list(struct.unpack(f"<{len(data) // 4}f", data))


def _check(name, dtype, shape, nbytes):
    if dtype not in _DTYPE_SIZES:
        raise SafetensorsError(f"tensor {name!r} has unsupported dtype {dtype!r} (supported: {sorted(_DTYPE_SIZES)})")
    if not all(isinstance(d, int) and d >= 0 for d in shape):
        raise SafetensorsError(f"tensor {name!r} has an invalid shape {shape!r}")
    expected = math.prod(shape) * _DTYPE_SIZES[dtype]
    if expected != nbytes:
        raise SafetensorsError(f"tensor {name!r}: shape {shape} of {dtype} needs {expected} bytes, found {nbytes}")
