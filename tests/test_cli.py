"""Entry points end a reported error with one line and status 1; a bug keeps its traceback."""
import pytest

from utils.cli import error_status, run_cli
from utils.errors import InputError, TrainingDiverged


def bad_list():
    raise InputError("/data/list.txt:4: /data/a.wav does not exist")


def test_input_error_is_one_line_and_status_1(capsys):
    with pytest.raises(SystemExit) as stop:
        run_cli(bad_list)
    assert stop.value.code == 1
    err = capsys.readouterr().err
    assert err.strip().endswith("error: /data/list.txt:4: /data/a.wav does not exist")
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("error", [TrainingDiverged("loss is NaN"), FileNotFoundError(2, "No such file", "x.txt")])
def test_divergence_and_os_errors_are_reported_too(error, capsys):
    def fail():
        raise error
    assert error_status(fail, prog="tool sub") == 1
    assert capsys.readouterr().err.startswith("tool sub: error: ")


def test_traceback_on_request(monkeypatch):
    monkeypatch.setenv("WAVLM_SSL_SV_TRACEBACK", "1")
    with pytest.raises(InputError):
        run_cli(bad_list)


@pytest.mark.parametrize("bug", [KeyError("bug"), ValueError("a bug's ValueError is not an input error")])
def test_programming_errors_are_not_hidden(bug):
    def broken():
        raise bug
    with pytest.raises(type(bug)):
        run_cli(broken)
