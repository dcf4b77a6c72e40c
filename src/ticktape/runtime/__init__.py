"""The runtime: what keeps this instance's sessions alive and honest.

The :class:`~ticktape.runtime.supervisor.Supervisor` launches each session it owns
as a task and writes its start and end; the
:class:`~ticktape.runtime.leases.LeaseKeeper` renews the leases it holds (heartbeat)
and fences runners that lose theirs; the :class:`~ticktape.runtime.reconciler.Reconciler`
reaps or claims sessions whose owner's lease expired; :mod:`~ticktape.runtime.transitions`
holds the store-first state changes and the retry of transient store errors they share;
:class:`~ticktape.runtime.handle.RunHandle` is what the runtime holds per running session.

The runtime decides *when* a session runs and who owns it; *what* a session does
while it runs is a runner's job (:mod:`ticktape.runners`).
"""
