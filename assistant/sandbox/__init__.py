"""Running generated code: subprocess, time/memory limits, temp dir, no network where possible."""

from .runner import SandboxResult, network_isolated, processes_contained, run_python

__all__ = ["SandboxResult", "network_isolated", "processes_contained", "run_python"]
