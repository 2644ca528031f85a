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


class LoopbackServer:
    """An HTTP server on 127.0.0.1 (a free port) serving ``files`` (path -> bytes), started inside a test.

    ``truncate``: paths whose response announces the full ``Content-Length`` but sends half the bytes
    and closes, as a dropped connection does. ``hits``: GET requests per path."""

    def __init__(self):
        import http.server
        import threading

        self.files, self.truncate, self.hits = {}, set(), {}
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 (http.server's name)
                server.hits[self.path] = server.hits.get(self.path, 0) + 1
                data = server.files.get(self.path)
                if data is None:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header('Content-Type', 'application/octet-stream')
                self.send_header('Content-Length', str(len(data)))
                self.end_headers()
                self.wfile.write(data[:len(data) // 2] if self.path in server.truncate else data)

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(('127.0.0.1', 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def url(self, path: str) -> str:
        return f'http://127.0.0.1:{self.httpd.server_address[1]}{path}'

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


import pytest  # noqa: E402


@pytest.fixture
def loopback_server():
    server = LoopbackServer()
    yield server
    server.close()


@pytest.fixture
def torch_home(tmp_path, monkeypatch):
    """An empty torch hub cache for the test ($TORCH_HOME): returns its checkpoints folder."""
    monkeypatch.setenv('TORCH_HOME', str(tmp_path / 'torch'))
    return tmp_path / 'torch' / 'hub' / 'checkpoints'
