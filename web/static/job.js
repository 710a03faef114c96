/* One job's page, live. While the job is queued or running it follows GET /v1/jobs/<id>/stream (Server-Sent
   Events): `progress` updates the header and (at most every 2 s) refetches the metric history for the
   charts, `sample` adds a step to the grid slider, `status`/`log` refresh the timeline, `checkpoint` the
   artifacts, and `completed` refreshes everything once. A stream that cannot be opened (the API's limit on
   open streams, an old server) falls back to polling GET /v1/jobs/<id> every 2 s. */
(function () {
  'use strict';
  const {api, charts, element, every, fillJob, isFinished, size, throttle, when} = window.dcgan;
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

  // ----- sample grids and the step slider -----
  const viewer = document.querySelector('[data-samples]');
  const grid = document.querySelector('[data-grid]');
  const slider = document.querySelector('[data-step-slider]');
  const stepLabel = document.querySelector('[data-step-label]');
  const noSamples = document.querySelector('[data-no-samples]');
  const samples = JSON.parse(viewer.dataset.samples);
  let following = true;  // the slider sits on the newest grid and moves on with each new one

  function show(index) {
    const sample = samples[index];
    if (!sample) return;
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

  async function loadJob() {
    const job = await api(base);
    setStatus(job.status);
    fillJob(header, job);
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
    if (!samples.length && job.links && job.links.grid && job.status === 'succeeded') {
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
      const {status: next, attempt} = data(event);
      if (next) setStatus(next);
      if (attempt !== undefined) fillJob(header, {attempt});
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
