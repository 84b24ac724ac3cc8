"""The rule that picks the database node the cluster writes to (appliance.ha.dbnodes), case by case."""

from __future__ import annotations

from appliance.ha.dbnodes import Followed, HostState, Verdict, choose_writer

SYS = "7301"


def rw(port: int, timeline: int | None, system_id: str | None = SYS) -> HostState:
    return HostState("10.0.0.1", port, True, True, timeline, system_id)


def ro(port: int, timeline: int | None = None) -> HostState:
    return HostState("10.0.0.1", port, True, False, timeline, SYS)


def down(port: int) -> HostState:
    return HostState("10.0.0.1", port, False, error="connection refused")


def follows(port: int, timeline: int | None) -> Followed:
    return Followed("10.0.0.1", port, timeline, SYS)


def test_steady_state_keeps_the_followed_node() -> None:
    choice = choose_writer([rw(5432, 1), ro(5433, 1)], follows(5432, 1), SYS)
    assert (choice.verdict, choice.writer.port, choice.alarm) == (Verdict.KEEP, 5432, None)  # type: ignore[union-attr]


def test_the_first_choice_takes_the_only_read_write_node() -> None:
    choice = choose_writer([ro(5432), rw(5433, 1)], None, SYS)
    assert (choice.verdict, choice.writer.port) == (Verdict.KEEP, 5433)  # type: ignore[union-attr]


def test_a_db_failover_follows_the_promoted_standby() -> None:
    choice = choose_writer([down(5432), rw(5433, 2)], follows(5432, 1), SYS)
    assert (choice.verdict, choice.writer.port) == (Verdict.FOLLOW, 5433)  # type: ignore[union-attr]


def test_an_old_primary_back_as_primary_is_never_followed_while_the_new_one_answers() -> None:
    """Defect 1: the stale node is first in the list and read-write; the agent stays on the new one."""
    choice = choose_writer([rw(5432, 1), rw(5433, 2)], follows(5433, 2), SYS)
    assert (choice.verdict, choice.writer.port) == (Verdict.KEEP, 5433)  # type: ignore[union-attr]
    assert choice.split_brain and [h.port for h in choice.stale] == [5432]
    alarm = choice.alarm or ""
    assert "5432 timeline 1" in alarm and "writing to 10.0.0.1:5433 timeline 2 only" in alarm


def test_after_a_restart_without_memory_the_node_ahead_is_chosen() -> None:
    choice = choose_writer([rw(5432, 1), rw(5433, 2)], None, SYS)
    assert choice.writer is not None and choice.writer.port == 5433 and choice.split_brain


def test_a_stale_primary_seen_alone_through_a_partition_is_refused() -> None:
    choice = choose_writer([rw(5432, 1), down(5433)], follows(5433, 2), SYS)
    assert choice.verdict is Verdict.REFUSE and choice.writer is None
    assert "behind the one this cluster followed" in (choice.alarm or "")


def test_two_read_write_nodes_nothing_tells_apart_get_no_writes() -> None:
    for followed in (None, follows(5434, 1)):
        choice = choose_writer([rw(5432, 3), rw(5433, 3)], followed, SYS)
        assert choice.verdict is Verdict.REFUSE and "writing to neither" in (choice.alarm or "")
    choice = choose_writer([rw(5432, None), rw(5433, 2)], None, SYS)  # a timeline that could not be read
    assert choice.verdict is Verdict.REFUSE


def test_the_followed_node_loses_to_one_strictly_ahead() -> None:
    """The followed node was left behind (repmgr promoted another while this agent was cut off)."""
    choice = choose_writer([rw(5432, 1), rw(5433, 2)], follows(5432, 1), SYS)
    assert (choice.verdict, choice.writer.port) == (Verdict.FOLLOW, 5433)  # type: ignore[union-attr]


def test_a_read_write_node_of_another_database_cluster_is_never_written_to() -> None:
    choice = choose_writer([rw(5432, 9, system_id="9999"), ro(5433, 1)], follows(5433, 1), SYS)
    assert choice.verdict is Verdict.REFUSE and "another database cluster" in (choice.alarm or "")
    choice = choose_writer([rw(5432, 9, system_id="9999"), rw(5433, 1)], follows(5433, 1), SYS)
    assert (choice.verdict, choice.writer.port) == (Verdict.KEEP, 5433)  # type: ignore[union-attr]


def test_nothing_answers() -> None:
    assert choose_writer([down(5432), ro(5433)], follows(5432, 1), SYS).verdict is Verdict.NONE
