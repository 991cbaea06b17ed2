"""docs/config-reference.md is generated from the option tables: fail when it is stale."""
import os

from jnt import Checks, run_junction, SRC

t = Checks("docs")
code, out, err = run_junction(["describe", "--markdown"])
t.eq(code, 0, "describe --markdown runs")
path = os.path.join(SRC, "docs", "config-reference.md")
with open(path) as f:
    have = f.read()
t.check(have == out, "docs/config-reference.md is stale: regenerate it with\n"
        "   ./build/junction describe --markdown > docs/config-reference.md")
# Every row of a table has as many cells as its header (a '|' in a value must be escaped).
cols = None
for line in out.splitlines():
    if not line.startswith("|"):
        cols = None
        continue
    n = line.replace("\\|", "").count("|")
    if cols is None:
        cols = n
    t.check(n == cols, "row has %d cells, its table %d: %r" % (n - 1, cols - 1, line))
t.finish()
