"""``ticktape serve`` with store faults injected into its runtime — for chaos runs only.

    python -m ticktape.testing.faulty_server --faults 'write=0.02,transition@after=0.01' \\
        --port 8766 --store sqlite:///chaos.db

Everything else (settings from ``TICKTAPE_*`` variables, start-up, graceful
shutdown) is the real server's: the store handle of the supervisor (heartbeats,
tick writes, its transitions, the reconciler) has a
:class:`~ticktape.testing.FaultyStore` built from ``--faults`` under its retry layer
(:meth:`~ticktape.testing.FaultyStore.from_spec`); the API's own store calls are
not faulted. ``bench/chaos.py`` starts its servers so, through
:class:`~ticktape.testing.ServerProcess` ``(faults=...)``.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence

from ticktape.cli.main import run_server
from ticktape.config import Settings
from ticktape.errors import ValidationError
from ticktape.store import Store
from ticktape.testing._faults import FaultyStore, parse_fault_spec

log = logging.getLogger(__name__)


def parse_args(argv: Sequence[str] | None = None) -> tuple[Settings, str]:
    """(settings, fault spec); a malformed spec exits with one line, as a bad flag does."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--faults", required=True, help="e.g. write=0.02,transition@after=0.01")
    parser.add_argument("--port", type=int, default=None)
    parser.add_argument("--store", default=None)
    args = parser.parse_args(argv)
    try:
        parse_fault_spec(args.faults)
    except ValidationError as exc:
        raise SystemExit(f"ticktape: --faults: {exc}") from None
    return Settings.from_env(port=args.port, store_url=args.store), args.faults


def main(argv: Sequence[str] | None = None) -> None:
    settings, spec = parse_args(argv)

    def faulty(store: Store) -> Store:
        log.warning("injecting store faults %r into the runtime (chaos runs only)", spec)
        return FaultyStore.from_spec(store, spec)

    run_server(settings, runtime_store=faulty)


if __name__ == "__main__":
    main()
