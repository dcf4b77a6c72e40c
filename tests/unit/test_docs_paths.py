"""The docs name only what exists: every repository path, module and ``module.Name``
quoted in README.md, CONTRIBUTING.md and docs/ is there (a rename that forgets the docs
fails here)."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "src" / "ticktape"
DOCS = [ROOT / "README.md", ROOT / "CONTRIBUTING.md", *sorted((ROOT / "docs").glob("*.md"))]

#: first parts of a path quoted relative to the repository or to ``src/ticktape/``
TOP = {p.name for p in ROOT.iterdir() if p.is_dir() and p.name not in {".git", ".venv"}}
INSIDE = {p.name for p in PACKAGE.iterdir() if p.is_dir() and not p.name.startswith("__")}
PATH = re.compile(r"[\w.-]+(?:/[\w.-]*)+")


def _quoted(text: str) -> list[str]:
    """Words inside backticks and the targets of relative Markdown links."""
    spans = re.findall(r"`([^`\n]+)`", text) + re.findall(r"\]\(([^)\s#]+)", text)
    return [w.strip(":;,'\"()") for span in spans for w in span.split()]


def _defines(module: Path, name: str) -> bool:
    text = module.read_text(encoding="utf-8")
    defined = rf"^\s*(?:async def|def|class)\s+{re.escape(name)}\b|^{re.escape(name)}\b\s*[:=]"
    exported = rf"^\s*\"{re.escape(name)}\",?$"  # in a package face's __all__
    return re.search(f"{defined}|{exported}", text, re.MULTILINE) is not None


def _module_file(dotted: list[str], base: Path) -> Path | None:
    path = base.joinpath(*dotted)
    for candidate in (path.with_suffix(".py"), path / "__init__.py"):
        if candidate.exists():
            return candidate
    return None


def _missing(word: str, doc: Path) -> str | None:
    """Why ``word`` names nothing, or None (also when it is no path or module name)."""
    if re.fullmatch(r"ticktape(?:\.\w+)+", word):  # a module, or module.Name
        parts = word.split(".")
        for i in range(len(parts), 1, -1):
            found = _module_file(parts[:i], ROOT / "src")
            if found is not None:
                rest = parts[i:]
                if rest and not _defines(found, rest[0]):
                    return f"{found.relative_to(ROOT)} defines no {rest[0]}"
                return None
        return "no such module"
    if not PATH.fullmatch(word) or word.split("/")[0] not in TOP | INSIDE:
        return None
    head, _, name = word.rpartition(".")
    if "/" not in name and not (ROOT / word).exists() and not (PACKAGE / word).exists():
        module = _module_file(head.split("/"), ROOT) or _module_file(head.split("/"), PACKAGE)
        if module is not None and name and not name.islower():  # feeds/_ws.StreamFeed
            return (
                None if _defines(module, name) else f"{module.relative_to(ROOT)} defines no {name}"
            )
    bases = (ROOT, PACKAGE, doc.parent)
    return None if any((base / word).exists() for base in bases) else "no such path"


def test_every_path_and_module_the_docs_name_exists() -> None:
    missing, checked = [], 0
    for doc in DOCS:
        for word in _quoted(doc.read_text(encoding="utf-8")):
            checked += bool(PATH.fullmatch(word) or word.startswith("ticktape."))
            why = _missing(word, doc)
            if why is not None:
                missing.append(f"{doc.relative_to(ROOT)}: {word} ({why})")
    assert missing == [], "\n".join(missing)
    assert checked > 100  # the docs' quoted paths were found at all


def test_the_docs_check_finds_a_missing_path_module_and_name() -> None:
    doc = ROOT / "README.md"
    assert _missing("store/questdb/_nope.py", doc) == "no such path"
    assert _missing("tests/backtests.py", doc) == "no such path"
    assert _missing("ticktape.nope", doc) == "no such module"
    assert _missing("ticktape.store.nope", doc) is not None
    assert _missing("ticktape.testing.NoSuchThing", doc) is not None
    assert _missing("feeds/_ws.NoSuchFeed", doc) is not None
    assert _missing("store/questdb/_commit.py", doc) is None
    assert _missing("feeds/_ws.StreamFeed", doc) is None
    assert _missing("ticktape.testing.record_source", doc) is None
    assert _missing("Europe/Berlin", doc) is None  # not a repository path
