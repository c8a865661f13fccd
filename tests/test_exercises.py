"""Every exercise of the course: the reference answer passes its check, a wrong answer fails, `...` stays open."""
import pytest

from lorakit_nb.exercises import exercise, get, registry

ALL = sorted(k for nb in ("01", "02", "03", "04", "05") for k in registry(nb))


def test_every_notebook_has_exercises_registered():
    assert ALL, "no exercises registered"


@pytest.mark.parametrize("exercise_id", ALL)
def test_reference_passes_and_wrong_fails(exercise_id, capsys):
    ex = get(exercise_id)
    inputs, wrong = ex.example()
    right = ex.solve(**inputs)
    assert exercise(exercise_id, right, **inputs) is right
    assert "✓" in capsys.readouterr().out
    with pytest.raises(AssertionError):
        exercise(exercise_id, wrong, **inputs)


@pytest.mark.parametrize("exercise_id", ALL)
def test_open_exercise_uses_the_reference_and_says_so(exercise_id, capsys):
    ex = get(exercise_id)
    inputs, _ = ex.example()
    value = exercise(exercise_id, ..., **inputs)
    assert "still open" in capsys.readouterr().out
    ex.check(value, **inputs)


def test_unknown_exercise_names_the_module():
    with pytest.raises(KeyError, match="nb02.py"):
        get("02.99")


def test_a_function_exercise_with_a_body_of_dots_is_still_open(capsys):
    """01.2 asks for a function: `def my_merge(...): ...` (it returns None) counts as unanswered."""
    def my_merge(W0, A, B, alpha, r):
        ...

    inputs, _ = get("01.2").example()
    reference = exercise("01.2", my_merge, **inputs)
    assert reference is not my_merge and "still open" in capsys.readouterr().out


def test_prediction_reveals_nothing_until_a_guess_is_written(capsys):
    from lorakit_nb.exercises import predict

    assert predict(..., 0.3333) is None
    assert "0.3333" not in capsys.readouterr().out  # the answer stays hidden
    assert predict(0.3, 0.3333, lambda g, m: abs(g - m) < 0.05) is True and "0.3333" in capsys.readouterr().out
    assert predict("about half", "well under half") is False and "wrong" in capsys.readouterr().out
