"""Passing a NodeConfig to a child process (worker started by the demo or tests)."""

from __future__ import annotations

import dataclasses

from dicom_node.config import NodeConfig


def config_env(config: NodeConfig) -> dict[str, str]:
    """LUMBAR_NODE_* variables that make `load_config()` in a child return ``config``."""
    env = {}
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if value is None or value == "" or value == () or value == {}:
            continue
        if f.name == "allowed_callers":
            value = ",".join(c.ae_title + (f"@{c.ip}" if c.ip else "") for c in value)
        elif f.name == "destinations":
            value = ",".join(d.spec for d in value)  # the label has no credentials
        elif f.name == "return_ports":
            value = ",".join(f"{k}={v}" for k, v in value.items())
        env[f"LUMBAR_NODE_{f.name.upper()}"] = str(value)
    return env
