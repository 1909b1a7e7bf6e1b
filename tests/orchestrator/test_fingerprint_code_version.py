"""The code version in every fingerprint is the git tree of `workloads/`: a commit that touches only the
orchestrator, results or docs keeps finished runs valid; one that touches a job's code does not."""

import subprocess

from orchestrator.suites import fingerprint


def git(root, *args):
    env = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@t", "PATH": "/usr/bin:/bin", "HOME": str(root)}  # fmt: skip
    return subprocess.run(["git", *args], cwd=root, env=env, check=True, capture_output=True, text=True)


def commit(root, path, text):
    (root / path).parent.mkdir(parents=True, exist_ok=True)
    (root / path).write_text(text)
    git(root, "add", "-A")
    git(root, "commit", "-qm", f"edit {path}")
    return fingerprint.workloads_tree(root)


def test_only_commits_to_workloads_change_the_code_version(tmp_path):
    git(tmp_path, "init", "-q")
    first = commit(tmp_path, "workloads/jobs/train.py", "steps = 1\n")
    assert first == git(tmp_path, "rev-parse", "HEAD:workloads").stdout.strip()
    assert commit(tmp_path, "orchestrator/api.py", "x = 1\n") == first
    assert commit(tmp_path, "README.md", "docs\n") == first
    assert commit(tmp_path, "workloads/jobs/train.py", "steps = 2\n") != first


def test_this_checkout_s_code_version_is_its_workloads_tree():
    tree = fingerprint._git("rev-parse", "HEAD:workloads")
    assert fingerprint.code_version() == f"git:{tree}" != f"git:{fingerprint.git_commit()}"


def test_the_fingerprint_moves_with_the_code_version_and_defaults_to_this_checkout_s():
    resolved = {"kind": "dummy", "job": {"steps": 3}}
    assert fingerprint.fingerprint(resolved, "git:aaaa") != fingerprint.fingerprint(resolved, "git:bbbb")
    assert fingerprint.fingerprint(resolved) == fingerprint.fingerprint(resolved, fingerprint.code_version())
