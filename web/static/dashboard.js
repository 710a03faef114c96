/* What every dashboard page shares: reading the /v1 API from the browser with the session cookie (unsafe
   methods carry the page's CSRF token, as web.auth requires), and the formatting the server's templates use
   (the Jinja filters of web/pages/__init__.py), so a row updated live looks like one rendered. */
(function () {
  'use strict';

  const csrfToken = document.querySelector('meta[name="csrf-token"]').content;
  const FINISHED = ['succeeded', 'failed', 'cancelled'];

  class ApiError extends Error {
    constructor(status, problem) {
      super((problem && problem.detail) || 'HTTP ' + status);
      this.status = status;
      this.problem = problem || {};
    }
  }

  async function api(path, options = {}) {
    const method = (options.method || 'GET').toUpperCase();
    const headers = Object.assign({Accept: 'application/json'}, options.headers || {});
    if (method !== 'GET' && method !== 'HEAD') headers['X-CSRFToken'] = csrfToken;
    const response = await fetch(path, {method, headers, body: options.body, credentials: 'same-origin',
                                        cache: 'no-store'});
    const text = await response.text();
    let body = null;
    try { body = text ? JSON.parse(text) : null; } catch (ignored) { body = null; }
    if (response.status === 401) {  // the session ended (signed out elsewhere, key revoked): sign in again
      location.assign('/signin?next=' + encodeURIComponent(location.pathname + location.search));
    }
    if (!response.ok) throw new ApiError(response.status, body);
    return body;
  }

  // Call `task` now and then every `ms` after it settles (never two at once), skipping hidden tabs.
  // Returns a function that stops it.
  function every(ms, task) {
    let stopped = false;
    let timer = null;
    async function run() {
      if (stopped) return;
      if (!document.hidden) {
        try { await task(); } catch (error) { console.warn('refresh failed:', error.message); }
      }
      if (!stopped) timer = setTimeout(run, ms);
    }
    run();
    return () => { stopped = true; clearTimeout(timer); };
  }

  // Run `task` at most once per `ms`: calls in between are folded into one at the end of the wait.
  function throttle(task, ms) {
    let last = 0;
    let pending = null;
    return function () {
      if (pending) return;
      const wait = Math.max(0, last + ms - Date.now());
      pending = setTimeout(async () => {
        last = Date.now();
        try { await task(); } catch (error) { console.warn('refresh failed:', error.message); }
        pending = null;
      }, wait);
    };
  }

  function duration(seconds) {
    if (seconds === null || seconds === undefined) return '';
    const total = Math.max(0, Math.round(Number(seconds)));
    const hours = Math.floor(total / 3600);
    const minutes = Math.floor((total % 3600) / 60);
    const rest = total % 60;
    const pad = (n) => String(n).padStart(2, '0');
    if (hours) return hours + 'h ' + pad(minutes) + 'm';
    return minutes ? minutes + 'm ' + pad(rest) + 's' : rest + 's';
  }

  function when(iso) {
    return iso ? iso.slice(0, 19).replace('T', ' ') + ' UTC' : '';
  }

  function shortId(id) { return (id || '').slice(0, 8); }

  // A score as the templates' `score` macro shows it: FID with 2 decimals, KID with 4; '' for no number.
  function score(value, digits = 2) {
    return typeof value === 'number' ? value.toFixed(digits) : '';
  }

  function size(bytes) {
    if (bytes === null || bytes === undefined) return '';
    let value = Number(bytes);
    for (const unit of ['B', 'KiB', 'MiB', 'GiB']) {
      if (value < 1024 || unit === 'GiB') return unit === 'B' ? value + ' B' : value.toFixed(1) + ' ' + unit;
      value /= 1024;
    }
    return '';
  }

  function element(tag, attributes = {}, ...children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(attributes)) {
      if (value === false || value === null || value === undefined) continue;
      if (name === 'text') node.textContent = value;
      else node.setAttribute(name, value === true ? '' : value);
    }
    for (const child of children) node.append(child);
    return node;
  }

  // Fill the data-field hooks under `root` (a jobs-table row, the job page's header) from a job document.
  // Only what `job` has is changed: {status} alone leaves the progress as it is.
  function fillJob(root, job) {
    const set = (field, apply) => root.querySelectorAll('[data-field="' + field + '"]').forEach(apply);
    if (job.attempt !== undefined) set('attempt', (el) => { el.textContent = job.attempt; });
    if (job.error !== undefined) {
      set('error', (el) => {
        el.hidden = !job.error;
        el.textContent = job.error ? job.error.type + ': ' + job.error.detail : '';
      });
    }
    if (job.best !== undefined) set('best-fid', (el) => { el.textContent = score((job.best || {}).fid); });
    if (job.status === undefined) return;
    root.dataset.status = job.status;
    set('status', (el) => { el.textContent = job.status; el.className = 'badge badge-' + job.status; });
    if (job.progress === undefined) {
      if (job.status !== 'running') set('eta', (el) => { el.textContent = ''; });
      return;
    }
    const progress = job.progress || {};
    set('bar', (el) => { el.max = progress.total_steps || 1; el.value = progress.step || 0; });
    set('steps', (el) => {
      el.textContent = progress.total_steps ? (progress.step || 0) + '/' + progress.total_steps : '';
    });
    set('eta', (el) => {
      const eta = progress.eta_seconds;
      el.textContent = job.status === 'running' && eta !== null && eta !== undefined ? 'ETA ' + duration(eta) : '';
    });
    set('rate', (el) => {
      el.textContent = progress.images_per_second ? Math.round(progress.images_per_second) : '';
    });
    set('losses', (el) => {
      el.textContent = typeof progress.loss_d === 'number'
        ? 'D ' + progress.loss_d.toFixed(3) + ' · G ' + progress.loss_g.toFixed(3) : '';
    });
    set('elapsed', (el) => { el.textContent = duration(progress.elapsed_seconds); });
  }

  window.dcgan = {api, ApiError, every, throttle, duration, when, shortId, score, size, element, fillJob, FINISHED,
                  isFinished: (status) => FINISHED.includes(status)};
})();
