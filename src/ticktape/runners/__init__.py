"""Runners: what each session kind does while it runs.

A runner is given a session and its :class:`~ticktape.runtime.handle.RunHandle` by the
supervisor (:mod:`ticktape.runtime`) and does the work of its kind — today
:class:`~ticktape.runners.collect.CollectRunner`: feed → bounded buffer → fenced tick
writes — until it is stopped, finishes, is handed over or loses its lease; then it
returns a :class:`~ticktape.runners.collect.RunResult` and the runtime records the end.
A new session kind gets a runner module here; ownership, leases and the store-first
transitions stay in the runtime.
"""
