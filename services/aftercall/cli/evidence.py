"""`aftercall eval` (quality) and `aftercall bench` (speed): the evidence commands, defined by aftercall.evaluation."""

from __future__ import annotations


def add_parser(commands) -> None:
    from aftercall.evaluation import bench, evaluate

    evaluate.add_arguments(commands.add_parser(
        "eval", help="quality on gold calls and public sets: JSON + HTML report, non-zero exit when a gate fails"))
    bench.add_arguments(commands.add_parser(
        "bench", help="speed, memory and concurrency of every stage: JSON + HTML report"))
    commands.choices["eval"].set_defaults(handler=evaluate.run)
    commands.choices["bench"].set_defaults(handler=bench.run)
