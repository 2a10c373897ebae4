"""Write requirements.lock: every package deqexp, its dev and docs extras need, pinned with
hashes (pip-compile), except torch and what only torch needs: `make install` takes torch from
TORCH_SPEC (the local CPU wheel by default; a CUDA build when you choose one), so the torch pin
stays yours. `make lock` runs this after a change of pyproject.toml's dependencies."""
import subprocess
import sys
from pathlib import Path

import tomllib

ROOT = Path(__file__).resolve().parent.parent


def requirements() -> list[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    wanted = [*project["dependencies"], *extras["dev"], *extras["docs"]]
    return [r for r in wanted if not r.replace(" ", "").startswith(("torch>", "torch=", "torch<"))
            and r.strip() != "torch"]


def main() -> int:
    build = ROOT / "build"
    build.mkdir(exist_ok=True)
    (build / "lock.in").write_text("\n".join(requirements()) + "\n")
    return subprocess.call([sys.executable, "-m", "piptools", "compile", "--generate-hashes",
                            "--allow-unsafe", "--strip-extras", "--no-header", "--quiet",
                            "--no-emit-index-url", "--no-emit-find-links",  # this machine's mirrors
                            "--output-file", str(ROOT / "requirements.lock"), str(build / "lock.in")])


if __name__ == "__main__":
    sys.exit(main())
