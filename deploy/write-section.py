#!/usr/bin/env python3
"""Replaces the text between `<!-- NAME:begin -->` and `<!-- NAME:end -->` in FILE
with TEXT, so generated figures sit beside hand-written analysis.

Usage: write-section.py FILE NAME TEXT
"""
import re
import sys

path, name, body = sys.argv[1:4]
begin, end = f"<!-- {name}:begin -->", f"<!-- {name}:end -->"
text = open(path).read()
if begin not in text or end not in text:
    sys.exit(f"{path}: markers {begin} and {end} not found; add them where the section goes")
text = re.sub(re.escape(begin) + ".*?" + re.escape(end), lambda _: f"{begin}\n{body}\n{end}", text, flags=re.S)
open(path, "w").write(text)
print(f"wrote the {name} section of {path}")
