"""`strategies` and `models`: what is installed and usable."""

from __future__ import annotations

from pathlib import Path

from .. import bundled
from ..errors import UserError
from ..files import kind_of
from .app import app
from .loading import warn_plugin_failures
from .options import JsonOpt, ModelOpt, settings_for
from .output import emit_json


@app.command()
def strategies(as_json: JsonOpt = False):
    """List decoding strategies with their options and defaults."""
    from ..registry import get_registry

    registry = get_registry()
    warn_plugin_failures(registry)
    described = [cls.describe() for cls in registry.strategies().values()]
    if as_json:
        emit_json(described)
        return
    from rich.console import Console
    from rich.table import Table

    table = Table("strategy", "summary", "options (default)")
    for d in described:
        opts = "\n".join(f"{o['name']}: {o['type']} = {o['default']!r}  {o['help']}" for o in d["options"])
        table.add_row(d["name"], d["summary"], opts or "-")
    Console().print(table)


@app.command()
def models(
    model: ModelOpt = None,
    as_json: JsonOpt = False,
):
    """Show the default models and the GGUF files in the configured model folders."""
    from ..engine import later_part, read_info

    settings = settings_for(bundled.COMPLETION, None)
    rows = []
    for role, configured in ((bundled.COMPLETION, settings.completion_model), (bundled.CHAT, settings.chat_model)):
        path = Path(configured) if configured else bundled.default_path(role)
        try:
            rows.append({"role": f"default {role}", **read_info(path).to_dict()})
        except UserError as exc:  # the listing is where a user looks for what is wrong: a row, not the end
            rows.append({"role": f"default {role}", "path": str(path), "error": str(exc)})
    seen = {r["path"] for r in rows}
    candidates = [model] if model is not None else []
    for folder in map(Path, settings.model_dirs):
        folder = folder.expanduser()
        try:
            kind = kind_of(folder, "model folder")
        except UserError as exc:
            kind, why = None, str(exc)
        else:  # a typo in model_dirs would otherwise list nothing, silently
            why = "model folder not found" if kind is None else "not a folder (model_dirs names folders)"
            why = f"{why}: {folder}"
        if kind != "folder":
            rows.append({"role": "", "path": str(folder), "error": why})
            continue
        candidates.extend(p for p in sorted(folder.rglob("*.gguf")) if not later_part(p))  # a split model once
    for path in candidates:
        if str(path) in seen:
            continue
        seen.add(str(path))
        try:
            rows.append({"role": "", **read_info(path).to_dict()})
        except UserError as exc:
            if model is not None and path == model:
                raise
            rows.append({"role": "", "path": str(path), "error": str(exc)})
    if as_json:
        emit_json(rows)
        return
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Column, Table

    # two columns, the path on a line of its own: what a user copies is never cut, and a
    # narrow terminal does not squeeze it to a dozen characters a line
    table = Table("role", Column("model", overflow="fold"))
    for r in rows:
        if "error" in r:  # the message names the path
            table.add_row(r["role"], f"[red]unusable[/red]: {escape(r['error'])}")
            continue
        fim = "yes" if r["fim"] else "no"
        parts = f" in {r['parts']} parts" if r.get("parts", 1) > 1 else ""
        facts = f"{r['architecture']}, {r['size_bytes'] / 1e6:,.0f} MB{parts}, vocab {r['vocab_size']:,}, FIM {fim}"
        table.add_row(r["role"], f"[bold]{escape(r['name'])}[/bold] ({escape(facts)})\n{escape(r['path'])}")
    Console().print(table)
