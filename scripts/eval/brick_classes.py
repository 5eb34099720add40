#!/usr/bin/env python3
"""Writes src/catalog/brick_classes.txt: every Brick class with its direct superclasses, from the Brick.ttl that
the `brickschema` PyPI package ships. Run once when moving to a new Brick version (the build never runs Python):

    python3 -m venv /tmp/v && /tmp/v/bin/pip install brickschema==0.8.0
    /tmp/v/bin/python scripts/eval/brick_classes.py 1.4 > src/catalog/brick_classes.txt
"""
import sys, rdflib
from rdflib.namespace import RDF, RDFS, OWL
import brickschema, importlib.metadata as md
ver = sys.argv[1]
import os
path = os.path.join(os.path.dirname(brickschema.__file__), "ontologies", ver, "Brick.ttl")
g = rdflib.Graph(); g.parse(path, format="turtle")
B = "https://brickschema.org/schema/Brick#"
classes = {}
for s in set(g.subjects(RDF.type, OWL.Class)):
    s = str(s)
    if s.startswith(B):
        name = s[len(B):]
        parents = sorted(str(o)[len(B):] for o in g.objects(rdflib.URIRef(s), RDFS.subClassOf) if str(o).startswith(B))
        classes[name] = parents
print(f"# Brick Schema classes, one per line: CLASS followed by its direct superclasses (rdfs:subClassOf).")
print(f"# Generated from Brick {ver} (brickschema {md.version('brickschema')} from PyPI, brickschema/ontologies/{ver}/Brick.ttl)")
print(f"# by scripts/eval/brick_classes.py; {len(classes)} classes. Regenerate with that script, never by hand.")
for n in sorted(classes):
    print(" ".join([n] + classes[n]))
