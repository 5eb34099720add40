/* Caretaker console: hash routes, DOM built with h() (never innerHTML with data), charts as inline SVG.
   Every UI string is looked up by a literal key; keys live in i18n/en.json and i18n/zh-CN.json (a Rust test checks both). */
(function () {
  'use strict';

  // Errors are collected for the browser test (and shown to the user) before anything else can fail.
  var errors = (window.__caretakerErrors = []);
  window.addEventListener('error', function (e) { errors.push(String(e.message || e)); });
  window.addEventListener('unhandledrejection', function (e) { errors.push(String(e.reason && e.reason.message || e.reason)); });

  var L = {};
  try { L = JSON.parse(document.getElementById('i18n').textContent); } catch (e) { errors.push('i18n: ' + e); }
  var lang = document.documentElement.lang || 'en';

  function t(key, vars) {
    var s = Object.prototype.hasOwnProperty.call(L, key) ? L[key] : key;
    if (vars) s = s.replace(/\{(\w+)\}/g, function (m, k) { return vars[k] != null ? String(vars[k]) : m; });
    return s;
  }

  // ---- DOM helpers -------------------------------------------------------------------------------------------
  function h(tag, attrs) {
    var el = document.createElement(tag);
    if (attrs) for (var k in attrs) {
      var v = attrs[k];
      if (v == null || v === false) continue;
      if (k === 'class') el.className = v;
      else if (k === 'text') el.textContent = v;
      else if (k.slice(0, 2) === 'on') el.addEventListener(k.slice(2), v);
      else if (v === true) el.setAttribute(k, '');
      else el.setAttribute(k, v);
    }
    for (var i = 2; i < arguments.length; i++) add(el, arguments[i]);
    return el;
  }
  function add(el, c) {
    if (c == null || c === false) return;
    if (Array.isArray(c)) { c.forEach(function (x) { add(el, x); }); return; }
    el.appendChild(typeof c === 'object' ? c : document.createTextNode(String(c)));
  }
  var SVG = 'http://www.w3.org/2000/svg';
  function s(tag, attrs) {
    var el = document.createElementNS(SVG, tag);
    for (var k in attrs || {}) if (attrs[k] != null) el.setAttribute(k, attrs[k]);
    for (var i = 2; i < arguments.length; i++) {
      var c = arguments[i];
      if (c == null) continue;
      el.appendChild(typeof c === 'object' ? c : document.createTextNode(String(c)));
    }
    return el;
  }
  var main = document.getElementById('main');
  function show(title, nodes) {
    main.textContent = '';
    var hd = h('h1', { tabindex: '-1' }, title);
    add(main, [hd, nodes]);
    document.title = title + ' · ' + t('app.title');
    hd.focus({ preventScroll: true });
  }
  function say(msg, bad) {
    var st = document.getElementById('status');
    st.textContent = msg || '';
    st.className = 'status' + (bad ? ' bad' : '') + (msg ? ' on' : '');
  }

  // ---- formatting --------------------------------------------------------------------------------------------
  var dtf = new Intl.DateTimeFormat(lang, { dateStyle: 'medium', timeStyle: 'short' });
  var nf = new Intl.NumberFormat(lang, { maximumFractionDigits: 2 });
  function when(iso) { if (!iso) return '–'; var d = new Date(iso); return isNaN(d) ? iso : dtf.format(d); }
  function num(v) { return v == null || isNaN(v) ? '–' : nf.format(v); }
  function dur(sec) {
    if (sec == null || isNaN(sec)) return '–';
    sec = Math.abs(Math.round(sec));
    var d = Math.floor(sec / 86400), hh = Math.floor(sec % 86400 / 3600), m = Math.floor(sec % 3600 / 60);
    if (d) return t('time.dh', { d: d, h: hh });
    if (hh) return t('time.hm', { h: hh, m: m });
    if (m) return t('time.m', { m: m });
    return t('time.s', { s: sec % 60 });
  }
  function ago(iso) { return iso ? t('time.ago', { d: dur((Date.now() - new Date(iso)) / 1000) }) : '–'; }
  function statusWord(st) {
    var w = { open: t('status.open'), acknowledged: t('status.acknowledged'), resolved: t('status.resolved'), cleared: t('status.cleared') }[st];
    var icon = { open: '●', acknowledged: '◐', resolved: '✔', cleared: '○' }[st] || '•';
    return h('span', { class: 'st st-' + st }, h('span', { 'aria-hidden': 'true' }, icon + ' '), w || st);
  }
  function sevWord(sv) {
    var w = { critical: t('severity.critical'), major: t('severity.major'), minor: t('severity.minor'), warning: t('severity.warning') }[sv];
    var icon = { critical: '▲▲', major: '▲', minor: '△', warning: '!' }[sv] || '•';
    return h('span', { class: 'sev sev-' + sv }, h('span', { 'aria-hidden': 'true' }, icon + ' '), w || sv);
  }
  function onlineWord(on) {
    return h('span', { class: on ? 'on-line' : 'off-line' }, h('span', { 'aria-hidden': 'true' }, on ? '● ' : '○ '), on ? t('device.online') : t('device.offline'));
  }
  function due(wo) {
    if (!wo.due_at || wo.status === 'resolved') return null;
    return h('span', { class: 'due' + (new Date(wo.due_at) < Date.now() ? ' overdue' : ''), 'data-due': wo.due_at }, dueText(wo.due_at));
  }
  function dueText(iso) {
    var left = (new Date(iso) - Date.now()) / 1000;
    return left < 0 ? '⚠ ' + t('wo.overdue_by', { d: dur(-left) }) : t('wo.due_in', { d: dur(left) });
  }
  setInterval(function () {
    var els = document.querySelectorAll('[data-due]');
    for (var i = 0; i < els.length; i++) {
      var iso = els[i].getAttribute('data-due');
      els[i].textContent = dueText(iso);
      els[i].classList.toggle('overdue', new Date(iso) < Date.now());
    }
  }, 1000);

  // ---- API ---------------------------------------------------------------------------------------------------
  var session = null;
  // Bumped by every route(): a GET answered after the page changed is dropped, so a slow answer for the page
  // left behind never paints over the page now shown.
  var seq = 0;
  function api(method, path, body) {
    var p = apiRaw(method, path, body);
    if (method !== 'GET') return p;
    var at = seq;
    var stale = function () { return new Promise(function () { /* dropped */ }); };
    return p.then(function (v) { return at === seq ? v : stale(); }, function (e) { if (at === seq) throw e; return stale(); });
  }
  function apiRaw(method, path, body) {
    var headers = { Accept: 'application/json' };
    if (body !== undefined) headers['Content-Type'] = 'application/json';
    if (method !== 'GET' && session && session.csrf) headers['X-CSRF-Token'] = session.csrf;
    return fetch('/api/v1' + path, {
      method: method, headers: headers, credentials: 'same-origin',
      body: body === undefined ? undefined : JSON.stringify(body)
    }).then(function (r) {
      var ct = r.headers.get('Content-Type') || '';
      var p = r.status === 204 ? Promise.resolve(null) : ct.indexOf('json') >= 0 ? r.json() : r.text();
      return p.then(function (data) {
        if (r.ok) return data;
        var e = (data && data.error) || {};
        var err = new Error(e.message || r.statusText || String(r.status));
        err.status = r.status; err.code = e.code;
        throw err;
      });
    });
  }
  function failed(e) {
    if (e && e.status === 401) { session = null; paintUser(); location.hash = '#/signin'; return; }
    var msg = e && e.status === 403 ? t('error.forbidden') : e && e.status === 429 ? t('error.too_many') : t('error.generic', { msg: e && e.message || String(e) });
    say(msg, true);
  }
  function canAct() { return session && (session.role === 'operator' || session.role === 'admin'); }
  function qs(obj) {
    var parts = [];
    for (var k in obj) if (obj[k] != null && obj[k] !== '') parts.push(encodeURIComponent(k) + '=' + encodeURIComponent(obj[k]));
    return parts.length ? '?' + parts.join('&') : '';
  }

  // ---- charts (inline SVG) -----------------------------------------------------------------------------------
  function sparkline(points, label) {
    var w = 120, ht = 28;
    var svg = s('svg', { class: 'spark', viewBox: '0 0 ' + w + ' ' + ht, width: w, height: ht, role: 'img', 'aria-label': label });
    var vals = (points || []).filter(function (p) { return p && p[1] != null && isFinite(p[1]); });
    if (vals.length < 2) return svg;
    var t0 = vals[0][0], t1 = vals[vals.length - 1][0] || t0 + 1;
    var lo = Infinity, hi = -Infinity;
    vals.forEach(function (p) { lo = Math.min(lo, p[1]); hi = Math.max(hi, p[1]); });
    if (hi === lo) { hi += 1; lo -= 1; }
    var pts = vals.map(function (p) {
      return ((p[0] - t0) / (t1 - t0 || 1) * (w - 2) + 1).toFixed(1) + ',' + (ht - 2 - (p[1] - lo) / (hi - lo) * (ht - 4)).toFixed(1);
    });
    svg.appendChild(s('polyline', { points: pts.join(' '), fill: 'none', class: 'line' }));
    return svg;
  }
  // Horizontal bars: [{label, value, cls}]; each bar also carries its number as text (readable without colour).
  function bars(items, label) {
    var rowH = 26, w = 320, lw = 110;
    var max = Math.max.apply(null, items.map(function (i) { return i.value || 0; }).concat([1]));
    // Room for the longest value text (about 7 px a character at 12 px) so it is never cut off.
    var tw = Math.max.apply(null, items.map(function (i) { return String(i.text != null ? i.text : num(i.value)).length; }).concat([3])) * 7 + 8;
    var svg = s('svg', { class: 'bars', viewBox: '0 0 ' + w + ' ' + (items.length * rowH + 4), role: 'img', 'aria-label': label });
    items.forEach(function (it, i) {
      var y = i * rowH + 2, bw = Math.max(0, (it.value || 0) / max * Math.max(40, w - lw - tw));
      svg.appendChild(s('text', { x: 0, y: y + 17, class: 'lbl' }, it.label));
      svg.appendChild(s('rect', { x: lw, y: y + 4, width: bw.toFixed(1), height: rowH - 10, class: 'bar ' + (it.cls || '') }));
      svg.appendChild(s('text', { x: lw + bw + 4, y: y + 17, class: 'val' }, it.text != null ? it.text : num(it.value)));
    });
    return svg;
  }
  // Line chart of [{t: ms, v}] with an optional dashed threshold; axes carry min/max and start/end times.
  function lineChart(pts, threshold, unit, label) {
    var w = 600, ht = 220, l = 56, r = 10, tp = 12, b = 28;
    var svg = s('svg', { class: 'chart', viewBox: '0 0 ' + w + ' ' + ht, role: 'img', 'aria-label': label });
    pts = pts.filter(function (p) { return isFinite(p.v) && isFinite(p.t); }).sort(function (a, c) { return a.t - c.t; });
    if (!pts.length) { svg.appendChild(s('text', { x: w / 2, y: ht / 2, 'text-anchor': 'middle', class: 'lbl' }, t('chart.no_data'))); return svg; }
    var t0 = pts[0].t, t1 = pts[pts.length - 1].t; if (t1 === t0) t1 = t0 + 1;
    var lo = Infinity, hi = -Infinity;
    pts.forEach(function (p) { lo = Math.min(lo, p.v); hi = Math.max(hi, p.v); });
    if (threshold != null && isFinite(threshold)) { lo = Math.min(lo, threshold); hi = Math.max(hi, threshold); }
    if (hi === lo) { hi += 1; lo -= 1; }
    var pad = (hi - lo) * 0.08; hi += pad; lo -= pad;
    function X(tm) { return l + (tm - t0) / (t1 - t0) * (w - l - r); }
    function Y(v) { return tp + (hi - v) / (hi - lo) * (ht - tp - b); }
    svg.appendChild(s('line', { x1: l, y1: tp, x2: l, y2: ht - b, class: 'axis' }));
    svg.appendChild(s('line', { x1: l, y1: ht - b, x2: w - r, y2: ht - b, class: 'axis' }));
    svg.appendChild(s('text', { x: l - 4, y: tp + 10, 'text-anchor': 'end', class: 'lbl' }, num(hi)));
    svg.appendChild(s('text', { x: l - 4, y: ht - b, 'text-anchor': 'end', class: 'lbl' }, num(lo)));
    if (unit) svg.appendChild(s('text', { x: l - 4, y: (ht - b) / 2 + 6, 'text-anchor': 'end', class: 'lbl' }, unit));
    svg.appendChild(s('text', { x: l, y: ht - 8, class: 'lbl' }, when(new Date(t0).toISOString())));
    svg.appendChild(s('text', { x: w - r, y: ht - 8, 'text-anchor': 'end', class: 'lbl' }, when(new Date(t1).toISOString())));
    if (threshold != null && isFinite(threshold)) {
      svg.appendChild(s('line', { x1: l, x2: w - r, y1: Y(threshold), y2: Y(threshold), class: 'threshold' }));
      svg.appendChild(s('text', { x: w - r - 2, y: Y(threshold) - 4, 'text-anchor': 'end', class: 'lbl thr' }, t('chart.alarm_line', { v: num(threshold) })));
    }
    svg.appendChild(s('polyline', {
      class: 'line', fill: 'none',
      points: pts.map(function (p) { return X(p.t).toFixed(1) + ',' + Y(p.v).toFixed(1); }).join(' ')
    }));
    pts.forEach(function (p) { svg.appendChild(s('circle', { cx: X(p.t).toFixed(1), cy: Y(p.v).toFixed(1), r: 2.5, class: 'dot' })); });
    return svg;
  }
  function table(head, rows, cls) {
    return h('div', { class: 'scroll' }, h('table', { class: cls || '' },
      h('thead', null, h('tr', null, head.map(function (c) { return h('th', { scope: 'col' }, c); }))),
      h('tbody', null, rows.map(function (r) { return h('tr', null, r.map(function (c) { return h('td', null, c); })); }))));
  }
  function card(title, body, extra) { return h('section', { class: 'card ' + (extra || '') }, h('h2', null, title), body); }
  function field(label, input, hint) {
    var id = input.id || ('f' + Math.random().toString(36).slice(2, 8));
    input.id = id;
    return h('div', { class: 'field' }, h('label', { for: id }, label), input, hint ? h('small', { class: 'muted' }, hint) : null);
  }
  function select(name, options, value) {
    return h('select', { name: name }, options.map(function (o) {
      return h('option', { value: o[0], selected: o[0] === value }, o[1]);
    }));
  }
  function isoDate(d) { return d.toISOString().slice(0, 10); }

  // ---- pages ---------------------------------------------------------------------------------------------------
  function pageSignIn() {
    var input = h('input', { type: 'password', name: 'token', autocomplete: 'current-password', required: true, spellcheck: 'false' });
    var form = h('form', { class: 'narrow', onsubmit: function (e) {
      e.preventDefault();
      api('POST', '/session', { token: input.value.trim() }).then(function (sn) {
        session = sn; paintUser(); connectEvents(); say(t('auth.signed_in', { name: sn.name }));
        // Back to the page asked for, or the overview; the same hash fires no hashchange, so route directly.
        if (!location.hash || location.hash === '#/signin') location.hash = '#/overview'; else route();
      }, function (err) {
        say(err.status === 429 ? t('error.too_many') : err.status === 401 ? t('auth.bad_token') : t('error.generic', { msg: err.message }), true);
        input.focus();
      });
    } }, field(t('auth.token'), input, t('auth.token_hint')), h('button', { type: 'submit', class: 'primary' }, t('auth.sign_in')));
    show(t('auth.sign_in'), [form, h('p', { class: 'muted' }, t('auth.report_without'), ' ', h('a', { href: '#/report' }, t('nav.report')))]);
  }

  function pageOverview() {
    return api('GET', '/overview').then(function (o) {
      if (o.site) document.getElementById('site').textContent = o.site;
      var d = o.devices || {}, w = o.work_orders || {};
      var sev = w.open_by_severity || {}, team = w.open_by_team || {};
      var sevItems = ['critical', 'major', 'minor', 'warning'].map(function (k) {
        return { label: { critical: t('severity.critical'), major: t('severity.major'), minor: t('severity.minor'), warning: t('severity.warning') }[k], value: sev[k] || 0, cls: 'sev-' + k };
      });
      var teamItems = Object.keys(team).sort().map(function (k) { return { label: k, value: team[k] }; });
      var openTotal = sevItems.reduce(function (a, i) { return a + i.value; }, 0);
      var e = o.energy_today;
      var energy = e ? h('div', null,
        h('p', { class: 'big' }, num(e.kwh), ' ', h('small', null, 'kWh')),
        bars([{ label: t('energy.today'), value: e.kwh, text: num(e.kwh) + ' kWh' },
          { label: t('energy.baseline'), value: e.baseline_kwh || 0, text: e.baseline_kwh == null ? '–' : num(e.baseline_kwh) + ' kWh', cls: 'base' }], t('overview.energy')),
        e.baseline_kwh ? h('p', null, pctText(e.kwh, e.baseline_kwh)) : null,
        e.cost != null ? h('p', { class: 'muted' }, t('energy.cost'), ': ', num(e.cost), e.currency ? ' ' + e.currency : '') : null)
        : h('p', { class: 'muted' }, t('overview.no_energy'));
      show(t('nav.overview'), h('div', { class: 'grid' },
        card(t('overview.devices'), [
          h('p', { class: 'big' }, num(d.online), ' / ', num(d.total)),
          h('p', null, onlineWord(true), ': ', num(d.online), ' · ', onlineWord(false), ': ', num(d.offline)),
          h('a', { href: '#/devices' }, t('overview.see_devices'))]),
        card(t('overview.open'), [
          h('p', { class: 'big' }, num(openTotal)),
          bars(sevItems, t('overview.by_severity')),
          h('p', { class: w.overdue ? 'overdue' : '' }, w.overdue ? '⚠ ' : '', t('overview.overdue', { n: num(w.overdue || 0) })),
          h('a', { href: '#/work-orders?status=open' }, t('overview.see_open'))]),
        card(t('overview.by_team'), teamItems.length ? bars(teamItems, t('overview.by_team')) : h('p', { class: 'muted' }, t('common.none'))),
        card(t('overview.energy'), energy)));
    });
  }
  function pctText(v, base) {
    var p = (v - base) / base * 100;
    var v = { p: nf.format(Math.abs(p)) };
    return p > 0 ? '▲ ' + t('energy.above', v) : '▼ ' + t('energy.below', v);
  }

  function pageWorkOrders(q) {
    var filters = { status: q.status || '', team: q.team || '', building: q.building || '', severity: q.severity || '', device: q.device || '' };
    var list = h('ul', { class: 'wo-list' });
    var more = h('button', { type: 'button', hidden: true }, t('common.more'));
    var cursor = null;
    function load() {
      var p = {}; for (var k in filters) p[k] = filters[k];
      p.limit = 50; if (cursor) p.cursor = cursor;
      return api('GET', '/work-orders' + qs(p)).then(function (r) {
        (r.items || []).forEach(function (wo) { list.appendChild(woRow(wo)); });
        if (!list.children.length) list.appendChild(h('li', { class: 'muted' }, t('wo.none')));
        cursor = r.next_cursor || null;
        more.hidden = !cursor;
      });
    }
    more.addEventListener('click', function () { load().catch(failed); });
    var form = h('form', { class: 'filters', onchange: function () {
      var f = {}; ['status', 'team', 'building', 'severity', 'device'].forEach(function (k) { f[k] = form.elements[k].value.trim(); });
      location.hash = '#/work-orders' + qs(f);
    }, onsubmit: function (e) { e.preventDefault(); form.dispatchEvent(new Event('change')); } },
      field(t('wo.status'), select('status', [['', t('common.all')], ['open', t('status.open')], ['acknowledged', t('status.acknowledged')], ['resolved', t('status.resolved')]], filters.status)),
      field(t('wo.severity'), select('severity', [['', t('common.all')], ['critical', t('severity.critical')], ['major', t('severity.major')], ['minor', t('severity.minor')], ['warning', t('severity.warning')]], filters.severity)),
      field(t('wo.team'), h('input', { name: 'team', value: filters.team, type: 'search' })),
      field(t('wo.building'), h('input', { name: 'building', value: filters.building, type: 'search' })),
      field(t('wo.device'), h('input', { name: 'device', value: filters.device, type: 'search' })),
      h('button', { type: 'submit' }, t('common.filter')));
    return load().then(function () { show(t('nav.work_orders'), [form, list, more]); });
  }
  function woRow(wo) {
    return h('li', { class: 'wo wo-' + wo.severity + (wo.overdue ? ' is-overdue' : '') },
      h('a', { href: '#/work-orders/' + wo.id, class: 'wo-title' }, '#' + wo.id + ' ' + wo.title),
      h('div', { class: 'meta' }, statusWord(wo.status), sevWord(wo.severity),
        wo.team ? h('span', null, t('wo.team'), ': ', wo.team) : null,
        wo.device ? h('span', null, t('wo.device'), ': ', wo.device) : null,
        wo.building ? h('span', null, t('wo.building'), ': ', wo.building) : null,
        wo.source === 'request' ? h('span', { class: 'tag' }, t('wo.from_request')) : null,
        due(wo)));
  }

  function pageWorkOrder(id) {
    return api('GET', '/work-orders/' + encodeURIComponent(id)).then(function (wo) {
      var acts = null;
      if (wo.status !== 'resolved') {
        if (canAct()) {
          var note = h('textarea', { name: 'note', rows: 2 });
          var act = function (kind) {
            return function () {
              var text = note.value.trim();
              if (kind === 'resolve' && !text) { say(t('wo.note_required'), true); note.focus(); return; }
              api('POST', '/work-orders/' + wo.id + '/' + kind, { note: text }).then(function () {
                say(kind === 'ack' ? t('wo.acked') : t('wo.resolved_msg'));
                route();
              }, failed);
            };
          };
          acts = h('div', { class: 'actions' }, field(t('wo.note'), note, t('wo.note_hint')),
            h('div', { class: 'row' },
              wo.status === 'open' ? h('button', { type: 'button', class: 'primary', id: 'ack', onclick: act('ack') }, t('wo.ack')) : null,
              h('button', { type: 'button', id: 'resolve', onclick: act('resolve') }, t('wo.resolve'))));
        } else if (session) {
          acts = h('p', { class: 'muted' }, t('wo.read_only'));
        }
      }
      // The evidence the rules attached; else the point's live 24 h (five-minute means) around the alarm.
      var evidence = [];
      (wo.history || []).forEach(function (e) { (e.evidence || []).forEach(function (p) { evidence.push({ t: new Date(p.time).getTime(), v: p.value }); }); });
      if (evidence.length < 2) (wo.readings || []).forEach(function (p) { evidence.push({ t: p[0], v: p[1] }); });
      var threshold = wo.threshold != null ? wo.threshold : wo.first_value;
      var facts = h('dl', { class: 'facts' },
        h('dt', null, t('wo.status')), h('dd', { id: 'wo-status' }, statusWord(wo.status), wo.cleared_at && wo.status !== 'resolved' ? [' · ', t('wo.condition_cleared')] : null),
        h('dt', null, t('wo.severity')), h('dd', null, sevWord(wo.severity)),
        h('dt', null, t('wo.due')), h('dd', null, due(wo) || '–'),
        h('dt', null, t('wo.team')), h('dd', null, wo.team || '–'),
        h('dt', null, t('wo.device')), h('dd', null, wo.device ? h('a', { href: '#/devices/' + encodeURIComponent(wo.device) }, wo.device) : '–', wo.point ? ' · ' + wo.point : ''),
        h('dt', null, t('wo.source')), h('dd', null, wo.source === 'request' ? t('wo.from_request') : (wo.rule || '–')),
        h('dt', null, t('wo.opened')), h('dd', null, when(wo.opened_at)),
        h('dt', null, t('wo.values')), h('dd', null, t('wo.values_text', { first: num(wo.first_value), peak: num(wo.peak_value), last: num(wo.last_value), unit: wo.unit || '' })),
        wo.rating != null ? [h('dt', null, t('kpi.satisfaction')), h('dd', null, (wo.rating.rating != null ? wo.rating.rating : wo.rating) + ' / 5 ★')] : null);
      var hist = h('ol', { class: 'timeline' }, (wo.history || []).map(function (e) {
        return h('li', null, h('time', { datetime: e.time }, when(e.time)), ' ', h('strong', null, e.event), e.actor ? [' · ', e.actor] : null, e.note ? h('p', null, e.note) : null);
      }));
      show('#' + wo.id + ' ' + wo.title, [
        h('p', null, h('a', { href: '#/work-orders' }, '← ', t('nav.work_orders'))),
        acts,
        h('div', { class: 'grid' }, card(t('wo.details'), facts),
          card(t('wo.procedure'), h('pre', { class: 'sop' }, wo.procedure || t('common.none')))),
        card(t('wo.evidence'), lineChart(evidence, threshold, wo.unit, t('wo.evidence'))),
        card(t('wo.history'), hist)]);
    });
  }

  function pageReport() {
    var f = {
      building: h('input', { name: 'building', required: true, autocomplete: 'off' }),
      room: h('input', { name: 'room', autocomplete: 'off' }),
      title: h('input', { name: 'title', required: true, maxlength: 200 }),
      description: h('textarea', { name: 'description', rows: 3 }),
      device: h('input', { name: 'device', autocomplete: 'off' }),
      name: h('input', { name: 'name', autocomplete: 'name' }),
      contact: h('input', { name: 'contact', autocomplete: 'tel', inputmode: 'email' })
    };
    var form = h('form', { class: 'narrow', id: 'report-form', onsubmit: function (e) {
      e.preventDefault();
      var title = f.title.value.trim(), building = f.building.value.trim();
      if (!building || !title) { say(t('report.missing'), true); (building ? f.title : f.building).focus(); return; }
      var body = { title: title, description: f.description.value.trim() || title, location: { building: building, room: f.room.value.trim() } };
      if (f.device.value.trim()) body.device = f.device.value.trim();
      if (f.name.value.trim() || f.contact.value.trim()) body.requester = { name: f.name.value.trim(), contact: f.contact.value.trim() };
      var btn = form.querySelector('button[type=submit]'); btn.disabled = true;
      api('POST', '/requests', body).then(function (r) {
        try {
          var mine = JSON.parse(localStorage.getItem('caretaker_requests') || '[]');
          mine.unshift({ id: r.id, key: r.key, title: title }); localStorage.setItem('caretaker_requests', JSON.stringify(mine.slice(0, 20)));
        } catch (x) { /* private mode: the link still works */ }
        say(t('report.sent', { id: r.id }));
        location.hash = '#/request/' + r.id + qs({ key: r.key });
      }, function (err) {
        btn.disabled = false;
        if (err.status === 401) say(t('report.sign_in_first'), true); else failed(err);
      });
    } },
      field(t('report.building'), f.building), field(t('report.room'), f.room),
      field(t('report.what'), f.title, t('report.what_hint')), field(t('report.details'), f.description),
      field(t('report.device'), f.device, t('common.optional')),
      field(t('report.name'), f.name, t('common.optional')), field(t('report.contact'), f.contact, t('report.contact_hint')),
      h('button', { type: 'submit', class: 'primary' }, t('report.submit')));
    var mine = [];
    try { mine = JSON.parse(localStorage.getItem('caretaker_requests') || '[]'); } catch (x) { mine = []; }
    show(t('nav.report'), [h('p', null, t('report.intro')), form,
      mine.length ? card(t('report.mine'), h('ul', null, mine.map(function (m) {
        return h('li', null, h('a', { href: '#/request/' + m.id + qs({ key: m.key }) }, '#' + m.id + ' ' + m.title));
      }))) : null]);
    return Promise.resolve();
  }

  function pageRequest(id, q) {
    return api('GET', '/requests/' + encodeURIComponent(id) + qs({ key: q.key })).then(function (r) {
      var steps = [[t('report.step_received'), r.created], [t('report.step_acknowledged'), r.acknowledged], [t('report.step_resolved'), r.resolved]];
      var rating = null;
      if (r.status === 'resolved' && r.rating == null) {
        var comment = h('textarea', { name: 'comment', rows: 2 });
        var stars = h('fieldset', { class: 'stars' }, h('legend', null, t('report.rate')), [1, 2, 3, 4, 5].map(function (n) {
          return h('label', null, h('input', { type: 'radio', name: 'rating', value: n, required: true }), ' ', n, ' ', '★'.repeat(n));
        }));
        rating = h('form', { class: 'narrow', onsubmit: function (e) {
          e.preventDefault();
          var v = rating.querySelector('input[name=rating]:checked');
          if (!v) { say(t('report.rate_pick'), true); return; }
          api('POST', '/work-orders/' + encodeURIComponent(r.id) + '/feedback', { rating: Number(v.value), comment: comment.value.trim() || undefined, key: q.key })
            .then(function () { say(t('report.thanks')); route(); }, failed);
        } }, stars, field(t('report.comment'), comment, t('common.optional')), h('button', { type: 'submit', class: 'primary' }, t('report.send_rating')));
      }
      show(t('report.status_title', { id: r.id }), [
        h('p', { class: 'lead' }, r.title),
        h('p', { id: 'request-status' }, t('wo.status'), ': ', statusWord(r.status)),
        r.due && r.status !== 'resolved' ? h('p', null, t('wo.due'), ': ', h('span', { class: 'due', 'data-due': r.due }, dueText(r.due))) : null,
        h('ol', { class: 'steps' }, steps.map(function (st) {
          return h('li', { class: st[1] ? 'done' : '' }, h('span', { 'aria-hidden': 'true' }, st[1] ? '✔ ' : '… '), st[0], ': ', st[1] ? when(st[1]) : t('report.pending'));
        })),
        r.rating != null ? h('p', null, t('report.rated', { n: r.rating }), ' ', '★'.repeat(r.rating)) : null,
        rating,
        h('p', { class: 'muted' }, t('report.keep_link'))]);
      // A requester has no live stream (no sign-in): look again every 30 s while this page stays open and unrated.
      var my = seq;
      if (!rating) setTimeout(function () { if (my === seq) route(); }, 30000);
    });
  }

  // How a device's readings arrive (the API's `protocol`), as field engineers write it.
  function protocolName(p) {
    return { mqtt: 'MQTT', modbus: 'Modbus', bacnet: 'BACnet/IP', sparkplug: 'Sparkplug B' }[p] || p || '–';
  }

  function pageDevices(q) {
    return api('GET', '/devices').then(function (r) {
      var items = r.items || [];
      var search = h('input', { type: 'search', name: 'q', value: q.q || '' });
      var box = h('div');
      function paint() {
        var term = search.value.trim().toLowerCase();
        var groups = {};
        items.filter(function (d) {
          if (!term) return true;
          var loc = d.location || {};
          return [d.id, d.profile, d.category, d.manufacturer, d.model, protocolName(d.protocol), loc.building, loc.floor, loc.room].join(' ').toLowerCase().indexOf(term) >= 0;
        }).forEach(function (d) {
          var b = (d.location && d.location.building) || t('device.no_building');
          (groups[b] = groups[b] || []).push(d);
        });
        box.textContent = '';
        var names = Object.keys(groups).sort();
        if (!names.length) box.appendChild(h('p', { class: 'muted' }, t('device.none')));
        names.forEach(function (b) {
          var ds = groups[b];
          var on = ds.filter(function (d) { return d.online; }).length;
          box.appendChild(h('section', { class: 'group' }, h('h2', null, b, ' ', h('small', { class: 'muted' }, t('device.count', { on: on, n: ds.length }))),
            table([t('device.id'), t('device.state'), t('device.category'), t('device.model'), t('device.protocol'), t('device.room'), t('device.open_wo')], ds.map(function (d) {
              var loc = d.location || {};
              return [h('a', { href: '#/devices/' + encodeURIComponent(d.id) }, d.id),
                [onlineWord(d.online), !d.online && d.last_seen ? h('small', { class: 'muted' }, ' ' + t('device.since', { t: when(d.last_seen) })) : null],
                d.category || '–', [d.manufacturer, d.model].filter(Boolean).join(' ') || d.profile || '–',
                protocolName(d.protocol),
                [loc.floor, loc.room].filter(Boolean).join(' / ') || '–',
                d.open_work_orders ? h('a', { href: '#/work-orders' + qs({ device: d.id }) }, String(d.open_work_orders)) : '0'];
            }))));
        });
      }
      search.addEventListener('input', paint);
      paint();
      show(t('nav.devices'), [h('form', { class: 'filters', role: 'search', onsubmit: function (e) { e.preventDefault(); } }, field(t('device.search'), search, t('device.search_hint'))), box]);
    });
  }

  function pageDevice(id) {
    return Promise.all([api('GET', '/devices/' + encodeURIComponent(id)), api('GET', '/work-orders' + qs({ device: id, limit: 50 }))]).then(function (res) {
      var d = res[0], wos = (res[1].items || []).filter(function (w) { return w.status !== 'resolved'; });
      var loc = d.location || {};
      show(d.id, [
        h('p', null, h('a', { href: '#/devices' }, '← ', t('nav.devices'))),
        h('p', null, onlineWord(d.online), d.online ? '' : ' · ' + t('device.offline_since', { t: when(d.last_seen), ago: ago(d.last_seen) }),
          ' · ', [d.manufacturer, d.model].filter(Boolean).join(' ') || d.profile, ' · ', protocolName(d.protocol), ' · ', [loc.building, loc.floor, loc.room].filter(Boolean).join(' / ')),
        card(t('device.points'), table([t('device.point'), t('device.value'), t('device.quality'), t('device.anomaly'), t('device.last_24h'), t('device.time')],
          (d.points || []).map(function (p) {
            return [p.name, h('strong', null, num(p.value), p.unit ? ' ' + p.unit : ''), p.quality || '–',
              p.anomaly_score == null ? '–' : num(p.anomaly_score), sparkline(p.history, t('device.spark_label', { p: p.name })), when(p.time)];
          }), 'points')),
        card(t('device.open_wo'), wos.length ? h('ul', { class: 'wo-list' }, wos.map(woRow)) : h('p', { class: 'muted' }, t('wo.none')))]);
    });
  }

  function pageEnergy(q) {
    var today = new Date();
    var p = { from: q.from || isoDate(new Date(today.getTime() - 6 * 86400000)), to: q.to || isoDate(today), by: q.by || 'day', group: q.group || 'building' };
    var form = h('form', { class: 'filters', onsubmit: function (e) {
      e.preventDefault();
      var f = {}; ['from', 'to', 'by', 'group'].forEach(function (k) { f[k] = form.elements[k].value; });
      location.hash = '#/energy' + qs(f);
    } },
      field(t('period.from'), h('input', { type: 'date', name: 'from', value: p.from })),
      field(t('period.to'), h('input', { type: 'date', name: 'to', value: p.to })),
      field(t('energy.by'), select('by', [['hour', t('energy.by_hour')], ['day', t('energy.by_day')], ['week', t('energy.by_week')], ['month', t('energy.by_month')]], p.by)),
      field(t('energy.group'), select('group', [['building', t('energy.group_building')], ['device', t('energy.group_device')], ['category', t('energy.group_category')]], p.group)),
      h('button', { type: 'submit' }, t('common.show')));
    return api('GET', '/energy/report' + qs({ from: p.from, to: p.to, by: p.by, group: p.group, format: 'json' })).catch(function (err) {
      // 404: this site keeps no energy store (no [energy] section); an empty report says so.
      if (err.status === 404) return { rows: [], none: true };
      throw err;
    }).then(function (r) {
      var rows = r.rows || [];
      var periods = {}, groups = {}, order = [];
      rows.forEach(function (row) {
        if (!periods[row.period]) { periods[row.period] = { v: 0, b: 0, hasB: false }; order.push(row.period); }
        periods[row.period].v += row.consumption || 0;
        if (row.baseline != null) { periods[row.period].b += row.baseline; periods[row.period].hasB = true; }
        groups[row.group] = (groups[row.group] || 0) + (row.consumption || 0);
      });
      var unit = rows.length ? rows[0].unit : 'kWh';
      var dl = function (fmt) { return '/api/v1/energy/report' + qs({ from: p.from, to: p.to, by: p.by, group: p.group, format: fmt }); };
      show(t('nav.energy'), [form,
        h('p', { class: 'row' }, h('a', { href: dl('csv'), download: 'energy.csv', class: 'button' }, '⬇ ', t('energy.csv')), ' ',
          h('a', { href: dl('html'), download: 'energy.html', class: 'button' }, '⬇ ', t('energy.html'))),
        rows.length ? h('div', { class: 'grid' },
          card(t('energy.per_period'), bars(order.map(function (k) {
            var x = periods[k];
            return { label: k, value: x.v, text: num(x.v) + ' ' + unit + (x.hasB && x.b ? (x.v > x.b ? ' ▲' : ' ▼') + nf.format(Math.abs(x.v - x.b) / x.b * 100) + '%' : '') };
          }), t('energy.per_period'))),
          card(t('energy.per_group'), bars(Object.keys(groups).sort().map(function (k) { return { label: k, value: groups[k], text: num(groups[k]) + ' ' + unit }; }), t('energy.per_group')))) : h('p', { class: 'muted' }, t('energy.none')),
        rows.length ? card(t('energy.table'), table([t('energy.period'), t('energy.group'), t('energy.consumption'), t('energy.baseline'), t('energy.cost'), t('energy.after_hours'), t('energy.peak_kw')],
          rows.map(function (x) {
            return [x.period, x.group, num(x.consumption) + ' ' + x.unit + (x.estimated ? ' *' : ''), num(x.baseline), num(x.cost), num(x.after_hours), num(x.peak_kw)];
          }))) : null]);
    });
  }

  function pageKpis(q) {
    var today = new Date();
    var p = { from: q.from || isoDate(new Date(today.getTime() - 29 * 86400000)), to: q.to || isoDate(today) };
    var form = h('form', { class: 'filters', onsubmit: function (e) {
      e.preventDefault();
      location.hash = '#/kpis' + qs({ from: form.elements.from.value, to: form.elements.to.value });
    } },
      field(t('period.from'), h('input', { type: 'date', name: 'from', value: p.from })),
      field(t('period.to'), h('input', { type: 'date', name: 'to', value: p.to })),
      h('button', { type: 'submit' }, t('common.show')));
    return api('GET', '/kpis' + qs(p)).then(function (r) {
      var teams = r.teams || [];
      show(t('nav.kpis'), [form,
        teams.length ? h('div', { class: 'grid' },
          card(t('kpi.ack_median'), bars(teams.map(function (x) { return { label: x.team, value: x.ack_median_s || 0, text: dur(x.ack_median_s) }; }), t('kpi.ack_median'))),
          card(t('kpi.resolve_median'), bars(teams.map(function (x) { return { label: x.team, value: x.resolve_median_s || 0, text: dur(x.resolve_median_s) }; }), t('kpi.resolve_median'))),
          card(t('kpi.satisfaction'), bars(teams.map(function (x) { return { label: x.team, value: x.rating_mean || 0, text: x.rating_mean == null ? '–' : num(x.rating_mean) + ' ★ (' + (x.ratings || 0) + ')' }; }), t('kpi.satisfaction')))) : h('p', { class: 'muted' }, t('kpi.none')),
        teams.length ? card(t('kpi.table'), table([t('wo.team'), t('kpi.opened'), t('kpi.acknowledged'), t('kpi.resolved'), t('kpi.ack_median'), t('kpi.ack_p90'), t('kpi.resolve_median'), t('kpi.resolve_p90'), t('kpi.sla'), t('kpi.satisfaction')],
          teams.map(function (x) {
            return [x.team, num(x.opened), num(x.acknowledged), num(x.resolved), dur(x.ack_median_s), dur(x.ack_p90_s), dur(x.resolve_median_s), dur(x.resolve_p90_s),
              x.sla_breaches ? h('span', { class: 'overdue' }, '⚠ ', num(x.sla_breaches)) : '0', x.rating_mean == null ? '–' : num(x.rating_mean) + ' / 5'];
          }))) : null]);
    });
  }

  // ---- router --------------------------------------------------------------------------------------------------
  var PUBLIC = { signin: 1, report: 1, request: 1 };
  function parseHash() {
    var raw = location.hash.replace(/^#\/?/, '');
    var qi = raw.indexOf('?'), path = qi >= 0 ? raw.slice(0, qi) : raw, q = {};
    if (qi >= 0) raw.slice(qi + 1).split('&').forEach(function (kv) {
      if (!kv) return;
      var i = kv.indexOf('=');
      try { q[decodeURIComponent(i < 0 ? kv : kv.slice(0, i))] = i < 0 ? '' : decodeURIComponent(kv.slice(i + 1).replace(/\+/g, ' ')); } catch (e) { /* bad escape: ignore */ }
    });
    var parts = path.split('/').filter(Boolean);
    return { name: parts[0] || 'overview', id: parts[1] ? decodeURIComponent(parts[1]) : null, q: q };
  }
  var current = null, pending = null;
  function route() {
    var r = parseHash();
    current = r;
    seq++;
    var navs = document.querySelectorAll('#nav a');
    for (var i = 0; i < navs.length; i++) {
      var on = navs[i].getAttribute('data-route') === r.name || (r.name === 'request' && navs[i].getAttribute('data-route') === 'report');
      if (on) navs[i].setAttribute('aria-current', 'page'); else navs[i].removeAttribute('aria-current');
    }
    if (!session && !PUBLIC[r.name]) { pageSignIn(); main.setAttribute('data-ready', 'signin'); return Promise.resolve(); }
    var p;
    switch (r.name) {
      case 'signin': pageSignIn(); p = Promise.resolve(); r.name = 'signin'; break;
      case 'work-orders': p = r.id ? pageWorkOrder(r.id) : pageWorkOrders(r.q); break;
      case 'report': p = pageReport(); break;
      case 'request': p = pageRequest(r.id, r.q); break;
      case 'devices': p = r.id ? pageDevice(r.id) : pageDevices(r.q); break;
      case 'energy': p = pageEnergy(r.q); break;
      case 'kpis': p = pageKpis(r.q); break;
      default: p = pageOverview();
    }
    return p.then(function () { main.setAttribute('data-ready', r.name); }, function (e) { failed(e); main.setAttribute('data-ready', 'error'); });
  }
  window.addEventListener('hashchange', function () { clearTimeout(pending); say(''); main.removeAttribute('data-ready'); route(); });

  // ---- live updates (SSE) ----------------------------------------------------------------------------------------
  var es = null;
  function connectEvents() {
    if (es || !window.EventSource || !session) return;
    es = new EventSource('/api/v1/events');
    var live = document.getElementById('live');
    es.onopen = function () { live.textContent = '● ' + t('live.on'); };
    es.onerror = function () { live.textContent = '○ ' + t('live.off'); };
    function refresh(kinds) {
      // Only the pages showing what changed, and never under someone's typing; checked again when the timer fires,
      // since the page may have changed in between.
      var wanted = function () {
        var a = document.activeElement;
        var typing = a && main.contains(a) && (a.tagName === 'TEXTAREA' || a.tagName === 'INPUT' || a.tagName === 'SELECT');
        return current && kinds.indexOf(current.name) >= 0 && !typing;
      };
      return function () {
        if (!wanted()) return;
        clearTimeout(pending);
        pending = setTimeout(function () { if (wanted()) route(); }, 500);
      };
    }
    es.addEventListener('work_order', refresh(['overview', 'work-orders', 'devices']));
    es.addEventListener('device', refresh(['overview', 'devices']));
  }

  // ---- chrome: user, sign-out, language --------------------------------------------------------------------------
  function paintUser() {
    var who = document.getElementById('who');
    who.textContent = session ? session.name + ' (' + ({ viewer: t('role.viewer'), operator: t('role.operator'), admin: t('role.admin') }[session.role] || session.role) + ')' : '';
    document.getElementById('signout').hidden = !session;
    document.getElementById('signin-link').hidden = !!session;
  }
  document.getElementById('signout').addEventListener('click', function () {
    api('DELETE', '/session').catch(function () { /* already gone */ }).then(function () {
      session = null; if (es) { es.close(); es = null; }
      paintUser(); say(t('auth.signed_out')); location.hash = '#/signin';
    });
  });
  document.getElementById('lang').addEventListener('click', function () {
    var next = lang === 'zh-CN' ? 'en' : 'zh-CN';
    document.cookie = 'caretaker_lang=' + next + '; path=/; max-age=31536000; SameSite=Strict';
    try { localStorage.setItem('caretaker_lang', next); } catch (e) { /* cookie is enough */ }
    location.reload();
  });

  api('GET', '/session').then(function (sn) { session = sn; }, function () { session = null; }).then(function () {
    paintUser(); connectEvents(); route();
  });
})();
