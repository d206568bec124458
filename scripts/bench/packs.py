"""Parameter-pack export and import speed: ours beside the reference's way, on one torch model.

    PYTHONPATH=python /usr/bin/python3 scripts/bench/packs.py [--params N] [--runs K] [--dir DIR]

The model is a stack of ``--layers`` square Linear layers holding about
``--params`` float32 parameters (default 10M). "ours" is
``burn_p2p_python_runtime.parameter_pack`` (each tensor's memory written
straight to the file; the file read straight into the parameters' memory). "baseline" does what the reference worker does: each tensor
through ``tolist()`` and ``struct.pack`` in chunks of 65536 values, and back
through ``struct.unpack`` into a list and ``torch.tensor``. Both write a
complete pack (values and manifest); the two packs must be byte-identical,
and each importer must load back exactly the exported values, or the script
exits 1.

MB/s is values bytes (4 x parameter_count) / median wall time over
``--runs`` runs, 1 MB = 10^6 bytes. The last line of output is JSON:
``{"export_mb_s", "import_mb_s", "baseline_export_mb_s",
"baseline_import_mb_s", ...}``.
"""

import argparse
import json
import math
import os
import shutil
import statistics
import struct
import sys
import tempfile
import time

import torch

from burn_p2p_python_runtime import parameter_pack as pp

TARGET_MB_S = 1000.0
CHUNK = 65536


def build_model(params, layers):
    width = max(1, int(math.sqrt(params / layers)))
    torch.manual_seed(0)
    return torch.nn.Sequential(*[torch.nn.Linear(width, width) for _ in range(layers)])


# -- the reference's way: Python lists and struct ------------------------------------------


def baseline_export(model, folder, schema_hash, state_dict_filter):
    state_dict_filter = pp.normalize_filter(state_dict_filter)
    plan = pp.plan_for(model, state_dict_filter)
    os.makedirs(folder, exist_ok=True)
    count = 0
    with open(os.path.join(folder, pp.VALUES_FILE), "wb") as handle:
        for tensor in plan.tensors:
            values = tensor.detach().to(device="cpu", dtype=torch.float32).contiguous().reshape(-1).tolist()
            count += len(values)
            for start in range(0, len(values), CHUNK):
                chunk = values[start : start + CHUNK]
                handle.write(struct.pack(f"<{len(chunk)}f", *chunk))
    manifest = pp.make_manifest(schema_hash, plan.layout_hash, count, state_dict_filter,
                                plan.included_keys, plan.excluded_float_keys, plan.ignored_non_float_keys)
    with open(os.path.join(folder, pp.MANIFEST_FILE), "w", encoding="utf-8") as handle:
        handle.write(json.dumps(manifest, indent=2))


def baseline_import(model, folder, state_dict_filter):
    plan = pp.plan_for(model, pp.normalize_filter(state_dict_filter))
    with open(os.path.join(folder, pp.MANIFEST_FILE), encoding="utf-8") as handle:
        manifest = json.load(handle)
    with open(os.path.join(folder, manifest["values_f32_le"]), "rb") as handle:
        data = handle.read()
    if len(data) != 4 * manifest["parameter_count"] or manifest["layout_hash"] != plan.layout_hash:
        raise ValueError("baseline import: pack does not fit the model")
    values = []
    for start in range(0, len(data), 4 * CHUNK):
        chunk = data[start : start + 4 * CHUNK]
        values.extend(struct.unpack(f"<{len(chunk) // 4}f", chunk))
    for _name, module, state_dict, kept in plan.modules:
        offset = 0
        replaced = dict(state_dict)
        for index, key in kept:
            entry = plan.layout[index]
            existing = state_dict[key]
            restored = torch.tensor(values[offset : offset + entry["numel"]], dtype=torch.float32).reshape(entry["shape"])
            replaced[key] = restored.to(dtype=existing.dtype, device=existing.device)
            offset += entry["numel"]
        module.load_state_dict(replaced)


# -- measuring ------------------------------------------------------------------------------


def timed(runs, action, before=None):
    times = []
    for _ in range(runs):
        if before:
            before()
        started = time.perf_counter()
        action()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def flat_bytes(model):
    return b"".join(t.detach().to(torch.float32).contiguous().numpy().tobytes() for _, t in sorted(model.state_dict().items()))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--params", type=int, default=10_000_000)
    parser.add_argument("--layers", type=int, default=10)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--dir", default=None, help="where to write the packs (default: a temp dir, removed after)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    model = build_model(args.params, args.layers)
    count = sum(t.numel() for t in model.state_dict().values())
    nbytes = 4 * count
    root = tempfile.mkdtemp(prefix="packs-bench-", dir=args.dir)
    try:
        ours_dir, base_dir = os.path.join(root, "ours"), os.path.join(root, "baseline")
        flt = {"include_globs": [], "exclude_globs": []}

        def clear(folder):
            return lambda: shutil.rmtree(folder, ignore_errors=True)

        ours_export = timed(args.runs, lambda: pp.export_torch_pack(model, ours_dir, "bench", flt), clear(ours_dir))
        base_export = timed(args.runs, lambda: baseline_export(model, base_dir, "bench", flt), clear(base_dir))
        identical = all(
            open(os.path.join(ours_dir, name), "rb").read() == open(os.path.join(base_dir, name), "rb").read()
            for name in (pp.VALUES_FILE, pp.MANIFEST_FILE)
        )
        expected = flat_bytes(model)
        target = build_model(args.params, args.layers)

        def scramble():
            with torch.no_grad():
                for parameter in target.parameters():
                    parameter.zero_()

        ours_import = timed(args.runs, lambda: pp.import_torch_pack(target, ours_dir, flt), scramble)
        ours_loaded = flat_bytes(target) == expected
        base_import = timed(args.runs, lambda: baseline_import(target, base_dir, flt), scramble)
        base_loaded = flat_bytes(target) == expected
    finally:
        shutil.rmtree(root, ignore_errors=True)

    rate = lambda seconds: nbytes / seconds / 1e6  # noqa: E731
    figures = {
        "export_mb_s": round(rate(ours_export), 1),
        "import_mb_s": round(rate(ours_import), 1),
        "baseline_export_mb_s": round(rate(base_export), 1),
        "baseline_import_mb_s": round(rate(base_import), 1),
        "parameters": count,
        "bytes": nbytes,
        "runs": args.runs,
        "byte_identical": identical,
        "target_mb_s": TARGET_MB_S,
    }
    print(f"parameter packs: {count:,} float32 parameters ({nbytes / 1e6:.1f} MB), median of {args.runs} runs each, "
          f"torch {torch.__version__}, python {sys.version.split()[0]}")
    print(f"{'':8} {'ours MB/s':>10} {'baseline MB/s':>14} {'ratio':>7}  target >= {TARGET_MB_S:.0f} MB/s")
    for name, ours, base in (("export", ours_export, base_export), ("import", ours_import, base_import)):
        ours_rate, base_rate = rate(ours), rate(base)
        met = "met" if ours_rate >= TARGET_MB_S else "MISSED"
        print(f"{name:8} {ours_rate:10.1f} {base_rate:14.1f} {ours_rate / base_rate:6.1f}x  {met}")
    print(f"byte-identical packs: {'yes' if identical else 'NO'}; "
          f"values loaded back exactly: ours {'yes' if ours_loaded else 'NO'}, baseline {'yes' if base_loaded else 'NO'}")
    print(json.dumps(figures))
    return 0 if identical and ours_loaded and base_loaded else 1


if __name__ == "__main__":
    sys.exit(main())
