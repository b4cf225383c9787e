#!/usr/bin/env python3
"""textstats: facts about a text file, as JSON (runs inside a Paddock sandbox in scripts/demo.sh).

The host checks each fact with its own tools: sha256sum, wc -c, wc -l, and the word total of
wordfreq.c's definition (maximal runs of ASCII letters).
    usage: textstats.py FILE
"""
import hashlib
import json
import platform
import re
import sys


def main() -> int:
    if len(sys.argv) != 2:
        print(f"usage: {sys.argv[0]} FILE", file=sys.stderr)
        return 2
    with open(sys.argv[1], "rb") as f:
        data = f.read()
    words = re.findall(rb"[A-Za-z]+", data)
    json.dump({
        "sha256": hashlib.sha256(data).hexdigest(),
        "bytes": len(data),
        "lines": data.count(b"\n"),
        "words": len(words),
        "distinct_words": len({w.lower() for w in words}),
        "hostname": platform.node(),
        "python": platform.python_version(),
    }, sys.stdout, sort_keys=True)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
