"""Measurement helpers shared by the benchmark tools (tools/analysis/benchmark_backbones.py for backbones,
tools/analysis/benchmark.py for whole models): autocast dtype, device sync, per-step timing summary and the
peak RSS of one step (CPU memory, measured in a fresh child process by the tools)."""
import gc
import resource
import statistics
import sys
import time

import torch

MIB = float(2 ** 20)


def amp_dtype(device: torch.device, amp: bool):
    if not amp:
        return None
    return torch.float16 if device.type == 'cuda' else torch.bfloat16


def sync(device: torch.device) -> None:
    if device.type == 'cuda':
        torch.cuda.synchronize(device)


def proc_status_kib(field: str):
    try:
        with open('/proc/self/status') as f:
            for line in f:
                if line.startswith(field + ':'):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def maxrss_kib() -> int:
    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return r // 1024 if sys.platform == 'darwin' else r  # bytes on macOS, KiB on Linux


def reset_peak_rss() -> bool:
    try:
        with open('/proc/self/clear_refs', 'w') as f:
            f.write('5')  # reset the peak RSS (VmHWM / ru_maxrss) to the current RSS
        return True
    except OSError:
        return False


def measure_step_rss(step) -> dict:
    """Run ``step()`` once and return its peak RSS growth (MiB) over the RSS right before it."""
    gc.collect()
    rss_before = proc_status_kib('VmRSS')
    maxrss_before = maxrss_kib()
    # exact: reset the kernel's peak RSS to the current RSS, read VmHWM after the step
    exact = rss_before is not None and reset_peak_rss() and proc_status_kib('VmHWM') is not None
    t0 = time.perf_counter()
    step()
    elapsed = time.perf_counter() - t0
    maxrss_after = maxrss_kib()
    if exact:
        method = 'VmHWM after clear_refs reset - VmRSS before step'
        total_kib = proc_status_kib('VmHWM')
        peak_kib = total_kib - rss_before
    else:
        method = 'ru_maxrss growth over the step (lower bound)'
        total_kib = maxrss_after
        peak_kib = maxrss_after - maxrss_before
    return dict(peak_mib=max(peak_kib, 0) / 1024.0, peak_total_mib=total_kib / 1024.0, method=method,
                step_ms=elapsed * 1e3,
                rss_before_step_mib=None if rss_before is None else rss_before / 1024.0,
                maxrss_before_step_mib=maxrss_before / 1024.0, maxrss_after_step_mib=maxrss_after / 1024.0)


def summarize(times):
    return dict(median_ms=statistics.median(times), min_ms=min(times), max_ms=max(times),
                mean_ms=statistics.fmean(times))


def compile_options(backend: str = 'inductor') -> dict:
    """``torch.compile`` options of the benchmarks (the backbones' ``compile=`` argument): a graph break is
    an error (``fullgraph``) and the input size is fixed (``dynamic=False``, one specialised graph)."""
    return dict(backend=backend, fullgraph=True, dynamic=False)


def relative_errors(outputs, references):
    """Per output map ``||a - b|| / ||b||`` (Frobenius norms, in float32), ``b`` the reference; how the
    compiled and bfloat16-autocast forwards are compared with the eager float32 one (docs/speed.md)."""
    outputs, references = list(outputs), list(references)
    if len(outputs) != len(references):
        raise ValueError(f'{len(outputs)} outputs but {len(references)} references')
    errs = []
    for i, (a, b) in enumerate(zip(outputs, references)):
        if a.shape != b.shape:
            raise ValueError(f'output {i}: shape {tuple(a.shape)} vs reference {tuple(b.shape)}')
        a, b = a.detach().float(), b.detach().float()
        errs.append(float((a - b).norm() / b.norm().clamp_min(1e-30)))
    return errs


# ------------------------------------------------------------------ same weights, same outputs
def load_same_weights(source: torch.nn.Module, ours: torch.nn.Module):
    """A reference model's state dict (cloned) into ours through our strict loader; returns the LoadReport."""
    from backbones import load_pretrained
    sd = {k: v.detach().clone() for k, v in source.state_dict().items()}
    return load_pretrained(ours, sd, strict=True)


def compare_outputs(ours_out, ref_out, rtol: float = 1e-4, atol: float = 1e-4) -> dict:
    """Stage by stage: shapes, max abs / rel difference and ``allclose``; ``identical`` when all agree."""
    stages, ok = [], len(ours_out) == len(ref_out)
    for a, b in zip(ours_out, ref_out):
        if a.shape != b.shape:
            stages.append(dict(shape_ours=list(a.shape), shape_ref=list(b.shape)))
            ok = False
            continue
        a, b = a.float(), b.float()
        diff = (a - b).abs().max().item()
        scale = b.abs().max().item()
        close = torch.allclose(a, b, rtol=rtol, atol=atol)
        ok = ok and close
        stages.append(dict(shape=list(a.shape), max_abs_diff=diff, max_ref_abs=scale,
                           max_rel_diff=diff / scale if scale else diff, allclose=close))
    return dict(identical=ok, stages=stages, tolerance=f'rtol={rtol:g}, atol={atol:g}',
                max_abs_diff=max((s.get('max_abs_diff', float('inf')) for s in stages), default=0.0))


def tool_entry(main, memory_child, child_flag: str, child_tag: str) -> int:
    """The ``__main__`` of a benchmark tool: run as ``TOOL CHILD_FLAG JSON`` it is the fresh memory-measuring
    child process (prints ``child_tag`` + the JSON result of ``memory_child(spec)``); otherwise ``main()``."""
    import json
    if len(sys.argv) == 3 and sys.argv[1] == child_flag:
        print(child_tag + json.dumps(memory_child(json.loads(sys.argv[2]))), flush=True)
        return 0
    return main()


def resolve_device(dev: str, error=ValueError) -> torch.device:
    """``'cpu'``, ``'cuda'`` or ``'cuda:N'`` as a device with an index, checked against this machine (``error``
    with the reason otherwise)."""
    if dev != 'cpu' and not (dev == 'cuda' or dev.startswith('cuda:')):
        raise error(f"--device must be 'cpu', 'cuda' or 'cuda:N', not {dev!r}")
    device = torch.device(dev)
    if device.type == 'cuda':
        if not torch.cuda.is_available():
            raise error(f'--device {dev} requested but CUDA is not available '
                        f'(torch {torch.__version__}, built with CUDA {torch.version.cuda})')
        if device.index is None:  # torch.cuda.set_device needs an index
            device = torch.device('cuda', torch.cuda.current_device())
        if device.index >= torch.cuda.device_count():
            raise error(f'--device {dev}: only {torch.cuda.device_count()} CUDA device(s)')
    return device
