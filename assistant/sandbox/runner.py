"""Run untrusted generated Python in a subprocess with limits.

Each run gets its own temp working dir (deleted afterwards), its own process group (killed
whole on timeout), a scrubbed environment, limits on address space, CPU time, file size and
open files, and, where the OS allows it (`unshare` as root), no network and its own PID
namespace: a process it forks into a session of its own escaped the group kill and outlived
the run; the kernel now ends it with the program. Its output goes
to files in that dir, under the same file-size limit, and only their tails are read: through
pipes a program printing in a loop filled the caller's memory (300 MB of output: 915 MB peak).
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

from ..signals import interrupts_deferred

OUTPUT_LIMIT = 64 << 20  # bytes a program may write to any one file, its output included
TAIL_CHARS = 2000  # of stdout and stderr kept in a result
MAX_TASKS = 256  # processes and threads a program may add to its user's (not as root: see _task_limit)


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


# The program runs as the second process of its PID namespace: the first, a shell that waits
# for it, keeps the kernel's init rules (signals a process sends itself are ignored) off it.
_SHELL_FIRST = ("/bin/sh", "-c", '"$0" "$@"; exit $?')


_PID = ("--net", "--pid", "--fork", "--kill-child")
# as root, namespaces need nothing more; any other user needs a user namespace of its own
# (--map-root-user: the program is "root" there, and the same unprivileged user outside)
_ISOLATIONS = (
    (_PID, _SHELL_FIRST),
    (("--map-root-user", *_PID), _SHELL_FIRST),
    (("--net",), ()),
    (("--map-root-user", "--net"), ()),
)


@lru_cache(maxsize=1)
def _isolation_prefix() -> tuple[str, ...]:
    """The most isolation `unshare` gives here (root or user namespaces): no network and a PID
    namespace of its own, whose every process the kernel kills when its first one ends (so
    nothing the program forks, even into a new session, outlives the run); else no network
    alone; else nothing."""
    tool = shutil.which("unshare")
    if not tool or not sys.platform.startswith("linux"):
        return ()
    for flags, first in _ISOLATIONS:
        try:
            probe = subprocess.run([tool, *flags, "--", *first, "true"], capture_output=True, timeout=5)
        except (OSError, subprocess.SubprocessError):
            continue
        if probe.returncode == 0:
            return (tool, *flags, "--", *first)
    return ()


def network_isolated() -> bool:
    return bool(_isolation_prefix())


def processes_contained() -> bool:
    """Whether a program's leftover processes (a daemon in its own session) die with it."""
    return "--pid" in _isolation_prefix()


def run_python(
    code: str, *, timeout: float = 10.0, memory_mb: int = 1024, cpu_seconds: int | None = None
) -> SandboxResult:
    cpu = int(cpu_seconds or max(1, int(timeout) + 1))
    tasks = _task_limit()

    die_with_parent = _parent_death_signal()
    parent = os.getpid()

    def limit() -> None:  # runs in the child before exec
        import resource

        if die_with_parent is not None and die_with_parent(_PR_SET_PDEATHSIG, signal.SIGKILL) == 0:
            if os.getppid() != parent:  # the parent died before the line above: nobody waits for this
                os._exit(1)

        mem = memory_mb * 1024 * 1024
        if tasks is not None:
            resource.setrlimit(resource.RLIMIT_NPROC, (tasks, tasks))
        resource.setrlimit(resource.RLIMIT_AS, (mem, mem))
        resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
        resource.setrlimit(resource.RLIMIT_FSIZE, (OUTPUT_LIMIT, OUTPUT_LIMIT))
        resource.setrlimit(resource.RLIMIT_NOFILE, (256, 256))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))

    _remove_dead_runners_folders()
    with tempfile.TemporaryDirectory(prefix=f"{FOLDER_PREFIX}{os.getpid()}-") as tmp:
        script = os.path.join(tmp, "program.py")
        with open(script, "w", encoding="utf-8") as fh:
            fh.write(code)
        env = {"PATH": "/usr/bin:/bin", "HOME": tmp, "TMPDIR": tmp, "LANG": "C.UTF-8", "PYTHONHASHSEED": "0"}
        cmd = [*_isolation_prefix(), sys.executable, "-I", "-B", script]
        out_path, err_path = os.path.join(tmp, ".stdout"), os.path.join(tmp, ".stderr")
        t0 = time.perf_counter()
        with open(out_path, "wb") as out_f, open(err_path, "wb") as err_f:
            proc = None
            try:
                with interrupts_deferred():  # Ctrl-C in logging's fork callback was lost
                    proc = subprocess.Popen(
                        cmd,
                        cwd=tmp,
                        env=env,
                        stdin=subprocess.DEVNULL,
                        stdout=out_f,
                        stderr=err_f,
                        start_new_session=True,
                        preexec_fn=limit,
                    )
                proc.wait(timeout=timeout)
                status = "passed" if proc.returncode == 0 else "failed"
            except subprocess.TimeoutExpired:
                _kill_group(proc.pid)
                proc.wait()
                status = "timeout"
            finally:
                if proc is not None:  # stragglers the program forked; all of it on Ctrl-C
                    _kill_group(proc.pid)
        (out, out_cut), (err, err_cut) = _tail(out_path), _tail(err_path)
        if out_cut or err_cut:  # Python then fails with EFBIG
            err = (err + f"\n[sandbox: output cut at {OUTPUT_LIMIT >> 20} MB]")[-TAIL_CHARS:]
        return SandboxResult(status, proc.returncode, time.perf_counter() - t0, out, err)


FOLDER_PREFIX = "assistant-sandbox-"  # then the runner's pid: whose folder it is


@lru_cache(maxsize=1)
def _remove_dead_runners_folders() -> None:
    """Once a process: the temp folders of runners that were killed outright (SIGKILL, the OOM
    killer: no `finally` ran; their programs died with them), this user's, whose runner no
    longer exists. A folder of a live runner, or of a pid now someone else's, is left."""
    root = tempfile.gettempdir()
    try:
        entries = list(os.scandir(root))
    except OSError:
        return
    for entry in entries:
        pid = entry.name[len(FOLDER_PREFIX) :].split("-", 1)[0]
        if not (entry.name.startswith(FOLDER_PREFIX) and pid.isdigit()):
            continue
        try:
            if entry.stat(follow_symlinks=False).st_uid != os.getuid() or not entry.is_dir(follow_symlinks=False):
                continue
            os.kill(int(pid), 0)
        except ProcessLookupError:
            shutil.rmtree(entry.path, ignore_errors=True)
        except OSError:  # alive (another user's pid now), or not ours to look at
            continue


_PR_SET_PDEATHSIG = 1


@lru_cache(maxsize=1)
def _parent_death_signal():
    """Linux's prctl, found before any fork: the program's first process gets SIGKILL when
    this one dies, even by SIGKILL or the OOM killer (its finally never runs): a SIGTERM to
    `eval humaneval` (a timeout, a CI cancel) left a sleeping program running on. With a PID
    namespace that process is its `unshare`, whose child and namespace die with it."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        import ctypes

        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None


def _task_limit() -> int | None:
    """RLIMIT_NPROC for the program: the tasks (processes and threads) this user runs now plus
    MAX_TASKS, so a fork bomb stops there instead of freezing the desktop until the timeout.
    The limit counts every task of the user, hence the headroom; root is exempt from it (the
    kernel does not apply it), and without /proc nothing is set."""
    uid = os.getuid()
    if uid == 0 or not os.path.isdir("/proc"):
        return None
    count = 0
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/status", encoding="ascii", errors="replace") as fh:
                fields = dict(line.split(":", 1) for line in fh if ":" in line)
            if int(fields["Uid"].split()[0]) == uid:
                count += int(fields["Threads"])
        except (OSError, KeyError, ValueError, IndexError):
            continue  # a process that ended meanwhile, or one we may not read
    current = _current_task_limit()
    wanted = count + MAX_TASKS
    return wanted if current is None or wanted < current else None


def _current_task_limit() -> int | None:
    import resource

    soft, _hard = resource.getrlimit(resource.RLIMIT_NPROC)
    return None if soft == resource.RLIM_INFINITY else soft


def _tail(path: str) -> tuple[str, bool]:
    """The last TAIL_CHARS characters of a file the program wrote (it may have removed it),
    and whether it reached the file-size limit."""
    try:
        with open(path, "rb") as fh:
            size = os.fstat(fh.fileno()).st_size
            fh.seek(max(0, size - 4 * TAIL_CHARS))
            return fh.read().decode("utf-8", "replace")[-TAIL_CHARS:], size >= OUTPUT_LIMIT
    except OSError:
        return "", False


def _kill_group(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
