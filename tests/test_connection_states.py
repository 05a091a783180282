"""The connection's state table and the sweeper's decision, with no sockets."""

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from upper.server.connection import (
    _SUCCESSORS,
    TRANSITIONS,
    Action,
    Connection,
    Interrupt,
    State,
    Timeouts,
    overdue,
)

TIMEOUTS = Timeouts(idle=300.0, linger=5.0, hibernate_after=1.0)
WAITING = (
    State.READING_PROXY_HEADER,
    State.HANDSHAKING,
    State.READING,
    State.SENDING,
    State.DRAINING,
    State.HIBERNATING,
)


def test_every_state_has_an_action_for_every_interrupt():
    assert set(TRANSITIONS) == set(State)
    for state, actions in TRANSITIONS.items():
        assert set(actions) == set(Interrupt), state


def test_force_close_ends_every_live_state_and_nothing_touches_a_closed_one():
    for state in State:
        expected = Action.IGNORE if state is State.CLOSED else Action.ABORT
        assert TRANSITIONS[state][Interrupt.FORCE_CLOSE] is expected, state
    assert set(TRANSITIONS[State.CLOSED].values()) == {Action.IGNORE}


def test_stop_never_cuts_a_reply_short():
    # Only a greenlet parked for input (or none at all) finishes at once; one that is
    # sending, starting or between waits finishes after the reply under way.
    assert TRANSITIONS[State.READING][Interrupt.STOP] is Action.FINISH
    assert TRANSITIONS[State.HIBERNATING][Interrupt.STOP] is Action.FINISH
    for state in (State.SENDING, State.STARTING, State.RUNNING):
        assert TRANSITIONS[state][Interrupt.STOP] is Action.FINISH_AFTER_REPLY, state


def test_a_lingering_connection_keeps_its_linger_during_a_shutdown():
    assert TRANSITIONS[State.DRAINING][Interrupt.STOP] is Action.IGNORE
    assert TRANSITIONS[State.DRAINING][Interrupt.LINGER_END] is Action.END_LINGER
    assert TRANSITIONS[State.DRAINING][Interrupt.IDLE_TIMEOUT] is Action.IGNORE


def test_idle_timeout_closes_politely_unless_replies_go_unread():
    assert TRANSITIONS[State.READING][Interrupt.IDLE_TIMEOUT] is Action.CLOSE_IDLE
    assert TRANSITIONS[State.HIBERNATING][Interrupt.IDLE_TIMEOUT] is Action.CLOSE_IDLE
    assert TRANSITIONS[State.SENDING][Interrupt.IDLE_TIMEOUT] is Action.DROP


def test_only_a_connection_waiting_for_input_hibernates():
    hibernating = [s for s in State if TRANSITIONS[s][Interrupt.HIBERNATE] is Action.HIBERNATE]
    assert hibernating == [State.READING]


def test_linger_end_applies_only_while_draining():
    ending = [s for s in State if TRANSITIONS[s][Interrupt.LINGER_END] is not Action.IGNORE]
    assert ending == [State.DRAINING]


@pytest.mark.parametrize("state", list(State))
def test_nothing_is_due_right_after_progress(state):
    assert overdue(state, 0.0, TIMEOUTS) is None


def test_a_quiet_reader_hibernates_then_times_out():
    assert overdue(State.READING, 0.9, TIMEOUTS) is None
    assert overdue(State.READING, 1.0, TIMEOUTS) is Interrupt.HIBERNATE
    # A connection's own wait, once it has grown (Connection._wake), replaces the base one.
    assert overdue(State.READING, 1.9, TIMEOUTS, 2.0) is None
    assert overdue(State.READING, 2.0, TIMEOUTS, 2.0) is Interrupt.HIBERNATE
    assert overdue(State.READING, 300.0, TIMEOUTS) is Interrupt.IDLE_TIMEOUT
    assert overdue(State.HIBERNATING, 299.0, TIMEOUTS) is None
    assert overdue(State.HIBERNATING, 300.0, TIMEOUTS) is Interrupt.IDLE_TIMEOUT


def test_a_stuck_sender_times_out_but_never_hibernates():
    assert overdue(State.SENDING, 299.0, TIMEOUTS) is None
    assert overdue(State.SENDING, 300.0, TIMEOUTS) is Interrupt.IDLE_TIMEOUT


def test_draining_is_bounded_by_the_linger_not_the_idle_timeout():
    assert overdue(State.DRAINING, 4.9, TIMEOUTS) is None
    assert overdue(State.DRAINING, 5.0, TIMEOUTS) is Interrupt.LINGER_END
    no_idle = Timeouts(idle=0, linger=5.0, hibernate_after=1.0)
    assert overdue(State.DRAINING, 5.0, no_idle) is Interrupt.LINGER_END


def test_idle_timeout_zero_turns_it_off():
    no_idle = Timeouts(idle=0, linger=5.0, hibernate_after=1.0)
    assert overdue(State.SENDING, 1e9, no_idle) is None
    assert overdue(State.HIBERNATING, 1e9, no_idle) is None
    assert overdue(State.READING, 1e9, no_idle) is Interrupt.HIBERNATE


_SECONDS = st.floats(min_value=0.0, max_value=1e6, allow_nan=False)


@pytest.mark.parametrize("state", list(State))
@given(
    timeouts=st.builds(
        Timeouts, idle=_SECONDS, linger=_SECONDS, hibernate_after=_SECONDS,
        proxy_header=_SECONDS, handshake=_SECONDS,
    ),
    grown_by=_SECONDS,
    fraction=st.floats(min_value=0.0, max_value=1.0, exclude_max=True),
)
def test_nothing_is_due_sooner_than_timeouts_soonest(state, timeouts, grown_by, fraction):
    # The sweeper skips a connection quiet for less than ``soonest`` without asking
    # ``overdue``: that copy of the rule must never skip one that is due.
    own_wait = timeouts.hibernate_after + grown_by  # Connection._wake only lengthens it
    just_before = math.nextafter(timeouts.soonest, 0.0)
    for quiet_for in (just_before, timeouts.soonest * fraction):
        if quiet_for < timeouts.soonest:  # the sweeper's test: a limit of 0 skips nothing
            assert overdue(state, quiet_for, timeouts, own_wait) is None, quiet_for


@pytest.mark.parametrize(
    "timeouts, due",
    [
        (TIMEOUTS, (State.READING, Interrupt.HIBERNATE)),
        (Timeouts(idle=0.5, linger=5.0, hibernate_after=1.0),
         (State.SENDING, Interrupt.IDLE_TIMEOUT)),
        (Timeouts(idle=0, linger=0.2, hibernate_after=1.0), (State.DRAINING, Interrupt.LINGER_END)),
        (Timeouts(idle=0, linger=5.0, hibernate_after=9.0, proxy_header=2.0),
         (State.READING_PROXY_HEADER, Interrupt.HEADER_TIMEOUT)),
    ],
)
def test_soonest_is_the_first_limit_some_state_reaches(timeouts, due):
    state, interrupt = due
    assert overdue(state, timeouts.soonest, timeouts) is interrupt


@pytest.mark.parametrize("state", [State.STARTING, State.RUNNING, State.CLOSED])
def test_a_greenlet_at_work_is_never_swept(state):
    assert overdue(state, 1e9, TIMEOUTS) is None


@pytest.mark.parametrize("state", WAITING)
def test_whatever_the_sweeper_asks_for_has_an_effect(state):
    # An interrupt the table ignores would be asked for again at every sweep.
    for quiet_for in (0.5, 1.0, 5.0, 300.0, 1e9):
        interrupt = overdue(state, quiet_for, TIMEOUTS)
        if interrupt is not None:
            assert TRANSITIONS[state][interrupt] is not Action.IGNORE, (state, quiet_for)


def test_the_proxy_header_is_bounded_by_its_own_timeout_from_the_accept():
    timeouts = Timeouts(idle=300.0, linger=5.0, hibernate_after=1.0, proxy_header=5.0)
    assert overdue(State.READING_PROXY_HEADER, 4.9, timeouts) is None
    assert overdue(State.READING_PROXY_HEADER, 5.0, timeouts) is Interrupt.HEADER_TIMEOUT
    # Neither the idle timeout nor hibernation applies before the session begins.
    assert overdue(State.READING_PROXY_HEADER, 1.0, timeouts) is None
    assert TRANSITIONS[State.READING_PROXY_HEADER][Interrupt.IDLE_TIMEOUT] is Action.IGNORE


def test_only_a_late_header_is_rejected_and_stop_closes_it_at_once():
    rejecting = [s for s in State if TRANSITIONS[s][Interrupt.HEADER_TIMEOUT] is not Action.IGNORE]
    assert rejecting == [State.READING_PROXY_HEADER]
    assert TRANSITIONS[State.READING_PROXY_HEADER][Interrupt.HEADER_TIMEOUT] is Action.REJECT
    assert TRANSITIONS[State.READING_PROXY_HEADER][Interrupt.STOP] is Action.FINISH


def test_a_handshake_is_bounded_by_its_own_timeout_from_the_accept():
    assert overdue(State.HANDSHAKING, 9.9, TIMEOUTS) is None
    assert overdue(State.HANDSHAKING, 10.0, TIMEOUTS) is Interrupt.HANDSHAKE_TIMEOUT
    # Neither the idle timeout nor hibernation applies before the session exists.
    short_idle = Timeouts(idle=1.0, linger=5.0, hibernate_after=0.5, handshake=10.0)
    assert overdue(State.HANDSHAKING, 5.0, short_idle) is None
    assert TRANSITIONS[State.HANDSHAKING][Interrupt.IDLE_TIMEOUT] is Action.IGNORE


def test_only_a_late_handshake_is_rejected_and_stop_or_force_close_end_it_at_once():
    rejecting = [
        s for s in State if TRANSITIONS[s][Interrupt.HANDSHAKE_TIMEOUT] is not Action.IGNORE
    ]
    assert rejecting == [State.HANDSHAKING]
    assert TRANSITIONS[State.HANDSHAKING][Interrupt.HANDSHAKE_TIMEOUT] is Action.REJECT
    # Nothing was read that needs an answer: there is no reply to wait for.
    assert TRANSITIONS[State.HANDSHAKING][Interrupt.STOP] is Action.FINISH
    assert TRANSITIONS[State.HANDSHAKING][Interrupt.FORCE_CLOSE] is Action.ABORT


def test_every_state_names_its_successors_and_closed_is_final():
    assert set(_SUCCESSORS) == set(State)
    assert _SUCCESSORS[State.CLOSED] == ()
    assert _SUCCESSORS[State.DRAINING] == (State.CLOSED,)
    for state, successors in _SUCCESSORS.items():
        assert state.successors is successors
        assert state is State.CLOSED or State.CLOSED in successors, state


@pytest.mark.parametrize(
    ("before", "after"),
    [(State.DRAINING, State.RUNNING), (State.CLOSED, State.RUNNING),
     (State.HIBERNATING, State.READING), (State.STARTING, State.SENDING)],
)
def test_enter_refuses_a_change_the_table_does_not_allow(before, after):
    connection = Connection.__new__(Connection)
    connection.state, connection._peer = before, "127.0.0.1:1"
    with pytest.raises(RuntimeError, match=f"no transition from {before.name} to {after.name}"):
        connection._enter(after)
    assert connection.state is before
    connection._enter(before)  # staying where it is is no change
    assert connection.state is before
