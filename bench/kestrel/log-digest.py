#!/usr/bin/env python3
"""The distinct warnings and errors of a Kestrel console log, with counts: `log-digest.py SERVER.log [MAX]`.

An event starts at a line "warn: ", "fail: " or "crit: " (the console logger's format); it is keyed by its level and
category, its message (connection and request ids blanked), its exception's first line and the exception's first
frame. A log with no such event (a crash, say) is printed as it is, up to MAX lines.
"""
import re
import sys

path = sys.argv[1]
limit = int(sys.argv[2]) if len(sys.argv) > 2 else 12
events, current, plain = {}, None, []
with open(path, errors="replace") as f:
    for line in f:
        line = line.rstrip("\n")
        if re.match(r"^(warn|fail|crit): ", line):
            if current:
                events[tuple(current)] = events.get(tuple(current), 0) + 1
            current = [line.strip(), "", "", ""]
        elif current is not None:
            text = line.strip()
            if not current[1]:
                current[1] = re.sub(r'(Connection|Request) id "[^"]*"', r'\1 id "…"', text)
            elif not current[2] and re.match(r"^[\w.`]+(Exception|Error)\b", text):
                current[2] = text
            elif current[2] and not current[3] and text.startswith("at "):
                current[3] = text
        else:
            plain.append(line)
if current:
    events[tuple(current)] = events.get(tuple(current), 0) + 1
for (head, message, exception, frame), count in sorted(events.items(), key=lambda kv: -kv[1])[:limit]:
    print(f"{count:>8} x {head} {message}")
    if exception:
        print(f"{'':>11}{exception}")
    if frame:
        print(f"{'':>14}{frame}")
if len(events) > limit:
    print(f"{'':>11}... and {len(events) - limit} more kinds")
for line in plain[:limit * 4]:
    print(f"{'':>11}{line}")
