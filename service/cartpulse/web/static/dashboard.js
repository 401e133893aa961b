// CartPulse live dashboard: reads the three seed pipes with the user's read token and
// draws them, again every few seconds. Everything shown comes from the public pipe API;
// each table cell keeps the raw value the API answered in data-value, so what is drawn
// can be checked against the API (tests/test_dashboard_browser.py does).
(function () {
  "use strict";

  var TOKEN_KEY = "cartpulse.token";
  var REFRESH_MS = 1000 * Number(document.body.dataset.refreshSeconds || 3);
  var PIPES = ["top_products", "events_by_country", "total_revenue"];
  var INTERVAL_MS = {"1 minute": 60e3, "15 minutes": 900e3, "1 hour": 3600e3, "1 day": 86400e3};
  var COLORS = {bar: "#6366f1", bar2: "#14b8a6", line: "#f97316", fill: "rgba(249, 115, 22, 0.12)"};

  var $ = function (id) { return document.getElementById(id); };
  var money = new Intl.NumberFormat(undefined, {minimumFractionDigits: 2, maximumFractionDigits: 2});
  var count = new Intl.NumberFormat();
  var charts = {};
  var timer = null;
  var inFlight = false;
  var again = false;  // the range changed during a refresh: refresh once more after it

  // --- the token: ?token= in the URL (then dropped from it), else localStorage ---------
  function takeTokenFromUrl() {
    var url = new URL(window.location.href);
    var token = url.searchParams.get("token");
    if (token) {
      localStorage.setItem(TOKEN_KEY, token);
      url.searchParams.delete("token");  // keep it out of the history and of shared links
      history.replaceState(null, "", url.pathname + url.search + url.hash);
    }
  }

  function token() { return localStorage.getItem(TOKEN_KEY); }

  function askForToken(message) {
    localStorage.removeItem(TOKEN_KEY);
    $("token-form").hidden = false;
    $("forget").hidden = true;
    setStatus(message || "A read token is needed to show the dashboard.", true);
  }

  // --- the range: date inputs (the end day included) → start_date/end_date ------------
  function isoDay(date) { return date.toISOString().slice(0, 10); }

  function addDays(day, n) {
    var d = new Date(day + "T00:00:00Z");
    d.setUTCDate(d.getUTCDate() + n);
    return isoDay(d);
  }

  function rangeParams() {
    var start = $("start").value, end = $("end").value, params = {};
    if (start) params.start_date = start + " 00:00:00";
    if (end) params.end_date = addDays(end, 1) + " 00:00:00";  // the API's end is exclusive
    return params;
  }

  function revenueInterval() {
    var chosen = $("interval").value;
    if (chosen) return chosen;
    var start = $("start").value, end = $("end").value;
    if (!start || !end) return "1 hour";
    var days = (Date.parse(end) - Date.parse(start)) / 86400e3 + 1;
    return days <= 2 ? "15 minutes" : days <= 14 ? "1 hour" : "1 day";
  }

  function readRangeFromUrl() {
    var params = new URL(window.location.href).searchParams;
    $("start").value = params.get("start") || "";
    $("end").value = params.get("end") || "";
    $("interval").value = params.get("interval") || "";
  }

  function writeRangeToUrl() {
    var url = new URL(window.location.href);
    [["start", $("start").value], ["end", $("end").value], ["interval", $("interval").value]].forEach(function (kv) {
      if (kv[1]) url.searchParams.set(kv[0], kv[1]); else url.searchParams.delete(kv[0]);
    });
    history.replaceState(null, "", url.pathname + url.search + url.hash);
  }

  function lastDays(days) {
    if (!days) { $("start").value = ""; $("end").value = ""; return; }
    var today = isoDay(new Date());
    $("start").value = addDays(today, 1 - days);
    $("end").value = today;
  }

  // --- reading the pipes -------------------------------------------------------------
  function query(params) {
    var q = new URLSearchParams();
    Object.keys(params).forEach(function (k) { q.set(k, params[k]); });
    return q.toString();
  }

  function fetchPipe(name, params) {
    return fetch("/v0/pipes/" + name + ".json?" + query(params), {
      headers: {"Authorization": "Bearer " + token()}, cache: "no-store"
    }).then(function (response) {
      return response.json().catch(function () { return {}; }).then(function (body) {
        if (!response.ok) {
          var err = new Error(body.error || ("HTTP " + response.status));
          err.status = response.status;
          err.pipe = name;
          throw err;
        }
        return body;
      });
    });
  }

  function refresh() {
    if (inFlight) { again = true; return Promise.resolve(); }
    if (!token()) return Promise.resolve();
    inFlight = true;
    again = false;
    var range = rangeParams();
    var interval = revenueInterval();
    var asked = {top_products: range, events_by_country: range,
                 total_revenue: Object.assign({interval: interval}, range)};
    return Promise.all(PIPES.map(function (name) { return fetchPipe(name, asked[name]); }))
      .then(function (answers) {
        draw(answers[0].data, answers[1].data, answers[2].data, interval, range);
        document.body.dataset.refreshes = String(Number(document.body.dataset.refreshes) + 1);
        document.body.dataset.query = JSON.stringify(asked);
        $("forget").hidden = false;
        setStatus("Updated " + new Date().toLocaleTimeString() + " · refreshing every " + REFRESH_MS / 1000 + " s");
      })
      .catch(function (err) {
        if (err.status === 401) askForToken("The token was refused: " + err.message);
        else if (err.status === 403) setStatus("This token may not read " + err.pipe + ": " + err.message, true);
        else setStatus("Could not refresh (" + err.message + "); trying again.", true);
      })
      .then(function () {
        inFlight = false;
        if (again) return refresh();
      });
  }

  function schedule() {
    clearTimeout(timer);
    timer = setTimeout(function () {
      (document.hidden ? Promise.resolve() : refresh()).then(schedule);
    }, REFRESH_MS);
  }

  function setStatus(text, bad) {
    $("status").textContent = text;
    $("status").classList.toggle("bad", !!bad);
  }

  // --- drawing -----------------------------------------------------------------------
  function fillTable(name, rows, columns) {
    var body = document.querySelector('table[data-pipe="' + name + '"] tbody');
    var fragment = document.createDocumentFragment();
    rows.forEach(function (row) {
      var tr = document.createElement("tr");
      columns.forEach(function (col) {
        var td = document.createElement("td");
        td.dataset.col = col.name;
        td.dataset.value = String(row[col.name]);
        td.textContent = col.format ? col.format(row[col.name]) : row[col.name];
        if (col.format) td.className = "num";
        tr.appendChild(td);
      });
      fragment.appendChild(tr);
    });
    body.replaceChildren(fragment);
    document.querySelector('article[data-pipe="' + name + '"]').dataset.rows = String(rows.length);
  }

  function binTime(text) { return Date.parse(text.replace(" ", "T") + "Z"); }

  function utcLabel(ms, interval) {
    var iso = new Date(ms).toISOString();
    if (interval === "1 day" || iso.slice(11, 16) === "00:00") return iso.slice(0, 10);
    return iso.slice(5, 10) + " " + iso.slice(11, 16);
  }

  // Buckets without purchases are absent from the answer: their revenue is 0. A zero is
  // drawn at each edge of every gap (the bucket after the last one with purchases, and the
  // one before the next), and at the edges of the asked range, so the line drops to zero
  // and runs along it across the gap. That is exact for a line chart however many empty
  // buckets a gap holds, and never a slope across days without a sale.
  function withZeros(points, interval, range) {
    var step = INTERVAL_MS[interval];
    if (!step) return points;
    var sorted = points.slice().sort(function (a, b) { return a.x - b.x; });
    var first = range.start_date ? Math.ceil(binTime(range.start_date) / step) * step : null;
    var last = range.end_date ? Math.floor((binTime(range.end_date) - 1) / step) * step : null;
    var out = [];
    function zero(x) { if (!out.length || out[out.length - 1].x < x) out.push({x: x, y: 0}); }
    if (first !== null && (!sorted.length || sorted[0].x > first)) zero(first);
    sorted.forEach(function (p) {
      var previous = out.length ? out[out.length - 1].x : null;
      if (previous !== null && p.x - previous > step) {
        zero(previous + step);
        zero(p.x - step);
      }
      out.push(p);
    });
    if (last !== null && out.length && out[out.length - 1].x < last) {
      zero(out[out.length - 1].x + step);
      zero(last);
    }
    return out;
  }

  // Ticks on round UTC times (bins start on multiples of their width), at most ~8 of them.
  function tickStep(span) {
    var steps = [60e3, 300e3, 900e3, 3600e3, 3 * 3600e3, 6 * 3600e3, 12 * 3600e3, 86400e3, 2 * 86400e3, 7 * 86400e3];
    for (var i = 0; i < steps.length; i++) if (span / steps[i] <= 8) return steps[i];
    return undefined;
  }

  function roundTicks(axis) {
    var step = tickStep(axis.max - axis.min);
    if (!step || !isFinite(axis.min) || !isFinite(axis.max)) return;
    var ticks = [];
    for (var t = Math.ceil(axis.min / step) * step; t <= axis.max; t += step) ticks.push({value: t});
    axis.ticks = ticks;
  }

  function barChart(id, horizontal, color) {
    return new Chart($(id), {
      type: "bar",
      data: {labels: [], datasets: [{data: [], backgroundColor: color, borderRadius: 4}]},
      options: {
        indexAxis: horizontal ? "y" : "x", animation: false, maintainAspectRatio: false,
        plugins: {legend: {display: false}},
        scales: {x: {grid: {display: !horizontal}}, y: {grid: {display: horizontal ? false : true}}}
      }
    });
  }

  function makeCharts() {
    Chart.defaults.font.family = "system-ui, -apple-system, 'Segoe UI', Roboto, sans-serif";
    Chart.defaults.color = "#475569";
    charts.top_products = barChart("chart-top_products", true, COLORS.bar);
    charts.events_by_country = barChart("chart-events_by_country", false, COLORS.bar2);
    charts.total_revenue = new Chart($("chart-total_revenue"), {
      type: "line",
      data: {datasets: [{data: [], borderColor: COLORS.line, backgroundColor: COLORS.fill, fill: true,
                         pointRadius: 0, borderWidth: 2, tension: 0.25}]},
      options: {
        animation: false, maintainAspectRatio: false, parsing: false,
        plugins: {legend: {display: false}, tooltip: {callbacks: {
          title: function (items) { return new Date(items[0].parsed.x).toISOString().slice(0, 16).replace("T", " ") + " UTC"; }
        }}},
        interaction: {mode: "nearest", axis: "x", intersect: false},
        scales: {
          x: {type: "linear", afterBuildTicks: roundTicks,
              ticks: {autoSkip: false, callback: function (v) { return utcLabel(v, charts.interval); }}},
          y: {beginAtZero: true}
        }
      }
    });
  }

  function draw(top, countries, revenue, interval, range) {
    charts.interval = interval;
    fillTable("top_products", top, [{name: "product_id"},
      {name: "total_quantity", format: function (v) { return count.format(v); }},
      {name: "total_revenue", format: function (v) { return money.format(v); }}]);
    fillTable("events_by_country", countries, [{name: "country"},
      {name: "event_count", format: function (v) { return count.format(v); }}]);
    fillTable("total_revenue", revenue, [{name: "time_bin"},
      {name: "total_revenue", format: function (v) { return money.format(v); }}]);

    setBars(charts.top_products, top.map(function (r) { return r.product_id; }),
            top.map(function (r) { return r.total_revenue; }));
    var shown = countries.slice(0, 15);
    setBars(charts.events_by_country, shown.map(function (r) { return r.country; }),
            shown.map(function (r) { return r.event_count; }));
    var points = withZeros(revenue.map(function (r) { return {x: binTime(r.time_bin), y: r.total_revenue}; }),
                           interval, range);
    var x = charts.total_revenue.options.scales.x;
    x.min = points.length ? points[0].x : undefined;
    x.max = points.length ? points[points.length - 1].x : undefined;
    charts.total_revenue.data.datasets[0].data = points;
    $("chart-total_revenue").dataset.points = JSON.stringify(points);  // what is drawn, for tests
    charts.total_revenue.update("none");

    var events = countries.reduce(function (s, r) { return s + r.event_count; }, 0);
    var total = revenue.reduce(function (s, r) { return s + r.total_revenue; }, 0);
    $("kpi-events").textContent = count.format(events);
    $("kpi-revenue").textContent = money.format(total);
    $("kpi-countries").textContent = count.format(countries.length);
    $("revenue-interval").textContent = "per " + interval.replace(/^1 /, "") + ", UTC";
  }

  function setBars(chart, labels, values) {
    chart.data.labels = labels;
    chart.data.datasets[0].data = values;
    chart.update("none");
  }

  // --- wiring ------------------------------------------------------------------------
  function rangeChanged() {
    writeRangeToUrl();
    refresh().then(schedule);
  }

  document.addEventListener("DOMContentLoaded", function () {
    takeTokenFromUrl();
    readRangeFromUrl();
    makeCharts();
    $("range").addEventListener("change", rangeChanged);
    $("range").addEventListener("submit", function (e) { e.preventDefault(); rangeChanged(); });
    Array.prototype.forEach.call(document.querySelectorAll("#range button[data-days]"), function (b) {
      b.addEventListener("click", function () { lastDays(Number(b.dataset.days)); rangeChanged(); });
    });
    $("token-form").addEventListener("submit", function (e) {
      e.preventDefault();
      localStorage.setItem(TOKEN_KEY, $("token").value.trim());
      $("token").value = "";
      $("token-form").hidden = true;
      refresh().then(schedule);
    });
    $("forget").addEventListener("click", function () { askForToken("Token forgotten."); });
    document.addEventListener("visibilitychange", function () { if (!document.hidden) refresh(); });
    if (token()) refresh().then(schedule); else askForToken();
  });
})();
