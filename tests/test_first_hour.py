"What a new user sees on the console: validation metrics in the status lines, a summary after fit, a finished run."
import json
from conftest import run_cli

def test_fit_prints_validation_and_a_summary_then_a_rerun_says_complete(tmp_path, toy_args):
    r = run_cli(toy_args(epochs=2, steps=5))
    assert r.returncode == 0, r.stderr
    run = tmp_path/'run'
    vals = [json.loads(l) for l in (run/'metrics.jsonl').read_text().splitlines() if json.loads(l)['kind'] == 'val']
    assert [v['step'] for v in vals] == [5, 10]
    last, low = vals[-1]['val/loss'], min(v['val/loss'] for v in vals)
    err = r.stderr
    assert f"epoch 1 step 5: validation val/loss {vals[0]['val/loss']:.4g}" in err
    assert f"| last validation: val/loss {vals[0]['val/loss']:.4g}" in err       # the status line at step 10
    assert 'td_train: finished epoch 2 of 2, step 10: 10 steps in' in err
    assert f"final validation (step 10): val/loss {last:.4g}" in err and f"best validation: val/loss {low:.4g}" in err
    assert f"checkpoints: {run/'latest_checkpoint'}" in err and f"metrics:     {run/'metrics.jsonl'}" in err
    before = (run/'metrics.jsonl').read_text()
    r = run_cli(toy_args(epochs=2, steps=5))
    assert r.returncode == 0, r.stderr
    assert f"the run in '{run}' is complete (epoch 2 of 2, step 10); nothing to train" in r.stderr
    assert 'finished epoch' not in r.stderr and (run/'metrics.jsonl').read_text() == before
