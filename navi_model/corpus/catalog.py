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
    # core phrasings, each unambiguous for this intent; the generator wraps them in prefixes,
    # suffixes, fillers, case, punctuation and typos. natural: sentences and questions in any
    # register; terse: a word or two, or a shell command typed to the assistant
    natural: tuple[str, ...]
    terse: tuple[str, ...]
    must_pass: tuple[str, ...]  # paraphrases that must route here; each is a core, always trained
    response: str  # the canonical answer, used for dialogues and the gallery
    again: str  # the answer to "do that again" after this intent
    meta: bool = False
    chat: bool = False  # greetings and help: not an action, never a plan step
    tags: tuple[str, ...] = field(default_factory=tuple)

    @property
    def cores(self) -> tuple[str, ...]:
        """Every core phrasing of the intent, natural then terse."""
        return self.natural + self.terse


INTENTS: tuple[IntentSpec, ...] = (
    IntentSpec(
        "build", "build the project",
        natural=("build the project", "compile the code", "run the build", "make a release build",
                 "build everything", "compile the project", "do a build", "kick off a build", "build it",
                 "start a build", "make a debug build", "rebuild the project", "recompile everything",
                 "compile the sources", "build the binaries", "build the app", "build the whole workspace",
                 "i need a fresh build", "get a build going for me", "crank out a build",
                 "would you mind building the project", "please compile everything for me",
                 "can you put together a build", "could you build the code for me", "produce a build",
                 "build the package", "compile it", "buidl the project", "comiple the code", "bulid everything",
                 "build da thing", "whip up a build", "cut a release build", "assemble the binaries"),
        terse=("yarn build", "pnpm build", "gradle build", "mvn package", "make all", "make build",
               "cmake --build .", "ninja", "bazel build //...", "dotnet build", "python -m build", "cargo b",
               "cargo build --workspace", "make -j4", "recompile", "bld", "build asap", "compile pls"),
        must_pass=("compile the code",),
        response="Starting the build.", again="Starting the build again.",
    ),
    IntentSpec(
        "test", "run the tests",
        natural=("run the tests", "run the test suite", "execute the tests", "test the code", "run all tests",
                 "run the unit tests", "kick off the tests", "make sure the tests pass", "test everything",
                 "start the tests", "do the tests pass", "are the tests passing", "run every test",
                 "launch the tests", "run the integration tests", "run the test cases", "rerun the tests",
                 "rerun the failing tests", "test it", "run tests", "is the suite green", "are we green",
                 "give the tests a spin", "could you test the whole thing", "does everything pass",
                 "please be so kind as to run all the tests", "would you run every single test for me",
                 "check whether the tests still pass", "run the tets", "exectue the tests", "run teh test suite",
                 "see if the tests are green", "put the code through its tests"),
        terse=("python -m pytest", "pytest -v", "pytest tests/", "cargo nextest run", "yarn test", "pnpm test",
               "make test", "go test -v ./...", "tox", "mvn test", "gradle test", "npm run test", "dotnet test",
               "ctest", "cargo t", "jest", "bun test", "testing", "retest", "tst"),
        must_pass=("run the test suite",),
        response="Running the test suite.", again="Running the tests again.",
    ),
    IntentSpec(
        "check", "check the code for errors",
        natural=("check the build", "check the code", "type check the project", "run the checker",
                 "check for compile errors", "check that it compiles", "run a quick check", "check the project",
                 "verify the code compiles", "check the types", "run the type checker", "type check everything",
                 "does it typecheck", "does this compile", "will it compile", "make sure it compiles",
                 "see if it compiles", "any compile errors", "are there type errors", "run the type checks",
                 "statically check the code", "run a type check", "validate the types", "check without building",
                 "is the code well typed", "verify the types", "could you check that the code compiles",
                 "would you type check the sources for me", "chek the code", "tpye check everything",
                 "does the code even compile cleanly"),
        terse=("compile check", "cargo check --workspace", "mypy src", "pyright", "tsc --noemit -p .",
               "npx tsc --noemit", "cargo c", "mypy --strict", "cargo check --tests", "typechk", "type-check",
               "compile-check", "tc pls"),
        must_pass=("check the build", "check that it compiles",),
        response="Checking the code for errors.", again="Checking the code again.",
    ),
    IntentSpec(
        "lint", "lint the code",
        natural=("lint the code", "run the linter", "run clippy", "lint the project", "run the lints",
                 "look for lint warnings", "lint everything", "run ruff", "lint the source", "find style problems",
                 "run the linters", "any lint errors", "is the code lint clean", "lint my changes",
                 "run static analysis", "lint the repo", "lint all the things", "lint the python code",
                 "lint the rust code", "run the style checker", "check the style", "show me lint warnings",
                 "what does the linter say", "would you lint the whole codebase",
                 "could you run a lint pass over the code", "lint teh code", "run the lintr", "lnit everything",
                 "give the code a lint", "flag any code smells", "spot style issues"),
        terse=("cargo clippy --all", "ruff check src", "npx eslint .", "pylint", "npm run lint", "yarn lint",
               "make lint", "rubocop", "shellcheck *.sh", "cargo clippy -- -d warnings", "golint ./...",
               "stylelint", "linting", "lint pls"),
        must_pass=("run the linter",),
        response="Running the linter.", again="Running the linter again.",
    ),
    IntentSpec(
        "format", "format the code",
        natural=("format the code", "run the formatter", "reformat the project", "fix the formatting",
                 "run cargo fmt", "format everything", "tidy up the formatting", "apply the code style",
                 "format the source", "reformat the files", "prettify the code", "beautify the code",
                 "fix the indentation", "fix the whitespace", "make the code pretty", "auto format the code",
                 "format my changes", "format all the files", "reindent the code", "fix the code style",
                 "make the formatting consistent", "sort the imports", "run prettier", "run black",
                 "is the code formatted", "could you tidy the code layout for me",
                 "would you mind reformatting everything", "fromat the code", "formt everything",
                 "reformat teh files", "pretty print the source"),
        terse=("black src", "gofmt -l .", "go fmt ./...", "npx prettier --write src", "clang-format -i", "rustfmt",
               "isort .", "ruff format", "npm run format", "yarn format", "make fmt", "terraform fmt", "formatting",
               "prettify", "beautify"),
        must_pass=("fix the formatting",),
        response="Formatting the code.", again="Formatting the code again.",
    ),
    IntentSpec(
        "docs_lint", "lint the docs",
        natural=("lint the docs", "check the docs", "run the docs lint", "lint the documentation",
                 "validate the markdown", "check the documentation links", "run the doc checks",
                 "proofread the docs", "lint the readme", "check the docs for errors", "check the markdown",
                 "lint the markdown", "find broken links in the docs", "check for dead links",
                 "spell check the docs", "validate the docs", "lint the guides", "proofread the readme",
                 "any typos in the docs", "lint the changelog", "check the doc comments",
                 "lint all the markdown files", "run the docs linter", "are the docs clean",
                 "could you proofread the documentation for me", "would you lint every markdown file please",
                 "lint the dcos", "proofraed the docs", "verify the links in the readme", "scan the docs for typos",
                 "is the documentation valid"),
        terse=("markdownlint-cli2 **/*.md", "mdl docs", "lychee docs/", "codespell docs",
               "npx markdown-link-check readme.md", "make docs-lint", "proselint", "vale readme.md", "doclint",
               "lint docs", "docs check", "mdlint", "doc lint"),
        must_pass=("check the docs",),
        response="Linting the docs.", again="Linting the docs again.",
    ),
    IntentSpec(
        "git_status", "show the git status",
        natural=("show git status", "what is the git status", "show the working tree status",
                 "which files are modified", "any uncommitted changes", "show the repo status", "check git status",
                 "is the tree clean", "what is staged", "show me the status", "which files did i touch",
                 "are there local changes", "is anything staged", "list modified files", "show untracked files",
                 "any untracked files", "is the repo clean", "is the working tree dirty",
                 "whats the state of the repo", "do i have pending changes", "which files are staged",
                 "what is not committed yet", "could you tell me what state the working tree is in",
                 "would you check whether i have unsaved changes in git", "show git stauts", "git statsu",
                 "is my checkout clean", "what have i touched so far", "what is uncommitted",
                 "anything changed locally", "which files have changes", "is everything committed",
                 "state of the working copy"),
        terse=("git status", "git status -s", "git status --short", "git status -sb", "git ls-files -m",
               "git status --porcelain", "git st -s", "git s", "tree status", "repo state", "wip status"),
        must_pass=("any uncommitted changes", "check git status",),
        response="Here is the git status.", again="Here is the git status again.",
    ),
    IntentSpec(
        "git_diff", "show the diff",
        natural=("show the diff", "show me what changed", "what changed in the code", "show the changes",
                 "diff the working tree", "show unstaged changes", "show the patch", "compare with the last commit",
                 "what lines did i change", "what did i change", "show my changes", "show the staged diff",
                 "diff against main", "compare to main", "print the diff", "show me the deltas",
                 "show the code changes", "review my changes", "let me see my changes",
                 "how does my code differ from head", "show the diff stats",
                 "could you show me exactly what i changed",
                 "would you print the differences since the last commit", "show the dfif", "git dif",
                 "show me teh changes", "diff it", "walk me through my edits", "what is different now",
                 "diff my work"),
        terse=("git diff", "git diff --stat", "git diff --cached", "git diff head~1", "git diff main",
               "git difftool", "git diff --staged", "git diff --word-diff", "diffs", "delta", "gd", "diff -u"),
        must_pass=("show me what changed",),
        response="Showing the diff.", again="Showing the diff again.",
    ),
    IntentSpec(
        "git_log", "show the git log",
        natural=("show the git log", "show recent commits", "list the last commits", "show the commit history",
                 "who committed last", "what were the last commits", "show the history", "print the log",
                 "show the last ten commits", "show the log", "what happened recently in git",
                 "list recent commits", "what did we commit yesterday", "show the last commit",
                 "when was the last commit", "who changed this last", "show me the commit log",
                 "what went into main this week", "could you list the latest commits for me",
                 "would you show me the history of this branch", "show the comit history", "list the lsat commits",
                 "print the git hsitory", "recap the recent commits", "who has been committing",
                 "show me the history", "who made the last commit"),
        terse=("git log", "repo history", "last few commits", "git log -5", "git log --graph", "git log --stat",
               "git reflog", "tig", "git hist", "git log --oneline -20", "git log -n 3", "log pls", "gl",
               "commit log", "git lol"),
        must_pass=("show recent commits",),
        response="Here is the recent git log.", again="Here is the git log again.",
    ),
    IntentSpec(
        "git_commit", "commit the changes",
        natural=("commit the changes", "make a commit", "commit everything", "commit my work", "save a commit",
                 "create a commit", "commit the staged files", "record the changes in git", "commit with a message",
                 "commit all changes", "commit all my changes", "check in my changes", "check in the code",
                 "commit what we have", "commit the fix", "save my work to git", "commit the current state",
                 "wrap this up in a commit", "lock it in with a commit", "commit these edits", "record a commit",
                 "snapshot my work in git", "could you commit my edits for me",
                 "would you bundle everything into a commit", "comit the changes", "commmit everything",
                 "git comit", "put this in a commit", "commit the whole lot", "bank these changes in git",
                 "make a new commit", "commit the work so far", "please make a checkpoint commit"),
        terse=("git commit", "git commit -m wip", "git commit -a", "git commit --amend", "git commit -am fix",
               "git commit -v", "gcm", "cmt", "commit now", "commit it now", "commit em"),
        must_pass=("commit my work",),
        response="Committing the changes.", again="Committing again.",
    ),
    IntentSpec(
        "file_read", "open the file",
        natural=("open the readme", "read the config file", "show me main.py", "cat the makefile", "open the file",
                 "read the changelog", "display the license", "print the settings file", "open cargo.toml",
                 "show the contents of setup.py", "show the readme", "open the dockerfile", "read the license file",
                 "display main.py", "print the readme", "view the config", "open package.json",
                 "show me the gitignore", "read requirements.txt", "what does the readme say",
                 "dump the config file", "pull up the readme", "view the makefile", "read src/main.rs",
                 "open the settings", "could you open up the readme file for me",
                 "would you show me the contents of the config", "raed the config file", "shwo me main.py",
                 "open teh readme", "let me look at index.js"),
        terse=("cat setup.cfg", "less readme.md", "head main.py", "bat cargo.toml", "cat /etc/hosts",
               "cat package.json", "more notes.txt", "tail -n 20 app.py", "view readme", "open readme.md", "cat it"),
        must_pass=("open the readme",),
        response="Opening the file.", again="Opening the file again.",
    ),
    IntentSpec(
        "file_search", "search the files",
        natural=("search the files", "find the todo comments", "grep for errors", "search the code for main",
                 "find where the config is loaded", "look for the function", "find files named test",
                 "search the repo", "grep the source", "locate the parser", "search for todo", "grep for todo",
                 "find usages of main", "where is main defined", "find all references to config",
                 "which files mention docker", "search for the error message", "find the definition of the parser",
                 "locate the config loader", "search the codebase", "find text in files",
                 "where is the logger set up", "look for usages of the client",
                 "could you search the whole repo for the word panic",
                 "would you find every file that imports requests", "serch the files", "seach the repo",
                 "grpe for errors", "hunt for the helper function", "where do we read the env vars"),
        terse=("grep -r todo .", "rg todo", "ag fixme", "git grep main", "find . -name '*.py'", "fd config",
               "ack todo", "grep -i error", "find todos", "grep pls", "rg -l main"),
        must_pass=("grep for errors",),
        response="Searching the files.", again="Searching the files again.",
    ),
    IntentSpec(
        "memory_add", "remember that",
        natural=("remember that the build is flaky", "remember this", "note that the server is down",
                 "save this to memory", "keep in mind that the tests are slow", "remember my name is lain",
                 "make a note of this", "store this in memory", "remember the deploy is on friday",
                 "note that the api key rotated", "remember that i use zsh", "remember that my editor is emacs",
                 "note that the cache is slow", "please remember the meeting is at noon",
                 "save a note that the db is on port 5432", "add this to your notes", "add to memory",
                 "memorize this", "remember that friday is release day", "write down that bob owns billing",
                 "dont let me forget the demo is tuesday", "take a note the api is v2",
                 "store a reminder that the lease ends in june", "remember for me that carol is on leave",
                 "could you remember that the proxy needs a restart",
                 "would you keep a note that the staging key expires soon", "remeber this",
                 "rember that the build is slow", "memo the release is on thursday",
                 "file away that the logs live in var", "remember that the vpn is flaky",
                 "keep a note that lunch is at one", "remember the office is closed monday"),
        terse=("memorize", "note this", "remember pls", "memo this", "remember it", "mem add", "jot this",
               "save to memory", "note it down", "memorise this"),
        must_pass=("remember that the build is flaky",),
        response="Noted, I will remember that.", again="Noted again.",
    ),
    IntentSpec(
        "memory_search", "search my memory",
        natural=("what did i tell you", "search your memory", "what do you remember", "recall my notes",
                 "what did i say about the server", "look up my notes", "do you remember my name",
                 "find it in memory", "what notes do you have", "recall what i said", "what do you know about me",
                 "what have i told you", "search my notes", "check my notes", "what did i say about the deploy",
                 "recall the deploy date", "what is my name", "look through your memory",
                 "what did i ask you to remember", "anything in memory about the server",
                 "what did i note about the api key", "when is the deploy", "remind me about the server",
                 "did i tell you about the api key", "do you recall my editor",
                 "could you look up what i told you about the database",
                 "would you check your memory for the meeting time", "serach your memory", "waht did i tell you",
                 "what was in my notes", "dig up my notes on the proxy", "look up what i said about the proxy",
                 "what do you have on the server", "do you know my editor"),
        terse=("mem search", "memory search", "recall pls", "notes search", "search notes", "what notes",
               "recall notes"),
        must_pass=("what did i tell you",),
        response="Searching my memory.", again="Searching my memory again.",
    ),
    IntentSpec(
        "gpu_status", "check the GPU",
        natural=("show gpu status", "check the gpu", "how busy is the gpu", "what is the gpu doing",
                 "show gpu memory", "run nvidia smi", "is the gpu free", "show the gpu temperature",
                 "how hot is the gpu", "how much gpu memory is used", "whats running on the gpu",
                 "check the graphics card", "any free gpus", "which gpu is idle", "show the gpus", "list the gpus",
                 "how much vram is used", "is the card busy", "how warm is the graphics card",
                 "could you check how much the gpu is being used", "would you tell me whether the gpus are idle",
                 "chekc the gpu", "gpu usgae", "show gpu stauts", "is the accelerator busy",
                 "how is the video card doing"),
        terse=("gpu power draw", "gpu temp", "gpu load", "gpu utilization", "gpu usage", "nvidia-smi -q",
               "nvidia-smi dmon", "rocm-smi", "nvitop", "gpustat -cp", "watch -n1 nvidia-smi", "nvidia-smi -l 5",
               "amd-smi", "intel_gpu_top", "gpu info", "gpu mem", "gpustat --watch", "nvidia-smi topo -m"),
        must_pass=("how busy is the gpu",),
        response="Checking the GPU.", again="Checking the GPU again.",
    ),
    IntentSpec(
        "disk_usage", "check disk usage",
        natural=("show disk usage", "how much disk is left", "check disk space", "how full is the disk",
                 "show free space", "what is using the disk", "is the disk full", "run df",
                 "show the biggest folders", "how much space is left", "how much storage is left",
                 "whats taking up space", "which folders are biggest", "are we low on disk", "check the disk",
                 "how big is this repo", "how much space does the project use", "is there room on the disk",
                 "could you check how much disk space we have",
                 "would you find the largest directories on this machine", "dsik usage", "check disk sapce",
                 "how ful is the disk", "is the drive full", "how much free space is there"),
        terse=("size of the repo", "storage usage", "free disk space", "disk usage", "df -ht", "du -sh *",
               "du -sh ~", "df -i", "duf", "dust", "du -h -d 1", "ncdu /", "df --human-readable", "gdu", "df pls",
               "disk full", "du pls"),
        must_pass=("how much disk is left",),
        response="Checking disk usage.", again="Checking disk usage again.",
    ),
    IntentSpec(
        "clean", "clean the build outputs",
        natural=("clean the build", "clean the project", "remove build artifacts", "clean up the target dir",
                 "delete the build outputs", "run make clean", "wipe the cache", "clean everything",
                 "remove the temp files", "clear the build folder", "clean up the build",
                 "delete the build directory", "remove compiled files", "purge the cache", "clear the cache",
                 "wipe the build folder", "clean the workspace", "delete the target folder",
                 "blow away the build dir", "start from a clean slate", "get rid of build artifacts",
                 "remove stale outputs", "clean out the temp folder",
                 "could you delete all the generated files for me", "would you clean out the build outputs please",
                 "claen the build", "clena everything", "clean teh project", "scrub the build outputs"),
        terse=("rm -rf target", "rm -rf node_modules", "git clean -fdx", "npm run clean", "gradle clean",
               "mvn clean", "rm -rf __pycache__", "go clean -cache", "dotnet clean", "bazel clean", "cleanup",
               "clean pls", "make distclean"),
        must_pass=("clean the build",),
        response="Cleaning the build outputs.", again="Cleaning again.",
    ),
    IntentSpec(
        "install", "install the dependencies",
        natural=("install the dependencies", "install deps", "set up the environment", "install the packages",
                 "fetch the dependencies", "update the dependencies", "run pip install", "get the requirements",
                 "install what we need", "sync the packages", "install requirements", "download the dependencies",
                 "set up the venv", "install all the deps", "get the packages", "add the missing packages",
                 "restore the packages", "install the node modules", "resolve the dependencies",
                 "upgrade the packages", "set up the dev environment", "pull in dependencies", "install the gems",
                 "could you install every dependency for me",
                 "would you set up all the packages this project needs", "install the dependancies", "isntall deps",
                 "intsall the packages", "bootstrap the dependencies"),
        terse=("npm install", "pip install -e .", "pnpm install", "cargo fetch", "go mod download",
               "composer install", "pip install -r requirements-dev.txt", "conda env update", "pipenv install",
               "go mod tidy", "mix deps.get", "deps pls", "install pls", "bun install"),
        must_pass=("install the dependencies",),
        response="Installing the dependencies.", again="Installing the dependencies again.",
    ),
    IntentSpec(
        "greet", "say hello",
        natural=("hello", "hi", "good morning", "hi there", "hello navi", "good evening", "good afternoon",
                 "greetings", "hello there", "hi navi", "hey there", "hullo", "hallo", "helo", "hellooo", "heyyy",
                 "whats up", "wassup", "whats good", "morning navi", "good day", "gday", "bonjour", "hola", "ahoy",
                 "how are you", "hows it going", "knock knock", "wakey wakey", "hello world", "aloha", "namaste",
                 "hii", "hai", "salutations", "top of the morning", "good to see you", "long time no see",
                 "nice to see you", "hey you", "hey hey", "oi", "sup navi", "morning all"),
        terse=(),
        must_pass=("hi there",),
        response="Hello, sir. What can I do for you?", again="Hello again, sir.",
        chat=True,
    ),
    IntentSpec(
        "help", "explain what I can do",
        natural=("help", "what can you do", "show the help", "list your commands", "how do i use you",
                 "what are your skills", "i need help", "show me the commands", "what do you support",
                 "how does this work", "what can i ask you", "what are your commands", "how do you work",
                 "what are you for", "what do you do", "show me what you can do", "what features do you have",
                 "any tips", "whats possible", "im lost", "how does navi work", "explain yourself",
                 "what are my options", "tutorial", "getting started", "what can navi do",
                 "teach me how to use you", "hlep", "waht can you do", "menu", "instructions",
                 "what tricks do you know", "give me the rundown", "how should i talk to you",
                 "could you explain what you are able to do", "would you list the things you understand"),
        terse=("--help", "navi --help", "man navi", "/help", "usage info"),
        must_pass=("what can you do",),
        response="I can build, test, check, lint and more. Just ask.", again="Here is the help again.",
        chat=True,
    ),
    IntentSpec(
        "train", "start training",
        natural=("train the brain", "start training", "train the model", "run a training session",
                 "retrain the policy", "begin training", "train a new run", "fine tune the model",
                 "launch training", "train it again", "train the policy", "train the talker", "retrain everything",
                 "retrain the brain", "do a training run", "start a training run", "train from scratch",
                 "resume training", "continue training", "train for more steps", "run the trainer",
                 "train on the new goals", "teach the brain", "train navi", "fit the model", "run training",
                 "fine-tune the policy", "could you train a fresh model for me",
                 "would you start a new training session", "trian the brain", "start trainign",
                 "update the weights", "learn from the corpus"),
        terse=("navi-tui train", "navi-tui --no-ui train", "train --profile tiny", "make train", "python train.py",
               "train pls", "training pls", "retrain it"),
        must_pass=("train the brain",),
        response="Training is started from the console, not by me.",
        again="Training is still started from the console.",
        meta=True,
    ),
    IntentSpec(
        "eval", "evaluate the model",
        natural=("evaluate the model", "run the eval", "run the benchmarks", "score the model",
                 "evaluate the brain", "run the evaluation", "benchmark the policy", "eval the checkpoint",
                 "measure the model", "grade the brain", "evaluate the policy", "evaluate the talker",
                 "run the gallery", "how good is the model", "score the brain", "score the checkpoint",
                 "benchmark the brain", "run the benches", "what is the accuracy", "evaluate the latest run",
                 "run evals", "how accurate is the brain", "rate the model", "assess the policy", "gauge the brain",
                 "could you evaluate the newest checkpoint for me", "would you score this brain on the benches",
                 "evalaute the model", "run the evla", "how well does the model do", "measure the accuracy",
                 "benchmark the model", "run the scoring", "grade the checkpoint", "how does the brain score"),
        terse=("navi-tui eval", "navi-tui --no-ui eval", "evals", "eval --json", "make eval", "python eval.py",
               "score the run", "bench it", "score it"),
        must_pass=("evaluate the model",),
        response="Evaluation is started from the console, not by me.",
        again="Evaluation is still started from the console.",
        meta=True,
    ),
)

# wrappers around a core phrasing. Training lines and the seen benches use the same wrappers;
# a seen bench line is a combination (wrapper, filler, case, punctuation) never used in training
COMMAND_PREFIXES = ("", "please ", "can you ", "could you ", "navi, ", "go ahead and ",
                    "i want you to ", "now ", "quickly ", "hey navi, ", "would you ", "i need you to ",
                    "time to ", "pls ")
COMMAND_SUFFIXES = ("", " please", " now", " for me", " right away", " thanks", " when you can", " pls",
                    " asap", " thx")
QUESTION_PREFIXES = ("", "navi, ", "hey navi, ", "quick question: ", "tell me ", "so ", "i wonder ",
                     "any idea ")
QUESTION_SUFFIXES = ("", " please", " right now", " navi", " at the moment", " rn")
TERSE_PREFIXES = ("", "navi, ", "pls ", "ok ", "hey navi, ", "quick: ", "just ")
TERSE_SUFFIXES = ("", " pls", " plz", " thx", " now", " asap", " for me", " please")
CHAT_PREFIXES = ("", "well ", "oh ", "yo, ", "navi, ", "um ")
CHAT_SUFFIXES = ("", " again", " friend", " navi", " buddy", " :)")
# said before any of the above, as people start a request: never a core, never an intent's word
FILLERS = ("um ", "um, ", "ok so ", "ok so, ", "yo ", "yo, ", "hey navi, ", "hmm ", "alright, ", "uh ",
           "right, ", "so um ")

POLITE_PREFIXES = ("", "navi, ", "hey navi, ", "so ", "sorry, ", "excuse me, ")
POLITE_SUFFIXES = ("", " thanks", " navi", " thank you", " if you can", " when you get a chance")
QUESTION_WORDS = ("what ", "whats ", "how ", "is ", "are ", "any ", "who ", "which ", "do you ", "do i ", "do the ",
                  "does ", "did ", "when ", "where ", "will ")
POLITE_WORDS = ("could you ", "would you ", "can you ", "please ")

# follow-ups whose answer depends on the earlier dialogue: they make memory matter
AGAIN_PROMPTS = ("do that again", "again please", "repeat that", "one more time")
RECALL_PROMPTS = ("what did i just ask", "what was my last request", "remind me what i asked")

# composite goals join step phrasings with these; the plan is the steps' intents in sentence order.
# Every connector occurs in training and in both plan benches
PAIR_JOINS = ("{a} and {b}", "{a} and then {b}", "{a} then {b}", "{a}, then {b}", "{a}, {b}", "{a}; {b}",
              "{a}, after that {b}", "{a} and after that {b}", "{a} followed by {b}", "first {a}, then {b}")
TRIPLE_JOINS = ("{a}, {b} and {c}", "{a}, {b} and then {c}", "{a} then {b} then {c}", "{a}, then {b}, then {c}",
                "{a}; {b}; {c}", "{a}, {b}, after that {c}", "{a} followed by {b} followed by {c}",
                "first {a}, then {b}, then {c}", "{a} and {b} and then {c}", "{a}, {b}, {c}",
                "first {a}, then {b} and after that {c}")
# the connector each join is counted under (tests/test_corpus.py checks that all occur)
CONNECTORS = ("and", "and then", "then", ",", ";", "after that", "followed by", "first X, then Y")


def style_of(spec: IntentSpec, core: str) -> str:
    """chat, terse (a word or two, a shell command), polite (it asks already), question, or command."""
    if spec.chat:
        return "chat"
    if core in spec.terse:
        return "terse"
    if core.startswith(POLITE_WORDS):
        return "polite"
    if core.startswith(QUESTION_WORDS):
        return "question"
    return "command"


def wrappers_for(spec: IntentSpec, core: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    return {"chat": (CHAT_PREFIXES, CHAT_SUFFIXES), "terse": (TERSE_PREFIXES, TERSE_SUFFIXES),
            "question": (QUESTION_PREFIXES, QUESTION_SUFFIXES), "polite": (POLITE_PREFIXES, POLITE_SUFFIXES),
            "command": (COMMAND_PREFIXES, COMMAND_SUFFIXES)}[style_of(spec, core)]


def action_intents() -> tuple[IntentSpec, ...]:
    """Intents that can be plan steps: not meta (M-017), not chat."""
    return tuple(s for s in INTENTS if not s.meta and not s.chat)
