"""The `estimate` and `validate` verbs, on a throwaway typer app."""

import json

import pytest
from typer.testing import CliRunner

from cli import app as main_app
from reports.model.cli import _batch

runner = CliRunner()


@pytest.fixture(scope="module")
def app():
    return main_app


def test_estimate_preset_json(app):
    r = runner.invoke(app, ["estimate", "--scenario", "gpt3-4096-h100", "--json"])
    assert r.exit_code == 0, r.output
    d = json.loads(r.stdout)
    for k in ("step_time_s", "tokens_per_s", "tflops_per_gpu", "mfu", "breakdown_s",
              "memory_gib_per_gpu", "fits_in_memory", "parallel", "sources"):
        assert k in d
    assert d["gpus"] == 4096


def test_estimate_file_table(app, tmp_path):
    f = tmp_path / "s.yaml"
    f.write_text("model: llama3-70b\ncluster: {gpu: H200-SXM, gpus: 256}\nparallel: auto\n"
                 "global_batch_tokens: 4194304\n")
    r = runner.invoke(app, ["estimate", "--scenario", str(f)])
    assert r.exit_code == 0, r.output
    assert "MFU" in r.stdout and "where the step goes" in r.stdout and "(searched)" in r.stdout


@pytest.mark.parametrize("content", [
    '{"model": "gpt3-175b", "cluster": {"gpu": "H100-SXM", "gpus": 64}, '
    '"parallel": {"tp": 8, "pp": 2, "dp": 2}}',  # 32 GPUs in the config, 64 in the cluster
    '{"model": "gpt3-175b", "cluster": {"gpu": "H100-SXM", "gpus": 64}, "speed": 1}',
    '{"model": "no-such-model", "cluster": "colossus-100k"}',
])
def test_estimate_impossible_scenarios_exit_2_with_one_line(app, tmp_path, content):
    f = tmp_path / "bad.json"
    f.write_text(content)
    r = runner.invoke(app, ["estimate", "--scenario", str(f)])
    assert r.exit_code == 2
    assert r.stderr.strip().startswith("error:") and len(r.stderr.strip().splitlines()) == 1


def test_estimate_unknown_preset(app):
    r = runner.invoke(app, ["estimate", "--scenario", "colossus-9000"])
    assert r.exit_code == 2 and "unknown scenario preset" in r.stderr


def test_estimate_with_db(app, db_url, tmp_path):
    from results.store import Store

    Store(db_url).close()  # an empty table: nothing measured, fallbacks used
    r = runner.invoke(app, ["estimate", "--scenario", "gpt3-4096-h100", "--json", "--db", db_url])
    assert r.exit_code == 0, r.output
    assert "fallback" in json.loads(r.stdout)["sources"]["gemm.qkv"]
    missing = f"sqlite:///{tmp_path / 'nope' / 'x.db'}"
    r = runner.invoke(app, ["estimate", "--scenario", "gpt3-4096-h100", "--db", missing])
    assert r.exit_code == 2 and "error:" in r.stderr


def test_validate(app):
    r = runner.invoke(app, ["validate", "--json"])
    assert r.exit_code == 0, r.output
    rows = json.loads(r.stdout)
    from reports.model.validation import CALIBRATION

    calibration = {c.name for c in CALIBRATION}
    training = [x for x in rows if x["kind"] == "training"]  # serving rows: tests/test_serving.py
    assert training and all(abs(x["error_pct"]) <= 10 for x in training
                            if x["name"] in calibration)
    for x in rows:
        for k in ("published", "predicted", "error_pct", "gpu", "source"):
            assert k in x
    r = runner.invoke(app, ["validate"])
    assert r.exit_code == 0 and "Megatron 1T" in r.stdout


def test_estimate_shows_the_batch_it_runs_against_the_request(app):
    """Whole micro-batches per replica, the nearest: above or below the request, by how much."""
    r = runner.invoke(app, ["estimate", "--scenario", "colossus-100k-gpt3", "--json"])
    d = json.loads(r.stdout)
    assert d["global_batch_tokens"] > d["requested_global_batch_tokens"] == 16_777_216
    line = _batch(d)
    off = d["global_batch_tokens"] / 16_777_216 - 1
    assert line.startswith(f"{d['global_batch_tokens']:,} tokens (requested 16,777,216: "
                           f"{off:+.1%}, whole micro-batches per replica")
    below = {**d, "global_batch_tokens": 16_384_000}
    assert "requested 16,777,216: -2.3%" in _batch(below)
    r = runner.invoke(app, ["estimate", "--scenario", "colossus-100k-gpt3"],
                      env={"COLUMNS": "400"})
    assert f"requested 16,777,216: {off:+.1%}" in r.stdout
    same = {**d, "requested_global_batch_tokens": d["global_batch_tokens"]}
    assert "requested" not in _batch(same)


def test_estimate_text_shows_the_tokens_range_notes_and_time_to_train_with_goodput(app):
    """The text view carries what --json carries: the tokens/s range beside the MFU range, the
    estimate's notes (a bubble-bound step, a mixed cluster run as one job), and a time to train
    with goodput applied (the figure without it labelled as at 100% goodput)."""
    r = runner.invoke(app, ["estimate", "--scenario", "colossus-200k-llama3-405b", "--json"])
    d = json.loads(r.stdout)
    r = runner.invoke(app, ["estimate", "--scenario", "colossus-200k-llama3-405b"],
                      env={"COLUMNS": "400"})
    assert r.exit_code == 0, r.output
    text = r.stdout
    lo, hi = d["range"]["tokens_per_s"]
    assert f"{d['tokens_per_s']:,.0f} (range {lo:,.0f}-{hi:,.0f})" in text
    assert f"{d['mfu']:.1%} (range {d['range']['mfu'][0]:.1%}-" in text
    assert d["notes"] and "notes:" in text
    tail = text[text.index("notes:"):]
    for note in d["notes"]:
        assert f"- {note}" in tail
    row = next(line for line in text.splitlines() if "time to train" in line)
    assert "with goodput applied" in row and "at 100% goodput" in row


def test_estimate_text_without_notes_or_budget_prints_no_block(app):
    from reports.model.cli import _time_to_train

    r = runner.invoke(app, ["estimate", "--scenario", "gpt3-4096-h100", "--json"])
    d = json.loads(r.stdout)
    r = runner.invoke(app, ["estimate", "--scenario", "gpt3-4096-h100"])
    assert ("notes:" in r.stdout) == bool(d["notes"])
    assert _time_to_train({**d, "model": "custom"}) == []
    ((_, text),) = _time_to_train(d)
    days = 300e9 / d["tokens_per_s"] / 86400
    assert text.endswith(f"{days:.1f} d at 100% goodput") and "goodput applied" in text
