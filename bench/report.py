#!/usr/bin/env python3
"""report.py - turns the benchmark result files into bench/results/wan.md (a table with each
target's PASS or FAIL) and wan.png (goodput per case, Slipstream beside the TCP variants).

    python3 bench/report.py wan RESULTS_DIR

Reads wan-slipstream.jsonl, wan-tcp.jsonl and, when present, loopback.jsonl and s3-ingest.txt
(the output of s3-ingest/run.sh, as bench/run.sh saves it).
The plot needs matplotlib; without it the table is still written and the plot is skipped.
"""
import json
import os
import sys


def rows(path):
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def case_name(owd, loss):
    return f"{owd:g} ms / {loss * 100:g} %"


def main():
    if len(sys.argv) != 3 or sys.argv[1] != "wan":
        sys.exit("usage: report.py wan RESULTS_DIR")
    results = sys.argv[2]
    slip = rows(os.path.join(results, "wan-slipstream.jsonl"))
    tcp = rows(os.path.join(results, "wan-tcp.jsonl"))
    loop = rows(os.path.join(results, "loopback.jsonl"))
    verdicts = []
    lines = ["# WAN benchmark (1 Gbit/s bottleneck, wanemu)", "",
             "Goodput in Mbit/s; CPU in % of one core over the transfer; load1 = the machine's 1-minute "
             "load average at the start of the Slipstream transfer (2 vCPUs shared by both servers, "
             "the emulator and whatever else runs). TCP = iperf3, same run, same emulator settings. "
             "`send rate` is createTransfer's sendRate in kbit/s.", "",
             "| one-way delay / loss | Slipstream | send rate | identical | load1 | CPU send / recv / emu | "
             "best TCP | ratio | CUBIC default | CUBIC 64 MiB | BBR default | BBR 64 MiB |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    plot = []
    for s in slip:
        owd, loss = s["owd_ms"], s["loss_a2b"]
        same = [t for t in tcp if t.get("owd_ms") == owd and t.get("loss_a2b") == loss]
        by = {(t["cc"], t["bufs"]): t.get("mbps", 0.0) or 0.0 for t in same}
        best = max(by.values(), default=0.0)
        ratio = s["mbps"] / best if best else float("inf")
        lines.append(
            f"| {case_name(owd, loss)} | {s['mbps']:.1f} | {s.get('send_rate_kbps', '')} | "
            f"{'yes' if s.get('identical') else 'NO'} | {s.get('load1_start', s.get('load1', ''))} | "
            f"{s.get('cpu_snd_pct', 0)} / {s.get('cpu_rcv_pct', 0)} / {s.get('cpu_emu_pct', 0)} | "
            f"{best:.1f} | {ratio:.2f}× | "
            + " | ".join(f"{by.get(k, 0.0):.1f}" for k in
                         [("cubic", "default"), ("cubic", "64m"), ("bbr", "default"), ("bbr", "64m")])
            + " |")
        label = case_name(owd, loss)
        if len([x for x in slip if x["owd_ms"] == owd and x["loss_a2b"] == loss]) > 1:
            label += f"\nsendRate {s.get('send_rate_kbps', 0) / 1000:g}M"
        plot.append((label, s["mbps"], by))
        setting = f", sendRate {s.get('send_rate_kbps')} kbit/s" if s.get("send_rate_kbps") else ""
        good = s.get("ok", True) and s.get("identical", True)
        if owd == 50 and loss == 0.01:
            verdicts.append((f"≥ 850 Mbit/s at 50 ms / 1 %{setting}", good and s["mbps"] >= 850,
                             f"{s['mbps']:.1f}"))
        if owd == 50 and loss == 0.01 and best:
            verdicts.append((f"≥ 1.3× best TCP at 50 ms / 1 %{setting}", good and ratio >= 1.3,
                             f"{ratio:.2f}× of {best:.1f}"))
        if owd == 50 and loss == 0:
            verdicts.append((f"≥ 900 Mbit/s at 50 ms / 0 %{setting}", good and s["mbps"] >= 900,
                             f"{s['mbps']:.1f}"))
    if loop:
        ciphers = {0: "none", 1: "authenticated", 2: "AES-128-GCM", 3: "AES-256-GCM"}
        lines += ["", "## Loopback (127.0.0.1, no emulator)", "", "| what | Mbit/s | load1 |", "|---|---|---|"]
        for r in loop:
            if r["tool"] == "slipstream":
                lines.append(f"| Slipstream, cipher level {r['cipher']} ({ciphers.get(r['cipher'], '?')}) | "
                             f"{r['mbps']} | {r.get('load1', '')} |")
            elif r["tool"] == "iperf3-udp":
                lines.append(f"| iperf3 UDP paced at {r['offered_mbps']} Mbit/s (lost {float(r['lost_percent']):.2f} %) | "
                             f"{r['mbps']} | {r.get('load1', '')} |")
            elif r["tool"] == "iperf3-udp-lossless":
                lines.append(f"| **iperf3 UDP, highest rate with < 0.1 % loss** | {r['mbps']} | {r.get('load1', '')} |")
        aes = [r["mbps"] for r in loop if r["tool"] == "slipstream" and r["cipher"] == 3]
        udp = [r["mbps"] for r in loop if r["tool"] == "iperf3-udp-lossless"]
        if aes and udp:
            verdicts.append(("loopback AES-256-GCM ≥ iperf3 UDP lossless", float(aes[0]) >= float(udp[0]),
                             f"{aes[0]} vs {udp[0]}"))
    s3 = os.path.join(results, "s3-ingest.txt")
    if os.path.exists(s3):
        with open(s3) as f:
            text = f.read()
        lines += ["", "## S3 ingest (`s3-ingest/run.sh`)", "", "```", text.strip(), "```"]
        for line in text.splitlines():
            if line.startswith(("PASS:", "FAIL:")):
                verdicts.append(("S3 ingest ≥ 0.9× aws s3 cp and peak RSS ≤ cache + 64 MiB",
                                 line.startswith("PASS"), line.split(":", 1)[1].strip()))
    lines += ["", "## Targets", ""]
    for name, ok, value in verdicts:
        lines.append(f"- {'PASS' if ok else 'FAIL'}: {name} (measured {value})")
    with open(os.path.join(results, "wan.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    for name, ok, value in verdicts:
        print(f"{'PASS' if ok else 'FAIL'}: {name} (measured {value})")
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib missing: wan.png not written", file=sys.stderr)
        return
    labels = [p[0] for p in plot]
    series = [("Slipstream", [p[1] for p in plot])]
    for key, label in [(("cubic", "default"), "CUBIC"), (("cubic", "64m"), "CUBIC 64 MiB"),
                       (("bbr", "default"), "BBR"), (("bbr", "64m"), "BBR 64 MiB")]:
        series.append((label, [p[2].get(key, 0.0) for p in plot]))
    fig, ax = plt.subplots(figsize=(max(9, 1.5 * len(labels)), 4.8))
    width = 0.8 / len(series)
    for i, (label, values) in enumerate(series):
        ax.bar([x + i * width for x in range(len(labels))], values, width, label=label)
    ax.set_xticks([x + 0.4 - width / 2 for x in range(len(labels))])
    ax.set_xticklabels(labels, fontsize=8)
    ax.set_ylabel("goodput, Mbit/s")
    ax.set_title("1 Gbit/s link through wanemu: Slipstream vs iperf3 TCP")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.tight_layout()
    fig.savefig(os.path.join(results, "wan.png"), dpi=100)


if __name__ == "__main__":
    main()
