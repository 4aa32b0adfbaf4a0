"""Drives a headless Chromium through the DevTools protocol on a pipe (--remote-debugging-pipe: it reads
commands on fd 3 and writes answers on fd 4, each a JSON text ended by a NUL byte), so that a test can
click the page's buttons and read the DOM the script made.

Usage: cdp.py URL PROFILE_DIR < steps.json, where steps.json is a list of JavaScript function bodies; each
runs in the page as an async function (it may await, poll and return a value). Before the first step the
page's script must have finished (body[data-loaded="yes"]). Prints the steps' return values as one JSON
list. Everything is bounded: each step 20 s, the whole run 90 s; the Chromium started here is stopped by
its PID."""
import json
import os
import signal
import subprocess
import sys
import time

url, profile = sys.argv[1], sys.argv[2]
steps = json.load(sys.stdin)
deadline = time.monotonic() + 90

commands_read, commands_write = os.pipe()
answers_read, answers_write = os.pipe()


def pipes_at_3_and_4():
    # Out of the way first, so that dup2 onto 3 or 4 cannot close the other pipe end.
    reading, writing = os.dup(commands_read), os.dup(answers_write)
    high_reading, high_writing = os.dup2(reading, 100), os.dup2(writing, 101)
    os.dup2(high_reading, 3)
    os.dup2(high_writing, 4)


chromium = subprocess.Popen(
    ["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
     "--disable-extensions", "--disable-dev-shm-usage", "--remote-debugging-pipe",
     "--user-data-dir=" + profile, "about:blank"],
    stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    # close_fds=False: the descriptors 3 and 4 made in pipes_at_3_and_4 must survive the exec.
    preexec_fn=pipes_at_3_and_4, close_fds=False)
os.close(commands_read)
os.close(answers_write)
pending = b""
next_id = 0


def stop(code, message=None):
    chromium.send_signal(signal.SIGKILL)
    chromium.wait()
    if message:
        sys.stderr.write(message + "\n")
    sys.exit(code)


def call(method, params=None, session=None, fail=True):
    global next_id, pending
    next_id += 1
    request = {"id": next_id, "method": method, "params": params or {}}
    if session:
        request["sessionId"] = session
    os.write(commands_write, json.dumps(request).encode() + b"\0")
    while True:
        while b"\0" in pending:
            text, pending = pending.split(b"\0", 1)
            answer = json.loads(text)
            if answer.get("id") == next_id:
                if "error" in answer:
                    if fail:
                        stop(1, f"{method}: {answer['error']}")
                    return None
                return answer["result"]
        if time.monotonic() > deadline:
            stop(1, f"{method}: no answer in time")
        chunk = os.read(answers_read, 65536)
        if not chunk:
            stop(1, "chromium closed the pipe")
        pending += chunk


def evaluate(session, body, within=20):
    wrapped = ("(async () => { const until = async (check, ms = %d) => { const end = Date.now() + ms;"
               " for (;;) { const v = await check(); if (v) return v; if (Date.now() > end) throw new Error('not within ' + ms + ' ms: ' + check); await new Promise(r => setTimeout(r, 100)); } };"
               " %s })()") % (within * 1000, body)
    result = call("Runtime.evaluate", {"expression": wrapped, "awaitPromise": True,
                                       "returnByValue": True, "timeout": within * 1000}, session)
    if "exceptionDetails" in result:
        stop(1, "step failed: " + json.dumps(result["exceptionDetails"])[:2000] + "\nstep: " + body)
    return result["result"].get("value")


target = call("Target.createTarget", {"url": url})["targetId"]
session = call("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
# Until the page's script has run; the context may be replaced meanwhile (the navigation from about:blank).
while True:
    loaded = call("Runtime.evaluate", {"expression": "document.body && document.body.dataset.loaded",
                                       "returnByValue": True}, session, fail=False)
    if loaded and loaded["result"].get("value") == "yes":
        break
    if time.monotonic() > deadline:
        stop(1, "the page never finished loading")
    time.sleep(0.1)
results = [evaluate(session, step) for step in steps]
json.dump(results, sys.stdout)
stop(0)
