"""Protocol 2 on the worker side: what ``hello`` reports, the parameter-pack methods and the inner loop.

What ``hello`` says, and why
----------------------------

``hello`` answers ``{"protocol_version": 1, "workload_name": ...,
"capabilities": [...]}``: version 1, and the capability list all the same.

- The seed's owner (the protocol-1 Rust client) refuses any version but 1.
  Its ``HelloResponse`` is a plain ``#[derive(Deserialize)]`` struct of
  ``protocol_version`` and ``workload_name`` with no
  ``#[serde(deny_unknown_fields)]``, so serde skips the ``capabilities``
  field it does not know: version 1 plus the list is accepted, and it uses
  every protocol-1 method, all of which this worker serves unchanged.
- The current owner accepts version 1 or 2 and decides from
  ``capabilities`` alone whether it may use the protocol-2 methods
  (``diloco_checkpoint_job`` before in-process DiLoCo). Given version 1 and
  the list, it uses all of protocol 2.
- Reporting 2 would gain nothing with the current owner and lose the
  seed's owner entirely. Clients that do key on the number can have it:
  ``BURN_P2P_WORKER_PROTOCOL_VERSION=2`` in the worker's environment makes
  ``hello`` say 2 (``1`` or unset: 1; anything else: ``hello`` fails, naming
  the variable). The capability list is the same either way.

Capabilities are truthful for the workload loaded, in the reference's order:

- ``artifact_path_io``: always (``load_model_artifact`` /
  ``materialize_model_artifact`` take file paths).
- ``parameter_pack_export``: the workload has ``export_parameter_pack_path``,
  or the generic torch path is possible. Serves ``parameter_pack_plan`` and
  ``export_parameter_pack``.
- ``parameter_pack_import``: the workload has ``import_parameter_pack_path``,
  or the generic path is possible. Serves ``import_parameter_pack``.
- ``diloco_checkpoint_job`` and ``exact_step_budget``: the workload has
  ``run_inner_loop`` and can both export and import packs (the inner loop
  starts from an imported pack and leaves its result as a pack). Serves
  ``run_inner_loop``, including ``require_exact_steps``.

"The generic path is possible" means: the workload's optional attribute
``supports_generic_parameter_packs`` (bool) when it has one; otherwise torch
is loaded in the worker process (``sys.modules["torch"]``: the runtime
itself never imports torch, so in a worker only the workload can have). The
state's shape is still checked on every call: a torch workload whose states
are not modules should set ``supports_generic_parameter_packs = False``.

``parameter_pack_plan`` and workloads with their own hooks
-----------------------------------------------------------

As the reference: the plan is computed from a fresh ``init_model(device)``
that is then dropped; ``uses_custom_parameter_pack_hooks`` is true when the
workload has either pack hook; if the generic plan then fails, the answer is
``layout_hash: null``, empty lists, 0 and ``generic_plan_error`` instead of
an error. Extension: a workload may also define
``parameter_pack_plan(state, state_dict_filter) -> {layout_hash,
included_keys, excluded_float_keys, ignored_non_float_keys,
parameter_count}`` to report the plan its hooks follow; the worker then
answers with that (the flag set as above) and no generic plan is tried. The
standard-library workload does this.
"""

import os
import sys

from . import parameter_pack

VERSION_ENV = "BURN_P2P_WORKER_PROTOCOL_VERSION"
GENERIC_ATTRIBUTE = "supports_generic_parameter_packs"
EXPORT_HOOK = "export_parameter_pack_path"
IMPORT_HOOK = "import_parameter_pack_path"
INNER_LOOP_HOOK = "run_inner_loop"
PLAN_HOOK = "parameter_pack_plan"

ARTIFACT_PATH_IO = "artifact_path_io"
DILOCO_CHECKPOINT_JOB = "diloco_checkpoint_job"
PARAMETER_PACK_EXPORT = "parameter_pack_export"
PARAMETER_PACK_IMPORT = "parameter_pack_import"
EXACT_STEP_BUDGET = "exact_step_budget"


def reported_protocol_version(default):
    raw = os.environ.get(VERSION_ENV, "")
    if raw == "":
        return default
    if raw in ("1", "2"):
        return int(raw)
    raise ValueError(f"{VERSION_ENV} must be 1 or 2, got {raw!r}")


def _hook(workload, name):
    hook = getattr(workload, name, None)
    return hook if callable(hook) else None


def generic_path_possible(workload):
    declared = getattr(workload, GENERIC_ATTRIBUTE, None)
    if declared is not None:
        return bool(declared)
    return sys.modules.get("torch") is not None


def capabilities(workload):
    generic = generic_path_possible(workload)
    export = generic or _hook(workload, EXPORT_HOOK) is not None
    load = generic or _hook(workload, IMPORT_HOOK) is not None
    inner = export and load and _hook(workload, INNER_LOOP_HOOK) is not None
    flags = [
        (ARTIFACT_PATH_IO, True),
        (DILOCO_CHECKPOINT_JOB, inner),
        (PARAMETER_PACK_EXPORT, export),
        (PARAMETER_PACK_IMPORT, load),
        (EXACT_STEP_BUDGET, inner),
    ]
    return [name for name, present in flags if present]


def uses_custom_hooks(workload):
    return _hook(workload, EXPORT_HOOK) is not None or _hook(workload, IMPORT_HOOK) is not None


# -- the methods ----------------------------------------------------------------------


def parameter_pack_plan(workload, state, state_dict_filter):
    """The ``ParameterPackPlan`` of ``state`` (a fresh model the caller drops afterwards)."""
    state_dict_filter = parameter_pack.normalize_filter(state_dict_filter)
    custom = uses_custom_hooks(workload)
    own_plan = _hook(workload, PLAN_HOOK)
    if own_plan is not None:
        return {"uses_custom_parameter_pack_hooks": custom, **_checked_plan(own_plan(state, state_dict_filter))}
    try:
        plan = parameter_pack.plan_for(state, state_dict_filter)
    except Exception as error:
        if not custom:
            raise
        return {
            "uses_custom_parameter_pack_hooks": True,
            "layout_hash": None,
            "included_keys": [],
            "excluded_float_keys": [],
            "ignored_non_float_keys": [],
            "parameter_count": 0,
            "generic_plan_error": f"{type(error).__name__}: {error}",
        }
    return plan.to_wire(custom)


def export_parameter_pack(workload, state, path, model_schema_hash, state_dict_filter):
    hook = _hook(workload, EXPORT_HOOK)
    if hook is not None:
        hook(state, path, model_schema_hash)
    else:
        parameter_pack.export_torch_pack(state, path, model_schema_hash, state_dict_filter)


def import_parameter_pack(workload, init_model, device, path, state_dict_filter):
    """A new state loaded from the pack (``init_model(device)`` for the generic path)."""
    hook = _hook(workload, IMPORT_HOOK)
    if hook is not None:
        state = hook(device, path)
        if state is None:
            raise TypeError(f"{IMPORT_HOOK} returned None, expected a model state")
        return state
    state = init_model(device)
    parameter_pack.import_torch_pack(state, path, state_dict_filter)
    return state


def run_inner_loop(workload, state, params, check_metrics):
    """Runs the workload's inner loop; returns (replacement state or None, the answer).

    ``params`` is the request's params (already checked by dispatch);
    ``check_metrics(metrics)`` validates the metrics it returns.
    """
    hook = _hook(workload, INNER_LOOP_HOOK)
    if hook is None:
        name = getattr(workload, "workload_name", type(workload).__name__)
        raise NotImplementedError(f"workload {name!r} does not implement run_inner_loop")
    # A pack left in the output folder by an earlier round is not one the workload wrote now.
    try:
        os.remove(os.path.join(params["output_parameter_pack_path"], parameter_pack.MANIFEST_FILE))
    except FileNotFoundError:
        pass
    result = hook(state, params)
    if result is None:
        result = {}
    if not isinstance(result, dict):
        raise TypeError(f"run_inner_loop returned {type(result).__name__}, expected a dict or None")
    replacement = result.get("state")
    current = state if replacement is None else replacement
    requested = params["num_inner_steps"]
    steps = _count(result.get("steps_completed", requested), "run_inner_loop steps_completed")
    if params.get("require_exact_steps") and steps != requested:
        raise ValueError(f"the inner loop completed {steps} steps, {requested} were requested with require_exact_steps")
    metrics = check_metrics(result.get("metrics") or {})
    optimizer_path = _optional_string(result.get("inner_optimizer_state_path"), "inner_optimizer_state_path")
    encoding = _optional_string(result.get("inner_optimizer_state_encoding"), "inner_optimizer_state_encoding")
    if optimizer_path is not None and not os.path.exists(optimizer_path):
        raise FileNotFoundError(f"run_inner_loop named inner_optimizer_state_path {optimizer_path!r}, which does not exist")
    output = params["output_parameter_pack_path"]
    if not os.path.exists(os.path.join(output, parameter_pack.MANIFEST_FILE)):
        export_parameter_pack(workload, current, output, params["model_schema_hash"], params.get("state_dict_filter"))
    return replacement, {
        "steps_completed": steps,
        "metrics": metrics,
        "inner_optimizer_state_path": optimizer_path,
        "inner_optimizer_state_encoding": encoding,
    }


def _count(value, what):
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2**32:
        raise ValueError(f"{what} must be an integer in 0..2^32-1, got {value!r}")
    return value


def _optional_string(value, what):
    if value is not None and not isinstance(value, str):
        raise TypeError(f"run_inner_loop {what} must be a string or None, got {type(value).__name__}")
    return value


def _checked_plan(plan):
    if not isinstance(plan, dict):
        raise TypeError(f"{PLAN_HOOK} returned {type(plan).__name__}, expected a dict")
    layout_hash = plan.get("layout_hash")
    if layout_hash is not None and not isinstance(layout_hash, str):
        raise TypeError(f"{PLAN_HOOK} layout_hash must be a string or None")
    checked = {"layout_hash": layout_hash}
    for field in ("included_keys", "excluded_float_keys", "ignored_non_float_keys"):
        values = plan.get(field, [])
        if not isinstance(values, list) or not all(isinstance(value, str) for value in values):
            raise TypeError(f"{PLAN_HOOK} {field} must be a list of strings")
        checked[field] = list(values)
    count = plan.get("parameter_count", 0)
    if isinstance(count, bool) or not isinstance(count, int) or count < 0:
        raise TypeError(f"{PLAN_HOOK} parameter_count must be a non-negative integer")
    checked["parameter_count"] = count
    if "generic_plan_error" in plan:
        checked["generic_plan_error"] = str(plan["generic_plan_error"])
    return checked

