"""Run from the repository root on a GPU host: python3 benches/torch_compile_batch.py

PyTorch peers for upframe's batch measurements: the network of torch_srvgg_bench.py (same module),
fp16 channels-last, eager and torch.compile, batch 1 and 4, at 640x480 and 1920x1080. Each compiled
shape is its own static compile (dynamic=False), so that no shape runs through dynamic-shape kernels."""
import json, os, sys, torch
# torch_srvgg_bench.py is ../shared/bench's, copied into .bench/ by prepare-peers.sh.
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".bench"))
from torch_srvgg_bench import SRVGG, bench

torch.backends.cudnn.benchmark = True
for (h, w) in [(480, 640), (1080, 1920)]:
    for b in [1, 4]:
        m = SRVGG().cuda().half().eval().to(memory_format=torch.channels_last)
        ms = bench(m, (b, 3, h, w), torch.float16, True)
        print(json.dumps(dict(h=h, w=w, batch=b, mode="eager", ms=round(ms, 3), fps=round(1000 * b / ms, 1))), flush=True)
        mc = torch.compile(m, dynamic=False)
        ms = bench(mc, (b, 3, h, w), torch.float16, True)
        print(json.dumps(dict(h=h, w=w, batch=b, mode="compile-static", ms=round(ms, 3), fps=round(1000 * b / ms, 1))), flush=True)
