"""The ``deqexp`` console script: sub-commands ``train`` (Hydra), ``verify`` and ``report``."""
from __future__ import annotations

import os
import sys
from pathlib import Path

USAGE = """usage: deqexp <command> [args]   (deqexp --version)

Deep equilibrium models initialised as kernelised GLMs (Tsuchida et al., ICLR 2022).

commands:
  train     train and evaluate a DEQ (Hydra: key=value overrides, -m for sweeps);
            `deqexp train --help` lists the config groups and options
  eval      evaluate a finished run's saved model again (its data set, or another via overrides)
  status    where a sweep stands: each job complete, running, interrupted at epoch k, diverged,
            failed or missing, and the command that continues it
  explain   each config key under KEY with its type, default and meaning (deqexp explain solver.forward)
  verify    check that kGLM-initialised DEQs solve their kGLMs exactly (a table; exit 1 on failure)
  compare   compare the arms of any finished runs (e.g. kglm vs random over seeds): paired tests,
            Holm-corrected, with tables, figures and COMPARE.md
  report    aggregate finished runs into tables, figures and REPORT.md under results/paper

examples:
  deqexp train init=kglm
  deqexp train -m init=kglm,naive,random trainer.seed=0,1,2 launcher=joblib
  deqexp train -m launcher=slurm hydra.launcher.partition=cpu trainer.seed=0,1,2
  deqexp status multirun/default
  deqexp compare multirun/default
  deqexp verify
  deqexp report --profile quick
"""



# the sub-commands besides train: command -> the module whose main(argv) runs it
COMMANDS = {"eval": "run.runs", "status": "sweep.status", "compare": "sweep.compare",
            "explain": "run.keys", "verify": "paper.verify", "report": "paper.report"}


def _check_argv(argv: list[str]) -> str | None:
    """Errors Hydra would report badly or too late: a preset that does not exist (Hydra's
    message lists no choices) and an output folder that cannot be written."""
    from .run.config import CONF_DIR

    roots = [Path(CONF_DIR) / "experiment"] + [Path(d) / "experiment" for d in _config_dirs(argv)]
    presets = sorted({str(p.relative_to(root).with_suffix("")) for root in roots if root.is_dir()
                      for p in root.rglob("*.yaml") if not p.name.startswith("_")})
    problem = _unparsable(argv) or _repeated_or_merged(argv) or _bad_yaml(_config_dirs(argv)) \
        or _shared_folders(argv)
    if problem:
        return problem
    for arg in argv:
        key, _, value = arg.lstrip("+").partition("=")
        if key == "experiment" and value:
            for name in value.split(","):
                if name not in presets:
                    return f"experiment={name} does not exist; choose one of: {', '.join(presets)}"
        if key in ("paths.output", "hydra.run.dir", "hydra.sweep.dir") and value and "${" not in value:
            problem = _unwritable(Path(value))
            if problem:
                return f"{key}={value} cannot be written ({problem}); choose a folder you can write to"
    return None


def _unparsable(argv: list[str]) -> str | None:
    """An override Hydra's grammar refuses (e.g. ``choice()``), said in one line."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import OverrideParseException

    parser = OverridesParser.create()
    for arg in _override_args(argv):
        try:
            parser.parse_overrides([arg])
        except OverrideParseException as err:
            why = [line for line in str(err).splitlines()[1:] if line.strip()][:1]
            return f"cannot read the override {arg}: {why[0] if why else str(err)}"
    return None


def _shared_folders(argv: list[str]) -> str | None:
    """A sweep over a key outside the run identity: its jobs would share one folder (two at
    once collide; one after another, the second is skipped as already complete)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    from .run.identity import is_result_key

    if not {"-m", "--multirun"} & set(argv):
        return None
    for override in OverridesParser.create().parse_overrides(_override_args(argv)):
        key = override.get_key_element().lstrip("+~")
        if override.is_sweep_override() and not is_result_key(key) \
                and key.split(".")[0] not in ("name", "paths", "hydra"):  # these name the folders
            first = next(iter(override.sweep_string_iterator()))
            name = "".join(c for c in f"{key.split('.')[-1]}{first}" if c.isalnum() or c in "_-")
            return (f"{override.input_line} sweeps a key that does not change results, so all its jobs "
                    "would share one run folder; run one sweep per value instead, each with its own "
                    f"name, e.g. {key}={first} name={name}")
    return None


def _override_args(argv: list[str]) -> list[str]:
    """The ``key=value`` arguments (not flags, not the values of --config-dir/--config-name)."""
    return [arg for i, arg in enumerate(argv) if "=" in arg and not arg.startswith("-")
            and not (i and argv[i - 1] in ("--config-dir", "-cd", "--config-name", "-cn"))]


def _overrides(argv: list[str]) -> list[tuple[str, str]]:
    """``(key, value)`` of each ``key=value`` argument."""
    return [(key, value) for key, _, value in (a.lstrip("+~").partition("=") for a in _override_args(argv))]


def _repeated_or_merged(argv: list[str]) -> str | None:
    """A key given twice (Hydra would run the last value, in a folder named after both), a
    config group given a list (Hydra would merge the options silently), and a ``name`` that
    leaves the output folder."""
    from .run.config import CONF_DIR

    seen: dict[str, str] = {}
    groups = {p.name for p in Path(CONF_DIR).iterdir() if p.is_dir()}
    for key, value in _overrides(argv):
        if key in seen:
            return f"{key} is given twice ({seen[key]} and {value}); give it once"
        seen[key] = value
        if key in groups and value.strip().startswith("["):
            return (f"{key}={value}: choose one option of the group {key} (a list would merge their "
                    f"settings silently); ls conf/{key}/ lists them")
        if key == "name" and (value.startswith("/") or ".." in Path(value).parts):
            return (f"name={value}: give a relative folder name without '..' (runs go to "
                    "paths.output/runs/NAME and paths.output/multirun/NAME)")
    return None


def _bad_yaml(dirs: list[str]) -> str | None:
    """The first YAML file under a ``--config-dir`` that does not parse, named with its line
    (Hydra's own report is a long traceback that never names the file)."""
    import yaml

    for folder in dirs:
        for path in sorted(Path(folder).rglob("*.yaml")):
            try:
                yaml.safe_load(path.read_text())
            except yaml.YAMLError as err:
                mark = getattr(err, "problem_mark", None)
                where = f" line {mark.line + 1}, column {mark.column + 1}" if mark else ""
                what = " ".join(str(getattr(err, "problem", None) or err).split())
                tabs = " (YAML indents with spaces, never tabs)" if "\\t" in what or "'\\t'" in what else ""
                return f"--config-dir {folder}: {path}{where}: {what}{tabs}; fix the file"
            except OSError as err:
                return f"--config-dir {folder}: {path} cannot be read ({err.strerror})"
    return None


def _config_dirs(argv: list[str]) -> list[str]:
    """The folders given with ``--config-dir`` / ``-cd`` (Hydra adds them to its search path)."""
    out = []
    for i, arg in enumerate(argv):
        if arg in ("--config-dir", "-cd") and i + 1 < len(argv):
            out.append(argv[i + 1])
        elif arg.startswith("--config-dir="):
            out.append(arg.split("=", 1)[1])
    return out


def _unwritable(path: Path) -> str | None:
    """Why no folder can be made at ``path`` (None if one can): probed by making and removing
    a temporary folder in its nearest existing ancestor (os.access says yes to root on /proc)."""
    import tempfile

    probe = next((p for p in (path, *path.parents) if p.exists()), None)
    if probe is None or not probe.is_dir():
        return f"{probe} is not a folder"
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".deqexp-probe-", dir=probe))
    except OSError as err:
        return f"{probe}: {err.strerror}"
    return None


def train_main(argv: list[str]) -> None:
    """Run the Hydra app with ``argv`` as its command line."""
    import hydra

    from .run.config import CONF_DIR, register, register_resolvers

    register()
    register_resolvers()

    @hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="config")
    def app(cfg):
        from .run.runner import run_from_hydra

        return run_from_hydra(cfg)  # the summary: what a sweeper (Optuna's) scores the job by

    problem = _check_argv(argv)
    if problem:
        print(f"deqexp train: error: {problem}", file=sys.stderr)
        sys.exit(2)
    sys.argv = ["deqexp train", *argv]
    app()


def _own_process_setup() -> None:
    """A closed stdout pipe ends the output, not the run; and Ctrl-C works even when the shell
    that started us passed SIGINT on as ignored (a script run with ``nohup ... &``)."""
    import signal

    from .run.messages import ClosedPipeSafe

    if not isinstance(sys.stdout, ClosedPipeSafe):
        sys.stdout = ClosedPipeSafe(sys.stdout)
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


def main(argv: list[str] | None = None) -> None:
    """Entry point: dispatch on the first word."""
    if argv is None:  # the console script (tests call main(argv) in their own process)
        _own_process_setup()
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(USAGE)
        return
    if argv[0] in ("-V", "--version"):
        from . import __version__

        print(f"deqexp {__version__}")
        return
    command, rest = argv[0], argv[1:]
    if command == "train" and len(rest) == 2 and rest[0] in ("--help", "-h"):
        command, rest = "explain", rest[1:]  # train --help KEY: that key's help
    if command == "train":
        train_main(rest)
    elif command in COMMANDS:  # imported only when called: `deqexp --help` stays instant
        import importlib

        sys.exit(importlib.import_module(f".{COMMANDS[command]}", __package__).main(rest))
    else:
        print(f"deqexp: unknown command '{command}'\n\n{USAGE}", file=sys.stderr)
        sys.exit(2)

if __name__ == "__main__":
    main()
