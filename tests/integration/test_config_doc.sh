#!/bin/bash
# conf/nlpd.conf and `nlpd config-doc` must not drift: every key config-doc prints for the daemon's sections and
# for every stage appears in the annotated file (stages that need folders `make models` does not fetch as commented
# blocks), every field a `when` condition knows (the list nlpd's own error message gives) is named in it, it refers
# to no .md document that is not in the repository, the keys it flags "restart required" (and
# only those) say so in the file, and the file passes `nlpd check`.
# usage: tests/integration/test_config_doc.sh [path/to/nlpd]   Prints `N passed, N failed`.
set -u
cd "$(dirname "$0")/../.." || exit 2
. tests/lib.sh
NLPD=${1:-build/nlpd}
if out=$(python3 - "$NLPD" << 'PY' 2>&1
import re, subprocess, sys
doc = subprocess.run([sys.argv[1], "config-doc"], capture_output=True, text=True, check=True).stdout
conf = open("conf/nlpd.conf").read()
# Section bodies of the file (top-level "name: {" ... "};") and the stage groups in pipeline.
sections = {m.group(1): m.group(2) for m in re.finditer(r"^(\w+): \{(.*?)^\};", conf, re.S | re.M)}
missing = []
for key in re.findall(r"^  (\w+)\.(\w+)  \(", doc, re.M):
    sec, name = key
    if sec in sections:
        if not re.search(r"^\s*#?\s*%s\s*=" % name, sections[sec], re.M):
            missing.append(f"{sec}.{name}")
    elif sec not in sections and not re.search(r"^\s*#?\s*%s\s*=" % name, conf, re.M):
        missing.append(f"{sec}.{name}")
# Keys of a group inside a section (input.schema_registry.url): documented inside that section.
for sec, sub, name in re.findall(r"^  (\w+)\.(\w+)\.(\w+)  \(", doc, re.M):
    body = sections.get(sec, conf)  # a stage's group (shadow, canary): documented once for every stage
    if not re.search(r"^\s*#?\s*%s\s*=" % sub, body, re.M) or not re.search(r"^\s*(#\s*)*%s\s*=" % name, body, re.M):
        missing.append(f"{sec}.{sub}.{name}")
stages = re.findall(r'^stage "(\w+)"', doc, re.M)
assert len(stages) >= 5, "config-doc lists %d stages" % len(stages)
missing += ['stage "%s"' % st for st in stages if not re.search(r'^\s*#?\s*stage = "%s";' % st, conf, re.M)]
assert not missing, "not documented in conf/nlpd.conf: " + ", ".join(missing)
# The when fields: ask nlpd (an unknown field's error lists the known ones).
import os, tempfile
with tempfile.NamedTemporaryFile("w", suffix=".conf", delete=False) as f:
    f.write('pipeline = ( { stage = "langid"; model = "models/lid.176.ftz"; when = "no.such_field == 1"; } );\n')
err = subprocess.run([sys.argv[1], "check", "-c", f.name], capture_output=True, text=True).stderr
os.unlink(f.name)
fields = re.findall(r"\b([a-z_]+\.[a-z_]+)\b", err.split("no.such_field", 1)[-1])
assert len(fields) >= 5, "no list of when fields in: " + err
head = conf[conf.index("# The stages, run in this order") : conf.index("pipeline = (")]
missing = [fl for fl in fields if fl not in head]
assert not missing, "when fields not named above pipeline in conf/nlpd.conf: " + ", ".join(missing)
# No reference to a document that is not in the repository.
docs = [d for d in re.findall(r"\b([\w/.-]+\.md)\b", conf) if not os.path.exists(d)]
assert not docs, "conf/nlpd.conf refers to documents not in the repository: " + ", ".join(docs)
# Keys config-doc flags "restart required" (a reload that changes one is refused) say "(restart required)" in the
# comment just above them in the file, and no other key does.
def comment_above(body, name):
    lines = body.split("\n")
    for i, ln in enumerate(lines):
        if re.match(r"^\s*#?\s*%s\s*=" % name, ln):
            block = []
            j = i - 1
            while j >= 0 and lines[j].strip().startswith("#") and not re.match(r"^\s*#\s*\w+\s*=", lines[j]):
                block.append(lines[j])
                j -= 1
            return "\n".join(block)
    return ""
wrong = []
restart = 0
for sec, name, rest in re.findall(r"^  (\w+)\.(\w+)  \((.*)$", doc, re.M):
    if sec not in sections:
        continue
    flagged = "restart required" in rest
    restart += flagged
    if flagged != ("(restart required" in comment_above(sections[sec], name)):
        wrong.append(f"{sec}.{name} ({'restart required' if flagged else 'applied at a reload'})")
assert restart > 0, "config-doc flags no key as restart required"
assert not wrong, "conf/nlpd.conf does not say it (or says it wrongly): " + ", ".join(wrong)
print(len(re.findall(r"^  \w+\.\w+  \(", doc, re.M)), "keys compared,", restart, "restart-only,", len(stages),
      "stages,", len(fields), "when fields")
PY
); then
    echo "ok - conf/nlpd.conf documents every key of config-doc ($out)"
    pass=$((pass + 1))
else
    echo "not ok - config-doc drift: $out"
    fail=$((fail + 1))
fi
if "$NLPD" check -c conf/nlpd.conf > /dev/null 2>&1; then
    echo "ok - conf/nlpd.conf passes nlpd check"
    pass=$((pass + 1))
else
    echo "not ok - conf/nlpd.conf fails nlpd check"
    fail=$((fail + 1))
fi
finish
