"""Merge the clients' result files into the table client x operation x market.

usage: report.py RESULTS_DIR CLIENT...   (CLIENT = the client names expected, in table order)

Exit status 1 on any FAIL, on a missing result (a client script that crashed or timed out), and
on a KNOWN whose id is not listed in KNOWN.md (a known limitation must be written down).
"""

import json
import os
import re
import sys

from common import MARKETS, OPS

HERE = os.path.dirname(os.path.abspath(__file__))


def main():
    results_dir, clients = sys.argv[1], sys.argv[2:]
    rows = {}
    for name in sorted(os.listdir(results_dir)):
        if name.endswith(".json"):
            with open(os.path.join(results_dir, name)) as f:
                for r in json.load(f):
                    rows[(r["client"], r["op"], r["market"])] = r
    with open(os.path.join(HERE, "KNOWN.md")) as f:
        known_doc = f.read()
    listed = set(re.findall(r"^##\s+`([^`]+)`", known_doc, re.M))

    ops = OPS
    only = os.environ.get("INTEROP_ONLY")
    if only:
        ops = [(op, label) for op, label in OPS if op in only.split(",")]
    failures = 0
    cw = max(len(c) for c in clients) + 2
    ow = max(len(label) for _, label in ops) + 2
    header = f"{'client':<{cw}}{'operation':<{ow}}" + "".join(f"{m:<8}" for m in MARKETS)
    print()
    print(header)
    print("-" * len(header))
    notes, na_notes = [], []
    for client in clients:
        for op, label in ops:
            cells = []
            for m in MARKETS:
                r = rows.get((client, op, m))
                if r is None:
                    r = {"status": "FAIL", "detail": "no result: the client's script crashed or timed "
                         "out before this check (see its log above)"}
                    rows[(client, op, m)] = r
                st = r["status"]
                if st == "KNOWN" and r.get("known_id") not in listed:
                    r["detail"] = f"KNOWN id {r.get('known_id')!r} is not listed in KNOWN.md: " + r["detail"]
                    st = r["status"] = "FAIL"
                if st == "FAIL":
                    failures += 1
                cells.append(st)
                if st == "N/A":
                    na = f"N/A   {client} / {m}: {r.get('detail', '')}"
                    if na not in na_notes:
                        na_notes.append(na)
                elif st != "PASS":
                    tag = f" [{r['known_id']}]" if st == "KNOWN" else ""
                    notes.append(f"{st:<5} {client} / {label} / {m}{tag}: {r.get('detail', '')}")
            print(f"{client:<{cw}}{label:<{ow}}" + "".join(f"{c:<8}" for c in cells))
        print()
    counts = {}
    for r in rows.values():
        counts[r["status"]] = counts.get(r["status"], 0) + 1
    if notes or na_notes:
        print("Details (everything that is not PASS):")
        for n in na_notes + notes:
            print("  " + n)
        print()
    passed = counts.get("PASS", 0)
    print(f"({counts.get('KNOWN', 0)} KNOWN and {counts.get('N/A', 0)} N/A counted as skipped)")
    print(f"interop: {passed} passed, {counts.get('FAIL', 0)} failed, "
          f"{counts.get('KNOWN', 0) + counts.get('N/A', 0)} skipped")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
