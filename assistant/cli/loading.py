"""Opening the Service a command runs on, with the warnings a user needs before a slow or
silent failure (no GPU offload, a model larger than memory, too many threads; the service's
own, such as a context larger than the model was trained on)."""

from __future__ import annotations

import sys
from pathlib import Path

import typer

from .. import bundled
from ..config import Settings, cache_problem
from .options import settings_for


def completion_service(model: Path | None, *, n_gpu_layers, threads, n_ctx, quiet: bool):
    """The settings (flags over the config) and the Service of a command on the completion model."""
    settings = settings_for(bundled.COMPLETION, model, n_gpu_layers=n_gpu_layers, threads=threads, n_ctx=n_ctx)
    return settings, _open_service(settings, quiet=quiet)


def _open_service(settings: Settings, *, quiet: bool = False):
    from ..engine import gpu_offload_supported
    from ..service import Service

    progress = None if quiet else LoadProgress()
    service = Service(settings, on_progress=progress, on_warning=_warn)
    warn_plugin_failures(service.registry)
    offloads = bool(settings.n_gpu_layers) and gpu_offload_supported()
    if settings.n_gpu_layers and not offloads:  # llama.cpp would run on the CPU, silently
        _warn(
            f"n_gpu_layers {settings.n_gpu_layers} has no effect: this llama-cpp-python build has no GPU "
            "offload (README: GPU and distributed builds)"
        )
    if not offloads:
        _warn_model_beyond_memory(settings.completion_model)
    _warn_too_many_threads(settings.threads)
    problem = cache_problem()
    if problem:
        _warn(f"{problem}; meanwhile what it keeps is rebuilt on every run")
    return service


def _warn_too_many_threads(threads: int | None) -> None:
    """More threads than CPUs makes llama.cpp's threads wait on each other: 64 threads on 2
    CPUs decoded 10x slower than 2, and nothing said why."""
    from ..engine import usable_cpus

    cpus = len(usable_cpus())
    if threads and threads > cpus:
        _warn(
            f"{threads} threads on the {cpus} CPUs this process may use run slower than {cpus} (llama.cpp's "
            "threads wait on each other); leave --threads out for one per physical core"
        )


def _warn_model_beyond_memory(path: str | None) -> None:
    """A GGUF larger than this machine's memory loads (llama.cpp maps it) and then reads the
    disk for every token: minutes a token, with no word why."""
    from ..engine import model_files, physical_memory

    memory = physical_memory()
    if not path or not memory:
        return
    try:
        size = sum(f.stat().st_size for f in model_files(path))  # a split model's parts too
    except OSError:  # a missing file is said when it loads
        return
    if size > 0.9 * memory:
        _warn(
            f"the model file is {size / 2**30:.1f} GiB and this machine has {memory / 2**30:.1f} GiB of memory: "
            "llama.cpp will read it from disk for every token (very slow); use a smaller quantisation, or "
            "offload layers to a GPU (--n-gpu-layers)"
        )


class LoadProgress:
    """A model-load progress bar on stderr (only when stderr is a terminal)."""

    def __init__(self):
        self.enabled = sys.stderr.isatty()
        self._progress = None
        self._task = None

    def __call__(self, name: str, fraction: float) -> None:
        if not self.enabled:
            return
        from rich.console import Console
        from rich.progress import BarColumn, Progress, TextColumn

        if self._progress is None:
            self._progress = Progress(
                TextColumn("loading {task.description}"),
                BarColumn(),
                TextColumn("{task.percentage:>3.0f}%"),
                console=Console(stderr=True),
                transient=True,
            )
            self._progress.start()
            self._task = self._progress.add_task(name, total=1.0)
        self._progress.update(self._task, completed=fraction)
        if fraction >= 1.0:
            self._progress.stop()
            self._progress = None


def _warn(line: str) -> None:
    typer.echo(f"assistant: warning: {line}", err=True)


def warn_plugin_failures(registry) -> None:
    for line in registry.warnings():
        _warn(line)
