"""`evalsuite report`: the HTML from synthetic runs (settings, prompt variants, self-consistency votes,
difficulty, hostile model text), checked as text and in headless Chromium (Debian's package, driven by
Playwright; scripts/setup.sh installs both)."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
from synthetic_runs import LABELS, evaluation, pattern, samples, write_run

from evalsuite.cli import main
from evalsuite.leaderboard.compare import compare, parse_side

N = 60
M2 = "m2<i>$"  # markup and a mathtext character in a model name: escaped in the page, literal in the plots
PAYLOAD = "<script>alert(1)</script>"
IMG = '<img src=x onerror="window.pwned=1">'
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
# right answers out of 60 per (model, setting, variant) for t_logic and t_common
SCORES = {("m1", "zero-shot", "plain"): (40, 30), ("m1", "zero-shot", "lettered"): (35, 33),
          ("m1", "few-shot", "plain"): (50, 28), ("m1", "few-shot", "lettered"): (45, 36),
          (M2, "zero-shot", "plain"): (20, 45), (M2, "zero-shot", "lettered"): (25, 40)}


def arith_samples() -> list[dict]:
    """A generated task with self-consistency votes and difficulty; wrong answers carry hostile text.
    Documents 0-4 unanimous (5 of 5 votes agree), 5-9 split (3 of 5): mean agreement 0.8, unanimous 0.5."""
    correct = [True, True, False, False, True, True, False, True, False, True]
    docs = samples("arith", "cot", correct, prompt="Add the numbers " + IMG + " {i}")
    for i, s in enumerate(docs):
        answer = "42" if s["correct"] else "41"
        s.pop("logprobs")
        s.update(generation=f"{PAYLOAD} the answer is {answer}", extracted=answer, difficulty=1 + i % 3,
                 votes=[answer] * 5 if i < 5 else [answer] * 3 + ["7", None])
    return docs


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("runs")
    for model, mode in [("m1", "zero-shot"), ("m1", "few-shot"), (M2, "zero-shot")]:
        parts = []
        for variant in ("plain", "lettered"):
            logic, common = SCORES[model, mode, variant]
            for task, category, right, offset in [("t_logic", "logical", logic, 3 * len(variant)),
                                                  ("t_common", "commonsense", common, 7 * len(model + mode))]:
                docs = samples(task, variant, pattern(N, right, offset), prompt=f"{variant} question {{i}}?")
                parts.append((evaluation(task, variant, docs, category=category), docs))
        if (model, mode) == ("m1", "zero-shot"):
            docs = arith_samples()
            parts.append((evaluation("arith", "cot", docs, metrics=("accuracy",)), docs))
        write_run(root, model, parts, mode=mode, shots=5 if mode == "few-shot" else 0)
    tuned = samples("t_logic", "plain", pattern(N, 55, 1))  # a fine-tuned adapter of m1: one task, one prompt
    write_run(root, "m1", [(evaluation("t_logic", "plain", tuned), tuned)], mode="fine-tuned", adapter="lora1")
    return root


@pytest.fixture(scope="module")
def report(runs: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("leaderboards")
    assert main(["report", str(runs), "--output", str(out)]) == 0
    return out / "index.html"


def section(page: str, anchor: str) -> str:
    return re.search(rf'<section id="{anchor}">(.*?)</section>', page, re.S).group(1)


def test_self_contained_and_escaped(report: Path) -> None:
    page = report.read_text(encoding="utf-8")
    assert page.count("<script") == 1  # ours only
    assert PAYLOAD not in page and IMG not in page and "m2<i>" not in page and "m2&lt;i&gt;$" in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page and "&lt;img src=x onerror=&quot;window.pwned=1&quot;&gt;" in page
    assert not re.search(r'(?:src|href)="(?!data:|#)', page)  # nothing loaded from anywhere else
    assert "Content-Security-Policy" in page and "script-src 'sha256-" in page
    assert page.count('src="data:image/png;base64,') == 4  # categories, ranks, tasks, difficulty


def test_settings_section_shows_paired_tests(report: Path, runs: Path) -> None:
    settings = section(report.read_text(encoding="utf-8"), "settings")
    result = compare(parse_side("model=m1,setting=5-shot", [runs]), parse_side("model=m1,setting=zero-shot", [runs]),
                     "main")
    assert len(result.rows) == 4
    for row in result.rows:
        assert f"{row.test.p_value:.4f}" in settings and f"{row.p_holm:.4f}" in settings
        assert f"{row.test.diff:+.3f}" in settings
    assert "5-shot − zero-shot" in settings and "fine-tuned + lora1 − zero-shot" in settings


def test_prompt_robustness_and_ranking_stability(report: Path) -> None:
    prompts = section(report.read_text(encoding="utf-8"), "prompts")
    # m1 zero-shot: t_logic 40/60 vs 35/60, t_common 30/60 vs 33/60 -> mean over variants 0.575, mean range 0.067
    assert re.search(r"m1 · zero-shot</td><td class=\"num\" data-v=\"2.0\">2</td>"
                     r"<td class=\"num\" data-v=\"0.575\d*\">0.575</td>", prompts)
    # overall ranking identical under both variants (tau-b 1); per task: t_logic 1, t_common 1/3 (one swapped pair)
    assert re.search(r"lettered vs plain</td>.*?>3</td>.*?>1.000</td>.*?>0.667</td>.*?>0.333</td>", prompts)


def test_self_consistency_and_difficulty(report: Path) -> None:
    page = report.read_text(encoding="utf-8")
    votes = section(page, "consistency")
    assert re.search(r"arith</td><td>cot</td>.*?>10</td>.*?>5.0</td>.*?>0.800</td>.*?>0.500</td>", votes)
    difficulty = section(page, "difficulty")
    assert 'alt="Accuracy by difficulty"' in difficulty
    # difficulty 1: documents 0, 3, 6, 9 (2 right); 2: 1, 4, 7 (3 right); 3: 2, 5, 8 (1 right)
    found = re.findall(r"<td>arith</td><td>m1 · zero-shot · cot</td><td>(\d)</td>.*?>(\d+)</td>.*?>([\d.]+)</td>",
                       difficulty)
    assert found == [("1", "4", "0.500"), ("2", "3", "1.000"), ("3", "3", "0.333")]


def test_agreement_between_variants(report: Path) -> None:
    agreement = section(report.read_text(encoding="utf-8"), "agreement")
    assert agreement.count("<tr>") - 1 == 3 * 2  # 3 systems × 2 tasks with two variants (+ the header row)


def test_answer_extraction_section(tmp_path: Path) -> None:
    """Strict and flexible accuracy and unparseable rates per generation evaluation, and escaped examples of
    the documents the two rules read differently."""
    strict = [True, False, False, True, False, False]  # right by the strict rule
    docs = samples("t_gen", "cot", strict)
    for i, s in enumerate(docs):
        s.pop("logprobs")
        answer = LABELS[s["gold"]]
        s.update(generation=f"{PAYLOAD} I think {answer}", extracted=answer if strict[i] else None,
                 pred=s["gold"] if strict[i] else -1, pred_flexible=s["gold"], extracted_flexible=answer)
        if i == 4:  # the flexible fallback reads a wrong answer
            s.update(extracted_flexible=LABELS[1 - s["gold"]], pred_flexible=1 - s["gold"])
    ev = evaluation("t_gen", "cot", docs, metrics=("accuracy", "accuracy_flexible", "unparseable_rate",
                                                   "unparseable_rate_flexible"))
    plain = samples("t_gen", "plain", [True] * 6)  # a log-likelihood evaluation has no row
    write_run(tmp_path / "runs", "m1", [(ev, docs), (evaluation("t_gen", "plain", plain), plain)])
    assert main(["report", str(tmp_path / "runs"), "--output", str(tmp_path / "out")]) == 0
    extraction = section((tmp_path / "out" / "index.html").read_text(encoding="utf-8"), "extraction")
    # 6 documents: strict 2 right, 4 unparseable; flexible 5 right, 1 wrong; 4 disagree, 3 of them shown
    assert re.search(r"<td>t_gen</td><td>cot</td><td class=\"num\" data-v=\"6.0\">6</td>"
                     r".*?>0.333<.*?>0.833<.*?>0.667<.*?>0.000<.*?>4</td>", extraction)
    assert extraction.count("<tr>") == 2 + 1 + 3  # header and one evaluation; header and 3 examples
    assert PAYLOAD not in extraction and "&lt;script&gt;alert(1)&lt;/script&gt; I think yes" in extraction
    assert "— (unparseable)</td><td>yes (right)</td><td>yes</td>" in extraction  # doc 1: gold yes
    assert "— (unparseable)</td><td>yes (wrong)</td><td>no</td>" in extraction  # doc 4: gold no
    assert "strict rule: the last match" in extraction and "flexible rule: the strict answer" in extraction


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    chromium = shutil.which("chromium") or "/usr/bin/chromium"
    assert Path(chromium).exists(), "Debian's chromium is missing: run scripts/setup.sh"
    with sync_playwright() as p:
        instance = p.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        yield instance
        instance.close()


def test_in_chromium_no_errors_escaped_text_and_sorting(report: Path, browser) -> None:
    page = browser.new_page()
    console, dialogs, requests = [], [], []
    page.on("console", lambda m: console.append(f"{m.type}: {m.text}"))
    page.on("pageerror", lambda exc: console.append(f"pageerror: {exc}"))
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    page.on("request", lambda r: requests.append(r.url))
    page.goto(report.as_uri())
    page.wait_for_load_state("load")

    page.locator("#errors summary", has_text="arith").click()
    assert page.get_by_text(PAYLOAD).first.is_visible()
    assert page.get_by_text(IMG).first.is_visible()
    assert page.evaluate("window.pwned") is None and not dialogs

    table = page.locator("#tasks table")
    models = lambda: table.locator("tbody tr td:nth-child(1)").all_inner_texts()  # noqa: E731
    prompts = lambda: table.locator("tbody tr td:nth-child(3)").all_inner_texts()  # noqa: E731
    column = [h.strip() for h in table.locator("thead th").all_inner_texts()].index("t_common · accuracy") + 1
    values = lambda: table.locator(f"tbody tr td:nth-child({column})").evaluate_all(  # noqa: E731
        "cells => cells.map(c => parseFloat(c.dataset.v))")
    assert values() != sorted(values(), reverse=True)  # ranked by overall, not by t_common
    header = table.locator("thead th", has_text="t_common")
    header.click()
    assert values() == sorted(values(), reverse=True)
    assert list(zip(models(), prompts()))[:2] == [(M2, "plain"), (M2, "lettered")]  # 45/60, 40/60
    assert header.get_attribute("aria-sort") == "descending"
    header.click()
    assert values() == sorted(values())
    table.locator("thead th", has_text="model").click()  # text column: A→Z
    assert models() == sorted(models())

    errors = [m for m in console if m.startswith(("error", "pageerror", "warning"))]
    assert not errors, errors
    assert all(url.startswith(("file:", "data:")) for url in requests), requests
    page.close()
