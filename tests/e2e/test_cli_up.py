"""`loyalty up` as a user runs it: starts everything, prints the key, stops every
child on SIGTERM, and starts again on the same data directory."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psutil

from services.runtime.embedded import free_port


def start_up(data_dir: Path, ports: dict[str, int]) -> subprocess.Popen[str]:
    args = [
        sys.executable,
        "-m",
        "services.cli",
        "up",
        "--data-dir",
        str(data_dir),
        "--broker-port",
        str(ports["broker"]),
    ]
    for name in ("ingest", "segmenter", "offers", "ledger", "insights", "console"):
        args += [f"--{name}-port", str(ports[name])]
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("LOYALTY_KAFKA_BOOTSTRAP", "LOYALTY_DATABASE_URL")
    }
    env["LOYALTY_DEMO_API_KEY"] = "lk_test_fixed_key"
    return subprocess.Popen(
        args, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )


def wait_for_line(proc: subprocess.Popen[str], needle: str, timeout_s: float = 120) -> str:
    assert proc.stdout is not None
    seen = []
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line and proc.poll() is not None:
            break
        seen.append(line)
        if needle in line:
            return "".join(seen)
    raise AssertionError(f"{needle!r} not printed; output:\n{''.join(seen)[-4000:]}")


def test_up_starts_stops_cleanly_and_restarts(tmp_path: Path) -> None:
    ports = {
        n: free_port()
        for n in ("broker", "ingest", "segmenter", "offers", "ledger", "insights", "console")
    }
    for attempt in range(2):
        proc = start_up(tmp_path / ".loyalty", ports)
        try:
            out = wait_for_line(proc, "demo tenant API key")
            assert "lk_test_fixed_key" in out
            assert f"console   http://127.0.0.1:{ports['console']}" in out
            children = psutil.Process(proc.pid).children(recursive=True)
            assert len(children) >= 6  # broker, postgres, five services
            event = {
                "specversion": "1.0",
                "id": f"e-{attempt}",
                "source": "t",
                "type": "product.login",
                "subject": "a1",
                "time": "2026-11-20T10:00:00Z",
                "data": {"user_id": "u"},
            }
            resp = httpx.post(
                f"http://127.0.0.1:{ports['ingest']}/v1/events",
                json=event,
                headers={"Authorization": "Bearer lk_test_fixed_key"},
                timeout=10,
            )
            assert resp.status_code == 202, resp.text
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(60)
        assert proc.returncode == 0
        _, alive = psutil.wait_procs(children, timeout=10)
        assert alive == [], f"orphans after SIGTERM: {alive}"
        # postgres daemonizes (not our child): it must be stopped all the same
        assert not (tmp_path / ".loyalty" / "pg" / "postmaster.pid").exists()
