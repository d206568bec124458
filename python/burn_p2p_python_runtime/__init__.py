"""Python side of the burn_p2p worker protocol: the worker process and the workloads shipped with it."""

PROTOCOL_VERSION = 1
