/* The compare page: the loss curves of two or more training jobs overlaid on one chart (colour per job;
   G solid, D dashed), and their grids side by side at one step chosen with a common slider. Jobs sample
   at their own sample_every, so each shows its newest grid at or before the chosen step, captioned with
   the step it really is. While any of them runs, the page reloads their histories every 5 s. */
(function () {
  'use strict';
  const {api, charts, every, isFinished} = window.dcgan;
  const section = document.querySelector('[data-compare]');
  if (!section) return;
  const ids = JSON.parse(section.dataset.jobIds);
  const slider = section.querySelector('[data-compare-step]');
  const label = section.querySelector('[data-compare-step-label]');
  const chart = charts.lineChart(section.querySelector('[data-chart="compare-losses"]'), ids.flatMap((id, i) => [
    {label: 'G ' + id.slice(0, 8), color: charts.PALETTE[i % charts.PALETTE.length]},
    {label: 'D ' + id.slice(0, 8), color: charts.PALETTE[i % charts.PALETTE.length], dash: [6, 4]},
  ]));
  let steps = [];  // every step at which any of the jobs has a grid, ascending
  let samplesOf = {};  // job id -> [{step, url}] ascending
  let touched = false;  // the reader moved the slider: keep their step across refreshes

  function showStep(step) {
    label.value = step;
    for (const id of ids) {
      const image = section.querySelector('[data-compare-grid][data-job-id="' + CSS.escape(id) + '"]');
      const caption = image.parentElement.querySelector('[data-compare-caption]');
      const atOrBefore = (samplesOf[id] || []).filter((s) => s.step <= step).pop();
      image.hidden = !atOrBefore;
      if (atOrBefore && image.dataset.step !== String(atOrBefore.step)) {
        image.src = atOrBefore.url;
        image.dataset.step = atOrBefore.step;
      }
      caption.textContent = atOrBefore ? 'step ' + atOrBefore.step : 'no grid by step ' + step;
    }
  }

  slider.addEventListener('input', () => {
    touched = true;
    showStep(steps[Number(slider.value)]);
  });

  async function load() {
    const loaded = await Promise.all(ids.map((id) => {
      const base = '/v1/jobs/' + encodeURIComponent(id);
      return Promise.all([api(base), api(base + '/metrics?max_points=500'), api(base + '/samples')]);
    }));
    const tables = loaded.map(([, history]) => charts.columns(history.points || [], ['loss_g', 'loss_d']));
    chart.set(uPlot.join(tables));
    samplesOf = Object.fromEntries(loaded.map(([job, , answer]) => [job.id, answer.samples || []]));
    const chosen = touched ? steps[Number(slider.value)] : undefined;
    steps = Array.from(new Set(Object.values(samplesOf).flat().map((s) => s.step))).sort((a, b) => a - b);
    if (steps.length) {
      // First the furthest step every job has reached: there the grids really are at the same step.
      const lastSteps = Object.values(samplesOf).map((list) => (list.length ? list[list.length - 1].step : 0));
      const common = Math.min(...lastSteps);
      const step = chosen !== undefined ? chosen : (steps.filter((s) => s <= common).pop() ?? steps[0]);
      slider.max = steps.length - 1;
      slider.value = Math.max(0, steps.indexOf(step));
      slider.disabled = steps.length < 2;
      showStep(steps[Number(slider.value)]);
    }
    return loaded.some(([job]) => !isFinished(job.status));
  }

  const stop = every(5000, async () => {
    if (!(await load())) stop();
  });
})();
