"""A task class must define how it is evaluated: `evaluate` or `evaluation_report` (each defaults to the
other), refused when the class is defined rather than recursing at the first evaluation."""

from __future__ import annotations

import pytest

from mmray.tasks.base import Task


def test_a_task_overriding_neither_evaluation_method_is_refused_when_defined() -> None:
    with pytest.raises(TypeError, match=r"Unevaluated must override evaluate or evaluation_report"):

        class Unevaluated(Task):
            batch_fields = ("pixels",)

            def training_step(self, model, batch, optimizer_name, context):  # type: ignore[no-untyped-def]
                raise NotImplementedError


def test_a_task_overriding_one_of_them_is_accepted() -> None:
    class Evaluated(Task):
        batch_fields = ("pixels",)

        def training_step(self, model, batch, optimizer_name, context):  # type: ignore[no-untyped-def]
            raise NotImplementedError

        def evaluate(self, model, split, context):  # type: ignore[no-untyped-def]
            return {}

    assert Evaluated.evaluate is not Task.evaluate
