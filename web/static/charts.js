/* Line charts by training step, drawn with the vendored uPlot (web/static/vendor/uplot-1.6.32): the job
   page's losses, D(x)/D(G(z)) and FID, and the compare page's overlaid losses. Each chart's container keeps
   data-points = the number of steps it shows, a hook for tests and a fact for readers. */
(function () {
  'use strict';
  const PALETTE = ['#2563eb', '#dc2626', '#16a34a', '#9333ea', '#ea580c', '#0891b2', '#ca8a04', '#db2777'];
  const HEIGHT = 220;

  // series: [{label, color, dash}]; returns {set(data)} where data = [steps, ys1, ys2, ...].
  function lineChart(container, series) {
    const options = {
      width: Math.max(container.clientWidth, 300),
      height: HEIGHT,
      scales: {x: {time: false}},
      axes: [{label: 'step'}, {}],
      legend: {live: true},
      cursor: {drag: {x: true, y: false}},
      series: [{label: 'step'}].concat(series.map((s) => ({
        label: s.label, stroke: s.color, width: 1.5, dash: s.dash, spanGaps: true,
        points: {show: false},
      }))),
    };
    const plot = new uPlot(options, [[]].concat(series.map(() => [])), container);
    window.addEventListener('resize', () => plot.setSize({width: Math.max(container.clientWidth, 300),
                                                          height: HEIGHT}));
    return {
      set(data) {
        plot.setData(data);
        container.dataset.points = String(data[0].length);
      },
    };
  }

  // Columns of metric points: [steps, points[*][key] for key of keys] (null where a point lacks one).
  function columns(points, keys) {
    return [points.map((p) => p.step)].concat(keys.map((key) => points.map((p) => (key in p ? p[key] : null))));
  }

  window.dcgan.charts = {PALETTE, lineChart, columns};
})();
