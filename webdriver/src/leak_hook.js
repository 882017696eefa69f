// The leak test's hook (webdriver/tests/e2e.rs, a_removed_widget_leaves_no_worker_listener_or_memory
// behind), run in the page through WebDriver before the test adds any widget. It wraps the
// browser's own APIs, so it counts what the front-end and everything it uses (xterm.js) hold,
// without trusting the front-end to count itself:
//
//   workers     Workers constructed and not terminated
//   listeners   event listeners on the long-lived targets (window, document, <html>, <body>,
//               media query lists, the visual viewport) added and not removed, by target and type;
//               a listener added with a `signal` counts until the signal aborts
//   observers   ResizeObserver, IntersectionObserver and MutationObserver objects that observe
//               something (observe() without unobserve()/disconnect())
//   intervals   setInterval timers not cleared
//   objectURLs  URL.createObjectURL results not revoked
//
// window.__leaks.counts() returns them. What is no longer live is forgotten, so the hook itself
// keeps nothing alive that the page let go of (the memory check stays honest).
if (window.__leaks) return true;

const workers = new Set();
const RealWorker = window.Worker;
window.Worker = class extends RealWorker {
  constructor(...args) {
    super(...args);
    workers.add(this);
  }
  terminate() {
    workers.delete(this);
    return super.terminate();
  }
};

const longLived = (t) =>
  t === window ||
  t === document ||
  t === document.documentElement ||
  t === document.body ||
  t === window.visualViewport ||
  (typeof MediaQueryList === "function" && t instanceof MediaQueryList);
const nameOf = (t) =>
  t === window
    ? "window"
    : t === document
      ? "document"
      : t === document.documentElement
        ? "html"
        : t === document.body
          ? "body"
          : t === window.visualViewport
            ? "visualViewport"
            : `matchMedia(${t.media})`;
const regs = [];
const capture = (o) => (typeof o === "boolean" ? o : !!(o && o.capture));
const find = (t, type, f, c) => regs.findIndex((r) => r.t === t && r.type === type && r.f === f && r.c === c);
const add = EventTarget.prototype.addEventListener;
const remove = EventTarget.prototype.removeEventListener;
EventTarget.prototype.addEventListener = function (type, f, o) {
  if (f && longLived(this)) {
    const c = capture(o);
    const signal = o && typeof o === "object" ? o.signal : undefined;
    if (!(signal && signal.aborted) && find(this, type, f, c) < 0) {
      const reg = { t: this, type, f, c };
      regs.push(reg);
      if (signal) {
        add.call(
          signal,
          "abort",
          () => {
            const i = regs.indexOf(reg);
            if (i >= 0) regs.splice(i, 1);
          },
          { once: true }
        );
      }
    }
  }
  return add.call(this, type, f, o);
};
EventTarget.prototype.removeEventListener = function (type, f, o) {
  if (longLived(this)) {
    const i = find(this, type, f, capture(o));
    if (i >= 0) regs.splice(i, 1);
  }
  return remove.call(this, type, f, o);
};
if (typeof MediaQueryList === "function") {
  const addListener = MediaQueryList.prototype.addListener;
  const removeListener = MediaQueryList.prototype.removeListener;
  MediaQueryList.prototype.addListener = function (f) {
    if (f && find(this, "change", f, false) < 0) regs.push({ t: this, type: "change", f, c: false });
    return addListener.call(this, f);
  };
  MediaQueryList.prototype.removeListener = function (f) {
    const i = find(this, "change", f, false);
    if (i >= 0) regs.splice(i, 1);
    return removeListener.call(this, f);
  };
}

const observing = new Map(); // observer -> {name, targets}
for (const name of ["ResizeObserver", "IntersectionObserver", "MutationObserver"]) {
  const Real = window[name];
  window[name] = class extends Real {
    observe(target, ...rest) {
      let o = observing.get(this);
      if (!o) observing.set(this, (o = { name, targets: new Set() }));
      o.targets.add(target);
      return super.observe(target, ...rest);
    }
    unobserve(target) {
      const o = observing.get(this);
      if (o) {
        o.targets.delete(target);
        if (o.targets.size === 0) observing.delete(this);
      }
      return super.unobserve(target);
    }
    disconnect() {
      observing.delete(this);
      return super.disconnect();
    }
  };
}

const intervals = new Set();
const realSetInterval = window.setInterval;
const realClearInterval = window.clearInterval;
window.setInterval = function (...args) {
  const id = realSetInterval.apply(this, args);
  intervals.add(id);
  return id;
};
window.clearInterval = function (id) {
  intervals.delete(id);
  return realClearInterval.call(this, id);
};

const urls = new Set();
const realCreate = URL.createObjectURL;
const realRevoke = URL.revokeObjectURL;
URL.createObjectURL = function (o) {
  const u = realCreate.call(URL, o);
  urls.add(u);
  return u;
};
URL.revokeObjectURL = function (u) {
  urls.delete(u);
  return realRevoke.call(URL, u);
};

window.__leaks = {
  counts() {
    const listeners = {};
    for (const r of regs) {
      const k = `${nameOf(r.t)} ${r.type}`;
      listeners[k] = (listeners[k] || 0) + 1;
    }
    const observers = {};
    for (const o of observing.values()) observers[o.name] = (observers[o.name] || 0) + 1;
    return {
      workers: workers.size,
      listeners,
      listenerCount: regs.length,
      observers,
      observerCount: observing.size,
      intervals: intervals.size,
      objectURLs: urls.size,
    };
  },
};
return true;
