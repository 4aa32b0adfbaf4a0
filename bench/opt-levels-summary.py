#!/usr/bin/env python3
"""Summarises bench/opt-levels.sh: per bench row, each candidate's median CPU µs per message (broker
rows) or per reading (e2e rows), and its median ratio to mosquitto's throughput (broker rows) or its
median readings/s (e2e rows), over the rounds it ran. Usage: opt-levels-summary.py RESULTS_DIR CANDIDATE..."""
import glob
import os
import statistics
import sys


def rows(path):
    """(section, case) -> cells, from the markdown tables of one run."""
    found, section, header = {}, None, None
    for line in open(path, encoding="utf-8"):
        if line.startswith("## "):
            section, header = line[3:].strip(), None
        elif line.startswith("| case"):
            header = [c.strip() for c in line.strip().strip("|").split("|")]
        elif line.startswith("|") and header and not line.startswith("|---"):
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            found[(section, cells[0])] = dict(zip(header, cells))
    return found


def number(text):
    try:
        return float(text.replace(",", "").replace("*", ""))
    except ValueError:
        return None


def main():
    results, candidates = sys.argv[1], sys.argv[2:]
    runs = {c: [rows(p) for p in sorted(glob.glob(os.path.join(results, c, "round-*.md")))]
            for c in candidates}
    keys = []
    for run in runs[candidates[0]]:
        keys += [k for k in run if k not in keys]
    print("| row | " + " | ".join(f"{c} CPU µs | {c} x mosquitto (or readings/s)" for c in candidates) + " |")
    print("|---|" + "---:|---:|" * len(candidates))
    for key in keys:
        cells = []
        for c in candidates:
            cpu, ratio = [], []
            for run in runs[c]:
                row = run.get(key, {})
                for name, value in row.items():
                    if name.startswith("sensorgate CPU") or name.startswith("CPU µs"):
                        cpu.append(number(value))
                    if name in ("sensorgate / mosquitto", "readings/s"):
                        ratio.append(number(value))
            cpu = [v for v in cpu if v is not None]
            ratio = [v for v in ratio if v is not None]
            cells.append(f"{statistics.median(cpu):.1f}" if cpu else "-")
            middle = statistics.median(ratio) if ratio else None
            cells.append("-" if middle is None else f"{middle:,.0f}" if middle >= 100 else f"{middle:.2f}")
        print(f"| {key[1]} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
