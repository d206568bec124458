"""Shared by the Python tests."""


def micro_epoch(ordinals, seed=1, **payload):
    """A ``generated-dataset`` batch: microshards ``ordinals`` of payload seed ``seed``; ``payload`` adds keys."""
    return {
        "kind": "micro_epoch",
        "lease_id": "lease",
        "microshard_ids": [f"ms-{o}" for o in ordinals],
        "ordinals": list(ordinals),
        "bytes_len": 0,
        "pipeline_kind": "generated-dataset",
        "payload": {"seed": seed, **payload},
    }
