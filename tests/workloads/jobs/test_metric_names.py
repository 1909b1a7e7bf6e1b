"""Every metric key a job writes is named in results/names.py (workloads cannot import results, so the
key literals in workloads/ are held to it here): a plain literal is a name; an f-string's fixed head is a
namespace of names ("infer/offload/", "mem/params_bytes/") or a name's per-batch-size form."""

import ast
import re
from pathlib import Path

from results import names

WORKLOADS = Path(__file__).resolve().parents[3] / "workloads"
KEY = re.compile(r"^(train|infer|eval|mem|lb|data|floor|timing)/[\w/]*$")
NAMED = {v for k, v in vars(names).items() if k.isupper() and isinstance(v, str)} | set(names.METRICS)


def key_literals(root: Path) -> dict[tuple[str, str], str]:
    """{("plain" | "head", text): file} for every metric-shaped string literal under root."""
    found = {}
    for path in sorted(root.rglob("*.py")):
        tree = ast.parse(path.read_text())
        heads = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.JoinedStr):
                heads |= {id(v) for v in node.values}
                first = node.values[0] if node.values else None
                if isinstance(first, ast.Constant) and KEY.match(str(first.value)):
                    found[("head", first.value)] = str(path.relative_to(root))
        for node in ast.walk(tree):
            plain = isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in heads
            if plain and KEY.match(node.value):
                found[("plain", node.value)] = str(path.relative_to(root))
    return found


def unnamed(found: dict[tuple[str, str], str]) -> list[str]:
    def ok(kind: str, text: str) -> bool:
        if kind == "plain" and not text.endswith("/"):
            return text in NAMED
        return any(v.startswith(text) or text == v + names.BATCH_SUFFIX for v in NAMED)

    return sorted(f"{file}: {text!r}" for (kind, text), file in found.items() if not ok(kind, text))


def test_every_metric_key_in_workloads_is_named_in_results_names():
    found = key_literals(WORKLOADS)
    assert len(found) > 30  # the scan sees the jobs' keys
    assert unnamed(found) == []


def test_an_unnamed_key_is_caught(tmp_path):
    (tmp_path / "job.py").write_text(
        'a = {"train/tokens_per_s": 1, "train/made_up": 2}\n'
        'b = f"infer/decode_tokens_per_s/bs{8}"\n'
        'c = f"lb/nowhere_{1}"\n'
        'd = f"mem/params_bytes/{1}"\n'
    )
    assert unnamed(key_literals(tmp_path)) == ["job.py: 'lb/nowhere_'", "job.py: 'train/made_up'"]
