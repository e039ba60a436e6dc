"""Processes the network integration tests start on loopback: pacsd itself,
DCMTK's storescp, and Orthanc (Debian package) as a peer.

Every process gets free ports and a private temporary directory and is
stopped (and its directory removed) by stop() or at interpreter exit. The
environment gives $PACSD (the binary under test) and $PACSD_SOURCE.

Also: a tiny test counter (Checks) that prints the `N passed, N failed`
summary line every test script ends with.

Run with Debian's /usr/bin/python3.
"""
import atexit
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

PACSD = os.environ.get("PACSD", "build/pacsd")
SOURCE = os.environ.get("PACSD_SOURCE", os.getcwd())
PYDICOM_FILES = os.environ.get(
    "PYDICOM_TEST_FILES", "/usr/lib/python3/dist-packages/pydicom/data/test_files")

# Nagle's algorithm plus delayed ACKs cost DCMTK ~40 ms per message.
os.environ["TCP_NODELAY"] = "1"

_live = []


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def wait_port(port, timeout=20.0, proc=None):
    end = time.time() + timeout
    while time.time() < end:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError("process exited with %s before listening" % proc.returncode)
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("nothing listening on port %d" % port)


class Proc:
    """A started process with its directory; stop() ends it."""

    def __init__(self, args, cwd, env=None, log=None):
        self.dir = cwd
        self.log_path = log or os.path.join(cwd, "log")
        self.log = open(self.log_path, "ab")
        self.p = subprocess.Popen(args, cwd=cwd, env=env, stdout=self.log,
                                  stderr=subprocess.STDOUT, start_new_session=True)
        _live.append(self)

    def alive(self):
        return self.p.poll() is None

    def stop(self, sig=signal.SIGTERM, timeout=30):
        """Signals the process and waits; returns its exit status."""
        if self.p.poll() is None:
            try:
                self.p.send_signal(sig)
                self.p.wait(timeout)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait()
        self.log.close()
        if self in _live:
            _live.remove(self)
        return self.p.returncode

    def kill9(self):
        return self.stop(signal.SIGKILL)

    def output(self):
        with open(self.log_path, "rb") as f:
            return f.read().decode("utf-8", "replace")


class Pacsd(Proc):
    """pacsd serve on a free port, data in its own directory unless given.
    Extra configuration keys come as a dict in the JSON file shape."""

    def __init__(self, aet="PACSD", data_dir=None, config=None, modalities=None, env=None):
        self.tmp = tempfile.mkdtemp(prefix="pacsd-test-")
        self.port = free_port()
        self.aet = aet
        self.data_dir = data_dir or os.path.join(self.tmp, "data")
        cfg = {"data_dir": self.data_dir, "bind": "127.0.0.1",
               "dicom": {"port": self.port, "aet": aet}, "http": {"port": free_port()},
               "log": {"level": "info"}}
        for section, values in (config or {}).items():
            if isinstance(values, dict):
                cfg.setdefault(section, {}).update(values)
            else:
                cfg[section] = values
        self.http_port = cfg["http"]["port"]
        if modalities:
            cfg["dicom"]["modalities"] = modalities
        self.config_path = os.path.join(self.tmp, "pacsd.json")
        with open(self.config_path, "w") as f:
            json.dump(cfg, f)
        full_env = dict(os.environ)
        full_env.update(env or {})
        super().__init__([PACSD, "serve", "--config", self.config_path], self.tmp, full_env)
        wait_port(self.port, proc=self.p)

    def restart(self):
        """Starts again on the same port and data (after stop or kill9)."""
        self.log = open(self.log_path, "ab")
        self.p = subprocess.Popen([PACSD, "serve", "--config", self.config_path], cwd=self.tmp,
                                  stdout=self.log, stderr=subprocess.STDOUT,
                                  start_new_session=True)
        _live.append(self)
        wait_port(self.port, proc=self.p)

    def cleanup(self):
        self.stop()
        shutil.rmtree(self.tmp, ignore_errors=True)


class StoreSCP(Proc):
    """DCMTK's storescp writing what it receives under self.out."""

    def __init__(self, aet="STORESCP", extra=()):
        self.tmp = tempfile.mkdtemp(prefix="storescp-")
        self.out = os.path.join(self.tmp, "in")
        os.mkdir(self.out)
        self.port = free_port()
        self.aet = aet
        super().__init__(["storescp", "-aet", aet, "-od", self.out, *extra, str(self.port)],
                         self.tmp)
        wait_port(self.port, proc=self.p)

    def files(self):
        return sorted(os.path.join(self.out, f) for f in os.listdir(self.out))

    def cleanup(self):
        self.stop()
        shutil.rmtree(self.tmp, ignore_errors=True)


DICOMWEB_PLUGIN = os.environ.get("ORTHANC_DICOMWEB_PLUGIN",
                                 "/usr/share/orthanc/plugins/libOrthancDicomWeb.so")


class Orthanc(Proc):
    """Orthanc 1.10 (Debian) with a SQLite index in a temporary directory,
    DICOM and HTTP on free loopback ports, REST without authentication.

    dicomweb=True loads the DICOMweb plugin (Debian orthanc-dicomweb), which
    then serves DICOMweb under /dicom-web/ (self.dicomweb_url()); its client
    side gets dicomweb_servers ({name: base URL}) as DicomWeb.Servers."""

    def __init__(self, aet="ORTHANC", modalities=None, extra=None, dicomweb=False,
                 dicomweb_servers=None):
        self.tmp = tempfile.mkdtemp(prefix="orthanc-")
        self.port = free_port()
        self.http_port = free_port()
        self.aet = aet
        cfg = {
            "Name": "pacsd-test-peer",
            "StorageDirectory": os.path.join(self.tmp, "db"),
            "IndexDirectory": os.path.join(self.tmp, "db"),
            "DicomAet": aet,
            "DicomPort": self.port,
            "HttpPort": self.http_port,
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": False,
            "DicomServerEnabled": True,
            "DicomCheckCalledAet": False,
            "DicomModalities": modalities or {},
            "Plugins": [],
            "StorageCompression": False,
            "OverwriteInstances": True,
            "DicomScpTimeout": 30,
            "HttpTimeout": 60,
            "ConcurrentJobs": 2,
        }
        if dicomweb or dicomweb_servers:
            if not os.path.isfile(DICOMWEB_PLUGIN):
                raise RuntimeError("Orthanc DICOMweb plugin not found: %s (Debian package "
                                   "orthanc-dicomweb)" % DICOMWEB_PLUGIN)
            cfg["Plugins"] = [DICOMWEB_PLUGIN]
            cfg["DicomWeb"] = {"Enable": True, "Root": "/dicom-web/", "EnableWado": True,
                               "WadoRoot": "/wado",
                               "Servers": {k: [v] for k, v in (dicomweb_servers or {}).items()}}
        cfg.update(extra or {})
        self.config_path = os.path.join(self.tmp, "orthanc.json")
        with open(self.config_path, "w") as f:
            json.dump(cfg, f)
        super().__init__(["Orthanc", self.config_path], self.tmp)
        wait_port(self.http_port, 60, proc=self.p)
        wait_port(self.port, 30, proc=self.p)

    def url(self, path):
        return "http://127.0.0.1:%d%s" % (self.http_port, path)

    def dicomweb_url(self):
        """Base URL of the DICOMweb plugin's server side (no trailing /)."""
        return self.url("/dicom-web")

    def rest(self, method, path, body=None, timeout=120):
        """JSON in (dict/list, or bytes sent as is), JSON out (or bytes)."""
        data = body
        headers = {}
        if body is not None and not isinstance(body, (bytes, bytearray)):
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        req = urllib.request.Request(self.url(path), data=data, method=method, headers=headers)
        with urllib.request.urlopen(req, timeout=timeout) as r:
            raw = r.read()
        try:
            return json.loads(raw)
        except ValueError:
            return raw

    def cleanup(self):
        self.stop()
        shutil.rmtree(self.tmp, ignore_errors=True)


def run(args, timeout=300, check=False, **kw):
    """Runs a tool; returns CompletedProcess with text output."""
    r = subprocess.run(args, capture_output=True, text=True, timeout=timeout, **kw)
    if check and r.returncode != 0:
        raise RuntimeError("%s failed (%d): %s%s" % (args[0], r.returncode, r.stdout, r.stderr))
    return r


class Checks:
    """Counts checks and prints the summary line the test runner expects."""

    def __init__(self):
        self.passed = 0
        self.failed = 0

    def ok(self, cond, what, detail=""):
        if cond:
            self.passed += 1
        else:
            self.failed += 1
            print("FAIL: %s%s" % (what, (": " + str(detail)) if detail else ""), flush=True)
        return cond

    def eq(self, got, want, what):
        return self.ok(got == want, what, "got %r, want %r" % (got, want))

    def finish(self):
        print("%d passed, %d failed" % (self.passed, self.failed), flush=True)
        sys.exit(1 if self.failed else 0)


@atexit.register
def _stop_all():
    for p in list(_live):
        try:
            p.stop(timeout=10)
        except Exception:
            pass
