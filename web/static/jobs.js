/* The jobs page, live: every 2 s it reads the same page of GET /v1/jobs the server rendered (same filters,
   same order, same cursor) and updates each row by its data-job-id; on the first page, new jobs appear at
   the top and jobs that left the filter disappear. */
(function () {
  'use strict';
  const {api, element, every, fillJob, shortId, when} = window.dcgan;
  const table = document.querySelector('[data-jobs]');
  if (!table) return;
  const tbody = table.tBodies[0];
  const query = JSON.parse(table.dataset.liveQuery);
  const datasetNames = JSON.parse(table.dataset.datasetNames);
  const firstPage = table.dataset.firstPage === 'true';
  const empty = document.querySelector('[data-empty]');
  const params = new URLSearchParams();
  for (const [name, value] of Object.entries(query)) if (value) params.set(name, value);

  function datasetLabel(job) {
    const request = job.request || {};
    if (request.dataset) {
      if (request.dataset.startsWith('builtin:')) return request.dataset;
      return element('a', {href: '/datasets', text: datasetNames[request.dataset] || shortId(request.dataset)});
    }
    if (request.generator_job) {
      const span = element('span', {text: 'from job '});
      span.append(element('a', {href: '/jobs/' + request.generator_job, text: shortId(request.generator_job)}));
      return span;
    }
    if (!request.generator) return '';
    const span = element('span', {text: 'generator '});
    const shown = request.generator.length === 36 ? shortId(request.generator) : request.generator;
    span.append(element('a', {href: '/generators/' + encodeURIComponent(request.generator_id || request.generator),
                              text: shown}));
    return span;
  }

  // The markup of a row as web/templates/jobs.html renders it; fillJob then fills its data-field hooks.
  function newRow(job) {
    const pick = job.type === 'train'
      ? element('input', {type: 'checkbox', name: 'job', value: job.id, 'data-compare-pick': true}) : '';
    const link = element('a', {href: '/jobs/' + job.id, 'data-field': 'link'},
                         element('code', {text: shortId(job.id)}));
    const progress = element('div', {class: 'progress', 'data-field': 'progress'},
      element('progress', {'data-field': 'bar'}), ' ', element('span', {'data-field': 'steps'}), ' ',
      element('span', {'data-field': 'eta'}));
    return element('tr', {'data-job-id': job.id},
      element('td', {}, pick), element('td', {}, link),
      element('td', {}, element('span', {'data-field': 'status'})),
      element('td', {'data-field': 'type', text: job.type}),
      element('td', {'data-field': 'dataset'}, datasetLabel(job)),
      element('td', {}, progress), element('td', {}, element('span', {'data-field': 'rate'})),
      element('td', {'data-field': 'best-fid'}),
      element('td', {'data-field': 'created', text: when(job.created_at)}));
  }

  async function refresh() {
    const page = await api('/v1/jobs?' + params);
    const listed = new Set();
    page.jobs.forEach((job, index) => {
      listed.add(job.id);
      let row = tbody.querySelector('tr[data-job-id="' + CSS.escape(job.id) + '"]');
      if (!row) {
        if (!firstPage) return;  // a later page keeps the rows it was opened with
        row = newRow(job);
        tbody.insertBefore(row, tbody.rows[index] || null);
      }
      fillJob(row, job);
    });
    if (firstPage) {
      for (const row of Array.from(tbody.rows)) if (!listed.has(row.dataset.jobId)) row.remove();
    }
    if (empty) empty.hidden = tbody.rows.length > 0;
  }

  every(2000, refresh);
})();
