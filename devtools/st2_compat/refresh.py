"""Copy each supported StackStorm version's fixed-requirements.txt into this folder.

    python3 devtools/st2_compat/refresh.py ST2_GIT [VERSION=REF ...]

ST2_GIT is a clone of github.com/StackStorm/st2 (a work tree or a bare mirror); it is only read.
Without VERSION=REF arguments, the versions and refs are those of stackstorm.yaml here (for
example `3.9=v3.9.0`). Each becomes fixed-requirements-<VERSION>.txt: a three-line header naming
the ref and the commit it resolved to, then StackStorm's file verbatim.

Run it by hand when StackStorm tags a release or master moves, then review the diff, the windows
in stackstorm.yaml and requirements.txt (README.md here says how). The tests and CI never run it:
they have no StackStorm checkout, and the pins they check against must not move under them.
"""

import os
import subprocess
import sys

import yaml

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCE = "fixed-requirements.txt"
HEADER = ("# StackStorm/st2 {ref}, commit {commit}:\n"
          "# {source}, copied verbatim below these three lines by\n"
          "# devtools/st2_compat/refresh.py. Do not edit by hand; refresh instead.\n")


def git(repo, *args):
    return subprocess.run(["git", "-C", repo] + list(args), check=True, capture_output=True,
                          text=True).stdout


def refresh(repo, version, ref):
    commit = git(repo, "rev-parse", "--verify", ref + "^{commit}").strip()
    text = git(repo, "show", "%s:%s" % (commit, SOURCE))
    path = os.path.join(HERE, "fixed-requirements-%s.txt" % version)
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(HEADER.format(ref=ref, commit=commit, source=SOURCE) + text)
    return path, commit


def main(argv):
    if not argv or argv[0].startswith("-"):
        sys.stderr.write(__doc__)
        return 2
    repo, pairs = argv[0], argv[1:]
    if pairs:
        targets = [pair.split("=", 1) for pair in pairs]
    else:
        with open(os.path.join(HERE, "stackstorm.yaml"), encoding="utf-8") as handle:
            data = yaml.safe_load(handle)
        targets = [(version, spec["ref"]) for version, spec in data["versions"].items()]
    for version, ref in targets:
        path, commit = refresh(repo, version, ref)
        print("%s: %s at %s" % (os.path.relpath(path), ref, commit[:12]))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
