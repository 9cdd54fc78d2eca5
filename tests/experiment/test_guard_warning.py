"""The report flags a learning gate passed by answers that stopped being real answers."""

from __future__ import annotations

import pytest

from pvar.experiment.document import GUARD_DROP, _guard_warning
from pvar.experiment.report_data import Test as Gate  # "Test*" names would be collected by pytest
from pvar.experiment.report_data import Verdict


def verdict(guard: dict[str, float], passed: bool = True, holds: bool = False) -> Verdict:
    gate = Gate(a="random", b="base", estimate=0.17, ci_low=0.04, ci_high=0.29, passed=passed,
                boot_low=0.06, boot_high=0.27)
    alt = Gate(a="random", b="base", estimate=0.056 if not holds else 0.1, ci_low=-0.034 if not holds else 0.01,
               ci_high=0.145, passed=holds, boot_low=-0.02, boot_high=0.13)
    return Verdict(gate=gate, gate_guarded=alt, guard=guard)


RUNS = ["random-s0", "random-s1", "random-s2"]


def test_a_guard_drop_is_flagged_with_the_guarded_gate() -> None:
    v = verdict({"base": 0.84, "top-pvar": 0.52, "random-s0": 0.53, "random-s1": 0.69, "random-s2": 0.78})
    text = _guard_warning(v, RUNS)
    assert text is not None
    assert "fell from 84% (base) to 67%" in text  # (53 + 69 + 78) / 3, the gate arm's runs only
    assert "**fails**" in text and "+0.0560 [-0.0340, +0.1450]" in text
    assert "still passes" in _guard_warning(verdict(v.guard, holds=True), RUNS)


@pytest.mark.parametrize(("guard", "passed"), [
    ({"base": 0.84, **dict.fromkeys(RUNS, 0.841 - GUARD_DROP)}, True),  # a drop just under the threshold
    ({"base": 0.84, "random-s0": 0.5, "random-s1": 0.5, "random-s2": 0.5}, False),  # a failed gate says enough
    ({"base": 0.84, "top-pvar": 0.1, "random-s0": 0.8, "random-s1": 0.8, "random-s2": 0.8}, True),  # other arm
])
def test_no_flag_without_a_passed_gate_and_a_drop_of_its_arm(guard: dict[str, float], passed: bool) -> None:
    assert _guard_warning(verdict(guard, passed=passed), RUNS) is None


def test_no_flag_without_the_guarded_gate() -> None:
    v = Verdict(gate=verdict({}).gate, guard={"base": 0.9, "random-s0": 0.1})
    assert _guard_warning(v, ["random-s0"]) is None
