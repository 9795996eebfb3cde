"""CPU time per training step of the tiny policy and planner, for comparing two checkouts.

    PYTHONPATH=/path/to/checkout T=1 TAG=new python benchmarks/cpu_step_cost.py both 30

Process CPU time, not wall time, so that two checkouts compared on a busy machine are compared
on the work they do; one torch thread (T=1) keeps other processes' load out of the figure as far
as it can. Import paths come from PYTHONPATH, so an old checkout is measured with its own code.
"""
import sys, time, os, torch
torch.set_num_threads(int(os.environ.get("T", "1")))
from navi_model.assets import corpus_dir
from navi_model.corpus.load import load_corpus
from navi_model.config import get_profile
from navi_model.brain import build_brain_data
from navi_model.planner import PlannerModel, train_planner
from navi_model.train import train_policy
from navi_model.model import PolicyModel
which, steps = sys.argv[1], int(sys.argv[2])
p = get_profile("tiny"); corpus = load_corpus(corpus_dir()); data = build_brain_data(corpus, p)
cpu = torch.device("cpu"); torch.manual_seed(0)
t = {}
def emit(e): pass
if which in ("planner", "both"):
    m = PlannerModel(p.planner, data.vocab.size)
    c0 = time.process_time(); w0 = time.perf_counter()
    train_planner(m, data.plan, p.planner_train, steps=steps, device=cpu, emit=emit, vocab=data.vocab)
    t["planner"] = (time.process_time() - c0, time.perf_counter() - w0)
if which in ("policy", "both"):
    m = PolicyModel(p.policy, len(corpus.intents))
    c0 = time.process_time(); w0 = time.perf_counter()
    train_policy(m, data.policy, p.policy_train, steps=steps, device=cpu, emit=emit)
    t["policy"] = (time.process_time() - c0, time.perf_counter() - w0)
print(os.environ.get("TAG"), {k: (round(a / steps * 1000, 1), round(b / steps * 1000, 1)) for k, (a, b) in t.items()}, "ms/step cpu, wall")
