"""Manually promote a student version to champion (or demote back to an older one).

``kp promote --version V [--reason TEXT]`` switches ``registry/CHAMPION`` atomically, records the reason in
the version's ``promotion.json`` and in ``registry/champion_history.jsonl``. ``kp promote --list`` shows the
versions, newest first, with their held-out F1 and promotion state.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from typing import TYPE_CHECKING

from keyphrase_pipeline.artifacts import registry
from keyphrase_pipeline.core.errors import ConfigError
from keyphrase_pipeline.core.lake import Lake

if TYPE_CHECKING:
    from keyphrase_pipeline.core.settings import Settings

log = logging.getLogger(__name__)


def run(settings: Settings, version: str, reason: str = "manual promotion", ds: str | None = None) -> dict:
    """Make ``version`` the champion; return {version, previous, reason}.

    The switch is recorded in ``runs/ds=<ds or today, UTC>/promote.json``.

    Raises ConfigError (exit 2): no version given, none such in the registry, an invalid version id, the lake
    not local (registry), or ``ds`` not a date."""

    if not registry.exists(settings, version):
        known = [v["version"] for v in registry.list_versions(settings)][:10]
        raise ConfigError(f"no student version {version!r} in the registry (newest: {known})")
    previous = registry.champion_or_none(settings)  # repairs an unreadable registry/CHAMPION too
    registry.set_champion(settings, version, f"manual: {reason}")
    stats = {"version": version, "previous": previous, "reason": f"manual: {reason}"}
    day = ds or dt.datetime.now(dt.UTC).date().isoformat()
    Lake.from_settings(settings).write_run_stats(day, "promote", stats)
    return stats


def add_arguments(parser) -> None:
    """Add this stage's command-line options to ``parser`` (argparse)."""
    parser.add_argument("--version", default=None, help="student version to make champion")
    parser.add_argument("--reason", default="manual promotion", help="why (stored with the switch)")
    parser.add_argument("--list", action="store_true", help="list student versions and exit")


def main(settings: Settings, args) -> int:
    """``kp promote``: with ``--list``, one line per student version (``*`` = champion, label mix, KD loss,
    evaluated F1, promotion); else ``run`` for ``--version`` and its result as one JSON line. Returns 0.

    Raises ConfigError (exit 2) without ``--version`` or ``--list``.
    Errors propagate as exceptions; ``keyphrase_pipeline.cli.main`` maps them to exit codes
    (ConfigError 2, DataError and SchemaError 3, GateError 4, anything else 1): see ``run``."""

    if args.list:
        for v in registry.list_versions(settings):
            f1 = ((v["metrics"].get("eval") or {}).get("llm") or {}).get("f1")
            print(f"{'*' if v['current'] else ' '} {v['version']}  mix={v['config'].get('label_mix')} "
                  f"kd={v['config'].get('kd_loss')}  F1={f1 if f1 is None else round(f1, 4)}  "
                  f"promoted={v['promotion'].get('promoted')}  {v['promotion'].get('reason', '')}")
        return 0
    if not args.version:
        raise ConfigError("give --version V (or --list)")
    print(json.dumps(run(settings, args.version, args.reason)))
    return 0
