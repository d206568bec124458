"""Parameter packs (protocol 2): the format, the generic torch layout, the filter and fast file I/O.

A pack is a folder holding ``values.f32le`` (every kept floating-point tensor,
cast to float32, row-major, little-endian, concatenated in layout order with
no padding) and ``manifest.json``. The bytes are identical to what the
reference worker writes for the same model and filter; only the speed
differs: the reference goes through a Python list of floats and
``struct.pack`` (about 33 MB/s writing and 45 MB/s reading on a
10M-parameter model), this module hands each tensor's memory to the file
and reads the file straight into the live float32 tensors (other dtypes and
devices through one float32 buffer per tensor), a few GB/s each way (see
``scripts/bench/packs.py``).

Manifest, written as ``json.dumps(manifest, indent=2)`` (two-space indent,
ASCII, no trailing newline), in this key order, the reference's::

    format, model_schema_hash, layout_hash, parameter_count, values_f32_le,
    state_dict_filter {include_globs, exclude_globs},
    included_keys, excluded_float_keys, ignored_non_float_keys

The layout is the list of kept tensors ``{name, shape, dtype, numel}``
(``dtype`` spelt as torch prints it, e.g. ``"torch.float32"``); the layout
hash is ``"torch-layout-"`` + hex SHA-256 of that list as compact JSON with
sorted keys.

Generic model states: a torch module (anything with ``state_dict`` and
``load_state_dict``), ``{"model": module}``, or ``{"modules": {name:
module}}`` (non-empty, names non-empty strings without ``.``). Modules are
taken in sorted name order, each module's ``state_dict()`` keys in sorted
order; a key's full name is ``KEY``, or ``MODULE.KEY`` for the ``modules``
form (always, even with a single module, as the reference does).

Only the torch-specific functions import torch, and only when called: the
standard-library workload uses the format half of this module
(:func:`write_pack_from_f32_arrays`, :func:`read_pack_f32_array`).
"""

import fnmatch
import hashlib
import json
import os
import sys

FORMAT = "burn-p2p-python-flattened-parameter-pack-v1"
VALUES_FILE = "values.f32le"
MANIFEST_FILE = "manifest.json"
LAYOUT_HASH_PREFIX = "torch-layout-"
BIG_ENDIAN_HOST = sys.byteorder == "big"
_READ_CHUNK = 64 * 1024 * 1024


class ParameterPackError(ValueError):
    """A pack that cannot be read, or does not fit the model it is meant for."""


class GenericStateError(TypeError):
    """The model state is none of the shapes the generic pack path understands."""


# -- StateDictFilter -------------------------------------------------------------


def normalize_filter(value):
    """``{include_globs, exclude_globs}`` with both lists present; null and missing lists mean ``[]``."""
    if value is None:
        value = {}
    if not isinstance(value, dict):
        raise ValueError(f"state_dict_filter must be an object or null, got {type(value).__name__}")
    normalized = {}
    for field in ("include_globs", "exclude_globs"):
        globs = value.get(field)
        if globs is None:
            globs = []
        if not isinstance(globs, list) or not all(isinstance(glob, str) for glob in globs):
            raise ValueError(f"state_dict_filter.{field} must be an array of strings, got {globs!r}")
        normalized[field] = list(globs)
    return normalized


def filter_keeps(full_name, state_dict_filter):
    """Kept when no include glob is given or one matches, and no exclude glob matches (excludes win)."""
    include, exclude = state_dict_filter["include_globs"], state_dict_filter["exclude_globs"]
    if include and not any(fnmatch.fnmatchcase(full_name, glob) for glob in include):
        return False
    return not any(fnmatch.fnmatchcase(full_name, glob) for glob in exclude)


# -- layout ------------------------------------------------------------------------


def layout_entry(name, shape, dtype, numel):
    return {"name": name, "shape": [int(dim) for dim in shape], "dtype": str(dtype), "numel": int(numel)}


def layout_hash(layout):
    encoded = json.dumps(
        [{"name": e["name"], "shape": e["shape"], "dtype": e["dtype"], "numel": e["numel"]} for e in layout],
        sort_keys=True,
        separators=(",", ":"),
    ).encode("utf-8")
    return LAYOUT_HASH_PREFIX + hashlib.sha256(encoded).hexdigest()


class Plan:
    """What a pack of ``state`` under a filter holds: ``layout`` and, in the same order, the live tensors."""

    __slots__ = ("layout", "tensors", "excluded_float_keys", "ignored_non_float_keys", "modules", "layout_hash")

    def __init__(self, layout, tensors, excluded_float_keys, ignored_non_float_keys, modules):
        self.layout = layout
        self.tensors = tensors
        self.excluded_float_keys = excluded_float_keys
        self.ignored_non_float_keys = ignored_non_float_keys
        # [(module name, module, state_dict, [(layout index, key), ...])]
        self.modules = modules
        self.layout_hash = layout_hash(layout)

    @property
    def included_keys(self):
        return [entry["name"] for entry in self.layout]

    @property
    def parameter_count(self):
        return sum(entry["numel"] for entry in self.layout)

    def to_wire(self, uses_custom_hooks=False):
        """The ``ParameterPackPlan`` answer."""
        return {
            "uses_custom_parameter_pack_hooks": bool(uses_custom_hooks),
            "layout_hash": self.layout_hash,
            "included_keys": self.included_keys,
            "excluded_float_keys": list(self.excluded_float_keys),
            "ignored_non_float_keys": list(self.ignored_non_float_keys),
            "parameter_count": self.parameter_count,
        }


def module_entries(state):
    """[(module name, module)] for a generic state ("" for a single module); GenericStateError otherwise."""
    if isinstance(state, dict) and "modules" in state:
        modules = state["modules"]
        if not isinstance(modules, dict) or not modules:
            raise GenericStateError("{'modules': ...} must hold a non-empty mapping of name to module")
        if not all(isinstance(name, str) for name in modules):
            raise GenericStateError("module names must be non-empty strings")
        entries = []
        for name in sorted(modules):
            if not name:
                raise GenericStateError("module names must be non-empty strings")
            if "." in name:
                raise GenericStateError(f"module name {name!r} must not contain '.'")
            if not _is_module(modules[name]):
                raise GenericStateError(f"module {name!r} is a {type(modules[name]).__name__}, which has no state_dict/load_state_dict")
            entries.append((name, modules[name]))
        return entries
    module = state["model"] if isinstance(state, dict) and "model" in state else state
    if _is_module(module):
        return [("", module)]
    raise GenericStateError(
        "the generic parameter-pack path needs a torch module, {'model': module} or {'modules': {name: module}}, "
        f"got {type(state).__name__}"
    )


def _is_module(value):
    return hasattr(value, "state_dict") and hasattr(value, "load_state_dict")


def plan_for(state, state_dict_filter):
    """The pack plan of a generic torch state under a normalized filter."""
    import torch

    layout, tensors, excluded, ignored, modules = [], [], [], [], []
    for module_name, module in module_entries(state):
        state_dict = module.state_dict()
        kept = []
        for key in sorted(state_dict):
            full_name = f"{module_name}.{key}" if module_name else key
            tensor = state_dict[key]
            if not isinstance(tensor, torch.Tensor) or not torch.is_floating_point(tensor):
                ignored.append(full_name)
                continue
            if not filter_keeps(full_name, state_dict_filter):
                excluded.append(full_name)
                continue
            kept.append((len(layout), key))
            layout.append(layout_entry(full_name, tensor.shape, tensor.dtype, tensor.numel()))
            tensors.append(tensor.detach())
        modules.append((module_name, module, state_dict, kept))
    return Plan(layout, tensors, excluded, ignored, modules)


# -- manifest ------------------------------------------------------------------------


def make_manifest(model_schema_hash, plan_hash, parameter_count, state_dict_filter, included, excluded, ignored):
    """The manifest, keys in the reference's order."""
    return {
        "format": FORMAT,
        "model_schema_hash": str(model_schema_hash),
        "layout_hash": plan_hash,
        "parameter_count": int(parameter_count),
        "values_f32_le": VALUES_FILE,
        "state_dict_filter": {
            "include_globs": list(state_dict_filter["include_globs"]),
            "exclude_globs": list(state_dict_filter["exclude_globs"]),
        },
        "included_keys": list(included),
        "excluded_float_keys": list(excluded),
        "ignored_non_float_keys": list(ignored),
    }


def encode_manifest(manifest):
    return json.dumps(manifest, indent=2).encode("utf-8")


def _replace_atomically(path, write):
    """Writes ``path`` through ``write(handle)`` into a sibling temp file, then renames it in place."""
    partial = f"{path}.partial-{os.getpid()}"
    try:
        with open(partial, "wb", buffering=0) as handle:
            write(handle)
        os.replace(partial, path)
    finally:
        if os.path.exists(partial):
            os.remove(partial)


def write_manifest(folder, manifest):
    data = encode_manifest(manifest)
    _replace_atomically(os.path.join(folder, MANIFEST_FILE), lambda handle: _write_all(handle, data))


def read_manifest(folder):
    """Loads and checks a pack's manifest; returns (manifest, values path, parameter_count).

    Checks the format string and that the values file holds exactly
    ``4 * parameter_count`` bytes. The filter and key lists are optional (the
    owner's packs carry neither).
    """
    path = os.path.join(folder, MANIFEST_FILE)
    try:
        with open(path, "rb") as handle:
            manifest = json.loads(handle.read())
    except FileNotFoundError:
        raise ParameterPackError(f"parameter pack {folder!r} has no {MANIFEST_FILE}") from None
    except ValueError as error:
        raise ParameterPackError(f"parameter pack manifest {path!r} is not JSON: {error}") from error
    if not isinstance(manifest, dict):
        raise ParameterPackError(f"parameter pack manifest {path!r} is not a JSON object")
    if manifest.get("format") != FORMAT:
        raise ParameterPackError(f"unsupported parameter-pack format {manifest.get('format')!r}; expected {FORMAT!r}")
    count = manifest.get("parameter_count")
    if isinstance(count, bool) or not isinstance(count, int) or count < 0:
        raise ParameterPackError(f"parameter pack manifest parameter_count must be a non-negative integer, got {count!r}")
    values_name = manifest.get("values_f32_le", VALUES_FILE)
    if not isinstance(values_name, str) or not values_name or os.path.basename(values_name) != values_name or values_name in (".", ".."):
        raise ParameterPackError(f"parameter pack manifest values_f32_le must be a file name inside the pack, got {values_name!r}")
    values_path = os.path.join(folder, values_name)
    try:
        size = os.stat(values_path).st_size
    except FileNotFoundError:
        raise ParameterPackError(f"parameter pack {folder!r} has no values file {values_name!r}") from None
    if size != 4 * count:
        raise ParameterPackError(
            f"parameter-pack byte length {size} of {values_name} does not match parameter_count {count} ({4 * count} bytes)"
        )
    return manifest, values_path, count


def check_layout(manifest, expected_hash, expected_count):
    found = manifest.get("layout_hash")
    if found != expected_hash:
        raise ParameterPackError(f"parameter-pack layout {found!r} does not match the model's layout {expected_hash!r}")
    if manifest["parameter_count"] != expected_count:
        raise ParameterPackError(
            f"parameter pack holds {manifest['parameter_count']} values, the model's layout has {expected_count}"
        )


# -- torch: export and import ----------------------------------------------------------


def export_torch_pack(state, folder, model_schema_hash, state_dict_filter):
    """Writes ``state`` (a generic torch state) as a pack in ``folder`` (created if missing); returns the plan."""
    state_dict_filter = normalize_filter(state_dict_filter)
    plan = plan_for(state, state_dict_filter)
    os.makedirs(folder, exist_ok=True)
    write_f32_tensors(os.path.join(folder, VALUES_FILE), plan.tensors)
    write_manifest(
        folder,
        make_manifest(
            model_schema_hash, plan.layout_hash, plan.parameter_count, state_dict_filter,
            plan.included_keys, plan.excluded_float_keys, plan.ignored_non_float_keys,
        ),
    )
    return plan


def import_torch_pack(state, folder, state_dict_filter):
    """Loads a pack into ``state``'s tensors, each cast back to its own dtype and device.

    Everything that can disagree (format, byte length, layout hash) is
    checked before the first tensor changes: a pack that does not fit is an
    error and leaves the model untouched. The values are then read in one
    pass: straight into the memory of every float32, contiguous CPU tensor
    that is a live parameter or buffer (on a little-endian host), and into a
    float32 buffer per tensor for the rest, which ``load_state_dict`` then
    copies in (casting dtype and device). Only a read failing half-way (the
    file truncated under us) can leave the model partly loaded; the worker
    imports into a fresh model and drops it on any error, so no caller ever
    sees one.
    """
    import torch

    plan = plan_for(state, normalize_filter(state_dict_filter))
    manifest, values_path, count = read_manifest(folder)
    check_layout(manifest, plan.layout_hash, plan.parameter_count)
    staged = []
    with open(values_path, "rb", buffering=0) as handle, torch.no_grad():
        for _name, module, _state_dict, kept in plan.modules:
            live = set()
            for tensor in (*module.parameters(), *module.buffers()):
                live.add((tensor.data_ptr(), tensor.numel(), tensor.dtype))
            later = {}
            for index, key in kept:
                entry, tensor = plan.layout[index], plan.tensors[index]
                if entry["numel"] == 0:
                    later[key] = torch.empty(entry["shape"], dtype=torch.float32)
                elif _fills_in_place(tensor, live):
                    _read_exactly(handle, _tensor_memory(tensor.view(-1)), values_path)
                else:
                    buffer = torch.empty(entry["numel"], dtype=torch.float32)
                    _read_exactly(handle, _tensor_memory(buffer), values_path)
                    if BIG_ENDIAN_HOST:
                        buffer = _swapped_words(buffer).view(torch.float32)
                    later[key] = buffer.view(entry["shape"])
            if later:
                staged.append((module, later))
        if handle.read(1):
            raise ParameterPackError(f"{values_path} holds more than {4 * count} bytes")
        for module, later in staged:
            # Copies into the live tensors (param.copy_), casting dtype and device.
            result = module.load_state_dict(later, strict=False)
            if result.unexpected_keys:
                raise ParameterPackError(f"load_state_dict did not take {result.unexpected_keys}")
    return plan


def _fills_in_place(tensor, live):
    import torch

    return (
        not BIG_ENDIAN_HOST
        and tensor.dtype == torch.float32
        and tensor.device.type == "cpu"
        and tensor.is_contiguous()
        and (tensor.data_ptr(), tensor.numel(), tensor.dtype) in live
    )


def _read_exactly(handle, memory, path):
    filled = 0
    while filled < len(memory):
        got = handle.readinto(memory[filled : filled + _READ_CHUNK])
        if not got:
            raise ParameterPackError(f"{path} ended early: {len(memory) - filled} bytes of a tensor are missing")
        filled += got


def cpu_f32(tensor):
    """``tensor`` as a contiguous float32 CPU tensor (the tensor itself when it already is one)."""
    import torch

    return tensor.detach().to("cpu", torch.float32).contiguous()


def write_f32_tensors(path, tensors, byteswap=None):
    """Writes each tensor's values as float32 little-endian, straight from its memory.

    ``byteswap`` (default: whether this host is big-endian) reverses each
    4-byte word on the way out.
    """
    byteswap = BIG_ENDIAN_HOST if byteswap is None else byteswap

    def write(handle):
        for tensor in tensors:
            flat = cpu_f32(tensor).reshape(-1)
            if flat.numel() == 0:
                continue
            if byteswap:
                flat = _swapped_words(flat)
            _write_all(handle, _tensor_memory(flat))

    _replace_atomically(path, write)


def read_f32_tensor(path, count, byteswap=None):
    """Reads ``count`` little-endian float32 values from ``path`` into one new CPU tensor."""
    import torch

    byteswap = BIG_ENDIAN_HOST if byteswap is None else byteswap

    values = torch.empty(count, dtype=torch.float32)
    if count:
        memory = _tensor_memory(values)
        with open(path, "rb", buffering=0) as handle:
            filled = 0
            while filled < len(memory):
                got = handle.readinto(memory[filled : filled + _READ_CHUNK])
                if not got:
                    raise ParameterPackError(f"{path} ended after {filled} of {len(memory)} bytes")
                filled += got
            if handle.read(1):
                raise ParameterPackError(f"{path} holds more than {len(memory)} bytes")
        del memory
    if byteswap:
        values = _swapped_words(values).view(torch.float32)
    return values


def _swapped_words(flat):
    """The bytes of a 1-D 4-byte tensor with each word reversed, as a uint8 tensor."""
    import torch

    return flat.view(torch.uint8).view(-1, 4).flip(1).contiguous().view(-1)


def _tensor_memory(tensor):
    """A writable byte memoryview over a contiguous CPU tensor's memory (no copy)."""
    try:
        import numpy
    except ImportError:
        numpy = None
    if numpy is not None:
        return memoryview(tensor.numpy()).cast("B")
    import ctypes

    nbytes = tensor.numel() * tensor.element_size()
    # The view keeps no reference to the tensor: callers hold the tensor while they use it.
    return memoryview((ctypes.c_char * nbytes).from_address(tensor.data_ptr())).cast("B")


def _write_all(handle, data):
    view = memoryview(data)
    while view:
        written = handle.write(view)
        view = view[written:]


# -- the standard-library side: packs from array('f') ------------------------------------


def write_pack_from_f32_arrays(folder, model_schema_hash, layout, arrays, state_dict_filter=None, excluded=(), ignored=()):
    """Writes a pack from ``array('f')`` values (one per layout entry, in layout order), without torch."""
    from array import array

    state_dict_filter = normalize_filter(state_dict_filter)
    count = 0
    for entry, values in zip(layout, arrays, strict=True):
        if len(values) != entry["numel"]:
            raise ValueError(f"tensor {entry['name']!r} has {len(values)} values, its layout entry says {entry['numel']}")
        count += len(values)
    os.makedirs(folder, exist_ok=True)

    def write(handle):
        for values in arrays:
            chunk = values if isinstance(values, array) and values.typecode == "f" else array("f", values)
            if BIG_ENDIAN_HOST:
                chunk = array("f", chunk)
                chunk.byteswap()
            _write_all(handle, memoryview(chunk).cast("B"))

    _replace_atomically(os.path.join(folder, VALUES_FILE), write)
    names = [entry["name"] for entry in layout]
    write_manifest(folder, make_manifest(model_schema_hash, layout_hash(layout), count, state_dict_filter, names, excluded, ignored))


def read_pack_f32_array(folder, expected_layout):
    """Checks a pack against ``expected_layout`` and returns its values as one ``array('f')``."""
    from array import array

    manifest, values_path, count = read_manifest(folder)
    check_layout(manifest, layout_hash(expected_layout), sum(entry["numel"] for entry in expected_layout))
    values = array("f")
    with open(values_path, "rb") as handle:
        try:
            values.fromfile(handle, count)
        except EOFError:
            raise ParameterPackError(f"{values_path} ended before {4 * count} bytes") from None
        if handle.read(1):
            raise ParameterPackError(f"{values_path} holds more than {4 * count} bytes")
    if BIG_ENDIAN_HOST:
        values.byteswap()
    return values
