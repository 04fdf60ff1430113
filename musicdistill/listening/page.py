"""The static rating page of a listening test: one self-contained ``index.html`` that needs no server.

The page embeds the test's trials as JSON (stimulus ids, prompts, questions; never a system name),
asks for a rater id, shows the trials in the rater's own order (the PRNG of
:func:`musicdistill.listening.vocabulary.trial_order`, re-implemented in JavaScript below), keeps answers in the
browser's localStorage so a reload resumes where the rater stopped, and at the end offers the
ratings as a CSV download (columns :data:`musicdistill.listening.vocabulary.RATINGS_COLUMNS`).

Element ids used by the browser test: ``#rater-id``, ``#start``, ``button.play``, radio inputs named
after the question ids, ``#next``, ``#download``.
"""

from __future__ import annotations

import html
import json
import re
from typing import Any

from musicdistill.listening.vocabulary import RATER_ID_PATTERN, RATINGS_COLUMNS, SCORE_MAX, SCORE_MIN


def _json_for_script(data: dict[str, Any]) -> str:
    """JSON that cannot end its ``<script>`` element early (``<``, ``>``, ``&`` escaped as \\u00XX)."""
    text = json.dumps(data, ensure_ascii=False, sort_keys=True)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def render_page(data: dict[str, Any]) -> str:
    """The page's HTML for ``data`` (see :func:`musicdistill.listening.export.page_data`)."""
    config = {
        **data,
        "columns": list(RATINGS_COLUMNS),
        "score_min": SCORE_MIN,
        "score_max": SCORE_MAX,
        "rater_pattern": RATER_ID_PATTERN,
    }
    values = {"TITLE": html.escape(str(data["title"])), "DATA": _json_for_script(config)}
    return re.sub(r"__(TITLE|DATA)__", lambda m: values[m.group(1)], PAGE)


PAGE = r"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>__TITLE__</title>
<style>
  :root { --accent: #2458c6; --accent-soft: #e6edfb; --text: #1d2330; --muted: #5b6475; --border: #d5dae3; }
  * { box-sizing: border-box; }
  body { margin: 0; background: #f4f6f9; color: var(--text);
         font: 16px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, Helvetica, Arial, sans-serif; }
  main { max-width: 780px; margin: 24px auto; padding: 28px 32px; background: #fff; border-radius: 10px;
         box-shadow: 0 1px 4px rgba(0, 0, 0, .08); }
  h1 { font-size: 1.5rem; margin: 0 0 12px; }
  h2 { font-size: 1.1rem; margin: 22px 0 6px; }
  p { margin: 8px 0; }
  .muted { color: var(--muted); font-size: .92rem; }
  .hidden { display: none !important; }
  label.field { display: block; font-weight: 600; margin-top: 18px; }
  input[type=text] { font-size: 1.05rem; padding: 8px 10px; width: 260px; border: 1px solid var(--border);
                     border-radius: 6px; }
  button { font-size: 1rem; padding: 9px 20px; border-radius: 6px; border: 1px solid var(--accent);
           background: var(--accent); color: #fff; cursor: pointer; }
  button:disabled { background: #aab4c8; border-color: #aab4c8; cursor: not-allowed; }
  button.secondary { background: #fff; color: var(--accent); }
  .error { color: #b3261e; font-weight: 600; }
  .topline { display: flex; justify-content: space-between; align-items: baseline; color: var(--muted);
             font-size: .92rem; }
  .progress { height: 6px; background: #e3e7ee; border-radius: 3px; margin: 6px 0 18px; overflow: hidden; }
  .progress > div { height: 100%; background: var(--accent); width: 0; transition: width .2s; }
  .prompt { background: var(--accent-soft); border-left: 4px solid var(--accent); padding: 10px 14px;
            border-radius: 4px; font-size: 1.05rem; }
  .player { display: flex; align-items: center; gap: 12px; margin: 10px 0; padding: 10px 12px;
            border: 1px solid var(--border); border-radius: 8px; }
  .player .name { font-weight: 600; min-width: 52px; }
  .player button.play { min-width: 110px; padding: 7px 12px; }
  .bar { flex: 1; height: 8px; background: #e3e7ee; border-radius: 4px; cursor: pointer; overflow: hidden; }
  .bar > div { height: 100%; width: 0; background: var(--accent); }
  .time { font-variant-numeric: tabular-nums; color: var(--muted); font-size: .9rem; min-width: 86px;
          text-align: right; }
  fieldset { border: none; margin: 18px 0 0; padding: 0; }
  legend { font-weight: 600; padding: 0; }
  legend .q { display: block; font-weight: 400; color: var(--muted); font-size: .93rem; }
  .scale { display: grid; grid-template-columns: repeat(5, 1fr); gap: 6px; margin-top: 8px; }
  .scale label { display: flex; flex-direction: column; align-items: center; justify-content: center;
                 text-align: center; padding: 8px 4px; min-height: 64px; border: 1px solid var(--border);
                 border-radius: 6px; cursor: pointer; font-size: .85rem; color: var(--muted); user-select: none; }
  .scale label b { font-size: 1.15rem; color: var(--text); }
  .scale input { position: absolute; opacity: 0; pointer-events: none; }
  .scale label:has(input:checked) { border-color: var(--accent); background: var(--accent-soft);
                                    color: var(--text); box-shadow: inset 0 0 0 1px var(--accent); }
  .scale label.disabled { opacity: .45; cursor: not-allowed; }
  .actions { display: flex; align-items: center; gap: 14px; margin-top: 26px; }
  ol.instructions li { margin: 4px 0; }
</style>
</head>
<body>
<main>
  <section id="intro">
    <h1>__TITLE__</h1>
    <p>You will hear short pieces of music that a computer generated from text descriptions.</p>
    <ol class="instructions">
      <li>Use headphones in a quiet room and set a comfortable volume with the first clip.</li>
      <li><b>Part 1:</b> for each clip, rate its <b>acoustic quality</b>, how well it <b>matches its
          description</b>, and its <b>musicality</b>, each from 1 (worst) to 5 (best).</li>
      <li><b>Part 2:</b> two clips made from the same description play side by side; rate
          <b>how different</b> they are, from 1 (almost identical) to 5 (completely different).</li>
      <li>Play each clip (as often as you like) before answering. There are no right answers.</li>
      <li>At the end, download your ratings and send the file to the experimenter.</li>
    </ol>
    <label class="field" for="rater-id">Your rater ID</label>
    <input id="rater-id" type="text" autocomplete="off" spellcheck="false" placeholder="e.g. R07">
    <p class="muted">Letters, digits, '.', '_' or '-' (given by the experimenter).</p>
    <p id="intro-error" class="error hidden"></p>
    <div class="actions"><button id="start">Start</button></div>
    <p id="trial-count" class="muted"></p>
  </section>

  <section id="trial" class="hidden">
    <div class="topline"><span id="part"></span><span id="counter"></span></div>
    <div class="progress"><div id="progress"></div></div>
    <div id="trial-body"></div>
    <div class="actions"><button id="next" disabled>Next</button><span id="hint" class="muted"></span></div>
  </section>

  <section id="done" class="hidden">
    <h1>Thank you!</h1>
    <p>You have answered every trial. Download your ratings and send the file to the experimenter.</p>
    <div class="actions"><button id="download">Download my ratings (CSV)</button></div>
    <p id="saved-as" class="muted"></p>
  </section>
</main>

<script type="application/json" id="test-data">__DATA__</script>
<script>
"use strict";
const DATA = JSON.parse(document.getElementById("test-data").textContent);
const TRIALS = DATA.trials;
const STORE_KEY = (rater) => "musicdistill-listening:" + DATA.test_id + ":" + rater;
let state = null;
let players = [];

// ---- the per-rater order: the same arithmetic as musicdistill/listening.py -----------------
function fnv1a32(text) {
  let h = 0x811c9dc5;
  for (const byte of new TextEncoder().encode(text)) { h = Math.imul(h ^ byte, 0x01000193) >>> 0; }
  return h >>> 0;
}
function mulberry32(seed) {
  let a = seed >>> 0;
  return function () {
    a = (a + 0x6D2B79F5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}
function shuffleInPlace(items, rng) {
  for (let i = items.length - 1; i > 0; i--) {
    const j = Math.floor(rng() * (i + 1));
    [items[i], items[j]] = [items[j], items[i]];
  }
}
function spreadRepeats(order) {
  const n = order.length;
  if (n < 4) return;
  const position = new Map(order.map((t, p) => [t, p]));
  const repeats = order.filter((t) => TRIALS[t].repeat_of !== undefined && TRIALS[t].repeat_of !== null)
                       .sort((a, b) => a - b);
  for (const trial of repeats) {
    const here = position.get(trial), original = position.get(TRIALS[trial].repeat_of);
    if (Math.abs(here - original) >= 2) continue;
    const target = (original + Math.floor(n / 2)) % n;
    const moved = order[target];
    order[here] = moved; order[target] = trial;
    position.set(moved, here); position.set(trial, target);
  }
}
function raterSeed(rater) { return fnv1a32(DATA.order_seed + ":" + rater); }
function trialOrder(rater) {
  const rng = mulberry32(raterSeed(rater));
  const quality = [], diversity = [];
  TRIALS.forEach((t, i) => (t.type === "diversity" ? diversity : quality).push(i));
  shuffleInPlace(quality, rng);
  spreadRepeats(quality);
  shuffleInPlace(diversity, rng);
  return quality.concat(diversity);
}

// ---- state ----------------------------------------------------------------------------------
function save() {
  try { localStorage.setItem(STORE_KEY(state.rater), JSON.stringify(state)); } catch (e) { /* private mode */ }
}
function load(rater) {
  try {
    const saved = JSON.parse(localStorage.getItem(STORE_KEY(rater)) || "null");
    if (saved && saved.seed === raterSeed(rater) && saved.order.length === TRIALS.length) return saved;
  } catch (e) { /* unreadable: start afresh */ }
  return null;
}
const show = (id) => ["intro", "trial", "done"].forEach((s) =>
  document.getElementById(s).classList.toggle("hidden", s !== id));

function start() {
  const rater = document.getElementById("rater-id").value.trim();
  const error = document.getElementById("intro-error");
  if (!new RegExp("^" + DATA.rater_pattern + "$").test(rater)) {
    error.textContent = "Please enter the rater ID you were given (letters, digits, '.', '_' or '-').";
    error.classList.remove("hidden");
    return;
  }
  state = load(rater) || { rater: rater, seed: raterSeed(rater), order: trialOrder(rater), pos: 0, answers: {} };
  save();
  if (state.pos >= TRIALS.length) { finish(); } else { renderTrial(); }
}

// ---- one trial ------------------------------------------------------------------------------
function questionsOf(trial) { return trial.type === "diversity" ? DATA.questions.diversity : DATA.questions.quality; }
function fmt(seconds) {
  if (!isFinite(seconds)) return "0:00";
  const s = Math.floor(seconds);
  return Math.floor(s / 60) + ":" + String(s % 60).padStart(2, "0");
}
function currentAnswer() {
  const index = state.order[state.pos];
  if (!state.answers[index]) state.answers[index] = { scores: {}, plays: {}, started_at: new Date().toISOString() };
  return state.answers[index];
}
function el(tag, attrs, children) {
  const node = document.createElement(tag);
  Object.entries(attrs || {}).forEach(([k, v]) => (k === "text" ? (node.textContent = v) : node.setAttribute(k, v)));
  (children || []).forEach((c) => node.appendChild(c));
  return node;
}
function stopPlayers() { players.forEach((p) => { p.retired = true; p.audio.pause(); }); players = []; }

function makePlayer(name, stimulus, answer) {
  const button = el("button", { class: "play", "data-clip": stimulus, type: "button", text: "\u25B6 Play" });
  const fill = el("div");
  const bar = el("div", { class: "bar", title: "click to jump" }, [fill]);
  const time = el("span", { class: "time", text: "0:00" });
  const audio = new Audio(DATA.audio_dir + "/" + stimulus + ".wav");
  audio.preload = "auto";
  const player = { audio: audio, stimulus: stimulus };
  button.addEventListener("click", () => {
    if (audio.paused) {
      players.forEach((p) => p !== player && p.audio.pause());
      audio.play().catch(() => setHint("This clip cannot be played in this browser; please tell the experimenter."));
    } else { audio.pause(); }
  });
  bar.addEventListener("click", (e) => {
    if (audio.duration) audio.currentTime = audio.duration * (e.offsetX / bar.clientWidth);
  });
  audio.addEventListener("playing", () => {
    answer.plays[stimulus] = (answer.plays[stimulus] || 0) + 1;
    button.textContent = "\u275A\u275A Pause";
    save();
    update();
  });
  audio.addEventListener("pause", () => { button.textContent = "\u25B6 Play"; });
  audio.addEventListener("ended", () => { button.textContent = "\u25B6 Play again"; });
  audio.addEventListener("timeupdate", () => {
    fill.style.width = (audio.duration ? 100 * audio.currentTime / audio.duration : 0) + "%";
    time.textContent = fmt(audio.currentTime) + " / " + fmt(audio.duration);
  });
  audio.addEventListener("loadedmetadata", () => { time.textContent = "0:00 / " + fmt(audio.duration); });
  audio.addEventListener("error", () => {
    if (!player.retired) setHint("A clip failed to load; please tell the experimenter.");
  });
  players.push(player);
  return el("div", { class: "player" }, [el("span", { class: "name", text: name }), button, bar, time]);
}

function makeQuestion(q, answer) {
  const scale = el("div", { class: "scale" });
  for (let v = DATA.score_min; v <= DATA.score_max; v++) {
    const input = el("input", { type: "radio", name: q.id, value: String(v), id: q.id + "-" + v });
    if (answer.scores[q.id] === v) input.checked = true;
    input.addEventListener("change", () => { answer.scores[q.id] = v; save(); update(); });
    scale.appendChild(el("label", { for: q.id + "-" + v },
      [input, el("b", { text: String(v) }), el("span", { text: q.anchors[v - DATA.score_min] })]));
  }
  const legend = el("legend", { text: q.label });
  legend.appendChild(el("span", { class: "q", text: q.text }));
  return el("fieldset", {}, [legend, scale]);
}

function renderTrial() {
  stopPlayers();
  show("trial");
  const trial = TRIALS[state.order[state.pos]];
  const answer = currentAnswer();
  const total = TRIALS.length, diversity = trial.type === "diversity";
  const parts = TRIALS.some((t) => t.type === "diversity") ? 2 : 1;
  document.getElementById("part").textContent = parts === 1 ? "Clip ratings"
    : (diversity ? "Part 2 of 2: how different are the two clips?" : "Part 1 of 2: rate the clip");
  document.getElementById("counter").textContent = "Trial " + (state.pos + 1) + " of " + total;
  document.getElementById("progress").style.width = (100 * state.pos / total) + "%";
  const body = document.getElementById("trial-body");
  body.replaceChildren();
  if (diversity) {
    body.appendChild(el("p", { text: "Both clips were generated from the same description." }));
    body.appendChild(makePlayer("Clip A", trial.stimuli[0], answer));
    body.appendChild(makePlayer("Clip B", trial.stimuli[1], answer));
  } else {
    body.appendChild(el("p", { class: "prompt", text: "Description: " + trial.prompt }));
    body.appendChild(makePlayer("Clip", trial.stimuli[0], answer));
  }
  questionsOf(trial).forEach((q) => body.appendChild(makeQuestion(q, answer)));
  document.getElementById("next").textContent = state.pos + 1 === total ? "Finish" : "Next";
  update();
  window.scrollTo(0, 0);
}

function setHint(text) { document.getElementById("hint").textContent = text; }
function update() {
  const trial = TRIALS[state.order[state.pos]];
  const answer = currentAnswer();
  const unplayed = trial.stimuli.filter((s) => !answer.plays[s]).length;
  const unanswered = questionsOf(trial).filter((q) => !answer.scores[q.id]).length;
  const needPlay = DATA.require_playback && unplayed > 0;
  document.querySelectorAll(".scale label").forEach((l) => l.classList.toggle("disabled", needPlay));
  document.querySelectorAll(".scale input").forEach((i) => { i.disabled = needPlay; });
  document.getElementById("next").disabled = needPlay || unanswered > 0;
  setHint(needPlay ? (trial.stimuli.length > 1 ? "Play both clips to unlock the questions."
                                                 : "Play the clip to unlock the questions.")
          : unanswered > 0 ? "Answer " + (unanswered === 1 ? "the remaining question." : "all " + unanswered + " questions.")
          : "");
}

function next() {
  const answer = currentAnswer();
  answer.answered_at = new Date().toISOString();
  state.pos += 1;
  save();
  if (state.pos >= TRIALS.length) { finish(); } else { renderTrial(); }
}

// ---- results --------------------------------------------------------------------------------
function csvField(value) { return '"' + String(value === undefined || value === null ? "" : value).replace(/"/g, '""') + '"'; }
function ratingsCsv() {
  const lines = [DATA.columns.join(",")];
  state.order.forEach((index, position) => {
    const trial = TRIALS[index], answer = state.answers[index];
    if (!answer || !answer.answered_at) return;
    const plays = Object.values(answer.plays).reduce((a, b) => a + b, 0);
    questionsOf(trial).forEach((q) => {
      const row = { rater_id: state.rater, test_id: DATA.test_id, trial_type: trial.type, order_index: position + 1,
                    stimulus_a: trial.stimuli[0], stimulus_b: trial.stimuli[1] || "", question: q.id,
                    score: answer.scores[q.id], seed: state.seed, plays: plays, started_at: answer.started_at,
                    answered_at: answer.answered_at };
      lines.push(DATA.columns.map((c) => csvField(row[c])).join(","));
    });
  });
  return lines.join("\r\n") + "\r\n";
}
function fileName() { return "ratings_" + DATA.test_id + "_" + state.rater + ".csv"; }
function finish() {
  stopPlayers();
  show("done");
  document.getElementById("saved-as").textContent = "File name: " + fileName();
}
function download() {
  const url = URL.createObjectURL(new Blob([ratingsCsv()], { type: "text/csv" }));
  const link = el("a", { href: url, download: fileName() });
  document.body.appendChild(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10000);
}

document.getElementById("start").addEventListener("click", start);
document.getElementById("rater-id").addEventListener("keydown", (e) => { if (e.key === "Enter") start(); });
document.getElementById("next").addEventListener("click", next);
document.getElementById("download").addEventListener("click", download);
document.getElementById("trial-count").textContent = TRIALS.length + " trials, about "
  + Math.max(1, Math.round(TRIALS.length * 0.5)) + " minutes.";
window.musicdistillTrialOrder = trialOrder;
</script>
</body>
</html>
"""
