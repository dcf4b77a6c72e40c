"""The runtime: what keeps this instance's sessions alive and honest.

The :class:`~ticktape.runtime.supervisor.Supervisor` launches each session it owns
as a task and writes its start and end; the
:class:`~ticktape.runtime.leases.LeaseKeeper` renews the leases it holds (heartbeat)
and fences runners that lose theirs; the :class:`~ticktape.runtime.reconciler.Reconciler`
reaps or claims sessions whose owner's lease expired;
:class:`~ticktape.runtime.handle.RunHandle` is what the runtime holds per running session.
Store-first state changes it shares with the service live in
:mod:`ticktape.store.transitions`; transient store errors are retried by the store
handle itself (:mod:`ticktape.store.retrying`).

The runtime decides *when* a session runs and who owns it; *what* a session does
while it runs is a runner's job (:mod:`ticktape.runners`).
"""
