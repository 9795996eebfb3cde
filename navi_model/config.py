"""Configuration as dataclasses, and the named profiles.

Thresholds of every gate live here, in the profile, never in the code that measures.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from navi_model.model import EncoderConfig


@dataclass
class TrainConfig:
    batch_size: int = 64
    lr: float = 2e-3
    min_lr_ratio: float = 0.1  # cosine decay ends at lr * this
    weight_decay: float = 0.05
    warmup_steps: int = 30
    grad_clip: float = 1.0
    # steps scale with the data, never a fixed constant (M-011):
    # steps = ceil(passes_per_goal * unique goals / batch_size)
    passes_per_goal: float = 30.0
    log_every: int = 25  # read the loss back to the host every N steps, not every step
    seed: int = 1337
    # on CUDA only: fuse each block's kernels with torch.compile (half the step time on an H200; on
    # a 2-core CPU the compile costs more than it saves), and replay each step as one CUDA graph
    compile: bool = True
    cuda_graph: bool = True
    # a checkpoint at the first step boundary this many seconds after the phase's last one, so a
    # crash loses at most that much of a long phase (0: only at the phase's end)
    checkpoint_every_s: float = 600.0
    # share of training inputs that get a noisy copy beside them (case, typo, spacing, punctuation:
    # navi_model/noise.py), decided once from the seed; the models read bytes, people type noise
    noise_rate: float = 0.0
    # the planner only: composites joined from the corpus's single-step goals (navi_model/compose.py),
    # this many per plan of the corpus, seeded; each step then comes in every phrasing the policy sees
    composed_share: float = 0.0
    # rows per window that the sampler sorts by length before cutting batches (train.EpochSampler;
    # 0: none). On the CPU a step reads only the columns some row of its batch fills, so batches of
    # about one length read fewer; a captured CUDA step keeps its shapes and gains nothing
    length_buckets: int = 0
    # the policy only: the cross-entropy's target keeps this share spread over the other intents, so
    # the loss never reaches 0 and the logits stop growing once the lines are learned. Off in every
    # profile: 0.1 on tiny lifted wild intents (0.949 -> 0.969, 3 seeds) but moved which gates fail,
    # not how many (docs/benchmarks.md, 2026-12-03 fourth session)
    label_smoothing: float = 0.0


@dataclass
class GateThresholds:
    policy_bench: float = 1.0  # share of the policy bench that must be correct
    paraphrase_bench: float = 1.0  # every must-pass paraphrase
    plan_bench: float = 1.0  # every plan of the plan bench, generated greedily (M-014)
    min_coverage: float = 3.0  # samples seen by the least-seen unique goal or prompt (M-011)
    max_truncated: int = 0  # samples that do not fit their model's context (M-008)
    max_class_share: float = 0.2  # the largest share of the planner's weighted targets (M-002)
    min_memory_share: float = 0.1  # share of talker SFT samples that carry memory (M-004)
    min_gallery_similarity: float = 0.9  # mean similarity of greedy answers to their references (M-007)
    min_gallery_exact: float = 0.8  # share of greedy answers equal to their reference
    min_gallery_diversity: float = 0.9  # distinct answers / distinct references (M-007, M-039)
    max_concept_sim: float = 0.9  # mean pairwise cosine of concept vectors (M-029)
    min_prefix_use: float = 2.0  # decoder loss with shuffled prefixes / with the true ones (M-029)
    max_da_regression: float = 0.0  # drop of gallery similarity from the pre-DA model to the final one (M-039)
    min_gpu_util: float = 80.0  # mean NVML utilisation after warm-up when training on a GPU (M-015, M-035)
    max_grad_check_error: float = 1e-5  # float64 autograd vs central differences (M-001); ~1e-6 is reachable
    # benches of a corpus held out by core (navi_model/bench_gates.py): phrasings no training line holds
    unseen_intents: float = 0.95  # policy on held-out cores
    wild_intents: float = 0.95  # policy on hand-written requests in styles the generator never writes
    unseen_plans: float = 0.9  # planner on composites of held-out cores
    wild_plans: float = 0.9  # planner on hand-written composites
    max_generalisation_gap: float = 0.1  # seen minus unseen share: more is memorisation (M-007)
    # measured share of noisy training copies over the profile's noise_rate: below it, the noise the
    # profile asks for silently did not happen (every variant too long for the context, say)
    min_noise_share_ratio: float = 0.8


@dataclass
class BenchTargets:
    """What `navi-tui --no-ui bench` holds the trainers to; its exit code is their verdict."""
    min_reference_ratio: float = 1.0  # navi's trainer tokens/s over the minimal loop's, per phase
    min_gpu_util: float = 90.0  # mean NVML utilisation while the trainers step, % of the whole GPU
    min_mfu: float = 0.30  # model FLOPs per second over the GPU's dense bf16 peak, all phases together
    max_store_cost: float = 0.02  # tokens/s lost to the store writer, as a share of the trainer's
    max_console_cost: float = 0.02  # tokens/s lost to the console, as a share of the headless trainer's
    max_green_seconds: float = 300.0  # wall seconds from the start of train until every gate passes


@dataclass
class PlannerConfig:
    encoder: EncoderConfig = field(default_factory=lambda: EncoderConfig(seq_len=120))  # covers the longest goal
    step_layers: int = 1  # blocks over the encoder's states, where the planner learns where steps begin
    plan_len: int = 16  # plan tokens BOS (STEP a)* EOS: at most 7 steps, room to spare over 3
    # a head that reads how many steps the goal asks for; decoding then takes the best CTC reading
    # with exactly that many (navi_model/planner.py, "How many steps")
    count_head: bool = True

    @property
    def max_steps(self) -> int:
        return (self.plan_len - 2) // 2

    @staticmethod
    def from_dict(d: dict) -> PlannerConfig:
        if "dec_layers" in d:  # a checkpoint of the decoder planner navi had before 2026-12-03
            raise ValueError("written by the decoder planner navi replaced with the CTC planner on 2026-12-03; "
                             "train a new run")
        # a CTC planner saved before the count head (2026-12-03) decodes greedily, as it was trained to
        return PlannerConfig(**{"count_head": False, **d, "encoder": EncoderConfig(**d["encoder"])})


@dataclass
class TalkerConfig:
    encoder: EncoderConfig = field(default_factory=lambda: EncoderConfig(seq_len=128))  # prompts and memory texts
    dec_layers: int = 2
    prefix_k: int = 4  # prefix embeddings per concept vector
    memory_k: int = 2  # at most this many earlier dialogues as memory
    response_len: int = 64  # decoder positions: BOS + response bytes + EOS
    # encoders read side by side, warm from this many members of an ensembled policy
    # (Profile.policy_members); 1: one encoder, as every talker before ensembles (2026-12-03)
    encoders: int = 1

    @staticmethod
    def from_dict(d: dict) -> TalkerConfig:
        return TalkerConfig(**{**d, "encoder": EncoderConfig(**d["encoder"])})


@dataclass
class TalkerTrainConfig(TrainConfig):
    denoise_max: float = 0.2  # share of decoder input bytes replaced by PAD at the end of SFT (M-029)
    length_weighted_share: float = 0.5  # share of each batch drawn with weights growing with response length
    da_steps: int = 0  # exposure-bias correction after SFT; 0 = SFT only
    da_lr: float = 1e-5  # low: a DA phase at 1e-4 destroyed coherence once (M-039)
    da_mix: float = 0.5  # weight of the DA loss against the SFT loss during DA
    da_tolerance: float = 0.0  # allowed drop of gallery similarity after DA before rolling back
    # keep the (warm-started) encoder as it is: fine-tuned on the talker's few phrasings it lost
    # the policy's generalisation (gallery exact 0.72, misses all wrong intents)
    freeze_encoder: bool = False
    sample_every: int = 200  # concept similarity and a few greedy answers at this interval, during SFT


@dataclass
class Profile:
    name: str
    description: str
    policy: EncoderConfig
    policy_train: TrainConfig
    planner: PlannerConfig
    planner_train: TrainConfig
    talker: TalkerConfig
    talker_train: TalkerTrainConfig
    # the policy as an ensemble of this many encoders and heads, each on batches of its own
    # (model.PolicyModel, train.MemberSampler); 1: a single model, as every checkpoint before ensembles (2026-12-03)
    policy_members: int = 1
    # the planner's and the talker's encoders start from the trained policy encoder (member 0's): a
    # decoder's signal alone did not teach an encoder to tell intents apart (talker gallery
    # exact 0.26 from scratch, 0.88 warm; planner 11/21 -> 21/21 with more data and warm)
    warm_start_encoders: bool = True
    gates: GateThresholds = field(default_factory=GateThresholds)
    bench: BenchTargets = field(default_factory=BenchTargets)

    def __post_init__(self) -> None:
        if self.policy_members < 1:
            raise ValueError(f"profile {self.name!r}: policy_members must be >= 1, got {self.policy_members}")
        if self.talker.encoders > self.policy_members:
            raise ValueError(f"profile {self.name!r}: a talker of {self.talker.encoders} encoders warm-starts from "
                             f"as many policy members, and the policy has {self.policy_members}")

    def to_dict(self) -> dict:
        return asdict(self)


# every encoder reads case-folded bytes plus hashed byte n-grams (model.EncoderConfig): on the held-out
# benches they took the tiny policy from 0.56 to 0.82 on unseen cores and from 0.51 to 0.85 on wild
# requests, where width, depth, passes and noise moved nothing (benchmarks/generalisation.py). Whole
# words on top: tiny 0.888 -> 0.912 unseen, 0.917 -> 0.927 wild (mean of 3 seeds, H200, 2026-12-03)
READS = dict(fold_case=True, ngram_buckets=4093, word_buckets=4093)
# a noisy copy (case, typo, spacing, punctuation: navi_model/noise.py) beside this share of training rows
NOISE = 0.3


def _tiny() -> Profile:
    enc = dict(d_model=96, n_layers=2, n_heads=4, **READS)
    return Profile(
        name="tiny",
        description="passes its gates on a 2-core CPU in minutes",
        policy=EncoderConfig(seq_len=80, **enc),
        # few passes: a policy has learned its training lines after about 10 (loss ~0.001), and every
        # pass after only memorises them (20 -> 10 passes: held-out-core plans 0.850 -> 0.875, wild
        # 0.827 -> 0.926; 3 seeds, H200, benchmarks/generalisation.py --variant passesN). Three members
        # of 4 passes each cost 12 passes' steps and read unseen / wild intents 0.964 / 0.968, where
        # one policy of 10 read 0.948 / 0.950 (3 seeds, 2-core CPU, devgen; docs/benchmarks.md,
        # 2026-12-03 fifth session)
        # batches of about one length (windows of 16 batches): a CPU step reads 35 columns, not 58
        policy_train=TrainConfig(batch_size=64, lr=3e-3, passes_per_goal=4.0, noise_rate=NOISE, length_buckets=1024),
        policy_members=3,
        # one block over the encoder's states: without it the CTC planner read more held-out plans
        # too short (0.35 against 0.46 unseen, 3 seeds, benchmarks/ctc_prototype.py)
        planner=PlannerConfig(encoder=EncoderConfig(seq_len=120, **enc), step_layers=1, plan_len=16),
        # composites from single goals (composed_share 1.0) lift the CTC planner's held-out plans (unseen
        # 0.46 -> 0.55, wild 0.65 -> 0.73, 3 seeds) for twice its steps: 484 more at about 215 ms on the
        # 2-core CPU, 1.7 minutes that would put the 205-259 s runs over their 5. At the same steps
        # (3 passes) they moved nothing (0.44 / 0.67)
        # no length buckets for the planner: batches of one length kept it on the CTC blank plateau
        # (seed 1, 2-core CPU: windows of 1024 rows never left it in 633 steps, of 256 left it at step
        # 600, none at 250)
        # 5 passes, not 6: the ensembled policy costs the 2-core CPU about 20 s more, and the planner's
        # steps are the tiny brain's costliest (about 30 s a pass). The whole brain's seen / held-out /
        # wild plans at 6, 5 and 4 passes: 0.983 / 0.921 / 0.926, 0.983 / 0.879 / 0.901 and 0.954 /
        # 0.871 / 0.889, 4 mostly by steps counted short (3 seeds, 2-core CPU; docs/benchmarks.md,
        # 2026-12-03 fifth session)
        planner_train=TrainConfig(batch_size=64, lr=3e-3, passes_per_goal=5.0, log_every=50, noise_rate=NOISE),
        # memory_k 1: every memory-dependent prompt of the bundled corpus needs only the last turn,
        # and each memory slot costs a full encoder pass per sample. encoders 3: the talker reads
        # every policy member's (frozen) encoder, wild gallery similarity 0.892 -> 0.927 over one
        # (3 seeds, the same policies, 2-core CPU)
        talker=TalkerConfig(encoder=EncoderConfig(seq_len=120, **enc), dec_layers=2, prefix_k=4, memory_k=1,
                            response_len=56, encoders=3),
        talker_train=TalkerTrainConfig(batch_size=32, lr=3e-3, passes_per_goal=40.0, log_every=50,
                                       da_steps=30, da_lr=1e-5, freeze_encoder=True, noise_rate=NOISE),
        # the tiny planner scores 20 or 21 of the 21 held-out plans depending on the seed and
        # the CPU's kernels, whatever its budget (seeds 1337, 1-4 at 6-12 passes per goal:
        # benchmarks/planner_margin.py, docs/benchmarks.md); 19 of 21 still fails. base keeps 21/21.
        gates=GateThresholds(plan_bench=0.95, unseen_intents=0.9, wild_intents=0.9, unseen_plans=0.85,
                             wild_plans=0.85),
    )


def _base() -> Profile:
    enc = dict(d_model=512, n_layers=6, n_heads=8, **READS)
    return Profile(
        name="base",
        description="a GPU: wider and deeper, larger batches",
        # 128 like the planner's encoder, though the longest goal is 63 bytes: the planner's encoder
        # then reuses the policy's compiled blocks. At 96 the policy stepped 4 s faster, but the
        # planner's own encoder compile cost 6 s more on a fresh machine (H200, 2026-12-01)
        policy=EncoderConfig(seq_len=128, **enc),
        # few passes, as tiny: 150 -> 50 passes read held-out-core plans 0.825 -> 0.863 and wild ones
        # 0.704 -> 0.827. Three members of 15 passes (822 member-steps, against one of 50's 912) read
        # unseen / wild intents 0.962 / 0.972 and plans 0.900 / 0.864, where one of 50 read
        # 0.939 / 0.948 and 0.871 / 0.852 (3 seeds, H200, benchmarks/generalisation.py
        # --variant members3+passes15; docs/benchmarks.md, 2026-12-03 fifth session)
        policy_train=TrainConfig(batch_size=256, lr=1e-3, passes_per_goal=15.0, warmup_steps=100, log_every=50,
                                 noise_rate=NOISE),
        policy_members=3,
        planner=PlannerConfig(encoder=EncoderConfig(seq_len=128, **enc), step_layers=1, plan_len=16),
        # composed_share 1.0 lifts the CTC planner's held-out plans 0.45 -> 0.49 and hand-written ones
        # 0.69 -> 0.77 (H200, 2 seeds) for twice its steps; off while base is over its 60 s to green
        planner_train=TrainConfig(batch_size=256, lr=1e-3, passes_per_goal=30.0, warmup_steps=100, log_every=50,
                                  noise_rate=NOISE),
        talker=TalkerConfig(encoder=EncoderConfig(seq_len=128, **enc), dec_layers=4, prefix_k=4, memory_k=2,
                            response_len=64, encoders=3),
        # compile off for the talker: with its encoder cached, an SFT step takes 5.9 ms graphed and
        # 4.0 ms compiled too, which over 622 steps repays 1 s of a 6 s compile (DA: 5.4 s for 200
        # steps). The policy and planner save 10-20 s each (benchmarks/step_variants.py, H200)
        talker_train=TalkerTrainConfig(batch_size=128, lr=1e-3, passes_per_goal=150.0, warmup_steps=100,
                                       log_every=50, da_steps=200, da_lr=1e-5, freeze_encoder=True, compile=False,
                                       noise_rate=NOISE),
        bench=BenchTargets(max_green_seconds=60.0),
    )


PROFILES: dict[str, Profile] = {"tiny": _tiny(), "base": _base()}


def get_profile(name: str) -> Profile:
    try:
        return PROFILES[name]
    except KeyError:
        raise ValueError(f"unknown profile {name!r} (known: {', '.join(PROFILES)})") from None
