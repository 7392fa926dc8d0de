#!/usr/bin/env python3
"""mktree.py ROOT N: the benchmarks' small-file tree: N files of 0.1-16 KiB of random data in
directories of 100 (d000/f00000 ...), the same tree for the same N (fixed seed)."""
import os
import random
import sys

root, n = sys.argv[1], int(sys.argv[2])
random.seed(1)
blob = os.urandom(1 << 20)
for i in range(n):
    d = os.path.join(root, "d%03d" % (i // 100))
    if i % 100 == 0:
        os.makedirs(d, exist_ok=True)
    size = random.randint(100, 16384)
    off = random.randint(0, len(blob) - size)
    with open(os.path.join(d, "f%05d" % i), "wb") as f:
        f.write(blob[off:off + size])
