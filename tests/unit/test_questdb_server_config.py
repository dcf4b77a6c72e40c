"""The managed QuestDB server's command line and ``server.conf``, as generated (no server)."""

from __future__ import annotations

from pathlib import Path

from ticktape import questdb_server as qs


def test_jvm_options_end_with_the_extra_ones() -> None:
    config = qs.QuestDBServerConfig(
        root=Path("/srv/q"), heap="1g", extra_jvm_options=("-Xms1g", "-XX:+UseSerialGC")
    )
    opts = config.jvm_options()
    assert opts[0] == "-Xmx1g"
    assert "-XX:ErrorFile=/srv/q/hs_err_pid%p.log" in opts
    assert "--enable-native-access=io.questdb" in opts
    assert opts[-2:] == ["-Xms1g", "-XX:+UseSerialGC"]  # last: a later flag wins
    assert qs.QuestDBServerConfig(root=Path("/srv/q"), heap="1g").jvm_options() == opts[:-2]


def test_unused_pools_are_not_started() -> None:
    props = qs.QuestDBServerConfig(root=Path("/srv/q")).server_properties()
    assert props["cairo.mat.view.enabled"] == "false"
    assert props["mat.view.refresh.worker.count"] == "0"
    assert props["view.compiler.worker.count"] == "0"
