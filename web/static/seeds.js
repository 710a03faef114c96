/* The seed browser (web/templates/browse.html): a page of seeds' images from
   GET /v1/generators/<ref>/images/<seed>.png, one of them large, and a GIF between two seeds from
   /v1/generators/<ref>/interpolate, each rendered while you wait by the sampling service.

   Pictures are fetched rather than named in an <img src>, so that a 503 (no sampling worker) or a 504 (no
   answer in time) shows the problem's detail instead of a broken image; what arrives is shown from a blob:
   URL. Every picture's holder says how it is (data-state: loading, loaded, error) and, once loaded, which
   truncation it was rendered with (data-shown-truncation) and what it is (data-content-type). Changing the
   truncation or the page of seeds re-requests what is shown and keeps ?start= and ?truncation= in the
   address, so a reload or a shared link shows the same seeds. */
(function () {
  'use strict';
  const {ApiError} = window.dcgan;
  const root = document.querySelector('[data-seed-browser]');
  if (!root) return;
  const find = (selector) => root.querySelector(selector);
  const imagesUrl = root.dataset.imagesUrl;
  const interpolateUrl = root.dataset.interpolateUrl;
  const perPage = Number(root.dataset.perPage);
  const maxStart = Number(root.dataset.maxStart);
  const slider = find('[data-truncation]');
  const sliderLabel = find('[data-truncation-label]');
  const startInput = find('[data-start-input]');
  const previous = find('[data-page="previous"]');
  const next = find('[data-page="next"]');
  const gridLink = find('[data-grid-link]');
  const buttons = Array.from(root.querySelectorAll('[data-seed-grid] [data-seed]'));
  const large = find('[data-large]');
  const largeImage = large.querySelector('img');
  const form = find('[data-interpolation-form]');
  const gif = find('[data-interpolation]');
  const problemBox = find('[data-sampler-error]');
  const problemText = find('[data-sampler-message]');

  let start = Number(root.dataset.start);
  let chosen = null;  // the seed shown large

  const truncation = () => String(Number(slider.value));
  const seedUrl = (seed) => imagesUrl + '/' + seed + '.png?' + new URLSearchParams({truncation: truncation()});

  async function picture(url) {
    const response = await fetch(url, {credentials: 'same-origin',
                                       headers: {Accept: 'image/png, image/gif, application/problem+json'}});
    if (response.status === 401) {  // the session ended: sign in again, then come back here
      location.assign('/signin?next=' + encodeURIComponent(location.pathname + location.search));
    }
    if (!response.ok) {
      let problem = null;
      try { problem = await response.json(); } catch (ignored) { problem = null; }
      throw new ApiError(response.status, problem);
    }
    return response.blob();
  }

  // What a failed request means to someone looking at the page; the same message once for all of them.
  function report(error) {
    let text;
    if (!(error instanceof ApiError)) text = 'The API did not answer (' + error.message + ').';
    else if (error.status === 503) text = 'The sampling service is not available: ' + error.message;
    else if (error.status === 504) text = 'The sampling service did not answer in time: ' + error.message;
    else text = 'Could not render it (HTTP ' + error.status + '): ' + error.message;
    problemText.textContent = text;
    problemBox.hidden = false;
    problemBox.dataset.status = error instanceof ApiError ? String(error.status) : '';
  }

  function clearProblem() {
    problemBox.hidden = true;
    problemText.textContent = '';
  }

  // Show `url` in `img`; `holder` carries the state. An answer that comes after a newer request for the same
  // <img> is dropped, so a quick slide of the truncation never ends on an older picture.
  async function show(img, holder, url, {keep = true} = {}) {
    const ticket = String(Number(img.dataset.ticket || 0) + 1);
    img.dataset.ticket = ticket;
    holder.dataset.state = 'loading';
    const wanted = truncation();
    if (!keep) replaceSource(img, null);
    try {
      const blob = await picture(url);
      if (img.dataset.ticket !== ticket) return;
      replaceSource(img, URL.createObjectURL(blob));
      holder.dataset.shownTruncation = wanted;
      holder.dataset.contentType = blob.type;
      holder.dataset.state = 'loaded';
    } catch (error) {
      if (img.dataset.ticket !== ticket) return;
      replaceSource(img, null);
      holder.dataset.state = 'error';
      report(error);
    }
  }

  function replaceSource(img, source) {
    const old = img.getAttribute('src');
    if (source) img.src = source;
    else img.removeAttribute('src');
    if (old && old.startsWith('blob:')) URL.revokeObjectURL(old);
  }

  // ----- the page of seeds -----
  function loadPage(changedSeeds) {
    buttons.forEach((button, index) => {
      const seed = start + index;
      button.dataset.seed = String(seed);
      button.setAttribute('aria-label', 'seed ' + seed);
      button.setAttribute('aria-pressed', String(seed === chosen));
      button.querySelector('span').textContent = String(seed);
      const img = button.querySelector('img');
      img.alt = 'seed ' + seed;
      show(img, button, seedUrl(seed), {keep: !changedSeeds});
    });
    previous.disabled = start === 0;
    next.disabled = start >= maxStart;
    startInput.value = String(start);
    gridLink.href = imagesUrl + '?' + new URLSearchParams({seeds: start + '-' + (start + perPage - 1), nrow: 4,
                                                           truncation: truncation()});
    history.replaceState(null, '', '?' + new URLSearchParams({start: String(start), truncation: truncation()}));
  }

  function goTo(first) {
    const wanted = Math.min(Math.max(Math.floor(Number(first)) || 0, 0), maxStart);
    if (wanted === start) { startInput.value = String(start); return; }
    start = wanted;
    clearProblem();
    loadPage(true);
  }

  previous.addEventListener('click', () => goTo(start - perPage));
  next.addEventListener('click', () => goTo(start + perPage));
  startInput.addEventListener('change', () => goTo(startInput.value));

  // ----- one seed, large -----
  function choose(seed) {
    chosen = seed;
    large.hidden = false;
    large.dataset.large = String(seed);
    find('[data-large-seed]').textContent = String(seed);
    find('[data-large-hint]').hidden = true;
    buttons.forEach((button) => button.setAttribute('aria-pressed', String(Number(button.dataset.seed) === seed)));
    show(largeImage, largeImage, seedUrl(seed), {keep: false});
  }

  buttons.forEach((button) => button.addEventListener('click', () => choose(Number(button.dataset.seed))));

  // ----- between two seeds -----
  const fromInput = form.querySelector('[data-from]');
  const toInput = form.querySelector('[data-to]');
  const framesInput = form.querySelector('[data-frames]');

  function interpolate() {
    const params = {from: fromInput.value, to: toInput.value, frames: framesInput.value, truncation: truncation()};
    gif.hidden = false;
    gif.dataset.interpolation = params.from + '-' + params.to;
    show(gif, gif, interpolateUrl + '?' + new URLSearchParams(params), {keep: false});
  }

  form.addEventListener('submit', (event) => {
    event.preventDefault();
    clearProblem();
    interpolate();
  });
  root.querySelectorAll('[data-pick]').forEach((button) => button.addEventListener('click', () => {
    if (chosen === null) return;
    (button.dataset.pick === 'from' ? fromInput : toInput).value = String(chosen);
    if (fromInput.value !== '' && toInput.value !== '') form.requestSubmit();
  }));

  // ----- truncation, and trying again -----
  function reloadShown() {
    clearProblem();
    loadPage(false);
    if (chosen !== null) show(largeImage, largeImage, seedUrl(chosen));
    if (!gif.hidden) interpolate();
  }

  slider.addEventListener('input', () => { sliderLabel.value = Number(slider.value).toFixed(2); });
  slider.addEventListener('change', reloadShown);
  find('[data-retry]').addEventListener('click', reloadShown);

  loadPage(true);
})();
