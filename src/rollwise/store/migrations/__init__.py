"""Alembic migration scripts of the store (env.py, script.py.mako, versions/).

Not imported at runtime: `rollwise.store.migrate` points alembic at this directory (no alembic.ini is
needed) and runs it on the store's own connection.
"""
