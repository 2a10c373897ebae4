"""The commands the README, the getting-started page and the compare how-to show: each block
that shows output is run and compared with what it shows (scripts/docs_check.py; slow, CI runs
it), and every `deqexp train` / `deqexp explain` line of those pages and the search how-to is
composed and validated as `train` would, in-process."""
import shlex
import sys
from pathlib import Path

import pytest
from hydra.core.override_parser.overrides_parser import OverridesParser

from deqexp.run.effects import check_effects
from deqexp.run.validation import check_sweep_axes, validate
from tests.compose import compose_config

ROOT = Path(__file__).resolve().parent.parent
# pages whose shown output is checked by running their commands (CI time: the search page's
# minute-long tuned sweep is left to its own page), and pages whose command lines are validated
RUN_PAGES = [ROOT / "README.md", ROOT / "docs" / "getting-started.md",
             ROOT / "docs" / "how-to" / "compare.md"]
PAGES = [*RUN_PAGES, ROOT / "docs" / "how-to" / "search.md"]
sys.path.insert(0, str(ROOT / "scripts"))
import docs_check  # noqa: E402


def _checked_blocks():
    """Blocks to run, once per distinct command list (both pages show the main job)."""
    by_commands = {}
    for page in RUN_PAGES:
        for block in docs_check.blocks(page):
            by_commands.setdefault(block.commands, []).append(block)
    return list(by_commands.values())


def _command_lines():
    """Every `deqexp ...` line of the pages' bash blocks (commands shown without output)."""
    lines = []
    for page in PAGES:
        text, inside, command, start = page.read_text().splitlines(), False, None, 0
        for n, line in enumerate(text, 1):
            if line.startswith("```"):
                inside = line.strip() == "```bash"
            elif inside and (command is not None or line.startswith("deqexp ")):
                if command is None:
                    start = n
                command = (command or "") + " " + line.strip().removesuffix("\\")
                if not line.endswith("\\"):  # a command may continue over lines
                    lines.append(pytest.param(shlex.split(command, comments=True), id=f"{page.name}:{start}"))
                    command = None
    return lines


def test_the_pages_show_blocks_to_check():
    blocks = _checked_blocks()
    assert len(blocks) >= 3 and all(b[0].shown for b in blocks)
    assert any(b[0].commands == ("deqexp train init=kglm",) for b in blocks)


def test_a_shown_line_matches_within_five_percent_and_in_order():
    printed = ["[x] epoch 20/200  test_loss 0.1258", "noise", "final test loss 0.047573 (8.31x lower)"]
    ok = ("[x] epoch 20/200  test_loss 0.1249", "...", "final test loss 0.0476 (8.3x lower)")
    assert docs_check.mismatch(ok, printed) is None
    assert docs_check.mismatch(("final test loss 0.052 (8.31x lower)",), printed)  # 9% off
    assert docs_check.mismatch(("final test loss ... lower)", "[x] epoch ..."), printed)  # order
    assert docs_check.mismatch(("[x] epoch 20/200  test_loss 0.1258 more",), printed)  # text


def _first_of_each_sweep(overrides: list[str]) -> list[str]:
    parsed = OverridesParser.create().parse_overrides(overrides)
    return [o.input_line if not o.is_sweep_override()
            else f"{o.get_key_element()}={next(iter(o.sweep_string_iterator()))}" for o in parsed]


@pytest.mark.parametrize("argv", _command_lines())
def test_every_train_and_explain_line_is_accepted(argv, capsys):
    command, rest = argv[1], [a for a in argv[2:] if a not in ("-m", "--multirun")]
    if command == "explain":
        from deqexp.run import keys

        assert keys.main(rest) in (0, None) and rest[0] in capsys.readouterr().out
    if command != "train" or rest[:1] in (["--help"], ["--cfg"]) or "--cfg" in rest:
        return
    # the Optuna sweeper's search space (tag/interval/...) is the sweeper's, checked by test_search
    job = _first_of_each_sweep([a for a in rest if "interval(" not in a and "choice(" not in a])
    cfg = compose_config(*job)
    validate(cfg)
    check_sweep_axes(cfg, job)
    check_effects(cfg, job)


@pytest.mark.slow
@pytest.mark.parametrize("same", _checked_blocks(), ids=lambda b: f"{Path(b[0].source).name}:{b[0].line}")
def test_each_shown_block_prints_what_it_shows(same, tmp_path):
    printed = docs_check.run(same[0], tmp_path)
    for block in same:
        assert docs_check.mismatch(block.shown, printed) is None, \
            f"{block.source}:{block.line}: {docs_check.mismatch(block.shown, printed)}\n" + \
            "\n".join(printed[-40:])
