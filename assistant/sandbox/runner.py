"""Run untrusted generated Python in a subprocess with limits.

Each run gets its own temp working dir (deleted afterwards), its own process group (killed
whole on timeout), a scrubbed environment, limits on address space, CPU time, file size and
open files, and, where the OS allows it (`unshare --net` as root), no network.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from functools import lru_cache


@dataclass
class SandboxResult:
    status: str  # passed | failed | timeout
    returncode: int | None
    seconds: float
    stdout: str
    stderr: str

    @property
    def passed(self) -> bool:
        return self.status == "passed"

    def to_dict(self) -> dict:
        return asdict(self)


@lru_cache(maxsize=1)
def _no_network_prefix() -> tuple[str, ...]:
    """`unshare --net --` if it works here (needs root or user namespaces), else nothing."""
    tool = shutil.which("unshare")
    if not tool or not sys.platform.startswith("linux"):
        return ()
    try:
        ok = subprocess.run([tool, "--net", "--", "true"], capture_output=True, timeout=5).returncode == 0
    except (OSError, subprocess.SubprocessError):
        ok = False
    return (tool, "--net", "--") if ok else ()


def network_isolated() -> bool:
    return bool(_no_network_prefix())


def run_python(
    code: str, *, timeout: float = 10.0, memory_mb: int = 1024, cpu_seconds: int | None = None
) -> SandboxResult:
    cpu = int(cpu_seconds or max(1, int(timeout) + 1))

    def limit() -> None:  # runs in the child before exec
        import resource

        mem = memory_mb * 1024 * 1024
        resource.setrlimit(resource.RLIMIT_AS, (mem, mem))
        resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
        resource.setrlimit(resource.RLIMIT_FSIZE, (64 << 20, 64 << 20))
        resource.setrlimit(resource.RLIMIT_NOFILE, (256, 256))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))

    with tempfile.TemporaryDirectory(prefix="assistant-sandbox-") as tmp:
        script = os.path.join(tmp, "program.py")
        with open(script, "w", encoding="utf-8") as fh:
            fh.write(code)
        env = {"PATH": "/usr/bin:/bin", "HOME": tmp, "TMPDIR": tmp, "LANG": "C.UTF-8", "PYTHONHASHSEED": "0"}
        cmd = [*_no_network_prefix(), sys.executable, "-I", "-B", script]
        t0 = time.perf_counter()
        proc = subprocess.Popen(
            cmd,
            cwd=tmp,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
            preexec_fn=limit,
        )
        try:
            out, err = proc.communicate(timeout=timeout)
            status = "passed" if proc.returncode == 0 else "failed"
        except subprocess.TimeoutExpired:
            _kill_group(proc.pid)
            out, err = proc.communicate()
            status = "timeout"
        finally:
            _kill_group(proc.pid)  # stragglers the program forked
        return SandboxResult(
            status,
            proc.returncode,
            time.perf_counter() - t0,
            out.decode("utf-8", "replace")[-2000:],
            err.decode("utf-8", "replace")[-2000:],
        )


def _kill_group(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
