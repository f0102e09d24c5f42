/**
 * The lab's report as one self-contained HTML page: the tables of report.ts, and per
 * topology an SVG timeline of the whole run on one time axis — QEMU's phases (pre-copy,
 * the stop-and-copy downtime), its bytes moved, every xping echo (its round trip, or a
 * red tick where it was lost), and the Goldbach answers over XIA and over TCP as a rate,
 * so a gap or a broken connection shows where it happened.
 */
import { formatLabReport } from './report.js';
import type { Timeline, TopologyReport } from './figures.js';
import type { LabReport } from './run.js';

const W = 1100;
const LEFT = 120;
const RIGHT = 20;
const LANE = { qemu: 70, ping: 110, answers: 70, tcp: 50 } as const;

const escape = (text: string): string => text.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');
const fixed = (v: number): string => (Math.round(v * 10) / 10).toString();

/** Answers per bin, for a rate strip. */
function bins(times: number[], start: number, end: number, binMs: number): number[] {
  const counts = new Array<number>(Math.max(1, Math.ceil((end - start) / binMs))).fill(0);
  for (const t of times) {
    const i = Math.floor((t - start) / binMs);
    if (i >= 0 && i < counts.length) counts[i]!++;
  }
  return counts;
}

export function timelineSvg(timeline: Timeline, title: string): string {
  const start = timeline.start;
  const end = Math.max(timeline.end, start + 1000);
  const span = end - start;
  const x = (t: number): number => LEFT + ((t - start) / span) * (W - LEFT - RIGHT);
  const parts: string[] = [];
  let y = 30;
  const lane = (label: string, height: number, draw: (top: number, height: number) => void): void => {
    parts.push(`<rect x="${LEFT}" y="${y}" width="${W - LEFT - RIGHT}" height="${height}" class="lane"/>`);
    parts.push(`<text x="${LEFT - 8}" y="${y + height / 2 + 4}" class="label" text-anchor="end">${escape(label)}</text>`);
    draw(y, height);
    y += height + 14;
  };

  lane('QEMU', LANE.qemu, (top, h) => {
    for (const m of timeline.migrations) {
      const stop = m.stoppedAt ?? m.resumedAt;
      parts.push(`<rect x="${fixed(x(m.requestedAt))}" y="${top + 8}" width="${fixed(Math.max(1, x(stop) - x(m.requestedAt)))}" height="${h - 16}" class="precopy"><title>${escape(m.label)}: pre-copy ${((stop - m.requestedAt) / 1000).toFixed(1)} s</title></rect>`);
      parts.push(`<rect x="${fixed(x(stop))}" y="${top + 4}" width="${fixed(Math.max(2, x(m.resumedAt) - x(stop)))}" height="${h - 8}" class="downtime"><title>${escape(m.label)}: downtime ${Math.round(m.resumedAt - stop)} ms (STOP → RESUME)</title></rect>`);
      const points = m.samples.filter((s) => s.total > 0).map((s) => `${fixed(x(s.t))},${fixed(top + h - 8 - Math.min(1, s.transferred / s.total) * (h - 16))}`);
      if (points.length > 1) parts.push(`<polyline points="${points.join(' ')}" class="bytes"/>`);
      parts.push(`<text x="${fixed(x(m.requestedAt) + 2)}" y="${top + 18}" class="small">${escape(m.label)}</text>`);
    }
  });

  lane('xping RTT', LANE.ping, (top, h) => {
    const rtts = timeline.pings.flatMap((p) => (p.rttMs === null ? [] : [p.rttMs]));
    const max = Math.max(1, ...rtts);
    const logY = (rtt: number): number => top + h - 12 - (Math.log10(1 + rtt) / Math.log10(1 + max)) * (h - 20);
    const dots: string[] = [];
    const lost: string[] = [];
    for (const p of timeline.pings) {
      if (p.rttMs === null) lost.push(`M${fixed(x(p.t))} ${top + h - 10}v8`);
      else dots.push(`M${fixed(x(p.t))} ${fixed(logY(p.rttMs))}h1`);
    }
    if (dots.length) parts.push(`<path d="${dots.join('')}" class="rtt"/>`);
    if (lost.length) parts.push(`<path d="${lost.join('')}" class="lost"/>`);
    parts.push(`<text x="${LEFT + 4}" y="${top + 12}" class="small">max ${Math.round(max)} ms (log scale); red: lost</text>`);
  });

  const rate = (label: string, times: number[], height: number, css: string): void =>
    lane(label, height, (top, h) => {
      const binMs = Math.max(100, span / 400);
      const counts = bins(times, start, end, binMs);
      const max = Math.max(1, ...counts);
      const bars = counts
        .map((c, i) => (c === 0 ? '' : `M${fixed(x(start + i * binMs))} ${top + h}v${-fixed((c / max) * (h - 6))}`))
        .join('');
      if (bars) parts.push(`<path d="${bars}" class="${css}" stroke-width="${fixed(Math.max(1, ((W - LEFT - RIGHT) * binMs) / span))}"/>`);
      parts.push(`<text x="${LEFT + 4}" y="${top + 12}" class="small">${times.length} answers; up to ${Math.round((max * 1000) / binMs)}/s</text>`);
    });
  rate('Goldbach (XIA)', timeline.answers, LANE.answers, 'answers');
  if (timeline.tcpAnswers.length || timeline.migrations.some((m) => m.transport === 'qemu-tcp')) rate('Goldbach (TCP)', timeline.tcpAnswers, LANE.tcp, 'tcp');

  // Time axis, in seconds from the start.
  const step = [1, 2, 5, 10, 20, 30, 60, 120, 300, 600].find((s) => span / 1000 / s <= 12) ?? 1200;
  for (let s = 0; s * 1000 <= span; s += step) parts.push(`<text x="${fixed(x(start + s * 1000))}" y="${y + 6}" class="small" text-anchor="middle">${s} s</text>`);
  return `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${y + 16}" viewBox="0 0 ${W} ${y + 16}"><text x="${LEFT}" y="18" class="title">${escape(title)}</text>${parts.join('')}</svg>`;
}

function section(t: TopologyReport): string {
  const moves = t.xia.moves
    .map(
      (m) =>
        `<tr><td>${m.move}</td><td>${m.from} → ${m.to}</td><td>${(m.totalMs / 1000).toFixed(1)} s</td><td>${m.downtimeMs ?? '-'} ms</td><td>${m.xpingDowntimeMs} ms</td><td>${m.goldbachGapMs} ms</td>` +
        `<td>${m.pingRecoveredMs ?? '-'} ms</td><td>${m.agent.noticeAckedMs ?? '-'} / ${m.agent.registeredMs ?? '-'} ms</td><td>${m.staleHostEntryGone && m.staleVmEntryGone !== false ? 'gone' : 'STALE'}</td><td>${m.resolvedCurrent ? 'current' : escape(m.resolvedDag)}</td></tr>`,
    )
    .join('');
  const changes = t.xia.moves.map((m) => `<li>move ${m.move} (${m.from} → ${m.to}): ${m.routeChanges.map(escape).join('; ') || 'none'}</li>`).join('');
  return `<h2>${t.topology}</h2>
${timelineSvg(t.timeline, `${t.topology}: the whole run, on one clock`)}
<table><tr><th>move</th><th></th><th>total</th><th>down (QEMU events)</th><th>xping n·Δt</th><th>Goldbach gap</th><th>RESUME→ping</th><th>agent: acked / named</th><th>stale entries</th><th>name</th></tr>${moves}</table>
<details><summary>route changes (control-port list before and after each move)</summary><ul>${changes}</ul></details>`;
}

export function labHtml(report: LabReport): string {
  return `<!doctype html>
<html><head><meta charset="utf-8"><title>xmig lab ${escape(report.startedAt)}</title>
<style>
body{font:14px system-ui,sans-serif;margin:2em;max-width:1150px;color:#222}
pre{background:#f6f6f6;padding:1em;overflow-x:auto;font-size:12px}
table{border-collapse:collapse;margin:1em 0}td,th{border-bottom:1px solid #ddd;padding:3px 8px;text-align:right}
.lane{fill:#fafafa;stroke:#ddd}.label{font-size:12px;fill:#444}.small{font-size:10px;fill:#666}.title{font-size:13px;font-weight:600}
.precopy{fill:#9ecae1}.downtime{fill:#de2d26}.bytes{fill:none;stroke:#08519c;stroke-width:1.5}
.rtt{stroke:#31a354;stroke-width:2}.lost{stroke:#de2d26;stroke-width:1}.answers{stroke:#756bb1}.tcp{stroke:#e6550d}
</style></head><body>
<h1>xmig lab: live migration of a real VM over XIA, beside the paper's Table 1</h1>
<p>${escape(report.startedAt)}, ${Math.round(report.durationMs / 1000)} s; run directory ${escape(report.dir)}; namespaces ${escape(report.prefix)}-*.</p>
${report.topologies.map(section).join('\n')}
<h2>The report as text</h2>
<pre>${escape(formatLabReport(report))}</pre>
</body></html>
`;
}
