"""The intent catalog of navi's terminal assistant: what each intent is, how people phrase it,
which phrasings must always route to it, and what the assistant answers.

This is the source the bundled corpus is generated from (navi_model/corpus/generate.py).
Meta intents (train, eval) are labels only: nothing in navi ever executes them, and they are
never plan steps (failure log M-017).
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class IntentSpec:
    name: str
    description: str  # what the assistant does, as it would say "You asked me to <description>."
    cores: tuple[str, ...]  # core phrasings; the generator wraps them in prefixes and suffixes
    must_pass: tuple[str, ...]  # paraphrases that must route here; each is one of the cores
    response: str  # the canonical answer, used for dialogues and the gallery
    again: str  # the answer to "do that again" after this intent
    meta: bool = False
    chat: bool = False  # greetings and help: not an action, never a plan step
    tags: tuple[str, ...] = field(default_factory=tuple)


INTENTS: tuple[IntentSpec, ...] = (
    IntentSpec(
        "build", "build the project",
        ("build the project", "compile the code", "run the build", "make a release build",
         "build everything", "compile the project", "do a build", "kick off a build",
         "build it", "start a build"),
        ("compile the code",),
        "Starting the build.", "Starting the build again.",
    ),
    IntentSpec(
        "test", "run the tests",
        ("run the tests", "run the test suite", "execute the tests", "test the code",
         "run all tests", "run the unit tests", "kick off the tests", "make sure the tests pass",
         "test everything", "start the tests"),
        ("run the test suite",),
        "Running the test suite.", "Running the tests again.",
    ),
    IntentSpec(
        "check", "check the code for errors",
        ("check the build", "check the code", "type check the project", "run the checker",
         "check for compile errors", "check that it compiles", "run a quick check",
         "check the project", "verify the code compiles", "check the types"),
        ("check the build", "check that it compiles"),
        "Checking the code for errors.", "Checking the code again.",
    ),
    IntentSpec(
        "lint", "lint the code",
        ("lint the code", "run the linter", "run clippy", "lint the project", "run the lints",
         "look for lint warnings", "lint everything", "run ruff", "lint the source",
         "find style problems"),
        ("run the linter",),
        "Running the linter.", "Running the linter again.",
    ),
    IntentSpec(
        "format", "format the code",
        ("format the code", "run the formatter", "reformat the project", "fix the formatting",
         "run cargo fmt", "format everything", "tidy up the formatting", "apply the code style",
         "format the source", "reformat the files"),
        ("fix the formatting",),
        "Formatting the code.", "Formatting the code again.",
    ),
    IntentSpec(
        "docs_lint", "lint the docs",
        ("lint the docs", "check the docs", "run the docs lint", "lint the documentation",
         "validate the markdown", "check the documentation links", "run the doc checks",
         "proofread the docs", "lint the readme", "check the docs for errors"),
        ("check the docs",),
        "Linting the docs.", "Linting the docs again.",
    ),
    IntentSpec(
        "git_status", "show the git status",
        ("show git status", "git status", "what is the git status", "show the working tree status",
         "which files are modified", "any uncommitted changes", "show the repo status",
         "check git status", "is the tree clean", "what is staged"),
        ("any uncommitted changes", "check git status"),
        "Here is the git status.", "Here is the git status again.",
    ),
    IntentSpec(
        "git_diff", "show the diff",
        ("show the diff", "git diff", "show me what changed", "what changed in the code",
         "show the changes", "diff the working tree", "show unstaged changes", "show the patch",
         "compare with the last commit", "what lines did i change"),
        ("show me what changed",),
        "Showing the diff.", "Showing the diff again.",
    ),
    IntentSpec(
        "git_log", "show the git log",
        ("show the git log", "git log", "show recent commits", "list the last commits",
         "show the commit history", "who committed last", "what were the last commits",
         "show the history", "print the log", "show the last ten commits"),
        ("show recent commits",),
        "Here is the recent git log.", "Here is the git log again.",
    ),
    IntentSpec(
        "git_commit", "commit the changes",
        ("commit the changes", "git commit", "make a commit", "commit everything",
         "commit my work", "save a commit", "create a commit", "commit the staged files",
         "record the changes in git", "commit with a message"),
        ("commit my work",),
        "Committing the changes.", "Committing again.",
    ),
    IntentSpec(
        "file_read", "open the file",
        ("open the readme", "read the config file", "show me main.py", "cat the makefile",
         "open the file", "read the changelog", "display the license", "print the settings file",
         "open cargo.toml", "show the contents of setup.py"),
        ("open the readme",),
        "Opening the file.", "Opening the file again.",
    ),
    IntentSpec(
        "file_search", "search the files",
        ("search the files", "find the todo comments", "grep for errors",
         "search the code for main", "find where the config is loaded", "look for the function",
         "find files named test", "search the repo", "grep the source", "locate the parser"),
        ("grep for errors",),
        "Searching the files.", "Searching the files again.",
    ),
    IntentSpec(
        "memory_add", "remember that",
        ("remember that the build is flaky", "remember this", "note that the server is down",
         "save this to memory", "keep in mind that the tests are slow", "remember my name is lain",
         "make a note of this", "store this in memory", "remember the deploy is on friday",
         "note that the api key rotated"),
        ("remember that the build is flaky",),
        "Noted, I will remember that.", "Noted again.",
    ),
    IntentSpec(
        "memory_search", "search my memory",
        ("what did i tell you", "search your memory", "what do you remember", "recall my notes",
         "what did i say about the server", "look up my notes", "do you remember my name",
         "find it in memory", "what notes do you have", "recall what i said"),
        ("what did i tell you",),
        "Searching my memory.", "Searching my memory again.",
    ),
    IntentSpec(
        "gpu_status", "check the GPU",
        ("show gpu status", "check the gpu", "how busy is the gpu", "gpu usage",
         "what is the gpu doing", "show gpu memory", "run nvidia smi", "is the gpu free",
         "show the gpu temperature", "how hot is the gpu"),
        ("how busy is the gpu",),
        "Checking the GPU.", "Checking the GPU again.",
    ),
    IntentSpec(
        "disk_usage", "check disk usage",
        ("show disk usage", "how much disk is left", "check disk space", "how full is the disk",
         "disk usage", "show free space", "what is using the disk", "is the disk full",
         "run df", "show the biggest folders"),
        ("how much disk is left",),
        "Checking disk usage.", "Checking disk usage again.",
    ),
    IntentSpec(
        "clean", "clean the build outputs",
        ("clean the build", "clean the project", "remove build artifacts", "clean up the target dir",
         "delete the build outputs", "run make clean", "wipe the cache", "clean everything",
         "remove the temp files", "clear the build folder"),
        ("clean the build",),
        "Cleaning the build outputs.", "Cleaning again.",
    ),
    IntentSpec(
        "install", "install the dependencies",
        ("install the dependencies", "install deps", "set up the environment",
         "install the packages", "fetch the dependencies", "update the dependencies",
         "run pip install", "get the requirements", "install what we need", "sync the packages"),
        ("install the dependencies",),
        "Installing the dependencies.", "Installing the dependencies again.",
    ),
    IntentSpec(
        "greet", "say hello",
        ("hello", "hi", "hey navi", "good morning", "hi there", "hello navi", "good evening",
         "hey", "good afternoon", "greetings"),
        ("hi there",),
        "Hello, sir. What can I do for you?", "Hello again, sir.",
        chat=True,
    ),
    IntentSpec(
        "help", "explain what I can do",
        ("help", "what can you do", "show the help", "list your commands", "how do i use you",
         "what are your skills", "i need help", "show me the commands", "what do you support",
         "how does this work"),
        ("what can you do",),
        "I can build, test, check, lint and more. Just ask.", "Here is the help again.",
        chat=True,
    ),
    IntentSpec(
        "train", "start training",
        ("train the brain", "start training", "train the model", "run a training session",
         "retrain the policy", "begin training", "train a new run", "fine tune the model",
         "launch training", "train it again"),
        ("train the brain",),
        "Training is started from the console, not by me.", "Training is still started from the console.",
        meta=True,
    ),
    IntentSpec(
        "eval", "evaluate the model",
        ("evaluate the model", "run the eval", "run the benchmarks", "score the model",
         "evaluate the brain", "run the evaluation", "benchmark the policy", "eval the checkpoint",
         "measure the model", "grade the brain"),
        ("evaluate the model",),
        "Evaluation is started from the console, not by me.", "Evaluation is still started from the console.",
        meta=True,
    ),
)

# wrappers around a core phrasing; a bench line is a combination never used in training
COMMAND_PREFIXES = ("", "please ", "can you ", "could you ", "navi, ", "go ahead and ",
                    "i want you to ", "now ", "quickly ", "hey navi, ")
COMMAND_SUFFIXES = ("", " please", " now", " for me", " right away", " thanks", " when you can")
QUESTION_PREFIXES = ("", "navi, ", "hey navi, ", "quick question: ", "tell me ", "so ")
QUESTION_SUFFIXES = ("", "?", " please", " right now", " navi")
CHAT_PREFIXES = ("", "well ", "oh ", "yo, ", "navi, ")
CHAT_SUFFIXES = ("", "!", " again", " friend", " navi")

QUESTION_WORDS = ("what ", "how ", "is ", "any ", "who ", "which ", "do you ")

# follow-ups whose answer depends on the earlier dialogue: they make memory matter
AGAIN_PROMPTS = ("do that again", "again please", "repeat that", "one more time")
RECALL_PROMPTS = ("what did i just ask", "what was my last request", "remind me what i asked")

# composite goals join cores with these; the plan is the cores' intents in sentence order
PAIR_JOINS = ("{a} and then {b}", "{a}, then {b}", "first {a}, then {b}", "{a} and after that {b}")
TRIPLE_JOINS = ("{a}, {b} and then {c}", "first {a}, then {b}, then {c}")


def wrappers_for(spec: IntentSpec, core: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    if spec.chat:
        return CHAT_PREFIXES, CHAT_SUFFIXES
    if core.startswith(QUESTION_WORDS):
        return QUESTION_PREFIXES, QUESTION_SUFFIXES
    return COMMAND_PREFIXES, COMMAND_SUFFIXES


def action_intents() -> tuple[IntentSpec, ...]:
    """Intents that can be plan steps: not meta (M-017), not chat."""
    return tuple(s for s in INTENTS if not s.meta and not s.chat)
