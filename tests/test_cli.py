"""The headless command line: exit codes, the store it leaves, bad input, eval, runs.

    python -m pytest tests/test_cli.py -q

Short runs (--steps 1 to 3, most on the small corpus of conftest.py) fail their gates on purpose:
they exercise the whole path, from corpus to stored verdict, in seconds. The full green run on the
bundled corpus is the last step of .ci/run.
"""

import contextlib
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from navi_model.assets import corpus_dir
from navi_tui.cli import main
from store import Store

REPO = Path(__file__).resolve().parents[1]


def navi(*args):
    return main([*map(str, args)])


@pytest.fixture
def trained_home(trained_home_template, tmp_path):
    """A store holding one short run: a copy of the session's (conftest.py: `train --steps 3` on the small
    corpus; it fails its gates, which is what we want here). Each test has its own: some add runs, and
    the workers run tests in any order."""
    home = tmp_path / "trained" / "home"
    shutil.copytree(trained_home_template, home)
    return home


def corpus_lines(home, name: str) -> int:
    """How many lines a file of the corpus run 1 of home trained on holds: the items it was judged on."""
    with Store(home) as store:
        data = Path(json.loads(store.get_run(1)["config_json"])["data"])
    return len((data / name).read_text().splitlines())


def test_an_unconfigured_discord_mirror_says_so_once(trained_home_template):
    out = (trained_home_template.parent / "train-stdout.txt").read_text()
    assert out.count("discord: off (set NAVI_DISCORD_WEBHOOK") == 1


def test_short_run_is_recorded_whole(trained_home):
    with Store(trained_home) as store:
        (run,) = store.list_runs()
        assert (run["status"], run["verdict"], run["profile"]) == ("completed", "fail", "tiny")
        config = json.loads(run["config_json"])
        assert config["steps"] == {"policy": 3, "planner": 3, "talker": 3} and config["steps_from"] == "--steps"
        assert config["profile"]["gates"]["policy_bench"] == 1.0
        losses = [(m["phase"], m["step"]) for m in store.metrics(run["id"], "loss")]
        # log_every is 25 or 50: only the last step of each phase is read back
        # DA's steps continue the talker's count: its last window is step 3 + 3 (--steps bounds DA too)
        assert losses == [("policy", 3), ("planner", 3), ("sft", 3), ("da", 6)]
        ckpts = store.checkpoints(run["id"])
        rolled_back = any(e["kind"] == "rollback" for e in store.events(run["id"]))
        assert [(c["model"], c["phase"]) for c in ckpts] == [
            ("policy", "policy"), ("planner", "planner"), ("talker", "sft"), ("talker", "da"),
            *([("talker", "rollback")] if rolled_back else [])]
        if rolled_back:  # the rollback row points at the SFT file: the latest talker checkpoint is what is in use
            assert (ckpts[4]["path"], ckpts[4]["sha256"]) == (ckpts[2]["path"], ckpts[2]["sha256"])
        for ckpt in ckpts:
            path = store.checkpoint_path(ckpt)
            assert hashlib.sha256(path.read_bytes()).hexdigest() == ckpt["sha256"]
        gates = {e["gate"]: e for e in store.evals(run["id"])}
        assert set(gates) == {
            "truncation_policy", "truncation_planner", "truncation_talker", "grad_check", "grad_flow", "padding", "vocab",
            "noise_share", "coverage_policy", "policy_bench",
            "paraphrase_bench", "coverage_planner", "class_share", "plan_bench", "coverage_talker", "memory_prefix",
            "gallery_quality", "gallery_exact", "gallery_diversity", "concept_sim", "prefix_use", "da_regression",
            "gpu_util", "constant_metric"}
        assert gates["gpu_util"]["passed"] == 1 and gates["gpu_util"]["value"] is None  # a CPU run: n/a
        assert gates["truncation_talker"]["passed"] == 1 and gates["class_share"]["passed"] == 1
        # 3 steps of 64 cannot show every goal 3 times
        assert gates["coverage_policy"]["passed"] == 0 and corpus_lines(trained_home, "goals.jsonl") > 64
        # every bench item and every gallery prompt of the run's corpus is judged and kept
        items = json.loads(gates["policy_bench"]["detail_json"])["items"]
        assert len(items) == corpus_lines(trained_home, "bench_policy.jsonl")
        assert {"goal", "expected", "predicted", "correct"} <= set(items[0])
        plan_items = json.loads(gates["plan_bench"]["detail_json"])["items"]
        assert len(plan_items) == corpus_lines(trained_home, "bench_plan.jsonl") and plan_items[0]["expected"][0] == "STEP"
        gallery = store.gallery(run["id"])
        assert len(gallery) == corpus_lines(trained_home, "gallery.jsonl")
        assert {"prompt", "output", "reference", "score", "exact"} <= set(gallery[0])


def test_eval_json_prints_one_document(trained_home, capsys):
    capsys.readouterr()
    assert navi("--home", trained_home, "--no-ui", "eval", "--json") == 1
    doc = json.loads(capsys.readouterr().out)
    assert doc["run_id"] == 1 and doc["ok"] is False
    assert [g["name"] for g in doc["gates"]] == [
        "policy_bench", "paraphrase_bench", "plan_bench", "gallery_quality", "gallery_exact", "gallery_diversity",
        "concept_sim", "prefix_use"]
    assert set(doc["gates"][0]) == {"name", "value", "threshold", "passed", "summary"}
    assert set(doc["items"]) == {"policy_bench", "paraphrase_bench", "plan_bench", "gallery"}
    assert len(doc["items"]["gallery"]) == corpus_lines(trained_home, "gallery.jsonl")


def test_eval_prints_every_bench_item(trained_home, capsys):
    capsys.readouterr()
    navi("--home", trained_home, "--no-ui", "eval")
    out = capsys.readouterr().out
    for label in ("policy_bench:", "paraphrase_bench:", "plan_bench:", "gallery:"):
        assert f"\n{label}\n" in out
    assert out.count("\n  ok  ") + out.count("\n  MISS ") == sum(
        corpus_lines(trained_home, f) for f in ("bench_policy.jsonl", "bench_paraphrase.jsonl", "bench_plan.jsonl",
                                                "gallery.jsonl"))


@pytest.mark.parametrize("kind,file,gate", [("plan", "bench_plan.jsonl", "plan_bench[mine.jsonl]"),
                                            ("gallery", "gallery.jsonl", "gallery_quality[mine.jsonl]")])
def test_eval_takes_a_bench_of_each_model(trained_home, tmp_path, capsys, kind, file, gate):
    bench = tmp_path / "mine.jsonl"
    bench.write_text("".join((corpus_dir() / file).read_text().splitlines(keepends=True)[:3]))
    capsys.readouterr()
    navi("--home", trained_home, "--no-ui", "eval", "--bench", bench, "--json")
    doc = json.loads(capsys.readouterr().out)
    assert gate in [g["name"] for g in doc["gates"]]


def test_eval_takes_a_user_bench(trained_home, tmp_path, capsys):
    bench = tmp_path / "mine.jsonl"
    bench.write_text('{"kind": "paraphrase", "goal": "check the build", "intent": "check"}\n')
    capsys.readouterr()
    code = navi("--home", trained_home, "--no-ui", "eval", "--bench", bench, "--json")
    doc = json.loads(capsys.readouterr().out)
    assert [g["name"] for g in doc["gates"]] == ["paraphrase_bench[mine.jsonl]"]
    assert code == (0 if doc["gates"][0]["passed"] else 1)
    with Store(trained_home) as store:
        assert any(e["gate"] == "paraphrase_bench[mine.jsonl]" for e in store.evals(1))


@pytest.mark.parametrize("content,message", [
    ('{"kind": "policy", "goal": "hi", "intent": "teleport"}\n', "bad.jsonl:1: field 'intent': unknown intent 'teleport'"),
    ('{"kind": "policy", "goal": "hi"\n', "bad.jsonl:1: not valid JSON"),
    ('{"kind": "plan", "goal": "build it", "plan": ["deploy"]}\n', "bad.jsonl:1: field 'plan[0]': unknown intent 'deploy'"),
])
def test_eval_bad_bench_exits_2(trained_home, tmp_path, capsys, content, message):
    bench = tmp_path / "bad.jsonl"
    bench.write_text(content)
    assert navi("--home", trained_home, "--no-ui", "eval", "--bench", bench) == 2
    assert message in capsys.readouterr().err


def test_eval_refuses_a_corrupt_checkpoint(trained_home, tmp_path, capsys):
    home = tmp_path / "copy"
    shutil.copytree(trained_home, home)
    with Store(home) as store:
        path = store.checkpoint_path(store.checkpoints(1)[0])
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    assert navi("--home", home, "--no-ui", "eval") == 2
    assert "checksum mismatch" in capsys.readouterr().err


@pytest.mark.parametrize("args,message", [
    (["eval", "--run", "99"], "no run 99"),
    (["eval", "--checkpoint", "99"], "no checkpoint 99"),
])
def test_eval_unknown_ids_exit_2(trained_home, capsys, args, message):
    assert navi("--home", trained_home, "--no-ui", *args) == 2
    assert message in capsys.readouterr().err


def test_runs_json(trained_home, capsys):
    capsys.readouterr()
    assert navi("--home", trained_home, "--no-ui", "runs", "--json") == 0
    doc = json.loads(capsys.readouterr().out)
    assert [(r["id"], r["status"], r["verdict"]) for r in doc["runs"]] == [(1, "completed", "fail")]


def test_runs_on_an_empty_home(tmp_path, capsys):
    assert navi("--home", tmp_path / "none", "--no-ui", "runs") == 0
    assert "no runs yet" in capsys.readouterr().out
    assert not (tmp_path / "none").exists()  # reading never creates a store


def test_broken_corpus_line_exits_2_and_leaves_the_store_unchanged(trained_home, tmp_path, capsys):
    data = tmp_path / "corpus"
    shutil.copytree(corpus_dir(), data)
    lines = (data / "goals.jsonl").read_text().splitlines()
    lines[41] = '{"goal": "build it", "intent": 7}'
    (data / "goals.jsonl").write_text("\n".join(lines) + "\n")

    before = {p.name: p.read_bytes() for p in trained_home.iterdir() if p.is_file()}
    assert navi("--home", trained_home, "--no-ui", "train", "--data", data) == 2
    err = capsys.readouterr().err
    assert f"{data / 'goals.jsonl'}:42: field 'intent': expected str, got int 7" in err
    assert "Traceback" not in err
    after = {p.name: p.read_bytes() for p in trained_home.iterdir() if p.is_file()}
    assert after == before

    fresh = tmp_path / "fresh_home"
    assert navi("--home", fresh, "--no-ui", "train", "--data", data) == 2
    assert not fresh.exists()


def test_an_unfinished_run_of_a_dead_process_is_marked_crashed(tmp_path, small_corpus_dir):
    home = tmp_path / "home"
    # a process that starts a run and dies without finishing it
    code = ("import os, sys; from store import Store; s = Store(sys.argv[1]); "
            "s.create_run(profile='tiny', command='train', config={}); os._exit(9)")
    subprocess.run([sys.executable, "-c", code, str(home)], cwd=REPO, check=False,
                   env={**os.environ, "PYTHONPATH": str(REPO)})
    with Store(home) as store:
        assert store.get_run(1)["status"] == "running"
    assert navi("--home", home, "--no-ui", "train", "--steps", 1, "--data", small_corpus_dir) == 1
    with Store(home) as store:
        assert store.get_run(1)["status"] == "crashed"
        assert store.get_run(2)["status"] == "completed"


def test_preflight_truncation_fails_before_training(tmp_path, capsys):
    data = tmp_path / "corpus"
    shutil.copytree(corpus_dir(), data)
    with open(data / "goals.jsonl", "a") as f:
        f.write(json.dumps({"goal": "please " * 14 + "build the whole project", "intent": "build"}) + "\n")
    home = tmp_path / "home"
    assert navi("--home", home, "--no-ui", "train", "--data", data) == 1
    out = capsys.readouterr().out
    assert "truncation_policy" in out and "FAIL" in out and "1 too long" in out
    with Store(home) as store:
        run = store.get_run(1)
        assert (run["verdict"], run["message"]) == ("fail", "preflight gate failed; not trained")
        assert store.checkpoints(1) == [] and store.metrics(1, "loss") == []


def test_console_refuses_bad_data_before_any_screen_opens(tmp_path, capsys):
    data = tmp_path / "data"
    shutil.copytree(corpus_dir(), data)
    (data / "goals.jsonl").write_text("{not json\n")
    assert navi("--home", tmp_path / "home", "train", "--data", data) == 2
    err = capsys.readouterr().err
    assert "goals.jsonl:1: not valid JSON" in err
    assert not (tmp_path / "home").exists()


def test_open_is_the_consoles_command(tmp_path, capsys):
    assert navi("--home", tmp_path, "--no-ui", "open") == 2
    assert "drop --no-ui" in capsys.readouterr().err


@pytest.mark.parametrize("args", [["--no-ui", "fly"], ["--no-ui", "--profile", "huge", "train"],
                                  ["--no-ui", "train", "--steps", "many"]])
def test_bad_usage_exits_2(args):
    with pytest.raises(SystemExit) as e:
        main(args)
    assert e.value.code == 2


def test_steps_must_be_positive(tmp_path, capsys):
    assert navi("--home", tmp_path, "--no-ui", "train", "--steps", 0) == 2
    assert "--steps must be at least 1" in capsys.readouterr().err


def test_eval_without_a_store_exits_2(tmp_path, capsys):
    assert navi("--home", tmp_path / "nothing", "--no-ui", "eval") == 2
    assert "no run store at" in capsys.readouterr().err


def test_an_unusable_home_exits_2(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    assert navi("--home", blocker / "home", "--no-ui", "train", "--steps", 1) == 2
    assert "cannot open the run store" in capsys.readouterr().err


def test_a_relative_home_finds_its_checkpoints(tmp_path, monkeypatch, capsys, small_corpus_dir):
    # the default home is ./navi_runs: checkpoint paths must not depend on the working folder
    monkeypatch.chdir(tmp_path)
    assert navi("--home", "navi_runs", "--no-ui", "train", "--steps", 1, "--data", small_corpus_dir) == 1
    with Store(tmp_path / "navi_runs") as store:
        ckpt = store.checkpoints(1)[0]
        assert ckpt["path"] == "checkpoints/run_0001/policy_000001.pt"
    monkeypatch.chdir(tmp_path / "navi_runs")  # a different working folder, the same store
    capsys.readouterr()
    assert navi("--home", ".", "--no-ui", "eval", "--json") == 1
    assert json.loads(capsys.readouterr().out)["checkpoint_ids"]["policy"] == 1


def test_a_bench_for_a_model_the_checkpoint_is_not_exits_2(trained_home, capsys):
    # checkpoint 1 is the policy: it cannot answer a plan bench
    plan = corpus_dir() / "bench_plan.jsonl"
    assert navi("--home", trained_home, "--no-ui", "eval", "--checkpoint", 1, "--bench", plan) == 2
    assert "a plan bench needs the planner, which checkpoint 1 does not have" in capsys.readouterr().err


def test_cpu_training_is_refused_while_a_gpu_is_visible(tmp_path, capsys, monkeypatch, small_corpus_dir):
    # M-035. no GPU can be seen from this machine, so the probe answers as a GPU host's would
    import navi_tui.system_monitor

    monkeypatch.setattr(navi_tui.system_monitor, "gpu_name", lambda: "NVIDIA H100 80GB HBM3")
    assert navi("--home", tmp_path / "home", "--no-ui", "train", "--steps", 1, "--data", small_corpus_dir) == 2
    err = capsys.readouterr().err
    assert "a GPU is visible (NVIDIA H100 80GB HBM3)" in err and "pass --device cpu" in err
    assert not (tmp_path / "home").exists()
    # asked for explicitly, the CPU run goes ahead
    assert navi("--home", tmp_path / "home", "--device", "cpu", "--no-ui", "train", "--steps", 1,
                "--data", small_corpus_dir) == 1


def test_two_failed_runs_in_a_row_point_at_the_diagnostic(trained_home_template, tmp_path, capsys, small_corpus_dir):
    # run 1 is the session's failed run: one failed run alone gave no advice
    home = tmp_path / "home"
    shutil.copytree(trained_home_template, home)
    assert "next:" not in (trained_home_template.parent / "train-stdout.txt").read_text()
    assert navi("--home", home, "--no-ui", "train", "--steps", 1, "--data", small_corpus_dir) == 1
    out = capsys.readouterr().out
    assert "next: runs 1 and 2 both failed: before another training run, trace the data flow: " \
           "navi-tui --no-ui diagnose --run 2" in out


def test_constant_metric_catches_the_same_number_in_two_differing_runs(trained_home_template, tmp_path, capsys):
    # run 1 is the session's: train --steps 3 on the small corpus
    home = tmp_path / "home"
    shutil.copytree(trained_home_template, home)
    with Store(home) as store:
        config = json.loads(store.get_run(1)["config_json"])
    # plant the fault: an earlier run, with another config, that ended on this run's concept_sim
    with Store(home) as store:
        current = {m["name"]: m["value"] for m in store.metrics(1) if m["phase"] == "eval"}
        # not the same float, the same to the gate's 4 decimals: 2e-5 away, on the side that stays in the bin
        sim = current["concept_sim"]
        near = sim + 2e-5 if round(sim + 2e-5, 4) == round(sim, 4) else sim - 2e-5
        planted = store.create_run(profile="tiny", command="train", config={"steps": 999})
        store.insert_metrics([{"run_id": planted, "step": 1, "phase": "eval", "name": "concept_sim",
                               "value": near}])
        store.finish_run(planted, status="completed", verdict="fail")
    capsys.readouterr()
    # the same command as run 1's: the same numbers, which is no fault between runs of one config
    assert navi("--home", home, "--no-ui", "train", "--steps", config["steps"]["policy"], "--data", config["data"]) == 1
    with Store(home) as store:
        gate = next(e for e in store.evals(3) if e["gate"] == "constant_metric")
    assert gate["passed"] == 0
    assert f"concept_sim = {round(current['concept_sim'], 4)} here and in run {planted}" in json.loads(gate["detail_json"])["summary"]


def test_diagnose_traces_the_run_talker(trained_home, capsys):
    capsys.readouterr()
    code = navi("--home", trained_home, "--no-ui", "diagnose")
    out = capsys.readouterr().out
    assert out.startswith("run 1, talker checkpoint")
    for stage in ("embedding", "encoder layer 0", "pooled", "concept", "prefix", "decoder layer 0", "logits"):
        assert f" {stage} " in out
    assert code == (1 if "diversity is lost at stage" in out else 0)


def test_a_talker_that_maps_every_prompt_alike_fails_concept_sim_and_diagnose_finds_the_stage(
        trained_home, tmp_path, capsys):
    # plant the fault in a stored run: every byte embedded alike, so every prompt is one vector
    from store import load_checkpoint, save_checkpoint

    home = tmp_path / "copy"
    shutil.copytree(trained_home, home)
    with Store(home) as store:
        ckpt = store.latest_checkpoint(1, "talker")
        payload = load_checkpoint(store.checkpoint_path(ckpt), ckpt["sha256"])
        # in every encoder the talker reads (one per policy member): bytes and their n-grams alike
        for key in [k for k in payload["model"] if k.startswith(("encoder.", "more_encoders."))]:
            if key.endswith(("embed.weight", "ngram.weight")):
                emb = payload["model"][key]
                payload["model"][key] = emb[65].expand_as(emb).clone()
            elif key.endswith("word.weight"):  # and no word read at all
                payload["model"][key].zero_()
        path, sha = save_checkpoint(home, 1, "talker_planted", payload)
        planted = store.add_checkpoint(1, step=10**6, phase="planted", model="talker", path=path, sha256=sha)
    capsys.readouterr()
    assert navi("--home", home, "--no-ui", "diagnose", "--run", 1) == 1
    out = capsys.readouterr().out
    assert f"talker checkpoint {planted}" in out
    assert "diversity is lost at stage 'embedding'" in out
    assert navi("--home", home, "--no-ui", "eval", "--checkpoint", planted, "--json") == 1
    gates = {g["name"]: g for g in json.loads(capsys.readouterr().out)["gates"]}
    assert not gates["concept_sim"]["passed"] and gates["concept_sim"]["value"] > 0.99


def test_resume_continues_a_run_as_a_new_run(trained_home, capsys):
    assert navi("--home", trained_home, "--no-ui", "train", "--resume", 1) == 1  # 3 steps still fail gates
    out = capsys.readouterr().out
    assert "continues run 1 checkpoint" in out
    with Store(trained_home) as store:
        new = store.list_runs()[0]
        config = json.loads(new["config_json"])
        assert new["resumed_from"] == 1 and config["resumed_from"]["run"] == 1
        assert config["steps"] == {"policy": 3, "planner": 3, "talker": 3}  # the source's --steps
        assert {c["model"]: c["step"] for c in store.checkpoints(new["id"]) if c["phase"] != "rollback"}["policy"] == 3
        assert any(e["kind"] == "resume" for e in store.events(1))


def test_rollback_without_a_passing_checkpoint_asks_for_one(trained_home, capsys):
    assert navi("--home", trained_home, "--no-ui", "rollback", "--run", 1) == 2
    assert "no checkpoint whose every gate passed" in capsys.readouterr().err


@pytest.mark.parametrize("args, message", [
    (["train", "--resume", 99], "no run 99"),
    (["rollback", "--run", 1, "--to", 9999], "checkpoint 9999 is not a checkpoint of run 1"),
])
def test_resume_and_rollback_refuse_unknown_ids(trained_home, capsys, args, message):
    assert navi("--home", trained_home, "--no-ui", *args) == 2
    assert message in capsys.readouterr().err


def test_rollback_to_a_picked_checkpoint(trained_home, capsys):
    with Store(trained_home) as store:
        planner = store.latest_checkpoint(1, "planner")
    assert navi("--home", trained_home, "--no-ui", "rollback", "--run", 1, "--to", planner["id"]) == 1
    assert f"rolled back to run 1 checkpoint {planner['id']}" in capsys.readouterr().out
    with Store(trained_home) as store:
        new = store.list_runs()[0]
        assert json.loads(new["config_json"])["resumed_from"]["rollback"] is True
        assert any(e["kind"] == "rollback" and e["level"] == "warn" for e in store.events(new["id"]))


def test_the_console_refuses_an_unusable_home(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert navi("--home", blocker / "home", "open") == 2
    assert "cannot open the run store" in capsys.readouterr().err
