"""Entry points end an input error with one line and status 1 (a traceback only on request)."""
import pytest

from utils.cli import run_cli


def missing_file():
    raise FileNotFoundError("/data/list.txt: line 4: /data/a.wav does not exist")


def test_input_error_is_one_line_and_status_1(capsys):
    with pytest.raises(SystemExit) as stop:
        run_cli(missing_file)
    assert stop.value.code == 1
    err = capsys.readouterr().err
    assert err.strip().endswith("error: /data/list.txt: line 4: /data/a.wav does not exist")
    assert "Traceback" not in err


def test_traceback_on_request(monkeypatch):
    monkeypatch.setenv("WAVLM_SSL_SV_TRACEBACK", "1")
    with pytest.raises(FileNotFoundError):
        run_cli(missing_file)


def test_programming_errors_are_not_hidden():
    def broken():
        raise KeyError("bug")
    with pytest.raises(KeyError):
        run_cli(broken)
