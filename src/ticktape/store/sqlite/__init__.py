"""The SQLite backend (``sqlite:///path/to/file.db``): the embedded default store.

The public face is :class:`SqliteStore` and ``DRIVER_ERRORS``, the table that maps
every ``sqlite3`` error to a ticktape store error; the modules inside this package
(``_store`` the contract, ``_db`` the connection, group commit and error table,
``_schema.sql`` the migrations) are private.
"""

from ticktape.store.sqlite._db import ERRORS as DRIVER_ERRORS
from ticktape.store.sqlite._store import SqliteStore

__all__ = ["DRIVER_ERRORS", "SqliteStore"]
