"""Training scenarios: the batch's bound and its named source, the mode key, tp_overlap without
sequence parallelism: one line and exit 2 through the CLI, no traceback."""

import json

import pytest
from typer.testing import CliRunner

from cli import app
from reports.model.scenario import MAX_BATCH_TOKENS, load_scenario
from reports.model.step import ScenarioError

runner = CliRunner()
BASE = {"model": "llama3-70b", "cluster": "colossus-100k"}


def one_line_exit_2(scenario: dict, needle: str) -> None:
    r = runner.invoke(app, ["estimate", "--scenario", json.dumps(scenario)])
    assert r.exit_code == 2, r.output
    assert needle in r.output and "Traceback" not in r.output
    assert len(r.output.strip().splitlines()) == 1


def test_an_absurd_batch_is_refused():
    assert MAX_BATCH_TOKENS == 10**10
    with pytest.raises(ScenarioError, match=r"global_batch_tokens 1e\+20 is beyond .* 1e\+10"):
        load_scenario(dict(BASE, global_batch_tokens=10**20))
    assert load_scenario(dict(BASE, global_batch_tokens=MAX_BATCH_TOKENS)).global_batch_tokens
    one_line_exit_2(dict(BASE, global_batch_tokens=10**20), "MAX_BATCH_TOKENS")


def test_the_batch_source_names_the_preset_or_the_default():
    assert load_scenario("gpt3-4096-h100").batch_source == "preset gpt3-4096-h100"
    assert "Llama 3" in load_scenario("colossus-100k-llama3-405b").batch_source
    assert load_scenario(dict(BASE, global_batch_tokens=2**22)).batch_source == "scenario file"
    s = load_scenario(BASE)
    assert s.global_batch_tokens == 4 * 2**20 and s.batch_source.startswith("default: 4,194,304")
    r = runner.invoke(app, ["estimate", "--scenario", "gpt3-4096-h100", "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["global_batch_source"] == "preset gpt3-4096-h100"


def test_mode_train_is_a_training_scenario_and_a_typo_is_named():
    assert load_scenario(dict(BASE, mode="train")).model.name == "llama3-70b"
    with pytest.raises(ScenarioError, match=r'mode must be "serve" .* or "train" .* got '
                                            r"'serving'"):
        load_scenario(dict(BASE, mode="serving"))
    one_line_exit_2({"mode": "serving", "serving": {"model": "llama3-70b"}}, 'mode must be "serve"')


def test_tp_overlap_without_sequence_parallel_exits_2():
    one_line_exit_2(dict(BASE, training={"tp_overlap": 1, "sequence_parallel": False}),
                    "tp_overlap 1 needs sequence_parallel: true")
