"""The QuestDB backend (``questdb://host:8812?ilp=http://host:9000``).

Sessions are an append-only, non-WAL log with compare-and-set; ticks go over
ILP/HTTP into WAL tables whose rows are fenced by tenure (docs/questdb.md).

Public face:

- :class:`QuestDBStore`, the store;
- :class:`QuestDBAddress`, a parsed store URL (connection info, ILP configuration,
  table prefix) — for tools that talk to the same server, such as ``bench/ingest.py``;
- :class:`QuestDBSessionStore`, the type of ``QuestDBStore.sessions``, and
  :class:`QuestDBTickStore`, the type of ``QuestDBStore.ticks``, for tests that check
  what is physically in the tables or use their documented testing hooks
  (``on_read_many``, ``before_send``, ``split_send``, ``before_gap_write``, ``after_read``;
  ``QuestDBStore.on_connect``);
- :class:`LogLookups`, the type of ``QuestDBStore.log_lookups``: the by-id reads of
  the session log, which read again by string what QuestDB's symbol lookup missed
  (its counts, its testing hook ``on_lookup``);
- :class:`CommitMarks`, the type of ``QuestDBTickStore.commit_marks``: what the tick
  tables had committed by the times their WAL state was read, the targets of a
  ``wait_visible(committed_by=...)`` (unit-tested on its own);
- :class:`Fence`, a sealed tenure's fence as a seal writes it (``Seal.fence``), for
  tests that check where a seal cut;
- ``DRIVER_ERRORS``, the table that maps every psycopg, socket and ILP client error
  to a ticktape store error;
- :func:`trades_frame`, :func:`book_frame`, :func:`send_marks` and
  :func:`serialise_frame`, how a grouped tick write becomes ILP rows (measured on
  their own by ``bench/ticksend.py``);
- :func:`adopt_idle_timeout` and ``SHOW_PARAMETERS_ATTEMPTS``, how a store's open reads
  the server's idle timeout (unit-tested on their own: QuestDB refuses some of several
  ``SHOW PARAMETERS`` made at once);
- :func:`values_statements` and :func:`in_list`, how rows become multi-row INSERTs and
  values an ``IN (…)`` list, of a few fixed shapes each, and :func:`log_params`, a log
  row's values (``SESSION_LOG_COLUMNS``: the log's columns and types, in order) with the
  same parameter types whatever they hold (unit-tested on their own; QuestDB compiles a
  statement once and then finds it in its caches);
- :class:`ParquetExport` and its SQL helpers ``sql_literal`` / ``sql_inline``, the
  columnar read over HTTP ``/exp`` (unit-tested on their own).

The modules inside this package are private: ``_sessions`` (the session log),
``_ticks`` (tick tables), ``_db`` (connections, schema, error table), ``_commit``
(group commit), ``_fence`` (tenure fences), ``_grouping`` (batching of waiting calls),
``_export`` (Parquet reads over HTTP).
"""

from ticktape.store.questdb._db import ERRORS as DRIVER_ERRORS
from ticktape.store.questdb._db import (
    READ_CONNECTIONS,
    SESSION_LOG_COLUMNS,
    SHOW_PARAMETERS_ATTEMPTS,
    LogLookups,
    QuestDBAddress,
    adopt_idle_timeout,
    in_list,
    log_params,
    values_statements,
)
from ticktape.store.questdb._export import ParquetExport
from ticktape.store.questdb._export import inline as sql_inline
from ticktape.store.questdb._export import literal as sql_literal
from ticktape.store.questdb._fence import TICK_FLOOR_MARGIN_US, Fence
from ticktape.store.questdb._sessions import QuestDBSessionStore, QuestDBStore
from ticktape.store.questdb._ticks import (
    CommitMarks,
    QuestDBTickStore,
    book_frame,
    send_marks,
    serialise_frame,
    trades_frame,
)

__all__ = [
    "DRIVER_ERRORS",
    "READ_CONNECTIONS",
    "SESSION_LOG_COLUMNS",
    "SHOW_PARAMETERS_ATTEMPTS",
    "TICK_FLOOR_MARGIN_US",
    "CommitMarks",
    "Fence",
    "LogLookups",
    "ParquetExport",
    "QuestDBAddress",
    "QuestDBSessionStore",
    "QuestDBStore",
    "QuestDBTickStore",
    "adopt_idle_timeout",
    "book_frame",
    "in_list",
    "log_params",
    "send_marks",
    "serialise_frame",
    "sql_inline",
    "sql_literal",
    "trades_frame",
    "values_statements",
]
