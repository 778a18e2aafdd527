"""The command line keeps the exit codes and messages its docs promise (issue 14, item 9)."""
import pytest

from recipes import cli


@pytest.mark.parametrize("argv, code, message", [
    (["train", "vision", "--set", "arch=resnett"], cli.EXIT_USAGE, "unknown arch 'resnett'"),
    (["train", "vision", "--arch", "vgg"], cli.EXIT_USAGE, "unknown arch 'vgg'"),
    (["train", "vision", "--bs", "0"], cli.EXIT_USAGE, "--bs: must be at least 1, got 0"),
    (["train", "vision", "--epochs", "-1"], cli.EXIT_USAGE, "--epochs: must be at least 1, got -1"),
    (["train", "vision", "--epoch", "3"], cli.EXIT_USAGE, "unrecognized arguments: --epoch 3"),
    (["lr-find", "vision", "--conf", "x.json"], cli.EXIT_USAGE, "unrecognized arguments: --conf"),
    (["generate", "run", "--temp", "0.5"], cli.EXIT_USAGE, "unrecognized arguments: --temp"),
])
def test_bad_usage_exits_2(argv, code, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    try:
        result = cli.main(argv)
    except SystemExit as exit:      # argparse's own usage errors
        result = exit.code
    assert result == code
    assert message in capsys.readouterr().err


def test_an_empty_data_folder_exits_3(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "empty").mkdir()
    assert cli.main(["train", "vision", "--data", str(tmp_path / "empty")]) == cli.EXIT_NOT_FOUND
    assert "no class folders in" in capsys.readouterr().err
    (tmp_path / "classes" / "cat").mkdir(parents=True)
    assert cli.main(["train", "vision", "--data", str(tmp_path / "classes")]) == cli.EXIT_NOT_FOUND
    assert "holds no image files" in capsys.readouterr().err


def test_a_config_file_of_another_format_names_the_formats_read(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    conf = tmp_path / "conf.yaml"
    conf.write_text("epochs: 3\n")
    assert cli.main(["train", "vision", "--config", str(conf)]) == cli.EXIT_USAGE
    err = capsys.readouterr().err
    assert "easyfit reads .json and .toml config files, not .yaml" in err and "Expecting value" not in err


def test_ctrl_c_shows_the_real_resume_command(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    from recipes import run

    def interrupted(recipe, config, out_dir, **kwargs):  # after the first checkpoint
        (out_dir / "models").mkdir(parents=True)
        (out_dir / "models" / f"{run.RESUMABLE}.safetensors").write_bytes(b"")
        raise KeyboardInterrupt

    monkeypatch.setattr(run, "train", interrupted)
    out = tmp_path / "my run"
    assert cli.main(["train", "vision", "--out", str(out)]) == cli.EXIT_FAILURE
    err = capsys.readouterr().err
    assert f"resume with: easyfit train vision --resume '{out}'" in err
    assert "OUT_DIR" not in err and "RECIPE" not in err


@pytest.mark.parametrize("out_option", [True, False])
def test_ctrl_c_before_the_first_checkpoint_offers_no_resume_command_that_would_fail(
        tmp_path, capsys, monkeypatch, out_option):
    """A user trial: an early Ctrl-C printed '--resume RUN', which then exited 3 (no checkpoint,
    or, without --out, no run folder at all)."""
    monkeypatch.chdir(tmp_path)
    from recipes import run

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(run, "train", interrupted)
    argv = ["train", "vision"] + (["--out", str(tmp_path / "early")] if out_option else [])
    assert cli.main(argv) == cli.EXIT_FAILURE
    err = capsys.readouterr().err
    assert "resume with" not in err and "nothing to resume" in err


@pytest.mark.parametrize("argv", [["train", "vision", "--epoch", "3"], ["train", "vision", "--bs", "0"],
                                  ["no-such-verb"]])
def test_usage_errors_are_one_line(argv, capsys):
    """The docs promise one-line errors; argparse printed its usage block first (a user trial)."""
    with pytest.raises(SystemExit) as stop:
        cli.main(argv)
    assert stop.value.code == cli.EXIT_USAGE
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "error:" in err and "--help" in err
