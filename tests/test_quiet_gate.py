"""Tests that measure time run alone on several processes (tests/quiet_gate.py)."""

import threading
from pathlib import Path

import pytest

from quiet_gate import QuietGate

RUN = {"workercount": 2, "testrunuid": "abc"}


def _gates(tmp_path):
    return (QuietGate({**RUN, "workerid": "gw0"}, root=tmp_path),
            QuietGate({**RUN, "workerid": "gw1"}, root=tmp_path))


def _enter_in_thread(gate, quiet):
    entered = threading.Event()
    t = threading.Thread(target=lambda: (gate.enter(quiet), entered.set()), daemon=True)
    t.start()
    return entered


def test_a_quiet_test_waits_for_the_test_running_on_the_other_worker(tmp_path):
    a, b = _gates(tmp_path)
    assert b.enter(False) is None                 # gw1 runs an ordinary test
    entered = _enter_in_thread(a, True)
    assert not entered.wait(0.5)                  # gw0's quiet test waits for it
    b.leave(False)
    assert entered.wait(2.0)
    a.leave(True)
    assert not a.lock.exists()


def test_no_test_starts_while_a_quiet_test_runs(tmp_path):
    a, b = _gates(tmp_path)
    assert a.enter(True) is None                  # the other worker is between tests: at once
    ordinary, quiet = _enter_in_thread(b, False), None
    assert not ordinary.wait(0.5)
    a.leave(True)
    assert ordinary.wait(2.0)
    quiet = _enter_in_thread(a, True)             # and the next quiet test waits for that one in turn
    assert not quiet.wait(0.3)
    b.leave(False)
    assert quiet.wait(2.0)


def test_two_quiet_tests_take_turns(tmp_path):
    a, b = _gates(tmp_path)
    assert a.enter(True) is None
    second = _enter_in_thread(b, True)            # waiting for the lock, it counts as between tests
    assert not second.wait(0.5)
    a.leave(True)
    assert second.wait(2.0)


def test_a_worker_busy_too_long_is_measured_beside_with_a_warning(tmp_path, monkeypatch):
    import quiet_gate

    monkeypatch.setattr(quiet_gate, "WAIT_FOR_OTHERS_S", 0.2)
    a, b = _gates(tmp_path)
    b.enter(False)
    assert a.enter(True) == "quiet test: other workers still busy after 0 s; measured beside them"


@pytest.mark.slow
def test_under_xdist_no_test_overlaps_a_quiet_one(pytester, monkeypatch):
    """Two workers, a quiet test and ordinary ones that each record when they ran: no ordinary test overlaps."""
    pytester.makepyfile(quiet_gate=(Path(__file__).parent / "quiet_gate.py").read_text())
    pytester.makeconftest('pytest_plugins = ("quiet_gate",)')
    pytester.makeini("[pytest]\nmarkers =\n    quiet: measures time\n")
    log = pytester.path / "log.txt"
    body = (f"import time, pytest\nLOG = {str(log)!r}\n"
            "def _ran(name):\n"
            "    t0 = time.time(); time.sleep(0.3)\n"
            "    with open(LOG, 'a') as f: f.write(f'{name} {t0} {time.time()}\\n')\n")
    tests = "".join(f"def test_ordinary_{i}(): _ran('o{i}')\n" for i in range(8))
    pytester.makepyfile(test_a=body + tests + "@pytest.mark.quiet\ndef test_quiet(): _ran('quiet')\n",
                        test_b=body + tests.replace("_ordinary_", "_other_").replace("'o", "'p"))
    monkeypatch.setenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", "1")   # (napari's and Qt's plug-ins: seconds a worker)
    temp = pytester.mkdir("temp")   # the run's temporary directory: its gate folder is removed at the end
    monkeypatch.setenv("TMPDIR", str(temp))
    result = pytester.runpytest_subprocess("-n", "2", "-p", "xdist.plugin", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=17)
    assert list(temp.iterdir()) == []
    ran = {name: (float(t0), float(t1)) for name, t0, t1 in (line.split() for line in log.read_text().splitlines())}
    q0, q1 = ran.pop("quiet")
    assert all(t1 <= q0 or t0 >= q1 for t0, t1 in ran.values()), (q0, q1, ran)
    # and the ordinary tests did run side by side (the two workers were used)
    spans = sorted(ran.values())
    assert any(spans[i + 1][0] < spans[i][1] for i in range(len(spans) - 1))
