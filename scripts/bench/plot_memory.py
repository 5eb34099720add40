#!/usr/bin/env python3
"""Draws docs/img/memory.svg from the JSON rows scripts/bench/memory.py writes: steady RSS (MB, left axis) and
CPU % (right axis) against live points on a log axis. Hand-written SVG, no plotting library.

usage: scripts/bench/plot_memory.py ROWS.json [OUT.svg] [TITLE]
"""
import json, math, sys

rows = json.load(open(sys.argv[1]))
out = sys.argv[2] if len(sys.argv) > 2 else "docs/img/memory.svg"
title = sys.argv[3] if len(sys.argv) > 3 else "caretaker run, all stages on: steady RSS and CPU by live points"
W, H, L, R, T, B = 640, 360, 64, 64, 40, 56
pw, ph = W - L - R, H - T - B
xs = [r["points"] for r in rows]
lo, hi = math.log10(min(xs)), math.log10(max(xs))
rss_max = max(40.0, max(r["rss_mb"] for r in rows)) * 1.15
cpu_max = max(10.0, max(r["cpu_pct"] for r in rows)) * 1.15


def x(p):
    return L + (math.log10(p) - lo) / ((hi - lo) or 1) * pw


def y(v, top):
    return T + ph - v / top * ph


s = [f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {W} {H}" width="{W}" height="{H}" '
     'font-family="sans-serif" font-size="12">',
     f'<rect width="{W}" height="{H}" fill="white"/>',
     f'<text x="{W / 2}" y="22" text-anchor="middle" font-size="14">{title}</text>',
     f'<line x1="{L}" y1="{T + ph}" x2="{L + pw}" y2="{T + ph}" stroke="#333"/>',
     f'<line x1="{L}" y1="{T}" x2="{L}" y2="{T + ph}" stroke="#333"/>',
     f'<line x1="{L + pw}" y1="{T}" x2="{L + pw}" y2="{T + ph}" stroke="#333"/>']
for i in range(6):
    v = rss_max * i / 5
    yy = y(v, rss_max)
    s.append(f'<line x1="{L}" y1="{yy:.1f}" x2="{L + pw}" y2="{yy:.1f}" stroke="#eee"/>')
    s.append(f'<text x="{L - 6}" y="{yy + 4:.1f}" text-anchor="end" fill="#1f5fa8">{v:.0f}</text>')
    c = cpu_max * i / 5
    s.append(f'<text x="{L + pw + 6}" y="{yy + 4:.1f}" fill="#c0392b">{c:.0f}</text>')
for p in xs:
    s.append(f'<text x="{x(p):.1f}" y="{T + ph + 18}" text-anchor="middle">{p:,}</text>')
s.append(f'<text x="{L + pw / 2}" y="{H - 14}" text-anchor="middle">live points (1,000 devices = 10,000 points, '
         'every 10 s; log scale)</text>')
s.append(f'<text x="16" y="{T + ph / 2}" transform="rotate(-90 16 {T + ph / 2})" text-anchor="middle" '
         'fill="#1f5fa8">RSS, MB</text>')
s.append(f'<text x="{W - 12}" y="{T + ph / 2}" transform="rotate(90 {W - 12} {T + ph / 2})" text-anchor="middle" '
         'fill="#c0392b">CPU, % of one core</text>')
# The 40 MB goal at 10,000 points.
gy = y(40, rss_max)
s.append(f'<line x1="{L}" y1="{gy:.1f}" x2="{L + pw}" y2="{gy:.1f}" stroke="#1f5fa8" stroke-dasharray="4 4"/>')
s.append(f'<text x="{L + 6}" y="{gy - 4:.1f}" fill="#1f5fa8">goal: 40 MB at 10,000 points</text>')
for key, top, colour in (("rss_mb", rss_max, "#1f5fa8"), ("cpu_pct", cpu_max, "#c0392b")):
    pts = " ".join(f"{x(r['points']):.1f},{y(r[key], top):.1f}" for r in rows)
    s.append(f'<polyline points="{pts}" fill="none" stroke="{colour}" stroke-width="2"/>')
    for r in rows:
        label = f"{r[key]:.1f}" + (" MB" if key == "rss_mb" else " %")
        s.append(f'<circle cx="{x(r["points"]):.1f}" cy="{y(r[key], top):.1f}" r="4" fill="{colour}"/>')
        s.append(f'<text x="{x(r["points"]) + 6:.1f}" y="{y(r[key], top) - 6:.1f}" fill="{colour}">{label}</text>')
s.append("</svg>")
open(out, "w").write("\n".join(s) + "\n")
print(f"wrote {out}")
