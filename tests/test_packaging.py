"""The repository is an installable package: a plain ``pip install .`` gets the four packages, and the
installed code needs nothing on sys.path (the tools and tests never insert paths)."""
import os
import re
import shutil
import subprocess
import sys
import zipfile

import pytest

from conftest import ROOT

PACKAGES = {'backbones', 'detection', 'segmentation', 'glue'}


def test_wheel_holds_the_packages(tmp_path):
    pytest.importorskip('setuptools')
    pytest.importorskip('wheel')  # bdist_wheel for setuptools < 70.1 (requirements/tests.txt)
    build = os.path.join(ROOT, 'build')  # setuptools' in-tree scratch folder
    had_build = os.path.exists(build)
    proc = subprocess.run([sys.executable, '-m', 'pip', 'wheel', '--no-deps', '--no-build-isolation', '-q',
                           '-w', str(tmp_path), ROOT], capture_output=True, text=True, timeout=300)
    if not had_build:
        shutil.rmtree(build, ignore_errors=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    wheel = next(p for p in os.listdir(tmp_path) if p.endswith('.whl'))
    names = zipfile.ZipFile(tmp_path / wheel).namelist()
    tops = {n.split('/')[0] for n in names if not n.split('/')[0].endswith(('.dist-info', '.data'))}
    assert tops == PACKAGES, tops
    for pkg in PACKAGES:
        assert f'{pkg}/__init__.py' in names
    assert 'glue/mmcv_ops.py' in names and 'backbones/checkpoint.py' in names


def test_importable_from_anywhere(tmp_path):
    code = 'import backbones, glue, detection, segmentation; print(backbones.__file__)'
    env = {k: v for k, v in os.environ.items() if k != 'PYTHONPATH'}
    proc = subprocess.run([sys.executable, '-c', code], cwd=str(tmp_path), env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().startswith(os.path.join(ROOT, 'backbones'))


def test_no_sys_path_insert_in_tools_or_tests():
    offenders = []
    for folder in ('tools', 'tests'):
        for dirpath, _, files in os.walk(os.path.join(ROOT, folder)):
            for f in files:
                if f.endswith('.py'):
                    path = os.path.join(dirpath, f)
                    text = open(path, encoding='utf-8').read()
                    if re.search(r'sys\.path\.(insert|append)\(', text) and f != 'test_packaging.py':
                        offenders.append(os.path.relpath(path, ROOT))
    assert not offenders, offenders


def _tool_files():
    """(relative path, source) of every Python file under tools/."""
    for dirpath, _, files in os.walk(os.path.join(ROOT, 'tools')):
        for f in sorted(files):
            if f.endswith('.py'):
                path = os.path.join(dirpath, f)
                yield os.path.relpath(path, ROOT), open(path, encoding='utf-8').read()


def test_no_tool_imports_another_tool():
    offenders = [rel for rel, text in _tool_files()
                 if re.search(r'^\s*(from tools\b|import tools\b)', text, re.M)]
    assert not offenders, offenders


def test_no_tool_imports_a_private_name():
    """Tools are thin CLIs over the library's public functions: no ``from backbones.x import _helper``."""
    import ast
    offenders = [f'{rel}: {node.module}.{a.name}' for rel, text in _tool_files() for node in ast.walk(ast.parse(text))
                 if isinstance(node, ast.ImportFrom)
                 for a in node.names if a.name.startswith('_') and not a.name.startswith('__')]
    assert not offenders, offenders
