"""The runtime's thread pool (native/pool.c): many short-lived pools neither hang nor leak
threads, a forked child computes the same result without the parent's workers, and the thread
count never changes a result (fast lane: a synthetic tiny model); pool.h's contract holds for
both implementations (pool.c, and pool_omp.c that bench/bench_pool.py compares it with)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Callable

import numpy as np
import pytest

from bumpconv.run.runtime import BumpModel
from runtime_helpers import convert

CYCLES = r"""
import sys
import numpy as np
from bumpconv.run.runtime import BumpModel
first = None
for _ in range(int(sys.argv[2])):
    with BumpModel.open(sys.argv[1], threads=2) as m:
        m.prefill([1, 2, 3])
        logits = m.decode(4)
    if first is None:
        first = logits
    assert np.array_equal(logits, first)
print("ok")
"""


@pytest.fixture(scope="module")
def blob(synthetic: Callable[..., Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    return convert(synthetic("llama-untied"), tmp_path_factory.mktemp("pool") / "m.bump")


def test_open_forward_close_cycles_finish(blob: Path) -> None:
    """Each cycle starts and joins a worker and runs prefill (GEMM) and decode (GEMV) on it: a
    lost wake-up or a teardown race shows as a hang (the timeout) or a crash."""
    r = subprocess.run([sys.executable, "-c", CYCLES, str(blob), "1000"], capture_output=True,
                       text=True, timeout=300, env=os.environ)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr


@pytest.mark.parametrize("threads", [2, 3])
def test_thread_count_does_not_change_logits(blob: Path, threads: int) -> None:
    with BumpModel.open(blob, threads=1) as one, BumpModel.open(blob, threads=threads) as many:
        assert np.array_equal(one.forward(list(range(1, 20))), many.forward(list(range(1, 20))))
        assert np.array_equal(one.decode(5), many.decode(5))


def test_forked_child_runs_without_the_parents_workers(blob: Path) -> None:
    with BumpModel.open(blob, threads=2) as m:
        expected = m.forward([1, 2, 3, 4])
        m.reset()
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: no worker threads exist here; the pool runs every share inline
            try:
                os.write(write, m.forward([1, 2, 3, 4]).tobytes())
            finally:
                os._exit(0)
        os.close(write)
        data = b""
        while chunk := os.read(read, 1 << 16):
            data += chunk
        os.close(read)
        os.waitpid(pid, 0)
    assert np.array_equal(np.frombuffer(data, expected.dtype).reshape(expected.shape), expected)


DRIVER = r"""
#include "pool.h"
#include <stdatomic.h>
#include <stdio.h>
static _Atomic int runs[1003];
static _Atomic int bad_tid;
static int threads;
static void fn(void *ctx, long begin, long end, int tid) {
    (void)ctx;
    if (tid < 0 || tid >= threads) atomic_store(&bad_tid, 1);
    for (long i = begin; i < end; i++) atomic_fetch_add(&runs[i], 1);
}
int main(void) {
    const long total = 1001, chunks[] = {1, 7, 1001, 5000, 0};
    for (threads = 1; threads <= 3; threads++) {
        bump_pool *p = bump_pool_create(threads);
        if (!p || bump_pool_threads(p) != threads) return 2;
        for (int c = 0; c < 5; c++) {
            for (int r = 0; r < 200; r++) bump_pool_run(p, fn, NULL, total, chunks[c]);
            int ok = 1;
            for (long i = 0; i < total + 2; i++)
                ok &= atomic_exchange(&runs[i], 0) == (i < total ? 200 : 0);
            printf("%d", ok && !atomic_load(&bad_tid));
        }
        bump_pool_run(p, fn, NULL, 0, 4); /* nothing to do */
        bump_pool_destroy(p);
        printf("\n");
    }
    return 0;
}
"""


@pytest.mark.parametrize("pool, flags", [("pool.c", ["-pthread"]),
                                         ("pool_omp.c", ["-fopenmp"])])
def test_both_pool_implementations_run_every_share_once(tmp_path: Path, pool: str,
                                                        flags: list[str]) -> None:
    """pool.h's contract for the shipped pool and for the OpenMP one bench/bench_pool.py
    measures it against: every item runs exactly once per call (200 calls of 1001 items on 1, 2
    and 3 threads, in chunks of 1, 7, all, more than all, and 0 = 1), on a valid thread id, and
    an empty range runs nothing."""
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        pytest.skip("no C compiler")
    native = Path(__file__).resolve().parents[1] / "native"
    (tmp_path / "driver.c").write_text(DRIVER)
    exe = tmp_path / "driver"
    subprocess.run([cc, "-O1", "-std=c11", f"-I{native}", str(tmp_path / "driver.c"),
                    str(native / pool), "-o", str(exe), *flags], check=True)
    out = subprocess.run([str(exe)], capture_output=True, text=True, check=True).stdout
    assert out.split("\n")[:3] == ["11111"] * 3
