/* dreamtext view: draws the gallery or a run's page from the JSON in #dreamtext-data.
 *
 * A classic script (not a module), so that the same file works from the server and from a
 * `--static` folder opened as file://. Served pages poll `data.api` and redraw what changed.
 * Every address in the data is relative: a served page's <base href> is the server's root as
 * seen from it, so the pages also work under a proxy's path (/rnode/<node>/<port>/, /proxy/<port>/).
 * Text from the runs (prompts, errors, config) only ever goes into textContent, never into HTML.
 */
(function () {
  "use strict";

  const data = JSON.parse(document.getElementById("dreamtext-data").textContent);
  const app = document.getElementById("app");
  const live = Boolean(data.api) && location.protocol.startsWith("http");
  const STATES = ["running", "finished", "failed", "interrupted", "skipped"];

  // ------------------------------------------------------------------------------- helpers

  /** el("p", {class: "x", text: "hi"}, child, ...): an element; null children are skipped. */
  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (key === "text") node.textContent = value;
      else if (key === "class") node.className = value;
      else if (key === "dataset") Object.assign(node.dataset, value);
      else node.setAttribute(key, value === true ? "" : value);
    }
    for (const child of children.flat()) {
      if (child === null || child === undefined || child === false) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  /** object[key] where object has key itself, else undefined: a key from a run's files
   * ("constructor", "__proto__") found the function every object inherits. */
  function own(object, key) {
    return object && Object.prototype.hasOwnProperty.call(object, key) ? object[key] : undefined;
  }

  /** node.replaceChildren, but skipping null children (replaceChildren would write "null"). */
  function fill(node, ...children) {
    node.replaceChildren(...children.flat().filter((c) => c !== null && c !== undefined && c !== false));
    return node;
  }

  const svgNS = "http://www.w3.org/2000/svg";
  function svg(tag, attrs) {
    const node = document.createElementNS(svgNS, tag);
    for (const [key, value] of Object.entries(attrs || {})) node.setAttribute(key, value);
    return node;
  }

  // status.json's stages, as the time of each is shown: "10 min (describe 4 s, text→3D 9 min)".
  const STAGE_NAMES = { sample: "sampling", describe: "describe", descriptor: "descriptor", train: "text→3D" };

  /** "9.0 s", "1 min 40 s", "2 h 5 min", with no-break spaces: a card's line broke between
   * "9.0" and "s". Rounded before it is split into units: 119.6 s is "2 min 0 s", not
   * "1 min 60 s". */
  function formatSeconds(s) {
    if (s === null || s === undefined) return null;
    const seconds = Math.round(s);
    const minutes = Math.round(s / 60);
    let text;
    if (s < 9.95) text = `${s.toFixed(1)} s`;
    else if (seconds < 60) text = `${seconds} s`;
    else if (seconds < 3600) text = `${Math.floor(seconds / 60)} min ${seconds % 60} s`;
    else text = `${Math.floor(minutes / 60)} h ${minutes % 60} min`;
    return text.replaceAll(" ", "\u00a0");
  }

  /** A number as shown (4 significant digits); "–" for none, or for what a hand-edited file
   * holds in its place (a string: "5.1"). */
  function formatNumber(x) {
    if (typeof x !== "number" || !Number.isFinite(x)) return "–";
    const a = Math.abs(x);
    if (a !== 0 && (a < 1e-3 || a >= 1e5)) return x.toExponential(2);
    return String(Number(x.toPrecision(4)));
  }

  /** An ISO 8601 time as "2026-11-30 09:00 UTC" (batch.jsonl's "2026-11-30T09:00:30+00:00" broke
   * across a card's lines at its dash); as it is where it does not parse. */
  function formatTime(iso) {
    const time = new Date(iso);
    if (Number.isNaN(time.getTime())) return String(iso);
    return `${time.toISOString().slice(0, 16).replace("T", " ")} UTC`;
  }

  // The keys of batch.jsonl's records that hold a time (ISO 8601), shown as timeOf writes them.
  const TIME_KEYS = ["started", "finished"];

  /** A <time> of formatTime's text (whole on its line: the date broke at its dash). */
  function timeOf(iso) {
    return el("time", { datetime: iso, text: formatTime(iso) });
  }

  function stateOf(run) {
    const state = (run.status && run.status.state) || "unknown";
    return STATES.includes(state) ? state : "unknown";
  }

  function badge(run) {
    const state = stateOf(run);
    const status = run.status || {};
    const title = status.source ? `from ${status.source}` : null;
    return el("span", { class: `badge state-${state}`, text: state, title });
  }

  /** "exporting · step 60 / 1000 · 28 s · 5,120 MiB peak": what status knows, in one line. */
  function facts(run) {
    const s = run.status || {};
    const parts = [];
    if (s.activity) parts.push(s.activity);
    if (s.stage === "descriptor" && s.descriptor_step !== null && s.descriptor_step !== undefined) {
      const of = s.descriptor_iters ? ` / ${s.descriptor_iters}` : "";
      parts.push(`descriptor step ${s.descriptor_step}${of}`);
    }
    if (s.step !== null && s.step !== undefined) {
      parts.push(s.iters ? `step ${s.step} / ${s.iters}` : `step ${s.step}`);
    }
    const time = formatSeconds(s.seconds);
    const stages = Object.entries(s.stage_seconds || {});
    if (time && stages.length > 1) {
      const each = stages.map(([name, t]) => `${own(STAGE_NAMES, name) || name} ${formatSeconds(t)}`);
      parts.push(`${time} (${each.join(", ")})`);
    } else if (time) {
      parts.push(s.inferred ? `≈ ${time}` : time);
    }
    if (s.gpu_mem_mib !== null && s.gpu_mem_mib !== undefined) {
      parts.push(`${Math.round(s.gpu_mem_mib).toLocaleString("en")} MiB peak`);
    }
    if (s.quiet_minutes) parts.push(`no change for ${s.quiet_minutes} min`);
    if (s.process_gone) parts.push(`its process ${s.process_gone} ended without recording how (killed, or its disk full)`);
    if (s.saved_step !== null && s.saved_step !== undefined) {
      const of = s.stage === "descriptor" ? "descriptor " : "";
      parts.push(`saved at ${of}step ${s.saved_step}: --resume goes on from there`);
    }
    if (s.copy) parts.push(copyNote(s));
    return parts.join(" · ");
  }

  /** A copy of a run made while it ran (cp -r, rsync): a snapshot, at the step it was copied
   * at, of a run that went on in the folder it was copied from, whose process may have ended
   * since (the copy's own process was not killed). */
  function copyNote(s) {
    let at = "";
    if (s.stage === "descriptor" && s.descriptor_step !== null && s.descriptor_step !== undefined) {
      at = ` at descriptor step ${s.descriptor_step}`;
    } else if (s.step !== null && s.step !== undefined) {
      at = ` at step ${s.step}`;
    }
    const note = `a copy taken${at} while the run ran`;
    if (s.process_elsewhere) return `${note}: its process ${s.process_elsewhere} runs the folder it was copied from`;
    if (s.process_ended) return `${note}: its process ${s.process_ended}, which ran the folder it was copied from, has ended`;
    return note;
  }

  /** The parts (text, or text and a <time>) of the card's line of batch.jsonl's newest record
   * of the run. A batch writes a prompt's record when the prompt ends, so a running run's record
   * is of an attempt before this one (its speed and end are not this attempt's). */
  function batchLine(run) {
    const batch = run.batch;
    if (!batch) return null;
    const parts = [];
    if (batch.line !== undefined) parts.push(`batch line ${batch.line}`);
    if (batch.host) parts.push(`on ${batch.host}`);
    if (batch.shard) parts.push(`shard ${batch.shard}`);
    if (stateOf(run) === "running") {
      const ended = batch.finished ? [", ended ", timeOf(batch.finished)] : [];
      parts.push([`attempt before: ${batch.status || "unknown"}`, ...ended]);
      return parts;
    }
    if (batch.its !== null && batch.its !== undefined) parts.push(`${formatNumber(batch.its)} it/s`);
    if (batch.finished) parts.push(["ended ", timeOf(batch.finished)]);
    return parts;
  }

  /** An image run's learned sentence, else (before its descriptor is trained) CLIP's sentence. */
  function runTitle(run) {
    if (run.kind === "image") return run.trained_sentence || run.sentence || run.prompt || run.name;
    return run.prompt || run.name;
  }

  // A run page whose run is gone asks again this many poll intervals later (2 s → 30 s): the
  // folder may be moved back, but the page no longer asks as if the run were training.
  const GONE_POLL_FACTOR = 15;
  // A poll that has not been answered in this many poll intervals (2 s → 10 s) has failed. Over
  // an ssh tunnel whose network went away (a laptop's Wi-Fi, a suspended laptop) the request is
  // taken by the local ssh and never answered nor refused: without a limit the page waited on it
  // for as long as the connection hung (minutes), showing the last step as if it were live.
  const POLL_TIMEOUT_FACTOR = 5;
  // While polls fail, the page waits twice as long before each next one, up to this many poll
  // intervals (2 s → 10 s): a restarted tunnel or server is seen within 10 s, not 30.
  const BACKOFF_FACTOR = 5;

  /** The time of day of a Date, as "23:41:05 UTC" (the page shows times in UTC). */
  function clockTime(date) {
    return `${date.toISOString().slice(11, 19)} UTC`;
  }

  // How the viewer's 403 for a request without its token begins (server.py's NO_TOKEN); a
  // proxy's own 403 is not this.
  const TOKEN_REFUSED = "this viewer answers the address it printed";

  /** A poll the viewer refused for want of its token (it was started again with a new one). */
  class TokenRefused extends Error {}

  /** Whether a 404 is the server saying the polled run is not there ({"gone": id}), rather than
   * some other answer (a proxy's page for an address it does not know). */
  async function isGoneAnswer(response) {
    if (response.status !== 404) return false;
    try {
      const answer = await response.json();
      return answer !== null && typeof answer === "object" && "gone" in answer;
    } catch (error) {
      return false;
    }
  }

  /** Poll `data.api`; call onChange(newData) when its text changes. Back off while it fails.
   * Each poll sends the tag of the last answer (If-None-Match): while nothing changed the server
   * answers 304 without a body, and there is nothing to read, compare or draw.
   * onGone(true) when the server says the run is gone (its folder removed or moved: the page
   * polls slowly then), onGone(false) when it is back. since(): a cursor to send (`?since=`),
   * or null. onChange returns false when it could not apply the answer: the next poll names
   * no tag, so that the server answers in full. */
  function poll(onChange, onGone, since) {
    if (!live) return;
    const script = document.getElementById("dreamtext-data");
    let last = script.textContent;
    let etag = script.dataset.etag || null;
    let delay = data.poll_ms;
    let gone = false;
    // When the page last heard from the server: what it shows is as of then.
    let answeredAt = new Date();
    const indicator = el("p", { class: "offline", role: "status", hidden: true });
    document.body.append(indicator);
    async function tick() {
      const abort = new AbortController();
      const timer = setTimeout(() => abort.abort(), data.poll_ms * POLL_TIMEOUT_FACTOR);
      try {
        // no-store: the tag is ours to send, and a 304 comes to this code as it is.
        const headers = etag ? { "If-None-Match": etag } : {};
        const cursor = since ? since() : null;
        const url = cursor ? `${data.api}?since=${encodeURIComponent(cursor)}` : data.api;
        const response = await fetch(url, { cache: "no-store", headers, signal: abort.signal });
        if (onGone && (await isGoneAnswer(response))) {
          clearTimeout(timer);
          answeredAt = new Date();
          if (!gone) onGone(true);
          gone = true;
          indicator.hidden = true;
          setTimeout(tick, data.poll_ms * GONE_POLL_FACTOR);
          return;
        }
        if (response.status === 403 && (await response.text()).startsWith(TOKEN_REFUSED)) {
          throw new TokenRefused();
        }
        if (response.status !== 304 && !response.ok) throw new Error(String(response.status));
        if (gone) onGone(false);
        gone = false;
        if (response.status !== 304) {
          const text = await response.text();
          let applied = true;
          if (text !== last) {
            // Parsed before it counts as the last answer: a page that is not ours (a proxy's
            // login page once its session ended, 200 after a redirect) fails every poll, and
            // the page says so, instead of once and then never again.
            const fresh = JSON.parse(text);
            last = text;
            applied = onChange(fresh) !== false;
          }
          etag = applied ? response.headers.get("ETag") : null;
        }
        answeredAt = new Date();
        indicator.hidden = true;
        delay = data.poll_ms;
      } catch (error) {
        // A restarted viewer has a new token: asking on does not mend that, opening it does.
        indicator.textContent = error instanceof TokenRefused
          ? "the viewer was started again or wants its address opened: open the address it " +
            "printed (with its ?token=), and this page follows again; what it shows is from " +
            clockTime(answeredAt)
          : `server not answering since ${clockTime(answeredAt)}: ` +
            "what the page shows is from then; it keeps asking";
        indicator.hidden = false;
        delay = Math.min(delay * 2, data.poll_ms * BACKOFF_FACTOR);
      }
      clearTimeout(timer);
      setTimeout(tick, delay);
    }
    setTimeout(tick, delay);
  }

  // ------------------------------------------------------------------------------- motion

  // Whether the turntables move (a GIF loops for as long as the page is open; WCAG 2.2.2 asks
  // for a way to pause it): the reader's choice, made with the page's button and kept for the
  // viewer's other pages and later visits, else the system's prefers-reduced-motion. Paused,
  // a GIF shows its first frame (motionPicture) and the turntable video does not start itself.
  const MOTION_KEY = "dreamtext-motion";
  const reduceMotion = window.matchMedia("(prefers-reduced-motion: reduce)");
  let motionChoice = storedMotion();  // "play", "pause", or null: none made

  function storedMotion() {
    try {
      const value = localStorage.getItem(MOTION_KEY);
      return value === "play" || value === "pause" ? value : null;
    } catch (error) {
      return null;  // storage refused (a browser's setting): the choice lasts the page's life
    }
  }

  function motionPlays() {
    return motionChoice ? motionChoice === "play" : !reduceMotion.matches;
  }

  // html's data-motion (app.css shows a GIF or its still by it), the page's motion buttons and
  // its turntable video as motionPlays() says. The buttons are those in the page (a list of
  // them kept each one a redraw replaced, with its listener: one more at each redraw of a live
  // run page's GIF turntable). A still is drawn when it is first shown: here for the pictures
  // in the page, and by the gallery for cards the filter puts back.
  function applyMotion() {
    const plays = motionPlays();
    document.documentElement.dataset.motion = plays ? "playing" : "paused";
    for (const button of document.querySelectorAll(".motion-toggle")) {
      button.textContent = `${plays ? "pause" : "play"} ${button.dataset.what}`;
    }
    for (const video of document.querySelectorAll("video.turntable-video")) followMotion(video, plays);
    if (!plays) stillsIn(document);
  }
  reduceMotion.addEventListener("change", () => { if (!motionChoice) applyMotion(); });

  /** Pause a playing turntable video where motion stops (the system's prefers-reduced-motion
   * turned on while the page is open), and play it again where motion plays, if it is the page
   * that held it still (paused by this, or not started for motion paused when it was drawn):
   * a video the reader paused with its controls stays paused. */
  function followMotion(video, plays) {
    if (!plays && !video.paused) {
      video.pause();
      video.dataset.held = "1";
    } else if (plays && video.dataset.held) {
      delete video.dataset.held;
      video.play().catch(() => {});  // one that cannot play falls back to its GIF (its error)
    }
  }

  /** The page's one pause/play button of its turntables ("pause turntables"): a <button>, so
   * Tab reaches it and Enter or Space presses it; its text says what pressing it does. */
  function motionButton(what) {
    const button = el("button", { type: "button", class: "motion-toggle", dataset: { what } });
    button.textContent = `${motionPlays() ? "pause" : "play"} ${what}`;
    button.addEventListener("click", () => {
      motionChoice = motionPlays() ? "pause" : "play";
      try { localStorage.setItem(MOTION_KEY, motionChoice); } catch (error) { /* as storedMotion */ }
      applyMotion();
    });
    applyMotion();
    return button;
  }

  /** An animated GIF that stops: the <img> (its alt the picture's name, loading as `attrs` say),
   * and over it a canvas of its first frame (drawImage draws an animated image's first frame),
   * shown while motion is paused (app.css: html[data-motion=paused]); the canvas is drawn
   * only then, once the image has loaded. */
  function motionPicture(attrs) {
    const image = el("img", attrs);
    const still = el("canvas", { class: "still", "aria-hidden": "true" });
    image.addEventListener("load", () => { if (!motionPlays()) drawStill(image, still); });
    return el("span", { class: "motion" }, image, still);
  }

  /** Draw `image`'s first frame on `still`, once, where the image has loaded. */
  function drawStill(image, still) {
    if (still.dataset.drawn || !image.complete || !image.naturalWidth) return;
    still.width = image.naturalWidth;
    still.height = image.naturalHeight;
    still.getContext("2d").drawImage(image, 0, 0);
    still.dataset.drawn = "1";
  }

  /** Draw the stills under `root` not drawn yet (motion paused). */
  function stillsIn(root) {
    for (const picture of root.querySelectorAll(".motion")) {
      drawStill(picture.querySelector("img"), picture.querySelector("canvas"));
    }
  }

  // ------------------------------------------------------------------------------- gallery

  const SORTS = {
    newest: ["newest first", (a, b) => (b.updated || 0) - (a.updated || 0)],
    oldest: ["oldest first", (a, b) => (a.updated || 0) - (b.updated || 0)],
    prompt: ["prompt A–Z", (a, b) => runTitle(a).localeCompare(runTitle(b))],
    status: ["status", (a, b) => STATES.indexOf(stateOf(a)) - STATES.indexOf(stateOf(b))],
    batch: ["batch line", (a, b) => ((a.batch || {}).line || 1e9) - ((b.batch || {}).line || 1e9)],
  };

  /** What a card's picture is (page.py's thumbnail_of), as its caption says it and as its alt
   * says it of the run: [caption, alt]; null where there is no picture. */
  function pictureText(run) {
    const of = run.thumbnail_of;
    if (!run.thumbnail || !of) return null;
    const title = runTitle(run);
    if (of.kind === "turntable") {
      return ["turntable: albedo | depth", `turntable of ${title}: albedo beside depth`];
    }
    if (of.kind === "preview") {
      // The rows' meaning in the alt only: on a card's caption it took two lines of a narrow card.
      return [previewName(of.step), previewAlt(of.step, title)];
    }
    return ["source image", `source image of ${title}`];
  }

  /** "final preview" or "preview at step 20" (step null: the final one). */
  function previewName(step) {
    return step === null || step === undefined ? "final preview" : `preview at step ${step}`;
  }

  /** A preview's alt: which one, of what, and what its two rows hold (trainer.save_preview). */
  function previewAlt(step, title) {
    return `${previewName(step)} of ${title}: albedo above, shape (textureless) below`;
  }

  function thumbnail(run) {
    const text = pictureText(run);
    if (text && run.thumbnail_of.kind === "turntable") {
      return motionPicture({ src: run.thumbnail, alt: text[1], loading: "lazy" });
    }
    if (text) return el("img", { src: run.thumbnail, alt: text[1], loading: "lazy" });
    const note = !run.workspace ? "no workspace" : stateOf(run) === "running" ? "no preview yet" : "no preview";
    return el("div", { class: "no-thumb", text: note });
  }

  // Cards drawn so far, by run id: redrawn only when their run changed, and keeping their
  // picture while its address is the same (a GIF would restart at every poll otherwise).
  const drawnCards = new Map();
  let cardCount = 0;  // for the ids of each card's heading and facts

  function card(run) {
    const before = drawnCards.get(run.id);
    if (before && before.run === run) return before.node;  // a run no answer has sent again
    const key = JSON.stringify(run);
    if (before && before.key === key) {
      before.run = run;
      return before.node;
    }
    // The same picture, and the same alt (a run's title changes when its sentence is learned).
    const picture = JSON.stringify([run.thumbnail, pictureText(run)]);
    const thumb = before && before.picture === picture ? before.thumb : thumbnail(run);
    const node = cardNode(run, thumb);
    drawnCards.set(run.id, { run, key, node, thumb, picture });
    return node;
  }

  /** Forget the drawn cards of runs that are not in `runs` (removed, moved away): kept, a
   * gallery open while a batch's runs came and went held every card it had ever drawn. */
  function forgetCards(runs) {
    const ids = new Set(runs.map((run) => run.id));
    for (const id of drawnCards.keys()) if (!ids.has(id)) drawnCards.delete(id);
  }

  /** The gallery's runs after a poll's answer: its whole list, or, from an answer to the page's
   * cursor (`since`), the runs it has with those that changed put in. Where runs came or went,
   * the runs `removed` and those `added` are taken out, then each added one is put at its
   * place ([id, place], in the order of their places); or, where the answer has it, the list
   * is in the order of `ids`. null when the answer names a run the page does not have. */
  function afterAnswer(runs, answer) {
    if (!answer.since) return answer.runs;
    const byId = new Map(runs.map((run) => [run.id, run]));
    for (const run of answer.changed) byId.set(run.id, run);
    let ids = answer.ids;
    if (!ids) {
      const added = answer.added || [];
      const out = new Set([...(answer.removed || []), ...added.map(([id]) => id)]);
      ids = runs.map((run) => run.id).filter((id) => !out.has(id));
      for (const [id, place] of added) {
        if (place > ids.length) return null;
        ids.splice(place, 0, id);
      }
    }
    const after = ids.map((id) => byId.get(id));
    return after.includes(undefined) ? null : after;
  }

  /** A card: a figure of the run's picture, captioned by what the picture is, the run's prompt,
   * its status and its batch line. */
  function cardNode(run, thumb) {
    const status = run.status || {};
    const picture = pictureText(run);
    // The prompt is the card's heading (a screen reader goes from card to card by headings), and
    // the link is named by it and the status: named by its whole text, every card's link began
    // with what its picture is ("turntable: albedo | depth").
    cardCount += 1;
    const ids = { title: `card-title-${cardCount}`, facts: `card-facts-${cardCount}` };
    const body = el(
      "figcaption",
      { class: "card-body" },
      picture ? el("p", { class: "picture", text: picture[0] }) : null,
      el("h2", { class: "prompt", id: ids.title, dir: "auto", text: runTitle(run) }),
      run.kind === "image" && run.sentence && run.sentence !== runTitle(run)
        ? el("p", { class: "sentence", text: `CLIP: ${run.sentence}` })
        : null,
      run.diverse_prompt && run.diverse_prompt !== runTitle(run)
        ? el("p", { class: "sentence", dir: "auto", text: `--diverse: ${run.diverse_prompt}` })
        : null,
      el("p", { class: "facts", id: ids.facts }, badge(run), " ", facts(run)),
      run.batch ? el("p", { class: "batch" }, ...batchLine(run).flatMap((part, i) => [i ? " · " : null, part].flat())) : null,
      status.error ? el("p", { class: "error", text: String(status.error), title: String(status.error) }) : null,
      el("p", { class: "name", text: run.name }),
    );
    const figure = el("figure", {}, el("div", { class: "thumb" }, thumb), body);
    const attrs = { class: "card", dataset: { run: run.id, state: stateOf(run) } };
    if (run.workspace) return el("a", { ...attrs, href: run.href, "aria-labelledby": `${ids.title} ${ids.facts}` }, figure);
    return el("div", attrs, figure);
  }

  /** Make `nodes` the children of `parent`, touching only those that changed: a poll while a
   * batch runs redraws a card or two, which may move (newest first); the hundreds of others stay
   * in the page, and the browser lays out again only around what moved. A child whose place
   * comes later (the one before `node`) is taken out and put back when its turn comes. */
  function place(parent, nodes) {
    const wanted = new Set(nodes);
    let cursor = parent.firstChild;
    for (const node of nodes) {
      while (cursor && (!wanted.has(cursor) || (cursor !== node && cursor.nextSibling === node))) {
        const next = cursor.nextSibling;
        cursor.remove();
        cursor = next;
      }
      if (node === cursor) cursor = cursor.nextSibling;
      else parent.insertBefore(node, cursor);
    }
    while (cursor) {
      const next = cursor.nextSibling;
      cursor.remove();
      cursor = next;
    }
    return parent;
  }

  function summary(runs) {
    const counts = {};
    for (const run of runs) counts[stateOf(run)] = (counts[stateOf(run)] || 0) + 1;
    const parts = [`${runs.length} run${runs.length === 1 ? "" : "s"}`];
    for (const state of [...STATES, "unknown"]) if (counts[state]) parts.push(`${counts[state]} ${state}`);
    return parts.join(" · ");
  }

  function gallery() {
    const filter = el("input", {
      type: "search", id: "filter", placeholder: "filter by prompt", "aria-label": "filter by prompt",
    });
    const sort = el("select", { id: "sort", "aria-label": "sort" },
      Object.entries(SORTS).map(([key, [label]]) => el("option", { value: key, text: label })));
    const hasBatch = data.runs.some((run) => run.batch);
    sort.value = hasBatch ? "batch" : "newest";
    const counts = el("p", { class: "summary" });
    const cards = el("section", { id: "cards", class: "cards" });
    // A status, in the page from the start and empty while cards are shown: a screen reader
    // says its text when it appears (a live region shown only then, as this line was, is not
    // one the reader is listening to yet).
    const none = el("p", { class: "none", role: "status" });
    fill(app,
      el("header", { class: "top" }, el("h1", { text: "dreamtext runs" }),
        (data.folders || []).length ? el("p", { class: "folders", text: `in ${data.folders.join(", ")}` }) : null,
        counts),
      el("div", { class: "controls" }, filter, el("label", {}, "sort ", sort), motionButton("turntables")),
      cards,
      none,
    );
    let runs = data.runs;

    function draw() {
      // NFC both: "crème" typed (precomposed è) finds a prompt saved with a combining accent
      // (a prompts file from a macOS tool), as dreamtext takes them for one prompt.
      const needle = filter.value.trim().normalize("NFC").toLowerCase();
      const shown = runs
        .filter((run) => !needle || [run.prompt, run.diverse_prompt, run.trained_sentence, run.sentence, run.name]
          .some((text) => text && text.normalize("NFC").toLowerCase().includes(needle)))
        .sort(SORTS[sort.value][1]);
      counts.textContent = summary(runs);
      place(cards, shown.map(card));
      if (!motionPlays()) stillsIn(cards);  // cards back from the filter, paused since
      let said = "";
      if (shown.length === 0) said = runs.length ? "No run matches the filter." : "No runs yet: they appear here as they start.";
      // Written only when it changes: each write is said again, at every key typed and poll.
      if (none.textContent !== said) none.textContent = said;
    }
    filter.addEventListener("input", draw);
    sort.addEventListener("change", draw);
    draw();
    // What the page has, as the server numbers its changes: a poll gets only the runs that
    // changed since (a batch of 1,000 runs resent every card at each change of one).
    let cursor = data.cursor || null;
    poll((fresh) => {
      const after = afterAnswer(runs, fresh);
      cursor = after ? fresh.cursor || null : null;
      if (!after) return false;
      runs = after;
      forgetCards(runs);
      draw();
      return true;
    }, null, () => cursor);
  }

  // ------------------------------------------------------------------------------- charts

  /** One line chart as SVG: one polyline vertex per finite (step, value) pair; a lone pair (a
   * run's first log line) is a dot in the middle, labelled with its step. */
  function chart(key, label, steps, values) {
    const points = [];
    values.forEach((y, i) => {
      if (y === null || y === undefined) return;
      const x = steps[i] === null || steps[i] === undefined ? i : steps[i];
      points.push([x, y]);
    });
    const figure = el("figure", { class: "chart", dataset: { key, points: points.length } });
    figure.append(el("figcaption", { text: label }));
    const W = 320, H = 150, R = 8, T = 8, B = 22;
    let L = 48;
    const box = svg("svg", { viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": chartAlt(label, points) });
    figure.append(box);
    if (points.length === 0) {
      figure.append(el("p", { class: "empty", text: "no values yet" }));
      return figure;
    }
    const xs = points.map((p) => p[0]), ys = points.map((p) => p[1]);
    let [x0, x1] = [Math.min(...xs), Math.max(...xs)];
    let [y0, y1] = [Math.min(...ys), Math.max(...ys)];
    const oneStep = x1 === x0;
    if (oneStep) { x0 -= 1; x1 += 1; }
    if (y1 === y0) { y0 -= 0.5; y1 += 0.5; }
    // The plot starts right of its longest value label ("0.008333" ran past the left edge):
    // at most 6.5 units a character of the 10-unit font, 4 units of gap, 4 of margin.
    const longest = Math.max(formatNumber(y0).length, formatNumber(y1).length);
    L = Math.max(L, Math.ceil(8 + 6.5 * longest));
    const sx = (x) => L + ((x - x0) / (x1 - x0)) * (W - L - R);
    const sy = (y) => T + (1 - (y - y0) / (y1 - y0)) * (H - T - B);
    box.append(svg("rect", { x: L, y: T, width: W - L - R, height: H - T - B, class: "plot" }));
    const text = (x, y, anchor, content) => {
      const node = svg("text", { x, y, "text-anchor": anchor });
      node.textContent = content;
      return node;
    };
    box.append(text(L - 4, T + 8, "end", formatNumber(y1)));
    box.append(text(L - 4, H - B, "end", formatNumber(y0)));
    // Steps as they are, as the header gives them (4 digits made step 12345 "step 12350").
    const step = (x) => (Number.isInteger(x) ? String(x) : formatNumber(x));
    if (oneStep) {
      box.append(text(sx(xs[0]), H - 6, "middle", `step ${step(xs[0])}`));
    } else {
      box.append(text(L, H - 6, "start", step(x0)));
      box.append(text(W - R, H - 6, "end", `step ${step(x1)}`));
    }
    box.append(svg("polyline", {
      class: "line",
      points: points.map(([x, y]) => `${sx(x).toFixed(1)},${sy(y).toFixed(1)}`).join(" "),
    }));
    if (points.length === 1) {
      box.append(svg("circle", { class: "point", cx: sx(xs[0]).toFixed(1), cy: sy(ys[0]).toFixed(1), r: 3 }));
    }
    return figure;
  }

  /** A chart's text alternative, what a screen reader says of it: "loss: 40 values from step 1
   * to step 60, first 0.5, last 0.02, lowest 0.01, highest 0.5" (a picture's name alone said
   * nothing of the curve). */
  function chartAlt(label, points) {
    if (points.length === 0) return `${label}: no values yet`;
    const ys = points.map((p) => p[1]);
    const step = (x) => (Number.isInteger(x) ? String(x) : formatNumber(x));
    const first = points[0], last = points[points.length - 1];
    const span = points.length === 1 ? `at step ${step(first[0])}` : `from step ${step(first[0])} to step ${step(last[0])}`;
    const count = `${points.length} value${points.length === 1 ? "" : "s"}`;
    const values = points.length === 1 ? formatNumber(first[1])
      : `first ${formatNumber(first[1])}, last ${formatNumber(last[1])}, ` +
        `lowest ${formatNumber(Math.min(...ys))}, highest ${formatNumber(Math.max(...ys))}`;
    return `${label}: ${count} ${span}, ${values}`;
  }

  // ------------------------------------------------------------------------------- 3D view

  // The keyboard's way to move the 3D view (OrbitControls follow a pointer): with the view
  // focused, the arrows turn the camera around the mesh by this angle and + and - move it nearer
  // and farther by this factor.
  const KEY_TURN = Math.PI / 12;
  const KEY_ZOOM = 0.85;

  /** Move `camera` around `target` for `key` (an arrow, +, =, -); whether the key is one of
   * those. The camera's offset from the target in spherical coordinates: azimuth θ about the
   * up axis, polar angle φ from it (kept off the poles, where "up" has no direction), radius r;
   * offset = r (sin φ sin θ, cos φ, sin φ cos θ). */
  function turnView(camera, target, key) {
    const offset = camera.position.clone().sub(target);
    let r = offset.length();
    let theta = Math.atan2(offset.x, offset.z);
    let phi = Math.acos(Math.min(1, Math.max(-1, offset.y / r)));
    if (key === "ArrowLeft") theta -= KEY_TURN;
    else if (key === "ArrowRight") theta += KEY_TURN;
    else if (key === "ArrowUp") phi -= KEY_TURN;
    else if (key === "ArrowDown") phi += KEY_TURN;
    else if (key === "+" || key === "=") r *= KEY_ZOOM;
    else if (key === "-" || key === "_") r /= KEY_ZOOM;
    else return false;
    phi = Math.min(Math.PI - 0.01, Math.max(0.01, phi));
    offset.set(r * Math.sin(phi) * Math.sin(theta), r * Math.cos(phi), r * Math.sin(phi) * Math.cos(theta));
    camera.position.copy(target).add(offset);
    camera.lookAt(target);
    return true;
  }

  /** A three.js view of one GLB: orbit with the mouse, zoom with the wheel, PBR texture lit by a
   * hemisphere and a key light. Draws only when something changes. */
  function MeshView(container) {
    // Focusable, named (drawViewer names the run), and moved by keys as by the pointer.
    const canvas = el("canvas", { id: "mesh-canvas", dataset: { state: "loading" }, tabindex: 0, role: "img" });
    container.append(canvas);
    let renderer;
    try {
      renderer = new THREE.WebGLRenderer({ canvas, antialias: true, preserveDrawingBuffer: true });
    } catch (error) {
      canvas.dataset.state = "no-webgl";
      container.append(el("p", { class: "empty", text: "This browser has no WebGL; download the GLB below." }));
      return { load() {}, failed() {}, dispose() {}, canvas };
    }
    renderer.outputColorSpace = THREE.SRGBColorSpace;
    renderer.setPixelRatio(Math.min(window.devicePixelRatio || 1, 2));
    const scene = new THREE.Scene();
    scene.background = new THREE.Color(0xeeeeea);
    // Sky-and-ground light plus a key light. A prefiltered environment map looks richer, but its
    // shader takes seconds to compile in software WebGL (remote machines, headless tests).
    scene.add(new THREE.HemisphereLight(0xffffff, 0x8a8a80, 2.2));
    const key = new THREE.DirectionalLight(0xffffff, 1.6);
    key.position.set(2, 3, 4);
    scene.add(key);
    const camera = new THREE.PerspectiveCamera(40, 1, 0.01, 100);
    camera.position.set(1.6, 1.1, 2.2);
    const controls = new THREE.OrbitControls(camera, canvas);
    let model = null;

    function draw() {
      renderer.render(scene, camera);
    }
    function resize() {
      const width = container.clientWidth || 400;
      const height = Math.round(width * 0.62);
      renderer.setSize(width, height, false);
      camera.aspect = width / height;
      camera.updateProjectionMatrix();
      draw();
    }
    controls.addEventListener("change", draw);
    canvas.addEventListener("keydown", (event) => {
      if (event.altKey || event.ctrlKey || event.metaKey) return;
      if (!turnView(camera, controls.target, event.key)) return;
      event.preventDefault();  // the arrows would scroll the page
      controls.update();
      draw();
    });
    const observer = new ResizeObserver(resize);
    observer.observe(container);
    resize();
    let disposed = false;

    function show(gltf) {
      if (disposed) return;  // a load that ended after its view was taken down
      if (model) {
        scene.remove(model);
        model.traverse((node) => node.geometry && node.geometry.dispose());
      }
      model = gltf.scene;
      scene.add(model);
      const box = new THREE.Box3().setFromObject(model);
      const center = box.getCenter(new THREE.Vector3());
      const size = box.getSize(new THREE.Vector3()).length() || 1;
      controls.target.copy(center);
      camera.position.copy(center).add(new THREE.Vector3(0.55, 0.45, 0.75).multiplyScalar(size * 1.3));
      camera.near = size / 100;
      camera.far = size * 100;
      camera.updateProjectionMatrix();
      controls.update();
      draw();
      canvas.dataset.state = "drawn";
    }
    let shownError = null;  // a failed load's line, removed when a later one loads
    function failed(error) {
      if (disposed) return;
      canvas.dataset.state = "failed";
      if (shownError) shownError.remove();
      shownError = el("p", { class: "error", text: `could not read the GLB: ${error && error.message}` });
      container.append(shownError);
    }
    const loader = new THREE.GLTFLoader();
    return {
      failed,
      canvas,
      /** source: a URL, or an ArrayBuffer of GLB bytes. */
      load(source) {
        if (shownError) shownError.remove();
        shownError = null;
        canvas.dataset.state = "loading";
        if (source instanceof ArrayBuffer) loader.parse(source, "", show, failed);
        else loader.load(source, show, undefined, failed);
      },
      /** Free the view's WebGL context now. A view left to the garbage collector never was:
       * its ResizeObserver kept it, and with it the context, alive (a live run's mesh gone for
       * one poll and back, as a re-export swaps its folder, made a new view each time, and past
       * 16 contexts Chromium drops the oldest). */
      dispose() {
        disposed = true;
        observer.disconnect();
        controls.dispose();
        if (model) model.traverse((node) => node.geometry && node.geometry.dispose());
        renderer.dispose();
        renderer.forceContextLoss();
      },
    };
  }

  /** A static export stores its GLB once, as a script that sets window.dreamtextGlb to its
   * bytes in base64 (a file:// page cannot fetch a file): a promise of those bytes, read once,
   * for the 3D view and for the download (glbDownload). */
  let glbBytes = null;
  function staticGlb() {
    if (!glbBytes) {
      glbBytes = new Promise((resolve, reject) => {
        const script = el("script", { src: data.glb_script });
        script.addEventListener("load", () => {
          const text = atob(window.dreamtextGlb);
          delete window.dreamtextGlb;
          const bytes = new Uint8Array(text.length);
          for (let i = 0; i < text.length; i++) bytes[i] = text.charCodeAt(i);
          resolve(bytes);
        });
        script.addEventListener("error", () => reject(new Error(`${data.glb_script} did not load`)));
        document.body.append(script);
      });
    }
    return glbBytes;
  }

  /** A static page's GLB link: a Blob of the script's bytes, saved under the run's name
   * (a file:// page's download attribute names a blob: link, not a link to a file). */
  let glbBlobUrl = null;
  function glbDownload(link) {
    if (!glbBlobUrl) {
      glbBlobUrl = staticGlb().then((bytes) =>
        URL.createObjectURL(new Blob([bytes], { type: "model/gltf-binary" })));
    }
    glbBlobUrl.then((url) => { link.href = url; }, () => {});
    // A click before the bytes are read: saved once they are.
    link.addEventListener("click", (event) => {
      if (link.href.startsWith("blob:")) return;
      event.preventDefault();
      glbBlobUrl.then(() => link.click(), (error) => {
        link.replaceWith(el("span", { class: "error", text: `GLB: ${error.message}` }));
      });
    });
    return link;
  }

  // ------------------------------------------------------------------------------- run page

  // What the 3D view's keys do (turnView), said in its caption and its name.
  const KEYS_HINT = "arrow keys turn it, + and − zoom";

  function runPage() {
    const header = el("header", { class: "top" });
    const viewer = el("figure", { class: "panel viewer" });
    const turntable = el("figure", { class: "panel turntable" });
    const previews = el("figure", { class: "panel previews" });
    const source = el("figure", { class: "panel source", hidden: true });
    const charts = el("div", { class: "charts" });
    const details = el("section", { class: "details" });
    fill(app,
      el("nav", {}, el("a", { href: data.gallery, text: "← all runs" })),
      header,
      el("section", { class: "media" }, viewer, turntable, previews, source),
      el("section", { class: "curves" }, el("h2", { text: "Training" }), charts),
      details,
    );

    // What the tables call mesh.json's and batch.jsonl's keys (page.py's MESH_LABELS, ...).
    const labelsScript = document.getElementById("dreamtext-labels");
    const labels = labelsScript ? JSON.parse(labelsScript.textContent) : {};
    const meshView = { view: null, url: null };
    // urls: those drawn, null before the first draw (a run of no previews drew nothing: an
    // empty panel, its list the same as the [] it started with).
    const previewState = { urls: null, index: -1 };
    let shownVideo = null;

    function drawHeader(run) {
      const status = run.status || {};
      fill(header,
        el("h1", { class: "prompt", dir: "auto", text: runTitle(run) }),
        el("p", { class: "facts" }, badge(run), " ", facts(run)),
        status.error ? el("p", { class: "error", text: String(status.error) }) : null,
        run.kind === "image" ? el("p", { class: "sentence" },
          "Learned sentence: ", run.trained_sentence ? el("q", { dir: "auto", text: run.trained_sentence }) : "not trained yet",
          run.sentence ? [" · CLIP sentence: ", el("q", { dir: "auto", text: run.sentence })] : null,
          run.diverse_prompt ? [" · sampled by --diverse from ", el("q", { dir: "auto", text: run.diverse_prompt })] : null) : null,
        el("p", { class: "name", text: run.workspace || run.name }),
      );
    }

    /** "no <what> yet", or for a run that ended without them (failed, interrupted) that none is
     * coming unless it runs again (it may have stopped in training or in its export:
     * status.json's error and phase say which). */
    function noFiles(run, what) {
      const outside = linkedOut(run, what);
      if (outside) return outside;
      const state = stateOf(run);
      if (state === "failed") return `no ${what}: the run failed`;
      if (state === "interrupted") return `no ${what}: the run was interrupted`;
      const status = run.status || {};
      if (state === "finished" && status.stage === "describe") {
        return `no ${what}: \`dreamtext describe\` finds the sentence only; \`dreamtext image\` makes the 3D run`;
      }
      return `no ${what} yet`;
    }

    /** Where the run's files of `what` are there but outside its folder, through a link (its
     * video/ on another disk), which the server does not follow: the line that says so. */
    function linkedOut(run, what) {
      const folder = { mesh: "mesh/", turntable: "video/", previews: "previews/" }[what];
      const rel = (run.linked_out || []).find((path) => path.startsWith(folder));
      if (!rel) return null;
      return `no ${what} shown: ${rel} lies outside the run's folder (through a link), ` +
        "which the viewer does not follow";
    }

    /** Why a run has no mesh or turntable: none yet, or (a finished run trained with --no-export)
     * none to come, and how to make them. */
    function noExport(run, what) {
      const outside = linkedOut(run, what);
      if (outside) return outside;
      const command = run.export_command || "dreamtext export --workspace <its folder>";
      const options = (run.mesh_stats && run.mesh_stats.options) || {};
      if (what === "turntable" && options.video === false) {
        return `no turntable: exported with --no-video; ${command} --video makes one`;
      }
      // Exported (an export from before mesh.json recorded its options), and no export running:
      // none is coming either.
      const exporting = (run.status || {}).export;
      if (what === "turntable" && run.mesh_stats && stateOf(run) === "finished" && !exporting) {
        return `no turntable: its export made none; ${command} --video makes one`;
      }
      const finished = stateOf(run) === "finished" && run.config && run.config.export === false;
      if (!finished) return noFiles(run, what);
      return `not exported (--no-export): ${command} makes the ${what}`;
    }

    /** The download links of the mesh files the run's export made, under the run's name: the
     * GLB and PLY (which hold all they show) each, and a zip, where the OBJ keeps the MTL and
     * texture it names (saved one by one, two runs' textures clashed). */
    function meshLinks(run) {
      const names = run.mesh_names || {};
      const single = [["glb", "GLB"], ["ply", "PLY"]]
        .filter(([kind]) => run.mesh[kind])
        .map(([kind, label]) => {
          const link = el("a", { href: run.mesh[kind], download: names[kind] || true, text: label });
          return kind === "glb" && data.glb_script && !live ? glbDownload(link) : link;
        });
      if (!run.mesh_zip) return single;
      // What this zip holds: every mesh file (the server's), or those a --static folder does not
      // hold on their own.
      const held = [["glb", "GLB"], ["obj", "OBJ"], ["mtl", "MTL"], ["texture", "texture"], ["ply", "PLY"]]
        .filter(([kind]) => run.mesh_zip.holds.includes(kind)).map(([, label]) => label);
      const zip = el("a", { href: run.mesh_zip.url, download: run.mesh_zip.name, class: "zip",
        title: run.mesh_zip.name, text: `zip (${held.join(", ")})` });
      return [...single, zip];
    }

    /** Why a run whose export made an OBJ or a PLY (`--formats obj,ply`) has no 3D view, and how
     * to add the GLB it shows without losing those files (a re-export replaces the mesh files). */
    function noGlb(run) {
      const formats = ["obj", "ply"].filter((kind) => run.mesh[kind]);
      // The server's command: the folder quoted for a shell, a static site's as it was typed.
      const command = run.export_command || "dreamtext export --workspace <its folder>";
      return `the 3D view shows a GLB; this export has none (--formats ${formats.join(",")}): ` +
        `${command} --formats ${["glb", ...formats].join(",")} adds it`;
    }

    function drawViewer(run) {
      const mesh = run.mesh || {};
      const glb = mesh.glb;
      if (!glb) {
        const exported = Boolean(mesh.obj || mesh.ply);
        viewer.classList.add("empty-panel");
        fill(viewer, el("figcaption", { text: "3D mesh" }),
          el("p", { class: "empty", text: exported ? noGlb(run) : noExport(run, "mesh") }),
          exported ? el("p", { class: "downloads" }, "download: ", meshLinks(run)) : null);
        if (meshView.view) meshView.view.dispose();
        meshView.view = null;
        meshView.url = null;
        return;
      }
      viewer.classList.remove("empty-panel");
      if (!meshView.view) {
        const stage = el("div", { class: "stage" });
        const links = el("p", { class: "downloads" });
        // What moves the view (three.js's OrbitControls): a mouse's drag and wheel, a touch
        // screen's one-finger drag and two-finger pinch; app.css shows the line for the pointer.
        fill(viewer, el("figcaption", {}, "3D mesh · ",
          el("span", { class: "hint-mouse", text: "drag to orbit, wheel to zoom" }),
          el("span", { class: "hint-touch", text: "drag to orbit, pinch to zoom" }),
          ` · ${KEYS_HINT}`), stage, links);
        meshView.view = MeshView(stage);
        meshView.links = links;
      }
      meshView.view.canvas.setAttribute("aria-label", `3D mesh of ${runTitle(run)}: ${KEYS_HINT}`);
      fill(meshView.links, "download: ", meshLinks(run));
      if (meshView.url === glb) return;
      meshView.url = glb;
      if (data.glb_script && !live) {
        staticGlb().then((bytes) => meshView.view.load(bytes.buffer), (error) => meshView.view.failed(error));
      }
      else meshView.view.load(glb);
    }

    function drawTurntable(run) {
      const video = run.video || {};
      const key = `${video.mp4}|${video.gif}|${noExport(run, "turntable")}|${runTitle(run)}|${(run.mesh_stats || {}).turntable_step}`;
      if (key === shownVideo) return;
      shownVideo = key;
      let media;
      // Of what, and at which step (mesh.json's turntable_step), as the card's alt says it.
      const step = (run.mesh_stats || {}).turntable_step;
      const at = step === null || step === undefined ? "" : ` at step ${step}`;
      const alt = `turntable of ${runTitle(run)}${at}: albedo beside depth`;
      // The GIF, where there is no video or it does not play, stops with the page's button.
      const gif = () => [motionPicture({ src: video.gif, alt }), motionButton("turntable")];
      if (video.mp4) {
        // Controls: it loops for as long as the page is open, and a loop must be one the reader
        // can pause (the browser's own controls work from the keyboard). It starts itself only
        // where motion plays (not under prefers-reduced-motion, nor once paused in the gallery).
        // It follows the system's setting while the page is open (followMotion): held still by
        // the page where motion is paused now, it plays once motion plays.
        const plays = motionPlays();
        media = el("video", { src: video.mp4, autoplay: plays, muted: true, loop: true, playsinline: true,
          controls: true, "aria-label": alt, class: "turntable-video", dataset: plays ? null : { held: "1" } });
        media.muted = true;
        media.addEventListener("play", () => { delete media.dataset.held; });
        if (video.gif) {
          media.addEventListener("error", () => media.replaceWith(...gif()));
        }
      } else if (video.gif) {
        media = gif();
      } else {
        media = el("p", { class: "empty", text: noExport(run, "turntable") });
      }
      // What the frames hold (export.turntable): the colour without lighting beside the depth.
      const caption = video.mp4 || video.gif ? "turntable: albedo | depth" : "turntable";
      fill(turntable, el("figcaption", { text: caption }), media);
    }

    function drawPreviews(run) {
      const list = run.previews || [];
      const urls = list.map((p) => p.url);
      // Of none, why: a run that ended has none to come.
      const none = list.length ? null : noFiles(run, "previews");
      const key = `${urls.join("|")}|${none}|${runTitle(run)}`;
      if (previewState.urls !== null && key === previewState.key) return;
      const atEnd = previewState.urls !== null && previewState.index === previewState.urls.length - 1;
      previewState.urls = urls;
      previewState.key = key;
      if (list.length === 0) {
        fill(previews, el("figcaption", { text: "previews" }), el("p", { class: "empty", text: none }));
        previewState.index = -1;
        return;
      }
      if (atEnd || previewState.index < 0 || previewState.index >= list.length) previewState.index = list.length - 1;
      const image = el("img", { id: "preview-image" });
      const label = el("span", { id: "preview-label" });
      const title = runTitle(run);
      let slider = null;
      function select(i) {
        previewState.index = i;
        image.src = list[i].url;
        image.alt = previewAlt(list[i].step, title);
        label.textContent = list[i].step === null ? "final" : `step ${list[i].step}`;
        // What a screen reader says of the slider: its step, not its position (0, 1, 2…).
        if (slider) slider.setAttribute("aria-valuetext", label.textContent);
      }
      // A slider only where there is a step to slide to (one of one position did nothing).
      if (list.length > 1) {
        slider = el("input", {
          type: "range", id: "preview-step", min: 0, max: list.length - 1, value: previewState.index,
          "aria-label": "preview step",
        });
        slider.addEventListener("input", () => select(Number(slider.value)));
      }
      select(previewState.index);
      // What each preview holds (trainer.save_preview): cameras around the object, two rows.
      const rows = el("span", { class: "rows", text: " · albedo above, shape (textureless) below" });
      fill(previews, el("figcaption", {}, "previews over training: ", label, rows), image, slider);
    }

    function drawSource(run) {
      source.hidden = !run.source_image;
      if (run.source_image) {
        fill(source, el("figcaption", { text: "source image" }),
          el("img", { src: run.source_image, alt: `source image of ${runTitle(run)}` }));
      }
    }

    function drawCharts(run) {
      const series = run.series || {};
      const steps = series.step || [];
      const wanted = [["loss", "loss"], ["loss_sds", "SDS loss"], ["t", "diffusion t"], ["its", "it/s"], ["gpu_mem_mib", "GPU memory, MiB"]];
      const figures = wanted.filter(([key]) => series[key]).map(([key, label]) => chart(key, label, steps, series[key]));
      if (run.descriptor_loss && run.descriptor_loss.length) {
        // By the descriptor's own steps (a line without one is placed by its index).
        const steps = run.descriptor_steps || [];
        const x = run.descriptor_loss.map((_, i) => (steps[i] === null || steps[i] === undefined ? i + 1 : steps[i]));
        figures.push(chart("descriptor_loss", "descriptor loss", x, run.descriptor_loss));
      }
      fill(charts, ...(figures.length ? figures : [el("p", { class: "empty", text: "no log.jsonl lines yet" })]));
    }

    /** A table cell's text: 4 significant digits of a fraction (a volume of
     * 0.4732020578521119 read as noise), integers (faces, steps) and text as they are, "–" for
     * none, a list or a record (mesh.json's options) as "key: value, ..." (its JSON in one
     * unbroken word made a phone's page twice as wide as the screen). */
    function cellText(value) {
      if (value === null || value === undefined) return "–";
      if (typeof value === "boolean") return value ? "yes" : "no";
      if (typeof value === "number" && !Number.isInteger(value)) return formatNumber(value);
      if (Array.isArray(value)) return value.map(cellText).join(", ");
      if (typeof value === "object") {
        return Object.entries(value).map(([key, item]) => {
          const text = cellText(item);
          return `${key}: ${Array.isArray(item) ? `[${text}]` : text}`;
        }).join(", ");
      }
      return String(value);
    }

    /** mesh.json's ran_on (what made the files) as a user reads it: the device in words and its
     * name, then the software versions and the CPU threads folded away, one a line ("torch
     * 2.13.0"). As cellText writes any record, its twenty "key: value" pairs ran together in
     * one cell, a version list inside it ("versions: python: 3.12.3, torch: ..."). A value not
     * of that shape is shown as cellText shows any. */
    function ranOnCell(value) {
      if (typeof value !== "object" || Array.isArray(value)) return cellText(value);
      const { device, device_name: name, versions, ...rest } = value;
      const where = name && device ? `${name} (${device})` : cellText(name || device);
      const byLibrary = versions && typeof versions === "object" && !Array.isArray(versions);
      const lines = [
        ...(byLibrary ? Object.entries(versions).map(([library, v]) => `${library} ${cellText(v)}`) : []),
        ...(versions !== undefined && !byLibrary ? [`versions: ${cellText(versions)}`] : []),
        ...Object.entries(rest).map(([key, item]) => `${key}: ${cellText(item)}`),
      ];
      if (!lines.length) return where;
      return [where, el("details", { class: "ran-on" }, el("summary", { text: "versions and threads" }),
        el("ul", {}, lines.map((text) => el("li", { text }))))];
    }

    /** A cell's content: a time as a <time> (formatTime's text, the ISO value its datetime), a
     * duration as formatSeconds writes it, mesh.json's ran_on as ranOnCell writes it, else
     * cellText with the key's unit after it. */
    function cell(key, value, unit) {
      if (value === null || value === undefined) return "–";
      if (TIME_KEYS.includes(key) && typeof value === "string") return timeOf(value);
      if (key === "ran_on") return ranOnCell(value);
      if (key === "seconds" && typeof value === "number") return formatSeconds(value);
      return unit ? `${cellText(value)}\u00a0${unit}` : cellText(value);
    }

    /** A table of a record: each key under its label of `labels` (#dreamtext-labels: [label, unit]),
     * the key itself the row's data-key and the label's tooltip; a key without one as it is. */
    function table(name, record, labels) {
      return el("table", { dataset: { table: name } }, el("tbody", {}, Object.entries(record).map(([key, value]) => {
        const [label, unit] = own(labels, key) || [key, ""];
        return el("tr", { dataset: { key } }, el("th", { scope: "row", text: label, title: key }),
          el("td", {}, cell(key, value, unit)));
      })));
    }

    function drawDetails(run) {
      const parts = [];
      if (run.mesh_stats) {
        parts.push(el("h2", { text: "Mesh" }), table("mesh", run.mesh_stats, labels.mesh));
      }
      if (run.batch) {
        // A running run's record is its attempt before (batchLine).
        const heading = stateOf(run) === "running" ? "Batch: the attempt before this one" : "Batch";
        // Of its record, what it says: a batch on one machine left half the rows "–" (no shard,
        // no SLURM task, no GPU memory on a CPU).
        const said = Object.entries(run.batch).filter(([, value]) => value !== null && value !== undefined);
        parts.push(el("h2", { text: heading }), table("batch", Object.fromEntries(said), labels.batch));
      }
      const files = Object.entries(run.data_files || {});
      if (files.length) {
        parts.push(el("h2", { text: "Files" }), el("p", { class: "downloads" },
          files.map(([name, url]) => el("a", { href: url, text: name }))));
      }
      if (run.config) {
        parts.push(el("details", {}, el("summary", { text: "Resolved config (config.json)" }),
          el("pre", { text: JSON.stringify(run.config, null, 2) })));
      }
      fill(details, ...parts);
    }

    // Each part is redrawn only when what it shows changed (an open <details> stays open).
    const drawn = {};
    function redraw(part, value, drawPart, run) {
      const key = JSON.stringify(value);
      if (drawn[part] === key) return;
      drawn[part] = key;
      drawPart(run);
    }

    function draw(run) {
      document.title = `${runTitle(run)} · dreamtext`;
      redraw("header", [run.status, run.prompt, run.sentence, run.trained_sentence], drawHeader, run);
      redraw("viewer", [run.mesh, noExport(run, "mesh"), runTitle(run)], drawViewer, run);
      drawTurntable(run);
      drawPreviews(run);
      redraw("source", [run.source_image, runTitle(run)], drawSource, run);
      redraw("charts", [run.series, run.descriptor_steps, run.descriptor_loss], drawCharts, run);
      redraw("details", [run.mesh_stats, run.batch, stateOf(run), run.data_files, run.config], drawDetails, run);
    }
    // Said at the top when the run's folder is removed or moved while its page is open.
    const goneNotice = goneNote();
    goneNotice.hidden = true;
    app.prepend(goneNotice);
    function showGone(gone) {
      goneNotice.hidden = !gone;
      app.classList.toggle("run-gone", gone);
    }

    draw(data.run);
    // What the page has, as a cursor of the server's: a poll gets the run's new log records and
    // previews, not its whole curves (2,000 records of each, at every log line of a live run).
    let shown = data.run;
    let cursor = data.cursor || null;
    poll((fresh) => {
      const run = fresh.since ? runAfter(shown, fresh) : fresh.run;
      cursor = run ? fresh.cursor || null : null;
      if (!run) return false;
      shown = run;
      draw(run);
      return true;
    }, showGone, () => cursor);
  }

  /** A run after an answer to the page's cursor: its fields put in, and each list of `tails` (a
   * series': each key's) as the first `keep` records the page has followed by `add`. null when
   * the page has fewer records than that. */
  function runAfter(run, answer) {
    const after = { ...run, ...answer.run };
    for (const [field, tail] of Object.entries(answer.tails || {})) {
      const before = run[field];
      if (Array.isArray(tail.add)) {
        if (!Array.isArray(before) || before.length < tail.keep) return null;
        after[field] = before.slice(0, tail.keep).concat(tail.add);
        continue;
      }
      const columns = {};
      for (const [key, add] of Object.entries(tail.add)) {
        const kept = before && before[key];
        if (!Array.isArray(kept) || kept.length < tail.keep) return null;
        columns[key] = kept.slice(0, tail.keep).concat(add);
      }
      after[field] = columns;
    }
    return after;
  }

  // ------------------------------------------------------------------------------- gone

  function goneNote() {
    return el("p", { class: "gone", role: "alert" },
      "This run is gone: its folder was removed or moved. ",
      el("a", { href: data.gallery, text: "See all runs" }));
  }

  /** The page of a run that is not there (opened again after its folder was removed). */
  function gonePage() {
    fill(app, el("nav", {}, el("a", { href: data.gallery, text: "← all runs" })), goneNote());
  }

  if (data.page === "gallery") gallery();
  else if (data.page === "gone") gonePage();
  else runPage();
})();
