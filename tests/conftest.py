import importlib.util
import os

# The repository is an installed package (make install / pip install -e .): nothing is put on sys.path here.
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURES = os.path.join(ROOT, 'tests', 'fixtures')


def load_tool(relpath: str):
    """A command-line tool (a script, not a package module) loaded from its file, to call its ``main``."""
    name = 'tool_' + relpath.replace('/', '_').replace('.py', '')
    spec = importlib.util.spec_from_file_location(name, os.path.join(ROOT, relpath))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


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
