"""Listening-test analysis: the hidden key plus the raters' CSVs -> checked ratings and a summary.

Steps (:func:`analyze`):

1. :func:`read_key` and :func:`read_ratings`. Every rating row is checked; rows with an unknown
   stimulus, trial type or question, a wrong test id, an unparsable or out-of-range number, a bad
   diversity pair or a duplicate of an earlier row are rejected and reported with file and row
   number; a file that lacks required columns is skipped with a message naming them.
2. :func:`attention_results`: a rater whose two ratings of the repeated stimulus differ by more than
   the tolerance on any question (or who has no repeat although the key has one) is excluded.
3. Per system and question, the mean with a 95 % bootstrap interval (:func:`bootstrap_interval`,
   resampling items: stimuli for quality questions, pairs for diversity); prompt-matched win rates
   between systems (:func:`win_rates`); inter-rater agreement as Krippendorff's alpha
   (:func:`krippendorff_alpha`, interval and ordinal).
4. :mod:`musicdistill.listening.summary` writes ``summary.md``, ``summary.html`` (self-contained,
   with the bar chart as a base64 PNG) and ``summary.json``.
"""

from __future__ import annotations

import csv
import io
import logging
import math
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, field
from itertools import combinations
from pathlib import Path

import numpy as np

from musicdistill.listening.vocabulary import (
    DIVERSITY_QUESTION,
    QUALITY_QUESTIONS,
    REQUIRED_RATINGS_COLUMNS,
    SCORE_MAX,
    SCORE_MIN,
    TRIAL_DIVERSITY,
    TRIAL_QUALITY,
    TRIAL_REPEAT,
    TRIAL_TYPES,
    questions_for,
)

log = logging.getLogger(__name__)

KEY_REQUIRED = ("stimulus_id", "system", "prompt_index", "sample_index")
QUESTION_ORDER = tuple(q.id for q in (*QUALITY_QUESTIONS, DIVERSITY_QUESTION))


# --------------------------------------------------------------------------------------------
# The key
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class KeyEntry:
    """What the key says about one stimulus."""

    stimulus_id: str
    system: str
    prompt_index: int
    prompt: str
    sample_index: int
    attention_check: bool


@dataclass
class Key:
    """The parsed ``key.csv``: entries by stimulus id, the test id and the systems in key order."""

    path: Path
    test_id: str
    entries: dict[str, KeyEntry]
    systems: list[str]


def read_key(path: str | Path) -> Key:
    """Read ``key.csv`` written by ``musicdistill listening export``; raises ValueError naming any problem."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"key file {path} does not exist; pass the key.csv of the export (--key)")
    with open(path, encoding="utf-8-sig", newline="") as fh:
        reader = csv.DictReader(fh)
        missing = [c for c in KEY_REQUIRED if c not in (reader.fieldnames or [])]
        if missing:
            raise ValueError(
                f"{path} lacks the columns {', '.join(missing)}; is it the key.csv of an export?"
            )
        entries: dict[str, KeyEntry] = {}
        test_ids: set[str] = set()
        for row in reader:
            try:
                entry = KeyEntry(
                    row["stimulus_id"].strip(),
                    row["system"].strip(),
                    int(row["prompt_index"]),
                    row.get("prompt") or "",
                    int(row["sample_index"]),
                    (row.get("attention_check") or "0").strip() == "1",
                )
            except (ValueError, AttributeError) as exc:
                raise ValueError(f"{path}, row {reader.line_num}: cannot read it ({exc})") from None
            if entry.stimulus_id in entries:
                raise ValueError(
                    f"{path}, row {reader.line_num}: stimulus id {entry.stimulus_id} appears twice"
                )
            entries[entry.stimulus_id] = entry
            test_ids.add((row.get("test_id") or "").strip())
    if not entries:
        raise ValueError(f"{path} lists no stimuli")
    if len(test_ids) > 1:
        raise ValueError(f"{path} mixes test ids {sorted(test_ids)}; use the key.csv of one export")
    systems = list(dict.fromkeys(e.system for e in entries.values()))
    return Key(path, test_ids.pop(), entries, systems)


# --------------------------------------------------------------------------------------------
# Ratings files
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Rating:
    """One accepted answer: a rater's score for one question of one trial."""

    rater_id: str
    trial_type: str
    stimulus_a: str
    stimulus_b: str
    question: str
    score: int
    file: str
    row: int

    @property
    def item(self) -> str:
        """The rated thing: a stimulus id, or ``"a+b"`` for a diversity pair (order-free)."""
        return "+".join(sorted((self.stimulus_a, self.stimulus_b))) if self.stimulus_b else self.stimulus_a


@dataclass(frozen=True)
class Problem:
    """A rejected row (``row`` = line number in the file) or a skipped file (``row`` None)."""

    file: str
    row: int | None
    kind: str
    detail: str

    def where(self) -> str:
        return f"{self.file}:{self.row}" if self.row is not None else self.file


@dataclass
class RatingsSet:
    """Accepted ratings, every problem found, the files read and the number of data rows seen."""

    ratings: list[Rating] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    files: list[str] = field(default_factory=list)
    rows_read: int = 0

    def problem_counts(self) -> dict[str, int]:
        return dict(Counter(p.kind for p in self.problems))


def ratings_files(path: str | Path) -> list[Path]:
    """A CSV file, or every ``*.csv`` below a folder (sorted)."""
    path = Path(path)
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise FileNotFoundError(
            f"ratings path {path} does not exist; pass the folder of the raters' CSV files"
        )
    files = sorted(p for p in path.rglob("*.csv") if p.is_file())
    if not files:
        raise FileNotFoundError(f"no .csv files in {path}; put the CSVs the raters downloaded there")
    return files


def _whole_number(text: str) -> int | float | None:
    """'3' or '3.0' -> 3, '3.5' -> 3.5, anything that is not a finite number -> None."""
    try:
        value = float(text)
    except ValueError:
        return None
    if not math.isfinite(value):
        return None
    return int(value) if value.is_integer() else value


def _check_row(row: dict[str, str], key: Key) -> tuple[str, str] | Rating:
    """A Rating, or (problem kind, detail) for the first problem of a row."""
    get = {
        k: (row.get(k) or "").strip()
        for k in (*REQUIRED_RATINGS_COLUMNS, "test_id", "order_index", "seed", "plays")
    }
    if not get["rater_id"]:
        return "empty rater id", "rater_id is empty"
    if get["test_id"] and key.test_id and get["test_id"] != key.test_id:
        return "wrong test", f"test_id {get['test_id']} is not this key's {key.test_id}"
    trial_type = get["trial_type"]
    if trial_type not in TRIAL_TYPES:
        return "unknown trial type", f"trial_type {trial_type!r} is not one of {list(TRIAL_TYPES)}"
    if get["question"] not in {q.id for q in questions_for(trial_type)}:
        return "unknown question", f"question {get['question']!r} is not asked in {trial_type} trials"
    a, b = get["stimulus_a"], get["stimulus_b"]
    for sid in (a, b) if trial_type == TRIAL_DIVERSITY else (a,):
        if sid not in key.entries:
            return "unknown stimulus", f"stimulus id {sid!r} is not in the key"
    if trial_type != TRIAL_DIVERSITY and b:
        return "bad pair", f"a {trial_type} trial names a second stimulus ({b})"
    if trial_type == TRIAL_DIVERSITY:
        ea, eb = key.entries[a], key.entries[b]
        if a == b or (ea.system, ea.prompt_index) != (eb.system, eb.prompt_index):
            return "bad pair", f"{a} and {b} are not two generations of one prompt by one system"
    score = _whole_number(get["score"])
    if score is None:
        return "unparsable number", f"score {get['score']!r} is not a number"
    if not isinstance(score, int) or not SCORE_MIN <= score <= SCORE_MAX:
        return "out of range", f"score {get['score']} is not a whole number in [{SCORE_MIN}, {SCORE_MAX}]"
    for column in ("order_index", "seed", "plays"):
        if get[column] and not isinstance(_whole_number(get[column]), int):
            return "unparsable number", f"{column} {get[column]!r} is not a whole number"
    return Rating(get["rater_id"], trial_type, a, b, get["question"], score, "", 0)


def read_ratings(path: str | Path, key: Key) -> RatingsSet:
    """Read and check every ratings CSV under ``path`` against ``key`` (see the module docstring)."""
    result = RatingsSet()
    seen: dict[tuple[str, ...], str] = {}
    for file in ratings_files(path):
        name = str(file)
        result.files.append(name)
        try:
            text = file.read_text(encoding="utf-8-sig")
        except (OSError, UnicodeDecodeError) as exc:
            result.problems.append(
                Problem(name, None, "unreadable file", f"cannot read it as UTF-8 text ({exc})")
            )
            continue
        reader = csv.DictReader(io.StringIO(text, newline=""))
        header = [h.strip() for h in (reader.fieldnames or [])]
        reader.fieldnames = header
        missing = [c for c in REQUIRED_RATINGS_COLUMNS if c not in header]
        if missing:
            message = f"missing required column(s) {', '.join(missing)}; file skipped"
            log.warning("%s: %s", name, message)
            result.problems.append(Problem(name, None, "missing columns", message))
            continue
        for row in reader:
            result.rows_read += 1
            line = reader.line_num
            checked = _check_row(row, key)
            if isinstance(checked, tuple):
                result.problems.append(Problem(name, line, *checked))
                continue
            identity = (
                checked.rater_id,
                checked.trial_type,
                checked.stimulus_a,
                checked.stimulus_b,
                checked.question,
            )
            if identity in seen:
                result.problems.append(
                    Problem(name, line, "duplicate", f"repeats the answer at {seen[identity]}")
                )
                continue
            seen[identity] = f"{name}:{line}"
            result.ratings.append(Rating(**{**asdict(checked), "file": name, "row": line}))
    if result.problems:
        counts = ", ".join(f"{n} {k}" for k, n in sorted(result.problem_counts().items()))
        log.warning(
            "ratings: %d of %d rows rejected or files skipped (%s)",
            len(result.problems),
            result.rows_read,
            counts,
        )
    return result


# --------------------------------------------------------------------------------------------
# Attention check
# --------------------------------------------------------------------------------------------


@dataclass
class AttentionResult:
    """One rater's attention check: ``status`` is pass, fail, missing (no repeat rated) or n/a (none in the test)."""

    rater_id: str
    status: str
    differences: list[tuple[str, str, int, int]] = field(default_factory=list)

    @property
    def excluded(self) -> bool:
        return self.status in ("fail", "missing")

    def detail(self) -> str:
        return "; ".join(f"{sid} {q}: {a} vs {b}" for sid, q, a, b in self.differences) or "-"


def attention_results(ratings: list[Rating], key: Key, tolerance: float = 1.0) -> dict[str, AttentionResult]:
    """Compare each rater's two ratings of every repeated stimulus, question by question."""
    expected = any(e.attention_check for e in key.entries.values())
    first: dict[tuple[str, str, str], int] = {}
    repeat: dict[tuple[str, str, str], int] = {}
    for r in ratings:
        if r.trial_type in (TRIAL_QUALITY, TRIAL_REPEAT):
            (first if r.trial_type == TRIAL_QUALITY else repeat)[(r.rater_id, r.stimulus_a, r.question)] = (
                r.score
            )
    results = {}
    for rater in sorted({r.rater_id for r in ratings}):
        pairs = [
            (sid, q, first[(rid, sid, q)], score)
            for (rid, sid, q), score in sorted(repeat.items())
            if rid == rater and (rid, sid, q) in first
        ]
        if not pairs:
            results[rater] = AttentionResult(rater, "missing" if expected else "n/a")
            continue
        failed = [p for p in pairs if abs(p[2] - p[3]) > tolerance]
        results[rater] = AttentionResult(rater, "fail" if failed else "pass", failed or pairs)
    return results


# --------------------------------------------------------------------------------------------
# Statistics
# --------------------------------------------------------------------------------------------


def bootstrap_interval(
    groups: list[np.ndarray], n_boot: int = 2000, level: float = 0.95, rng: np.random.Generator | None = None
) -> tuple[float, float, float]:
    """Mean of all values and a percentile bootstrap interval resampling whole groups (items) with replacement.

    ``groups``: one array of scores per item. Returns (mean, low, high); the interval is the mean
    itself when there is a single item.
    """
    if not groups or any(len(g) == 0 for g in groups):
        raise ValueError("bootstrap_interval needs at least one non-empty group")
    if not 0 < level < 1 or n_boot < 1:
        raise ValueError(f"level={level} must lie in (0, 1) and n_boot={n_boot} must be >= 1")
    rng = rng or np.random.default_rng(0)
    sums = np.array([float(np.sum(g)) for g in groups])
    counts = np.array([len(g) for g in groups], dtype=np.float64)
    mean = sums.sum() / counts.sum()
    if len(groups) == 1:
        return mean, mean, mean
    idx = rng.integers(0, len(groups), size=(n_boot, len(groups)))
    means = sums[idx].sum(axis=1) / counts[idx].sum(axis=1)
    low, high = np.quantile(means, [(1 - level) / 2, 1 - (1 - level) / 2])
    return float(mean), float(low), float(high)


def krippendorff_alpha(data: np.ndarray, metric: str = "interval") -> float:
    """Krippendorff's alpha of ``data [raters, units]`` (NaN = not rated) for a nominal, ordinal or interval metric.

    Built from the coincidence matrix (Krippendorff 2011, "Computing Krippendorff's alpha-reliability"):
    only units with at least two values count; ``alpha = 1 - (n - 1) * sum(o * d) / sum(n_c * n_k * d)``.
    Returns NaN when there is nothing to compare (fewer than two pairable values, or a single value overall).
    """
    if metric not in ("nominal", "ordinal", "interval"):
        raise ValueError(f"metric={metric!r} must be 'nominal', 'ordinal' or 'interval'")
    data = np.asarray(data, dtype=np.float64)
    if data.ndim != 2:
        raise ValueError(f"data must be a [raters, units] matrix, got shape {data.shape}")
    values = np.unique(data[~np.isnan(data)])
    if values.size < 2:
        return math.nan
    counts = np.stack([(data == v).sum(axis=0) for v in values], axis=1).astype(np.float64)  # [units, V]
    m = counts.sum(axis=1)
    counts, m = counts[m >= 2], m[m >= 2]
    if counts.size == 0:
        return math.nan
    coincidence = np.einsum("uc,uk->ck", counts / (m - 1)[:, None], counts) - np.diag(
        (counts / (m - 1)[:, None]).sum(0)
    )
    n_c = coincidence.sum(axis=1)
    n = n_c.sum()
    if metric == "nominal":
        delta = 1.0 - np.eye(values.size)
    elif metric == "interval":
        delta = (values[:, None] - values[None, :]) ** 2
    else:
        cum = np.concatenate([[0.0], np.cumsum(n_c)])
        lo, hi = (
            np.minimum.outer(np.arange(values.size), np.arange(values.size)),
            np.maximum.outer(np.arange(values.size), np.arange(values.size)),
        )
        delta = (cum[hi + 1] - cum[lo] - (n_c[:, None] + n_c[None, :]) / 2.0) ** 2
    expected = (np.outer(n_c, n_c) * delta).sum()
    if expected == 0:
        return math.nan
    return float(1.0 - (n - 1.0) * (coincidence * delta).sum() / expected)


@dataclass
class MeanRow:
    system: str
    question: str
    mean: float
    low: float
    high: float
    n_ratings: int
    n_items: int


@dataclass
class WinRow:
    question: str
    system_a: str
    system_b: str
    wins: int
    ties: int
    losses: int
    prompts: int
    win_rate: float
    p_value: float


@dataclass
class AgreementRow:
    question: str
    alpha_interval: float
    alpha_ordinal: float
    units: int
    raters: int


def _system_of(r: Rating, key: Key) -> str:
    return key.entries[r.stimulus_a].system


def system_means(ratings: list[Rating], key: Key, n_boot: int = 2000, seed: int = 0) -> list[MeanRow]:
    """Mean score per (system, question) with a 95 % bootstrap interval over items."""
    rng = np.random.default_rng(seed)
    by_item: dict[tuple[str, str], dict[str, list[int]]] = defaultdict(lambda: defaultdict(list))
    for r in ratings:
        by_item[(_system_of(r, key), r.question)][r.item].append(r.score)
    rows = []
    for system in key.systems:
        for question in QUESTION_ORDER:
            items = by_item.get((system, question))
            if not items:
                continue
            groups = [np.asarray(v, dtype=np.float64) for _, v in sorted(items.items())]
            mean, low, high = bootstrap_interval(groups, n_boot, rng=rng)
            rows.append(MeanRow(system, question, mean, low, high, sum(len(g) for g in groups), len(groups)))
    return rows


def win_rates(ratings: list[Rating], key: Key) -> list[WinRow]:
    """Prompt-matched comparisons: per question and pair of systems, how often A's mean beats B's per prompt.

    Ties count half; the p-value is a two-sided sign test on the untied prompts.
    """
    from scipy.stats import binomtest

    scores: dict[tuple[str, str, int], list[int]] = defaultdict(list)
    for r in ratings:
        scores[(r.question, _system_of(r, key), key.entries[r.stimulus_a].prompt_index)].append(r.score)
    means = {k: float(np.mean(v)) for k, v in scores.items()}
    rows = []
    for question in QUESTION_ORDER:
        for a, b in combinations(key.systems, 2):
            prompts = sorted(
                {p for (q, s, p) in means if q == question and s == a}
                & {p for (q, s, p) in means if q == question and s == b}
            )
            if not prompts:
                continue
            diffs = [means[(question, a, p)] - means[(question, b, p)] for p in prompts]
            wins, losses = sum(d > 0 for d in diffs), sum(d < 0 for d in diffs)
            ties = len(diffs) - wins - losses
            p_value = binomtest(wins, wins + losses, 0.5).pvalue if wins + losses else 1.0
            rows.append(
                WinRow(
                    question,
                    a,
                    b,
                    wins,
                    ties,
                    losses,
                    len(prompts),
                    (wins + 0.5 * ties) / len(prompts),
                    float(p_value),
                )
            )
    return rows


def agreement(ratings: list[Rating]) -> list[AgreementRow]:
    """Krippendorff's alpha per question over the items rated by at least two raters."""
    rows = []
    for question in QUESTION_ORDER:
        chosen = [r for r in ratings if r.question == question]
        raters = sorted({r.rater_id for r in chosen})
        items = sorted({r.item for r in chosen})
        if len(raters) < 2 or not items:
            continue
        matrix = np.full((len(raters), len(items)), np.nan)
        r_index, i_index = {x: i for i, x in enumerate(raters)}, {x: i for i, x in enumerate(items)}
        for r in chosen:
            matrix[r_index[r.rater_id], i_index[r.item]] = r.score
        units = int(((~np.isnan(matrix)).sum(axis=0) >= 2).sum())
        rows.append(
            AgreementRow(
                question,
                krippendorff_alpha(matrix, "interval"),
                krippendorff_alpha(matrix, "ordinal"),
                units,
                len(raters),
            )
        )
    return rows


# --------------------------------------------------------------------------------------------
# The summary
# --------------------------------------------------------------------------------------------


@dataclass
class Analysis:
    """Everything :func:`analyze` computed."""

    key: Key
    ratings: RatingsSet
    attention: dict[str, AttentionResult]
    included_raters: list[str]
    means: list[MeanRow]
    wins: list[WinRow]
    agreement: list[AgreementRow]
    n_boot: int
    tolerance: float

    @property
    def used_ratings(self) -> int:
        return sum(m.n_ratings for m in self.means)


def analyze(
    key_path: str | Path, ratings_path: str | Path, tolerance: float = 1.0, n_boot: int = 2000, seed: int = 0
) -> Analysis:
    """Read the key and the ratings, check them, apply the attention check and compute every statistic.

    :func:`musicdistill.listening.summary.write_summary` turns the result into the summary files.
    """
    if tolerance < 0:
        raise ValueError(f"tolerance={tolerance} must be >= 0 (points on the 1-5 scale)")
    if n_boot < 100:
        raise ValueError(f"n_boot={n_boot} is too few bootstrap resamples; use at least 100 (default 2000)")
    key = read_key(key_path)
    ratings = read_ratings(ratings_path, key)
    attention = attention_results(ratings.ratings, key, tolerance)
    included = [r for r, res in attention.items() if not res.excluded]
    for rater, res in attention.items():
        if res.excluded:
            log.warning("rater %s excluded: attention check %s (%s)", rater, res.status, res.detail())
    used = [r for r in ratings.ratings if r.rater_id in included and r.trial_type != TRIAL_REPEAT]
    return Analysis(
        key,
        ratings,
        attention,
        included,
        system_means(used, key, n_boot, seed),
        win_rates(used, key),
        agreement(used),
        n_boot,
        tolerance,
    )
