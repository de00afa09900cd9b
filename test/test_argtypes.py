"""Bad sizes and counts on the command line are usage errors (exit 2) that say what was expected."""

from __future__ import annotations

import pytest

from zoedepth_ros.cli import main

BAD_VALUES = [
    (["synth", "out", "--size", "96x"], "expected HxW such as 480x640, not '96x'"),
    (["synth", "out", "--size", "0x128"], "sizes must be positive, not '0x128'"),
    (["synth", "out", "--frames", "0"], "must be at least 1, not 0"),
    (["synth", "out", "--frames", "ten"], "expected a whole number, not 'ten'"),
    (["demo", "--frames", "-3"], "must be at least 1, not -3"),
    (["benchmark", "--size", "384x512x3"], "expected HxW such as 480x640, not '384x512x3'"),
    (["replay", "bag", "--out", "o", "--rate", "nan"], "must be positive, not nan"),
    (["replay", "bag", "--out", "o", "--timeout", "soon"], "expected a number, not 'soon'"),
    (["evaluate", "bag", "--out", "o", "--worst", "-1"], "must be at least 0, not -1"),
    (["evaluate", "bag", "--out", "o", "--batch-size", "two"], "expected a whole number, not 'two'"),
]


@pytest.mark.parametrize("argv, message", BAD_VALUES, ids=[" ".join(a) for a, _ in BAD_VALUES])
def test_bad_values_are_usage_errors(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_good_values_parse():
    from zoedepth_ros.cli import build_parser

    args = build_parser(["synth"]).parse_args(["synth", "out", "--size", "96X128", "--frames", "4"])
    assert (args.size, args.frames) == ((96, 128), 4)
    args = build_parser(["replay"]).parse_args(["replay", "bag", "--out", "o", "--rate", "2.5"])
    assert args.rate == 2.5
