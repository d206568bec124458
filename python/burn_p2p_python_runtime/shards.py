"""Microshard files as both workloads write them, and their ``write-shards`` command line.

A shard is a safetensors file holding ``x`` (F32, [n, features]) and ``y``
(I64, [n]), named after its payload seed and ordinal. Each workload generates
the examples its own way; this module fixes the file layout and the CLI so
the two cannot drift apart.
"""

import argparse
import json
import os

from . import safetensors


def write(directory, seed, ordinals, features, shard):
    """Writes microshard ``ordinal`` of payload seed ``seed`` for each ordinal, in order; returns the absolute paths.

    ``shard(ordinal)`` returns ``(x_data, y_data, metadata)``: ``x`` as n x
    ``features`` little-endian f32 bytes, ``y`` as n little-endian i64 bytes.
    """
    os.makedirs(directory, exist_ok=True)
    paths = []
    for ordinal in ordinals:
        x_data, y_data, metadata = shard(ordinal)
        count = len(y_data) // 8
        path = os.path.abspath(os.path.join(directory, f"microshard-s{seed}-o{ordinal:06d}.safetensors"))
        safetensors.save_file(path, {"x": ("F32", [count, features], x_data), "y": ("I64", [count], y_data)}, metadata)
        paths.append(path)
    return paths


def main(prog, write_shards, argv=None):
    """``prog write-shards --out DIR --config-json JSON --ordinals 0,1,2 [--seed S] [--examples-per-shard N]``.

    Calls ``write_shards(directory, config, ordinals, examples_per_shard, seed)``
    (a workload module's own) and prints the paths as a JSON list.
    """
    parser = argparse.ArgumentParser(prog=prog)
    commands = parser.add_subparsers(dest="command", required=True)
    shards = commands.add_parser("write-shards", help="write microshards as safetensors files and print their paths as JSON")
    shards.add_argument("--out", required=True, help="directory to write into (created if missing)")
    shards.add_argument("--config-json", default="{}", help="workload config as JSON (dataset_seed, features, ...)")
    shards.add_argument("--ordinals", required=True, help="comma-separated microshard ordinals, e.g. 0,1,2")
    shards.add_argument("--seed", type=int, default=0, help="payload seed the microshards belong to")
    shards.add_argument("--examples-per-shard", type=int, default=None)
    args = parser.parse_args(argv)
    try:
        ordinals = [int(part) for part in args.ordinals.split(",") if part.strip()]
    except ValueError:
        ordinals = None
    # Ordinals are u32 on the wire (BatchRef.ordinals).
    if not ordinals or any(not 0 <= ordinal < 2**32 for ordinal in ordinals):
        parser.error(f"--ordinals must be comma-separated integers in 0..2^32-1, got {args.ordinals!r}")
    paths = write_shards(args.out, json.loads(args.config_json), ordinals, args.examples_per_shard, args.seed)
    print(json.dumps(paths))
    return 0
