"""Calls into a workload object, with the fallbacks of PROTOCOL.md's workload contract.

The adapter knows nothing of model ids or the wire: it takes and returns
workload states. Optional methods are looked up at call time, as the
reference worker does, so a workload written for the reference runs unchanged.
"""

import importlib

from .limits import QUOTE_CHARS, clip_head, quote


def load_factory(spec):
    """Resolves ``MODULE:ATTR`` to a callable factory."""
    module_name, sep, attr_name = spec.partition(":")
    if not sep or not module_name or not attr_name:
        raise ValueError(f"factory must be MODULE:ATTR, got {quote(spec)}")
    module = importlib.import_module(module_name)
    try:
        factory = getattr(module, attr_name)
    except AttributeError:
        raise AttributeError(f"module {quote(module_name)} has no attribute {quote(attr_name)}") from None
    if not callable(factory):
        raise TypeError(f"{quote(spec)} is not callable: found {clip_head(type(factory).__name__, QUOTE_CHARS)} {quote(factory)}")
    return factory


class WorkloadAdapter:
    def __init__(self, workload):
        self.workload = workload

    @property
    def workload_name(self):
        return str(getattr(self.workload, "workload_name", type(self.workload).__name__))

    def runtime_device(self):
        return self._required("runtime_device")()

    def capability_probe(self):
        return self._required("capability_probe")()

    def init_model(self, device):
        return self._required("init_model")(device)

    def train_window(self, state, batches):
        return self._required("train_window")(state, batches)

    def evaluate(self, state, split):
        return self._required("evaluate")(state, split)

    def apply_patch(self, patch):
        apply = getattr(self.workload, "apply_patch", None)
        if apply is None:
            return {"Rejected": "workload has no apply_patch"}
        return apply(patch)

    def load_model_artifact(self, state, path):
        """Returns the replacement state, or None to keep ``state``."""
        load_path = getattr(self.workload, "load_model_artifact_path", None)
        if load_path is not None:
            return load_path(state, path)
        load_bytes = self._required("load_model_artifact", "load_model_artifact_path")
        with open(path, "rb") as handle:
            return load_bytes(state, handle.read())

    def materialize_model_artifact(self, state, path):
        materialize_path = getattr(self.workload, "materialize_model_artifact_path", None)
        if materialize_path is not None:
            materialize_path(state, path)
            return
        data = self._required("materialize_model_artifact", "materialize_model_artifact_path")(state)
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError(f"materialize_model_artifact returned {clip_head(type(data).__name__, QUOTE_CHARS)}, expected bytes")
        with open(path, "wb") as handle:
            handle.write(data)

    def merge_candidate_models(self, base_state, candidates, policy):
        return self._required("merge_candidate_models")(base_state, candidates, policy)

    def apply_single_root_ema(self, base_state, merged_state, policy):
        return self._required("apply_single_root_ema")(base_state, merged_state, policy)

    def reconcile_canonical_model(self, local_state, canonical_state, strategy):
        return self._required("reconcile_canonical_model")(local_state, canonical_state, strategy)

    def _required(self, name, alternative=None):
        method = getattr(self.workload, name, None)
        if method is None:
            either = f"{alternative} or {name}" if alternative else name
            raise NotImplementedError(f"workload {quote(self.workload_name)} does not implement {either}")
        return method
