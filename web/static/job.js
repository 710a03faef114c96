/* One job's page, live. While the job is queued or running it follows GET /v1/jobs/<id>/stream (Server-Sent
   Events): `progress` updates the header and (at most every 2 s) refetches the metric history for the
   charts, `sample` adds a step to the grid slider, `status`/`log` refresh the timeline, `checkpoint` the
   artifacts, a `status` of kind `best` the best evaluated step, and `completed` refreshes everything once
   (with a training job's registered generators, an evaluation's result). A stream that cannot be opened (the
   API's limit on open streams, an old server) falls back to polling GET /v1/jobs/<id> every 2 s. */
(function () {
  'use strict';
  const {api, charts, element, every, fillJob, isFinished, score, size, throttle, when} = window.dcgan;
  const header = document.querySelector('[data-job]');
  const jobId = header.dataset.jobId;
  const base = '/v1/jobs/' + encodeURIComponent(jobId);
  let status = header.dataset.status;

  // ----- charts (training jobs) -----
  const chartOf = (name) => document.querySelector('[data-chart="' + name + '"]');
  let losses = null;
  let outputs = null;
  let fid = null;
  if (charts && chartOf('losses')) {
    losses = charts.lineChart(chartOf('losses'), [
      {label: 'loss D', color: charts.PALETTE[1]}, {label: 'loss G', color: charts.PALETTE[0]}]);
    outputs = charts.lineChart(chartOf('d-outputs'), [
      {label: 'D(x)', color: charts.PALETTE[2]}, {label: 'D(G(z))', color: charts.PALETTE[3]}]);
  }

  async function loadMetrics() {
    if (!losses) return;
    const history = await api(base + '/metrics?max_points=500');
    const points = history.points || [];
    losses.set(charts.columns(points, ['loss_d', 'loss_g']));
    outputs.set(charts.columns(points, ['d_real', 'd_fake']));
    const withFid = points.filter((p) => typeof p.fid === 'number');
    if (withFid.length) {
      const figure = document.querySelector('[data-fid-figure]');
      figure.hidden = false;
      if (!fid) fid = charts.lineChart(chartOf('fid'), [{label: 'FID', color: charts.PALETTE[4]}]);
      fid.set(charts.columns(withFid, ['fid']));
    }
    const note = document.querySelector('[data-metrics-note]');
    if (note) {
      note.textContent = history.total_points > points.length
        ? points.length + ' of ' + history.total_points + ' logged steps shown (evenly spaced, first and last kept)'
        : '';
    }
  }
  const metricsSoon = throttle(loadMetrics, 2000);

  // ----- sample grids and the step slider (an evaluate job has none) -----
  const viewer = document.querySelector('[data-samples]');
  const grid = document.querySelector('[data-grid]');
  const slider = document.querySelector('[data-step-slider]');
  const stepLabel = document.querySelector('[data-step-label]');
  const noSamples = document.querySelector('[data-no-samples]');
  const samples = viewer ? JSON.parse(viewer.dataset.samples) : [];
  let following = true;  // the slider sits on the newest grid and moves on with each new one

  function show(index) {
    const sample = samples[index];
    if (!sample || !grid) return;
    grid.src = sample.url;
    grid.dataset.step = sample.step;
    grid.hidden = false;
    if (noSamples) noSamples.hidden = true;
    if (stepLabel) stepLabel.value = sample.step;
  }

  function addSample(sample) {
    if (samples.some((s) => s.step === sample.step)) return;
    samples.push(sample);
    samples.sort((a, b) => a.step - b.step);
    if (slider) {
      slider.max = samples.length - 1;
      slider.disabled = samples.length < 2;
    }
    if (following) {
      if (slider) slider.value = samples.length - 1;
      show(samples.length - 1);
    }
  }

  if (slider) {
    slider.addEventListener('input', () => {
      const index = Number(slider.value);
      following = index === samples.length - 1;
      show(index);
    });
  }

  async function loadSamples() {
    if (!viewer) return;
    const answer = await api(base + '/samples');
    (answer.samples || []).forEach(addSample);
  }

  // ----- timeline and artifacts -----
  async function loadEvents() {
    const answer = await api(base + '/events');
    const list = document.querySelector('[data-events]');
    list.replaceChildren(...answer.events.map((event) => {
      const item = element('li', {}, element('time', {text: when(event.at)}), ' ',
        element('strong', {text: event.kind}), ' ',
        element('span', {class: 'muted', text: 'attempt ' + event.attempt}));
      if (event.detail && Object.keys(event.detail).length) {
        item.append(' ', element('code', {text: JSON.stringify(event.detail)}));
      }
      return item;
    }));
  }

  async function loadArtifacts() {
    const answer = await api(base + '/artifacts');
    const body = document.querySelector('[data-artifacts] tbody');
    body.replaceChildren(...answer.artifacts.map((a) => element('tr', {},
      element('td', {}, element('a', {href: a.download_url, download: true, text: a.name})),
      element('td', {text: a.step === null || a.step === undefined ? '' : a.step}),
      element('td', {text: size(a.size)}),
      element('td', {}, element('code', {title: a.sha256, text: a.sha256.slice(0, 12)})))));
    document.querySelector('[data-no-artifacts]').hidden = answer.artifacts.length > 0;
  }

  // ----- a training job's best step and registered generators; an evaluation's result -----
  function fillBest(best) {
    const field = document.querySelector('[data-field="best"]');
    if (!field || !best) return;
    field.textContent = 'step ' + best.step + ' · FID ' + score(best.fid)
      + (typeof best.kid === 'number' ? ' · KID ' + score(best.kid, 4) : '');
    document.querySelector('[data-best-download]').hidden = false;
    document.querySelector('[data-no-best]').hidden = true;
  }

  function fillRegistered(versions) {
    const section = document.querySelector('[data-registered]');
    if (!section || !versions || !versions.length) return;
    const page = (ref, suffix) => '/generators/' + encodeURIComponent(ref) + (suffix || '');
    section.querySelector('tbody').replaceChildren(...versions.map((v) => element('tr', {'data-registered-ref': v.ref},
      element('td', {}, element('a', {href: page(v.ref)}, element('code', {text: v.ref}))),
      element('td', {text: v.source}), element('td', {text: v.step === null ? '' : v.step}),
      element('td', {text: score(v.fid)}),
      element('td', {}, element('a', {class: 'button', href: page(v.ref, '/browse'), 'data-browse': true,
                                      text: 'Browse seeds'})))));
    section.hidden = false;
  }

  // The same rows as web/pages/jobs.py's result_rows: its order first (data-result-order), then the rest.
  function shown(value) {
    if (typeof value === 'number') return Number.isInteger(value) ? String(value) : value.toFixed(4);
    return typeof value === 'string' ? value : JSON.stringify(value);
  }

  function fillResult(result) {
    const table = document.querySelector('[data-result]');
    if (!table || !result) return;
    const order = JSON.parse(table.dataset.resultOrder);
    const names = order.filter((name) => name in result).concat(Object.keys(result).filter((n) => !order.includes(n)));
    table.tBodies[0].replaceChildren(...names.map((name) => element('tr', {'data-result-field': name},
      element('th', {text: name}), element('td', {}, element('code', {text: shown(result[name])})))));
    document.querySelector('[data-no-result]').hidden = names.length > 0;
  }

  async function loadJob() {
    const job = await api(base);
    setStatus(job.status);
    fillJob(header, job);
    fillBest(job.best);
    return job;
  }

  function setStatus(next) {
    status = next;
    fillJob(header, {status});
    if (isFinished(status)) {
      const cancel = document.querySelector('[data-cancel]');
      if (cancel) cancel.remove();
    }
  }

  // Once: the final state of everything, and the generate form for a training job that succeeded.
  async function completed() {
    const job = await loadJob();
    await Promise.allSettled([loadMetrics(), loadSamples(), loadEvents(), loadArtifacts()]);
    const generate = document.querySelector('[data-generate]');
    if (generate && job.type === 'train' && job.status === 'succeeded') generate.hidden = false;
    fillRegistered(job.generators);
    fillResult(job.result);
    if (grid && !samples.length && job.links && job.links.grid && job.status === 'succeeded') {
      grid.src = job.links.grid;  // a generate job's images: one grid, no steps
      grid.hidden = false;
      if (noSamples) noSamples.hidden = true;
    }
  }

  function poll() {
    const stop = every(2000, async () => {
      const job = await loadJob();
      metricsSoon();
      await loadSamples();
      if (isFinished(job.status)) {
        stop();
        await completed();
      }
    });
  }

  function follow() {
    if (!window.EventSource) { poll(); return; }
    // From the newest event when the page was made: the page already shows the history before it.
    const source = new EventSource(base + '/stream?last_event_id=' + (header.dataset.lastEventId || '0'));
    const data = (event) => JSON.parse(event.data);
    source.addEventListener('progress', (event) => {
      fillJob(header, {status, progress: data(event)});
      metricsSoon();
    });
    source.addEventListener('sample', (event) => addSample(data(event)));
    source.addEventListener('status', (event) => {
      const {status: next, attempt, kind, detail} = data(event);
      if (next) setStatus(next);
      if (attempt !== undefined) fillJob(header, {attempt});
      if (kind === 'best') {
        fillBest(detail);
        metricsSoon();
      }
      loadEvents();
    });
    source.addEventListener('log', () => loadEvents());
    source.addEventListener('checkpoint', () => loadArtifacts());
    source.addEventListener('completed', () => {
      source.close();
      completed();
    });
    // A connection the browser will not retry (a 404 or 503 answer) ends CLOSED; a dropped one it retries
    // by itself, sending Last-Event-ID, and the server replays what was missed.
    source.addEventListener('error', () => {
      if (source.readyState === EventSource.CLOSED) poll();
    });
  }

  loadMetrics().catch((error) => console.warn('metrics:', error.message));
  if (!isFinished(status)) follow();
})();
