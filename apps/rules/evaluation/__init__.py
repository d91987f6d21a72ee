"""Rule evaluation against the database: facts, decisions, runs.

Facts computed in SQL (:mod:`.facts`, :mod:`.sql`), live evaluation writing decision records and subject
states (:mod:`.services`), bulk runs and their progress (:mod:`.runs`), pending-subject triggers and their
debounced flush (:mod:`.triggers`), shadow mode for drafts (:mod:`.shadow`) and backtests over history
(:mod:`.backtest`). Builds on ``apps.rules.engine``; the authoring side (``apps.rules.authoring``) builds
on this.
"""
