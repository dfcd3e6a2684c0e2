"""`vpclab capture`: dumpcap inside a node, until Ctrl-C, a packet count or a number of seconds."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from vpclab.daemon.client import Lab
from vpclab.wording import counted

# dumpcap's own chatter on stderr, which says nothing the user asked for
_CHATTER = ("Capturing on ", "File: ", "Packets captured: ", "Packets received/dropped ")


def capture(lab: Lab, args) -> int:
    dumpcap = ["dumpcap", "-q", "-P", "-i", args.interface, "-w", "-"]
    if args.count:
        dumpcap += ["-c", str(args.count)]
    if args.seconds:
        dumpcap += ["-a", f"duration:{args.seconds}"]
    if args.filter:
        dumpcap += ["-f", " ".join(args.filter)]
    argv = lab.nsenter(args.node) + dumpcap
    bound = " or ".join(b for b in (args.count and counted(args.count, "packet"),
                                    args.seconds and f"{args.seconds} s") if b)
    for sig in (signal.SIGTERM, signal.SIGHUP):  # the children will not hear these: stop them as for Ctrl-C
        signal.signal(sig, _interrupt)
    # Each child in a session of its own: Ctrl-C reaches only us, and we stop dumpcap so it
    # completes its pcap; tcpdump then ends at the end of its input, not interrupted.
    out = open(args.write, "wb") if args.write else subprocess.PIPE
    dump = subprocess.Popen(argv, stdout=out, stderr=subprocess.PIPE, start_new_session=True)
    decoder = None
    if args.write:
        out.close()
    else:  # decode on the host side: tcpdump cannot drop privileges inside a user namespace
        decoder = subprocess.Popen(["tcpdump", "-n", "-l", "-r", "-"], stdin=dump.stdout,
                                   stderr=subprocess.DEVNULL, start_new_session=True)
        dump.stdout.close()
    said: list[str] = []  # dumpcap's stderr: "File: -" once its capture is open and filtered, or its error
    interrupted = False
    try:
        try:
            for line in dump.stderr:
                said.append(line.decode(errors="replace"))
                if said[-1].startswith("File: "):
                    print(f"capturing on {args.node} {args.interface} until {bound or 'Ctrl-C'}",
                          file=sys.stderr, flush=True)
                    break
            code = dump.wait()
        except KeyboardInterrupt:
            interrupted = True
            code = _stop_group(dump, signal.SIGINT)
        if decoder is not None:
            code = code or decoder.wait(timeout=30)
    finally:
        for child in (dump, decoder):
            if child is not None and child.poll() is None:
                _stop_group(child, signal.SIGKILL)
    if interrupted:
        return 0  # Ctrl-C is how an unbounded capture ends
    if code:
        said += dump.stderr.read().decode(errors="replace").splitlines()
        errors = [line.rstrip() for line in said if line.strip() and not line.startswith(_CHATTER)]
        print("\n".join(errors) or f"capture failed ({code})", file=sys.stderr)
    return code


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


def _stop_group(child: subprocess.Popen, sig: int, timeout: float = 10.0) -> int:
    """Signal a child's process group (nsenter, nsenter, dumpcap) and wait until all of it is gone."""
    try:
        os.killpg(child.pid, sig)
    except ProcessLookupError:
        pass
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        child.poll()
        try:
            os.killpg(child.pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.02)
    else:
        os.killpg(child.pid, signal.SIGKILL)
    return child.wait()
