#!/usr/bin/env python3
"""Fails when the module layout breaks its two rules (ARCHITECTURE.md, "Layers"):

1. no import cycle between modules (files), and
2. no import from a lower layer to a higher one, unless the importing line (or the line above it) carries a
   comment `// layer: <why>`.

It reads `crate::`, `super::` and `self::` paths from the code itself (comments, strings and `#[cfg(test)]`
items left out), resolves each to the file of the module it names (following `pub use` re-exports one level),
and checks the graph. A parent module declaring or re-exporting its own children is containment, not an import.

    python3 scripts/check-layers.py          # exit 0 and a one-line summary, or 1 and every problem
    python3 scripts/check-layers.py --graph  # also print every edge (file -> file: names)
    python3 scripts/check-layers.py --self-test  # proves it catches a cycle and an upward import
"""
import os
import re
import sys

SRC = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src")

# Top-level modules by layer, top (0) to bottom. A module may import from its own layer or any layer below.
LAYERS = [
    ["main"],
    ["cli"],
    ["demo"],
    ["app"],
    ["config"],
    ["api"],
    ["sources"],
    ["work_orders"],
    ["rules"],
    ["anomaly", "energy"],
    ["pipeline"],
    ["sinks"],
    ["catalog", "reading"],
    ["watchdog"],
    ["telemetry"],
    ["diag", "line_protocol"],
    ["util", "tls", "tabular", "journal"],
]
RANK = {m: i for i, layer in enumerate(LAYERS) for m in layer}


def strip_code(text):
    """Blanks comments, string and char literals (keeping newlines and `// layer:` markers' lines)."""
    out = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if text.startswith("//", i):
            j = text.find("\n", i)
            j = n if j < 0 else j
            comment = text[i:j]
            out.append("//LAYER" if "layer:" in comment else "")
            i = j
        elif text.startswith("/*", i):
            depth, j = 1, i + 2
            while j < n and depth:
                if text.startswith("/*", j):
                    depth, j = depth + 1, j + 2
                elif text.startswith("*/", j):
                    depth, j = depth - 1, j + 2
                else:
                    j += 1
            out.append("\n" * text.count("\n", i, j))
            i = j
        elif c == "r" and re.match(r'r#*"', text[i:i + 10]) and not re.match(r"\w", text[i - 1] if i else " "):
            m = re.match(r'r(#*)"', text[i:])
            end = '"' + m.group(1)
            j = text.find(end, i + len(m.group(0)))
            j = n if j < 0 else j + len(end)
            out.append('""' + "\n" * text.count("\n", i, j))
            i = j
        elif c == '"':
            j = i + 1
            while j < n and text[j] != '"':
                j += 2 if text[j] == "\\" else 1
            out.append('""' + "\n" * text.count("\n", i, j))
            i = j + 1
        elif c == "'":
            m = re.match(r"'(\\.[^']*|[^\\'])'", text[i:])
            if m:  # a char literal; otherwise a lifetime
                out.append("' '")
                i += len(m.group(0))
            else:
                out.append(c)
                i += 1
        else:
            out.append(c)
            i += 1
    return "".join(out)


def drop_test_items(code):
    """Removes `#[cfg(test)]` items (test modules and helpers): they may use anything."""
    while True:
        m = re.search(r"#\[cfg\(test\)\]", code)
        if not m:
            return code
        j = m.end()
        # the item ends at its matching closing brace, or at `;` for a one-line item
        k = j
        while k < len(code) and code[k] not in "{;":
            k += 1
        if k < len(code) and code[k] == "{":
            depth = 0
            while k < len(code):
                if code[k] == "{":
                    depth += 1
                elif code[k] == "}":
                    depth -= 1
                    if depth == 0:
                        break
                k += 1
        code = code[:m.start()] + "\n" * code.count("\n", m.start(), k + 1) + code[k + 1:]


def modules():
    mods = {}
    for root, _, files in os.walk(SRC):
        for f in files:
            if not f.endswith(".rs"):
                continue
            path = os.path.join(root, f)
            rel = os.path.relpath(path, SRC)[:-3].split(os.sep)
            if rel[-1] == "mod":
                rel = rel[:-1]
            if rel == ["lib"]:
                rel = []
            mods[tuple(rel)] = path
    return mods


def expand_use(body):
    """`a::{b, c::{d, e}}` -> ['a::b', 'a::c::d', 'a::c::e']."""
    body = re.sub(r"\s+", "", body)
    m = re.match(r"^([\w:]*?)\{(.*)\}$", body)
    if not m:
        return [body]
    prefix, inner = m.group(1), m.group(2)
    parts, depth, cur = [], 0, ""
    for ch in inner:
        if ch == "," and depth == 0:
            parts.append(cur)
            cur = ""
            continue
        depth += ch == "{"
        depth -= ch == "}"
        cur += ch
    parts.append(cur)
    out = []
    for p in parts:
        if p:
            out.extend(prefix + q for q in expand_use(p))
    return out


def paths_in(code):
    """(line, path) of every crate/super/self path, `use` groups expanded."""
    found = []
    for m in re.finditer(r"\buse\s+((?:crate|super|self)\b[^;]*);", code):
        line = code.count("\n", 0, m.start()) + 1
        for p in expand_use(m.group(1)):
            found.append((line, re.sub(r"\s+as\s+\w+$", "", p.split(" as ")[0])))
    for m in re.finditer(r"\b((?:crate|super)(?:::\w+)+)", code):
        before = code[max(0, m.start() - 200):m.start()]
        if re.search(r"\buse\s+[^;]*$", before):
            continue  # inside a use statement, done above
        found.append((code.count("\n", 0, m.start()) + 1, m.group(1)))
    return found


def resolve(mod, path, mods):
    segs = path.split("::")
    if segs[0] == "crate":
        base, rest = [], segs[1:]
    else:
        base = list(mod)
        rest = segs
        while rest and rest[0] in ("super", "self"):
            if rest[0] == "super":
                base = base[:-1]
            rest = rest[1:]
    cur = tuple(base)
    for s in rest:
        if cur + (s,) in mods:
            cur = cur + (s,)
        else:
            return cur, s
    return cur, None


def self_test():
    """Runs the check on small made-up trees: a clean one passes, a cycle and an upward import fail."""
    import subprocess
    import tempfile

    cases = {
        "clean": ({"lib.rs": "pub mod app; pub mod util;", "app.rs": "use crate::util::f;",
                   "util.rs": "pub fn f() {}"}, 0, None),
        "cycle": ({"lib.rs": "pub mod rules; pub mod energy;", "rules.rs": "use crate::energy::E;",
                   "energy.rs": "pub struct E; pub fn g() { crate::rules::h() }"}, 1, "import cycle"),
        "upward": ({"lib.rs": "pub mod app; pub mod util;", "util.rs": "use crate::app::run;",
                    "app.rs": "pub fn run() {}"}, 1, "layer `app` is above `util`"),
        "upward, said why": ({"lib.rs": "pub mod app; pub mod util;",
                              "util.rs": "// layer: a test of the marker\nuse crate::app::run;",
                              "app.rs": "pub fn run() {}"}, 0, None),
        "in a string or a test": ({"lib.rs": "pub mod app; pub mod util;",
                                   "util.rs": 'const S: &str = "crate::app::run";\n#[cfg(test)]\nmod tests { use crate::app::run; }',
                                   "app.rs": "pub fn run() {}"}, 0, None),
    }
    failed = 0
    for name, (files, want_rc, want_text) in cases.items():
        with tempfile.TemporaryDirectory() as d:
            for f, text in files.items():
                open(os.path.join(d, f), "w").write(text + "\n")
            r = subprocess.run([sys.executable, __file__, "--src", d], capture_output=True, text=True)
            ok = r.returncode == want_rc and (want_text is None or want_text in r.stdout)
            print(f"self-test {name}: {'ok' if ok else 'FAILED'}")
            if not ok:
                print(r.stdout + r.stderr)
                failed += 1
    return 1 if failed else 0


def main():
    global SRC
    if "--self-test" in sys.argv:
        return self_test()
    if "--src" in sys.argv:
        SRC = sys.argv[sys.argv.index("--src") + 1]
    mods = modules()
    codes, raw_lines = {}, {}
    for mod, path in mods.items():
        text = open(path, encoding="utf-8").read()
        codes[mod] = drop_test_items(strip_code(text))
        raw_lines[mod] = codes[mod].split("\n")
    # `pub use x::Name` re-exports, so `crate::m::Name` resolves to the file that defines Name.
    reexports = {}
    for mod, code in codes.items():
        for m in re.finditer(r"\bpub\s+use\s+([^;]*);", code):
            for p in expand_use(m.group(1)):
                p = p.split(" as ")[0].strip()
                name = p.split("::")[-1]
                target, _ = resolve(mod, p if p.startswith(("crate", "super", "self")) else "self::" + p, mods)
                if target != mod:
                    reexports[(mod, name)] = target
    edges = {}
    for mod, code in codes.items():
        for line, p in paths_in(code):
            target, name = resolve(mod, p, mods)
            target = reexports.get((target, name), target)
            if target == mod or target == () or target[: len(mod)] == mod:
                continue  # itself, the crate root, or its own children (containment)
            marked = any("//LAYER" in raw_lines[mod][k] for k in (line - 1, line - 2) if 0 <= k < len(raw_lines[mod]))
            edges.setdefault((mod, target), []).append((line, name or p.split("::")[-1], marked))
    problems = []
    # 1. cycles (Tarjan's strongly connected components)
    graph = {}
    for (a, b) in edges:
        graph.setdefault(a, set()).add(b)
    index, low, stack, on, sccs, counter = {}, {}, [], set(), [], [0]

    def strong(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                sccs.append(comp)

    sys.setrecursionlimit(10000)
    for v in list(graph):
        if v not in index:
            strong(v)
    name = lambda m: os.path.relpath(mods[m], os.path.join(SRC, ".."))
    for comp in sccs:
        problems.append("import cycle: " + ", ".join(sorted(name(m) for m in comp)))
        for (a, b), uses in sorted(edges.items()):
            if a in comp and b in comp:
                problems.append(f"  {name(a)} -> {name(b)}: " + ", ".join(sorted({u[1] for u in uses})))
    # 2. layers
    for (a, b), uses in sorted(edges.items()):
        ta, tb = (a[0] if a else "lib"), (b[0] if b else "lib")
        if os.path.basename(mods[a]) == "main.rs":
            ta = "main"
        if ta not in RANK or tb not in RANK:
            missing = ta if ta not in RANK else tb
            problems.append(f"{name(a)} -> {name(b)}: top-level module `{missing}` has no layer in scripts/check-layers.py")
            continue
        if RANK[tb] < RANK[ta]:
            unmarked = [u for u in uses if not u[2]]
            if unmarked:
                problems.append(
                    f"{name(a)}:{unmarked[0][0]} imports {', '.join(sorted({u[1] for u in unmarked}))} from "
                    f"{name(b)}: layer `{tb}` is above `{ta}` (move the item down, or say why with `// layer: ...`)"
                )
    if "--graph" in sys.argv:
        for (a, b), uses in sorted(edges.items()):
            print(f"{name(a)} -> {name(b)}: {', '.join(sorted({u[1] for u in uses}))}")
    if problems:
        print("\n".join(problems))
        print(f"layout check failed: {len(problems)} problem(s)")
        return 1
    print(f"layout ok: {len(mods)} modules, {len(edges)} imports between them, no cycle, layers respected")
    return 0


if __name__ == "__main__":
    sys.exit(main())
