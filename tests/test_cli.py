"""The command line, run as a user would: ``python -m tlcore`` in a subprocess."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

from tests.conftest import REPO_ROOT, tiny_config
from tlcore import cli, cli_output
from tlcore.store import runs

SUBCOMMANDS = [
    [],
    ["datasets"],
    ["datasets", "import"],
    ["datasets", "list"],
    ["datasets", "show"],
    ["datasets", "delete"],
    ["train"],
    ["runs"],
    ["runs", "list"],
    ["runs", "show"],
    ["runs", "cancel"],
    ["runs", "resume"],
    ["evaluate"],
    ["predict"],
    ["export"],
]


def tlcore(ws, *args, timeout=300):
    return subprocess.run(
        [sys.executable, "-m", "tlcore", "--workspace", str(ws.root), *args],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.mark.parametrize("words", SUBCOMMANDS, ids=lambda w: " ".join(w) or "top")
def test_every_command_has_help(words, capsys):
    with pytest.raises(SystemExit) as info:
        cli.main([*words, "--help"])
    assert info.value.code == 0
    assert "usage:" in capsys.readouterr().out


def test_invalid_value_exits_non_zero_naming_field_and_value(ws, capsys):
    code = cli.main(
        ["--workspace", str(ws.root), "train", "--set", "dataset=x", "--set", "learning_rate=-3"]
    )
    assert code == 2
    assert "learning_rate=-3" in capsys.readouterr().err


def test_unknown_dataset_is_refused_before_a_run_is_made(ws, capsys):
    code = cli.main(["--workspace", str(ws.root), "train", "--dataset", "ghost"])
    assert code == 2
    assert "ghost" in capsys.readouterr().err
    assert runs.list_runs(ws) == []


def test_config_file_with_overrides(ws, tmp_path, capsys):
    path = tmp_path / "run.json"
    path.write_text(json.dumps({"dataset": "x", "epochs": "many"}))
    assert cli.main(["--workspace", str(ws.root), "train", "--config", str(path)]) == 2
    assert "epochs" in capsys.readouterr().err
    path.write_text("{broken")
    assert cli.main(["--workspace", str(ws.root), "train", "--config", str(path)]) == 2
    assert "not valid JSON" in capsys.readouterr().err


def test_runs_list_show_and_unknown_run(ws, capsys):
    record = runs.create_run(ws, tiny_config("tiny", name="listed"))
    assert cli.main(["--workspace", str(ws.root), "runs", "list", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert rows[0]["id"] == record.id and rows[0]["state"] == "queued"
    assert cli.main(["--workspace", str(ws.root), "runs", "show", record.id]) == 0
    assert json.loads(capsys.readouterr().out)["config"]["name"] == "listed"
    assert cli.main(["--workspace", str(ws.root), "runs", "show", "nope"]) == 2
    assert "No run with id 'nope'" in capsys.readouterr().err


def test_rebuild_index(ws, capsys):
    runs.create_run(ws, tiny_config("tiny"))
    ws.index_path.unlink()
    assert cli.main(["--workspace", str(ws.root), "runs", "rebuild-index"]) == 0
    assert json.loads(capsys.readouterr().out)["runs"] == 1


@pytest.mark.slow
def test_train_in_the_foreground_prints_progress_and_one_json_line(ws, tiny_dataset):
    result = tlcore(
        ws,
        "train",
        "--dataset",
        tiny_dataset,
        "--set",
        "backbone=SmallCNN",
        "--set",
        "weights=none",
        "--set",
        "image_size=32",
        "--set",
        "epochs=2",
        "--set",
        "batch_size=8",
        "--set",
        "strategy=full_fine_tune",
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 1
    final = json.loads(lines[0])
    assert final["status"] == "finished"
    assert final["metrics"]["epochs_completed"] == 2
    assert "epoch 2/2" in result.stderr  # the progress bar
    run_dir = ws.run_dir(final["run_id"])
    assert (run_dir / "model.keras").exists() and (run_dir / "history.json").exists()


def test_datasets_import_list_show_and_delete(ws, tmp_path, capsys):
    from tests.conftest import write_class_folders

    folder = write_class_folders(tmp_path / "pets", {"cats": 6, "dogs": 6})
    base = ["--workspace", str(ws.root), "datasets"]
    assert cli.main([*base, "import", "--folder", str(folder), "--name", "pets"]) == 0
    imported = json.loads(capsys.readouterr().out)
    assert imported["classes"] == ["cats", "dogs"] and imported["images"] == 12
    assert cli.main([*base, "import", "--folder", str(folder), "--name", "pets"]) == 0
    assert json.loads(capsys.readouterr().out)["already_existed"] is True
    assert cli.main([*base, "list", "--json"]) == 0
    assert [row["name"] for row in json.loads(capsys.readouterr().out)] == ["pets"]
    assert cli.main([*base, "show", "pets"]) == 0
    assert json.loads(capsys.readouterr().out)["manifest"]["num_images"] == 12
    assert cli.main([*base, "delete", "pets"]) == 2  # needs --yes
    assert "--yes" in capsys.readouterr().err
    assert cli.main([*base, "delete", "pets", "--yes"]) == 0
    assert cli.main([*base, "show", "pets"]) == 2


def test_importing_a_single_class_is_refused_with_the_reason(ws, tmp_path, capsys):
    from tests.conftest import write_class_folders

    folder = write_class_folders(tmp_path / "one", {"cats": 6})
    code = cli.main(["--workspace", str(ws.root), "datasets", "import", "--folder", str(folder)])
    assert code == 2
    assert "cats" in capsys.readouterr().err


def test_import_progress_off_a_terminal_is_a_few_lines_ending_at_100(ws, tmp_path, capsys):
    from tests.conftest import write_class_folders

    folder = write_class_folders(tmp_path / "pets", {"cats": 40, "dogs": 40})
    started = time.monotonic()
    code = cli.main(["--workspace", str(ws.root), "datasets", "import", "--folder", str(folder)])
    assert code == 0
    elapsed = time.monotonic() - started
    err = capsys.readouterr().err
    assert "\r" not in err  # a log gets lines, not carriage-return redraws
    bars = [line for line in err.splitlines() if line.startswith("Importing")]
    assert 1 <= len(bars) <= 2 + elapsed / 5  # the first, one per 5 s at most, the last
    assert bars[-1].startswith("Importing 100%|")
    assert sum("100%" in line for line in bars) == 1


def test_progress_bar_finishes_once_and_an_unfinished_one_vanishes(capsys):
    import gc

    report = cli_output.stderr_progress("Exporting")
    report(0.0, "Loading")
    report(1.0, "Done")
    report(1.0, "Done again")  # already finished: ignored
    lines = capsys.readouterr().err.splitlines()
    assert lines[-1].startswith("Exporting 100%|") and lines[-1].endswith("Done")
    assert sum("100%" in line for line in lines) == 1

    report = cli_output.stderr_progress("Exporting")
    report(0.0, "Loading")
    report(0.4, "Exporting keras")
    print("error: the export failed", file=sys.stderr)  # what cmd_export prints
    del report
    gc.collect()
    assert capsys.readouterr().err.splitlines()[-1] == "error: the export failed"


@pytest.mark.slow
def test_kill_and_resume_from_the_cli(ws, tiny_dataset):
    import os
    import signal
    import time

    started = tlcore(
        ws,
        "train",
        "--dataset",
        tiny_dataset,
        "--detach",
        "--set",
        "backbone=SmallCNN",
        "--set",
        "weights=none",
        "--set",
        "image_size=32",
        "--set",
        "epochs=6",
        "--set",
        "batch_size=8",
        "--set",
        "head_search=false",  # epochs of SGD, to kill one between epochs
    )
    run_id = json.loads(started.stdout)["run_id"]
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        epochs = [e for e in runs.read_progress(ws.run_dir(run_id)) if e["event"] == "epoch_end"]
        if len(epochs) >= 2:
            break
        time.sleep(0.2)
    os.kill(runs.read_run(ws, run_id).status.pid, signal.SIGKILL)
    time.sleep(0.5)

    listed = json.loads(tlcore(ws, "runs", "list", "--json").stdout)
    assert listed[0]["state"] == "interrupted"
    resumed = tlcore(ws, "runs", "resume", run_id, "--quiet")
    assert resumed.returncode == 0, resumed.stderr
    final = json.loads(resumed.stdout.strip().splitlines()[-1])
    assert final["status"] == "finished" and final["metrics"]["epochs_completed"] == 6


# -- train --from: a run's settings again -------------------------------------------------
def test_train_from_a_run_queues_its_settings_again(ws, tiny_dataset, monkeypatch, capsys):
    from tlcore.store import jobs

    monkeypatch.setattr(jobs, "schedule", lambda ws: [])  # queued, no worker
    original = runs.create_run(ws, tiny_config(tiny_dataset, name="colours", seed=9, epochs=4))
    argv = ["--workspace", str(ws.root), "train", "--from", original.id, "--detach"]
    assert cli.main([*argv, "--set", "epochs=3", "--set", "dense_units=8"]) == 0
    started = json.loads(capsys.readouterr().out)
    assert started["status"] == "queued" and started["run_id"] != original.id
    config = runs.read_run(ws, started["run_id"]).config
    assert config.name == "colours (again)" and config.seed == 9 and config.backbone == "SmallCNN"
    assert (config.epochs, config.dense_units) == (3, (8,))
    assert config.extra["trained_again_from"] == original.id


def test_train_from_refuses_what_it_cannot_do_with_exit_code_2(ws, tiny_dataset, capsys):
    original = runs.create_run(ws, tiny_config(tiny_dataset, name="colours"))
    base = ["--workspace", str(ws.root), "train"]
    with pytest.raises(SystemExit) as info:  # two sources of settings: a usage error
        cli.main([*base, "--from", original.id, "--config", "run.json"])
    assert info.value.code == 2
    assert "not allowed with argument" in capsys.readouterr().err
    for extra, said in (
        (["--from", "20260101-000000-00000aa"], "No run with id '20260101-000000-00000aa'"),
        (["--from", original.id, "--dataset", "ghost"], "No dataset named 'ghost'"),
        (["--from", original.id, "--set", "epochs=many"], "epochs='many'"),
        (["--from", original.id, "--set", "epochs"], "key=value"),
        (["--from", original.id, "--preset", "seeds"], "--preset would replace them"),
    ):
        assert cli.main([*base, *extra]) == 2, extra
        assert said in capsys.readouterr().err, extra
    (original.dir / runs.CONFIG_FILE).write_text("{broken", encoding="utf-8")
    assert cli.main([*base, "--from", original.id]) == 2
    assert f"Run {original.id}'s settings cannot be read" in capsys.readouterr().err
    assert [r.id for r in runs.list_runs(ws)] == [original.id]  # nothing was queued


def test_runs_show_gives_both_learning_rates_of_a_two_phase_schedule(ws, capsys):
    config = tiny_config("tiny", strategy="two_phase", epochs=3, fine_tune_epochs=2)
    record = runs.create_run(ws, config.replace(learning_rate=1e-3, fine_tune_learning_rate=1e-5))
    assert cli.main(["--workspace", str(ws.root), "runs", "show", record.id]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["schedule"] == "3 + 2 epochs · batch 8 · lr 0.001, then 1e-05"


@pytest.mark.slow
def test_train_from_trains_a_real_run_in_the_foreground(ws, tiny_dataset):
    original = runs.create_run(ws, tiny_config(tiny_dataset, name="colours", epochs=3))
    runs.set_state(ws, original.id, runs.RUNNING)  # ended: the queue does not take it
    runs.set_state(ws, original.id, runs.CANCELLED)
    result = tlcore(ws, "train", "--from", original.id, "--set", "epochs=1", "--quiet")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 1
    final = json.loads(lines[0])
    assert final["status"] == "finished" and final["metrics"]["epochs_completed"] == 1
    record = runs.read_run(ws, final["run_id"])
    assert record.config.name == "colours (again)" and record.config.epochs == 1
    assert (record.dir / runs.MODEL_FILE).exists()
    again = runs.read_run(ws, original.id)  # the original is untouched
    assert again.state == runs.CANCELLED and again.config == original.config
