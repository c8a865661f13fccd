"""Exercises: the learner's `...`, the reference answers papermill runs, and checks that can fail.

Scope: one mechanism for every ✍️ exercise of the course. A notebook's exercise cell holds `...` where the
learner writes the answer; the check cell below it calls `exercise(ID, answer, **inputs)`:

* answer still `...` (or a function whose body is `...`) → prints that the exercise is open and returns the
  reference solution, so Run-All (and papermill in CI) goes on with a correct value;
* a wrong answer → AssertionError with a hint (the check compares with what the notebook measured, it does
  not recompute the learner's expression);
* a right answer → prints ✓ and returns it.

The reference solutions and checks live in one module per notebook (`nb01` … `nb05`), each exercise with a
small synthetic `example()` so tests/test_exercises.py proves, for every exercise, that the reference passes
and a wrong answer fails. Example (notebook 02):

    best_scale = ...                                   # ✍️ your answer
    best_scale = exercise("02.2", best_scale, curve=curve)
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any, Callable


def _is_ellipsis(value) -> bool:
    return value is Ellipsis


@dataclass(frozen=True)
class Exercise:
    """One exercise: what it asks, its reference solution, its check, and a synthetic example for the tests.

    solve(**inputs) -> the reference answer; check(answer, **inputs) raises AssertionError (with a hint for
    the learner) when the answer is wrong, and may return a line to print when it is right;
    example() -> (inputs, wrong_answer): small inputs that need no model, and one plausible wrong answer.
    unanswered(answer) -> True while the learner has not written anything (default: answer is `...`).
    """

    title: str
    solve: Callable[..., Any]
    check: Callable[..., Any]
    example: Callable[[], tuple[dict, Any]]
    unanswered: Callable[[Any], bool] = _is_ellipsis


def registry(notebook: str) -> dict[str, Exercise]:
    """The exercises of one notebook ("01" … "05"), by id ("02.2")."""
    return importlib.import_module(f"{__name__}.nb{notebook}").EXERCISES


def get(exercise_id: str) -> Exercise:
    notebook = exercise_id.split(".")[0]
    try:
        return registry(notebook)[exercise_id]
    except (ModuleNotFoundError, KeyError):
        raise KeyError(f"no exercise {exercise_id!r}: known ones are listed in lorakit_nb/exercises/nb{notebook}.py") from None


def exercise(exercise_id: str, answer, **inputs):
    """Check a learner's answer (or fill in the reference while it is still `...`) and return the value to use."""
    ex = get(exercise_id)
    if ex.unanswered(answer):
        value = ex.solve(**inputs)
        ex.check(value, **inputs)  # the reference must pass its own check, or the exercise is broken
        print(f"✍️ Exercise {exercise_id} ({ex.title}) is still open: replace the `...` above with your answer. "
              "The reference answer is used below so the notebook runs on.")
        return value
    message = ex.check(answer, **inputs)
    print(f"✓ Exercise {exercise_id} ({ex.title}): right" + (f" — {message}" if message else ""))
    return answer


def predict(guess, measured, right: Callable[[Any, Any], bool] | None = None, *, show=None) -> bool | None:
    """Reveal a 🔮 prediction: compare the learner's guess with what the notebook measured.

    The learner's guess cell holds `...` until they write one. While it does, nothing is revealed: this
    prints where to write the guess and returns None (Run-All and papermill go on). With a guess, it prints
    the measured value (`show`, default `measured`) and whether the guess was right, and returns that bool.
    Either way the notebook asserts the phenomenon itself, never the learner's guess.
    `right(guess, measured)` decides (default: equality).
    Example: predict(..., 0.33) -> None ("no guess yet"); predict(0.3, 0.33, lambda g, m: abs(g - m) < 0.05) -> True
    """
    if _is_ellipsis(guess):
        print("🔮 No guess yet: write yours in the cell above (replace the `...`), run it, then run this cell "
              "again to see the measured answer.")
        return None
    ok = bool(right(guess, measured) if right else guess == measured)
    print(f"🔮 measured: {measured if show is None else show} | your guess {guess!r} was {'right' if ok else 'wrong'}")
    return ok
