import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)
FIXTURES = os.path.join(ROOT, 'tests', 'fixtures')


def smallest_archs():
    """(family, smallest arch, extra kwargs) for every family, plus the unified models with their
    stage norms kept; size ~ sum of depth x width^2 over the stages."""
    from backbones import families
    out = []
    for cls in families().values():
        def size(name, cls=cls):
            settings = cls.resolve_arch(name)[1]
            return sum(d * c * c for d, c in zip(settings['depths'], settings['dims']))
        arch = min(cls.arch_settings, key=size)
        out.append((cls.__name__, arch, {}))
        if cls.__name__.startswith('Unified'):
            out.append((cls.__name__, arch, {'stage_norms': 'keep'}))
    return out
